//! Go's fmt verbs for `printf`.

use serde_json::Value;

use super::PROBE;
use super::value::{Val, as_int, go_exp_precision, go_float, go_quote, go_type, kind, to_text};

/// Widest `printf` padding: a typo such as `%9999999999d` must not allocate
/// gigabytes.
pub(super) const MAX_WIDTH: usize = 1000;

/// Go's `printf` verbs for the kinds of values templates hold: `%v %s %d
/// %q %x %X %o %b %c %f %F %e %E %g %t %T %%`, the flags `- + # 0` and
/// space, a width and a precision. Unlike Go, a missing or extra argument,
/// a value of the wrong kind for its verb and an unknown verb are errors
/// instead of `%!d(...)` text in the output.
pub(super) fn sprintf(format: &str, args: &[Val]) -> Result<String, String> {
    let mut out = String::new();
    let mut args = args.iter();
    let mut used = 0;
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = Spec::default();
        while let Some(&f) = chars.peek() {
            match f {
                '-' => spec.left = true,
                '+' => spec.plus = true,
                '#' => spec.sharp = true,
                ' ' => spec.space = true,
                '0' => spec.zero = true,
                _ => break,
            }
            chars.next();
        }
        let number = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| -> Result<Option<usize>, String> {
            let mut n = None;
            while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
                let v = n.unwrap_or(0) * 10 + d as usize;
                if v > MAX_WIDTH {
                    return Err(format!("width or precision is more than {MAX_WIDTH}"));
                }
                n = Some(v);
                chars.next();
            }
            Ok(n)
        };
        spec.width = number(&mut chars)?.unwrap_or(0);
        if chars.peek() == Some(&'.') {
            chars.next();
            spec.precision = Some(number(&mut chars)?.unwrap_or(0));
        }
        let verb = chars.next().ok_or("the format ends with %")?;
        if verb == '%' {
            out.push('%');
            continue;
        }
        let arg = args.next().ok_or_else(|| format!("%{verb} has no argument"))?;
        used += 1;
        let as_text;
        let arg = match arg {
            // Go prints a time.Time through its String method.
            Val::Time(t) if matches!(verb, 'v' | 's' | 'q') => {
                as_text = Val::Json(Value::String(t.string()));
                &as_text
            }
            Val::Time(_) if verb == 'T' => {
                out.push_str("time.Time");
                continue;
            }
            Val::Time(_) => return Err(format!("%{verb} can't print a time value (print it with %v, %s or %q)")),
            other => other,
        };
        let Val::Json(v) = arg else {
            out.push_str(PROBE);
            continue;
        };
        let wrong = || format!("%{verb} can't print {} {}", kind(v), to_text(v));
        let (body, numeric) = match (verb, v) {
            ('v', _) => (to_text(v), false),
            ('s', Value::String(_) | Value::Array(_) | Value::Object(_)) => (to_text(v), false),
            ('q', Value::String(s)) => (go_quote(s), false),
            ('q', Value::Array(l)) if l.iter().all(Value::is_string) => {
                let items: Vec<String> = l.iter().map(|x| go_quote(x.as_str().unwrap_or_default())).collect();
                (format!("[{}]", items.join(" ")), false)
            }
            ('t', Value::Bool(b)) => (b.to_string(), false),
            ('T', _) => (go_type(v), false),
            ('d' | 'x' | 'X' | 'o' | 'b' | 'c', Value::Number(n)) if !n.is_f64() => {
                let n = as_int(v).ok_or_else(wrong)?;
                if verb == 'c' {
                    (u32::try_from(n).ok().and_then(char::from_u32).unwrap_or('\u{FFFD}').to_string(), false)
                } else {
                    (spec.integer(n, verb), true)
                }
            }
            ('x' | 'X', Value::String(s)) => {
                let hex: String = s.bytes().map(|b| format!("{b:02x}")).collect();
                let prefixed = if spec.sharp { format!("0x{hex}") } else { hex };
                (if verb == 'X' { prefixed.to_uppercase() } else { prefixed }, false)
            }
            ('f' | 'F' | 'e' | 'E' | 'g' | 'G', Value::Number(n)) if n.is_f64() => {
                let f = n.as_f64().unwrap_or_default();
                let text = match (verb, spec.precision) {
                    ('f' | 'F', p) => format!("{f:.*}", p.unwrap_or(6)),
                    ('e', p) => go_exp_precision(f, p.unwrap_or(6)),
                    ('E', p) => go_exp_precision(f, p.unwrap_or(6)).to_uppercase(),
                    ('g', None) => go_float(f),
                    ('G', None) => go_float(f).to_uppercase(),
                    _ => return Err(format!("%{verb} with a precision is not supported")),
                };
                (spec.sign(text), true)
            }
            ('d' | 'x' | 'X' | 'o' | 'b' | 'c' | 'f' | 'F' | 'e' | 'E' | 'g' | 'G' | 's' | 'q' | 't', _) => {
                return Err(wrong());
            }
            _ => return Err(format!("unsupported verb %{verb}")),
        };
        // Go: a precision truncates strings.
        let body = match (verb, spec.precision) {
            ('s' | 'v', Some(p)) if !numeric => body.chars().take(p).collect(),
            _ => body,
        };
        spec.pad(&mut out, &body, numeric);
    }
    let extra = args.count();
    if extra > 0 {
        return Err(format!("{} argument(s) but the format uses {used}", used + extra));
    }
    Ok(out)
}

/// The flags, width and precision of one `printf` verb.
#[derive(Default)]
struct Spec {
    left: bool,
    plus: bool,
    sharp: bool,
    space: bool,
    zero: bool,
    width: usize,
    precision: Option<usize>,
}

impl Spec {
    fn sign(&self, text: String) -> String {
        if text.starts_with('-') {
            text
        } else if self.plus {
            format!("+{text}")
        } else if self.space {
            format!(" {text}")
        } else {
            text
        }
    }

    fn integer(&self, n: i64, verb: char) -> String {
        let magnitude = n.unsigned_abs();
        let digits = match verb {
            'x' => format!("{magnitude:x}"),
            'X' => format!("{magnitude:X}"),
            'o' => format!("{magnitude:o}"),
            'b' => format!("{magnitude:b}"),
            _ => magnitude.to_string(),
        };
        let digits = match self.precision {
            Some(p) if digits.len() < p => format!("{}{digits}", "0".repeat(p - digits.len())),
            _ => digits,
        };
        let prefix = match (self.sharp, verb) {
            (true, 'x') => "0x",
            (true, 'X') => "0X",
            (true, 'o') => "0",
            _ => "",
        };
        self.sign(format!("{}{prefix}{digits}", if n < 0 { "-" } else { "" }))
    }

    /// Pads `body` to the width: spaces, or zeros after the sign of a number.
    fn pad(&self, out: &mut String, body: &str, numeric: bool) {
        let pad = self.width.saturating_sub(body.chars().count());
        if self.left {
            out.push_str(body);
            out.extend(std::iter::repeat_n(' ', pad));
        } else if self.zero && (self.precision.is_none() || !numeric) {
            let sign_len = if numeric && body.starts_with(['-', '+', ' ']) { 1 } else { 0 };
            out.push_str(&body[..sign_len]);
            out.extend(std::iter::repeat_n('0', pad));
            out.push_str(&body[sign_len..]);
        } else {
            out.extend(std::iter::repeat_n(' ', pad));
            out.push_str(body);
        }
    }
}
