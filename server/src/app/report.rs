//! What agents tell the server about their attempts: state reports and
//! heartbeats.

use super::bmc::finish_step_job;
use super::{App, AppError, OpContext};
use crate::model::{ActionState, WorkflowState, now_millis};
use crate::state_machine::{self, Report};

/// An agent runs one attempt at a time; a few are allowed for agents that
/// drop one while the next starts.
pub const MAX_HEARTBEAT_ATTEMPTS: usize = 16;

/// The answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    /// Attempts named in the heartbeat that are no longer open or not the
    /// caller's: the agent must stop them.
    pub ended_attempt_ids: Vec<String>,
    /// How often the agent should heartbeat: a third of the lease.
    pub renew_interval_ms: u32,
}

impl App {
    /// Applies the calling agent's report on one of its attempts. `Ok(true)`:
    /// the workflow changed; `Ok(false)`: a repeat of what is recorded.
    pub async fn report(&self, opctx: &OpContext, workflow_id: &str, report: Report) -> Result<bool, AppError> {
        let agent = opctx.require_agent()?.to_string();
        let (action_index, state, attempt_id) = (report.action_index, report.state, report.attempt_id.clone());
        let who = agent.clone();
        let lease = self.lease_millis();
        self.metrics.agent_seen(&agent);
        let (wf, changed) = self
            .update_workflow_with_jobs(
                workflow_id,
                Box::new(move |wf| {
                    let changed = state_machine::report(wf, &who, report, now_millis(), lease)?;
                    // The finishing BMC step commits with the SUCCESS.
                    let finish = (changed && wf.state == WorkflowState::Success).then(|| finish_step_job(wf)).flatten();
                    Ok((changed, finish.into_iter().collect()))
                }),
            )
            .await
            .inspect_err(|e| {
                tracing::warn!(agent = %agent, workflow = %workflow_id, attempt = %attempt_id, error = %e, "report rejected");
            })?;
        if changed {
            tracing::info!(agent = %agent, workflow = %wf.id, action = action_index, state = state.as_str(), "state");
            self.events.workflow_changed(&wf.id);
            if wf.state == WorkflowState::Success && finish_step_job(&wf).is_some() {
                tracing::info!(workflow = %wf.id, "workflow BMC finishing step submitted");
                self.bmc_job_submitted();
            }
            if state == ActionState::Success
                && let Some(next) = wf.current_action()
            {
                self.events.wake_agent(next.agent_id());
            }
        }
        Ok(changed)
    }

    /// Renews the leases of the calling agent's open attempts among
    /// `attempt_ids`. An idle agent's heartbeat (no ids) writes nothing.
    pub async fn heartbeat(&self, opctx: &OpContext, attempt_ids: Vec<String>) -> Result<Heartbeat, AppError> {
        let agent = opctx.require_agent()?;
        self.metrics.agent_seen(agent);
        if attempt_ids.len() > MAX_HEARTBEAT_ATTEMPTS {
            return Err(AppError::InvalidArgument(format!(
                "attempt_ids: {} attempts named, at most {MAX_HEARTBEAT_ATTEMPTS}",
                attempt_ids.len()
            )));
        }
        let ended = if attempt_ids.is_empty() {
            Vec::new()
        } else {
            self.store.renew_leases(agent, attempt_ids, now_millis() + self.lease_millis()).await?
        };
        for id in &ended {
            tracing::info!(agent = %agent, attempt = %id, "heartbeat for an attempt that is no longer open");
        }
        Ok(Heartbeat {
            ended_attempt_ids: ended,
            renew_interval_ms: (self.lease.as_millis() / 3).min(u128::from(u32::MAX)) as u32,
        })
    }
}
