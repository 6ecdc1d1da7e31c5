//! partition: writes a GPT or MBR partition table from a declarative layout
//! (JSON in `LAYOUT`, or on stdin as a typed action), and optionally makes a
//! filesystem on each partition.

mod layout;
mod table;

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use kiln_action_kit::disk::{reread_partitions, size_of};
use kiln_action_kit::env::Env;
use kiln_action_kit::progress::bytes;
use kiln_action_kit::{Failure, OrFail, Result, log};

use crate::layout::{Layout, SECTOR};

const ACTION: &str = "partition";

fn main() -> ExitCode {
    kiln_action_kit::run(ACTION, || {
        let mut env = Env::from_process();
        let stdin_layout = if env.get("LAYOUT").is_none() && !std::io::stdin().is_terminal() {
            let mut text = String::new();
            let _ = std::io::stdin().read_to_string(&mut text);
            Some(text).filter(|t| !t.trim().is_empty())
        } else {
            None
        };
        let layout = match (env.optional("LAYOUT"), stdin_layout) {
            (Some(text), _) => env.parse_with("LAYOUT", true, |_| Layout::parse(&text)),
            (None, Some(text)) => match Layout::parse(&text) {
                Ok(l) => Some(l),
                Err(e) => {
                    env.invalid("stdin", e);
                    None
                }
            },
            (None, None) => {
                env.invalid("LAYOUT", "is required (or give the layout as JSON on stdin)");
                None
            }
        };
        let disk_value = env.optional("DEST_DISK").or_else(|| layout.as_ref().and_then(|l| l.disk.clone()));
        let disk = match disk_value {
            Some(v) => kiln_action_kit::disk::resolve(&v).map_err(|e| env.invalid("DEST_DISK", e)).ok(),
            None => {
                env.invalid("DEST_DISK", "is required");
                None
            }
        };
        let mbr = env.flag("MBR", false);
        let wipe = env.get("WIPE").is_some().then(|| env.flag("WIPE", false));
        let wait = Duration::from_secs(env.number("PARTITION_WAIT_SECONDS", false).unwrap_or(10));
        let checked = layout.and_then(|l| match l.check(mbr, wipe) {
            Ok(c) => Some(c),
            Err(errors) => {
                for e in errors {
                    let (field, msg) = e.split_once(": ").unwrap_or(("", &e));
                    env.invalid(&format!("LAYOUT.{field}"), msg);
                }
                None
            }
        });
        env.finish()?;
        let (disk, checked) = (disk.expect("checked by finish"), checked.expect("checked by finish"));

        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&disk)
            .or_fail("OpenFailed", || format!("opening {}", disk.display()))?;
        let size = size_of(&file).or_fail("OpenFailed", || format!("size of {}", disk.display()))?;
        // Placed before anything is written, so a layout that does not fit
        // leaves the disk as it was.
        let parts =
            checked.place(size).map_err(|e| Failure::new("DiskTooSmall", format!("{}: {e}", disk.display())))?;
        if checked.wipe {
            kiln_action_format::wipe(&disk)?;
        }
        table::write(&disk, checked.table, &parts)?;
        table::verify(&disk, checked.table, &parts)?;
        if let Err(e) = reread_partitions(&file) {
            if checked.wants_filesystems() {
                return Err(Failure::new(
                    "PartitionNodesMissing",
                    format!("the kernel did not re-read the partition table of {}: {e}", disk.display()),
                ));
            }
            log(ACTION, format_args!("warning: the kernel did not re-read the partition table: {e}"));
        }
        log(
            ACTION,
            format_args!(
                "{} on {} ({}):",
                if checked.table == layout::Table::Gpt { "GPT" } else { "MBR" },
                disk.display(),
                bytes(size)
            ),
        );
        for p in &parts {
            log(
                ACTION,
                format_args!(
                    "  {:>2}  start {:>10}  size {:>10} ({:>9})  type {}  {}",
                    p.number,
                    p.start,
                    p.sectors,
                    bytes(p.sectors * SECTOR),
                    p.type_code,
                    p.name.as_deref().unwrap_or("")
                ),
            );
        }
        drop(file);
        for p in parts.iter().filter(|p| p.mkfs.is_some()) {
            let node = partition_node(&disk, p.number);
            wait_for(&node, wait)?;
            let mkfs = p.mkfs.as_ref().expect("filtered");
            mkfs.run(&node)?;
            log(ACTION, format_args!("made {} on {}", mkfs.fs.name(), node.display()));
        }
        Ok(())
    })
}

/// `/dev/sda` → `/dev/sda1`; `/dev/nvme0n1`, `/dev/loop0` → `...p1`.
fn partition_node(disk: &Path, number: usize) -> PathBuf {
    let d = disk.display().to_string();
    if d.ends_with(|c: char| c.is_ascii_digit()) {
        PathBuf::from(format!("{d}p{number}"))
    } else {
        PathBuf::from(format!("{d}{number}"))
    }
}

/// devtmpfs creates partition nodes shortly after the re-read.
fn wait_for(node: &Path, limit: Duration) -> Result<()> {
    let start = Instant::now();
    while !node.exists() {
        if start.elapsed() >= limit {
            return Err(Failure::new(
                "PartitionNodesMissing",
                format!("{} did not appear within {} s", node.display(), limit.as_secs()),
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_device_names() {
        assert_eq!(partition_node(Path::new("/dev/vda"), 2), PathBuf::from("/dev/vda2"));
        assert_eq!(partition_node(Path::new("/dev/nvme0n1"), 1), PathBuf::from("/dev/nvme0n1p1"));
        assert_eq!(partition_node(Path::new("/dev/loop7"), 3), PathBuf::from("/dev/loop7p3"));
    }
}
