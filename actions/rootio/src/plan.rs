//! What rootio does, as data: the partition tables (the hub's sector
//! arithmetic, including its quirks), the mkfs command lines and the LVM
//! command lines. The caller runs them.

use crate::cpr::{Disk, Filesystem, VolumeGroup};

/// Where the hub starts the first partition.
pub const FIRST_SECTOR: u64 = 2048;
pub const SECTOR: u64 = 512;

#[derive(Debug, PartialEq, Eq)]
pub struct Part {
    pub label: String,
    pub start: u64,
    /// In sectors.
    pub size: u64,
    /// A GPT type GUID, or an MBR type byte in hex.
    pub kind: &'static str,
    pub bootable: bool,
}

/// Only partitions numbered 1, 2, 3, ... in order are made; the hub skips
/// any other silently, and so does this (saying so).
fn in_order(disk: &Disk) -> (Vec<&crate::cpr::Partition>, Vec<i64>) {
    let (mut next, mut taken, mut skipped) = (1, Vec::new(), Vec::new());
    for p in &disk.partitions {
        if p.number == next {
            next += 1;
            taken.push(p);
        } else {
            skipped.push(p.number);
        }
    }
    (taken, skipped)
}

/// The hub's GPT: partition n runs from `start` to `start + size`
/// inclusive (one sector more than asked), the next starts after it, and
/// a size of 0 ends 2048 sectors before the end of the disk.
pub fn gpt(disk: &Disk, disk_sectors: u64) -> (Vec<Part>, Vec<i64>) {
    let (taken, skipped) = in_order(disk);
    let mut start = FIRST_SECTOR;
    let mut parts = Vec::new();
    for p in taken {
        let mut end = start + p.size;
        let next = end + 1;
        if p.size == 0 {
            end = disk_sectors.saturating_sub(2048);
        }
        let kind = match p.label.as_str() {
            "SWAP" => "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F",
            "BIOS" => "21686148-6449-6E6F-744E-656564454649",
            "EFI" => "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
            _ => "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
        };
        parts.push(Part {
            label: p.label.clone(),
            start,
            size: (end + 1).saturating_sub(start),
            kind,
            bootable: false,
        });
        start = next;
    }
    (parts, skipped)
}

/// The hub's MBR (`MBR` set): partitions back to back from sector 2048, a
/// size of 0 takes the rest of the disk, `_ACTIVE` labels are bootable.
pub fn mbr(disk: &Disk, disk_sectors: u64) -> Result<(Vec<Part>, Vec<i64>), String> {
    let (taken, skipped) = in_order(disk);
    let mut start = FIRST_SECTOR;
    let mut parts = Vec::new();
    for p in taken {
        let remaining = disk_sectors.saturating_sub(start);
        let (kind, bootable) = match p.label.as_str() {
            "SWAP" => ("82", false),
            "LINUX" => ("83", false),
            "LINUX_ACTIVE" => ("83", true),
            "FAT32" => ("c", false),
            "FAT32_ACTIVE" => ("c", true),
            _ => ("83", false),
        };
        let size = if p.size == 0 { remaining } else { p.size };
        // The hub truncates to 32 bits silently; an MBR cannot say more.
        if start + size > u64::from(u32::MAX) {
            return Err(format!("partition {} ({}) ends past the 2 TiB an MBR can address", p.number, p.label));
        }
        parts.push(Part { label: p.label.clone(), start, size, kind, bootable });
        start += p.size;
    }
    Ok((parts, skipped))
}

/// sfdisk's input: every start and size explicit.
pub fn sfdisk_script(label: &str, parts: &[Part]) -> String {
    let mut s = format!("label: {label}\nunit: sectors\n\n");
    for p in parts {
        s.push_str(&format!("start={}, size={}, type={}", p.start, p.size, p.kind));
        if label == "gpt" {
            // sfdisk has no escapes in a quoted name.
            s.push_str(&format!(", name=\"{}\"", p.label.replace('"', "")));
        }
        if p.bootable {
            s.push_str(", bootable");
        }
        s.push('\n');
    }
    s
}

/// The hub's mkfs command line for a filesystem.
pub fn format_command(fs: &Filesystem) -> Result<Vec<String>, String> {
    let m = &fs.mount;
    let mut cmd: Vec<String> = Vec::new();
    match m.format.as_str() {
        // The hub passes no create options to mkswap.
        "swap" => cmd.extend(["mkswap".into(), m.device.clone()]),
        "ext4" | "ext3" | "ext2" => {
            cmd.push("mke2fs".into());
            cmd.extend(m.create.options.iter().cloned());
            cmd.extend(["-t".into(), m.format.clone(), "-F".into(), m.device.clone()]);
        }
        "vfat" => {
            cmd.push("mkfs.fat".into());
            cmd.extend(m.create.options.iter().cloned());
            cmd.push(m.device.clone());
        }
        "xfs" => {
            cmd.push("mkfs.xfs".into());
            cmd.extend(m.create.options.iter().cloned());
            cmd.extend(["-f".into(), m.device.clone()]);
        }
        other => {
            return Err(format!(
                "unknown filesystem type {other:?} for {} (swap, ext2, ext3, ext4, vfat, xfs)",
                m.device
            ));
        }
    }
    Ok(cmd)
}

/// LVM names and tags: the hub's `[A-Za-z0-9_+.][A-Za-z0-9_+.-]*`.
fn valid_lvm_name(name: &str) -> bool {
    let mut chars = name.chars();
    let ok = |c: char| c.is_ascii_alphanumeric() || "_+.".contains(c);
    chars.next().is_some_and(ok) && chars.all(|c| ok(c) || c == '-')
}

/// The hub's LVM commands for one volume group: pvcreate per physical
/// volume, vgcreate with tags, the scans, lvcreate per logical volume.
pub fn lvm_commands(vg: &VolumeGroup) -> Result<Vec<Vec<String>>, String> {
    let lvm = |args: &[&str]| -> Vec<String> {
        std::iter::once("lvm").chain(args.iter().copied()).map(String::from).collect()
    };
    let tags = |tags: &[String]| -> Result<Vec<String>, String> {
        tags.iter()
            .filter(|t| !t.is_empty())
            .map(|t| {
                if t.len() > 1024 || !valid_lvm_name(t) {
                    Err(format!("tag {t:?} is not valid: [A-Za-z0-9_+.-], at most 1024, not starting with '-'"))
                } else {
                    Ok(format!("--add-tag={t}"))
                }
            })
            .collect()
    };
    if !valid_lvm_name(&vg.name) {
        return Err(format!("volume group name {:?} contains invalid characters: [A-Za-z0-9_+.-]", vg.name));
    }
    let mut cmds: Vec<Vec<String>> = vg.physical_volumes.iter().map(|pv| lvm(&["pvcreate", pv])).collect();
    let mut vgcreate = lvm(&["vgcreate"]);
    vgcreate.extend(tags(&vg.tags)?);
    vgcreate.push(vg.name.clone());
    vgcreate.extend(vg.physical_volumes.iter().cloned());
    cmds.push(vgcreate);
    cmds.push(lvm(&["pvscan", "--cache"]));
    cmds.push(lvm(&["vgscan", "--cache"]));
    for lv in &vg.logical_volumes {
        if !valid_lvm_name(&lv.name) {
            return Err(format!("logical volume name {:?} contains invalid characters: [A-Za-z0-9_+.-]", lv.name));
        }
        let mut c = lvm(&["lvcreate"]);
        c.extend(tags(&lv.tags)?);
        if lv.size == 0 {
            c.extend(["-l".into(), "100%FREE".into()]);
        } else {
            c.push(format!("--size={}b", lv.size));
        }
        c.push(format!("--name={}", lv.name));
        c.push(vg.name.clone());
        c.extend(lv.opts.iter().cloned());
        cmds.push(c);
    }
    Ok(cmds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpr::{Create, LogicalVolume, Mount, Partition};

    fn disk(parts: &[(&str, i64, u64)]) -> Disk {
        Disk {
            device: "/dev/sdb".into(),
            partitions: parts
                .iter()
                .map(|(l, n, s)| Partition { label: l.to_string(), number: *n, size: *s })
                .collect(),
            wipe_table: true,
        }
    }

    #[test]
    fn gpt_follows_the_hubs_arithmetic() {
        // The hub's standard.json on a 4 GiB disk.
        let sectors = 4 << 21;
        let (parts, skipped) = gpt(&disk(&[("BIOS", 1, 4096), ("SWAP", 2, 3993600), ("ROOT", 3, 0)]), sectors);
        assert!(skipped.is_empty());
        let got: Vec<(u64, u64, &str)> = parts.iter().map(|p| (p.start, p.size, p.kind)).collect();
        assert_eq!(
            got,
            [
                (2048, 4097, "21686148-6449-6E6F-744E-656564454649"),
                (6145, 3993601, "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F"),
                (3999746, sectors - 2048 - 3999746 + 1, "0FC63DAF-8483-4772-8E79-3D69D8477DE4"),
            ]
        );
        assert_eq!(
            sfdisk_script("gpt", &parts[..1]),
            "label: gpt\nunit: sectors\n\nstart=2048, size=4097, type=21686148-6449-6E6F-744E-656564454649, name=\"BIOS\"\n"
        );
    }

    #[test]
    fn out_of_order_numbers_are_skipped_like_the_hub() {
        let (parts, skipped) = gpt(&disk(&[("EFI", 1, 100), ("X", 3, 100), ("ROOT", 2, 100)]), 1 << 20);
        assert_eq!(parts.iter().map(|p| p.label.as_str()).collect::<Vec<_>>(), ["EFI", "ROOT"]);
        assert_eq!(skipped, [3]);
        assert_eq!(parts[0].kind, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
    }

    #[test]
    fn mbr_types_and_active_flags() {
        let (parts, _) = mbr(&disk(&[("FAT32_ACTIVE", 1, 1000), ("SWAP", 2, 500), ("LINUX", 3, 0)]), 1 << 20).unwrap();
        let got: Vec<(u64, u64, &str, bool)> = parts.iter().map(|p| (p.start, p.size, p.kind, p.bootable)).collect();
        assert_eq!(got, [(2048, 1000, "c", true), (3048, 500, "82", false), (3548, (1 << 20) - 3548, "83", false)]);
        assert_eq!(
            sfdisk_script("dos", &parts[..1]),
            "label: dos\nunit: sectors\n\nstart=2048, size=1000, type=c, bootable\n"
        );
        assert!(mbr(&disk(&[("LINUX", 1, 0)]), 5 << 32).unwrap_err().contains("2 TiB"));
    }

    fn fs(format: &str, options: &[&str]) -> Filesystem {
        Filesystem {
            mount: Mount {
                create: Create { options: options.iter().map(|s| s.to_string()).collect() },
                device: "/dev/sdb3".into(),
                format: format.into(),
                point: "/".into(),
            },
        }
    }

    #[test]
    fn mkfs_command_lines_are_the_hubs() {
        let rows: &[(&str, &[&str], &[&str])] = &[
            ("ext4", &["-L", "ROOT"], &["mke2fs", "-L", "ROOT", "-t", "ext4", "-F", "/dev/sdb3"]),
            ("ext2", &[], &["mke2fs", "-t", "ext2", "-F", "/dev/sdb3"]),
            ("swap", &["-L", "SWAP"], &["mkswap", "/dev/sdb3"]),
            ("vfat", &["-F", "32", "-n", "EFI"], &["mkfs.fat", "-F", "32", "-n", "EFI", "/dev/sdb3"]),
            ("xfs", &["-L", "data"], &["mkfs.xfs", "-L", "data", "-f", "/dev/sdb3"]),
        ];
        for (format, options, want) in rows {
            assert_eq!(format_command(&fs(format, options)).unwrap(), *want, "{format}");
        }
        assert!(format_command(&fs("btrfs", &[])).unwrap_err().contains("\"btrfs\""));
    }

    #[test]
    fn lvm_command_lines_are_the_hubs() {
        let vg = VolumeGroup {
            name: "vg0".into(),
            physical_volumes: vec!["/dev/sdb2".into(), "/dev/sdc1".into()],
            tags: vec!["t1".into(), "".into()],
            logical_volumes: vec![
                LogicalVolume { name: "root".into(), size: 10 << 30, tags: vec![], opts: vec!["--type=raid1".into()] },
                LogicalVolume { name: "data".into(), size: 0, tags: vec!["d".into()], opts: vec![] },
            ],
        };
        let cmds: Vec<String> = lvm_commands(&vg).unwrap().iter().map(|c| c.join(" ")).collect();
        assert_eq!(
            cmds,
            [
                "lvm pvcreate /dev/sdb2",
                "lvm pvcreate /dev/sdc1",
                "lvm vgcreate --add-tag=t1 vg0 /dev/sdb2 /dev/sdc1",
                "lvm pvscan --cache",
                "lvm vgscan --cache",
                "lvm lvcreate --size=10737418240b --name=root vg0 --type=raid1",
                "lvm lvcreate --add-tag=d -l 100%FREE --name=data vg0",
            ]
        );
        let bad = VolumeGroup { name: "-vg".into(), ..Default::default() };
        assert!(lvm_commands(&bad).unwrap_err().contains("\"-vg\""));
    }
}
