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
    /// `Some(false)`: write the bytes as they are; `Some(true)`: they must be
    /// compressed; `None`: whatever the magic bytes say.
    pub compressed: Option<bool>,
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
        let compressed = env.get("COMPRESSED").is_some().then(|| env.flag("COMPRESSED", false));
        let checksum = env.parse_with("CHECKSUM", false, Checksum::parse);
        let verify = env.flag("VERIFY", false);
        let retry = RetryPolicy::from_env(&mut env);
        let progress = env.number::<u64>("PROGRESS_INTERVAL_SECONDS", false).unwrap_or(3);
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
        assert_eq!(c.compressed, Some(true));
        assert_eq!(c.retry.max_outage, Duration::from_secs(120));
        assert!(c.checksum.is_none() && !c.verify);
    }
}
