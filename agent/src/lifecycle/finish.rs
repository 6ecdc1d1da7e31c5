//! From the container's end to the terminal report: the ending, the
//! handler, the artifacts, the last logs, the report, the clean-up.

use std::time::Duration;

use kiln_proto::v1::{ActionState, Assignment};

use super::prepare::AttemptDirs;
use super::run::{ContainerRun, MAX_OUTPUT};
use super::wait::RunOutcome;
use super::{Abandoned, Attempt, Ending, Next, artifacts, handlers, report};
use crate::Agent;
use crate::config::FailedContainers;
use crate::log_shipper::LogShipper;
use crate::runtime::{ContainerSpec, OutputLine, RuntimeError, remove_in_background};

/// The attempt's ending from how its container ended; a typed action's
/// stdout becomes its output.
pub(super) fn ending_of(
    outcome: Result<RunOutcome, RuntimeError>,
    captured: String,
    typed: bool,
    timeout: Duration,
) -> Ending {
    let mut ending = match outcome {
        Ok(outcome) => Ending::from_outcome(outcome, timeout),
        Err(e) => Ending::failed("WaitFailed", e.to_string()),
    };
    if typed && ending.state == ActionState::Success {
        if captured.len() > MAX_OUTPUT {
            ending = Ending::failed("OutputTooLarge", format!("stdout exceeded {MAX_OUTPUT} bytes"));
        } else {
            ending.output_json = captured;
        }
    }
    ending
}

/// What follows the container's end, before the report: a timeout is
/// named in the logs, the handler runs, the artifacts are uploaded, and
/// every log line reaches the server.
pub(super) async fn after_exit(
    at: &Attempt<'_>,
    container: &ContainerSpec,
    ending: &Ending,
    timeout: Duration,
    shipper: LogShipper,
) {
    if ending.state == ActionState::Timeout {
        shipper.send(OutputLine { stderr: true, text: format!("[kiln-agent] {}", ending.message) }).await;
    }
    handlers::run_for(at, ending.state, container, timeout, &shipper).await;
    artifacts::upload(at.agent, at.a, &at.dirs.out, &shipper).await;
    shipper.finish().await;
}

/// Reports how the attempt ended (unless a terminal action's SUCCESS was
/// reported already), then cleans up.
pub(super) async fn conclude(
    agent: &Agent,
    a: &Assignment,
    run: ContainerRun,
    dirs: std::io::Result<AttemptDirs>,
) -> Result<Next, Abandoned> {
    let ContainerRun { ending, container, reported_early } = run;
    tracing::info!(state = ?ending.state, exit_code = ?ending.exit_code, reason = %ending.reason, "action ended");
    let reported = if reported_early {
        if ending.state != ActionState::Success {
            tracing::warn!(reason = %ending.reason, "terminal action failed after its SUCCESS was reported");
        }
        Ok(())
    } else {
        report(agent, a, ending.state, Some(&ending)).await
    };
    // Clean up after the report, off the critical path: the next action
    // need not wait for the engine to delete this one's container.
    if let Some(id) = container {
        let keep = ending.state != ActionState::Success && agent.config.failed_containers == FailedContainers::Keep;
        if keep {
            tracing::info!(container = %id, "keeping the failed container for inspection");
        } else if let Some(runtime) = agent.engine.connected() {
            remove_in_background(runtime, id);
        }
    }
    if let Ok(dirs) = dirs {
        dirs.remove_attempt_dirs();
    }
    reported.map(|()| Next::Continue)
}
