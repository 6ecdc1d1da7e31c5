//! writefile: writes one file into a filesystem on a disk (netplan,
//! cloud-init, a machine's identity), with its owner and mode, creating
//! missing directories, atomically, and unmounting even when it fails.

mod config;
mod write;

use std::path::PathBuf;
use std::process::ExitCode;

use kiln_action_kit::env::Env;
use kiln_action_kit::log;
use kiln_action_kit::mount::Mounts;

use config::Config;

const ACTION: &str = "writefile";

fn main() -> ExitCode {
    kiln_action_kit::run(ACTION, || {
        // std::env::vars panics on a non-UTF-8 value; CONTENTS may be any
        // bytes, so it is read on its own and the rest is read lossily.
        let env = Env::from_pairs(
            std::env::vars_os().map(|(k, v)| (k.to_string_lossy().into_owned(), v.to_string_lossy().into_owned())),
        );
        let config = Config::from_env(env, std::env::var_os("CONTENTS"))?;
        let root = PathBuf::from(format!("/tmp/kiln-{ACTION}-{}", std::process::id()));
        let mut mounts = Mounts::new();
        mounts.mount_device(&config.disk, config.fs_type.as_deref(), &root)?;
        let written = write::write_into(&root, &config);
        // Unmounted whatever happened; an unmount error is reported because
        // it can mean the write never reached the disk.
        let unmounted = mounts.unmount_all();
        let _ = std::fs::remove_dir(&root);
        written?;
        unmounted?;
        log(
            ACTION,
            format_args!(
                "wrote {} ({} bytes, mode {:04o}, owner {}:{}) on {}",
                config.dest,
                config.contents.len(),
                config.mode,
                config.uid,
                config.gid,
                config.disk.display()
            ),
        );
        Ok(())
    })
}
