//! External actions (the Replicante contract): work done on the agent's
//! host by commands from the agent's configuration, not in a container.
//!
//! The start command gets the action record as JSON on stdin and must return
//! quickly, leaving the work running. The check command is then run every
//! `check_interval_ms` with the same record and prints
//! `{"status": "running" | "finished" | "failed", "error": "..."}`.
//! Anything else it prints, a non-zero exit, or no answer in time is a
//! failure that says so: never a hang.

use std::process::Stdio;
use std::time::Duration;

use kiln_proto::v1::{ActionSpec, ActionState, Assignment};
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use crate::Agent;
use crate::config::ExternalAction;
use crate::lifecycle::Ending;
use crate::log_shipper::LogShipper;
use crate::runtime::OutputLine;

/// How long the start command may take.
const START_LIMIT: Duration = Duration::from_secs(30);
/// How long one check may take.
const CHECK_LIMIT: Duration = Duration::from_secs(10);

#[derive(Deserialize)]
struct CheckReport {
    status: String,
    #[serde(default)]
    error: Option<String>,
}

fn record(agent: &Agent, a: &Assignment, spec: &ActionSpec) -> Vec<u8> {
    let record = serde_json::json!({
        "id": a.attempt_id,
        "kind": spec.external,
        "workflow_id": a.workflow_id,
        "action_index": a.action_index,
        "action_name": spec.name,
        "attempt": a.attempt,
        "agent_id": agent.id,
        "hardware_id": a.hardware_id,
        "args": spec.environment,
        "command": spec.command,
    });
    serde_json::to_vec(&record).expect("JSON of strings")
}

/// Runs `argv` with `stdin`, within `limit`: `Err` says what went wrong.
async fn run_command(argv: &[String], stdin: &[u8], limit: Duration) -> Result<(i32, String, String), String> {
    let mut child = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {:?}: {e}", argv[0]))?;
    let mut input = child.stdin.take().expect("piped stdin");
    // A command that does not read its stdin must not block us.
    let _ = tokio::time::timeout(limit, input.write_all(stdin)).await;
    drop(input);
    let output = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .map_err(|_| format!("{:?} did not finish within {}s", argv[0], limit.as_secs()))?
        .map_err(|e| format!("{:?}: {e}", argv[0]))?;
    Ok((
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

fn excerpt(s: &str) -> String {
    let s = s.trim();
    if s.len() > 200 { format!("{}...", &s[..s.floor_char_boundary(200)]) } else { s.to_string() }
}

pub async fn run(agent: &Agent, a: &Assignment, spec: &ActionSpec, timeout: Duration, shipper: &LogShipper) -> Ending {
    let Some(def) = agent.config.external_actions.get(&spec.external) else {
        let known: Vec<&str> = agent.config.external_actions.keys().map(String::as_str).collect();
        return Ending::failed(
            "UnknownExternalAction",
            format!("this agent defines no external action {:?} (it has: {})", spec.external, known.join(", ")),
        );
    };
    run_defined(def, &record(agent, a, spec), timeout, shipper).await
}

async fn log_output(shipper: &LogShipper, prefix: &str, stdout: &str, stderr: &str) {
    for (text, is_err) in [(stdout, false), (stderr, true)] {
        for line in text.lines() {
            shipper.send(OutputLine { stderr: is_err, text: format!("[{prefix}] {line}") }).await;
        }
    }
}

async fn run_defined(def: &ExternalAction, record: &[u8], timeout: Duration, shipper: &LogShipper) -> Ending {
    let deadline = tokio::time::Instant::now() + timeout;
    match run_command(&def.action, record, START_LIMIT).await {
        Err(e) => return Ending::failed("ExternalStartFailed", e),
        Ok((code, out, err)) => {
            log_output(shipper, "start", &out, &err).await;
            if code != 0 {
                return Ending {
                    exit_code: Some(code.into()),
                    ..Ending::failed(
                        "ExternalStartFailed",
                        format!("start command exited with {code}: {}", excerpt(&err)),
                    )
                };
            }
        }
    }
    let interval = Duration::from_millis(def.check_interval_ms.max(10));
    loop {
        if tokio::time::Instant::now() + interval > deadline {
            return Ending {
                state: ActionState::Timeout,
                exit_code: None,
                reason: "Timeout".into(),
                message: format!("the external action did not finish within its timeout of {}s", timeout.as_secs()),
                output_json: String::new(),
            };
        }
        tokio::time::sleep(interval).await;
        let (code, out, err) = match run_command(&def.check, record, CHECK_LIMIT).await {
            Ok(result) => result,
            Err(e) => return Ending::failed("BadCheckOutput", e),
        };
        if !err.trim().is_empty() {
            log_output(shipper, "check", "", &err).await;
        }
        if code != 0 {
            return Ending::failed("BadCheckOutput", format!("check command exited with {code}: {}", excerpt(&err)));
        }
        let report: CheckReport = match serde_json::from_str(out.trim()) {
            Ok(r) => r,
            Err(e) => {
                return Ending::failed(
                    "BadCheckOutput",
                    format!("check printed {:?}, not {{\"status\": ...}} JSON ({e})", excerpt(&out)),
                );
            }
        };
        match report.status.as_str() {
            "running" => continue,
            "finished" => return Ending::success(),
            "failed" => {
                let error =
                    report.error.filter(|e| !e.is_empty()).unwrap_or_else(|| "(the check gave no error)".into());
                return Ending::failed("ExternalActionFailed", error);
            }
            other => {
                return Ending::failed(
                    "BadCheckOutput",
                    format!("check status {other:?} is not one of running, finished, failed"),
                );
            }
        }
    }
}
