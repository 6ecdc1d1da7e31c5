//! image2disk's environment.

use std::path::PathBuf;
use std::time::Duration;

use kiln_action_kit::Result;
use kiln_action_kit::checksum::Checksum;
use kiln_action_kit::env::Env;
use kiln_action_kit::fetch::{RetryPolicy, parse_url};

#[derive(Debug)]
pub struct Config {
    pub url: String,
    pub dest: PathBuf,
    /// `false` (Tinkerbell's default): write the bytes as they are;
    /// `true`: they must be compressed, in whatever format the magic bytes
    /// say (Tinkerbell goes by the URL's extension instead).
    pub compressed: bool,
    /// Digest of the file at `url` as served (what `sha256sum` prints for it).
    pub checksum: Option<Checksum>,
    pub verify: bool,
    pub retry: RetryPolicy,
    pub progress_interval: Duration,
}

impl Config {
    pub fn from_env(mut env: Env) -> Result<Config> {
        let url = env.parse_with("IMG_URL", true, parse_url);
        let dest = env.parse_with("DEST_DISK", true, kiln_action_kit::disk::resolve);
        let compressed = env.flag("COMPRESSED", false);
        let checksum = env.parse_with("CHECKSUM", false, Checksum::parse);
        let verify = env.flag("VERIFY", false);
        let retry = RetryPolicy::from_env(&mut env);
        let progress = env.number::<u64>("PROGRESS_INTERVAL_SECONDS", false).unwrap_or(3);
        // Tinkerbell's switch between JSON and text logs; kiln's lines are
        // the same either way, but the value is checked like every bool.
        env.flag("TEXT_LOGGING", false);
        env.finish()?;
        Ok(Config {
            url: url.expect("checked by finish"),
            dest: dest.expect("checked by finish"),
            compressed,
            checksum,
            verify,
            retry,
            progress_interval: Duration::from_secs(progress),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_variable_is_reported_together() {
        let env = Env::from_pairs([
            ("IMG_URL", "ftp://example/disk.img"),
            ("COMPRESSED", "sometimes"),
            ("CHECKSUM", "md5:abc"),
            ("VERIFY", "1"),
        ]);
        let err = Config::from_env(env).unwrap_err();
        assert_eq!(err.exit_code, 2);
        for var in ["IMG_URL:", "DEST_DISK: is required", "COMPRESSED:", "CHECKSUM:"] {
            assert!(err.message.contains(var), "{var} missing from {}", err.message);
        }
    }

    #[test]
    fn a_missing_destination_is_not_created() {
        let env = Env::from_pairs([("IMG_URL", "http://h/x"), ("DEST_DISK", "/dev/definitely-not-a-disk")]);
        let err = Config::from_env(env).unwrap_err();
        assert!(err.message.contains("DEST_DISK: /dev/definitely-not-a-disk"), "{}", err.message);
    }

    #[test]
    fn tinkerbell_style_config_is_accepted() {
        let dest = tempfile::NamedTempFile::new().unwrap();
        let env = Env::from_pairs([
            ("IMG_URL", "http://10.1.1.1:8080/focal.raw.gz"),
            ("DEST_DISK", dest.path().to_str().unwrap()),
            ("COMPRESSED", "true"),
            ("RETRY_DURATION_MINUTES", "2"),
        ]);
        let c = Config::from_env(env).unwrap();
        assert!(c.compressed);
        assert_eq!(c.retry.max_outage, Duration::from_secs(120));
        assert!(c.checksum.is_none() && !c.verify && !c.retry.enabled);
    }

    /// The hub's image2disk contract, row by row: what each variable's
    /// spellings mean, the defaults when unset, and what is refused.
    #[test]
    fn environment_contract_table() {
        let dest = tempfile::NamedTempFile::new().unwrap();
        let dest = dest.path().to_str().unwrap().to_string();
        let base = [("IMG_URL", "http://10.1.1.1/img.raw.gz"), ("DEST_DISK", dest.as_str())];
        let with = |extra: &[(&str, &str)]| {
            Config::from_env(Env::from_pairs(base.iter().chain(extra).map(|(k, v)| (k.to_string(), v.to_string()))))
        };
        // Defaults: the bytes as they are, no retry, 10 minutes, 3 s.
        let c = with(&[]).unwrap();
        assert!(!c.compressed && !c.retry.enabled && !c.verify);
        assert_eq!(c.retry.max_outage, Duration::from_secs(600));
        assert_eq!(c.progress_interval, Duration::from_secs(3));
        assert!(!with(&[("COMPRESSED", "")]).unwrap().compressed, "empty is unset");
        // Every spelling Go's strconv.ParseBool takes.
        for (v, want) in [
            ("1", true),
            ("t", true),
            ("T", true),
            ("TRUE", true),
            ("true", true),
            ("True", true),
            ("0", false),
            ("f", false),
            ("F", false),
            ("FALSE", false),
            ("false", false),
            ("False", false),
        ] {
            for var in ["COMPRESSED", "RETRY_ENABLED", "VERIFY", "TEXT_LOGGING"] {
                let c = with(&[(var, v)]).unwrap_or_else(|e| panic!("{var}={v}: {e}"));
                let got = match var {
                    "COMPRESSED" => c.compressed,
                    "RETRY_ENABLED" => c.retry.enabled,
                    "VERIFY" => c.verify,
                    _ => want,
                };
                assert_eq!(got, want, "{var}={v}");
            }
        }
        // Anything else is an error naming the variable.
        for v in ["yes", "on", "y", "tRUE", "2"] {
            for var in ["COMPRESSED", "RETRY_ENABLED", "VERIFY", "TEXT_LOGGING"] {
                let err = with(&[(var, v)]).unwrap_err();
                assert_eq!(err.reason, "InvalidConfig");
                assert!(err.message.starts_with(&format!("{var}: expected a boolean")), "{var}={v}: {}", err.message);
            }
        }
        let c = with(&[("RETRY_ENABLED", "true"), ("RETRY_DURATION_MINUTES", "1"), ("PROGRESS_INTERVAL_SECONDS", "7")])
            .unwrap();
        assert!(c.retry.enabled);
        assert_eq!((c.retry.max_outage, c.progress_interval), (Duration::from_secs(60), Duration::from_secs(7)));
        for (var, v) in [("RETRY_DURATION_MINUTES", "ten"), ("PROGRESS_INTERVAL_SECONDS", "-1")] {
            let err = with(&[(var, v)]).unwrap_err();
            assert!(err.message.starts_with(&format!("{var}: expected a whole number")), "{}", err.message);
        }
    }
}
