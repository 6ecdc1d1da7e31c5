//! Times the VM scenario (`kiln_tests::vm`): QEMU start to workflow SUCCESS,
//! and each phase (boot, pulls, actions, kexec). Goal: under 60 s with TCG on
//! our 2-core machines. Run by `scripts/bench.sh` (it starts the services).

use std::time::Duration;

fn main() -> anyhow::Result<()> {
    let run = kiln_tests::vm::run(Duration::from_secs(300))?;
    println!("accelerator: {}", kiln_tests::vm::accelerator());
    run.print_phases();
    anyhow::ensure!(run.workflow["state"] == "SUCCESS", "workflow ended {}", run.workflow["state"]);
    Ok(())
}
