//! Making filesystems: the `format` action, and the `partition` action's
//! per-partition filesystems. The standard mkfs tools do the work (they ship
//! in both images); this decides their arguments and checks what a template
//! gave before anything runs.

use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_action_kit::env::Env;
use kiln_action_kit::{Failure, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsType {
    Ext4,
    Ext3,
    Ext2,
    Vfat,
    /// vfat forced to FAT32 (`fat32`), as an EFI system partition wants;
    /// plain vfat lets mkfs.vfat pick FAT12/16 on small devices.
    Fat32,
    Xfs,
    Swap,
}

pub const FS_TYPES: &str = "ext4, ext3, ext2, vfat, fat32, xfs, swap";

impl FsType {
    pub fn parse(s: &str) -> std::result::Result<FsType, String> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "ext4" => FsType::Ext4,
            "ext3" => FsType::Ext3,
            "ext2" => FsType::Ext2,
            "vfat" | "fat" => FsType::Vfat,
            "fat32" => FsType::Fat32,
            "xfs" => FsType::Xfs,
            "swap" => FsType::Swap,
            other => return Err(format!("{other:?} is not a filesystem kiln formats (use one of {FS_TYPES})")),
        })
    }

    /// Longest label the on-disk format stores, in bytes.
    pub fn max_label(self) -> usize {
        match self {
            FsType::Ext4 | FsType::Ext3 | FsType::Ext2 | FsType::Swap => 16,
            FsType::Vfat | FsType::Fat32 => 11,
            FsType::Xfs => 12,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            FsType::Ext4 => "ext4",
            FsType::Ext3 => "ext3",
            FsType::Ext2 => "ext2",
            FsType::Vfat => "vfat",
            FsType::Fat32 => "fat32",
            FsType::Xfs => "xfs",
            FsType::Swap => "swap",
        }
    }

    fn is_fat(self) -> bool {
        matches!(self, FsType::Vfat | FsType::Fat32)
    }
}

/// Which field of a [`Mkfs`] was wrong, so each caller can name it its own
/// way (`LABEL` for the format action, `partitions[2].label` for partition).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Label,
    Uuid,
}

/// One mkfs run, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Mkfs {
    pub fs: FsType,
    pub label: Option<String>,
    pub uuid: Option<String>,
    pub extra: Vec<String>,
}

impl Mkfs {
    /// Checks the label and uuid for `fs`.
    pub fn new(
        fs: FsType,
        label: Option<String>,
        uuid: Option<String>,
        extra: Vec<String>,
    ) -> std::result::Result<Mkfs, (Field, String)> {
        if let Some(l) = &label {
            if l.is_empty() {
                return Err((Field::Label, "must not be empty (leave it out for no label)".into()));
            }
            if l.len() > fs.max_label() {
                return Err((
                    Field::Label,
                    format!(
                        "{l:?} is {} bytes, longer than the {} bytes {} stores",
                        l.len(),
                        fs.max_label(),
                        fs.name()
                    ),
                ));
            }
            if l.chars().any(|c| c.is_control()) {
                return Err((Field::Label, format!("{l:?} contains control characters")));
            }
        }
        if let Some(u) = &uuid {
            let ok = if fs.is_fat() {
                // FAT has a 32-bit volume id, written XXXX-XXXX.
                let hex = u.replace('-', "");
                hex.len() == 8 && hex.chars().all(|c| c.is_ascii_hexdigit())
            } else {
                is_uuid(u)
            };
            if !ok {
                let want = if fs.is_fat() {
                    "a FAT volume id like 1A2B-3C4D"
                } else {
                    "a UUID like 0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
                };
                return Err((Field::Uuid, format!("{u:?} is not {want}")));
            }
        }
        Ok(Mkfs { fs, label, uuid, extra })
    }

    /// The command line (argv) that formats `device`. mkfs is always forced
    /// (where the tool has a switch for it): this is a provisioning tool, and
    /// re-imaging a machine means writing over whatever was there, whole
    /// disks included.
    pub fn argv(&self, device: &Path) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        let label = self.label.as_deref();
        let uuid = self.uuid.as_deref();
        match self.fs {
            FsType::Ext4 | FsType::Ext3 | FsType::Ext2 => {
                a.extend(["mke2fs".into(), "-t".into(), self.fs.name().into(), "-F".into(), "-q".into()]);
                push_opt(&mut a, "-L", label);
                push_opt(&mut a, "-U", uuid);
            }
            FsType::Vfat | FsType::Fat32 => {
                // mkfs.vfat has no force switch; it never asks.
                a.push("mkfs.vfat".into());
                if self.fs == FsType::Fat32 {
                    a.extend(["-F".into(), "32".into()]);
                }
                push_opt(&mut a, "-n", label);
                push_opt(&mut a, "-i", uuid.map(|u| u.replace('-', "")).as_deref());
            }
            FsType::Xfs => {
                a.extend(["mkfs.xfs".into(), "-f".into(), "-q".into()]);
                push_opt(&mut a, "-L", label);
                if let Some(u) = uuid {
                    a.extend(["-m".into(), format!("uuid={u}")]);
                }
            }
            FsType::Swap => {
                a.extend(["mkswap".into(), "-f".into()]);
                push_opt(&mut a, "-L", label);
                push_opt(&mut a, "-U", uuid);
            }
        }
        a.extend(self.extra.iter().cloned());
        a.push(device.display().to_string());
        a
    }

    /// Formats `device`; `action` names who is logging.
    pub fn run(&self, action: &str, device: &Path) -> Result<()> {
        run_tool(action, &self.argv(device), "MkfsFailed")
    }

    /// One line for logs: `ext4 labelled "root"`.
    pub fn describe(&self) -> String {
        let mut s = self.fs.name().to_string();
        if let Some(l) = &self.label {
            s.push_str(&format!(" labelled {l:?}"));
        }
        if let Some(u) = &self.uuid {
            s.push_str(&format!(" with uuid {u}"));
        }
        s
    }
}

fn push_opt(a: &mut Vec<String>, flag: &str, value: Option<&str>) {
    if let Some(v) = value {
        a.push(flag.into());
        a.push(v.into());
    }
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups.iter().all(|g| g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// The format action's configuration, read from its environment.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub device: PathBuf,
    pub wipe: bool,
    pub mkfs: Mkfs,
}

impl Config {
    /// Reads `DEST_DISK`, `FS_TYPE`, `LABEL`, `FS_UUID`, `WIPE` and
    /// `MKFS_OPTIONS`; every problem is recorded in `env` (so
    /// [`Env::finish`] reports them all), and then this is `None`.
    pub fn from_env(env: &mut Env) -> Option<Config> {
        let device = env.parse_with("DEST_DISK", true, kiln_action_kit::disk::resolve);
        let fs = env.parse_with("FS_TYPE", true, FsType::parse);
        let label = env.optional("LABEL");
        let uuid = env.optional("FS_UUID").map(|u| u.trim().to_string());
        let wipe = env.flag("WIPE", false);
        let extra = env.parse_with("MKFS_OPTIONS", false, |v| {
            shell_words::split(v).map_err(|e| format!("cannot split {v:?} like a shell: {e}"))
        });
        let mkfs = fs.and_then(|fs| match Mkfs::new(fs, label, uuid, extra.clone().unwrap_or_default()) {
            Ok(m) => Some(m),
            Err((field, msg)) => {
                env.invalid(if field == Field::Label { "LABEL" } else { "FS_UUID" }, msg);
                None
            }
        });
        match (device, mkfs, extra.is_some() || env.get("MKFS_OPTIONS").is_none()) {
            (Some(device), Some(mkfs), true) => Some(Config { device, wipe, mkfs }),
            _ => None,
        }
    }
}

/// Erases every filesystem, RAID and partition-table signature on `device`.
pub fn wipe(action: &str, device: &Path) -> Result<()> {
    run_tool(action, &["wipefs".into(), "--all".into(), "--force".into(), device.display().to_string()], "WipeFailed")
}

/// Runs a tool; on failure the message carries what it printed (mkfs.xfs
/// says why on stdout, the others on stderr).
pub fn run_tool(action: &str, argv: &[String], reason: &'static str) -> Result<()> {
    kiln_action_kit::log(action, format_args!("running {}", shell_words::join(argv)));
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .output()
        .map_err(|e| Failure::new(reason, format!("cannot run {}: {e}", argv[0])))?;
    if !out.status.success() {
        let said: Vec<String> = [&out.stderr, &out.stdout]
            .iter()
            .map(|b| String::from_utf8_lossy(b).trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        return Err(Failure::new(
            reason,
            format!("{} failed ({}): {}", shell_words::join(argv), out.status, said.join("\n")),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mkfs(fs: &str, label: Option<&str>, uuid: Option<&str>) -> std::result::Result<Mkfs, (Field, String)> {
        Mkfs::new(FsType::parse(fs).unwrap(), label.map(Into::into), uuid.map(Into::into), vec![])
    }

    #[test]
    fn arguments_per_filesystem() {
        let dev = Path::new("/dev/sda1");
        let m = mkfs("ext4", Some("root"), Some("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")).unwrap();
        assert_eq!(
            m.argv(dev).join(" "),
            "mke2fs -t ext4 -F -q -L root -U 0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0 /dev/sda1"
        );
        assert_eq!(mkfs("ext2", None, None).unwrap().argv(dev).join(" "), "mke2fs -t ext2 -F -q /dev/sda1");
        assert_eq!(
            mkfs("fat32", Some("EFI"), Some("ABCD-1234")).unwrap().argv(dev).join(" "),
            "mkfs.vfat -F 32 -n EFI -i ABCD1234 /dev/sda1"
        );
        assert_eq!(mkfs("vfat", Some("EFI"), None).unwrap().argv(dev).join(" "), "mkfs.vfat -n EFI /dev/sda1");
        assert_eq!(
            mkfs("xfs", Some("data"), Some("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")).unwrap().argv(dev).join(" "),
            "mkfs.xfs -f -q -L data -m uuid=0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0 /dev/sda1"
        );
        assert_eq!(mkfs("swap", Some("swap"), None).unwrap().argv(dev).join(" "), "mkswap -f -L swap /dev/sda1");
    }

    #[test]
    fn extra_options_come_before_the_device() {
        let m = Mkfs::new(FsType::Ext4, None, None, vec!["-E".into(), "lazy_itable_init=0".into()]).unwrap();
        assert_eq!(m.argv(Path::new("/dev/vdb")).join(" "), "mke2fs -t ext4 -F -q -E lazy_itable_init=0 /dev/vdb");
    }

    #[test]
    fn filesystem_names() {
        assert_eq!(FsType::parse("EXT4").unwrap(), FsType::Ext4);
        assert_eq!(FsType::parse("fat").unwrap(), FsType::Vfat);
        assert_eq!(FsType::parse("fat32").unwrap(), FsType::Fat32);
        let e = FsType::parse("ntfs").unwrap_err();
        assert!(e.contains("\"ntfs\"") && e.contains(FS_TYPES), "{e}");
    }

    #[test]
    fn labels_are_checked_per_filesystem() {
        for (fs, max) in
            [("ext4", 16), ("ext3", 16), ("ext2", 16), ("swap", 16), ("vfat", 11), ("fat32", 11), ("xfs", 12)]
        {
            assert!(mkfs(fs, Some(&"L".repeat(max)), None).is_ok(), "{fs} takes {max}");
            let (field, msg) = mkfs(fs, Some(&"L".repeat(max + 1)), None).unwrap_err();
            assert_eq!(field, Field::Label);
            assert!(msg.contains(&format!("the {max} bytes")), "{msg}");
        }
        // Bytes, not characters: that is what the on-disk field holds.
        assert_eq!(mkfs("xfs", Some("éééééé1"), None).unwrap_err().0, Field::Label);
        assert_eq!(mkfs("ext4", Some("a\nb"), None).unwrap_err().0, Field::Label);
        assert_eq!(mkfs("ext4", Some(""), None).unwrap_err().0, Field::Label);
    }

    #[test]
    fn uuids_are_checked_per_filesystem() {
        assert!(mkfs("ext4", None, Some("0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0")).is_ok());
        assert_eq!(mkfs("ext4", None, Some("not-a-uuid")).unwrap_err().0, Field::Uuid);
        assert_eq!(mkfs("xfs", None, Some("0f1e2d3c4b5a69788796a5b4c3d2e1f0")).unwrap_err().0, Field::Uuid);
        assert!(mkfs("vfat", None, Some("1a2b-3c4d")).is_ok());
        let (field, msg) = mkfs("vfat", None, Some("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")).unwrap_err();
        assert_eq!(field, Field::Uuid);
        assert!(msg.contains("FAT volume id"), "{msg}");
    }

    fn device() -> tempfile::NamedTempFile {
        tempfile::NamedTempFile::new().unwrap()
    }

    #[test]
    fn config_from_the_environment() {
        let dev = device();
        let path = dev.path().to_str().unwrap();
        let mut env = Env::from_pairs([
            ("DEST_DISK", path),
            ("FS_TYPE", "ext4"),
            ("LABEL", "root"),
            ("WIPE", "true"),
            ("MKFS_OPTIONS", "-E 'root_owner=0:0' -m 1"),
        ]);
        let c = Config::from_env(&mut env).unwrap();
        env.finish().unwrap();
        assert_eq!(c.device, dev.path().canonicalize().unwrap());
        assert!(c.wipe);
        assert_eq!(c.mkfs.label.as_deref(), Some("root"));
        assert_eq!(c.mkfs.extra, ["-E", "root_owner=0:0", "-m", "1"]);
    }

    #[test]
    fn every_bad_variable_is_named_at_once() {
        let mut env = Env::from_pairs([
            ("DEST_DISK", "/dev/disk/by-id/kiln-no-such-disk"),
            ("FS_TYPE", "vfat"),
            ("LABEL", "TWELVE_CHARS"),
            ("FS_UUID", "nope"),
            ("WIPE", "perhaps"),
            ("MKFS_OPTIONS", "-O 'unterminated"),
        ]);
        assert!(Config::from_env(&mut env).is_none());
        let msg = env.finish().unwrap_err().message;
        for needle in
            ["DEST_DISK: /dev/disk/by-id/kiln-no-such-disk", "LABEL: ", "WIPE: ", "MKFS_OPTIONS: cannot split"]
        {
            assert!(msg.contains(needle), "{needle} not in {msg}");
        }
        // The label is checked first; the uuid gets its own run.
        let mut env = Env::from_pairs([("DEST_DISK", "/"), ("FS_TYPE", "xfs"), ("FS_UUID", "nope")]);
        assert!(Config::from_env(&mut env).is_none());
        assert!(env.finish().unwrap_err().message.contains("FS_UUID: \"nope\" is not a UUID"));
        let mut env = Env::from_pairs([("FS_TYPE", "btrfs")]);
        assert!(Config::from_env(&mut env).is_none());
        let msg = env.finish().unwrap_err().message;
        assert!(msg.contains("DEST_DISK: is required") && msg.contains("FS_TYPE: \"btrfs\""), "{msg}");
    }

    #[test]
    fn a_failing_tool_reports_what_it_said() {
        let argv: Vec<String> = ["sh", "-c", "echo on-stdout; echo on-stderr >&2; exit 3"].map(String::from).into();
        let f = run_tool("format", &argv, "MkfsFailed").unwrap_err();
        assert_eq!(f.reason, "MkfsFailed");
        assert!(f.message.contains("on-stderr\non-stdout") && f.message.contains("exit status: 3"), "{}", f.message);
        let f = run_tool("format", &["/nonexistent/mkfs".into()], "MkfsFailed").unwrap_err();
        assert!(f.message.starts_with("cannot run /nonexistent/mkfs"), "{}", f.message);
    }
}
