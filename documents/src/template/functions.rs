//! The functions a template may call.

use serde_json::Value;

use super::PROBE;
use super::eval::Eval;
use super::value::{Val, as_int, equal, go_quote, kind, known, to_text, truthy};
use crate::SpecError;

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

/// Widest `printf` padding: a typo such as `%9999999999d` must not allocate
/// gigabytes.
const MAX_WIDTH: usize = 1000;

impl Eval<'_> {
    pub(super) fn call(
        &self,
        line: usize,
        name: &str,
        args: Vec<Val>,
        descs: &[Option<String>],
    ) -> Result<Val, SpecError> {
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
