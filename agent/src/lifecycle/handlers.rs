//! `on-failure` / `on-timeout`: a command run in a new container of the
//! action's image after the action failed, before the failure is reported.
//! Its result changes nothing about the attempt's; its output joins the
//! attempt's logs, each line marked with the handler.

use std::time::Duration;

use kiln_proto::v1::ActionState;

use super::wait::{RunOutcome, wait_or_stop};
use super::{Attempt, logs};
use crate::log_shipper::LogShipper;
use crate::runtime::{ContainerSpec, OutputLine, remove_in_background};

/// Runs the handler the action has for `state`, if any.
pub(super) async fn run_for(
    at: &Attempt<'_>,
    state: ActionState,
    action: &ContainerSpec,
    timeout: Duration,
    shipper: &LogShipper,
) {
    let handler = match state {
        ActionState::Failed => Some(("on-failure", &at.spec.on_failure)),
        ActionState::Timeout => Some(("on-timeout", &at.spec.on_timeout)),
        _ => None,
    };
    if let Some((kind, command)) = handler.filter(|(_, c)| !c.is_empty()) {
        run_handler(at, action, kind, command, timeout, shipper).await;
    }
}

async fn run_handler(
    at: &Attempt<'_>,
    action: &ContainerSpec,
    kind: &str,
    command: &[String],
    timeout: Duration,
    shipper: &LogShipper,
) {
    let mut spec = action.clone();
    spec.name = format!("{}-{kind}", action.name);
    // Named by its own container's name, as the action is.
    if spec.hostname.is_some() {
        spec.hostname = Some(spec.name.clone());
    }
    spec.command = command.to_vec();
    spec.stdin = None;
    let say = |text: String| OutputLine { stderr: true, text };
    let runtime = at.runtime.as_ref();
    let id = match runtime.create(&spec).await {
        Ok(id) => id,
        Err(e) => return shipper.send(say(format!("[{kind}] {e}"))).await,
    };
    if let Err(e) = runtime.start(&id, None).await {
        shipper.send(say(format!("[{kind}] {e}"))).await;
        return remove_in_background(at.runtime, id);
    }
    let grace = Duration::from_secs(at.agent.config.stop_grace_seconds);
    let (exited_tx, exited) = tokio::sync::watch::channel(false);
    let wait = async {
        let outcome = wait_or_stop(runtime, &id, timeout, grace).await;
        exited_tx.send_replace(true);
        outcome
    };
    let follow = logs::follow_to_end(runtime.follow_output(&id), exited, async |mut line: OutputLine| {
        line.text = format!("[{kind}] {}", line.text);
        shipper.send(line).await;
    });
    let (outcome, ()) = tokio::join!(wait, follow);
    let ended = match outcome {
        Ok(RunOutcome::Exited { code, .. }) => format!("exited with code {code}"),
        Ok(RunOutcome::TimedOut { code }) => format!("stopped after its timeout, exit code {code}"),
        Err(e) => e.to_string(),
    };
    shipper.send(say(format!("[{kind}] handler {ended}"))).await;
    remove_in_background(at.runtime, id);
}
