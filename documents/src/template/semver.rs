//! Sprig's `semver` and `semverCompare`: versions and constraints as
//! Masterminds/semver v3 reads them (the library Sprig calls), not as
//! Cargo's `semver` crate does: a version may lack its minor and patch
//! (`1.2` is `1.2.0`) and start with `v`; a constraint is `||`-separated
//! groups of space- or comma-separated comparisons, with `x`/`*` wildcards,
//! `~`, `^` and `A - B` ranges; a prerelease version satisfies only a
//! comparison that has a prerelease too. Written from reading the Go
//! library; documents/tests/go_differential.rs compares it with Go.

use std::cmp::Ordering;
use std::sync::OnceLock;

use regex::Regex;

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Version {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
    pub pre: String,
    pub metadata: String,
    pub original: String,
}

/// One version: `v?MAJOR(.MINOR)?(.PATCH)?(-PRE)?(+META)?`, parts that
/// may contain wildcards in a constraint.
fn version_pattern(part: &str) -> String {
    format!(
        r"v?({part}+)(\.{part}+)?(\.{part}+)?(-([0-9A-Za-z\-]+(\.[0-9A-Za-z\-]+)*))?(\+([0-9A-Za-z\-]+(\.[0-9A-Za-z\-]+)*))?"
    )
}

/// A constraint's version: digits or the wildcards `x`, `X`, `*` (and,
/// as the Go library's character class has it, `|`).
fn cv() -> String {
    version_pattern(r"[0-9|x|X|\*]")
}

const OPS: &str = r"=||!=|>|<|>=|=>|<=|=<|~|~>|\^";

struct Patterns {
    version: Regex,
    constraint: Regex,
    range: Regex,
    find: Regex,
    valid: Regex,
}

fn patterns() -> &'static Patterns {
    static P: OnceLock<Patterns> = OnceLock::new();
    P.get_or_init(|| {
        let cv = cv();
        let compile = |p: String| Regex::new(&p).expect("semver patterns compile");
        Patterns {
            version: compile(format!("^{}$", version_pattern("[0-9]"))),
            constraint: compile(format!(r"^\s*({OPS})\s*({cv})\s*$")),
            range: compile(format!(r"\s*({cv})\s+-\s+({cv})\s*")),
            find: compile(format!(r"({OPS})\s*({cv})")),
            valid: compile(format!(r"^(\s*({OPS})\s*({cv})\s*)((?:\s+|,\s*)({OPS})\s*({cv})\s*)*$")),
        }
    })
}

const ALLOWED: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-0123456789";

/// Masterminds' `NewVersion`.
pub(super) fn parse_version(v: &str) -> Result<Version, String> {
    let m = patterns().version.captures(v).ok_or("Invalid Semantic Version")?;
    let segment = |i: usize| -> Result<u64, String> {
        match m.get(i) {
            None => Ok(0),
            Some(s) => {
                s.as_str().trim_start_matches('.').parse().map_err(|e| format!("Error parsing version segment: {e}"))
            }
        }
    };
    let version = Version {
        major: segment(1)?,
        minor: segment(2)?,
        patch: segment(3)?,
        pre: m.get(5).map_or("", |p| p.as_str()).to_string(),
        metadata: m.get(8).map_or("", |p| p.as_str()).to_string(),
        original: v.to_string(),
    };
    for part in version.pre.split('.').filter(|_| !version.pre.is_empty()) {
        if part.bytes().all(|b| b.is_ascii_digit()) {
            if part.len() > 1 && part.starts_with('0') {
                return Err("Version segment starts with 0".into());
            }
        } else if !part.chars().all(|c| ALLOWED.contains(c)) {
            return Err("Invalid Prerelease string".into());
        }
    }
    if !version.metadata.is_empty() && !version.metadata.split('.').all(|p| p.chars().all(|c| ALLOWED.contains(c))) {
        return Err("Invalid Metadata string".into());
    }
    Ok(version)
}

impl Version {
    fn compare(&self, o: &Version) -> Ordering {
        (self.major, self.minor, self.patch).cmp(&(o.major, o.minor, o.patch)).then_with(|| {
            match (self.pre.is_empty(), o.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => compare_prerelease(&self.pre, &o.pre),
            }
        })
    }
}

fn compare_prerelease(a: &str, b: &str) -> Ordering {
    let (a, b): (Vec<&str>, Vec<&str>) = (a.split('.').collect(), b.split('.').collect());
    for i in 0..a.len().max(b.len()) {
        let d = compare_pre_part(a.get(i).copied().unwrap_or(""), b.get(i).copied().unwrap_or(""));
        if d != Ordering::Equal {
            return d;
        }
    }
    Ordering::Equal
}

fn compare_pre_part(s: &str, o: &str) -> Ordering {
    if s == o {
        return Ordering::Equal;
    }
    if s.is_empty() {
        return Ordering::Less;
    }
    if o.is_empty() {
        return Ordering::Greater;
    }
    match (s.parse::<u64>(), o.parse::<u64>()) {
        // Neither numeric: compared as text.
        (Err(_), Err(_)) => {
            if s > o {
                Ordering::Greater
            } else {
                Ordering::Less
            }
        }
        // A numeric identifier is lower than an alphanumeric one.
        (Err(_), Ok(_)) => Ordering::Greater,
        (Ok(_), Err(_)) => Ordering::Less,
        (Ok(si), Ok(oi)) => {
            if si > oi {
                Ordering::Greater
            } else {
                Ordering::Less
            }
        }
    }
}

struct Constraint {
    con: Version,
    op: String,
    minor_dirty: bool,
    patch_dirty: bool,
    dirty: bool,
}

fn is_x(s: &str) -> bool {
    matches!(s, "x" | "*" | "X")
}

fn parse_constraint(c: &str) -> Result<Constraint, String> {
    if c.is_empty() {
        let con = parse_version("0.0.0")?;
        return Ok(Constraint { con, op: String::new(), minor_dirty: false, patch_dirty: false, dirty: true });
    }
    let m = patterns().constraint.captures(c).ok_or_else(|| format!("improper constraint: {c}"))?;
    let g = |i: usize| m.get(i).map_or("", |x| x.as_str());
    let (mut minor_dirty, mut patch_dirty, mut dirty) = (false, false, false);
    let ver = if is_x(g(3)) || g(3).is_empty() {
        dirty = true;
        format!("0.0.0{}", g(6))
    } else if is_x(g(4).trim_start_matches('.')) || g(4).is_empty() {
        minor_dirty = true;
        dirty = true;
        format!("{}.0.0{}", g(3), g(6))
    } else if is_x(g(5).trim_start_matches('.')) || g(5).is_empty() {
        dirty = true;
        patch_dirty = true;
        format!("{}{}.0{}", g(3), g(4), g(6))
    } else {
        g(2).to_string()
    };
    let con = parse_version(&ver).map_err(|_| "constraint Parser Error".to_string())?;
    Ok(Constraint { con, op: g(1).to_string(), minor_dirty, patch_dirty, dirty })
}

/// `A - B` is `>= A, <= B`.
fn rewrite_range(c: &str) -> String {
    let mut out = c.to_string();
    for m in patterns().range.captures_iter(c) {
        let whole = m.get(0).map_or("", |x| x.as_str());
        let replacement = format!(">= {}, <= {}", &m[1], &m[11]);
        out = out.replacen(whole, &replacement, 1);
    }
    out
}

/// Masterminds' `NewConstraint(constraint).Check(NewVersion(version))`.
pub(super) fn semver_compare(constraint: &str, version: &str) -> Result<bool, String> {
    let rewritten = rewrite_range(constraint);
    let mut groups = Vec::new();
    for group in rewritten.split("||") {
        if !patterns().valid.is_match(group) {
            return Err(format!("improper constraint: {group}"));
        }
        let mut found: Vec<&str> = patterns().find.find_iter(group).map(|m| m.as_str()).collect();
        if found.is_empty() {
            found.push(group);
        }
        groups.push(found.into_iter().map(parse_constraint).collect::<Result<Vec<_>, _>>()?);
    }
    let v = parse_version(version)?;
    Ok(groups.iter().any(|g| g.iter().all(|c| check(&v, c))))
}

fn check(v: &Version, c: &Constraint) -> bool {
    // A prerelease satisfies only a comparison with a prerelease.
    let pre_blocked = !v.pre.is_empty() && c.con.pre.is_empty();
    let cmp = v.compare(&c.con);
    match c.op.as_str() {
        "" | "=" => {
            if pre_blocked {
                return false;
            }
            if c.dirty { tilde(v, c) } else { cmp == Ordering::Equal }
        }
        "!=" => not_equal(v, c),
        ">" => {
            if pre_blocked {
                return false;
            }
            if !c.dirty {
                return cmp == Ordering::Greater;
            }
            if v.major != c.con.major {
                return v.major > c.con.major;
            }
            if c.minor_dirty {
                return false;
            }
            if c.patch_dirty {
                return v.minor > c.con.minor;
            }
            cmp == Ordering::Greater
        }
        "<" => !pre_blocked && cmp == Ordering::Less,
        ">=" | "=>" => !pre_blocked && cmp != Ordering::Less,
        "<=" | "=<" => {
            if pre_blocked {
                return false;
            }
            if !c.dirty {
                return cmp != Ordering::Greater;
            }
            !(v.major > c.con.major || (v.major == c.con.major && v.minor > c.con.minor && !c.minor_dirty))
        }
        "~" | "~>" => !pre_blocked && tilde(v, c),
        "^" => !pre_blocked && caret(v, c),
        _ => false,
    }
}

fn tilde(v: &Version, c: &Constraint) -> bool {
    if !v.pre.is_empty() && c.con.pre.is_empty() {
        return false;
    }
    if v.compare(&c.con) == Ordering::Less {
        return false;
    }
    if c.con.major == 0 && c.con.minor == 0 && c.con.patch == 0 && !c.minor_dirty && !c.patch_dirty {
        return true;
    }
    if v.major != c.con.major {
        return false;
    }
    v.minor == c.con.minor || c.minor_dirty
}

fn caret(v: &Version, c: &Constraint) -> bool {
    if v.compare(&c.con) == Ordering::Less {
        return false;
    }
    if c.con.major > 0 || c.minor_dirty {
        return v.major == c.con.major;
    }
    if v.major > 0 {
        return false;
    }
    if c.con.minor > 0 || c.patch_dirty {
        return v.minor == c.con.minor;
    }
    if v.minor > 0 {
        return false;
    }
    c.con.patch == v.patch
}

fn not_equal(v: &Version, c: &Constraint) -> bool {
    if c.dirty {
        if !v.pre.is_empty() && c.con.pre.is_empty() {
            return false;
        }
        if c.con.major != v.major {
            return true;
        }
        if c.con.minor != v.minor && !c.minor_dirty {
            return true;
        } else if c.minor_dirty {
            return false;
        } else if c.con.patch != v.patch && !c.patch_dirty {
            return true;
        } else if c.patch_dirty {
            if !v.pre.is_empty() || !c.con.pre.is_empty() {
                return compare_prerelease(&v.pre, &c.con.pre) != Ordering::Equal;
            }
            return false;
        }
    }
    v.compare(&c.con) != Ordering::Equal
}
