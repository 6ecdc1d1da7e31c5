//! Mounting the target filesystem, and unmounting it on every path out:
//! explicitly (so an unmount error is reported, since it can mean data not
//! written) and, if the action bails out early, from `Drop`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::mount::{MntFlags, MsFlags, mount, umount2};

use crate::{Failure, Result};

/// A stack of mounts, unmounted in reverse order.
pub struct Mounts {
    /// Mount points, and whether each is a recursive bind.
    targets: Vec<(PathBuf, bool)>,
}

impl Mounts {
    pub fn new() -> Self {
        Mounts { targets: Vec::new() }
    }

    /// Mounts `device` at `target` (created if missing). With no `fs_type`,
    /// each filesystem the kernel knows is tried, as mount(8) does.
    pub fn mount_device(&mut self, device: &Path, fs_type: Option<&str>, target: &Path) -> Result<()> {
        std::fs::create_dir_all(target)
            .map_err(|e| Failure::new("MountFailed", format!("creating {}: {e}", target.display())))?;
        let candidates: Vec<String> = match fs_type {
            Some(t) => vec![t.to_string()],
            None => kernel_filesystems(),
        };
        let mut errors = Vec::new();
        for t in &candidates {
            match mount(Some(device), target, Some(t.as_str()), MsFlags::empty(), None::<&str>) {
                Ok(()) => {
                    self.targets.push((target.to_path_buf(), false));
                    return Ok(());
                }
                Err(e) => errors.push(format!("{t}: {e}")),
            }
        }
        Err(Failure::new(
            "MountFailed",
            format!("mounting {} at {}: {}", device.display(), target.display(), errors.join(", ")),
        ))
    }

    /// Binds `source` (recursively) at `target`, for a chroot's /dev, /proc, /sys.
    pub fn bind(&mut self, source: &Path, target: &Path) -> Result<()> {
        std::fs::create_dir_all(target)
            .map_err(|e| Failure::new("MountFailed", format!("creating {}: {e}", target.display())))?;
        mount(Some(source), target, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>).map_err(|e| {
            Failure::new("MountFailed", format!("binding {} at {}: {e}", source.display(), target.display()))
        })?;
        self.targets.push((target.to_path_buf(), true));
        Ok(())
    }

    /// Unmounts everything, newest first. A busy mount is retried briefly,
    /// then detached; the first error is returned after all were tried.
    pub fn unmount_all(&mut self) -> Result<()> {
        let mut first_error = None;
        while let Some((target, bind)) = self.targets.pop() {
            // A recursive bind carries submounts (/dev/pts, ...): detach the
            // whole tree at once. Nothing is written through those.
            if bind {
                if let Err(e) = umount2(&target, MntFlags::MNT_DETACH)
                    && first_error.is_none()
                {
                    first_error = Some(Failure::new("UnmountFailed", format!("detaching {}: {e}", target.display())));
                }
                continue;
            }
            if let Err(e) = unmount(&target)
                && first_error.is_none()
            {
                first_error = Some(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Default for Mounts {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Mounts {
    fn drop(&mut self) {
        let _ = self.unmount_all();
    }
}

fn unmount(target: &Path) -> Result<()> {
    nix::unistd::sync();
    let mut last = None;
    for _ in 0..10 {
        match umount2(target, MntFlags::empty()) {
            Ok(()) => return Ok(()),
            Err(nix::errno::Errno::EBUSY) => {
                last = Some(nix::errno::Errno::EBUSY);
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => {
                last = Some(e);
                break;
            }
        }
    }
    let detached = umount2(target, MntFlags::MNT_DETACH).is_ok();
    Err(Failure::new(
        "UnmountFailed",
        format!(
            "unmounting {}: {}{}",
            target.display(),
            last.map(|e| e.to_string()).unwrap_or_default(),
            if detached { " (detached lazily)" } else { "" }
        ),
    ))
}

/// Block-device filesystems from /proc/filesystems (lines without `nodev`).
fn kernel_filesystems() -> Vec<String> {
    std::fs::read_to_string("/proc/filesystems")
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with("nodev"))
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// Joins an absolute path inside a mounted filesystem, refusing `..` so a
/// template value cannot escape the mount.
pub fn inside(root: &Path, absolute: &str) -> std::result::Result<PathBuf, String> {
    let relative = absolute.trim_start_matches('/');
    let path = Path::new(relative);
    if path.components().any(|c| !matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir)) {
        return Err(format!("{absolute:?} must not contain '..'"));
    }
    Ok(root.join(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inside_keeps_paths_under_the_root() {
        assert_eq!(inside(Path::new("/mnt/t"), "/etc/netplan/x.yaml").unwrap(), Path::new("/mnt/t/etc/netplan/x.yaml"));
        assert!(inside(Path::new("/mnt/t"), "/etc/../../x").unwrap_err().contains(".."));
    }
}
