//! The shared half of every kiln action.
//!
//! An action is a small static binary configured by environment variables
//! (compatible with Tinkerbell's action hub). This crate gives them the same
//! behaviour at the edges: every bad variable is reported by name before
//! anything is written ([`env`]), a failure ends the container with a reason
//! word and message the agent reports ([`Failure`], [`run`]), progress is a
//! machine-readable line `kiln watch` turns into a bar ([`progress`]), and the
//! risky plumbing (HTTP with resume, checksums, disks, mounts) lives here once.

pub mod checksum;
pub mod decompress;
pub mod disk;
pub mod env;
pub mod fetch;
pub mod mount;
pub mod progress;

use std::fmt::Display;
use std::path::Path;
use std::process::ExitCode;

/// Why an action failed: a CamelCase reason word (the agent reports it as
/// the attempt's reason, through `/kiln/failure-reason`), a message for a
/// human, and the exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub reason: &'static str,
    pub message: String,
    pub exit_code: u8,
}

/// Exit code of a configuration error (nothing was touched).
pub const EXIT_CONFIG: u8 = 2;

impl Failure {
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Failure { reason, message: message.into(), exit_code: 1 }
    }

    /// Configuration errors: one line per bad variable.
    pub fn config(errors: Vec<String>) -> Self {
        Failure { reason: "InvalidConfig", message: errors.join("; "), exit_code: EXIT_CONFIG }
    }
}

impl Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)
    }
}

impl std::error::Error for Failure {}

pub type Result<T> = std::result::Result<T, Failure>;

/// Turns any error into a [`Failure`] with a reason and what was being done.
pub trait OrFail<T> {
    fn or_fail(self, reason: &'static str, doing: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: Display> OrFail<T> for std::result::Result<T, E> {
    fn or_fail(self, reason: &'static str, doing: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Failure::new(reason, format!("{}: {e}", doing())))
    }
}

/// Where the agent mounts the failure files (see docs/action-contract.md).
const KILN_DIR: &str = "/kiln";

/// Runs an action's body and turns its outcome into the process exit code,
/// leaving the failure reason and message for the agent when it fails.
pub fn run(action: &str, body: impl FnOnce() -> Result<()>) -> ExitCode {
    match body() {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("{action}: {}", failure.message);
            report_failure(Path::new(KILN_DIR), &failure);
            ExitCode::from(failure.exit_code)
        }
    }
}

/// Best effort: outside kiln (no `/kiln`) there is nobody to tell.
fn report_failure(dir: &Path, failure: &Failure) {
    if dir.is_dir() {
        let _ = std::fs::write(dir.join("failure-reason"), failure.reason);
        let _ = std::fs::write(dir.join("failure-message"), &failure.message);
    }
}

/// One human-readable log line on stdout (the agent ships it).
pub fn log(action: &str, message: impl Display) {
    println!("{action}: {message}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_files_carry_reason_and_message() {
        let dir = tempfile::tempdir().unwrap();
        report_failure(dir.path(), &Failure::new("ChecksumMismatch", "expected sha256:aa, got sha256:bb"));
        assert_eq!(std::fs::read_to_string(dir.path().join("failure-reason")).unwrap(), "ChecksumMismatch");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("failure-message")).unwrap(),
            "expected sha256:aa, got sha256:bb"
        );
    }

    #[test]
    fn config_failures_list_every_variable_and_exit_2() {
        let f = Failure::config(vec!["IMG_URL: required".into(), "DEST_DISK: required".into()]);
        assert_eq!(f.exit_code, 2);
        assert_eq!(f.message, "IMG_URL: required; DEST_DISK: required");
    }
}
