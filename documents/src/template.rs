//! The subset of Go's text/template that Tinkerbell templates use.
//!
//! Written here because the one Go-template crate for Rust (gtmpl) has been
//! unmaintained since 2021, and because what templates need is small:
//! field chains (`.device_1`, `.Hardware.Disks`), pipelines, a few functions
//! (`index`, `formatPartition`, `printf`, some of Sprig), `if`/`else` and
//! `range`. Semantics follow Go with `missingkey=error`: a missing key is an
//! error naming the field and the line, never a silent `<no value>`. Where Go
//! would print a placeholder such as `%!d(string=x)` or `<no value>` into the
//! output, this renderer fails instead: the output configures a machine, and
//! a wrong value there is worse than a refused template.
//!
//! A template is parsed once into nodes; [`render`] evaluates them against a
//! JSON value. [`render_probe`] evaluates them against *no* data: every field
//! yields a placeholder, so the structure of the output can be checked when a
//! template is applied, before any hardware exists.

use serde_json::Value;

use crate::SpecError;

/// Renders `text` with `data`. `object` names the template in errors.
pub fn render(object: &str, text: &str, data: &Value) -> Result<String, SpecError> {
    render_mapped(object, text, data).map(|r| r.text)
}

/// Parses only: syntax errors, unknown functions and undefined variables,
/// with line numbers.
pub fn check_syntax(object: &str, text: &str) -> Result<(), SpecError> {
    parse(object, text).map(|_| ())
}

/// Renders with placeholder data: every field access succeeds and prints
/// [`PROBE`]. Used to check a template's structure without hardware.
pub fn render_probe(object: &str, text: &str) -> Result<String, SpecError> {
    render_probe_mapped(object, text).map(|r| r.text)
}

/// What a field prints as when rendering with [`render_probe`].
pub const PROBE: &str = "probe";

/// The key under which earlier actions' outputs are given to templates.
pub const ACTIONS_KEY: &str = "actions";

/// A rendering, with the template line each of its lines came from, so that
/// errors found in the output (YAML structure, field values) can point at
/// the line the operator wrote.
pub(crate) struct Rendered {
    pub text: String,
    /// `lines[i]`: the template line of the first byte of output line `i + 1`.
    lines: Vec<usize>,
    /// The template's last line, for positions past the output's end.
    last: usize,
}

impl Rendered {
    /// The template line that produced output line `line` (1-based).
    pub fn source_line(&self, line: usize) -> usize {
        line.checked_sub(1).and_then(|i| self.lines.get(i)).copied().unwrap_or(self.last)
    }
}

pub(crate) fn render_mapped(object: &str, text: &str, data: &Value) -> Result<Rendered, SpecError> {
    let root = Val::Json(data.clone());
    evaluate(object, text, &root)
}

pub(crate) fn render_probe_mapped(object: &str, text: &str) -> Result<Rendered, SpecError> {
    evaluate(object, text, &Val::Probe)
}

fn evaluate(object: &str, text: &str, root: &Val) -> Result<Rendered, SpecError> {
    let nodes = parse(object, text)?;
    let mut out = Out::default();
    let mut eval = Eval { object, root, vars: vec![("$".into(), root.clone())], steps: std::cell::Cell::new(0) };
    eval.nodes(&nodes, root, &mut out)?;
    Ok(Rendered { text: out.text, lines: out.lines, last: text.lines().count().max(1) })
}

/// The functions a template may call.
pub const FUNCTIONS: &[&str] = &[
    "index",
    "formatPartition",
    "printf",
    "len",
    "default",
    "quote",
    "lower",
    "upper",
    "trim",
    "replace",
    "join",
    "toString",
    "netmaskToPrefixLength",
    "eq",
    "ne",
    "not",
    "and",
    "or",
];

/// Go's control words this subset does not implement; named in the error
/// so that an operator knows it is the word, not its arguments.
const UNSUPPORTED_ACTIONS: &[&str] = &["with", "define", "template", "block", "break", "continue"];

/// Deepest nesting of `if`/`range` and of parentheses. Go has none, but a
/// hostile template must not exhaust the stack, which aborts the server
/// rather than returning an error.
const MAX_DEPTH: usize = 64;

/// Most commands and range iterations one rendering may evaluate, and the
/// longest output or intermediate string: ranges nested over a short list,
/// or a pipeline that doubles a string at each stage, grow exponentially
/// with the template's length; without a bound they hang the server.
/// Real templates are kilobytes and take a few hundred steps.
const MAX_STEPS: usize = 1_000_000;
const MAX_OUTPUT: usize = 4 << 20;

/// Widest `printf` padding: a typo such as `%9999999999d` must not allocate
/// gigabytes.
const MAX_WIDTH: usize = 1000;

fn error(object: &str, line: usize, field: Option<String>, message: impl Into<String>) -> SpecError {
    SpecError { object: object.to_string(), line: Some(line), field, message: message.into() }
}

// ---------------------------------------------------------------- lexing

#[derive(Debug, Clone)]
enum Node {
    /// Template text; `line` is where it starts.
    Text {
        line: usize,
        text: String,
    },
    Action {
        line: usize,
        pipe: Pipeline,
    },
    If {
        cond: Pipeline,
        then: Vec<Node>,
        otherwise: Vec<Node>,
    },
    Range {
        line: usize,
        vars: Vec<String>,
        pipe: Pipeline,
        body: Vec<Node>,
        otherwise: Vec<Node>,
    },
}

#[derive(Debug, Clone)]
struct Pipeline {
    /// Where the pipeline's action starts, for errors.
    line: usize,
    /// `$x := ...`
    decl: Option<String>,
    cmds: Vec<Vec<Arg>>,
}

#[derive(Debug, Clone)]
enum Arg {
    /// `.a.b`; empty for `.`
    Field(Vec<String>),
    /// `$name.a.b`
    Var(String, Vec<String>),
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Func(String),
    Paren(Pipeline),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
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
    Comma,
}

/// A raw piece of the template: text, or the tokens of one `{{ }}`.
enum Piece {
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

fn split(object: &str, text: &str) -> Result<Vec<Piece>, SpecError> {
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
                return Err(err(i, "assignment with = is not supported; use := to declare".into()));
            }
            '.' if !chars.get(i + 1).is_some_and(char::is_ascii_digit) => {
                let parts = chain(&mut i);
                if parts.is_empty() {
                    i += 1; // lone `.`
                }
                toks.push(Tok::Field(parts));
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

// ---------------------------------------------------------------- parsing

struct Parser<'a> {
    object: &'a str,
    pieces: std::iter::Peekable<std::vec::IntoIter<Piece>>,
    /// Variables in scope, innermost last: Go rejects an undefined variable
    /// when parsing, and so does [`check_syntax`].
    vars: Vec<String>,
    depth: usize,
}

/// How a list of nodes ended.
enum Closer {
    Eof,
    End { line: usize },
    Else { line: usize, toks: Vec<Tok> },
}

fn parse(object: &str, text: &str) -> Result<Vec<Node>, SpecError> {
    let pieces = split(object, text)?;
    let mut p = Parser { object, pieces: pieces.into_iter().peekable(), vars: vec!["$".into()], depth: 0 };
    let (nodes, end) = p.list()?;
    match end {
        Closer::Eof => Ok(nodes),
        Closer::End { line } => Err(error(object, line, None, "unexpected {{end}}")),
        Closer::Else { line, .. } => Err(error(object, line, None, "unexpected {{else}}")),
    }
}

impl Parser<'_> {
    /// Nodes up to the `end` or `else` that closes them; variables declared
    /// among them go out of scope there.
    fn list(&mut self) -> Result<(Vec<Node>, Closer), SpecError> {
        let scope = self.vars.len();
        let result = self.list_in_scope();
        self.vars.truncate(scope);
        result
    }

    fn list_in_scope(&mut self) -> Result<(Vec<Node>, Closer), SpecError> {
        let mut nodes = Vec::new();
        while let Some(piece) = self.pieces.next() {
            let (line, toks) = match piece {
                Piece::Text { line, text } => {
                    nodes.push(Node::Text { line, text });
                    continue;
                }
                Piece::Action { line, toks } => (line, toks),
            };
            match toks.first() {
                None => return Err(error(self.object, line, None, "empty action {{}}")),
                Some(Tok::Ident(kw)) if kw == "end" => {
                    if toks.len() > 1 {
                        return Err(error(self.object, line, None, "unexpected words after end"));
                    }
                    return Ok((nodes, Closer::End { line }));
                }
                Some(Tok::Ident(kw)) if kw == "else" => {
                    return Ok((nodes, Closer::Else { line, toks: toks[1..].to_vec() }));
                }
                Some(Tok::Ident(kw)) if kw == "if" => nodes.push(self.nested(|p| p.if_node(line, &toks[1..]), line)?),
                Some(Tok::Ident(kw)) if kw == "range" => {
                    nodes.push(self.nested(|p| p.range_node(line, &toks[1..]), line)?)
                }
                Some(Tok::Ident(kw)) if UNSUPPORTED_ACTIONS.contains(&kw.as_str()) => {
                    return Err(error(self.object, line, None, format!("unsupported action {kw:?}")));
                }
                _ => {
                    let pipe = self.pipeline(line, &toks, true)?;
                    if let Some(name) = &pipe.decl {
                        self.vars.push(name.clone());
                    }
                    nodes.push(Node::Action { line, pipe });
                }
            }
        }
        Ok((nodes, Closer::Eof))
    }

    fn nested(&mut self, f: impl FnOnce(&mut Self) -> Result<Node, SpecError>, line: usize) -> Result<Node, SpecError> {
        if self.depth >= MAX_DEPTH {
            return Err(error(self.object, line, None, format!("if/range nested more than {MAX_DEPTH} deep")));
        }
        self.depth += 1;
        let node = f(self);
        self.depth -= 1;
        node
    }

    fn if_node(&mut self, line: usize, toks: &[Tok]) -> Result<Node, SpecError> {
        let cond = self.pipeline(line, toks, false)?;
        let (then, end) = self.list()?;
        let otherwise = match end {
            Closer::End { .. } => Vec::new(),
            Closer::Eof => return Err(error(self.object, line, None, "if without {{end}}")),
            Closer::Else { line: else_line, toks } if toks.is_empty() => self.until_end(else_line)?,
            // `else if` chains into a nested if that shares our end.
            Closer::Else { line: else_line, toks } => match toks.first() {
                Some(Tok::Ident(kw)) if kw == "if" => {
                    vec![self.nested(|p| p.if_node(else_line, &toks[1..]), else_line)?]
                }
                _ => {
                    return Err(error(self.object, else_line, None, "else must be followed by nothing or by if"));
                }
            },
        };
        Ok(Node::If { cond, then, otherwise })
    }

    fn until_end(&mut self, line: usize) -> Result<Vec<Node>, SpecError> {
        match self.list()? {
            (nodes, Closer::End { .. }) => Ok(nodes),
            (_, Closer::Eof) => Err(error(self.object, line, None, "else without {{end}}")),
            (_, Closer::Else { line, .. }) => Err(error(self.object, line, None, "a second else")),
        }
    }

    fn range_node(&mut self, line: usize, toks: &[Tok]) -> Result<Node, SpecError> {
        let plain = |t: &Tok| matches!(t, Tok::Var(v, chain) if chain.is_empty() && v != "$");
        let (vars, rest): (Vec<String>, &[Tok]) = match toks {
            [Tok::Var(v, _), Tok::Declare, rest @ ..] if plain(&toks[0]) => (vec![v.clone()], rest),
            [Tok::Var(k, _), Tok::Comma, Tok::Var(v, _), Tok::Declare, rest @ ..]
                if plain(&toks[0]) && plain(&toks[2]) =>
            {
                (vec![k.clone(), v.clone()], rest)
            }
            _ if toks.iter().any(|t| *t == Tok::Declare || *t == Tok::Comma) => {
                return Err(error(self.object, line, None, "range variables must be written $v := or $i, $v :="));
            }
            _ => (Vec::new(), toks),
        };
        let pipe = self.pipeline(line, rest, false)?;
        let scope = self.vars.len();
        self.vars.extend(vars.iter().cloned());
        let body = self.list();
        self.vars.truncate(scope);
        let (body, end) = body?;
        let otherwise = match end {
            Closer::End { .. } => Vec::new(),
            Closer::Eof => return Err(error(self.object, line, None, "range without {{end}}")),
            Closer::Else { line: l, toks } if toks.is_empty() => self.until_end(l)?,
            Closer::Else { line: l, .. } => {
                return Err(error(self.object, l, None, "else in range takes no arguments"));
            }
        };
        Ok(Node::Range { line, vars, pipe, body, otherwise })
    }

    fn pipeline(&self, line: usize, toks: &[Tok], allow_decl: bool) -> Result<Pipeline, SpecError> {
        let mut toks = toks;
        let mut decl = None;
        if let [Tok::Var(v, chain), Tok::Declare, rest @ ..] = toks {
            if !allow_decl || !chain.is_empty() || v == "$" {
                return Err(error(self.object, line, None, "a variable can only be declared as {{ $name := ... }}"));
            }
            decl = Some(v.clone());
            toks = rest;
        }
        let mut pos = 0;
        let mut pipe = self.parse_pipe(line, toks, &mut pos, 0)?;
        if pos != toks.len() {
            return Err(error(self.object, line, None, "unexpected ) in action"));
        }
        pipe.decl = decl;
        Ok(pipe)
    }

    fn parse_pipe(&self, line: usize, toks: &[Tok], pos: &mut usize, depth: usize) -> Result<Pipeline, SpecError> {
        if depth > MAX_DEPTH {
            return Err(error(self.object, line, None, format!("parentheses nested more than {MAX_DEPTH} deep")));
        }
        let err = |m: String| error(self.object, line, None, m);
        let mut cmds = vec![Vec::new()];
        while *pos < toks.len() {
            let tok = &toks[*pos];
            *pos += 1;
            let arg = match tok {
                Tok::Close => {
                    *pos -= 1;
                    break;
                }
                Tok::Pipe => {
                    if cmds.last().is_some_and(Vec::is_empty) {
                        return Err(err("missing command before |".into()));
                    }
                    cmds.push(Vec::new());
                    continue;
                }
                Tok::Open => {
                    let inner = self.parse_pipe(line, toks, pos, depth + 1)?;
                    if toks.get(*pos) != Some(&Tok::Close) {
                        return Err(err("unclosed ( in action".into()));
                    }
                    *pos += 1;
                    Arg::Paren(inner)
                }
                Tok::Field(c) => Arg::Field(c.clone()),
                Tok::Var(v, c) => {
                    if !self.vars.contains(v) {
                        return Err(error(self.object, line, Some(v.clone()), format!("undefined variable {v}")));
                    }
                    Arg::Var(v.clone(), c.clone())
                }
                Tok::Str(s) => Arg::Str(s.clone()),
                Tok::Int(n) => Arg::Int(*n),
                Tok::Float(f) => Arg::Float(*f),
                Tok::Ident(w) if w == "true" || w == "false" => Arg::Bool(w == "true"),
                Tok::Ident(w) if w == "nil" => return Err(err("nil is not supported".into())),
                Tok::Ident(w) if FUNCTIONS.contains(&w.as_str()) => Arg::Func(w.clone()),
                Tok::Ident(w)
                    if ["if", "range", "else", "end"].contains(&w.as_str())
                        || UNSUPPORTED_ACTIONS.contains(&w.as_str()) =>
                {
                    return Err(err(format!("{w:?} can only start an action")));
                }
                Tok::Ident(w) => return Err(err(format!("unsupported function {w:?}"))),
                Tok::Declare | Tok::Comma => return Err(err("unexpected := or , in action".into())),
            };
            cmds.last_mut().expect("never empty").push(arg);
        }
        if cmds.iter().any(Vec::is_empty) {
            return Err(err("missing value: empty command in pipeline".into()));
        }
        for (i, cmd) in cmds.iter().enumerate() {
            if cmd.len() > 1 && !matches!(cmd[0], Arg::Func(_)) {
                return Err(err("can't give arguments to a non-function".into()));
            }
            if i > 0 && !matches!(cmd[0], Arg::Func(_)) {
                return Err(err("only functions can follow | in a pipeline".into()));
            }
        }
        Ok(Pipeline { line, decl: None, cmds })
    }
}

// ------------------------------------------------------------- evaluation

/// A value during evaluation: data, or the probe placeholder that stands
/// for any data when checking a template without hardware.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    Json(Value),
    Probe,
    /// `.actions.NAME.output...` when the data has no `actions` yet: the
    /// outputs of earlier actions exist only when the workflow runs, so the
    /// expression is kept as written and rendered again at dispatch time.
    Deferred(String),
}

/// The output being built, with the template line of each output line.
#[derive(Default)]
struct Out {
    text: String,
    lines: Vec<usize>,
}

impl Out {
    /// Appends `s`, which comes from template line `line`. Template text
    /// (`advance`) moves on a line with each of its newlines; a value printed
    /// by an action belongs to the action's line however many lines it has.
    fn push(&mut self, s: &str, mut line: usize, advance: bool) {
        for piece in s.split_inclusive('\n') {
            if self.text.is_empty() || self.text.ends_with('\n') {
                self.lines.push(line);
            }
            self.text.push_str(piece);
            if advance && piece.ends_with('\n') {
                line += 1;
            }
        }
    }
}

struct Eval<'a> {
    object: &'a str,
    /// The data itself: `.actions` is deferred only when read from it.
    root: &'a Val,
    vars: Vec<(String, Val)>,
    /// Commands and range iterations evaluated so far (see [`MAX_STEPS`]).
    steps: std::cell::Cell<usize>,
}

fn chain_name(prefix: &str, chain: &[String]) -> String {
    if chain.is_empty() && prefix.is_empty() {
        return ".".into();
    }
    if chain.is_empty() {
        return prefix.into();
    }
    format!("{prefix}.{}", chain.join("."))
}

/// The expression an argument reads, for errors about its value.
fn describe(a: &Arg) -> Option<String> {
    match a {
        Arg::Field(chain) => Some(chain_name("", chain)),
        Arg::Var(name, chain) => Some(chain_name(name, chain)),
        _ => None,
    }
}

impl Eval<'_> {
    fn err(&self, line: usize, field: Option<String>, m: impl Into<String>) -> SpecError {
        error(self.object, line, field, m)
    }

    /// Counts one step of work against [`MAX_STEPS`].
    fn step(&self, line: usize, field: impl FnOnce() -> Option<String>) -> Result<(), SpecError> {
        let n = self.steps.get() + 1;
        self.steps.set(n);
        if n > MAX_STEPS {
            return Err(self.err(
                line,
                field(),
                format!("rendering takes more than {MAX_STEPS} steps: nested range or pipelines grow too much"),
            ));
        }
        Ok(())
    }

    /// Refuses a string longer than [`MAX_OUTPUT`] before it is built.
    fn size(&self, line: usize, field: Option<String>, len: usize) -> Result<(), SpecError> {
        if len > MAX_OUTPUT {
            return Err(self.err(line, field, format!("the result would be {len} bytes, more than {MAX_OUTPUT}")));
        }
        Ok(())
    }

    fn nodes(&mut self, nodes: &[Node], dot: &Val, out: &mut Out) -> Result<(), SpecError> {
        let depth = self.vars.len();
        let result = self.nodes_in_scope(nodes, dot, out);
        self.vars.truncate(depth);
        result
    }

    fn nodes_in_scope(&mut self, nodes: &[Node], dot: &Val, out: &mut Out) -> Result<(), SpecError> {
        for node in nodes {
            match node {
                Node::Text { line, text } => {
                    self.size(*line, None, out.text.len().saturating_add(text.len()))?;
                    out.push(text, *line, true)
                }
                Node::Action { line, pipe } => {
                    let v = self.pipe(pipe, dot)?;
                    if let Some(name) = &pipe.decl {
                        self.vars.push((name.clone(), v));
                    } else {
                        let text = self.print(pipe, &v)?;
                        self.size(*line, describe_pipe(pipe), out.text.len().saturating_add(text.len()))?;
                        out.push(&text, *line, false);
                    }
                }
                Node::If { cond, then, otherwise } => {
                    let v = self.pipe(cond, dot)?;
                    // A probe could be anything: check both branches.
                    if v == Val::Probe {
                        self.nodes(then, dot, out)?;
                        self.nodes(otherwise, dot, &mut Out::default())?;
                    } else if truthy(&v) {
                        self.nodes(then, dot, out)?;
                    } else {
                        self.nodes(otherwise, dot, out)?;
                    }
                }
                Node::Range { line, vars, pipe, body, otherwise } => {
                    let v = self.pipe(pipe, dot)?;
                    let items: Vec<(Val, Val)> = match &v {
                        Val::Probe | Val::Deferred(_) => vec![(Val::Probe, Val::Probe)],
                        Val::Json(Value::Array(a)) => {
                            a.iter().enumerate().map(|(i, x)| (Val::Json(i.into()), Val::Json(x.clone()))).collect()
                        }
                        // Go ranges over a map in key order.
                        Val::Json(Value::Object(m)) => sorted(m)
                            .into_iter()
                            .map(|(k, x)| (Val::Json(k.clone().into()), Val::Json(x.clone())))
                            .collect(),
                        Val::Json(Value::Null) => Vec::new(),
                        Val::Json(other) => {
                            return Err(self.err(
                                *line,
                                describe_pipe(pipe),
                                format!("range can't iterate over {}", kind(other)),
                            ));
                        }
                    };
                    if items.is_empty() {
                        self.nodes(otherwise, dot, out)?;
                    }
                    for (key, item) in items {
                        self.step(*line, || describe_pipe(pipe))?;
                        let mark = self.vars.len();
                        match vars.as_slice() {
                            [v] => self.vars.push((v.clone(), item.clone())),
                            [k, v] => {
                                self.vars.push((k.clone(), key));
                                self.vars.push((v.clone(), item.clone()));
                            }
                            _ => {}
                        }
                        let result = self.nodes(body, &item, out);
                        self.vars.truncate(mark);
                        result?;
                    }
                }
            }
        }
        Ok(())
    }

    fn print(&self, pipe: &Pipeline, v: &Val) -> Result<String, SpecError> {
        Ok(match v {
            Val::Probe => PROBE.to_string(),
            Val::Deferred(expr) => expr.clone(),
            // Go prints `<no value>`; in a machine's configuration that is a bug.
            Val::Json(Value::Null) => {
                let what = describe_pipe(pipe);
                let message = match &what {
                    Some(expr) => format!("{expr} is null: no value to print"),
                    None => "the value is null: no value to print".to_string(),
                };
                return Err(self.err(pipe.line, what, message));
            }
            // While `.actions` outputs are deferred, whatever this render
            // prints is rendered again at dispatch: a `{{` in printed data
            // (hardware metadata, say) must come out as text then, not run
            // as a template against the earlier actions' outputs.
            Val::Json(j) if self.defers_actions() => to_text(j).replace("{{", "{{\"{{\"}}"),
            Val::Json(j) => to_text(j),
        })
    }

    /// True when `.actions` is not in the data, so references to it are
    /// deferred to dispatch.
    fn defers_actions(&self) -> bool {
        matches!(self.root, Val::Json(Value::Object(m)) if !m.contains_key(ACTIONS_KEY))
    }

    fn pipe(&self, p: &Pipeline, dot: &Val) -> Result<Val, SpecError> {
        let mut prev: Option<Val> = None;
        for cmd in &p.cmds {
            prev = Some(self.command(p.line, cmd, dot, prev)?);
        }
        Ok(prev.expect("pipelines are never empty"))
    }

    fn command(&self, line: usize, cmd: &[Arg], dot: &Val, prev: Option<Val>) -> Result<Val, SpecError> {
        self.step(line, || match &cmd[0] {
            Arg::Func(name) => Some(name.clone()),
            other => {
                describe(other).or_else(|| Some(pipe_text(&Pipeline { line, decl: None, cmds: vec![cmd.to_vec()] })))
            }
        })?;
        match &cmd[0] {
            Arg::Func(name) if name == "and" || name == "or" => self.and_or(line, name, &cmd[1..], dot, prev),
            Arg::Func(name) => {
                let mut args = cmd[1..].iter().map(|a| self.arg(line, a, dot)).collect::<Result<Vec<_>, _>>()?;
                let mut descs: Vec<Option<String>> = cmd[1..].iter().map(describe).collect();
                if let Some(p) = prev {
                    args.push(p);
                    descs.push(None);
                }
                self.call(line, name, args, &descs)
            }
            // The parser lets only functions follow `|`, so there is no
            // piped value to lose here.
            single => self.arg(line, single, dot),
        }
    }

    /// Go's `and`/`or` stop at the argument that decides the result:
    /// `and .flag .a.b` does not read `.a.b` when `.flag` is false. A probe
    /// decides nothing, so after one the rest is still evaluated (and checked).
    fn and_or(&self, line: usize, name: &str, args: &[Arg], dot: &Val, prev: Option<Val>) -> Result<Val, SpecError> {
        let count = args.len() + usize::from(prev.is_some());
        if count < 1 {
            return Err(self.err(line, Some(name.to_string()), format!("{name} takes at least 1 argument")));
        }
        let stop_when = name == "or";
        let mut saw_probe = false;
        let mut last = None;
        let values = args.iter().map(|a| self.arg(line, a, dot)).chain(prev.map(Ok));
        for v in values {
            let v = v?;
            if let Val::Deferred(expr) = &v {
                return Err(self.deferred_argument(line, name, expr));
            }
            if v == Val::Probe {
                saw_probe = true;
            } else if truthy(&v) == stop_when && !saw_probe {
                return Ok(v);
            }
            last = Some(v);
        }
        Ok(if saw_probe { Val::Probe } else { last.expect("at least one argument") })
    }

    fn deferred_argument(&self, line: usize, name: &str, expr: &str) -> SpecError {
        self.err(
            line,
            Some(name.to_string()),
            format!("{expr} is known only when the workflow runs: use it on its own, not as an argument of {name}"),
        )
    }

    fn arg(&self, line: usize, a: &Arg, dot: &Val) -> Result<Val, SpecError> {
        match a {
            Arg::Field(chain) => self.walk(line, dot, chain, "", std::ptr::eq(dot, self.root)),
            Arg::Var(name, chain) => {
                let (_, base) = self
                    .vars
                    .iter()
                    .rev()
                    .find(|(n, _)| n == name)
                    .ok_or_else(|| self.err(line, Some(name.clone()), format!("undefined variable {name}")))?;
                self.walk(line, base, chain, name, name == "$")
            }
            Arg::Str(s) => Ok(Val::Json(Value::String(s.clone()))),
            Arg::Int(n) => Ok(Val::Json((*n).into())),
            Arg::Float(f) => Ok(Val::Json((*f).into())),
            Arg::Bool(b) => Ok(Val::Json((*b).into())),
            Arg::Func(name) => self.call(line, name, Vec::new(), &[]),
            Arg::Paren(p) => self.pipe(p, dot),
        }
    }

    fn walk(&self, line: usize, base: &Val, chain: &[String], prefix: &str, at_root: bool) -> Result<Val, SpecError> {
        let Val::Json(data) = base else {
            // A probe stands for any data, and a deferred value for data to come.
            return Ok(base.clone());
        };
        let mut cur = data;
        if let (true, Some(first), Value::Object(m)) = (at_root, chain.first(), cur)
            && first == ACTIONS_KEY
            && !m.contains_key(ACTIONS_KEY)
        {
            return Ok(Val::Deferred(format!("{{{{ {} }}}}", chain_name(prefix, chain))));
        }
        for (i, key) in chain.iter().enumerate() {
            let here = || chain_name(prefix, &chain[..=i]);
            cur = match cur {
                Value::Object(m) => match m.get(key) {
                    Some(v) => v,
                    None => {
                        return Err(self.err(line, Some(here()), format!("no value for {:?} ({})", here(), known(m))));
                    }
                },
                other => {
                    let parent = chain_name(prefix, &chain[..i]);
                    return Err(self.err(
                        line,
                        Some(here()),
                        format!("can't read field {key:?}: {parent} is {}, not a map", kind(other)),
                    ));
                }
            };
        }
        Ok(Val::Json(cur.clone()))
    }

    fn call(&self, line: usize, name: &str, args: Vec<Val>, descs: &[Option<String>]) -> Result<Val, SpecError> {
        let field = Some(name.to_string());
        if let Some(Val::Deferred(expr)) = args.iter().find(|a| matches!(a, Val::Deferred(_))) {
            return Err(self.deferred_argument(line, name, expr));
        }
        let fail = |m: String| Err(self.err(line, field.clone(), m));
        let arity = |n: usize| -> Result<(), SpecError> {
            if args.len() != n {
                let plural = if n == 1 { "" } else { "s" };
                return Err(self.err(
                    line,
                    field.clone(),
                    format!("{name} takes {n} argument{plural}, got {}", args.len()),
                ));
            }
            Ok(())
        };
        let probe = args.contains(&Val::Probe);
        let text = |v: &Val| match v {
            Val::Json(j) => to_text(j),
            Val::Probe | Val::Deferred(_) => PROBE.to_string(),
        };
        let s = |v: String| {
            self.size(line, field.clone(), v.len())?;
            Ok(Val::Json(Value::String(v)))
        };
        match name {
            "index" => {
                if args.is_empty() {
                    return fail("index needs a collection".into());
                }
                let mut cur = args[0].clone();
                let mut path = descs.first().cloned().flatten().unwrap_or_else(|| "index".into());
                for key in &args[1..] {
                    cur = match (cur, key) {
                        (Val::Probe | Val::Deferred(_), _) | (_, Val::Probe | Val::Deferred(_)) => Val::Probe,
                        (Val::Json(Value::Array(a)), Val::Json(k)) => {
                            let Some(i) = as_int(k) else {
                                return Err(self.err(
                                    line,
                                    Some(path),
                                    format!("index of a list must be an integer, got {}", kind(k)),
                                ));
                            };
                            path = format!("{path}[{i}]");
                            let item = usize::try_from(i).ok().and_then(|i| a.get(i)).ok_or_else(|| {
                                self.err(
                                    line,
                                    Some(path.clone()),
                                    format!("index {i} out of range: the list has {} item(s)", a.len()),
                                )
                            })?;
                            Val::Json(item.clone())
                        }
                        (Val::Json(Value::Object(mut m)), Val::Json(k)) => {
                            let k = to_text(k);
                            path = format!("{path}[{k:?}]");
                            match m.remove(&k) {
                                Some(v) => Val::Json(v),
                                None => {
                                    return Err(self.err(line, Some(path), format!("no key {k:?} ({})", known(&m))));
                                }
                            }
                        }
                        (Val::Json(other), _) => {
                            return Err(self.err(line, Some(path), format!("can't index {}", kind(&other))));
                        }
                    };
                }
                Ok(cur)
            }
            "formatPartition" => {
                arity(2)?;
                if probe {
                    return s(format!("/dev/{PROBE}1"));
                }
                let Val::Json(n) = &args[1] else { return s(format!("/dev/{PROBE}1")) };
                let Some(n) = as_int(n).filter(|n| *n >= 1) else {
                    return fail(format!("partition must be a number from 1, got {}", to_text(n)));
                };
                let dev = text(&args[0]);
                if dev.trim().is_empty() {
                    return fail("formatPartition needs a device path, got an empty string".into());
                }
                s(format_partition(&dev, n))
            }
            "printf" => {
                let Some(Val::Json(Value::String(format))) = args.first() else {
                    return fail("printf needs a format string first".into());
                };
                printf(format, &args[1..]).map_or_else(|m| fail(format!("printf: {m}")), s)
            }
            "len" => {
                arity(1)?;
                Ok(match &args[0] {
                    Val::Probe | Val::Deferred(_) => Val::Json(1.into()),
                    Val::Json(Value::Array(a)) => Val::Json(a.len().into()),
                    Val::Json(Value::Object(m)) => Val::Json(m.len().into()),
                    // Go's len counts bytes.
                    Val::Json(Value::String(t)) => Val::Json(t.len().into()),
                    Val::Json(other) => return fail(format!("len of {}", kind(other))),
                })
            }
            "default" => {
                // Sprig: `default DEFAULT [VALUE]`, the value usually piped in.
                if args.is_empty() || args.len() > 2 {
                    return fail(format!("default takes 1 or 2 arguments, got {}", args.len()));
                }
                Ok(match args.get(1) {
                    Some(v) if *v == Val::Probe || truthy(v) => v.clone(),
                    _ => args[0].clone(),
                })
            }
            "quote" => {
                // Sprig quotes each argument and joins them with spaces.
                if args.is_empty() {
                    return fail("quote takes at least 1 argument".into());
                }
                s(args.iter().map(|a| go_quote(&text(a))).collect::<Vec<_>>().join(" "))
            }
            "lower" => {
                arity(1)?;
                s(text(&args[0]).to_lowercase())
            }
            "upper" => {
                arity(1)?;
                s(text(&args[0]).to_uppercase())
            }
            "trim" => {
                arity(1)?;
                s(text(&args[0]).trim().to_string())
            }
            "toString" => {
                arity(1)?;
                s(text(&args[0]))
            }
            "replace" => {
                arity(3)?;
                let (from, to, within) = (text(&args[0]), text(&args[1]), text(&args[2]));
                // Each match may grow: bound the result before building it.
                let matches = if from.is_empty() { within.chars().count() + 1 } else { within.matches(&from).count() };
                self.size(line, field.clone(), within.len().saturating_add(matches.saturating_mul(to.len())))?;
                s(within.replace(&from, &to))
            }
            "join" => {
                arity(2)?;
                let sep = text(&args[0]);
                match &args[1] {
                    Val::Probe | Val::Deferred(_) => s(PROBE.into()),
                    // Sprig skips nil items.
                    Val::Json(Value::Array(a)) => {
                        let items: Vec<String> = a.iter().filter(|v| !v.is_null()).map(to_text).collect();
                        let len =
                            items.iter().map(|i| i.len().saturating_add(sep.len())).fold(0usize, usize::saturating_add);
                        self.size(line, field.clone(), len)?;
                        s(items.join(&sep))
                    }
                    Val::Json(Value::String(one)) => s(one.clone()),
                    Val::Json(other) => fail(format!("join needs a list, got {}", kind(other))),
                }
            }
            "netmaskToPrefixLength" => {
                arity(1)?;
                if probe {
                    return Ok(Val::Json(24.into()));
                }
                let mask = text(&args[0]);
                match prefix_length(&mask) {
                    Some(bits) => Ok(Val::Json(bits.into())),
                    None => fail(format!("{mask:?} is not a dotted IPv4 netmask such as 255.255.255.0")),
                }
            }
            "eq" | "ne" => {
                if name == "ne" {
                    arity(2)?;
                } else if args.len() < 2 {
                    return fail(format!("eq takes at least 2 arguments, got {}", args.len()));
                }
                let values: Vec<&Value> = args
                    .iter()
                    .filter_map(|v| match v {
                        Val::Json(j) => Some(j),
                        Val::Probe | Val::Deferred(_) => None,
                    })
                    .collect();
                if values.len() < args.len() {
                    return Ok(Val::Probe);
                }
                let mut any = false;
                for other in &values[1..] {
                    any |= equal(values[0], other).map_err(|m| self.err(line, field.clone(), m))?;
                }
                Ok(Val::Json((any == (name == "eq")).into()))
            }
            "not" => {
                arity(1)?;
                if probe {
                    return Ok(Val::Probe);
                }
                Ok(Val::Json((!truthy(&args[0])).into()))
            }
            other => fail(format!("unsupported function {other:?}")),
        }
    }
}

/// The expression a pipeline reads when it is just one field or variable,
/// else the pipeline as written (give or take spaces and quotes), so that
/// an error about its value always names the expression.
fn describe_pipe(p: &Pipeline) -> Option<String> {
    match p.cmds.as_slice() {
        [cmd] if cmd.len() == 1 && describe(&cmd[0]).is_some() => describe(&cmd[0]),
        _ => Some(pipe_text(p)),
    }
}

fn pipe_text(p: &Pipeline) -> String {
    let cmds: Vec<String> = p
        .cmds
        .iter()
        .map(|cmd| {
            cmd.iter()
                .map(|a| match a {
                    Arg::Field(chain) => chain_name("", chain),
                    Arg::Var(name, chain) => chain_name(name, chain),
                    Arg::Str(s) => format!("{s:?}"),
                    Arg::Int(n) => n.to_string(),
                    Arg::Float(f) => f.to_string(),
                    Arg::Bool(b) => b.to_string(),
                    Arg::Func(name) => name.clone(),
                    Arg::Paren(inner) => format!("({})", pipe_text(inner)),
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    cmds.join(" | ")
}

fn sorted(m: &serde_json::Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut entries: Vec<_> = m.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries
}

/// "known keys: a, b" for errors about a missing key.
fn known(m: &serde_json::Map<String, Value>) -> String {
    if m.is_empty() {
        return "the map is empty".into();
    }
    let keys: Vec<&str> = sorted(m).into_iter().map(|(k, _)| k.as_str()).collect();
    format!("known keys: {}", keys.join(", "))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

fn truthy(v: &Val) -> bool {
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
fn as_int(v: &Value) -> Option<i64> {
    let n = v.as_number()?;
    n.as_i64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.0e18).map(|f| f as i64))
}

/// Go's `eq` on basic values: numbers by value, strings and bools as they
/// are; anything else, or values of different kinds, cannot be compared.
fn equal(a: &Value, b: &Value) -> Result<bool, String> {
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
fn to_text(v: &Value) -> String {
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
fn go_quote(s: &str) -> String {
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

/// Tinkerbell's `formatPartition`: the device path of partition `n`,
/// following the kernel's naming: `/dev/sda` → `/dev/sda1`, names ending in
/// a digit take a `p` (`nvme0n1p1`, `mmcblk0p1`, `loop0p1`), and udev's
/// `/dev/disk/by-*/` links take `-partN`.
pub fn format_partition(dev: &str, n: i64) -> String {
    if dev.starts_with("/dev/disk/") {
        return format!("{dev}-part{n}");
    }
    if dev.ends_with(|c: char| c.is_ascii_digit()) { format!("{dev}p{n}") } else { format!("{dev}{n}") }
}

/// `255.255.255.0` → 24; `None` unless four octets with contiguous ones.
fn prefix_length(mask: &str) -> Option<u32> {
    let octets: Vec<&str> = mask.trim().split('.').collect();
    if octets.len() != 4 {
        return None;
    }
    let mut bytes = [0u8; 4];
    for (b, o) in bytes.iter_mut().zip(&octets) {
        if o.is_empty() || o.len() > 3 || !o.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        *b = o.parse().ok()?;
    }
    let bits = u32::from_be_bytes(bytes);
    (bits.leading_ones() + bits.trailing_zeros() == 32).then(|| bits.leading_ones())
}

/// `printf` with `%s %d %v %q %%`, the flags `-` and `0` and a width.
/// Unlike Go, a missing or extra argument, a wrong type for `%d` and an
/// unknown verb are errors instead of `%!d(...)` text in the output.
fn printf(format: &str, args: &[Val]) -> Result<String, String> {
    let mut out = String::new();
    let mut args = args.iter();
    let mut used = 0;
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let (mut left, mut zero) = (false, false);
        while let Some(&f) = chars.peek() {
            match f {
                '-' => left = true,
                '0' => zero = true,
                _ => break,
            }
            chars.next();
        }
        let mut width = 0usize;
        while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
            width = width * 10 + d as usize;
            if width > MAX_WIDTH {
                return Err(format!("width is more than {MAX_WIDTH}"));
            }
            chars.next();
        }
        let verb = chars.next().ok_or("the format ends with %")?;
        if verb == '%' {
            out.push('%');
            continue;
        }
        if !matches!(verb, 's' | 'd' | 'v' | 'q') {
            return Err(format!("unsupported verb %{verb} (supported: %s %d %v %q %%)"));
        }
        let arg = args.next().ok_or_else(|| format!("%{verb} has no argument"))?;
        used += 1;
        let text = match (verb, arg) {
            (_, Val::Probe | Val::Deferred(_)) => PROBE.to_string(),
            ('d', Val::Json(v)) => {
                as_int(v).ok_or_else(|| format!("%d needs an integer, got {} {}", kind(v), to_text(v)))?.to_string()
            }
            ('q', Val::Json(v)) => go_quote(&to_text(v)),
            (_, Val::Json(v)) => to_text(v),
        };
        let pad = width.saturating_sub(text.chars().count());
        if left {
            out.push_str(&text);
            out.extend(std::iter::repeat_n(' ', pad));
        } else if zero && verb == 'd' {
            let (sign, digits) = text.split_at(usize::from(text.starts_with('-')));
            out.push_str(sign);
            out.extend(std::iter::repeat_n('0', pad));
            out.push_str(digits);
        } else {
            out.extend(std::iter::repeat_n(' ', pad));
            out.push_str(&text);
        }
    }
    let extra = args.count();
    if extra > 0 {
        return Err(format!("{} argument(s) but the format uses {used}", used + extra));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
