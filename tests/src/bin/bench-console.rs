//! Web console benchmark (issue 15). Prints figures; asserts nothing.
//!
//! 1. Render time: one kiln-server with `--console-listen`, N workflows
//!    (default 10,000) created through the admin API for 100 machines; a
//!    logged-in `curl` fetches console pages, each many times. The figure is
//!    the server's time to first byte (`time_starttransfer -
//!    time_pretransfer`: the request sent, the page rendered, its first bytes
//!    back; the TLS handshake excluded), and to the last byte.
//! 2. Live updates under load: `bench-load` (beside this binary) with 10,000
//!    simulated agents twice, without and with 200 open console streams
//!    (`--console-streams`); the server's CPU of both runs and their
//!    difference.
//!
//! ```text
//! cargo build --release -p kiln-server -p kiln-tests --bin kiln-server --bin bench-load --bin bench-console
//! target/release/bench-console [--workflows 10000] [--repeat 15] [--agents 10000] [--streams 200]
//!     [--seconds 60] [--warmup 15] [--rate 2400] [--skip-render] [--skip-load]
//! ```

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use kiln_tests::sim::{BenchServer, StoreKind, apply, console_login, mac, percentile, register_hardware};

const IMAGE: &str = "127.0.0.1:5000/noop:v1";
const SOURCE: &str = "bench-console";
const MACHINES: usize = 100;

#[derive(clap::Parser)]
struct Args {
    /// Workflows in the store for the render benchmark.
    #[arg(long, default_value_t = 10_000)]
    workflows: usize,
    /// Fetches of each page.
    #[arg(long, default_value_t = 15)]
    repeat: usize,
    /// Simulated agents of the load runs.
    #[arg(long, default_value_t = 10_000)]
    agents: usize,
    /// Console streams of the second load run.
    #[arg(long, default_value_t = 200)]
    streams: usize,
    /// Measured seconds of each load run.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Warm-up seconds of each load run.
    #[arg(long, default_value_t = 15)]
    warmup: u64,
    /// Workflows created per minute in the load runs.
    #[arg(long, default_value_t = 2400.0)]
    rate: f64,
    /// The server's store.
    #[arg(long, value_enum, default_value_t = StoreKind::Sqlite)]
    store: StoreKind,
    #[arg(long)]
    skip_render: bool,
    #[arg(long)]
    skip_load: bool,
    /// Where kiln-server and bench-load are (default: beside this binary).
    #[arg(long, env = "KILN_BIN_DIR", default_value_os_t = kiln_tests::bin_dir())]
    bin_dir: PathBuf,
}

fn templates() -> String {
    (1..=3)
        .map(|n| {
            let mut t = format!(
                "kind: Template\nname: console-noop-{n}\ndata: |\n  version: \"0.1\"\n  name: console-noop-{n}\n  tasks:\n    - name: t\n      worker: \"{{{{.device_1}}}}\"\n      actions:\n"
            );
            for i in 0..n {
                t.push_str(&format!("        - name: noop-{i}\n          image: {IMAGE}\n          command: [\"true\"]\n"));
            }
            t
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// Times `repeat` fetches of `path`: (to first byte, to last byte) in ms,
/// and the page's size.
fn time_page(base: &str, cookie: &str, path: &str, repeat: usize) -> Result<(Vec<u64>, Vec<u64>, u64)> {
    let (mut first, mut last, mut size) = (Vec::new(), Vec::new(), 0);
    for _ in 0..repeat {
        let out = Command::new("curl")
            .args([
                "-sk",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{time_pretransfer} %{time_starttransfer} %{time_total} %{size_download}",
                "-H",
            ])
            .arg(format!("Cookie: {cookie}"))
            .arg(format!("{base}{path}"))
            .output()
            .context("curl")?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let f: Vec<&str> = text.split_whitespace().collect();
        if f.first() != Some(&"200") {
            bail!("{path}: {text}");
        }
        let secs = |i: usize| f[i].parse::<f64>().unwrap_or(0.0);
        first.push(((secs(2) - secs(1)) * 1e6) as u64);
        last.push(((secs(3) - secs(1)) * 1e6) as u64);
        size = f[4].parse().unwrap_or(0);
    }
    first.sort_unstable();
    last.sort_unstable();
    Ok((first, last, size))
}

async fn render(args: &Args) -> Result<()> {
    let console_addr = format!("127.0.0.1:{}", std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port());
    let bench = BenchServer::start_with(
        &args.bin_dir,
        args.store,
        false,
        "kiln-console",
        &["--console-listen".into(), console_addr.clone()],
    )?;
    let mut admin = bench.admin().await?;
    let started = Instant::now();
    apply(&mut admin, templates(), SOURCE).await?;
    register_hardware(&mut admin, MACHINES, "console", SOURCE).await?;
    for chunk in (0..args.workflows).collect::<Vec<_>>().chunks(500) {
        let docs: Vec<String> = chunk
            .iter()
            .map(|&i| {
                let m = i % MACHINES;
                format!(
                    "kind: Workflow\nname: wc-{i:05}\ntemplate: console-noop-{}\nhardware: console-{m}\nhardware_map: {{device_1: \"{}\"}}\n",
                    1 + i % 3,
                    mac(m)
                )
            })
            .collect();
        apply(&mut admin, docs.join("---\n"), SOURCE).await?;
    }
    println!(
        "{} workflows for {MACHINES} machines created in {:.1} s",
        args.workflows,
        started.elapsed().as_secs_f64()
    );

    let base = format!("https://{console_addr}");
    let token = std::fs::read_to_string(bench.dir.path().join("data/admin-token"))?.trim().to_string();
    let cookie = console_login(&base, &token)?;
    let last_page = args.workflows.div_ceil(50).max(1);
    let pages = [
        "/workflows".to_string(),
        format!("/workflows?page={last_page}"),
        "/workflows?sort=id&dir=asc&page=100".into(),
        "/workflows?sort=state&dir=desc".into(),
        "/workflows?template=console-noop-2&sort=hardware".into(),
        "/workflows?machine=console-42".into(),
        "/workflows?per_page=500".into(),
        "/machines".into(),
        "/workflows/wc-00042".into(),
        "/templates/console-noop-3?workflow=wc-00002".into(),
        "/events".into(),
    ];
    println!();
    println!(
        "console render benchmark: store {}, {} workflows, {MACHINES} machines, {} fetches per page (TLS, curl, \
         same machine); server time to first byte and to last byte",
        args.store, args.workflows, args.repeat
    );
    for path in &pages {
        let (first, last, size) = time_page(&base, &cookie, path, args.repeat)?;
        println!(
            "  {path:<50} first byte p50 {:6.1} ms  max {:6.1} ms | last byte p50 {:6.1} ms | {:>7} bytes",
            percentile(&first, 0.5) / 1.0,
            percentile(&first, 1.0),
            percentile(&last, 0.5),
            size
        );
    }
    bench.stop();
    Ok(())
}

/// Runs bench-load; returns its output.
fn load_run(args: &Args, streams: usize) -> Result<String> {
    let bin = args.bin_dir.join("bench-load");
    let out = Command::new(&bin)
        .args(["--agents", &args.agents.to_string(), "--seconds", &args.seconds.to_string()])
        .args(["--warmup", &args.warmup.to_string(), "--rate", &args.rate.to_string()])
        .args(["--store", &args.store.to_string(), "--console-streams", &streams.to_string()])
        .arg("--bin-dir")
        .arg(&args.bin_dir)
        .output()
        .with_context(|| format!("run {}", bin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!("bench-load failed:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(text)
}

fn server_cpu(report: &str) -> Option<f64> {
    report.lines().find_map(|l| l.trim().strip_prefix("server CPU:")?.trim().split(' ').next()?.parse().ok())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = <Args as clap::Parser>::parse();
    if !args.skip_render {
        render(&args).await?;
    }
    if !args.skip_load {
        println!();
        println!("load without console streams ...");
        let without = load_run(&args, 0)?;
        print!("{without}");
        println!("load with {} console streams ...", args.streams);
        let with = load_run(&args, args.streams)?;
        print!("{with}");
        let (Some(a), Some(b)) = (server_cpu(&without), server_cpu(&with)) else {
            bail!("no 'server CPU' figure in bench-load's output");
        };
        println!();
        println!(
            "console streams under load: {} agents, server CPU {a:.0} % without, {b:.0} % with {} streams: \
             {:+.1} % ({:+.0} points of one core)",
            args.agents,
            args.streams,
            (b - a) / a * 100.0,
            b - a
        );
    }
    Ok(())
}
