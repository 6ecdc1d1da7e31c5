//! What actions do through the action API: prove who they are with their
//! attempt's token, and read or replace the workflow's data document.

use super::{Actor, App, AppError, OpContext};

impl App {
    /// The context of an action presenting `token`: the token must be ours
    /// and its attempt (and workflow) still open. The token itself is never
    /// logged: it is a credential.
    pub async fn authenticate_action(&self, token: &str) -> Result<OpContext, AppError> {
        let (workflow_id, action_index, attempt_id) =
            self.token_key.verify(token).ok_or_else(|| AppError::Unauthenticated("invalid action token".into()))?;
        let open = self
            .store
            .attempt_access(&workflow_id, &attempt_id)
            .await?
            .is_some_and(|a| a.action_index == action_index && a.is_open());
        if !open {
            tracing::warn!(workflow = %workflow_id, attempt = %attempt_id, "action token used after its attempt ended");
            return Err(AppError::PermissionDenied("action token expired: its attempt has ended".into()));
        }
        Ok(OpContext { actor: Actor::Action { workflow_id, action_index, attempt_id } })
    }

    /// The workflow's data document and its version.
    pub async fn read_workflow_data(&self, opctx: &OpContext) -> Result<(serde_json::Value, u64), AppError> {
        let (workflow_id, _, _) = opctx.require_action()?;
        let (json, version) = self.store.workflow_data(workflow_id).await?;
        Ok((serde_json::from_str(&json).unwrap_or_default(), version))
    }

    /// Replaces the data document if it is still at `version`; returns the
    /// new version. CONFLICT when another action wrote first.
    pub async fn write_workflow_data(
        &self,
        opctx: &OpContext,
        version: u64,
        data: serde_json::Value,
    ) -> Result<u64, AppError> {
        let (workflow_id, _, _) = opctx.require_action()?;
        if !data.is_object() {
            return Err(AppError::InvalidArgument("field data: must be a JSON object".into()));
        }
        Ok(self.store.set_workflow_data(workflow_id, data.to_string(), version).await?)
    }
}
