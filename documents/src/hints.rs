//! Disk hints: choosing a disk by what it is (size, model, serial, WWN,
//! rotational, transport, by-path, name) rather than by its kernel name,
//! which changes with probe order. The hint keys and size syntax are
//! Ironic's root-device hints, so an operator coming from Ironic writes the
//! same thing (`{rotational: false, size: ">= 100"}`).
//!
//! A hint is resolved against the disks the machine's agent reported
//! ([`kiln_inventory::Disk`]): exactly one disk must match, otherwise the
//! error names the hint and, for each candidate, why it was or was not
//! chosen ([`resolve`], [`explain`]).

use std::fmt;

use kiln_inventory::Disk;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One hint: every given field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskHint {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<SizeHint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wwn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotational: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The hint keys, for errors about an unknown one.
pub const HINT_KEYS: &[&str] =
    &["size", "model", "vendor", "serial", "wwn", "rotational", "transport", "by_path", "name"];

/// The transports a hint may ask for (as the inventory reports them).
pub const TRANSPORTS: &[&str] = &["nvme", "sata", "sas", "scsi", "virtio", "usb", "mmc"];

/// A size comparison: `>= 100GiB`, `< 2TB`, `== 10GiB`, `100` (GiB, `==`).
/// Kept as written, for the stored document and for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeHint {
    pub op: SizeOp,
    /// The number times its unit.
    pub bytes: u64,
    /// The unit in bytes: `==` compares at its precision (a disk of
    /// 10.7 GiB is `== 10GiB`, as Ironic compares whole GiB).
    pub unit: u64,
    text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeOp {
    Eq,
    Ne,
    Ge,
    Gt,
    Le,
    Lt,
}

impl SizeHint {
    pub fn parse(text: &str) -> Result<SizeHint, String> {
        let t = text.trim();
        let (op, rest) = [
            (">=", SizeOp::Ge),
            ("<=", SizeOp::Le),
            ("==", SizeOp::Eq),
            ("!=", SizeOp::Ne),
            (">", SizeOp::Gt),
            ("<", SizeOp::Lt),
        ]
        .iter()
        .find_map(|(p, op)| t.strip_prefix(p).map(|r| (*op, r.trim())))
        .unwrap_or((SizeOp::Eq, t));
        let split = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (number, unit) = (&rest[..split], rest[split..].trim());
        let unit_bytes: u64 = match unit {
            // Ironic: a bare number is GiB.
            "" => 1 << 30,
            "B" => 1,
            "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "TB" => 1_000_000_000_000,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "TiB" => 1 << 40,
            other => {
                return Err(format!(
                    "{text:?}: unknown unit {other:?} (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB; a bare number is GiB)"
                ));
            }
        };
        let bad = || {
            format!("{text:?} is not a size comparison: write e.g. \">= 100GiB\", \"< 2TB\", \"== 10GiB\" or 100 (GiB)")
        };
        let value: f64 = number.parse().map_err(|_| bad())?;
        if !value.is_finite() || value < 0.0 {
            return Err(bad());
        }
        if (op == SizeOp::Eq || op == SizeOp::Ne) && value.fract() != 0.0 {
            return Err(format!("{text:?}: == and != compare whole units; write e.g. \"== 10GiB\""));
        }
        let bytes = value * unit_bytes as f64;
        if bytes > u64::MAX as f64 / 2.0 {
            return Err(format!("{text:?} is too large"));
        }
        Ok(SizeHint { op, bytes: bytes.round() as u64, unit: unit_bytes, text: t.to_string() })
    }

    /// Does a disk of `size` bytes satisfy the comparison?
    pub fn matches(&self, size: u64) -> bool {
        let same_unit = size / self.unit == self.bytes / self.unit;
        match self.op {
            SizeOp::Eq => same_unit,
            SizeOp::Ne => !same_unit,
            SizeOp::Ge => size >= self.bytes,
            SizeOp::Gt => size > self.bytes,
            SizeOp::Le => size <= self.bytes,
            SizeOp::Lt => size < self.bytes,
        }
    }
}

impl fmt::Display for SizeHint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for SizeHint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for SizeHint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A number is GiB (Ironic's `size: 100`).
        match Value::deserialize(d)? {
            Value::String(s) => SizeHint::parse(&s).map_err(serde::de::Error::custom),
            Value::Number(n) => SizeHint::parse(&n.to_string()).map_err(serde::de::Error::custom),
            other => {
                Err(serde::de::Error::custom(format!("expected a size comparison such as \">= 100GiB\", got {other}")))
            }
        }
    }
}

impl DiskHint {
    /// Reads a hint from JSON (a Hardware document's `root_disk`, a
    /// template's `dict`): errors name the key (`size`, `rotational`...).
    pub fn from_json(v: &Value) -> Result<DiskHint, HintFieldError> {
        let Value::Object(m) = v else {
            return Err(HintFieldError {
                field: None,
                message: format!("a disk hint is a map of {}, not {v}", HINT_KEYS.join(", ")),
            });
        };
        if m.is_empty() {
            return Err(HintFieldError {
                field: None,
                message: format!("a disk hint needs at least one of {}", HINT_KEYS.join(", ")),
            });
        }
        let mut hint = DiskHint::default();
        let err = |k: &str, message: String| HintFieldError { field: Some(k.to_string()), message };
        for (k, v) in m {
            let text = || match v {
                Value::String(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
                Value::Number(n) if k != "rotational" => Ok(n.to_string()),
                _ => Err(err(k, format!("expected a non-empty string, got {v}"))),
            };
            match k.as_str() {
                "size" => {
                    let s = text()?;
                    hint.size = Some(SizeHint::parse(&s).map_err(|m| err(k, m))?);
                }
                "model" => hint.model = Some(text()?),
                "vendor" => hint.vendor = Some(text()?),
                "serial" => hint.serial = Some(text()?),
                "wwn" => hint.wwn = Some(text()?),
                "rotational" => {
                    hint.rotational = Some(match v {
                        Value::Bool(b) => *b,
                        // Ironic accepts strings for booleans too.
                        Value::String(s) if matches!(s.to_ascii_lowercase().as_str(), "true" | "1" | "yes") => true,
                        Value::String(s) if matches!(s.to_ascii_lowercase().as_str(), "false" | "0" | "no") => false,
                        _ => return Err(err(k, format!("expected true or false, got {v}"))),
                    })
                }
                "transport" => {
                    let t = text()?.to_ascii_lowercase();
                    if !TRANSPORTS.contains(&t.as_str()) {
                        return Err(err(k, format!("{t:?} is not one of {}", TRANSPORTS.join(", "))));
                    }
                    hint.transport = Some(t);
                }
                "by_path" => hint.by_path = Some(text()?),
                "name" => hint.name = Some(text()?),
                other => {
                    return Err(err(other, format!("unknown disk hint {other:?} (known: {})", HINT_KEYS.join(", "))));
                }
            }
        }
        Ok(hint)
    }

    /// Why `disk` does not match, or `Ok` when it does.
    pub fn check(&self, disk: &Disk) -> Result<(), String> {
        let mut why = Vec::new();
        if let Some(size) = &self.size {
            match disk.size_bytes {
                Some(s) if size.matches(s) => {}
                Some(s) => why.push(format!("size {} is not {size}", human_size(s))),
                None => why.push("size unknown".into()),
            }
        }
        let text = |why: &mut Vec<String>, key: &str, want: &Option<String>, have: Option<&str>, exact: bool| {
            let Some(want) = want else { return };
            let ok = have.is_some_and(|h| if exact { h.trim() == want } else { h.trim().eq_ignore_ascii_case(want) });
            if !ok {
                match have {
                    Some(h) => why.push(format!("{key} {:?} is not {want:?}", h.trim())),
                    None => why.push(format!("no {key}")),
                }
            }
        };
        text(&mut why, "model", &self.model, disk.model.as_deref(), false);
        text(&mut why, "vendor", &self.vendor, disk.vendor.as_deref(), false);
        text(&mut why, "serial", &self.serial, disk.serial.as_deref(), true);
        if let Some(want) = &self.wwn {
            let have = disk.wwn.as_deref();
            if have.is_none_or(|h| normal_wwn(h) != normal_wwn(want)) {
                match have {
                    Some(h) => why.push(format!("wwn {h:?} is not {want:?}")),
                    None => why.push("no wwn".into()),
                }
            }
        }
        if let Some(want) = self.rotational {
            match disk.rotational {
                Some(r) if r == want => {}
                Some(r) => why.push(format!("rotational is {r}")),
                None => why.push("rotational unknown".into()),
            }
        }
        text(&mut why, "transport", &self.transport, disk.transport.as_deref(), false);
        if let Some(want) = &self.by_path {
            let want = want.strip_prefix("/dev/disk/by-path/").unwrap_or(want);
            if !disk.by_path.iter().any(|p| p.rsplit('/').next() == Some(want)) {
                why.push(format!("not at by-path {want:?}"));
            }
        }
        if let Some(want) = &self.name {
            let want = want.strip_prefix("/dev/").unwrap_or(want);
            if disk.name != want {
                why.push(format!("name is not {want:?}"));
            }
        }
        if why.is_empty() { Ok(()) } else { Err(why.join(", ")) }
    }
}

impl fmt::Display for DiskHint {
    /// `{rotational: false, size: ">= 100GiB"}`, keys sorted, as an
    /// operator would write it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let json = serde_json::to_value(self).unwrap_or_default();
        let mut parts = Vec::new();
        if let Value::Object(m) = json {
            for (k, v) in m {
                parts.push(format!("{k}: {v}"));
            }
        }
        write!(f, "{{{}}}", parts.join(", "))
    }
}

/// A hint's field that is wrong, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HintFieldError {
    /// The hint key, when the error is about one.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for HintFieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(k) => write!(f, "{k}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// `naa.5000c500a1b2c3d4`, `0x5000c500a1b2c3d4` and `5000C500A1B2C3D4`
/// are the same WWN (the kernel's, udev's and a label's spelling).
fn normal_wwn(w: &str) -> String {
    let w = w.trim().to_ascii_lowercase();
    let w = w.strip_prefix("naa.").or_else(|| w.strip_prefix("eui.")).or_else(|| w.strip_prefix("0x")).unwrap_or(&w);
    w.to_string()
}

/// `1.5 TiB`, `100.0 GiB`, `512 B`: for messages.
pub fn human_size(bytes: u64) -> String {
    let units = [("TiB", 1u64 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (name, size) in units {
        if bytes >= size {
            return format!("{:.1} {name}", bytes as f64 / size as f64);
        }
    }
    format!("{bytes} B")
}

/// How each reported disk fares against a hint: `Ok` for a match, else why
/// not. In the inventory's order.
pub fn explain<'a>(hint: &DiskHint, disks: &'a [Disk]) -> Vec<(&'a Disk, Result<(), String>)> {
    disks.iter().map(|d| (d, hint.check(d))).collect()
}

/// The one disk matching `hint`, or why there is not exactly one: the
/// message names the hint and every candidate.
pub fn resolve<'a>(hint: &DiskHint, disks: &'a [Disk]) -> Result<&'a Disk, String> {
    let results = explain(hint, disks);
    let matched: Vec<&Disk> = results.iter().filter(|(_, r)| r.is_ok()).map(|(d, _)| *d).collect();
    match matched.as_slice() {
        [one] => Ok(one),
        [] if disks.is_empty() => Err(format!("disk hint {hint} matches no disk: the machine reported no disks")),
        [] => {
            let why: Vec<String> =
                results.iter().filter_map(|(d, r)| r.as_ref().err().map(|w| format!("{} ({w})", d.name))).collect();
            Err(format!("disk hint {hint} matches no disk: {}", why.join("; ")))
        }
        several => {
            let names: Vec<String> = several.iter().map(|d| describe(d)).collect();
            Err(format!(
                "disk hint {hint} matches {} disks: {}; add a hint that tells them apart (serial, wwn, by_path)",
                several.len(),
                names.join("; ")
            ))
        }
    }
}

/// `vda (10.0 GiB, virtio, serial "a")`: a disk in messages.
pub fn describe(d: &Disk) -> String {
    let mut facts = Vec::new();
    if let Some(s) = d.size_bytes {
        facts.push(human_size(s));
    }
    if let Some(t) = &d.transport {
        facts.push(t.clone());
    }
    if let Some(m) = &d.model {
        facts.push(format!("model {m:?}"));
    }
    if let Some(s) = &d.serial {
        facts.push(format!("serial {s:?}"));
    }
    if facts.is_empty() { d.name.clone() } else { format!("{} ({})", d.name, facts.join(", ")) }
}

/// The path a template gets for a disk: its stable `/dev/disk/by-id` name,
/// preferring the one made of model and serial (what an operator reads on
/// the label) over `wwn-`/`nvme-eui.` names; `/dev/NAME` only when the disk
/// has no by-id name at all (a virtio disk without a serial), which is as
/// unstable as the kernel's probe order.
pub fn stable_path(d: &Disk) -> String {
    let opaque = |p: &&String| {
        let name = p.rsplit('/').next().unwrap_or(p);
        name.starts_with("wwn-") || name.starts_with("nvme-eui.") || name.starts_with("nvme-nvme.")
    };
    d.by_id
        .iter()
        .find(|p| !opaque(p))
        .or_else(|| d.by_id.first())
        .cloned()
        .unwrap_or_else(|| format!("/dev/{}", d.name))
}

#[cfg(test)]
mod tests;
