//! Evaluation of a parsed template against data (or the probe).

use std::cell::RefCell;

use serde_json::Value;

use super::functions::{Apply, Call, Function};
use super::parser::{Arg, Decl, MAX_TEMPLATE_CALLS, Node, Pipeline, parse};
use super::value::{Val, kind, known, sorted, to_text, truthy};
use super::{ACTIONS_KEY, DiskContext, PROBE, Rendered, error};
use crate::SpecError;

/// Most commands and range iterations one rendering may evaluate, and the
/// longest output or intermediate string: ranges nested over a short list,
/// or a pipeline that doubles a string at each stage, grow exponentially
/// with the template's length; without a bound they hang the server.
/// Real templates are kilobytes and take a few hundred steps.
const MAX_STEPS: usize = 1_000_000;
const MAX_OUTPUT: usize = 4 << 20;
/// Most values a list or map built by a function may hold (a string counts
/// one per 64 bytes): `concat`, `list` or `dict` of a variable with itself,
/// assigned back in a range, doubles it at each step, which the step bound
/// alone does not stop. Building a value costs steps in proportion too.
/// Real templates build lists of a few disks or a dict of a few keys.
/// Functions that make a list from a string or a count check the same
/// bound before making it (`functions::MAX_ITEMS`).
const MAX_NODES: usize = 1 << 16;
/// Values of a built list or map counted as one step.
const NODES_PER_STEP: usize = 64;

/// Parses `text` and evaluates it with `root` as `.` and `$`.
pub(super) fn evaluate(object: &str, text: &str, root: &Val, disks: DiskContext<'_>) -> Result<Rendered, SpecError> {
    let tree = parse(object, text)?;
    let mut out = Out::default();
    let eval = Eval {
        object,
        root,
        disks,
        vars: RefCell::new(vec![("$".into(), root.clone())]),
        steps: std::cell::Cell::new(0),
        defines: &tree.defines,
        calls: std::cell::Cell::new(0),
        nesting: std::cell::Cell::new(0),
    };
    eval.nodes(&tree.main, root, &mut out)?;
    Ok(Rendered { text: out.text, lines: out.lines, last: text.lines().count().max(1) })
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

pub(super) struct Eval<'a> {
    object: &'a str,
    /// The data itself: `.actions` is deferred only when read from it.
    root: &'a Val,
    /// What `disk` and `rootDisk` resolve against.
    pub(super) disks: DiskContext<'a>,
    /// Variables in scope, innermost last. In a cell because Sprig's `set`
    /// changes the map a variable holds while a pipeline is evaluated.
    vars: RefCell<Vec<(String, Val)>>,
    /// Commands and range iterations evaluated so far (see [`MAX_STEPS`]).
    steps: std::cell::Cell<usize>,
    /// The templates `define` and `block` named.
    defines: &'a std::collections::HashMap<String, Vec<Node>>,
    /// `{{template}}` calls in progress (see [`MAX_TEMPLATE_CALLS`]).
    calls: std::cell::Cell<usize>,
    /// Bodies being evaluated inside each other (see [`MAX_NESTING`]).
    nesting: std::cell::Cell<usize>,
}

/// Deepest nesting of bodies being evaluated, across `{{template}}` calls:
/// what fits a 2 MiB stack (tokio's threads) in a debug build.
const MAX_NESTING: usize = 160;

fn chain_name(prefix: &str, chain: &[String]) -> String {
    if chain.is_empty() && prefix.is_empty() {
        return ".".into();
    }
    if chain.is_empty() {
        return prefix.into();
    }
    format!("{prefix}.{}", chain.join("."))
}

/// What a list of nodes asks of the `range` around it.
#[derive(PartialEq)]
enum Flow {
    Next,
    Break,
    Continue,
}

/// The expression an argument reads, for errors about its value.
fn describe(a: &Arg) -> Option<String> {
    match a {
        Arg::Field(chain) => Some(chain_name("", chain)),
        Arg::Var(name, chain) => Some(chain_name(name, chain)),
        Arg::Chain(inner, chain) => Some(chain_name(&paren_text(inner), chain)),
        _ => None,
    }
}

impl Eval<'_> {
    pub(super) fn err(&self, line: usize, field: Option<String>, m: impl Into<String>) -> SpecError {
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

    /// Counts `n` steps of work done by function `name`.
    fn charge(&self, line: usize, name: &str, n: usize) -> Result<(), SpecError> {
        let total = self.steps.get().saturating_add(n);
        self.steps.set(total.saturating_sub(1));
        self.step(line, || Some(name.to_string()))
    }

    /// Refuses a string longer than [`MAX_OUTPUT`] before it is built.
    pub(super) fn size(&self, line: usize, field: Option<String>, len: usize) -> Result<(), SpecError> {
        if len > MAX_OUTPUT {
            return Err(self.err(line, field, format!("the result would be {len} bytes, more than {MAX_OUTPUT}")));
        }
        Ok(())
    }

    fn nodes(&self, nodes: &[Node], dot: &Val, out: &mut Out) -> Result<Flow, SpecError> {
        // The parser bounds the nesting of one template; calls nest
        // templates in each other, so the bound is kept here too.
        if self.nesting.get() >= MAX_NESTING {
            let line = nodes.iter().find_map(|n| match n {
                Node::Text { line, .. } | Node::Action { line, .. } | Node::Template { line, .. } => Some(*line),
                _ => None,
            });
            return Err(self.err(
                line.unwrap_or(1),
                None,
                format!("if/range/with and {{{{template}}}} calls nested more than {MAX_NESTING} deep"),
            ));
        }
        self.nesting.set(self.nesting.get() + 1);
        let depth = self.vars.borrow().len();
        let result = self.nodes_in_scope(nodes, dot, out);
        self.vars.borrow_mut().truncate(depth);
        self.nesting.set(self.nesting.get() - 1);
        result
    }

    /// Declares or assigns the variable of `decl`.
    fn bind(&self, decl: &Decl, v: Val) {
        let mut vars = self.vars.borrow_mut();
        if decl.assign {
            // The parser checked that the variable exists.
            if let Some(slot) = vars.iter_mut().rev().find(|(n, _)| *n == decl.name) {
                slot.1 = v;
            }
        } else {
            vars.push((decl.name.clone(), v));
        }
    }

    fn nodes_in_scope(&self, nodes: &[Node], dot: &Val, out: &mut Out) -> Result<Flow, SpecError> {
        for node in nodes {
            let flow = match node {
                Node::Text { line, text } => {
                    self.size(*line, None, out.text.len().saturating_add(text.len()))?;
                    out.push(text, *line, true);
                    Flow::Next
                }
                Node::Action { line, pipe } => {
                    let v = self.pipe(pipe, dot)?;
                    if let Some(decl) = &pipe.decl {
                        self.bind(decl, v);
                    } else {
                        let text = self.print(pipe, &v)?;
                        self.size(*line, describe_pipe(pipe), out.text.len().saturating_add(text.len()))?;
                        out.push(&text, *line, false);
                    }
                    Flow::Next
                }
                Node::Break => Flow::Break,
                Node::Continue => Flow::Continue,
                Node::If { cond, sets_dot, then, otherwise } => {
                    let scope = self.vars.borrow().len();
                    let result = self.if_node(cond, *sets_dot, then, otherwise, dot, out);
                    self.vars.borrow_mut().truncate(scope);
                    result?
                }
                Node::Range { line, vars, pipe, body, otherwise } => {
                    self.range(*line, vars, pipe, body, otherwise, dot, out)?;
                    Flow::Next
                }
                Node::Template { line, name, pipe } => {
                    self.call(*line, name, pipe.as_ref(), dot, out)?;
                    Flow::Next
                }
            };
            if flow != Flow::Next {
                return Ok(flow);
            }
        }
        Ok(Flow::Next)
    }

    /// `{{template "name" pipeline}}`: the named template with the value
    /// as `.` and `$`, and none of the caller's variables.
    fn call(
        &self,
        line: usize,
        name: &str,
        pipe: Option<&Pipeline>,
        dot: &Val,
        out: &mut Out,
    ) -> Result<(), SpecError> {
        self.step(line, || Some(format!("template {name:?}")))?;
        let body =
            self.defines.get(name).ok_or_else(|| self.err(line, None, format!("template {name:?} not defined")))?;
        let value = match pipe {
            Some(p) => self.pipe(p, dot)?,
            None => Val::Json(serde_json::Value::Null),
        };
        if self.calls.get() >= MAX_TEMPLATE_CALLS {
            return Err(self.err(
                line,
                None,
                format!("{{{{template}}}} calls nested more than {MAX_TEMPLATE_CALLS} deep"),
            ));
        }
        self.calls.set(self.calls.get() + 1);
        let outer = self.vars.replace(vec![("$".into(), value.clone())]);
        let result = self.nodes(body, &value, out);
        self.vars.replace(outer);
        self.calls.set(self.calls.get() - 1);
        result.map(|_| ())
    }

    fn if_node(
        &self,
        cond: &Pipeline,
        sets_dot: bool,
        then: &[Node],
        otherwise: &[Node],
        dot: &Val,
        out: &mut Out,
    ) -> Result<Flow, SpecError> {
        let v = self.pipe(cond, dot)?;
        if let Some(decl) = &cond.decl {
            self.bind(decl, v.clone());
        }
        let inner = if sets_dot { &v } else { dot };
        // A probe could be anything: check both branches.
        if v == Val::Probe {
            let flow = self.nodes(then, inner, out)?;
            self.nodes(otherwise, dot, &mut Out::default())?;
            Ok(flow)
        } else if truthy(&v) {
            self.nodes(then, inner, out)
        } else {
            self.nodes(otherwise, dot, out)
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn range(
        &self,
        line: usize,
        vars: &[String],
        pipe: &Pipeline,
        body: &[Node],
        otherwise: &[Node],
        dot: &Val,
        out: &mut Out,
    ) -> Result<(), SpecError> {
        let v = self.pipe(pipe, dot)?;
        let items: Vec<(Val, Val)> = match &v {
            Val::Probe | Val::Deferred(_) => vec![(Val::Probe, Val::Probe)],
            Val::Time(_) => {
                return Err(self.err(line, describe_pipe(pipe), "range can't iterate over a time value (time.Time)"));
            }
            Val::Json(Value::Array(a)) => {
                a.iter().enumerate().map(|(i, x)| (Val::Json(i.into()), Val::Json(x.clone()))).collect()
            }
            // Go ranges over a map in key order.
            Val::Json(Value::Object(m)) => {
                sorted(m).into_iter().map(|(k, x)| (Val::Json(k.clone().into()), Val::Json(x.clone()))).collect()
            }
            Val::Json(Value::Null) => Vec::new(),
            Val::Json(other) => {
                return Err(self.err(line, describe_pipe(pipe), format!("range can't iterate over {}", kind(other))));
            }
        };
        if items.is_empty() {
            self.nodes(otherwise, dot, out)?;
        }
        for (key, item) in items {
            self.step(line, || describe_pipe(pipe))?;
            let mark = self.vars.borrow().len();
            match vars {
                [v] => self.vars.borrow_mut().push((v.clone(), item.clone())),
                [k, v] => {
                    let mut scope = self.vars.borrow_mut();
                    scope.push((k.clone(), key));
                    scope.push((v.clone(), item.clone()));
                }
                _ => {}
            }
            let result = self.nodes(body, &item, out);
            self.vars.borrow_mut().truncate(mark);
            if result? == Flow::Break {
                break;
            }
        }
        Ok(())
    }

    fn print(&self, pipe: &Pipeline, v: &Val) -> Result<String, SpecError> {
        Ok(match v {
            Val::Probe => PROBE.to_string(),
            Val::Deferred(expr) => expr.clone(),
            Val::Time(t) => t.string(),
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

    /// True when rendering with the probe (no data at all).
    pub(super) fn probing(&self) -> bool {
        matches!(self.root, Val::Probe)
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
            Arg::Func(f) => Some(f.name.to_string()),
            other => {
                describe(other).or_else(|| Some(pipe_text(&Pipeline { line, decl: None, cmds: vec![cmd.to_vec()] })))
            }
        })?;
        match &cmd[0] {
            Arg::Func(f) => self.apply(line, f, &cmd[1..], dot, prev),
            // Go refuses this when it runs, not when it parses.
            Arg::Nil => Err(self.err(line, Some("nil".into()), "nil is not a command")),
            // The parser lets only functions follow `|`, so there is no
            // piped value to lose here.
            single => self.arg(line, single, dot),
        }
    }

    /// Calls `f` with `args` and the piped value `prev` as its last argument.
    fn apply(&self, line: usize, f: &Function, args: &[Arg], dot: &Val, prev: Option<Val>) -> Result<Val, SpecError> {
        let count = args.len() + usize::from(prev.is_some());
        f.arity.check(f.name, count).map_err(|m| self.err(line, Some(f.name.to_string()), m))?;
        let body = match f.apply {
            Apply::Values(body) => body,
            Apply::ShortCircuit { stop_at } => return self.short_circuit(line, f.name, stop_at, args, dot, prev),
        };
        let mut values = args.iter().map(|a| self.arg(line, a, dot)).collect::<Result<Vec<_>, _>>()?;
        let mut descs: Vec<Option<String>> = args.iter().map(describe).collect();
        let mut nil_ok: Vec<bool> =
            args.iter().map(|a| !matches!(a, Arg::Field(_) | Arg::Var(..) | Arg::Chain(..))).collect();
        let mut int_constants: Vec<bool> =
            args.iter().map(|a| matches!(a, Arg::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e18)).collect();
        if let Some(p) = prev {
            values.push(p);
            descs.push(None);
            nil_ok.push(true);
            int_constants.push(false);
        }
        if let Some(Val::Deferred(expr)) = values.iter().find(|a| matches!(a, Val::Deferred(_))) {
            return Err(self.deferred_argument(line, f.name, expr));
        }
        let result = body(&Call { eval: self, line, name: f.name, args: values, descs, nil_ok, int_constants })?;
        if let Val::Json(v @ (Value::Array(_) | Value::Object(_))) = &result {
            let nodes = weight(v, MAX_NODES);
            if nodes > MAX_NODES {
                return Err(self.err(
                    line,
                    Some(f.name.to_string()),
                    format!("the result would hold more than {MAX_NODES} values"),
                ));
            }
            self.charge(line, f.name, nodes / NODES_PER_STEP)?;
        }
        // Sprig's `set` and `unset` change the map they are given: when it
        // is a variable's, the variable sees the change.
        if let (true, Some(Arg::Var(name, chain))) = (matches!(f.name, "set" | "unset"), args.first())
            && chain.is_empty()
        {
            self.set_var(name, result.clone());
        }
        Ok(result)
    }

    /// Go's `and`/`or` stop at the argument that decides the result:
    /// `and .flag .a.b` does not read `.a.b` when `.flag` is false. A probe
    /// decides nothing, so after one the rest is still evaluated (and checked).
    fn short_circuit(
        &self,
        line: usize,
        name: &str,
        stop_at: bool,
        args: &[Arg],
        dot: &Val,
        prev: Option<Val>,
    ) -> Result<Val, SpecError> {
        let count = args.len() + usize::from(prev.is_some());
        if count < 1 {
            return Err(self.err(line, Some(name.to_string()), format!("{name} takes at least 1 argument")));
        }
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
            } else if truthy(&v) == stop_at && !saw_probe {
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
                let base = self
                    .var(name)
                    .ok_or_else(|| self.err(line, Some(name.clone()), format!("undefined variable {name}")))?;
                self.walk(line, &base, chain, name, name == "$")
            }
            Arg::Nil => Ok(Val::Json(Value::Null)),
            Arg::Chain(inner, chain) => {
                let base = self.arg(line, inner, dot)?;
                self.walk(line, &base, chain, &paren_text(inner), false)
            }
            Arg::Str(s) => Ok(Val::Json(Value::String(s.clone()))),
            Arg::Int(n) => Ok(Val::Json((*n).into())),
            Arg::Float(f) => Ok(Val::Json((*f).into())),
            Arg::Bool(b) => Ok(Val::Json((*b).into())),
            Arg::Func(f) => self.apply(line, f, &[], dot, None),
            Arg::Paren(p) => self.pipe(p, dot),
        }
    }

    /// The value of variable `name`.
    pub(super) fn var(&self, name: &str) -> Option<Val> {
        self.vars.borrow().iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.clone())
    }

    /// Gives variable `name` a new value (Sprig's `set` changes the map a
    /// variable holds).
    pub(super) fn set_var(&self, name: &str, v: Val) {
        if let Some(slot) = self.vars.borrow_mut().iter_mut().rev().find(|(n, _)| n == name) {
            slot.1 = v;
        }
    }

    fn walk(&self, line: usize, base: &Val, chain: &[String], prefix: &str, at_root: bool) -> Result<Val, SpecError> {
        if let (Val::Time(t), Some((method, rest))) = (base, chain.split_first()) {
            let here = chain_name(prefix, &chain[..1]);
            let value = super::functions::time_method(t, method)
                .map_err(|m| self.err(line, Some(here.clone()), format!("{here}: {m}")))?;
            return self.walk(line, &value, rest, &here, false);
        }
        let Val::Json(data) = base else {
            // A probe stands for any data, and a deferred value for data to
            // come; a time value is itself when no method is called.
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

/// `(pipeline)` as written, to name a field chain read from it.
fn paren_text(a: &Arg) -> String {
    match a {
        Arg::Paren(p) => format!("({})", pipe_text(p)),
        other => describe(other).unwrap_or_default(),
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
                    Arg::Nil => "nil".to_string(),
                    Arg::Func(f) => f.name.to_string(),
                    Arg::Paren(inner) => format!("({})", pipe_text(inner)),
                    Arg::Chain(..) => describe(a).unwrap_or_default(),
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    cmds.join(" | ")
}

/// The number of values in `v` (a string counts one more per 64 bytes),
/// counting no further than just past `limit`.
fn weight(v: &Value, limit: usize) -> usize {
    let mut count = 0;
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        count += 1;
        match v {
            Value::Array(a) => stack.extend(a.iter()),
            Value::Object(m) => {
                count += m.keys().map(|k| k.len() / 64).sum::<usize>();
                stack.extend(m.values());
            }
            Value::String(s) => count += s.len() / 64,
            _ => {}
        }
        if count > limit {
            break;
        }
    }
    count
}
