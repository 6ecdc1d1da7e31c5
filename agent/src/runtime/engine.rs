//! The Docker engine as the agent waits for it.
//!
//! In the hook image the agent starts while dockerd is still starting
//! (seconds under emulation, most of the boot's last stretch): it asks the
//! server for work at once, and only what needs the engine waits for it.
//! Missing at first, the engine is waited for until a deadline counted from
//! the agent's start (`engine_wait_seconds`); after that each use asks once,
//! and an action that finds no engine fails with `EngineUnavailable`, a
//! reason the operator sees on the server, where an agent that exited at
//! start (as it did before) showed nothing. Once the engine has answered,
//! the client is kept: its requests reconnect by themselves if dockerd
//! restarts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{DockerRuntime, RuntimeError, SharedRuntime};

/// First pause between tries; doubled up to [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(50);
/// Small: an engine that appears is noticed within this much.
const MAX_RETRY_DELAY: Duration = Duration::from_millis(250);

pub struct Engine {
    host: String,
    /// Until then a missing engine is waited for; after it, asked once.
    wait_until: Instant,
    runtime: tokio::sync::OnceCell<SharedRuntime>,
}

impl Engine {
    /// An engine at `host` (`unix:///path` or a socket path), waited for up
    /// to `wait` from now.
    pub fn new(host: &str, wait: Duration) -> Self {
        Self { host: host.to_string(), wait_until: Instant::now() + wait, runtime: Default::default() }
    }

    /// An engine that is connected already: `runtime`.
    pub fn connected_to(runtime: SharedRuntime) -> Self {
        Self {
            host: String::new(),
            wait_until: Instant::now(),
            runtime: tokio::sync::OnceCell::new_with(Some(runtime)),
        }
    }

    /// The connected engine. Callers that come while another waits share
    /// its wait; after a failure the next caller tries again.
    pub async fn get(&self) -> Result<&SharedRuntime, RuntimeError> {
        self.runtime.get_or_try_init(|| self.connect()).await
    }

    /// The engine if it has answered already.
    pub fn connected(&self) -> Option<&SharedRuntime> {
        self.runtime.get()
    }

    /// The engine if it answers now, without waiting: for clean-ups, which
    /// are moot while no engine runs (it has no containers to remove).
    pub async fn now(&self) -> Option<&SharedRuntime> {
        let connect = || async { Ok::<_, RuntimeError>(Arc::new(DockerRuntime::connect(&self.host).await?) as _) };
        self.runtime.get_or_try_init(connect).await.ok()
    }

    async fn connect(&self) -> Result<SharedRuntime, RuntimeError> {
        let mut delay = FIRST_RETRY_DELAY;
        let mut waiting_since: Option<Instant> = None;
        loop {
            match DockerRuntime::connect(&self.host).await {
                Ok(runtime) => {
                    if let Some(since) = waiting_since {
                        tracing::info!(host = %self.host, waited = ?since.elapsed(), "the Docker engine answers");
                    }
                    return Ok(Arc::new(runtime));
                }
                Err(e) if Instant::now() + delay < self.wait_until => {
                    if waiting_since.is_none() {
                        tracing::info!(error = %e, "waiting for the Docker engine");
                        waiting_since = Some(Instant::now());
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_RETRY_DELAY);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_engine_is_waited_for_until_the_deadline_then_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("docker.sock");
        let engine = Engine::new(socket.to_str().unwrap(), Duration::from_millis(600));
        let started = Instant::now();
        let err = engine.get().await.err().expect("no engine listens there");
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(300), "gave up after {waited:?}, before the deadline");
        assert!(err.to_string().contains("cannot reach the Docker engine"), "{err}");
        assert!(err.to_string().contains("docker.sock"), "{err}");
        assert!(engine.connected().is_none());
        let started = Instant::now();
        assert!(engine.now().await.is_none());
        assert!(started.elapsed() < Duration::from_millis(200), "now() waited");
        // Past the deadline: one try, no wait.
        let started = Instant::now();
        assert!(engine.get().await.is_err());
        assert!(started.elapsed() < Duration::from_millis(200), "waited again past the deadline");
    }
}
