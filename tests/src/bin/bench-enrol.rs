//! Enrolment benchmark (issue 13): N machines nobody registered power on at
//! once against one kiln-server with `--discovery`, and each does what the
//! hook does at first boot, over the real protocol:
//!
//! 1. fetches its boot script as iPXE does (`GET /boot/ipxe/MAC` on
//!    `--netboot-listen`, plain HTTP): the server creates the machine's
//!    discovered record and a one-time enrolment credential;
//! 2. exchanges the credential (`kiln.enrol=`) for its agent token
//!    (`EnrolmentService.Enrol`, over its own TLS connection);
//! 3. reports its inventory (`ReportInventory`) with that token.
//!
//! A machine counts as discovered when its inventory is stored. Printed: the
//! time until all are, per-step latency percentiles, the server's memory,
//! and the check that every machine has exactly one hardware record (listed
//! by the admin API) with its inventory, and that a replayed credential is
//! refused. Asserts those checks; the figures are for reading.
//!
//! ```text
//! cargo build --release -p kiln-server -p kiln-tests --bin kiln-server --bin bench-enrol
//! target/release/bench-enrol [--machines 5000] [--parallel 256] [--store sqlite|postgres]
//! ```

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use kiln_proto::connect::endpoint;
use kiln_proto::v1::agent_service_client::AgentServiceClient;
use kiln_proto::v1::enrolment_service_client::EnrolmentServiceClient;
use kiln_proto::v1::{EnrolRequest, InventoryReport, ListRequest};
use kiln_tests::sim::{AgentAuth, BenchServer, StoreKind, mac, percentile};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Parser)]
struct Args {
    /// Machines booting.
    #[arg(long, default_value_t = 5_000)]
    machines: usize,
    /// Machines in their first boot at once (a rack's power-on is not
    /// instantaneous; this bounds the client side, not the server).
    #[arg(long, default_value_t = 256)]
    parallel: usize,
    #[arg(long, value_enum, default_value_t = StoreKind::Sqlite)]
    store: StoreKind,
    /// Where kiln-server is (default: beside this binary).
    #[arg(long, env = "KILN_BIN_DIR", default_value_os_t = kiln_tests::bin_dir())]
    bin_dir: PathBuf,
}

/// Microseconds each step of one machine took (enrolment includes the TLS
/// handshake of the machine's connection).
struct Timings {
    script: u64,
    enrol: u64,
    inventory: u64,
    credential: String,
    agent_id: String,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    kiln_tests::sim::raise_nofile();
    let hook = tempfile::tempdir()?;
    std::fs::write(hook.path().join("vmlinuz"), b"kernel")?;
    std::fs::write(hook.path().join("initramfs.img"), b"initramfs")?;
    let free = || std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr());
    let (listen, netboot) = (free()?, free()?);
    // TLS for agents, plain HTTP for iPXE: the boot script names the
    // server's TLS URL (`--public-url`).
    let extra: Vec<String> = [
        "--listen",
        &listen.to_string(),
        "--public-url",
        &format!("https://{listen}"),
        "--discovery",
        "--hook-dir",
        hook.path().to_str().context("hook dir")?,
        "--netboot-listen",
        &netboot.to_string(),
    ]
    .map(String::from)
    .to_vec();
    let bench = BenchServer::start_with(&args.bin_dir, args.store, false, "kiln-enrol", &extra)?;
    wait_listening(netboot).await?;
    println!(
        "kiln-server ({}, TLS, --discovery), {} unknown machines, {} booting at once",
        args.store, args.machines, args.parallel
    );

    let started = Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(args.parallel));
    let url = Arc::new(bench.url.clone());
    let tls = Arc::new(bench.tls.clone());
    let mut tasks = Vec::with_capacity(args.machines);
    for i in 0..args.machines {
        let (gate, url, tls) = (gate.clone(), url.clone(), tls.clone());
        tasks.push(tokio::spawn(async move {
            let _slot = gate.acquire().await?;
            first_boot(netboot, &url, &tls, &mac(i)).await.with_context(|| format!("machine {}", mac(i)))
        }));
    }
    let mut timings = Vec::with_capacity(args.machines);
    for t in tasks {
        timings.push(t.await??);
    }
    let all = started.elapsed();
    let (rss, peak) = bench.rss_kib();

    // Every machine once, discovered, with its inventory.
    let mut admin = bench.admin().await?;
    let listed = admin.list_hardware(ListRequest {}).await?.into_inner().items;
    let ids: HashSet<&str> = listed.iter().map(|h| h.id.as_str()).collect();
    let macs: HashSet<String> = listed.iter().flat_map(|h| h.macs.iter().cloned()).collect();
    ensure!(listed.len() == args.machines, "{} hardware records for {} machines", listed.len(), args.machines);
    ensure!(ids.len() == listed.len() && macs.len() == listed.len(), "duplicate hardware records");
    let without = listed.iter().filter(|h| h.state != "discovered" || !h.inventory_known).count();
    ensure!(without == 0, "{without} machines not discovered with their inventory");
    // A credential works once.
    let first = &timings[0];
    let channel = endpoint(&bench.url, &bench.tls).map_err(anyhow::Error::msg)?.connect().await?;
    let replay = enrol(channel, &first.credential, &first.agent_id, &mac(0)).await;
    match replay {
        Err(e) if e.downcast_ref::<tonic::Status>().is_some_and(|s| s.code() == tonic::Code::FailedPrecondition) => {}
        other => bail!("a replayed credential was not refused as used: {:?}", other.map(|_| ())),
    }

    let stat = |f: fn(&Timings) -> u64| {
        let mut v: Vec<u64> = timings.iter().map(f).collect();
        v.sort_unstable();
        let max = v[v.len() - 1] as f64 / 1000.0;
        format!("p50 {:.1} ms, p99 {:.1} ms, max {max:.1} ms", percentile(&v, 0.5), percentile(&v, 0.99))
    };
    println!("all {} discovered with their inventory in {:.1} s", args.machines, all.as_secs_f64());
    println!("  boot script (record + credential): {}", stat(|t| t.script));
    println!("  enrolment (credential -> token):   {}", stat(|t| t.enrol));
    println!("  inventory report:                  {}", stat(|t| t.inventory));
    println!("server memory: RSS {} MiB, peak {} MiB", rss / 1024, peak / 1024);
    println!(
        "checked: {} hardware records, one per MAC, all discovered with inventory; a replayed credential refused",
        listed.len()
    );
    bench.stop();
    Ok(())
}

/// One machine's first boot: boot script, enrolment, inventory.
async fn first_boot(
    netboot: std::net::SocketAddr,
    url: &str,
    tls: &kiln_proto::connect::ClientTls,
    mac: &str,
) -> Result<Timings> {
    let t0 = Instant::now();
    let script = http_get(netboot, &format!("/boot/ipxe/{mac}")).await?;
    let arg = |name: &str| {
        script
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .map(str::to_string)
            .with_context(|| format!("no {name}= in the boot script:\n{script}"))
    };
    let (credential, agent_id) = (arg("kiln.enrol")?, arg("kiln.agent_id")?);
    let t1 = Instant::now();
    // One connection for both calls, as the agent keeps its channel.
    let channel = endpoint(url, tls).map_err(anyhow::Error::msg)?.connect().await?;
    let token = enrol(channel.clone(), &credential, &agent_id, mac).await?;
    let t2 = Instant::now();
    let mut agent = AgentServiceClient::with_interceptor(channel, AgentAuth::new(&agent_id, &token)?);
    let inventory = serde_json::json!({
        "system": {"vendor": "QEMU", "product": "Standard PC (Q35 + ICH9, 2009)", "serial": format!("SN-{}", mac.replace(':', "")), "boot_mode": "uefi"},
        "cpu": {"model": "QEMU Virtual CPU", "sockets": 1, "cores": 2, "threads": 2},
        "memory": {"total_bytes": 8u64 << 30},
        "disks": [{"name": "vda", "size_bytes": 20u64 << 30, "rotational": false, "transport": "virtio", "serial": format!("D-{}", &mac[9..].replace(':', ""))}],
        "nics": [{"name": "eth0", "mac": mac, "driver": "virtio_net", "link": true}],
    });
    agent.report_inventory(InventoryReport { inventory_json: inventory.to_string() }).await?;
    let t3 = Instant::now();
    let us = |a: Instant, b: Instant| b.duration_since(a).as_micros() as u64;
    Ok(Timings { script: us(t0, t1), enrol: us(t1, t2), inventory: us(t2, t3), credential, agent_id })
}

/// `Enrol` over `channel`: the machine's token.
async fn enrol(channel: tonic::transport::Channel, credential: &str, agent_id: &str, mac: &str) -> Result<String> {
    let request =
        EnrolRequest { credential: credential.to_string(), agent_id: agent_id.to_string(), mac: mac.to_string() };
    let answer = EnrolmentServiceClient::new(channel).enrol(request).await?.into_inner();
    Ok(answer.token)
}

/// A GET as iPXE sends it (HTTP/1.0, one request per connection); the body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response.split_once("\r\n\r\n").context("no HTTP head")?;
    ensure!(head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"), "GET {path}: {head}");
    Ok(body.to_string())
}

async fn wait_listening(addr: std::net::SocketAddr) -> Result<()> {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("--netboot-listen {addr} does not answer")
}
