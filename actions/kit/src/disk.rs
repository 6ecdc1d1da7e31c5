//! Which disk to write, and the block-device calls around writing it.
//!
//! A disk is named by a path (`/dev/sda`, or a stable
//! `/dev/disk/by-id/...` link, resolved here) or by a selector resolved
//! against sysfs at run time, so a template need not know the kernel's
//! naming order: `size>=100G,model=Samsung*`, `serial=S4EWNX0R`, `name=vd*`.

use std::fs::File;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

/// One `key OP value` term of a selector.
#[derive(Debug, Clone, PartialEq)]
enum Term {
    SizeAtLeast(u64),
    SizeAtMost(u64),
    SizeEquals(u64),
    Model(String),
    Serial(String),
    Name(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    terms: Vec<Term>,
}

/// What sysfs says about one disk.
#[derive(Debug, Clone, PartialEq)]
pub struct DiskInfo {
    pub name: String,
    pub size: u64,
    pub model: String,
    pub serial: String,
}

impl Selector {
    pub fn parse(text: &str) -> Result<Selector, String> {
        let mut terms = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, op, value) = ["<=", ">=", "="]
                .iter()
                .find_map(|op| part.split_once(op).map(|(k, v)| (k.trim(), *op, v.trim())))
                .ok_or_else(|| format!("selector term {part:?} is not KEY=VALUE, size>=N or size<=N"))?;
            let term = match (key, op) {
                ("size", _) => {
                    let n = parse_size(value)?;
                    match op {
                        ">=" => Term::SizeAtLeast(n),
                        "<=" => Term::SizeAtMost(n),
                        _ => Term::SizeEquals(n),
                    }
                }
                ("model", "=") => Term::Model(value.to_string()),
                ("serial", "=") => Term::Serial(value.to_string()),
                ("name", "=") => Term::Name(value.to_string()),
                (k, _) => return Err(format!("selector key {k:?} is not one of size, model, serial, name")),
            };
            terms.push(term);
        }
        if terms.is_empty() {
            return Err("empty disk selector".into());
        }
        Ok(Selector { terms })
    }

    fn names_virtual_devices(&self) -> bool {
        self.terms.iter().any(|t| matches!(t, Term::Name(_)))
    }

    pub fn matches(&self, disk: &DiskInfo) -> bool {
        self.terms.iter().all(|t| match t {
            Term::SizeAtLeast(n) => disk.size >= *n,
            Term::SizeAtMost(n) => disk.size <= *n,
            Term::SizeEquals(n) => disk.size == *n,
            Term::Model(p) => glob(p, &disk.model),
            Term::Serial(p) => glob(p, &disk.serial),
            Term::Name(p) => glob(p, &disk.name),
        })
    }
}

/// `*` matches any run of characters; everything else is literal.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    true
}

/// Sizes as people write them: `4096`, `512M`/`512MiB` (powers of 1024),
/// `500GB` (powers of 1000).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| format!("{text:?} is not a size like 512MiB or 100G"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        u => return Err(format!("unknown size unit {u:?} in {text:?} (use K, M, G, T, or KB, MB, GB, TB)")),
    };
    Ok((value * scale as f64) as u64)
}

/// Device names that are not disks a machine is provisioned onto, unless a
/// selector names them explicitly.
fn is_virtual(name: &str) -> bool {
    ["loop", "ram", "zram", "nbd", "dm-", "md", "sr", "fd"].iter().any(|p| name.starts_with(p))
}

fn read_trimmed(path: &Path) -> String {
    std::fs::read_to_string(path).map(|s| s.trim().to_string()).unwrap_or_default()
}

/// Every disk under `sys_block` (normally `/sys/block`).
pub fn list_disks(sys_block: &Path) -> std::io::Result<Vec<DiskInfo>> {
    let mut disks = Vec::new();
    for entry in std::fs::read_dir(sys_block)? {
        let dir = entry?.path();
        let name = dir.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let sectors: u64 = read_trimmed(&dir.join("size")).parse().unwrap_or(0);
        let mut serial = read_trimmed(&dir.join("device/serial"));
        if serial.is_empty() {
            serial = read_trimmed(&dir.join("serial")); // virtio-blk
        }
        disks.push(DiskInfo { name, size: sectors * 512, model: read_trimmed(&dir.join("device/model")), serial });
    }
    disks.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(disks)
}

/// Resolves a disk named by path or selector to a device path.
pub fn resolve(value: &str) -> Result<PathBuf, String> {
    resolve_in(value, Path::new("/sys/block"), Path::new("/dev"))
}

fn resolve_in(value: &str, sys_block: &Path, dev: &Path) -> Result<PathBuf, String> {
    let value = value.trim();
    if value.starts_with('/') {
        // Resolve /dev/disk/by-id/... so logs and ioctls see the real node.
        return std::fs::canonicalize(value).map_err(|e| format!("{value}: {e}"));
    }
    let selector = Selector::parse(value)?;
    let disks = list_disks(sys_block).map_err(|e| format!("cannot list disks in {}: {e}", sys_block.display()))?;
    let candidates: Vec<&DiskInfo> =
        disks.iter().filter(|d| d.size > 0 && (selector.names_virtual_devices() || !is_virtual(&d.name))).collect();
    let matching: Vec<&&DiskInfo> = candidates.iter().filter(|d| selector.matches(d)).collect();
    let describe = |ds: &[&DiskInfo]| {
        ds.iter()
            .map(|d| format!("{} (size {}, model {:?}, serial {:?})", d.name, d.size, d.model, d.serial))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match matching.as_slice() {
        [one] => Ok(dev.join(&one.name)),
        [] => Err(format!("selector {value:?} matches no disk; disks: {}", describe(&candidates))),
        many => Err(format!(
            "selector {value:?} matches {} disks, it must match one: {}",
            many.len(),
            describe(&many.iter().map(|d| **d).collect::<Vec<_>>())
        )),
    }
}

pub fn is_block_device(file: &File) -> bool {
    file.metadata().map(|m| m.file_type().is_block_device()).unwrap_or(false)
}

nix::ioctl_read!(blkgetsize64, 0x12, 114, u64);
nix::ioctl_none!(blkrrpart, 0x12, 95);

/// Size in bytes of a block device or regular file.
pub fn size_of(file: &File) -> std::io::Result<u64> {
    use std::os::fd::AsRawFd;
    if is_block_device(file) {
        let mut size = 0u64;
        // SAFETY: BLKGETSIZE64 writes one u64 through the pointer.
        unsafe { blkgetsize64(file.as_raw_fd(), &mut size) }.map_err(std::io::Error::from)?;
        Ok(size)
    } else {
        Ok(file.metadata()?.len())
    }
}

/// Asks the kernel to re-read the partition table (BLKRRPART), so the
/// partitions just written appear. Not an error for a regular file.
pub fn reread_partitions(file: &File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    if !is_block_device(file) {
        return Ok(());
    }
    // SAFETY: BLKRRPART takes no argument.
    unsafe { blkrrpart(file.as_raw_fd()) }.map(|_| ()).map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_sysfs(disks: &[(&str, u64, &str, &str)]) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        for (name, bytes, model, serial) in disks {
            let d = root.path().join(name);
            std::fs::create_dir_all(d.join("device")).unwrap();
            std::fs::write(d.join("size"), format!("{}\n", bytes / 512)).unwrap();
            std::fs::write(d.join("device/model"), format!("{model}   \n")).unwrap();
            if name.starts_with("vd") {
                std::fs::write(d.join("serial"), serial).unwrap();
            } else {
                std::fs::write(d.join("device/serial"), serial).unwrap();
            }
        }
        root
    }

    #[test]
    fn selectors_pick_exactly_one_disk() {
        let sys = fake_sysfs(&[
            ("sda", 500 << 30, "Samsung SSD 870", "S5ABC"),
            ("sdb", 4 << 40, "WDC WD40EFRX", "WD-123"),
            ("vda", 20 << 30, "", "kiln-vm-disk"),
            ("loop0", 1 << 30, "", ""),
        ]);
        let r = |s: &str| resolve_in(s, sys.path(), Path::new("/dev"));
        assert_eq!(r("model=Samsung*").unwrap(), PathBuf::from("/dev/sda"));
        assert_eq!(r("size>=1T").unwrap(), PathBuf::from("/dev/sdb"));
        assert_eq!(r("serial=kiln-vm-disk").unwrap(), PathBuf::from("/dev/vda"));
        assert_eq!(r("size<=30G").unwrap(), PathBuf::from("/dev/vda"), "loop devices only when named");
        assert_eq!(r("name=loop*").unwrap(), PathBuf::from("/dev/loop0"));
        let many = r("size>=10G").unwrap_err();
        assert!(many.contains("matches 3 disks") && many.contains("sdb"), "{many}");
        let none = r("model=Intel*").unwrap_err();
        assert!(none.contains("matches no disk") && none.contains("Samsung SSD 870"), "{none}");
        assert!(r("colour=blue").unwrap_err().contains("\"colour\""));
        assert!(r("size>=lots").unwrap_err().contains("not a size"));
    }

    #[test]
    fn sizes_and_globs() {
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("100G").unwrap(), 100 << 30);
        assert_eq!(parse_size("1.5K").unwrap(), 1536);
        assert_eq!(parse_size("500GB").unwrap(), 500_000_000_000);
        assert!(parse_size("5 parsecs").is_err());
        assert!(glob("S*870*", "Samsung SSD 870 EVO"));
        assert!(!glob("S*870", "Samsung SSD 870 EVO"));
        assert!(glob("*", ""));
    }

    #[test]
    fn paths_resolve_links() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("disk"), b"").unwrap();
        std::os::unix::fs::symlink(dir.path().join("disk"), dir.path().join("by-id")).unwrap();
        let by_id = dir.path().join("by-id");
        assert_eq!(resolve(by_id.to_str().unwrap()).unwrap(), dir.path().join("disk").canonicalize().unwrap());
        assert!(resolve("/dev/disk/by-id/nothing-here").unwrap_err().contains("No such file"));
    }
}
