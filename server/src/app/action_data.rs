//! What actions do through the action API: prove who they are with their
//! attempt's token, and read or replace the workflow's data document.

use std::net::SocketAddr;

use super::{Actor, App, AppError, OpContext};

impl App {
    /// The context of an action presenting `token`: the token must be ours
    /// and its attempt (and workflow) still open. The token itself is never
    /// logged: it is a credential.
    /// `token` is empty when the caller presented none. Every refusal is
    /// noted in the audit trail (rate-limited, see [`super::audit`]).
    pub async fn authenticate_action(&self, token: &str, peer: Option<SocketAddr>) -> Result<OpContext, AppError> {
        let refuse =
            |actor: String, reason: &str| self.refusals.refused(actor, peer, "authenticate", "action API", reason);
        if token.is_empty() {
            refuse("action (no token)".into(), "no token");
            return Err(AppError::Unauthenticated("missing Authorization: Bearer KILN_ACTION_TOKEN".into()));
        }
        let Some((workflow_id, action_index, attempt_id)) = self.token_key.verify(token) else {
            // Not signed by us: who sent it is unknown, what it claims is
            // not to be trusted, so the event names neither.
            refuse("action (unverified token)".into(), "invalid action token");
            return Err(AppError::Unauthenticated("invalid action token".into()));
        };
        let open = self
            .store
            .attempt_access(&workflow_id, &attempt_id)
            .await?
            .is_some_and(|a| a.action_index == action_index && a.is_open());
        let actor = Actor::Action { workflow_id, action_index, attempt_id };
        if !open {
            tracing::warn!(%actor, "action token used after its attempt ended");
            refuse(actor.to_string(), "action token expired: its attempt has ended");
            return Err(AppError::PermissionDenied("action token expired: its attempt has ended".into()));
        }
        Ok(OpContext { actor, peer })
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
