//! qemuimg2disk: `qemu-img convert -p IMG_URL -O FORMAT DEST_DISK EXTRA_ARGS`
//! as the hub's entrypoint runs it, then a partition table re-read.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `IMG_URL` | required | image path or URL (anything qemu-img opens: qcow2, raw, vmdk, ...) |
//! | `DEST_DISK` | required | where to write |
//! | `FORMAT` | `host_device` | qemu-img's output format (`-O`) |
//! | `EXTRA_ARGS` | none | more qemu-img arguments, split on whitespace as the hub's shell does |
//!
//! qemu-img's `(p/100%)` progress becomes kiln progress lines; its exit code
//! is the action's, as under the hub's `set -o errexit`.

use std::io::{BufRead, BufReader};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use kiln_action_kit::env::Env;
use kiln_action_kit::progress::Progress;
use kiln_action_kit::{Failure, OrFail, Result, log};

const ACTION: &str = "qemuimg2disk";
const QEMU_IMG: &str = "qemu-img";

#[derive(Debug, PartialEq)]
struct Config {
    image: String,
    dest: String,
    format: String,
    extra: Vec<String>,
}

impl Config {
    fn from_env(mut env: Env) -> Result<Config> {
        let image = env.required("IMG_URL");
        let dest = env.required("DEST_DISK");
        let format = env.optional("FORMAT").unwrap_or_else(|| "host_device".into());
        // `${EXTRA_ARGS}` unquoted: split on spaces, tabs and newlines.
        let extra = env.raw("EXTRA_ARGS").unwrap_or("").split_ascii_whitespace().map(str::to_string).collect();
        env.finish()?;
        Ok(Config { image, dest, format, extra })
    }

    /// The hub's command line, word for word.
    fn convert_args(&self) -> Vec<String> {
        let mut args = vec![
            "convert".into(),
            "-p".into(),
            self.image.clone(),
            "-O".into(),
            self.format.clone(),
            self.dest.clone(),
        ];
        args.extend(self.extra.iter().cloned());
        args
    }
}

/// The virtual size qemu-img reports, for the progress total (best effort).
fn virtual_size(image: &str) -> Option<u64> {
    let out = Command::new(QEMU_IMG).args(["info", "--output=json", image]).stderr(Stdio::null()).output().ok()?;
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    info["virtual-size"].as_u64()
}

/// The percentage in a qemu-img `-p` update such as `    (42.17/100%)`.
fn percent(update: &str) -> Option<f64> {
    let inner = update.trim().strip_prefix('(')?.strip_suffix("/100%)")?;
    inner.parse().ok()
}

fn convert(config: &Config) -> Result<()> {
    let total = virtual_size(&config.image);
    let args = config.convert_args();
    log(ACTION, format!("+ {QEMU_IMG} {}", args.join(" ")));
    let mut child = Command::new(QEMU_IMG)
        .args(&args)
        .stdout(Stdio::piped())
        .spawn()
        .or_fail("ConvertFailed", || format!("starting {QEMU_IMG}"))?;
    let mut progress = Progress::new("image", total, Duration::from_secs(3));
    let mut last = 0.0;
    // Updates end in '\r'; anything else qemu-img prints is passed on.
    for piece in BufReader::new(child.stdout.take().expect("piped")).split(b'\r') {
        let Ok(piece) = piece else { break };
        let text = String::from_utf8_lossy(&piece);
        for line in text.split('\n').filter(|l| !l.trim().is_empty()) {
            match percent(line) {
                Some(p) => {
                    last = p;
                    if let Some(total) = total {
                        progress.update((total as f64 * p / 100.0) as u64);
                    }
                }
                None => log(ACTION, line.trim()),
            }
        }
    }
    let status = child.wait().or_fail("ConvertFailed", || format!("waiting for {QEMU_IMG}"))?;
    if !status.success() {
        let code = status.code().unwrap_or(1);
        return Err(Failure {
            reason: "ConvertFailed",
            message: format!("{QEMU_IMG} convert exited with {status} at {last}%"),
            exit_code: u8::try_from(code).unwrap_or(1),
        });
    }
    if let Some(total) = total {
        progress.finish(total);
    }
    // As the hub's `qemuimg2disk || true`: a failed re-read is no failure.
    match std::fs::OpenOptions::new().write(true).open(&config.dest) {
        Ok(file) => {
            if let Err(e) = file.sync_all().and_then(|()| kiln_action_kit::disk::reread_partitions(&file)) {
                log(ACTION, format!("warning: re-reading the partition table of {}: {e}", config.dest));
            }
        }
        Err(e) => log(ACTION, format!("warning: opening {} to re-read its partitions: {e}", config.dest)),
    }
    log(ACTION, format!("wrote {} to {}", config.image, config.dest));
    Ok(())
}

fn main() -> ExitCode {
    kiln_action_kit::run(ACTION, || convert(&Config::from_env(Env::from_process())?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config> {
        Config::from_env(Env::from_pairs(vars.iter().copied()))
    }

    #[test]
    fn environment_contract_and_command_line() {
        let base = [("IMG_URL", "https://cloud/focal.img"), ("DEST_DISK", "/dev/sda")];
        type Vars<'a> = &'a [(&'a str, &'a str)];
        let rows: &[(Vars<'_>, &[&str])] = &[
            (&[], &["convert", "-p", "https://cloud/focal.img", "-O", "host_device", "/dev/sda"]),
            (&[("FORMAT", "raw")], &["convert", "-p", "https://cloud/focal.img", "-O", "raw", "/dev/sda"]),
            (&[("FORMAT", "")], &["convert", "-p", "https://cloud/focal.img", "-O", "host_device", "/dev/sda"]),
            (
                &[("EXTRA_ARGS", " -n\t-W  -m 16\n")],
                &["convert", "-p", "https://cloud/focal.img", "-O", "host_device", "/dev/sda", "-n", "-W", "-m", "16"],
            ),
        ];
        for (extra, want) in rows {
            let mut vars = base.to_vec();
            vars.extend(extra.iter().copied());
            assert_eq!(config(&vars).unwrap().convert_args(), *want, "{extra:?}");
        }
    }

    #[test]
    fn missing_variables_are_named() {
        let err = config(&[("FORMAT", "raw")]).unwrap_err();
        assert_eq!(err.exit_code, 2);
        assert!(
            err.message.contains("IMG_URL: is required") && err.message.contains("DEST_DISK: is required"),
            "{}",
            err.message
        );
        let err = config(&[("IMG_URL", " "), ("DEST_DISK", "/dev/sda")]).unwrap_err();
        assert_eq!(err.message, "IMG_URL: is required");
    }

    #[test]
    fn progress_updates_parse() {
        assert_eq!(percent("    (42.17/100%)"), Some(42.17));
        assert_eq!(percent("(100.00/100%)"), Some(100.0));
        assert_eq!(percent("qemu-img: Could not open 'x'"), None);
    }
}
