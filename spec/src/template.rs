//! The subset of Go's text/template that Tinkerbell templates use.
//!
//! Written here because the one Go-template crate for Rust (gtmpl) has been
//! unmaintained since 2021, and because what templates need is small:
//! field chains (`.device_1`, `.Hardware.Disks`), pipelines, a few functions
//! (`index`, `formatPartition`, `printf`, some of Sprig), `if`/`else` and
//! `range`. Semantics follow Go with `missingkey=error`: a missing key is an
//! error naming the field and the line, never a silent `<no value>`.
//!
//! A template is parsed once into nodes; [`render`] evaluates them against a
//! JSON value. [`render_probe`] evaluates them against *no* data: every field
//! yields a placeholder, so the structure of the output can be checked when a
//! template is applied, before any hardware exists.

use serde_json::Value;

use crate::SpecError;

/// Renders `text` with `data`. `object` names the template in errors.
pub fn render(object: &str, text: &str, data: &Value) -> Result<String, SpecError> {
    let nodes = parse(object, text)?;
    let mut out = String::new();
    let root = Val::Json(data.clone());
    Eval { object, root: &root, vars: vec![("$".into(), root.clone())] }.nodes(&nodes, &root, &mut out)?;
    Ok(out)
}

/// Parses only: syntax errors and unknown functions, with line numbers.
pub fn check_syntax(object: &str, text: &str) -> Result<(), SpecError> {
    parse(object, text).map(|_| ())
}

/// Renders with placeholder data: every field access succeeds and prints
/// [`PROBE`]. Used to check a template's structure without hardware.
pub fn render_probe(object: &str, text: &str) -> Result<String, SpecError> {
    let nodes = parse(object, text)?;
    let mut out = String::new();
    Eval { object, root: &Val::Probe, vars: vec![("$".into(), Val::Probe)] }.nodes(&nodes, &Val::Probe, &mut out)?;
    Ok(out)
}

/// What a field prints as when rendering with [`render_probe`].
pub const PROBE: &str = "probe";

const FUNCTIONS: &[&str] = &[
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

fn error(object: &str, line: usize, field: Option<String>, message: impl Into<String>) -> SpecError {
    SpecError { object: object.to_string(), line: Some(line), field, message: message.into() }
}

// ---------------------------------------------------------------- parsing

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Action { line: usize, pipe: Pipeline },
    If { cond: Pipeline, then: Vec<Node>, otherwise: Vec<Node> },
    Range { line: usize, vars: Vec<String>, pipe: Pipeline, body: Vec<Node>, otherwise: Vec<Node> },
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
    Ident(String),
    Open,
    Close,
    Pipe,
    Declare,
    Comma,
}

/// A raw piece of the template: text, or the inside of one `{{ }}`.
enum Piece {
    Text(String),
    Action { line: usize, toks: Vec<Tok> },
}

fn line_of(text: &str, byte: usize) -> usize {
    text[..byte].bytes().filter(|&b| b == b'\n').count() + 1
}

fn split(object: &str, text: &str) -> Result<Vec<Piece>, SpecError> {
    let mut pieces = Vec::new();
    let mut rest = 0;
    let mut trim_next = false;
    while let Some(found) = text[rest..].find("{{") {
        let start = rest + found;
        let line = line_of(text, start);
        let mut chunk = &text[rest..start];
        if trim_next {
            chunk = chunk.trim_start();
        }
        let mut inner_start = start + 2;
        // `{{- ` trims the text before; `{{-3}}` is a negative number.
        let trim_prev = text[inner_start..].starts_with('-')
            && text[inner_start + 1..].starts_with(|c: char| c.is_ascii_whitespace());
        if trim_prev {
            chunk = chunk.trim_end();
            inner_start += 1;
        }
        pieces.push(Piece::Text(chunk.to_string()));
        let close = find_close(&text[inner_start..])
            .ok_or_else(|| error(object, line, None, "unterminated action: missing }}"))?;
        let mut inner = &text[inner_start..inner_start + close];
        let mut end = inner_start + close + 2;
        trim_next = false;
        if inner.ends_with(" -") || inner.ends_with("\t-") || inner.ends_with("\n-") {
            inner = &inner[..inner.len() - 1];
            trim_next = true;
        }
        let trimmed = inner.trim();
        if trimmed.starts_with("/*") {
            if !trimmed.ends_with("*/") {
                return Err(error(object, line, None, "unterminated comment"));
            }
        } else {
            pieces.push(Piece::Action { line, toks: lex(object, line, inner)? });
        }
        if end > text.len() {
            end = text.len();
        }
        rest = end;
    }
    let mut chunk = &text[rest..];
    if trim_next {
        chunk = chunk.trim_start();
    }
    pieces.push(Piece::Text(chunk.to_string()));
    Ok(pieces)
}

/// Position of the `}}` closing an action, skipping quoted strings.
fn find_close(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'`' => {
                i += 1;
                while i < b.len() && b[i] != b'`' {
                    i += 1;
                }
            }
            b'}' if b.get(i + 1) == Some(&b'}') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

fn ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn lex(object: &str, line: usize, s: &str) -> Result<Vec<Tok>, SpecError> {
    let chars: Vec<char> = s.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    let err = |m: String| error(object, line, None, m);
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
                return Err(err("assignment with = is not supported; use := to declare".into()));
            }
            '.' => {
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
                let mut out = String::new();
                i += 1;
                loop {
                    let Some(&c) = chars.get(i) else {
                        return Err(err("unterminated string".into()));
                    };
                    i += 1;
                    match c {
                        '"' => break,
                        '\\' => {
                            let Some(&e) = chars.get(i) else {
                                return Err(err("unterminated string".into()));
                            };
                            i += 1;
                            out.push(match e {
                                'n' => '\n',
                                't' => '\t',
                                'r' => '\r',
                                '\\' => '\\',
                                '"' => '"',
                                '\'' => '\'',
                                other => {
                                    return Err(err(format!("unsupported escape \\{other} in string")));
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
                    .ok_or_else(|| err("unterminated raw string".into()))?;
                toks.push(Tok::Str(chars[start..start + end].iter().collect()));
                i = start + end + 1;
            }
            c if c.is_ascii_digit() || (c == '-' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) => {
                let start = i;
                i += 1;
                while i < chars.len() && chars[i].is_ascii_alphanumeric() {
                    i += 1;
                }
                let lit: String = chars[start..i].iter().collect();
                let n = lit.parse::<i64>().map_err(|_| err(format!("unsupported number {lit:?}")))?;
                toks.push(Tok::Int(n));
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len() && ident_char(chars[i]) {
                    i += 1;
                }
                toks.push(Tok::Ident(chars[start..i].iter().collect()));
            }
            other => return Err(err(format!("unexpected character {other:?} in action"))),
        }
    }
    Ok(toks)
}

struct Parser<'a> {
    object: &'a str,
    pieces: std::iter::Peekable<std::vec::IntoIter<Piece>>,
}

/// How a list of nodes ended.
enum Closer {
    Eof,
    End,
    Else { line: usize, toks: Vec<Tok> },
}

fn parse(object: &str, text: &str) -> Result<Vec<Node>, SpecError> {
    let pieces = split(object, text)?;
    let mut p = Parser { object, pieces: pieces.into_iter().peekable() };
    let (nodes, end) = p.list()?;
    match end {
        Closer::Eof => Ok(nodes),
        Closer::End => Err(error(object, p.last_line(text), None, "unexpected {{end}}")),
        Closer::Else { line, .. } => Err(error(object, line, None, "unexpected {{else}}")),
    }
}

impl Parser<'_> {
    fn last_line(&self, text: &str) -> usize {
        text.lines().count().max(1)
    }

    fn list(&mut self) -> Result<(Vec<Node>, Closer), SpecError> {
        let mut nodes = Vec::new();
        while let Some(piece) = self.pieces.next() {
            match piece {
                Piece::Text(t) => {
                    if !t.is_empty() {
                        nodes.push(Node::Text(t))
                    }
                }
                Piece::Action { line, toks } => match toks.first() {
                    None => return Err(error(self.object, line, None, "empty action {{}}")),
                    Some(Tok::Ident(kw)) if kw == "end" => {
                        if toks.len() > 1 {
                            return Err(error(self.object, line, None, "unexpected words after end"));
                        }
                        return Ok((nodes, Closer::End));
                    }
                    Some(Tok::Ident(kw)) if kw == "else" => {
                        return Ok((nodes, Closer::Else { line, toks: toks[1..].to_vec() }));
                    }
                    Some(Tok::Ident(kw)) if kw == "if" => nodes.push(self.if_node(line, &toks[1..])?),
                    Some(Tok::Ident(kw)) if kw == "range" => nodes.push(self.range_node(line, &toks[1..])?),
                    Some(Tok::Ident(kw))
                        if ["with", "define", "template", "block", "break", "continue"].contains(&kw.as_str()) =>
                    {
                        return Err(error(self.object, line, None, format!("unsupported action {kw:?}")));
                    }
                    _ => nodes.push(Node::Action { line, pipe: pipeline(self.object, line, &toks, true)? }),
                },
            }
        }
        Ok((nodes, Closer::Eof))
    }

    fn if_node(&mut self, line: usize, toks: &[Tok]) -> Result<Node, SpecError> {
        let cond = pipeline(self.object, line, toks, false)?;
        let (then, end) = self.list()?;
        let otherwise = match end {
            Closer::End => Vec::new(),
            Closer::Eof => return Err(error(self.object, line, None, "if without {{end}}")),
            Closer::Else { line: else_line, toks } if toks.is_empty() => self.until_end(else_line)?,
            // `else if` chains into a nested if that shares our end.
            Closer::Else { line: else_line, toks } => match toks.first() {
                Some(Tok::Ident(kw)) if kw == "if" => vec![self.if_node(else_line, &toks[1..])?],
                _ => {
                    return Err(error(self.object, else_line, None, "else must be followed by nothing or by if"));
                }
            },
        };
        Ok(Node::If { cond, then, otherwise })
    }

    fn until_end(&mut self, line: usize) -> Result<Vec<Node>, SpecError> {
        match self.list()? {
            (nodes, Closer::End) => Ok(nodes),
            (_, Closer::Eof) => Err(error(self.object, line, None, "else without {{end}}")),
            (_, Closer::Else { line, .. }) => Err(error(self.object, line, None, "a second else")),
        }
    }

    fn range_node(&mut self, line: usize, toks: &[Tok]) -> Result<Node, SpecError> {
        let mut vars = Vec::new();
        let mut rest = toks;
        if let Some(pos) = toks.iter().position(|t| *t == Tok::Declare) {
            for t in &toks[..pos] {
                match t {
                    Tok::Var(v, chain) if chain.is_empty() => vars.push(v.clone()),
                    Tok::Comma => {}
                    _ => {
                        return Err(error(self.object, line, None, "range variables must be $name[, $name] :="));
                    }
                }
            }
            if vars.is_empty() || vars.len() > 2 {
                return Err(error(self.object, line, None, "range takes one or two variables"));
            }
            rest = &toks[pos + 1..];
        }
        let pipe = pipeline(self.object, line, rest, false)?;
        let (body, end) = self.list()?;
        let otherwise = match end {
            Closer::End => Vec::new(),
            Closer::Eof => return Err(error(self.object, line, None, "range without {{end}}")),
            Closer::Else { line: l, toks } if toks.is_empty() => self.until_end(l)?,
            Closer::Else { line: l, .. } => {
                return Err(error(self.object, l, None, "else in range takes no arguments"));
            }
        };
        Ok(Node::Range { line, vars, pipe, body, otherwise })
    }
}

fn pipeline(object: &str, line: usize, toks: &[Tok], allow_decl: bool) -> Result<Pipeline, SpecError> {
    let mut toks = toks;
    let mut decl = None;
    if let [Tok::Var(v, chain), Tok::Declare, rest @ ..] = toks {
        if !allow_decl || !chain.is_empty() {
            return Err(error(object, line, None, "a variable can only be declared as {{ $name := ... }}"));
        }
        decl = Some(v.clone());
        toks = rest;
    }
    let mut pos = 0;
    let pipe = parse_pipe(object, line, toks, &mut pos, decl)?;
    if pos != toks.len() {
        return Err(error(object, line, None, "unexpected ) in action"));
    }
    Ok(pipe)
}

fn parse_pipe(
    object: &str,
    line: usize,
    toks: &[Tok],
    pos: &mut usize,
    decl: Option<String>,
) -> Result<Pipeline, SpecError> {
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
                    return Err(error(object, line, None, "missing command before |"));
                }
                cmds.push(Vec::new());
                continue;
            }
            Tok::Open => {
                let inner = parse_pipe(object, line, toks, pos, None)?;
                if toks.get(*pos) != Some(&Tok::Close) {
                    return Err(error(object, line, None, "unclosed ( in action"));
                }
                *pos += 1;
                Arg::Paren(inner)
            }
            Tok::Field(c) => Arg::Field(c.clone()),
            Tok::Var(v, c) => Arg::Var(v.clone(), c.clone()),
            Tok::Str(s) => Arg::Str(s.clone()),
            Tok::Int(n) => Arg::Int(*n),
            Tok::Ident(w) if w == "true" || w == "false" => Arg::Bool(w == "true"),
            Tok::Ident(w) if w == "nil" => {
                return Err(error(object, line, None, "nil is not supported"));
            }
            Tok::Ident(w) if FUNCTIONS.contains(&w.as_str()) => Arg::Func(w.clone()),
            Tok::Ident(w) => {
                return Err(error(object, line, None, format!("unsupported function {w:?}")));
            }
            Tok::Declare | Tok::Comma => {
                return Err(error(object, line, None, "unexpected := or , in action"));
            }
        };
        cmds.last_mut().expect("never empty").push(arg);
    }
    if cmds.iter().any(Vec::is_empty) {
        return Err(error(object, line, None, "empty command in pipeline"));
    }
    for cmd in &cmds[..] {
        if cmd.len() > 1 && !matches!(cmd[0], Arg::Func(_)) {
            return Err(error(object, line, None, "can't give arguments to a non-function"));
        }
    }
    Ok(Pipeline { line, decl, cmds })
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

/// The key under which earlier actions' outputs are given to templates.
pub const ACTIONS_KEY: &str = "actions";

struct Eval<'a> {
    object: &'a str,
    #[allow(dead_code)]
    root: &'a Val,
    vars: Vec<(String, Val)>,
}

fn chain_name(prefix: &str, chain: &[String]) -> String {
    if chain.is_empty() && prefix.is_empty() {
        return ".".into();
    }
    format!("{prefix}.{}", chain.join("."))
}

impl Eval<'_> {
    fn err(&self, line: usize, field: Option<String>, m: impl Into<String>) -> SpecError {
        error(self.object, line, field, m)
    }

    fn nodes(&mut self, nodes: &[Node], dot: &Val, out: &mut String) -> Result<(), SpecError> {
        let depth = self.vars.len();
        for node in nodes {
            match node {
                Node::Text(t) => out.push_str(t),
                Node::Action { line, pipe } => {
                    let v = self.pipe(pipe, dot)?;
                    if let Some(name) = &pipe.decl {
                        self.vars.push((name.clone(), v));
                    } else {
                        out.push_str(&self.print(*line, &v)?);
                    }
                }
                Node::If { cond, then, otherwise, .. } => {
                    let v = self.pipe(cond, dot)?;
                    // A probe could be anything: check both branches.
                    if v == Val::Probe {
                        self.nodes(then, dot, out)?;
                        let mut ignored = String::new();
                        self.nodes(otherwise, dot, &mut ignored)?;
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
                        Val::Json(Value::Object(m)) => {
                            m.iter().map(|(k, x)| (Val::Json(k.clone().into()), Val::Json(x.clone()))).collect()
                        }
                        Val::Json(Value::Null) => Vec::new(),
                        Val::Json(other) => {
                            return Err(self.err(*line, None, format!("range can't iterate over {}", kind(other))));
                        }
                    };
                    if items.is_empty() {
                        self.nodes(otherwise, dot, out)?;
                    }
                    for (key, item) in items {
                        let mark = self.vars.len();
                        match vars.as_slice() {
                            [v] => self.vars.push((v.clone(), item.clone())),
                            [k, v] => {
                                self.vars.push((k.clone(), key));
                                self.vars.push((v.clone(), item.clone()));
                            }
                            _ => {}
                        }
                        self.nodes(body, &item, out)?;
                        self.vars.truncate(mark);
                    }
                }
            }
        }
        self.vars.truncate(depth);
        Ok(())
    }

    fn print(&self, line: usize, v: &Val) -> Result<String, SpecError> {
        Ok(match v {
            Val::Probe => PROBE.to_string(),
            Val::Deferred(expr) => expr.clone(),
            Val::Json(Value::Null) => {
                return Err(self.err(line, None, "value is null (no value to print)"));
            }
            Val::Json(j) => to_text(j),
        })
    }

    fn pipe(&self, p: &Pipeline, dot: &Val) -> Result<Val, SpecError> {
        let mut prev: Option<Val> = None;
        for cmd in &p.cmds {
            prev = Some(self.command(p.line, cmd, dot, prev)?);
        }
        Ok(prev.expect("pipelines are never empty"))
    }

    fn command(&self, line: usize, cmd: &[Arg], dot: &Val, prev: Option<Val>) -> Result<Val, SpecError> {
        match &cmd[0] {
            Arg::Func(name) => {
                let mut args = cmd[1..].iter().map(|a| self.arg(line, a, dot)).collect::<Result<Vec<_>, _>>()?;
                args.extend(prev);
                self.call(line, name, args)
            }
            single => {
                if prev.is_some() {
                    return Err(self.err(line, None, "only functions can follow | in a pipeline"));
                }
                self.arg(line, single, dot)
            }
        }
    }

    fn arg(&self, line: usize, a: &Arg, dot: &Val) -> Result<Val, SpecError> {
        match a {
            Arg::Field(chain) => self.walk(line, dot, chain, ""),
            Arg::Var(name, chain) => {
                let base = self
                    .vars
                    .iter()
                    .rev()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| self.err(line, Some(name.clone()), format!("undefined variable {name}")))?;
                self.walk(line, &base, chain, name)
            }
            Arg::Str(s) => Ok(Val::Json(Value::String(s.clone()))),
            Arg::Int(n) => Ok(Val::Json((*n).into())),
            Arg::Bool(b) => Ok(Val::Json((*b).into())),
            Arg::Func(name) => self.call(line, name, Vec::new()),
            Arg::Paren(p) => self.pipe(p, dot),
        }
    }

    fn walk(&self, line: usize, base: &Val, chain: &[String], prefix: &str) -> Result<Val, SpecError> {
        if let (Some(first), Val::Json(Value::Object(m))) = (chain.first(), base)
            && first == ACTIONS_KEY
            && !m.contains_key(ACTIONS_KEY)
        {
            return Ok(Val::Deferred(format!("{{{{ {} }}}}", chain_name(prefix, chain))));
        }
        let mut cur = base.clone();
        for (i, key) in chain.iter().enumerate() {
            let here = || chain_name(prefix, &chain[..=i]);
            cur = match cur {
                Val::Probe => Val::Probe,
                Val::Deferred(d) => Val::Deferred(d),
                Val::Json(Value::Object(m)) => match m.get(key) {
                    Some(v) => Val::Json(v.clone()),
                    None => {
                        let known: Vec<&str> = m.keys().map(String::as_str).collect();
                        return Err(self.err(
                            line,
                            Some(here()),
                            format!("no value for {:?} (known keys: {})", here(), known.join(", ")),
                        ));
                    }
                },
                Val::Json(other) => {
                    return Err(self.err(
                        line,
                        Some(here()),
                        format!("can't access field {key:?} of {}", kind(&other)),
                    ));
                }
            };
        }
        Ok(cur)
    }

    fn call(&self, line: usize, name: &str, args: Vec<Val>) -> Result<Val, SpecError> {
        let field = Some(name.to_string());
        if let Some(Val::Deferred(expr)) = args.iter().find(|a| matches!(a, Val::Deferred(_))) {
            return Err(self.err(
                line,
                field,
                format!("{expr} is known only when the workflow runs: use it on its own, not as an argument of {name}"),
            ));
        }
        let arity = |n: usize| -> Result<(), SpecError> {
            if args.len() != n {
                return Err(self.err(line, field.clone(), format!("{name} takes {n} arguments, got {}", args.len())));
            }
            Ok(())
        };
        let probe = args.contains(&Val::Probe);
        let json = |v: &Val| match v {
            Val::Json(j) => j.clone(),
            Val::Probe | Val::Deferred(_) => Value::String(PROBE.into()),
        };
        let text = |v: &Val| match v {
            Val::Json(j) => to_text(j),
            Val::Probe | Val::Deferred(_) => PROBE.to_string(),
        };
        let s = |v: String| Ok(Val::Json(Value::String(v)));
        match name {
            "index" => {
                if args.is_empty() {
                    return Err(self.err(line, field, "index needs a collection"));
                }
                let mut cur = args[0].clone();
                for key in &args[1..] {
                    cur = match (cur, key) {
                        (Val::Probe, _) | (_, Val::Probe) | (Val::Deferred(_), _) | (_, Val::Deferred(_)) => Val::Probe,
                        (Val::Json(Value::Array(a)), Val::Json(k)) => {
                            let i = k
                                .as_i64()
                                .ok_or_else(|| self.err(line, field.clone(), "index of a list must be an integer"))?;
                            let item = usize::try_from(i).ok().and_then(|i| a.get(i)).ok_or_else(|| {
                                self.err(line, field.clone(), format!("index {i} out of range (length {})", a.len()))
                            })?;
                            Val::Json(item.clone())
                        }
                        (Val::Json(Value::Object(m)), Val::Json(k)) => {
                            let k = to_text(k);
                            Val::Json(
                                m.get(&k)
                                    .cloned()
                                    .ok_or_else(|| self.err(line, Some(k.clone()), format!("index: no key {k:?}")))?,
                            )
                        }
                        (Val::Json(other), _) => {
                            return Err(self.err(line, field, format!("can't index {}", kind(&other))));
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
                let n = json(&args[1])
                    .as_i64()
                    .ok_or_else(|| self.err(line, field.clone(), "partition must be an integer"))?;
                s(format_partition(&text(&args[0]), n))
            }
            "printf" => {
                let Some(Val::Json(Value::String(fmt))) = args.first() else {
                    return Err(self.err(line, field, "printf needs a format string first"));
                };
                s(printf(fmt, &args[1..].iter().map(json).collect::<Vec<_>>()))
            }
            "len" => {
                arity(1)?;
                Ok(match &args[0] {
                    Val::Probe | Val::Deferred(_) => Val::Json(1.into()),
                    Val::Json(Value::Array(a)) => Val::Json(a.len().into()),
                    Val::Json(Value::Object(m)) => Val::Json(m.len().into()),
                    Val::Json(Value::String(t)) => Val::Json(t.len().into()),
                    Val::Json(other) => {
                        return Err(self.err(line, field, format!("len of {}", kind(other))));
                    }
                })
            }
            "default" => {
                arity(2)?;
                Ok(if args[1] == Val::Probe || truthy(&args[1]) { args[1].clone() } else { args[0].clone() })
            }
            "quote" => {
                arity(1)?;
                s(format!("{:?}", text(&args[0])))
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
                s(text(&args[2]).replace(&text(&args[0]), &text(&args[1])))
            }
            "join" => {
                arity(2)?;
                let sep = text(&args[0]);
                match &args[1] {
                    Val::Probe | Val::Deferred(_) => s(PROBE.into()),
                    Val::Json(Value::Array(a)) => s(a.iter().map(to_text).collect::<Vec<_>>().join(&sep)),
                    Val::Json(other) => Err(self.err(line, field, format!("join needs a list, got {}", kind(other)))),
                }
            }
            "netmaskToPrefixLength" => {
                arity(1)?;
                if probe {
                    return Ok(Val::Json(24.into()));
                }
                let mask = text(&args[0]);
                let octets: Vec<u8> = mask.split('.').filter_map(|o| o.parse().ok()).collect();
                if octets.len() != 4 {
                    return Err(self.err(line, field, format!("{mask:?} is not a dotted netmask")));
                }
                let bits = u32::from_be_bytes([octets[0], octets[1], octets[2], octets[3]]);
                if bits.leading_ones() + bits.trailing_zeros() != 32 {
                    return Err(self.err(line, field, format!("{mask:?} is not a contiguous netmask")));
                }
                Ok(Val::Json(bits.leading_ones().into()))
            }
            "eq" | "ne" => {
                arity(2)?;
                if probe {
                    return Ok(Val::Probe);
                }
                let same = json(&args[0]) == json(&args[1]);
                Ok(Val::Json((same == (name == "eq")).into()))
            }
            "not" => {
                arity(1)?;
                if probe {
                    return Ok(Val::Probe);
                }
                Ok(Val::Json((!truthy(&args[0])).into()))
            }
            "and" | "or" => {
                if args.len() < 2 {
                    return Err(self.err(line, field, format!("{name} takes at least 2 arguments")));
                }
                if probe {
                    return Ok(Val::Probe);
                }
                // Go returns the first falsy (and) / truthy (or) argument, or the last.
                let want = name == "or";
                Ok(args.iter().find(|a| truthy(a) == want).unwrap_or(args.last().expect("len >= 2")).clone())
            }
            other => Err(self.err(line, field, format!("unsupported function {other:?}"))),
        }
    }
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

/// How Go prints a value: strings raw, integers without a fraction.
fn to_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// Tinkerbell's `formatPartition`: the device path of partition `n`.
pub fn format_partition(dev: &str, n: i64) -> String {
    if dev.starts_with("/dev/disk/") {
        return format!("{dev}-part{n}");
    }
    // Names ending in a digit (nvme0n1, mmcblk0, loop0) need a `p`.
    if dev.ends_with(|c: char| c.is_ascii_digit()) { format!("{dev}p{n}") } else { format!("{dev}{n}") }
}

fn printf(fmt: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let mut args = args.iter();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some(verb @ ('s' | 'd' | 'v' | 'q')) => match args.next() {
                Some(a) if verb == 'q' => out.push_str(&format!("{:?}", to_text(a))),
                Some(a) => out.push_str(&to_text(a)),
                None => out.push_str(&format!("%!{verb}(MISSING)")),
            },
            Some(other) => out.push_str(&format!("%!{other}(unsupported)")),
            None => out.push_str("%!(NOVERB)"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn data() -> Value {
        json!({
            "device_1": "52:54:00:12:34:56",
            "Hardware": {"Disks": ["/dev/nvme0n1", "/dev/sdb"], "Metadata": {"n": 3}},
            "hardware": {"metadata": {"instance": {"id": "i-1", "tags": ["a", "b"]}}},
            "flag": false,
        })
    }

    fn r(t: &str) -> String {
        render("template \"t\"", t, &data()).unwrap_or_else(|e| panic!("{t}: {e}"))
    }

    fn e(t: &str) -> SpecError {
        render("template \"t\"", t, &data()).unwrap_err()
    }

    #[test]
    fn renders_tinkerbell_expressions() {
        assert_eq!(r("worker: \"{{.device_1}}\""), "worker: \"52:54:00:12:34:56\"");
        assert_eq!(r("{{ index .Hardware.Disks 0 }}"), "/dev/nvme0n1");
        assert_eq!(r("{{ formatPartition ( index .Hardware.Disks 0 ) 1 }}"), "/dev/nvme0n1p1");
        assert_eq!(r("{{ formatPartition ( index .Hardware.Disks 1 ) 2 }}"), "/dev/sdb2");
        assert_eq!(r("{{ .hardware.metadata.instance.id }}"), "i-1");
        assert_eq!(r("{{ .Hardware.Metadata.n }}"), "3");
        assert_eq!(r("{{ .device_1 | upper }}"), "52:54:00:12:34:56");
        assert_eq!(r("{{ \"X\" | lower | quote }}"), "\"x\"");
        assert_eq!(r("{{ printf \"%s-%d%%\" .hardware.metadata.instance.id 7 }}"), "i-1-7%");
        assert_eq!(r("{{ join \",\" .hardware.metadata.instance.tags }}"), "a,b");
        assert_eq!(r("{{ len .Hardware.Disks }}"), "2");
        assert_eq!(r("{{ default \"x\" \"\" }}{{ default \"x\" \"y\" }}"), "xy");
        assert_eq!(r("{{ netmaskToPrefixLength \"255.255.255.0\" }}"), "24");
        assert_eq!(r("{{ replace \"a\" \"b\" \"aXa\" }}"), "bXb");
        assert_eq!(r("{{/* a comment */}}ok"), "ok");
        assert_eq!(r("{{ `raw \\n` }}"), "raw \\n");
    }

    #[test]
    fn control_flow_variables_and_trim() {
        assert_eq!(r("{{ if .flag }}yes{{ else }}no{{ end }}"), "no");
        assert_eq!(r("{{ if eq .device_1 \"x\" }}a{{ else if .Hardware }}b{{ else }}c{{ end }}"), "b");
        assert_eq!(r("{{ range $i, $d := .Hardware.Disks }}{{ $i }}={{ $d }};{{ end }}"), "0=/dev/nvme0n1;1=/dev/sdb;");
        assert_eq!(r("{{ range .Hardware.Disks }}[{{ . }}]{{ end }}"), "[/dev/nvme0n1][/dev/sdb]");
        assert_eq!(r("{{ $d := index .Hardware.Disks 1 }}{{ $d }} {{ $.device_1 }}"), "/dev/sdb 52:54:00:12:34:56");
        assert_eq!(r("a  \n {{- \"b\" -}} \n  c"), "abc");
        assert_eq!(r("{{-3}}"), "-3");
        assert_eq!(
            r("{{ and .flag .device_1 }}|{{ or .flag .device_1 }}|{{ not .flag }}"),
            "false|52:54:00:12:34:56|true"
        );
    }

    #[test]
    fn format_partition_follows_tinkerbell() {
        assert_eq!(format_partition("/dev/sda", 1), "/dev/sda1");
        assert_eq!(format_partition("/dev/nvme0n1", 1), "/dev/nvme0n1p1");
        assert_eq!(format_partition("/dev/mmcblk0", 2), "/dev/mmcblk0p2");
        assert_eq!(format_partition("/dev/loop0", 1), "/dev/loop0p1");
        assert_eq!(format_partition("/dev/disk/by-id/wwn-0x5000", 1), "/dev/disk/by-id/wwn-0x5000-part1");
    }

    #[test]
    fn errors_name_line_and_field() {
        let err = e("line one\nworker: {{ .device_2 }}");
        assert_eq!(err.line, Some(2));
        assert_eq!(err.field.as_deref(), Some(".device_2"));
        assert!(err.to_string().contains("known keys"), "{err}");
        let err = e("\n\n{{ .Hardware.Nope.x }}");
        assert_eq!((err.line, err.field.as_deref()), (Some(3), Some(".Hardware.Nope")));
        let err = e("{{ index .Hardware.Disks 5 }}");
        assert!(err.message.contains("out of range"), "{err}");
        let err = e("{{ .device_1.x }}");
        assert!(err.message.contains("can't access field"), "{err}");
        for (t, needle) in [
            ("{{ env \"HOME\" }}", "unsupported function \"env\""),
            ("{{ with .x }}{{ end }}", "unsupported action \"with\""),
            ("{{ define \"x\" }}", "unsupported action"),
            ("{{ .a ", "unterminated"),
            ("{{ end }}", "unexpected {{end}}"),
            ("{{ if .flag }}x", "if without"),
            ("{{ \"abc }}", "unterminated"),
            ("{{ .a | }}", "empty command"),
            ("{{ }}", "empty action"),
            ("{{ (index .a }}", "unclosed"),
            ("{{ .a .b }}", "non-function"),
        ] {
            let err = check_syntax("template \"t\"", t).err().or_else(|| render("t", t, &data()).err());
            let err = err.unwrap_or_else(|| panic!("{t} must fail"));
            assert!(err.to_string().contains(needle), "{t}: {err}");
            assert!(err.line.is_some(), "{t}: {err}");
        }
    }

    #[test]
    fn earlier_action_outputs_are_deferred_until_dispatch() {
        let t = "disk: \"{{ .actions.discover.output.disk }}\" host: {{ .device_1 }}";
        let first = r(t);
        assert_eq!(first, "disk: \"{{ .actions.discover.output.disk }}\" host: 52:54:00:12:34:56");
        let at_dispatch = json!({"actions": {"discover": {"output": {"disk": "/dev/sdb"}}}});
        assert_eq!(render("t", &first, &at_dispatch).unwrap(), "disk: \"/dev/sdb\" host: 52:54:00:12:34:56");
        let err = render("t", &first, &json!({"actions": {}})).unwrap_err();
        assert_eq!(err.field.as_deref(), Some(".actions.discover"), "{err}");
        let err = e("{{ .actions.x.output | upper }}");
        assert!(err.message.contains("known only when the workflow runs"), "{err}");
    }

    #[test]
    fn probe_renders_any_field() {
        let out =
            render_probe("t", "{{ .device_1 }} {{ formatPartition (index .Hardware.Disks 0) 1 }} {{ .a.b.c | upper }}")
                .unwrap();
        assert_eq!(out, "probe /dev/probe1 PROBE");
        assert!(render_probe("t", "{{ nope }}").is_err());
    }

    #[test]
    fn never_panics_on_garbage() {
        let valid = "a {{- .device_1 -}} b {{ if eq 1 1 }}{{ range $i, $v := .Hardware.Disks }}{{ printf \"%q\" $v }}{{ end }}{{ else }}x{{ end }} `{{ \"s\\\"\" }}` {{/* c */}}";
        let mut inputs: Vec<String> =
            (0..=valid.len()).filter(|i| valid.is_char_boundary(*i)).map(|i| valid[..i].to_string()).collect();
        inputs.extend((0..valid.len()).filter(|i| valid.is_char_boundary(*i)).map(|i| valid[i..].to_string()));
        let alphabet = [
            "{{", "}}", "-", ".", "$", "\"", "`", "(", ")", "|", ":=", "if", "end", "else", "range", " ", "x", "1",
            ",", "/*", "*/", "\n", "é",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..3000 {
            let mut s = String::new();
            for _ in 0..(seed % 12) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                s.push_str(alphabet[(seed % alphabet.len() as u64) as usize]);
            }
            inputs.push(s);
        }
        for input in inputs {
            let _ = render("t", &input, &data());
            let _ = render_probe("t", &input);
        }
    }
}
