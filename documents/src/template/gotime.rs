//! Go's `time.Time` as far as Sprig's hermetic functions make and take it
//! (`toDate`, `mustToDate`, `unixEpoch`, `mustDateModify`): Go's layout
//! language for parsing (`time.ParseInLocation`) and printing
//! (`Time.Format`, `Time.String`), written from Go 1.19's rules, which the
//! differential test runs. The renderer's local zone is UTC, as in
//! Tinkerbell's controller container (no TZ, no /etc/localtime).

/// An instant and the zone it is shown in.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GoTime {
    /// Seconds since 1970-01-01T00:00:00Z.
    pub unix: i64,
    pub nanos: u32,
    /// The zone's abbreviation as Go prints it for `MST` (may be empty:
    /// then `MST` prints the offset, as for Go's unnamed fixed zones).
    pub zone: String,
    /// Seconds east of UTC.
    pub offset: i32,
}

/// Go's layout elements (`nextStdChunk`).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Std {
    LongMonth,
    Month,
    NumMonth,
    ZeroMonth,
    LongWeekDay,
    WeekDay,
    Day,
    UnderDay,
    ZeroDay,
    UnderYearDay,
    ZeroYearDay,
    Hour,
    Hour12,
    ZeroHour12,
    Minute,
    ZeroMinute,
    Second,
    ZeroSecond,
    LongYear,
    Year,
    PM,
    Pm,
    Tz,
    Iso8601Tz,
    Iso8601SecondsTz,
    Iso8601ShortTz,
    Iso8601ColonTz,
    Iso8601ColonSecondsTz,
    NumTz,
    NumSecondsTz,
    NumShortTz,
    NumColonTz,
    NumColonSecondsTz,
    /// `.000` (exactly this many digits) or `.999` (trailing zeros
    /// dropped); the separator (`.` or `,`) is kept.
    FracSecond0(usize, u8),
    FracSecond9(usize, u8),
}

const LONG_MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const LONG_DAYS: [&str; 7] = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];

fn short(names: &[&'static str]) -> Vec<&'static str> {
    names.iter().map(|n| &n[..3]).collect()
}

fn starts_with_lower(s: &[u8]) -> bool {
    s.first().is_some_and(u8::is_ascii_lowercase)
}

/// The next layout element: the literal text before it, the element, the
/// layout after it (`None` when only literal text is left).
fn next_std(layout: &str) -> (&str, Option<Std>, &str) {
    let l = layout.as_bytes();
    let has = |i: usize, s: &str| l.len() >= i + s.len() && &l[i..i + s.len()] == s.as_bytes();
    let cut = |i: usize, std: Std, len: usize| (&layout[..i], Some(std), &layout[i + len..]);
    for i in 0..l.len() {
        match l[i] {
            b'J' if has(i, "Jan") => {
                if has(i, "January") {
                    return cut(i, Std::LongMonth, 7);
                }
                if !starts_with_lower(&l[i + 3..]) {
                    return cut(i, Std::Month, 3);
                }
            }
            b'M' if l.len() >= i + 3 => {
                if has(i, "Mon") {
                    if has(i, "Monday") {
                        return cut(i, Std::LongWeekDay, 6);
                    }
                    if !starts_with_lower(&l[i + 3..]) {
                        return cut(i, Std::WeekDay, 3);
                    }
                }
                if has(i, "MST") {
                    return cut(i, Std::Tz, 3);
                }
            }
            b'0' => {
                if l.len() >= i + 2 && (b'1'..=b'6').contains(&l[i + 1]) {
                    let std =
                        [Std::ZeroMonth, Std::ZeroDay, Std::ZeroHour12, Std::ZeroMinute, Std::ZeroSecond, Std::Year]
                            [usize::from(l[i + 1] - b'1')];
                    return cut(i, std, 2);
                }
                if has(i, "002") {
                    return cut(i, Std::ZeroYearDay, 3);
                }
            }
            b'1' => {
                if has(i, "15") {
                    return cut(i, Std::Hour, 2);
                }
                return cut(i, Std::NumMonth, 1);
            }
            b'2' => {
                if has(i, "2006") {
                    return cut(i, Std::LongYear, 4);
                }
                return cut(i, Std::Day, 1);
            }
            b'_' => {
                if has(i, "_2") {
                    // `_2006` is a literal `_` and the year.
                    if has(i + 1, "2006") {
                        return (&layout[..i + 1], Some(Std::LongYear), &layout[i + 5..]);
                    }
                    return cut(i, Std::UnderDay, 2);
                }
                if has(i, "__2") {
                    return cut(i, Std::UnderYearDay, 3);
                }
            }
            b'3' => return cut(i, Std::Hour12, 1),
            b'4' => return cut(i, Std::Minute, 1),
            b'5' => return cut(i, Std::Second, 1),
            b'P' if has(i, "PM") => return cut(i, Std::PM, 2),
            b'p' if has(i, "pm") => return cut(i, Std::Pm, 2),
            b'-' => {
                for (s, std) in [
                    ("-070000", Std::NumSecondsTz),
                    ("-07:00:00", Std::NumColonSecondsTz),
                    ("-0700", Std::NumTz),
                    ("-07:00", Std::NumColonTz),
                    ("-07", Std::NumShortTz),
                ] {
                    if has(i, s) {
                        return cut(i, std, s.len());
                    }
                }
            }
            b'Z' => {
                for (s, std) in [
                    ("Z070000", Std::Iso8601SecondsTz),
                    ("Z07:00:00", Std::Iso8601ColonSecondsTz),
                    ("Z0700", Std::Iso8601Tz),
                    ("Z07:00", Std::Iso8601ColonTz),
                    ("Z07", Std::Iso8601ShortTz),
                ] {
                    if has(i, s) {
                        return cut(i, std, s.len());
                    }
                }
            }
            sep @ (b'.' | b',') if i + 1 < l.len() && matches!(l[i + 1], b'0' | b'9') => {
                let ch = l[i + 1];
                let mut j = i + 1;
                while j < l.len() && l[j] == ch {
                    j += 1;
                }
                // Only a fractional second is all digits up to here.
                if !l.get(j).is_some_and(u8::is_ascii_digit) {
                    let n = j - (i + 1);
                    let std = if ch == b'0' { Std::FracSecond0(n, sep) } else { Std::FracSecond9(n, sep) };
                    return (&layout[..i], Some(std), &layout[j..]);
                }
            }
            _ => {}
        }
    }
    (layout, None, "")
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in(month: i64, year: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// algorithm), for any month and day (out-of-range ones are carried, as
/// Go's `time.Date` normalises them).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let (year, month) = (year + (month - 1).div_euclid(12), (month - 1).rem_euclid(12) + 1);
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number from [`days_from_civil`].
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// Go's `time.Time{}`: January 1, year 1, 00:00:00 UTC.
pub(crate) fn zero() -> GoTime {
    GoTime { unix: days_from_civil(1, 1, 1) * 86_400, nanos: 0, zone: "UTC".into(), offset: 0 }
}

/// The wall clock of `t` in its zone.
struct Civil {
    year: i64,
    month: i64,
    day: i64,
    yday: i64,
    weekday: usize,
    hour: i64,
    minute: i64,
    second: i64,
}

impl GoTime {
    fn civil(&self) -> Civil {
        let local = self.unix + i64::from(self.offset);
        let days = local.div_euclid(86_400);
        let secs = local.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        Civil {
            year,
            month,
            day,
            yday: days - days_from_civil(year, 1, 1) + 1,
            // 1970-01-01 was a Thursday.
            weekday: (days + 4).rem_euclid(7) as usize,
            hour: secs / 3600,
            minute: secs / 60 % 60,
            second: secs % 60,
        }
    }

    pub(crate) fn year(&self) -> i64 {
        self.civil().year
    }
    pub(crate) fn month_name(&self) -> &'static str {
        LONG_MONTHS[(self.civil().month - 1) as usize]
    }
    pub(crate) fn day(&self) -> i64 {
        self.civil().day
    }
    pub(crate) fn hour(&self) -> i64 {
        self.civil().hour
    }
    pub(crate) fn minute(&self) -> i64 {
        self.civil().minute
    }
    pub(crate) fn second(&self) -> i64 {
        self.civil().second
    }
    pub(crate) fn year_day(&self) -> i64 {
        self.civil().yday
    }
    pub(crate) fn weekday_name(&self) -> &'static str {
        LONG_DAYS[self.civil().weekday]
    }

    /// Go's `Time.IsZero`: the instant of `time.Time{}`, in any zone.
    pub(crate) fn is_zero(&self) -> bool {
        self.unix == zero().unix && self.nanos == 0
    }

    /// `Time.UnixNano` (Go's result is undefined outside ±292 years; this
    /// saturates there).
    pub(crate) fn unix_nano(&self) -> i64 {
        self.unix.saturating_mul(1_000_000_000).saturating_add(i64::from(self.nanos))
    }

    /// `Time.UTC`: the same instant shown in UTC.
    pub(crate) fn utc(&self) -> GoTime {
        GoTime { zone: "UTC".into(), offset: 0, ..self.clone() }
    }

    /// `Time.Add`.
    pub(crate) fn add_nanos(&self, d: i64) -> GoTime {
        let total = i128::from(self.nanos) + i128::from(d % 1_000_000_000);
        let mut unix = self.unix + d / 1_000_000_000;
        let mut nanos = total;
        if nanos < 0 {
            nanos += 1_000_000_000;
            unix -= 1;
        } else if nanos >= 1_000_000_000 {
            nanos -= 1_000_000_000;
            unix += 1;
        }
        GoTime { unix, nanos: nanos as u32, ..self.clone() }
    }

    /// `Time.String`: `2006-01-02 15:04:05.999999999 -0700 MST`.
    pub(crate) fn string(&self) -> String {
        self.format("2006-01-02 15:04:05.999999999 -0700 MST")
    }

    /// `Time.MarshalJSON`'s text (RFC 3339 with nanoseconds), unquoted.
    pub(crate) fn rfc3339_nano(&self) -> String {
        self.format("2006-01-02T15:04:05.999999999Z07:00")
    }

    /// `Time.Format`.
    pub(crate) fn format(&self, layout: &str) -> String {
        let c = self.civil();
        let mut out = String::with_capacity(layout.len() + 10);
        let mut rest = layout;
        loop {
            let (prefix, std, suffix) = next_std(rest);
            out.push_str(prefix);
            let Some(std) = std else { break };
            rest = suffix;
            let pad = |out: &mut String, x: i64, width: usize| {
                if x < 0 {
                    out.push('-');
                }
                out.push_str(&format!("{:0width$}", x.unsigned_abs()));
            };
            match std {
                Std::Year => pad(&mut out, c.year.rem_euclid(100), 2),
                Std::LongYear => pad(&mut out, c.year, 4),
                Std::Month => out.push_str(&LONG_MONTHS[(c.month - 1) as usize][..3]),
                Std::LongMonth => out.push_str(LONG_MONTHS[(c.month - 1) as usize]),
                Std::NumMonth => pad(&mut out, c.month, 0),
                Std::ZeroMonth => pad(&mut out, c.month, 2),
                Std::WeekDay => out.push_str(&LONG_DAYS[c.weekday][..3]),
                Std::LongWeekDay => out.push_str(LONG_DAYS[c.weekday]),
                Std::Day => pad(&mut out, c.day, 0),
                Std::UnderDay => {
                    if c.day < 10 {
                        out.push(' ');
                    }
                    pad(&mut out, c.day, 0);
                }
                Std::ZeroDay => pad(&mut out, c.day, 2),
                Std::UnderYearDay => {
                    if c.yday < 100 {
                        out.push(' ');
                        if c.yday < 10 {
                            out.push(' ');
                        }
                    }
                    pad(&mut out, c.yday, 0);
                }
                Std::ZeroYearDay => pad(&mut out, c.yday, 3),
                Std::Hour => pad(&mut out, c.hour, 2),
                Std::Hour12 | Std::ZeroHour12 => {
                    let h = match c.hour % 12 {
                        0 => 12,
                        h => h,
                    };
                    pad(&mut out, h, if std == Std::Hour12 { 0 } else { 2 });
                }
                Std::Minute => pad(&mut out, c.minute, 0),
                Std::ZeroMinute => pad(&mut out, c.minute, 2),
                Std::Second => pad(&mut out, c.second, 0),
                Std::ZeroSecond => pad(&mut out, c.second, 2),
                Std::PM => out.push_str(if c.hour >= 12 { "PM" } else { "AM" }),
                Std::Pm => out.push_str(if c.hour >= 12 { "pm" } else { "am" }),
                Std::Tz => {
                    if self.zone.is_empty() {
                        // No name known: Go prints the offset as -0700.
                        let minutes = self.offset / 60;
                        out.push(if minutes < 0 { '-' } else { '+' });
                        pad(&mut out, i64::from(minutes.abs() / 60), 2);
                        pad(&mut out, i64::from(minutes.abs() % 60), 2);
                    } else {
                        out.push_str(&self.zone);
                    }
                }
                Std::FracSecond0(n, sep) => {
                    out.push(char::from(sep));
                    out.push_str(&format!("{:09}", self.nanos)[..n.min(9)]);
                }
                Std::FracSecond9(n, sep) => {
                    let digits = format!("{:09}", self.nanos);
                    let digits = digits[..n.min(9)].trim_end_matches('0');
                    if !digits.is_empty() {
                        out.push(char::from(sep));
                        out.push_str(digits);
                    }
                }
                tz => {
                    let iso = matches!(
                        tz,
                        Std::Iso8601Tz
                            | Std::Iso8601SecondsTz
                            | Std::Iso8601ShortTz
                            | Std::Iso8601ColonTz
                            | Std::Iso8601ColonSecondsTz
                    );
                    if self.offset == 0 && iso {
                        out.push('Z');
                        continue;
                    }
                    let minutes = self.offset / 60;
                    out.push(if minutes < 0 { '-' } else { '+' });
                    let (minutes, abs) = (minutes.abs(), self.offset.abs());
                    pad(&mut out, i64::from(minutes / 60), 2);
                    let colon = matches!(
                        tz,
                        Std::Iso8601ColonTz | Std::NumColonTz | Std::Iso8601ColonSecondsTz | Std::NumColonSecondsTz
                    );
                    if colon {
                        out.push(':');
                    }
                    if !matches!(tz, Std::NumShortTz | Std::Iso8601ShortTz) {
                        pad(&mut out, i64::from(minutes % 60), 2);
                    }
                    if matches!(
                        tz,
                        Std::Iso8601SecondsTz | Std::NumSecondsTz | Std::NumColonSecondsTz | Std::Iso8601ColonSecondsTz
                    ) {
                        if colon {
                            out.push(':');
                        }
                        pad(&mut out, i64::from(abs % 60), 2);
                    }
                }
            }
        }
        out
    }
}

fn quote(s: &str) -> String {
    format!("{s:?}")
}

/// Go's `time.ParseError` text.
fn parse_error(layout: &str, value: &str, layout_elem: &str, value_elem: &str, message: &str) -> String {
    if message.is_empty() {
        format!(
            "parsing time {} as {}: cannot parse {} as {}",
            quote(value),
            quote(layout),
            quote(value_elem),
            quote(layout_elem)
        )
    } else {
        format!("parsing time {}{message}", quote(value))
    }
}

/// Go's `skip`: the layout's literal text, where a run of spaces matches
/// a run of spaces.
fn skip<'v>(mut value: &'v str, mut prefix: &str) -> Result<&'v str, ()> {
    while let Some(p) = prefix.as_bytes().first() {
        if *p == b' ' {
            if value.as_bytes().first().is_some_and(|c| *c != b' ') {
                return Err(());
            }
            prefix = prefix.trim_start_matches(' ');
            value = value.trim_start_matches(' ');
            continue;
        }
        if value.as_bytes().first() != Some(p) {
            return Err(());
        }
        prefix = &prefix[1..];
        value = &value[1..];
    }
    Ok(value)
}

fn digit(s: &str, i: usize) -> Option<i64> {
    s.as_bytes().get(i).filter(|c| c.is_ascii_digit()).map(|c| i64::from(c - b'0'))
}

/// Go's `getnum`: one or two digits (two when `fixed`).
fn getnum(s: &str, fixed: bool) -> Result<(i64, &str), ()> {
    let d0 = digit(s, 0).ok_or(())?;
    match digit(s, 1) {
        Some(d1) => Ok((d0 * 10 + d1, &s[2..])),
        None if fixed => Err(()),
        None => Ok((d0, &s[1..])),
    }
}

/// Go's `getnum3`: one to three digits (three when `fixed`).
fn getnum3(s: &str, fixed: bool) -> Result<(i64, &str), ()> {
    let mut n = 0;
    let mut i = 0;
    while i < 3 {
        let Some(d) = digit(s, i) else { break };
        n = n * 10 + d;
        i += 1;
    }
    if i == 0 || (fixed && i != 3) {
        return Err(());
    }
    Ok((n, &s[i..]))
}

/// Go's time-package `atoi`: an optional sign and digits, nothing else.
fn atoi(s: &str) -> Result<i64, ()> {
    let (neg, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let (x, rest) = leading_int(digits)?;
    if !rest.is_empty() {
        return Err(());
    }
    Ok(if neg { -x } else { x })
}

/// Go's `leadingInt`: the leading digits (possibly none) and the rest.
fn leading_int(s: &str) -> Result<(i64, &str), ()> {
    let mut x: i64 = 0;
    let mut i = 0;
    while let Some(d) = digit(s, i) {
        x = x.checked_mul(10).and_then(|x| x.checked_add(d)).ok_or(())?;
        i += 1;
    }
    Ok((x, &s[i..]))
}

/// Go's case-insensitive `lookup` of a name at the start of `value`.
fn lookup<'v>(names: &[&str], value: &'v str) -> Result<(usize, &'v str), ()> {
    for (i, name) in names.iter().enumerate() {
        let Some(head) = value.as_bytes().get(..name.len()) else { continue };
        let same = head.iter().zip(name.as_bytes()).all(|(a, b)| {
            a == b || {
                let (a, b) = (a | 0x20, b | 0x20);
                a == b && a.is_ascii_lowercase()
            }
        });
        if same {
            return Ok((i, &value[name.len()..]));
        }
    }
    Err(())
}

/// Go's `parseNanoseconds`: `value` starts with the separator; `nbytes`
/// counts it.
fn parse_nanoseconds(value: &str, nbytes: usize) -> Result<i64, ()> {
    if !matches!(value.as_bytes().first(), Some(b'.' | b',')) {
        return Err(());
    }
    let nbytes = nbytes.min(10);
    let ns = atoi(value.get(1..nbytes).ok_or(())?)?;
    if ns < 0 {
        return Err(());
    }
    Ok(ns * 10_i64.pow((10 - nbytes) as u32))
}

/// Go's `parseTimeZone`: the length of a zone abbreviation at the start.
fn time_zone_len(value: &str) -> Option<usize> {
    let b = value.as_bytes();
    if b.len() < 3 {
        return None;
    }
    if value.starts_with("ChST") || value.starts_with("MeST") {
        return Some(4);
    }
    if let Some(rest) = value.strip_prefix("GMT") {
        return Some(3 + signed_offset_len(rest));
    }
    if matches!(b[0], b'+' | b'-') {
        return Some(signed_offset_len(value)).filter(|n| *n > 0);
    }
    let upper = b.iter().take(6).take_while(|c| c.is_ascii_uppercase()).count();
    match upper {
        5 if b[4] == b'T' => Some(5),
        4 if b[3] == b'T' || value.starts_with("WITA") => Some(4),
        3 => Some(3),
        _ => None,
    }
}

/// Go's `parseSignedOffset`: `+N`/`-N` with N at most 12, or 0.
fn signed_offset_len(value: &str) -> usize {
    let Some(sign) = value.as_bytes().first() else { return 0 };
    if !matches!(sign, b'+' | b'-') {
        return 0;
    }
    match leading_int(&value[1..]) {
        Ok((x, rest)) if rest.len() < value.len() - 1 && x <= 12 => value.len() - rest.len(),
        _ => 0,
    }
}

/// `time.ParseInLocation(layout, value, time.Local)` with Local = UTC.
pub(crate) fn parse(layout: &str, value: &str) -> Result<GoTime, String> {
    let (alayout, avalue) = (layout, value);
    let mut layout = layout;
    let mut value = value;
    let (mut year, mut month, mut day, mut yday) = (0_i64, -1_i64, -1_i64, -1_i64);
    let (mut hour, mut min, mut sec, mut nsec) = (0_i64, 0_i64, 0_i64, 0_i64);
    let (mut am, mut pm) = (false, false);
    let mut utc = false;
    let mut zone_offset: Option<i64> = None;
    let mut zone_name = String::new();
    let short_months = short(&LONG_MONTHS);
    let short_days = short(&LONG_DAYS);
    loop {
        let (prefix, std, suffix) = next_std(layout);
        let stdstr = &layout[prefix.len()..layout.len() - suffix.len()];
        value = skip(value, prefix).map_err(|()| parse_error(alayout, avalue, prefix, value, ""))?;
        let Some(std) = std else {
            if !value.is_empty() {
                return Err(parse_error(alayout, avalue, "", value, &format!(": extra text: {}", quote(value))));
            }
            break;
        };
        layout = suffix;
        let before = value;
        let mut range_err: Option<&str> = None;
        let result: Result<(), ()> = (|| {
            match std {
                Std::Year => {
                    let p = value.get(..2).ok_or(())?;
                    let y = atoi(p)?;
                    value = &value[2..];
                    year = if y >= 69 { y + 1900 } else { y + 2000 };
                }
                Std::LongYear => {
                    if value.len() < 4 || digit(value, 0).is_none() {
                        return Err(());
                    }
                    let p = value.get(..4).ok_or(())?;
                    year = atoi(p)?;
                    value = &value[4..];
                }
                Std::Month | Std::LongMonth => {
                    let names = if std == Std::Month { &short_months[..] } else { &LONG_MONTHS[..] };
                    let (m, rest) = lookup(names, value)?;
                    month = m as i64 + 1;
                    value = rest;
                }
                Std::NumMonth | Std::ZeroMonth => {
                    let (m, rest) = getnum(value, std == Std::ZeroMonth)?;
                    (month, value) = (m, rest);
                    if !(1..=12).contains(&month) {
                        range_err = Some("month");
                    }
                }
                Std::WeekDay | Std::LongWeekDay => {
                    let names = if std == Std::WeekDay { &short_days[..] } else { &LONG_DAYS[..] };
                    value = lookup(names, value)?.1;
                }
                Std::Day | Std::UnderDay | Std::ZeroDay => {
                    if std == Std::UnderDay && value.starts_with(' ') {
                        value = &value[1..];
                    }
                    (day, value) = getnum(value, std == Std::ZeroDay)?;
                }
                Std::UnderYearDay | Std::ZeroYearDay => {
                    for _ in 0..2 {
                        if std == Std::UnderYearDay && value.starts_with(' ') {
                            value = &value[1..];
                        }
                    }
                    (yday, value) = getnum3(value, std == Std::ZeroYearDay)?;
                }
                Std::Hour => {
                    (hour, value) = getnum(value, false)?;
                    if !(0..24).contains(&hour) {
                        range_err = Some("hour");
                    }
                }
                Std::Hour12 | Std::ZeroHour12 => {
                    (hour, value) = getnum(value, std == Std::ZeroHour12)?;
                    if !(0..=12).contains(&hour) {
                        range_err = Some("hour");
                    }
                }
                Std::Minute | Std::ZeroMinute => {
                    (min, value) = getnum(value, std == Std::ZeroMinute)?;
                    if !(0..60).contains(&min) {
                        range_err = Some("minute");
                    }
                }
                Std::Second | Std::ZeroSecond => {
                    (sec, value) = getnum(value, std == Std::ZeroSecond)?;
                    if !(0..60).contains(&sec) {
                        range_err = Some("second");
                        return Ok(());
                    }
                    // A fraction in the value that the layout does not
                    // ask for is read all the same.
                    if value.len() >= 2 && matches!(value.as_bytes()[0], b'.' | b',') && digit(value, 1).is_some() {
                        if matches!(next_std(layout).1, Some(Std::FracSecond0(..) | Std::FracSecond9(..))) {
                            return Ok(());
                        }
                        let mut n = 2;
                        while digit(value, n).is_some() {
                            n += 1;
                        }
                        nsec = parse_nanoseconds(value, n)?;
                        value = &value[n..];
                    }
                }
                Std::PM | Std::Pm => {
                    let p = value.get(..2).ok_or(())?;
                    let (am_text, pm_text) = if std == Std::PM { ("AM", "PM") } else { ("am", "pm") };
                    if p == pm_text {
                        pm = true;
                    } else if p == am_text {
                        am = true;
                    } else {
                        return Err(());
                    }
                    value = &value[2..];
                }
                Std::Iso8601Tz | Std::Iso8601ShortTz | Std::Iso8601ColonTz if value.starts_with('Z') => {
                    value = &value[1..];
                    utc = true;
                }
                Std::Iso8601Tz
                | Std::Iso8601ShortTz
                | Std::Iso8601ColonTz
                | Std::Iso8601SecondsTz
                | Std::Iso8601ColonSecondsTz
                | Std::NumTz
                | Std::NumShortTz
                | Std::NumColonTz
                | Std::NumSecondsTz
                | Std::NumColonSecondsTz => {
                    let b = value.as_bytes();
                    let part = |a: usize, z: usize| value.get(a..z).ok_or(());
                    let (sign, h, m, s, rest) = match std {
                        Std::Iso8601ColonTz | Std::NumColonTz => {
                            if b.len() < 6 || b[3] != b':' {
                                return Err(());
                            }
                            (part(0, 1)?, part(1, 3)?, part(4, 6)?, "00", part(6, b.len())?)
                        }
                        Std::NumShortTz | Std::Iso8601ShortTz => {
                            if b.len() < 3 {
                                return Err(());
                            }
                            (part(0, 1)?, part(1, 3)?, "00", "00", part(3, b.len())?)
                        }
                        Std::Iso8601ColonSecondsTz | Std::NumColonSecondsTz => {
                            if b.len() < 9 || b[3] != b':' || b[6] != b':' {
                                return Err(());
                            }
                            (part(0, 1)?, part(1, 3)?, part(4, 6)?, part(7, 9)?, part(9, b.len())?)
                        }
                        Std::Iso8601SecondsTz | Std::NumSecondsTz => {
                            if b.len() < 7 {
                                return Err(());
                            }
                            (part(0, 1)?, part(1, 3)?, part(3, 5)?, part(5, 7)?, part(7, b.len())?)
                        }
                        _ => {
                            if b.len() < 5 {
                                return Err(());
                            }
                            (part(0, 1)?, part(1, 3)?, part(3, 5)?, "00", part(5, b.len())?)
                        }
                    };
                    value = rest;
                    let offset = (atoi(h)? * 60 + atoi(m)?) * 60 + atoi(s)?;
                    zone_offset = Some(match sign {
                        "+" => offset,
                        "-" => -offset,
                        _ => return Err(()),
                    });
                }
                Std::Tz => {
                    if value.starts_with("UTC") {
                        utc = true;
                        value = &value[3..];
                        return Ok(());
                    }
                    let n = time_zone_len(value).ok_or(())?;
                    zone_name = value[..n].to_string();
                    value = &value[n..];
                }
                Std::FracSecond0(n, _) => {
                    let ndigit = 1 + n;
                    if value.len() < ndigit {
                        return Err(());
                    }
                    nsec = parse_nanoseconds(value, ndigit)?;
                    value = &value[ndigit..];
                }
                Std::FracSecond9(..) => {
                    if value.len() < 2 || !matches!(value.as_bytes()[0], b'.' | b',') || digit(value, 1).is_none() {
                        return Ok(()); // fraction omitted
                    }
                    let mut i = 0;
                    while i < 9 && digit(value, i + 1).is_some() {
                        i += 1;
                    }
                    nsec = parse_nanoseconds(value, 1 + i)?;
                    value = &value[1 + i..];
                }
            }
            Ok(())
        })();
        if let Some(what) = range_err {
            return Err(parse_error(alayout, avalue, stdstr, value, &format!(": {what} out of range")));
        }
        if result.is_err() {
            return Err(parse_error(alayout, avalue, stdstr, before, ""));
        }
    }
    if pm && hour < 12 {
        hour += 12;
    } else if am && hour == 12 {
        hour = 0;
    }
    if yday >= 0 {
        let (mut m, mut d) = (0, 0);
        if is_leap(year) {
            if yday == 31 + 29 {
                (m, d) = (2, 29);
            } else if yday > 31 + 29 {
                yday -= 1;
            }
        }
        if !(1..=365).contains(&yday) {
            return Err(parse_error(alayout, avalue, "", value, ": day-of-year out of range"));
        }
        if m == 0 {
            // Days before each month's first, in a common year.
            const BEFORE: [i64; 13] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334, 365];
            m = (yday - 1) / 31 + 1;
            if BEFORE[m as usize] < yday {
                m += 1;
            }
            d = yday - BEFORE[(m - 1) as usize];
        }
        if month >= 0 && month != m {
            return Err(parse_error(alayout, avalue, "", value, ": day-of-year does not match month"));
        }
        month = m;
        if day >= 0 && day != d {
            return Err(parse_error(alayout, avalue, "", value, ": day-of-year does not match day"));
        }
        day = d;
    } else {
        if month < 0 {
            month = 1;
        }
        if day < 0 {
            day = 1;
        }
    }
    if day < 1 || day > days_in(month, year) {
        return Err(parse_error(alayout, avalue, "", value, ": day out of range"));
    }
    // The wall clock read as UTC.
    let wall = days_from_civil(year, month, day) * 86_400 + hour * 3600 + min * 60 + sec;
    let nanos = nsec as u32;
    let utc_zone = |unix| GoTime { unix, nanos, zone: "UTC".into(), offset: 0 };
    if utc {
        return Ok(utc_zone(wall));
    }
    if let Some(offset) = zone_offset {
        // Local (UTC) has the offset 0, named UTC: a zero offset with no
        // other name is Local; anything else a fixed zone.
        if offset == 0 && (zone_name.is_empty() || zone_name == "UTC") {
            return Ok(utc_zone(wall));
        }
        return Ok(GoTime { unix: wall - offset, nanos, zone: zone_name, offset: offset as i32 });
    }
    if !zone_name.is_empty() {
        // Local (UTC) knows no abbreviation but UTC, which is taken above:
        // Go makes a zone of that name whose offset is unknown (0), or
        // GMT's hours, and keeps the wall clock as UTC's.
        let offset = match zone_name.strip_prefix("GMT") {
            Some(hours) if !hours.is_empty() => atoi(hours).unwrap_or(0) * 3600,
            _ => 0,
        };
        return Ok(GoTime { unix: wall, nanos, zone: zone_name, offset: offset as i32 });
    }
    Ok(utc_zone(wall))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_as_go() {
        let t = parse("2006-01-02", "2024-01-15").unwrap();
        assert_eq!(t.string(), "2024-01-15 00:00:00 +0000 UTC");
        assert_eq!(t.unix, 1_705_276_800);
        let t = parse("2006-01-02T15:04:05Z07:00", "2023-03-04T05:06:07+02:00").unwrap();
        assert_eq!(t.string(), "2023-03-04 05:06:07 +0200 +0200");
        assert_eq!(t.rfc3339_nano(), "2023-03-04T05:06:07+02:00");
        assert_eq!(t.utc().string(), "2023-03-04 03:06:07 +0000 UTC");
        let t = parse("Jan _2 15:04:05.000 MST 2006", "feb  3 04:05:06.789 PST 2021").unwrap();
        assert_eq!(t.string(), "2021-02-03 04:05:06.789 +0000 PST");
        assert_eq!(zero().string(), "0001-01-01 00:00:00 +0000 UTC");
        assert!(zero().is_zero());
        assert_eq!(parse("2006-002", "2024-060").unwrap().format("Jan 2 Monday"), "Feb 29 Thursday");
        assert_eq!(parse("3:04PM", "12:30AM").unwrap().format("15:04 pm"), "00:30 am");
        let t = parse("2006-01-02 15:04:05", "2020-01-01 00:00:00.5").unwrap();
        assert_eq!(t.add_nanos(-1_000_000_000).string(), "2019-12-31 23:59:59.5 +0000 UTC");
    }

    #[test]
    fn refuses_as_go_does() {
        for (layout, value, says) in [
            ("2006-01-02", "2024-02-30", "day out of range"),
            ("2006-01-02", "2024-13-01", "month out of range"),
            ("2006-01-02", "24-01-01", "cannot parse \"24-01-01\" as \"2006\""),
            ("2006-01-02", "2024-01-01x", "extra text: \"x\""),
            ("15:04", "24:00", "hour out of range"),
        ] {
            let e = parse(layout, value).unwrap_err();
            assert!(e.contains(says), "{layout} {value}: {e}");
        }
    }

    #[test]
    fn civil_days_round_trip() {
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
