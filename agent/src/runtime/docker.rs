//! The Docker Engine API through bollard: pull, create, start, follow logs,
//! wait, signal, inspect, remove, list by label.

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
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use kiln_documents::ImageRef;

use super::privileges::PrivilegeMode;
use super::{Container, ContainerSpec, Exit, OutputLine, Runtime, RuntimeError, Signal, labels};
use crate::config::{PullPolicy, RegistryCredentials};

/// Bounds the wait for response *headers* only; streams (pulls, logs, wait)
/// run as long as they need.
const REQUEST_TIMEOUT_SECS: u64 = 120;

/// Strips bollard's wrapping so reports carry the engine's own words.
fn engine_message(e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        DockerError::DockerStreamError { error } => error.clone(),
        other => other.to_string(),
    }
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

    /// Pulls `image`; the registry's own message on failure.
    async fn pull(&self, image: &ImageRef, credentials: Option<&RegistryCredentials>) -> Result<(), RuntimeError> {
        let name = image.to_string();
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

    fn host_config(&self, spec: &ContainerSpec) -> HostConfig {
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
        host_config
    }

    /// Starts a container created with `stdin` and feeds it: attach first
    /// (so nothing written is lost), start, write, close.
    async fn start_with_stdin(&self, id: &str, input: &[u8]) -> Result<(), RuntimeError> {
        use tokio::io::AsyncWriteExt;
        let options = AttachContainerOptionsBuilder::default().stdin(true).stream(true).build();
        let attached = self
            .docker
            .attach_container(id, Some(options))
            .await
            .map_err(|e| RuntimeError::Start(engine_message(&e)))?;
        self.start(id, None).await?;
        let mut stdin = attached.input;
        stdin.write_all(input).await.map_err(|e| RuntimeError::Start(format!("writing the input to stdin: {e}")))?;
        stdin.shutdown().await.map_err(|e| RuntimeError::Start(format!("closing stdin: {e}")))?;
        Ok(())
    }

    fn logs_options(follow: bool) -> bollard::query_parameters::LogsOptions {
        LogsOptionsBuilder::default().follow(follow).stdout(true).stderr(true).build()
    }
}

#[async_trait::async_trait]
impl Runtime for DockerRuntime {
    async fn ensure_image(
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
        if pull { self.pull(image, credentials).await } else { Ok(()) }
    }

    async fn image_labels(&self, image: &ImageRef) -> Result<HashMap<String, String>, RuntimeError> {
        let info =
            self.docker.inspect_image(&image.to_string()).await.map_err(|e| RuntimeError::Other(engine_message(&e)))?;
        Ok(info.config.and_then(|c| c.labels).unwrap_or_default())
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        let mut body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            hostname: spec.hostname.clone(),
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
            host_config: Some(self.host_config(spec)),
            ..Default::default()
        };
        // A leftover of this name that the caller chose not to re-attach
        // to (it never started): replace it.
        self.remove(&spec.name).await;
        let options = CreateContainerOptionsBuilder::default().name(&spec.name).build();
        let created = match self.docker.create_container(Some(options.clone()), body.clone()).await {
            // Engines before 20.10 refuse a hostname with host networking;
            // the action then has the machine's (docs/action-contract.md).
            Err(e) if body.hostname.is_some() && engine_message(&e).contains("conflicting options: hostname") => {
                tracing::warn!(error = %engine_message(&e), "this engine refuses a hostname with host networking");
                body.hostname = None;
                self.docker.create_container(Some(options), body).await
            }
            created => created,
        };
        Ok(created.map_err(|e| RuntimeError::Create(engine_message(&e)))?.id)
    }

    async fn start(&self, id: &str, stdin: Option<&[u8]>) -> Result<(), RuntimeError> {
        match stdin {
            Some(input) => self.start_with_stdin(id, input).await,
            None => self.docker.start_container(id, None).await.map_err(|e| RuntimeError::Start(engine_message(&e))),
        }
    }

    fn follow_output(&self, id: &str) -> BoxStream<'static, OutputLine> {
        let chunks = self.docker.logs(id, Some(Self::logs_options(true)));
        let mut splitter = LineSplitter::default();
        chunks
            .map(move |chunk| match chunk {
                Ok(chunk) => splitter.push_chunk(chunk),
                Err(e) => vec![OutputLine { stderr: true, text: format!("[kiln-agent] log stream error: {e}") }],
            })
            .flat_map(futures_util::stream::iter)
            .boxed()
    }

    /// A read of the log that does not follow it: it ends at what the
    /// engine holds, split into lines as [`Runtime::follow_output`] does.
    async fn output_lines_so_far(&self, id: &str) -> Result<usize, RuntimeError> {
        let mut chunks = self.docker.logs(id, Some(Self::logs_options(false)));
        let mut splitter = LineSplitter::default();
        let mut count = 0;
        while let Some(chunk) = chunks.next().await {
            count += splitter.push_chunk(chunk.map_err(|e| RuntimeError::Other(engine_message(&e)))?).len();
        }
        Ok(count)
    }

    async fn wait(&self, id: &str) -> Result<Exit, RuntimeError> {
        let options = WaitContainerOptionsBuilder::default().condition("not-running").build();
        match self.docker.wait_container(id, Some(options)).next().await {
            // A non-zero exit arrives as an error carrying the code.
            Some(Ok(_)) | Some(Err(DockerError::DockerContainerWaitError { .. })) | None => self.inspect(id).await,
            Some(Err(e)) => Err(RuntimeError::Other(engine_message(&e))),
        }
    }

    async fn inspect(&self, id: &str) -> Result<Exit, RuntimeError> {
        let info =
            self.docker.inspect_container(id, None).await.map_err(|e| RuntimeError::Other(engine_message(&e)))?;
        let state = info.state.unwrap_or_default();
        Ok(Exit { code: state.exit_code.unwrap_or(-1), oom_killed: state.oom_killed.unwrap_or(false) })
    }

    async fn signal(&self, id: &str, signal: Signal) {
        let options = KillContainerOptionsBuilder::default().signal(signal.name()).build();
        if let Err(e) = self.docker.kill_container(id, Some(options)).await {
            tracing::warn!(container = id, signal = signal.name(), error = %e, "signalling timed-out container failed");
        }
    }

    async fn remove(&self, id: &str) {
        let options = RemoveContainerOptionsBuilder::default().force(true).v(true).build();
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) | Err(DockerError::DockerResponseServerError { status_code: 404, .. }) => {}
            Err(e) => tracing::warn!(container = id, error = %e, "removing container failed"),
        }
    }

    async fn find_attempt(&self, attempt_id: &str) -> Option<(String, Duration)> {
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

    async fn agent_containers(&self, agent_id: &str, running_only: bool) -> Result<Vec<Container>, RuntimeError> {
        let mut filters = HashMap::from([("label".to_string(), vec![format!("{}={agent_id}", labels::AGENT)])]);
        if running_only {
            filters.insert("status".to_string(), vec!["running".to_string()]);
        }
        let options = ListContainersOptionsBuilder::default().all(!running_only).filters(&filters).build();
        let containers =
            self.docker.list_containers(Some(options)).await.map_err(|e| RuntimeError::Other(engine_message(&e)))?;
        Ok(containers
            .into_iter()
            .filter_map(|c| Some(Container { id: c.id?, labels: c.labels.unwrap_or_default() }))
            .collect())
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
    fn push_chunk(&mut self, chunk: LogOutput) -> Vec<OutputLine> {
        match chunk {
            LogOutput::StdOut { message } | LogOutput::Console { message } => self.push(false, &message),
            LogOutput::StdErr { message } => self.push(true, &message),
            LogOutput::StdIn { .. } => Vec::new(),
        }
    }

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
