//! Log-ingest benchmark (issue 16): one kiln-server, N simulated agents,
//! each running one long no-op action and pushing its log lines as fast as
//! the server acknowledges them. Prints figures; asserts nothing.
//!
//! Setup: N hardware, one workflow each (`--actions` no-op actions, the
//! first for the machine's agent; the others stay pending and only make the
//! workflow the size of a real one). Every simulated agent (its own HTTP/2
//! connection, agent id and token, see `kiln_tests::sim`) gets its attempt
//! through `NextAction`, reports PULLING and RUNNING, and keeps the lease
//! with `Heartbeat`, naming the attempt.
//!
//! Then each agent calls `PushLogs` in a closed loop: a batch of `--lines`
//! lines of about `--line-bytes` bytes (mostly stdout, every tenth stderr),
//! `seq` numbered from 1 without gaps, the next batch as soon as the last is
//! acknowledged. A batch counts when its acknowledgement arrives within the
//! measured period and says the server stored it (`stored_through` reaches
//! the batch's last `seq`); a failed or short batch is sent again, as the
//! agent does, and counted as failed. Latency is one `PushLogs` call, sent
//! to acknowledged, measured here.
//!
//! ```text
//! cargo build --release -p kiln-server -p kiln-tests --bin kiln-server --bin bench-logs
//! target/release/bench-logs [--agents 50] [--seconds 20] [--warmup 5]
//!     [--lines 100] [--line-bytes 100] [--actions 5]
//!     [--store sqlite|postgres] [--plaintext] [--bin-dir DIR]
//! ```
//! PostgreSQL comes from `kiln_tests::postgres::PgServer` (a private server,
//! fsync on). The benchmark and the server share the machine's cores: the
//! output gives both their CPU and the load average, to judge the noise, and
//! the server's (and PostgreSQL's) CPU time per 1000 lines, which varies
//! less than lines/s when other work competes for the cores.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use kiln_proto::v1::{ActionState, LogBatch, LogLine, LogStream, NextActionRequest, StateReport};
use kiln_tests::sim::{
    AgentClient, BenchServer, CpuMeter, HeartbeatCounters, SimAgent, StoreKind, apply, connect_agent, heartbeat_loop,
    mac, percentile, raise_nofile, register_hardware, wait_for,
};

/// Never pulled: the simulated agents run nothing.
const IMAGE: &str = "127.0.0.1:5000/noop:v1";
/// Names the benchmark's applies in the server's history.
const SOURCE: &str = "bench-logs";
const LONG_POLL: Duration = Duration::from_secs(30);
/// Deadline of one `PushLogs` call.
const PUSH_TIMEOUT: Duration = Duration::from_secs(30);
/// Failed pushes printed in full; the rest are only counted.
const PRINTED_FAILURES: u64 = 10;

/// Log-ingest benchmark: one kiln-server, N simulated agents pushing log
/// batches of a running attempt as fast as they are acknowledged; prints
/// lines/s, batches/s, PushLogs latency, server CPU and RSS.
#[derive(clap::Parser)]
struct Args {
    /// Simulated agents (each its own connection, agent id, token, attempt).
    #[arg(long, default_value_t = 50)]
    agents: usize,
    /// Length of the measured period, in seconds.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Seconds of pushing before measuring.
    #[arg(long, default_value_t = 5)]
    warmup: u64,
    /// Lines per `PushLogs` batch.
    #[arg(long, default_value_t = 100)]
    lines: usize,
    /// Bytes per line (text, without newline).
    #[arg(long, default_value_t = 100)]
    line_bytes: usize,
    /// Actions per workflow (only the first runs; the size of the workflow
    /// is what a per-batch workflow load would pay for).
    #[arg(long, default_value_t = 5)]
    actions: usize,
    /// The server's store.
    #[arg(long, value_enum, default_value_t = StoreKind::Sqlite)]
    store: StoreKind,
    /// Run the server with --plaintext instead of --dev-tls.
    #[arg(long)]
    plaintext: bool,
    /// Where kiln-server is (default: beside this binary).
    #[arg(long, env = "KILN_BIN_DIR", default_value_os_t = kiln_tests::bin_dir())]
    bin_dir: PathBuf,
}

/// What the agents and the main task share.
#[derive(Default)]
struct Shared {
    /// Pushing starts when every agent holds a RUNNING attempt.
    pushing: AtomicBool,
    measuring: AtomicBool,
    stopping: AtomicBool,
    heartbeat: Arc<HeartbeatCounters>,
    /// Agents whose attempt is RUNNING.
    running: AtomicU64,
    /// Acknowledged while measuring.
    lines: AtomicU64,
    batches: AtomicU64,
    bytes: AtomicU64,
    /// All the run long: calls that failed or stored less than sent.
    failed: AtomicU64,
    /// Microseconds per acknowledged call, while measuring.
    latency: Mutex<Vec<u64>>,
}

impl Shared {
    fn failure(&self, what: std::fmt::Arguments<'_>) {
        let n = self.failed.fetch_add(1, Ordering::Relaxed);
        if n < PRINTED_FAILURES && !self.stopping.load(Ordering::Relaxed) {
            eprintln!("{what}");
        }
    }
}

fn template(actions: usize) -> String {
    let mut t = String::from(
        "kind: Template\nname: logs-noop\ndata: |\n  version: \"0.1\"\n  name: logs-noop\n  tasks:\n    - name: t\n      worker: \"{{.device_1}}\"\n      actions:\n",
    );
    for i in 0..actions {
        t.push_str(&format!(
            "        - name: noop-{i}\n          image: {IMAGE}\n          command: [\"true\"]\n          timeout: 3600\n"
        ));
    }
    t
}

fn workflows(agents: usize) -> String {
    (0..agents)
        .map(|i| {
            format!(
                "kind: Workflow\nname: logs-{i}\ntemplate: logs-noop\nhardware: logs-{i}\nhardware_map: {{device_1: \"{}\"}}\n",
                mac(i)
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// Text of line `seq`: what an image-writing action prints, padded or cut
/// to `bytes` (ASCII, so any cut is a character boundary).
fn line_text(seq: u64, bytes: usize) -> String {
    let mut text = format!(
        "stream-image: wrote {} MiB of 8192 MiB to /dev/nvme0n1 (block {seq}, 212.4 MiB/s, sha256 so far ok) ",
        seq * 4
    );
    while text.len() < bytes {
        text.push_str("........");
    }
    text.truncate(bytes);
    text
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = <Args as clap::Parser>::parse();
    if args.actions == 0 || args.lines == 0 || args.agents == 0 {
        bail!("--agents, --lines and --actions must be at least 1");
    }
    let nofile = raise_nofile();
    if (nofile as usize) < args.agents + 256 {
        bail!("RLIMIT_NOFILE is {nofile}: too low for {} agents", args.agents);
    }
    let bench = BenchServer::start(&args.bin_dir, args.store, args.plaintext, "kiln-logs")?;
    let mut admin = bench.admin().await?;

    // Hardware with tokens, then one workflow per machine.
    let started = Instant::now();
    let agents = register_hardware(&mut admin, args.agents, "logs", SOURCE).await?;
    apply(&mut admin, template(args.actions), SOURCE).await?;
    apply(&mut admin, workflows(args.agents), SOURCE).await?;
    println!(
        "registered {} hardware and created {} workflows of {} actions in {:.1} s",
        args.agents,
        args.agents,
        args.actions,
        started.elapsed().as_secs_f64()
    );

    // Agents: each takes its attempt to RUNNING, then waits for the start.
    let shared = Arc::new(Shared::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    let started = Instant::now();
    for agent in agents {
        let client = connect_agent(&bench.url, &bench.tls, &agent).await?;
        let held = Arc::new(Mutex::new(None::<String>));
        tasks.push(tokio::spawn(heartbeat_loop(
            agent.index,
            client.clone(),
            held.clone(),
            shared.heartbeat.clone(),
            stop_rx.clone(),
        )));
        let (shared, lines, line_bytes) = (shared.clone(), args.lines, args.line_bytes);
        tasks.push(tokio::spawn(async move {
            if let Err(e) = agent_loop(&agent, client, held, &shared, lines, line_bytes).await {
                eprintln!("agent {}: {e:#}", agent.index);
            }
        }));
    }
    let running = || shared.running.load(Ordering::Relaxed) as usize;
    wait_for(|| running() >= args.agents, Duration::from_secs(120))
        .await
        .with_context(|| format!("{} of {} attempts RUNNING", running(), args.agents))?;
    println!("{} agents connected, attempts RUNNING in {:.1} s", args.agents, started.elapsed().as_secs_f64());

    shared.pushing.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;

    let load_before = loadavg();
    let failed_before = shared.failed.load(Ordering::Relaxed);
    let cpu = CpuMeter::start(&bench);
    let t0 = Instant::now();
    shared.measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    shared.measuring.store(false, Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = cpu.finish();
    let (rss, hwm) = bench.rss_kib();
    let load_after = loadavg();
    let failed = shared.failed.load(Ordering::Relaxed) - failed_before;

    // Stop everything we started.
    shared.stopping.store(true, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    for t in &tasks {
        t.abort();
    }
    bench.stop();

    let mut latency = std::mem::take(&mut *shared.latency.lock().unwrap());
    latency.sort_unstable();
    let lines = shared.lines.load(Ordering::Relaxed);
    let batches = shared.batches.load(Ordering::Relaxed);
    let bytes = shared.bytes.load(Ordering::Relaxed);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!();
    println!(
        "log-ingest benchmark: store {}, {} agents (one HTTP/2 {} connection each), batches of {} lines of {} bytes, \
         workflows of {} actions, {} s measured after {} s warm-up, {cores} cores",
        args.store,
        args.agents,
        if args.plaintext { "plaintext" } else { "TLS" },
        args.lines,
        args.line_bytes,
        args.actions,
        args.seconds,
        args.warmup
    );
    println!("  agents with a RUNNING attempt: {}", running());
    println!("  lines ingested:              {:.0} /s ({lines} in {elapsed:.1} s)", lines as f64 / elapsed);
    println!("  batches ingested:            {:.0} /s", batches as f64 / elapsed);
    println!("  text ingested:               {:.2} MiB/s", bytes as f64 / elapsed / (1 << 20) as f64);
    println!(
        "  PushLogs latency:            p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms  (n = {})",
        percentile(&latency, 0.5),
        percentile(&latency, 0.99),
        percentile(&latency, 1.0),
        latency.len()
    );
    println!("  failed pushes:               {failed}");
    println!(
        "  server RSS:                  {:.0} MiB now, peak (VmHWM) {:.0} MiB",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    // CPU time per line varies less than lines/s when other work takes
    // the cores (the server then waits for a core, not for its store).
    let per_1000_lines = |share: f64| share * elapsed * 1000.0 * 1000.0 / lines.max(1) as f64;
    println!(
        "  server CPU:                  {:.0} % of one core, {:.1} ms per 1000 lines",
        cpu.server * 100.0,
        per_1000_lines(cpu.server)
    );
    if args.store == StoreKind::Postgres {
        println!(
            "  PostgreSQL CPU:              {:.0} % of one core, {:.1} ms per 1000 lines",
            cpu.postgres * 100.0,
            per_1000_lines(cpu.postgres)
        );
    }
    println!("  bench (simulated agents) CPU: {:.0} % of one core", cpu.bench * 100.0);
    println!("  load average (1 min):        {load_before} before, {load_after} after");
    println!(
        "RESULT | {} | {:.0} lines/s | {:.0} batches/s | p50 {:.1} ms | p99 {:.1} ms | server {:.0} % | \
         server {:.1} ms/1000 lines | db {:.1} ms/1000 lines | RSS {:.0} MiB | load {load_after} |",
        args.store,
        lines as f64 / elapsed,
        batches as f64 / elapsed,
        percentile(&latency, 0.5),
        percentile(&latency, 0.99),
        cpu.server * 100.0,
        per_1000_lines(cpu.server),
        per_1000_lines(cpu.postgres),
        rss as f64 / 1024.0
    );
    Ok(())
}

/// The 1-minute load average, as `/proc/loadavg` gives it.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split(' ').next().map(str::to_string))
        .unwrap_or_default()
}

/// One simulated agent: takes its attempt to RUNNING, then pushes batches
/// until the task is aborted.
async fn agent_loop(
    agent: &SimAgent,
    mut client: AgentClient,
    held: Arc<Mutex<Option<String>>>,
    shared: &Shared,
    lines: usize,
    line_bytes: usize,
) -> Result<()> {
    let a = loop {
        let mut req = tonic::Request::new(NextActionRequest { wait_ms: LONG_POLL.as_millis() as u32 });
        req.set_timeout(LONG_POLL + Duration::from_secs(10));
        if let Some(a) = client.next_action(req).await.context("NextAction")?.into_inner().assignment {
            break a;
        }
    };
    *held.lock().unwrap() = Some(a.attempt_id.clone());
    for state in [ActionState::Pulling, ActionState::Running] {
        let mut report = StateReport {
            workflow_id: a.workflow_id.clone(),
            action_index: a.action_index,
            attempt_id: a.attempt_id.clone(),
            observed_at: Some(kiln_proto::time::to_proto(SystemTime::now())),
            ..Default::default()
        };
        report.set_state(state);
        client.report_state(report).await.with_context(|| format!("report {state:?}"))?;
    }
    shared.running.fetch_add(1, Ordering::Relaxed);
    while !shared.pushing.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut next_seq = 1u64;
    loop {
        let time = Some(kiln_proto::time::to_proto(SystemTime::now()));
        let batch_lines: Vec<LogLine> = (next_seq..next_seq + lines as u64)
            .map(|seq| {
                let stream = if seq % 10 == 0 { LogStream::Stderr } else { LogStream::Stdout };
                LogLine { seq, stream: stream.into(), time, text: line_text(seq, line_bytes) }
            })
            .collect();
        let last = next_seq + lines as u64 - 1;
        let text_bytes: usize = batch_lines.iter().map(|l| l.text.len()).sum();
        let batch = LogBatch {
            workflow_id: a.workflow_id.clone(),
            action_index: a.action_index,
            attempt_id: a.attempt_id.clone(),
            lines: batch_lines,
        };
        // Sent again until stored, as the agent does.
        loop {
            let mut req = tonic::Request::new(batch.clone());
            req.set_timeout(PUSH_TIMEOUT);
            let sent = Instant::now();
            match client.push_logs(req).await {
                Ok(ack) if ack.get_ref().stored_through >= last => {
                    let took = sent.elapsed();
                    if shared.measuring.load(Ordering::Relaxed) {
                        shared.lines.fetch_add(lines as u64, Ordering::Relaxed);
                        shared.batches.fetch_add(1, Ordering::Relaxed);
                        shared.bytes.fetch_add(text_bytes as u64, Ordering::Relaxed);
                        shared.latency.lock().unwrap().push(took.as_micros() as u64);
                    }
                    break;
                }
                Ok(ack) => shared.failure(format_args!(
                    "agent {}: PushLogs through {last} acknowledged only through {}",
                    agent.index,
                    ack.get_ref().stored_through
                )),
                Err(e) => shared.failure(format_args!("agent {}: PushLogs: {e}", agent.index)),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        next_seq = last + 1;
    }
}
