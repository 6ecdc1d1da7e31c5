//! How Go's libraries write data: encoding/json (Sprig's toJson), go-yaml
//! v2 through sigs.k8s.io/yaml (Tinkerbell's toYaml), encoding/base32.

use serde_json::Value;

use super::value::{go_float, json_float, parse_go_int, sorted};

/// Numbers as sigs.k8s.io/yaml and encoding/json decode them: float64.
pub(super) fn floats(v: Value) -> Value {
    match v {
        Value::Number(n) => n.as_f64().map_or(Value::Number(n), Value::from),
        Value::Array(l) => Value::Array(l.into_iter().map(floats).collect()),
        Value::Object(m) => Value::Object(m.into_iter().map(|(k, v)| (k, floats(v))).collect()),
        other => other,
    }
}

/// encoding/json's output: keys in order, `<>&` escaped, floats as Go
/// writes them; `indent` for MarshalIndent with two spaces.
pub(super) fn go_json(v: &Value, indent: Option<usize>) -> String {
    let mut out = String::new();
    write_json(&mut out, v, indent);
    out
}

fn write_json(out: &mut String, v: &Value, indent: Option<usize>) {
    let newline = |out: &mut String, level: usize| {
        out.push('\n');
        out.push_str(&"  ".repeat(level));
    };
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) if n.is_f64() => out.push_str(&json_float(n.as_f64().unwrap_or_default())),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => {
            out.push('"');
            for ch in s.chars() {
                match ch {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => out.push_str(&format!("\\u{:04x}", ch as u32)),
                    ch if (ch as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", ch as u32)),
                    ch => out.push(ch),
                }
            }
            out.push('"');
        }
        Value::Array(l) if l.is_empty() => out.push_str("[]"),
        Value::Array(l) => {
            out.push('[');
            for (i, x) in l.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                if let Some(level) = indent {
                    newline(out, level + 1);
                }
                write_json(out, x, indent.map(|l| l + 1));
            }
            if let Some(level) = indent {
                newline(out, level);
            }
            out.push(']');
        }
        Value::Object(m) if m.is_empty() => out.push_str("{}"),
        Value::Object(m) => {
            out.push('{');
            for (i, (k, x)) in sorted(m).into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                if let Some(level) = indent {
                    newline(out, level + 1);
                }
                write_json(out, &Value::String(k.clone()), None);
                out.push(':');
                if indent.is_some() {
                    out.push(' ');
                }
                write_json(out, x, indent.map(|l| l + 1));
            }
            if let Some(level) = indent {
                newline(out, level);
            }
            out.push('}');
        }
    }
}

/// Tinkerbell's toYaml (sigs.k8s.io/yaml): through JSON, so integral
/// floats become integers, then written as go-yaml v2 writes YAML, without
/// the final newline.
pub(super) fn to_yaml(v: &Value) -> Result<String, String> {
    let through_json: Value = serde_json::from_str(&go_json(v, None)).map_err(|e| e.to_string())?;
    let mut out = String::new();
    yaml_node(&mut out, &through_json, Yctx::Top);
    Ok(out)
}

/// Where a YAML node is written: alone, after `key:` at a column, or after
/// `- ` at a column.
#[derive(Clone, Copy)]
enum Yctx {
    Top,
    Key(usize),
    Dash(usize),
}

fn yaml_node(out: &mut String, v: &Value, ctx: Yctx) {
    let (child_indent, dash_column) = match ctx {
        Yctx::Top => (0, 0),
        Yctx::Key(k) => (k + 2, k),
        Yctx::Dash(d) => (d + 2, d + 2),
    };
    let scalar_sep = if matches!(ctx, Yctx::Key(_)) { " " } else { "" };
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (i, (k, x)) in sorted(m).into_iter().enumerate() {
                match (ctx, i) {
                    (Yctx::Top | Yctx::Dash(_), 0) => {}
                    _ => {
                        out.push('\n');
                        out.push_str(&" ".repeat(child_indent));
                    }
                }
                out.push_str(&yaml_scalar(k, None, 0));
                out.push(':');
                yaml_node(out, x, Yctx::Key(child_indent));
            }
        }
        Value::Array(l) if !l.is_empty() => {
            for (i, x) in l.iter().enumerate() {
                match (ctx, i) {
                    (Yctx::Top | Yctx::Dash(_), 0) => {}
                    _ => {
                        out.push('\n');
                        out.push_str(&" ".repeat(dash_column));
                    }
                }
                out.push_str("- ");
                yaml_node(out, x, Yctx::Dash(dash_column));
            }
        }
        Value::Object(_) => out.push_str(&format!("{scalar_sep}{{}}")),
        Value::Array(_) => out.push_str(&format!("{scalar_sep}[]")),
        Value::Null => out.push_str(&format!("{scalar_sep}null")),
        Value::Bool(b) => out.push_str(&format!("{scalar_sep}{b}")),
        Value::Number(n) if n.is_f64() => out.push_str(&format!("{scalar_sep}{}", go_float(n.as_f64().unwrap_or(0.0)))),
        Value::Number(n) => out.push_str(&format!("{scalar_sep}{n}")),
        Value::String(s) => {
            out.push_str(scalar_sep);
            let column = out.rsplit('\n').next().unwrap_or_default().chars().count();
            out.push_str(&yaml_scalar(s, Some(child_indent.max(2)), column));
        }
    }
}

/// A string as go-yaml v2 writes it: plain when it reads back as the same
/// string (by YAML 1.1's rules: `no`, `on`, `1_000`, `12:30` are not
/// strings there), a literal block when it has several lines, else single
/// or double quotes. A value (`indent` given; keys have none) starting at
/// `column` is folded at spaces past column 80, as libyaml does.
fn yaml_scalar(s: &str, indent: Option<usize>, column: usize) -> String {
    let special = s.chars().any(|c| !yaml_printable(c));
    let style = if yaml11_not_a_string(s) {
        Style::Double
    } else if indent.is_some() && s.contains('\n') && !special {
        return yaml_literal(s, indent.unwrap_or(2));
    } else {
        match yaml_styles(s) {
            (true, _) => Style::Plain,
            (false, true) if !special && !s.contains('\n') => Style::Single,
            _ => Style::Double,
        }
    };
    yaml_write(s, style, indent, column)
}

#[derive(PartialEq, Clone, Copy)]
enum Style {
    Plain,
    Single,
    Double,
}

/// libyaml's yaml_emitter_write_plain/single_quoted/double_quoted, with
/// their line folding (best width 80).
fn yaml_write(s: &str, style: Style, indent: Option<usize>, column: usize) -> String {
    const BEST_WIDTH: usize = 80;
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::new();
    let mut col = column;
    let quote = match style {
        Style::Plain => None,
        Style::Single => Some('\''),
        Style::Double => Some('"'),
    };
    if let Some(q) = quote {
        out.push(q);
        col += 1;
    }
    let mut spaces = false;
    for (i, &c) in chars.iter().enumerate() {
        if c == ' ' {
            let next_space = chars.get(i + 1) == Some(&' ');
            let inside = style == Style::Plain || (i > 0 && i + 1 < chars.len());
            let fold =
                indent.filter(|_| !spaces && col > BEST_WIDTH && inside && (style == Style::Double || !next_space));
            if let Some(indent) = fold {
                out.push('\n');
                out.push_str(&" ".repeat(indent));
                col = indent;
                if style == Style::Double && next_space {
                    out.push('\\');
                    col += 1;
                }
            } else {
                out.push(' ');
                col += 1;
            }
            spaces = true;
            continue;
        }
        spaces = false;
        let piece = match (style, c) {
            (Style::Single, '\'') => "''".to_string(),
            (Style::Double, c) => yaml_double_escape(c),
            (_, c) => c.to_string(),
        };
        col += piece.chars().count();
        out.push_str(&piece);
    }
    if let Some(q) = quote {
        out.push(q);
    }
    out
}

/// libyaml's printable characters (the emitter quotes anything else).
fn yaml_printable(c: char) -> bool {
    matches!(c, '\n' | '\u{20}'..='\u{7e}' | '\u{85}' | '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..)
        && c != '\u{feff}'
}

/// Whether libyaml's emitter allows a plain and a single-quoted scalar in
/// block context (yaml_emitter_analyze_scalar).
fn yaml_styles(s: &str) -> (bool, bool) {
    if s.is_empty() {
        return (false, true);
    }
    if s.starts_with("---") || s.starts_with("...") {
        return (false, true);
    }
    let chars: Vec<char> = s.chars().collect();
    let blank = |c: Option<&char>| c.is_none_or(|c| matches!(c, ' ' | '\t' | '\n'));
    let mut indicators = false;
    for (i, &c) in chars.iter().enumerate() {
        let next = chars.get(i + 1);
        if i == 0 {
            if "#,[]{}&*!|>'\"%@`".contains(c) || (matches!(c, '?' | ':' | '-') && blank(next)) {
                indicators = true;
            }
        } else if (c == ':' && blank(next)) || (c == '#' && matches!(chars[i - 1], ' ' | '\t' | '\n')) {
            indicators = true;
        }
    }
    let leading = matches!(chars[0], ' ' | '\n');
    let trailing = matches!(chars[chars.len() - 1], ' ' | '\n');
    let space_break = s.contains(" \n") || s.contains("\n ");
    let plain = !indicators && !leading && !trailing && !s.contains('\n') && !s.contains('\t');
    (plain, !space_break)
}

fn yaml_literal(s: &str, indent: usize) -> String {
    let chomp = if !s.ends_with('\n') {
        "-"
    } else if s.len() == 1 || s[..s.len() - 1].ends_with('\n') {
        "+"
    } else {
        ""
    };
    let hint = if s.starts_with([' ', '\n']) { "2" } else { "" };
    let mut out = format!("|{hint}{chomp}");
    let body = s.strip_suffix('\n').unwrap_or(s);
    for line in body.split('\n') {
        out.push('\n');
        if !line.is_empty() {
            out.push_str(&" ".repeat(indent));
            out.push_str(line);
        }
    }
    out
}

/// One character in a double-quoted scalar, escaped as libyaml does.
fn yaml_double_escape(c: char) -> String {
    match c {
        '"' => "\\\"".into(),
        '\\' => "\\\\".into(),
        '\0' => "\\0".into(),
        '\x07' => "\\a".into(),
        '\x08' => "\\b".into(),
        '\t' => "\\t".into(),
        '\n' => "\\n".into(),
        '\x0b' => "\\v".into(),
        '\x0c' => "\\f".into(),
        '\r' => "\\r".into(),
        '\x1b' => "\\e".into(),
        '\u{85}' => "\\N".into(),
        '\u{2028}' => "\\L".into(),
        '\u{2029}' => "\\P".into(),
        c if !yaml_printable(c) && (c as u32) <= 0xff => format!("\\x{:02X}", c as u32),
        c if !yaml_printable(c) && (c as u32) <= 0xffff => format!("\\u{:04X}", c as u32),
        c if !yaml_printable(c) => format!("\\U{:08X}", c as u32),
        c => c.to_string(),
    }
}

/// go-yaml v2's resolver: a plain scalar that would read back as something
/// other than a string (bool, null, number, timestamp, merge key, or a
/// sexagesimal float) must be quoted.
fn yaml11_not_a_string(s: &str) -> bool {
    const WORDS: &[&str] = &[
        "", "~", "null", "Null", "NULL", "y", "Y", "yes", "Yes", "YES", "on", "On", "ON", "n", "N", "no", "No", "NO",
        "off", "Off", "OFF", "true", "True", "TRUE", "false", "False", "FALSE", ".nan", ".NaN", ".NAN", ".inf", ".Inf",
        ".INF", "+.inf", "+.Inf", "+.INF", "-.inf", "-.Inf", "-.INF", "<<",
    ];
    if WORDS.contains(&s) {
        return true;
    }
    if !s.starts_with(|c: char| c.is_ascii_digit() || "+-.".contains(c)) {
        return false;
    }
    let plain = s.replace('_', "");
    use std::sync::LazyLock;
    static FLOAT: LazyLock<regex::Regex> =
        LazyLock::new(|| regex::Regex::new(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$").expect("valid"));
    static BASE60: LazyLock<regex::Regex> =
        LazyLock::new(|| regex::Regex::new(r"^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$").expect("valid"));
    static TIMESTAMP: LazyLock<regex::Regex> =
        LazyLock::new(|| regex::Regex::new(r"^[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}([Tt ]|$)").expect("valid"));
    let (float, base60, timestamp) = (&*FLOAT, &*BASE60, &*TIMESTAMP);
    parse_go_int(&plain).is_some()
        || plain
            .strip_prefix("0b")
            .or_else(|| plain.strip_prefix("-0b"))
            .is_some_and(|b| !b.is_empty() && b.bytes().all(|c| c == b'0' || c == b'1'))
        || float.is_match(&plain)
        || base60.is_match(s)
        || timestamp.is_match(s)
}

/// encoding/json without HTML escaping (Sprig's toRawJson).
pub(super) fn go_json_raw(v: &Value) -> String {
    go_json(v, None).replace("\\u003c", "<").replace("\\u003e", ">").replace("\\u0026", "&")
}

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// RFC 4648 base32 with padding (Go's base32.StdEncoding).
pub(super) fn base32_encode(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(5) {
        let mut buf = [0u8; 5];
        buf[..chunk.len()].copy_from_slice(chunk);
        let bits = buf.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
        let chars = (chunk.len() * 8).div_ceil(5);
        for i in 0..8 {
            if i < chars {
                out.push(BASE32[((bits >> (35 - i * 5)) & 31) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub(super) fn base32_decode(s: &str) -> Option<Vec<u8>> {
    // Go ignores newlines in the input.
    let s: Vec<u8> = s.bytes().filter(|b| *b != b'\n' && *b != b'\r').collect();
    if !s.len().is_multiple_of(8) {
        return None;
    }
    let mut out = Vec::new();
    for (n, block) in s.chunks(8).enumerate() {
        let data = block.iter().position(|&b| b == b'=').unwrap_or(8);
        if block[data..].iter().any(|&b| b != b'=') || (data < 8 && n + 1 != s.len() / 8) {
            return None;
        }
        let bytes = match data {
            8 => 5,
            7 => 4,
            5 => 3,
            4 => 2,
            2 => 1,
            _ => return None,
        };
        let mut bits = 0u64;
        for &b in &block[..data] {
            let v = BASE32.iter().position(|&c| c == b)? as u64;
            bits = (bits << 5) | v;
        }
        bits <<= 5 * (8 - data);
        out.extend((0..bytes).map(|i| (bits >> (32 - i * 8)) as u8));
    }
    Some(out)
}

/// SHA-1 (Sprig's sha1sum; no crate for it in the tree, and it is short).
pub(super) fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0];
    let mut message = data.to_vec();
    let bit_len = (data.len() as u64).wrapping_mul(8);
    message.push(0x80);
    while message.len() % 64 != 56 {
        message.push(0);
    }
    message.extend_from_slice(&bit_len.to_be_bytes());
    for block in message.chunks(64) {
        let mut w = [0u32; 80];
        for (i, word) in block.chunks(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, &wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A827999),
                20..=39 => (b ^ c ^ d, 0x6ED9EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1BBCDC),
                _ => (b ^ c ^ d, 0xCA62C1D6),
            };
            let t = a.rotate_left(5).wrapping_add(f).wrapping_add(e).wrapping_add(k).wrapping_add(wi);
            (e, d, c, b, a) = (d, c, b.rotate_left(30), a, t);
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 20];
    for (chunk, word) in out.chunks_mut(4).zip(h) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    out
}
