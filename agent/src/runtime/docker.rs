//! The Docker Engine API through bollard: pull, create, start, follow logs,
//! wait with a deadline, kill, remove.

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerCreateBody, DeviceRequest, HostConfig};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, CreateImageOptionsBuilder,
    KillContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    WaitContainerOptionsBuilder,
};
use futures_util::{Stream, StreamExt};
use kiln_documents::ImageRef;

use super::labels;
use super::privileges::PrivilegeMode;
use crate::config::{PullPolicy, RegistryCredentials};

/// Bounds the wait for response *headers* only; streams (pulls, logs, wait)
/// run as long as they need.
const REQUEST_TIMEOUT_SECS: u64 = 120;

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

/// Strips bollard's wrapping so reports carry the engine's own words.
fn engine_message(e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        DockerError::DockerStreamError { error } => error.clone(),
        other => other.to_string(),
    }
}

#[derive(Clone)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    /// Replaces the image's CMD (its ENTRYPOINT stays); empty keeps CMD.
    pub command: Vec<String>,
    pub env: Vec<String>,
    pub binds: Vec<String>,
    pub pid_host: bool,
    pub host_network: bool,
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

/// One line of container output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputLine {
    pub stderr: bool,
    pub text: String,
}

#[derive(Clone)]
pub struct DockerRuntime {
    docker: Docker,
    privileges: PrivilegeMode,
}

impl DockerRuntime {
    /// Connects to `host` (`unix:///path` or a plain socket path) and agrees
    /// on an API version with the daemon: bollard speaks a newer API than
    /// many deployed engines (Debian 12's is 1.41).
    pub async fn connect(host: &str) -> Result<Self, RuntimeError> {
        let err = |e: DockerError| RuntimeError::Connect { host: host.to_string(), message: engine_message(&e) };
        let docker =
            Docker::connect_with_unix(host, REQUEST_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION).map_err(err)?;
        let docker = docker.negotiate_version().await.map_err(err)?;
        docker.ping().await.map_err(err)?;
        let privileges = PrivilegeMode::detect();
        if let PrivilegeMode::Equivalent { missing } = &privileges {
            tracing::warn!(
                missing = %missing.join(","),
                "the capability bounding set lacks capabilities, so `privileged: true` cannot start here; \
                 actions run with every other capability, unconfined, with full device access"
            );
        }
        Ok(Self { docker, privileges })
    }

    /// Makes `image` present according to `policy`.
    pub async fn ensure_image(
        &self,
        image: &ImageRef,
        policy: PullPolicy,
        credentials: Option<&RegistryCredentials>,
    ) -> Result<(), RuntimeError> {
        let name = image.to_string();
        let pull = match policy {
            PullPolicy::Always => true,
            PullPolicy::Default if !image.is_digest() => true,
            PullPolicy::Default | PullPolicy::IfNotPresent | PullPolicy::Never => {
                let present = self.docker.inspect_image(&name).await.is_ok();
                if !present && policy == PullPolicy::Never {
                    return Err(RuntimeError::NotPresent { image: name });
                }
                !present
            }
        };
        if !pull {
            return Ok(());
        }
        let options =
            CreateImageOptionsBuilder::default().from_image(&image.pull_name()).tag(&image.pull_tag()).build();
        let credentials = credentials.map(|c| DockerCredentials {
            username: Some(c.username.clone()),
            password: Some(c.password.clone()),
            serveraddress: Some(c.registry.clone()),
            ..Default::default()
        });
        let mut progress = self.docker.create_image(Some(options), None, credentials);
        while let Some(event) = progress.next().await {
            let event = event.map_err(|e| RuntimeError::Pull { image: name.clone(), message: engine_message(&e) })?;
            if let Some(error) = event.error_detail.and_then(|d| d.message) {
                return Err(RuntimeError::Pull { image: name, message: error });
            }
        }
        Ok(())
    }

    pub async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        let mut host_config = HostConfig {
            binds: Some(spec.binds.clone()),
            pid_mode: spec.pid_host.then(|| "host".to_string()),
            network_mode: spec.host_network.then(|| "host".to_string()),
            memory: spec.limits.memory_bytes,
            // Without a swap limit an over-limit action swaps instead of
            // being OOM-killed, and "out of memory" becomes "very slow".
            memory_swap: spec.limits.memory_bytes,
            nano_cpus: spec.limits.nano_cpus,
            pids_limit: spec.limits.pids,
            device_requests: spec.limits.gpus.as_ref().map(|g| {
                vec![DeviceRequest {
                    driver: Some("nvidia".into()),
                    count: Some(g.parse().unwrap_or(-1)),
                    capabilities: Some(vec![vec!["gpu".into()]]),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        };
        self.privileges.apply(&mut host_config);
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: (!spec.command.is_empty()).then(|| spec.command.clone()),
            env: Some(spec.env.clone()),
            labels: Some(spec.labels.clone()),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            attach_stdin: spec.stdin.is_some().then_some(true),
            open_stdin: spec.stdin.is_some().then_some(true),
            // The engine closes stdin when the agent's attach ends: the
            // action reads its input to EOF.
            stdin_once: spec.stdin.is_some().then_some(true),
            host_config: Some(host_config),
            ..Default::default()
        };
        // A leftover of this name that the caller chose not to re-attach
        // to (it never started): replace it.
        self.remove(&spec.name).await;
        let options = CreateContainerOptionsBuilder::default().name(&spec.name).build();
        let created = self
            .docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| RuntimeError::Create(engine_message(&e)))?;
        Ok(created.id)
    }

    pub async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.docker.start_container(id, None).await.map_err(|e| RuntimeError::Start(engine_message(&e)))
    }

    /// Starts a container created with `stdin` and feeds it: attach first
    /// (so nothing written is lost), start, write, close.
    pub async fn start_with_stdin(&self, id: &str, input: &[u8]) -> Result<(), RuntimeError> {
        use tokio::io::AsyncWriteExt;
        let options = AttachContainerOptionsBuilder::default().stdin(true).stream(true).build();
        let attached = self
            .docker
            .attach_container(id, Some(options))
            .await
            .map_err(|e| RuntimeError::Start(engine_message(&e)))?;
        self.start(id).await?;
        let mut stdin = attached.input;
        stdin.write_all(input).await.map_err(|e| RuntimeError::Start(format!("writing the input to stdin: {e}")))?;
        stdin.shutdown().await.map_err(|e| RuntimeError::Start(format!("closing stdin: {e}")))?;
        Ok(())
    }

    /// The container's output from its start, split into lines, until it
    /// exits.
    pub fn output(&self, id: &str) -> impl Stream<Item = OutputLine> + Send + 'static {
        let options = LogsOptionsBuilder::default().follow(true).stdout(true).stderr(true).build();
        let chunks = self.docker.logs(id, Some(options));
        let mut splitter = LineSplitter::default();
        chunks
            .map(move |chunk| match chunk {
                Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
                    splitter.push(false, &message)
                }
                Ok(LogOutput::StdErr { message }) => splitter.push(true, &message),
                Ok(LogOutput::StdIn { .. }) => Vec::new(),
                Err(e) => vec![OutputLine { stderr: true, text: format!("[kiln-agent] log stream error: {e}") }],
            })
            .flat_map(futures_util::stream::iter)
    }

    /// Waits for the container to exit. When `timeout` passes it is sent
    /// SIGTERM, and SIGKILL if it still runs `grace` later.
    pub async fn wait(&self, id: &str, timeout: Duration, grace: Duration) -> Result<RunOutcome, RuntimeError> {
        let options = WaitContainerOptionsBuilder::default().condition("not-running").build();
        let mut wait = self.docker.wait_container(id, Some(options));
        match tokio::time::timeout(timeout, wait.next()).await {
            Err(_) => {
                self.signal(id, "SIGTERM").await;
                if tokio::time::timeout(grace, wait.next()).await.is_err() {
                    self.signal(id, "SIGKILL").await;
                    // Let it reach the exited state before anyone removes it.
                    let _ = tokio::time::timeout(Duration::from_secs(10), wait.next()).await;
                }
                let code = match self.exit_status(id).await {
                    Ok(RunOutcome::Exited { code, .. }) => code,
                    _ => 137,
                };
                Ok(RunOutcome::TimedOut { code })
            }
            // A non-zero exit arrives as an error carrying the code.
            Ok(Some(Ok(_))) | Ok(Some(Err(DockerError::DockerContainerWaitError { .. }))) => self.exit_status(id).await,
            Ok(Some(Err(e))) => Err(RuntimeError::Other(engine_message(&e))),
            Ok(None) => self.exit_status(id).await,
        }
    }

    async fn signal(&self, id: &str, signal: &str) {
        let options = KillContainerOptionsBuilder::default().signal(signal).build();
        if let Err(e) = self.docker.kill_container(id, Some(options)).await {
            tracing::warn!(container = id, signal, error = %e, "signalling timed-out container failed");
        }
    }

    async fn exit_status(&self, id: &str) -> Result<RunOutcome, RuntimeError> {
        let info =
            self.docker.inspect_container(id, None).await.map_err(|e| RuntimeError::Other(engine_message(&e)))?;
        let state = info.state.unwrap_or_default();
        Ok(RunOutcome::Exited { code: state.exit_code.unwrap_or(-1), oom_killed: state.oom_killed.unwrap_or(false) })
    }

    /// Removes a container and its anonymous volumes; a missing one is fine.
    pub async fn remove(&self, id: &str) {
        let options = RemoveContainerOptionsBuilder::default().force(true).v(true).build();
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) | Err(DockerError::DockerResponseServerError { status_code: 404, .. }) => {}
            Err(e) => tracing::warn!(container = id, error = %e, "removing container failed"),
        }
    }

    /// The container of an attempt, left by an earlier run of this agent
    /// (which died or restarted), with how long it has been running.
    pub async fn find_attempt(&self, attempt_id: &str) -> Option<(String, Duration)> {
        let filters = HashMap::from([("label".to_string(), vec![format!("{}={attempt_id}", labels::ATTEMPT)])]);
        let options = ListContainersOptionsBuilder::default().all(true).filters(&filters).build();
        let found = self.docker.list_containers(Some(options)).await.ok()?.into_iter().find_map(|c| c.id)?;
        let info = self.docker.inspect_container(&found, None).await.ok()?;
        let state = info.state.unwrap_or_default();
        // Created but never started: nothing to re-attach to.
        let started = state.started_at.as_deref().and_then(|t| humantime::parse_rfc3339_weak(t).ok())?;
        if started.duration_since(std::time::UNIX_EPOCH).map_or(true, |d| d.as_secs() == 0) {
            return None;
        }
        Some((found, std::time::SystemTime::now().duration_since(started).unwrap_or_default()))
    }

    /// Removes a container without waiting for the engine.
    pub fn remove_in_background(&self, id: String) {
        let runtime = Self { docker: self.docker.clone(), privileges: self.privileges.clone() };
        tokio::spawn(async move { runtime.remove(&id).await });
    }

    /// Removes this agent's running containers of attempts other than
    /// `attempt_id`.
    pub async fn remove_running_except(&self, agent_id: &str, attempt_id: &str) {
        let filters = HashMap::from([
            ("label".to_string(), vec![format!("{}={agent_id}", labels::AGENT)]),
            ("status".to_string(), vec!["running".to_string()]),
        ]);
        let options = ListContainersOptionsBuilder::default().filters(&filters).build();
        let Ok(containers) = self.docker.list_containers(Some(options)).await else {
            return;
        };
        for c in containers {
            let attempt = c.labels.as_ref().and_then(|l| l.get(labels::ATTEMPT)).map(String::as_str);
            if attempt != Some(attempt_id)
                && let Some(id) = c.id
            {
                tracing::warn!(container = %id, attempt = ?attempt, "removing the running container of an attempt that is over");
                self.remove(&id).await;
            }
        }
    }

    /// Removes this agent's kept (failed) containers of workflows other than
    /// `keep_workflow`.
    pub async fn remove_kept_containers(&self, agent_id: &str, keep_workflow: &str) {
        let filters = HashMap::from([("label".to_string(), vec![format!("{}={agent_id}", labels::AGENT)])]);
        let options = ListContainersOptionsBuilder::default().all(true).filters(&filters).build();
        let Ok(containers) = self.docker.list_containers(Some(options)).await else {
            return;
        };
        for c in containers {
            let workflow = c.labels.as_ref().and_then(|l| l.get(labels::WORKFLOW)).map(String::as_str);
            if workflow != Some(keep_workflow)
                && let Some(id) = c.id
            {
                tracing::info!(container = %id, workflow = ?workflow, "removing kept container of a finished workflow");
                self.remove(&id).await;
            }
        }
    }
}

/// Reassembles lines from the engine's chunks, per stream. A line longer
/// than [`MAX_LINE`] is cut, so one endless line cannot exhaust memory.
#[derive(Default)]
struct LineSplitter {
    partial: [Vec<u8>; 2],
}

const MAX_LINE: usize = 64 * 1024;

impl LineSplitter {
    fn push(&mut self, stderr: bool, bytes: &[u8]) -> Vec<OutputLine> {
        let buf = &mut self.partial[usize::from(stderr)];
        let mut lines = Vec::new();
        for &b in bytes {
            if b == b'\n' || buf.len() >= MAX_LINE {
                let mut text = String::from_utf8_lossy(buf).into_owned();
                if text.ends_with('\r') {
                    text.pop();
                }
                lines.push(OutputLine { stderr, text });
                buf.clear();
                if b == b'\n' {
                    continue;
                }
            }
            buf.push(b);
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_across_chunks_and_streams() {
        let mut s = LineSplitter::default();
        assert!(s.push(false, b"hel").is_empty());
        let out = s.push(false, b"lo\nwor");
        assert_eq!(out, vec![OutputLine { stderr: false, text: "hello".into() }]);
        let err = s.push(true, b"oops\r\n");
        assert_eq!(err, vec![OutputLine { stderr: true, text: "oops".into() }]);
        let out = s.push(false, b"ld\n\n");
        assert_eq!(out.iter().map(|l| l.text.as_str()).collect::<Vec<_>>(), vec!["world", ""]);
    }

    #[test]
    fn cuts_endless_lines() {
        let mut s = LineSplitter::default();
        let out = s.push(false, &vec![b'x'; MAX_LINE * 2 + 10]);
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|l| l.text.len() == MAX_LINE));
    }
}
