//! Reading, following, retrying and deleting workflows.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::bmc::{finish_step_job, start_step_job, workflow_job_key, workflow_of_job_key};
use super::{App, AppError, OpContext};
use crate::events::wait_for;
use crate::model::{Workflow, WorkflowState, now_millis};
use crate::state_machine;
use crate::store::{BmcJob, ObjectKind};

/// A workflow with its data document (what actions share through the action
/// API) and that document's version, and its BMC steps.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowWithData {
    pub workflow: Workflow,
    pub data_json: String,
    pub data_version: u64,
    pub bmc_steps: Vec<BmcJob>,
}

/// A workflow as `kiln watch` follows it: its state and its BMC steps
/// (docs/bmc.md), which run before its first action and after its SUCCESS.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchedWorkflow {
    pub workflow: Workflow,
    pub bmc_steps: Vec<BmcJob>,
}

impl WatchedWorkflow {
    /// Ended, and no BMC step is left to run.
    fn settled(&self) -> bool {
        self.workflow.state.is_terminal() && !self.bmc_steps.iter().any(BmcJob::is_open)
    }
}

/// How often a watch looks at BMC steps that are still running: their jobs
/// may run on another replica, whose changes reach this one only through
/// the store.
const BMC_STEP_POLL: Duration = Duration::from_secs(1);

impl App {
    pub async fn get_workflow(&self, opctx: &OpContext, id: &str) -> Result<WorkflowWithData, AppError> {
        opctx.require_operator_read()?;
        let workflow = self.store.get_workflow(id).await?;
        let (data_json, data_version) = self.store.workflow_data(&workflow.id).await?;
        let bmc_steps = self.store.list_bmc_jobs_by_key_prefix(&workflow_job_key(id, "")).await?;
        Ok(WorkflowWithData { workflow, data_json, data_version, bmc_steps })
    }

    pub async fn list_workflows(&self, opctx: &OpContext) -> Result<Vec<Workflow>, AppError> {
        opctx.require_operator_read()?;
        Ok(self.store.list_workflows().await?)
    }

    /// The workflow and its BMC steps now, then again after every committed
    /// change, until it has ended and its BMC steps too.
    pub async fn watch_workflow(
        &self,
        opctx: &OpContext,
        id: &str,
    ) -> Result<ReceiverStream<Result<WatchedWorkflow, AppError>>, AppError> {
        opctx.require_operator_read()?;
        // Subscribe before the first read: no change between them is lost.
        let mut changes = self.events.workflow_subscription();
        let store = self.store.clone();
        let read = move |id: String| {
            let store = store.clone();
            async move {
                let workflow = store.get_workflow(&id).await?;
                let bmc_steps = store.list_bmc_jobs_by_key_prefix(&workflow_job_key(&id, "")).await?;
                Ok::<_, AppError>(WatchedWorkflow { workflow, bmc_steps })
            }
        };
        let first = read(id.to_string()).await?;
        let (tx, rx) = mpsc::channel(16);
        let id = id.to_string();
        tokio::spawn(async move {
            let mut last = first;
            if tx.send(Ok(last.clone())).await.is_err() {
                return;
            }
            while !last.settled() {
                let running_step = last.bmc_steps.iter().any(BmcJob::is_open);
                let changed = if running_step {
                    tokio::time::timeout(BMC_STEP_POLL, wait_for(&mut changes, &id)).await.unwrap_or(true)
                } else {
                    wait_for(&mut changes, &id).await
                };
                if !changed {
                    return;
                }
                let now = match read(id.clone()).await {
                    Ok(now) => now,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                if now != last {
                    if tx.send(Ok(now.clone())).await.is_err() {
                        return;
                    }
                    last = now;
                }
            }
        });
        Ok(ReceiverStream::new(rx))
    }

    /// Resumes a FAILED or TIMEOUT workflow (`kiln retry`), and runs again
    /// the BMC step that failed it, if one did ([`state_machine::resume`]).
    pub async fn retry_workflow(&self, opctx: &OpContext, id: &str) -> Result<Workflow, AppError> {
        self.authorize_write(opctx, "retry", &format!("workflow {id}")).await?;
        let result = self.resume_workflow(id).await;
        self.audit(opctx, "retry", &format!("workflow {id}"), &result.as_ref().map(|_| ())).await;
        let wf = result?;
        if matches!(wf.state, WorkflowState::Pending | WorkflowState::Success) {
            self.bmc_job_submitted();
        }
        self.events.workflow_changed(&wf.id);
        if let Some(action) = wf.current_action() {
            self.events.wake_agent(action.agent_id());
        }
        Ok(wf)
    }

    async fn resume_workflow(&self, id: &str) -> Result<Workflow, AppError> {
        let wf = self.store.get_workflow(id).await?;
        if matches!(wf.state, WorkflowState::Failed | WorkflowState::Timeout) {
            // A failed step's job keeps its key forever (one submission per
            // key): renamed, it stays listed, and the step can run again.
            for job in self.store.list_bmc_jobs_by_key_prefix(&workflow_job_key(id, "")).await? {
                if job.state == "failed"
                    && workflow_of_job_key(&job.key).is_some_and(|(_, s)| s == "start" || s == "finish")
                {
                    let archived = format!("{}/failed-{}", job.key, job.id);
                    self.store.rekey_failed_bmc_job(&job.key, &archived).await?;
                }
            }
        }
        let (wf, _) = self
            .update_workflow_with_jobs(
                id,
                Box::new(|wf| {
                    state_machine::resume(wf, now_millis())?;
                    let step = match wf.state {
                        WorkflowState::Pending => start_step_job(wf),
                        WorkflowState::Success => finish_step_job(wf),
                        _ => None,
                    };
                    Ok((true, step.into_iter().collect()))
                }),
            )
            .await?;
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
