//! The terminal-step handshake (proto `ActionSpec.terminal`): once the
//! action says it is ready to fire, its logs are shipped and its SUCCESS is
//! reported; only after the server acknowledged it may the action fire.

use std::time::Duration;

use kiln_proto::v1::ActionState;
use tokio::sync::watch;

use super::logs::LOG_DRAIN;
use super::{Abandoned, Attempt, Ending, report};
use crate::log_shipper::LogShipper;

const TERMINAL_READY: &str = "terminal-ready";
const TERMINAL_GO: &str = "terminal-go";
const HANDSHAKE_POLL: Duration = Duration::from_millis(50);

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
