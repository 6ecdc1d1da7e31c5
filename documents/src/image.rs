//! Container image references, parsed by Docker's grammar
//! (distribution/reference): `[registry/]path[:tag][@algo:hex]`.
//!
//! Parsed here rather than split on `:` because a naive split breaks on
//! registry ports and digests, and because an invalid reference must be
//! rejected when a template is applied, not when a machine tries to pull it.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// `host[:port]`; `docker.io` when the reference names none.
    pub registry: String,
    /// Path inside the registry, e.g. `library/busybox`.
    pub repository: String,
    /// Absent only when a digest pins the image.
    pub tag: Option<String>,
    /// `sha256:<64 hex>` or `sha512:<128 hex>`.
    pub digest: Option<String>,
}

const DEFAULT_REGISTRY: &str = "docker.io";
/// Docker's limit for `registry/repository`.
const MAX_NAME: usize = 255;

impl ImageRef {
    pub fn parse(s: &str) -> Result<ImageRef, String> {
        let bad = |why: &str| Err(format!("invalid image reference {s:?}: {why}"));
        if s.is_empty() {
            return bad("empty");
        }
        if s.len() > 255 + 128 + 64 {
            return bad("too long");
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return bad("contains whitespace");
        }
        let (name_tag, digest) = match s.split_once('@') {
            Some((n, d)) => (n, Some(d)),
            None => (s, None),
        };
        if let Some(d) = digest
            && let Err(why) = check_digest(d)
        {
            return bad(&why);
        }
        // A tag follows the last ':' that comes after the last '/'.
        let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_tag[last_slash..].rfind(':') {
            Some(i) => (&name_tag[..last_slash + i], Some(&name_tag[last_slash + i + 1..])),
            None => (name_tag, None),
        };
        if let Some(t) = tag
            && !valid_tag(t)
        {
            return bad(&format!("tag {t:?} must be 1-128 of [A-Za-z0-9_.-] and not start with '.' or '-'"));
        }
        let mut parts: Vec<&str> = name.split('/').collect();
        let registry = if parts.len() > 1 && looks_like_registry(parts[0]) {
            let host = parts.remove(0);
            if let Err(why) = check_registry(host) {
                return bad(&why);
            }
            host.to_string()
        } else {
            DEFAULT_REGISTRY.to_string()
        };
        for p in &parts {
            if p.is_empty() {
                return bad("empty path component");
            }
            if !valid_component(p) {
                if p.chars().any(|c| c.is_ascii_uppercase()) {
                    return bad("repository must be lower case");
                }
                return bad(&format!("path component {p:?} must be [a-z0-9] separated by '.', '_', '__' or '-'"));
            }
        }
        let full = registry.len() + 1 + parts.iter().map(|p| p.len() + 1).sum::<usize>() - 1;
        if full > MAX_NAME {
            return bad(&format!("the name is longer than {MAX_NAME} characters"));
        }
        // Docker's own spelling of its hub, as `docker pull` normalises it.
        let registry = if registry == "index.docker.io" { DEFAULT_REGISTRY.to_string() } else { registry };
        if registry == DEFAULT_REGISTRY && parts.len() == 1 {
            parts.insert(0, "library");
        }
        let tag = match (tag, digest) {
            (None, None) => Some("latest".to_string()),
            (t, _) => t.map(str::to_string),
        };
        Ok(ImageRef { registry, repository: parts.join("/"), tag, digest: digest.map(str::to_string) })
    }

    /// `from_image` for Docker's create-image call.
    pub fn pull_name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// `tag` for Docker's create-image call: the digest wins over the tag.
    pub fn pull_tag(&self) -> String {
        self.digest.clone().or_else(|| self.tag.clone()).unwrap_or_else(|| "latest".into())
    }

    pub fn is_digest(&self) -> bool {
        self.digest.is_some()
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

fn looks_like_registry(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost"
}

/// `host[:port]` where host is a DNS name, an IPv4 address or a bracketed
/// IPv6 address.
fn check_registry(host: &str) -> Result<(), String> {
    let (name, port) = if let Some(v6) = host.strip_prefix('[') {
        let (addr, rest) = v6.split_once(']').ok_or_else(|| format!("registry host {host:?} has no closing ]"))?;
        if addr.is_empty() || !addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return Err(format!("registry host [{addr}] is not an IPv6 address"));
        }
        match rest {
            "" => (None, None),
            _ => match rest.strip_prefix(':') {
                Some(p) => (None, Some(p)),
                None => return Err(format!("registry host {host:?}: expected :PORT after ]")),
            },
        }
    } else {
        match host.rsplit_once(':') {
            Some((n, p)) => (Some(n), Some(p)),
            None => (Some(host), None),
        }
    };
    if let Some(p) = port
        && (p.is_empty()
            || p.len() > 5
            || !p.bytes().all(|b| b.is_ascii_digit())
            || p.parse::<u32>().unwrap_or(0) > 65535)
    {
        return Err(format!("registry port {p:?} is not a port number"));
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if let Some(name) = name
        && (name.is_empty() || !name.split('.').all(label_ok))
    {
        return Err(format!("registry host {name:?} is not a host name or IPv4 address"));
    }
    Ok(())
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-')
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_component(p: &str) -> bool {
    let b = p.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &p[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-')) {
            return false;
        }
    }
    true
}

fn check_digest(d: &str) -> Result<(), String> {
    let (algo, hex) = d.split_once(':').ok_or_else(|| format!("digest {d:?} must be ALGORITHM:HEX"))?;
    let len = match algo {
        "sha256" => 64,
        "sha512" => 128,
        _ => {
            return Err(format!("digest algorithm {algo:?} must be sha256 or sha512"));
        }
    };
    if hex.len() != len || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(format!("{algo} digest must be {len} lower-case hex digits"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn parses_the_usual_forms() {
        let r = ImageRef::parse("busybox").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        assert_eq!((r.pull_name().as_str(), r.pull_tag().as_str()), ("docker.io/library/busybox", "latest"));
        let r = ImageRef::parse("127.0.0.1:5000/actions/image2disk:v1.0.0").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "actions/image2disk");
        assert_eq!(r.tag.as_deref(), Some("v1.0.0"));
        let r = ImageRef::parse("quay.io/tinkerbell-actions/image2disk:v1.0.0").unwrap();
        assert_eq!(r.registry, "quay.io");
        let r = ImageRef::parse(&format!("localhost/a/b@sha256:{HEX}")).unwrap();
        assert!(r.is_digest());
        assert_eq!(r.tag, None);
        assert_eq!(r.pull_tag(), format!("sha256:{HEX}"));
        let r = ImageRef::parse(&format!("reg:5000/x:v2@sha256:{HEX}")).unwrap();
        assert_eq!(r.to_string(), format!("reg:5000/x:v2@sha256:{HEX}"));
        assert_eq!(ImageRef::parse("user/repo").unwrap().repository, "user/repo");
        assert!(ImageRef::parse("a__b/c-d---e/f.g_h:tag").is_ok());
    }

    #[test]
    fn follows_dockers_normalisation() {
        for (input, canonical, pull_name, pull_tag) in [
            ("busybox", "docker.io/library/busybox:latest", "docker.io/library/busybox", "latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36", "docker.io/library/busybox", "1.36"),
            ("docker.io/busybox", "docker.io/library/busybox:latest", "docker.io/library/busybox", "latest"),
            (
                "index.docker.io/library/busybox",
                "docker.io/library/busybox:latest",
                "docker.io/library/busybox",
                "latest",
            ),
            ("localhost/x", "localhost/x:latest", "localhost/x", "latest"),
            ("localhost:5000/x/y", "localhost:5000/x/y:latest", "localhost:5000/x/y", "latest"),
            ("localhost:5000", "docker.io/library/localhost:5000", "docker.io/library/localhost", "5000"),
            ("127.0.0.1:5000/actions/x:v1", "127.0.0.1:5000/actions/x:v1", "127.0.0.1:5000/actions/x", "v1"),
            ("[::1]:5000/actions/x:v1", "[::1]:5000/actions/x:v1", "[::1]:5000/actions/x", "v1"),
            ("[fe80::1]/x", "[fe80::1]/x:latest", "[fe80::1]/x", "latest"),
            ("Registry.Example.COM/x", "Registry.Example.COM/x:latest", "Registry.Example.COM/x", "latest"),
            ("ghcr.io/a/b/c/d:_tag", "ghcr.io/a/b/c/d:_tag", "ghcr.io/a/b/c/d", "_tag"),
        ] {
            let r = ImageRef::parse(input).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(r.to_string(), canonical, "{input}");
            assert_eq!((r.pull_name().as_str(), r.pull_tag().as_str()), (pull_name, pull_tag), "{input}");
            assert!(!r.is_digest());
            assert_eq!(ImageRef::parse(&r.to_string()).unwrap(), r, "the canonical form parses to itself");
        }
        let pinned = format!("quay.io/x/y:v1@sha512:{}", HEX.repeat(2));
        let r = ImageRef::parse(&pinned).unwrap();
        assert_eq!((r.tag.as_deref(), r.pull_tag()), (Some("v1"), format!("sha512:{}", HEX.repeat(2))));
        assert_eq!(r.to_string(), pinned);
    }

    #[test]
    fn rejects_bad_references_with_a_reason() {
        for (input, why) in [
            ("", "empty"),
            ("Foo", "lower case"),
            ("Not A/Valid::Image", "whitespace"),
            ("reg:5000/x::y", "path component"),
            ("x/", "empty path"),
            ("a//b", "empty path"),
            ("a:-tag", "tag"),
            ("a@sha256:abc", "64"),
            ("a@md5:abc", "sha256 or sha512"),
            ("reg:99999/x", "port"),
            ("-bad.io/x", "registry host"),
            ("a..b", "path component"),
            ("repo:tag@", "digest"),
            ("repo@sha256:ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789", "lower-case hex"),
            ("busybox:", "tag"),
            (":tag", "empty path"),
            ("/busybox", "empty path"),
            ("reg.io/", "empty path"),
            ("a:b:c", "path component"),
            ("a/b_/c", "path component"),
            ("a/-b", "path component"),
            ("a/b___c", "path component"),
            ("\tbusybox", "whitespace"),
            ("reg.io:/x", "port"),
            ("[::1/x", "closing ]"),
            ("[zz]:5000/x", "IPv6"),
            ("[::1]x/y", ":PORT"),
            ("reg_io.com/x", "registry host"),
            ("busybox:-x", "tag"),
            ("a@sha256:abc@sha256:def", "digest"),
        ] {
            let err = ImageRef::parse(input).unwrap_err();
            assert!(err.contains(why), "{input:?}: {err}");
            assert!(err.starts_with(&format!("invalid image reference {input:?}: ")), "{err}");
        }
        let long = format!("reg.io/{}", "a".repeat(250));
        assert!(ImageRef::parse(&long).unwrap_err().contains("longer than 255"));
        assert!(ImageRef::parse(&format!("x:{}", "t".repeat(129))).unwrap_err().contains("tag"));
        assert!(ImageRef::parse(&format!("x:{}", "t".repeat(128))).is_ok());
    }

    #[test]
    fn never_panics() {
        let pieces = ["a", "A", "/", ":", "@", ".", "-", "_", "[", "]", "sha256:", "5000", "é", " ", "localhost"];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            let mut s = String::new();
            for _ in 0..seed % 10 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                s.push_str(pieces[(seed % pieces.len() as u64) as usize]);
            }
            if let Ok(r) = ImageRef::parse(&s) {
                assert_eq!(ImageRef::parse(&r.to_string()).as_ref(), Ok(&r), "{s:?}");
            }
        }
    }
}

/// Which images may run: registries or repository prefixes, optionally
/// only by digest. Patterns compare parsed references, not strings, so
/// `reg.io/kiln` allows `reg.io/kiln/disk` but not `reg.io/kiln-evil/disk`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImagePolicy {
    /// `host[:port]` or `host[:port]/path`; empty allows every registry.
    allowed: Vec<(String, String)>,
    pub digests_only: bool,
}

impl ImagePolicy {
    pub fn new(patterns: &[String], digests_only: bool) -> Result<Self, String> {
        let mut allowed = Vec::new();
        for p in patterns {
            let p = p.trim().trim_end_matches('/');
            let (host, path) = p.split_once('/').unwrap_or((p, ""));
            if host.is_empty()
                || check_registry(host).is_err()
                || (!path.is_empty() && !path.split('/').all(valid_component))
            {
                return Err(format!("allowed image pattern {p:?} must be REGISTRY[:PORT][/PATH]"));
            }
            allowed.push((host.to_string(), path.to_string()));
        }
        Ok(Self { allowed, digests_only })
    }

    pub fn is_open(&self) -> bool {
        self.allowed.is_empty() && !self.digests_only
    }

    /// `Err` says why `image` may not run.
    pub fn check(&self, image: &ImageRef) -> Result<(), String> {
        if self.digests_only && !image.is_digest() {
            return Err(format!("image {image} is not pinned by digest, and only @sha256 references are allowed"));
        }
        let allowed = self.allowed.is_empty()
            || self.allowed.iter().any(|(host, path)| {
                *host == image.registry
                    && (path.is_empty()
                        || image.repository == *path
                        || image.repository.strip_prefix(path.as_str()).is_some_and(|rest| rest.starts_with('/')))
            });
        if allowed {
            Ok(())
        } else {
            let list: Vec<String> =
                self.allowed.iter().map(|(h, p)| if p.is_empty() { h.clone() } else { format!("{h}/{p}") }).collect();
            Err(format!("image {image} is not from an allowed registry (allowed: {})", list.join(", ")))
        }
    }
}

#[cfg(test)]
mod policy_tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn allows_by_registry_and_path_component() {
        let p = ImagePolicy::new(&["reg.io/kiln".into(), "127.0.0.1:5000".into()], false).unwrap();
        let ok = |s: &str| p.check(&ImageRef::parse(s).unwrap());
        assert!(ok("reg.io/kiln/disk:v1").is_ok());
        assert!(ok("reg.io/kiln:v1").is_ok());
        assert!(ok("127.0.0.1:5000/anything/at/all:v1").is_ok());
        assert!(ok("reg.io/kiln-evil/disk:v1").unwrap_err().contains("not from an allowed registry"));
        assert!(ok("reg.io/other:v1").is_err());
        assert!(ok("busybox").is_err(), "docker.io is not allowed");
        assert!(ImagePolicy::default().check(&ImageRef::parse("busybox").unwrap()).is_ok());
    }

    #[test]
    fn digests_only() {
        let p = ImagePolicy::new(&[], true).unwrap();
        assert!(p.check(&ImageRef::parse("reg.io/x:v1").unwrap()).unwrap_err().contains("digest"));
        assert!(p.check(&ImageRef::parse(&format!("reg.io/x@sha256:{HEX}")).unwrap()).is_ok());
        assert!(ImagePolicy::new(&["bad host/x".into()], false).is_err());
    }
}
