//! Everything Docker-specific the agent does lives under this module; the
//! action lifecycle above it speaks in images, containers and exit codes.

mod docker;
mod engine;
pub mod privileges;

pub use docker::{ContainerSpec, DockerRuntime, Limits, OutputLine, RunOutcome, RuntimeError};
pub use engine::Engine;
pub use privileges::PrivilegeMode;

/// Labels put on every action container, so a restarted agent (or an
/// operator with `docker ps --filter label=kiln.workflow=...`) can tell
/// which attempt a container belongs to.
pub mod labels {
    pub const WORKFLOW: &str = "kiln.workflow";
    pub const ACTION: &str = "kiln.action";
    pub const ATTEMPT: &str = "kiln.attempt";
    pub const AGENT: &str = "kiln.agent";
}
