//! cexec: runs a command inside the filesystem on a disk (usually chrooted
//! into an installed OS, with /dev, /proc and /sys bound in), then unmounts.
//! The command's exit code becomes the action's.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use kiln_action_kit::env::Env;
use kiln_action_kit::mount::Mounts;
use kiln_action_kit::{Failure, OrFail, Result, log};

const ACTION: &str = "cexec";

#[derive(Debug, PartialEq)]
struct Config {
    device: PathBuf,
    fs_type: Option<String>,
    chroot: bool,
    argv: Vec<String>,
    update_resolv_conf: bool,
}

impl Config {
    fn from_env(mut env: Env) -> Result<Config> {
        let device = env.parse_with("BLOCK_DEVICE", true, kiln_action_kit::disk::resolve);
        let fs_type = env.optional("FS_TYPE");
        let chroot = env.flag("CHROOT", true);
        let split = |name: &str, v: &str| shell_words::split(v).map_err(|e| format!("cannot split {name} {v:?}: {e}"));
        let cmd_line = env.required("CMD_LINE");
        let interpreter =
            env.parse_with("DEFAULT_INTERPRETER", false, |v| split("DEFAULT_INTERPRETER", v)).unwrap_or_default();
        let argv = if !interpreter.is_empty() {
            // The whole command line is one argument: `/bin/sh -c "a; b"`.
            let mut argv = interpreter;
            argv.push(cmd_line);
            argv
        } else if cmd_line.is_empty() {
            Vec::new()
        } else {
            match split("CMD_LINE", &cmd_line) {
                Ok(a) if !a.is_empty() => a,
                Ok(_) => {
                    env.invalid("CMD_LINE", "is empty");
                    Vec::new()
                }
                Err(e) => {
                    env.invalid("CMD_LINE", e);
                    Vec::new()
                }
            }
        };
        let update_resolv_conf = env.flag("UPDATE_RESOLV_CONF", false);
        env.finish()?;
        Ok(Config { device: device.expect("checked by finish"), fs_type, chroot, argv, update_resolv_conf })
    }
}

fn main() -> ExitCode {
    kiln_action_kit::run(ACTION, || {
        let config = Config::from_env(Env::from_process())?;
        let root = PathBuf::from(format!("/tmp/kiln-{ACTION}-{}", std::process::id()));
        let mut mounts = Mounts::new();
        mounts.mount_device(&config.device, config.fs_type.as_deref(), &root)?;
        let result = run_in(&root, &config, &mut mounts);
        let unmounted = mounts.unmount_all();
        let _ = std::fs::remove_dir(&root);
        let code = result?;
        unmounted?;
        if code != 0 {
            return Err(Failure {
                reason: "CommandFailed",
                message: format!("{} exited with {code}", config.argv.join(" ")),
                exit_code: code,
            });
        }
        log(ACTION, "command succeeded");
        Ok(())
    })
}

/// Runs the command; returns its exit code (128+N for signal N).
fn run_in(root: &Path, c: &Config, mounts: &mut Mounts) -> Result<u8> {
    let resolv = root.join("etc/resolv.conf");
    let saved_resolv = if c.update_resolv_conf {
        let old = std::fs::read(&resolv).ok();
        std::fs::copy("/etc/resolv.conf", &resolv).or_fail("ResolvConfFailed", || "copying /etc/resolv.conf".into())?;
        Some(old)
    } else {
        None
    };
    let mut cmd = Command::new(&c.argv[0]);
    cmd.args(&c.argv[1..]);
    if c.chroot {
        for fs in ["dev", "proc", "sys"] {
            mounts.bind(&Path::new("/").join(fs), &root.join(fs))?;
        }
        let root = root.to_path_buf();
        // SAFETY: between fork and exec only async-signal-safe calls are
        // allowed; chroot(2) and chdir(2) are.
        unsafe {
            cmd.pre_exec(move || {
                nix::unistd::chroot(&root)?;
                nix::unistd::chdir("/")?;
                Ok(())
            });
        }
    } else {
        cmd.current_dir(root).env("KILN_MOUNT", root);
    }
    log(ACTION, format_args!("running {:?}{}", c.argv, if c.chroot { " chrooted" } else { "" }));
    let status = cmd.status();
    if let Some(old) = saved_resolv {
        let _ = match old {
            Some(bytes) => std::fs::write(&resolv, bytes),
            None => std::fs::remove_file(&resolv),
        };
    }
    let status = match status {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Failure {
                reason: "CommandNotFound",
                message: format!("{}: not found in {}", c.argv[0], if c.chroot { "the chroot" } else { "the image" }),
                exit_code: 127,
            });
        }
        Err(e) => return Err(Failure::new("CommandFailed", format!("cannot run {}: {e}", c.argv[0]))),
    };
    Ok(status.code().map(|c| c as u8).unwrap_or_else(|| 128 + status.signal().unwrap_or(0) as u8))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn interpreter_takes_the_command_line_as_one_argument() {
        let c = Config::from_env(env(&[
            ("BLOCK_DEVICE", "/"),
            ("CMD_LINE", "apt-get update && apt-get install -y curl"),
            ("DEFAULT_INTERPRETER", "/bin/sh -c"),
        ]))
        .unwrap();
        assert_eq!(c.argv, ["/bin/sh", "-c", "apt-get update && apt-get install -y curl"]);
        assert!(c.chroot);
        let c =
            Config::from_env(env(&[("BLOCK_DEVICE", "/"), ("CMD_LINE", "useradd -m 'tink user'"), ("CHROOT", "n")]))
                .unwrap();
        assert_eq!(c.argv, ["useradd", "-m", "tink user"]);
        assert!(!c.chroot);
    }

    #[test]
    fn every_bad_variable_is_named() {
        let err = Config::from_env(env(&[("CMD_LINE", "echo 'unterminated"), ("CHROOT", "maybe")])).unwrap_err();
        for v in ["BLOCK_DEVICE: is required", "CMD_LINE: cannot split", "CHROOT: expected true or false"] {
            assert!(err.message.contains(v), "{v} missing: {}", err.message);
        }
        let err = Config::from_env(env(&[("BLOCK_DEVICE", "/")])).unwrap_err();
        assert!(err.message.contains("CMD_LINE: is required"));
    }
}
