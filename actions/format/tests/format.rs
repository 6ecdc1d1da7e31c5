//! The built `format` binary on loop devices placed inside sparse files at
//! an offset, checked with blkid/dumpe2fs. Needs root (losetup), as the CI
//! has.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const MIB: u64 = 1 << 20;

/// A sparse file with a loop device over `size` bytes of it from 1 MiB in,
/// detached when dropped.
struct Loop {
    dev: PathBuf,
    file: tempfile::NamedTempFile,
    size: u64,
}

impl Loop {
    fn new(file_size: u64, size: u64) -> Loop {
        let file = tempfile::NamedTempFile::new().unwrap();
        file.as_file().set_len(file_size).unwrap();
        let out = Command::new("losetup")
            .args(["--find", "--show", "--offset", &MIB.to_string(), "--sizelimit", &size.to_string()])
            .arg(file.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "losetup: {}", text(&out));
        Loop { dev: PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()), file, size }
    }

    fn path(&self) -> &str {
        self.dev.to_str().unwrap()
    }

    /// Whether the file outside the device's window is still all zeros.
    fn outside_untouched(&self) -> bool {
        let mut f = std::fs::File::open(self.file.path()).unwrap();
        let mut head = vec![0u8; MIB as usize];
        f.read_exact(&mut head).unwrap();
        f.seek(SeekFrom::Start(MIB + self.size)).unwrap();
        let mut tail = Vec::new();
        f.read_to_end(&mut tail).unwrap();
        head.iter().chain(&tail).all(|b| *b == 0)
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("--detach").arg(&self.dev).status();
    }
}

fn run(vars: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_format"))
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(vars.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn succeeds(out: Output) -> Output {
    assert!(out.status.success(), "{}", text(&out));
    out
}

/// What blkid finds on the device by probing it (not from its cache).
fn probe(dev: &Path) -> BTreeMap<String, String> {
    let out = Command::new("blkid").args(["-p", "-o", "export"]).arg(dev).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect()
}

fn get<'a>(found: &'a BTreeMap<String, String>, key: &str) -> &'a str {
    found.get(key).map(String::as_str).unwrap_or_default()
}

#[test]
fn ext4_with_label_uuid_and_options() {
    let lo = Loop::new(300 * MIB, 128 * MIB);
    let uuid = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
    let out = succeeds(run(&[
        ("DEST_DISK", lo.path()),
        ("FS_TYPE", "ext4"),
        ("LABEL", "kiln-root"),
        ("FS_UUID", uuid),
        ("MKFS_OPTIONS", "-I 256 -E 'lazy_itable_init=1'"),
    ]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("made ext4 labelled \"kiln-root\""), "{}", text(&out));
    let found = probe(&lo.dev);
    assert_eq!((get(&found, "TYPE"), get(&found, "LABEL"), get(&found, "UUID")), ("ext4", "kiln-root", uuid));
    let header = Command::new("dumpe2fs").arg("-h").arg(&lo.dev).output().unwrap();
    let header = String::from_utf8_lossy(&header.stdout);
    let field = |name: &str| header.lines().find_map(|l| l.strip_prefix(name)).map(str::trim).unwrap_or_default();
    assert_eq!(field("Inode size:"), "256", "MKFS_OPTIONS reached mke2fs");
    assert_eq!(field("Block count:").parse::<u64>().unwrap() * field("Block size:").parse::<u64>().unwrap(), 128 * MIB);
    assert!(lo.outside_untouched());
}

#[test]
fn ext3_and_ext2() {
    let lo = Loop::new(300 * MIB, 128 * MIB);
    for fs in ["ext3", "ext2"] {
        succeeds(run(&[("DEST_DISK", lo.path()), ("FS_TYPE", fs)]));
        assert_eq!(get(&probe(&lo.dev), "TYPE"), fs);
    }
}

#[test]
fn vfat_and_fat32() {
    let lo = Loop::new(300 * MIB, 128 * MIB);
    succeeds(run(&[("DEST_DISK", lo.path()), ("FS_TYPE", "vfat"), ("LABEL", "EFI"), ("FS_UUID", "1A2B-3C4D")]));
    let found = probe(&lo.dev);
    assert_eq!((get(&found, "TYPE"), get(&found, "LABEL"), get(&found, "UUID")), ("vfat", "EFI", "1A2B-3C4D"));
    assert_eq!(get(&found, "VERSION"), "FAT16", "mkfs.vfat's own choice for 128 MiB");
    succeeds(run(&[("DEST_DISK", lo.path()), ("FS_TYPE", "fat32"), ("LABEL", "ESP")]));
    let found = probe(&lo.dev);
    assert_eq!((get(&found, "TYPE"), get(&found, "LABEL"), get(&found, "VERSION")), ("vfat", "ESP", "FAT32"));
    assert!(lo.outside_untouched());
}

#[test]
fn xfs() {
    // mkfs.xfs refuses filesystems under 300 MB.
    let lo = Loop::new(700 * MIB, 512 * MIB);
    succeeds(run(&[("DEST_DISK", lo.path()), ("FS_TYPE", "xfs"), ("LABEL", "twelve_chars")]));
    let found = probe(&lo.dev);
    assert_eq!((get(&found, "TYPE"), get(&found, "LABEL")), ("xfs", "twelve_chars"));
    assert!(lo.outside_untouched());
}

#[test]
fn swap_over_an_old_filesystem() {
    let lo = Loop::new(300 * MIB, 128 * MIB);
    succeeds(run(&[("DEST_DISK", lo.path()), ("FS_TYPE", "ext4")]));
    let uuid = "11111111-2222-3333-4444-555555555555";
    succeeds(run(&[
        ("DEST_DISK", lo.path()),
        ("FS_TYPE", "swap"),
        ("LABEL", "swap"),
        ("FS_UUID", uuid),
        ("WIPE", "1"),
    ]));
    let found = probe(&lo.dev);
    assert_eq!((get(&found, "TYPE"), get(&found, "LABEL"), get(&found, "UUID")), ("swap", "swap", uuid));
    let left = Command::new("wipefs").arg("--no-act").arg(&lo.dev).output().unwrap();
    assert!(!String::from_utf8_lossy(&left.stdout).contains("ext4"), "{}", text(&left));
}

#[test]
fn a_failing_mkfs_says_why() {
    let lo = Loop::new(300 * MIB, 128 * MIB);
    let out = run(&[("DEST_DISK", lo.path()), ("FS_TYPE", "xfs")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("mkfs.xfs -f -q") && stderr.contains("must be larger than 300MB"), "{stderr}");
    let out = run(&[("DEST_DISK", lo.path()), ("FS_TYPE", "ext4"), ("MKFS_OPTIONS", "--no-such-option")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("mke2fs"), "{}", text(&out));
}

#[test]
fn configuration_errors_are_all_named_before_anything_is_written() {
    let lo = Loop::new(300 * MIB, 128 * MIB);
    let out = run(&[("DEST_DISK", lo.path()), ("FS_TYPE", "vfat"), ("LABEL", "LONGER_THAN_11"), ("WIPE", "sure")]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("LABEL: \"LONGER_THAN_11\"") && stderr.contains("WIPE: expected a boolean"), "{stderr}");
    let out = run(&[("DEST_DISK", lo.path()), ("FS_TYPE", "zfs"), ("FS_UUID", "x")]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ext4, ext3, ext2, vfat, fat32, xfs, swap"),
        "{}",
        text(&out)
    );
    let out = run(&[("FS_TYPE", "ext4")]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("DEST_DISK: is required"), "{}", text(&out));
    assert!(probe(&lo.dev).is_empty() || get(&probe(&lo.dev), "TYPE").is_empty(), "something was written");
    assert!(lo.outside_untouched());
}
