//! The declarative layout and the arithmetic that turns it into sectors.
//!
//! Every partition starts on a 1 MiB boundary (what every modern tool does,
//! and right for 4K-sector disks and SSD erase blocks), so absolute sizes are
//! rounded up to whole MiB and percentages down. `rest` takes what the others
//! leave; GPT keeps its backup table's 33 sectors at the end free.

use kiln_action_format::{Field, FsType, Mkfs};
use kiln_action_kit::progress::bytes;
use serde::Deserialize;

pub const SECTOR: u64 = 512;
/// 1 MiB in sectors.
pub const ALIGN: u64 = 2048;
/// GPT's backup header and entry array at the end of the disk.
const GPT_BACKUP_SECTORS: u64 = 33;
/// MBR stores starts and sizes in 32 bits of sectors: 2 TiB.
const MBR_MAX_SECTORS: u64 = u32::MAX as u64;

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

impl Table {
    /// sfdisk's name for it.
    pub fn label(self) -> &'static str {
        match self {
            Table::Gpt => "gpt",
            Table::Mbr => "dos",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Size {
    Bytes(u64),
    Percent(f64),
    Rest,
}

/// A partition's type as sfdisk writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeCode {
    /// Upper-case GUID.
    Guid(String),
    Byte(u8),
}

impl TypeCode {
    /// What sfdisk's `type=` takes.
    pub fn script(&self) -> String {
        match self {
            TypeCode::Guid(g) => g.clone(),
            TypeCode::Byte(b) => format!("{b:02x}"),
        }
    }

    /// Whether sfdisk's read-back `type` (a GUID, or a byte in hex without
    /// leading zero: `c`) is this type.
    pub fn matches(&self, dumped: &str) -> bool {
        match self {
            TypeCode::Guid(g) => g.eq_ignore_ascii_case(dumped),
            TypeCode::Byte(b) => u8::from_str_radix(dumped.trim_start_matches("0x"), 16) == Ok(*b),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub number: usize,
    pub name: Option<String>,
    /// First sector.
    pub start: u64,
    pub sectors: u64,
    pub type_code: TypeCode,
    pub mkfs: Option<Mkfs>,
}

#[derive(Debug, Clone, PartialEq)]
struct Part {
    name: Option<String>,
    size: Size,
    type_code: TypeCode,
    mkfs: Option<Mkfs>,
}

/// A checked layout, before it meets a disk.
#[derive(Debug)]
pub struct Checked {
    pub table: Table,
    pub wipe: bool,
    parts: Vec<Part>,
}

/// Type names templates use: GPT type GUID and MBR type byte.
const TYPES: &[(&str, &str, Option<u8>)] = &[
    ("efi", "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", Some(0xef)),
    ("esp", "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", Some(0xef)),
    ("linux", "0FC63DAF-8483-4772-8E79-3D69D8477DE4", Some(0x83)),
    ("swap", "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F", Some(0x82)),
    ("bios", "21686148-6449-6E6F-744E-656564454649", None),
    ("lvm", "E6D6D379-F507-44C2-A23C-238F2A3DF928", Some(0x8e)),
    ("raid", "A19D880F-05FC-4D3B-A006-743F0F84911E", Some(0xfd)),
    ("home", "933AC7E1-2EB4-4F13-B844-0E14E2AEF915", Some(0x83)),
    ("xbootldr", "BC13C2FF-59E6-4262-A352-B275FD6F7172", Some(0xea)),
    ("msr", "E3C9E316-0B5C-4DB8-817D-F92DF00215AE", None),
];

fn type_names() -> String {
    TYPES.iter().map(|t| t.0).collect::<Vec<_>>().join(", ")
}

fn type_code(table: Table, kind: &str) -> Result<TypeCode, String> {
    let k = kind.trim().to_ascii_lowercase();
    if let Some((name, guid, byte)) = TYPES.iter().find(|(n, ..)| *n == k) {
        return match table {
            Table::Gpt => Ok(TypeCode::Guid(guid.to_string())),
            Table::Mbr => byte.map(TypeCode::Byte).ok_or_else(|| format!("{name:?} exists only on GPT")),
        };
    }
    match table {
        Table::Gpt if is_guid(&k) => Ok(TypeCode::Guid(k.to_ascii_uppercase())),
        Table::Gpt => Err(format!("{kind:?} is not a type name ({}) or a GPT type GUID", type_names())),
        Table::Mbr => {
            let hex = k.strip_prefix("0x").unwrap_or(&k);
            match u8::from_str_radix(hex, 16) {
                // 0 marks an unused entry; 5, f and 85 are extended
                // partitions, which hold logical ones this layout cannot say.
                Ok(b) if !hex.is_empty() && hex.len() <= 2 && ![0, 0x05, 0x0f, 0x85].contains(&b) => {
                    Ok(TypeCode::Byte(b))
                }
                _ => Err(format!(
                    "{kind:?} is not a type name ({}) or an MBR type byte like 83 or 0x0c (not 0 or an extended type)",
                    type_names()
                )),
            }
        }
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
    let bytes = kiln_action_kit::disk::parse_size(t).map_err(|e| format!("{e}, a percentage like 25%, or \"rest\""))?;
    if bytes == 0 {
        return Err(format!("{s:?}: a partition cannot be empty"));
    }
    Ok(Size::Bytes(bytes))
}

fn check_name(table: Table, name: &str) -> Result<(), String> {
    if table == Table::Mbr {
        return Err("MBR partitions have no names (leave it out, or give the filesystem a label)".into());
    }
    if name.is_empty() {
        return Err("must not be empty (leave it out for no name)".into());
    }
    if name.encode_utf16().count() > 36 {
        return Err(format!("{name:?} is longer than the 36 UTF-16 characters a GPT name holds"));
    }
    // sfdisk reads the name from a quoted script field and has no escapes.
    if name.contains('"') || name.chars().any(char::is_control) {
        return Err(format!("{name:?} must not contain double quotes or control characters"));
    }
    Ok(())
}

impl Layout {
    /// Parses the JSON. An error is `(path, message)`, the path inside the
    /// layout (`partitions[0]`), empty when it is about the whole document.
    pub fn parse(json: &str) -> Result<Layout, (String, String)> {
        let de = &mut serde_json::Deserializer::from_str(json);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            // serde_path_to_error says `.` for the document and `?` where
            // the syntax broke before a path was known.
            (if path == "." || path == "?" { String::new() } else { path }, e.inner().to_string())
        })
    }

    /// Checks every field. Errors are `(field, message)`, the field's path
    /// inside the layout (`partitions[1].size`); all are returned at once.
    ///
    /// `mbr_default` picks MBR when the layout names no table (Tinkerbell's
    /// `MBR=true`); `wipe_override` is the `WIPE` variable, which wins over
    /// the layout's `wipe`.
    pub fn check(self, mbr_default: bool, wipe_override: Option<bool>) -> Result<Checked, Vec<(String, String)>> {
        let mut errors: Vec<(String, String)> = Vec::new();
        let table = match self.table.as_deref().map(|t| t.trim().to_ascii_lowercase()).as_deref() {
            None if mbr_default => Table::Mbr,
            None => Table::Gpt,
            Some("gpt") => Table::Gpt,
            Some("mbr" | "dos" | "msdos") => Table::Mbr,
            Some(other) => {
                errors.push(("table".into(), format!("{other:?} is not gpt or mbr")));
                Table::Gpt
            }
        };
        if self.partitions.is_empty() {
            errors.push(("partitions".into(), "at least one partition is required".into()));
        }
        if table == Table::Mbr && self.partitions.len() > 4 {
            errors.push((
                "partitions".into(),
                format!("an MBR table holds 4 primary partitions, the layout has {}", self.partitions.len()),
            ));
        }
        let mut parts = Vec::new();
        let mut rests = Vec::new();
        for (i, p) in self.partitions.into_iter().enumerate() {
            let mut bad = |field: &str, msg: String| errors.push((format!("partitions[{i}].{field}"), msg));
            let size = parse_size(&p.size).unwrap_or_else(|e| {
                bad("size", e);
                Size::Bytes(ALIGN * SECTOR)
            });
            if size == Size::Rest {
                rests.push(i);
            }
            if let Some(Err(e)) = p.name.as_deref().map(|n| check_name(table, n)) {
                bad("name", e);
            }
            let fs = p.filesystem.as_deref().map(FsType::parse).transpose().unwrap_or_else(|e| {
                bad("filesystem", e);
                None
            });
            // Swap is the one filesystem whose partition type follows from it.
            let default_kind = if fs == Some(FsType::Swap) { "swap" } else { "linux" };
            let code = type_code(table, p.kind.as_deref().unwrap_or(default_kind)).unwrap_or_else(|e| {
                bad("type", e);
                TypeCode::Byte(0)
            });
            let mkfs = match (fs, p.label) {
                (_, Some(_)) if p.filesystem.is_none() => {
                    bad("label", "a label needs a filesystem".into());
                    None
                }
                (Some(fs), label) => Mkfs::new(fs, label, None, Vec::new())
                    .map_err(|(field, e)| bad(if field == Field::Label { "label" } else { "filesystem" }, e))
                    .ok(),
                (None, _) => None,
            };
            parts.push(Part { name: p.name, size, type_code: code, mkfs });
        }
        if rests.len() > 1 {
            let which = rests.iter().map(|i| format!("partitions[{i}]")).collect::<Vec<_>>().join(", ");
            errors.push(("partitions".into(), format!("{which} all have size \"rest\"; at most one can")));
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
        self.parts.iter().any(|p| p.mkfs.is_some())
    }

    /// Places the partitions on a disk of `disk_bytes`. The error says how
    /// much the layout needs and how much there is.
    pub fn place(&self, disk_bytes: u64) -> Result<Vec<Planned>, String> {
        let total = disk_bytes / SECTOR;
        let (end, reserved_at_end) = match self.table {
            Table::Gpt => (total.saturating_sub(GPT_BACKUP_SECTORS), GPT_BACKUP_SECTORS),
            Table::Mbr => (total.min(MBR_MAX_SECTORS), 0),
        };
        // Percentages are of this space: the disk less the first MiB (the
        // table, and alignment) and GPT's backup, so 50% + 50% fits.
        let usable = end.saturating_sub(ALIGN);
        let sizes: Vec<Option<u64>> = self
            .parts
            .iter()
            .map(|p| match p.size {
                Size::Bytes(b) => Some(b.div_ceil(SECTOR).div_ceil(ALIGN) * ALIGN),
                Size::Percent(pc) => Some(((usable as f64 * pc / 100.0) as u64 / ALIGN * ALIGN).max(ALIGN)),
                Size::Rest => None,
            })
            .collect();
        let fixed: u64 = sizes.iter().flatten().sum();
        let rest_index = sizes.iter().position(Option::is_none);
        // `rest` needs at least 1 MiB.
        let needed = fixed + if rest_index.is_some() { ALIGN } else { 0 };
        if needed > usable {
            let want = ALIGN + needed + reserved_at_end;
            // An MBR table cannot use what lies past 2 TiB.
            let available = if self.table == Table::Gpt { total } else { end };
            let limit = if self.table == Table::Mbr && total > MBR_MAX_SECTORS {
                " (all an MBR table can address; use a GPT table)"
            } else {
                ""
            };
            return Err(format!(
                "the layout needs {want} sectors ({}, counting the first MiB{}{}) but the disk has {available} \
                 sectors ({}){limit}",
                bytes(want * SECTOR),
                if self.table == Table::Gpt { " and the GPT backup" } else { "" },
                if rest_index.is_some() { " and 1 MiB for \"rest\"" } else { "" },
                bytes(available * SECTOR),
            ));
        }
        let mut planned = Vec::new();
        let mut start = ALIGN;
        for (i, p) in self.parts.iter().enumerate() {
            let sectors = match sizes[i] {
                Some(s) => s,
                // Last, it runs to the end; in the middle it stays whole MiB
                // so the next start is aligned.
                None if i + 1 == self.parts.len() => end - start,
                None => (usable - fixed) / ALIGN * ALIGN,
            };
            planned.push(Planned {
                number: i + 1,
                name: p.name.clone(),
                start,
                sectors,
                type_code: p.type_code.clone(),
                mkfs: p.mkfs.clone(),
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
        Layout::parse(json)
            .map_err(|(p, e)| vec![format!("{p}: {e}")])?
            .check(false, None)
            .map_err(|es| es.into_iter().map(|(f, e)| format!("{f}: {e}")).collect())
    }

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    #[test]
    fn absolute_percent_and_rest_in_the_middle() {
        let c = check(
            r#"{"partitions":[{"name":"efi","size":"512MiB","type":"efi"},{"name":"root","size":"rest"},{"name":"data","size":"25%","type":"home"}]}"#,
        )
        .unwrap();
        let total = 10 * GIB / SECTOR;
        let usable = total - 33 - ALIGN;
        let p = c.place(10 * GIB).unwrap();
        assert_eq!((p[0].start, p[0].sectors), (2048, 512 * MIB / SECTOR));
        assert_eq!(p[2].sectors, usable / 4 / ALIGN * ALIGN);
        assert_eq!(p[1].start, p[0].start + p[0].sectors);
        assert_eq!(p[1].sectors, (usable - p[0].sectors - p[2].sectors) / ALIGN * ALIGN);
        assert_eq!(p[2].start, p[1].start + p[1].sectors);
        assert!(p.iter().all(|p| p.start % ALIGN == 0), "{p:?}");
        assert!(p[2].start + p[2].sectors <= total - 33, "GPT backup space kept");
        assert_eq!(p[0].type_code, TypeCode::Guid("C12A7328-F81F-11D2-BA4B-00A0C93EC93B".into()));
        assert_eq!(p[1].type_code, TypeCode::Guid("0FC63DAF-8483-4772-8E79-3D69D8477DE4".into()));
        assert_eq!(p[2].type_code, TypeCode::Guid("933AC7E1-2EB4-4F13-B844-0E14E2AEF915".into()));
        assert_eq!(p.iter().map(|p| p.number).collect::<Vec<_>>(), [1, 2, 3]);
    }

    #[test]
    fn absolute_sizes_round_up_to_whole_mib() {
        let c = check(r#"{"partitions":[{"size":"100MB"},{"size":"1"},{"size":"1.5M"}]}"#).unwrap();
        let p = c.place(GIB).unwrap();
        assert_eq!(p[0].sectors, 96 * ALIGN, "100 MB is 95.4 MiB");
        assert_eq!(p[1].sectors, ALIGN);
        assert_eq!(p[2].sectors, 2 * ALIGN);
        assert_eq!(p[2].start, ALIGN + 97 * ALIGN);
    }

    #[test]
    fn halves_fill_the_usable_space() {
        let c = check(r#"{"partitions":[{"size":"50%"},{"size":"50%"}]}"#).unwrap();
        let p = c.place(GIB).unwrap();
        let usable = GIB / SECTOR - 33 - ALIGN;
        assert_eq!(p[0].sectors, usable / 2 / ALIGN * ALIGN);
        assert!(p[1].start + p[1].sectors <= GIB / SECTOR - 33);
        let c = check(r#"{"partitions":[{"size":"100%"}]}"#).unwrap();
        assert_eq!(c.place(GIB).unwrap()[0].sectors, usable / ALIGN * ALIGN);
        let c = check(r#"{"partitions":[{"size":"0.001%"}]}"#).unwrap();
        assert_eq!(c.place(GIB).unwrap()[0].sectors, ALIGN, "a tiny percentage is still 1 MiB");
    }

    #[test]
    fn a_last_rest_fills_to_the_end() {
        let c = check(r#"{"table":"mbr","partitions":[{"size":"100M","type":"83"},{"size":"rest","type":"0x82"}]}"#)
            .unwrap();
        let p = c.place(GIB).unwrap();
        assert_eq!(p[1].start, ALIGN + 100 * ALIGN);
        assert_eq!(p[1].start + p[1].sectors, GIB / SECTOR);
        assert_eq!(p[1].type_code, TypeCode::Byte(0x82));
        let c = check(r#"{"partitions":[{"size":"100M"},{"size":"rest"}]}"#).unwrap();
        let p = c.place(GIB + 7 * SECTOR).unwrap();
        assert_eq!(p[1].start + p[1].sectors, GIB / SECTOR + 7 - 33);
    }

    #[test]
    fn a_rest_in_the_middle_gets_everything_left() {
        // 1 GiB GPT: 2097152 sectors, usable 2097152 - 33 - 2048 = 2095071,
        // so 1021 whole MiB after the first, leaving 1 for "rest".
        let c = check(r#"{"partitions":[{"size":"1020MiB"},{"size":"rest"},{"size":"1MiB"}]}"#).unwrap();
        let p = c.place(GIB).unwrap();
        assert_eq!(p[1].sectors, ALIGN);
        assert_eq!(p[2].start, ALIGN + 1021 * ALIGN);
    }

    #[test]
    fn a_layout_too_big_says_how_much_it_needs() {
        let c = check(r#"{"partitions":[{"size":"600MiB"},{"size":"600MiB"}]}"#).unwrap();
        let e = c.place(GIB).unwrap_err();
        let want = 2048 + 1200 * 2048 + 33;
        assert!(
            e.contains(&format!("needs {want} sectors")) && e.contains("but the disk has 2097152 sectors (1.0 GiB)"),
            "{e}"
        );
        let c = check(r#"{"partitions":[{"size":"1022MiB"},{"size":"rest"}]}"#).unwrap();
        assert!(c.place(GIB).unwrap_err().contains("1 MiB for \"rest\""), "rest needs at least 1 MiB");
        let c = check(r#"{"partitions":[{"size":"1023MiB"}]}"#).unwrap();
        assert!(c.place(GIB).is_err(), "the GPT backup does not fit after 1 + 1023 MiB");
        let c = check(r#"{"table":"mbr","partitions":[{"size":"1023MiB"}]}"#).unwrap();
        assert_eq!(c.place(GIB).unwrap()[0].sectors, 1023 * ALIGN, "MBR has no backup");
        let c = check(r#"{"partitions":[{"size":"1MiB"}]}"#).unwrap();
        assert!(c.place(0).unwrap_err().contains("the disk has 0 sectors"));
    }

    #[test]
    fn mbr_stops_at_2_tib() {
        let c = check(r#"{"table":"mbr","partitions":[{"size":"rest"}]}"#).unwrap();
        let p = c.place(4 << 40).unwrap();
        assert_eq!(p[0].start + p[0].sectors, u32::MAX as u64);
        let c = check(r#"{"table":"mbr","partitions":[{"size":"3TiB"}]}"#).unwrap();
        assert!(c.place(4 << 40).unwrap_err().contains("use a GPT table"));
    }

    #[test]
    fn type_names_guids_and_bytes() {
        let gpt = |k| type_code(Table::Gpt, k);
        let mbr = |k| type_code(Table::Mbr, k);
        assert_eq!(gpt("ESP"), gpt("efi"));
        assert_eq!(gpt("bios").unwrap().script(), "21686148-6449-6E6F-744E-656564454649");
        assert_eq!(
            gpt("0fc63daf-8483-4772-8e79-3d69d8477de4").unwrap(),
            TypeCode::Guid("0FC63DAF-8483-4772-8E79-3D69D8477DE4".into())
        );
        assert!(gpt("83").unwrap_err().contains("GPT type GUID"));
        assert!(gpt("0fc63daf-8483-4772-8e79-3d69d8477dez").is_err());
        assert_eq!(mbr("efi").unwrap(), TypeCode::Byte(0xef));
        assert_eq!(mbr("0x0C").unwrap().script(), "0c");
        assert_eq!(mbr("83").unwrap(), TypeCode::Byte(0x83));
        for bad in ["0", "5", "0x85", "100", "", "0x", "zz"] {
            assert!(mbr(bad).is_err(), "{bad:?} accepted");
        }
        assert!(mbr("msr").unwrap_err().contains("only on GPT"));
        assert!(TypeCode::Byte(0x0c).matches("c") && TypeCode::Byte(0x0c).matches("0c"));
        assert!(!TypeCode::Byte(0x0c).matches("83"));
        assert!(
            TypeCode::Guid("C12A7328-F81F-11D2-BA4B-00A0C93EC93B".into())
                .matches("c12a7328-f81f-11d2-ba4b-00a0c93ec93b")
        );
    }

    /// The GUIDs and bytes are the ones sfdisk itself knows by those names.
    #[test]
    fn type_table_agrees_with_sfdisk() {
        let list = |label: &str| {
            let out = std::process::Command::new("sfdisk").args(["--label", label, "--list-types"]).output().unwrap();
            String::from_utf8(out.stdout).unwrap()
        };
        let (gpt, dos) = (list("gpt"), list("dos"));
        let described = |list: &str, code: &str| {
            list.lines()
                .find_map(|l| l.trim().strip_prefix(code).filter(|r| r.starts_with(' ')).map(|r| r.trim().to_string()))
        };
        let expect = [
            ("efi", "EFI System", Some("EFI (FAT-12/16/32)")),
            ("linux", "Linux filesystem", Some("Linux")),
            ("swap", "Linux swap", Some("Linux swap / Solaris")),
            ("bios", "BIOS boot", None),
            ("lvm", "Linux LVM", Some("Linux LVM")),
            ("raid", "Linux RAID", Some("Linux raid autodetect")),
            ("home", "Linux home", Some("Linux")),
            ("xbootldr", "Linux extended boot", Some("Linux extended boot")),
            ("msr", "Microsoft reserved", None),
        ];
        for (name, gpt_desc, dos_desc) in expect {
            let code = type_code(Table::Gpt, name).unwrap().script();
            assert_eq!(described(&gpt, &code).as_deref(), Some(gpt_desc), "{name}");
            match dos_desc {
                Some(d) => {
                    let code = type_code(Table::Mbr, name).unwrap().script();
                    assert_eq!(described(&dos, &code).as_deref(), Some(d), "{name}");
                }
                None => assert!(type_code(Table::Mbr, name).is_err()),
            }
        }
        assert_eq!(TYPES.len(), expect.len() + 1, "esp is efi's alias; every other name is checked");
    }

    #[test]
    fn table_choice_and_wipe() {
        let l = |j: &str| Layout::parse(j).unwrap();
        let one = r#"{"partitions":[{"size":"rest"}]}"#;
        assert_eq!(l(one).check(false, None).unwrap().table, Table::Gpt);
        assert_eq!(l(one).check(true, None).unwrap().table, Table::Mbr, "MBR=true");
        let gpt = r#"{"table":"GPT","wipe":true,"partitions":[{"size":"rest"}]}"#;
        assert_eq!(l(gpt).check(true, None).unwrap().table, Table::Gpt, "the layout wins over MBR=true");
        assert!(l(gpt).check(false, None).unwrap().wipe);
        assert!(!l(gpt).check(false, Some(false)).unwrap().wipe, "WIPE wins over the layout");
        assert!(l(one).check(false, Some(true)).unwrap().wipe);
        assert!(!l(one).check(false, None).unwrap().wipe);
        assert_eq!(
            l(r#"{"table":"msdos","partitions":[{"size":"rest"}]}"#).check(false, None).unwrap().table,
            Table::Mbr
        );
    }

    #[test]
    fn filesystems_and_their_default_types() {
        let c = check(
            r#"{"partitions":[{"size":"1G","filesystem":"swap"},{"size":"1G","filesystem":"vfat","label":"EFI","type":"efi"},{"size":"1G"}]}"#,
        )
        .unwrap();
        assert!(c.wants_filesystems());
        let p = c.place(10 * GIB).unwrap();
        assert_eq!(p[0].type_code, type_code(Table::Gpt, "swap").unwrap());
        assert_eq!(p[0].mkfs.as_ref().unwrap().fs, FsType::Swap);
        assert_eq!(p[1].mkfs.as_ref().unwrap().label.as_deref(), Some("EFI"));
        assert_eq!(p[2].mkfs, None);
        assert!(!check(r#"{"partitions":[{"size":"1G"}]}"#).unwrap().wants_filesystems());
    }

    #[test]
    fn every_bad_field_is_named() {
        let errors = check(
            r#"{"table":"zfs","partitions":[{"size":"huge"},{"size":"rest","type":"windows","filesystem":"ntfs"},{"size":"rest","label":"x"},{"size":"0"},{"size":"150%"},{"size":"1G","name":""},{"size":"1G","name":"a\"b"},{"size":"1G","name":"0123456789012345678901234567890123456"}]}"#,
        )
        .unwrap_err();
        let all = errors.join("\n");
        for needle in [
            "table: \"zfs\" is not gpt or mbr",
            "partitions[0].size: \"huge\" is not a size",
            "partitions[1].type: \"windows\" is not a type name (efi, esp, linux",
            "partitions[1].filesystem: \"ntfs\"",
            "partitions[2].label: a label needs a filesystem",
            "partitions: partitions[1], partitions[2] all have size \"rest\"",
            "partitions[3].size: \"0\": a partition cannot be empty",
            "partitions[4].size: \"150%\": a percentage must be above 0 and at most 100",
            "partitions[5].name: must not be empty",
            "partitions[6].name: \"a\\\"b\" must not contain double quotes",
            "partitions[7].name: \"0123456789012345678901234567890123456\" is longer than the 36",
        ] {
            assert!(all.contains(needle), "{needle} missing from\n{all}");
        }
        assert_eq!(errors.len(), 11, "{all}");
        assert!(check(r#"{"partitions":[{"size":"1G","name":"012345678901234567890123456789 ünï"}]}"#).is_ok());
        let mbr = check(r#"{"table":"mbr","partitions":[{"name":"a","size":"1M"},{"size":"1M","type":"bios"},{"size":"1M"},{"size":"1M"},{"size":"1M"}]}"#)
            .unwrap_err()
            .join("\n");
        for needle in [
            "partitions: an MBR table holds 4 primary partitions, the layout has 5",
            "partitions[0].name: MBR partitions have no names",
            "partitions[1].type: \"bios\" exists only on GPT",
        ] {
            assert!(mbr.contains(needle), "{needle} missing from\n{mbr}");
        }
        let empty = check(r#"{"partitions":[]}"#).unwrap_err();
        assert_eq!(empty, ["partitions: at least one partition is required"]);
        let fat = check(r#"{"partitions":[{"size":"1M","filesystem":"vfat","label":"MUCH_TOO_LONG"}]}"#).unwrap_err();
        assert!(fat[0].starts_with("partitions[0].label: \"MUCH_TOO_LONG\" is 13 bytes"), "{fat:?}");
    }

    #[test]
    fn json_errors_carry_their_path() {
        let (path, msg) = Layout::parse(r#"{"partitions":[{"size":"1M"},{"size":"1M","colour":"red"}]}"#).unwrap_err();
        assert!(path.starts_with("partitions[1]") && msg.contains("unknown field `colour`"), "{path}: {msg}");
        let (path, msg) = Layout::parse(r#"{"partitions":[{"size":1}]}"#).unwrap_err();
        assert_eq!(path, "partitions[0].size");
        assert!(msg.contains("expected a string"), "{msg}");
        let (path, msg) = Layout::parse(r#"{"tabel":"gpt","partitions":[]}"#).unwrap_err();
        assert!(path.is_empty() || path == "tabel", "{path}");
        assert!(msg.contains("unknown field `tabel`"), "{msg}");
        let (path, msg) = Layout::parse(r#"{"table":"gpt"}"#).unwrap_err();
        assert_eq!((path.as_str(), msg.contains("missing field `partitions`")), ("", true), "{msg}");
        assert!(Layout::parse("not json").is_err());
    }
}
