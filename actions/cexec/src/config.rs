//! The environment contract: Tinkerbell's cexec variables with the hub's
//! meaning, odd parts included. `CHROOT` is a string, not a boolean: unset
//! or empty runs the command in the action's own container, any other
//! value (even `false`) chroots into the disk. `CMD_LINE` without
//! `DEFAULT_INTERPRETER` is split on `;` into commands and each on spaces
//! (no quoting: quotes reach the program as written), run one after the
//! other until one fails.

use std::path::PathBuf;

use kiln_action_kit::Result;
use kiln_action_kit::env::Env;

/// Tinkerbell cexec's exit codes: a malformed variable, a missing required
/// one, and anything going wrong after that (the command included).
pub const EXIT_BAD_INPUT: u8 = 10;
pub const EXIT_MISSING: u8 = 20;
pub const EXIT_FAILED: u8 = 30;

#[derive(Debug, PartialEq)]
pub struct Config {
    pub device: PathBuf,
    pub fs_type: Option<String>,
    pub chroot: bool,
    /// The commands in order, each a program and its arguments, never empty.
    pub commands: Vec<Vec<String>>,
    pub update_resolv_conf: bool,
}

impl Config {
    pub fn from_env(mut env: Env) -> Result<Config> {
        let device = env.parse_with("BLOCK_DEVICE", true, kiln_action_kit::disk::resolve);
        // Tinkerbell requires FS_TYPE (exit 20); kiln tries the kernel's
        // filesystems when it is left out, so a hub-style template that
        // sets it behaves the same.
        let fs_type = env.optional("FS_TYPE");
        let chroot = env.raw("CHROOT").is_some_and(|v| !v.is_empty());
        let cmd_line = env.raw("CMD_LINE").filter(|v| !v.trim().is_empty()).map(str::to_string);
        let interpreter = env.parse_with("DEFAULT_INTERPRETER", false, |v| {
            shell_words::split(v).map_err(|e| format!("cannot split {v:?} like a shell would: {e}"))
        });
        let commands = match (cmd_line, interpreter) {
            (None, _) => {
                env.missing("CMD_LINE", "is required");
                None
            }
            // The whole command line is one argument: `/bin/sh -c "a; b"`,
            // taken as written (not trimmed: a heredoc may need its newline).
            (Some(cmd), Some(mut argv)) => {
                argv.push(cmd);
                Some(vec![argv])
            }
            (Some(cmd), None) => Some(split_commands(&cmd)),
        };
        let update_resolv_conf = env.flag("UPDATE_RESOLV_CONF", false);
        // The hub's logging switch (its name is misspelt there too); only
        // checked, kiln's log lines are the same either way.
        env.flag("JSON_OUTOUT", true);
        env.finish_with_codes(EXIT_BAD_INPUT, EXIT_MISSING)?;
        Ok(Config {
            device: device.expect("checked by finish"),
            fs_type,
            chroot,
            commands: commands.expect("checked by finish"),
            update_resolv_conf,
        })
    }
}

/// `a -x; b y` → `[[a, -x], [b, y]]`: Tinkerbell's split on `;` and then on
/// spaces. Empty pieces are dropped where the hub would try to run a
/// program called "" and fail (`a; b`, `a  -x`, a trailing `;`).
pub fn split_commands(cmd_line: &str) -> Vec<Vec<String>> {
    cmd_line
        .split(';')
        .map(|c| c.split(' ').filter(|w| !w.is_empty()).map(str::to_string).collect::<Vec<_>>())
        .filter(|argv| !argv.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    fn config(pairs: &[(&str, &str)]) -> Result<Config> {
        let mut all = vec![("BLOCK_DEVICE", "/")];
        all.extend_from_slice(pairs);
        Config::from_env(env(&all))
    }

    #[test]
    fn interpreter_takes_the_command_line_as_one_argument() {
        let c = config(&[
            ("CMD_LINE", "apt-get update && apt-get install -y 'curl'; echo done"),
            ("DEFAULT_INTERPRETER", "/bin/sh -c"),
        ])
        .unwrap();
        assert_eq!(c.commands, [["/bin/sh", "-c", "apt-get update && apt-get install -y 'curl'; echo done"]]);
        assert!(!c.chroot && !c.update_resolv_conf);
    }

    /// The hub's contract, row by row.
    #[test]
    fn environment_contract_table() {
        // CHROOT: unset or empty is no chroot; any other value is chroot.
        for (value, chroot) in [
            (None, false),
            (Some(""), false),
            (Some("y"), true),
            (Some("true"), true),
            (Some("false"), true),
            (Some("0"), true),
        ] {
            let mut pairs = vec![("CMD_LINE", "true")];
            pairs.extend(value.map(|v| ("CHROOT", v)));
            assert_eq!(config(&pairs).unwrap().chroot, chroot, "CHROOT={value:?}");
        }
        // CMD_LINE without an interpreter: `;` separates commands, spaces
        // separate words, quotes are not special.
        for (line, want) in [
            ("grub-install /dev/sda", vec![vec!["grub-install", "/dev/sda"]]),
            ("update-grub;sync", vec![vec!["update-grub"], vec!["sync"]]),
            ("a -x; b  y ;", vec![vec!["a", "-x"], vec!["b", "y"]]),
            ("useradd -m 'tink user'", vec![vec!["useradd", "-m", "'tink", "user'"]]),
        ] {
            assert_eq!(config(&[("CMD_LINE", line)]).unwrap().commands, want, "{line:?}");
        }
        // Booleans take Go's spellings.
        for (v, want) in [("1", true), ("T", true), ("True", true), ("0", false), ("F", false), ("FALSE", false)] {
            let c = config(&[("CMD_LINE", "x"), ("UPDATE_RESOLV_CONF", v), ("JSON_OUTOUT", v)]).unwrap();
            assert_eq!(c.update_resolv_conf, want, "{v}");
        }
        // Exit codes: 20 when required variables are missing, 10 when one
        // is malformed (reported first, as the hub does).
        let err = Config::from_env(env(&[])).unwrap_err();
        assert_eq!(err.exit_code, EXIT_MISSING);
        assert!(err.message.contains("BLOCK_DEVICE: is required") && err.message.contains("CMD_LINE: is required"));
        let err = config(&[("CMD_LINE", "  ")]).unwrap_err();
        assert_eq!((err.exit_code, err.message.as_str()), (EXIT_MISSING, "CMD_LINE: is required"));
        for (var, value) in [("UPDATE_RESOLV_CONF", "yes"), ("JSON_OUTOUT", "on")] {
            let err = Config::from_env(env(&[(var, value)])).unwrap_err();
            assert_eq!(err.exit_code, EXIT_BAD_INPUT, "{var}");
            assert!(err.message.contains(&format!("{var}: expected a boolean")), "{}", err.message);
            assert!(err.message.contains("CMD_LINE: is required"), "{}", err.message);
        }
        let err = config(&[("CMD_LINE", "x"), ("DEFAULT_INTERPRETER", "sh \"-c")]).unwrap_err();
        assert_eq!(err.exit_code, EXIT_BAD_INPUT);
        assert!(err.message.contains("DEFAULT_INTERPRETER: cannot split"), "{}", err.message);
        let err = Config::from_env(env(&[("BLOCK_DEVICE", "/dev/kiln-no-such-disk"), ("CMD_LINE", "x")])).unwrap_err();
        assert_eq!(err.exit_code, EXIT_BAD_INPUT);
    }
}
