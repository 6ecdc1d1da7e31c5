//! cexec: runs a command inside the filesystem on a disk (usually chrooted
//! into an installed OS, with /dev, /proc and /sys bound in), then unmounts.
//! The command's exit code becomes the action's.

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
        let root = PathBuf::from(format!("/tmp/kiln-{ACTION}-{}", std::process::id()));
        let mut mounts = Mounts::new();
        mounts.mount_device(&config.device, config.fs_type.as_deref(), &root)?;
        let result = exec::run_in(&root, &config, &mut mounts);
        let unmounted = mounts.unmount_all();
        let _ = std::fs::remove_dir(&root);
        let code = result?;
        unmounted?;
        if code != 0 {
            return Err(Failure {
                reason: "CommandFailed",
                message: format!("{} exited with {code}", shell_words::join(&config.argv)),
                exit_code: code,
            });
        }
        log(ACTION, "command succeeded");
        Ok(())
    })
}
