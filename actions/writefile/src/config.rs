//! The environment contract: Tinkerbell's writefile variables, with UID,
//! GID, MODE and DIRMODE optional (Tinkerbell makes them mandatory) and
//! CONTENTS_BASE64 for binary files; plus the variables of EKS Anywhere's
//! writefile (BOOTCONFIG_CONTENTS, HEGEL_URLS, and the DHCP-to-static-IP
//! ones, see [`crate::dhcp`]). The file's contents come from exactly one of
//! CONTENTS, CONTENTS_BASE64, BOOTCONFIG_CONTENTS, HEGEL_URLS, STATIC_NETPLAN
//! and STATIC_BOTTLEROCKET; with none of them the file is empty (as the
//! hub's writefile writes it).

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use kiln_action_kit::Result;
use kiln_action_kit::env::Env;
use kiln_action_kit::mount::inside;

/// Where the file's contents come from.
#[derive(Debug, PartialEq)]
pub enum Source {
    /// CONTENTS, CONTENTS_BASE64, BOOTCONFIG_CONTENTS (already encoded), or
    /// nothing (empty).
    Bytes(Vec<u8>),
    /// HEGEL_URLS: the user-data of the first metadata service that answers.
    Hegel(Vec<String>),
    /// STATIC_NETPLAN / STATIC_BOTTLEROCKET: a DHCP offer written as
    /// static configuration (see [`crate::dhcp`]).
    Dhcp { bottlerocket: bool, ifname: Option<String>, timeout: std::time::Duration },
}

/// The version path EKS Anywhere's writefile asks Hegel for.
pub const HEGEL_USER_DATA: &str = "2009-04-04/user-data";

#[derive(Debug)]
pub struct Config {
    pub disk: PathBuf,
    pub fs_type: Option<String>,
    pub dest: String,
    pub source: Source,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub dirmode: u32,
}

impl Config {
    /// `contents` is CONTENTS exactly as the process got it (any bytes).
    pub fn from_env(mut env: Env, contents: Option<OsString>) -> Result<Config> {
        let disk = env.parse_with("DEST_DISK", true, kiln_action_kit::disk::resolve);
        let fs_type = env.optional("FS_TYPE");
        let dest = env.parse_with("DEST_PATH", true, |v| {
            if !v.starts_with('/') {
                return Err(format!("must be an absolute path, got {v:?}"));
            }
            if v.ends_with('/') || v.ends_with("/.") {
                return Err(format!("{v:?} names a directory, not a file"));
            }
            inside(Path::new("/"), v).map(|_| v.to_string())
        });
        let contents = contents.map(OsStringExt::into_vec).filter(|c| !c.is_empty());
        // EKS Anywhere's writefile takes one of its sources (an empty value
        // is unset); so does kiln, CONTENTS_BASE64 included.
        let given: Vec<&str> = [
            ("CONTENTS", contents.is_some()),
            ("CONTENTS_BASE64", env.get("CONTENTS_BASE64").is_some()),
            ("BOOTCONFIG_CONTENTS", env.raw("BOOTCONFIG_CONTENTS").is_some_and(|v| !v.is_empty())),
            ("HEGEL_URLS", env.get("HEGEL_URLS").is_some()),
            ("STATIC_NETPLAN", env.raw("STATIC_NETPLAN") == Some("true")),
            ("STATIC_BOTTLEROCKET", env.raw("STATIC_BOTTLEROCKET") == Some("true")),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect();
        if given.len() > 1 {
            let both = given.join(", ");
            env.invalid(given[1], format!("only one of {both} can be set"));
        }
        let source = match given.first().copied() {
            None => Some(Source::Bytes(Vec::new())),
            Some("CONTENTS") => contents.map(Source::Bytes),
            Some("CONTENTS_BASE64") => env.parse_with("CONTENTS_BASE64", true, decode_base64).map(Source::Bytes),
            Some("BOOTCONFIG_CONTENTS") => {
                let text = env.raw("BOOTCONFIG_CONTENTS").unwrap_or_default().to_string();
                match bootconfig(&text) {
                    Ok(b) => Some(Source::Bytes(b)),
                    Err(e) => {
                        env.invalid("BOOTCONFIG_CONTENTS", e);
                        None
                    }
                }
            }
            Some("HEGEL_URLS") => env.parse_with("HEGEL_URLS", true, hegel_urls).map(Source::Hegel),
            Some(mode) => {
                let timeout = env
                    .parse_with("DHCP_TIMEOUT", false, crate::dhcp::parse_go_duration)
                    .unwrap_or(std::time::Duration::from_secs(120));
                Some(Source::Dhcp {
                    bottlerocket: mode == "STATIC_BOTTLEROCKET",
                    ifname: env.optional("IFNAME"),
                    timeout,
                })
            }
        };
        let uid = env.number::<u32>("UID", false).unwrap_or(0);
        let gid = env.number::<u32>("GID", false).unwrap_or(0);
        let mode = env.octal("MODE", false, 0o7777).unwrap_or(0o644);
        let dirmode = env.octal("DIRMODE", false, 0o7777).unwrap_or(0o755);
        env.finish()?;
        Ok(Config {
            disk: disk.expect("checked by finish"),
            fs_type,
            dest: dest.expect("checked by finish"),
            source: source.expect("checked by finish"),
            uid,
            gid,
            mode,
            dirmode,
        })
    }
}

/// `a,b` → the user-data URL of each: `a/2009-04-04/user-data`, ... Each
/// must be an http(s) URL, as Go's url.ParseRequestURI wants an absolute one.
pub fn hegel_urls(v: &str) -> std::result::Result<Vec<String>, String> {
    v.split(',')
        .map(|u| {
            let u = kiln_action_kit::fetch::parse_url(u.trim())?;
            Ok(format!("{}/{HEGEL_USER_DATA}", u.trim_end_matches('/')))
        })
        .collect()
}

/// The kernel's bootconfig ("extra boot config") as `bootconfig -a TEXT
/// FILE` leaves an empty FILE: the text and a NUL, zeros up to a multiple
/// of 4 bytes, the size (padding included) and the byte sum of the text as
/// little-endian u32s, and the magic `#BOOTCONFIG\n`. Bottlerocket reads
/// its /bootconfig.data in this form.
pub fn bootconfig(text: &str) -> std::result::Result<Vec<u8>, String> {
    // The kernel's limit (XBC_DATA_MAX), NUL included.
    const MAX: usize = 32767;
    if text.len() + 1 > MAX {
        return Err(format!("{} bytes is more than the kernel's bootconfig limit of {MAX}", text.len() + 1));
    }
    if text.contains('\0') {
        return Err("contains a NUL byte".into());
    }
    let mut data = text.as_bytes().to_vec();
    data.push(0);
    let checksum = data.iter().fold(0u32, |sum, b| sum.wrapping_add(u32::from(*b)));
    data.resize(data.len().div_ceil(4) * 4, 0);
    let size = data.len() as u32;
    data.extend_from_slice(&size.to_le_bytes());
    data.extend_from_slice(&checksum.to_le_bytes());
    data.extend_from_slice(b"#BOOTCONFIG\n");
    Ok(data)
}

/// Standard base64 (RFC 4648), padding optional, whitespace ignored (so a
/// wrapped `base64` output pastes as is).
pub fn decode_base64(text: &str) -> std::result::Result<Vec<u8>, String> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let clean: Vec<u8> = text.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let data = clean.strip_suffix(b"==").or_else(|| clean.strip_suffix(b"=")).unwrap_or(&clean);
    // One leftover character carries 6 bits, not a whole byte: the text was
    // cut, and decoding it anyway would write a silently shorter file.
    if data.len() % 4 == 1 || (data.len() != clean.len() && !clean.len().is_multiple_of(4)) {
        return Err(format!("{} base64 characters is not a whole number of bytes (truncated?)", clean.len()));
    }
    let mut out = Vec::with_capacity(data.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for &c in data {
        let v = ALPHABET.iter().position(|a| *a == c).ok_or_else(|| format!("{:?} is not base64", c as char))?;
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn every_bad_variable_is_named() {
        let err =
            Config::from_env(env(&[("DEST_PATH", "etc/x"), ("MODE", "999"), ("UID", "-1"), ("DIRMODE", "rwx")]), None)
                .unwrap_err();
        assert_eq!(err.reason, "InvalidConfig");
        for v in ["DEST_DISK: is required", "DEST_PATH: must be an absolute path", "MODE:", "UID:", "DIRMODE:"] {
            assert!(err.message.contains(v), "{v} missing: {}", err.message);
        }
        let err =
            Config::from_env(env(&[("DEST_DISK", "/"), ("DEST_PATH", "/etc/../../x")]), Some("".into())).unwrap_err();
        assert!(err.message.contains("DEST_PATH: \"/etc/../../x\" must not contain '..'"), "{}", err.message);
        let err =
            Config::from_env(env(&[("DEST_DISK", "/nonexistent-disk"), ("DEST_PATH", "/etc/")]), None).unwrap_err();
        assert!(err.message.contains("DEST_DISK: /nonexistent-disk"), "{}", err.message);
        assert!(err.message.contains("names a directory"), "{}", err.message);
    }

    #[test]
    fn contents_or_base64_but_not_both() {
        let both = [("DEST_DISK", "/"), ("DEST_PATH", "/x"), ("CONTENTS_BASE64", "aGk=")];
        let err = Config::from_env(env(&both), Some("hi".into())).unwrap_err();
        assert!(err.message.contains("CONTENTS_BASE64: only one of CONTENTS, CONTENTS_BASE64 can be set"));
        let c = Config::from_env(env(&both), None).unwrap();
        assert_eq!(c.source, Source::Bytes(b"hi".to_vec()));
        let bad = [("DEST_DISK", "/"), ("DEST_PATH", "/x"), ("CONTENTS_BASE64", "a!==")];
        assert!(Config::from_env(env(&bad), None).unwrap_err().message.contains("CONTENTS_BASE64: '!'"));
    }

    #[test]
    fn empty_contents_and_defaults() {
        let c = Config::from_env(env(&[("DEST_DISK", "/"), ("DEST_PATH", "/etc/empty")]), Some("".into())).unwrap();
        assert_eq!(c.source, Source::Bytes(Vec::new()));
        assert_eq!((c.uid, c.gid, c.mode, c.dirmode), (0, 0, 0o644, 0o755));
        let c = Config::from_env(
            env(&[("DEST_DISK", "/"), ("DEST_PATH", "/x"), ("UID", "1000"), ("GID", "50"), ("MODE", "0600")]),
            Some(OsString::from_vec(vec![0xff, 0, b'\n'])),
        )
        .unwrap();
        assert_eq!((c.uid, c.gid, c.mode), (1000, 50, 0o600));
        assert_eq!(c.source, Source::Bytes(vec![0xff, 0, b'\n']), "non-UTF-8 bytes pass through untouched");
    }

    /// The hub's contract and EKS Anywhere's additions, row by row.
    #[test]
    fn environment_contract_table() {
        let base = [("DEST_DISK", "/"), ("DEST_PATH", "/x")];
        let with = |extra: &[(&str, &str)], contents: Option<&str>| {
            Config::from_env(env(&base.iter().chain(extra).copied().collect::<Vec<_>>()), contents.map(Into::into))
        };
        // CONTENTS unset or empty: an empty file. Defaults 0:0, 0644, 0755.
        for contents in [None, Some("")] {
            let c = with(&[], contents).unwrap();
            assert_eq!(c.source, Source::Bytes(Vec::new()));
            assert_eq!((c.uid, c.gid, c.mode, c.dirmode), (0, 0, 0o644, 0o755));
        }
        // The hub's octal forms: 0644, 644; Go's ParseUint(v, 8, 32) refuses 0o644
        // but kiln takes it (a superset).
        let c = with(&[("MODE", "600"), ("DIRMODE", "0700"), ("UID", "1000"), ("GID", "0")], Some("x")).unwrap();
        assert_eq!((c.mode, c.dirmode, c.uid, c.gid), (0o600, 0o700, 1000, 0));
        // HEGEL_URLS: comma separated, user-data of each.
        let c = with(&[("HEGEL_URLS", "http://10.0.0.1:50061,http://10.0.0.2:50061/")], None).unwrap();
        assert_eq!(
            c.source,
            Source::Hegel(vec![
                "http://10.0.0.1:50061/2009-04-04/user-data".into(),
                "http://10.0.0.2:50061/2009-04-04/user-data".into()
            ])
        );
        let err = with(&[("HEGEL_URLS", "10.0.0.1:50061")], None).unwrap_err();
        assert!(err.message.starts_with("HEGEL_URLS: "), "{}", err.message);
        // BOOTCONFIG_CONTENTS: encoded for the kernel.
        let c = with(&[("BOOTCONFIG_CONTENTS", "kernel {}\n")], None).unwrap();
        assert_eq!(c.source, Source::Bytes(bootconfig("kernel {}\n").unwrap()));
        // One source only.
        let err = with(&[("BOOTCONFIG_CONTENTS", "kernel {}"), ("HEGEL_URLS", "http://h")], Some("x")).unwrap_err();
        assert!(
            err.message
                .contains("BOOTCONFIG_CONTENTS: only one of CONTENTS, BOOTCONFIG_CONTENTS, HEGEL_URLS can be set"),
            "{}",
            err.message
        );
        // STATIC_* count only when exactly "true", as EKS Anywhere compares.
        with(&[("STATIC_NETPLAN", "1"), ("STATIC_BOTTLEROCKET", "false"), ("IFNAME", "eno1")], Some("x")).unwrap();
        let c = with(&[("STATIC_BOTTLEROCKET", "true"), ("IFNAME", "eno1"), ("DHCP_TIMEOUT", "30s")], None).unwrap();
        let timeout = std::time::Duration::from_secs(30);
        assert_eq!(c.source, Source::Dhcp { bottlerocket: true, ifname: Some("eno1".into()), timeout });
        let c = with(&[("STATIC_NETPLAN", "true")], None).unwrap();
        let timeout = std::time::Duration::from_secs(120);
        assert_eq!(c.source, Source::Dhcp { bottlerocket: false, ifname: None, timeout });
        let err = with(&[("STATIC_NETPLAN", "true")], Some("x")).unwrap_err();
        assert!(
            err.message.contains("STATIC_NETPLAN: only one of CONTENTS, STATIC_NETPLAN can be set"),
            "{}",
            err.message
        );
        let err = with(&[("STATIC_NETPLAN", "true"), ("DHCP_TIMEOUT", "2")], None).unwrap_err();
        assert!(err.message.starts_with("DHCP_TIMEOUT: expected a Go duration"), "{}", err.message);
        // Unset MODE etc. are kiln defaults; malformed ones are named.
        for (var, v) in [("MODE", "rw"), ("DIRMODE", "8"), ("UID", "root"), ("GID", "-1")] {
            let err = with(&[(var, v)], None).unwrap_err();
            assert!(err.message.starts_with(&format!("{var}: ")), "{var}={v}: {}", err.message);
        }
    }

    /// The layout the kernel's tools/bootconfig writes (checked against
    /// tools/bootconfig/main.c: apply_xbc).
    #[test]
    fn bootconfig_footer() {
        let b = bootconfig("kernel {}").unwrap();
        // "kernel {}" + NUL = 10 bytes, padded to 12.
        assert_eq!(&b[..12], b"kernel {}\0\0\0");
        assert_eq!(u32::from_le_bytes(b[12..16].try_into().unwrap()), 12);
        let sum: u32 = b"kernel {}".iter().map(|c| u32::from(*c)).sum();
        assert_eq!(u32::from_le_bytes(b[16..20].try_into().unwrap()), sum);
        assert_eq!(&b[20..], b"#BOOTCONFIG\n");
        assert_eq!(bootconfig("abc").unwrap().len(), 4 + 8 + 12, "abc+NUL needs no padding");
        assert!(bootconfig(&"x".repeat(40000)).unwrap_err().contains("limit"));
    }

    #[test]
    fn base64_forms() {
        assert_eq!(decode_base64("aGVsbG8gd29ybGQ=").unwrap(), b"hello world");
        assert_eq!(decode_base64("aGVsbG8gd29ybGQ").unwrap(), b"hello world");
        assert_eq!(decode_base64("aGVs\nbG8=\n").unwrap(), b"hello");
        assert_eq!(decode_base64("AP8=").unwrap(), [0x00, 0xff]);
        assert_eq!(decode_base64("").unwrap(), b"");
        assert!(decode_base64("!!").unwrap_err().contains("not base64"));
        assert!(decode_base64("aGVsb").unwrap_err().contains("truncated"));
        assert!(decode_base64("aGk==").unwrap_err().contains("truncated"));
    }
}
