//! The built-in `reboot` and `poweroff` steps. They run only after the
//! step's SUCCESS was acknowledged by the server, so a machine never comes
//! back to find its reboot step still "running" (Tinkerbell's reboot loop).

use crate::config::AgentConfig;

pub fn perform(config: &AgentConfig, kind: &str) {
    if let Some(argv) = config.power_commands.get(kind).filter(|a| !a.is_empty()) {
        tracing::warn!(step = kind, command = ?argv, "running the configured power command");
        match std::process::Command::new(&argv[0]).args(&argv[1..]).status() {
            Ok(status) if status.success() => {}
            Ok(status) => tracing::error!(step = kind, %status, "power command failed"),
            Err(e) => tracing::error!(step = kind, error = %e, "power command could not run"),
        }
        return;
    }
    use nix::sys::reboot::{RebootMode, reboot};
    let mode = if kind == "poweroff" { RebootMode::RB_POWER_OFF } else { RebootMode::RB_AUTOBOOT };
    tracing::warn!(step = kind, "syncing disks and calling reboot(2)");
    nix::unistd::sync();
    // reboot(2) returns only when it failed.
    let Err(e) = reboot(mode);
    tracing::error!(step = kind, error = %e, "reboot(2) failed");
}
