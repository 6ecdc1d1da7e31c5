//! The stable disk names udev gives (`/dev/disk/by-id`, `/dev/disk/by-path`),
//! computed from sysfs, for an OS without udev.
//!
//! Why: kiln's hook image runs no udev (it is a small in-memory OS whose
//! only job is to run the agent and Docker), so it has no `/dev/disk/by-id`
//! links, while disk hints render a disk's by-id name into actions
//! (docs/templates.md) and actions get the hook's `/dev`. The agent makes
//! the links at its start ([`create_links`]) from what this module
//! computes, so that the inventory reports them and actions can open them.
//!
//! The names follow systemd's `60-persistent-storage.rules` with its
//! `ata_id`, `scsi_id`, `usb_id` and `path_id` builtins, as far as sysfs
//! tells (what udev reads with an ioctl is read from sysfs' copy of it):
//!
//! | transport | by-id | by-path |
//! |---|---|---|
//! | virtio | `virtio-SERIAL` | `pci-0000:00:04.0`, `virtio-pci-0000:00:04.0` |
//! | nvme | `nvme-MODEL_SERIAL` (`_NSID` for namespaces past 1), `nvme-eui.…` (the namespace's `wwid`) | `pci-0000:3b:00.0-nvme-1` |
//! | sata | `ata-MODEL_SERIAL` (from the IDENTIFY data in VPD page 0x89, else the SCSI model), `wwn-0x…` | `pci-0000:00:17.0-ata-3`, `…-ata-3.0` |
//! | sas, scsi | `scsi-3NAA`, `scsi-SVENDOR_MODEL_SERIAL`, `wwn-0x…` | `pci-…-sas-0xADDRESS-lun-0` (SAS), else `pci-…-scsi-H:C:T:L` |
//! | usb | `usb-VENDOR_MODEL_SERIAL-T:L` | `pci-…-usb-0:PORT:CONFIG.IFACE-scsi-H:C:T:L` |
//! | mmc | `mmc-NAME_SERIAL` | `platform-…`: not made |
//!
//! Names are escaped as udev escapes them: leading and trailing white space
//! dropped, inner runs of it one `_`, any character but letters, digits and
//! `#+-.:=@_` a `_`. A disk without a serial gets no serial-based name
//! (nothing is invented), and each partition gets its disk's names with
//! `-partN`.

use std::path::{Path, PathBuf};

use super::{read, resolve, transport, vpd_serial};

/// One link: `/dev/disk/by-id/NAME` (full path) to the kernel's device.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct StableName {
    /// `/dev/disk/by-id/virtio-kiln-1`, `/dev/disk/by-path/pci-0000:00:04.0-part1`.
    pub link: String,
    /// The device it points at: `vda`, `vda1`.
    pub target: String,
}

/// Every stable name of every disk and partition below `root` (`/` on a
/// machine), sorted.
pub fn stable_names(root: &Path) -> Vec<StableName> {
    let Ok(entries) = std::fs::read_dir(root.join("sys/block")) else { return Vec::new() };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let dir = root.join("sys/block").join(&name);
        let device = dir.join("device");
        if !device.exists() {
            continue;
        }
        let device_path = resolve(root, &device).map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
        let own_path = resolve(root, &dir).map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
        let transport = transport(&format!("{own_path} {device_path}"), &name);
        let ids = by_id(root, &dir, &device, &device_path, &name, transport);
        let paths = by_path(root, &dir, &device_path, &name, transport);
        let partitions = partitions(&dir);
        for (kind, names) in [("by-id", ids), ("by-path", paths)] {
            for base in names {
                out.push(StableName { link: format!("/dev/disk/{kind}/{base}"), target: name.clone() });
                for (part, n) in &partitions {
                    out.push(StableName { link: format!("/dev/disk/{kind}/{base}-part{n}"), target: part.clone() });
                }
            }
        }
    }
    out.sort();
    out.dedup_by(|a, b| a.link == b.link);
    out
}

/// Makes the links of [`stable_names`] under `root/dev/disk`, each pointing
/// at `../../TARGET` as udev's do, where no such link exists yet (udev's,
/// or ours from an earlier start, stay as they are). Returns the links
/// made. Nothing is made when udev runs (`/run/udev/control` exists):
/// then the names are udev's to make.
pub fn create_links(root: &Path) -> std::io::Result<Vec<StableName>> {
    if root.join("run/udev/control").exists() {
        return Ok(Vec::new());
    }
    let mut made = Vec::new();
    for n in stable_names(root) {
        let link = root.join(n.link.trim_start_matches('/'));
        if std::fs::symlink_metadata(&link).is_ok() {
            continue;
        }
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::os::unix::fs::symlink(Path::new("../..").join(&n.target), &link)?;
        made.push(n);
    }
    Ok(made)
}

/// udev's escaping of a name part (see the module's documentation).
pub fn escape(s: &str) -> String {
    let words: Vec<&str> = s.split_whitespace().collect();
    words.join("_").chars().map(|c| if c.is_alphanumeric() || "#+-.:=@_".contains(c) { c } else { '_' }).collect()
}

/// `NAME1 1`, `NAME2 2`: the disk's partitions and their numbers.
fn partitions(dir: &Path) -> Vec<(String, u32)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut parts: Vec<(String, u32)> = entries
        .flatten()
        .filter_map(|e| {
            let n = read(e.path().join("partition"))?.parse().ok()?;
            Some((e.file_name().to_string_lossy().into_owned(), n))
        })
        .collect();
    parts.sort_by_key(|(_, n)| *n);
    parts
}

/// A name made of parts that must all be known: `None` when one is not.
fn joined(prefix: &str, parts: &[Option<String>]) -> Option<String> {
    let parts: Option<Vec<String>> = parts.iter().map(|p| p.as_deref().map(escape).filter(|p| !p.is_empty())).collect();
    Some(format!("{prefix}{}", parts?.join("_")))
}

/// `naa.5000c500a1b2c3d4` (the kernel's `wwid`) as udev's `0x5000c500a1b2c3d4`.
fn naa(wwid: Option<&str>) -> Option<String> {
    wwid?.strip_prefix("naa.").map(|hex| hex.to_ascii_lowercase())
}

fn by_id(
    root: &Path,
    dir: &Path,
    device: &Path,
    device_path: &str,
    name: &str,
    transport: Option<&str>,
) -> Vec<String> {
    let mut ids = Vec::new();
    let wwid = read(dir.join("wwid")).or_else(|| read(device.join("wwid")));
    match transport {
        Some("virtio") => ids.extend(joined("virtio-", &[read(dir.join("serial"))])),
        Some("nvme") => {
            let nsid = nsid(dir, name);
            let model_serial = joined("nvme-", &[read(device.join("model")), read(device.join("serial"))]);
            ids.extend(model_serial.map(|n| if nsid == 1 { n } else { format!("{n}_{nsid}") }));
            ids.extend(wwid.as_deref().map(|w| format!("nvme-{}", escape(w))));
        }
        Some("sata") => {
            let (model, serial) = match ata_identify(&device.join("vpd_pg89")) {
                Some(ids) => ids,
                None => (read(device.join("model")), vpd_serial(&device.join("vpd_pg80"))),
            };
            ids.extend(joined("ata-", &[model, serial]));
            ids.extend(naa(wwid.as_deref()).map(|w| format!("wwn-0x{w}")));
        }
        Some("sas" | "scsi") => {
            let (vendor, model) = (read(device.join("vendor")), read(device.join("model")));
            let serial = vpd_serial(&device.join("vpd_pg80"));
            ids.extend(naa(wwid.as_deref()).map(|w| format!("scsi-3{w}")));
            ids.extend(joined("scsi-S", &[vendor, model, serial]));
            ids.extend(naa(wwid.as_deref()).map(|w| format!("wwn-0x{w}")));
        }
        Some("usb") => {
            // usb_id: the SCSI vendor and model, the USB device's serial
            // (left out when it has none), then the SCSI target:lun.
            let usb_device = usb_device(root, device_path);
            let serial = usb_device.as_ref().and_then(|d| read(d.join("serial")));
            let mut parts = vec![read(device.join("vendor")), read(device.join("model"))];
            if serial.is_some() {
                parts.push(serial);
            }
            let instance = scsi_address(device_path).map(|[_, _, t, l]| format!("{t}:{l}"));
            if let (Some(id), Some(instance)) = (joined("usb-", &parts), instance) {
                ids.push(format!("{id}-{instance}"));
            }
        }
        Some("mmc") => ids.extend(joined("mmc-", &[read(device.join("name")), read(device.join("serial"))])),
        _ => {}
    }
    ids
}

fn by_path(root: &Path, dir: &Path, device_path: &str, name: &str, transport: Option<&str>) -> Vec<String> {
    let components: Vec<&str> = device_path.split('/').filter(|c| !c.is_empty()).collect();
    let Some(pci_at) = components.iter().rposition(|c| super::is_pci_address(c)) else { return Vec::new() };
    let pci = format!("pci-{}", components[pci_at]);
    let below = &components[pci_at + 1..];
    match transport {
        Some("virtio") => vec![pci.clone(), format!("virtio-{pci}")],
        Some("nvme") => vec![format!("{pci}-nvme-{}", nsid(dir, name))],
        Some("sata") => {
            let Some(port) = below.iter().find_map(|c| c.strip_prefix("ata").filter(|n| n.parse::<u32>().is_ok()))
            else {
                return Vec::new();
            };
            vec![format!("{pci}-ata-{port}"), format!("{pci}-ata-{port}.0")]
        }
        Some("sas" | "scsi") => {
            let Some([h, c, t, l]) = scsi_address(device_path) else { return Vec::new() };
            if let Some(end_device) = below.iter().find(|c| c.starts_with("end_device-"))
                && let Some(address) = read(root.join("sys/class/sas_device").join(end_device).join("sas_address"))
            {
                return vec![format!("{pci}-sas-{address}-lun-{l}")];
            }
            let host = h - first_host(root, &components[..=pci_at]).unwrap_or(h);
            vec![format!("{pci}-scsi-{host}:{c}:{t}:{l}")]
        }
        Some("usb") => {
            // The interface (`1-4:1.0`): port path and configuration.interface.
            let Some(iface) = below.iter().find(|c| c.contains('-') && c.contains(':')) else { return Vec::new() };
            let Some((_, port)) = iface.split_once('-') else { return Vec::new() };
            let Some([h, c, t, l]) = scsi_address(device_path) else { return Vec::new() };
            let usb_dev = usb_device(root, device_path);
            let host = usb_dev.and_then(|d| first_host_in(&d)).map_or(0, |first| h.saturating_sub(first));
            vec![format!("{pci}-usb-0:{port}-scsi-{host}:{c}:{t}:{l}")]
        }
        _ => Vec::new(),
    }
}

/// The namespace id of an NVMe namespace: its `nsid`, else from its name
/// (`nvme0n2` is namespace 2).
fn nsid(dir: &Path, name: &str) -> u32 {
    read(dir.join("nsid"))
        .and_then(|n| n.parse().ok())
        .or_else(|| name.rsplit_once('n').and_then(|(_, n)| n.parse().ok()))
        .unwrap_or(1)
}

/// `[host, channel, target, lun]` of the SCSI device at the end of the path.
fn scsi_address(device_path: &str) -> Option<[u32; 4]> {
    let last = device_path.rsplit('/').next()?;
    let parts: Vec<u32> = last.split(':').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    parts.try_into().ok()
}

/// The lowest SCSI host number of a controller (path_id numbers hosts from
/// the controller's first, so that the name does not change with the
/// order in which controllers were probed).
fn first_host(root: &Path, controller: &[&str]) -> Option<u32> {
    first_host_in(&root.join(controller.join("/")))
}

fn first_host_in(dir: &Path) -> Option<u32> {
    let mut lowest = None;
    let mut stack = vec![(dir.to_path_buf(), 0)];
    while let Some((d, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if let Some(h) = n.strip_prefix("host").and_then(|h| h.parse::<u32>().ok()) {
                lowest = Some(lowest.map_or(h, |l: u32| l.min(h)));
            } else if depth < 3 && e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push((e.path(), depth + 1));
            }
        }
    }
    lowest
}

/// The USB device (`…/usb1/1-4`) a USB disk sits on.
fn usb_device(root: &Path, device_path: &str) -> Option<PathBuf> {
    let components: Vec<&str> = device_path.split('/').filter(|c| !c.is_empty()).collect();
    let at = components.iter().rposition(|c| {
        c.split_once('-').is_some_and(|(bus, port)| {
            bus.parse::<u32>().is_ok() && !port.is_empty() && port.chars().all(|ch| ch.is_ascii_digit() || ch == '.')
        })
    })?;
    Some(root.join(components[..=at].join("/")))
}

/// Model and serial from an ATA disk's IDENTIFY data, which the kernel
/// shows as the ATA Information VPD page (0x89): 60 bytes of header, then
/// the 512 bytes of IDENTIFY, strings in 16-bit words with their two bytes
/// swapped. This is what `ata_id` reads (the SCSI model is cut at 16
/// characters).
fn ata_identify(path: &Path) -> Option<(Option<String>, Option<String>)> {
    let page = std::fs::read(path).ok()?;
    let identify = page.get(60..60 + 512)?;
    let text = |words: std::ops::Range<usize>| {
        let mut bytes = Vec::new();
        for w in words {
            bytes.push(identify[w * 2 + 1]);
            bytes.push(identify[w * 2]);
        }
        let s = String::from_utf8_lossy(&bytes).trim().trim_matches('\0').trim().to_string();
        (!s.is_empty()).then_some(s)
    };
    Some((text(27..47), text(10..20)))
}

#[cfg(test)]
mod tests;
