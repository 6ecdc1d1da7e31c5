//! Shared by the loop-device tests of the action crates (included with
//! `#[path]`, so it is not part of the kit library).
//!
//! An ext4 filesystem on a loop device, for running an action against a
//! real block device, and debugfs to inspect the image without mounting it.
//! Needs root, mkfs.ext4, losetup and debugfs.

#![allow(dead_code)] // each test file uses a different part

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct LoopDisk {
    pub image: PathBuf,
    pub device: String,
    _dir: tempfile::TempDir,
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

impl LoopDisk {
    /// A 64 MiB sparse image with an empty ext4, attached to a loop device.
    pub fn new() -> LoopDisk {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("disk.img");
        std::fs::File::create(&image).unwrap().set_len(64 << 20).unwrap();
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image));
        let out = run(Command::new("losetup").args(["--find", "--show"]).arg(&image));
        let device = String::from_utf8(out.stdout).unwrap().trim().to_string();
        LoopDisk { image, device, _dir: dir }
    }

    /// Mounts the filesystem, lets `f` change it, and unmounts.
    pub fn with_mounted(&self, f: impl FnOnce(&Path)) {
        let mnt = tempfile::tempdir().unwrap();
        run(Command::new("mount").arg(&self.device).arg(mnt.path()));
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(mnt.path())));
        run(Command::new("umount").arg(mnt.path()));
        if let Err(p) = result {
            std::panic::resume_unwind(p);
        }
    }

    fn debugfs(&self, request: &str) -> Vec<u8> {
        run(Command::new("debugfs").arg("-R").arg(request).arg(&self.image)).stdout
    }

    /// The bytes of a file, or None when it does not exist.
    pub fn read(&self, path: &str) -> Option<Vec<u8>> {
        self.stat(path)?;
        Some(self.debugfs(&format!("cat {path}")))
    }

    /// (type, permission bits, uid, gid), or None when missing.
    pub fn stat(&self, path: &str) -> Option<(String, u32, u32, u32)> {
        let text = String::from_utf8_lossy(&self.debugfs(&format!("stat {path}"))).into_owned();
        let field = |name: &str| -> Option<String> {
            let rest = &text[text.find(name)? + name.len()..];
            Some(rest.split_whitespace().next()?.to_string())
        };
        let kind = field("Type:")?;
        let mode = u32::from_str_radix(&field("Mode:")?, 8).unwrap();
        Some((kind, mode, field("User:")?.parse().unwrap(), field("Group:")?.parse().unwrap()))
    }

    /// The names in a directory, without `.` and `..`.
    pub fn list(&self, path: &str) -> Vec<String> {
        let text = String::from_utf8_lossy(&self.debugfs(&format!("ls -p {path}"))).into_owned();
        // `ls -p` lines: /inode/mode/uid/gid/name/size/
        let mut names: Vec<String> = text
            .lines()
            .filter_map(|l| l.split('/').nth(5).map(str::to_string))
            .filter(|n| n != "." && n != "..")
            .collect();
        names.sort();
        names
    }

    /// Is the device mounted anywhere (a leftover from the action)?
    pub fn is_mounted(&self) -> bool {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let dev = std::fs::metadata(&self.device).map(|m| std::os::unix::fs::MetadataExt::rdev(&m)).unwrap();
        let (major, minor) = (libc_major(dev), libc_minor(dev));
        info.lines().any(|l| l.split_whitespace().nth(2) == Some(&format!("{major}:{minor}")))
    }
}

fn libc_major(dev: u64) -> u64 {
    ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff)
}

fn libc_minor(dev: u64) -> u64 {
    ((dev >> 12) & 0xffff_ff00) | (dev & 0xff)
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.device).status();
    }
}

/// Runs an action binary with exactly these variables (plus PATH).
pub fn action(bin: &str, vars: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin);
    cmd.env_clear().env("PATH", std::env::var_os("PATH").unwrap_or_default());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

pub fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}
