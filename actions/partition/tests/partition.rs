//! The built `partition` binary against sparse image files (and loop
//! devices), with the result read back independently by `sfdisk --json`.
//! Needs root for the loop-device tests, as the CI has.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

const GIB: u64 = 1 << 30;
const EFI: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
const LINUX: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
const HOME: &str = "933AC7E1-2EB4-4F13-B844-0E14E2AEF915";

fn image(bytes: u64) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    f.as_file().set_len(bytes).unwrap();
    f
}

/// Runs the action with only `vars` (and the image's PATH) set, `stdin` fed.
fn run(vars: &[(&str, &str)], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_partition"));
    cmd.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").envs(vars.iter().copied());
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(text) = stdin {
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn text(out: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn succeeds(out: Output) -> Output {
    assert!(out.status.success(), "{}", text(&out));
    out
}

/// A partition as sfdisk reads it back: start, size, type, name.
type Row = (u64, u64, String, Option<String>);

/// The table's label, and its partitions.
fn read_table(disk: &Path) -> (String, Vec<Row>) {
    let out = Command::new("sfdisk").arg("--json").arg(disk).output().unwrap();
    assert!(out.status.success(), "sfdisk --json: {}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let t = &v["partitiontable"];
    let parts = t["partitions"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    (
                        p["start"].as_u64().unwrap(),
                        p["size"].as_u64().unwrap(),
                        p["type"].as_str().unwrap().to_string(),
                        p["name"].as_str().map(String::from),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    (t["label"].as_str().unwrap().to_string(), parts)
}

/// A fingerprint of the whole file, read in pieces (images are GiBs).
fn digest(file: &Path) -> u64 {
    use std::hash::Hasher;
    use std::io::Read;
    let mut f = std::fs::File::open(file).unwrap();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            return h.finish();
        }
        h.write(&buf[..n]);
    }
}

fn path(f: &tempfile::NamedTempFile) -> &str {
    f.path().to_str().unwrap()
}

const THREE: &str = r#"{"partitions":[
    {"name":"EFI system","size":"512MiB","type":"efi"},
    {"name":"root","size":"rest","type":"linux"},
    {"name":"données, 2","size":"25%","type":"home"}]}"#;

/// The sectors of THREE on a 2 GiB disk, worked out by hand: 4194304
/// sectors, 4194304 - 2048 - 33 = 4192223 usable; 25% of that is 1048055.75,
/// 511 whole MiB; root gets (4192223 - 1048576 - 1046528) = 2097119
/// sectors, 1023 whole MiB.
fn three_expected() -> Vec<Row> {
    vec![
        (2048, 1048576, EFI.into(), Some("EFI system".into())),
        (1050624, 2095104, LINUX.into(), Some("root".into())),
        (3145728, 1046528, HOME.into(), Some("données, 2".into())),
    ]
}

#[test]
fn gpt_with_absolute_rest_and_percent_sizes() {
    let disk = image(2 * GIB);
    let out = succeeds(run(&[("DEST_DISK", path(&disk)), ("LAYOUT", THREE)], None));
    assert_eq!(read_table(disk.path()), ("gpt".into(), three_expected()));
    let verify = Command::new("sfdisk").arg("--verify").arg(disk.path()).output().unwrap();
    assert!(verify.status.success() && String::from_utf8_lossy(&verify.stdout).contains("No errors detected"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("read back and checked") && stdout.contains("données, 2"), "{stdout}");
}

#[test]
fn mbr_from_the_tinkerbell_flag() {
    let disk = image(2 * GIB);
    let layout = r#"{"partitions":[{"size":"100M","type":"efi"},{"size":"1GB","type":"0x0c"},{"size":"10%","type":"82"},{"size":"rest"}]}"#;
    succeeds(run(&[("DEST_DISK", path(&disk)), ("LAYOUT", layout), ("MBR", "true")], None));
    // 1 GB is 953.7 MiB, so 954 MiB; 10% of 4194304 - 2048 sectors is
    // 419225.6, 204 whole MiB; rest runs to the last sector.
    let want = vec![
        (2048, 100 * 2048, "ef".to_string(), None),
        (2048 + 100 * 2048, 954 * 2048, "c".to_string(), None),
        (2048 + 1054 * 2048, 204 * 2048, "82".to_string(), None),
        (2048 + 1258 * 2048, 4194304 - 2048 - 1258 * 2048, "83".to_string(), None),
    ];
    assert_eq!(read_table(disk.path()), ("dos".into(), want));
}

#[test]
fn a_second_run_replaces_the_table() {
    let disk = image(2 * GIB);
    // A filesystem on the whole disk, as a re-imaged machine may have: its
    // signature must not survive next to the table.
    // XFS, because its magic is in the first sector, which a new table
    // does not overwrite (ext4's superblock would be under GPT's entries).
    let mkfs = Command::new("mkfs.xfs").args(["-q", "-f"]).arg(disk.path()).output().unwrap();
    assert!(mkfs.status.success(), "{}", text(&mkfs));
    succeeds(run(&[("DEST_DISK", path(&disk)), ("LAYOUT", THREE)], None));
    let whole = Command::new("blkid").args(["-p", "-o", "export"]).arg(disk.path()).output().unwrap();
    let whole = String::from_utf8_lossy(&whole.stdout);
    assert!(whole.contains("PTTYPE=gpt") && !whole.contains("xfs"), "{whole}");
    let mbr = r#"{"table":"mbr","partitions":[{"size":"rest","type":"linux"}]}"#;
    succeeds(run(&[("DEST_DISK", path(&disk)), ("LAYOUT", mbr)], None));
    assert_eq!(read_table(disk.path()), ("dos".into(), vec![(2048, 4194304 - 2048, "83".into(), None)]));
    // No GPT left behind (its backup at the end would survive a careless
    // MBR write and confuse firmware and blkid).
    let probe = Command::new("wipefs").arg("--no-act").arg("--json").arg(disk.path()).output().unwrap();
    let found = String::from_utf8_lossy(&probe.stdout);
    assert!(!found.contains("\"gpt\"") && found.contains("\"dos\""), "{found}");
    succeeds(run(&[("DEST_DISK", path(&disk)), ("LAYOUT", THREE), ("WIPE", "true")], None));
    assert_eq!(read_table(disk.path()), ("gpt".into(), three_expected()));
}

#[test]
fn a_layout_too_big_fails_and_leaves_the_disk_alone() {
    let disk = image(GIB);
    succeeds(run(&[("DEST_DISK", path(&disk)), ("LAYOUT", r#"{"partitions":[{"size":"rest"}]}"#)], None));
    let before = digest(disk.path());
    let layout = r#"{"wipe":true,"partitions":[{"size":"600MiB"},{"size":"50%"},{"size":"rest"}]}"#;
    let out = run(&[("DEST_DISK", path(&disk)), ("LAYOUT", layout)], None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    // 2048 + 600 MiB + 511 MiB (50% of 2095071 sectors) + 1 MiB for rest + 33.
    let need = 2048 + (600 + 511 + 1) * 2048 + 33;
    assert!(
        stderr.contains(&format!("needs {need} sectors")) && stderr.contains("the disk has 2097152 sectors"),
        "{stderr}"
    );
    assert_eq!(digest(disk.path()), before, "the disk was changed");
}

#[test]
fn a_bad_layout_is_a_config_error_naming_the_field() {
    let disk = image(64 << 20);
    let layout = r#"{"partitions":[{"size":"1G"},{"size":"lots","type":"windows"}]}"#;
    let out = run(&[("DEST_DISK", path(&disk)), ("LAYOUT", layout), ("WIPE", "maybe")], None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for needle in ["LAYOUT.partitions[1].size: \"lots\"", "LAYOUT.partitions[1].type: \"windows\"", "WIPE: expected"] {
        assert!(stderr.contains(needle), "{needle} not in {stderr}");
    }
    let unknown = r#"{"partitions":[{"size":"1G","fs":"ext4"}]}"#;
    let out = run(&[("DEST_DISK", path(&disk)), ("LAYOUT", unknown)], None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("LAYOUT.partitions[0]"), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field `fs`"), "{}", text(&out));
    let zeros = image(64 << 20);
    assert_eq!(digest(disk.path()), digest(zeros.path()), "a config error wrote to the disk");
}

#[test]
fn a_missing_disk_is_named() {
    let out = run(&[("LAYOUT", THREE)], None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("DEST_DISK: is required"), "{}", text(&out));
    let out = run(&[], None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("DEST_DISK: is required") && stderr.contains("LAYOUT: is required"), "{stderr}");
}

#[test]
fn a_typed_action_gets_layout_and_disk_on_stdin() {
    let disk = image(GIB);
    let input = format!(r#"{{"disk":"{}","table":"mbr","partitions":[{{"size":"rest"}}]}}"#, path(&disk));
    succeeds(run(&[], Some(&input)));
    assert_eq!(read_table(disk.path()), ("dos".into(), vec![(2048, 2097152 - 2048, "83".into(), None)]));
    let out = run(&[("DEST_DISK", path(&disk))], Some(r#"{"partitions":[{"size":"rest","colour":1}]}"#));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("stdin.partitions[0]"), "{}", text(&out));
}

#[test]
fn filesystems_on_an_image_file_have_no_partition_devices() {
    // Named so: a name ending in a digit would get `p1`, not `1`.
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    std::fs::File::create(&disk).unwrap().set_len(GIB).unwrap();
    let layout = r#"{"partitions":[{"size":"rest","filesystem":"ext4","label":"root"}]}"#;
    let started = std::time::Instant::now();
    let vars = [("DEST_DISK", disk.to_str().unwrap()), ("LAYOUT", layout), ("PARTITION_WAIT_SECONDS", "1")];
    let out = run(&vars, None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(started.elapsed() >= std::time::Duration::from_secs(1), "did not wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("{}1 did not appear within 1 s", disk.display())), "{stderr}");
}

/// A loop device over a file, detached when dropped.
struct Loop(PathBuf);

impl Loop {
    fn over(file: &Path) -> Loop {
        let out = Command::new("losetup").args(["--find", "--show"]).arg(file).output().unwrap();
        assert!(out.status.success(), "losetup: {}", text(&out));
        Loop(PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()))
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("--detach").arg(&self.0).status();
    }
}

/// A loop device made without partition scanning (as here, and as with any
/// `losetup` without `-P`) refuses BLKRRPART: a table alone is fine, with a
/// warning; filesystems cannot be made, and that is the failure.
#[test]
fn a_device_that_cannot_reread_partitions() {
    let file = image(GIB);
    let dev = Loop::over(file.path());
    let out = succeeds(run(&[("DEST_DISK", dev.path()), ("LAYOUT", THREE)], None));
    assert!(String::from_utf8_lossy(&out.stdout).contains("warning: the kernel did not re-read"), "{}", text(&out));
    let (label, parts) = read_table(file.path());
    assert_eq!(label, "gpt");
    assert_eq!(parts[0], (2048, 1048576, EFI.into(), Some("EFI system".into())));

    let layout = r#"{"table":"mbr","partitions":[{"size":"100M","filesystem":"vfat","label":"EFI"},{"size":"rest"}]}"#;
    let out = run(&[("DEST_DISK", dev.path()), ("LAYOUT", layout), ("PARTITION_WAIT_SECONDS", "1")], None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no partition devices exist"), "{}", text(&out));
    assert_eq!(read_table(file.path()).0, "dos", "the table itself was written");
}

/// The format crate's API (what the action runs per partition) on a loop
/// device placed where sfdisk says a partition is.
#[test]
fn a_partition_formatted_through_a_loop_device_at_its_offset() {
    let file = image(GIB);
    let layout = r#"{"partitions":[{"name":"efi","size":"64MiB","type":"efi"},{"name":"root","size":"rest"}]}"#;
    succeeds(run(&[("DEST_DISK", path(&file)), ("LAYOUT", layout)], None));
    let (_, parts) = read_table(file.path());
    let (start, size, ..) = parts[1];
    let out = Command::new("losetup")
        .args(["--find", "--show", "--offset", &(start * 512).to_string(), "--sizelimit", &(size * 512).to_string()])
        .arg(file.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let dev = Loop(PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()));
    let fs = kiln_action_format::FsType::parse("ext4").unwrap();
    let mkfs = kiln_action_format::Mkfs::new(fs, Some("root".into()), None, vec![]).unwrap();
    mkfs.run("test", &dev.0).unwrap();
    let probe = Command::new("blkid").args(["-p", "-o", "export"]).arg(&dev.0).output().unwrap();
    let found = String::from_utf8_lossy(&probe.stdout);
    assert!(found.contains("TYPE=ext4") && found.contains("LABEL=root"), "{found}");
    drop(dev);
    // The filesystem stayed inside its partition: the table is intact.
    assert_eq!(read_table(file.path()).1, parts);
    let probe = Command::new("blkid")
        .args(["-p", "-o", "export", "--offset", &(start * 512).to_string()])
        .arg(file.path())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&probe.stdout).contains("TYPE=ext4"), "{}", text(&probe));
}
