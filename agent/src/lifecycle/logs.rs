//! Following a container's output to the end of its stream.
//!
//! The engine ends the stream once the container has exited and every line
//! it wrote was delivered, so the end of the stream, not a pause, says that
//! the last lines are in. Should the stream outlive its container (an engine
//! that lost track of it), the follower gives up [`LOG_DRAIN`] after the
//! exit and says so.

use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use tokio::sync::watch;

use crate::runtime::OutputLine;

/// How long the log stream may go on after the container exited.
pub(super) const LOG_DRAIN: Duration = Duration::from_secs(10);

/// Hands every line of `lines` to `take` until the stream ends, or until
/// [`LOG_DRAIN`] after `exited` turned true.
pub(super) async fn follow_to_end(
    mut lines: BoxStream<'static, OutputLine>,
    mut exited: watch::Receiver<bool>,
    mut take: impl AsyncFnMut(OutputLine),
) {
    let follow = async {
        while let Some(line) = lines.next().await {
            take(line).await;
        }
    };
    let drained = async {
        // An error: the sender is gone, so is the container's wait.
        let _ = exited.wait_for(|exited| *exited).await;
        tokio::time::sleep(LOG_DRAIN).await;
    };
    tokio::select! {
        biased;
        () = follow => {}
        () = drained => {
            tracing::warn!(drain = ?LOG_DRAIN, "the container's log stream did not end after it exited; \
                going on without the rest of its output");
        }
    }
}
