//! Values during evaluation, and how Go reads and prints them.

use serde_json::Value;

/// A value during evaluation: data, or the probe placeholder that stands
/// for any data when checking a template without hardware.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Val {
    Json(Value),
    Probe,
    /// `.actions.NAME.output...` when the data has no `actions` yet: the
    /// outputs of earlier actions exist only when the workflow runs, so the
    /// expression is kept as written and rendered again at dispatch time.
    Deferred(String),
    /// A Go `time.Time`, made by `toDate`, `mustToDate` and
    /// `mustDateModify`: data has no such values.
    Time(super::gotime::GoTime),
}

pub(super) fn sorted(m: &serde_json::Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut entries: Vec<_> = m.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries
}

/// "known keys: a, b" for errors about a missing key.
pub(super) fn known(m: &serde_json::Map<String, Value>) -> String {
    if m.is_empty() {
        return "the map is empty".into();
    }
    let keys: Vec<&str> = sorted(m).into_iter().map(|(k, _)| k.as_str()).collect();
    format!("known keys: {}", keys.join(", "))
}

pub(super) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

pub(super) fn truthy(v: &Val) -> bool {
    match v {
        // A struct is always true in Go.
        Val::Probe | Val::Deferred(_) | Val::Time(_) => true,
        Val::Json(j) => match j {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Number(n) => n.as_f64() != Some(0.0),
            Value::String(s) => !s.is_empty(),
            Value::Array(a) => !a.is_empty(),
            Value::Object(m) => !m.is_empty(),
        },
    }
}

/// An integer, including a float without a fraction (as Go's number
/// constants and JSON numbers may be).
pub(super) fn as_int(v: &Value) -> Option<i64> {
    let n = v.as_number()?;
    n.as_i64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.0e18).map(|f| f as i64))
}

/// Go's basic kinds, as `eq` and `lt` tell them apart: an integer never
/// equals a float there, they are incompatible types.
#[derive(PartialEq, Clone, Copy)]
enum Basic {
    Bool,
    Int,
    Float,
    Str,
    Other,
}

fn basic(v: &Value) -> Basic {
    match v {
        Value::Bool(_) => Basic::Bool,
        Value::Number(n) if n.is_f64() => Basic::Float,
        Value::Number(_) => Basic::Int,
        Value::String(_) => Basic::Str,
        _ => Basic::Other,
    }
}

/// Go's `eq` of two values: basic values of the same kind by value; nil
/// equals only nil; anything else (lists, maps, mixed kinds) cannot be
/// compared.
pub(super) fn equal(a: &Value, b: &Value) -> Result<bool, String> {
    match (a, b) {
        (Value::Null, Value::Null) => Ok(true),
        (Value::Null, _) | (_, Value::Null) => Ok(false),
        _ => match (basic(a), basic(b)) {
            (Basic::Other, _) | (_, Basic::Other) => Err(format!("can't compare {} with {}", kind(a), kind(b))),
            (x, y) if x != y => Err(format!("incompatible types for comparison: {} and {}", kind(a), kind(b))),
            (Basic::Int, _) => Ok(a.as_i64().map(i128::from).or_else(|| a.as_u64().map(i128::from))
                == b.as_i64().map(i128::from).or_else(|| b.as_u64().map(i128::from))),
            (Basic::Float, _) => Ok(a.as_f64() == b.as_f64()),
            _ => Ok(a == b),
        },
    }
}

/// Go's `lt`: integers, floats and strings, each only with its own kind.
pub(super) fn less(a: &Value, b: &Value) -> Result<bool, String> {
    match (basic(a), basic(b)) {
        (Basic::Bool | Basic::Other, _) | (_, Basic::Bool | Basic::Other) => {
            Err(format!("invalid type for comparison: {} and {}", kind(a), kind(b)))
        }
        (x, y) if x != y => Err(format!("incompatible types for comparison: {} and {}", kind(a), kind(b))),
        (Basic::Int, _) => Ok(as_int(a) < as_int(b)),
        (Basic::Float, _) => Ok(a.as_f64() < b.as_f64()),
        _ => Ok(a.as_str() < b.as_str()),
    }
}

/// How Go's `%v` prints a value: lists as `[a b]`, maps as `map[k:v]` in
/// key order, nil as `<nil>`.
pub(super) fn to_text(v: &Value) -> String {
    let mut out = String::new();
    write_text(&mut out, v);
    out
}

fn write_text(out: &mut String, v: &Value) {
    match v {
        Value::String(s) => out.push_str(s),
        Value::Null => out.push_str("<nil>"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) if n.is_f64() => out.push_str(&go_float(n.as_f64().unwrap_or_default())),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                write_text(out, x);
            }
            out.push(']');
        }
        Value::Object(m) => {
            out.push_str("map[");
            for (i, (k, x)) in sorted(m).into_iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                out.push_str(k);
                out.push(':');
                write_text(out, x);
            }
            out.push(']');
        }
    }
}

/// The decimal exponent of `f`'s shortest representation, and its digits
/// as Rust's `{:e}` writes them (`1.5e3` -> ("1.5", 3)).
fn shortest(f: f64) -> (String, i32) {
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    (mantissa.to_string(), exp.parse().unwrap_or(0))
}

/// Go's exponent notation: at least two digits and a sign (`1e+06`).
fn go_exponent(mantissa: &str, exp: i32) -> String {
    format!("{mantissa}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
}

/// Go's `%v` of a float64: the shortest `%g`, which switches to an exponent
/// below 1e-4 and from 1e+06 (strconv's rule for the shortest precision).
pub(super) fn go_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    let (mantissa, exp) = shortest(f);
    if f != 0.0 && !(-4..6).contains(&exp) {
        return go_exponent(&mantissa, exp);
    }
    format!("{f}")
}

/// How Go's encoding/json writes a float64: plain decimals from 1e-6 to
/// below 1e21, else an exponent without padding (`1e-7`, `1e+21`).
pub(super) fn json_float(f: f64) -> String {
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let (mantissa, exp) = shortest(f);
        return format!("{mantissa}e{}{}", if exp < 0 { '-' } else { '+' }, exp.abs());
    }
    format!("{f}")
}

/// Go's `%e` with a precision.
pub(super) fn go_exp_precision(f: f64, precision: usize) -> String {
    let sci = format!("{f:.precision$e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    go_exponent(mantissa, exp.parse().unwrap_or(0))
}

/// Go's `strconv.Quote` for the characters that matter here.
pub(super) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's type name of a value as Tinkerbell's data holds it.
pub(super) fn go_type(v: &Value) -> String {
    match v {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float64",
        // Go's int: what kiln's data and number constants are taken to be.
        Value::Number(_) => "int",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
    .to_string()
}

/// Go's reflect kind of a value.
pub(super) fn go_kind(v: &Value) -> String {
    match v {
        Value::Null => "invalid",
        Value::Array(_) => "slice",
        Value::Object(_) => "map",
        _ => return go_type(v),
    }
    .to_string()
}

/// strconv.ParseInt(s, 0, 64).
pub(super) fn parse_go_int(s: &str) -> Option<i64> {
    let (neg, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let lower = body.to_ascii_lowercase();
    let (radix, digits) = if let Some(h) = lower.strip_prefix("0x") {
        (16, h.to_string())
    } else if let Some(o) = lower.strip_prefix("0o") {
        (8, o.to_string())
    } else if let Some(b) = lower.strip_prefix("0b") {
        (2, b.to_string())
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, lower[1..].to_string())
    } else {
        (10, lower.clone())
    };
    if digits.is_empty() || digits.starts_with(['+', '-']) {
        return None;
    }
    let n = i128::from_str_radix(&digits.replace('_', ""), radix).ok()?;
    i64::try_from(if neg { -n } else { n }).ok()
}
