//! The workflow state machine: every change to a workflow goes through one of
//! the functions here, inside one store transaction.
//!
//! ```text
//! workflow: PENDING --first dispatch--> RUNNING --last action SUCCESS--> SUCCESS
//!                                          |--an action FAILED--------> FAILED
//!                                          |--an action TIMEOUT-------> TIMEOUT
//!                                          '--global_timeout passed---> TIMEOUT
//!           FAILED | TIMEOUT --kiln retry--> RUNNING (new attempt of the failed action)
//! An action with `retries: N` gets up to N more attempts, each after
//! `retry_backoff` seconds, before its failure ends the workflow.
//! attempt:  PENDING -> PULLING -> RUNNING -> SUCCESS | FAILED | TIMEOUT
//!           (forward only; any open state may jump to a terminal one)
//!           open --lease ran out--> FAILED (AgentLost), then the retry policy
//! ```
//!
//! Every open attempt holds a lease: set at dispatch, renewed by each report
//! and by the agent's heartbeats. A heartbeat is a store update that does not
//! load the workflow; its rule (only open attempts, never backwards) is
//! written once here, in [`sql`], and both stores build their statements
//! from it.
//!
//! Rules that make reports safe to retry:
//! - A report that repeats the attempt's current state, or names a state the
//!   attempt has already passed, changes nothing and is accepted.
//! - A report for an attempt that is not the action's latest is rejected
//!   (stale), and so is any change to a finished workflow.
//! - Only the attempt's own agent may report on it.

use crate::model::{ActionState, Attempt, Millis, Workflow, WorkflowState};

/// Attempt states in which an attempt is open: it holds a lease, its agent
/// may report on it and its action token works.
pub const OPEN_ATTEMPT_STATES: [ActionState; 3] = [ActionState::Pending, ActionState::Pulling, ActionState::Running];

/// Workflow states in which a workflow is unfinished: it can be dispatched,
/// and the hardware and template it uses cannot be deleted.
pub const OPEN_WORKFLOW_STATES: [WorkflowState; 2] = [WorkflowState::Pending, WorkflowState::Running];

/// The rules above as SQL fragments, so that the SQLite and PostgreSQL
/// stores, which must apply them without loading a workflow (heartbeats,
/// sweeps, lookups), say the same thing as this module.
pub mod sql {
    use std::sync::LazyLock;

    use super::{OPEN_ATTEMPT_STATES, OPEN_WORKFLOW_STATES};

    fn quoted(states: impl Iterator<Item = &'static str>) -> String {
        states.map(|s| format!("'{s}'")).collect::<Vec<_>>().join(", ")
    }

    /// `'PENDING', 'PULLING', 'RUNNING'`: for `state IN (...)` on attempts.
    pub static OPEN_ATTEMPTS: LazyLock<String> =
        LazyLock::new(|| quoted(OPEN_ATTEMPT_STATES.iter().map(|s| s.as_str())));

    /// `'PENDING', 'RUNNING'`: for `state IN (...)` on workflows.
    pub static OPEN_WORKFLOWS: LazyLock<String> =
        LazyLock::new(|| quoted(OPEN_WORKFLOW_STATES.iter().map(|s| s.as_str())));

    /// The lease of an attempt after a renewal to `proposed`: never earlier
    /// than it was (a late heartbeat must not shorten a lease a report just
    /// extended). `greatest` is the dialect's two-argument maximum (SQLite
    /// `MAX`, PostgreSQL `GREATEST`).
    pub fn renewed_lease(greatest: &str, current: &str, proposed: &str) -> String {
        format!("{greatest}({current}, {proposed})")
    }

    /// A heartbeat: `UPDATE attempts SET lease = ...` for the attempt ids
    /// matching `id_match`, owned by `agent`, still open, with a lease.
    pub fn renew_leases(greatest: &str, id_match: &str, agent: &str, until: &str) -> String {
        format!(
            "UPDATE attempts SET lease_expires_at = {}
             WHERE {id_match} AND agent_id = {agent} AND state IN ({}) AND lease_expires_at IS NOT NULL",
            renewed_lease(greatest, "lease_expires_at", until),
            *OPEN_ATTEMPTS
        )
    }
}

/// A state change reported by an agent.
#[derive(Debug, Clone)]
pub struct Report {
    pub action_index: u32,
    pub attempt_id: String,
    pub state: ActionState,
    pub exit_code: Option<i64>,
    pub reason: String,
    pub message: String,
    /// A typed action's output, already validated against its schema.
    pub output_json: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("workflow has no action {0}")]
    UnknownAction(u32),
    #[error("attempt {0} is not an attempt of this action")]
    UnknownAttempt(String),
    #[error("attempt {attempt} is stale: the action's current attempt is {current}")]
    StaleAttempt { attempt: String, current: String },
    #[error("workflow is already {0}; it cannot change")]
    WorkflowFinished(&'static str),
    #[error("attempt belongs to agent {owner}, not to {caller}")]
    NotOwner { owner: String, caller: String },
    #[error("attempt cannot go from {from} to {to}")]
    Illegal { from: &'static str, to: &'static str },
    #[error("a report needs a state")]
    NoState,
    #[error("only a FAILED or TIMEOUT workflow can be retried; this one is {0}")]
    NotResumable(&'static str),
}

/// Makes sure the workflow's current action has an open attempt for `agent`
/// when it is that agent's turn. Returns true when it changed the workflow
/// (a new attempt was created).
///
/// An open attempt that already exists is left as it is: the caller hands
/// out the same attempt again (see [`open_attempt_for`]).
pub fn dispatch(
    wf: &mut Workflow,
    agent: &str,
    now: Millis,
    lease: Millis,
    new_attempt_id: impl FnOnce() -> String,
) -> bool {
    if wf.state.is_terminal() {
        return false;
    }
    let Some(index) = wf.current_action().map(|a| a.index as usize) else {
        return false;
    };
    let action = &mut wf.actions[index];
    if action.agent_id() != agent {
        return false;
    }
    match action.attempts.last() {
        Some(a) if !a.state.is_terminal() => return false,
        // A failed attempt of a running workflow is a retry to make, once
        // its backoff has passed.
        Some(a) if now < a.finished_at.unwrap_or(0) + backoff_millis(action.spec.retry_backoff_seconds) => {
            return false;
        }
        _ => {}
    }
    let number = action.attempts.len() as u32 + 1;
    action.attempts.push(Attempt {
        id: new_attempt_id(),
        number,
        agent_id: agent.to_string(),
        state: ActionState::Pending,
        created_at: now,
        pulling_at: None,
        running_at: None,
        finished_at: None,
        exit_code: None,
        reason: String::new(),
        message: String::new(),
        output_json: String::new(),
        lease_expires_at: Some(now + lease),
    });
    if wf.state == WorkflowState::Pending {
        wf.state = WorkflowState::Running;
        wf.started_at = Some(now);
    }
    true
}

fn backoff_millis(seconds: u64) -> Millis {
    (seconds as i64).saturating_mul(1000)
}

/// When the next retry of this workflow's current action becomes due for
/// `agent`, if one is waiting for its backoff.
pub fn retry_due_at(wf: &Workflow, agent: &str) -> Option<Millis> {
    if wf.state != WorkflowState::Running {
        return None;
    }
    let action = wf.current_action().filter(|a| a.agent_id() == agent)?;
    let last = action.attempts.last().filter(|a| matches!(a.state, ActionState::Failed | ActionState::Timeout))?;
    Some(last.finished_at.unwrap_or(0) + backoff_millis(action.spec.retry_backoff_seconds))
}

/// Resumes a FAILED or TIMEOUT workflow (`kiln retry`): the failed action
/// gets a new attempt at the next dispatch. The global timeout starts over.
/// What failed may also be a BMC step (docs/bmc.md), and the workflow goes
/// back to where that step runs:
/// - no action ever ran (its start step failed): PENDING, to run the start
///   step again before its first action;
/// - every action succeeded (its finishing step failed): SUCCESS again,
///   with the finishing step to run again.
pub fn resume(wf: &mut Workflow, now: Millis) -> Result<bool, TransitionError> {
    if !matches!(wf.state, WorkflowState::Failed | WorkflowState::Timeout) {
        return Err(TransitionError::NotResumable(wf.state.as_str()));
    }
    wf.reason.clear();
    if wf.current_action().is_none() {
        wf.state = WorkflowState::Success;
        wf.finished_at = Some(now);
    } else if wf.actions.iter().all(|a| a.attempts.is_empty()) {
        wf.state = WorkflowState::Pending;
        wf.started_at = None;
        wf.finished_at = None;
    } else {
        wf.state = WorkflowState::Running;
        wf.finished_at = None;
        wf.started_at = Some(now);
    }
    Ok(true)
}

/// The open attempt `agent` should be working on in this workflow, if any:
/// `(action index, attempt)`.
pub fn open_attempt_for<'a>(wf: &'a Workflow, agent: &str) -> Option<(u32, &'a Attempt)> {
    if wf.state.is_terminal() {
        return None;
    }
    let action = wf.current_action()?;
    let attempt = action.attempts.last()?;
    (attempt.agent_id == agent && !attempt.state.is_terminal()).then_some((action.index, attempt))
}

/// Applies one report. `Ok(true)`: the workflow changed; `Ok(false)`: the
/// report repeated what is already recorded.
/// An open attempt's lease is renewed to `now + lease`.
pub fn apply_report(
    wf: &mut Workflow,
    agent: &str,
    report: &Report,
    now: Millis,
    lease: Millis,
) -> Result<bool, TransitionError> {
    let action =
        wf.actions.get(report.action_index as usize).ok_or(TransitionError::UnknownAction(report.action_index))?;
    let pos = action
        .attempts
        .iter()
        .position(|a| a.id == report.attempt_id)
        .ok_or_else(|| TransitionError::UnknownAttempt(report.attempt_id.clone()))?;
    let attempt = &action.attempts[pos];
    if attempt.agent_id != agent {
        return Err(TransitionError::NotOwner { owner: attempt.agent_id.clone(), caller: agent.to_string() });
    }
    // A repeat of what is recorded is fine even on a finished workflow: it
    // is the agent retrying a report whose answer it lost.
    if report.state == attempt.state || (report.state < attempt.state && !report.state.is_terminal()) {
        return Ok(false);
    }
    if pos + 1 != action.attempts.len() {
        return Err(TransitionError::StaleAttempt {
            attempt: report.attempt_id.clone(),
            current: action.attempts.last().map(|a| a.id.clone()).unwrap_or_default(),
        });
    }
    if wf.state.is_terminal() {
        return Err(TransitionError::WorkflowFinished(wf.state.as_str()));
    }
    if attempt.state.is_terminal() || report.state < attempt.state {
        return Err(TransitionError::Illegal { from: attempt.state.as_str(), to: report.state.as_str() });
    }

    record(wf, report, now, lease);
    Ok(true)
}

/// An agent's report, as [`apply_report`] takes it, after the checks only the
/// server can make: a SUCCESS of a typed action must carry output that is
/// JSON and matches the action's output schema; otherwise the attempt is
/// FAILED with reason `InvalidOutput` (the container's exit code stays).
pub fn report(
    wf: &mut Workflow,
    agent: &str,
    report: Report,
    now: Millis,
    lease: Millis,
) -> Result<bool, TransitionError> {
    let report = check_typed_output(wf, report);
    apply_report(wf, agent, &report, now, lease)
}

fn check_typed_output(wf: &Workflow, mut report: Report) -> Report {
    let Some(action) = wf.actions.get(report.action_index as usize) else { return report };
    if report.state != ActionState::Success || action.spec.output_schema_json.is_empty() {
        return report;
    }
    let object = format!("output of action {:?}", action.spec.name);
    let result = serde_json::from_str::<serde_json::Value>(&action.spec.output_schema_json)
        .map_err(|e| e.to_string())
        .and_then(|schema| {
            let output: serde_json::Value = serde_json::from_str(&report.output_json)
                .map_err(|e| format!("stdout is not a JSON document ({e})"))?;
            kiln_documents::validate_json(&object, "output", &schema, &output).map_err(|e| e.to_string())
        });
    if let Err(message) = result {
        report.state = ActionState::Failed;
        report.reason = "InvalidOutput".into();
        report.message = message;
        report.output_json.clear();
    }
    report
}

/// Fails attempt `attempt_id` of action `index` with reason `RenderFailed`:
/// its references to earlier actions' outputs could not be rendered when it
/// was handed out, and an action must not run with a hole in its
/// configuration. The retry policy applies as for any failure.
pub fn fail_unrenderable(
    wf: &mut Workflow,
    index: u32,
    attempt_id: &str,
    error: String,
    now: Millis,
) -> Result<bool, TransitionError> {
    let action = wf.actions.get(index as usize).ok_or(TransitionError::UnknownAction(index))?;
    let owner = action
        .attempts
        .iter()
        .find(|a| a.id == attempt_id)
        .map(|a| a.agent_id.clone())
        .ok_or_else(|| TransitionError::UnknownAttempt(attempt_id.to_string()))?;
    let report = Report {
        action_index: index,
        attempt_id: attempt_id.to_string(),
        state: ActionState::Failed,
        exit_code: None,
        reason: "RenderFailed".into(),
        message: error,
        output_json: String::new(),
    };
    apply_report(wf, &owner, &report, now, 0)
}

/// Fails attempt `attempt_id` of action `index`, and the workflow with it,
/// with reason `DiskHintUnresolved`: a disk hint of one of its actions
/// (`{{ disk ... }}`, `{{ rootDisk }}`) matches no disk or several, or the
/// machine reported no disks to resolve it with. Checked when an action is
/// handed out, before it runs, for every action left: an action must not
/// write to a disk chosen by accident. No retry: the disks do not change
/// by trying again.
pub fn fail_disk_hint(
    wf: &mut Workflow,
    index: u32,
    attempt_id: &str,
    error: String,
    now: Millis,
) -> Result<bool, TransitionError> {
    let action = wf.actions.get(index as usize).ok_or(TransitionError::UnknownAction(index))?;
    let attempt = action
        .attempts
        .iter()
        .find(|a| a.id == attempt_id)
        .ok_or_else(|| TransitionError::UnknownAttempt(attempt_id.to_string()))?;
    if wf.state.is_terminal() || attempt.state.is_terminal() {
        return Ok(false);
    }
    let report = Report {
        action_index: index,
        attempt_id: attempt_id.to_string(),
        state: ActionState::Failed,
        exit_code: None,
        reason: "DiskHintUnresolved".into(),
        message: error,
        output_json: String::new(),
    };
    let name = action.spec.name.clone();
    let attempt = wf.actions[index as usize].attempts.iter_mut().find(|a| a.id == attempt_id).expect("found above");
    end_attempt(attempt, ActionState::Failed, &report.reason, report.message.clone(), now);
    end_workflow(wf, WorkflowState::Failed, failure_reason(&name, &report), now);
    Ok(true)
}

/// Ends an open attempt from the server's side (nobody reported it).
fn end_attempt(attempt: &mut Attempt, state: ActionState, reason: &str, message: String, now: Millis) {
    attempt.state = state;
    attempt.finished_at = Some(now);
    attempt.lease_expires_at = None;
    attempt.reason = reason.into();
    attempt.message = message;
}

fn end_workflow(wf: &mut Workflow, state: WorkflowState, reason: String, now: Millis) {
    wf.state = state;
    wf.reason = reason;
    wf.finished_at = Some(now);
}

/// Writes a validated report into the action's latest attempt and moves the
/// workflow on: to its end, or to a retry when the action has retries left.
fn record(wf: &mut Workflow, report: &Report, now: Millis, lease: Millis) {
    let index = report.action_index as usize;
    let last_action = index + 1 == wf.actions.len();
    let attempt = wf.actions[index].attempts.last_mut().expect("callers checked the attempt exists");
    attempt.state = report.state;
    attempt.lease_expires_at = (!report.state.is_terminal()).then_some(now + lease);
    match report.state {
        ActionState::Pending => {}
        ActionState::Pulling => attempt.pulling_at = Some(now),
        ActionState::Running => attempt.running_at = Some(now),
        ActionState::Success | ActionState::Failed | ActionState::Timeout => {
            attempt.finished_at = Some(now);
            attempt.exit_code = report.exit_code;
            attempt.reason = report.reason.clone();
            attempt.message = report.message.clone();
            attempt.output_json = report.output_json.clone();
        }
    }
    // Attempts so far include this one; the first is not a retry.
    let retries_left = wf.actions[index].attempts.len() <= wf.actions[index].spec.retries as usize;
    let workflow_end = match report.state {
        ActionState::Success if last_action => Some(WorkflowState::Success),
        ActionState::Failed | ActionState::Timeout if retries_left => None,
        ActionState::Failed => Some(WorkflowState::Failed),
        ActionState::Timeout => Some(WorkflowState::Timeout),
        _ => None,
    };
    if let Some(end) = workflow_end {
        let name = wf.actions[index].spec.name.clone();
        wf.reason = match end {
            WorkflowState::Success => String::new(),
            _ => failure_reason(&name, report),
        };
        wf.state = end;
        wf.finished_at = Some(now);
    }
}

/// Ends the current action's open attempt when its lease ran out before
/// `now`: the agent is gone, so the attempt is FAILED with reason
/// `AgentLost` and the retry policy applies as for any failure. Returns true
/// when it changed the workflow.
pub fn lose_expired(wf: &mut Workflow, now: Millis) -> bool {
    if wf.state.is_terminal() {
        return false;
    }
    let Some(action) = wf.current_action() else { return false };
    let Some(attempt) = action.attempts.last().filter(|a| !a.state.is_terminal()) else { return false };
    let Some(expired_at) = attempt.lease_expires_at.filter(|&t| t < now) else { return false };
    let report = Report {
        action_index: action.index,
        attempt_id: attempt.id.clone(),
        state: ActionState::Failed,
        exit_code: None,
        reason: "AgentLost".into(),
        message: format!(
            "agent lost: agent {} stopped renewing the attempt's lease, which ran out {:.1}s ago",
            attempt.agent_id,
            (now - expired_at) as f64 / 1000.0
        ),
        output_json: String::new(),
    };
    record(wf, &report, now, 0);
    true
}

fn failure_reason(action: &str, report: &Report) -> String {
    let mut reason = format!("action {action:?} {}", report.state.as_str());
    if let Some(code) = report.exit_code {
        reason.push_str(&format!(" with exit code {code}"));
    }
    if !report.reason.is_empty() {
        reason.push_str(&format!(" ({})", report.reason));
    }
    if !report.message.is_empty() {
        reason.push_str(&format!(": {}", report.message));
    }
    reason
}

/// Fails a workflow whose BMC step failed (docs/bmc.md), and its open
/// attempt with it. A workflow that already ended keeps its end, except a
/// SUCCESS whose finishing step (power off, boot from disk) failed: the
/// machine is not in the state asked for, and the operator must see that.
/// Returns true when it changed the workflow.
pub fn fail_for_bmc(wf: &mut Workflow, reason: &str, after_success: bool, now: Millis) -> bool {
    let may_end = !wf.state.is_terminal() || (after_success && wf.state == WorkflowState::Success);
    if !may_end {
        return false;
    }
    if let Some(index) = wf.current_action().map(|a| a.index as usize)
        && let Some(attempt) = wf.actions[index].attempts.last_mut().filter(|a| !a.state.is_terminal())
    {
        end_attempt(attempt, ActionState::Failed, "BmcStepFailed", reason.to_string(), now);
    }
    end_workflow(wf, WorkflowState::Failed, reason.to_string(), now);
    true
}

/// Ends a running workflow whose `global_timeout` has passed, and its open
/// attempt with it. Returns true when it changed the workflow.
pub fn expire(wf: &mut Workflow, now: Millis) -> bool {
    let (Some(limit), Some(started), false) = (wf.global_timeout_seconds, wf.started_at, wf.state.is_terminal()) else {
        return false;
    };
    if now < started + (limit as i64) * 1000 {
        return false;
    }
    if let Some(index) = wf.current_action().map(|a| a.index as usize)
        && let Some(attempt) = wf.actions[index].attempts.last_mut().filter(|a| !a.state.is_terminal())
    {
        end_attempt(
            attempt,
            ActionState::Timeout,
            "GlobalTimeout",
            format!("workflow global_timeout of {limit}s passed"),
            now,
        );
    }
    end_workflow(wf, WorkflowState::Timeout, format!("global_timeout of {limit}s passed"), now);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Action;
    use kiln_documents::PlannedAction;

    const LEASE: Millis = 30_000;

    fn planned(name: &str, worker: &str) -> PlannedAction {
        PlannedAction {
            task: "t".into(),
            name: name.into(),
            worker: worker.into(),
            image: "127.0.0.1:5000/a:v1".into(),
            timeout_seconds: 60,
            ..Default::default()
        }
    }

    fn workflow(n: usize) -> Workflow {
        Workflow {
            id: "wf".into(),
            template: "t".into(),
            hardware: "hw".into(),
            hardware_map: Default::default(),
            state: WorkflowState::Pending,
            reason: String::new(),
            global_timeout_seconds: None,
            boot_options: None,
            created_at: 0,
            started_at: None,
            finished_at: None,
            actions: (0..n)
                .map(|i| Action { index: i as u32, spec: planned(&format!("a{i}"), "agent"), attempts: vec![] })
                .collect(),
        }
    }

    fn report(index: u32, attempt: &str, state: ActionState) -> Report {
        Report {
            action_index: index,
            attempt_id: attempt.into(),
            state,
            exit_code: None,
            reason: String::new(),
            message: String::new(),
            output_json: String::new(),
        }
    }

    fn dispatch_one(wf: &mut Workflow, id: &str) -> bool {
        dispatch(wf, "agent", 1, LEASE, || id.to_string())
    }

    #[test]
    fn a_typed_action_without_valid_output_fails_as_invalid_output() {
        let schema = r#"{"type":"object","required":["disk"],"properties":{"disk":{"type":"string"}}}"#;
        for (output, expected) in [
            (r#"{"disk":"/dev/vda"}"#, None),
            ("not json", Some("stdout is not a JSON document")),
            (r#"{"size":3}"#, Some("disk")),
        ] {
            let mut wf = workflow(2);
            wf.actions[0].spec.output_schema_json = schema.into();
            dispatch_one(&mut wf, "x1");
            let success =
                Report { output_json: output.into(), exit_code: Some(0), ..report(0, "x1", ActionState::Success) };
            assert!(super::report(&mut wf, "agent", success, 2, LEASE).unwrap());
            let attempt = &wf.actions[0].attempts[0];
            match expected {
                None => {
                    assert_eq!(attempt.state, ActionState::Success);
                    assert_eq!(attempt.output_json, output);
                }
                Some(part) => {
                    assert_eq!((attempt.state, attempt.reason.as_str()), (ActionState::Failed, "InvalidOutput"));
                    assert!(attempt.message.contains(part), "{output}: {}", attempt.message);
                    assert_eq!(attempt.exit_code, Some(0), "the container's exit code stays");
                    assert!(attempt.output_json.is_empty());
                    assert_eq!(wf.state, WorkflowState::Failed);
                }
            }
        }
        // An untyped action's SUCCESS is taken as it is.
        let mut wf = workflow(1);
        dispatch_one(&mut wf, "x1");
        let success = Report { output_json: "whatever".into(), ..report(0, "x1", ActionState::Success) };
        super::report(&mut wf, "agent", success, 2, LEASE).unwrap();
        assert_eq!(wf.state, WorkflowState::Success);
    }

    #[test]
    fn an_unrenderable_action_fails_and_the_retry_policy_applies() {
        let mut wf = workflow(1);
        wf.actions[0].spec.retries = 1;
        dispatch_one(&mut wf, "x1");
        assert!(fail_unrenderable(&mut wf, 0, "x1", "no output \"disk\"".into(), 1).unwrap());
        let attempt = &wf.actions[0].attempts[0];
        assert_eq!((attempt.state, attempt.reason.as_str()), (ActionState::Failed, "RenderFailed"));
        assert_eq!(attempt.lease_expires_at, None);
        assert_eq!(wf.state, WorkflowState::Running, "one retry left");
        assert!(dispatch_one(&mut wf, "x2"));
        assert!(fail_unrenderable(&mut wf, 0, "x2", "still not".into(), 1).unwrap());
        assert_eq!(wf.state, WorkflowState::Failed);
        assert!(wf.reason.contains("RenderFailed"), "{}", wf.reason);
        assert!(matches!(
            fail_unrenderable(&mut wf, 0, "nope", String::new(), 7),
            Err(TransitionError::UnknownAttempt(_))
        ));
    }

    #[test]
    fn an_unresolved_disk_hint_fails_the_workflow_without_retries() {
        let mut wf = workflow(2);
        wf.actions[0].spec.retries = 3;
        dispatch_one(&mut wf, "x1");
        assert!(fail_disk_hint(&mut wf, 0, "x1", "disk hint {serial: \"a\"} matches no disk".into(), 5).unwrap());
        let attempt = &wf.actions[0].attempts[0];
        assert_eq!((attempt.state, attempt.reason.as_str()), (ActionState::Failed, "DiskHintUnresolved"));
        assert_eq!(wf.state, WorkflowState::Failed, "retries do not apply");
        assert!(wf.reason.contains("(DiskHintUnresolved): disk hint {serial: \"a\"}"), "{}", wf.reason);
        assert!(!fail_disk_hint(&mut wf, 0, "x1", "again".into(), 6).unwrap(), "a finished workflow stays");
        assert!(!dispatch_one(&mut wf, "x2"));
    }

    #[test]
    fn the_sql_of_the_rules_names_the_open_states() {
        assert_eq!(*sql::OPEN_ATTEMPTS, "'PENDING', 'PULLING', 'RUNNING'");
        assert_eq!(*sql::OPEN_WORKFLOWS, "'PENDING', 'RUNNING'");
        for s in [ActionState::Pending, ActionState::Pulling, ActionState::Running] {
            assert_eq!(OPEN_ATTEMPT_STATES.contains(&s), !s.is_terminal());
        }
        assert_eq!(
            sql::renew_leases("MAX", "id = ?1", "?2", "?3").split_whitespace().collect::<Vec<_>>().join(" "),
            "UPDATE attempts SET lease_expires_at = MAX(lease_expires_at, ?3) WHERE id = ?1 AND agent_id = ?2 \
             AND state IN ('PENDING', 'PULLING', 'RUNNING') AND lease_expires_at IS NOT NULL"
        );
    }

    #[test]
    fn runs_actions_in_order_to_success() {
        let mut wf = workflow(2);
        assert!(dispatch_one(&mut wf, "x1"));
        assert_eq!(wf.state, WorkflowState::Running);
        // Dispatching again while the attempt is open hands out the same one.
        assert!(!dispatch_one(&mut wf, "other"));
        assert_eq!(open_attempt_for(&wf, "agent").unwrap().1.id, "x1");
        assert!(apply_report(&mut wf, "agent", &report(0, "x1", ActionState::Running), 2, LEASE).unwrap());
        assert!(apply_report(&mut wf, "agent", &report(0, "x1", ActionState::Success), 3, LEASE).unwrap());
        assert_eq!(wf.state, WorkflowState::Running);
        assert!(dispatch_one(&mut wf, "x2"));
        assert_eq!(open_attempt_for(&wf, "agent").unwrap().0, 1);
        assert!(apply_report(&mut wf, "agent", &report(1, "x2", ActionState::Success), 4, LEASE).unwrap());
        assert_eq!(wf.state, WorkflowState::Success);
        assert_eq!(wf.finished_at, Some(4));
        assert!(!dispatch_one(&mut wf, "x3"));
    }

    #[test]
    fn repeated_and_late_reports_are_no_ops() {
        let mut wf = workflow(1);
        dispatch_one(&mut wf, "x1");
        assert!(apply_report(&mut wf, "agent", &report(0, "x1", ActionState::Running), 2, LEASE).unwrap());
        assert!(!apply_report(&mut wf, "agent", &report(0, "x1", ActionState::Running), 3, LEASE).unwrap());
        assert!(!apply_report(&mut wf, "agent", &report(0, "x1", ActionState::Pulling), 3, LEASE).unwrap());
        assert_eq!(wf.actions[0].attempts[0].running_at, Some(2));
        assert!(apply_report(&mut wf, "agent", &report(0, "x1", ActionState::Success), 4, LEASE).unwrap());
        // The retried terminal report of a finished workflow is accepted as a no-op ...
        assert!(!apply_report(&mut wf, "agent", &report(0, "x1", ActionState::Success), 5, LEASE).unwrap());
        // ... but a different ending is refused, and nothing changes.
        let err = apply_report(&mut wf, "agent", &report(0, "x1", ActionState::Failed), 5, LEASE).unwrap_err();
        assert!(matches!(err, TransitionError::WorkflowFinished("SUCCESS")), "{err}");
        assert_eq!(wf.state, WorkflowState::Success);
    }

    #[test]
    fn failure_ends_the_workflow_with_the_exit_code() {
        let mut wf = workflow(3);
        dispatch_one(&mut wf, "x1");
        let mut r = report(0, "x1", ActionState::Failed);
        r.exit_code = Some(3);
        r.reason = "NonZeroExit".into();
        apply_report(&mut wf, "agent", &r, 2, LEASE).unwrap();
        assert_eq!(wf.state, WorkflowState::Failed);
        assert!(wf.reason.contains("exit code 3"), "{}", wf.reason);
        assert!(!dispatch_one(&mut wf, "x2"), "later actions never run");
        assert!(wf.actions[1].attempts.is_empty());
    }

    #[test]
    fn rejects_other_agents_unknown_and_stale_attempts() {
        let mut wf = workflow(1);
        dispatch_one(&mut wf, "x1");
        let err = apply_report(&mut wf, "intruder", &report(0, "x1", ActionState::Running), 2, LEASE).unwrap_err();
        assert!(matches!(err, TransitionError::NotOwner { .. }));
        let err = apply_report(&mut wf, "agent", &report(0, "nope", ActionState::Running), 2, LEASE).unwrap_err();
        assert!(matches!(err, TransitionError::UnknownAttempt(_)));
        let err = apply_report(&mut wf, "agent", &report(7, "x1", ActionState::Running), 2, LEASE).unwrap_err();
        assert!(matches!(err, TransitionError::UnknownAction(7)));
        // A second attempt (as a retry would create) makes the first stale.
        wf.actions[0].attempts[0].state = ActionState::Failed;
        let retry = Attempt { id: "x2".into(), number: 2, ..wf.actions[0].attempts[0].clone() };
        wf.actions[0].attempts.push(retry);
        wf.actions[0].attempts[1].state = ActionState::Pending;
        let err = apply_report(&mut wf, "agent", &report(0, "x1", ActionState::Success), 2, LEASE).unwrap_err();
        assert!(matches!(err, TransitionError::StaleAttempt { .. }), "{err}");
    }

    #[test]
    fn retries_make_new_attempts_after_the_backoff() {
        let mut wf = workflow(1);
        wf.actions[0].spec.retries = 1;
        wf.actions[0].spec.retry_backoff_seconds = 2;
        dispatch_one(&mut wf, "x1");
        let mut failed = report(0, "x1", ActionState::Failed);
        failed.exit_code = Some(1);
        apply_report(&mut wf, "agent", &failed, 10, LEASE).unwrap();
        assert_eq!(wf.state, WorkflowState::Running, "one retry left");
        assert_eq!(retry_due_at(&wf, "agent"), Some(2_010));
        assert!(!dispatch(&mut wf, "agent", 2_009, LEASE, || "x2".into()), "backoff not passed");
        assert!(dispatch(&mut wf, "agent", 2_010, LEASE, || "x2".into()));
        assert_eq!(wf.actions[0].attempts[1].number, 2);
        // The first attempt is stale now.
        let err = apply_report(&mut wf, "agent", &report(0, "x1", ActionState::Success), 2_011, LEASE).unwrap_err();
        assert!(matches!(err, TransitionError::StaleAttempt { .. }));
        failed.attempt_id = "x2".into();
        apply_report(&mut wf, "agent", &failed, 2_100, LEASE).unwrap();
        assert_eq!(wf.state, WorkflowState::Failed, "retries used up");
        assert_eq!(retry_due_at(&wf, "agent"), None);
    }

    #[test]
    fn resume_gives_the_failed_action_a_new_attempt() {
        let mut wf = workflow(2);
        dispatch_one(&mut wf, "x1");
        apply_report(&mut wf, "agent", &report(0, "x1", ActionState::Success), 2, LEASE).unwrap();
        dispatch_one(&mut wf, "x2");
        apply_report(&mut wf, "agent", &report(1, "x2", ActionState::Timeout), 3, LEASE).unwrap();
        assert_eq!(wf.state, WorkflowState::Timeout);
        assert!(!dispatch_one(&mut wf, "x3"));
        assert!(resume(&mut wf, 4).unwrap());
        assert_eq!((wf.state, wf.finished_at, wf.started_at), (WorkflowState::Running, None, Some(4)));
        assert!(dispatch(&mut wf, "agent", 5, LEASE, || "x3".into()));
        let (index, attempt) = open_attempt_for(&wf, "agent").unwrap();
        assert_eq!((index, attempt.number), (1, 2), "the succeeded action does not run again");
        apply_report(&mut wf, "agent", &report(1, "x3", ActionState::Success), 6, LEASE).unwrap();
        assert_eq!(wf.state, WorkflowState::Success);
        assert!(matches!(resume(&mut wf, 7), Err(TransitionError::NotResumable("SUCCESS"))));
    }

    #[test]
    fn resume_goes_back_to_the_failed_bmc_step() {
        // The start step failed: nothing ran, the workflow waits again.
        let mut wf = workflow(1);
        assert!(fail_for_bmc(&mut wf, "BMC step start failed", false, 2));
        assert!(resume(&mut wf, 3).unwrap());
        assert_eq!((wf.state, wf.started_at, wf.finished_at), (WorkflowState::Pending, None, None));
        // The finishing step failed after SUCCESS: SUCCESS again.
        dispatch_one(&mut wf, "x1");
        apply_report(&mut wf, "agent", &report(0, "x1", ActionState::Success), 4, LEASE).unwrap();
        assert!(fail_for_bmc(&mut wf, "BMC step finish failed", true, 5));
        assert_eq!(wf.state, WorkflowState::Failed);
        assert!(resume(&mut wf, 6).unwrap());
        assert_eq!((wf.state, wf.finished_at, wf.reason.as_str()), (WorkflowState::Success, Some(6), ""));
    }

    #[test]
    fn other_agents_do_not_get_the_action() {
        let mut wf = workflow(1);
        assert!(!dispatch(&mut wf, "someone-else", 1, LEASE, || "x".into()));
        assert_eq!(wf.state, WorkflowState::Pending);
        assert!(open_attempt_for(&wf, "someone-else").is_none());
    }

    #[test]
    fn global_timeout_ends_the_open_attempt() {
        let mut wf = workflow(2);
        wf.global_timeout_seconds = Some(10);
        dispatch_one(&mut wf, "x1");
        assert!(!expire(&mut wf, 5_000));
        assert!(expire(&mut wf, 11_001));
        assert_eq!(wf.state, WorkflowState::Timeout);
        assert_eq!(wf.actions[0].attempts[0].state, ActionState::Timeout);
        let err = apply_report(&mut wf, "agent", &report(0, "x1", ActionState::Success), 12_000, LEASE).unwrap_err();
        assert!(matches!(err, TransitionError::Illegal { .. } | TransitionError::WorkflowFinished(_)), "{err}");
    }

    #[test]
    fn a_failed_bmc_step_fails_the_workflow_and_its_open_attempt() {
        let mut wf = workflow(2);
        dispatch_one(&mut wf, "x1");
        assert!(fail_for_bmc(&mut wf, "BMC step start failed", false, 2_000));
        assert_eq!(
            (wf.state, wf.reason.as_str(), wf.finished_at),
            (WorkflowState::Failed, "BMC step start failed", Some(2_000))
        );
        let attempt = &wf.actions[0].attempts[0];
        assert_eq!((attempt.state, attempt.reason.as_str()), (ActionState::Failed, "BmcStepFailed"));
        // Ended is ended: a second failure changes nothing.
        assert!(!fail_for_bmc(&mut wf, "again", false, 3_000));
        assert_eq!(wf.reason, "BMC step start failed");

        // A SUCCESS whose finishing step failed becomes FAILED; its
        // start step failing late (it cannot) would not.
        let mut done = workflow(1);
        done.state = WorkflowState::Success;
        assert!(!fail_for_bmc(&mut done, "late start", false, 4_000));
        assert!(fail_for_bmc(&mut done, "power off failed", true, 4_000));
        assert_eq!((done.state, done.reason.as_str()), (WorkflowState::Failed, "power off failed"));
    }

    #[test]
    fn dispatch_and_reports_hold_a_lease_that_ends_with_the_attempt() {
        let mut wf = workflow(2);
        dispatch_one(&mut wf, "x1");
        assert_eq!(wf.actions[0].attempts[0].lease_expires_at, Some(1 + LEASE));
        apply_report(&mut wf, "agent", &report(0, "x1", ActionState::Running), 500, LEASE).unwrap();
        assert_eq!(wf.actions[0].attempts[0].lease_expires_at, Some(500 + LEASE));
        apply_report(&mut wf, "agent", &report(0, "x1", ActionState::Success), 900, LEASE).unwrap();
        assert_eq!(wf.actions[0].attempts[0].lease_expires_at, None);
    }

    #[test]
    fn a_lost_lease_fails_the_attempt_and_later_reports_are_rejected() {
        let mut wf = workflow(2);
        dispatch_one(&mut wf, "x1");
        apply_report(&mut wf, "agent", &report(0, "x1", ActionState::Running), 10, LEASE).unwrap();
        assert!(!lose_expired(&mut wf, 10 + LEASE), "the lease is still valid at its last instant");
        assert!(lose_expired(&mut wf, 11 + LEASE));
        let lost = &wf.actions[0].attempts[0];
        assert_eq!((lost.state, lost.reason.as_str(), lost.lease_expires_at), (ActionState::Failed, "AgentLost", None));
        assert_eq!(wf.state, WorkflowState::Failed);
        assert!(wf.reason.contains("AgentLost") && wf.reason.contains("agent lost"), "{}", wf.reason);
        // The agent comes back and reports the end it saw: too late.
        let err =
            apply_report(&mut wf, "agent", &report(0, "x1", ActionState::Success), 12 + LEASE, LEASE).unwrap_err();
        assert!(matches!(err, TransitionError::WorkflowFinished(_) | TransitionError::Illegal { .. }), "{err}");
        assert!(!lose_expired(&mut wf, 100 + LEASE), "a finished workflow never changes");
    }

    #[test]
    fn a_lost_lease_uses_the_retry_policy() {
        let mut wf = workflow(1);
        wf.actions[0].spec.retries = 1;
        dispatch_one(&mut wf, "x1");
        assert!(lose_expired(&mut wf, 2 + LEASE));
        assert_eq!(wf.state, WorkflowState::Running, "one retry left");
        assert!(dispatch(&mut wf, "agent", 3 + LEASE, LEASE, || "x2".into()));
        // A late report for the lost attempt is stale now.
        let err = apply_report(&mut wf, "agent", &report(0, "x1", ActionState::Success), 4 + LEASE, LEASE).unwrap_err();
        assert!(matches!(err, TransitionError::StaleAttempt { .. }), "{err}");
        apply_report(&mut wf, "agent", &report(0, "x2", ActionState::Success), 5 + LEASE, LEASE).unwrap();
        assert_eq!(wf.state, WorkflowState::Success);
    }
}
