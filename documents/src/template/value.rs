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
        Val::Probe | Val::Deferred(_) => true,
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

/// Go's `eq` on basic values: numbers by value, strings and bools as they
/// are; anything else, or values of different kinds, cannot be compared.
pub(super) fn equal(a: &Value, b: &Value) -> Result<bool, String> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => Ok(match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        }),
        (Value::String(x), Value::String(y)) => Ok(x == y),
        (Value::Bool(x), Value::Bool(y)) => Ok(x == y),
        (Value::Array(_) | Value::Object(_) | Value::Null, _)
        | (_, Value::Array(_) | Value::Object(_) | Value::Null) => {
            Err(format!("can't compare {} with {}", kind(a), kind(b)))
        }
        _ => Err(format!("incompatible types for comparison: {} and {}", kind(a), kind(b))),
    }
}

/// How Go prints a value, except that an integral float prints as an
/// integer (`3`, not `3.0` or Go's `1e+06`), and lists and maps print as
/// JSON.
pub(super) fn to_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Number(n) if n.is_f64() => go_float(n.as_f64().unwrap_or_default()),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

/// Go's `%v` of a float64 (shortest `%g`), with integral values as integers.
fn go_float(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e21 {
        return format!("{}", f as i128);
    }
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..6).contains(&exp) {
        return format!("{f}");
    }
    format!("{mantissa}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
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
