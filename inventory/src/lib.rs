//! kiln's in-band inventory: what a machine is, read by its agent from the
//! in-memory OS: system (DMI), CPUs, memory (and DIMMs from SMBIOS), disks,
//! NICs and the TPM.
//!
//! Everything is read below a root directory ([`collect`]`("/")` on a
//! machine), so tests build a fake `/sys`, `/proc` and `/dev` in a temporary
//! directory. Fields the machine does not expose are `None` (absent from
//! the JSON), never guessed: a virtio disk has no model, a VM may have no
//! DMI serial, a NIC without link has no speed.
//!
//! Sources: `/sys/class/dmi/id` (system), `/sys/firmware/efi` (boot mode,
//! Secure Boot), `/proc/cpuinfo` and `/sys/devices/system/cpu` (CPUs),
//! `/proc/meminfo` and the SMBIOS tables in `/sys/firmware/dmi/tables`
//! (memory; parsed by the `dmidecode` crate), `/sys/block` and
//! `/dev/disk/by-{id,path}` (disks; udev's links, or those the agent
//! made where no udev runs), the first sectors of each disk (partition table), `/sys/class/net`
//! (NICs) and `/sys/class/tpm` (TPM).
//!
//! [`names`] computes the `/dev/disk/by-id` and `by-path` names udev would
//! give, from sysfs, for the hook image, which has no udev.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub mod names;

/// Everything the agent reports about its machine.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    #[serde(default)]
    pub system: System,
    #[serde(default)]
    pub cpu: Cpu,
    #[serde(default)]
    pub memory: Memory,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<Disk>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nics: Vec<Nic>,
    /// `None`: no TPM the kernel knows of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<Tpm>,
}

/// The machine as its firmware describes it (DMI), and how it booted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct System {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware_vendor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware_date: Option<String>,
    /// `uefi` or `bios`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_mode: Option<BootMode>,
    /// UEFI only, when the firmware's `SecureBoot` variable is readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure_boot: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootMode {
    Uefi,
    Bios,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cpu {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Physical packages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sockets: Option<u32>,
    /// Physical cores, all sockets together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores: Option<u32>,
    /// Logical CPUs (hardware threads) the kernel runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Memory {
    /// Memory the kernel manages (`MemTotal`), in bytes: a little less than
    /// what is installed (firmware and kernel reservations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_bytes: Option<u64>,
    /// Installed memory modules, from SMBIOS (empty when its tables are not
    /// readable; empty sockets are left out).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dimms: Vec<Dimm>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dimm {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locator: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// e.g. `Ddr4`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_type: Option<String>,
    /// Megatransfers per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed_mts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manufacturer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_number: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    /// The kernel's name: `sda`, `nvme0n1`, `vda`.
    pub name: String,
    /// Stable names under `/dev/disk/by-id` and `/dev/disk/by-path`
    /// (full paths), sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub by_id: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub by_path: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// World wide name as the kernel reports it (`naa.5000...`,
    /// `eui.0025...`), when the device has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wwn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotational: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removable: Option<bool>,
    /// `nvme`, `sata`, `sas`, `scsi`, `virtio`, `usb`, `mmc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logical_sector_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub physical_sector_size: Option<u32>,
    /// `gpt` or `dos` when the disk has one (read from its first sectors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_table: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nic {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// `0000:00:03.0`, when the NIC is (behind) a PCI device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci_address: Option<String>,
    /// Megabits per second; absent without link or when the driver does
    /// not say (virtio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed_mbps: Option<u32>,
    /// Carrier detected; absent when the interface is down (unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tpm {
    /// `2.0` or `1.2`, when the kernel says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl Inventory {
    /// A one-line summary for listings: `vendor product, N CPUs, M GiB,
    /// K disks`.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        let name: Vec<&str> = [&self.system.vendor, &self.system.product].iter().filter_map(|s| s.as_deref()).collect();
        if !name.is_empty() {
            parts.push(name.join(" "));
        }
        if let Some(t) = self.cpu.threads {
            parts.push(format!("{t} CPUs"));
        }
        if let Some(m) = self.memory.total_bytes {
            parts.push(format!("{:.1} GiB", m as f64 / (1u64 << 30) as f64));
        }
        parts.push(format!("{} disks", self.disks.len()));
        parts.push(format!("{} NICs", self.nics.len()));
        parts.join(", ")
    }
}

/// The inventory of the machine whose root is `root` (`/` on a machine).
/// Never fails: what cannot be read is absent.
pub fn collect(root: &Path) -> Inventory {
    Inventory {
        system: system(root),
        cpu: cpu(root),
        memory: memory(root),
        disks: disks(root),
        nics: nics(root),
        tpm: tpm(root),
    }
}

/// A sysfs attribute, trimmed; `None` when missing, unreadable or empty.
fn read(path: impl AsRef<Path>) -> Option<String> {
    let text = std::fs::read(path).ok()?;
    let text = String::from_utf8_lossy(&text).trim().to_string();
    (!text.is_empty()).then_some(text)
}

fn read_num<T: std::str::FromStr>(path: impl AsRef<Path>) -> Option<T> {
    read(path)?.parse().ok()
}

/// Placeholders firmware writes where it has no value: absent, not a value.
fn dmi_value(text: Option<String>) -> Option<String> {
    let text = text?;
    let lower = text.to_ascii_lowercase();
    const PLACEHOLDERS: &[&str] = &[
        "to be filled by o.e.m.",
        "to be filled by o.e.m",
        "default string",
        "not specified",
        "not applicable",
        "system serial number",
        "system product name",
        "system manufacturer",
        "none",
        "n/a",
        "0",
        "00000000-0000-0000-0000-000000000000",
        "03000200-0400-0500-0006-000700080009",
        "ffffffff-ffff-ffff-ffff-ffffffffffff",
    ];
    (!PLACEHOLDERS.contains(&lower.as_str())).then_some(text)
}

fn system(root: &Path) -> System {
    let dmi = root.join("sys/class/dmi/id");
    let field = |name: &str| dmi_value(read(dmi.join(name)));
    let efi = root.join("sys/firmware/efi");
    let uefi = efi.is_dir();
    System {
        vendor: field("sys_vendor"),
        product: field("product_name"),
        serial: field("product_serial"),
        uuid: field("product_uuid").map(|u| u.to_ascii_lowercase()),
        firmware_vendor: field("bios_vendor"),
        firmware_version: field("bios_version"),
        firmware_date: field("bios_date"),
        // /sys/firmware/efi exists exactly when the kernel was booted by
        // UEFI; without sysfs at all, nothing is known.
        boot_mode: root.join("sys/firmware").is_dir().then_some(if uefi { BootMode::Uefi } else { BootMode::Bios }),
        secure_boot: if uefi { secure_boot(&efi) } else { None },
    }
}

/// The `SecureBoot` EFI variable: 4 bytes of attributes, then 1 (on) or 0.
fn secure_boot(efi: &Path) -> Option<bool> {
    const NAME: &str = "SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c";
    let bytes = std::fs::read(efi.join("efivars").join(NAME))
        .or_else(|_| std::fs::read(efi.join("vars").join(NAME).join("data")))
        .ok()?;
    match bytes.len() {
        5 => Some(bytes[4] == 1),
        1 => Some(bytes[0] == 1),
        _ => None,
    }
}

fn cpu(root: &Path) -> Cpu {
    let cpuinfo = read(root.join("proc/cpuinfo")).unwrap_or_default();
    let model = cpuinfo.lines().find_map(|l| {
        let (key, value) = l.split_once(':')?;
        matches!(key.trim(), "model name" | "Processor" | "cpu model").then(|| value.trim().to_string())
    });
    // Topology from sysfs: one directory per logical CPU the kernel runs.
    let mut threads = 0u32;
    let mut packages = BTreeSet::new();
    let mut cores = BTreeSet::new();
    let mut topology_known = true;
    if let Ok(entries) = std::fs::read_dir(root.join("sys/devices/system/cpu")) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(n) = name.strip_prefix("cpu") else { continue };
            if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            // Offline CPUs have `online` = 0 (cpu0 often has no such file).
            if read(e.path().join("online")).as_deref() == Some("0") {
                continue;
            }
            threads += 1;
            let topo = e.path().join("topology");
            match (read_num::<i64>(topo.join("physical_package_id")), read_num::<i64>(topo.join("core_id"))) {
                (Some(p), Some(c)) => {
                    packages.insert(p);
                    cores.insert((p, c));
                }
                _ => topology_known = false,
            }
        }
    }
    if threads == 0 {
        // No sysfs: count the processors /proc/cpuinfo lists.
        let n = cpuinfo.lines().filter(|l| l.split(':').next().is_some_and(|k| k.trim() == "processor")).count();
        threads = n as u32;
        topology_known = false;
    }
    let known = topology_known && threads > 0;
    Cpu {
        model,
        sockets: known.then_some(packages.len() as u32),
        cores: known.then_some(cores.len() as u32),
        threads: (threads > 0).then_some(threads),
    }
}

fn memory(root: &Path) -> Memory {
    let total_bytes = read(root.join("proc/meminfo")).and_then(|m| {
        m.lines().find_map(|l| {
            let rest = l.strip_prefix("MemTotal:")?;
            let kib: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
            Some(kib * 1024)
        })
    });
    Memory { total_bytes, dimms: dimms(root) }
}

/// Memory devices (SMBIOS type 17) with a module installed.
fn dimms(root: &Path) -> Vec<Dimm> {
    let tables = root.join("sys/firmware/dmi/tables");
    let (Ok(entry), Ok(dmi)) = (std::fs::read(tables.join("smbios_entry_point")), std::fs::read(tables.join("DMI")))
    else {
        return Vec::new();
    };
    let Ok(entry) = dmidecode::EntryPoint::search(&entry) else { return Vec::new() };
    let text = |s: &str| dmi_value(Some(s.trim().to_string()).filter(|s| !s.is_empty()));
    entry
        .structures(&dmi)
        .filter_map(|s| match s {
            Ok(dmidecode::Structure::MemoryDevice(d)) => {
                // size: 0 = empty socket, bit 15 = KiB granularity, 0x7fff =
                // see extended_size (MiB); None (0xffff) = unknown.
                let size_bytes = match d.size {
                    Some(0) => return None,
                    Some(0x7fff) => Some(u64::from(d.extended_size & 0x7fff_ffff) << 20),
                    Some(s) if s & 0x8000 != 0 => Some(u64::from(s & 0x7fff) << 10),
                    Some(s) => Some(u64::from(s) << 20),
                    None => None,
                };
                let memory_type = match d.memory_type {
                    dmidecode::memory_device::Type::Unknown | dmidecode::memory_device::Type::Other => None,
                    t => Some(format!("{t:?}")),
                };
                Some(Dimm {
                    locator: text(d.device_locator),
                    size_bytes,
                    memory_type,
                    speed_mts: d.speed.filter(|s| *s != 0).map(u32::from),
                    manufacturer: text(d.manufacturer),
                    serial: text(d.serial),
                    part_number: text(d.part_number),
                })
            }
            _ => None,
        })
        .collect()
}

/// The names of the symlinks in `dir` whose target is `/dev/NAME`.
fn links_to(dir: &Path, name: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<String> = entries
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|t| t.file_name().is_some_and(|f| f.to_string_lossy() == name))
        })
        .map(|e| Path::new("/dev/disk").join(dir.file_name().unwrap_or_default()).join(e.file_name()))
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

/// The resolved sysfs path of a device link, relative to `root` (so that a
/// fake tree's absolute links resolve inside it).
fn resolve(root: &Path, link: &Path) -> Option<PathBuf> {
    let target = std::fs::canonicalize(link).ok()?;
    let root = std::fs::canonicalize(root).ok()?;
    Some(Path::new("/").join(target.strip_prefix(&root).ok()?))
}

fn transport(device_path: &str, name: &str) -> Option<&'static str> {
    let has = |s: &str| device_path.contains(s);
    Some(if name.starts_with("nvme") || has("/nvme") {
        "nvme"
    } else if name.starts_with("mmcblk") || has("/mmc_host/") {
        "mmc"
    } else if has("/usb") {
        "usb"
    } else if name.starts_with("vd") || has("/virtio") && !has("/host") {
        "virtio"
    } else if has("/ata") {
        "sata"
    } else if has("/sas_") || has("/end_device-") || has("/port-") && has("/expander-") {
        "sas"
    } else if has("/host") && has("/target") {
        "scsi"
    } else {
        return None;
    })
}

/// The serial of a SCSI/SATA disk from its unit serial number VPD page
/// (0x80): a 4-byte header, then the serial in ASCII.
fn vpd_serial(path: &Path) -> Option<String> {
    let page = std::fs::read(path).ok()?;
    let len = usize::from(*page.get(3)?);
    let text = String::from_utf8_lossy(page.get(4..4 + len)?).trim().to_string();
    (!text.is_empty()).then_some(text)
}

/// `gpt`, `dos` or nothing, from the disk's first two sectors.
fn partition_table(dev: &Path, sector: u32) -> Option<String> {
    use std::io::Read;
    let sector = sector.clamp(512, 4096) as usize;
    let mut head = vec![0u8; sector * 2];
    let mut f = std::fs::File::open(dev).ok()?;
    let mut got = 0;
    while got < head.len() {
        match f.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(_) => return None,
        }
    }
    if got >= sector + 8 && &head[sector..sector + 8] == b"EFI PART" {
        return Some("gpt".into());
    }
    // An MBR: the boot signature, and not a GPT's protective one (type
    // 0xee) without a GPT header.
    if got >= 512 && head[510] == 0x55 && head[511] == 0xaa {
        let types: Vec<u8> = (0..4).map(|i| head[446 + i * 16 + 4]).collect();
        if types.contains(&0xee) {
            return None;
        }
        return types.iter().any(|t| *t != 0).then(|| "dos".into());
    }
    None
}

fn disks(root: &Path) -> Vec<Disk> {
    let Ok(entries) = std::fs::read_dir(root.join("sys/block")) else { return Vec::new() };
    let mut disks: Vec<Disk> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let dir = root.join("sys/block").join(&name);
            // Only devices backed by hardware: loop, ram, zram, dm-* and md
            // devices have no `device` link.
            let device = dir.join("device");
            if !device.exists() {
                return None;
            }
            let device_path = resolve(root, &device).map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
            let own_path = resolve(root, &dir).map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
            let transport = transport(&format!("{own_path} {device_path}"), &name);
            let logical = read_num::<u32>(dir.join("queue/logical_block_size"));
            let serial = read(dir.join("serial"))
                .or_else(|| read(device.join("serial")))
                .or_else(|| vpd_serial(&device.join("vpd_pg80")));
            let wwn = read(dir.join("wwid")).or_else(|| read(device.join("wwid"))).or_else(|| read(device.join("wwn")));
            Some(Disk {
                by_id: links_to(&root.join("dev/disk/by-id"), &name),
                by_path: links_to(&root.join("dev/disk/by-path"), &name),
                vendor: read(device.join("vendor")).filter(|v| v != "ATA" && !v.starts_with("0x")),
                model: read(device.join("model")),
                serial,
                wwn,
                size_bytes: read_num::<u64>(dir.join("size")).map(|sectors| sectors * 512),
                rotational: read(dir.join("queue/rotational")).map(|r| r == "1"),
                removable: read(dir.join("removable")).map(|r| r == "1"),
                transport: transport.map(str::to_string),
                logical_sector_size: logical,
                physical_sector_size: read_num(dir.join("queue/physical_block_size")),
                partition_table: partition_table(&root.join("dev").join(&name), logical.unwrap_or(512)),
                name,
            })
        })
        .collect();
    disks.sort_by(|a, b| a.name.cmp(&b.name));
    disks
}

/// A PCI address (`0000:00:03.0`): domain, bus, device.function.
fn is_pci_address(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 12
        && b[4] == b':'
        && b[7] == b':'
        && b[10] == b'.'
        && s.chars().enumerate().all(|(i, c)| matches!(i, 4 | 7 | 10) || c.is_ascii_hexdigit())
}

fn nics(root: &Path) -> Vec<Nic> {
    let Ok(entries) = std::fs::read_dir(root.join("sys/class/net")) else { return Vec::new() };
    let mut nics: Vec<Nic> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let dir = root.join("sys/class/net").join(&name);
            // Hardware NICs only: bridges, veths, bonds, tunnels have no
            // `device`.
            let device = dir.join("device");
            if !device.exists() {
                return None;
            }
            let pci_address = resolve(root, &device)
                .and_then(|p| p.iter().map(|c| c.to_string_lossy().into_owned()).rfind(|c| is_pci_address(c)));
            let driver = std::fs::read_link(device.join("driver"))
                .ok()
                .and_then(|t| t.file_name().map(|f| f.to_string_lossy().into_owned()));
            Some(Nic {
                mac: read(dir.join("address")).filter(|m| m != "00:00:00:00:00:00").map(|m| m.to_ascii_lowercase()),
                driver,
                pci_address,
                // -1 (or EINVAL) without link.
                speed_mbps: read_num::<i64>(dir.join("speed")).filter(|s| *s > 0).map(|s| s as u32),
                link: read(dir.join("carrier")).map(|c| c == "1"),
                name,
            })
        })
        .collect();
    nics.sort_by(|a, b| a.name.cmp(&b.name));
    nics
}

fn tpm(root: &Path) -> Option<Tpm> {
    let dir = root.join("sys/class/tpm/tpm0");
    if !dir.exists() {
        return None;
    }
    let version = read(dir.join("tpm_version_major"))
        .map(|major| if major == "2" { "2.0".to_string() } else { major })
        .or_else(|| {
            // TPM 1.2 drivers describe themselves in `caps`.
            let caps = read(dir.join("caps")).or_else(|| read(dir.join("device/caps")))?;
            caps.lines().find_map(|l| l.strip_prefix("TCG version:").map(|v| v.trim().to_string()))
        });
    Some(Tpm { version })
}

#[cfg(test)]
mod tests;
