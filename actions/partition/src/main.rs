//! partition: writes a GPT or MBR partition table from a declarative layout
//! (JSON in `LAYOUT`, or on stdin as a typed action), reads it back to check
//! it, and optionally makes a filesystem on each partition.

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

use crate::layout::{Checked, Layout, Planned, SECTOR, Table};
use crate::table::DumpPart;

const ACTION: &str = "partition";

struct Config {
    disk: PathBuf,
    layout: Checked,
    wait: Duration,
}

fn main() -> ExitCode {
    kiln_action_kit::run(ACTION, || {
        let mut env = Env::from_process();
        let stdin = if env.get("LAYOUT").is_none() { read_stdin() } else { None };
        let config = configure(&mut env, stdin);
        env.finish()?;
        partition(config.expect("checked by finish"))
    })
}

/// A typed action's input, when there is one: stdin that is neither a
/// terminal nor empty.
fn read_stdin() -> Option<String> {
    let mut stdin = std::io::stdin();
    if stdin.is_terminal() {
        return None;
    }
    let mut text = String::new();
    stdin.read_to_string(&mut text).ok()?;
    Some(text).filter(|t| !t.trim().is_empty())
}

/// Reads every variable (and the stdin layout), recording each problem in
/// `env` so they are all reported together.
fn configure(env: &mut Env, stdin: Option<String>) -> Option<Config> {
    // Errors name where the layout came from: `LAYOUT.partitions[1].size`.
    let (source, text) = match (env.optional("LAYOUT"), stdin) {
        (Some(text), _) => ("LAYOUT", Some(text)),
        (None, Some(text)) => ("stdin", Some(text)),
        (None, None) => {
            env.invalid("LAYOUT", "is required (or give the layout as JSON on stdin)");
            ("LAYOUT", None)
        }
    };
    let at = |path: &str| if path.is_empty() { source.to_string() } else { format!("{source}.{path}") };
    let layout = text.and_then(|t| Layout::parse(&t).map_err(|(path, e)| env.invalid(&at(&path), e)).ok());
    let disk = match (env.optional("DEST_DISK"), layout.as_ref().and_then(|l| l.disk.clone())) {
        (Some(v), _) => Some(("DEST_DISK".to_string(), v)),
        (None, Some(v)) => Some((at("disk"), v)),
        (None, None) => {
            env.invalid("DEST_DISK", "is required");
            None
        }
    };
    let disk = disk.and_then(|(name, v)| kiln_action_kit::disk::resolve(&v).map_err(|e| env.invalid(&name, e)).ok());
    let mbr = env.flag("MBR", false);
    let wipe = env.get("WIPE").is_some().then(|| env.flag("WIPE", false));
    let wait = Duration::from_secs(env.number("PARTITION_WAIT_SECONDS", false).unwrap_or(10));
    let layout = layout.and_then(|l| {
        l.check(mbr, wipe)
            .map_err(|errors| {
                for (field, e) in errors {
                    env.invalid(&at(&field), e);
                }
            })
            .ok()
    });
    Some(Config { disk: disk?, layout: layout?, wait })
}

fn partition(Config { disk, layout, wait }: Config) -> Result<()> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&disk)
        .or_fail("OpenFailed", || format!("opening {}", disk.display()))?;
    let size = size_of(&file).or_fail("OpenFailed", || format!("reading the size of {}", disk.display()))?;
    // Placed before anything is written, so a layout that does not fit
    // leaves the disk as it was.
    let parts = layout.place(size).map_err(|e| Failure::new("DiskTooSmall", format!("{}: {e}", disk.display())))?;
    if layout.wipe {
        kiln_action_format::wipe(ACTION, &disk)?;
        log(ACTION, format_args!("wiped the signatures on {}", disk.display()));
    }
    table::write(&disk, layout.table, &parts)?;
    let written = table::verify(&disk, layout.table, &parts)?;
    log(
        ACTION,
        format_args!(
            "wrote a {} table on {} ({}), read back and checked:",
            if layout.table == Table::Gpt { "GPT" } else { "MBR" },
            disk.display(),
            bytes(size)
        ),
    );
    for line in summary(&parts, &written) {
        log(ACTION, line);
    }
    if let Err(e) = reread_partitions(&file) {
        if layout.wants_filesystems() {
            // Partition nodes that exist now belong to the old table; making
            // filesystems on them would write in the wrong places.
            return Err(Failure::new(
                "PartitionNodesMissing",
                format!(
                    "the table is written, but the kernel did not re-read it on {} ({e}), so no partition devices \
                     exist to make filesystems on",
                    disk.display()
                ),
            ));
        }
        log(ACTION, format_args!("warning: the kernel did not re-read the table on {}: {e}", disk.display()));
    }
    drop(file);
    for p in &parts {
        let Some(mkfs) = &p.mkfs else { continue };
        let node = partition_node(&disk, p.number);
        wait_for(&node, wait)?;
        mkfs.run(ACTION, &node)?;
        log(ACTION, format_args!("made {} on {}", mkfs.describe(), node.display()));
    }
    Ok(())
}

/// The table as read back, one line a partition, with what will be made on it.
fn summary(parts: &[Planned], written: &[DumpPart]) -> Vec<String> {
    let mut lines = vec![format!(
        "{:>3}  {:>12}  {:>12}  {:>10}  {:<36}  {:<16}  {}",
        "#", "start", "sectors", "size", "type", "name", "filesystem"
    )];
    for (p, w) in parts.iter().zip(written) {
        lines.push(format!(
            "{:>3}  {:>12}  {:>12}  {:>10}  {:<36}  {:<16}  {}",
            p.number,
            w.start,
            w.size,
            bytes(w.size * SECTOR),
            w.kind,
            w.name.as_deref().unwrap_or("-"),
            p.mkfs.as_ref().map(|m| m.describe()).unwrap_or_else(|| "-".into())
        ));
    }
    lines
}

/// `/dev/sda` → `/dev/sda1`, `/dev/nvme0n1` → `/dev/nvme0n1p1`: the name
/// the template function `formatPartition` gives it too.
fn partition_node(disk: &Path, number: usize) -> PathBuf {
    PathBuf::from(kiln_partition_path::partition_path(&disk.display().to_string(), number as u64))
}

/// devtmpfs (or udev) creates partition nodes shortly after the re-read.
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

    #[test]
    fn waiting_gives_up_with_the_node_named() {
        let dir = tempfile::tempdir().unwrap();
        let there = dir.path().join("disk1");
        std::fs::write(&there, b"").unwrap();
        wait_for(&there, Duration::ZERO).unwrap();
        let started = Instant::now();
        let e = wait_for(&dir.path().join("disk2"), Duration::from_millis(300)).unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(e.reason, "PartitionNodesMissing");
        assert!(e.message.contains("disk2 did not appear"), "{}", e.message);
    }

    fn configured(vars: &[(&str, &str)], stdin: Option<&str>) -> (Option<Config>, Result<()>) {
        let mut env = Env::from_pairs(vars.iter().copied());
        let c = configure(&mut env, stdin.map(String::from));
        (c, env.finish())
    }

    #[test]
    fn the_layout_can_come_on_stdin_with_its_disk() {
        let disk = tempfile::NamedTempFile::new().unwrap();
        let json = format!(r#"{{"disk":"{}","partitions":[{{"size":"rest"}}]}}"#, disk.path().display());
        let (c, ok) = configured(&[("MBR", "true"), ("PARTITION_WAIT_SECONDS", "2")], Some(&json));
        ok.unwrap();
        let c = c.unwrap();
        assert_eq!(c.disk, disk.path().canonicalize().unwrap());
        assert_eq!(c.layout.table, layout::Table::Mbr);
        assert_eq!(c.wait, Duration::from_secs(2));
        // LAYOUT wins over stdin; DEST_DISK over the layout's disk.
        let (c, ok) = configured(
            &[("LAYOUT", r#"{"partitions":[{"size":"1M"}]}"#), ("DEST_DISK", disk.path().to_str().unwrap())],
            Some("not json"),
        );
        ok.unwrap();
        assert!(c.is_some());
    }

    #[test]
    fn every_problem_is_named_by_where_it_came_from() {
        let (c, e) =
            configured(&[("LAYOUT", r#"{"partitions":[{"size":"big"}]}"#), ("WIPE", "sometimes"), ("MBR", "2")], None);
        assert!(c.is_none());
        let msg = e.unwrap_err().message;
        for needle in [
            "DEST_DISK: is required",
            "LAYOUT.partitions[0].size: \"big\" is not a size",
            "WIPE: expected a boolean",
            "MBR: expected a boolean",
        ] {
            assert!(msg.contains(needle), "{needle} not in {msg}");
        }
        let (_, e) = configured(&[], Some(r#"{"disk":"/dev/disk/by-id/kiln-none","partitions":[{"size":"x"}]}"#));
        let msg = e.unwrap_err().message;
        assert!(
            msg.contains("stdin.disk: /dev/disk/by-id/kiln-none") && msg.contains("stdin.partitions[0].size"),
            "{msg}"
        );
        let (_, e) = configured(&[("DEST_DISK", "/")], None);
        assert!(e.unwrap_err().message.contains("LAYOUT: is required (or give the layout as JSON on stdin)"));
        let (_, e) = configured(&[("DEST_DISK", "/"), ("LAYOUT", "{")], None);
        let msg = e.unwrap_err().message;
        assert!(msg.starts_with("LAYOUT: EOF while parsing"), "{msg}");
    }

    fn config_for(disk: &Path, layout: &str) -> Config {
        let layout = Layout::parse(layout).unwrap().check(false, None).unwrap();
        Config { disk: disk.to_path_buf(), layout, wait: Duration::ZERO }
    }

    /// The reason words the agent reports (the integration tests see only
    /// messages and exit codes: outside kiln there is no /kiln to write to).
    #[test]
    fn failures_carry_their_reason() {
        let disk = tempfile::NamedTempFile::new().unwrap();
        disk.as_file().set_len(64 << 20).unwrap();
        let e = partition(config_for(disk.path(), r#"{"partitions":[{"size":"64MiB"}]}"#)).unwrap_err();
        assert_eq!((e.reason, e.exit_code), ("DiskTooSmall", 1));
        assert!(
            e.message.contains("needs 133153 sectors") && e.message.contains("the disk has 131072"),
            "{}",
            e.message
        );
        let e =
            partition(config_for(disk.path(), r#"{"partitions":[{"size":"rest","filesystem":"swap"}]}"#)).unwrap_err();
        assert_eq!((e.reason, e.exit_code), ("PartitionNodesMissing", 1), "{}", e.message);
        partition(config_for(disk.path(), r#"{"partitions":[{"size":"rest"}]}"#)).unwrap();
        let e = partition(config_for(&disk.path().with_extension("gone"), r#"{"partitions":[{"size":"1M"}]}"#))
            .unwrap_err();
        assert_eq!(e.reason, "OpenFailed");
    }

    #[test]
    fn the_summary_shows_what_was_read_back() {
        let c = config_for(
            Path::new("/dev/null"),
            r#"{"partitions":[{"name":"root","size":"rest","filesystem":"ext4","label":"r"}]}"#,
        );
        let parts = c.layout.place(1 << 30).unwrap();
        let written = vec![DumpPart { start: 2048, size: 4096, kind: "T".into(), name: Some("n".into()) }];
        let lines = summary(&parts, &written);
        assert_eq!(lines.len(), 2);
        let cols: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(cols, ["1", "2048", "4096", "2.0", "MiB", "T", "n", "ext4", "labelled", "\"r\""]);
    }
}
