//! Writing the table with sfdisk, and reading it back to check it.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use kiln_action_kit::{Failure, Result, log};
use serde::Deserialize;

use crate::ACTION;
use crate::layout::{Planned, Table};

/// sfdisk's input for the plan: explicit starts and sizes, nothing left to
/// its defaults.
pub fn script(table: Table, parts: &[Planned]) -> String {
    let mut s = format!("label: {}\nunit: sectors\n\n", table.label());
    for p in parts {
        s.push_str(&format!("start={}, size={}, type={}", p.start, p.sectors, p.type_code.script()));
        if let Some(n) = &p.name {
            s.push_str(&format!(", name=\"{n}\""));
        }
        s.push('\n');
    }
    s
}

pub fn write(disk: &Path, table: Table, parts: &[Planned]) -> Result<()> {
    let text = script(table, parts);
    log(ACTION, format_args!("writing the table on {} with sfdisk:", disk.display()));
    for line in text.lines().filter(|l| !l.is_empty()) {
        log(ACTION, format_args!("  {line}"));
    }
    // --wipe always: old filesystem and table signatures at the table's
    // places would make blkid see two things. --no-reread/--no-tell-kernel:
    // the action asks the kernel itself afterwards and decides whether a
    // refusal matters.
    let mut child = Command::new("sfdisk")
        .args(["--wipe", "always", "--no-reread", "--no-tell-kernel", "--quiet"])
        .arg(disk)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Failure::new("SfdiskFailed", format!("cannot run sfdisk: {e}")))?;
    // A write error here (sfdisk gave up early) shows in its exit status.
    let _ = child.stdin.take().expect("piped").write_all(text.as_bytes());
    let out = child.wait_with_output().map_err(|e| Failure::new("SfdiskFailed", e.to_string()))?;
    if !out.status.success() {
        return Err(Failure::new(
            "SfdiskFailed",
            format!(
                "sfdisk failed on {} ({}): {}\ninput was:\n{text}",
                disk.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(())
}

#[derive(Deserialize, Debug)]
pub struct Dump {
    pub partitiontable: DumpTable,
}

#[derive(Deserialize, Debug)]
pub struct DumpTable {
    pub label: String,
    #[serde(default)]
    pub partitions: Vec<DumpPart>,
}

#[derive(Deserialize, Debug, Clone)]
pub struct DumpPart {
    pub start: u64,
    pub size: u64,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub name: Option<String>,
}

/// Reads the table as sfdisk sees it.
pub fn read(disk: &Path) -> Result<DumpTable> {
    let out = Command::new("sfdisk")
        .arg("--json")
        .arg(disk)
        .output()
        .map_err(|e| Failure::new("SfdiskFailed", format!("cannot run sfdisk: {e}")))?;
    if !out.status.success() {
        return Err(Failure::new(
            "SfdiskFailed",
            format!("sfdisk --json {} failed: {}", disk.display(), String::from_utf8_lossy(&out.stderr).trim()),
        ));
    }
    let dump: Dump = serde_json::from_slice(&out.stdout)
        .map_err(|e| Failure::new("SfdiskFailed", format!("cannot parse sfdisk --json {}: {e}", disk.display())))?;
    Ok(dump.partitiontable)
}

/// Checks that what sfdisk reads back is the plan; `Err` says the first
/// difference.
pub fn compare(table: Table, parts: &[Planned], got: &DumpTable) -> std::result::Result<(), String> {
    if got.label != table.label() {
        return Err(format!("the table is {:?}, not {:?}", got.label, table.label()));
    }
    if got.partitions.len() != parts.len() {
        return Err(format!("{} partitions, not {}", got.partitions.len(), parts.len()));
    }
    for (g, w) in got.partitions.iter().zip(parts) {
        let same = g.start == w.start && g.size == w.sectors && w.type_code.matches(&g.kind) && g.name == w.name;
        if !same {
            return Err(format!(
                "partition {} is start={} size={} type={} name={:?}, not start={} size={} type={} name={:?}",
                w.number,
                g.start,
                g.size,
                g.kind,
                g.name,
                w.start,
                w.sectors,
                w.type_code.script(),
                w.name
            ));
        }
    }
    Ok(())
}

/// Reads the table back and checks it is the plan.
pub fn verify(disk: &Path, table: Table, parts: &[Planned]) -> Result<Vec<DumpPart>> {
    let got = read(disk)?;
    compare(table, parts, &got).map_err(|e| {
        Failure::new("TableMismatch", format!("the table on {} is not the one written: {e}", disk.display()))
    })?;
    Ok(got.partitions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::TypeCode;

    fn plan() -> Vec<Planned> {
        vec![
            Planned {
                number: 1,
                name: Some("efi".into()),
                start: 2048,
                sectors: 131072,
                type_code: TypeCode::Guid("C12A7328-F81F-11D2-BA4B-00A0C93EC93B".into()),
                mkfs: None,
            },
            Planned {
                number: 2,
                name: None,
                start: 133120,
                sectors: 4096,
                type_code: TypeCode::Guid("0FC63DAF-8483-4772-8E79-3D69D8477DE4".into()),
                mkfs: None,
            },
        ]
    }

    #[test]
    fn script_is_explicit() {
        assert_eq!(
            script(Table::Gpt, &plan()),
            "label: gpt\nunit: sectors\n\n\
             start=2048, size=131072, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=\"efi\"\n\
             start=133120, size=4096, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n"
        );
        let mut mbr = plan();
        mbr[0].name = None;
        mbr[0].type_code = TypeCode::Byte(0x0c);
        mbr[1].type_code = TypeCode::Byte(0x83);
        assert_eq!(
            script(Table::Mbr, &mbr),
            "label: dos\nunit: sectors\n\nstart=2048, size=131072, type=0c\nstart=133120, size=4096, type=83\n"
        );
    }

    fn dumped(json: &str) -> DumpTable {
        serde_json::from_str::<Dump>(json).unwrap().partitiontable
    }

    #[test]
    fn read_back_must_match_the_plan() {
        let good = r#"{"partitiontable":{"label":"gpt","partitions":[
            {"node":"d1","start":2048,"size":131072,"type":"C12A7328-F81F-11D2-BA4B-00A0C93EC93B","uuid":"X","name":"efi"},
            {"node":"d2","start":133120,"size":4096,"type":"0FC63DAF-8483-4772-8E79-3D69D8477DE4","uuid":"Y"}]}}"#;
        compare(Table::Gpt, &plan(), &dumped(good)).unwrap();
        assert!(compare(Table::Mbr, &plan(), &dumped(good)).unwrap_err().contains("not \"dos\""));
        for (from, to) in [("133120", "133121"), ("4096", "4095"), ("\"efi\"", "\"EFI\""), ("D8477DE4", "ED477DE4")] {
            let bad = good.replacen(from, to, 1);
            assert!(compare(Table::Gpt, &plan(), &dumped(&bad)).is_err(), "{from} -> {to} not noticed");
        }
        let short = r#"{"partitiontable":{"label":"gpt","partitions":[]}}"#;
        assert_eq!(compare(Table::Gpt, &plan(), &dumped(short)).unwrap_err(), "0 partitions, not 2");
    }
}
