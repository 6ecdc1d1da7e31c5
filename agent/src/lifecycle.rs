//! One attempt at one action, from assignment to its terminal report:
//!
//! ```text
//! PULLING   ensure the image (pull policy, registry credentials)
//! RUNNING   create + start the container; its output goes to the LogShipper
//!           wait for exit, or kill it when the timeout passes
//! SUCCESS | FAILED | TIMEOUT   after every log line is with the server
//!           then remove the container in the background (kept on failure,
//!           if so configured)
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use kiln_proto::time::to_proto;
use kiln_proto::v1::{ActionState, ArtifactHeader, Assignment, StateReport};
use kiln_documents::ImageRef;
use tonic::Status;

use crate::Agent;
use crate::config::FailedContainers;
use crate::log_shipper::LogShipper;
use crate::runtime::{ContainerSpec, DockerRuntime, Limits, OutputLine, RunOutcome, labels};

/// How long to wait for the last log lines after the container exited.
const LOG_DRAIN: Duration = Duration::from_secs(10);

/// The end of an attempt, as reported to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    pub state: ActionState,
    pub exit_code: Option<i64>,
    pub reason: String,
    pub message: String,
    /// A typed action's stdout (its JSON output).
    pub output_json: String,
}

impl Ending {
    pub(crate) fn success() -> Self {
        Self {
            state: ActionState::Success,
            exit_code: Some(0),
            reason: String::new(),
            message: String::new(),
            output_json: String::new(),
        }
    }

    pub(crate) fn failed(reason: &str, message: impl Into<String>) -> Self {
        Self {
            state: ActionState::Failed,
            exit_code: None,
            reason: reason.into(),
            message: message.into(),
            output_json: String::new(),
        }
    }

    /// Maps how the container ended to a report: the exit-code table of
    /// the action contract (docs/action-contract.md), with the engine's OOM verdict.
    pub fn from_outcome(outcome: RunOutcome, timeout: Duration) -> Self {
        let (code, oom_killed) = match outcome {
            RunOutcome::TimedOut { code } => {
                return Self {
                    state: ActionState::Timeout,
                    exit_code: Some(code),
                    reason: "Timeout".into(),
                    message: format!("stopped after its timeout of {}s", timeout.as_secs()),
                    output_json: String::new(),
                };
            }
            RunOutcome::Exited { code, oom_killed } => (code, oom_killed),
        };
        let (reason, message) = match code {
            0 => return Self::success(),
            _ if oom_killed => ("OOMKilled", "killed by the kernel for exceeding its memory limit".to_string()),
            125 => ("RuntimeError", "the container runtime could not run the command (exit 125)".into()),
            126 => ("CommandCannotInvoke", "the command cannot be invoked: not executable (exit 126)".into()),
            127 => ("CommandNotFound", "the command was not found (exit 127)".into()),
            137 => ("Killed", "killed by SIGKILL (exit 137)".into()),
            139 => ("Segfault", "segmentation fault (exit 139)".into()),
            143 => ("Terminated", "terminated by SIGTERM (exit 143)".into()),
            _ => ("NonZeroExit", format!("exited with code {code}")),
        };
        Self { exit_code: Some(code), ..Self::failed(reason, message) }
    }

    /// An action explains its own failure by writing `/kiln/failure-reason`
    /// (one UpperCamelCase word) and `/kiln/failure-message`; they replace
    /// the generic reason, the exit code stays.
    fn with_action_failure(mut self, dir: &Path) -> Self {
        if self.state == ActionState::Success {
            return self;
        }
        let read = |name: &str, limit: usize| {
            let text = std::fs::read(dir.join(name)).ok()?;
            let text = String::from_utf8_lossy(&text[..text.len().min(limit)]).trim().to_string();
            (!text.is_empty()).then_some(text)
        };
        if let Some(reason) = read(FAILURE_REASON, 256) {
            let word: String = reason
                .lines()
                .next()
                .unwrap_or_default()
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .take(64)
                .collect();
            if !word.is_empty() {
                self.reason = word;
            }
        }
        if let Some(message) = read(FAILURE_MESSAGE, 4096) {
            self.message = message;
        }
        self
    }
}

const FAILURE_REASON: &str = "failure-reason";
/// Largest JSON output a typed action may print.
const MAX_OUTPUT: usize = 1 << 20;
const TERMINAL_READY: &str = "terminal-ready";
const TERMINAL_GO: &str = "terminal-go";
const HANDSHAKE_POLL: Duration = Duration::from_millis(50);
const FAILURE_MESSAGE: &str = "failure-message";
/// The server's CA in `/kiln`, for actions calling the action API.
const API_CA: &str = "ca.pem";

/// Host directories of one attempt, bound into its container.
struct AttemptDirs {
    /// `/kiln` in the container: the failure files.
    kiln: PathBuf,
    /// `/tmp_disk`: disk-backed scratch space, discarded after the attempt.
    scratch: PathBuf,
    /// `/workflow`: shared by all actions of the workflow on this machine.
    workflow: PathBuf,
    /// `/out`: files left here are uploaded as the attempt's artifacts.
    out: PathBuf,
}

impl AttemptDirs {
    fn create(agent: &Agent, a: &Assignment) -> std::io::Result<Self> {
        let dirs = Self {
            kiln: agent.config.state_dir.join("attempts").join(safe_name(&a.attempt_id)),
            scratch: agent.config.scratch_dir().join(safe_name(&a.attempt_id)),
            workflow: agent.config.state_dir.join("workflows").join(safe_name(&a.workflow_id)),
            out: agent.config.state_dir.join("out").join(safe_name(&a.attempt_id)),
        };
        for d in [&dirs.kiln, &dirs.scratch, &dirs.workflow, &dirs.out] {
            std::fs::create_dir_all(d)?;
        }
        // The action API is on the server's TLS port: actions trust its CA.
        if let Some(ca) = &agent.api_ca_pem {
            std::fs::write(dirs.kiln.join(API_CA), ca)?;
        }
        Ok(dirs)
    }

    fn binds(&self) -> Vec<String> {
        vec![
            format!("{}:/kiln", self.kiln.display()),
            format!("{}:/tmp_disk", self.scratch.display()),
            format!("{}:/workflow", self.workflow.display()),
            format!("{}:/out", self.out.display()),
        ]
    }

    /// The workflow directory stays for the workflow's next actions.
    fn remove_attempt_dirs(&self) {
        for d in [&self.kiln, &self.scratch, &self.out] {
            if let Err(e) = std::fs::remove_dir_all(d) {
                tracing::warn!(dir = %d.display(), error = %e, "removing attempt directory failed");
            }
        }
    }
}

/// Names used as host directory and container names: no path separators.
fn safe_name(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '_' }).collect()
}

/// Why an attempt was abandoned without a terminal report.
#[derive(Debug, thiserror::Error)]
#[error("server refused report: {0}")]
pub struct Abandoned(pub Status);

/// What the agent does once an attempt is reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    Continue,
    /// A built-in `reboot` or `poweroff` step succeeded: do it now.
    Power(String),
}

pub async fn run_attempt(agent: &Agent, a: &Assignment) -> Result<Next, Abandoned> {
    let spec = a.action.clone().unwrap_or_default();
    let span = tracing::info_span!("attempt", workflow = %a.workflow_id, action = %spec.name, attempt = %a.attempt_id);
    let _enter = span.enter();
    tracing::info!(image = %spec.image, builtin = %spec.builtin, "starting action {}/{}", a.action_index + 1, a.action_count);
    agent.on_workflow(&a.workflow_id).await;
    if !spec.builtin.is_empty() {
        // SUCCESS first, acknowledged by the server; the power action after.
        report(agent, a, ActionState::Running, None).await?;
        report(agent, a, ActionState::Success, Some(&Ending::success())).await?;
        return Ok(Next::Power(spec.builtin));
    }
    if !spec.external.is_empty() {
        report(agent, a, ActionState::Running, None).await?;
        let shipper =
            LogShipper::start(agent.client.clone(), a.workflow_id.clone(), a.action_index, a.attempt_id.clone());
        let timeout = Duration::from_secs(spec.timeout_seconds.max(1));
        let ending = crate::external::run(agent, a, &spec, timeout, &shipper).await;
        shipper.finish().await;
        tracing::info!(state = ?ending.state, reason = %ending.reason, "external action ended");
        return report(agent, a, ending.state, Some(&ending)).await.map(|()| Next::Continue);
    }

    let timeout = Duration::from_secs(spec.timeout_seconds.max(1));
    let dirs = AttemptDirs::create(agent, a);
    // The machine's own allow-list, checked before anything is pulled.
    let image = ImageRef::parse(&spec.image)
        .map_err(|e| ("InvalidImage", e))
        .and_then(|image| agent.image_policy.check(&image).map(|()| image).map_err(|e| ("ImageNotAllowed", e)));
    let ContainerRun { ending, container, reported_early } = match (image, &dirs) {
        (Err((reason, e)), _) => ContainerRun::none(Ending::failed(reason, e)),
        (_, Err(e)) => {
            ContainerRun::none(Ending::failed("AgentError", format!("cannot create the attempt's directories: {e}")))
        }
        (Ok(image), Ok(dirs)) => match agent.engine.get().await {
            Err(e) => ContainerRun::none(Ending::failed("EngineUnavailable", e.to_string())),
            Ok(runtime) => attach_or_run(agent, runtime, a, &spec, &image, timeout, dirs).await?,
        },
    };
    tracing::info!(state = ?ending.state, exit_code = ?ending.exit_code, reason = %ending.reason, "action ended");
    let reported = if reported_early {
        if ending.state != ActionState::Success {
            tracing::warn!(reason = %ending.reason, "terminal action failed after its SUCCESS was reported");
        }
        Ok(())
    } else {
        report(agent, a, ending.state, Some(&ending)).await
    };
    // Clean up after the report, off the critical path: the next action
    // need not wait for the engine to delete this one's container.
    if let Some(id) = container {
        let keep = ending.state != ActionState::Success && agent.config.failed_containers == FailedContainers::Keep;
        if keep {
            tracing::info!(container = %id, "keeping the failed container for inspection");
        } else if let Some(runtime) = agent.engine.connected() {
            runtime.remove_in_background(id);
        }
    }
    if let Ok(dirs) = dirs {
        dirs.remove_attempt_dirs();
    }
    reported.map(|()| Next::Continue)
}

/// How a container attempt went.
struct ContainerRun {
    ending: Ending,
    /// The container to clean up, if one was created.
    container: Option<String>,
    /// A terminal action's SUCCESS was reported while it still ran.
    reported_early: bool,
}

impl ContainerRun {
    /// Ended before a container was created.
    fn none(ending: Ending) -> Self {
        Self { ending, container: None, reported_early: false }
    }
}

/// Follows the attempt's container if it runs already (this agent died
/// while it ran), else pulls the image and runs it.
async fn attach_or_run(
    agent: &Agent,
    runtime: &DockerRuntime,
    a: &Assignment,
    spec: &kiln_proto::v1::ActionSpec,
    image: &ImageRef,
    timeout: Duration,
    dirs: &AttemptDirs,
) -> Result<ContainerRun, Abandoned> {
    let (timeout, existing) = match runtime.find_attempt(&a.attempt_id).await {
        Some((id, running_for)) => {
            // The container went on without its agent: follow it to its end
            // instead of running the action twice.
            tracing::warn!(container = %id, running_for = ?running_for, "re-attaching to this attempt's container");
            (timeout.saturating_sub(running_for).max(Duration::from_secs(1)), Some(id))
        }
        None => {
            // A container of an earlier attempt that the server declared lost
            // may still run (this agent was cut off, not dead): it must not
            // write the disk beside this attempt's.
            runtime.remove_running_except(&agent.id, &a.attempt_id).await;
            report(agent, a, ActionState::Pulling, None).await?;
            let credentials = agent.config.credentials_for(&image.registry);
            // A background pull of this image (started while an earlier
            // action ran) counts; if it failed, pull again and report that.
            let prefetched = match agent.prefetch.pull_of(&a.workflow_id, image) {
                Some(pull) => pull.await.is_ok(),
                None => false,
            };
            if !prefetched && let Err(e) = runtime.ensure_image(image, agent.config.pull_policy, credentials).await {
                return Ok(ContainerRun::none(Ending::failed("PullFailed", e.to_string())));
            }
            start_prefetch(agent, runtime, a);
            (timeout, None)
        }
    };
    let run = run_container(agent, runtime, a, spec, image, timeout, dirs, existing).await?;
    Ok(ContainerRun { ending: run.ending.with_action_failure(&dirs.kiln), ..run })
}

/// Pulls the images of the next actions in the background, those this
/// machine's allow-list accepts (the others fail when their turn comes).
fn start_prefetch(agent: &Agent, runtime: &DockerRuntime, a: &Assignment) {
    let images = a
        .upcoming_images
        .iter()
        .filter_map(|i| ImageRef::parse(i).ok())
        .filter(|i| agent.image_policy.check(i).is_ok())
        .map(|i| {
            let credentials = agent.config.credentials_for(&i.registry).cloned();
            (i, credentials)
        })
        .collect();
    agent.prefetch.start(&a.workflow_id, images, runtime, agent.config.pull_policy);
}

/// The terminal-step handshake (proto `ActionSpec.terminal`): once the
/// action says it is ready to fire, its logs are flushed and its SUCCESS is
/// reported; only after the server acknowledged it may the action fire.
async fn terminal_handshake(
    agent: &Agent,
    a: &Assignment,
    kiln_dir: &Path,
    shipper: &LogShipper,
) -> Result<(), Abandoned> {
    let ready = kiln_dir.join(TERMINAL_READY);
    while !ready.exists() {
        tokio::time::sleep(HANDSHAKE_POLL).await;
    }
    tracing::info!("terminal action is ready to fire; reporting SUCCESS first");
    // Lines printed just before the ready file may still be in the engine's
    // log stream.
    tokio::time::sleep(HANDSHAKE_POLL * 2).await;
    shipper.flush().await;
    report(agent, a, ActionState::Success, Some(&Ending::success())).await?;
    if let Err(e) = std::fs::write(kiln_dir.join(TERMINAL_GO), b"") {
        tracing::error!(error = %e, "cannot tell the terminal action to fire");
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn run_container(
    agent: &Agent,
    runtime: &DockerRuntime,
    a: &Assignment,
    spec: &kiln_proto::v1::ActionSpec,
    image: &ImageRef,
    timeout: Duration,
    dirs: &AttemptDirs,
    existing: Option<String>,
) -> Result<ContainerRun, Abandoned> {
    let limits = spec.resources.clone().unwrap_or_default();
    let positive = |v: u64| (v > 0).then_some(v as i64);
    let container = ContainerSpec {
        name: container_name(a),
        image: image.to_string(),
        command: spec.command.clone(),
        env: environment(agent, a, spec),
        // Host /dev, not a copy: partitions created by an earlier action
        // (or by this one) appear without restarting anything.
        binds: std::iter::once("/dev:/dev".to_string())
            .chain(dirs.binds())
            .chain(spec.volumes.iter().cloned())
            .collect(),
        pid_host: spec.pid == "host",
        host_network: agent.config.host_network || spec.network == "host",
        labels: HashMap::from([
            (labels::WORKFLOW.to_string(), a.workflow_id.clone()),
            (labels::ACTION.to_string(), a.action_index.to_string()),
            (labels::ATTEMPT.to_string(), a.attempt_id.clone()),
            (labels::AGENT.to_string(), agent.id.clone()),
        ]),
        limits: Limits {
            memory_bytes: positive(limits.memory_bytes),
            nano_cpus: positive(limits.nano_cpus),
            pids: positive(limits.pids),
            gpus: (!limits.gpus.is_empty()).then_some(limits.gpus),
        },
        stdin: (!spec.definition.is_empty()).then(|| spec.input_json.clone().into_bytes()),
    };
    let id = match existing {
        Some(id) => id,
        None => {
            let id = match runtime.create(&container).await {
                Ok(id) => id,
                Err(e) => {
                    return Ok(ContainerRun {
                        ending: Ending::failed("CreateFailed", e.to_string()),
                        container: None,
                        reported_early: false,
                    });
                }
            };
            let started = match &container.stdin {
                Some(input) => runtime.start_with_stdin(&id, input).await,
                None => runtime.start(&id).await,
            };
            if let Err(e) = started {
                let ending = Ending { exit_code: Some(125), ..Ending::failed("StartFailed", e.to_string()) };
                return Ok(ContainerRun { ending, container: Some(id), reported_early: false });
            }
            id
        }
    };
    // Repeated after a re-attach: reports are idempotent.
    report(agent, a, ActionState::Running, None).await?;

    let shipper = LogShipper::start(agent.client.clone(), a.workflow_id.clone(), a.action_index, a.attempt_id.clone());
    let mut output = Box::pin(runtime.output(&id));
    // A typed action's stdout is its output document, not its log.
    let typed = container.stdin.is_some();
    let follow = async {
        let mut captured = String::new();
        while let Some(line) = output.next().await {
            if typed && !line.stderr {
                if captured.len() <= MAX_OUTPUT {
                    captured.push_str(&line.text);
                    captured.push('\n');
                }
            } else {
                shipper.send(line).await;
            }
        }
        captured
    };
    let grace = Duration::from_secs(agent.config.stop_grace_seconds);
    let (exited_tx, exited_rx) = tokio::sync::oneshot::channel::<()>();
    let wait = async {
        let outcome = runtime.wait(&id, timeout, grace).await;
        let _ = exited_tx.send(());
        outcome
    };
    let handshake = async {
        if !spec.terminal {
            return None;
        }
        tokio::select! {
            _ = exited_rx => None,
            reported = terminal_handshake(agent, a, &dirs.kiln, &shipper) => Some(reported),
        }
    };
    let (outcome, captured, early) = tokio::join!(
        wait,
        async {
            // The log stream ends when the container stops; after a kill it
            // may linger, so it gets a bounded grace period past the timeout.
            tokio::time::timeout(timeout + grace + LOG_DRAIN, follow).await.unwrap_or_default()
        },
        handshake
    );
    let reported_early = match early {
        Some(Err(abandoned)) => return Err(abandoned),
        Some(Ok(())) => true,
        None => false,
    };
    let mut ending = match outcome {
        Ok(outcome) => Ending::from_outcome(outcome, timeout),
        Err(e) => Ending::failed("WaitFailed", e.to_string()),
    };
    if typed && ending.state == ActionState::Success {
        if captured.len() > MAX_OUTPUT {
            ending = Ending::failed("OutputTooLarge", format!("stdout exceeded {MAX_OUTPUT} bytes"));
        } else {
            ending.output_json = captured;
        }
    }
    if ending.state == ActionState::Timeout {
        shipper.send(OutputLine { stderr: true, text: format!("[kiln-agent] {}", ending.message) }).await;
    }
    let handler = match ending.state {
        ActionState::Failed => Some(("on-failure", &spec.on_failure)),
        ActionState::Timeout => Some(("on-timeout", &spec.on_timeout)),
        _ => None,
    };
    if let Some((kind, command)) = handler.filter(|(_, c)| !c.is_empty()) {
        run_handler(agent, runtime, &container, kind, command, timeout, &shipper).await;
    }
    upload_artifacts(agent, a, &dirs.out, &shipper).await;
    shipper.finish().await;
    Ok(ContainerRun { ending, container: Some(id), reported_early })
}

/// Uploads what the action left in `/out`. A file that cannot be uploaded
/// (too large, server gone) is named in the attempt's logs; the action's
/// result stands.
async fn upload_artifacts(agent: &Agent, a: &Assignment, out: &Path, shipper: &LogShipper) {
    let mut files = Vec::new();
    collect_files(out, out, &mut files);
    for (rel, path, size) in files {
        let header = ArtifactHeader {
            workflow_id: a.workflow_id.clone(),
            action_index: a.action_index,
            attempt_id: a.attempt_id.clone(),
            path: rel.clone(),
            size,
        };
        let text = match agent.client.upload_artifact(header, &path).await {
            Ok(info) => format!("[kiln-agent] artifact {rel} uploaded ({} bytes, sha256 {})", info.size, info.sha256),
            Err(e) => format!("[kiln-agent] artifact {rel} NOT uploaded: {}", e.message()),
        };
        shipper.send(OutputLine { stderr: true, text }).await;
    }
}

/// Regular files below `dir`, as (path relative to `root`, path, size).
/// Symbolic links are skipped: they could point anywhere on the host.
fn collect_files(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf, u64)>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let Ok(meta) = e.path().symlink_metadata() else { continue };
        if meta.is_dir() {
            collect_files(root, &e.path(), out);
        } else if meta.is_file()
            && let Ok(rel) = e.path().strip_prefix(root)
        {
            out.push((rel.to_string_lossy().into_owned(), e.path(), meta.len()));
        }
    }
}

/// Runs an `on-failure` / `on-timeout` command in a new container of the
/// action's image. Its result changes nothing about the attempt's; its
/// output joins the attempt's logs, each line marked with the handler.
async fn run_handler(
    agent: &Agent,
    runtime: &DockerRuntime,
    action: &ContainerSpec,
    kind: &str,
    command: &[String],
    timeout: Duration,
    shipper: &LogShipper,
) {
    let mut spec = action.clone();
    spec.name = format!("{}-{kind}", action.name);
    spec.command = command.to_vec();
    spec.stdin = None;
    let say = |text: String| OutputLine { stderr: true, text };
    let id = match runtime.create(&spec).await {
        Ok(id) => id,
        Err(e) => return shipper.send(say(format!("[{kind}] {e}"))).await,
    };
    if let Err(e) = runtime.start(&id).await {
        shipper.send(say(format!("[{kind}] {e}"))).await;
        return runtime.remove_in_background(id);
    }
    let mut output = Box::pin(runtime.output(&id));
    let follow = async {
        while let Some(mut line) = output.next().await {
            line.text = format!("[{kind}] {}", line.text);
            shipper.send(line).await;
        }
    };
    let grace = Duration::from_secs(agent.config.stop_grace_seconds);
    let (outcome, _) =
        tokio::join!(runtime.wait(&id, timeout, grace), tokio::time::timeout(timeout + grace + LOG_DRAIN, follow));
    let ended = match outcome {
        Ok(RunOutcome::Exited { code, .. }) => format!("exited with code {code}"),
        Ok(RunOutcome::TimedOut { code }) => format!("stopped after its timeout, exit code {code}"),
        Err(e) => e.to_string(),
    };
    shipper.send(say(format!("[{kind}] handler {ended}"))).await;
    runtime.remove_in_background(id);
}

/// `kiln-<workflow>-<action>-<attempt>`: unique per attempt, so a
/// restarted agent finds (and replaces) its own leftovers by name.
pub fn container_name(a: &Assignment) -> String {
    let workflow: String = a
        .workflow_id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '_' })
        .collect();
    let attempt: String = a.attempt_id.chars().filter(char::is_ascii_alphanumeric).take(12).collect();
    format!("kiln-{workflow}-{}-{attempt}", a.action_index)
}

/// The template's environment plus what every action is told about itself.
/// kiln's variables come last, so a template cannot fake them.
fn environment(agent: &Agent, a: &Assignment, spec: &kiln_proto::v1::ActionSpec) -> Vec<String> {
    let mut env: Vec<String> =
        spec.environment.iter().filter(|(k, _)| !k.starts_with("KILN_")).map(|(k, v)| format!("{k}={v}")).collect();
    env.sort();
    env.extend([
        format!("KILN_WORKFLOW_ID={}", a.workflow_id),
        format!("KILN_ACTION_ID={}", a.action_index),
        format!("KILN_ACTION_NAME={}", spec.name),
        format!("KILN_TASK_NAME={}", spec.task),
        format!("KILN_ATTEMPT={}", a.attempt),
        format!("KILN_ATTEMPT_ID={}", a.attempt_id),
        format!("KILN_AGENT_ID={}", agent.id),
        format!("KILN_HARDWARE_ID={}", a.hardware_id),
        format!("KILN_API_ENDPOINT={}", agent.config.server),
        format!("KILN_ACTION_TOKEN={}", a.action_token),
    ]);
    if agent.api_ca_pem.is_some() {
        env.push(format!("KILN_API_CA=/kiln/{API_CA}"));
    }
    env
}

async fn report(agent: &Agent, a: &Assignment, state: ActionState, ending: Option<&Ending>) -> Result<(), Abandoned> {
    let report = StateReport {
        workflow_id: a.workflow_id.clone(),
        action_index: a.action_index,
        attempt_id: a.attempt_id.clone(),
        state: state as i32,
        observed_at: Some(to_proto(SystemTime::now())),
        exit_code: ending.and_then(|e| e.exit_code),
        reason: ending.map(|e| e.reason.to_string()).unwrap_or_default(),
        message: ending.map(|e| e.message.clone()).unwrap_or_default(),
        output_json: ending.map(|e| e.output_json.clone()).unwrap_or_default(),
    };
    if matches!(state, ActionState::Success | ActionState::Failed | ActionState::Timeout) {
        // From here on the attempt ends by this agent's own report; a
        // heartbeat answer saying "ended" must not cancel what follows
        // (a terminal step fires only after its SUCCESS is acknowledged).
        agent.lease.release();
    }
    // Transient failures were retried by the client; what is left means the
    // server moved on (workflow finished or timed out, attempt superseded),
    // so nothing this agent does for the attempt matters any more.
    agent.client.report(report).await.map(|_| ()).map_err(Abandoned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_map_to_reports() {
        let t = Duration::from_secs(5);
        assert_eq!(
            Ending::from_outcome(RunOutcome::Exited { code: 0, oom_killed: false }, t).state,
            ActionState::Success
        );
        let e = Ending::from_outcome(RunOutcome::Exited { code: 3, oom_killed: false }, t);
        assert_eq!((e.state, e.exit_code, e.reason.as_str()), (ActionState::Failed, Some(3), "NonZeroExit"));
        for (code, oom, reason) in [
            (137, true, "OOMKilled"),
            (137, false, "Killed"),
            (125, false, "RuntimeError"),
            (126, false, "CommandCannotInvoke"),
            (127, false, "CommandNotFound"),
            (139, false, "Segfault"),
            (143, false, "Terminated"),
        ] {
            let e = Ending::from_outcome(RunOutcome::Exited { code, oom_killed: oom }, t);
            assert_eq!((e.state, e.exit_code, e.reason.as_str()), (ActionState::Failed, Some(code), reason));
        }
        let e = Ending::from_outcome(RunOutcome::TimedOut { code: 143 }, t);
        assert_eq!((e.state, e.exit_code), (ActionState::Timeout, Some(143)));
        assert!(e.message.contains("5s"));
    }

    #[test]
    fn actions_may_explain_their_failure() {
        let dir = tempfile::tempdir().unwrap();
        let failed = Ending::from_outcome(RunOutcome::Exited { code: 2, oom_killed: false }, Duration::from_secs(1));
        assert_eq!(failed.clone().with_action_failure(dir.path()).reason, "NonZeroExit");
        std::fs::write(dir.path().join(FAILURE_REASON), "DiskTooSmall\n").unwrap();
        std::fs::write(dir.path().join(FAILURE_MESSAGE), "need 8 GiB, found 4 GiB\n").unwrap();
        let e = failed.with_action_failure(dir.path());
        assert_eq!(
            (e.reason.as_str(), e.message.as_str(), e.exit_code),
            ("DiskTooSmall", "need 8 GiB, found 4 GiB", Some(2))
        );
        let ok = Ending::from_outcome(RunOutcome::Exited { code: 0, oom_killed: false }, Duration::from_secs(1));
        assert_eq!(ok.with_action_failure(dir.path()).reason, "", "success stays success");
    }

    #[test]
    fn container_names_are_docker_safe() {
        let a = Assignment {
            workflow_id: "wf/1 x".into(),
            action_index: 2,
            attempt_id: "0b7c-44d1-9a9a-aaaa-bbbbcccc".into(),
            ..Default::default()
        };
        assert_eq!(container_name(&a), "kiln-wf_1_x-2-0b7c44d19a9a");
    }
}
