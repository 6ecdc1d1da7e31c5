//! One attempt at one action, from assignment to its terminal report:
//!
//! ```text
//! PULLING   ensure the image (pull policy, registry credentials)
//! RUNNING   create + start the container; its output goes to the LogShipper
//!           wait for exit, or kill it when the timeout passes
//! SUCCESS | FAILED | TIMEOUT   after every log line is with the server
//!           then remove the container in the background (kept on failure,
//!           if so configured)
//! ```

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use kiln_proto::time::to_proto;
use kiln_proto::v1::{ActionState, Assignment, StateReport};
use kiln_spec::ImageRef;
use tonic::Status;

use crate::Agent;
use crate::config::FailedContainers;
use crate::log_shipper::LogShipper;
use crate::runtime::{ContainerSpec, OutputLine, RunOutcome, labels};

/// How long to wait for the last log lines after the container exited.
const LOG_DRAIN: Duration = Duration::from_secs(10);

/// The end of an attempt, as reported to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    pub state: ActionState,
    pub exit_code: Option<i64>,
    pub reason: &'static str,
    pub message: String,
}

impl Ending {
    fn failed(reason: &'static str, message: impl Into<String>) -> Self {
        Self { state: ActionState::Failed, exit_code: None, reason, message: message.into() }
    }

    /// Maps how the container ended to a report.
    pub fn from_outcome(outcome: RunOutcome, timeout: Duration) -> Self {
        match outcome {
            RunOutcome::TimedOut => Self {
                state: ActionState::Timeout,
                exit_code: Some(137),
                reason: "Timeout",
                message: format!("killed after its timeout of {}s", timeout.as_secs()),
            },
            RunOutcome::Exited { code: 0, .. } => {
                Self { state: ActionState::Success, exit_code: Some(0), reason: "", message: String::new() }
            }
            RunOutcome::Exited { code, oom_killed: true } => Self {
                state: ActionState::Failed,
                exit_code: Some(code),
                reason: "OOMKilled",
                message: "killed by the kernel for exceeding its memory limit".into(),
            },
            RunOutcome::Exited { code, .. } => Self {
                state: ActionState::Failed,
                exit_code: Some(code),
                reason: "NonZeroExit",
                message: format!("exited with code {code}"),
            },
        }
    }
}

/// Why an attempt was abandoned without a terminal report.
#[derive(Debug, thiserror::Error)]
#[error("server refused report: {0}")]
pub struct Abandoned(pub Status);

pub async fn run_attempt(agent: &Agent, a: &Assignment) -> Result<(), Abandoned> {
    let spec = a.action.clone().unwrap_or_default();
    let span = tracing::info_span!("attempt", workflow = %a.workflow_id, action = %spec.name, attempt = %a.attempt_id);
    let _enter = span.enter();
    tracing::info!(image = %spec.image, "starting action {}/{}", a.action_index + 1, a.action_count);
    agent.on_workflow(&a.workflow_id).await;

    let timeout = Duration::from_secs(spec.timeout_seconds.max(1));
    let mut container = None;
    let ending = match ImageRef::parse(&spec.image) {
        Err(e) => Ending::failed("InvalidImage", e),
        Ok(image) => {
            report(agent, a, ActionState::Pulling, None).await?;
            let credentials = agent.config.credentials_for(&image.registry);
            match agent.runtime.ensure_image(&image, agent.config.pull_policy, credentials).await {
                Err(e) => Ending::failed("PullFailed", e.to_string()),
                Ok(()) => {
                    let (ending, id) = run_container(agent, a, &spec, &image, timeout).await?;
                    container = id;
                    ending
                }
            }
        }
    };
    tracing::info!(state = ?ending.state, exit_code = ?ending.exit_code, reason = ending.reason, "action ended");
    let reported = report(agent, a, ending.state, Some(&ending)).await;
    // Clean up after the report, off the critical path: the next action
    // need not wait for the engine to delete this one's container.
    if let Some(id) = container {
        let keep = ending.state != ActionState::Success && agent.config.failed_containers == FailedContainers::Keep;
        if keep {
            tracing::info!(container = %id, "keeping the failed container for inspection");
        } else {
            agent.runtime.remove_in_background(id);
        }
    }
    reported
}

async fn run_container(
    agent: &Agent,
    a: &Assignment,
    spec: &kiln_proto::v1::ActionSpec,
    image: &ImageRef,
    timeout: Duration,
) -> Result<(Ending, Option<String>), Abandoned> {
    let container = ContainerSpec {
        name: container_name(a),
        image: image.to_string(),
        command: spec.command.clone(),
        env: environment(spec),
        // Host /dev, not a copy: partitions created by an earlier action
        // (or by this one) appear without restarting anything.
        binds: std::iter::once("/dev:/dev".to_string()).chain(spec.volumes.iter().cloned()).collect(),
        pid_host: spec.pid == "host",
        host_network: agent.config.host_network || spec.network == "host",
        labels: HashMap::from([
            (labels::WORKFLOW.to_string(), a.workflow_id.clone()),
            (labels::ACTION.to_string(), a.action_index.to_string()),
            (labels::ATTEMPT.to_string(), a.attempt_id.clone()),
            (labels::AGENT.to_string(), agent.id.clone()),
        ]),
    };
    let id = match agent.runtime.create(&container).await {
        Ok(id) => id,
        Err(e) => return Ok((Ending::failed("CreateFailed", e.to_string()), None)),
    };
    if let Err(e) = agent.runtime.start(&id).await {
        return Ok((Ending { exit_code: Some(125), ..Ending::failed("StartFailed", e.to_string()) }, Some(id)));
    }
    report(agent, a, ActionState::Running, None).await?;

    let shipper = LogShipper::start(agent.client.clone(), a.workflow_id.clone(), a.action_index, a.attempt_id.clone());
    let mut output = Box::pin(agent.runtime.output(&id));
    let follow = async {
        while let Some(line) = output.next().await {
            shipper.send(line).await;
        }
    };
    let (outcome, ()) = tokio::join!(agent.runtime.wait(&id, timeout), async {
        // The log stream ends when the container stops; after a kill it
        // may linger, so it gets a bounded grace period past the timeout.
        let _ = tokio::time::timeout(timeout + LOG_DRAIN, follow).await;
    });
    let ending = match outcome {
        Ok(outcome) => Ending::from_outcome(outcome, timeout),
        Err(e) => Ending::failed("WaitFailed", e.to_string()),
    };
    if ending.state == ActionState::Timeout {
        shipper.send(OutputLine { stderr: true, text: format!("[kiln-agent] {}", ending.message) }).await;
    }
    shipper.finish().await;
    Ok((ending, Some(id)))
}

/// `kiln-<workflow>-<action>-<attempt>`: unique per attempt, so a
/// restarted agent finds (and replaces) its own leftovers by name.
fn container_name(a: &Assignment) -> String {
    let workflow: String = a
        .workflow_id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '_' })
        .collect();
    let attempt: String = a.attempt_id.chars().filter(char::is_ascii_alphanumeric).take(12).collect();
    format!("kiln-{workflow}-{}-{attempt}", a.action_index)
}

fn environment(spec: &kiln_proto::v1::ActionSpec) -> Vec<String> {
    let mut env: Vec<String> = spec.environment.iter().map(|(k, v)| format!("{k}={v}")).collect();
    env.sort();
    env
}

async fn report(agent: &Agent, a: &Assignment, state: ActionState, ending: Option<&Ending>) -> Result<(), Abandoned> {
    let report = StateReport {
        workflow_id: a.workflow_id.clone(),
        action_index: a.action_index,
        attempt_id: a.attempt_id.clone(),
        state: state as i32,
        observed_at: Some(to_proto(SystemTime::now())),
        exit_code: ending.and_then(|e| e.exit_code),
        reason: ending.map(|e| e.reason.to_string()).unwrap_or_default(),
        message: ending.map(|e| e.message.clone()).unwrap_or_default(),
    };
    // Transient failures were retried by the client; what is left means the
    // server moved on (workflow finished or timed out, attempt superseded),
    // so nothing this agent does for the attempt matters any more.
    agent.client.report(report).await.map(|_| ()).map_err(Abandoned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_map_to_reports() {
        let t = Duration::from_secs(5);
        assert_eq!(
            Ending::from_outcome(RunOutcome::Exited { code: 0, oom_killed: false }, t).state,
            ActionState::Success
        );
        let e = Ending::from_outcome(RunOutcome::Exited { code: 3, oom_killed: false }, t);
        assert_eq!((e.state, e.exit_code, e.reason), (ActionState::Failed, Some(3), "NonZeroExit"));
        let e = Ending::from_outcome(RunOutcome::Exited { code: 137, oom_killed: true }, t);
        assert_eq!(e.reason, "OOMKilled");
        let e = Ending::from_outcome(RunOutcome::TimedOut, t);
        assert_eq!((e.state, e.exit_code), (ActionState::Timeout, Some(137)));
        assert!(e.message.contains("5s"));
    }

    #[test]
    fn container_names_are_docker_safe() {
        let a = Assignment {
            workflow_id: "wf/1 x".into(),
            action_index: 2,
            attempt_id: "0b7c-44d1-9a9a-aaaa-bbbbcccc".into(),
            ..Default::default()
        };
        assert_eq!(container_name(&a), "kiln-wf_1_x-2-0b7c44d19a9a");
    }
}
