//! Splitting a template into text and actions, and an action into tokens.

use super::error;
use crate::SpecError;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    Field(Vec<String>),
    Var(String, Vec<String>),
    Str(String),
    Int(i64),
    Float(f64),
    Ident(String),
    Open,
    Close,
    Pipe,
    Declare,
    /// `=`: assignment to a declared variable.
    Assign,
    /// `.a.b` written right after `)`: fields of the parenthesised value.
    Chain(Vec<String>),
    Comma,
}

/// A raw piece of the template: text, or the tokens of one `{{ }}`.
pub(super) enum Piece {
    Text { line: usize, text: String },
    Action { line: usize, toks: Vec<Tok> },
}

/// Go's space characters for trim markers: not Unicode's, on purpose.
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// Line numbers of byte offsets, asked for in increasing order, so that
/// splitting a template stays linear in its length.
struct LineCounter<'a> {
    text: &'a str,
    pos: usize,
    line: usize,
}

impl<'a> LineCounter<'a> {
    fn new(text: &'a str) -> Self {
        Self { text, pos: 0, line: 1 }
    }

    fn at(&mut self, byte: usize) -> usize {
        if byte > self.pos {
            self.line += self.text[self.pos..byte].bytes().filter(|&b| b == b'\n').count();
            self.pos = byte;
        }
        self.line
    }
}

pub(super) fn split(object: &str, text: &str) -> Result<Vec<Piece>, SpecError> {
    let mut pieces = Vec::new();
    let mut lines = LineCounter::new(text);
    let mut rest = 0;
    let mut trim_next = false;
    while let Some(found) = text[rest..].find("{{") {
        let open = rest + found;
        let mut inner_start = open + 2;
        // `{{- ` trims the text before; `{{-3}}` is a negative number.
        let trim_prev = text[inner_start..].starts_with('-') && text[inner_start + 1..].starts_with(is_space);
        if trim_prev {
            inner_start += 2;
        }
        push_text(&mut pieces, &mut lines, &text[rest..open], rest, trim_next, trim_prev);
        let line = lines.at(open);
        if text[inner_start..].starts_with("/*") {
            // Go: a comment runs to `*/`, which must be followed at once by
            // the closing delimiter (optionally with its trim marker).
            let body = inner_start + 2;
            let stop = text[body..].find("*/").ok_or_else(|| error(object, line, None, "unclosed comment"))?;
            let after = body + stop + 2;
            let tail = &text[after..];
            if tail.starts_with("}}") {
                (rest, trim_next) = (after + 2, false);
            } else if tail.starts_with(is_space) && tail[1..].starts_with("-}}") {
                (rest, trim_next) = (after + 4, true);
            } else {
                return Err(error(object, line, None, "comment ends before closing delimiter }}"));
            }
            continue;
        }
        let close = find_close(&text[inner_start..]).map_err(|m| error(object, line, None, m))? + inner_start;
        let mut inner = &text[inner_start..close];
        trim_next = inner.ends_with('-') && inner[..inner.len() - 1].ends_with(is_space);
        if trim_next {
            inner = &inner[..inner.len() - 1];
        }
        pieces.push(Piece::Action { line, toks: lex(object, line, inner)? });
        rest = close + 2;
    }
    push_text(&mut pieces, &mut lines, &text[rest..], rest, trim_next, false);
    Ok(pieces)
}

/// Adds the text between two actions, trimmed as their markers ask.
fn push_text(
    pieces: &mut Vec<Piece>,
    lines: &mut LineCounter<'_>,
    chunk: &str,
    start: usize,
    trim_start: bool,
    trim_end: bool,
) {
    let mut chunk = chunk;
    let mut start = start;
    if trim_start {
        let trimmed = chunk.trim_start_matches(is_space);
        start += chunk.len() - trimmed.len();
        chunk = trimmed;
    }
    if trim_end {
        chunk = chunk.trim_end_matches(is_space);
    }
    if !chunk.is_empty() {
        pieces.push(Piece::Text { line: lines.at(start), text: chunk.to_string() });
    }
}

/// Position of the `}}` closing an action, skipping quoted strings, or why
/// there is none.
fn find_close(s: &str) -> Result<usize, &'static str> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                loop {
                    match b.get(i) {
                        // Go: an interpreted string ends on its line.
                        None | Some(b'\n') => return Err("unterminated quoted string"),
                        Some(b'"') => break,
                        Some(b'\\') => i += 2,
                        Some(_) => i += 1,
                    }
                }
            }
            b'`' => {
                i += 1;
                while b.get(i).is_some_and(|&c| c != b'`') {
                    i += 1;
                }
                if i >= b.len() {
                    return Err("unterminated raw quoted string");
                }
            }
            b'}' if b.get(i + 1) == Some(&b'}') => return Ok(i),
            _ => {}
        }
        i += 1;
    }
    Err("unterminated action: missing }}")
}

fn ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn lex(object: &str, line: usize, s: &str) -> Result<Vec<Tok>, SpecError> {
    let chars: Vec<char> = s.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    // An action may span lines: errors name the line of the offending character.
    let err = |at: usize, m: String| {
        let here = line + chars[..at.min(chars.len())].iter().filter(|&&c| c == '\n').count();
        error(object, here, None, m)
    };
    // `.a.b` after a field start; returns the chain.
    let chain = |i: &mut usize| -> Vec<String> {
        let mut parts = Vec::new();
        while *i < chars.len() && chars[*i] == '.' {
            let start = *i + 1;
            let mut j = start;
            while j < chars.len() && ident_char(chars[j]) {
                j += 1;
            }
            if j == start {
                break;
            }
            parts.push(chars[start..j].iter().collect());
            *i = j;
        }
        parts
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                toks.push(Tok::Open);
                i += 1
            }
            ')' => {
                toks.push(Tok::Close);
                i += 1
            }
            '|' => {
                toks.push(Tok::Pipe);
                i += 1
            }
            ',' => {
                toks.push(Tok::Comma);
                i += 1
            }
            ':' if chars.get(i + 1) == Some(&'=') => {
                toks.push(Tok::Declare);
                i += 2
            }
            '=' => {
                toks.push(Tok::Assign);
                i += 1
            }
            // Go: `(x).a.b` reads fields of the value in parentheses.
            '.' if i > 0 && chars[i - 1] == ')' => {
                let parts = chain(&mut i);
                if parts.is_empty() {
                    return Err(err(i, "a field name must follow . after )".into()));
                }
                toks.push(Tok::Chain(parts));
            }
            '.' if !chars.get(i + 1).is_some_and(char::is_ascii_digit) => {
                let parts = chain(&mut i);
                if parts.is_empty() {
                    i += 1; // lone `.`
                }
                toks.push(Tok::Field(parts));
            }
            // A character constant is its code point, as in Go.
            '\'' => {
                let (c, len) = match (chars.get(i + 1), chars.get(i + 2), chars.get(i + 3)) {
                    (Some('\\'), Some(e), Some('\'')) => {
                        let c = match e {
                            'n' => '\n',
                            't' => '\t',
                            'r' => '\r',
                            '0' => '\0',
                            '\\' | '\'' | '"' => *e,
                            _ => return Err(err(i, format!("unsupported escape \\{e} in character constant"))),
                        };
                        (c, 4)
                    }
                    (Some(&c), Some('\''), _) if c != '\\' && c != '\'' => (c, 3),
                    _ => return Err(err(i, "malformed character constant".into())),
                };
                toks.push(Tok::Int(i64::from(u32::from(c))));
                i += len;
            }
            '$' => {
                let start = i + 1;
                let mut j = start;
                while j < chars.len() && ident_char(chars[j]) {
                    j += 1;
                }
                let name: String = std::iter::once('$').chain(chars[start..j].iter().copied()).collect();
                i = j;
                let parts = chain(&mut i);
                toks.push(Tok::Var(name, parts));
            }
            '"' => {
                let start = i;
                let mut out = String::new();
                i += 1;
                loop {
                    let Some(&c) = chars.get(i) else {
                        return Err(err(start, "unterminated quoted string".into()));
                    };
                    i += 1;
                    match c {
                        '"' => break,
                        '\\' => {
                            let Some(&e) = chars.get(i) else {
                                return Err(err(start, "unterminated quoted string".into()));
                            };
                            i += 1;
                            out.push(match e {
                                'n' => '\n',
                                't' => '\t',
                                'r' => '\r',
                                'a' => '\x07',
                                'b' => '\x08',
                                'f' => '\x0c',
                                'v' => '\x0b',
                                '\\' => '\\',
                                '"' => '"',
                                'x' | 'u' | 'U' => {
                                    let len = match e {
                                        'x' => 2,
                                        'u' => 4,
                                        _ => 8,
                                    };
                                    let hex: String = chars.get(i..i + len).unwrap_or_default().iter().collect();
                                    let ch = u32::from_str_radix(&hex, 16)
                                        .ok()
                                        .filter(|_| hex.len() == len && hex.bytes().all(|b| b.is_ascii_hexdigit()))
                                        // `\x` is a byte in Go; only its ASCII half is a character by itself.
                                        .filter(|&n| e != 'x' || n < 0x80)
                                        .and_then(char::from_u32)
                                        .ok_or_else(|| err(i, format!("invalid escape \\{e}{hex} in string")))?;
                                    i += len;
                                    ch
                                }
                                other => {
                                    return Err(err(i, format!("unsupported escape \\{other} in string")));
                                }
                            });
                        }
                        c => out.push(c),
                    }
                }
                toks.push(Tok::Str(out));
            }
            '`' => {
                let start = i + 1;
                let end = chars[start..]
                    .iter()
                    .position(|&c| c == '`')
                    .ok_or_else(|| err(i, "unterminated raw quoted string".into()))?;
                toks.push(Tok::Str(chars[start..start + end].iter().collect()));
                i = start + end + 1;
            }
            // Go reads `.5` as a number, `.a` as a field.
            c if c.is_ascii_digit() || ("+-.".contains(c) && chars.get(i + 1).is_some_and(char::is_ascii_digit)) => {
                let start = i;
                i += 1;
                while let Some(&d) = chars.get(i) {
                    let exponent_sign = (d == '+' || d == '-') && matches!(chars[i - 1], 'e' | 'E');
                    if d.is_ascii_alphanumeric() || d == '_' || d == '.' || exponent_sign {
                        i += 1;
                    } else {
                        break;
                    }
                }
                let lit: String = chars[start..i].iter().collect();
                toks.push(number(&lit).ok_or_else(|| err(start, format!("bad number syntax: {lit:?}")))?);
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len() && ident_char(chars[i]) {
                    i += 1;
                }
                toks.push(Tok::Ident(chars[start..i].iter().collect()));
            }
            other => return Err(err(i, format!("unexpected character {other:?} in action"))),
        }
    }
    Ok(toks)
}

/// A Go number constant: decimal, `0x`/`0o`/`0b`, a leading `0` for octal
/// (as Go reads `0644`), `_` separators, or a decimal float.
fn number(lit: &str) -> Option<Tok> {
    let (negative, body) = match lit.as_bytes().first() {
        Some(b'-') => (true, &lit[1..]),
        Some(b'+') => (false, &lit[1..]),
        _ => (false, lit),
    };
    let digits = |s: &str, radix: u32| -> Option<u64> {
        let clean = s.replace('_', "");
        if clean.is_empty() || !clean.chars().all(|c| c.is_digit(radix)) {
            return None;
        }
        u64::from_str_radix(&clean, radix).ok()
    };
    let lower = body.to_ascii_lowercase();
    let magnitude = if let Some(h) = lower.strip_prefix("0x") {
        digits(h, 16)
    } else if let Some(o) = lower.strip_prefix("0o") {
        digits(o, 8)
    } else if let Some(b) = lower.strip_prefix("0b") {
        digits(b, 2)
    } else if body.bytes().all(|b| b.is_ascii_digit() || b == b'_') {
        if body.len() > 1 && body.starts_with('0') { digits(&body[1..], 8) } else { digits(body, 10) }
    } else {
        // A float: digits with a point or an exponent, nothing else.
        let clean = body.replace('_', "");
        let ok = clean.bytes().all(|b| b.is_ascii_digit() || b"eE.+-".contains(&b));
        let f = clean.parse::<f64>().ok().filter(|f| ok && f.is_finite())?;
        return Some(Tok::Float(if negative { -f } else { f }));
    }?;
    let n = if negative { 0i64.checked_sub_unsigned(magnitude)? } else { i64::try_from(magnitude).ok()? };
    Some(Tok::Int(n))
}
