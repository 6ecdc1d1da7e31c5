//! The declarative layout and the arithmetic that turns it into sectors.
//!
//! Every partition starts on a 1 MiB boundary (what every modern tool does,
//! and right for 4K-sector and SSD erase-block alignment); sizes are whole
//! MiB. `rest` takes what the others leave; GPT keeps its backup table's 33
//! sectors at the end free.

use kiln_action_format::{FsType, Mkfs};
use serde::Deserialize;

pub const SECTOR: u64 = 512;
/// 1 MiB in sectors.
pub const ALIGN: u64 = 2048;
/// GPT's backup header and entry array at the end of the disk.
const GPT_BACKUP_SECTORS: u64 = 33;

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct Layout {
    #[serde(default)]
    pub table: Option<String>,
    #[serde(default)]
    pub wipe: Option<bool>,
    /// Used when DEST_DISK is not set (typed-action input).
    #[serde(default)]
    pub disk: Option<String>,
    pub partitions: Vec<PartitionSpec>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct PartitionSpec {
    #[serde(default)]
    pub name: Option<String>,
    pub size: String,
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub filesystem: Option<String>,
    #[serde(default)]
    pub label: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Gpt,
    Mbr,
}

#[derive(Debug, Clone, PartialEq)]
enum Size {
    Bytes(u64),
    Percent(f64),
    Rest,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub number: usize,
    pub name: Option<String>,
    pub start: u64,
    pub sectors: u64,
    /// What sfdisk's `type=` takes: a GUID (GPT) or a hex byte (MBR).
    pub type_code: String,
    pub mkfs: Option<Mkfs>,
}

/// A checked layout, before it meets a disk.
#[derive(Debug)]
pub struct Checked {
    pub table: Table,
    pub wipe: bool,
    parts: Vec<(Option<String>, Size, String, Option<Mkfs>)>,
}

/// GPT type GUIDs and MBR type bytes for the names templates use.
const TYPES: &[(&str, &str, Option<&str>)] = &[
    ("efi", "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", Some("ef")),
    ("esp", "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", Some("ef")),
    ("linux", "0FC63DAF-8483-4772-8E79-3D69ED477DE4", Some("83")),
    ("swap", "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F", Some("82")),
    ("bios", "21686148-6449-6E6F-744E-656564454649", None),
    ("lvm", "E6D6D379-F507-44C2-A23C-238F2A3DF928", Some("8e")),
    ("raid", "A19D880F-05FC-4D3B-A006-743F0F84911E", Some("fd")),
    ("home", "933AC7E1-2EB4-4F13-B844-0E14E2AEF915", Some("83")),
    ("xbootldr", "BC13C2FF-59E6-4262-A352-B275FD6F7172", Some("ea")),
    ("msr", "E3C9E316-0B5C-4DB8-817D-F92DF00215AE", None),
];

fn type_code(table: Table, kind: &str) -> Result<String, String> {
    let k = kind.trim().to_ascii_lowercase();
    if let Some((_, guid, byte)) = TYPES.iter().find(|(n, ..)| *n == k) {
        return match table {
            Table::Gpt => Ok(guid.to_string()),
            Table::Mbr => byte.map(str::to_string).ok_or_else(|| format!("{kind:?} has no MBR type")),
        };
    }
    match table {
        Table::Gpt if is_guid(&k) => Ok(k.to_ascii_uppercase()),
        Table::Mbr => {
            let hex = k.strip_prefix("0x").unwrap_or(&k);
            match u8::from_str_radix(hex, 16) {
                Ok(b) if b != 0 && hex.len() <= 2 => Ok(format!("{b:02x}")),
                _ => Err(format!("{kind:?} is not a type name or an MBR type byte like 83")),
            }
        }
        Table::Gpt => Err(format!(
            "{kind:?} is not a type name ({}) or a GPT type GUID",
            TYPES.iter().map(|t| t.0).collect::<Vec<_>>().join(", ")
        )),
    }
}

fn is_guid(s: &str) -> bool {
    let g: Vec<&str> = s.split('-').collect();
    g.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12]) && g.iter().all(|p| p.chars().all(|c| c.is_ascii_hexdigit()))
}

fn parse_size(s: &str) -> Result<Size, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("rest") {
        return Ok(Size::Rest);
    }
    if let Some(p) = t.strip_suffix('%') {
        let v: f64 = p.trim().parse().map_err(|_| format!("{s:?} is not a percentage like 25%"))?;
        if !(v > 0.0 && v <= 100.0) {
            return Err(format!("{s:?}: a percentage must be above 0 and at most 100"));
        }
        return Ok(Size::Percent(v));
    }
    let bytes = kiln_action_kit::disk::parse_size(t)?;
    if bytes == 0 {
        return Err("a partition cannot be empty".into());
    }
    Ok(Size::Bytes(bytes))
}

impl Layout {
    pub fn parse(json: &str) -> Result<Layout, String> {
        let de = &mut serde_json::Deserializer::from_str(json);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            if path == "." { e.inner().to_string() } else { format!("{path}: {}", e.inner()) }
        })
    }

    /// Checks every field; errors are `field: message`, with the field path
    /// inside the layout (`partitions[1].size`).
    pub fn check(self, mbr_default: bool, wipe_override: Option<bool>) -> Result<Checked, Vec<String>> {
        let mut errors = Vec::new();
        let table = match self.table.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None => {
                if mbr_default {
                    Table::Mbr
                } else {
                    Table::Gpt
                }
            }
            Some("gpt") => Table::Gpt,
            Some("mbr" | "dos" | "msdos") => Table::Mbr,
            Some(other) => {
                errors.push(format!("table: {other:?} is not gpt or mbr"));
                Table::Gpt
            }
        };
        if self.partitions.is_empty() {
            errors.push("partitions: at least one partition is required".into());
        }
        if table == Table::Mbr && self.partitions.len() > 4 {
            errors.push(format!(
                "partitions: an MBR table holds 4 primary partitions, the layout has {}",
                self.partitions.len()
            ));
        }
        let mut parts = Vec::new();
        let mut rests = 0;
        for (i, p) in self.partitions.into_iter().enumerate() {
            let f = |field: &str| format!("partitions[{i}].{field}");
            let size = match parse_size(&p.size) {
                Ok(s) => s,
                Err(e) => {
                    errors.push(format!("{}: {e}", f("size")));
                    Size::Rest
                }
            };
            if size == Size::Rest {
                rests += 1;
            }
            if let Some(n) = &p.name {
                if table == Table::Mbr {
                    errors.push(format!("{}: MBR partitions have no names (use a filesystem label)", f("name")));
                } else if n.encode_utf16().count() > 36 {
                    errors.push(format!("{}: GPT names hold 36 characters, {n:?} is longer", f("name")));
                } else if n.contains('"') {
                    errors.push(format!("{}: {n:?} contains a double quote", f("name")));
                }
            }
            let code = match type_code(table, p.kind.as_deref().unwrap_or("linux")) {
                Ok(c) => c,
                Err(e) => {
                    errors.push(format!("{}: {e}", f("type")));
                    String::new()
                }
            };
            let mkfs = match (p.filesystem, p.label) {
                (None, Some(_)) => {
                    errors.push(format!("{}: a label needs a filesystem", f("label")));
                    None
                }
                (None, None) => None,
                (Some(fs), label) => match FsType::parse(&fs) {
                    Err(e) => {
                        errors.push(format!("{}: {e}", f("filesystem")));
                        None
                    }
                    Ok(fs) => match Mkfs::new(fs, label, None, Vec::new()) {
                        Ok(m) => Some(m),
                        Err((field, e)) => {
                            errors.push(format!("{}: {e}", f(field)));
                            None
                        }
                    },
                },
            };
            parts.push((p.name, size, code, mkfs));
        }
        if rests > 1 {
            errors.push(format!("partitions: {rests} partitions have size \"rest\"; at most one can"));
        }
        if errors.is_empty() {
            Ok(Checked { table, wipe: wipe_override.or(self.wipe).unwrap_or(false), parts })
        } else {
            Err(errors)
        }
    }
}

impl Checked {
    pub fn wants_filesystems(&self) -> bool {
        self.parts.iter().any(|p| p.3.is_some())
    }

    /// Places the partitions on a disk of `disk_bytes`.
    pub fn place(&self, disk_bytes: u64) -> Result<Vec<Planned>, String> {
        let total = disk_bytes / SECTOR;
        let end = match self.table {
            Table::Gpt => total.saturating_sub(GPT_BACKUP_SECTORS),
            Table::Mbr => total,
        };
        let usable = end.saturating_sub(ALIGN);
        let round_up = |s: u64| s.div_ceil(ALIGN) * ALIGN;
        let fixed: Vec<Option<u64>> = self
            .parts
            .iter()
            .map(|(_, size, ..)| match size {
                Size::Bytes(b) => Some(round_up(b.div_ceil(SECTOR))),
                Size::Percent(p) => Some(((total as f64 * p / 100.0) as u64 / ALIGN * ALIGN).max(ALIGN)),
                Size::Rest => None,
            })
            .collect();
        let needed: u64 = fixed.iter().flatten().sum();
        let rest_index = fixed.iter().position(Option::is_none);
        if needed + if rest_index.is_some() { ALIGN } else { 0 } > usable {
            let need_mib = (needed + ALIGN * (1 + u64::from(rest_index.is_some()))) / ALIGN;
            return Err(format!(
                "the layout needs {need_mib} MiB but the disk has {} MiB ({} bytes)",
                total / ALIGN,
                disk_bytes
            ));
        }
        let mut planned = Vec::new();
        let mut start = ALIGN;
        for (i, (name, _, code, mkfs)) in self.parts.iter().enumerate() {
            let sectors = match fixed[i] {
                Some(s) => s,
                // The last partition may end exactly at the end; one in the
                // middle keeps the next start aligned.
                None if i + 1 == self.parts.len() => end - start,
                None => (usable - needed) / ALIGN * ALIGN,
            };
            planned.push(Planned {
                number: i + 1,
                name: name.clone(),
                start,
                sectors,
                type_code: code.clone(),
                mkfs: mkfs.clone(),
            });
            start += sectors;
        }
        Ok(planned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(json: &str) -> Result<Checked, Vec<String>> {
        Layout::parse(json).map_err(|e| vec![e])?.check(false, None)
    }

    #[test]
    fn sizes_percent_and_rest_are_aligned() {
        let c = check(
            r#"{"partitions":[{"name":"efi","size":"512MiB","type":"efi"},{"name":"root","size":"rest"},{"name":"data","size":"25%","type":"home"}]}"#,
        )
        .unwrap();
        let disk = 10u64 << 30; // 20971520 sectors
        let p = c.place(disk).unwrap();
        assert_eq!((p[0].start, p[0].sectors), (2048, 512 * 2048));
        assert_eq!(p[2].sectors, 20971520 / 4);
        assert_eq!(p[1].start, 2048 + 512 * 2048);
        assert_eq!(p[1].sectors % ALIGN, 0);
        assert_eq!(p[2].start, p[1].start + p[1].sectors);
        assert!(p[2].start + p[2].sectors <= 20971520 - 33, "GPT backup space kept");
        assert_eq!(p[0].type_code, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
        assert_eq!(p[2].type_code, "933AC7E1-2EB4-4F13-B844-0E14E2AEF915");
    }

    #[test]
    fn a_last_rest_fills_to_the_end() {
        let c = check(r#"{"table":"mbr","partitions":[{"size":"100M","type":"83"},{"size":"rest","type":"0x82"}]}"#)
            .unwrap();
        let p = c.place(1 << 30).unwrap();
        assert_eq!(p[1].start + p[1].sectors, (1 << 30) / 512);
        assert_eq!(p[1].type_code, "82");
        let c = check(r#"{"partitions":[{"size":"100M"},{"size":"rest"}]}"#).unwrap();
        let p = c.place(1 << 30).unwrap();
        assert_eq!(p[1].start + p[1].sectors, (1 << 30) / 512 - 33);
    }

    #[test]
    fn a_layout_too_big_says_how_much_it_needs() {
        let c = check(r#"{"partitions":[{"size":"600MiB"},{"size":"600MiB"}]}"#).unwrap();
        let e = c.place(1 << 30).unwrap_err();
        assert!(e.contains("needs 1201 MiB but the disk has 1024 MiB"), "{e}");
        let c = check(r#"{"partitions":[{"size":"1023MiB"},{"size":"rest"}]}"#).unwrap();
        assert!(c.place(1 << 30).is_err(), "rest needs at least 1 MiB");
    }

    #[test]
    fn every_bad_field_is_named() {
        let errors = check(
            r#"{"table":"zfs","partitions":[{"size":"huge"},{"size":"rest","type":"windows","filesystem":"ntfs"},{"size":"rest","label":"x"}]}"#,
        )
        .unwrap_err();
        let all = errors.join("\n");
        for needle in [
            "table: \"zfs\"",
            "partitions[0].size:",
            "partitions[1].type:",
            "partitions[1].filesystem:",
            "partitions[2].label: a label needs a filesystem",
            "at most one can",
        ] {
            assert!(all.contains(needle), "{needle} missing from {all}");
        }
        let mbr = check(r#"{"table":"mbr","partitions":[{"name":"a","size":"1M"},{"size":"1M","type":"bios"},{"size":"1M"},{"size":"1M"},{"size":"1M"}]}"#)
            .unwrap_err()
            .join("\n");
        assert!(
            mbr.contains("4 primary") && mbr.contains("partitions[0].name") && mbr.contains("partitions[1].type"),
            "{mbr}"
        );
        let unknown = Layout::parse(r#"{"partitions":[{"size":"1M","colour":"red"}]}"#).unwrap_err();
        assert!(unknown.starts_with("partitions[0]") && unknown.contains("colour"), "{unknown}");
        let fat = check(r#"{"partitions":[{"size":"1M","filesystem":"vfat","label":"MUCH_TOO_LONG"}]}"#).unwrap_err();
        assert!(fat[0].starts_with("partitions[0].label:"), "{fat:?}");
    }
}
