//! Handing an agent its next attempt: `NextAction`, a long poll that returns
//! as soon as a commit makes an action due for the agent.

use std::time::Duration;

use kiln_documents::PlannedAction;
use kiln_documents::template::{DEFERRED_DISK_CALL, DiskContext};

use super::{App, AppError, OpContext};
use crate::model::{Millis, Workflow, now_millis};
use crate::state_machine;

/// Longest a caller may wait for work in one call.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// One attempt handed to its agent.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    pub workflow_id: String,
    pub action_index: u32,
    pub attempt_id: String,
    /// 1 for the first try.
    pub attempt_number: u32,
    pub action_count: u32,
    pub hardware_id: String,
    /// The action API credential of this attempt.
    pub action_token: String,
    /// The action with references to earlier actions' outputs rendered.
    pub action: PlannedAction,
    /// Images of this agent's later actions, to pull ahead.
    pub upcoming_images: Vec<String>,
    /// The attempt's span in the workflow's trace (W3C `traceparent`).
    pub traceparent: String,
}

impl App {
    /// The attempt the calling agent should run now, waiting up to `wait`
    /// (at most [`MAX_WAIT`]) for one to become due. `None` when none did.
    pub async fn next_assignment(&self, opctx: &OpContext, wait: Duration) -> Result<Option<Assignment>, AppError> {
        let agent = opctx.require_agent()?;
        let deadline = tokio::time::Instant::now() + wait.min(MAX_WAIT);
        let _connected = self.metrics.agent_polling(agent);
        let mut wakeups = self.events.agent_subscription(agent);
        loop {
            wakeups.borrow_and_update();
            let (assignment, retry_due) = self.assignment_for(agent).await?;
            if let Some(assignment) = assignment {
                tracing::info!(agent = %agent, workflow = %assignment.workflow_id, action = assignment.action_index,
                    attempt = %assignment.attempt_id, "assigned");
                return Ok(Some(assignment));
            }
            // A retry waiting for its backoff needs no event: wake when due.
            let wake_at = retry_due.map_or(deadline, |due| {
                let wait = Duration::from_millis(due.saturating_sub(now_millis()).max(0) as u64);
                deadline.min(tokio::time::Instant::now() + wait)
            });
            // A store shared with other servers may lose their wake-ups:
            // re-read it now and then, so a loss only delays a dispatch.
            let recheck_at = self.store.recheck_interval().map(|d| tokio::time::Instant::now() + d);
            let sleep_until = recheck_at.map_or(wake_at, |r| r.min(wake_at));
            match tokio::time::timeout_at(sleep_until, wakeups.changed()).await {
                Ok(Ok(())) => continue,
                Err(_) if sleep_until < wake_at => continue,
                // Deadline passed, or the server is shutting down.
                Ok(Err(_)) | Err(_) => return Ok(None),
            }
        }
    }

    /// Finds (creating when it is due) the attempt `agent` should run now;
    /// otherwise, when a retry waits for its backoff, when that is due.
    async fn assignment_for(&self, agent: &str) -> Result<(Option<Assignment>, Option<Millis>), AppError> {
        let mut retry_due: Option<Millis> = None;
        for id in self.store.active_workflows_for_agent(agent).await? {
            if let Some(due) = self.waits_for_bmc_start(&id).await? {
                retry_due = Some(retry_due.map_or(due, |d| d.min(due)));
                continue;
            }
            let who = agent.to_string();
            let lease = self.lease_millis();
            let (wf, changed) = self
                .update_workflow(
                    &id,
                    Box::new(move |wf| {
                        Ok(state_machine::dispatch(wf, &who, now_millis(), lease, || uuid::Uuid::new_v4().to_string()))
                    }),
                )
                .await?;
            if changed {
                self.events.workflow_changed(&wf.id);
            }
            if let Some((index, attempt)) = state_machine::open_attempt_for(&wf, agent) {
                if !changed {
                    // Handed out again (the agent restarted or lost the
                    // answer): the agent is evidently alive.
                    self.store
                        .renew_leases(agent, vec![attempt.id.clone()], now_millis() + self.lease_millis())
                        .await?;
                }
                // Disk hints are resolved for every action left before this
                // one runs, so none writes to a disk chosen by accident.
                let disks = match self.disks_for_hints(&wf, index).await? {
                    Ok(disks) => disks,
                    Err(e) => {
                        self.fail_disk_hint(&wf.id, index, attempt.id.clone(), e).await?;
                        continue;
                    }
                };
                let action = match with_outputs(&wf, index, disks.as_deref()) {
                    Ok(action) => super::images::dispatched(&self.image_rewrites, action),
                    Err(e) => {
                        self.fail_unrenderable(&wf.id, index, attempt.id.clone(), e).await?;
                        continue;
                    }
                };
                return Ok((
                    Some(Assignment {
                        workflow_id: wf.id.clone(),
                        action_index: index,
                        attempt_id: attempt.id.clone(),
                        attempt_number: attempt.number,
                        action_count: wf.actions.len() as u32,
                        hardware_id: wf.hardware.clone(),
                        action_token: self.token_key.issue(&wf.id, index, &attempt.id),
                        action,
                        upcoming_images: upcoming_images(&wf, index, agent)
                            .iter()
                            .map(|image| self.image_rewrites.resolve(image))
                            .collect(),
                        traceparent: crate::traces::traceparent(&wf, &attempt.id),
                    }),
                    None,
                ));
            }
            if let Some(due) = state_machine::retry_due_at(&wf, agent) {
                retry_due = Some(retry_due.map_or(due, |d| d.min(due)));
            }
        }
        Ok((None, retry_due))
    }

    /// A workflow with boot options gets no action before its BMC start
    /// step (one-time boot device, power cycle) succeeded: `Some(when to
    /// look again)` while it is pending. A failed step fails the workflow
    /// (the job runner does that), which takes it out of the agent's list.
    async fn waits_for_bmc_start(&self, workflow_id: &str) -> Result<Option<Millis>, AppError> {
        let wf = self.store.get_workflow(workflow_id).await?;
        if wf.state != crate::model::WorkflowState::Pending {
            return Ok(None);
        }
        match self.start_workflow_bmc_steps(&wf).await? {
            Some(job) if job.state == "failed" => {
                // The job runner fails the workflow when the job fails; this
                // covers a runner that could not (its store write failed).
                let reason = super::bmc::workflow_step_failure(&job, "start", &job.error);
                self.fail_workflow_for_bmc(&wf.id, "start", &reason).await?;
                Ok(Some(now_millis() + BMC_START_POLL_MILLIS))
            }
            Some(job) if job.state != "succeeded" => Ok(Some(now_millis() + BMC_START_POLL_MILLIS)),
            _ => Ok(None),
        }
    }

    /// The machine's reported disks when an action from `index` on has a
    /// disk hint (`{{ disk ... }}`, `{{ rootDisk }}`, kept from the
    /// workflow's creation), after checking that every such hint resolves
    /// to exactly one disk: `Ok(Err(reason))` names the hint and the
    /// candidates. `Ok(Ok(None))`: no action left has a hint.
    async fn disks_for_hints(
        &self,
        wf: &Workflow,
        index: u32,
    ) -> Result<Result<Option<Vec<kiln_inventory::Disk>>, String>, AppError> {
        let later = &wf.actions[index as usize..];
        if !later.iter().any(|a| strings(&a.spec).any(|s| s.contains(DEFERRED_DISK_CALL))) {
            return Ok(Ok(None));
        }
        let Some(stored) = self.store.get_inventory(&wf.hardware).await? else {
            return Ok(Err(format!(
                "hardware {} has reported no inventory yet, so its disk hints cannot be resolved \
                 (its agent reports one when it starts)",
                wf.hardware
            )));
        };
        let inventory: kiln_inventory::Inventory = match serde_json::from_str(&stored.inventory_json) {
            Ok(i) => i,
            Err(e) => return Ok(Err(format!("the stored inventory of hardware {} is unreadable: {e}", wf.hardware))),
        };
        Ok(check_disk_hints(later, &inventory.disks).map(|()| Some(inventory.disks)))
    }

    /// Fails the workflow: a disk hint cannot be resolved (see
    /// [`state_machine::fail_disk_hint`]).
    async fn fail_disk_hint(
        &self,
        workflow_id: &str,
        index: u32,
        attempt_id: String,
        error: String,
    ) -> Result<(), AppError> {
        tracing::warn!(workflow = %workflow_id, action = index, reason = %error, "disk hint unresolved");
        let (wf, _) = self
            .update_workflow(
                workflow_id,
                Box::new(move |wf| state_machine::fail_disk_hint(wf, index, &attempt_id, error, now_millis())),
            )
            .await?;
        self.events.workflow_changed(&wf.id);
        Ok(())
    }

    /// An action whose references to earlier outputs cannot be rendered
    /// fails at once, with the reason, instead of running with a hole.
    async fn fail_unrenderable(
        &self,
        workflow_id: &str,
        index: u32,
        attempt_id: String,
        error: String,
    ) -> Result<(), AppError> {
        let (wf, _) = self
            .update_workflow(
                workflow_id,
                Box::new(move |wf| state_machine::fail_unrenderable(wf, index, &attempt_id, error, now_millis())),
            )
            .await?;
        self.events.workflow_changed(&wf.id);
        Ok(())
    }
}

/// How often an agent's poll looks again at a workflow waiting for its BMC
/// start step.
const BMC_START_POLL_MILLIS: Millis = 1_000;

/// Container images of `agent`'s actions after `index`, first use order.
fn upcoming_images(wf: &Workflow, index: u32, agent: &str) -> Vec<String> {
    let current = &wf.actions[index as usize].spec.image;
    let mut images: Vec<String> = Vec::new();
    for a in &wf.actions[index as usize + 1..] {
        let image = &a.spec.image;
        if a.agent_id() == agent && !image.is_empty() && image != current && !images.contains(image) {
            images.push(image.clone());
        }
    }
    images
}

/// The strings of an action rendered again at dispatch.
pub(super) fn strings(a: &PlannedAction) -> impl Iterator<Item = &String> {
    a.environment.values().chain(a.command.iter())
}

/// Renders the disk hints of `actions` against `disks`, leaving `.actions`
/// references for later: the first that does not resolve to exactly one
/// disk is the error, naming its action.
pub(crate) fn check_disk_hints(actions: &[crate::model::Action], disks: &[kiln_inventory::Disk]) -> Result<(), String> {
    let context = DiskContext { disks: Some(disks), root_disk: None };
    // No `actions` key: references to outputs stay deferred.
    let data = serde_json::json!({});
    for a in actions {
        for s in strings(&a.spec).filter(|s| s.contains(DEFERRED_DISK_CALL)) {
            let object = format!("action {:?}", a.spec.name);
            kiln_documents::template::render_with_disks(&object, s, &data, context).map_err(|e| {
                // The hint's own message is the reason; the rest locates it.
                format!("action {:?}: {}", a.spec.name, e.message)
            })?;
        }
    }
    Ok(())
}

/// The action as the agent gets it, with references to earlier actions'
/// outputs (`{{ .actions.NAME.output... }}`) rendered now that they exist,
/// and disk hints resolved with the machine's reported `disks`.
fn with_outputs(wf: &Workflow, index: u32, disks: Option<&[kiln_inventory::Disk]>) -> Result<PlannedAction, String> {
    let mut action = wf.actions[index as usize].spec.clone();
    let deferred = |s: &String| s.contains("{{");
    if !action.environment.values().any(deferred) && !action.command.iter().any(deferred) {
        return Ok(action);
    }
    let mut outputs = serde_json::Map::new();
    for earlier in &wf.actions[..index as usize] {
        if let Some(out) = earlier.attempts.last().filter(|a| !a.output_json.is_empty()) {
            let value: serde_json::Value = serde_json::from_str(&out.output_json).map_err(|e| e.to_string())?;
            outputs.insert(earlier.spec.name.clone(), serde_json::json!({ "output": value }));
        }
    }
    let data = serde_json::json!({ kiln_documents::template::ACTIONS_KEY: outputs });
    let object = format!("action {:?}", action.name);
    let render = |s: &mut String| -> Result<(), String> {
        if s.contains("{{") {
            let context = DiskContext { disks, root_disk: None };
            *s = kiln_documents::template::render_with_disks(&object, s, &data, context).map_err(|e| e.to_string())?;
        }
        Ok(())
    };
    for value in action.environment.values_mut() {
        render(value)?;
    }
    for arg in &mut action.command {
        render(arg)?;
    }
    Ok(action)
}
