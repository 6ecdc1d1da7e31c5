//! Terminal steps (proto `ActionSpec.terminal`: kexec, reboot), which end
//! the agent's life, so their SUCCESS must be reported before they fire.
//! Two ways, chosen per image ([`TerminalMode`]):
//!
//! - The handshake, for images that speak it (the image label
//!   `kiln.terminal-handshake`, e.g. kiln's kexec): the agent offers it by
//!   the variable `KILN_TERMINAL_HANDSHAKE=/kiln`; once the action says it
//!   is ready to fire (`/kiln/terminal-ready`: its work done, the kernel
//!   loaded), its logs are shipped and its SUCCESS is reported; only after
//!   the server acknowledged it may the action fire (`/kiln/terminal-go`).
//!   A failure before that is reported as FAILED, as for any action.
//! - Report first, for every other terminal image (the Tinkerbell hub's
//!   kexec and reboot images fire as soon as they can and cannot be told to
//!   wait): the container is created, its SUCCESS reported and
//!   acknowledged, and only then is it started. This is Tinkerbell
//!   v1alpha2's `background` and what waitdaemon does: reliable for the
//!   SUCCESS, but a step that fails instead of firing is only seen in its
//!   logs and the agent's (the machine stays in the hook image).

use std::time::Duration;

use kiln_documents::ImageRef;
use kiln_proto::v1::{ActionSpec, ActionState};
use tokio::sync::watch;

use super::logs::LOG_DRAIN;
use super::{Abandoned, Attempt, Ending, report};
use crate::log_shipper::LogShipper;
use crate::runtime::{Runtime, labels};

const TERMINAL_READY: &str = "terminal-ready";
const TERMINAL_GO: &str = "terminal-go";
const HANDSHAKE_POLL: Duration = Duration::from_millis(50);
/// The variable by which the agent offers the handshake; its value is
/// where the files are. Only an action that gets it may wait for the go:
/// one run outside kiln, or copied by waitdaemon, would wait for ever.
pub(super) const HANDSHAKE_ENV: &str = "KILN_TERMINAL_HANDSHAKE";

/// How a terminal step's SUCCESS gets reported before it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TerminalMode {
    /// Not a terminal step: its exit is its end.
    No,
    /// The image speaks the handshake: offered, and SUCCESS reported when
    /// the action is ready.
    Handshake,
    /// SUCCESS reported (and acknowledged) before the container starts.
    ReportFirst,
}

/// The mode for `spec` run from `image`. An image labelled as speaking the
/// handshake is terminal even where the template did not say so: it is a
/// kexec under a name the server did not recognise.
pub(super) async fn terminal_mode(runtime: &dyn Runtime, spec: &ActionSpec, image: &ImageRef) -> TerminalMode {
    let speaks = match runtime.image_labels(image).await {
        Ok(labels) => labels.get(labels::TERMINAL_HANDSHAKE).is_some_and(|v| !v.is_empty()),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the image's labels; taking it as not speaking the terminal handshake");
            false
        }
    };
    match (spec.terminal, speaks) {
        (_, true) => TerminalMode::Handshake,
        (true, false) => TerminalMode::ReportFirst,
        (false, false) => TerminalMode::No,
    }
}

/// Report first: SUCCESS, acknowledged by the server, before the created
/// container `id` starts. The go is created as well, so an image that
/// does wait for it (an older kiln kexec without the label) fires at once.
pub(super) async fn report_before_start(at: &Attempt<'_>) -> Result<(), Abandoned> {
    tracing::info!("terminal step whose image fires by itself: reporting SUCCESS before it starts");
    report(at.agent, at.a, ActionState::Running, None).await?;
    report(at.agent, at.a, ActionState::Success, Some(&Ending::success())).await?;
    if let Err(e) = std::fs::write(at.dirs.kiln.join(TERMINAL_GO), b"") {
        tracing::warn!(error = %e, "cannot create the terminal step's go file");
    }
    Ok(())
}

/// Runs the handshake with container `id`; `followed` counts the output
/// lines the log follower has handed to `shipper` so far.
pub(super) async fn terminal_handshake(
    at: &Attempt<'_>,
    id: &str,
    shipper: &LogShipper,
    followed: watch::Receiver<usize>,
) -> Result<(), Abandoned> {
    let ready = at.dirs.kiln.join(TERMINAL_READY);
    while !ready.exists() {
        tokio::time::sleep(HANDSHAKE_POLL).await;
    }
    tracing::info!("terminal action is ready to fire; reporting SUCCESS first");
    catch_up(at, id, followed).await;
    shipper.flush().await;
    report(at.agent, at.a, ActionState::Success, Some(&Ending::success())).await?;
    if let Err(e) = std::fs::write(at.dirs.kiln.join(TERMINAL_GO), b"") {
        tracing::error!(error = %e, "cannot tell the terminal action to fire");
    }
    Ok(())
}

/// Waits until the follower has had every line the engine holds now: the
/// lines printed before the ready file may still be on their way to it.
/// The container still runs, so its stream does not end; the engine's own
/// count of its log is the mark instead.
async fn catch_up(at: &Attempt<'_>, id: &str, mut followed: watch::Receiver<usize>) {
    let logged = match at.runtime.output_lines_so_far(id).await {
        Ok(logged) => logged,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the terminal action's log; its last lines may be missing");
            return;
        }
    };
    let caught_up = followed.wait_for(|followed| *followed >= logged);
    if !matches!(tokio::time::timeout(LOG_DRAIN, caught_up).await, Ok(Ok(_))) {
        tracing::warn!(
            logged,
            followed = *followed.borrow(),
            "the log follower did not catch up with the engine's log; \
            reporting without the rest"
        );
    }
}
