//! The environment contract: Tinkerbell's writefile variables, with UID,
//! GID, MODE and DIRMODE optional (Tinkerbell makes them mandatory) and
//! CONTENTS_BASE64 for binary files.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use kiln_action_kit::Result;
use kiln_action_kit::env::Env;
use kiln_action_kit::mount::inside;

#[derive(Debug)]
pub struct Config {
    pub disk: PathBuf,
    pub fs_type: Option<String>,
    pub dest: String,
    pub contents: Vec<u8>,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub dirmode: u32,
}

impl Config {
    /// `contents` is CONTENTS exactly as the process got it: empty is a
    /// legitimate (empty) file, and only its absence is an error.
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
        let contents = match (contents, env.optional("CONTENTS_BASE64")) {
            (Some(_), Some(_)) => {
                env.invalid("CONTENTS_BASE64", "give CONTENTS or CONTENTS_BASE64, not both");
                None
            }
            (Some(raw), None) => Some(raw.into_vec()),
            (None, Some(_)) => env.parse_with("CONTENTS_BASE64", true, decode_base64),
            (None, None) => {
                env.invalid("CONTENTS", "is required (it may be empty: CONTENTS=\"\"), or give CONTENTS_BASE64");
                None
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
            contents: contents.expect("checked by finish"),
            uid,
            gid,
            mode,
            dirmode,
        })
    }
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
        for v in [
            "DEST_DISK: is required",
            "DEST_PATH: must be an absolute path",
            "CONTENTS: is required",
            "MODE:",
            "UID:",
            "DIRMODE:",
        ] {
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
        assert!(err.message.contains("CONTENTS_BASE64: give CONTENTS or CONTENTS_BASE64, not both"));
        let c = Config::from_env(env(&both), None).unwrap();
        assert_eq!(c.contents, b"hi");
        let bad = [("DEST_DISK", "/"), ("DEST_PATH", "/x"), ("CONTENTS_BASE64", "a!==")];
        assert!(Config::from_env(env(&bad), None).unwrap_err().message.contains("CONTENTS_BASE64: '!'"));
    }

    #[test]
    fn empty_contents_and_defaults() {
        let c = Config::from_env(env(&[("DEST_DISK", "/"), ("DEST_PATH", "/etc/empty")]), Some("".into())).unwrap();
        assert!(c.contents.is_empty());
        assert_eq!((c.uid, c.gid, c.mode, c.dirmode), (0, 0, 0o644, 0o755));
        let c = Config::from_env(
            env(&[("DEST_DISK", "/"), ("DEST_PATH", "/x"), ("UID", "1000"), ("GID", "50"), ("MODE", "0600")]),
            Some(OsString::from_vec(vec![0xff, 0, b'\n'])),
        )
        .unwrap();
        assert_eq!((c.uid, c.gid, c.mode), (1000, 50, 0o600));
        assert_eq!(c.contents, [0xff, 0, b'\n'], "non-UTF-8 bytes pass through untouched");
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
