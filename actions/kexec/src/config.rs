//! The environment contract: Tinkerbell's kexec variables.

use std::path::{Path, PathBuf};

use kiln_action_kit::Result;
use kiln_action_kit::env::Env;
use kiln_action_kit::mount::inside;

/// Where grub.cfg is looked for when GRUBCFG_PATH is not set: Debian and
/// Ubuntu, then a separate /boot partition, then Fedora/RHEL's grub2.
pub const GRUB_CFG_DEFAULTS: [&str; 3] = ["boot/grub/grub.cfg", "grub/grub.cfg", "boot/grub2/grub.cfg"];

#[derive(Debug)]
pub struct Config {
    pub device: PathBuf,
    pub fs_type: Option<String>,
    /// None: the default entry of grub.cfg.
    pub kernel: Option<String>,
    /// Only with `kernel`: without KERNEL_PATH, Tinkerbell's kexec takes
    /// the initrds from grub.cfg and ignores INITRD_PATH, and so does kiln.
    pub initrd: Option<String>,
    /// None: the grub entry's arguments (none with KERNEL_PATH).
    pub cmdline: Option<String>,
    /// Paths relative to the filesystem's root, tried in turn.
    pub grub_cfgs: Vec<String>,
}

fn relative_path(v: &str) -> std::result::Result<String, String> {
    inside(Path::new("/"), v).map(|_| v.trim_start_matches('/').to_string())
}

impl Config {
    pub fn from_env(mut env: Env) -> Result<Config> {
        let device = env.parse_with("BLOCK_DEVICE", true, kiln_action_kit::disk::resolve);
        let fs_type = env.optional("FS_TYPE");
        let kernel = env.parse_with("KERNEL_PATH", false, relative_path);
        // Still checked when it will be ignored: a path leaving the disk is
        // a mistake whatever happens to it.
        let initrd = env.parse_with("INITRD_PATH", false, relative_path).filter(|_| kernel.is_some());
        let cmdline = env.optional("CMD_LINE");
        let grub_cfgs = match env.parse_with("GRUBCFG_PATH", false, relative_path) {
            Some(p) => vec![p],
            None => GRUB_CFG_DEFAULTS.iter().map(|p| p.to_string()).collect(),
        };
        env.finish()?;
        Ok(Config { device: device.expect("checked by finish"), fs_type, kernel, initrd, cmdline, grub_cfgs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn defaults_and_explicit_paths() {
        let c = Config::from_env(env(&[("BLOCK_DEVICE", "/"), ("CMD_LINE", "")])).unwrap();
        assert_eq!((c.kernel, c.initrd, c.cmdline), (None, None, None), "empty is unset");
        assert_eq!(c.grub_cfgs, GRUB_CFG_DEFAULTS);
        let c = Config::from_env(env(&[
            ("BLOCK_DEVICE", "/"),
            ("KERNEL_PATH", "/boot/vmlinuz"),
            ("INITRD_PATH", "boot/initrd.img"),
            ("CMD_LINE", "root=/dev/sda2 console=ttyS0"),
            ("GRUBCFG_PATH", "/efi/grub.cfg"),
        ]))
        .unwrap();
        assert_eq!(c.kernel.as_deref(), Some("boot/vmlinuz"));
        assert_eq!(c.initrd.as_deref(), Some("boot/initrd.img"));
        assert_eq!(c.cmdline.as_deref(), Some("root=/dev/sda2 console=ttyS0"));
        assert_eq!(c.grub_cfgs, ["efi/grub.cfg"]);
    }

    #[test]
    fn every_bad_variable_is_named() {
        let err = Config::from_env(env(&[
            ("KERNEL_PATH", "/boot/../../vmlinuz"),
            ("GRUBCFG_PATH", "../grub.cfg"),
            ("INITRD_PATH", "/initrd"),
        ]))
        .unwrap_err();
        for v in ["BLOCK_DEVICE: is required", "KERNEL_PATH: \"/boot/../../vmlinuz\" must not contain", "GRUBCFG_PATH:"]
        {
            assert!(err.message.contains(v), "{v} missing: {}", err.message);
        }
    }

    /// The hub's contract: INITRD_PATH without KERNEL_PATH is accepted and
    /// grub.cfg decides (the hub ignores it too); empty is unset; the
    /// first grub.cfg tried is the hub's only one.
    #[test]
    fn environment_contract_table() {
        let c = Config::from_env(env(&[("BLOCK_DEVICE", "/"), ("INITRD_PATH", "/boot/initrd.img")])).unwrap();
        assert_eq!((c.kernel, c.initrd), (None, None));
        let c = Config::from_env(env(&[("BLOCK_DEVICE", "/"), ("KERNEL_PATH", "/vmlinuz")])).unwrap();
        assert_eq!((c.kernel.as_deref(), c.initrd), (Some("vmlinuz"), None));
        let c = Config::from_env(env(&[("BLOCK_DEVICE", "/"), ("KERNEL_PATH", ""), ("INITRD_PATH", "")])).unwrap();
        assert_eq!((c.kernel, c.initrd, c.cmdline), (None, None, None));
        assert_eq!(c.grub_cfgs[0], "boot/grub/grub.cfg");
        let err = Config::from_env(env(&[("BLOCK_DEVICE", "/"), ("INITRD_PATH", "/../initrd")])).unwrap_err();
        assert!(err.message.starts_with("INITRD_PATH: "), "{}", err.message);
        let err = Config::from_env(env(&[])).unwrap_err();
        assert_eq!(err.message, "BLOCK_DEVICE: is required");
    }
}
