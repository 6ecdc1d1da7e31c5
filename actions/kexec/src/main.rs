//! kexec: loads a kernel (and initrd) from a disk with kexec_file_load and
//! jumps into it, skipping firmware and bootloader. With no KERNEL_PATH the
//! default entry of the disk's grub.cfg is used. A terminal step: it tells
//! the agent it is ready and waits for the go before it fires, so its
//! SUCCESS is reported before the machine leaves (the README's handshake).

mod grub;

use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use kiln_action_kit::env::Env;
use kiln_action_kit::mount::{Mounts, inside};
use kiln_action_kit::progress::bytes;
use kiln_action_kit::{Failure, OrFail, Result, log};

const ACTION: &str = "kexec";
const KEXEC_FILE_NO_INITRD: libc::c_ulong = 0x4;

#[derive(Debug)]
struct Config {
    device: PathBuf,
    fs_type: Option<String>,
    kernel: Option<String>,
    initrd: Option<String>,
    cmdline: Option<String>,
    grub_cfg: String,
}

impl Config {
    fn from_env(mut env: Env) -> Result<Config> {
        let device = env.parse_with("BLOCK_DEVICE", true, kiln_action_kit::disk::resolve);
        let fs_type = env.optional("FS_TYPE");
        let kernel = env.optional("KERNEL_PATH");
        let initrd = env.optional("INITRD_PATH");
        if initrd.is_some() && kernel.is_none() {
            env.invalid("INITRD_PATH", "needs KERNEL_PATH (without it, grub.cfg names both)");
        }
        let cmdline = env.raw("CMD_LINE").map(str::to_string);
        let grub_cfg = env.optional("GRUBCFG_PATH").unwrap_or_else(|| "boot/grub/grub.cfg".into());
        env.finish()?;
        Ok(Config { device: device.expect("checked by finish"), fs_type, kernel, initrd, cmdline, grub_cfg })
    }
}

/// What will be loaded.
struct Boot {
    kernel: PathBuf,
    initrds: Vec<PathBuf>,
    cmdline: String,
}

fn main() -> ExitCode {
    kiln_action_kit::run(ACTION, || {
        let config = Config::from_env(Env::from_process())?;
        let root = PathBuf::from(format!("/tmp/kiln-{ACTION}-{}", std::process::id()));
        let mut mounts = Mounts::new();
        mounts.mount_device(&config.device, config.fs_type.as_deref(), &root)?;
        // The kernel copies the images at load time: once loaded, the disk
        // can be unmounted before the jump.
        let loaded = choose(&root, &config).and_then(|boot| load(&boot));
        let unmounted = mounts.unmount_all();
        let _ = std::fs::remove_dir(&root);
        loaded?;
        unmounted?;
        handshake(Path::new("/kiln"))?;
        log(ACTION, "jumping into the new kernel");
        nix::unistd::sync();
        let e = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_KEXEC).unwrap_err();
        Err(Failure::new("KexecFailed", format!("reboot(LINUX_REBOOT_CMD_KEXEC): {e}")))
    })
}

fn choose(root: &Path, c: &Config) -> Result<Boot> {
    let (kernel, initrds, args) = match &c.kernel {
        Some(k) => (k.clone(), c.initrd.iter().cloned().collect(), String::new()),
        None => {
            let cfg_path =
                inside(root, &c.grub_cfg).map_err(|e| Failure::new("InvalidConfig", format!("GRUBCFG_PATH: {e}")))?;
            let text = std::fs::read_to_string(&cfg_path)
                .or_fail("GrubConfigMissing", || format!("KERNEL_PATH is empty and {} cannot be read", c.grub_cfg))?;
            let entry = grub::default_entry(&text)
                .map_err(|e| Failure::new("GrubConfigInvalid", format!("{}: {e}", c.grub_cfg)))?;
            log(ACTION, format_args!("grub.cfg default entry: {:?}", entry.title));
            (entry.kernel, entry.initrds, entry.args)
        }
    };
    let cmdline = c.cmdline.clone().unwrap_or(args);
    let boot = Boot {
        kernel: find(root, &kernel)?,
        initrds: initrds.iter().map(|i| find(root, i)).collect::<Result<_>>()?,
        cmdline,
    };
    log(
        ACTION,
        format_args!(
            "kernel {} initrd {} cmdline {:?}",
            boot.kernel.strip_prefix(root).unwrap_or(&boot.kernel).display(),
            if boot.initrds.is_empty() {
                "(none)".to_string()
            } else {
                boot.initrds
                    .iter()
                    .map(|i| i.strip_prefix(root).unwrap_or(i).display().to_string())
                    .collect::<Vec<_>>()
                    .join("+")
            },
            boot.cmdline
        ),
    );
    Ok(boot)
}

/// A path from grub.cfg or the environment; grub paths are relative to the
/// partition grub read them from, which is /boot when it is separate.
fn find(root: &Path, path: &str) -> Result<PathBuf> {
    let p = inside(root, path).map_err(|e| Failure::new("InvalidConfig", e))?;
    if p.is_file() {
        return Ok(p);
    }
    let under_boot = inside(&root.join("boot"), path).map_err(|e| Failure::new("InvalidConfig", e))?;
    if under_boot.is_file() {
        return Ok(under_boot);
    }
    Err(Failure::new("KernelNotFound", format!("{path} is not on the disk (looked in / and /boot)")))
}

fn load(boot: &Boot) -> Result<()> {
    let kernel = File::open(&boot.kernel).or_fail("KernelNotFound", || format!("opening {}", boot.kernel.display()))?;
    // Several initrds (microcode + initramfs) are concatenated, as grub
    // does: the kernel unpacks concatenated cpio archives in turn.
    let initrd = match boot.initrds.as_slice() {
        [] => None,
        [one] => Some(File::open(one).or_fail("KernelNotFound", || format!("opening {}", one.display()))?),
        many => {
            let joined = PathBuf::from(format!("/tmp/kiln-kexec-initrd-{}", std::process::id()));
            let mut out = File::create(&joined).or_fail("KexecLoadFailed", || "joining the initrds".into())?;
            for i in many {
                let mut f = File::open(i).or_fail("KernelNotFound", || format!("opening {}", i.display()))?;
                std::io::copy(&mut f, &mut out).or_fail("KexecLoadFailed", || "joining the initrds".into())?;
            }
            out.flush().or_fail("KexecLoadFailed", || "joining the initrds".into())?;
            let f = File::open(&joined).or_fail("KexecLoadFailed", || "joining the initrds".into())?;
            let _ = std::fs::remove_file(&joined);
            Some(f)
        }
    };
    let cmdline = CString::new(boot.cmdline.clone())
        .map_err(|_| Failure::new("InvalidConfig", "CMD_LINE contains a NUL byte"))?;
    let size = kernel.metadata().map(|m| m.len()).unwrap_or(0);
    log(ACTION, format_args!("loading {} kernel with kexec_file_load", bytes(size)));
    // SAFETY: the fds are open for the call, the command line pointer and
    // its length (NUL included) come from one CString.
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
        let err = std::io::Error::last_os_error();
        let (reason, why) = match err.raw_os_error() {
            Some(libc::ENOSYS) => ("KexecUnsupported", "this kernel has no kexec_file_load".to_string()),
            Some(libc::EPERM) => {
                ("KexecNotPermitted", "kexec is not permitted (CAP_SYS_BOOT, or kexec_load_disabled)".into())
            }
            Some(libc::EKEYREJECTED | libc::EBADMSG) => {
                ("KexecSignatureRejected", "the kernel's signature was rejected (secure boot lockdown)".into())
            }
            Some(libc::ENOEXEC) => ("KexecLoadFailed", "not a kernel image this kernel can load".into()),
            _ => ("KexecLoadFailed", "the kernel refused the image".into()),
        };
        return Err(Failure::new(reason, format!("kexec_file_load: {why} ({err})")));
    }
    log(ACTION, "kernel loaded");
    Ok(())
}

/// The terminal-step handshake with the agent; outside kiln, fire at once.
fn handshake(kiln: &Path) -> Result<()> {
    if !kiln.is_dir() {
        return Ok(());
    }
    std::fs::write(kiln.join("terminal-ready"), b"")
        .or_fail("KexecFailed", || "writing /kiln/terminal-ready".into())?;
    log(ACTION, "ready; waiting for the agent to report success");
    // No timeout here: the action's timeout, enforced by the agent, bounds it.
    while !kiln.join("terminal-go").exists() {
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_paths_fall_back_to_a_separate_boot() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("boot")).unwrap();
        std::fs::write(root.path().join("boot/vmlinuz-6"), b"k").unwrap();
        assert_eq!(find(root.path(), "/boot/vmlinuz-6").unwrap(), root.path().join("boot/vmlinuz-6"));
        assert_eq!(find(root.path(), "/vmlinuz-6").unwrap(), root.path().join("boot/vmlinuz-6"));
        assert_eq!(find(root.path(), "/vmlinuz-7").unwrap_err().reason, "KernelNotFound");
    }

    #[test]
    fn grub_gives_kernel_initrd_and_args_unless_overridden() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("boot/grub")).unwrap();
        std::fs::write(root.path().join("boot/vmlinuz"), b"k").unwrap();
        std::fs::write(root.path().join("boot/initrd.img"), b"i").unwrap();
        std::fs::write(
            root.path().join("boot/grub/grub.cfg"),
            "menuentry 'os' {\n linux /boot/vmlinuz root=/dev/vda2 ro\n initrd /boot/initrd.img\n}\n",
        )
        .unwrap();
        let mut c = Config {
            device: "/dev/null".into(),
            fs_type: None,
            kernel: None,
            initrd: None,
            cmdline: None,
            grub_cfg: "boot/grub/grub.cfg".into(),
        };
        let b = choose(root.path(), &c).unwrap();
        assert_eq!(b.kernel, root.path().join("boot/vmlinuz"));
        assert_eq!(b.initrds, [root.path().join("boot/initrd.img")]);
        assert_eq!(b.cmdline, "root=/dev/vda2 ro");
        c.cmdline = Some("console=ttyS0".into());
        assert_eq!(choose(root.path(), &c).unwrap().cmdline, "console=ttyS0");
        c.grub_cfg = "boot/grub/missing.cfg".into();
        assert_eq!(choose(root.path(), &c).err().unwrap().reason, "GrubConfigMissing");
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
        assert!(!t.is_finished());
        std::fs::write(kiln.path().join("terminal-go"), b"").unwrap();
        t.join().unwrap().unwrap();
    }
}
