//! Plain-text rendering: tables, durations, ages, and `-o json|yaml`.

use std::time::{Duration, SystemTime};

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Yaml,
}

/// Prints `value` as JSON or YAML; returns false for `Format::Table`.
pub fn structured<T: Serialize>(format: Format, value: &T) -> anyhow::Result<bool> {
    match format {
        Format::Table => return Ok(false),
        Format::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Format::Yaml => print!("{}", serde_yaml_ng::to_string(value)?),
    }
    Ok(true)
}

/// Left-aligned columns separated by three spaces, like kubectl.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}   "));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// `42s`, `3m07s`, `2h05m`, `4d3h`: short and fixed in meaning.
pub fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
}

/// Seconds with one decimal, for elapsed times of actions.
pub fn elapsed(d: Duration) -> String {
    if d < Duration::from_secs(60) { format!("{:.1}s", d.as_secs_f64()) } else { short_duration(d) }
}

pub fn age(t: &Option<prost_types::Timestamp>) -> String {
    match t {
        Some(t) => {
            short_duration(SystemTime::now().duration_since(kiln_proto::time::from_proto(t)).unwrap_or_default())
        }
        None => "-".into(),
    }
}

pub fn between(a: &Option<prost_types::Timestamp>, b: &Option<prost_types::Timestamp>) -> Option<Duration> {
    let (a, b) = (a.as_ref()?, b.as_ref()?);
    kiln_proto::time::from_proto(b).duration_since(kiln_proto::time::from_proto(a)).ok()
}

/// `HH:MM:SS.mmm` (UTC) of a moment.
pub fn clock(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let s = d.as_secs() % 86400;
    format!("{:02}:{:02}:{:02}.{:03}", s / 3600, s % 3600 / 60, s % 60, d.subsec_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let t = table(&["ID", "STATE"], &[vec!["a".into(), "RUNNING".into()], vec!["longer-id".into(), "OK".into()]]);
        assert_eq!(t, "ID          STATE\na           RUNNING\nlonger-id   OK\n");
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(short_duration(Duration::from_secs(42)), "42s");
        assert_eq!(short_duration(Duration::from_secs(187)), "3m07s");
        assert_eq!(short_duration(Duration::from_secs(7500)), "2h05m");
        assert_eq!(short_duration(Duration::from_secs(4 * 86400 + 3 * 3600)), "4d3h");
        assert_eq!(elapsed(Duration::from_millis(1234)), "1.2s");
        assert_eq!(clock(SystemTime::UNIX_EPOCH + Duration::from_millis(3_723_004)), "01:02:03.004");
    }
}
