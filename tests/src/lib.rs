//! Harness for kiln's integration tests: real `kiln-server`, `kiln-agent`
//! and `kiln` binaries, a real Docker engine and real registries.
//!
//! The services come from `scripts/test-env.sh up` (the README's test
//! command runs it); their addresses arrive in `KILN_TEST_*` variables. A
//! test run without them fails loudly instead of skipping.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub mod bmc_lab;
pub mod bmc_vm;
pub mod http;
pub mod library;
pub mod netns;
pub mod postgres;
pub mod proxy;
pub mod pxe;
pub mod sim;
pub mod vm;

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// The services of `scripts/test-env.sh`.
#[derive(Debug, Clone)]
pub struct TestEnv {
    pub docker_host: String,
    /// Open registry, `host:port`.
    pub registry: String,
    /// Registry with htpasswd auth, `host:port`.
    pub auth_registry: String,
    pub registry_user: String,
    pub registry_password: String,
}

/// The first path segment of the test images: `KILN_TEST_IMAGE_PREFIX`
/// (actions/build.sh's `KILN_IMAGE_PREFIX`), default `kiln`.
pub fn image_prefix() -> String {
    std::env::var("KILN_TEST_IMAGE_PREFIX").unwrap_or_else(|_| "kiln".into())
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with scripts/test.sh (it starts dockerd and the registries)")
    })
}

impl TestEnv {
    pub fn from_env() -> Self {
        Self {
            docker_host: var("KILN_TEST_DOCKER_HOST"),
            registry: var("KILN_TEST_REGISTRY"),
            auth_registry: var("KILN_TEST_AUTH_REGISTRY"),
            registry_user: var("KILN_TEST_REGISTRY_USER"),
            registry_password: var("KILN_TEST_REGISTRY_PASSWORD"),
        }
    }

    /// The busybox action image (built by `actions/build.sh`) in the open registry.
    pub fn busybox(&self) -> String {
        format!("{}/{}/busybox:v1", self.registry, image_prefix())
    }

    /// The waitdaemon stand-in (`actions/testbins/waitdaemon.c`, built by
    /// `actions/build.sh`) in the open registry.
    pub fn waitdaemon(&self) -> String {
        format!("{}/{}/waitdaemon:v1", self.registry, image_prefix())
    }

    /// An image of the action library (`actions/build.sh`) in the open
    /// registry: the workspace version's, or `KILN_IMAGE_TAG`'s (a branch's
    /// images pushed with `KILN_IMAGE_TAG=... actions/build.sh`).
    pub fn action(&self, name: &str) -> String {
        format!("{}/{}/actions/{name}:{}", self.registry, image_prefix(), action_tag())
    }

    /// `docker` against the test engine.
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker").env("DOCKER_HOST", &self.docker_host).args(args).output().expect("run docker")
    }
}

/// The tag of the action images under test: `KILN_IMAGE_TAG`, or the
/// workspace version (what `actions/build.sh` pushes by default).
pub fn action_tag() -> String {
    std::env::var("KILN_IMAGE_TAG").ok().filter(|t| !t.is_empty()).unwrap_or_else(|| env!("CARGO_PKG_VERSION").into())
}

/// Directory of the workspace's built binaries (`target/<profile>`), found
/// from this executable: a test (`target/<profile>/deps/<test>`) or a
/// benchmark binary (`target/<profile>/<bin>`). Tests built in a separate
/// build directory (`CARGO_BUILD_BUILD_DIR`) run from there while the
/// binaries still land in the target directory: then it is this
/// workspace's `target/<profile>`. `KILN_BIN_DIR` overrides both.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KILN_BIN_DIR") {
        return dir.into();
    }
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().expect("executable directory");
    let beside = if dir.ends_with("deps") { dir.parent().expect("target dir") } else { dir };
    let profile = beside.file_name().expect("profile directory");
    let workspace_target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target").join(profile);
    if !beside.join("kiln-server").exists() && workspace_target.is_dir() {
        workspace_target
    } else {
        beside.to_path_buf()
    }
}

fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(path.exists(), "{} not built: run `cargo build --workspace` first (scripts/test.sh does)", path.display());
    path
}

/// A child process killed when dropped.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has ended.
    pub fn exited(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_some()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A kiln server with its own data directory, and the agents started for it.
///
/// By default the server runs with `--dev-tls` and everything talks to it
/// authenticated: the CLI with the operator credential and the dev CA,
/// agents with their machine's token (captured from `kiln apply`).
pub struct Cluster {
    pub env: TestEnv,
    pub dir: tempfile::TempDir,
    pub server_url: String,
    pub server: Proc,
    /// Extra arguments the server was started with.
    pub server_args: Vec<String>,
    pub agents: Vec<Proc>,
    /// The dev CA (`DATA_DIR/tls/ca.pem`); `None` for a `--plaintext` server.
    pub ca_file: Option<PathBuf>,
    /// The operator credential (`DATA_DIR/admin-token`).
    pub admin_token_file: PathBuf,
    /// Agent tokens `kiln apply` printed, by hardware name.
    pub tokens: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

/// Starts `kiln-server` on `listen` with its data in `dir/data`, logging to
/// `dir/server.log` (appended: a restarted server keeps the earlier log);
/// returns it and its URL (`https://` unless `args` has `--plaintext`).
fn spawn_server(dir: &std::path::Path, listen: &str, args: &[String]) -> Result<(Proc, String)> {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("server.log"))?;
    let addr_file = dir.join("server.addr");
    let _ = std::fs::remove_file(&addr_file);
    let child = Command::new(binary("kiln-server"))
        .args(["--listen", listen, "--data-dir"])
        .arg(dir.join("data"))
        .arg("--addr-file")
        .arg(&addr_file)
        .args(args)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("start kiln-server")?;
    let mut server = Proc { child, name: "kiln-server".into() };
    // The server picks its own port (no race with other tests) and tells
    // us which.
    let started = wait_until(Duration::from_secs(20), || addr_file.exists() || server.exited());
    if started.is_err() || server.exited() {
        let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
        bail!("kiln-server did not start listening:\n{log}");
    }
    let scheme = if args.iter().any(|a| a == "--plaintext") { "http" } else { "https" };
    Ok((server, format!("{scheme}://{}", std::fs::read_to_string(&addr_file)?.trim())))
}

impl Cluster {
    pub fn start() -> Result<Self> {
        Self::start_with(&[])
    }

    /// A server with extra command line arguments. Without `--plaintext` or
    /// `--tls-cert` among them, it gets `--dev-tls`.
    pub fn start_with(server_args: &[&str]) -> Result<Self> {
        let env = TestEnv::from_env();
        let dir = tempfile::tempdir()?;
        let mut args: Vec<String> = server_args.iter().map(|s| s.to_string()).collect();
        if !args.iter().any(|a| a == "--plaintext" || a == "--tls-cert") {
            args.push("--dev-tls".into());
        }
        let (server, server_url) = spawn_server(dir.path(), "127.0.0.1:0", &args)?;
        let data = dir.path().join("data");
        let tls = !args.iter().any(|a| a == "--plaintext");
        Ok(Self {
            env,
            server_url,
            server,
            agents: Vec::new(),
            ca_file: tls.then(|| data.join("tls").join("ca.pem")),
            admin_token_file: data.join("admin-token"),
            tokens: Default::default(),
            server_args: args,
            dir,
        })
    }

    /// Kills the server with SIGKILL (no shutdown of any kind) and starts it
    /// again on the same port and data directory, with its arguments and
    /// `extra` (e.g. a `--hook-cmdline` that needs a token known only after
    /// an apply).
    pub fn restart_server(&mut self, extra: &[&str]) -> Result<()> {
        self.server.kill();
        let listen = self.server_addr();
        let mut args = self.server_args.clone();
        args.extend(extra.iter().map(|s| s.to_string()));
        let (server, url) = spawn_server(self.dir.path(), &listen, &args)?;
        self.server = server;
        self.server_url = url;
        Ok(())
    }

    /// The server's `host:port`.
    pub fn server_addr(&self) -> String {
        self.server_url.split("://").nth(1).unwrap_or(&self.server_url).to_string()
    }

    /// The token of the hardware whose agent id is `agent_id`, if an apply
    /// of this cluster created it.
    pub fn token_for_agent(&self, agent_id: &str) -> Option<String> {
        let out = self.kiln(&["get", "hardware", "-o", "json"]);
        let list: Value = serde_json::from_slice(&out.stdout).ok()?;
        let tokens = self.tokens.lock().unwrap();
        list.as_array()?.iter().find_map(|h| {
            let id = h["agent_id"].as_str()?;
            if id.eq_ignore_ascii_case(agent_id) { tokens.get(h["id"].as_str()?).cloned() } else { None }
        })
    }

    /// Where agent `agent_id` reads its token: written as soon as the
    /// token is known (an agent may start before its hardware is applied;
    /// it reads the file again for every call).
    pub fn token_file(&self, agent_id: &str) -> PathBuf {
        self.dir.path().join(format!("token-{}", agent_id.replace(':', "-").to_ascii_lowercase()))
    }

    fn write_known_tokens(&self) {
        let Ok(entries) = std::fs::read_dir(self.dir.path()) else { return };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(agent) = name.strip_prefix("token-").filter(|_| e.metadata().is_ok_and(|m| m.len() == 0))
                && let Some(token) = self.token_for_agent(&agent.replace('-', ":"))
            {
                let _ = std::fs::write(e.path(), token);
            }
        }
    }

    /// Starts an agent with `agent_id`; `extra` is appended to its config
    /// file (YAML), e.g. registry credentials.
    pub fn start_agent(&mut self, agent_id: &str, extra: &str) -> Result<u32> {
        self.start_agent_at(&self.server_url.clone(), agent_id, extra)
    }

    /// Starts an agent that talks to `server_url` (e.g. a load balancer in
    /// front of several servers) instead of this cluster's server.
    pub fn start_agent_at(&mut self, server_url: &str, agent_id: &str, extra: &str) -> Result<u32> {
        // The test engine has no bridge network: host networking unless the
        // test says otherwise.
        let network = if extra.contains("host_network:") { "" } else { "host_network: true\n" };
        // Each agent its own state directory, unless the test gives one (an
        // agent restarting on the same machine keeps its directory).
        let state_dir = if extra.contains("state_dir:") {
            String::new()
        } else {
            format!("state_dir: {:?}\n", self.agent_state_dir(self.agents.len()).display())
        };
        let token_file = self.token_file(agent_id);
        let token = self.token_for_agent(agent_id).unwrap_or_default();
        if token.is_empty() {
            // Not known yet: created empty, filled in by the apply that
            // registers the hardware.
            if !token_file.exists() {
                std::fs::write(&token_file, "")?;
            }
        } else {
            std::fs::write(&token_file, &token)?;
        }
        let tls = match &self.ca_file {
            Some(ca) if !extra.contains("ca_file:") => format!("ca_file: {:?}\n", ca.display()),
            _ => String::new(),
        };
        let auth =
            if extra.contains("token") { String::new() } else { format!("token_file: {:?}\n", token_file.display()) };
        let docker_host = if extra.contains("docker_host:") {
            String::new()
        } else {
            format!("docker_host: {}\n", self.env.docker_host)
        };
        let config = format!(
            "server: {server_url}\nagent_id: {agent_id:?}\n{docker_host}{state_dir}stop_grace_seconds: 1\n{network}{tls}{auth}{extra}",
        );
        let path = self.dir.path().join(format!("agent-{}.yaml", self.agents.len()));
        write_private(&path, &config)?;
        let log = std::fs::File::create(self.dir.path().join(format!("agent-{}.log", self.agents.len())))?;
        let child = Command::new(binary("kiln-agent"))
            .arg("--config")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("start kiln-agent")?;
        let pid = child.id();
        self.agents.push(Proc { child, name: format!("kiln-agent {agent_id}") });
        Ok(pid)
    }

    /// The host directory where agent number `n` keeps `/workflow`,
    /// `/tmp_disk` and `/kiln` directories.
    pub fn agent_state_dir(&self, n: usize) -> PathBuf {
        self.dir.path().join(format!("agent-{n}-state"))
    }

    /// Runs the `kiln` CLI against this server.
    pub fn kiln(&self, args: &[&str]) -> Output {
        self.kiln_with_stdin(args, None)
    }

    pub fn kiln_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let out = self.kiln_as(args, stdin, Some(&self.admin_token_file));
        // Remember the agent tokens an apply printed (shown once).
        let text = stdout(&out);
        let mut learned = false;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("agent token for hardware/") {
                let name = rest.split(' ').next().unwrap_or_default().to_string();
                let token = rest.rsplit(' ').next().unwrap_or_default().to_string();
                self.tokens.lock().unwrap().insert(name, token);
                learned = true;
            }
        }
        if learned {
            self.write_known_tokens();
        }
        out
    }

    /// A `kiln` command for this server (URL, CA, operator credential), for
    /// tests that drive the process themselves (e.g. `kiln logs -f`).
    pub fn kiln_command(&self) -> Command {
        self.kiln_command_as(Some(&self.admin_token_file))
    }

    fn kiln_command_as(&self, token_file: Option<&std::path::Path>) -> Command {
        let mut cmd = Command::new(binary("kiln"));
        cmd.arg("--server").arg(&self.server_url);
        if let Some(ca) = &self.ca_file {
            cmd.arg("--ca").arg(ca);
        }
        cmd.env_remove("KILN_TOKEN").env_remove("KILN_TOKEN_FILE");
        if let Some(f) = token_file {
            cmd.env("KILN_TOKEN_FILE", f);
        }
        cmd
    }

    /// The CLI with a chosen operator credential file (`None`: none).
    pub fn kiln_as(&self, args: &[&str], stdin: Option<&str>, token_file: Option<&std::path::Path>) -> Output {
        let mut cmd = self.kiln_command_as(token_file);
        cmd.args(args);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("run kiln");
        if let Some(input) = stdin {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        }
        drop(child.stdin.take());
        child.wait_with_output().expect("kiln output")
    }

    /// `kiln apply -f -` with `yaml`, asserting success.
    pub fn apply(&self, yaml: &str) -> String {
        let out = self.kiln_with_stdin(&["apply", "-f", "-"], Some(yaml));
        assert!(out.status.success(), "kiln apply failed: {}\n{}", stderr(&out), self.logs());
        stdout(&out)
    }

    /// `kiln get workflows ID -o json`.
    pub fn workflow(&self, id: &str) -> Value {
        let out = self.kiln(&["get", "workflows", id, "-o", "json"]);
        assert!(out.status.success(), "kiln get failed: {}", stderr(&out));
        serde_json::from_slice(&out.stdout).expect("workflow JSON")
    }

    /// Waits until the workflow reaches a terminal state, and returns it.
    pub fn wait_finished(&self, id: &str, limit: Duration) -> Value {
        let start = Instant::now();
        loop {
            let wf = self.workflow(id);
            let state = wf["state"].as_str().unwrap_or_default().to_string();
            if matches!(state.as_str(), "SUCCESS" | "FAILED" | "TIMEOUT") {
                return wf;
            }
            assert!(start.elapsed() < limit, "workflow {id} still {state} after {limit:?}\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Server and agent logs, for assertion messages.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        if let Ok(entries) = std::fs::read_dir(self.dir.path()) {
            let mut paths: Vec<_> = entries.flatten().map(|e| e.path()).collect();
            paths.sort();
            for p in paths.iter().filter(|p| p.extension().is_some_and(|e| e == "log")) {
                let text = std::fs::read_to_string(p).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                all.push_str(&format!("--- {} (last lines)\n", p.display()));
                for l in tail.iter().rev() {
                    all.push_str(l);
                    all.push('\n');
                }
            }
        }
        all
    }
}

/// Writes a file only its owner can read (agent configs hold secrets).
pub fn write_private(path: &std::path::Path, text: &str) -> Result<()> {
    Ok(kiln_proto::secret_file::write(path, text.as_bytes())?)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Whether `text` has `line` as one of its lines, exactly (a substring
/// anywhere could match a longer line, or another line's text).
pub fn has_line(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

/// Polls `f` until it holds; an error once `limit` has passed.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    while !f() {
        if start.elapsed() > limit {
            bail!("condition not met within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// A small xorshift generator for timings that should vary from run to run
/// (kill points, connection cuts, heartbeat phases); a run's printed seed
/// replays it.
pub struct Rng(u64);

impl Rng {
    /// Xorshift never leaves zero, so the seed is made odd.
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    /// Seeded from the clock; print [`Rng::seed`] to replay a failure.
    pub fn from_clock() -> Self {
        Self::new(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64)
    }

    /// The current state: a seed that continues this sequence.
    pub fn seed(&self) -> u64 {
        self.0
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform enough in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next_u64() % (high - low + 1)
    }
}

/// A unique suffix so tests sharing one Docker engine never collide.
pub fn unique(prefix: &str) -> String {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{prefix}-{:x}", n & 0xffff_ffff)
}

/// Hardware document for a fake machine whose agent id is `agent_id` (a MAC).
pub fn hardware_doc(name: &str, mac: &str) -> String {
    format!(
        "kind: Hardware\nname: {name}\nmacs: [\"{mac}\"]\ndisks: [/dev/vda]\nmetadata: {{instance: {{hostname: {name}}}}}\n"
    )
}

/// A random locally administered MAC, used as a test agent id.
pub fn random_mac() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    // Calls within one clock tick differ by the counter, processes by the
    // hasher's random keys and the clock.
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
    h.write_u64(CALLS.fetch_add(1, Ordering::Relaxed));
    let b = h.finish().to_le_bytes();
    format!("02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4])
}

/// One machine with an agent; workflows of one task built from raw action YAML.
pub struct Machine {
    pub cluster: Cluster,
    pub mac: String,
    pub hw: String,
}

impl Machine {
    pub fn start(agent_extra: &str) -> Self {
        Self::start_with(&[], agent_extra)
    }

    pub fn start_with(server_args: &[&str], agent_extra: &str) -> Self {
        let mut cluster = Cluster::start_with(server_args).expect("server");
        let mac = random_mac();
        let hw = unique("hw");
        cluster.apply(&hardware_doc(&hw, &mac));
        cluster.start_agent(&mac, agent_extra).expect("agent");
        Self { cluster, mac, hw }
    }

    /// `actions` is the YAML of the action list, indented by 8 spaces, with
    /// IMAGE standing for the busybox image. Returns the workflow id.
    pub fn run(&self, actions: &str) -> String {
        let out = self.try_run(actions);
        assert!(out.status.success(), "kiln apply failed: {}", stderr(&out));
        stdout(&out).lines().find_map(|l| l.strip_prefix("workflow/")?.split(' ').next().map(str::to_string)).unwrap()
    }

    pub fn try_run(&self, actions: &str) -> std::process::Output {
        let (tpl, wf) = (unique("tpl"), unique("wf"));
        let actions = actions.replace("IMAGE", &self.cluster.env.busybox());
        let doc = format!(
            "kind: Template\nname: {tpl}\ndata: |\n  version: \"0.1\"\n  name: {tpl}\n  tasks:\n    - name: t\n      worker: \"{{{{.device_1}}}}\"\n      actions:\n{actions}---\nkind: Workflow\nname: {wf}\ntemplate: {tpl}\nhardware: {}\nhardware_map: {{device_1: \"{}\"}}\n",
            self.hw, self.mac
        );
        self.cluster.kiln_with_stdin(&["apply", "-f", "-"], Some(&doc))
    }

    pub fn logs(&self, wf: &str) -> String {
        stdout(&self.cluster.kiln(&["logs", wf]))
    }
}

/// A loop device over a sparse file, detached when dropped. Actions see it
/// through the agent's `/dev`.
pub struct LoopDevice {
    pub path: PathBuf,
    backing: Option<tempfile::NamedTempFile>,
}

impl LoopDevice {
    pub fn new(size: u64) -> Result<Self> {
        let backing = tempfile::NamedTempFile::new()?;
        backing.as_file().set_len(size)?;
        let path = Self::attach(backing.path())?;
        Ok(Self { path, backing: Some(backing) })
    }

    /// A loop device over an existing file, which the caller keeps.
    pub fn over(file: &std::path::Path) -> Result<Self> {
        Ok(Self { path: Self::attach(file)?, backing: None })
    }

    /// A loop device over `size` bytes of `file` from `offset`: how a
    /// partition looks where the kernel parses no partition tables.
    pub fn over_range(file: &std::path::Path, offset: u64, size: u64) -> Result<Self> {
        let range = ["--offset".to_string(), offset.to_string(), "--sizelimit".to_string(), size.to_string()];
        Ok(Self { path: Self::attach_with(file, &range)?, backing: None })
    }

    fn attach(file: &std::path::Path) -> Result<PathBuf> {
        Self::attach_with(file, &[])
    }

    fn attach_with(file: &std::path::Path, extra: &[String]) -> Result<PathBuf> {
        let out = Command::new("losetup").args(["--find", "--show"]).args(extra).arg(file).output()?;
        if !out.status.success() {
            bail!("losetup: {}", stderr(&out));
        }
        Ok(PathBuf::from(stdout(&out).trim()))
    }

    pub fn backing_path(&self) -> &std::path::Path {
        self.backing.as_ref().expect("a loop device made by LoopDevice::new").path()
    }

    /// The device's bytes, read through the backing file.
    pub fn contents(&self) -> Vec<u8> {
        std::fs::read(self.backing_path()).expect("read loop backing file")
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.path).status();
    }
}
