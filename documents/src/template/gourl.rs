//! Go's `net/url` (1.19) as Sprig's `urlParse` and `urlJoin` use it:
//! `url.Parse` and `URL.String`.
//!
//! Go's strings are bytes: a `%FF` unescapes to a byte that is not UTF-8.
//! The work is done on bytes so that what goes back through `escape` is
//! exact; only text handed to a template is made UTF-8 (U+FFFD for a broken
//! sequence, the documented difference of every byte-cutting function).

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Path,
    Host,
    Zone,
    UserPassword,
    Fragment,
}

/// Go's `shouldEscape` for the modes these functions use.
fn should_escape(c: u8, mode: Mode) -> bool {
    if c.is_ascii_alphanumeric() {
        return false;
    }
    if matches!(mode, Mode::Host | Mode::Zone)
        && matches!(
            c,
            b'!' | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'['
                | b']'
                | b'<'
                | b'>'
                | b'"'
        )
    {
        return false;
    }
    match c {
        b'-' | b'_' | b'.' | b'~' => return false,
        b'$' | b'&' | b'+' | b',' | b'/' | b':' | b';' | b'=' | b'?' | b'@' => match mode {
            Mode::Path => return c == b'?',
            Mode::UserPassword => return matches!(c, b'@' | b'/' | b'?' | b':'),
            Mode::Fragment => return false,
            // Host and zone fall through to "escape" as Go's switch does.
            Mode::Host | Mode::Zone => {}
        },
        _ => {}
    }
    if mode == Mode::Fragment && matches!(c, b'!' | b'(' | b')' | b'*') {
        return false;
    }
    true
}

fn unhex(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => 0,
    }
}

/// Go's `unescape`: `%XX` decoded; an ill-formed escape, a `%`-escaped
/// ASCII byte in a host, or a byte a host may not hold is an error.
fn unescape(s: &[u8], mode: Mode) -> Result<Vec<u8>, String> {
    let invalid_escape = |at: usize| {
        let end = (at + 3).min(s.len());
        format!("invalid URL escape {:?}", String::from_utf8_lossy(&s[at..end]))
    };
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'%' => {
                if i + 2 >= s.len() || !s[i + 1].is_ascii_hexdigit() || !s[i + 2].is_ascii_hexdigit() {
                    return Err(invalid_escape(i));
                }
                let escaped = &s[i..i + 3];
                if mode == Mode::Host && unhex(s[i + 1]) < 8 && escaped != b"%25" {
                    return Err(invalid_escape(i));
                }
                if mode == Mode::Zone {
                    let v = unhex(s[i + 1]) << 4 | unhex(s[i + 2]);
                    if escaped != b"%25" && v != b' ' && should_escape(v, Mode::Host) {
                        return Err(invalid_escape(i));
                    }
                }
                i += 3;
            }
            c => {
                if matches!(mode, Mode::Host | Mode::Zone) && c < 0x80 && should_escape(c, mode) {
                    return Err(format!("invalid character {:?} in host name", char::from(c)));
                }
                i += 1;
            }
        }
    }
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            out.push(unhex(s[i + 1]) << 4 | unhex(s[i + 2]));
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// Go's `escape`: `%XX` (upper-case hex) for each byte the mode escapes.
fn escape(s: &[u8], mode: Mode) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    for &c in s {
        if should_escape(c, mode) {
            out.extend_from_slice(format!("%{c:02X}").as_bytes());
        } else {
            out.push(c);
        }
    }
    out
}

/// A user name and, when the URL had a `:`, a password.
type Userinfo = (Vec<u8>, Option<Vec<u8>>);

fn userinfo_string(user: &Userinfo) -> Vec<u8> {
    let mut s = escape(&user.0, Mode::UserPassword);
    if let Some(password) = &user.1 {
        s.push(b':');
        s.extend(escape(password, Mode::UserPassword));
    }
    s
}

/// The parts of a parsed URL that `urlParse` shows, decoded as Go's
/// `URL` fields hold them.
#[derive(Default)]
struct Url {
    scheme: Vec<u8>,
    opaque: Vec<u8>,
    user: Option<Userinfo>,
    host: Vec<u8>,
    path: Vec<u8>,
    raw_query: Vec<u8>,
    fragment: Vec<u8>,
}

fn cut(s: &[u8], sep: u8) -> (&[u8], Option<&[u8]>) {
    match s.iter().position(|&c| c == sep) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    }
}

/// Go's `url.Parse`; the error is Go's message.
fn parse(raw: &[u8]) -> Result<Url, String> {
    let (u, frag) = cut(raw, b'#');
    let quoted = |s: &[u8]| format!("{:?}", String::from_utf8_lossy(s));
    let mut url = parse_without_fragment(u).map_err(|e| format!("parse {}: {e}", quoted(u)))?;
    if let Some(frag) = frag.filter(|f| !f.is_empty()) {
        url.fragment = unescape(frag, Mode::Fragment).map_err(|e| format!("parse {}: {e}", quoted(raw)))?;
    }
    Ok(url)
}

fn parse_without_fragment(raw: &[u8]) -> Result<Url, String> {
    if raw.iter().any(|&b| b < b' ' || b == 0x7f) {
        return Err("net/url: invalid control character in URL".into());
    }
    let mut url = Url::default();
    if raw == b"*" {
        url.path = b"*".to_vec();
        return Ok(url);
    }
    // A scheme is [a-zA-Z][a-zA-Z0-9+.-]* before the first ':'.
    let mut rest = raw;
    for (i, &c) in raw.iter().enumerate() {
        match c {
            b'a'..=b'z' | b'A'..=b'Z' => {}
            b'0'..=b'9' | b'+' | b'-' | b'.' if i > 0 => {}
            b':' if i == 0 => return Err("missing protocol scheme".into()),
            b':' => {
                url.scheme = raw[..i].to_ascii_lowercase();
                rest = &raw[i + 1..];
                break;
            }
            _ => break,
        }
    }
    let (before_query, query) = cut(rest, b'?');
    rest = before_query;
    url.raw_query = query.unwrap_or_default().to_vec();

    if !rest.starts_with(b"/") {
        if !url.scheme.is_empty() {
            // A rootless path after a scheme is opaque (RFC 3986).
            url.opaque = rest.to_vec();
            return Ok(url);
        }
        if cut(rest, b'/').0.contains(&b':') {
            return Err("first path segment in URL cannot contain colon".into());
        }
    }
    if (!url.scheme.is_empty() || !rest.starts_with(b"///")) && rest.starts_with(b"//") {
        let authority = &rest[2..];
        let (authority, path) = match authority.iter().position(|&c| c == b'/') {
            Some(i) => (&authority[..i], &authority[i..]),
            None => (authority, &b""[..]),
        };
        (url.user, url.host) = parse_authority(authority)?;
        rest = path;
    }
    url.path = unescape(rest, Mode::Path)?;
    Ok(url)
}

fn parse_authority(authority: &[u8]) -> Result<(Option<Userinfo>, Vec<u8>), String> {
    let at = authority.iter().rposition(|&c| c == b'@');
    let host = parse_host(at.map_or(authority, |i| &authority[i + 1..]))?;
    let Some(at) = at else { return Ok((None, host)) };
    let userinfo = &authority[..at];
    let valid = |c: &u8| {
        c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.'
                    | b'_'
                    | b':'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b'%'
                    | b'@'
            )
    };
    if !userinfo.iter().all(valid) {
        return Err("net/url: invalid userinfo".into());
    }
    let user = match cut(userinfo, b':') {
        (name, None) => (unescape(name, Mode::UserPassword)?, None),
        (name, Some(password)) => (unescape(name, Mode::UserPassword)?, Some(unescape(password, Mode::UserPassword)?)),
    };
    Ok((Some(user), host))
}

/// `:` followed by digits, or nothing.
fn valid_optional_port(port: &[u8]) -> bool {
    match port.split_first() {
        None => true,
        Some((b':', digits)) => digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    }
}

fn parse_host(host: &[u8]) -> Result<Vec<u8>, String> {
    let bad_port = |p: &[u8]| format!("invalid port {:?} after host", String::from_utf8_lossy(p));
    if host.starts_with(b"[") {
        // An IP literal, with an RFC 6874 zone after %25.
        let Some(close) = host.iter().rposition(|&c| c == b']') else {
            return Err("missing ']' in host".into());
        };
        if !valid_optional_port(&host[close + 1..]) {
            return Err(bad_port(&host[close + 1..]));
        }
        if let Some(zone) = host[..close].windows(3).position(|w| w == b"%25") {
            let mut out = unescape(&host[..zone], Mode::Host)?;
            out.extend(unescape(&host[zone..close], Mode::Zone)?);
            out.extend(unescape(&host[close..], Mode::Host)?);
            return Ok(out);
        }
    } else if let Some(colon) = host.iter().rposition(|&c| c == b':')
        && !valid_optional_port(&host[colon..])
    {
        return Err(bad_port(&host[colon..]));
    }
    unescape(host, Mode::Host)
}

/// Go's `URL.Hostname`: the host without a numeric port or IPv6 brackets.
fn hostname(host: &[u8]) -> &[u8] {
    let mut h = host;
    if let Some(colon) = h.iter().rposition(|&c| c == b':')
        && valid_optional_port(&h[colon..])
    {
        h = &h[..colon];
    }
    if h.len() >= 2 && h.starts_with(b"[") && h.ends_with(b"]") {
        h = &h[1..h.len() - 1];
    }
    h
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Sprig's `urlParse`: the parts of a URL, with these keys.
pub fn url_parse(raw: &str) -> Result<Vec<(&'static str, String)>, String> {
    let url = parse(raw.as_bytes()).map_err(|e| format!("unable to parse url: {e}"))?;
    Ok(vec![
        ("fragment", text(&url.fragment)),
        ("host", text(&url.host)),
        ("hostname", text(hostname(&url.host))),
        ("opaque", text(&url.opaque)),
        ("path", text(&url.path)),
        ("query", text(&url.raw_query)),
        ("scheme", text(&url.scheme)),
        ("userinfo", url.user.as_ref().map(|u| text(&userinfo_string(u))).unwrap_or_default()),
    ])
}

/// The parts `urlJoin` reads, each "" when absent: scheme, host, path,
/// query, opaque, fragment, userinfo.
pub struct Parts<'a> {
    pub scheme: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub opaque: &'a str,
    pub fragment: &'a str,
    pub userinfo: &'a str,
}

/// Sprig's `urlJoin`: Go's `URL.String` of a URL made of the parts, the
/// userinfo read as `url.Parse` reads `proto://USERINFO@host` (so what
/// follows a `/`, `?` or `#` in it is not user information).
pub fn url_join(p: &Parts<'_>) -> Result<String, String> {
    let user = if p.userinfo.is_empty() {
        None
    } else {
        parse(format!("proto://{}@host", p.userinfo).as_bytes())
            .map_err(|e| format!("unable to parse userinfo in dict: {e}"))?
            .user
    };
    let mut buf: Vec<u8> = Vec::new();
    if !p.scheme.is_empty() {
        buf.extend_from_slice(p.scheme.as_bytes());
        buf.push(b':');
    }
    if !p.opaque.is_empty() {
        buf.extend_from_slice(p.opaque.as_bytes());
    } else {
        if !p.scheme.is_empty() || !p.host.is_empty() || user.is_some() {
            if !p.host.is_empty() || !p.path.is_empty() || user.is_some() {
                buf.extend_from_slice(b"//");
            }
            if let Some(user) = &user {
                buf.extend(userinfo_string(user));
                buf.push(b'@');
            }
            buf.extend(escape(p.host.as_bytes(), Mode::Host));
        }
        let path = if p.path == "*" { b"*".to_vec() } else { escape(p.path.as_bytes(), Mode::Path) };
        if !path.is_empty() && path[0] != b'/' && !p.host.is_empty() {
            buf.push(b'/');
        }
        // A first segment with a colon would read as a scheme (RFC 3986 4.2).
        if buf.is_empty() && cut(&path, b'/').0.contains(&b':') {
            buf.extend_from_slice(b"./");
        }
        buf.extend(path);
    }
    if !p.query.is_empty() {
        buf.push(b'?');
        buf.extend_from_slice(p.query.as_bytes());
    }
    if !p.fragment.is_empty() {
        buf.push(b'#');
        buf.extend(escape(p.fragment.as_bytes(), Mode::Fragment));
    }
    Ok(text(&buf))
}
