//! What the lifecycle and a runtime say to each other: engine-neutral.

use std::collections::HashMap;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot reach the Docker engine at {host}: {message}")]
    Connect { host: String, message: String },
    #[error("pulling {image} failed: {message}")]
    Pull { image: String, message: String },
    #[error("image {image} is not present and the pull policy is never")]
    NotPresent { image: String },
    #[error("creating the container failed: {0}")]
    Create(String),
    #[error("starting the container failed: {0}")]
    Start(String),
    #[error("docker: {0}")]
    Other(String),
}

#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    /// Replaces the image's CMD (its ENTRYPOINT stays); empty keeps CMD.
    pub command: Vec<String>,
    pub env: Vec<String>,
    pub binds: Vec<String>,
    pub pid_host: bool,
    pub host_network: bool,
    /// The container's hostname; `None` leaves the engine's default (the
    /// id's first 12 digits in a network namespace of its own, the
    /// machine's hostname with host networking).
    pub hostname: Option<String>,
    pub labels: HashMap<String, String>,
    pub limits: Limits,
    /// Written to the container's stdin, which is then closed (typed actions).
    pub stdin: Option<Vec<u8>>,
}

/// Container limits; `None` is no limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: Option<i64>,
    pub nano_cpus: Option<i64>,
    pub pids: Option<i64>,
    /// "all" or a count, requested from the nvidia driver.
    pub gpus: Option<String>,
}

/// How a container ended, as the engine records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub code: i64,
    /// The kernel killed it for exceeding its memory limit.
    pub oom_killed: bool,
}

/// The signals the agent sends to a container that overran its timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Term,
    Kill,
}

impl Signal {
    pub fn name(self) -> &'static str {
        match self {
            Signal::Term => "SIGTERM",
            Signal::Kill => "SIGKILL",
        }
    }
}

/// One line of container output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputLine {
    pub stderr: bool,
    pub text: String,
}

/// A container as listed by the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub id: String,
    pub labels: HashMap<String, String>,
}
