//! Waiting for the container to exit, and stopping it when its timeout
//! passes: SIGTERM, then SIGKILL if it still runs after the grace period.

use std::time::Duration;

use crate::runtime::{Runtime, RuntimeError, Signal};

/// How long a container that got SIGKILL may take to reach the exited
/// state, so that no one removes it before.
const KILL_SETTLE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    Exited {
        code: i64,
        oom_killed: bool,
    },
    /// Stopped by the agent when the action's timeout passed.
    TimedOut {
        code: i64,
    },
}

/// Waits for the container to exit. When `timeout` passes it is sent
/// SIGTERM, and SIGKILL if it still runs `grace` later.
pub(super) async fn wait_or_stop(
    runtime: &dyn Runtime,
    id: &str,
    timeout: Duration,
    grace: Duration,
) -> Result<RunOutcome, RuntimeError> {
    match tokio::time::timeout(timeout, runtime.wait(id)).await {
        Ok(exit) => exit.map(|e| RunOutcome::Exited { code: e.code, oom_killed: e.oom_killed }),
        Err(_) => Ok(RunOutcome::TimedOut { code: stop(runtime, id, grace).await }),
    }
}

/// Stops a container that overran its timeout; its exit code (137 when the
/// engine cannot say).
async fn stop(runtime: &dyn Runtime, id: &str, grace: Duration) -> i64 {
    tracing::info!(container = id, "the action's timeout passed; stopping it");
    runtime.signal(id, Signal::Term).await;
    if tokio::time::timeout(grace, runtime.wait(id)).await.is_err() {
        runtime.signal(id, Signal::Kill).await;
        let _ = tokio::time::timeout(KILL_SETTLE, runtime.wait(id)).await;
    }
    runtime.inspect(id).await.map_or(137, |exit| exit.code)
}
