//! Reading, following, retrying and deleting workflows.

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{App, AppError, OpContext};
use crate::events::wait_for;
use crate::model::{Workflow, now_millis};
use crate::state_machine;
use crate::store::ObjectKind;

/// A workflow with its data document (what actions share through the action
/// API) and that document's version.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowWithData {
    pub workflow: Workflow,
    pub data_json: String,
    pub data_version: u64,
}

impl App {
    pub async fn get_workflow(&self, opctx: &OpContext, id: &str) -> Result<WorkflowWithData, AppError> {
        opctx.require_operator_read()?;
        let workflow = self.store.get_workflow(id).await?;
        let (data_json, data_version) = self.store.workflow_data(&workflow.id).await?;
        Ok(WorkflowWithData { workflow, data_json, data_version })
    }

    pub async fn list_workflows(&self, opctx: &OpContext) -> Result<Vec<Workflow>, AppError> {
        opctx.require_operator_read()?;
        Ok(self.store.list_workflows().await?)
    }

    /// The workflow now, then again after every committed change, until it
    /// ends.
    pub async fn watch_workflow(
        &self,
        opctx: &OpContext,
        id: &str,
    ) -> Result<ReceiverStream<Result<Workflow, AppError>>, AppError> {
        opctx.require_operator_read()?;
        // Subscribe before the first read: no change between them is lost.
        let mut changes = self.events.workflow_subscription();
        let first = self.store.get_workflow(id).await?;
        let (tx, rx) = mpsc::channel(16);
        let store = self.store.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            let mut last = first;
            if tx.send(Ok(last.clone())).await.is_err() {
                return;
            }
            while !last.state.is_terminal() && wait_for(&mut changes, &id).await {
                let wf = match store.get_workflow(&id).await {
                    Ok(wf) => wf,
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                };
                if wf != last {
                    if tx.send(Ok(wf.clone())).await.is_err() {
                        return;
                    }
                    last = wf;
                }
            }
        });
        Ok(ReceiverStream::new(rx))
    }

    /// Resumes a FAILED or TIMEOUT workflow (`kiln retry`).
    pub async fn retry_workflow(&self, opctx: &OpContext, id: &str) -> Result<Workflow, AppError> {
        self.authorize_write(opctx, "retry", &format!("workflow {id}")).await?;
        let result = self.update_workflow(id, Box::new(|wf| state_machine::resume(wf, now_millis()))).await;
        let result = result.map_err(AppError::from);
        self.audit(opctx, "retry", &format!("workflow {id}"), &result.as_ref().map(|_| ())).await;
        let (wf, _) = result?;
        self.events.workflow_changed(&wf.id);
        if let Some(action) = wf.current_action() {
            self.events.wake_agent(action.agent_id());
        }
        Ok(wf)
    }

    /// Deletes a workflow (with its attempts, logs and artifact files), a
    /// template, an action definition or hardware not used by an unfinished
    /// workflow.
    pub async fn delete(&self, opctx: &OpContext, kind: ObjectKind, name: &str) -> Result<(), AppError> {
        self.authorize_write(opctx, "delete", &format!("{} {name}", kind.as_str())).await?;
        let result = self.delete_object(kind, name).await;
        self.audit(opctx, "delete", &format!("{} {name}", kind.as_str()), &result.as_ref().map(|_| ())).await;
        result
    }

    async fn delete_object(&self, kind: ObjectKind, name: &str) -> Result<(), AppError> {
        let attempts: Vec<String> = match kind {
            ObjectKind::Workflow => {
                let wf = self.store.get_workflow(name).await?;
                wf.actions.iter().flat_map(|a| a.attempts.iter().map(|t| t.id.clone())).collect()
            }
            _ => Vec::new(),
        };
        self.store.delete(kind, name).await?;
        if kind == ObjectKind::Hardware {
            self.verified.invalidate();
        }
        if kind == ObjectKind::Workflow {
            self.artifacts.remove_attempts(attempts.iter().map(String::as_str));
            self.events.workflow_changed(name);
        }
        Ok(())
    }
}
