//! The lifecycle against a fake engine ([`FakeRuntime`]) and a fake server:
//! an in-process gRPC AgentService that records what it is told, in order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_proto::v1::agent_service_server::{AgentService, AgentServiceServer};
use kiln_proto::v1::{
    ActionSpec, ActionState, ArtifactChunk, ArtifactInfo, Assignment, HeartbeatRequest, HeartbeatResponse,
    InventoryAck, InventoryReport, LogAck, LogBatch, NextActionRequest, NextActionResponse, ReportAck, StateReport,
};
use tonic::{Request, Response, Status, Streaming};

use super::{Next, run_attempt};
use crate::Agent;
use crate::config::AgentConfig;
use crate::runtime::fake::{End, FakeRuntime, Program};
use crate::runtime::{ContainerSpec, Engine, Limits, labels};

/// What the server heard, in the order it heard it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Heard {
    Report { state: ActionState, exit_code: Option<i64>, reason: String, message: String },
    Log(String),
}

#[derive(Clone, Default)]
struct FakeServer {
    heard: Arc<Mutex<Vec<Heard>>>,
}

#[tonic::async_trait]
impl AgentService for FakeServer {
    async fn next_action(&self, _: Request<NextActionRequest>) -> Result<Response<NextActionResponse>, Status> {
        Ok(Response::new(NextActionResponse { assignment: None }))
    }

    async fn report_state(&self, req: Request<StateReport>) -> Result<Response<ReportAck>, Status> {
        let r = req.into_inner();
        let heard = Heard::Report { state: r.state(), exit_code: r.exit_code, reason: r.reason, message: r.message };
        self.heard.lock().unwrap().push(heard);
        Ok(Response::new(ReportAck { applied: true }))
    }

    async fn push_logs(&self, req: Request<LogBatch>) -> Result<Response<LogAck>, Status> {
        let batch = req.into_inner();
        let mut heard = self.heard.lock().unwrap();
        heard.extend(batch.lines.iter().map(|l| Heard::Log(l.text.clone())));
        Ok(Response::new(LogAck { stored_through: batch.lines.last().map_or(0, |l| l.seq) }))
    }

    async fn upload_artifact(&self, _: Request<Streaming<ArtifactChunk>>) -> Result<Response<ArtifactInfo>, Status> {
        Err(Status::unimplemented("no artifacts in these tests"))
    }

    async fn heartbeat(&self, _: Request<HeartbeatRequest>) -> Result<Response<HeartbeatResponse>, Status> {
        Ok(Response::new(HeartbeatResponse::default()))
    }

    async fn report_inventory(&self, _: Request<InventoryReport>) -> Result<Response<InventoryAck>, Status> {
        Ok(Response::new(InventoryAck { changed: true }))
    }
}

impl FakeServer {
    fn heard(&self) -> Vec<Heard> {
        self.heard.lock().unwrap().clone()
    }

    fn reports(&self) -> Vec<Heard> {
        self.heard().into_iter().filter(|h| matches!(h, Heard::Report { .. })).collect()
    }

    fn logs(&self) -> Vec<String> {
        self.heard()
            .into_iter()
            .filter_map(|h| match h {
                Heard::Log(text) => Some(text),
                Heard::Report { .. } => None,
            })
            .collect()
    }

    /// The last report: the attempt's terminal one.
    fn ending(&self) -> (ActionState, Option<i64>, String, String) {
        match self.reports().pop() {
            Some(Heard::Report { state, exit_code, reason, message }) => (state, exit_code, reason, message),
            _ => panic!("no report"),
        }
    }

    /// The states reported, in order.
    fn states(&self) -> Vec<ActionState> {
        self.reports()
            .into_iter()
            .map(|h| match h {
                Heard::Report { state, .. } => state,
                Heard::Log(_) => unreachable!(),
            })
            .collect()
    }
}

const ATTEMPT: &str = "attempt-1";
const WORKFLOW: &str = "wf-1";
const AGENT: &str = "agent-1";

/// An agent whose server is a [`FakeServer`] and whose engine is `runtime`.
struct Harness {
    agent: Agent,
    server: FakeServer,
    runtime: Arc<FakeRuntime>,
    _state: tempfile::TempDir,
}

impl Harness {
    async fn start(runtime: FakeRuntime) -> Self {
        Self::start_with(runtime, "").await
    }

    /// With `extra` appended to the agent's configuration.
    async fn start_with(runtime: FakeRuntime, extra: &str) -> Self {
        let server = FakeServer::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = AgentServiceServer::new(server.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let state = tempfile::tempdir().unwrap();
        let config = AgentConfig::parse(&format!(
            "server: http://{addr}\ntoken: secret\nagent_id: {AGENT}\nstate_dir: {}\nstop_grace_seconds: 1\n\
             failed_containers: remove\n{extra}",
            state.path().display()
        ))
        .unwrap();
        let mut agent = Agent::new(config).await.unwrap();
        let runtime = Arc::new(runtime);
        agent.engine = Engine::connected_to(runtime.clone());
        Self { agent, server, runtime, _state: state }
    }

    async fn run(&self, spec: ActionSpec) -> Next {
        let assignment = Assignment {
            workflow_id: WORKFLOW.into(),
            action_index: 0,
            action_count: 1,
            attempt_id: ATTEMPT.into(),
            action: Some(spec),
            ..Default::default()
        };
        run_attempt(&self.agent, &assignment).await.expect("the server took every report")
    }
}

fn action(timeout_seconds: u64) -> ActionSpec {
    ActionSpec { name: "act".into(), image: "registry.test/act:1".into(), timeout_seconds, ..Default::default() }
}

#[tokio::test]
async fn a_container_that_exits_0_is_reported_success_after_its_output() {
    let h = Harness::start(FakeRuntime::new(Program::exits(0, &["hello", "world"]))).await;
    assert_eq!(h.run(action(10)).await, Next::Continue);
    assert_eq!(h.server.states(), [ActionState::Pulling, ActionState::Running, ActionState::Success]);
    assert_eq!(h.server.logs(), ["hello", "world"]);
    assert_eq!(h.server.ending(), (ActionState::Success, Some(0), String::new(), String::new()));
    let name = format!("kiln-{WORKFLOW}-0-attempt1");
    assert_eq!(
        h.runtime.calls(),
        ["pull registry.test/act:1".to_string(), format!("create {name}"), "start c1".into()]
    );
}

#[tokio::test]
async fn a_non_zero_exit_is_reported_failed_with_its_code() {
    let h = Harness::start(FakeRuntime::new(Program::exits(3, &["bad input"]))).await;
    h.run(action(10)).await;
    let (state, code, reason, message) = h.server.ending();
    assert_eq!(
        (state, code, reason.as_str(), message.as_str()),
        (ActionState::Failed, Some(3), "NonZeroExit", "exited with code 3")
    );
    assert_eq!(h.server.logs(), ["bad input"]);
    // failed_containers: remove
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(h.runtime.calls().contains(&"remove c1".to_string()), "{:?}", h.runtime.calls());
}

#[tokio::test]
async fn a_container_past_its_timeout_gets_sigterm_then_sigkill_and_is_reported_timeout() {
    let program = Program { lines: vec!["working".into()], terminal: false, end: End::UntilKilled };
    let h = Harness::start(FakeRuntime::new(program)).await;
    let started = std::time::Instant::now();
    h.run(action(1)).await;
    let took = started.elapsed();
    let (state, code, reason, _) = h.server.ending();
    assert_eq!((state, code, reason.as_str()), (ActionState::Timeout, Some(137), "Timeout"));
    let signals: Vec<String> = h.runtime.calls().into_iter().filter(|c| c.starts_with("signal")).collect();
    assert_eq!(signals, ["signal c1 SIGTERM", "signal c1 SIGKILL"]);
    // 1 s of timeout, then 1 s of grace (stop_grace_seconds) before SIGKILL.
    assert!(took >= Duration::from_secs(2), "killed after {took:?}");
    assert_eq!(h.server.logs(), ["working", "[kiln-agent] stopped after its timeout of 1s"]);
}

#[tokio::test]
async fn a_refused_pull_is_reported_with_the_registry_message() {
    let mut runtime = FakeRuntime::new(Program::exits(0, &[]));
    runtime.pull_error = Some("unauthorized: authentication required".into());
    let h = Harness::start(runtime).await;
    h.run(action(10)).await;
    let (state, code, reason, message) = h.server.ending();
    assert_eq!((state, code, reason.as_str()), (ActionState::Failed, None, "PullFailed"));
    assert!(message.contains("unauthorized: authentication required"), "{message}");
    assert_eq!(h.server.states(), [ActionState::Pulling, ActionState::Failed]);
    assert_eq!(h.runtime.calls(), ["pull registry.test/act:1"]);
}

#[tokio::test]
async fn the_running_container_of_the_same_attempt_is_followed_not_created_again() {
    let spec = ContainerSpec {
        name: "kiln-left-over".into(),
        image: "registry.test/act:1".into(),
        command: Vec::new(),
        env: Vec::new(),
        binds: Vec::new(),
        pid_host: false,
        host_network: false,
        hostname: None,
        labels: HashMap::from([
            (labels::WORKFLOW.to_string(), WORKFLOW.to_string()),
            (labels::ATTEMPT.to_string(), ATTEMPT.to_string()),
            (labels::AGENT.to_string(), AGENT.to_string()),
        ]),
        limits: Limits::default(),
        stdin: None,
    };
    // It has run 1 s of its 10 s; the program below ends at once anyway.
    let runtime = FakeRuntime::new(Program::exits(0, &["from before the restart", "and after"]));
    let h = Harness::start(runtime.with_running(spec, ATTEMPT, Duration::from_secs(1))).await;
    h.run(action(10)).await;
    assert_eq!(h.server.states(), [ActionState::Running, ActionState::Success]);
    assert_eq!(h.server.logs(), ["from before the restart", "and after"]);
    let calls = h.runtime.calls();
    assert!(
        !calls.iter().any(|c| c.starts_with("create") || c.starts_with("pull") || c.starts_with("start")),
        "{calls:?}"
    );
}

/// Docker's log stream delivers lines a little after the container wrote
/// them; here 200 ms, the last ones after the container exited.
#[tokio::test]
async fn the_last_lines_before_exit_reach_the_server_before_the_report() {
    let mut runtime = FakeRuntime::new(Program::exits(0, &["one", "two", "last words"]));
    runtime.log_latency = Duration::from_millis(200);
    let h = Harness::start(runtime).await;
    h.run(action(10)).await;
    let heard = h.server.heard();
    let success = heard.iter().position(|h| matches!(h, Heard::Report { state: ActionState::Success, .. }));
    let last = heard.iter().position(|h| *h == Heard::Log("last words".into()));
    assert!(last.is_some() && last < success, "{heard:?}");
}

/// A terminal action is still running when its SUCCESS is reported, so the
/// end of its log stream cannot say that its last lines are in; the lines
/// it printed before it said it was ready must still be with the server
/// before that report.
#[tokio::test]
async fn a_terminal_action_s_last_lines_reach_the_server_before_its_success() {
    let program = Program {
        lines: vec!["preparing kexec".into(), "last words before the handshake".into()],
        terminal: true,
        end: End::Exit(0),
    };
    let mut runtime = FakeRuntime::new(program);
    runtime.log_latency = Duration::from_millis(200);
    runtime.image_labels = speaks_handshake();
    let h = Harness::start(runtime).await;
    h.run(ActionSpec { terminal: true, ..action(10) }).await;
    let heard = h.server.heard();
    let success = heard.iter().position(|h| matches!(h, Heard::Report { state: ActionState::Success, .. }));
    let last = heard.iter().position(|h| *h == Heard::Log("last words before the handshake".into()));
    assert!(last.is_some() && last < success, "{heard:?}");
    // Reported once, before it fired; its output after the go is kept too.
    assert_eq!(h.server.states(), [ActionState::Pulling, ActionState::Running, ActionState::Success]);
    assert_eq!(h.server.logs().last().map(String::as_str), Some("firing"));
}

fn speaks_handshake() -> HashMap<String, String> {
    HashMap::from([(labels::TERMINAL_HANDSHAKE.to_string(), "v1".to_string())])
}

/// A terminal step whose image does not speak the handshake (the hub's
/// kexec or reboot) fires as soon as it runs: its SUCCESS is with the server
/// before the container starts, so before anything it prints.
#[tokio::test]
async fn a_terminal_step_that_fires_by_itself_is_reported_success_before_it_starts() {
    let program = Program { lines: vec!["loading the kernel".into()], terminal: true, end: End::Exit(0) };
    let h = Harness::start(FakeRuntime::new(program)).await;
    h.run(ActionSpec { terminal: true, ..action(10) }).await;
    assert_eq!(h.server.states(), [ActionState::Pulling, ActionState::Running, ActionState::Success]);
    let heard = h.server.heard();
    let success = heard.iter().position(|h| matches!(h, Heard::Report { state: ActionState::Success, .. }));
    let first_line = heard.iter().position(|h| *h == Heard::Log("loading the kernel".into()));
    assert!(success.is_some() && success < first_line, "{heard:?}");
    assert_eq!(h.server.logs(), ["loading the kernel", "firing"], "its output after the report is kept");
    let calls = h.runtime.calls();
    let (create, start) =
        (calls.iter().position(|c| c.starts_with("create")), calls.iter().position(|c| c.starts_with("start")));
    assert!(create.is_some() && create < start, "{calls:?}");
}

/// A failure of such a step after its SUCCESS changes no report: the
/// server heard SUCCESS once, and the failure is in the logs.
#[tokio::test]
async fn a_report_first_step_that_fails_is_not_reported_twice() {
    let h = Harness::start(FakeRuntime::new(Program::exits(1, &["no kernel here"]))).await;
    h.run(ActionSpec { terminal: true, ..action(10) }).await;
    assert_eq!(h.server.states(), [ActionState::Pulling, ActionState::Running, ActionState::Success]);
    assert_eq!(h.server.logs(), ["no kernel here"]);
}

/// An image labelled as speaking the handshake is terminal even where the
/// template did not say so (kiln's kexec under a name the server did not
/// recognise), and gets the offer; one that is neither runs as any action
/// and, not offered the handshake, fires by itself as the hub's does.
#[tokio::test]
async fn the_image_label_makes_a_step_terminal_and_only_then_is_the_handshake_offered() {
    let program = Program { lines: vec!["kernel loaded".into()], terminal: true, end: End::Exit(0) };
    let mut runtime = FakeRuntime::new(program.clone());
    runtime.image_labels = speaks_handshake();
    let h = Harness::start(runtime).await;
    h.run(action(10)).await;
    let heard = h.server.heard();
    let success = heard.iter().position(|h| matches!(h, Heard::Report { state: ActionState::Success, .. }));
    let fired = heard.iter().position(|h| *h == Heard::Log("firing".into()));
    assert!(success.is_some() && success < fired, "SUCCESS before the go: {heard:?}");

    let h = Harness::start(FakeRuntime::new(program)).await;
    h.run(action(10)).await;
    assert_eq!(h.server.states(), [ActionState::Pulling, ActionState::Running, ActionState::Success]);
    let heard = h.server.heard();
    let success = heard.iter().position(|h| matches!(h, Heard::Report { state: ActionState::Success, .. }));
    let fired = heard.iter().position(|h| *h == Heard::Log("firing".into()));
    assert!(fired.is_some() && fired < success, "an ordinary action, reported at its exit: {heard:?}");
}

/// Under the agent's host networking an action's hostname is its
/// container's name (so `docker inspect $(hostname)` finds it, as under
/// Tinkerbell's own network namespace); a template's `network: host` keeps
/// the machine's, and a namespace of its own keeps Docker's default.
#[tokio::test]
async fn the_hostname_names_the_container_unless_the_template_asks_for_the_host_network() {
    let h = Harness::start_with(FakeRuntime::new(Program::exits(0, &[])), "host_network: true\n").await;
    h.run(action(10)).await;
    h.run(ActionSpec { network: "host".into(), ..action(10) }).await;
    let created = h.runtime.created();
    assert_eq!(created[0].hostname.as_deref(), Some(created[0].name.as_str()));
    assert!(created[0].host_network);
    assert_eq!((created[1].hostname.as_deref(), created[1].host_network), (None, true));

    let h = Harness::start(FakeRuntime::new(Program::exits(0, &[]))).await;
    h.run(action(10)).await;
    let created = h.runtime.created();
    assert_eq!((created[0].hostname.as_deref(), created[0].host_network), (None, false));
}
