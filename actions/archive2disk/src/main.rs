//! archive2disk: unpacks a tar archive (plain, gzip, zstd, xz, bzip2) from
//! HTTP(S) into a filesystem on a disk. The checksum is required (unless
//! explicitly waived) and checked BEFORE anything is unpacked: the archive
//! is first downloaded onto the target filesystem itself, so a bad or
//! truncated archive writes nothing.

mod config;
mod install;

use std::path::PathBuf;
use std::process::ExitCode;

use kiln_action_kit::env::Env;
use kiln_action_kit::log;
use kiln_action_kit::mount::Mounts;
use kiln_action_kit::progress::bytes;

use config::Config;

const ACTION: &str = "archive2disk";

fn main() -> ExitCode {
    kiln_action_kit::run(ACTION, || {
        let config = Config::from_env(Env::from_process())?;
        let root = PathBuf::from(format!("/tmp/kiln-{ACTION}-{}", std::process::id()));
        let mut mounts = Mounts::new();
        mounts.mount_device(&config.disk, config.fs_type.as_deref(), &root)?;
        let result = install::install(&root, &config);
        let unmounted = mounts.unmount_all();
        let _ = std::fs::remove_dir(&root);
        let unpacked = result?;
        unmounted?;
        log(
            ACTION,
            format_args!(
                "unpacked {} entries ({} in files, {} downloaded) into {} on {}",
                unpacked.entries,
                bytes(unpacked.bytes),
                bytes(unpacked.downloaded),
                config.dest,
                config.disk.display()
            ),
        );
        Ok(())
    })
}
