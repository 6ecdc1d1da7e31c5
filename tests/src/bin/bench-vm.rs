//! Times the VM scenario (`kiln_tests::vm`): QEMU start to workflow SUCCESS,
//! and each phase (boot, pulls, actions, kexec), for the provisioning
//! workflow alone (partition, image2disk of a 256 MiB image, writefile,
//! kexec; the agent-kill scenario of the test adds about 10 s). Goal: under
//! 60 s with TCG on our 2-core machines. Run by `scripts/bench.sh` (it
//! starts the services and builds the hook image first).

use std::time::Duration;

fn main() -> anyhow::Result<()> {
    let run = kiln_tests::vm::run(Duration::from_secs(300), false)?;
    println!("accelerator: {}", kiln_tests::vm::accelerator());
    run.print_phases();
    let f = |t: Option<f64>| t.map(|t| format!("{t:.1} s")).unwrap_or_else(|| "-".into());
    println!("boot to agent connected: {}", f(run.phase(kiln_tests::vm::AGENT_CONNECTED)));
    let success = run.phases.iter().find(|(n, _)| n == "workflow SUCCESS").map(|(_, t)| *t);
    println!("QEMU start to workflow SUCCESS: {}", f(success));
    anyhow::ensure!(run.workflow["state"] == "SUCCESS", "workflow ended {}", run.workflow["state"]);
    Ok(())
}
