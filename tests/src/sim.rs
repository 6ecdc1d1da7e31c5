//! Pieces of the benchmarks that drive a real (release) `kiln-server` with
//! simulated agents (`bench-load`, `bench-logs`): the server with its store,
//! the operator's admin client, hardware registered with its agent tokens,
//! one authenticated connection per simulated agent, the heartbeat loop, and
//! the process figures (CPU, RSS) the benchmarks print.
//!
//! A simulated agent speaks only the public protocol, as the real agent
//! does: its own HTTP/2 (TLS) connection, its agent id in `kiln-agent-id`
//! and its token in `authorization: Bearer`.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kiln_proto::connect::{ClientTls, endpoint};
use kiln_proto::v1::admin_service_client::AdminServiceClient;
use kiln_proto::v1::agent_service_client::AgentServiceClient;
use kiln_proto::v1::{AppliedObject, ApplyRequest, HeartbeatRequest};
use kiln_proto::{AGENT_ID_METADATA, AUTHORIZATION_METADATA};
use tonic::metadata::AsciiMetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::postgres::PgServer;
use crate::{Proc, Rng, wait_until};

/// Hardware documents per `Apply` when registering the simulated machines.
const HARDWARE_PER_APPLY: usize = 500;

/// The server's store.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    Sqlite,
    /// A private PostgreSQL ([`PgServer::start_durable`]: fsync on).
    Postgres,
}

impl std::fmt::Display for StoreKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if *self == Self::Sqlite { "sqlite" } else { "postgres" })
    }
}

/// Adds the operator credential to every admin call.
pub type AdminInterceptor =
    Box<dyn FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Send + Sync>;

pub type Admin = AdminServiceClient<InterceptedService<Channel, AdminInterceptor>>;

/// A `kiln-server` run as in production (TLS with the dev CA unless
/// plaintext, info logs to a file), with its store; killed when dropped.
pub struct BenchServer {
    pub server: Proc,
    pub url: String,
    pub tls: ClientTls,
    pub store: StoreKind,
    /// The private PostgreSQL of `--store postgres`.
    pub pg: Option<PgServer>,
    /// Data directory and server log.
    pub dir: tempfile::TempDir,
}

impl BenchServer {
    /// Starts `bin_dir/kiln-server` with a fresh data directory (named from
    /// `prefix`) and, for PostgreSQL, a fresh private database server.
    pub fn start(bin_dir: &Path, store: StoreKind, plaintext: bool, prefix: &str) -> Result<Self> {
        Self::start_with(bin_dir, store, plaintext, prefix, &[])
    }

    /// [`BenchServer::start`] with more server arguments (`extra`).
    pub fn start_with(
        bin_dir: &Path,
        store: StoreKind,
        plaintext: bool,
        prefix: &str,
        extra: &[String],
    ) -> Result<Self> {
        let server_bin = bin_dir.join("kiln-server");
        if !server_bin.exists() {
            bail!("{} not found: cargo build --release -p kiln-server, or give --bin-dir", server_bin.display());
        }
        let dir = tempfile::Builder::new().prefix(prefix).tempdir()?;
        let pg = if store == StoreKind::Postgres { Some(PgServer::start_durable()?) } else { None };
        let database_url = pg.as_ref().map(|p| p.create_database()).transpose()?;

        let addr_file = dir.path().join("server.addr");
        let log = std::fs::File::create(dir.path().join("server.log"))?;
        let mut cmd = Command::new(&server_bin);
        // A port of the OS's choosing, unless the caller names one.
        if !extra.iter().any(|a| a == "--listen") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        cmd.arg("--data-dir").arg(dir.path().join("data")).arg("--addr-file").arg(&addr_file).arg(if plaintext {
            "--plaintext"
        } else {
            "--dev-tls"
        });
        if let Some(url) = &database_url {
            cmd.args(["--database-url", url]);
        }
        cmd.args(extra);
        let child = cmd.stdout(Stdio::null()).stderr(log).spawn().context("start kiln-server")?;
        let mut server = Proc { child, name: "kiln-server".into() };
        if wait_until(Duration::from_secs(30), || addr_file.exists() || server.exited()).is_err() || server.exited() {
            bail!("kiln-server did not start:\n{}", std::fs::read_to_string(dir.path().join("server.log"))?);
        }
        let addr = std::fs::read_to_string(&addr_file)?.trim().to_string();
        let url = format!("{}://{addr}", if plaintext { "http" } else { "https" });
        let tls = ClientTls {
            ca_pem: (!plaintext).then(|| std::fs::read(dir.path().join("data/tls/ca.pem"))).transpose()?,
            identity: None,
        };
        Ok(Self { server, url, tls, store, pg, dir })
    }

    pub fn pid(&self) -> u32 {
        self.server.pid()
    }

    /// The admin client, with the operator credential the server wrote.
    pub async fn admin(&self) -> Result<Admin> {
        let admin_token = std::fs::read_to_string(self.dir.path().join("data/admin-token"))?.trim().to_string();
        let bearer: AsciiMetadataValue = format!("Bearer {admin_token}").parse()?;
        let channel = endpoint(&self.url, &self.tls).map_err(anyhow::Error::msg)?.connect().await?;
        let interceptor: AdminInterceptor = Box::new(move |mut req: tonic::Request<()>| {
            req.metadata_mut().insert(AUTHORIZATION_METADATA, bearer.clone());
            Ok(req)
        });
        Ok(AdminServiceClient::with_interceptor(channel, interceptor).max_decoding_message_size(64 << 20))
    }

    /// Resident memory of the server now and at its peak (VmHWM), in KiB.
    pub fn rss_kib(&self) -> (u64, u64) {
        (status_kib(self.pid(), "VmRSS:"), status_kib(self.pid(), "VmHWM:"))
    }

    /// Kills the server, then stops the database.
    pub fn stop(mut self) {
        self.server.kill();
        drop(self.pg.take());
    }
}

/// CPU used over a measured period, as shares of one core.
pub struct CpuShares {
    pub server: f64,
    /// The PostgreSQL processes (0 for SQLite).
    pub postgres: f64,
    /// This process: the simulated agents.
    pub bench: f64,
}

/// Measures [`CpuShares`] from [`CpuMeter::start`] to [`CpuMeter::finish`].
pub struct CpuMeter {
    server_pid: u32,
    /// PostgreSQL's processes alive at the start.
    pg_pids: Vec<u32>,
    start: [f64; 3],
    t0: Instant,
}

impl CpuMeter {
    pub fn start(server: &BenchServer) -> Self {
        let pg_pids = server.pg.as_ref().map(|p| postgres_pids(p.port)).unwrap_or_default();
        let mut meter = Self { server_pid: server.pid(), pg_pids, start: [0.0; 3], t0: Instant::now() };
        meter.start = meter.sample();
        meter
    }

    fn sample(&self) -> [f64; 3] {
        [
            cpu_seconds(self.server_pid),
            self.pg_pids.iter().map(|&p| cpu_seconds(p)).sum(),
            cpu_seconds(std::process::id()),
        ]
    }

    pub fn finish(&self) -> CpuShares {
        let elapsed = self.t0.elapsed().as_secs_f64();
        let now = self.sample();
        let share = |i: usize| (now[i] - self.start[i]) / elapsed;
        CpuShares { server: share(0), postgres: share(1), bench: share(2) }
    }
}

/// `Apply` as the operator, with a generous deadline (thousands of hardware
/// documents at once).
pub async fn apply(admin: &mut Admin, yaml: String, source: &str) -> Result<Vec<AppliedObject>> {
    let mut req = tonic::Request::new(ApplyRequest { yaml, source: source.into() });
    req.set_timeout(Duration::from_secs(120));
    Ok(admin.apply(req).await.context("apply")?.into_inner().objects)
}

/// The agent id (a MAC) of simulated machine `i`.
pub fn mac(i: usize) -> String {
    format!("02:00:00:{:02x}:{:02x}:{:02x}", (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff)
}

/// A simulated machine: registered hardware `{prefix}-{index}` and the
/// credentials its agent sends.
pub struct SimAgent {
    pub index: usize,
    pub auth: AgentAuth,
}

/// Registers `count` hardware (`{prefix}-0`, ...; agent ids from [`mac`]),
/// keeping the agent token each apply prints once. `source` names the
/// applies in the server's history.
pub async fn register_hardware(admin: &mut Admin, count: usize, prefix: &str, source: &str) -> Result<Vec<SimAgent>> {
    let mut agents = Vec::with_capacity(count);
    for chunk in (0..count).collect::<Vec<_>>().chunks(HARDWARE_PER_APPLY) {
        let yaml: Vec<String> = chunk.iter().map(|&i| crate::hardware_doc(&format!("{prefix}-{i}"), &mac(i))).collect();
        let tokens: HashMap<String, String> = apply(admin, yaml.join("---\n"), source)
            .await?
            .into_iter()
            .filter(|o| o.kind == "Hardware" && !o.agent_token.is_empty())
            .map(|o| (o.name, o.agent_token))
            .collect();
        for &i in chunk {
            let token = tokens.get(&format!("{prefix}-{i}")).with_context(|| format!("no token for {prefix}-{i}"))?;
            let mut auth: AsciiMetadataValue = format!("Bearer {token}").parse()?;
            auth.set_sensitive(true);
            agents.push(SimAgent { index: i, auth: AgentAuth { id: mac(i).parse()?, auth } });
        }
    }
    Ok(agents)
}

/// Adds an agent's id and token to every call, as the agent does.
#[derive(Clone)]
pub struct AgentAuth {
    id: AsciiMetadataValue,
    auth: AsciiMetadataValue,
}

impl AgentAuth {
    /// The metadata an agent with id `agent_id` and token `token` sends.
    pub fn new(agent_id: &str, token: &str) -> Result<Self> {
        let mut auth: AsciiMetadataValue = format!("Bearer {token}").parse()?;
        auth.set_sensitive(true);
        Ok(Self { id: agent_id.parse()?, auth })
    }
}

impl tonic::service::Interceptor for AgentAuth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert(AGENT_ID_METADATA, self.id.clone());
        req.metadata_mut().insert(AUTHORIZATION_METADATA, self.auth.clone());
        Ok(req)
    }
}

pub type AgentClient = AgentServiceClient<InterceptedService<Channel, AgentAuth>>;

/// The agent's own connection (HTTP/2 keep-alive like the agent's),
/// retried until it is up: thousands of agents connecting at once may meet
/// a full accept queue.
pub async fn connect_agent(url: &str, tls: &ClientTls, agent: &SimAgent) -> Result<AgentClient> {
    let channel = loop {
        match endpoint(url, tls)
            .map_err(anyhow::Error::msg)?
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_while_idle(true)
            .connect()
            .await
        {
            Ok(c) => break c,
            Err(e) => {
                eprintln!("connect agent {}: {e}; retrying", agent.index);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    Ok(AgentServiceClient::with_interceptor(channel, agent.auth.clone()))
}

/// What the heartbeat loops of a fleet count.
#[derive(Default)]
pub struct HeartbeatCounters {
    /// Agents whose first heartbeat succeeded.
    pub connected: AtomicU64,
    /// Heartbeats after the first.
    pub heartbeats: AtomicU64,
    pub errors: AtomicU64,
}

/// Calls `Heartbeat` at the interval the server gives, naming the attempt
/// in `held`, until `stop` changes. Unlike the real agent it heartbeats when
/// idle too (no attempts: the protocol allows it), so every connected agent
/// costs the server a call per interval.
pub async fn heartbeat_loop(
    index: usize,
    mut client: AgentClient,
    held: Arc<Mutex<Option<String>>>,
    counters: Arc<HeartbeatCounters>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15 ^ (index as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let mut interval = Duration::from_secs(10);
    let mut first = true;
    loop {
        let attempt_ids: Vec<String> = held.lock().unwrap().iter().cloned().collect();
        let mut req = tonic::Request::new(HeartbeatRequest { attempt_ids });
        req.set_timeout(interval);
        match client.heartbeat(req).await {
            Ok(answer) => {
                let answer = answer.into_inner();
                if answer.renew_interval_ms > 0 {
                    interval = Duration::from_millis(answer.renew_interval_ms.into()).max(Duration::from_millis(100));
                }
                if first {
                    counters.connected.fetch_add(1, Ordering::Relaxed);
                } else {
                    counters.heartbeats.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                if first {
                    eprintln!("agent {index}: first heartbeat failed: {e}");
                }
            }
        }
        // The first pause is random, so the fleet's heartbeats spread over
        // the interval instead of arriving in the waves agents connected in.
        let pause = if first { interval.mul_f64((rng.next_u64() % 1000) as f64 / 1000.0) } else { interval };
        first = false;
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// Raises the soft limit of open files to the hard one (an agent is a
/// connection); returns the new limit.
pub fn raise_nofile() -> u64 {
    // SAFETY: plain libc calls on a local struct.
    unsafe {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            return lim.rlim_cur;
        }
    }
    0
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    // Fields after the command (which may hold spaces) end with ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 =
        f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0) + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks as f64 / hz
}

/// A `kB` field of `/proc/PID/status` (`VmRSS:`, `VmHWM:`).
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap_or(0)
}

/// The private PostgreSQL's processes: the postmaster listening on `port`
/// and its children.
fn postgres_pids(port: u16) -> Vec<u32> {
    let mut all: Vec<(u32, u32, String)> = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let ppid = stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().nth(1)?.parse().ok()).unwrap_or(0);
        let cmdline = std::fs::read_to_string(e.path().join("cmdline")).unwrap_or_default().replace('\0', " ");
        all.push((pid, ppid, cmdline));
    }
    let needle = format!("-p {port} ");
    let Some(master) = all.iter().find(|(_, _, c)| c.contains("postgres") && c.contains(&needle)).map(|p| p.0) else {
        return Vec::new();
    };
    all.iter().filter(|(pid, ppid, _)| *pid == master || *ppid == master).map(|p| p.0).collect()
}

/// Percentile `p` (0..=1) of sorted microseconds, in milliseconds.
pub fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// Waits (without blocking the runtime) until `f` holds.
pub async fn wait_for(mut f: impl FnMut() -> bool, limit: Duration) -> Result<()> {
    let start = Instant::now();
    while !f() {
        if start.elapsed() > limit {
            bail!("condition not met within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Browsers on the web console, simulated by `curl`: each logs in (its own
/// session) and holds one server-sent event stream open, writing what
/// arrives to a file. Killed when dropped.
pub struct ConsoleStreams {
    children: Vec<std::process::Child>,
    dir: tempfile::TempDir,
}

/// Logs in to the console at `base` (`https://ADDR`) with `token`; returns
/// the `Cookie` header value of the new session.
pub fn console_login(base: &str, token: &str) -> Result<String> {
    let out = Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "-D", "-", "-X", "POST", "-H"])
        .arg(format!("Origin: {base}"))
        .arg("--data-urlencode")
        .arg(format!("token={token}"))
        .arg(format!("{base}/login"))
        .output()
        .context("curl (login)")?;
    let head = String::from_utf8_lossy(&out.stdout);
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: ").or_else(|| l.strip_prefix("Set-Cookie: ")))
        .and_then(|v| v.split(';').next())
        .ok_or_else(|| anyhow::anyhow!("console login failed: {head}"))?;
    Ok(cookie.to_string())
}

impl ConsoleStreams {
    /// `n` streams of `path`, each with its own session.
    pub fn open(base: &str, token: &str, path: &str, n: usize) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("kiln-console-streams").tempdir()?;
        let mut children = Vec::new();
        for i in 0..n {
            let cookie = console_login(base, token)?;
            let child = Command::new("curl")
                .args(["-sk", "-N", "-H"])
                .arg(format!("Cookie: {cookie}"))
                .arg("-o")
                .arg(dir.path().join(format!("stream-{i}")))
                .arg(format!("{base}{path}"))
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("curl (stream)")?;
            children.push(child);
        }
        Ok(Self { children, dir })
    }

    /// Messages named `event` received so far, over all streams.
    pub fn count(&self, event: &str) -> u64 {
        let marker = format!("event: {event}\n");
        (0..self.children.len())
            .map(|i| {
                let text = std::fs::read_to_string(self.dir.path().join(format!("stream-{i}"))).unwrap_or_default();
                text.matches(&marker).count() as u64
            })
            .sum()
    }

    /// Data bytes received so far, over all streams.
    pub fn bytes(&self) -> u64 {
        (0..self.children.len())
            .map(|i| std::fs::metadata(self.dir.path().join(format!("stream-{i}"))).map_or(0, |m| m.len()))
            .sum()
    }

    /// Streams whose `curl` still runs (the server kept them open).
    pub fn open_count(&mut self) -> usize {
        self.children.iter_mut().map(|c| c.try_wait()).filter(|r| matches!(r, Ok(None))).count()
    }
}

impl Drop for ConsoleStreams {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
