//! syslinux: the hub's boot loader installer. It writes syslinux's MBR
//! boot code to the start of `DEST_DISK` and runs the syslinux installer on
//! the FAT filesystem of `DEST_PARTITION`.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `DEST_DISK` | required | the disk whose MBR gets syslinux's boot code |
//! | `DEST_PARTITION` | required | the FAT partition that gets `ldlinux.sys` |
//! | `SYSLINUX_VERSION` | required | `3.86` or `386`, the only version the hub knows |
//!
//! The hub builds syslinux 3.86 from source; kiln carries Debian's syslinux
//! (6.04), whose installer also writes `ldlinux.c32` and whose MBR code is
//! the same 440 bytes in front of the partition table, which stays as it is.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::process::{Command, ExitCode, Stdio};

use kiln_action_kit::env::Env;
use kiln_action_kit::{Failure, OrFail, Result, log};

const ACTION: &str = "syslinux";
/// syslinux's MBR boot code (Debian's syslinux-common).
const MBR_BIN: &str = "/usr/lib/syslinux/mbr/mbr.bin";
/// The bytes before the disk signature and the partition table.
const MBR_CODE_MAX: usize = 440;

#[derive(Debug, PartialEq)]
struct Config {
    disk: String,
    partition: String,
}

impl Config {
    fn from_env(mut env: Env) -> Result<Config> {
        let disk = env.required("DEST_DISK");
        let partition = env.required("DEST_PARTITION");
        // The hub's `switch ver { case "386", "3.86": ...; default: Fatal }`.
        match env.raw("SYSLINUX_VERSION").unwrap_or("") {
            "386" | "3.86" => {}
            other => env
                .invalid("SYSLINUX_VERSION", format!("unknown syslinux version {other:?} (the hub knows 3.86 or 386)")),
        }
        env.finish()?;
        Ok(Config { disk, partition })
    }

    /// The installer's command line (the hub runs `syslinux.386 PARTITION`).
    fn installer(&self) -> Vec<String> {
        vec!["syslinux".into(), "--install".into(), self.partition.clone()]
    }
}

fn install(config: &Config, mbr_bin: &str) -> Result<()> {
    log(
        ACTION,
        format!("writing the MBR to [{}] and installing the boot loader to [{}]", config.disk, config.partition),
    );
    let code = std::fs::read(mbr_bin).or_fail("Internal", || format!("reading {mbr_bin}"))?;
    if code.len() > MBR_CODE_MAX {
        return Err(Failure::new(
            "Internal",
            format!("{mbr_bin} is {} bytes, more than the {MBR_CODE_MAX} before the partition table", code.len()),
        ));
    }
    let disk = OpenOptions::new()
        .write(true)
        .open(&config.disk)
        .or_fail("OpenFailed", || format!("opening {}", config.disk))?;
    disk.write_all_at(&code, 0).or_fail("WriteFailed", || format!("writing the MBR to {}", config.disk))?;
    disk.sync_all().or_fail("WriteFailed", || format!("flushing {}", config.disk))?;
    // As the hub: re-read the table, best effort.
    let _ = kiln_action_kit::disk::reread_partitions(&disk);
    std::fs::metadata(&config.partition)
        .or_fail("PartitionMissing", || format!("DEST_PARTITION {}", config.partition))?;
    let cmd = config.installer();
    log(ACTION, format!("+ {}", cmd.join(" ")));
    let status = Command::new(&cmd[0])
        .args(&cmd[1..])
        .stdin(Stdio::null())
        .status()
        .or_fail("InstallFailed", || format!("running {}", cmd[0]))?;
    if !status.success() {
        return Err(Failure::new("InstallFailed", format!("{} exited with {status}", cmd.join(" "))));
    }
    log(ACTION, format!("syslinux installed on {}", config.partition));
    Ok(())
}

fn main() -> ExitCode {
    kiln_action_kit::run(ACTION, || install(&Config::from_env(Env::from_process())?, MBR_BIN))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config> {
        Config::from_env(Env::from_pairs(vars.iter().copied()))
    }

    #[test]
    fn environment_contract() {
        for version in ["3.86", "386"] {
            let c =
                config(&[("DEST_DISK", "/dev/sdb"), ("DEST_PARTITION", "/dev/sdb1"), ("SYSLINUX_VERSION", version)])
                    .unwrap();
            assert_eq!(c, Config { disk: "/dev/sdb".into(), partition: "/dev/sdb1".into() });
            assert_eq!(c.installer(), ["syslinux", "--install", "/dev/sdb1"]);
        }
        for bad in ["6.04", "3.86 ", ""] {
            let err = config(&[("DEST_DISK", "/dev/sdb"), ("DEST_PARTITION", "/dev/sdb1"), ("SYSLINUX_VERSION", bad)])
                .unwrap_err();
            assert!(err.message.starts_with("SYSLINUX_VERSION: unknown syslinux version"), "{bad:?}: {}", err.message);
        }
        let err = config(&[]).unwrap_err();
        assert_eq!(err.exit_code, 2);
        for n in ["DEST_DISK: is required", "DEST_PARTITION: is required", "SYSLINUX_VERSION:"] {
            assert!(err.message.contains(n), "{n} not in {}", err.message);
        }
    }

    #[test]
    fn the_mbr_code_leaves_the_partition_table_alone() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("disk");
        let code = dir.path().join("mbr.bin");
        std::fs::write(&disk, vec![0x5Au8; 4096]).unwrap();
        std::fs::write(&code, vec![0xC3u8; 440]).unwrap();
        let c = Config { disk: disk.to_str().unwrap().into(), partition: "/nonexistent-partition".into() };
        let err = install(&c, code.to_str().unwrap()).unwrap_err();
        assert_eq!(err.reason, "PartitionMissing");
        let bytes = std::fs::read(&disk).unwrap();
        assert!(bytes[..440].iter().all(|b| *b == 0xC3) && bytes[440..].iter().all(|b| *b == 0x5A));
        std::fs::write(&code, vec![0u8; 512]).unwrap();
        assert!(install(&c, code.to_str().unwrap()).unwrap_err().message.contains("more than the 440"));
    }
}
