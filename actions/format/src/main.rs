//! format: makes a filesystem (ext4, ext3, ext2, vfat, fat32, xfs, swap) on
//! a device, optionally wiping old signatures first.

use std::process::ExitCode;

use kiln_action_format::{FsType, Mkfs, wipe};
use kiln_action_kit::env::Env;
use kiln_action_kit::log;

fn main() -> ExitCode {
    kiln_action_kit::run("format", || {
        let mut env = Env::from_process();
        let device = env.parse_with("DEST_DISK", true, kiln_action_kit::disk::resolve);
        let fs = env.parse_with("FS_TYPE", true, FsType::parse);
        let label = env.optional("LABEL");
        let uuid = env.optional("FS_UUID");
        let wipe_first = env.flag("WIPE", false);
        let extra = env
            .parse_with("MKFS_OPTIONS", false, |v| {
                shell_words::split(v).map_err(|e| format!("cannot split {v:?}: {e}"))
            })
            .unwrap_or_default();
        let mkfs = fs.and_then(|fs| match Mkfs::new(fs, label, uuid, extra) {
            Ok(m) => Some(m),
            Err((field, msg)) => {
                env.invalid(if field == "label" { "LABEL" } else { "FS_UUID" }, msg);
                None
            }
        });
        env.finish()?;
        let (device, mkfs) = (device.expect("checked by finish"), mkfs.expect("checked by finish"));
        if wipe_first {
            wipe(&device)?;
        }
        mkfs.run(&device)?;
        log(
            "format",
            format_args!(
                "made {} on {}{}",
                mkfs.fs.name(),
                device.display(),
                mkfs.label.as_ref().map(|l| format!(" labelled {l:?}")).unwrap_or_default()
            ),
        );
        Ok(())
    })
}
