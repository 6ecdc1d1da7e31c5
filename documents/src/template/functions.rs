//! The functions a template may call.

use serde_json::Value;

use super::PROBE;
use super::eval::Eval;
use super::value::{Val, as_int, equal, go_quote, kind, known, to_text, truthy};
use crate::SpecError;

/// Every function a template may call: its name and its implementation.
/// The parser resolves a name here (a name not here is refused when the
/// template is applied) and the evaluator calls what it found, so adding a
/// function is one entry.
const TABLE: &[Function] = &[
    Function { name: "index", apply: Apply::Values(index) },
    Function {
        name: "formatPartition",
        apply: Apply::Values(|c| {
            c.arity(2)?;
            let placeholder = || c.string(format!("/dev/{PROBE}1"));
            if c.probe() {
                return placeholder();
            }
            let Val::Json(n) = &c.args[1] else { return placeholder() };
            let Some(n) = as_int(n).and_then(|n| u64::try_from(n).ok()).filter(|n| *n >= 1) else {
                return c.fail(format!("partition must be a number from 1, got {}", to_text(n)));
            };
            let dev = text(&c.args[0]);
            if dev.trim().is_empty() {
                return c.fail("formatPartition needs a device path, got an empty string");
            }
            c.string(format_partition(&dev, n))
        }),
    },
    Function {
        name: "printf",
        apply: Apply::Values(|c| {
            let Some(Val::Json(Value::String(format))) = c.args.first() else {
                return c.fail("printf needs a format string first");
            };
            sprintf(format, &c.args[1..]).map_or_else(|m| c.fail(format!("printf: {m}")), |s| c.string(s))
        }),
    },
    Function {
        name: "len",
        apply: Apply::Values(|c| {
            c.arity(1)?;
            Ok(match &c.args[0] {
                Val::Probe | Val::Deferred(_) => Val::Json(1.into()),
                Val::Json(Value::Array(a)) => Val::Json(a.len().into()),
                Val::Json(Value::Object(m)) => Val::Json(m.len().into()),
                // Go's len counts bytes.
                Val::Json(Value::String(t)) => Val::Json(t.len().into()),
                Val::Json(other) => return c.fail(format!("len of {}", kind(other))),
            })
        }),
    },
    Function {
        name: "default",
        apply: Apply::Values(|c| {
            // Sprig: `default DEFAULT [VALUE]`, the value usually piped in.
            if c.args.is_empty() || c.args.len() > 2 {
                return c.fail(format!("default takes 1 or 2 arguments, got {}", c.args.len()));
            }
            Ok(match c.args.get(1) {
                Some(v) if *v == Val::Probe || truthy(v) => v.clone(),
                _ => c.args[0].clone(),
            })
        }),
    },
    Function {
        name: "quote",
        apply: Apply::Values(|c| {
            // Sprig quotes each argument and joins them with spaces.
            if c.args.is_empty() {
                return c.fail("quote takes at least 1 argument");
            }
            c.string(c.args.iter().map(|a| go_quote(&text(a))).collect::<Vec<_>>().join(" "))
        }),
    },
    Function { name: "lower", apply: Apply::Values(|c| c.string(text(c.one()?).to_lowercase())) },
    Function { name: "upper", apply: Apply::Values(|c| c.string(text(c.one()?).to_uppercase())) },
    Function { name: "trim", apply: Apply::Values(|c| c.string(text(c.one()?).trim().to_string())) },
    Function {
        name: "replace",
        apply: Apply::Values(|c| {
            c.arity(3)?;
            let (from, to, within) = (text(&c.args[0]), text(&c.args[1]), text(&c.args[2]));
            // Each match may grow: bound the result before building it.
            let matches = if from.is_empty() { within.chars().count() + 1 } else { within.matches(&from).count() };
            c.size(within.len().saturating_add(matches.saturating_mul(to.len())))?;
            c.string(within.replace(&from, &to))
        }),
    },
    Function { name: "join", apply: Apply::Values(join) },
    Function { name: "toString", apply: Apply::Values(|c| c.string(text(c.one()?))) },
    Function {
        name: "netmaskToPrefixLength",
        apply: Apply::Values(|c| {
            c.arity(1)?;
            if c.probe() {
                return Ok(Val::Json(24.into()));
            }
            let mask = text(&c.args[0]);
            match prefix_length(&mask) {
                Some(bits) => Ok(Val::Json(bits.into())),
                None => c.fail(format!("{mask:?} is not a dotted IPv4 netmask such as 255.255.255.0")),
            }
        }),
    },
    Function { name: "eq", apply: Apply::Values(|c| compare(c, true)) },
    Function { name: "ne", apply: Apply::Values(|c| compare(c, false)) },
    Function {
        name: "not",
        apply: Apply::Values(|c| {
            let v = c.one()?;
            Ok(if c.probe() { Val::Probe } else { Val::Json((!truthy(v)).into()) })
        }),
    },
    Function { name: "and", apply: Apply::ShortCircuit { stop_at: false } },
    Function { name: "or", apply: Apply::ShortCircuit { stop_at: true } },
];

/// The names of the functions a template may call, read from the table at
/// compile time.
pub const FUNCTIONS: &[&str] = &names();

const fn names() -> [&'static str; TABLE.len()] {
    let mut names = [""; TABLE.len()];
    let mut i = 0;
    while i < TABLE.len() {
        names[i] = TABLE[i].name;
        i += 1;
    }
    names
}

/// The function called `name`, if templates have one.
pub(super) fn function(name: &str) -> Option<&'static Function> {
    TABLE.iter().find(|f| f.name == name)
}

/// One function a template may call.
#[derive(Debug)]
pub(super) struct Function {
    pub name: &'static str,
    pub apply: Apply,
}

/// How a function gets its arguments.
#[derive(Debug, Clone, Copy)]
pub(super) enum Apply {
    /// All of them evaluated, the piped value last; none deferred.
    Values(fn(&Call<'_, '_>) -> Result<Val, SpecError>),
    /// Go's `and`/`or`: evaluated one at a time, stopping at the first
    /// whose truth is `stop_at` (see `Eval::short_circuit`).
    ShortCircuit { stop_at: bool },
}

/// One application of an [`Apply::Values`] function: its arguments and what
/// it needs to report errors and bound sizes.
pub(super) struct Call<'c, 'a> {
    pub eval: &'c Eval<'a>,
    pub line: usize,
    pub name: &'static str,
    pub args: Vec<Val>,
    /// The field or variable each argument was read from, if it was.
    pub descs: Vec<Option<String>>,
}

impl Call<'_, '_> {
    /// An error about the value at `field` (an `index` path, say).
    fn err(&self, field: Option<String>, message: impl Into<String>) -> SpecError {
        self.eval.err(self.line, field, message)
    }

    /// An error about this call, naming the function.
    fn error(&self, message: impl Into<String>) -> SpecError {
        self.err(Some(self.name.to_string()), message)
    }

    fn fail<T>(&self, message: impl Into<String>) -> Result<T, SpecError> {
        Err(self.error(message))
    }

    fn arity(&self, n: usize) -> Result<(), SpecError> {
        if self.args.len() != n {
            let plural = if n == 1 { "" } else { "s" };
            return self.fail(format!("{} takes {n} argument{plural}, got {}", self.name, self.args.len()));
        }
        Ok(())
    }

    /// The only argument of a one-argument function.
    fn one(&self) -> Result<&Val, SpecError> {
        self.arity(1)?;
        Ok(&self.args[0])
    }

    /// True when an argument stands for any data (see [`render_probe`](super::render_probe)).
    fn probe(&self) -> bool {
        self.args.contains(&Val::Probe)
    }

    /// Refuses a result longer than the output limit before it is built.
    fn size(&self, len: usize) -> Result<(), SpecError> {
        self.eval.size(self.line, Some(self.name.to_string()), len)
    }

    /// A string result, within the output limit.
    fn string(&self, s: String) -> Result<Val, SpecError> {
        self.size(s.len())?;
        Ok(Val::Json(Value::String(s)))
    }
}

/// An argument as text: how Go prints it, or the probe placeholder.
fn text(v: &Val) -> String {
    match v {
        Val::Json(j) => to_text(j),
        Val::Probe | Val::Deferred(_) => PROBE.to_string(),
    }
}

/// `index COLLECTION KEY...`: a list item or map value, errors naming the
/// path read so far (`.Hardware.Disks[3]`).
fn index(c: &Call<'_, '_>) -> Result<Val, SpecError> {
    let Some(first) = c.args.first() else { return c.fail("index needs a collection") };
    let mut cur = first.clone();
    let mut path = c.descs.first().cloned().flatten().unwrap_or_else(|| "index".into());
    for key in &c.args[1..] {
        cur = match (cur, key) {
            (Val::Probe | Val::Deferred(_), _) | (_, Val::Probe | Val::Deferred(_)) => Val::Probe,
            (Val::Json(Value::Array(a)), Val::Json(k)) => {
                let Some(i) = as_int(k) else {
                    return Err(c.err(Some(path), format!("index of a list must be an integer, got {}", kind(k))));
                };
                path = format!("{path}[{i}]");
                let item = usize::try_from(i).ok().and_then(|i| a.get(i)).ok_or_else(|| {
                    c.err(Some(path.clone()), format!("index {i} out of range: the list has {} item(s)", a.len()))
                })?;
                Val::Json(item.clone())
            }
            (Val::Json(Value::Object(mut m)), Val::Json(k)) => {
                let k = to_text(k);
                path = format!("{path}[{k:?}]");
                match m.remove(&k) {
                    Some(v) => Val::Json(v),
                    None => return Err(c.err(Some(path), format!("no key {k:?} ({})", known(&m)))),
                }
            }
            (Val::Json(other), _) => return Err(c.err(Some(path), format!("can't index {}", kind(&other)))),
        };
    }
    Ok(cur)
}

/// Sprig's `join SEPARATOR LIST`.
fn join(c: &Call<'_, '_>) -> Result<Val, SpecError> {
    c.arity(2)?;
    let sep = text(&c.args[0]);
    match &c.args[1] {
        Val::Probe | Val::Deferred(_) => c.string(PROBE.into()),
        // Sprig skips nil items.
        Val::Json(Value::Array(a)) => {
            let items: Vec<String> = a.iter().filter(|v| !v.is_null()).map(to_text).collect();
            c.size(items.iter().map(|i| i.len().saturating_add(sep.len())).fold(0usize, usize::saturating_add))?;
            c.string(items.join(&sep))
        }
        Val::Json(Value::String(one)) => c.string(one.clone()),
        Val::Json(other) => c.fail(format!("join needs a list, got {}", kind(other))),
    }
}

/// Go's `eq A B...` (A equals any of the others) and `ne A B`.
fn compare(c: &Call<'_, '_>, eq: bool) -> Result<Val, SpecError> {
    if !eq {
        c.arity(2)?;
    } else if c.args.len() < 2 {
        return c.fail(format!("eq takes at least 2 arguments, got {}", c.args.len()));
    }
    let values: Vec<&Value> = c
        .args
        .iter()
        .filter_map(|v| match v {
            Val::Json(j) => Some(j),
            Val::Probe | Val::Deferred(_) => None,
        })
        .collect();
    if values.len() < c.args.len() {
        return Ok(Val::Probe);
    }
    let mut any = false;
    for other in &values[1..] {
        any |= equal(values[0], other).map_err(|m| c.error(m))?;
    }
    Ok(Val::Json((any == eq).into()))
}

/// Tinkerbell's `formatPartition`, shared with the partition action so that
/// both name the same node.
pub use kiln_partition_path::partition_path as format_partition;

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

/// Widest `printf` padding: a typo such as `%9999999999d` must not allocate
/// gigabytes.
const MAX_WIDTH: usize = 1000;

/// `printf` with `%s %d %v %q %%`, the flags `-` and `0` and a width.
/// Unlike Go, a missing or extra argument, a wrong type for `%d` and an
/// unknown verb are errors instead of `%!d(...)` text in the output.
fn sprintf(format: &str, args: &[Val]) -> Result<String, String> {
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
