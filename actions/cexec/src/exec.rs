//! Running the command in (or beside) the mounted filesystem.

use std::ffi::CString;
use std::io::ErrorKind;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

use kiln_action_kit::mount::Mounts;
use kiln_action_kit::{Failure, OrFail, Result, log};

use crate::ACTION;
use crate::config::{Config, EXIT_FAILED};

/// What the command finds in `KILN_MOUNT` without CHROOT: where the
/// filesystem is mounted in the action's container.
pub const MOUNT_VAR: &str = "KILN_MOUNT";

/// Runs the commands in order until one fails: the first failing one's
/// argv and exit code (128+N for signal N), or None when all succeeded.
pub fn run_in<'c>(root: &Path, c: &'c Config, mounts: &mut Mounts) -> Result<Option<(&'c [String], u8)>> {
    // As in Tinkerbell, only a chroot gets the container's resolver: without
    // one the command already runs with it.
    let resolv = if c.update_resolv_conf && c.chroot {
        Some(ResolvConf::install(&root.join("etc"), Path::new("/etc/resolv.conf"))?)
    } else {
        None
    };
    let result = (|| {
        if c.chroot {
            // /dev is bound recursively, so /dev/pts, /dev/shm and
            // /dev/mqueue come with it when the container has them.
            for fs in ["dev", "proc", "sys"] {
                mounts.bind(&Path::new("/").join(fs), &root.join(fs))?;
            }
        }
        for argv in &c.commands {
            let code = exit_code(spawn(root, c.chroot, argv)?);
            if code != 0 {
                return Ok(Some((argv.as_slice(), code)));
            }
        }
        Ok(None)
    })();
    // Restored before reporting, whatever the command did: the image keeps
    // its own resolver configuration (often a systemd-resolved symlink).
    let restored = resolv.map_or(Ok(()), ResolvConf::restore);
    let result = result?;
    restored?;
    Ok(result)
}

fn spawn(root: &Path, chroot: bool, argv: &[String]) -> Result<ExitStatus> {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    if chroot {
        // Built before fork: the child may only make async-signal-safe
        // calls, and allocating (as turning a Path into a C string does) is
        // not one of them.
        let root_c = CString::new(root.as_os_str().as_bytes()).expect("mount point has no NUL");
        // SAFETY: the closure only calls chroot(2) and chdir(2), which are
        // async-signal-safe, on memory allocated before the fork, and
        // last_os_error does not allocate.
        unsafe {
            cmd.pre_exec(move || {
                if libc::chroot(root_c.as_ptr()) != 0 || libc::chdir(c"/".as_ptr()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    } else {
        cmd.current_dir(root).env(MOUNT_VAR, root);
    }
    let where_ = if chroot { "chrooted into the disk".to_string() } else { format!("{MOUNT_VAR}={}", root.display()) };
    log(ACTION, format_args!("running {} ({where_})", shell_words::join(argv)));
    // stdout and stderr are inherited: the command's output is the action's.
    cmd.status().map_err(|e| match e.kind() {
        ErrorKind::NotFound => Failure {
            reason: "CommandNotFound",
            message: format!(
                "{}: not found {}",
                argv[0],
                if chroot { "in the disk's root" } else { "in the container" }
            ),
            exit_code: EXIT_FAILED,
        },
        ErrorKind::PermissionDenied => {
            Failure { reason: "CommandNotExecutable", message: format!("{}: {e}", argv[0]), exit_code: EXIT_FAILED }
        }
        _ => Failure::new("CommandFailed", format!("cannot start {}: {e}", argv[0])),
    })
}

/// A shell's convention: the code, or 128+N for a death by signal N.
fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(signal)) => 128u8.saturating_add(signal as u8),
        (None, None) => 255,
    }
}

/// The container's resolv.conf put in place of the image's for the
/// command's duration (an image's own often points at a resolver that is
/// not running, so `apt-get` could not resolve anything).
struct ResolvConf {
    path: PathBuf,
    /// Where the image's own entry (file or symlink) waits to be put back.
    saved: Option<PathBuf>,
}

impl ResolvConf {
    fn install(etc: &Path, source: &Path) -> Result<ResolvConf> {
        let path = etc.join("resolv.conf");
        let contents = std::fs::read(source).or_fail("ResolvConfFailed", || format!("reading {}", source.display()))?;
        // Renamed rather than copied over: a symlink (to
        // ../run/systemd/resolve/stub-resolv.conf) would be followed, to a
        // directory that does not exist on a disk that is not running.
        let saved = match std::fs::symlink_metadata(&path) {
            Ok(_) => {
                let saved = etc.join(".resolv.conf.kiln-saved");
                std::fs::rename(&path, &saved).or_fail("ResolvConfFailed", || "setting resolv.conf aside".into())?;
                Some(saved)
            }
            Err(_) => None,
        };
        let this = ResolvConf { path, saved };
        std::fs::create_dir_all(etc)
            .and_then(|()| std::fs::write(&this.path, contents))
            .or_fail("ResolvConfFailed", || format!("writing resolv.conf from {}", source.display()))
            .inspect_err(|_| {
                let _ = this.put_back();
            })?;
        Ok(this)
    }

    fn put_back(&self) -> std::io::Result<()> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        match &self.saved {
            Some(saved) => std::fs::rename(saved, &self.path),
            None => Ok(()),
        }
    }

    fn restore(self) -> Result<()> {
        self.put_back().or_fail("ResolvConfFailed", || "restoring the disk's resolv.conf".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn exit_codes_follow_the_shell() {
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_code(ExitStatus::from_raw(9)), 137, "SIGKILL");
        assert_eq!(exit_code(ExitStatus::from_raw(11)), 139, "SIGSEGV");
    }

    #[test]
    fn resolv_conf_symlinks_and_files_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("host-resolv.conf");
        std::fs::write(&source, "nameserver 10.0.2.3\n").unwrap();
        let etc = dir.path().join("etc");
        std::fs::create_dir(&etc).unwrap();
        let link = etc.join("resolv.conf");
        std::os::unix::fs::symlink("../run/systemd/resolve/stub-resolv.conf", &link).unwrap();

        let r = ResolvConf::install(&etc, &source).unwrap();
        assert_eq!(std::fs::read_to_string(&link).unwrap(), "nameserver 10.0.2.3\n");
        r.restore().unwrap();
        assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("../run/systemd/resolve/stub-resolv.conf"));
        assert_eq!(std::fs::read_dir(&etc).unwrap().count(), 1);

        std::fs::remove_file(&link).unwrap();
        std::fs::write(&link, "nameserver 1.1.1.1\n").unwrap();
        ResolvConf::install(&etc, &source).unwrap().restore().unwrap();
        assert_eq!(std::fs::read_to_string(&link).unwrap(), "nameserver 1.1.1.1\n");

        std::fs::remove_file(&link).unwrap();
        ResolvConf::install(&etc, &source).unwrap().restore().unwrap();
        assert_eq!(std::fs::read_dir(&etc).unwrap().count(), 0, "none before, none after");

        let err = ResolvConf::install(&etc, &dir.path().join("missing")).err().unwrap();
        assert_eq!(err.reason, "ResolvConfFailed");
    }
}
