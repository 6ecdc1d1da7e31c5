//! Go's `time.Duration` as Sprig's `duration` and `durationRound` use it:
//! `Duration.String` and `time.ParseDuration` (written from Go's rules).

const NS: u64 = 1;
const US: u64 = 1_000;
const MS: u64 = 1_000_000;
const SECOND: u64 = 1_000_000_000;
const MINUTE: u64 = 60 * SECOND;
const HOUR: u64 = 60 * MINUTE;

/// `strconv.ParseInt(s, 10, 64)` as Sprig's `duration` reads it: invalid
/// text is 0 (the error is dropped), a number out of range the largest of
/// its sign (what ParseInt returns with its range error).
pub(super) fn parse_seconds(s: &str) -> i64 {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return 0;
    }
    s.parse::<i64>().unwrap_or(if s.starts_with('-') { i64::MIN } else { i64::MAX })
}

/// The digits of `v`'s last `prec` decimal places without trailing zeros,
/// after a `.` (none if they are all zero), and what is left of `v`.
fn fraction(v: u64, prec: u32) -> (String, u64) {
    let mut v = v;
    let mut digits = Vec::new();
    let mut print = false;
    for _ in 0..prec {
        let digit = v % 10;
        print = print || digit != 0;
        if print {
            digits.push(char::from(b'0' + digit as u8));
        }
        v /= 10;
    }
    if print {
        digits.push('.');
    }
    (digits.into_iter().rev().collect(), v)
}

/// Go's `Duration.String`: `1h2m3.5s`, `1.5ms`, `0s`.
pub(super) fn to_string(d: i64) -> String {
    if d == 0 {
        return "0s".into();
    }
    let neg = d < 0;
    let mut u = d.unsigned_abs();
    let mut out = String::new();
    if u < SECOND {
        let (prec, unit) = if u < US {
            (0, "ns")
        } else if u < MS {
            (3, "µs")
        } else {
            (6, "ms")
        };
        let (frac, whole) = fraction(u, prec);
        out = format!("{whole}{frac}{unit}");
    } else {
        let (frac, whole) = fraction(u, 9);
        u = whole;
        out.insert_str(0, &format!("{}{frac}s", u % 60));
        u /= 60;
        if u > 0 {
            out.insert_str(0, &format!("{}m", u % 60));
            u /= 60;
            if u > 0 {
                out.insert_str(0, &format!("{u}h"));
            }
        }
    }
    if neg {
        out.insert(0, '-');
    }
    out
}

const LIMIT: u64 = 1 << 63;

/// Go's `time.ParseDuration`: `300ms`, `-1.5h`, `2h45m`; `None` where Go
/// returns an error.
pub(super) fn parse(s: &str) -> Option<i64> {
    let (neg, mut s) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if s == "0" {
        return Some(0);
    }
    if s.is_empty() {
        return None;
    }
    let mut d: u64 = 0;
    while !s.is_empty() {
        let first = s.as_bytes()[0];
        if !(first == b'.' || first.is_ascii_digit()) {
            return None;
        }
        // The integer part.
        let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
        let mut v: u64 = 0;
        for b in s[..int_len].bytes() {
            if v > LIMIT / 10 {
                return None;
            }
            v = v * 10 + u64::from(b - b'0');
            if v > LIMIT {
                return None;
            }
        }
        let pre = int_len > 0;
        s = &s[int_len..];
        // The fraction: digits past what fits are read and dropped.
        let (mut f, mut scale, mut post) = (0u64, 1f64, false);
        if let Some(rest) = s.strip_prefix('.') {
            let frac_len = rest.bytes().take_while(u8::is_ascii_digit).count();
            let mut overflow = false;
            for b in rest[..frac_len].bytes() {
                if overflow {
                    continue;
                }
                if f > (LIMIT - 1) / 10 {
                    overflow = true;
                    continue;
                }
                let y = f * 10 + u64::from(b - b'0');
                if y > LIMIT {
                    overflow = true;
                    continue;
                }
                f = y;
                scale *= 10.0;
            }
            post = frac_len > 0;
            s = &rest[frac_len..];
        }
        if !pre && !post {
            return None;
        }
        let unit_len = s.find(|c: char| c == '.' || c.is_ascii_digit()).unwrap_or(s.len());
        if unit_len == 0 {
            return None;
        }
        let unit = match &s[..unit_len] {
            "ns" => NS,
            "us" | "\u{b5}s" | "\u{3bc}s" => US,
            "ms" => MS,
            "s" => SECOND,
            "m" => MINUTE,
            "h" => HOUR,
            _ => return None,
        };
        s = &s[unit_len..];
        if v > LIMIT / unit {
            return None;
        }
        v *= unit;
        if f > 0 {
            // As Go: through float64, truncated.
            v += (f as f64 * (unit as f64 / scale)) as u64;
            if v > LIMIT {
                return None;
            }
        }
        d += v;
        if d > LIMIT {
            return None;
        }
    }
    if neg {
        // -(1<<63) fits; anything else was refused above.
        return Some((d as i64).wrapping_neg());
    }
    if d > LIMIT - 1 {
        return None;
    }
    Some(d as i64)
}

/// Sprig's `durationRound`: the largest whole unit (`y` of 365 days, `mo`
/// of 30, `d`, `h`, `m`, `s`) that the duration exceeds, without its sign.
pub(super) fn round(d: i64) -> String {
    let u = d.unsigned_abs();
    let day = 24 * HOUR;
    for (unit, name) in [(365 * day, "y"), (30 * day, "mo"), (day, "d"), (HOUR, "h"), (MINUTE, "m"), (SECOND, "s")] {
        if u > unit {
            return format!("{}{name}", u / unit);
        }
    }
    "0s".into()
}
