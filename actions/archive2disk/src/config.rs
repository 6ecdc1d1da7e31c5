//! The environment contract: Tinkerbell's archive2disk variables, with more
//! archive types, ARCHIVE_TYPE optional (the magic bytes decide) and
//! resumable downloads. `HTTP_CLIENT_TIMEOUT_MINUTES` is the hub's: the
//! whole download must end within it (default 5; 0 or less: no limit, as
//! Go's `http.Client.Timeout`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use kiln_action_kit::Result;
use kiln_action_kit::checksum::Checksum;
use kiln_action_kit::decompress::Format;
use kiln_action_kit::env::Env;
use kiln_action_kit::fetch::{RetryPolicy, parse_url};
use kiln_action_kit::mount::inside;

#[derive(Debug)]
pub struct Config {
    pub disk: PathBuf,
    pub fs_type: Option<String>,
    pub url: String,
    /// None: whatever the magic bytes say.
    pub format: Option<Format>,
    pub dest: String,
    /// None only when waived with INSECURE_NO_TARFILE_CHECKSUM_VERIFICATION.
    pub checksum: Option<Checksum>,
    pub retry: RetryPolicy,
}

/// Tinkerbell's default for HTTP_CLIENT_TIMEOUT_MINUTES.
pub const DEFAULT_HTTP_TIMEOUT_MINUTES: u64 = 5;

pub fn archive_type(v: &str) -> std::result::Result<Format, String> {
    Ok(match v.to_ascii_lowercase().as_str() {
        "tar" => Format::Raw,
        "targz" | "tar.gz" | "tgz" => Format::Gzip,
        "tarzst" | "tar.zst" | "tzst" => Format::Zstd,
        "tarxz" | "tar.xz" | "txz" => Format::Xz,
        "tarbz2" | "tar.bz2" | "tbz2" => Format::Bzip2,
        other => return Err(format!("{other:?} is not one of tar, targz, tarzst, tarxz, tarbz2")),
    })
}

impl Config {
    pub fn from_env(mut env: Env) -> Result<Config> {
        let disk = env.parse_with("DEST_DISK", true, kiln_action_kit::disk::resolve);
        let fs_type = env.optional("FS_TYPE");
        let url = env.parse_with("ARCHIVE_URL", true, parse_url);
        let format = env.parse_with("ARCHIVE_TYPE", false, archive_type);
        let dest = env
            .parse_with("DEST_PATH", false, |v| {
                if !v.starts_with('/') {
                    return Err(format!("must be an absolute path, got {v:?}"));
                }
                inside(Path::new("/"), v).map(|_| v.to_string())
            })
            .unwrap_or_else(|| "/".into());
        let insecure = env.flag("INSECURE_NO_TARFILE_CHECKSUM_VERIFICATION", false);
        let checksum = match env.parse_with("TARFILE_CHECKSUM", false, Checksum::parse) {
            None if !insecure && env.get("TARFILE_CHECKSUM").is_none() => {
                env.invalid(
                    "TARFILE_CHECKSUM",
                    "is required (sha256:HEX, sha384:HEX or sha512:HEX), or set INSECURE_NO_TARFILE_CHECKSUM_VERIFICATION=true",
                );
                None
            }
            c => c,
        };
        let mut retry = RetryPolicy::from_env(&mut env);
        retry.total_timeout = match env.number::<i64>("HTTP_CLIENT_TIMEOUT_MINUTES", false) {
            None => Some(Duration::from_secs(DEFAULT_HTTP_TIMEOUT_MINUTES * 60)),
            Some(m) if m <= 0 => None,
            Some(m) => Some(Duration::from_secs(m as u64 * 60)),
        };
        env.finish()?;
        Ok(Config {
            disk: disk.expect("checked by finish"),
            fs_type,
            url: url.expect("checked by finish"),
            format,
            dest,
            checksum,
            retry,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    const SUM: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn the_checksum_is_required_unless_waived() {
        let err = Config::from_env(env(&[("DEST_DISK", "/"), ("ARCHIVE_URL", "http://h/a.tar.gz")])).unwrap_err();
        assert!(err.message.contains("TARFILE_CHECKSUM: is required"), "{}", err.message);
        assert!(err.message.contains("INSECURE_NO_TARFILE_CHECKSUM_VERIFICATION=true"), "{}", err.message);
        let c = Config::from_env(env(&[
            ("DEST_DISK", "/"),
            ("ARCHIVE_URL", "http://h/a.tar"),
            ("INSECURE_NO_TARFILE_CHECKSUM_VERIFICATION", "true"),
            ("ARCHIVE_TYPE", "targz"),
        ]))
        .unwrap();
        assert!(c.checksum.is_none());
        assert_eq!((c.format, c.dest.as_str()), (Some(Format::Gzip), "/"));
        // A checksum given anyway is still checked.
        let c = Config::from_env(env(&[
            ("DEST_DISK", "/"),
            ("ARCHIVE_URL", "https://h/a.tar.zst"),
            ("INSECURE_NO_TARFILE_CHECKSUM_VERIFICATION", "true"),
            ("TARFILE_CHECKSUM", SUM),
            ("DEST_PATH", "/opt/app"),
        ]))
        .unwrap();
        assert_eq!(c.checksum.unwrap().to_string(), SUM);
        assert_eq!((c.format, c.dest.as_str()), (None, "/opt/app"));
    }

    #[test]
    fn every_bad_variable_is_named() {
        let err = Config::from_env(env(&[
            ("ARCHIVE_URL", "file:///x"),
            ("ARCHIVE_TYPE", "zip"),
            ("TARFILE_CHECKSUM", "sha1:00"),
            ("DEST_PATH", "opt"),
            ("RETRY_DURATION_MINUTES", "ten"),
            ("INSECURE_NO_TARFILE_CHECKSUM_VERIFICATION", "perhaps"),
        ]))
        .unwrap_err();
        for v in [
            "DEST_DISK: is required",
            "ARCHIVE_URL: \"file:///x\" must be an http",
            "ARCHIVE_TYPE: \"zip\" is not one of",
            "TARFILE_CHECKSUM: unsupported digest algorithm",
            "DEST_PATH: must be an absolute path",
            "RETRY_DURATION_MINUTES:",
            "INSECURE_NO_TARFILE_CHECKSUM_VERIFICATION: expected a boolean",
        ] {
            assert!(err.message.contains(v), "{v} missing: {}", err.message);
        }
        let err = Config::from_env(env(&[
            ("DEST_DISK", "/"),
            ("ARCHIVE_URL", "http://h/a"),
            ("TARFILE_CHECKSUM", SUM),
            ("DEST_PATH", "/opt/../.."),
        ]))
        .unwrap_err();
        assert!(err.message.contains("DEST_PATH: \"/opt/../..\" must not contain '..'"), "{}", err.message);
    }

    /// The hub's contract: defaults, spellings, errors.
    #[test]
    fn environment_contract_table() {
        let base = [("DEST_DISK", "/"), ("ARCHIVE_URL", "http://h/a.tar.gz"), ("TARFILE_CHECKSUM", SUM)];
        let with =
            |extra: &[(&str, &str)]| Config::from_env(env(&base.iter().chain(extra).copied().collect::<Vec<_>>()));
        let c = with(&[]).unwrap();
        assert_eq!(c.retry.total_timeout, Some(Duration::from_secs(300)), "5 minutes unless said");
        assert!(!c.retry.enabled);
        assert_eq!((c.dest.as_str(), c.format), ("/", None));
        for (v, want) in [("1", Some(60)), ("30", Some(1800)), ("0", None), ("-1", None)] {
            let c = with(&[("HTTP_CLIENT_TIMEOUT_MINUTES", v)]).unwrap();
            assert_eq!(c.retry.total_timeout, want.map(Duration::from_secs), "{v}");
        }
        let err = with(&[("HTTP_CLIENT_TIMEOUT_MINUTES", "5m")]).unwrap_err();
        assert!(err.message.starts_with("HTTP_CLIENT_TIMEOUT_MINUTES: expected a whole number"), "{}", err.message);
        for sum in [
            "sha384:cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed8086072ba1e7cc2358baeca134c825a7",
            "sha512:ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
        ] {
            let c = with(&[("TARFILE_CHECKSUM", sum)]).unwrap();
            assert_eq!(c.checksum.unwrap().to_string(), sum);
        }
        for (v, insecure) in [("t", true), ("True", true), ("0", false), ("FALSE", false)] {
            let c = Config::from_env(env(&[
                ("DEST_DISK", "/"),
                ("ARCHIVE_URL", "http://h/a.tar"),
                ("INSECURE_NO_TARFILE_CHECKSUM_VERIFICATION", v),
                ("TARFILE_CHECKSUM", if insecure { "" } else { SUM }),
            ]))
            .unwrap();
            assert_eq!(c.checksum.is_none(), insecure, "{v}");
        }
        let err = with(&[("INSECURE_NO_TARFILE_CHECKSUM_VERIFICATION", "yes")]).unwrap_err();
        assert!(err.message.contains("INSECURE_NO_TARFILE_CHECKSUM_VERIFICATION: expected a boolean"));
        assert_eq!(archive_type("TAR").unwrap(), Format::Raw, "the hub lowercases ARCHIVE_TYPE");
        assert_eq!(archive_type("TARGZ").unwrap(), Format::Gzip);
    }

    #[test]
    fn archive_type_spellings() {
        assert_eq!(archive_type("tar").unwrap(), Format::Raw);
        assert_eq!(archive_type("TarGz").unwrap(), Format::Gzip);
        assert_eq!(archive_type("tar.zst").unwrap(), Format::Zstd);
        assert_eq!(archive_type("tarxz").unwrap(), Format::Xz);
        assert_eq!(archive_type("tbz2").unwrap(), Format::Bzip2);
    }
}
