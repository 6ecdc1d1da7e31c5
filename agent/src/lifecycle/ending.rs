//! The end of an attempt as the server hears it: the exit-code table of the
//! action contract, and an action's own explanation of its failure.

use std::path::Path;
use std::time::Duration;

use kiln_proto::v1::ActionState;

use super::RunOutcome;

/// Files in `/kiln` by which an action explains its failure.
pub(super) const FAILURE_REASON: &str = "failure-reason";
pub(super) const FAILURE_MESSAGE: &str = "failure-message";

/// The end of an attempt, as reported to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    pub state: ActionState,
    pub exit_code: Option<i64>,
    pub reason: String,
    pub message: String,
    /// A typed action's stdout (its JSON output).
    pub output_json: String,
}

impl Ending {
    pub(crate) fn success() -> Self {
        Self {
            state: ActionState::Success,
            exit_code: Some(0),
            reason: String::new(),
            message: String::new(),
            output_json: String::new(),
        }
    }

    pub(crate) fn failed(reason: &str, message: impl Into<String>) -> Self {
        Self {
            state: ActionState::Failed,
            exit_code: None,
            reason: reason.into(),
            message: message.into(),
            output_json: String::new(),
        }
    }

    /// Maps how the container ended to a report: the exit-code table of
    /// the action contract (docs/action-contract.md), with the engine's OOM verdict.
    pub fn from_outcome(outcome: RunOutcome, timeout: Duration) -> Self {
        let (code, oom_killed) = match outcome {
            RunOutcome::TimedOut { code } => {
                return Self {
                    state: ActionState::Timeout,
                    exit_code: Some(code),
                    reason: "Timeout".into(),
                    message: format!("stopped after its timeout of {}s", timeout.as_secs()),
                    output_json: String::new(),
                };
            }
            RunOutcome::Exited { code, oom_killed } => (code, oom_killed),
        };
        let (reason, message) = match code {
            0 => return Self::success(),
            _ if oom_killed => ("OOMKilled", "killed by the kernel for exceeding its memory limit".to_string()),
            125 => ("RuntimeError", "the container runtime could not run the command (exit 125)".into()),
            126 => ("CommandCannotInvoke", "the command cannot be invoked: not executable (exit 126)".into()),
            127 => ("CommandNotFound", "the command was not found (exit 127)".into()),
            137 => ("Killed", "killed by SIGKILL (exit 137)".into()),
            139 => ("Segfault", "segmentation fault (exit 139)".into()),
            143 => ("Terminated", "terminated by SIGTERM (exit 143)".into()),
            _ => ("NonZeroExit", format!("exited with code {code}")),
        };
        Self { exit_code: Some(code), ..Self::failed(reason, message) }
    }

    /// An action explains its own failure by writing `/kiln/failure-reason`
    /// (one UpperCamelCase word) and `/kiln/failure-message`; they replace
    /// the generic reason, the exit code stays.
    pub(super) fn with_action_failure(mut self, dir: &Path) -> Self {
        if self.state == ActionState::Success {
            return self;
        }
        let read = |name: &str, limit: usize| {
            let text = std::fs::read(dir.join(name)).ok()?;
            let text = String::from_utf8_lossy(&text[..text.len().min(limit)]).trim().to_string();
            (!text.is_empty()).then_some(text)
        };
        if let Some(reason) = read(FAILURE_REASON, 256) {
            let word: String = reason
                .lines()
                .next()
                .unwrap_or_default()
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .take(64)
                .collect();
            if !word.is_empty() {
                self.reason = word;
            }
        }
        if let Some(message) = read(FAILURE_MESSAGE, 4096) {
            self.message = message;
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_map_to_reports() {
        let t = Duration::from_secs(5);
        assert_eq!(
            Ending::from_outcome(RunOutcome::Exited { code: 0, oom_killed: false }, t).state,
            ActionState::Success
        );
        let e = Ending::from_outcome(RunOutcome::Exited { code: 3, oom_killed: false }, t);
        assert_eq!((e.state, e.exit_code, e.reason.as_str()), (ActionState::Failed, Some(3), "NonZeroExit"));
        for (code, oom, reason) in [
            (137, true, "OOMKilled"),
            (137, false, "Killed"),
            (125, false, "RuntimeError"),
            (126, false, "CommandCannotInvoke"),
            (127, false, "CommandNotFound"),
            (139, false, "Segfault"),
            (143, false, "Terminated"),
        ] {
            let e = Ending::from_outcome(RunOutcome::Exited { code, oom_killed: oom }, t);
            assert_eq!((e.state, e.exit_code, e.reason.as_str()), (ActionState::Failed, Some(code), reason));
        }
        let e = Ending::from_outcome(RunOutcome::TimedOut { code: 143 }, t);
        assert_eq!((e.state, e.exit_code), (ActionState::Timeout, Some(143)));
        assert!(e.message.contains("5s"));
    }

    #[test]
    fn actions_may_explain_their_failure() {
        let dir = tempfile::tempdir().unwrap();
        let failed = Ending::from_outcome(RunOutcome::Exited { code: 2, oom_killed: false }, Duration::from_secs(1));
        assert_eq!(failed.clone().with_action_failure(dir.path()).reason, "NonZeroExit");
        std::fs::write(dir.path().join(FAILURE_REASON), "DiskTooSmall\n").unwrap();
        std::fs::write(dir.path().join(FAILURE_MESSAGE), "need 8 GiB, found 4 GiB\n").unwrap();
        let e = failed.with_action_failure(dir.path());
        assert_eq!(
            (e.reason.as_str(), e.message.as_str(), e.exit_code),
            ("DiskTooSmall", "need 8 GiB, found 4 GiB", Some(2))
        );
        let ok = Ending::from_outcome(RunOutcome::Exited { code: 0, oom_killed: false }, Duration::from_secs(1));
        assert_eq!(ok.with_action_failure(dir.path()).reason, "", "success stays success");
    }
}
