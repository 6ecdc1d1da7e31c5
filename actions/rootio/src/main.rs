//! rootio: the hub's disk manager. The container's command picks the step
//! (`partition`, `format`, `mount`, `wipe`, `version`); the disks come from
//! the CPR storage metadata at `http://MIRROR_HOST:METADATA_SERVICE_PORT/metadata`.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `MIRROR_HOST` | required | host of the metadata service |
//! | `METADATA_SERVICE_PORT` | `50061` | its port |
//! | `MBR` | unset | any non-empty value (even `false`, as in the hub) writes MBR tables instead of GPT |
//! | `TEST` | unset | non-empty: read the metadata from the file `JSON_FILE` instead |
//! | `JSON_FILE` | none | that file |
//!
//! Like the hub, every disk and filesystem is attempted even after one
//! fails; unlike the hub (which logs the error and exits 0), the action
//! then fails, naming each step that did.

mod cpr;
mod plan;

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileTypeExt;
use std::process::{Command, ExitCode, Stdio};

use kiln_action_kit::disk::{reread_partitions, size_of};
use kiln_action_kit::env::Env;
use kiln_action_kit::{Failure, Result, log};

use crate::cpr::{Disk, Filesystem, Instance};

const ACTION: &str = "rootio";
const STEPS: &str = "partition, format, mount, wipe or version";

#[derive(Debug, PartialEq)]
enum Source {
    Server { host: String, port: String },
    File(String),
}

#[derive(Debug, PartialEq)]
struct Config {
    step: String,
    source: Source,
    mbr: bool,
}

impl Config {
    fn from_env(mut env: Env, args: &[String]) -> Result<Config> {
        let step = match args {
            [one] if ["partition", "format", "mount", "wipe", "version"].contains(&one.as_str()) => one.clone(),
            [] => {
                env.invalid("command", format!("is required: one of {STEPS}"));
                String::new()
            }
            other => {
                env.invalid("command", format!("{other:?} is not one of {STEPS}"));
                String::new()
            }
        };
        // As the hub reads them: set at all (even to "false") counts.
        let mbr = env.raw("MBR").is_some_and(|v| !v.is_empty());
        let source = if env.raw("TEST").is_some_and(|v| !v.is_empty()) {
            Source::File(env.required("JSON_FILE"))
        } else {
            let host = env.required("MIRROR_HOST");
            let port = env.optional("METADATA_SERVICE_PORT").unwrap_or_else(|| "50061".into());
            Source::Server { host, port }
        };
        env.finish()?;
        Ok(Config { step, source, mbr })
    }
}

fn metadata(source: &Source) -> Result<Instance> {
    let parsed = match source {
        Source::Server { host, port } => cpr::fetch(host, port),
        Source::File(path) => std::fs::read(path).map_err(|e| format!("{path}: {e}")).and_then(|b| cpr::parse(&b)),
    };
    parsed.map_err(|e| Failure::new("MetadataFailed", e))
}

/// Runs a command, its output passed through; an error names the command.
fn run(cmd: &[String]) -> std::result::Result<(), String> {
    log(ACTION, format!("+ {}", cmd.join(" ")));
    let mut command = Command::new(&cmd[0]);
    command.args(&cmd[1..]).stdin(Stdio::null());
    if !udev_is_running() {
        // An in-memory OS such as kiln's hook runs no udev: LVM would wait
        // for it to make /dev/VG/LV and then fail ("not found: device not
        // cleared"). This tells device-mapper to make the nodes itself.
        command.env("DM_DISABLE_UDEV", "1");
    }
    let status = command.status().map_err(|e| format!("[{}]: cannot run: {e}", cmd.join(" ")))?;
    if status.success() { Ok(()) } else { Err(format!("[{}]: {status}", cmd.join(" "))) }
}

/// udev's control socket: present only where udevd runs (the host's /run
/// is not the container's, so this sees the action's own view: kiln binds
/// /dev, not /run).
fn udev_is_running() -> bool {
    std::path::Path::new("/run/udev/control").exists()
}

fn verify_block_device(device: &str) -> std::result::Result<(), String> {
    let meta = std::fs::metadata(device).map_err(|e| format!("{device}: {e}"))?;
    if meta.file_type().is_block_device() { Ok(()) } else { Err(format!("{device} is not a block device")) }
}

/// The hub writes 1 GiB of zeros at the start of the disk (less on a
/// smaller disk here, where the hub's single write fails).
fn wipe(disk: &Disk) -> std::result::Result<(), String> {
    let mut f = OpenOptions::new().write(true).open(&disk.device).map_err(|e| format!("{}: {e}", disk.device))?;
    let size = size_of(&f).map_err(|e| format!("{}: {e}", disk.device))?;
    let len = size.min(1 << 30);
    let zeros = vec![0u8; 4 << 20];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(zeros.len() as u64) as usize;
        f.write_all(&zeros[..n]).map_err(|e| format!("wiping {}: {e}", disk.device))?;
        done += n as u64;
    }
    f.sync_all().map_err(|e| format!("{}: {e}", disk.device))?;
    log(ACTION, format!("wrote {done} zero bytes to {}", disk.device));
    Ok(())
}

fn partition(disk: &Disk, use_mbr: bool) -> std::result::Result<(), String> {
    let f =
        OpenOptions::new().read(true).write(true).open(&disk.device).map_err(|e| format!("{}: {e}", disk.device))?;
    let sectors = size_of(&f).map_err(|e| format!("{}: {e}", disk.device))? / plan::SECTOR;
    let (label, (parts, skipped)) =
        if use_mbr { ("dos", plan::mbr(disk, sectors)?) } else { ("gpt", plan::gpt(disk, sectors)) };
    if !skipped.is_empty() {
        log(
            ACTION,
            format!(
                "skipping partitions numbered {skipped:?} on {}: numbers must run 1, 2, 3, ... as listed",
                disk.device
            ),
        );
    }
    let script = plan::sfdisk_script(label, &parts);
    log(ACTION, format!("partitioning {}:\n{script}", disk.device));
    let mut child = Command::new("sfdisk")
        .args(["--no-reread", "--no-tell-kernel", "--quiet", &disk.device])
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run sfdisk: {e}"))?;
    child.stdin.take().expect("piped").write_all(script.as_bytes()).map_err(|e| format!("sfdisk: {e}"))?;
    let status = child.wait().map_err(|e| format!("sfdisk: {e}"))?;
    if !status.success() {
        return Err(format!("sfdisk on {}: {status}", disk.device));
    }
    f.sync_all().map_err(|e| format!("{}: {e}", disk.device))?;
    if let Err(e) = reread_partitions(&f) {
        log(ACTION, format!("warning: the kernel did not re-read {}: {e}", disk.device));
    }
    Ok(())
}

fn mount(fs: &Filesystem) -> std::result::Result<(), String> {
    let m = &fs.mount;
    if m.format == "swap" {
        run(&["swapon".into(), m.device.clone()])?;
    } else {
        nix::mount::mount(
            Some(m.device.as_str()),
            m.point.as_str(),
            Some(m.format.as_str()),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|e| format!("mounting [{}] -> [{}]: {e}", m.device, m.point))?;
    }
    log(ACTION, format!("mounted [{}] -> [{}]", m.device, m.point));
    Ok(())
}

fn execute(config: &Config) -> Result<()> {
    let instance = metadata(&config.source)?;
    let storage = &instance.storage;
    log(
        ACTION,
        format!("parsed the metadata: {} disk(s), {} filesystem(s)", storage.disks.len(), storage.filesystems.len()),
    );
    let mut errors: Vec<String> = Vec::new();
    let mut step = |what: std::result::Result<(), String>| {
        if let Err(e) = what {
            log(ACTION, format!("error: {e}"));
            errors.push(e);
        }
    };
    match config.step.as_str() {
        "version" => log(ACTION, format!("kiln rootio {}", env!("CARGO_PKG_VERSION"))),
        "wipe" => {
            for disk in &storage.disks {
                step(verify_block_device(&disk.device));
                step(wipe(disk));
            }
        }
        "partition" => {
            for disk in &storage.disks {
                step(verify_block_device(&disk.device));
                if disk.wipe_table {
                    step(wipe(disk));
                }
                step(partition(disk, config.mbr));
            }
            for vg in &storage.volume_groups {
                step(plan::lvm_commands(vg).and_then(|cmds| {
                    // The scans are best effort in the hub too.
                    cmds.iter().try_for_each(|c| if c[1].ends_with("scan") { run(c).or(Ok(())) } else { run(c) })
                }));
            }
        }
        "format" => {
            for fs in &storage.filesystems {
                step(plan::format_command(fs).and_then(|cmd| run(&cmd)));
            }
        }
        "mount" => {
            for fs in &storage.filesystems {
                step(mount(fs));
            }
        }
        other => unreachable!("checked in Config: {other}"),
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Failure::new("StepFailed", format!("{}: {}", config.step, errors.join("; "))))
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    kiln_action_kit::run(ACTION, || execute(&Config::from_env(Env::from_process(), &args)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)], args: &[&str]) -> Result<Config> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        Config::from_env(Env::from_pairs(vars.iter().copied()), &args)
    }

    #[test]
    fn environment_contract() {
        let server = |host: &str, port: &str| Source::Server { host: host.into(), port: port.into() };
        type Vars<'a> = &'a [(&'a str, &'a str)];
        let rows: &[(Vars<'_>, &str, Source, bool)] = &[
            (&[("MIRROR_HOST", "192.168.1.2")], "partition", server("192.168.1.2", "50061"), false),
            (&[("MIRROR_HOST", "h"), ("METADATA_SERVICE_PORT", "8080")], "format", server("h", "8080"), false),
            (&[("MIRROR_HOST", "h"), ("MBR", "true")], "partition", server("h", "50061"), true),
            // The hub only asks whether MBR is set.
            (&[("MIRROR_HOST", "h"), ("MBR", "false")], "partition", server("h", "50061"), true),
            (&[("MIRROR_HOST", "h"), ("MBR", "")], "partition", server("h", "50061"), false),
            (&[("TEST", "1"), ("JSON_FILE", "/t.json")], "mount", Source::File("/t.json".into()), false),
        ];
        for (vars, step, source, mbr) in rows {
            let c = config(vars, &[step]).unwrap();
            assert_eq!((c.step.as_str(), &c.source, c.mbr), (*step, source, *mbr), "{vars:?}");
        }
    }

    #[test]
    fn errors_name_the_variable_or_the_command() {
        let err = config(&[], &[]).unwrap_err();
        assert_eq!(err.exit_code, 2);
        assert!(
            err.message.contains("command: is required") && err.message.contains("MIRROR_HOST: is required"),
            "{}",
            err.message
        );
        let err = config(&[("MIRROR_HOST", "h")], &["partiton"]).unwrap_err();
        assert!(err.message.contains("command: [\"partiton\"] is not one of"), "{}", err.message);
        let err = config(&[("TEST", "y")], &["wipe"]).unwrap_err();
        assert_eq!(err.message, "JSON_FILE: is required");
    }
}
