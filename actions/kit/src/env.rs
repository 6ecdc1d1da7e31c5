//! Environment variables, read the way Tinkerbell's actions read them, but
//! checked all at once: every missing or malformed variable is collected and
//! reported together, by name, before the action touches anything.

use std::collections::BTreeMap;
use std::str::FromStr;

use crate::{Failure, Result};

pub struct Env {
    vars: BTreeMap<String, String>,
    errors: Vec<String>,
}

impl Env {
    pub fn from_process() -> Self {
        Self::from_pairs(std::env::vars())
    }

    pub fn from_pairs<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        Env { vars: pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect(), errors: Vec::new() }
    }

    /// The raw value; empty counts as unset (templates render missing
    /// values as empty strings).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str).filter(|v| !v.trim().is_empty())
    }

    /// The value exactly as set, empty included (`CONTENTS=` means an empty
    /// file, not a missing variable).
    pub fn raw(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    /// Records an error about `name`.
    pub fn invalid(&mut self, name: &str, message: impl std::fmt::Display) {
        self.errors.push(format!("{name}: {message}"));
    }

    pub fn required(&mut self, name: &str) -> String {
        match self.get(name) {
            Some(v) => v.to_string(),
            None => {
                self.invalid(name, "is required");
                String::new()
            }
        }
    }

    pub fn optional(&self, name: &str) -> Option<String> {
        self.get(name).map(str::to_string)
    }

    /// A boolean: true/false, yes/no, y/n, on/off, 1/0 (any case).
    pub fn flag(&mut self, name: &str, default: bool) -> bool {
        let Some(v) = self.get(name) else { return default };
        match v.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "y" | "on" => true,
            "0" | "false" | "no" | "n" | "off" => false,
            other => {
                let msg = format!("expected true or false, got {other:?}");
                self.invalid(name, msg);
                default
            }
        }
    }

    /// A boolean spelled as Go's `strconv.ParseBool` accepts it (`1 t T TRUE
    /// true True`, `0 f F FALSE false False`), for the variables of hub
    /// actions that parse it so. Anything else is an error naming `name`
    /// rather than Go's silent fallback: `yes` would mean false to the hub.
    pub fn go_bool(&mut self, name: &str, default: bool) -> bool {
        let Some(v) = self.get(name) else { return default };
        match parse_go_bool(v.trim()) {
            Some(b) => b,
            None => {
                let msg = format!("expected a Go boolean (true, false, 1, 0, t, f, TRUE, False, ...), got {v:?}");
                self.invalid(name, msg);
                default
            }
        }
    }

    /// A value parsed by `parse`, whose error message is reported under `name`.
    pub fn parse_with<T>(
        &mut self,
        name: &str,
        required: bool,
        parse: impl FnOnce(&str) -> std::result::Result<T, String>,
    ) -> Option<T> {
        match self.get(name) {
            Some(v) => match parse(v.trim()) {
                Ok(t) => Some(t),
                Err(e) => {
                    self.invalid(name, e);
                    None
                }
            },
            None => {
                if required {
                    self.invalid(name, "is required");
                }
                None
            }
        }
    }

    /// A decimal number.
    pub fn number<T: FromStr>(&mut self, name: &str, required: bool) -> Option<T> {
        self.parse_with(name, required, |v| v.parse().map_err(|_| format!("expected a whole number, got {v:?}")))
    }

    /// An octal number at most `max` (`0644`, `644` and `0o644` all work,
    /// as Tinkerbell's writefile parses them with base 8).
    pub fn octal(&mut self, name: &str, required: bool, max: u32) -> Option<u32> {
        self.parse_with(name, required, |v| {
            let digits = v.strip_prefix("0o").unwrap_or(v);
            match u32::from_str_radix(digits, 8) {
                Ok(n) if n <= max => Ok(n),
                Ok(_) => Err(format!("{v} is larger than {max:o}")),
                Err(_) => Err(format!("expected an octal number like 0644, got {v:?}")),
            }
        })
    }

    /// An absolute path.
    pub fn absolute_path(&mut self, name: &str, required: bool) -> Option<String> {
        self.parse_with(name, required, |v| {
            if v.starts_with('/') { Ok(v.to_string()) } else { Err(format!("must be an absolute path, got {v:?}")) }
        })
    }

    /// Ends parsing: all errors so far, as one configuration failure.
    pub fn finish(self) -> Result<()> {
        if self.errors.is_empty() { Ok(()) } else { Err(Failure::config(self.errors)) }
    }
}

/// Go's `strconv.ParseBool`: exactly these twelve spellings.
pub fn parse_go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_variable_is_named_at_once() {
        let mut env = Env::from_pairs([("MODE", "0999"), ("UID", "root"), ("COMPRESSED", "maybe"), ("EMPTY", " ")]);
        env.required("DEST_DISK");
        env.required("EMPTY");
        env.octal("MODE", true, 0o7777);
        env.number::<u32>("UID", true);
        env.flag("COMPRESSED", false);
        let err = env.finish().unwrap_err();
        assert_eq!(err.reason, "InvalidConfig");
        for needle in [
            "DEST_DISK: is required",
            "EMPTY: is required",
            "MODE: expected an octal number",
            "UID: expected a whole number",
            "COMPRESSED: expected true or false",
        ] {
            assert!(err.message.contains(needle), "{needle} not in {}", err.message);
        }
    }

    #[test]
    fn octal_forms_and_limits() {
        let mut env = Env::from_pairs([("A", "0644"), ("B", "755"), ("C", "0o600"), ("D", "17777")]);
        assert_eq!(env.octal("A", true, 0o7777), Some(0o644));
        assert_eq!(env.octal("B", true, 0o7777), Some(0o755));
        assert_eq!(env.octal("C", true, 0o7777), Some(0o600));
        assert_eq!(env.octal("D", true, 0o7777), None);
        assert!(env.finish().unwrap_err().message.contains("D: 17777 is larger than 7777"));
    }

    #[test]
    fn flags_accept_the_usual_spellings() {
        let mut env = Env::from_pairs([("A", "Y"), ("B", "off"), ("C", "1")]);
        assert!(env.flag("A", false));
        assert!(!env.flag("B", true));
        assert!(env.flag("C", false));
        assert!(env.flag("UNSET", true));
        env.finish().unwrap();
    }

    #[test]
    fn go_bool_takes_exactly_strconv_parse_bool_spellings() {
        for t in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(parse_go_bool(t), Some(true), "{t}");
        }
        for f in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(parse_go_bool(f), Some(false), "{f}");
        }
        for bad in ["yes", "no", "on", "tRUE", "2", "y"] {
            assert_eq!(parse_go_bool(bad), None, "{bad}");
        }
        let mut env = Env::from_pairs([("A", "T"), ("B", "yes"), ("C", "")]);
        assert!(env.go_bool("A", false));
        env.go_bool("B", false);
        assert!(env.go_bool("C", true), "empty is unset: the default");
        assert!(env.finish().unwrap_err().message.contains("B: expected a Go boolean"));
    }
}
