//! Shared by the loop-device tests of the action crates (included with
//! `#[path]`, so it is not part of the kit library).
//!
//! An ext4 filesystem on a loop device, for running an action against a
//! real block device, and debugfs to inspect the image without mounting it.
//! Needs root, mkfs.ext4, losetup and debugfs.

#![allow(dead_code)] // each test file uses a different part

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

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

    /// Mounts the filesystem, lets `f` change it, and unmounts (waiting for
    /// whatever still holds the mount: see `unmount`).
    pub fn with_mounted(&self, f: impl FnOnce(&Path)) {
        let mnt = tempfile::tempdir().unwrap();
        run(Command::new("mount").arg(&self.device).arg(mnt.path()));
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(mnt.path())));
        let unmounted = unmount(mnt.path());
        if let Err(p) = result {
            if let Err(e) = unmounted {
                eprintln!("ext4_loop: {e}");
            }
            std::panic::resume_unwind(p);
        }
        if let Err(e) = unmounted {
            panic!("{e}");
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

/// How long a teardown waits for whatever still holds a mount to let go.
/// The holder seen so far was transient (tests run in parallel, and a child
/// another test forks keeps copies of this process's descriptors until it
/// execs), so a few seconds are plenty; a holder outlasting this is a bug.
const UNMOUNT_PATIENCE: Duration = Duration::from_secs(30);

/// Unmounts `mnt`, retrying while it is busy (logging who holds it) until
/// UNMOUNT_PATIENCE has passed. Then, as the last resort, detaches it
/// lazily so no mount is left behind, and returns an error naming the
/// holders: what `f` wrote may not have reached the image, so the test
/// must not go on reading it.
fn unmount(mnt: &Path) -> Result<(), String> {
    let deadline = Instant::now() + UNMOUNT_PATIENCE;
    let mut last_holders = None;
    loop {
        let out = Command::new("umount").arg(mnt).output().map_err(|e| format!("umount {}: {e}", mnt.display()))?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if !stderr.contains("busy") {
            return Err(format!("umount {}: {stderr}", mnt.display()));
        }
        let held = holders(mnt);
        if last_holders.as_ref() != Some(&held) {
            eprintln!("ext4_loop: {} is busy, waiting; held by: {}", mnt.display(), describe(&held));
            last_holders = Some(held);
        }
        if Instant::now() >= deadline {
            // Named before the detach: afterwards their paths are no longer under `mnt`.
            let held = describe(&holders(mnt));
            let lazy = Command::new("umount").arg("--lazy").arg(mnt).status();
            return Err(format!(
                "umount {}: still busy after {UNMOUNT_PATIENCE:?} ({}), held by: {held}; \
                 detached lazily (umount --lazy: {lazy:?}) so nothing stays mounted",
                mnt.display(),
                stderr.trim()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn describe(holders: &[String]) -> String {
    if holders.is_empty() { "nothing visible in /proc".to_string() } else { holders.join("; ") }
}

/// The processes that hold something under `mnt`: an open file, a working
/// directory or root, a mapped file, or a copy of the mount in another
/// mount namespace (what `fuser -m` would list, plus the namespaces).
fn holders(mnt: &Path) -> Vec<String> {
    let Ok(procs) = std::fs::read_dir("/proc") else { return Vec::new() };
    let own_ns = std::fs::read_link("/proc/self/ns/mnt").ok();
    let under = |p: &Path| p.starts_with(mnt);
    let mut found = Vec::new();
    for entry in procs.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let dir = entry.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let mut what = Vec::new();
        for link in ["cwd", "root", "exe"] {
            if std::fs::read_link(dir.join(link)).is_ok_and(|t| under(&t)) {
                what.push(link.to_string());
            }
        }
        for fd in std::fs::read_dir(dir.join("fd")).into_iter().flatten().flatten() {
            if let Some(target) = std::fs::read_link(fd.path()).ok().filter(|t| under(t)) {
                what.push(format!("fd {} ({})", fd.file_name().to_string_lossy(), target.display()));
            }
        }
        let mnt_text = mnt.to_string_lossy();
        if std::fs::read_to_string(dir.join("maps")).is_ok_and(|m| m.contains(&format!("{mnt_text}/"))) {
            what.push("a mapped file".to_string());
        }
        let ns = std::fs::read_link(dir.join("ns/mnt")).ok();
        if let Some(ns) = ns.filter(|ns| Some(ns) != own_ns.as_ref()) {
            let info = std::fs::read_to_string(dir.join("mountinfo")).unwrap_or_default();
            if info.lines().any(|l| l.split_whitespace().nth(4) == Some(mnt_text.as_ref())) {
                what.push(format!("the mount, in its own namespace {}", ns.display()));
            }
        }
        if !what.is_empty() {
            found.push(format!("pid {pid} ({}): {}", comm.trim(), what.join(", ")));
        }
    }
    found
}

fn libc_major(dev: u64) -> u64 {
    ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff)
}

fn libc_minor(dev: u64) -> u64 {
    ((dev >> 12) & 0xffff_ff00) | (dev & 0xff)
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        // A device still open (a lazily unmounted filesystem) is detached
        // by the kernel when its last user closes it (losetup -d sets
        // autoclear), so this fails only when something is really wrong;
        // said on stderr, since panicking in drop could abort the run.
        match Command::new("losetup").arg("-d").arg(&self.device).output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!("ext4_loop: losetup -d {}: {}", self.device, String::from_utf8_lossy(&out.stderr)),
            Err(e) => eprintln!("ext4_loop: losetup -d {}: {e}", self.device),
        }
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
