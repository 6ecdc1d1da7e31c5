//! kexec: loads a kernel (and initrd) from a disk with kexec_file_load and
//! jumps into it, skipping firmware and bootloader. With no KERNEL_PATH the
//! default entry of the disk's grub.cfg is used. A terminal step: when the
//! agent offers the handshake (KILN_TERMINAL_HANDSHAKE, the directory of its
//! files), it tells the agent it is ready and waits for the go before it
//! fires, so its success is reported before the machine leaves. Without
//! the offer (run by Tinkerbell, by waitdaemon, by hand) it fires as soon as
//! the kernel is loaded, as the hub's kexec does. The image's label
//! `kiln.terminal-handshake` tells the agent it speaks the handshake.

mod boot;
mod config;
mod grub;

use std::path::PathBuf;
use std::process::ExitCode;

use kiln_action_kit::env::Env;
use kiln_action_kit::mount::Mounts;
use kiln_action_kit::{Failure, log};

use config::Config;

const ACTION: &str = "kexec";

fn main() -> ExitCode {
    kiln_action_kit::run(ACTION, || {
        let config = Config::from_env(Env::from_process())?;
        let root = PathBuf::from(format!("/tmp/kiln-{ACTION}-{}", std::process::id()));
        let mut mounts = Mounts::new();
        mounts.mount_device(&config.device, config.fs_type.as_deref(), &root)?;
        let loaded = boot::choose(&root, &config).and_then(|b| boot::load(&b));
        let unmounted = mounts.unmount_all();
        let _ = std::fs::remove_dir(&root);
        loaded?;
        unmounted?;
        boot::handshake_if_offered(std::env::var_os(boot::HANDSHAKE_ENV))?;
        log(ACTION, "jumping into the new kernel");
        nix::unistd::sync();
        // Only returns on failure. Needs `pid: host`: in a PID namespace,
        // reboot() ends the namespace instead of the machine.
        let e = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_KEXEC).unwrap_err();
        Err(Failure::new("KexecFailed", format!("reboot(LINUX_REBOOT_CMD_KEXEC): {e}")))
    })
}
