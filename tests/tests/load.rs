//! The benchmarks with simulated agents (`bench-load`, `bench-logs`) work at
//! a tiny scale: a server, a few simulated agents, workflows completed or
//! log lines stored. No timing is asserted.
//!
//! Needs `kiln-server` built beside the benchmark binaries (`cargo build
//! --workspace`, as for every integration test); no Docker. A benchmark
//! finds it beside itself, which holds also when the test executable lives
//! elsewhere (a separate `CARGO_BUILD_BUILD_DIR`).

use std::process::Command;

#[test]
fn bench_load_completes_workflows_with_a_few_agents() {
    let out = Command::new(env!("CARGO_BIN_EXE_bench-load"))
        .args(["--agents", "20", "--seconds", "3", "--warmup", "1", "--rate", "600"])
        .output()
        .expect("run bench-load");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "bench-load failed:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
    let completed: u64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("workflows completed:")?.split_once('(')?.1.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no completed count in:\n{text}"));
    assert!(completed > 0, "no workflow completed:\n{text}");
    assert!(text.contains("agents connected:            20"), "{text}");
}

/// The log-ingest benchmark (`bench-logs`) at a tiny scale: its agents get
/// their attempts RUNNING and the server stores their batches.
#[test]
fn bench_logs_ingests_lines_with_a_few_agents() {
    let out = Command::new(env!("CARGO_BIN_EXE_bench-logs"))
        .args(["--agents", "3", "--seconds", "2", "--warmup", "1", "--lines", "20"])
        .output()
        .expect("run bench-logs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "bench-logs failed:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
    let ingested: u64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("lines ingested:")?.split_once('(')?.1.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no ingested count in:\n{text}"));
    assert!(ingested > 0 && ingested.is_multiple_of(20), "lines ingested: {ingested}\n{text}");
    assert!(text.contains("agents with a RUNNING attempt: 3"), "{text}");
    assert!(text.contains("failed pushes:               0"), "{text}");
}
