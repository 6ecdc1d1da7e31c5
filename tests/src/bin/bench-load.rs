//! Load benchmark (issue 6): one kiln-server, N simulated agents, workflows
//! of no-op actions flowing. Prints figures; asserts nothing.
//!
//! A simulated agent speaks the real protocol over its own HTTP/2 (TLS)
//! connection, with its own agent id and token (`kiln-agent-id`,
//! `authorization: Bearer`): it long-polls `NextAction` (30 s, like the
//! agent), reports PULLING -> RUNNING -> SUCCESS for the attempt it is
//! handed without running anything, and calls `Heartbeat` at the interval
//! the server gives, naming the attempt it holds. Unlike the real agent it
//! heartbeats when idle too (with no attempts: the protocol allows it), so
//! every connected agent costs the server a call per interval.
//!
//! Workflows (1-3 no-op actions, all for one agent) are created through the
//! admin API in batches, at a fixed rate (open loop), each for an agent that
//! has no workflow in flight.
//!
//! Dispatch latency, per assignment, measured in this process (same clock
//! as the server, same machine):
//! - later actions of a workflow: from the moment the agent got the ack of
//!   its SUCCESS report for the previous action to the moment it receives
//!   the `NextAction` response carrying the next assignment;
//! - first actions: from the moment the `Apply` call that created the
//!   workflow returned (creation committed and acknowledged) to the moment
//!   the agent receives the assignment (0 when the assignment arrived before
//!   the apply's answer: the server wakes the agent before it answers).
//!
//! ```text
//! cargo build --release -p kiln-server -p kiln-tests --bin kiln-server --bin bench-load
//! target/release/bench-load [--agents 10000] [--seconds 60] [--warmup 15]
//!     [--rate 2400] [--store sqlite|postgres] [--action-ms 0] [--plaintext]
//!     [--bin-dir DIR]
//! ```
//! `--rate` is workflows created per minute. PostgreSQL comes from
//! `kiln_tests::postgres::PgServer` (a private server, fsync on).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use kiln_proto::v1::{ActionState, NextActionRequest, StateReport};
use kiln_tests::Rng;
use kiln_tests::sim::{
    Admin, AgentClient, BenchServer, ConsoleStreams, CpuMeter, HeartbeatCounters, StoreKind, apply, connect_agent,
    heartbeat_loop, mac, percentile, raise_nofile, register_hardware, wait_for,
};

const IMAGE: &str = "127.0.0.1:5000/noop:v1";
/// Names the benchmark's applies in the server's history.
const SOURCE: &str = "bench-load";
const LONG_POLL: Duration = Duration::from_secs(30);
const BATCH_INTERVAL: Duration = Duration::from_millis(250);

/// Load benchmark: one kiln-server, N simulated agents, workflows of no-op
/// actions flowing; prints dispatch latency, throughput, RSS and CPU.
#[derive(clap::Parser)]
struct Args {
    /// Simulated agents (each its own connection, agent id and token).
    #[arg(long, default_value_t = 10_000)]
    agents: usize,
    /// Length of the measured period.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 15)]
    warmup: u64,
    /// Workflows created per minute (open loop).
    #[arg(long, default_value_t = 2400.0)]
    rate: f64,
    /// The server's store.
    #[arg(long, value_enum, default_value_t = StoreKind::Sqlite)]
    store: StoreKind,
    /// How long a simulated action "runs" between RUNNING and SUCCESS.
    #[arg(long, default_value_t = 0)]
    action_ms: u64,
    /// Run the server with --plaintext instead of --dev-tls.
    #[arg(long)]
    plaintext: bool,
    /// Where kiln-server is (default: beside this binary).
    #[arg(long, env = "KILN_BIN_DIR", default_value_os_t = kiln_tests::bin_dir())]
    bin_dir: PathBuf,
    /// Agents connecting at once.
    #[arg(long, default_value_t = 64)]
    connect_parallel: usize,
    /// Web console streams held open during the run (browsers on the
    /// workflows page, simulated by curl): the server then also serves
    /// `--console-listen`.
    #[arg(long, default_value_t = 0)]
    console_streams: usize,
    /// The stream they follow.
    #[arg(long, default_value = "/workflows/stream")]
    console_path: String,
}

/// What the agents and the workflow driver share.
#[derive(Default)]
struct Shared {
    measuring: AtomicBool,
    stopping: AtomicBool,
    heartbeat: Arc<HeartbeatCounters>,
    polls: AtomicU64,
    rpc_errors: AtomicU64,
    completed: AtomicU64,
    created: AtomicU64,
    /// Microseconds, for assignments received while measuring.
    first_latency: Mutex<Vec<u64>>,
    next_latency: Mutex<Vec<u64>>,
    /// First assignment of a workflow vs. its creation ack: whichever is
    /// seen first waits here for the other.
    creations: Mutex<HashMap<String, Seen>>,
}

enum Seen {
    Acked(Instant),
    Assigned,
}

impl Shared {
    fn record(&self, list: &Mutex<Vec<u64>>, d: Duration) {
        if self.measuring.load(Ordering::Relaxed) {
            list.lock().unwrap().push(d.as_micros() as u64);
        }
    }

    fn creation_acked(&self, wf: String, at: Instant) {
        let mut map = self.creations.lock().unwrap();
        match map.remove(&wf) {
            Some(Seen::Assigned) => {
                drop(map);
                self.record(&self.first_latency, Duration::ZERO);
            }
            _ => {
                map.insert(wf, Seen::Acked(at));
            }
        }
    }

    fn first_assigned(&self, wf: &str, at: Instant) {
        let mut map = self.creations.lock().unwrap();
        match map.remove(wf) {
            Some(Seen::Acked(acked)) => {
                drop(map);
                self.record(&self.first_latency, at.saturating_duration_since(acked));
            }
            _ => {
                map.insert(wf.to_string(), Seen::Assigned);
            }
        }
    }
}

fn templates() -> String {
    let mut docs = Vec::new();
    for n in 1..=3 {
        let mut t = format!(
            "kind: Template\nname: load-noop-{n}\ndata: |\n  version: \"0.1\"\n  name: load-noop-{n}\n  tasks:\n    - name: t\n      worker: \"{{{{.device_1}}}}\"\n      actions:\n"
        );
        for i in 0..n {
            t.push_str(&format!("        - name: noop-{i}\n          image: {IMAGE}\n          command: [\"true\"]\n"));
        }
        docs.push(t);
    }
    docs.join("---\n")
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = <Args as clap::Parser>::parse();
    let nofile = raise_nofile();
    if (nofile as usize) < args.agents + 256 {
        bail!("RLIMIT_NOFILE is {nofile}: too low for {} agents", args.agents);
    }
    let console_addr = format!("127.0.0.1:{}", std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port());
    let extra =
        if args.console_streams > 0 { vec!["--console-listen".to_string(), console_addr.clone()] } else { Vec::new() };
    let bench = BenchServer::start_with(&args.bin_dir, args.store, args.plaintext, "kiln-load", &extra)?;
    let mut admin = bench.admin().await?;

    // Hardware, with the tokens the applies print once.
    let started = Instant::now();
    apply(&mut admin, templates(), SOURCE).await?;
    let agents = register_hardware(&mut admin, args.agents, "load", SOURCE).await?;
    println!("registered {} hardware in {:.1} s", args.agents, started.elapsed().as_secs_f64());

    // Agents: each its own connection, connected a few at a time.
    let shared = Arc::new(Shared::default());
    let (idle_tx, idle_rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let limit = Arc::new(tokio::sync::Semaphore::new(args.connect_parallel));
    let mut tasks = Vec::new();
    for agent in agents {
        let permit = limit.clone().acquire_owned().await?;
        let client = connect_agent(&bench.url, &bench.tls, &agent).await?;
        drop(permit);
        let held = Arc::new(Mutex::new(None::<String>));
        tasks.push(tokio::spawn(heartbeat_loop(
            agent.index,
            client.clone(),
            held.clone(),
            shared.heartbeat.clone(),
            stop_rx.clone(),
        )));
        tasks.push(tokio::spawn(agent_loop(
            agent.index,
            client,
            held,
            shared.clone(),
            idle_tx.clone(),
            stop_rx.clone(),
            Duration::from_millis(args.action_ms),
        )));
    }
    let connected = || shared.heartbeat.connected.load(Ordering::Relaxed);
    wait_for(|| connected() as usize >= args.agents, Duration::from_secs(120)).await?;
    let connect_time = started.elapsed();
    println!("{} agents connected (TLS: {}) in {:.1} s", args.agents, !args.plaintext, connect_time.as_secs_f64());

    // Browsers on the console, if asked.
    let mut streams = if args.console_streams > 0 {
        let token = std::fs::read_to_string(bench.dir.path().join("data/admin-token"))?.trim().to_string();
        let base = format!("{}://{console_addr}", if args.plaintext { "http" } else { "https" });
        let streams = ConsoleStreams::open(&base, &token, &args.console_path, args.console_streams)?;
        println!("{} console streams of {} open", args.console_streams, args.console_path);
        Some(streams)
    } else {
        None
    };

    // Workflows flow from here on.
    let driver = tokio::spawn(drive(admin, args.agents, args.rate, idle_rx, shared.clone(), stop_rx.clone()));
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;

    let counters = |s: &Shared| {
        [&s.completed, &s.heartbeat.heartbeats, &s.polls, &s.rpc_errors, &s.heartbeat.errors, &s.created]
            .map(|c| c.load(Ordering::Relaxed))
    };
    let before = counters(&shared);
    let stream_messages = |s: &Option<ConsoleStreams>| s.as_ref().map_or((0, 0), |s| (s.count("workflows"), s.bytes()));
    let streams_before = stream_messages(&streams);
    let cpu = CpuMeter::start(&bench);
    let t0 = Instant::now();
    shared.measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    shared.measuring.store(false, Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    let after = counters(&shared);
    let cpu = cpu.finish();
    let streams_after = stream_messages(&streams);
    let streams_open = streams.as_mut().map_or(0, ConsoleStreams::open_count);
    drop(streams);
    let (rss, hwm) = bench.rss_kib();
    let delta = |i: usize| after[i] - before[i];

    // Stop everything we started.
    shared.stopping.store(true, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), driver).await;
    for t in &tasks {
        t.abort();
    }
    bench.stop();

    let mut first = std::mem::take(&mut *shared.first_latency.lock().unwrap());
    let mut next = std::mem::take(&mut *shared.next_latency.lock().unwrap());
    let mut all: Vec<u64> = first.iter().chain(&next).copied().collect();
    for v in [&mut first, &mut next, &mut all] {
        v.sort_unstable();
    }
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!();
    println!(
        "load benchmark: store {}, {} agents (one HTTP/2 {} connection each), {} s measured after {} s warm-up, \
         {cores} cores",
        args.store,
        args.agents,
        if args.plaintext { "plaintext" } else { "TLS" },
        args.seconds,
        args.warmup
    );
    println!("  agents connected:            {}", connected());
    println!("  connect (TLS handshakes):    {:.1} s for all agents", connect_time.as_secs_f64());
    println!("  target rate:                 {:.0} workflows/min (1-3 no-op actions each)", args.rate);
    println!("  workflows created:           {:.0} /min", delta(5) as f64 * 60.0 / elapsed);
    println!(
        "  workflows completed:         {:.0} /min ({} in {elapsed:.1} s)",
        delta(0) as f64 * 60.0 / elapsed,
        delta(0)
    );
    println!("  heartbeats:                  {:.0} /s", delta(1) as f64 / elapsed);
    println!("  NextAction calls:            {:.0} /s", delta(2) as f64 / elapsed);
    println!("  failed calls:                {} (heartbeats: {})", delta(3), delta(4));
    println!(
        "  dispatch latency, all:       p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms  (n = {})",
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        percentile(&all, 1.0),
        all.len()
    );
    println!(
        "    after SUCCESS ack:         p50 {:.1} ms  p99 {:.1} ms  (n = {})",
        percentile(&next, 0.5),
        percentile(&next, 0.99),
        next.len()
    );
    println!(
        "    after creation ack:        p50 {:.1} ms  p99 {:.1} ms  (n = {})",
        percentile(&first, 0.5),
        percentile(&first, 0.99),
        first.len()
    );
    println!(
        "  server RSS:                  {:.0} MiB now, peak (VmHWM) {:.0} MiB",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    println!("  server CPU:                  {:.0} % of one core", cpu.server * 100.0);
    if args.store == StoreKind::Postgres {
        println!("  PostgreSQL CPU:              {:.0} % of one core", cpu.postgres * 100.0);
    }
    println!("  bench (simulated agents) CPU: {:.0} % of one core", cpu.bench * 100.0);
    if args.console_streams > 0 {
        println!(
            "  console streams:             {streams_open} of {} still open; {:.0} messages/s, {:.0} KiB/s delivered in all",
            args.console_streams,
            (streams_after.0 - streams_before.0) as f64 / elapsed,
            (streams_after.1 - streams_before.1) as f64 / 1024.0 / elapsed
        );
    }
    println!(
        "TABLE | {} | {} | {:.1} | {:.1} | {:.0} | {:.0} | {:.0} |",
        args.store,
        connected(),
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        delta(0) as f64 * 60.0 / elapsed,
        hwm as f64 / 1024.0,
        cpu.server * 100.0
    );
    Ok(())
}

async fn report(client: &mut AgentClient, shared: &Shared, mut report: StateReport, state: ActionState) -> bool {
    report.set_state(state);
    report.observed_at = Some(kiln_proto::time::to_proto(std::time::SystemTime::now()));
    for attempt in 0..5 {
        match client.report_state(report.clone()).await {
            Ok(_) => return true,
            Err(e) => {
                shared.rpc_errors.fetch_add(1, Ordering::Relaxed);
                if !shared.stopping.load(Ordering::Relaxed) {
                    eprintln!("report {state:?} for {}: {e}", report.workflow_id);
                }
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            }
        }
    }
    false
}

async fn agent_loop(
    index: usize,
    mut client: AgentClient,
    held: Arc<Mutex<Option<String>>>,
    shared: Arc<Shared>,
    idle: tokio::sync::mpsc::UnboundedSender<usize>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    action_time: Duration,
) {
    // (workflow, action index) of the last SUCCESS, and when it was acked.
    let mut last: Option<(String, u32, Instant)> = None;
    loop {
        let mut req = tonic::Request::new(NextActionRequest { wait_ms: LONG_POLL.as_millis() as u32 });
        req.set_timeout(LONG_POLL + Duration::from_secs(10));
        let answer = tokio::select! {
            _ = stop.changed() => return,
            a = client.next_action(req) => a,
        };
        let received = Instant::now();
        shared.polls.fetch_add(1, Ordering::Relaxed);
        let a = match answer {
            Ok(r) => match r.into_inner().assignment {
                Some(a) => a,
                None => continue,
            },
            Err(e) => {
                shared.rpc_errors.fetch_add(1, Ordering::Relaxed);
                if !shared.stopping.load(Ordering::Relaxed) {
                    eprintln!("agent {index}: NextAction: {e}");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        match &last {
            Some((wf, i, acked)) if *wf == a.workflow_id && i + 1 == a.action_index => {
                shared.record(&shared.next_latency, received.saturating_duration_since(*acked));
            }
            _ if a.action_index == 0 && a.attempt == 1 => shared.first_assigned(&a.workflow_id, received),
            _ => {}
        }
        *held.lock().unwrap() = Some(a.attempt_id.clone());
        let base = StateReport {
            workflow_id: a.workflow_id.clone(),
            action_index: a.action_index,
            attempt_id: a.attempt_id.clone(),
            ..Default::default()
        };
        let ok = report(&mut client, &shared, base.clone(), ActionState::Pulling).await
            && report(&mut client, &shared, base.clone(), ActionState::Running).await;
        if !action_time.is_zero() {
            tokio::time::sleep(action_time).await;
        }
        // Released before the terminal report, like the agent's lease.
        *held.lock().unwrap() = None;
        let ok =
            ok && report(&mut client, &shared, StateReport { exit_code: Some(0), ..base }, ActionState::Success).await;
        last = ok.then(|| (a.workflow_id.clone(), a.action_index, Instant::now()));
        if !ok || a.action_index + 1 == a.action_count {
            if ok {
                shared.completed.fetch_add(1, Ordering::Relaxed);
            }
            let _ = idle.send(index);
        }
    }
}

/// Creates workflows at `rate` per minute, in batches, each for an agent
/// with no workflow in flight.
async fn drive(
    mut admin: Admin,
    agents: usize,
    rate: f64,
    mut idle_rx: tokio::sync::mpsc::UnboundedReceiver<usize>,
    shared: Arc<Shared>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut idle: Vec<usize> = (0..agents).collect();
    let mut rng = Rng::new(0x1234_5678_9abc_def1);
    let mut credit = 0.0;
    let mut seq = 0u64;
    let mut last = Instant::now();
    let mut tick = tokio::time::interval(BATCH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !*stop.borrow() {
        tick.tick().await;
        while let Ok(i) = idle_rx.try_recv() {
            idle.push(i);
        }
        let now = Instant::now();
        credit += rate / 60.0 * now.duration_since(last).as_secs_f64();
        last = now;
        let n = (credit as usize).min(idle.len()).min(1000);
        if n == 0 {
            continue;
        }
        credit -= n as f64;
        let mut docs = Vec::with_capacity(n);
        let mut picked = Vec::with_capacity(n);
        for _ in 0..n {
            let i = idle.swap_remove((rng.next_u64() % idle.len() as u64) as usize);
            seq += 1;
            let actions = 1 + rng.next_u64() % 3;
            docs.push(format!(
                "kind: Workflow\nname: wl-{seq}\ntemplate: load-noop-{actions}\nhardware: load-{i}\nhardware_map: {{device_1: \"{}\"}}\n",
                mac(i)
            ));
            picked.push((i, format!("wl-{seq}")));
        }
        match apply(&mut admin, docs.join("---\n"), SOURCE).await {
            Ok(_) => {
                let acked = Instant::now();
                shared.created.fetch_add(n as u64, Ordering::Relaxed);
                for (_, wf) in picked {
                    shared.creation_acked(wf, acked);
                }
            }
            Err(e) => {
                eprintln!("creating {n} workflows: {e:#}");
                idle.extend(picked.into_iter().map(|(i, _)| i));
            }
        }
    }
}
