//! Making filesystems: the `format` action, and the `partition` action's
//! per-partition filesystems. The standard mkfs tools do the work (they ship
//! in both images); this decides their arguments and checks what a template
//! gave before anything runs.

use std::path::Path;
use std::process::Command;

use kiln_action_kit::{Failure, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsType {
    Ext4,
    Ext3,
    Ext2,
    Vfat,
    /// vfat forced to FAT32 (`fat32`), as an EFI system partition wants.
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

    /// Longest label the on-disk format stores.
    fn max_label(self) -> usize {
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
    /// Checks the label and uuid for `fs`; errors name the field.
    pub fn new(
        fs: FsType,
        label: Option<String>,
        uuid: Option<String>,
        extra: Vec<String>,
    ) -> std::result::Result<Mkfs, (&'static str, String)> {
        if let Some(l) = &label {
            if l.len() > fs.max_label() {
                return Err((
                    "label",
                    format!("{l:?} is longer than the {} bytes {} allows", fs.max_label(), fs.name()),
                ));
            }
            if l.chars().any(|c| c.is_control()) {
                return Err(("label", format!("{l:?} contains control characters")));
            }
        }
        if let Some(u) = &uuid {
            let ok = match fs {
                // FAT has a 32-bit volume id, written XXXX-XXXX.
                FsType::Vfat | FsType::Fat32 => {
                    let hex = u.replace('-', "");
                    hex.len() == 8 && hex.chars().all(|c| c.is_ascii_hexdigit())
                }
                _ => is_uuid(u),
            };
            if !ok {
                let want = if matches!(fs, FsType::Vfat | FsType::Fat32) { "XXXX-XXXX (hex)" } else { "a UUID" };
                return Err(("uuid", format!("{u:?} is not {want}")));
            }
        }
        Ok(Mkfs { fs, label, uuid, extra })
    }

    /// The command line (argv) that formats `device`. mkfs is always forced:
    /// this is a provisioning tool, and re-imaging a machine means writing
    /// over whatever was there.
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

    pub fn run(&self, device: &Path) -> Result<()> {
        run_tool(&self.argv(device), "MkfsFailed")
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

/// Erases every filesystem, RAID and partition-table signature on `device`.
pub fn wipe(device: &Path) -> Result<()> {
    run_tool(&["wipefs".into(), "--all".into(), "--force".into(), device.display().to_string()], "WipeFailed")
}

/// Runs a tool; on failure the message carries its stderr.
pub fn run_tool(argv: &[String], reason: &'static str) -> Result<()> {
    kiln_action_kit::log("format", format_args!("running {}", argv.join(" ")));
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .output()
        .map_err(|e| Failure::new(reason, format!("cannot run {}: {e}", argv[0])))?;
    if !out.status.success() {
        return Err(Failure::new(
            reason,
            format!("{} failed ({}): {}", argv[0], out.status, String::from_utf8_lossy(&out.stderr).trim()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mkfs(fs: &str, label: Option<&str>, uuid: Option<&str>) -> std::result::Result<Mkfs, (&'static str, String)> {
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
        assert_eq!(
            mkfs("fat32", Some("EFI"), Some("ABCD-1234")).unwrap().argv(dev).join(" "),
            "mkfs.vfat -F 32 -n EFI -i ABCD1234 /dev/sda1"
        );
        assert_eq!(mkfs("xfs", None, None).unwrap().argv(dev).join(" "), "mkfs.xfs -f -q /dev/sda1");
        assert_eq!(mkfs("swap", Some("swap"), None).unwrap().argv(dev).join(" "), "mkswap -f -L swap /dev/sda1");
    }

    #[test]
    fn labels_and_uuids_are_checked_per_filesystem() {
        assert_eq!(mkfs("vfat", Some("TWELVE_CHARS"), None).unwrap_err().0, "label");
        assert!(mkfs("ext4", Some("sixteen_chars_ok"), None).is_ok());
        assert_eq!(mkfs("xfs", Some("thirteen_char"), None).unwrap_err().0, "label");
        assert_eq!(mkfs("ext4", None, Some("not-a-uuid")).unwrap_err().0, "uuid");
        assert_eq!(mkfs("vfat", None, Some("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")).unwrap_err().0, "uuid");
        assert!(FsType::parse("ntfs").unwrap_err().contains("ext4, ext3"));
    }
}
