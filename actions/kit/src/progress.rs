//! Progress as one JSON line on stdout, at most every `interval`:
//!
//! ```text
//! {"progress":{"what":"image","done":1048576,"total":4194304,"percent":25.0,"rate":52428800}}
//! ```
//!
//! `done`/`total` are bytes (`total` is null when unknown, and `percent` then
//! absent), `rate` is bytes per second since the start. The agent ships the
//! line like any other; `kiln watch` draws it as a bar.

use std::time::{Duration, Instant};

use serde::Serialize;

#[derive(Serialize, Debug, PartialEq)]
pub struct Line<'a> {
    pub what: &'a str,
    pub done: u64,
    pub total: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    pub rate: u64,
}

#[derive(Serialize)]
struct Envelope<'a> {
    progress: Line<'a>,
}

pub struct Progress {
    what: &'static str,
    total: Option<u64>,
    started: Instant,
    last: Option<Instant>,
    interval: Duration,
}

impl Progress {
    pub fn new(what: &'static str, total: Option<u64>, interval: Duration) -> Self {
        Progress { what, total, started: Instant::now(), last: None, interval }
    }

    pub fn set_total(&mut self, total: Option<u64>) {
        self.total = total;
    }

    /// Prints a line when `interval` has passed since the last one.
    pub fn update(&mut self, done: u64) {
        let now = Instant::now();
        if self.last.is_none_or(|last| now.duration_since(last) >= self.interval) {
            self.last = Some(now);
            println!("{}", self.render(done, now));
        }
    }

    /// Always prints: the final figure.
    pub fn finish(&mut self, done: u64) {
        println!("{}", self.render(done, Instant::now()));
    }

    fn render(&self, done: u64, now: Instant) -> String {
        let secs = now.duration_since(self.started).as_secs_f64();
        let line = Line {
            what: self.what,
            done,
            total: self.total,
            percent: self.total.filter(|t| *t > 0).map(|t| ((done as f64 / t as f64) * 1000.0).round() / 10.0),
            rate: if secs > 0.0 { (done as f64 / secs) as u64 } else { 0 },
        };
        serde_json::to_string(&Envelope { progress: line }).expect("progress serializes")
    }
}

/// Human-readable byte counts for log messages.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_has_percent_only_with_a_total() {
        let p = Progress::new("image", Some(400), Duration::from_secs(1));
        let v: serde_json::Value = serde_json::from_str(&p.render(100, p.started + Duration::from_secs(2))).unwrap();
        assert_eq!(v["progress"]["done"], 100);
        assert_eq!(v["progress"]["total"], 400);
        assert_eq!(v["progress"]["percent"], 25.0);
        assert_eq!(v["progress"]["rate"], 50);
        let p = Progress::new("image", None, Duration::from_secs(1));
        let v: serde_json::Value = serde_json::from_str(&p.render(100, p.started)).unwrap();
        assert!(v["progress"]["total"].is_null() && v["progress"].get("percent").is_none());
    }

    #[test]
    fn byte_counts_read_well() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(1 << 30), "1.0 GiB");
    }
}
