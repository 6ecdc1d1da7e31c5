//! oci2disk's environment, as the hub action reads it.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `IMG_URL` | required | `registry/repository:tag` or `@digest` of the artifact |
//! | `DEST_DISK` | required | the disk (or file) to write |
//! | `COMPRESSED` | false | decompress by the suffix of `IMG_URL`: `.gz`, `.xz`, `.zs`, `.bzip2` |
//! | `REGISTRY_USERNAME`, `REGISTRY_PASSWORD` | none | basic credentials, used only when both are set |
//! | `SKIP_VERIFY` | false | accept any TLS certificate |
//! | `PLAIN_HTTP` | false | kiln only: talk HTTP, not HTTPS, to the registry |

use std::path::PathBuf;

use kiln_action_kit::Result;
use kiln_action_kit::decompress::Format;
use kiln_action_kit::env::Env;
use oci_client::Reference;

#[derive(Debug)]
pub struct Config {
    pub reference: Reference,
    pub dest: PathBuf,
    /// `Format::Raw` unless `COMPRESSED` is true.
    pub format: Format,
    pub credentials: Option<(String, String)>,
    pub skip_verify: bool,
    pub plain_http: bool,
}

impl Config {
    pub fn from_env(mut env: Env) -> Result<Config> {
        let reference = env.parse_with("IMG_URL", true, parse_reference);
        let dest = env.parse_with("DEST_DISK", true, kiln_action_kit::disk::resolve);
        let compressed = env.flag("COMPRESSED", false);
        let skip_verify = env.flag("SKIP_VERIFY", false);
        let plain_http = env.flag("PLAIN_HTTP", false);
        // The hub sends credentials only when both are non-empty.
        let credentials = match (env.optional("REGISTRY_USERNAME"), env.raw("REGISTRY_PASSWORD")) {
            (Some(user), Some(password)) if !password.is_empty() => Some((user, password.to_string())),
            _ => None,
        };
        let mut format = Format::Raw;
        if compressed && let Some(url) = env.get("IMG_URL") {
            match format_of(url) {
                Some(f) => format = f,
                None => {
                    let msg = format!(
                        "COMPRESSED is true but {:?} ends in no compression suffix the hub knows (.gz, .xz, .zs, .bzip2)",
                        go_ext(url)
                    );
                    env.invalid("IMG_URL", msg);
                }
            }
        }
        env.finish()?;
        Ok(Config {
            reference: reference.expect("checked by finish"),
            dest: dest.expect("checked by finish"),
            format,
            credentials,
            skip_verify,
            plain_http,
        })
    }
}

/// A reference with an explicit tag or digest: the hub (containerd's
/// resolver) refuses one without, rather than assuming `latest`.
fn parse_reference(value: &str) -> std::result::Result<Reference, String> {
    let reference: Reference = value.parse().map_err(|e| format!("not an image reference {value:?}: {e}"))?;
    // oci-client fills in `latest`, so look at what was written.
    let last = value.rsplit('/').next().unwrap_or(value);
    if !last.contains(':') && !value.contains('@') {
        return Err(format!("{value:?} names no tag or digest; write <name:tag|name@digest>"));
    }
    Ok(reference)
}

/// The hub picks the decompressor from Go's `filepath.Ext(IMG_URL)`.
fn format_of(url: &str) -> Option<Format> {
    match go_ext(url) {
        ".gz" => Some(Format::Gzip),
        ".xz" => Some(Format::Xz),
        ".zs" => Some(Format::Zstd),
        ".bzip2" => Some(Format::Bzip2),
        _ => None,
    }
}

/// Go's `filepath.Ext`: from the last dot of the last path element.
fn go_ext(path: &str) -> &str {
    let last = path.rsplit('/').next().unwrap_or(path);
    last.rfind('.').map_or("", |i| &last[i..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config> {
        Config::from_env(Env::from_pairs(vars.iter().copied()))
    }

    #[test]
    fn environment_contract() {
        let disk = tempfile::NamedTempFile::new().unwrap();
        let dest = disk.path().to_str().unwrap();
        let img = "reg.example:5000/os/debian:raw.gz";
        // (variables, expected format, credentials, skip_verify, plain_http)
        type Row<'a> = (Vec<(&'a str, &'a str)>, Format, bool, bool, bool);
        let rows: Vec<Row<'_>> = vec![
            (vec![], Format::Raw, false, false, false),
            (vec![("COMPRESSED", "true")], Format::Gzip, false, false, false),
            (vec![("COMPRESSED", "T")], Format::Gzip, false, false, false),
            (vec![("COMPRESSED", "1")], Format::Gzip, false, false, false),
            (vec![("COMPRESSED", "False")], Format::Raw, false, false, false),
            (vec![("COMPRESSED", "")], Format::Raw, false, false, false),
            (vec![("REGISTRY_USERNAME", "u"), ("REGISTRY_PASSWORD", "p")], Format::Raw, true, false, false),
            (vec![("REGISTRY_USERNAME", "u")], Format::Raw, false, false, false),
            (vec![("REGISTRY_PASSWORD", "p")], Format::Raw, false, false, false),
            (vec![("SKIP_VERIFY", "TRUE")], Format::Raw, false, true, false),
            (vec![("PLAIN_HTTP", "t")], Format::Raw, false, false, true),
        ];
        for (extra, format, creds, skip, plain) in rows {
            let mut vars = vec![("IMG_URL", img), ("DEST_DISK", dest)];
            vars.extend(extra.iter().copied());
            let c = config(&vars).unwrap_or_else(|e| panic!("{extra:?}: {e}"));
            assert_eq!(c.format, format, "{extra:?}");
            assert_eq!(c.credentials.is_some(), creds, "{extra:?}");
            assert_eq!((c.skip_verify, c.plain_http), (skip, plain), "{extra:?}");
        }
    }

    #[test]
    fn compression_follows_the_reference_suffix_like_filepath_ext() {
        assert_eq!(format_of("r/os/img:raw.xz"), Some(Format::Xz));
        assert_eq!(format_of("r/os/img:raw.zs"), Some(Format::Zstd));
        assert_eq!(format_of("r/os/img:raw.bzip2"), Some(Format::Bzip2));
        assert_eq!(format_of("r/os/img:raw.zst"), None);
        assert_eq!(go_ext("10.0.0.1:5000/os/img:v1"), "");
        assert_eq!(go_ext("10.0.0.1:5000/os.d/img"), "");
    }

    #[test]
    fn errors_name_the_variable() {
        let disk = tempfile::NamedTempFile::new().unwrap();
        let dest = disk.path().to_str().unwrap();
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);
        let cases: &[Case<'_>] = &[
            (&[], &["IMG_URL: is required", "DEST_DISK: is required"]),
            (&[("IMG_URL", "r/os/img"), ("DEST_DISK", dest)], &["IMG_URL:", "no tag or digest"]),
            (&[("IMG_URL", "r/os/img:v1"), ("DEST_DISK", "/dev/no-such-disk")], &["DEST_DISK: /dev/no-such-disk"]),
            (
                &[("IMG_URL", "r/os/img:v1"), ("DEST_DISK", dest), ("COMPRESSED", "yes")],
                &["COMPRESSED: expected a boolean"],
            ),
            (&[("IMG_URL", "r/os/img:v1"), ("DEST_DISK", dest), ("SKIP_VERIFY", "on")], &["SKIP_VERIFY:"]),
            (&[("IMG_URL", "r/os/img:v1.zst"), ("DEST_DISK", dest), ("COMPRESSED", "true")], &["IMG_URL:", "\".zst\""]),
        ];
        for (vars, needles) in cases {
            let err = config(vars).unwrap_err();
            assert_eq!(err.exit_code, 2);
            for n in *needles {
                assert!(err.message.contains(n), "{vars:?}: {n} not in {}", err.message);
            }
        }
    }
}
