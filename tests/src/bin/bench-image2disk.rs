//! image2disk against the shell pipeline it replaces.
//!
//! The same zstd-compressed 1 GiB image, served by one local HTTP server,
//! written to the same targets (a file on tmpfs, a loop device over tmpfs)
//! by `image2disk` with sha256 on, and by
//! `curl -s URL | zstd -dc | dd of=TARGET bs=4M`, alternating, in one run.
//! Prints the median throughput of each and their ratio (goal >= 0.95).
//!
//! Needs root (losetup), curl and zstd; run by `scripts/bench.sh`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kiln_tests::LoopDevice;
use kiln_tests::bin_dir;
use kiln_tests::http::{Faults, FileServer};
use sha2::{Digest, Sha256};

const GIB: usize = 1 << 30;
const RUNS: usize = 3;

/// Like a real disk image: about a third incompressible (packages, already
/// compressed data), the rest repetitive text and zeros.
fn image() -> Vec<u8> {
    let mut out = Vec::with_capacity(GIB);
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let text = b"kiln provisions bare metal; this line stands for the compressible parts of a root filesystem.\n";
    while out.len() < GIB {
        for _ in 0..(160 * 1024 / 8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.extend_from_slice(&x.to_le_bytes());
        }
        for _ in 0..(160 * 1024 / text.len()) {
            out.extend_from_slice(text);
        }
        out.resize(out.len() + 160 * 1024, 0);
    }
    out.truncate(GIB);
    out
}

fn zstd(data: &[u8]) -> Vec<u8> {
    let mut child = Command::new("zstd")
        .args(["-3", "-T0", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("zstd (apt-get install zstd)");
    let mut stdin = child.stdin.take().unwrap();
    std::thread::scope(|s| {
        s.spawn(move || std::io::Write::write_all(&mut stdin, data).unwrap());
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        out.stdout
    })
}

fn time(mut cmd: Command) -> Duration {
    let start = Instant::now();
    let out = cmd.output().expect("run");
    let elapsed = start.elapsed();
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    elapsed
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let raw = image();
    let body = zstd(&raw);
    let checksum = format!("sha256:{}", hex::encode(Sha256::digest(&body)));
    let raw_len = raw.len();
    drop(raw);
    println!(
        "image: {} MiB raw, {} MiB zstd -3 ({:.2}x)",
        raw_len >> 20,
        body.len() >> 20,
        raw_len as f64 / body.len() as f64
    );
    let server = FileServer::start(body, Faults::default());
    let url = server.url("disk.raw.zst");
    let image2disk = bin_dir().join("image2disk");
    assert!(image2disk.exists(), "build it: cargo build --release -p kiln-action-image2disk");

    let file = tempfile::Builder::new().prefix("kiln-bench-target").tempfile_in("/dev/shm").unwrap();
    let backing = tempfile::Builder::new().prefix("kiln-bench-loop").tempfile_in("/dev/shm").unwrap();
    backing.as_file().set_len(raw_len as u64).unwrap();
    let loop_dev = LoopDevice::over(backing.path()).expect("losetup");
    let targets = [("file on tmpfs", file.path().to_path_buf()), ("loop device", loop_dev.path.clone())];

    println!("| target | curl \\| zstd -dc \\| dd bs=4M | image2disk (sha256 on) | ratio |");
    println!("|---|---|---|---|");
    for (name, target) in &targets {
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..RUNS {
            let mut pipeline = Command::new("sh");
            pipeline.arg("-c").arg(format!("curl -s {url} | zstd -dc | dd of={} bs=4M status=none", target.display()));
            theirs.push(time(pipeline));
            let mut kiln = Command::new(&image2disk);
            kiln.env_clear()
                .env("IMG_URL", &url)
                .env("DEST_DISK", target)
                .env("CHECKSUM", &checksum)
                .env("COMPRESSED", "true")
                .env("PROGRESS_INTERVAL_SECONDS", "60");
            ours.push(time(kiln));
        }
        let mib = (raw_len >> 20) as f64;
        let (o, t) = (median(ours), median(theirs));
        println!(
            "| {name} | {:.0} MiB/s ({:.2} s) | {:.0} MiB/s ({:.2} s) | {:.2}x |",
            mib / t.as_secs_f64(),
            t.as_secs_f64(),
            mib / o.as_secs_f64(),
            o.as_secs_f64(),
            t.as_secs_f64() / o.as_secs_f64()
        );
    }
}
