//! grub2disk: the hub's GRUB installer. It mounts `GRUB_DISK` (the root
//! filesystem, type `FS_TYPE`) at `/mnt/chrootdir`, binds this image's
//! `/proc /mnt /dev /sys /etc /bin /sbin /var /usr /lib /tmp` (and `/lib64`,
//! where Debian's loader lives) over it, chroots there and runs
//! `grub-install GRUB_INSTALL_PATH` and `grub-mkconfig -o /boot/grub/grub.cfg`:
//! the image's GRUB, writing into the target's `/boot`.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `GRUB_INSTALL_PATH` | required | the disk GRUB is installed to (`/dev/sda`) |
//! | `GRUB_DISK` | required | the partition holding the root filesystem with `/boot` (`/dev/sda1`) |
//! | `FS_TYPE` | none | its filesystem type; unset, it is bind-mounted (as the hub does) |
//!
//! Unlike the hub, a variable left empty is an error naming it, and the
//! tools' output is logged.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use kiln_action_kit::env::Env;
use kiln_action_kit::{Failure, OrFail, Result, log};
use nix::mount::{MsFlags, mount};

const ACTION: &str = "grub2disk";
const CHROOT: &str = "/mnt/chrootdir";
/// The hub's list, plus /lib64 (Debian's dynamic loader).
const BIND: &[&str] =
    &["/proc", "/mnt", "/dev", "/sys", "/etc", "/bin", "/sbin", "/var", "/usr", "/lib", "/lib64", "/tmp"];

#[derive(Debug, PartialEq)]
struct Config {
    install_path: String,
    disk: String,
    fs_type: Option<String>,
}

impl Config {
    fn from_env(mut env: Env) -> Result<Config> {
        let install_path = env.required("GRUB_INSTALL_PATH");
        let disk = env.required("GRUB_DISK");
        let fs_type = env.optional("FS_TYPE");
        env.finish()?;
        Ok(Config { install_path, disk, fs_type })
    }

    /// The commands run inside the chroot, as the hub runs them (through
    /// `/bin/sh -c`, so `GRUB_INSTALL_PATH` may carry grub-install options).
    fn commands(&self) -> [String; 2] {
        [
            format!("/usr/sbin/grub-install {}", self.install_path),
            "/usr/sbin/grub-mkconfig -o /boot/grub/grub.cfg".into(),
        ]
    }
}

/// Which of the image's directories exist to be bound (a Debian image has
/// no /sbin or /var of its own here; the hub's Alpine one has no /lib64).
fn bind_plan(exists: impl Fn(&Path) -> bool) -> Vec<(PathBuf, PathBuf)> {
    BIND.iter()
        .filter(|d| exists(Path::new(d)))
        .map(|d| (PathBuf::from(d), Path::new(CHROOT).join(d.trim_start_matches('/'))))
        .collect()
}

fn mount_at(source: &Path, target: &Path, fs_type: Option<&str>) -> Result<()> {
    std::fs::create_dir_all(target).or_fail("MountFailed", || format!("creating {}", target.display()))?;
    let flags = if fs_type.is_some() { MsFlags::empty() } else { MsFlags::MS_BIND };
    mount(Some(source), target, fs_type, flags, None::<&str>)
        .or_fail("MountFailed", || format!("mounting {} on {}", source.display(), target.display()))
}

fn run_in_chroot(cmd: &str) -> Result<()> {
    log(ACTION, format!("+ {cmd}"));
    let status = Command::new("/bin/sh")
        .args(["-c", cmd])
        .stdin(Stdio::null())
        .status()
        .or_fail("GrubFailed", || format!("running {cmd}"))?;
    if !status.success() {
        return Err(Failure::new("GrubFailed", format!("[{cmd}] exited with {status}")));
    }
    Ok(())
}

fn install(config: &Config) -> Result<()> {
    let root = Path::new(CHROOT);
    mount_at(Path::new(&config.disk), root, config.fs_type.as_deref())?;
    log(ACTION, format!("mounted [{}] -> [{CHROOT}]", config.disk));
    for (source, target) in bind_plan(|p| p.is_dir()) {
        mount_at(&source, &target, None)?;
    }
    nix::unistd::chroot(root).or_fail("ChrootFailed", || format!("chroot {CHROOT}"))?;
    std::env::set_current_dir("/").or_fail("ChrootFailed", || "cd /".into())?;
    let result = config.commands().iter().try_for_each(|c| run_in_chroot(c));
    // The mounts go with the container; their data must reach the disk.
    nix::unistd::sync();
    result?;
    log(ACTION, format!("grub successfully written on [{}]", config.install_path));
    Ok(())
}

fn main() -> ExitCode {
    kiln_action_kit::run(ACTION, || install(&Config::from_env(Env::from_process())?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config> {
        Config::from_env(Env::from_pairs(vars.iter().copied()))
    }

    #[test]
    fn environment_contract_and_commands() {
        let c = config(&[("GRUB_INSTALL_PATH", "/dev/sda"), ("GRUB_DISK", "/dev/sda1"), ("FS_TYPE", "ext4")]).unwrap();
        assert_eq!(c.fs_type.as_deref(), Some("ext4"));
        assert_eq!(c.commands(), ["/usr/sbin/grub-install /dev/sda", "/usr/sbin/grub-mkconfig -o /boot/grub/grub.cfg"]);
        let c =
            config(&[("GRUB_INSTALL_PATH", "--target=i386-pc /dev/sda"), ("GRUB_DISK", "/dev/sda1"), ("FS_TYPE", "")])
                .unwrap();
        assert_eq!(c.fs_type, None, "empty FS_TYPE: a bind mount, as the hub");
        assert_eq!(c.commands()[0], "/usr/sbin/grub-install --target=i386-pc /dev/sda");
        let err = config(&[("FS_TYPE", "xfs")]).unwrap_err();
        assert_eq!(err.exit_code, 2);
        assert_eq!(err.message, "GRUB_INSTALL_PATH: is required; GRUB_DISK: is required");
    }

    #[test]
    fn binds_are_the_hubs_list_under_the_chroot() {
        let all = bind_plan(|_| true);
        assert_eq!(all.len(), BIND.len());
        assert_eq!(all[0], (PathBuf::from("/proc"), PathBuf::from("/mnt/chrootdir/proc")));
        let some = bind_plan(|p| p != Path::new("/sbin") && p != Path::new("/var"));
        assert!(!some.iter().any(|(s, _)| s == Path::new("/sbin") || s == Path::new("/var")));
    }
}
