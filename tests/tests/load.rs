//! The load benchmark (`bench-load`) works at a tiny scale: a server, a few
//! simulated agents, workflows completed. No timing is asserted.
//!
//! Needs `kiln-server` built beside the test (`cargo build --workspace`, as
//! for every integration test); no Docker.

use std::process::Command;

#[test]
fn bench_load_completes_workflows_with_a_few_agents() {
    let out = Command::new(env!("CARGO_BIN_EXE_bench-load"))
        .args(["--agents", "20", "--seconds", "3", "--warmup", "1", "--rate", "600"])
        .arg("--bin-dir")
        .arg(kiln_tests::bin_dir())
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
