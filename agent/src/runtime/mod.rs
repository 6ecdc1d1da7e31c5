//! Everything Docker-specific the agent does lives under this module; the
//! action lifecycle above it speaks in images, containers and exit codes,
//! through the [`Runtime`] trait.
//!
//! - [`Runtime`]: what an attempt needs from a container engine.
//! - [`DockerRuntime`]: that, through the Docker Engine API (bollard).
//! - [`Engine`]: the runtime as the agent waits for it at boot.

mod container;
mod docker;
mod engine;
#[cfg(test)]
pub mod fake;
pub mod privileges;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::BoxStream;
use kiln_documents::ImageRef;

pub use container::{Container, ContainerSpec, Exit, Limits, OutputLine, RuntimeError, Signal};
pub use docker::DockerRuntime;
pub use engine::Engine;
pub use privileges::PrivilegeMode;

use crate::config::{PullPolicy, RegistryCredentials};

/// Labels put on every action container, so a restarted agent (or an
/// operator with `docker ps --filter label=kiln.workflow=...`) can tell
/// which attempt a container belongs to.
pub mod labels {
    pub const WORKFLOW: &str = "kiln.workflow";
    pub const ACTION: &str = "kiln.action";
    pub const ATTEMPT: &str = "kiln.attempt";
    pub const AGENT: &str = "kiln.agent";
    /// On an image (not a container): the image's action speaks the
    /// terminal handshake (docs/action-contract.md), e.g. kiln's kexec.
    pub const TERMINAL_HANDSHAKE: &str = "kiln.terminal-handshake";
}

/// A container engine, as one attempt uses it: the primitives only. What
/// to do with them (timeouts, SIGTERM then SIGKILL, re-attaching, when to
/// report) is the lifecycle's, so it can be tested against a fake engine.
#[async_trait::async_trait]
pub trait Runtime: Send + Sync {
    /// Makes `image` present according to `policy`, pulling it with
    /// `credentials` when it must.
    async fn ensure_image(
        &self,
        image: &ImageRef,
        policy: PullPolicy,
        credentials: Option<&RegistryCredentials>,
    ) -> Result<(), RuntimeError>;

    /// The labels of a present image (`ensure_image` made it present).
    async fn image_labels(&self, image: &ImageRef) -> Result<HashMap<String, String>, RuntimeError>;

    /// Creates the container `spec.name` (replacing a leftover of that
    /// name, which was never started) and returns its id.
    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError>;

    /// Starts a created container. With `stdin` (a container created with
    /// [`ContainerSpec::stdin`]), it is written to the container's stdin,
    /// which is then closed; nothing written is lost.
    async fn start(&self, id: &str, stdin: Option<&[u8]>) -> Result<(), RuntimeError>;

    /// The container's output from its start, as lines. The stream ends
    /// when the container has exited and every line was delivered.
    fn follow_output(&self, id: &str) -> BoxStream<'static, OutputLine>;

    /// How many lines of output the engine holds for the container now: a
    /// stream that follows it has delivered them all once it delivered
    /// that many.
    async fn output_lines_so_far(&self, id: &str) -> Result<usize, RuntimeError>;

    /// Waits until the container is not running, and says how it ended.
    async fn wait(&self, id: &str) -> Result<Exit, RuntimeError>;

    /// The container's exit status as the engine records it now.
    async fn inspect(&self, id: &str) -> Result<Exit, RuntimeError>;

    /// Sends a signal to the container's main process; failures are logged.
    async fn signal(&self, id: &str, signal: Signal);

    /// Removes a container and its anonymous volumes; a missing one is fine.
    async fn remove(&self, id: &str);

    /// The container labelled with `attempt_id` (an earlier run of this
    /// agent left it), if it was started, with how long it has been running.
    async fn find_attempt(&self, attempt_id: &str) -> Option<(String, Duration)>;

    /// The containers labelled as this agent's; with `running_only`, only
    /// those that run.
    async fn agent_containers(&self, agent_id: &str, running_only: bool) -> Result<Vec<Container>, RuntimeError>;
}

/// A runtime shared with background work (prefetches, removals).
pub type SharedRuntime = Arc<dyn Runtime>;

/// Removes a container without waiting for the engine.
pub fn remove_in_background(runtime: &SharedRuntime, id: String) {
    let runtime = runtime.clone();
    tokio::spawn(async move { runtime.remove(&id).await });
}

/// Removes this agent's running containers of attempts other than
/// `attempt_id`.
pub async fn remove_running_except(runtime: &dyn Runtime, agent_id: &str, attempt_id: &str) {
    let Ok(containers) = runtime.agent_containers(agent_id, true).await else {
        return;
    };
    for c in containers {
        let attempt = c.labels.get(labels::ATTEMPT).map(String::as_str);
        if attempt != Some(attempt_id) {
            tracing::warn!(container = %c.id, attempt = ?attempt, "removing the running container of an attempt that is over");
            runtime.remove(&c.id).await;
        }
    }
}

/// Removes this agent's kept (failed) containers of workflows other than
/// `keep_workflow`.
pub async fn remove_kept_containers(runtime: &dyn Runtime, agent_id: &str, keep_workflow: &str) {
    let Ok(containers) = runtime.agent_containers(agent_id, false).await else {
        return;
    };
    for c in containers {
        let workflow = c.labels.get(labels::WORKFLOW).map(String::as_str);
        if workflow != Some(keep_workflow) {
            tracing::info!(container = %c.id, workflow = ?workflow, "removing kept container of a finished workflow");
            runtime.remove(&c.id).await;
        }
    }
}
