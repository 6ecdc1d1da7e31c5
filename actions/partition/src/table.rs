//! Writing the table with sfdisk, and reading it back to check it.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use kiln_action_kit::{Failure, Result};
use serde::Deserialize;

use crate::layout::{Planned, Table};

/// sfdisk's input for the plan: explicit starts and sizes, nothing left to
/// its defaults.
pub fn script(table: Table, parts: &[Planned]) -> String {
    let mut s = format!("label: {}\nunit: sectors\n\n", if table == Table::Gpt { "gpt" } else { "dos" });
    for p in parts {
        s.push_str(&format!("start={}, size={}, type={}", p.start, p.sectors, p.type_code));
        if let Some(n) = &p.name {
            s.push_str(&format!(", name=\"{n}\""));
        }
        s.push('\n');
    }
    s
}

pub fn write(disk: &Path, table: Table, parts: &[Planned]) -> Result<()> {
    let text = script(table, parts);
    // --no-reread/--no-tell-kernel: the action asks the kernel itself
    // afterwards and decides whether a refusal matters.
    let mut child = Command::new("sfdisk")
        .args(["--wipe", "always", "--no-reread", "--no-tell-kernel", "--quiet"])
        .arg(disk)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Failure::new("SfdiskFailed", format!("cannot run sfdisk: {e}")))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(text.as_bytes())
        .map_err(|e| Failure::new("SfdiskFailed", e.to_string()))?;
    let out = child.wait_with_output().map_err(|e| Failure::new("SfdiskFailed", e.to_string()))?;
    if !out.status.success() {
        return Err(Failure::new(
            "SfdiskFailed",
            format!(
                "sfdisk failed ({}): {}\ninput was:\n{text}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(())
}

#[derive(Deserialize, Debug)]
struct Dump {
    partitiontable: DumpTable,
}

#[derive(Deserialize, Debug)]
struct DumpTable {
    label: String,
    #[serde(default)]
    partitions: Vec<DumpPart>,
}

#[derive(Deserialize, Debug)]
pub struct DumpPart {
    pub start: u64,
    pub size: u64,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub name: Option<String>,
}

/// Reads the table back (`sfdisk --json`) and checks it is the plan.
pub fn verify(disk: &Path, table: Table, parts: &[Planned]) -> Result<Vec<DumpPart>> {
    let out = Command::new("sfdisk")
        .arg("--json")
        .arg(disk)
        .output()
        .map_err(|e| Failure::new("SfdiskFailed", format!("cannot run sfdisk: {e}")))?;
    let dump: Dump = serde_json::from_slice(&out.stdout).map_err(|e| {
        Failure::new(
            "TableMismatch",
            format!("cannot read the new table back: {e}; {}", String::from_utf8_lossy(&out.stderr)),
        )
    })?;
    let want_label = if table == Table::Gpt { "gpt" } else { "dos" };
    let t = dump.partitiontable;
    let same = t.label == want_label
        && t.partitions.len() == parts.len()
        && t.partitions.iter().zip(parts).all(|(got, want)| {
            got.start == want.start
                && got.size == want.sectors
                && got.kind.eq_ignore_ascii_case(&want.type_code)
                && got.name == want.name
        });
    if !same {
        return Err(Failure::new("TableMismatch", format!("the disk's table is not the one written: {t:?}")));
    }
    Ok(t.partitions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_is_explicit() {
        let parts = vec![
            Planned {
                number: 1,
                name: Some("efi".into()),
                start: 2048,
                sectors: 131072,
                type_code: "C12A7328-F81F-11D2-BA4B-00A0C93EC93B".into(),
                mkfs: None,
            },
            Planned {
                number: 2,
                name: None,
                start: 133120,
                sectors: 4096,
                type_code: "0FC63DAF-8483-4772-8E79-3D69ED477DE4".into(),
                mkfs: None,
            },
        ];
        assert_eq!(
            script(Table::Gpt, &parts),
            "label: gpt\nunit: sectors\n\nstart=2048, size=131072, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=\"efi\"\nstart=133120, size=4096, type=0FC63DAF-8483-4772-8E79-3D69ED477DE4\n"
        );
    }
}
