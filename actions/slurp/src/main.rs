//! slurp: reads a whole disk and POSTs it to `DEST_URL` as the hub's slurp
//! does: a `multipart/form-data` body whose one part, `BootyImage`, is the
//! file `IMG_NAME.img` (or `IMG_NAME.img.gz`, gzipped, with `COMPRESSED`),
//! streamed with chunked encoding so a disk of any size fits.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `SOURCE_DISK` | required | the disk (or file) to read |
//! | `DEST_URL` | required | the http(s) URL to POST to |
//! | `IMG_NAME` | empty | the uploaded file's name, before `.img` |
//! | `COMPRESSED` | false | gzip the stream, name it `.img.gz` |
//!
//! Unlike the hub, a response other than 2xx fails the action: the hub
//! reports success whatever the server answered.

use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiln_action_kit::env::Env;
use kiln_action_kit::fetch::parse_url;
use kiln_action_kit::progress::{Progress, bytes};
use kiln_action_kit::{Failure, OrFail, Result, log};
use sha2::{Digest, Sha256};

const ACTION: &str = "slurp";
/// The form field the hub's server (and its clients) look for.
const FIELD: &str = "BootyImage";

#[derive(Debug)]
struct Config {
    source: PathBuf,
    url: String,
    name: String,
    compressed: bool,
}

impl Config {
    fn from_env(mut env: Env) -> Result<Config> {
        let source = env.parse_with("SOURCE_DISK", true, kiln_action_kit::disk::resolve);
        let url = env.parse_with("DEST_URL", true, parse_url);
        let name = env.raw("IMG_NAME").unwrap_or("").to_string();
        let compressed = env.flag("COMPRESSED", false);
        env.finish()?;
        Ok(Config { source: source.expect("checked"), url: url.expect("checked"), name, compressed })
    }

    /// The hub's `fmt.Sprintf("%s.img", name)` / `"%s.img.gz"`.
    fn file_name(&self) -> String {
        if self.compressed { format!("{}.img.gz", self.name) } else { format!("{}.img", self.name) }
    }
}

/// What was read from the disk so far: bytes, their sha256, the progress.
struct Tally {
    read: u64,
    hash: Sha256,
    progress: Progress,
}

/// Reads the disk, counting, hashing and reporting progress.
struct Counted {
    disk: File,
    tally: Arc<Mutex<Tally>>,
}

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.disk.read(buf)?;
        let mut t = self.tally.lock().expect("tally lock");
        t.read += n as u64;
        t.hash.update(&buf[..n]);
        let read = t.read;
        t.progress.update(read);
        Ok(n)
    }
}

fn upload(config: &Config) -> Result<()> {
    let started = Instant::now();
    let disk = File::open(&config.source).or_fail("OpenFailed", || format!("opening {}", config.source.display()))?;
    let size = kiln_action_kit::disk::size_of(&disk).ok();
    let progress = Progress::new("disk", size, Duration::from_secs(3));
    let tally = Arc::new(Mutex::new(Tally { read: 0, hash: Sha256::new(), progress }));
    let counted = Counted { disk, tally: tally.clone() };
    let body: Box<dyn Read + Send> = if config.compressed {
        Box::new(flate2::read::GzEncoder::new(counted, flate2::Compression::default()))
    } else {
        Box::new(counted)
    };
    let file_name = config.file_name();
    log(ACTION, format!("uploading {} as {file_name} to {}", config.source.display(), config.url));
    let part = reqwest::blocking::multipart::Part::reader(body)
        .file_name(file_name.clone())
        .mime_str("application/octet-stream")
        .expect("a valid mime type");
    let form = reqwest::blocking::multipart::Form::new().part(FIELD, part);
    let client = reqwest::blocking::Client::builder()
        .timeout(None)
        .build()
        .or_fail("Internal", || "building the HTTP client".into())?;
    let response = client
        .post(&config.url)
        .multipart(form)
        .send()
        .or_fail("UploadFailed", || format!("posting {file_name} to {}", config.url))?;
    let status = response.status();
    let mut t = tally.lock().expect("tally lock");
    if !status.is_success() {
        let text = response.text().unwrap_or_default();
        return Err(Failure::new(
            "UploadFailed",
            format!("{} answered {status} after {} were sent: {}", config.url, bytes(t.read), text.trim()),
        ));
    }
    let read = t.read;
    t.progress.finish(read);
    let digest = hex::encode(t.hash.clone().finalize());
    log(
        ACTION,
        format!(
            "uploaded {} of {} (sha256:{digest}) as {file_name} in {:.1}s",
            bytes(t.read),
            config.source.display(),
            started.elapsed().as_secs_f64()
        ),
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    kiln_action_kit::run(ACTION, || upload(&Config::from_env(Env::from_process())?))
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
        let src = disk.path().to_str().unwrap();
        let base = [("SOURCE_DISK", src), ("DEST_URL", "http://10.0.0.2:3000/image")];
        type Vars<'a> = &'a [(&'a str, &'a str)];
        let rows: &[(Vars<'_>, &str, bool)] = &[
            (&[("IMG_NAME", "ubuntu_wordpress")], "ubuntu_wordpress.img", false),
            (&[("IMG_NAME", "u"), ("COMPRESSED", "true")], "u.img.gz", true),
            (&[("IMG_NAME", "u"), ("COMPRESSED", "t")], "u.img.gz", true),
            (&[("IMG_NAME", "u"), ("COMPRESSED", "False")], "u.img", false),
            (&[("IMG_NAME", "u"), ("COMPRESSED", "")], "u.img", false),
            // The hub does not require a name.
            (&[], ".img", false),
        ];
        for (extra, name, compressed) in rows {
            let mut vars = base.to_vec();
            vars.extend(extra.iter().copied());
            let c = config(&vars).unwrap();
            assert_eq!((c.file_name().as_str(), c.compressed), (*name, *compressed), "{extra:?}");
        }
    }

    #[test]
    fn errors_name_the_variable() {
        let err = config(&[("COMPRESSED", "yes")]).unwrap_err();
        assert_eq!(err.exit_code, 2);
        for n in ["SOURCE_DISK: is required", "DEST_URL: is required", "COMPRESSED: expected a boolean"] {
            assert!(err.message.contains(n), "{n} not in {}", err.message);
        }
        let err = config(&[("SOURCE_DISK", "/dev/no-such-disk"), ("DEST_URL", "ftp://x/y")]).unwrap_err();
        assert!(
            err.message.contains("SOURCE_DISK: /dev/no-such-disk") && err.message.contains("DEST_URL:"),
            "{}",
            err.message
        );
    }
}
