//! RUNNING: the attempt's container, created and started (or the one this
//! attempt left running, adopted), followed until it ends.

use std::time::Duration;

use kiln_proto::v1::ActionState;
use tokio::sync::watch;
use tracing::Instrument;

use super::handshake::TerminalMode;
use super::wait::{RunOutcome, wait_or_stop};
use super::{Abandoned, Attempt, Ending, finish, handshake, logs, prepare, pull, report};
use crate::log_shipper::LogShipper;
use crate::runtime::{ContainerSpec, OutputLine, RuntimeError};

/// Largest JSON output a typed action may print.
pub(super) const MAX_OUTPUT: usize = 1 << 20;

/// How a container attempt went.
pub(super) struct ContainerRun {
    pub ending: Ending,
    /// The container to clean up, if one was created.
    pub container: Option<String>,
    /// A terminal action's SUCCESS was reported while it still ran.
    pub reported_early: bool,
}

impl ContainerRun {
    /// Ended before a container was created.
    pub fn none(ending: Ending) -> Self {
        Self { ending, container: None, reported_early: false }
    }
}

/// Follows the attempt's container if it runs already (this agent died
/// while it ran), else pulls the image and runs it.
pub(super) async fn run(at: &Attempt<'_>, timeout: Duration) -> Result<ContainerRun, Abandoned> {
    let (timeout, existing) = match at.runtime.find_attempt(&at.a.attempt_id).await {
        Some((id, running_for)) => {
            // The container went on without its agent: follow it to its end
            // instead of running the action twice.
            tracing::warn!(container = %id, running_for = ?running_for, "re-attaching to this attempt's container");
            (timeout.saturating_sub(running_for).max(Duration::from_secs(1)), Some(id))
        }
        None => {
            let span = tracing::info_span!("pull", image = %at.spec.image);
            if let Some(failed) = pull::pull_image(at).instrument(span).await? {
                return Ok(ContainerRun::none(failed));
            }
            (timeout, None)
        }
    };
    let run = run_container(at, timeout, existing).instrument(tracing::info_span!("run")).await?;
    Ok(ContainerRun { ending: run.ending.with_action_failure(&at.dirs.kiln), ..run })
}

async fn run_container(
    at: &Attempt<'_>,
    timeout: Duration,
    existing: Option<String>,
) -> Result<ContainerRun, Abandoned> {
    let mode = handshake::terminal_mode(at.runtime.as_ref(), at.spec, at.image).await;
    let mut container = prepare::container_spec(at.agent, at.a, at.spec, at.image, at.dirs);
    if mode == TerminalMode::Handshake {
        container.env.push(format!("{}=/kiln", handshake::HANDSHAKE_ENV));
    }
    let report_first = mode == TerminalMode::ReportFirst && existing.is_none();
    let id = match existing {
        Some(id) => id,
        None => match create_and_start(at, &container, report_first).await? {
            Ok(id) => id,
            Err(run) => return Ok(run),
        },
    };
    if !report_first {
        // Repeated after a re-attach: reports are idempotent.
        report(at.agent, at.a, ActionState::Running, None).await?;
    }
    let a = at.a;
    let shipper =
        LogShipper::start(at.agent.client.clone(), a.workflow_id.clone(), a.action_index, a.attempt_id.clone());
    // A typed action's stdout is its output document, not its log.
    let typed = container.stdin.is_some();
    let watched = watch_container(at, &id, timeout, &shipper, typed, mode == TerminalMode::Handshake).await?;
    let ending = finish::ending_of(watched.outcome, watched.captured, typed, timeout);
    finish::after_exit(at, &container, &ending, timeout, shipper).await;
    Ok(ContainerRun { ending, container: Some(id), reported_early: watched.reported_early || report_first })
}

/// A new container: its id, or how the attempt ended if it cannot run.
/// With `report_first` (a terminal step that fires by itself), its SUCCESS
/// is reported between create and start.
async fn create_and_start(
    at: &Attempt<'_>,
    container: &ContainerSpec,
    report_first: bool,
) -> Result<Result<String, ContainerRun>, Abandoned> {
    let runtime = at.runtime.as_ref();
    let id = match runtime.create(container).await {
        Ok(id) => id,
        Err(e) => return Ok(Err(ContainerRun::none(Ending::failed("CreateFailed", e.to_string())))),
    };
    if report_first {
        handshake::report_before_start(at).await?;
    }
    if let Err(e) = runtime.start(&id, container.stdin.as_deref()).await {
        let ending = Ending { exit_code: Some(125), ..Ending::failed("StartFailed", e.to_string()) };
        return Ok(Err(ContainerRun { ending, container: Some(id), reported_early: report_first }));
    }
    Ok(Ok(id))
}

/// What watching a running container found.
struct Watched {
    outcome: Result<RunOutcome, RuntimeError>,
    /// A typed action's stdout.
    captured: String,
    reported_early: bool,
}

/// Follows container `id` until it has exited and its log stream ended:
/// its output to `shipper` (a typed action's stdout captured instead), its
/// exit or its timeout, and, with `handshake`, a terminal action's
/// handshake meanwhile.
async fn watch_container(
    at: &Attempt<'_>,
    id: &str,
    timeout: Duration,
    shipper: &LogShipper,
    typed: bool,
    handshake: bool,
) -> Result<Watched, Abandoned> {
    let runtime = at.runtime.as_ref();
    let grace = Duration::from_secs(at.agent.config.stop_grace_seconds);
    let (exited_tx, exited) = watch::channel(false);
    let (followed_tx, followed) = watch::channel(0usize);
    let mut captured = String::new();
    let wait = async {
        let outcome = wait_or_stop(runtime, id, timeout, grace).await;
        exited_tx.send_replace(true);
        outcome
    };
    let follow = logs::follow_to_end(runtime.follow_output(id), exited.clone(), async |line: OutputLine| {
        if typed && !line.stderr {
            if captured.len() <= MAX_OUTPUT {
                captured.push_str(&line.text);
                captured.push('\n');
            }
        } else {
            shipper.send(line).await;
        }
        followed_tx.send_modify(|n| *n += 1);
    });
    let handshake = async {
        if !handshake {
            return None;
        }
        let mut exited = exited.clone();
        tokio::select! {
            _ = exited.wait_for(|exited| *exited) => None,
            reported = handshake::terminal_handshake(at, id, shipper, followed) => Some(reported),
        }
    };
    let (outcome, (), early) = tokio::join!(wait, follow, handshake);
    let reported_early = match early {
        Some(Err(abandoned)) => return Err(abandoned),
        Some(Ok(())) => true,
        None => false,
    };
    Ok(Watched { outcome, captured, reported_early })
}
