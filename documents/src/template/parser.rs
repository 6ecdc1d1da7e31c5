//! The syntax tree of a template, and the parser that builds it from tokens.
//! Undefined variables and unknown functions are refused here, before any
//! data is seen.

use super::error;
use super::functions::{Function, function};
use super::lexer::{Piece, Tok, split};
use crate::SpecError;

/// Control words that only start an action.
const CONTROL_WORDS: &[&str] =
    &["if", "with", "range", "else", "end", "break", "continue", "define", "template", "block"];

/// Deepest chain of `{{template}}` calls. Go allows 100,000; kiln
/// evaluates recursively on a thread's stack, and a template that calls
/// itself that deep is a loop, not a layout (docs/templates.md).
pub(super) const MAX_TEMPLATE_CALLS: usize = 100;

/// Deepest nesting of `if`/`range` and of parentheses. Go has none, but a
/// hostile template must not exhaust the stack, which aborts the server
/// rather than returning an error.
pub(super) const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone)]
pub(super) enum Node {
    /// Template text; `line` is where it starts.
    Text {
        line: usize,
        text: String,
    },
    Action {
        line: usize,
        pipe: Pipeline,
    },
    /// `if`, or `with` (`sets_dot`), which also makes the value `.` in `then`.
    If {
        cond: Pipeline,
        sets_dot: bool,
        then: Vec<Node>,
        otherwise: Vec<Node>,
    },
    Break,
    Continue,
    Range {
        line: usize,
        vars: Vec<String>,
        pipe: Pipeline,
        body: Vec<Node>,
        otherwise: Vec<Node>,
    },
    /// `{{template "name" pipeline}}` (or the call a `block` makes).
    Template {
        line: usize,
        name: String,
        pipe: Option<Pipeline>,
    },
}

/// A parsed template: its own nodes and those `define` and `block` name.
pub(super) struct Tree {
    pub main: Vec<Node>,
    pub defines: std::collections::HashMap<String, Vec<Node>>,
}

/// Go's `parse.IsEmptyTree`: only white space. An empty definition never
/// replaces another, and may be replaced.
fn is_empty(nodes: &[Node]) -> bool {
    nodes.iter().all(|n| matches!(n, Node::Text { text, .. } if text.trim().is_empty()))
}

#[derive(Debug, Clone)]
pub(super) struct Pipeline {
    /// Where the pipeline's action starts, for errors.
    pub line: usize,
    /// `$x := ...` or `$x = ...`
    pub decl: Option<Decl>,
    pub cmds: Vec<Vec<Arg>>,
}

#[derive(Debug, Clone)]
pub(super) struct Decl {
    pub name: String,
    /// `=` to a variable declared earlier, rather than `:=`.
    pub assign: bool,
}

#[derive(Debug, Clone)]
pub(super) enum Arg {
    /// `.a.b`; empty for `.`
    Field(Vec<String>),
    /// `$name.a.b`
    Var(String, Vec<String>),
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Nil,
    Func(&'static Function),
    Paren(Pipeline),
    /// `(pipeline).a.b`
    Chain(Box<Arg>, Vec<String>),
}

struct Parser<'a> {
    object: &'a str,
    pieces: std::iter::Peekable<std::vec::IntoIter<Piece>>,
    /// Variables in scope, innermost last: Go rejects an undefined variable
    /// when parsing, and so does [`check_syntax`].
    vars: Vec<String>,
    depth: usize,
    /// How many `range`s enclose the current node: `break` and `continue`
    /// are refused outside one, as Go does.
    ranges: usize,
    /// Templates `define` and `block` named so far.
    defines: std::collections::HashMap<String, Vec<Node>>,
    /// Inside a `define` or `block` body: `define` is only for the top level.
    in_definition: bool,
}

/// How a list of nodes ended.
enum Closer {
    Eof,
    End { line: usize },
    Else { line: usize, toks: Vec<Tok> },
}

pub(super) fn parse(object: &str, text: &str) -> Result<Tree, SpecError> {
    let pieces = split(object, text)?;
    let mut p = Parser {
        object,
        pieces: pieces.into_iter().peekable(),
        vars: vec!["$".into()],
        depth: 0,
        ranges: 0,
        defines: Default::default(),
        in_definition: false,
    };
    let (nodes, end) = p.list()?;
    match end {
        Closer::Eof => Ok(Tree { main: nodes, defines: p.defines }),
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
                Some(Tok::Ident(kw)) if kw == "if" || kw == "with" => {
                    let sets_dot = kw == "with";
                    nodes.push(self.nested(|p| p.if_node(line, &toks[1..], sets_dot), line)?)
                }
                Some(Tok::Ident(kw)) if kw == "break" || kw == "continue" => {
                    if toks.len() > 1 {
                        return Err(error(self.object, line, None, format!("unexpected words after {kw}")));
                    }
                    if self.ranges == 0 {
                        return Err(error(self.object, line, None, format!("{{{{{kw}}}}} outside {{{{range}}}}")));
                    }
                    nodes.push(if kw == "break" { Node::Break } else { Node::Continue });
                }
                Some(Tok::Ident(kw)) if kw == "range" => {
                    nodes.push(self.nested(|p| p.range_node(line, &toks[1..]), line)?)
                }
                Some(Tok::Ident(kw)) if kw == "define" => {
                    if self.depth > 0 || self.in_definition {
                        return Err(error(self.object, line, None, "{{define}} is only allowed at the top level"));
                    }
                    let name = self.template_name(line, &toks, "define")?;
                    if toks.len() > 2 {
                        return Err(error(self.object, line, None, "unexpected words after the name in define"));
                    }
                    self.definition(line, name)?;
                }
                Some(Tok::Ident(kw)) if kw == "template" => {
                    let name = self.template_name(line, &toks, "template")?;
                    let pipe = if toks.len() > 2 { Some(self.pipeline(line, &toks[2..], false)?) } else { None };
                    nodes.push(Node::Template { line, name, pipe });
                }
                // `{{block "name" pipeline}}body{{end}}`: defines "name" and
                // calls it here.
                Some(Tok::Ident(kw)) if kw == "block" => {
                    let name = self.template_name(line, &toks, "block")?;
                    if toks.len() < 3 {
                        return Err(error(self.object, line, None, "missing value for block clause"));
                    }
                    let pipe = self.pipeline(line, &toks[2..], false)?;
                    if self.depth >= MAX_DEPTH {
                        return Err(error(self.object, line, None, format!("nested more than {MAX_DEPTH} deep")));
                    }
                    self.depth += 1;
                    let defined = self.definition(line, name.clone());
                    self.depth -= 1;
                    defined?;
                    nodes.push(Node::Template { line, name, pipe: Some(pipe) });
                }
                _ => {
                    let pipe = self.pipeline(line, &toks, true)?;
                    if let Some(Decl { name, assign: false }) = &pipe.decl {
                        self.vars.push(name.clone());
                    }
                    nodes.push(Node::Action { line, pipe });
                }
            }
        }
        Ok((nodes, Closer::Eof))
    }

    /// The quoted name after `define`, `template` or `block`.
    fn template_name(&self, line: usize, toks: &[Tok], word: &str) -> Result<String, SpecError> {
        match toks.get(1) {
            Some(Tok::Str(name)) => Ok(name.clone()),
            _ => Err(error(self.object, line, None, format!("{word} needs a template name in quotes"))),
        }
    }

    /// The body of a `define` or `block` up to its `{{end}}`: a template of
    /// its own, where only `$` is defined, as in Go.
    fn definition(&mut self, line: usize, name: String) -> Result<(), SpecError> {
        let vars = std::mem::replace(&mut self.vars, vec!["$".into()]);
        let ranges = std::mem::replace(&mut self.ranges, 0);
        let inside = std::mem::replace(&mut self.in_definition, true);
        let body = self.list();
        self.vars = vars;
        self.ranges = ranges;
        self.in_definition = inside;
        let body = match body? {
            (body, Closer::End { .. }) => body,
            (_, Closer::Eof) => return Err(error(self.object, line, None, format!("{name:?} without {{{{end}}}}"))),
            (_, Closer::Else { line, .. }) => return Err(error(self.object, line, None, "unexpected {{else}}")),
        };
        match self.defines.get(&name) {
            Some(old) if !is_empty(old) && !is_empty(&body) => {
                Err(error(self.object, line, None, format!("template: multiple definition of template {name:?}")))
            }
            Some(_) if is_empty(&body) => Ok(()),
            _ => {
                self.defines.insert(name, body);
                Ok(())
            }
        }
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

    /// `if` or `with` (`sets_dot`) and its `else`, `else if` and `else with`.
    fn if_node(&mut self, line: usize, toks: &[Tok], sets_dot: bool) -> Result<Node, SpecError> {
        let scope = self.vars.len();
        let node = self.if_node_in_scope(line, toks, sets_dot);
        self.vars.truncate(scope);
        node
    }

    fn if_node_in_scope(&mut self, line: usize, toks: &[Tok], sets_dot: bool) -> Result<Node, SpecError> {
        let word = if sets_dot { "with" } else { "if" };
        let cond = self.pipeline(line, toks, true)?;
        // A variable declared in the condition lives until the {{end}}.
        if let Some(Decl { name, assign: false }) = &cond.decl {
            self.vars.push(name.clone());
        }
        let (then, end) = self.list()?;
        let otherwise = match end {
            Closer::End { .. } => Vec::new(),
            Closer::Eof => return Err(error(self.object, line, None, format!("{word} without {{{{end}}}}"))),
            Closer::Else { line: else_line, toks } if toks.is_empty() => self.until_end(else_line)?,
            // `else if` and `else with` chain into a nested node that shares our end.
            Closer::Else { line: else_line, toks } => match toks.first() {
                Some(Tok::Ident(kw)) if kw == "if" || kw == "with" => {
                    let nested_with = kw == "with";
                    vec![self.nested(|p| p.if_node(else_line, &toks[1..], nested_with), else_line)?]
                }
                _ => {
                    return Err(error(
                        self.object,
                        else_line,
                        None,
                        "else must be followed by nothing, by if or by with",
                    ));
                }
            },
        };
        Ok(Node::If { cond, sets_dot, then, otherwise })
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
        self.ranges += 1;
        let body = self.list();
        self.ranges -= 1;
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
        if let [Tok::Var(v, chain), op @ (Tok::Declare | Tok::Assign), rest @ ..] = toks {
            let assign = *op == Tok::Assign;
            if !allow_decl || !chain.is_empty() || v == "$" {
                return Err(error(self.object, line, None, "a variable can only be declared as {{ $name := ... }}"));
            }
            if assign && !self.vars.contains(v) {
                return Err(error(self.object, line, Some(v.clone()), format!("undefined variable {v}")));
            }
            decl = Some(Decl { name: v.clone(), assign });
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
                    match toks.get(*pos) {
                        Some(Tok::Chain(chain)) => {
                            *pos += 1;
                            Arg::Chain(Box::new(Arg::Paren(inner)), chain.clone())
                        }
                        _ => Arg::Paren(inner),
                    }
                }
                Tok::Chain(_) => return Err(err("a field chain must follow a value".into())),
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
                Tok::Ident(w) if w == "nil" => Arg::Nil,
                Tok::Ident(w) => match function(w) {
                    Some(f) => Arg::Func(f),
                    None if CONTROL_WORDS.contains(&w.as_str()) => {
                        return Err(err(format!("{w:?} can only start an action")));
                    }
                    None => return Err(err(format!("unsupported function {w:?}"))),
                },
                Tok::Declare | Tok::Assign | Tok::Comma => {
                    return Err(err("unexpected :=, = or , in action".into()));
                }
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
            if i > 0 && !matches!(cmd[0], Arg::Func(_) | Arg::Nil) {
                return Err(err("only functions can follow | in a pipeline".into()));
            }
        }
        Ok(Pipeline { line, decl: None, cmds })
    }
}
