//! Choosing the kernel, loading it with kexec_file_load, and the terminal
//! step's handshake with the agent.

use std::collections::VecDeque;
use std::ffi::{CString, OsString};
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use kiln_action_kit::progress::bytes;
use kiln_action_kit::{Failure, OrFail, Result, log};

use crate::ACTION;
use crate::config::Config;
use crate::grub;

const KEXEC_FILE_NO_INITRD: libc::c_ulong = 0x4;

/// What will be loaded: paths inside the mount.
#[derive(Debug, PartialEq)]
pub struct Boot {
    pub kernel: PathBuf,
    pub initrds: Vec<PathBuf>,
    pub cmdline: String,
}

pub fn choose(root: &Path, c: &Config) -> Result<Boot> {
    let (kernel, initrds, args) = match &c.kernel {
        Some(k) => (k.clone(), c.initrd.iter().cloned().collect(), String::new()),
        None => {
            let Some((cfg_name, cfg_path)) =
                c.grub_cfgs.iter().find_map(|name| Some((name, resolve(root, name).filter(|p| p.is_file())?)))
            else {
                return Err(Failure::new(
                    "GrubConfigMissing",
                    format!("KERNEL_PATH is empty and there is no grub.cfg at {}", c.grub_cfgs.join(" or ")),
                ));
            };
            let text =
                std::fs::read_to_string(&cfg_path).or_fail("GrubConfigMissing", || format!("reading {cfg_name}"))?;
            // grub-set-default/grub-reboot keep the choice in grubenv, beside grub.cfg.
            let saved =
                std::fs::read_to_string(cfg_path.with_file_name("grubenv")).ok().and_then(|t| grub::saved_entry(&t));
            let entry = grub::default_entry(&text, saved.as_deref())
                .map_err(|e| Failure::new("GrubConfigInvalid", format!("{cfg_name}: {e}")))?;
            log(ACTION, format_args!("{cfg_name}: default entry {:?}", entry.title));
            (entry.kernel, entry.initrds, entry.args)
        }
    };
    let boot = Boot {
        kernel: find(root, &kernel)?,
        initrds: initrds.iter().map(|i| find(root, i)).collect::<Result<_>>()?,
        cmdline: c.cmdline.clone().unwrap_or(args),
    };
    let shown = |p: &Path| Path::new("/").join(p.strip_prefix(root).unwrap_or(p)).display().to_string();
    log(
        ACTION,
        format_args!(
            "kernel {} initrd {} cmdline {:?}",
            shown(&boot.kernel),
            if boot.initrds.is_empty() {
                "(none)".to_string()
            } else {
                boot.initrds.iter().map(|i| shown(i)).collect::<Vec<_>>().join("+")
            },
            boot.cmdline
        ),
    );
    Ok(boot)
}

/// A kernel or initrd path from grub.cfg or the environment. Grub's paths
/// are relative to the partition grub read them from, which is /boot when
/// /boot is a partition of its own.
fn find(root: &Path, path: &str) -> Result<PathBuf> {
    let relative = path.trim_start_matches('/');
    for candidate in [relative.to_string(), format!("boot/{relative}")] {
        if let Some(p) = resolve(root, &candidate).filter(|p| p.is_file()) {
            return Ok(p);
        }
    }
    Err(Failure::new("KernelNotFound", format!("/{relative} is not on the disk (looked under / and /boot)")))
}

/// Resolves `path` inside `root` as if `root` were `/`: symlinks on the
/// disk (Debian's /vmlinuz -> boot/vmlinuz-6.1.0-26-amd64, or absolute ones)
/// are followed within it, never into the action's container.
pub fn resolve(root: &Path, path: &str) -> Option<PathBuf> {
    let mut todo: VecDeque<OsString> = components(Path::new(path));
    let mut done: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(part) = todo.pop_front() {
        if part == ".." {
            done.pop();
            continue;
        }
        let here: PathBuf = root.join(done.iter().collect::<PathBuf>()).join(&part);
        match std::fs::symlink_metadata(&here) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > 40 {
                    return None;
                }
                let target = std::fs::read_link(&here).ok()?;
                if target.is_absolute() {
                    done.clear();
                }
                for c in components(&target).into_iter().rev() {
                    todo.push_front(c);
                }
            }
            _ => done.push(part),
        }
    }
    Some(root.join(done.iter().collect::<PathBuf>()))
}

fn components(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

/// Loads the kernel for the jump; the kernel copies the images, so the disk
/// can be unmounted afterwards.
pub fn load(boot: &Boot) -> Result<()> {
    let kernel = File::open(&boot.kernel).or_fail("KernelNotFound", || format!("opening {}", boot.kernel.display()))?;
    let initrd = match boot.initrds.as_slice() {
        [] => None,
        [one] => Some(File::open(one).or_fail("KernelNotFound", || format!("opening {}", one.display()))?),
        many => Some(join_initrds(many)?),
    };
    let cmdline = CString::new(boot.cmdline.clone())
        .map_err(|_| Failure::new("InvalidConfig", "CMD_LINE contains a NUL byte"))?;
    let size = kernel.metadata().map(|m| m.len()).unwrap_or(0);
    log(ACTION, format_args!("loading a {} kernel with kexec_file_load", bytes(size)));
    // SAFETY: both fds stay open for the call, and the command line pointer
    // and its length (NUL included, as the syscall wants) come from one
    // CString that outlives it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_kexec_file_load,
            kernel.as_raw_fd(),
            initrd.as_ref().map_or(-1, |f| f.as_raw_fd()),
            cmdline.as_bytes_with_nul().len() as libc::c_ulong,
            cmdline.as_ptr(),
            if initrd.is_none() { KEXEC_FILE_NO_INITRD } else { 0 },
        )
    };
    if rc != 0 {
        return Err(load_failure(std::io::Error::last_os_error()));
    }
    log(ACTION, "kernel loaded");
    Ok(())
}

/// Several initrds (microcode + initramfs) are concatenated, as grub does:
/// the kernel unpacks concatenated cpio archives in turn.
fn join_initrds(parts: &[PathBuf]) -> Result<File> {
    let joined = PathBuf::from(format!("/tmp/kiln-kexec-initrd-{}", std::process::id()));
    let fail = || "joining the initrds in /tmp".to_string();
    let mut out = File::create(&joined).or_fail("KexecLoadFailed", fail)?;
    // Unlinked at once: the open fd is all kexec_file_load needs.
    let reopened = File::open(&joined).or_fail("KexecLoadFailed", fail);
    let _ = std::fs::remove_file(&joined);
    let reopened = reopened?;
    for part in parts {
        let mut f = File::open(part).or_fail("KernelNotFound", || format!("opening {}", part.display()))?;
        std::io::copy(&mut f, &mut out).or_fail("KexecLoadFailed", fail)?;
    }
    out.flush().or_fail("KexecLoadFailed", fail)?;
    Ok(reopened)
}

fn load_failure(err: std::io::Error) -> Failure {
    let (reason, why) = match err.raw_os_error() {
        Some(libc::ENOSYS) => ("KexecUnsupported", "this kernel has no kexec_file_load"),
        Some(libc::EPERM) => {
            ("KexecNotPermitted", "kexec is not permitted here (no CAP_SYS_BOOT, or kexec_load_disabled is set)")
        }
        Some(libc::EKEYREJECTED | libc::EBADMSG) => {
            ("KexecSignatureRejected", "the kernel's signature was rejected (secure boot lockdown)")
        }
        Some(libc::ENOEXEC) => ("KexecLoadFailed", "not a kernel this kernel can load"),
        _ => ("KexecLoadFailed", "the running kernel refused the image"),
    };
    Failure::new(reason, format!("kexec_file_load: {why} ({err})"))
}

/// The variable by which kiln's agent offers the handshake: the directory
/// of its files (`/kiln`).
pub const HANDSHAKE_ENV: &str = "KILN_TERMINAL_HANDSHAKE";

/// The handshake when the agent offered it (`offer`: the value of
/// [`HANDSHAKE_ENV`]); without the offer nobody would answer, so the
/// action fires at once, as the hub's kexec does.
pub fn handshake_if_offered(offer: Option<OsString>) -> Result<()> {
    match offer.filter(|dir| !dir.is_empty()) {
        Some(dir) => handshake(Path::new(&dir)),
        None => Ok(()),
    }
}

/// The terminal-step handshake with the agent: say ready, wait for the go,
/// so the step's success is reported before the machine leaves. Without
/// the directory there is nobody to wait for.
pub fn handshake(kiln: &Path) -> Result<()> {
    if !kiln.is_dir() {
        return Ok(());
    }
    std::fs::write(kiln.join("terminal-ready"), b"")
        .or_fail("KexecFailed", || format!("writing {}", kiln.join("terminal-ready").display()))?;
    log(ACTION, "kernel loaded; waiting for the agent's go");
    // No timeout: the agent enforces the action's.
    while !kiln.join("terminal-go").exists() {
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn config(kernel: Option<&str>, cmdline: Option<&str>) -> Config {
        Config {
            device: "/dev/null".into(),
            fs_type: None,
            kernel: kernel.map(str::to_string),
            initrd: None,
            cmdline: cmdline.map(str::to_string),
            grub_cfgs: crate::config::GRUB_CFG_DEFAULTS.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn kernel_paths_fall_back_to_a_separate_boot_and_follow_links_inside() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("boot")).unwrap();
        std::fs::write(r.join("boot/vmlinuz-6"), b"k").unwrap();
        symlink("boot/vmlinuz-6", r.join("vmlinuz")).unwrap();
        symlink("/boot/vmlinuz-6", r.join("boot/abs")).unwrap();
        assert_eq!(find(r, "/boot/vmlinuz-6").unwrap(), r.join("boot/vmlinuz-6"));
        assert_eq!(find(r, "/vmlinuz-6").unwrap(), r.join("boot/vmlinuz-6"));
        assert_eq!(find(r, "/vmlinuz").unwrap(), r.join("boot/vmlinuz-6"));
        assert_eq!(find(r, "/boot/abs").unwrap(), r.join("boot/vmlinuz-6"), "absolute links stay on the disk");
        assert_eq!(find(r, "/vmlinuz-7").unwrap_err().reason, "KernelNotFound");
        symlink("/etc/hostname", r.join("boot/escape")).unwrap();
        assert_eq!(find(r, "/boot/escape").unwrap_err().reason, "KernelNotFound", "not the container's file");
        symlink("loop", r.join("loop")).unwrap();
        assert_eq!(resolve(r, "loop"), None);
        assert_eq!(resolve(r, "boot/../../../vmlinuz").unwrap(), r.join("boot/vmlinuz-6"), "`..` stops at the root");
    }

    #[test]
    fn grub_gives_kernel_initrd_and_args_unless_overridden() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("boot/grub")).unwrap();
        for f in ["boot/vmlinuz", "boot/ucode.img", "boot/initrd.img"] {
            std::fs::write(r.join(f), f).unwrap();
        }
        std::fs::write(
            r.join("boot/grub/grub.cfg"),
            "menuentry 'os' {\n linux (hd0,gpt2)/boot/vmlinuz root=/dev/vda2 ro\n initrd /boot/ucode.img /initrd.img\n}\n",
        )
        .unwrap();
        let b = choose(r, &config(None, None)).unwrap();
        assert_eq!(b.kernel, r.join("boot/vmlinuz"));
        assert_eq!(b.initrds, [r.join("boot/ucode.img"), r.join("boot/initrd.img")]);
        assert_eq!(b.cmdline, "root=/dev/vda2 ro");
        assert_eq!(choose(r, &config(None, Some("console=ttyS0"))).unwrap().cmdline, "console=ttyS0");
        let b = choose(r, &config(Some("boot/initrd.img"), None)).unwrap();
        assert_eq!((b.kernel, b.initrds, b.cmdline), (r.join("boot/initrd.img"), vec![], String::new()));
        let mut c = config(None, None);
        c.grub_cfgs = vec!["boot/grub/missing.cfg".into()];
        let err = choose(r, &c).unwrap_err();
        assert_eq!(err.reason, "GrubConfigMissing");
        assert!(err.message.contains("boot/grub/missing.cfg"), "{}", err.message);
        std::fs::write(r.join("boot/grub/grub.cfg"), "menuentry 'x' {\n").unwrap();
        assert_eq!(choose(r, &config(None, None)).unwrap_err().reason, "GrubConfigInvalid");
    }

    #[test]
    fn initrds_are_concatenated() {
        let dir = tempfile::tempdir().unwrap();
        let parts: Vec<PathBuf> = ["a", "b"].iter().map(|n| dir.path().join(n)).collect();
        std::fs::write(&parts[0], b"ucode-cpio").unwrap();
        std::fs::write(&parts[1], b"initramfs-cpio").unwrap();
        let mut joined = join_initrds(&parts).unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut joined, &mut text).unwrap();
        assert_eq!(text, "ucode-cpioinitramfs-cpio");
    }

    #[test]
    fn errnos_map_to_reasons() {
        let reason = |e| load_failure(std::io::Error::from_raw_os_error(e)).reason;
        assert_eq!(reason(libc::ENOSYS), "KexecUnsupported");
        assert_eq!(reason(libc::EPERM), "KexecNotPermitted");
        assert_eq!(reason(libc::EKEYREJECTED), "KexecSignatureRejected");
        assert_eq!(reason(libc::EBADMSG), "KexecSignatureRejected");
        assert_eq!(reason(libc::ENOEXEC), "KexecLoadFailed");
        assert!(load_failure(std::io::Error::from_raw_os_error(libc::ENOEXEC)).message.contains("not a kernel"));
    }

    #[test]
    fn handshake_waits_for_go() {
        let kiln = tempfile::tempdir().unwrap();
        let dir = kiln.path().to_path_buf();
        let t = std::thread::spawn(move || handshake(&dir));
        let ready = kiln.path().join("terminal-ready");
        while !ready.exists() {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(120));
        assert!(!t.is_finished(), "fired before the go");
        std::fs::write(kiln.path().join("terminal-go"), b"").unwrap();
        t.join().unwrap().unwrap();
        handshake(&kiln.path().join("absent")).unwrap();
    }

    #[test]
    fn without_the_offer_it_does_not_wait() {
        let kiln = tempfile::tempdir().unwrap();
        handshake_if_offered(None).unwrap();
        handshake_if_offered(Some(OsString::new())).unwrap();
        assert!(!kiln.path().join("terminal-ready").exists());
        // Offered: it says it is ready and waits for the go.
        let offer = kiln.path().as_os_str().to_os_string();
        let t = std::thread::spawn(move || handshake_if_offered(Some(offer)));
        while !kiln.path().join("terminal-ready").exists() {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!t.is_finished(), "fired before the go");
        std::fs::write(kiln.path().join("terminal-go"), b"").unwrap();
        t.join().unwrap().unwrap();
    }
}
