//! The environment contract, Tinkerbell's cexec variables, except that
//! CHROOT defaults to on (Tinkerbell needs `CHROOT=y`).

use std::path::PathBuf;

use kiln_action_kit::Result;
use kiln_action_kit::env::Env;

#[derive(Debug, PartialEq)]
pub struct Config {
    pub device: PathBuf,
    pub fs_type: Option<String>,
    pub chroot: bool,
    /// The program and its arguments, never empty.
    pub argv: Vec<String>,
    pub update_resolv_conf: bool,
}

impl Config {
    pub fn from_env(mut env: Env) -> Result<Config> {
        let device = env.parse_with("BLOCK_DEVICE", true, kiln_action_kit::disk::resolve);
        let fs_type = env.optional("FS_TYPE");
        let chroot = env.flag("CHROOT", true);
        let split = |v: &str| shell_words::split(v).map_err(|e| format!("cannot split {v:?} like a shell would: {e}"));
        let cmd_line = env.raw("CMD_LINE").filter(|v| !v.trim().is_empty()).map(str::to_string);
        let interpreter = env.parse_with("DEFAULT_INTERPRETER", false, split);
        let argv = match (cmd_line, interpreter) {
            (None, _) => {
                env.invalid("CMD_LINE", "is required");
                None
            }
            // The whole command line is one argument: `/bin/sh -c "a; b"`,
            // taken as written (not trimmed: a heredoc may need its newline).
            (Some(cmd), Some(mut argv)) => {
                argv.push(cmd);
                Some(argv)
            }
            (Some(cmd), None) => match split(&cmd) {
                Ok(argv) => Some(argv),
                Err(e) => {
                    env.invalid("CMD_LINE", e);
                    None
                }
            },
        };
        let update_resolv_conf = env.flag("UPDATE_RESOLV_CONF", false);
        env.finish()?;
        Ok(Config {
            device: device.expect("checked by finish"),
            fs_type,
            chroot,
            argv: argv.expect("checked by finish"),
            update_resolv_conf,
        })
    }
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
            ("CMD_LINE", "apt-get update && apt-get install -y 'curl'"),
            ("DEFAULT_INTERPRETER", "/bin/sh -c"),
        ]))
        .unwrap();
        assert_eq!(c.argv, ["/bin/sh", "-c", "apt-get update && apt-get install -y 'curl'"]);
        assert!(c.chroot && !c.update_resolv_conf);
        let c = Config::from_env(env(&[
            ("BLOCK_DEVICE", "/"),
            ("CMD_LINE", "useradd -m 'tink user'"),
            ("CHROOT", "n"),
            ("UPDATE_RESOLV_CONF", "true"),
        ]))
        .unwrap();
        assert_eq!(c.argv, ["useradd", "-m", "tink user"]);
        assert!(!c.chroot && c.update_resolv_conf);
    }

    #[test]
    fn every_bad_variable_is_named() {
        let err = Config::from_env(env(&[
            ("CMD_LINE", "echo 'unterminated"),
            ("CHROOT", "maybe"),
            ("UPDATE_RESOLV_CONF", "2"),
        ]))
        .unwrap_err();
        for v in [
            "BLOCK_DEVICE: is required",
            "CMD_LINE: cannot split",
            "CHROOT: expected true or false",
            "UPDATE_RESOLV_CONF: expected true or false",
        ] {
            assert!(err.message.contains(v), "{v} missing: {}", err.message);
        }
        for cmd in [None, Some("  ")] {
            let mut pairs = vec![("BLOCK_DEVICE", "/"), ("DEFAULT_INTERPRETER", "/bin/sh -c")];
            pairs.extend(cmd.map(|c| ("CMD_LINE", c)));
            let err = Config::from_env(env(&pairs)).unwrap_err();
            assert!(err.message.contains("CMD_LINE: is required"), "{}", err.message);
        }
        let err =
            Config::from_env(env(&[("BLOCK_DEVICE", "/"), ("CMD_LINE", "x"), ("DEFAULT_INTERPRETER", "sh \"-c")]))
                .unwrap_err();
        assert!(err.message.contains("DEFAULT_INTERPRETER: cannot split"), "{}", err.message);
    }
}
