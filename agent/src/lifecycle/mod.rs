//! One attempt at one action, from assignment to its terminal report:
//!
//! ```text
//! PULLING   ensure the image (pull policy, registry credentials)    pull.rs
//!           or re-attach to this attempt's running container        run.rs
//! RUNNING   create + start the container                            run.rs
//!           its output goes to the LogShipper, to the stream's end  logs.rs
//!           wait for exit, or SIGTERM/SIGKILL it at the timeout     wait.rs
//!           (terminal steps: SUCCESS reported before they fire, by  handshake.rs
//!           the handshake or before the start)
//!           on-failure / on-timeout handler                         handlers.rs
//!           artifacts from /out                                     artifacts.rs
//! SUCCESS | FAILED | TIMEOUT   after every log line is with the     finish.rs
//!           server; then remove the container in the background
//!           (kept on failure, if so configured)
//! ```
//!
//! The container engine is a [`Runtime`](crate::runtime::Runtime), so all
//! of this runs against a fake one in the tests.

mod artifacts;
mod ending;
mod finish;
mod handlers;
mod handshake;
mod logs;
mod prepare;
mod pull;
mod run;
mod wait;

#[cfg(test)]
mod tests;

use std::time::{Duration, SystemTime};

use kiln_documents::ImageRef;
use kiln_proto::time::to_proto;
use kiln_proto::v1::{ActionSpec, ActionState, Assignment, StateReport};
use tonic::Status;
use tracing::Instrument;

pub use ending::Ending;
pub use prepare::container_name;
pub use wait::RunOutcome;

use crate::Agent;
use crate::log_shipper::LogShipper;
use crate::runtime::SharedRuntime;
use prepare::AttemptDirs;
use run::ContainerRun;

/// Why an attempt was abandoned without a terminal report.
#[derive(Debug, thiserror::Error)]
#[error("server refused report: {0}")]
pub struct Abandoned(pub Status);

/// What the agent does once an attempt is reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    Continue,
    /// A built-in `reboot` or `poweroff` step succeeded: do it now.
    Power(String),
}

/// A container attempt and what it runs with.
struct Attempt<'a> {
    agent: &'a Agent,
    a: &'a Assignment,
    spec: &'a ActionSpec,
    image: &'a ImageRef,
    runtime: &'a SharedRuntime,
    dirs: &'a AttemptDirs,
}

pub async fn run_attempt(agent: &Agent, a: &Assignment) -> Result<Next, Abandoned> {
    let spec = a.action.clone().unwrap_or_default();
    let span = tracing::info_span!("attempt", workflow = %a.workflow_id, action = %spec.name, attempt = %a.attempt_id);
    // With trace export on, this span (and the pull, run and report spans
    // inside it) hangs under the attempt's span in the workflow's trace.
    kiln_telemetry::set_parent(&span, &a.traceparent);
    attempt(agent, a, spec).instrument(span).await
}

async fn attempt(agent: &Agent, a: &Assignment, spec: ActionSpec) -> Result<Next, Abandoned> {
    tracing::info!(image = %spec.image, builtin = %spec.builtin, "starting action {}/{}", a.action_index + 1, a.action_count);
    agent.on_workflow(&a.workflow_id).await;
    if !spec.builtin.is_empty() {
        return run_builtin(agent, a, spec.builtin).await;
    }
    if !spec.external.is_empty() {
        return run_external(agent, a, &spec).await;
    }
    let dirs = AttemptDirs::create(agent, a);
    let run = in_container(agent, a, &spec, &dirs).await?;
    finish::conclude(agent, a, run, dirs).await
}

/// A built-in `reboot` or `poweroff`: SUCCESS first, acknowledged by the
/// server; the power action after.
async fn run_builtin(agent: &Agent, a: &Assignment, builtin: String) -> Result<Next, Abandoned> {
    report(agent, a, ActionState::Running, None).await?;
    report(agent, a, ActionState::Success, Some(&Ending::success())).await?;
    Ok(Next::Power(builtin))
}

async fn run_external(agent: &Agent, a: &Assignment, spec: &ActionSpec) -> Result<Next, Abandoned> {
    report(agent, a, ActionState::Running, None).await?;
    let shipper = LogShipper::start(agent.client.clone(), a.workflow_id.clone(), a.action_index, a.attempt_id.clone());
    let ending = crate::external::run(agent, a, spec, timeout_of(spec), &shipper).await;
    shipper.finish().await;
    tracing::info!(state = ?ending.state, reason = %ending.reason, "external action ended");
    report(agent, a, ending.state, Some(&ending)).await.map(|()| Next::Continue)
}

fn timeout_of(spec: &ActionSpec) -> Duration {
    Duration::from_secs(spec.timeout_seconds.max(1))
}

/// Runs the action's container, once the image is allowed here, the
/// attempt's directories exist and the engine answers.
async fn in_container(
    agent: &Agent,
    a: &Assignment,
    spec: &ActionSpec,
    dirs: &std::io::Result<AttemptDirs>,
) -> Result<ContainerRun, Abandoned> {
    let (image, dirs) = match (prepare::allowed_image(agent, spec), dirs) {
        (Err((reason, e)), _) => return Ok(ContainerRun::none(Ending::failed(reason, e))),
        (_, Err(e)) => {
            let message = format!("cannot create the attempt's directories: {e}");
            return Ok(ContainerRun::none(Ending::failed("AgentError", message)));
        }
        (Ok(image), Ok(dirs)) => (image, dirs),
    };
    match agent.engine.get().await {
        Err(e) => Ok(ContainerRun::none(Ending::failed("EngineUnavailable", e.to_string()))),
        Ok(runtime) => run::run(&Attempt { agent, a, spec, image: &image, runtime, dirs }, timeout_of(spec)).await,
    }
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
        output_json: ending.map(|e| e.output_json.clone()).unwrap_or_default(),
    };
    if matches!(state, ActionState::Success | ActionState::Failed | ActionState::Timeout) {
        // From here on the attempt ends by this agent's own report; a
        // heartbeat answer saying "ended" must not cancel what follows
        // (a terminal step fires only after its SUCCESS is acknowledged).
        agent.lease.release();
    }
    // Transient failures were retried by the client; what is left means the
    // server moved on (workflow finished or timed out, attempt superseded),
    // so nothing this agent does for the attempt matters any more.
    let span = tracing::info_span!("report", state = state.as_str_name());
    agent.client.report(report).instrument(span).await.map(|_| ()).map_err(Abandoned)
}
