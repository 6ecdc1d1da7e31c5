//! cexec: runs a command inside the filesystem on a disk (usually chrooted
//! into an installed OS, with /dev, /proc and /sys bound in), then unmounts.
//! Exit codes are Tinkerbell's: 10 for a malformed variable, 20 for a
//! missing one, 30 for anything failing after that (the command's own code
//! is in the failure message).

mod config;
mod exec;

use std::path::PathBuf;
use std::process::ExitCode;

use kiln_action_kit::env::Env;
use kiln_action_kit::mount::Mounts;
use kiln_action_kit::{Failure, log};

use config::Config;

const ACTION: &str = "cexec";

fn main() -> ExitCode {
    kiln_action_kit::run(ACTION, || {
        let config = Config::from_env(Env::from_process())?;
        run(&config).map_err(|f| Failure { exit_code: config::EXIT_FAILED, ..f })
    })
}

fn run(config: &Config) -> kiln_action_kit::Result<()> {
    let root = PathBuf::from(format!("/tmp/kiln-{ACTION}-{}", std::process::id()));
    let mut mounts = Mounts::new();
    mounts.mount_device(&config.device, config.fs_type.as_deref(), &root)?;
    let result = exec::run_in(&root, config, &mut mounts);
    let unmounted = mounts.unmount_all();
    let _ = std::fs::remove_dir(&root);
    let failed = result?;
    unmounted?;
    if let Some((argv, code)) = failed {
        return Err(Failure::new("CommandFailed", format!("{} exited with {code}", shell_words::join(argv))));
    }
    log(ACTION, "command succeeded");
    Ok(())
}
