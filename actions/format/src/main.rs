//! format: makes a filesystem (ext4, ext3, ext2, vfat, fat32, xfs, swap) on
//! a device, optionally wiping old signatures first. See the crate's
//! library for the variables it reads.

use std::process::ExitCode;

use kiln_action_format::{Config, wipe};
use kiln_action_kit::env::Env;
use kiln_action_kit::log;

const ACTION: &str = "format";

fn main() -> ExitCode {
    kiln_action_kit::run(ACTION, || {
        let mut env = Env::from_process();
        let config = Config::from_env(&mut env);
        env.finish()?;
        let Config { device, wipe: wipe_first, mkfs } = config.expect("checked by finish");
        if wipe_first {
            wipe(ACTION, &device)?;
            log(ACTION, format_args!("wiped the signatures on {}", device.display()));
        }
        mkfs.run(ACTION, &device)?;
        log(ACTION, format_args!("made {} on {}", mkfs.describe(), device.display()));
        Ok(())
    })
}
