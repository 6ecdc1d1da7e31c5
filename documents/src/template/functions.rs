//! The functions a template may call.

use serde_json::Value;

use super::PROBE;
use super::decimal::{DecOp, Decimal};
use super::encoding::{base32_decode, base32_encode, floats, go_json, go_json_raw, sha1, to_yaml};
use super::eval::Eval;
use super::gostd::{
    go_regex_split, go_split, html_escape, js_escape, path_base, path_clean, path_dir, path_ext, query_escape, title,
};
use super::gourl;
use super::printf::{MAX_WIDTH, sprintf};
use super::semver::{parse_version, semver_compare};
use super::value::{
    Val, as_int, equal, go_float, go_kind, go_quote, go_type, kind, less, parse_go_int, to_text, truthy,
};
use super::words;
use crate::SpecError;

/// Why `duration` and `durationRound` refuse an integer: Sprig reads an
/// `int64` (what its arithmetic returns, and `.Hardware`'s `LeaseTime`) and
/// gives `0s` for an `int` (a constant, most data); kiln has one integer
/// type, so either answer could be the wrong one.
const INT_DURATION: &str = "takes a string here (\"90\", \"1h30m\"): Sprig reads an int64 but gives 0s for an int, \
     and kiln does not tell them apart";

/// Every function a template may call: its name and its implementation.
/// The parser resolves a name here (a name not here is refused when the
/// template is applied) and the evaluator calls what it found, so adding a
/// function is one entry.
const TABLE: &[Function] = &[
    Function { name: "index", arity: Arity::AtLeast(1), apply: Apply::Values(index) },
    Function {
        name: "formatPartition",
        arity: Arity::Exactly(2),
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
            let dev = c.str(0)?;
            if dev.trim().is_empty() {
                return c.fail("formatPartition needs a device path, got an empty string");
            }
            c.string(format_partition(&dev, n))
        }),
    },
    Function {
        name: "disk",
        arity: Arity::Exactly(1),
        apply: Apply::Values(|c| {
            c.arity(1)?;
            probe!(c);
            let hint = crate::hints::DiskHint::from_json(&c.json1()?).map_err(|e| match &e.field {
                Some(k) => c.err(Some(format!("disk.{k}")), format!("disk hint {k}: {}", e.message)),
                None => c.error(format!("disk: {}", e.message)),
            })?;
            if c.eval.probing() {
                return Ok(Val::Probe);
            }
            disk_path(c, &hint)
        }),
    },
    Function {
        name: "rootDisk",
        arity: Arity::Exactly(0),
        apply: Apply::Values(|c| {
            c.arity(0)?;
            if c.eval.probing() {
                return Ok(Val::Probe);
            }
            let Some(hint) = c.eval.disks.root_disk else {
                return c.fail("rootDisk: the hardware has no root_disk (a disk hint in its Hardware document)");
            };
            disk_path(c, hint)
        }),
    },
    Function {
        name: "printf",
        arity: Arity::AtLeast(1),
        apply: Apply::Values(|c| {
            let Some(Val::Json(Value::String(format))) = c.args.first() else {
                return c.fail("printf needs a format string first");
            };
            sprintf(format, &c.args[1..]).map_or_else(|m| c.fail(format!("printf: {m}")), |s| c.string(s))
        }),
    },
    Function {
        name: "len",
        arity: Arity::Exactly(1),
        apply: Apply::Values(|c| {
            c.arity(1)?;
            Ok(match &c.args[0] {
                Val::Probe | Val::Deferred(_) => Val::Json(1.into()),
                Val::Time(_) => return c.fail("len of type time.Time"),
                Val::Json(Value::Array(a)) => Val::Json(a.len().into()),
                Val::Json(Value::Object(m)) => Val::Json(m.len().into()),
                // Go's len counts bytes.
                Val::Json(Value::String(t)) => Val::Json(t.len().into()),
                Val::Json(Value::Null) => return c.fail("len of nil"),
                Val::Json(other) => return c.fail(format!("len of {}", kind(other))),
            })
        }),
    },
    Function {
        name: "default",
        arity: Arity::AtLeast(1),
        apply: Apply::Values(|c| {
            // Sprig: `default DEFAULT [VALUE...]`, the value usually piped
            // in; only the first value counts.
            if c.args.is_empty() {
                return c.fail("default takes at least 1 argument");
            }
            Ok(match c.args.get(1) {
                Some(v) if *v == Val::Probe || truthy(v) => v.clone(),
                _ => c.args[0].clone(),
            })
        }),
    },
    Function {
        name: "quote",
        arity: Arity::AtLeast(0),
        apply: Apply::Values(|c| {
            // Sprig quotes each argument but nil, and joins them with spaces.
            c.string(c.args.iter().filter(|a| !is_nil(a)).map(|a| go_quote(&text(a))).collect::<Vec<_>>().join(" "))
        }),
    },
    Function {
        name: "duration",
        arity: Arity::Exactly(1),
        apply: Apply::Values(|c| {
            // Sprig: seconds as a string or an int64; anything else is 0.
            let seconds = match c.one()? {
                Val::Probe | Val::Deferred(_) => return Ok(Val::Probe),
                Val::Time(_) => 0,
                Val::Json(Value::String(s)) => super::duration::parse_seconds(s),
                Val::Json(n @ Value::Number(_)) if as_int(n).is_some() => return c.fail(INT_DURATION),
                Val::Json(_) => 0,
            };
            c.string(super::duration::to_string(seconds.wrapping_mul(1_000_000_000)))
        }),
    },
    Function {
        name: "durationRound",
        arity: Arity::Exactly(1),
        apply: Apply::Values(|c| {
            // Sprig: a string Go's time.ParseDuration reads (else 0), or
            // nanoseconds as an int64.
            let nanos = match c.one()? {
                Val::Probe | Val::Deferred(_) => return Ok(Val::Probe),
                // Sprig takes the time since then: the clock decides.
                Val::Time(_) => return c.fail("durationRound of a time depends on the clock: kiln refuses it"),
                Val::Json(Value::String(s)) => super::duration::parse(s).unwrap_or(0),
                Val::Json(n @ Value::Number(_)) if as_int(n).is_some() => return c.fail(INT_DURATION),
                Val::Json(_) => 0,
            };
            c.string(super::duration::round(nanos))
        }),
    },
    Function {
        name: "semverCompare",
        arity: Arity::Exactly(2),
        apply: Apply::Values(|c| {
            c.arity(2)?;
            let (constraint, version) = (c.str(0)?, c.str(1)?);
            probe!(c);
            semver_compare(&constraint, &version).map_or_else(|m| c.fail(m), |b| Ok(bool_val(b)))
        }),
    },
    Function {
        name: "semver",
        arity: Arity::Exactly(1),
        apply: Apply::Values(|c| {
            let version = c.str1()?;
            probe!(c);
            // Go's *semver.Version, whose methods a template reads like
            // fields (`(semver .v).Major`); kiln's is a map of them.
            let v = parse_version(&version).map_err(|m| c.error(m))?;
            Ok(Val::Json(serde_json::json!({
                "Major": v.major, "Minor": v.minor, "Patch": v.patch,
                "Prerelease": v.pre, "Metadata": v.metadata, "Original": v.original,
            })))
        }),
    },
    Function { name: "lower", arity: Arity::Exactly(1), apply: Apply::Values(|c| c.string(c.str1()?.to_lowercase())) },
    Function { name: "upper", arity: Arity::Exactly(1), apply: Apply::Values(|c| c.string(c.str1()?.to_uppercase())) },
    Function {
        name: "trim",
        arity: Arity::Exactly(1),
        apply: Apply::Values(|c| c.string(c.str1()?.trim().to_string())),
    },
    Function {
        name: "replace",
        arity: Arity::Exactly(3),
        apply: Apply::Values(|c| {
            c.arity(3)?;
            let (from, to, within) = (c.str(0)?, c.str(1)?, c.str(2)?);
            // Each match may grow: bound the result before building it.
            let matches = if from.is_empty() { within.chars().count() + 1 } else { within.matches(&from).count() };
            c.size(within.len().saturating_add(matches.saturating_mul(to.len())))?;
            c.string(within.replace(&from, &to))
        }),
    },
    Function { name: "join", arity: Arity::Exactly(2), apply: Apply::Values(join) },
    Function { name: "toString", arity: Arity::Exactly(1), apply: Apply::Values(|c| c.string(text(c.one()?))) },
    Function { name: "lt", arity: Arity::Exactly(2), apply: Apply::Values(|c| order(c, |lt, _| lt)) },
    Function { name: "le", arity: Arity::Exactly(2), apply: Apply::Values(|c| order(c, |lt, eq| lt || eq)) },
    Function { name: "gt", arity: Arity::Exactly(2), apply: Apply::Values(|c| order(c, |lt, eq| !lt && !eq)) },
    Function { name: "ge", arity: Arity::Exactly(2), apply: Apply::Values(|c| order(c, |lt, _| !lt)) },
    Function { name: "print", arity: Arity::AtLeast(0), apply: Apply::Values(|c| c.string(sprint(&c.args))) },
    Function {
        name: "println",
        arity: Arity::AtLeast(0),
        apply: Apply::Values(|c| {
            let items: Vec<String> = c.args.iter().map(text).collect();
            c.string(items.join(" ") + "\n")
        }),
    },
    Function {
        name: "html",
        arity: Arity::AtLeast(0),
        apply: Apply::Values(|c| c.string(html_escape(&escaper_input(c)?))),
    },
    Function {
        name: "js",
        arity: Arity::AtLeast(0),
        apply: Apply::Values(|c| c.string(js_escape(&escaper_input(c)?))),
    },
    Function {
        name: "urlquery",
        arity: Arity::AtLeast(0),
        apply: Apply::Values(|c| c.string(query_escape(&escaper_input(c)?))),
    },
    // Sprig, as its hermetic text function map defines them.
    Function { name: "slice", arity: Arity::AtLeast(1), apply: Apply::Values(sprig_slice) },
    Function {
        name: "regexMatch",
        arity: Arity::Exactly(2),
        apply: Apply::Values(|c| {
            c.arity(2)?;
            probe!(c);
            Ok(bool_val(c.regex(0)?.is_match(&c.str(1)?)))
        }),
    },
    Function {
        name: "regexFind",
        arity: Arity::Exactly(2),
        apply: Apply::Values(|c| {
            c.arity(2)?;
            probe!(c);
            let s = c.str(1)?;
            c.string(c.regex(0)?.find(&s).map(|m| m.as_str().to_string()).unwrap_or_default())
        }),
    },
    Function {
        name: "regexFindAll",
        arity: Arity::Exactly(3),
        apply: Apply::Values(|c| {
            c.arity(3)?;
            probe!(c);
            let (s, n) = (c.str(1)?, c.int(2)?);
            let re = c.regex(0)?;
            let limit = if n < 0 { usize::MAX } else { usize::try_from(n).unwrap_or(usize::MAX) };
            let found = re.find_iter(&s).take(limit.min(MAX_ITEMS + 1)).map(|m| Value::String(m.as_str().to_string()));
            Ok(Val::Json(Value::Array(found.collect())))
        }),
    },
    Function {
        name: "regexReplaceAll",
        arity: Arity::Exactly(3),
        apply: Apply::Values(|c| {
            c.arity(3)?;
            probe!(c);
            let (s, with) = (c.str(1)?, c.str(2)?);
            let out = c.regex(0)?.replace_all(&s, with.as_str()).into_owned();
            c.string(out)
        }),
    },
    Function {
        name: "splitList",
        arity: Arity::Exactly(2),
        apply: Apply::Values(|c| {
            c.arity(2)?;
            probe!(c);
            let (s, sep) = (c.str(1)?, c.str(0)?);
            c.items(split_count(&s, &sep))?;
            Ok(Val::Json(Value::Array(go_split(&s, &sep).into_iter().map(Value::String).collect())))
        }),
    },
    Function {
        name: "split",
        arity: Arity::Exactly(2),
        apply: Apply::Values(|c| {
            c.arity(2)?;
            probe!(c);
            let (s, sep) = (c.str(1)?, c.str(0)?);
            c.items(split_count(&s, &sep))?;
            let parts = go_split(&s, &sep);
            let m = parts.into_iter().enumerate().map(|(i, p)| (format!("_{i}"), Value::String(p))).collect();
            Ok(Val::Json(Value::Object(m)))
        }),
    },
    Function {
        name: "hasPrefix",
        arity: Arity::Exactly(2),
        apply: Apply::Values(|c| strings2(c, |a, b| bool_val(b.starts_with(a)))),
    },
    Function {
        name: "hasSuffix",
        arity: Arity::Exactly(2),
        apply: Apply::Values(|c| strings2(c, |a, b| bool_val(b.ends_with(a)))),
    },
    Function {
        name: "contains",
        arity: Arity::Exactly(2),
        apply: Apply::Values(|c| strings2(c, |a, b| bool_val(b.contains(a)))),
    },
    Function {
        name: "trimPrefix",
        arity: Arity::Exactly(2),
        apply: Apply::Values(|c| strings2(c, |a, b| str_val(b.strip_prefix(a).unwrap_or(b)))),
    },
    Function {
        name: "trimSuffix",
        arity: Arity::Exactly(2),
        apply: Apply::Values(|c| strings2(c, |a, b| str_val(b.strip_suffix(a).unwrap_or(b)))),
    },
    Function {
        name: "trimAll",
        arity: Arity::Exactly(2),
        apply: Apply::Values(|c| strings2(c, |a, b| str_val(b.trim_matches(|ch| a.contains(ch))))),
    },
    Function { name: "title", arity: Arity::Exactly(1), apply: Apply::Values(|c| c.string(title(&c.str1()?))) },
    Function {
        name: "nospace",
        arity: Arity::Exactly(1),
        apply: Apply::Values(|c| c.string(c.str1()?.chars().filter(|ch| !ch.is_whitespace()).collect())),
    },
    Function {
        name: "repeat",
        arity: Arity::Exactly(2),
        apply: Apply::Values(|c| {
            c.arity(2)?;
            probe!(c);
            let (n, s) = (c.int(0)?, c.str(1)?);
            let n = usize::try_from(n).map_err(|_| c.error("repeat count must not be negative"))?;
            c.size(s.len().saturating_mul(n))?;
            c.string(s.repeat(n))
        }),
    },
    Function {
        name: "substr",
        arity: Arity::Exactly(3),
        apply: Apply::Values(|c| {
            c.arity(3)?;
            probe!(c);
            let (start, end, s) = (c.int(0)?, c.int(1)?, c.str(2)?);
            // Sprig slices bytes; where Go's slicing panics, an error.
            let len = s.len() as i64;
            let (from, to) = if start < 0 {
                (0, end)
            } else if end < 0 || end > len {
                (start, len)
            } else {
                (start, end)
            };
            if from > to || to > len || to < 0 {
                return c.fail(format!("slice bounds out of range [{from}:{to}] with length {len}"));
            }
            c.string(String::from_utf8_lossy(&s.as_bytes()[from as usize..to as usize]).into_owned())
        }),
    },
    Function {
        name: "trunc",
        arity: Arity::Exactly(2),
        apply: Apply::Values(|c| {
            c.arity(2)?;
            probe!(c);
            let (n, s) = (c.int(0)?, c.str(1)?);
            let len = s.len() as i64;
            let out = if n < 0 && len + n > 0 {
                &s.as_bytes()[(len + n) as usize..]
            } else if n >= 0 && len > n {
                &s.as_bytes()[..n as usize]
            } else {
                s.as_bytes()
            };
            c.string(String::from_utf8_lossy(out).into_owned())
        }),
    },
    Function {
        name: "abbrev",
        arity: Arity::Exactly(2),
        apply: Apply::Values(|c| {
            c.arity(2)?;
            probe!(c);
            let (width, s) = (c.int(0)?, c.str(1)?);
            if width < 4 || s.len() as i64 <= width {
                return c.string(s);
            }
            c.string(format!("{}...", String::from_utf8_lossy(&s.as_bytes()[..(width - 3) as usize])))
        }),
    },
    Function {
        name: "abbrevboth",
        arity: Arity::Exactly(3),
        apply: Apply::Values(|c| {
            c.arity(3)?;
            probe!(c);
            c.string(words::abbrev_both(c.int(0)?, c.int(1)?, &c.str(2)?))
        }),
    },
    Function {
        name: "camelcase",
        arity: Arity::Exactly(1),
        apply: Apply::Values(|c| c.string(words::camel_case(&c.str1()?))),
    },
    Function {
        name: "snakecase",
        arity: Arity::Exactly(1),
        apply: Apply::Values(|c| c.string(words::snake_case(&c.str1()?))),
    },
    Function {
        name: "kebabcase",
        arity: Arity::Exactly(1),
        apply: Apply::Values(|c| c.string(words::kebab_case(&c.str1()?))),
    },
    Function {
        name: "wrap",
        arity: Arity::Exactly(2),
        apply: Apply::Values(|c| {
            c.arity(2)?;
            probe!(c);
            c.string(words::wrap(&c.str(1)?, c.int(0)?, "", false))
        }),
    },
    Function {
        name: "wrapWith",
        arity: Arity::Exactly(3),
        apply: Apply::Values(|c| {
            c.arity(3)?;
            probe!(c);
            c.string(words::wrap(&c.str(2)?, c.int(0)?, &c.str(1)?, true))
        }),
    },
    Function {
        name: "urlParse",
        arity: Arity::Exactly(1),
        apply: Apply::Values(|c| {
            let raw = c.str1()?;
            probe!(c);
            let parts = gourl::url_parse(&raw).map_err(|e| c.error(e))?;
            Ok(Val::Json(Value::Object(parts.into_iter().map(|(k, v)| (k.to_string(), Value::String(v))).collect())))
        }),
    },
    Function {
        name: "urlJoin",
        arity: Arity::Exactly(1),
        apply: Apply::Values(|c| {
            c.arity(1)?;
            probe!(c);
            let d = c.map(0)?;
            // Sprig's dictGetOrEmpty: a missing key is "", any other kind
            // than a string (nil too) an error.
            let part = |key: &str| match d.get(key) {
                None => Ok(""),
                Some(Value::String(s)) => Ok(s.as_str()),
                Some(other) => {
                    c.fail(format!("unable to parse {key} key, must be of type string, but {} found", go_kind(other)))
                }
            };
            let parts = gourl::Parts {
                scheme: part("scheme")?,
                host: part("host")?,
                path: part("path")?,
                query: part("query")?,
                opaque: part("opaque")?,
                fragment: part("fragment")?,
                userinfo: part("userinfo")?,
            };
            c.string(gourl::url_join(&parts).map_err(|e| c.error(e))?)
        }),
    },
    Function {
        name: "squote",
        arity: Arity::AtLeast(0),
        apply: Apply::Values(|c| {
            let items: Vec<String> = c.args.iter().filter(|v| !is_nil(v)).map(|v| format!("'{}'", text(v))).collect();
            c.string(items.join(" "))
        }),
    },
    Function {
        name: "cat",
        arity: Arity::AtLeast(0),
        apply: Apply::Values(|c| {
            let items: Vec<String> = c.args.iter().filter(|v| !is_nil(v)).map(text).collect();
            c.string(items.join(" "))
        }),
    },
    Function {
        name: "indent",
        arity: Arity::Exactly(2),
        apply: Apply::Values(|c| {
            c.arity(2)?;
            probe!(c);
            c.string(indent(c, c.int(0)?, &c.str(1)?)?)
        }),
    },
    Function {
        name: "nindent",
        arity: Arity::Exactly(2),
        apply: Apply::Values(|c| {
            c.arity(2)?;
            probe!(c);
            c.string(format!("\n{}", indent(c, c.int(0)?, &c.str(1)?)?))
        }),
    },
    Function {
        name: "b64enc",
        arity: Arity::Exactly(1),
        apply: Apply::Values(|c| {
            use base64::Engine;
            c.string(base64::engine::general_purpose::STANDARD.encode(c.str1()?))
        }),
    },
    Function {
        name: "b64dec",
        arity: Arity::Exactly(1),
        apply: Apply::Values(|c| {
            use base64::Engine;
            let s = c.str1()?;
            if c.probe() {
                return Ok(Val::Probe);
            }
            // Sprig returns the error's text as the result; kiln refuses it.
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(&s)
                .map_err(|e| c.error(format!("{s:?} is not base64: {e}")))?;
            c.string(String::from_utf8_lossy(&bytes).into_owned())
        }),
    },
    Function {
        name: "atoi",
        arity: Arity::Exactly(1),
        apply: Apply::Values(|c| Ok(int_val(c.str1()?.parse::<i64>().unwrap_or(0)))),
    },
    Function { name: "int", arity: Arity::Exactly(1), apply: Apply::Values(|c| Ok(int_val(to_int64(c.one()?)))) },
    Function { name: "int64", arity: Arity::Exactly(1), apply: Apply::Values(|c| Ok(int_val(to_int64(c.one()?)))) },
    Function {
        name: "float64",
        arity: Arity::Exactly(1),
        apply: Apply::Values(|c| Ok(Val::Json(Value::from(to_float64(c.one()?))))),
    },
    Function { name: "add", arity: Arity::AtLeast(0), apply: Apply::Values(|c| arith(c, 0, |a, b| a.checked_add(b))) },
    Function {
        name: "add1",
        arity: Arity::Exactly(1),
        apply: Apply::Values(|c| Ok(int_val(to_int64(c.one()?).wrapping_add(1)))),
    },
    Function { name: "sub", arity: Arity::Exactly(2), apply: Apply::Values(|c| arith2(c, |a, b| a.checked_sub(b))) },
    Function { name: "mul", arity: Arity::AtLeast(1), apply: Apply::Values(|c| arith(c, 1, |a, b| a.checked_mul(b))) },
    Function { name: "div", arity: Arity::Exactly(2), apply: Apply::Values(|c| arith2(c, |a, b| a.checked_div(b))) },
    Function { name: "mod", arity: Arity::Exactly(2), apply: Apply::Values(|c| arith2(c, |a, b| a.checked_rem(b))) },
    Function { name: "max", arity: Arity::AtLeast(1), apply: Apply::Values(|c| extreme(c, std::cmp::max)) },
    Function { name: "min", arity: Arity::AtLeast(1), apply: Apply::Values(|c| extreme(c, std::cmp::min)) },
    Function {
        name: "until",
        arity: Arity::Exactly(1),
        apply: Apply::Values(|c| {
            let n = {
                c.arity(1)?;
                probe!(c);
                c.int(0)?
            };
            let range = until_step(c, 0, n, if n < 0 { -1 } else { 1 })?;
            Ok(Val::Json(Value::Array(range.into_iter().map(Value::from).collect())))
        }),
    },
    Function { name: "seq", arity: Arity::AtLeast(0), apply: Apply::Values(seq) },
    Function {
        name: "list",
        arity: Arity::AtLeast(0),
        apply: Apply::Values(|c| {
            probe!(c);
            Ok(Val::Json(Value::Array(c.json_args())))
        }),
    },
    Function {
        name: "first",
        arity: Arity::Exactly(1),
        apply: Apply::Values(|c| list_fn(c, |l| Some(l.first().cloned().unwrap_or(Value::Null)))),
    },
    Function {
        name: "last",
        arity: Arity::Exactly(1),
        apply: Apply::Values(|c| list_fn(c, |l| Some(l.last().cloned().unwrap_or(Value::Null)))),
    },
    Function {
        name: "rest",
        arity: Arity::Exactly(1),
        // An empty list gives Sprig's nil []interface{}, which prints as [].
        apply: Apply::Values(|c| list_fn(c, |l| Some(Value::Array(l.get(1..).unwrap_or_default().to_vec())))),
    },
    Function {
        name: "initial",
        arity: Arity::Exactly(1),
        apply: Apply::Values(|c| {
            list_fn(c, |l| Some(Value::Array(l.get(..l.len().saturating_sub(1)).unwrap_or_default().to_vec())))
        }),
    },
    Function {
        name: "reverse",
        arity: Arity::Exactly(1),
        apply: Apply::Values(|c| list_fn(c, |l| Some(Value::Array(l.iter().rev().cloned().collect())))),
    },
    Function {
        name: "uniq",
        arity: Arity::Exactly(1),
        apply: Apply::Values(|c| {
            list_fn(c, |l| {
                let mut out: Vec<Value> = Vec::new();
                for v in l {
                    if !out.contains(v) {
                        out.push(v.clone());
                    }
                }
                Some(Value::Array(out))
            })
        }),
    },
    Function {
        name: "compact",
        arity: Arity::Exactly(1),
        apply: Apply::Values(|c| list_fn(c, |l| Some(Value::Array(l.iter().filter(|v| !empty(v)).cloned().collect())))),
    },
    Function {
        name: "sortAlpha",
        arity: Arity::Exactly(1),
        apply: Apply::Values(|c| {
            c.arity(1)?;
            probe!(c);
            // Not strslice: anything but a list, nil too, is one item.
            let mut items = match c.json(0) {
                list @ Value::Array(_) => strslice(&list),
                other => vec![to_text(&other)],
            };
            items.sort();
            Ok(Val::Json(Value::Array(items.into_iter().map(Value::String).collect())))
        }),
    },
    Function {
        name: "has",
        arity: Arity::Exactly(2),
        apply: Apply::Values(|c| {
            c.arity(2)?;
            probe!(c);
            match c.json(1) {
                Value::Null => Ok(bool_val(false)),
                Value::Array(l) => Ok(bool_val(l.contains(&c.json(0)))),
                other => c.fail(format!("cannot find has on type {}", kind(&other))),
            }
        }),
    },
    Function {
        name: "without",
        arity: Arity::AtLeast(1),
        apply: Apply::Values(|c| {
            if c.args.is_empty() {
                return c.fail("without needs a list");
            }
            probe!(c);
            let omit: Vec<Value> = c.json_args().split_off(1);
            match c.json(0) {
                Value::Array(l) => Ok(Val::Json(Value::Array(l.into_iter().filter(|v| !omit.contains(v)).collect()))),
                other => c.fail(format!("cannot find without on type {}", kind(&other))),
            }
        }),
    },
    Function { name: "append", arity: Arity::Exactly(2), apply: Apply::Values(push) },
    Function { name: "push", arity: Arity::Exactly(2), apply: Apply::Values(push) },
    Function {
        name: "concat",
        arity: Arity::AtLeast(0),
        apply: Apply::Values(|c| {
            probe!(c);
            let mut out = Vec::new();
            for v in c.json_args() {
                match v {
                    Value::Array(l) => out.extend(l),
                    other => return c.fail(format!("cannot concat type {} as list", kind(&other))),
                }
            }
            Ok(Val::Json(Value::Array(out)))
        }),
    },
    Function {
        name: "dict",
        arity: Arity::AtLeast(0),
        apply: Apply::Values(|c| {
            probe!(c);
            let args = c.json_args();
            let mut m = serde_json::Map::new();
            for pair in args.chunks(2) {
                let value = pair.get(1).cloned().unwrap_or_else(|| Value::String(String::new()));
                m.insert(to_text(&pair[0]), value);
            }
            Ok(Val::Json(Value::Object(m)))
        }),
    },
    Function {
        name: "get",
        arity: Arity::Exactly(2),
        apply: Apply::Values(|c| {
            c.arity(2)?;
            probe!(c);
            let (m, k) = (c.map(0)?, c.str(1)?);
            Ok(Val::Json(m.get(&k).cloned().unwrap_or_else(|| Value::String(String::new()))))
        }),
    },
    Function {
        name: "set",
        arity: Arity::Exactly(3),
        apply: Apply::Values(|c| {
            c.arity(3)?;
            probe!(c);
            if is_nil(&c.args[0]) {
                return c.fail("assignment to entry in nil map");
            }
            let (mut m, k) = (c.map(0)?, c.str(1)?);
            m.insert(k, c.json(2));
            Ok(Val::Json(Value::Object(m)))
        }),
    },
    Function {
        name: "unset",
        arity: Arity::Exactly(2),
        apply: Apply::Values(|c| {
            c.arity(2)?;
            probe!(c);
            let (mut m, k) = (c.map(0)?, c.str(1)?);
            m.remove(&k);
            Ok(Val::Json(Value::Object(m)))
        }),
    },
    Function {
        name: "hasKey",
        arity: Arity::Exactly(2),
        apply: Apply::Values(|c| {
            c.arity(2)?;
            probe!(c);
            Ok(bool_val(c.map(0)?.contains_key(&c.str(1)?)))
        }),
    },
    Function {
        name: "keys",
        arity: Arity::AtLeast(0),
        apply: Apply::Values(|c| {
            probe!(c);
            let mut keys = Vec::new();
            for i in 0..c.args.len() {
                keys.extend(c.map(i)?.keys().cloned().map(Value::String));
            }
            Ok(Val::Json(Value::Array(keys)))
        }),
    },
    Function {
        name: "values",
        arity: Arity::Exactly(1),
        apply: Apply::Values(|c| {
            c.arity(1)?;
            probe!(c);
            Ok(Val::Json(Value::Array(c.map(0)?.values().cloned().collect())))
        }),
    },
    Function { name: "pick", arity: Arity::AtLeast(1), apply: Apply::Values(|c| pick(c, true)) },
    Function { name: "omit", arity: Arity::AtLeast(1), apply: Apply::Values(|c| pick(c, false)) },
    Function {
        name: "merge",
        arity: Arity::AtLeast(1),
        apply: Apply::Values(|c| {
            if c.args.is_empty() {
                return c.fail("merge needs a destination map");
            }
            probe!(c);
            let mut dst = c.map(0)?;
            for i in 1..c.args.len() {
                merge_into(&mut dst, &c.map(i)?);
            }
            Ok(Val::Json(Value::Object(dst)))
        }),
    },
    Function { name: "dig", arity: Arity::AtLeast(0), apply: Apply::Values(dig) },
    Function { name: "empty", arity: Arity::Exactly(1), apply: Apply::Values(|c| Ok(bool_val(empty(&c.json1()?)))) },
    Function {
        name: "coalesce",
        arity: Arity::AtLeast(0),
        apply: Apply::Values(|c| {
            probe!(c);
            Ok(Val::Json(c.json_args().into_iter().find(|v| !empty(v)).unwrap_or(Value::Null)))
        }),
    },
    Function {
        name: "ternary",
        arity: Arity::Exactly(3),
        apply: Apply::Values(|c| {
            c.arity(3)?;
            probe!(c);
            match c.json(2) {
                Value::Bool(b) => Ok(c.args[if b { 0 } else { 1 }].clone()),
                other => c.fail(format!("wrong type for value; expected bool; got {}", go_type(&other))),
            }
        }),
    },
    Function {
        name: "toJson",
        arity: Arity::Exactly(1),
        apply: Apply::Values(|c| {
            if c.time_json_fails() {
                return c.string(String::new());
            }
            c.string(go_json(&c.json1()?, None))
        }),
    },
    Function {
        name: "toPrettyJson",
        arity: Arity::Exactly(1),
        apply: Apply::Values(|c| {
            if c.time_json_fails() {
                return c.string(String::new());
            }
            c.string(go_json(&c.json1()?, Some(0)))
        }),
    },
    Function {
        name: "fromJson",
        arity: Arity::Exactly(1),
        apply: Apply::Values(|c| {
            let s = c.str1()?;
            probe!(c);
            // Sprig returns nil for bad JSON.
            let v = serde_json::from_str::<Value>(&s).map(floats).unwrap_or(Value::Null);
            Ok(Val::Json(v))
        }),
    },
    Function {
        name: "toYaml",
        arity: Arity::Exactly(1),
        apply: Apply::Values(|c| {
            let v = c.json1()?;
            probe!(c);
            if c.time_json_fails() {
                return c.string(String::new());
            }
            c.string(to_yaml(&v).map_err(|e| c.error(format!("toYaml: {e}")))?)
        }),
    },
    Function {
        name: "fromYaml",
        arity: Arity::Exactly(1),
        apply: Apply::Values(|c| {
            let s = c.str1()?;
            probe!(c);
            if s.is_empty() {
                return c.fail("fromYaml: empty YAML input");
            }
            let v: Value = serde_yaml_ng::from_str(&s).map_err(|e| c.error(format!("fromYaml: {e}")))?;
            Ok(Val::Json(floats(v)))
        }),
    },
    Function { name: "typeOf", arity: Arity::Exactly(1), apply: Apply::Values(|c| c.string(c.go_type(0))) },
    Function { name: "kindOf", arity: Arity::Exactly(1), apply: Apply::Values(|c| c.string(c.go_kind(0))) },
    Function {
        name: "kindIs",
        arity: Arity::Exactly(2),
        apply: Apply::Values(|c| {
            c.arity(2)?;
            Ok(bool_val(c.str(0)? == c.go_kind(1)))
        }),
    },
    // Sprig's must* forms: kiln refuses where they return an error and
    // where the plain forms panic, so most are the plain form again.
    Function { name: "mustFirst", arity: Arity::Exactly(1), apply: Apply::Values(|c| alias(c, "first")) },
    Function { name: "mustLast", arity: Arity::Exactly(1), apply: Apply::Values(|c| alias(c, "last")) },
    Function { name: "mustRest", arity: Arity::Exactly(1), apply: Apply::Values(|c| alias(c, "rest")) },
    Function { name: "mustInitial", arity: Arity::Exactly(1), apply: Apply::Values(|c| alias(c, "initial")) },
    Function { name: "mustReverse", arity: Arity::Exactly(1), apply: Apply::Values(|c| alias(c, "reverse")) },
    Function { name: "mustUniq", arity: Arity::Exactly(1), apply: Apply::Values(|c| alias(c, "uniq")) },
    Function { name: "mustCompact", arity: Arity::Exactly(1), apply: Apply::Values(|c| alias(c, "compact")) },
    Function { name: "mustWithout", arity: Arity::AtLeast(1), apply: Apply::Values(|c| alias(c, "without")) },
    Function { name: "mustHas", arity: Arity::Exactly(2), apply: Apply::Values(|c| alias(c, "has")) },
    Function { name: "mustAppend", arity: Arity::Exactly(2), apply: Apply::Values(|c| alias(c, "append")) },
    Function { name: "mustPrepend", arity: Arity::Exactly(2), apply: Apply::Values(|c| alias(c, "prepend")) },
    Function { name: "mustSlice", arity: Arity::AtLeast(1), apply: Apply::Values(|c| alias(c, "slice")) },
    Function { name: "mustChunk", arity: Arity::Exactly(2), apply: Apply::Values(|c| alias(c, "chunk")) },
    Function { name: "mustToJson", arity: Arity::Exactly(1), apply: Apply::Values(|c| alias(c, "toJson")) },
    Function { name: "mustToPrettyJson", arity: Arity::Exactly(1), apply: Apply::Values(|c| alias(c, "toPrettyJson")) },
    Function { name: "mustToRawJson", arity: Arity::Exactly(1), apply: Apply::Values(|c| alias(c, "toRawJson")) },
    Function {
        name: "mustFromJson",
        arity: Arity::Exactly(1),
        apply: Apply::Values(|c| {
            let s = c.str1()?;
            probe!(c);
            let v = serde_json::from_str::<Value>(&s).map_err(|e| c.error(format!("{s:?} is not JSON: {e}")))?;
            Ok(Val::Json(floats(v)))
        }),
    },
    Function { name: "mustRegexMatch", arity: Arity::Exactly(2), apply: Apply::Values(|c| alias(c, "regexMatch")) },
    Function { name: "mustRegexFind", arity: Arity::Exactly(2), apply: Apply::Values(|c| alias(c, "regexFind")) },
    Function { name: "mustRegexFindAll", arity: Arity::Exactly(3), apply: Apply::Values(|c| alias(c, "regexFindAll")) },
    Function {
        name: "mustRegexReplaceAll",
        arity: Arity::Exactly(3),
        apply: Apply::Values(|c| alias(c, "regexReplaceAll")),
    },
    Function {
        name: "mustRegexReplaceAllLiteral",
        arity: Arity::Exactly(3),
        apply: Apply::Values(|c| alias(c, "regexReplaceAllLiteral")),
    },
    Function { name: "mustRegexSplit", arity: Arity::Exactly(3), apply: Apply::Values(|c| alias(c, "regexSplit")) },
    Function { name: "mustMerge", arity: Arity::AtLeast(1), apply: Apply::Values(|c| alias(c, "merge")) },
    Function {
        name: "mustMergeOverwrite",
        arity: Arity::AtLeast(1),
        apply: Apply::Values(|c| alias(c, "mergeOverwrite")),
    },
    Function { name: "mustDeepCopy", arity: Arity::Exactly(1), apply: Apply::Values(|c| alias(c, "deepCopy")) },
    Function {
        name: "prepend",
        arity: Arity::Exactly(2),
        apply: Apply::Values(|c| {
            probe!(c);
            match c.json(0) {
                Value::Array(mut l) => {
                    l.insert(0, c.json(1));
                    Ok(Val::Json(Value::Array(l)))
                }
                other => c.fail(format!("cannot prepend on type {}", go_type(&other))),
            }
        }),
    },
    Function { name: "tuple", arity: Arity::AtLeast(0), apply: Apply::Values(|c| alias(c, "list")) },
    Function {
        name: "pluck",
        arity: Arity::AtLeast(1),
        apply: Apply::Values(|c| {
            probe!(c);
            let key = c.str(0)?;
            let mut out = Vec::new();
            for i in 1..c.args.len() {
                out.extend(c.map(i)?.get(&key).cloned());
            }
            Ok(Val::Json(Value::Array(out)))
        }),
    },
    Function {
        name: "chunk",
        arity: Arity::Exactly(2),
        apply: Apply::Values(|c| {
            probe!(c);
            let size = c.int(0)?;
            let Value::Array(l) = c.json(1) else {
                return c.fail(format!("cannot chunk type {}", go_type(&c.json(1))));
            };
            let size =
                usize::try_from(size).ok().filter(|s| *s > 0).ok_or_else(|| c.error("chunk size must be positive"))?;
            Ok(Val::Json(Value::Array(l.chunks(size).map(|ch| Value::Array(ch.to_vec())).collect())))
        }),
    },
    Function { name: "deepCopy", arity: Arity::Exactly(1), apply: Apply::Values(|c| Ok(c.args[0].clone())) },
    Function {
        name: "deepEqual",
        arity: Arity::Exactly(2),
        apply: Apply::Values(|c| {
            probe!(c);
            Ok(bool_val(c.json(0) == c.json(1)))
        }),
    },
    Function {
        name: "mergeOverwrite",
        arity: Arity::AtLeast(1),
        apply: Apply::Values(|c| {
            probe!(c);
            let mut dst = c.map(0)?;
            for i in 1..c.args.len() {
                overwrite_into(&mut dst, &c.map(i)?);
            }
            Ok(Val::Json(Value::Object(dst)))
        }),
    },
    Function {
        name: "toRawJson",
        arity: Arity::Exactly(1),
        apply: Apply::Values(|c| {
            if c.time_json_fails() {
                return c.string(String::new());
            }
            c.string(go_json_raw(&c.json1()?))
        }),
    },
    Function {
        name: "toStrings",
        arity: Arity::Exactly(1),
        apply: Apply::Values(|c| {
            probe!(c);
            Ok(Val::Json(Value::Array(strslice(&c.json(0)).into_iter().map(Value::String).collect())))
        }),
    },
    Function {
        name: "typeIs",
        arity: Arity::Exactly(2),
        apply: Apply::Values(|c| Ok(bool_val(c.str(0)? == c.go_type(1)))),
    },
    Function {
        name: "typeIsLike",
        arity: Arity::Exactly(2),
        apply: Apply::Values(|c| {
            let (target, t) = (c.str(0)?, c.go_type(1));
            Ok(bool_val(target == t || format!("*{target}") == t))
        }),
    },
    Function {
        name: "untilStep",
        arity: Arity::Exactly(3),
        apply: Apply::Values(|c| {
            probe!(c);
            let items = until_step(c, c.int(0)?, c.int(1)?, c.int(2)?)?;
            Ok(Val::Json(Value::Array(items.into_iter().map(Value::from).collect())))
        }),
    },
    Function {
        name: "splitn",
        arity: Arity::Exactly(3),
        apply: Apply::Values(|c| {
            probe!(c);
            let (sep, n, s) = (c.str(0)?, c.int(1)?, c.str(2)?);
            let parts: Vec<String> = match usize::try_from(n) {
                Err(_) => {
                    c.items(split_count(&s, &sep))?;
                    go_split(&s, &sep)
                }
                Ok(0) => Vec::new(),
                Ok(n) if sep.is_empty() => {
                    let chars: Vec<char> = s.chars().collect();
                    let mut parts: Vec<String> = chars.iter().take(n - 1).map(|ch| ch.to_string()).collect();
                    if chars.len() >= n {
                        parts.push(chars[n - 1..].iter().collect());
                    }
                    parts
                }
                Ok(n) => s.splitn(n, sep.as_str()).map(String::from).collect(),
            };
            let m = parts.into_iter().enumerate().map(|(i, p)| (format!("_{i}"), Value::String(p))).collect();
            Ok(Val::Json(Value::Object(m)))
        }),
    },
    Function {
        name: "regexSplit",
        arity: Arity::Exactly(3),
        apply: Apply::Values(|c| {
            probe!(c);
            let (s, n) = (c.str(1)?, c.int(2)?);
            let re = c.regex(0)?;
            c.items(re.find_iter(&s).take(MAX_ITEMS + 1).count())?;
            let parts = go_regex_split(&re, &s, n);
            Ok(Val::Json(Value::Array(parts.into_iter().map(Value::String).collect())))
        }),
    },
    Function {
        name: "regexReplaceAllLiteral",
        arity: Arity::Exactly(3),
        apply: Apply::Values(|c| {
            probe!(c);
            let (s, with) = (c.str(1)?, c.str(2)?);
            let out = c.regex(0)?.replace_all(&s, regex::NoExpand(&with)).into_owned();
            c.string(out)
        }),
    },
    Function {
        name: "regexQuoteMeta",
        arity: Arity::Exactly(1),
        apply: Apply::Values(|c| {
            let s = c.str1()?;
            let mut out = String::with_capacity(s.len());
            for ch in s.chars() {
                if "\\.+*?()|[]{}^$".contains(ch) {
                    out.push('\\');
                }
                out.push(ch);
            }
            c.string(out)
        }),
    },
    Function {
        name: "sha256sum",
        arity: Arity::Exactly(1),
        apply: Apply::Values(|c| {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(c.str1()?.as_bytes());
            c.string(digest.iter().map(|b| format!("{b:02x}")).collect())
        }),
    },
    Function {
        name: "sha1sum",
        arity: Arity::Exactly(1),
        apply: Apply::Values(|c| c.string(sha1(c.str1()?.as_bytes()).iter().map(|b| format!("{b:02x}")).collect())),
    },
    Function {
        name: "adler32sum",
        arity: Arity::Exactly(1),
        apply: Apply::Values(|c| {
            let (mut a, mut b) = (1u32, 0u32);
            for byte in c.str1()?.bytes() {
                a = (a + u32::from(byte)) % 65521;
                b = (b + a) % 65521;
            }
            c.string(((b << 16) | a).to_string())
        }),
    },
    Function {
        name: "b32enc",
        arity: Arity::Exactly(1),
        apply: Apply::Values(|c| c.string(base32_encode(c.str1()?.as_bytes()))),
    },
    Function {
        name: "b32dec",
        arity: Arity::Exactly(1),
        apply: Apply::Values(|c| {
            let s = c.str1()?;
            probe!(c);
            // Sprig returns the error's text as the result; kiln refuses it.
            let bytes = base32_decode(&s).ok_or_else(|| c.error(format!("{s:?} is not base32")))?;
            c.string(String::from_utf8_lossy(&bytes).into_owned())
        }),
    },
    Function { name: "base", arity: Arity::Exactly(1), apply: Apply::Values(|c| c.string(path_base(&c.str1()?))) },
    Function { name: "dir", arity: Arity::Exactly(1), apply: Apply::Values(|c| c.string(path_dir(&c.str1()?))) },
    Function { name: "ext", arity: Arity::Exactly(1), apply: Apply::Values(|c| c.string(path_ext(&c.str1()?))) },
    Function { name: "clean", arity: Arity::Exactly(1), apply: Apply::Values(|c| c.string(path_clean(&c.str1()?))) },
    Function {
        name: "isAbs",
        arity: Arity::Exactly(1),
        apply: Apply::Values(|c| Ok(bool_val(c.str1()?.starts_with('/')))),
    },
    Function { name: "osBase", arity: Arity::Exactly(1), apply: Apply::Values(|c| alias(c, "base")) },
    Function { name: "osDir", arity: Arity::Exactly(1), apply: Apply::Values(|c| alias(c, "dir")) },
    Function { name: "osExt", arity: Arity::Exactly(1), apply: Apply::Values(|c| alias(c, "ext")) },
    Function { name: "osClean", arity: Arity::Exactly(1), apply: Apply::Values(|c| alias(c, "clean")) },
    Function { name: "osIsAbs", arity: Arity::Exactly(1), apply: Apply::Values(|c| alias(c, "isAbs")) },
    Function { name: "biggest", arity: Arity::AtLeast(1), apply: Apply::Values(|c| alias(c, "max")) },
    Function {
        name: "all",
        arity: Arity::AtLeast(0),
        apply: Apply::Values(|c| {
            probe!(c);
            Ok(bool_val(c.json_args().iter().all(|v| !empty(v))))
        }),
    },
    Function {
        name: "any",
        arity: Arity::AtLeast(0),
        apply: Apply::Values(|c| {
            probe!(c);
            Ok(bool_val(c.json_args().iter().any(|v| !empty(v))))
        }),
    },
    Function {
        name: "fail",
        arity: Arity::Exactly(1),
        apply: Apply::Values(|c| {
            let message = c.str1()?;
            probe!(c);
            // An empty message would leave the operator an error that says
            // nothing; name the call instead (Go prints "error calling fail: ").
            if message.trim().is_empty() {
                return c.fail("fail was called with an empty message");
            }
            c.fail(message)
        }),
    },
    Function { name: "hello", arity: Arity::Exactly(0), apply: Apply::Values(|c| c.string("Hello!".into())) },
    // Go's time.Time (see gotime.rs); the renderer's local zone is UTC.
    Function {
        name: "toDate",
        arity: Arity::Exactly(2),
        apply: Apply::Values(|c| {
            let (layout, value) = (c.str(0)?, c.str(1)?);
            probe!(c);
            // Sprig drops the error: what does not parse is the zero time.
            Ok(Val::Time(super::gotime::parse(&layout, &value).unwrap_or_else(|_| super::gotime::zero())))
        }),
    },
    Function {
        name: "mustToDate",
        arity: Arity::Exactly(2),
        apply: Apply::Values(|c| {
            let (layout, value) = (c.str(0)?, c.str(1)?);
            probe!(c);
            super::gotime::parse(&layout, &value).map(Val::Time).or_else(|e| c.fail(e))
        }),
    },
    Function {
        name: "unixEpoch",
        arity: Arity::Exactly(1),
        apply: Apply::Values(|c| {
            let t = c.time(0)?;
            probe!(c);
            c.string(t.unix.to_string())
        }),
    },
    Function {
        name: "mustDateModify",
        arity: Arity::Exactly(2),
        apply: Apply::Values(|c| {
            let (change, t) = (c.str(0)?, c.time(1)?);
            probe!(c);
            let d = super::duration::parse(&change)
                .ok_or_else(|| c.error(format!("time: invalid duration {}", go_quote(&change))))?;
            Ok(Val::Time(t.add_nanos(d)))
        }),
    },
    Function {
        name: "derivePassword",
        arity: Arity::Exactly(5),
        apply: Apply::Values(|c| {
            let counter = c.int(0)?;
            let counter =
                u32::try_from(counter).or_else(|_| c.fail(format!("the counter {counter} does not fit a uint32")))?;
            let (kind, password, user, site) = (c.str(1)?, c.str(2)?, c.str(3)?, c.str(4)?);
            probe!(c);
            c.string(super::crypto::derive_password(counter, &kind, &password, &user, &site))
        }),
    },
    Function {
        name: "decryptAES",
        arity: Arity::Exactly(2),
        apply: Apply::Values(|c| {
            let (password, crypt) = (c.str(0)?, c.str(1)?);
            probe!(c);
            let plain =
                super::crypto::decrypt_aes(&password, &crypt).or_else(|e| c.fail(format!("decryptAES: {e}")))?;
            c.string(plain)
        }),
    },
    Function {
        name: "must_date_modify",
        arity: Arity::Exactly(2),
        apply: Apply::Values(|c| alias(c, "mustDateModify")),
    },
    Function {
        name: "toDecimal",
        arity: Arity::Exactly(1),
        apply: Apply::Values(|c| {
            probe!(c);
            let digits = text(&c.args[0]);
            let (neg, body) = digits.strip_prefix('-').map_or((false, digits.as_str()), |b| (true, b));
            let body = body.strip_prefix('+').unwrap_or(body);
            let n = (!body.is_empty() && !body.starts_with(['+', '-']))
                .then(|| i64::from_str_radix(body, 8).ok())
                .flatten()
                .map_or(0, |n| if neg { -n } else { n });
            Ok(int_val(n))
        }),
    },
    Function {
        name: "plural",
        arity: Arity::Exactly(3),
        apply: Apply::Values(|c| {
            let (one, many, n) = (c.str(0)?, c.str(1)?, c.int(2)?);
            c.string(if n == 1 { one } else { many })
        }),
    },
    Function { name: "trimall", arity: Arity::Exactly(2), apply: Apply::Values(|c| alias(c, "trimAll")) },
    Function {
        name: "initials",
        arity: Arity::Exactly(1),
        apply: Apply::Values(|c| {
            // goutils.Initials reads bytes as characters, as here.
            let s = c.str1()?;
            let mut out = String::new();
            let mut after_gap = true;
            for ch in s.bytes().map(char::from) {
                if ch.is_whitespace() {
                    after_gap = true;
                } else if after_gap {
                    out.push(ch);
                    after_gap = false;
                }
            }
            c.string(out)
        }),
    },
    Function {
        name: "swapcase",
        arity: Arity::Exactly(1),
        apply: Apply::Values(|c| {
            // goutils.SwapCase (its title case after a space is upper case
            // for all but a few digraphs).
            let s = c.str1()?;
            let mut out = String::with_capacity(s.len());
            for ch in s.chars() {
                if ch.is_uppercase() {
                    out.extend(ch.to_lowercase());
                } else if ch.is_lowercase() {
                    out.extend(ch.to_uppercase());
                } else {
                    out.push(ch);
                }
            }
            c.string(out)
        }),
    },
    Function {
        name: "untitle",
        arity: Arity::Exactly(1),
        apply: Apply::Values(|c| {
            // goutils.Uncapitalize: the first letter after each space.
            let s = c.str1()?;
            let mut out = String::with_capacity(s.len());
            let mut next = true;
            for ch in s.chars() {
                if ch.is_whitespace() {
                    next = true;
                    out.push(ch);
                } else if next {
                    out.extend(ch.to_lowercase());
                    next = false;
                } else {
                    out.push(ch);
                }
            }
            c.string(out)
        }),
    },
    Function {
        name: "call",
        arity: Arity::AtLeast(1),
        apply: Apply::Values(|c| {
            probe!(c);
            // Data from JSON holds no functions.
            c.fail(format!("can't call a {}: it is not a function", go_type(&c.json(0))))
        }),
    },
    // Sprig's float arithmetic: exact decimal arithmetic on the shortest
    // decimal form of each float64 (shopspring/decimal), then a float64.
    Function { name: "addf", arity: Arity::AtLeast(0), apply: Apply::Values(|c| decimal_op(c, Some(0.0), DecOp::Add)) },
    Function { name: "add1f", arity: Arity::Exactly(1), apply: Apply::Values(|c| decimal_op(c, None, DecOp::Add1)) },
    Function { name: "subf", arity: Arity::AtLeast(1), apply: Apply::Values(|c| decimal_op(c, None, DecOp::Sub)) },
    Function { name: "mulf", arity: Arity::AtLeast(1), apply: Apply::Values(|c| decimal_op(c, None, DecOp::Mul)) },
    Function { name: "divf", arity: Arity::AtLeast(1), apply: Apply::Values(|c| decimal_op(c, None, DecOp::Div)) },
    Function { name: "maxf", arity: Arity::AtLeast(1), apply: Apply::Values(|c| float_fold(c, f64::max)) },
    Function { name: "minf", arity: Arity::AtLeast(1), apply: Apply::Values(|c| float_fold(c, f64::min)) },
    Function {
        name: "floor",
        arity: Arity::Exactly(1),
        apply: Apply::Values(|c| float_result(c, to_float64(&c.args[0]).floor())),
    },
    Function {
        name: "ceil",
        arity: Arity::Exactly(1),
        apply: Apply::Values(|c| float_result(c, to_float64(&c.args[0]).ceil())),
    },
    Function {
        name: "round",
        arity: Arity::AtLeast(2),
        apply: Apply::Values(|c| {
            probe!(c);
            let (value, places) = (to_float64(&c.args[0]), c.int(1)?);
            let round_on = c.args.get(2).map_or(0.5, to_float64);
            let pow = 10f64.powi(i32::try_from(places).unwrap_or(i32::MAX));
            let digit = pow * value;
            let fraction = digit.fract();
            let rounded = if fraction >= round_on { digit.ceil() } else { digit.floor() };
            float_result(c, rounded / pow)
        }),
    },
    Function {
        name: "netmaskToPrefixLength",
        arity: Arity::Exactly(1),
        apply: Apply::Values(|c| {
            c.arity(1)?;
            let mask = c.str(0)?;
            if c.probe() {
                return c.string("24".into());
            }
            // Tinkerbell's returns a string. For a mask whose ones are not
            // contiguous it returns "0"; kiln refuses such a mask.
            match prefix_length(&mask) {
                Some(bits) => c.string(bits.to_string()),
                None => c.fail(format!("{mask:?} is not a dotted IPv4 netmask such as 255.255.255.0")),
            }
        }),
    },
    Function { name: "eq", arity: Arity::AtLeast(1), apply: Apply::Values(|c| compare(c, true)) },
    Function { name: "ne", arity: Arity::Exactly(2), apply: Apply::Values(|c| compare(c, false)) },
    Function {
        name: "not",
        arity: Arity::Exactly(1),
        apply: Apply::Values(|c| {
            let v = c.one()?;
            Ok(if c.probe() { Val::Probe } else { Val::Json((!truthy(v)).into()) })
        }),
    },
    Function { name: "and", arity: Arity::AtLeast(1), apply: Apply::ShortCircuit { stop_at: false } },
    Function { name: "or", arity: Arity::AtLeast(1), apply: Apply::ShortCircuit { stop_at: true } },
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
    /// How many arguments Go's signature takes (the piped value counts).
    pub arity: Arity,
    pub apply: Apply,
}

/// The number of arguments a function takes, checked when it is called
/// (as Go does: a wrong count in a branch not taken is no error).
#[derive(Debug, Clone, Copy)]
pub(super) enum Arity {
    Exactly(usize),
    AtLeast(usize),
}

impl Arity {
    /// Go's error for `got` arguments, if they are the wrong number.
    pub(super) fn check(self, name: &str, got: usize) -> Result<(), String> {
        match self {
            Arity::Exactly(n) if got != n => Err(format!("wrong number of args for {name}: want {n} got {got}")),
            Arity::AtLeast(n) if got < n => {
                Err(format!("wrong number of args for {name}: want at least {n} got {got}"))
            }
            _ => Ok(()),
        }
    }
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
/// `disk` and `rootDisk`: the stable path of the one disk `hint` matches
/// when the disks are known, else the call itself, hint spelled out, for
/// the server to render again with the machine's disks
/// (see [`super::DiskContext`]).
fn disk_path(c: &Call<'_, '_>, hint: &crate::hints::DiskHint) -> Result<Val, SpecError> {
    match c.eval.disks.disks {
        Some(disks) => match crate::hints::resolve(hint, disks) {
            Ok(d) => c.string(crate::hints::stable_path(d)),
            Err(why) => c.fail(why),
        },
        None => {
            // In base64, so that the call has no `"` or `\` that would end
            // or change the YAML string it is printed into.
            use base64::Engine as _;
            let json = serde_json::to_string(hint).map_err(|e| c.error(e.to_string()))?;
            let encoded = base64::engine::general_purpose::STANDARD.encode(json);
            Ok(Val::Deferred(format!("{}{encoded}`)) }}}}", super::DEFERRED_DISK_CALL)))
        }
    }
}

pub(super) struct Call<'c, 'a> {
    pub eval: &'c Eval<'a>,
    pub line: usize,
    pub name: &'static str,
    pub args: Vec<Val>,
    /// The field or variable each argument was read from, if it was.
    pub descs: Vec<Option<String>>,
    /// Which arguments Go would pass as a typed nil when they are nil: the
    /// literal `nil`, a parenthesised pipeline and the piped value. A field
    /// or variable read directly keeps its interface type, which Go refuses
    /// for a map parameter.
    pub nil_ok: Vec<bool>,
    /// Which arguments are number constants with an integral value.
    pub int_constants: Vec<bool>,
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
        Val::Time(t) => t.string(),
        Val::Probe | Val::Deferred(_) => PROBE.to_string(),
    }
}

/// Most items a function makes a list of from a string or a count (the
/// evaluator bounds every list and map a function returns to as many
/// values; these are checked before the list is made).
const MAX_ITEMS: usize = 1 << 16;

/// How many pieces strings.Split makes.
fn split_count(s: &str, sep: &str) -> usize {
    if sep.is_empty() { s.chars().count() } else { s.matches(sep).count() + 1 }
}

/// For a function that stands for any data when an argument does.
macro_rules! probe {
    ($c:expr) => {
        if $c.probe() {
            return Ok(Val::Probe);
        }
    };
}
use probe;

impl Call<'_, '_> {
    /// Argument `i` as data (a probe reads as null; a time as the text
    /// Go's JSON encoder gives it, RFC 3339).
    fn json(&self, i: usize) -> Value {
        match self.args.get(i) {
            Some(Val::Json(v)) => v.clone(),
            Some(Val::Time(t)) => Value::String(t.rfc3339_nano()),
            _ => Value::Null,
        }
    }

    fn json1(&self) -> Result<Value, SpecError> {
        self.arity(1)?;
        Ok(self.json(0))
    }

    fn json_args(&self) -> Vec<Value> {
        (0..self.args.len()).map(|i| self.json(i)).collect()
    }

    /// Argument `i` for a Go `string` parameter: Go converts nothing.
    fn str(&self, i: usize) -> Result<String, SpecError> {
        match &self.args[i] {
            Val::Json(Value::String(s)) => Ok(s.clone()),
            Val::Probe | Val::Deferred(_) => Ok(PROBE.to_string()),
            Val::Time(_) => self.fail("wrong type for value; expected string; got time.Time"),
            Val::Json(other) => self.fail(format!("wrong type for value; expected string; got {}", go_type(other))),
        }
    }

    /// Go's JSON encoder refuses a time whose year has not four digits;
    /// Sprig's encoders then give "" (not an error).
    fn time_json_fails(&self) -> bool {
        matches!(self.args.first(), Some(Val::Time(t)) if !(0..=9999).contains(&t.year()))
    }

    /// The Go type of argument `i`, as `%T` prints it.
    fn go_type(&self, i: usize) -> String {
        match self.args.get(i) {
            Some(Val::Time(_)) => "time.Time".into(),
            _ => go_type(&self.json(i)),
        }
    }

    /// The reflect kind of argument `i`.
    fn go_kind(&self, i: usize) -> String {
        match self.args.get(i) {
            Some(Val::Time(_)) => "struct".into(),
            _ => go_kind(&self.json(i)),
        }
    }

    /// Argument `i` for a Go `time.Time` parameter (the zero time for a
    /// probe, which stands for any value).
    fn time(&self, i: usize) -> Result<super::gotime::GoTime, SpecError> {
        match &self.args[i] {
            Val::Time(t) => Ok(t.clone()),
            Val::Probe | Val::Deferred(_) => Ok(super::gotime::zero()),
            Val::Json(other) => self.fail(format!("wrong type for value; expected time.Time; got {}", go_type(other))),
        }
    }

    /// Go compares a time.Time with `==` on its internals (the same
    /// instant in two zones, or two zones of one name, may differ): kiln
    /// does not guess, it refuses.
    fn no_time_comparison(&self) -> Result<(), SpecError> {
        if self.args.iter().any(|a| matches!(a, Val::Time(_))) {
            return self.fail(format!(
                "{} of a time value: kiln does not compare times as Go does (compare their unixEpoch)",
                self.name
            ));
        }
        Ok(())
    }

    fn str1(&self) -> Result<String, SpecError> {
        self.arity(1)?;
        self.str(0)
    }

    /// Argument `i` for a Go `int` parameter: an integer, or a number
    /// constant with an integral value (`1e3`), as Go converts constants.
    fn int(&self, i: usize) -> Result<i64, SpecError> {
        match &self.args[i] {
            Val::Json(v @ Value::Number(n)) if n.is_f64() && self.int_constants.get(i) == Some(&true) => {
                as_int(v).ok_or_else(|| self.error(format!("{n} does not fit an int")))
            }
            Val::Json(v @ Value::Number(n)) if !n.is_f64() => {
                as_int(v).ok_or_else(|| self.error(format!("{n} does not fit an int")))
            }
            Val::Probe | Val::Deferred(_) => Ok(1),
            Val::Time(_) => self.fail("wrong type for value; expected int; got time.Time"),
            Val::Json(other) => self.fail(format!("wrong type for value; expected int; got {}", go_type(other))),
        }
    }

    /// Argument `i` for a Go `map[string]interface{}` parameter: Go passes
    /// nil as an empty map.
    fn map(&self, i: usize) -> Result<serde_json::Map<String, Value>, SpecError> {
        match self.json(i) {
            Value::Object(m) => Ok(m),
            Value::Null if self.nil_ok.get(i) == Some(&true) => Ok(serde_json::Map::new()),
            Value::Null => self.fail("wrong type for value; expected map[string]interface {}; got interface {}"),
            other => {
                self.fail(format!("wrong type for value; expected map[string]interface {{}}; got {}", go_type(&other)))
            }
        }
    }

    /// Refuses to make a list of more than [`MAX_ITEMS`] items, before
    /// making it.
    fn items(&self, n: usize) -> Result<(), SpecError> {
        if n > MAX_ITEMS {
            return self.fail(format!("the list would have more than {MAX_ITEMS} items"));
        }
        Ok(())
    }

    /// Argument `i` as a regular expression (Go's RE2 syntax).
    fn regex(&self, i: usize) -> Result<regex::Regex, SpecError> {
        let pattern = self.str(i)?;
        regex::RegexBuilder::new(&pattern)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| self.error(format!("{pattern:?} is not a regular expression: {e}")))
    }
}

fn bool_val(b: bool) -> Val {
    Val::Json(Value::Bool(b))
}

fn int_val(n: i64) -> Val {
    Val::Json(Value::from(n))
}

fn str_val(s: &str) -> Val {
    Val::Json(Value::String(s.to_string()))
}

fn is_nil(v: &Val) -> bool {
    matches!(v, Val::Json(Value::Null))
}

/// A function of two strings, Sprig's argument order (`hasPrefix "a" .s`).
fn strings2(c: &Call<'_, '_>, f: impl Fn(&str, &str) -> Val) -> Result<Val, SpecError> {
    c.arity(2)?;
    let (a, b) = (c.str(0)?, c.str(1)?);
    probe!(c);
    let v = f(&a, &b);
    if let Val::Json(Value::String(s)) = &v {
        c.size(s.len())?;
    }
    Ok(v)
}

/// Sprig's `empty`: nil, false, zero, and empty strings, lists and maps.
fn empty(v: &Value) -> bool {
    !truthy(&Val::Json(v.clone()))
}

/// Sprig's (cast's) conversion to int64: numbers truncated, strings parsed
/// as Go literals (`0x1F`), bools as 1 or 0, anything else 0.
fn to_int64(v: &Val) -> i64 {
    let Val::Json(v) = v else { return 1 };
    match v {
        Value::Number(n) => n.as_i64().unwrap_or_else(|| n.as_f64().unwrap_or_default() as i64),
        Value::Bool(b) => i64::from(*b),
        Value::String(s) => {
            let s =
                s.trim_end_matches('0').strip_suffix('.').map_or(s.as_str(), |t| if t.is_empty() { "0" } else { t });
            parse_go_int(s).unwrap_or(0)
        }
        _ => 0,
    }
}

fn to_float64(v: &Val) -> f64 {
    let Val::Json(v) = v else { return 1.0 };
    match v {
        Value::Number(n) => n.as_f64().unwrap_or_default(),
        Value::Bool(b) => f64::from(u8::from(*b)),
        Value::String(s) => s.parse().unwrap_or(0.0),
        _ => 0.0,
    }
}

/// `add`, `mul`: every argument converted to int64.
fn arith(c: &Call<'_, '_>, start: i64, f: fn(i64, i64) -> Option<i64>) -> Result<Val, SpecError> {
    probe!(c);
    let mut acc = start;
    for v in &c.args {
        acc = f(acc, to_int64(v)).ok_or_else(|| c.error("integer overflow"))?;
    }
    Ok(int_val(acc))
}

/// `sub`, `div`, `mod` of two arguments converted to int64.
fn arith2(c: &Call<'_, '_>, f: fn(i64, i64) -> Option<i64>) -> Result<Val, SpecError> {
    c.arity(2)?;
    probe!(c);
    let (a, b) = (to_int64(&c.args[0]), to_int64(&c.args[1]));
    if b == 0 && matches!(c.name, "div" | "mod") {
        return c.fail("integer divide by zero");
    }
    Ok(int_val(f(a, b).ok_or_else(|| c.error("integer overflow"))?))
}

fn extreme(c: &Call<'_, '_>, pick: fn(i64, i64) -> i64) -> Result<Val, SpecError> {
    if c.args.is_empty() {
        return c.fail(format!("{} takes at least 1 argument", c.name));
    }
    probe!(c);
    Ok(int_val(c.args.iter().map(to_int64).reduce(pick).unwrap_or_default()))
}

/// Sprig's `seq`: "1 2 3", counting down when the end is below the start.
fn seq(c: &Call<'_, '_>) -> Result<Val, SpecError> {
    probe!(c);
    let ints = (0..c.args.len()).map(|i| c.int(i)).collect::<Result<Vec<_>, _>>()?;
    // Sprig's cases, including its odd ones.
    let items = match ints.as_slice() {
        [end] => {
            let step = if *end < 1 { -1 } else { 1 };
            until_step(c, 1, end + step, step)?
        }
        [start, end] => {
            let step = if end < start { -1 } else { 1 };
            until_step(c, *start, end + step, step)?
        }
        [start, step, end] => {
            let increment = if end < start { -1 } else { 1 };
            if end < start && *step > 0 { Vec::new() } else { until_step(c, *start, end + increment, *step)? }
        }
        _ => Vec::new(),
    };
    let text: Vec<String> = items.iter().map(i64::to_string).collect();
    c.string(text.join(" "))
}

/// Sprig's untilStep: from `start` towards `stop` (excluded) by `step`.
fn until_step(c: &Call<'_, '_>, start: i64, stop: i64, step: i64) -> Result<Vec<i64>, SpecError> {
    let moves = if stop < start { step < 0 } else { step > 0 };
    let count = if moves {
        let span = (i128::from(stop) - i128::from(start)).unsigned_abs();
        span.div_ceil(u128::from(step.unsigned_abs()))
    } else {
        0
    };
    let count = usize::try_from(count).unwrap_or(usize::MAX);
    c.items(count)?;
    Ok((0..count as i64).map(|i| start + i * step).collect())
}

/// Sprig's list functions on one list: the list itself, or `None` for nil.
fn list_fn(c: &Call<'_, '_>, f: impl Fn(&[Value]) -> Option<Value>) -> Result<Val, SpecError> {
    c.arity(1)?;
    probe!(c);
    match c.json(0) {
        Value::Array(l) => Ok(Val::Json(f(&l).unwrap_or(Value::Null))),
        other => c.fail(format!("cannot {} on type {}", c.name, go_type(&other))),
    }
}

fn push(c: &Call<'_, '_>) -> Result<Val, SpecError> {
    c.arity(2)?;
    probe!(c);
    match c.json(0) {
        Value::Array(mut l) => {
            l.push(c.json(1));
            Ok(Val::Json(Value::Array(l)))
        }
        other => c.fail(format!("cannot push on type {}", go_type(&other))),
    }
}

/// Sprig's `slice LIST [START [END]]` (Sprig replaces Go's own `slice`).
fn sprig_slice(c: &Call<'_, '_>) -> Result<Val, SpecError> {
    if c.args.is_empty() || c.args.len() > 3 {
        return c.fail(format!("slice takes 1 to 3 arguments, got {}", c.args.len()));
    }
    probe!(c);
    let Value::Array(l) = c.json(0) else {
        return c.fail(format!("list should be type of slice or array but {}", go_kind(&c.json(0))));
    };
    if l.is_empty() {
        return Ok(Val::Json(Value::Null));
    }
    let start = c.args.get(1).map_or(0, to_int64);
    let end = c.args.get(2).map_or(l.len() as i64, to_int64);
    if start < 0 || end < start || end > l.len() as i64 {
        return c.fail(format!("slice bounds out of range [{start}:{end}] with length {}", l.len()));
    }
    Ok(Val::Json(Value::Array(l[start as usize..end as usize].to_vec())))
}

/// Sprig's strslice: a list as strings (nils dropped), anything else one item.
fn strslice(v: &Value) -> Vec<String> {
    match v {
        Value::Array(l) => l.iter().filter(|x| !x.is_null()).map(to_text).collect(),
        Value::Null => Vec::new(),
        other => vec![to_text(other)],
    }
}

fn pick(c: &Call<'_, '_>, keep: bool) -> Result<Val, SpecError> {
    if c.args.is_empty() {
        return c.fail(format!("{} needs a map", c.name));
    }
    probe!(c);
    let m = c.map(0)?;
    let keys = (1..c.args.len()).map(|i| c.str(i)).collect::<Result<Vec<_>, _>>()?;
    Ok(Val::Json(Value::Object(m.into_iter().filter(|(k, _)| keys.contains(k) == keep).collect())))
}

/// mergo.Merge without overwrite: keys missing from `dst` are added, maps
/// in both are merged deeply.
fn merge_into(dst: &mut serde_json::Map<String, Value>, src: &serde_json::Map<String, Value>) {
    for (k, v) in src {
        match (dst.get_mut(k), v) {
            (Some(Value::Object(d)), Value::Object(s)) => merge_into(d, s),
            (Some(existing), _) if !empty(existing) => {}
            (_, v) => {
                dst.insert(k.clone(), v.clone());
            }
        }
    }
}

/// `dig KEY... DEFAULT MAP`.
fn dig(c: &Call<'_, '_>) -> Result<Val, SpecError> {
    if c.args.len() < 3 {
        return c.fail("dig needs at least three arguments");
    }
    probe!(c);
    let n = c.args.len();
    let keys = (0..n - 2).map(|i| c.str(i)).collect::<Result<Vec<_>, _>>()?;
    // Sprig asserts a map; nil is not one.
    let Value::Object(dict) = c.json(n - 1) else {
        return c.fail(format!("dig needs a map last, got {}", go_type(&c.json(n - 1))));
    };
    let mut cur = Value::Object(dict);
    for key in keys {
        let Value::Object(m) = cur else {
            return c.fail(format!("dig: can't read {key:?} from {}", go_type(&cur)));
        };
        match m.get(&key) {
            Some(v) => cur = v.clone(),
            None => return Ok(c.args[n - 2].clone()),
        }
    }
    Ok(Val::Json(cur))
}

/// Sprig's `indent`: every line prefixed, including the first.
fn indent(c: &Call<'_, '_>, n: i64, s: &str) -> Result<String, SpecError> {
    let pad = " ".repeat(usize::try_from(n).unwrap_or(0).min(MAX_WIDTH));
    c.size(s.len().saturating_add(s.matches('\n').count().saturating_add(1).saturating_mul(pad.len())))?;
    Ok(format!("{pad}{}", s.replace('\n', &format!("\n{pad}"))))
}

/// Go's `order` functions `lt le gt ge`, from "less" and "equal".
fn order(c: &Call<'_, '_>, f: fn(bool, bool) -> bool) -> Result<Val, SpecError> {
    c.arity(2)?;
    probe!(c);
    c.no_time_comparison()?;
    let (a, b) = (c.json(0), c.json(1));
    let lt = less(&a, &b).map_err(|m| c.error(m))?;
    let eq = equal(&a, &b).map_err(|m| c.error(m))?;
    Ok(bool_val(f(lt, eq)))
}

/// fmt.Sprint: a space between operands when neither is a string.
fn sprint(args: &[Val]) -> String {
    let mut out = String::new();
    let is_str = |v: &Val| matches!(v, Val::Json(Value::String(_)));
    for (i, a) in args.iter().enumerate() {
        if i > 0 && !is_str(a) && !is_str(&args[i - 1]) {
            out.push(' ');
        }
        out.push_str(&text(a));
    }
    out
}

/// What Go's escaping functions escape: one string as it is, else the
/// arguments as `print` joins them.
/// A nil argument reads `<no value>` there, as in Go.
fn escaper_input(c: &Call<'_, '_>) -> Result<String, SpecError> {
    Ok(match c.args.as_slice() {
        [Val::Json(Value::String(s))] => s.clone(),
        args => {
            let no_value = Val::Json(Value::String("<no value>".into()));
            let args: Vec<Val> = args.iter().map(|a| if is_nil(a) { no_value.clone() } else { a.clone() }).collect();
            sprint(&args)
        }
    })
}

/// Calls the function `name` with this call's arguments: Sprig's aliases.
fn alias(c: &Call<'_, '_>, name: &'static str) -> Result<Val, SpecError> {
    let f = function(name).expect("an alias names a function in TABLE");
    let Apply::Values(body) = f.apply else { unreachable!("aliases name plain functions") };
    body(&Call {
        eval: c.eval,
        line: c.line,
        name,
        args: c.args.clone(),
        descs: c.descs.clone(),
        nil_ok: c.nil_ok.clone(),
        int_constants: c.int_constants.clone(),
    })
}

/// mergo.Merge with WithOverride: values of `src` replace those of `dst`
/// (maps merged deeply), except empty ones.
fn overwrite_into(dst: &mut serde_json::Map<String, Value>, src: &serde_json::Map<String, Value>) {
    for (k, v) in src {
        match (dst.get_mut(k), v) {
            (Some(Value::Object(d)), Value::Object(s)) => overwrite_into(d, s),
            (Some(_), v) if empty(v) => {}
            (_, v) => {
                dst.insert(k.clone(), v.clone());
            }
        }
    }
}

fn float_result(c: &Call<'_, '_>, f: f64) -> Result<Val, SpecError> {
    probe!(c);
    match serde_json::Number::from_f64(f) {
        Some(n) => Ok(Val::Json(Value::Number(n))),
        None => c.fail(format!("the result {} is not a finite number", go_float(f))),
    }
}

fn decimal_op(c: &Call<'_, '_>, start: Option<f64>, op: DecOp) -> Result<Val, SpecError> {
    probe!(c);
    let mut values: Vec<f64> = start.into_iter().chain(c.args.iter().map(to_float64)).collect();
    if matches!(op, DecOp::Add1) {
        values.push(1.0);
    }
    let overflow = || c.error("the decimal result is out of range");
    let mut acc = Decimal::from_f64(values[0]).ok_or_else(overflow)?;
    for &v in &values[1..] {
        let d = Decimal::from_f64(v).ok_or_else(overflow)?;
        if matches!(op, DecOp::Div) && d.mantissa == 0 {
            return c.fail("division by zero");
        }
        acc = acc.apply(op, d).ok_or_else(overflow)?;
    }
    float_result(c, acc.to_f64())
}

fn float_fold(c: &Call<'_, '_>, f: fn(f64, f64) -> f64) -> Result<Val, SpecError> {
    probe!(c);
    let result = c.args.iter().map(to_float64).reduce(f).unwrap_or_default();
    float_result(c, result)
}

/// `index COLLECTION KEY...`: a list item or map value, errors naming the
/// path read so far (`.Hardware.Disks[3]`).
fn index(c: &Call<'_, '_>) -> Result<Val, SpecError> {
    let Some(first) = c.args.first() else { return c.fail("index needs a collection") };
    if is_nil(first) {
        return c.fail("index of untyped nil");
    }
    let mut cur = first.clone();
    let mut path = c.descs.first().cloned().flatten().unwrap_or_else(|| "index".into());
    for key in &c.args[1..] {
        cur = match (cur, key) {
            (Val::Probe | Val::Deferred(_), _) | (_, Val::Probe | Val::Deferred(_)) => Val::Probe,
            (Val::Time(_), _) => return Err(c.err(Some(path), "can't index item of type time.Time")),
            (_, Val::Time(_)) => return Err(c.err(Some(path), "an index must be a number or a string, not a time")),
            (Val::Json(Value::Array(a)), Val::Json(k)) => {
                let Some(i) = as_int(k).filter(|_| !k.as_number().is_some_and(serde_json::Number::is_f64)) else {
                    return Err(c.err(Some(path), format!("index of a list must be an integer, got {}", kind(k))));
                };
                path = format!("{path}[{i}]");
                let item = usize::try_from(i).ok().and_then(|i| a.get(i)).ok_or_else(|| {
                    c.err(Some(path.clone()), format!("index {i} out of range: the list has {} item(s)", a.len()))
                })?;
                Val::Json(item.clone())
            }
            // Go: a missing key gives the map's zero value, nil, not an error.
            (Val::Json(Value::Object(mut m)), Val::Json(Value::String(k))) => {
                path = format!("{path}[{k:?}]");
                Val::Json(m.remove(k).unwrap_or(Value::Null))
            }
            (Val::Json(Value::Object(_)), Val::Json(k)) => {
                return Err(c.err(Some(path), format!("a map key must be a string, got {}", kind(k))));
            }
            // Go indexes a string by byte.
            (Val::Json(Value::String(s)), Val::Json(k)) => {
                let Some(i) = as_int(k).filter(|_| !k.as_number().is_some_and(serde_json::Number::is_f64)) else {
                    return Err(c.err(Some(path), format!("index of a string must be an integer, got {}", kind(k))));
                };
                path = format!("{path}[{i}]");
                let byte = usize::try_from(i).ok().and_then(|i| s.as_bytes().get(i)).ok_or_else(|| {
                    c.err(Some(path.clone()), format!("index {i} out of range: the string has {} byte(s)", s.len()))
                })?;
                Val::Json(Value::from(*byte))
            }
            (Val::Json(other), _) => return Err(c.err(Some(path), format!("can't index {}", kind(&other)))),
        };
    }
    Ok(cur)
}

/// Sprig's `join SEPARATOR LIST`.
fn join(c: &Call<'_, '_>) -> Result<Val, SpecError> {
    c.arity(2)?;
    let sep = c.str(0)?;
    probe!(c);
    let items = strslice(&c.json(1));
    c.size(items.iter().map(|i| i.len().saturating_add(sep.len())).fold(0usize, usize::saturating_add))?;
    c.string(items.join(&sep))
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
            Val::Time(_) => None,
            Val::Probe | Val::Deferred(_) => None,
        })
        .collect();
    c.no_time_comparison()?;
    if values.len() < c.args.len() {
        return Ok(Val::Probe);
    }
    // Go's eq stops at the first argument equal to the first.
    let mut any = false;
    for other in &values[1..] {
        if equal(values[0], other).map_err(|m| c.error(m))? {
            any = true;
            break;
        }
    }
    Ok(Val::Json((any == eq).into()))
}

/// Tinkerbell's `formatPartition`, shared with the partition action so that
/// both name the same node.
pub use kiln_partition_path::partition_path as format_partition;

/// `255.255.255.0` → 24; `None` unless four octets with contiguous ones.
fn prefix_length(mask: &str) -> Option<u32> {
    let octets: Vec<&str> = mask.split('.').collect();
    if octets.len() != 4 {
        return None;
    }
    let mut bytes = [0u8; 4];
    for (b, o) in bytes.iter_mut().zip(&octets) {
        // Go's net.ParseIP refuses leading zeros.
        if o.is_empty() || o.len() > 3 || !o.bytes().all(|c| c.is_ascii_digit()) || (o.len() > 1 && o.starts_with('0'))
        {
            return None;
        }
        *b = o.parse().ok()?;
    }
    let bits = u32::from_be_bytes(bytes);
    (bits.leading_ones() + bits.trailing_zeros() == 32).then(|| bits.leading_ones())
}

/// A method of Go's time.Time that takes no argument, called as a field
/// (`(toDate "2006-01-02" .d).Year`).
pub(super) fn time_method(t: &super::gotime::GoTime, name: &str) -> Result<Val, String> {
    let int = |n: i64| Ok(Val::Json(n.into()));
    match name {
        "Year" => int(t.year()),
        // time.Month and time.Weekday print as their names.
        "Month" => Ok(Val::Json(t.month_name().into())),
        "Weekday" => Ok(Val::Json(t.weekday_name().into())),
        "Day" => int(t.day()),
        "Hour" => int(t.hour()),
        "Minute" => int(t.minute()),
        "Second" => int(t.second()),
        "Nanosecond" => int(i64::from(t.nanos)),
        "YearDay" => int(t.year_day()),
        "Unix" => int(t.unix),
        "UnixMilli" => int(t.unix_nano() / 1_000_000),
        "UnixMicro" => int(t.unix_nano() / 1_000),
        "UnixNano" => int(t.unix_nano()),
        "IsZero" => Ok(Val::Json(t.is_zero().into())),
        "String" => Ok(Val::Json(t.string().into())),
        // Local is UTC for the renderer.
        "UTC" | "Local" => Ok(Val::Time(t.utc())),
        _ => Err(format!(
            "can't evaluate field {name} in type time.Time (kiln offers Year, Month, Day, Hour, Minute, Second, \
             Nanosecond, YearDay, Weekday, Unix, UnixMilli, UnixMicro, UnixNano, IsZero, String, UTC, Local)"
        )),
    }
}
