//! An in-memory container engine for the lifecycle's tests. Its containers
//! run scripts ([`Program`]), not processes; its log stream delivers each
//! line a fixed latency after the container wrote it, as a real engine's
//! does (by less), and ends once the container exited and every line is out.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use kiln_documents::ImageRef;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Container, ContainerSpec, Exit, OutputLine, Runtime, RuntimeError, Signal, labels};
use crate::config::{PullPolicy, RegistryCredentials};

/// What a container does once started.
#[derive(Debug, Clone)]
pub struct Program {
    /// Written to stdout at once.
    pub lines: Vec<String>,
    /// Then, when the agent offers the terminal handshake (the variable
    /// KILN_TERMINAL_HANDSHAKE), as kiln's kexec does: creates
    /// `/kiln/terminal-ready`, waits for `/kiln/terminal-go`, prints
    /// "firing". Without the offer it prints "firing" at once, as the
    /// hub's kexec fires.
    pub terminal: bool,
    pub end: End,
}

#[derive(Debug, Clone, Copy)]
pub enum End {
    Exit(i64),
    /// Runs until SIGKILL; SIGTERM is ignored.
    UntilKilled,
}

impl Program {
    pub fn exits(code: i64, lines: &[&str]) -> Self {
        Self { lines: lines.iter().map(|l| l.to_string()).collect(), terminal: false, end: End::Exit(code) }
    }
}

#[derive(Default)]
struct State {
    log: Vec<(Instant, OutputLine)>,
    exit: Option<Exit>,
    signals: Vec<Signal>,
}

struct FakeContainer {
    spec: ContainerSpec,
    state: watch::Sender<State>,
}

pub struct FakeRuntime {
    program: Program,
    /// The registry's answer to every pull, if it refuses.
    pub pull_error: Option<String>,
    /// The labels of every image.
    pub image_labels: HashMap<String, String>,
    /// How late the log stream delivers each line.
    pub log_latency: Duration,
    containers: Mutex<HashMap<String, Arc<FakeContainer>>>,
    /// What the lifecycle asked for, in order: "pull IMAGE", "create NAME",
    /// "start ID", "signal ID SIGTERM", "remove ID".
    calls: Mutex<Vec<String>>,
    /// A container of an attempt that runs already: (attempt, running for).
    running: Mutex<Option<(String, String, Duration)>>,
}

impl FakeRuntime {
    /// Every container it creates runs `program`.
    pub fn new(program: Program) -> Self {
        Self {
            program,
            pull_error: None,
            image_labels: HashMap::new(),
            log_latency: Duration::from_millis(20),
            containers: Mutex::default(),
            calls: Mutex::default(),
            running: Mutex::default(),
        }
    }

    /// A container of `attempt_id` that started `running_for` ago (by an
    /// agent that died since) and runs `program`.
    pub fn with_running(self, spec: ContainerSpec, attempt_id: &str, running_for: Duration) -> Self {
        let id = self.add(spec);
        self.run(&id);
        *self.running.lock().unwrap() = Some((attempt_id.to_string(), id, running_for));
        self
    }

    /// The specs of the containers it created, in creation order.
    pub fn created(&self) -> Vec<ContainerSpec> {
        let containers = self.containers.lock().unwrap();
        let mut specs: Vec<(usize, ContainerSpec)> = containers
            .iter()
            .map(|(id, c)| (id.trim_start_matches('c').parse().unwrap_or(0), c.spec.clone()))
            .collect();
        specs.sort_by_key(|(n, _)| *n);
        specs.into_iter().map(|(_, spec)| spec).collect()
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn call(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }

    fn add(&self, spec: ContainerSpec) -> String {
        let mut containers = self.containers.lock().unwrap();
        let id = format!("c{}", containers.len() + 1);
        containers.insert(id.clone(), Arc::new(FakeContainer { spec, state: watch::channel(State::default()).0 }));
        id
    }

    fn container(&self, id: &str) -> Result<Arc<FakeContainer>, RuntimeError> {
        let containers = self.containers.lock().unwrap();
        containers.get(id).cloned().ok_or_else(|| RuntimeError::Other(format!("no such container: {id}")))
    }

    fn run(&self, id: &str) {
        let container = self.container(id).expect("created");
        tokio::spawn(run_program(container, self.program.clone()));
    }
}

async fn run_program(container: Arc<FakeContainer>, program: Program) {
    let print = |text: &str| {
        let line = OutputLine { stderr: false, text: text.to_string() };
        container.state.send_modify(|s| s.log.push((Instant::now(), line)));
    };
    for line in &program.lines {
        print(line);
    }
    let offered = container.spec.env.iter().any(|e| e.starts_with("KILN_TERMINAL_HANDSHAKE="));
    if program.terminal && offered {
        let kiln = container.spec.binds.iter().find_map(|b| b.strip_suffix(":/kiln")).map(PathBuf::from);
        let kiln = kiln.expect("a /kiln bind");
        std::fs::write(kiln.join("terminal-ready"), b"").unwrap();
        while !kiln.join("terminal-go").exists() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        print("firing");
    } else if program.terminal {
        print("firing");
    }
    let code = match program.end {
        End::Exit(code) => code,
        End::UntilKilled => {
            let mut state = container.state.subscribe();
            let _ = state.wait_for(|s| s.signals.contains(&Signal::Kill)).await;
            137
        }
    };
    container.state.send_modify(|s| s.exit = Some(Exit { code, oom_killed: false }));
}

#[async_trait::async_trait]
impl Runtime for FakeRuntime {
    async fn ensure_image(
        &self,
        image: &ImageRef,
        _policy: PullPolicy,
        _credentials: Option<&RegistryCredentials>,
    ) -> Result<(), RuntimeError> {
        self.call(format!("pull {image}"));
        match &self.pull_error {
            Some(message) => Err(RuntimeError::Pull { image: image.to_string(), message: message.clone() }),
            None => Ok(()),
        }
    }

    async fn image_labels(&self, _image: &ImageRef) -> Result<HashMap<String, String>, RuntimeError> {
        Ok(self.image_labels.clone())
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        self.call(format!("create {}", spec.name));
        Ok(self.add(spec.clone()))
    }

    async fn start(&self, id: &str, _stdin: Option<&[u8]>) -> Result<(), RuntimeError> {
        self.call(format!("start {id}"));
        self.run(id);
        Ok(())
    }

    fn follow_output(&self, id: &str) -> BoxStream<'static, OutputLine> {
        let Ok(container) = self.container(id) else {
            return futures_util::stream::empty().boxed();
        };
        let latency = self.log_latency;
        futures_util::stream::unfold((container.state.subscribe(), 0), move |(mut state, next)| async move {
            loop {
                let (line, exited) = {
                    let s = state.borrow_and_update();
                    (s.log.get(next).cloned(), s.exit.is_some())
                };
                match line {
                    Some((written, line)) => {
                        tokio::time::sleep_until(written + latency).await;
                        return Some((line, (state, next + 1)));
                    }
                    None if exited => return None,
                    None => state.changed().await.ok()?,
                }
            }
        })
        .boxed()
    }

    async fn output_lines_so_far(&self, id: &str) -> Result<usize, RuntimeError> {
        Ok(self.container(id)?.state.borrow().log.len())
    }

    async fn wait(&self, id: &str) -> Result<Exit, RuntimeError> {
        let mut state = self.container(id)?.state.subscribe();
        let exit = state.wait_for(|s| s.exit.is_some()).await.map_err(|e| RuntimeError::Other(e.to_string()))?.exit;
        Ok(exit.expect("exited"))
    }

    async fn inspect(&self, id: &str) -> Result<Exit, RuntimeError> {
        // As Docker does, a running container's exit code is 0.
        Ok(self.container(id)?.state.borrow().exit.unwrap_or(Exit { code: 0, oom_killed: false }))
    }

    async fn signal(&self, id: &str, signal: Signal) {
        self.call(format!("signal {id} {}", signal.name()));
        if let Ok(container) = self.container(id) {
            container.state.send_modify(|s| s.signals.push(signal));
        }
    }

    async fn remove(&self, id: &str) {
        self.call(format!("remove {id}"));
    }

    async fn find_attempt(&self, attempt_id: &str) -> Option<(String, Duration)> {
        let running = self.running.lock().unwrap();
        running.as_ref().filter(|(attempt, ..)| attempt == attempt_id).map(|(_, id, for_)| (id.clone(), *for_))
    }

    async fn agent_containers(&self, agent_id: &str, running_only: bool) -> Result<Vec<Container>, RuntimeError> {
        let containers = self.containers.lock().unwrap();
        Ok(containers
            .iter()
            .filter(|(_, c)| c.spec.labels.get(labels::AGENT).map(String::as_str) == Some(agent_id))
            .filter(|(_, c)| !running_only || c.state.borrow().exit.is_none())
            .map(|(id, c)| Container { id: id.clone(), labels: c.spec.labels.clone() })
            .collect())
    }
}
