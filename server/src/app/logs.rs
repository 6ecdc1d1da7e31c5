//! Log lines: in from agents (numbered, stored once), out to operators
//! (`kiln logs [-f]`), followed live.

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{App, AppError, OpContext};
use crate::events::wait_for;
use crate::model;
use crate::store::{NewLogLine, StoredLogLine};

/// Log lines read from the store per query while streaming.
const LOG_PAGE: u32 = 1000;

/// One stored line with the name of its action.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRecord {
    pub action_name: String,
    pub line: StoredLogLine,
}

impl App {
    /// Stores a batch of the calling agent's output lines of one of its
    /// attempts. Returns the highest line number stored for the attempt.
    ///
    /// This is the busiest call under load (every batch of every running
    /// action), so ownership is one indexed lookup of the attempt, never a
    /// load of the workflow.
    pub async fn push_logs(
        &self,
        opctx: &OpContext,
        workflow_id: &str,
        action_index: u32,
        attempt_id: &str,
        lines: Vec<NewLogLine>,
    ) -> Result<u64, AppError> {
        let agent = opctx.require_agent()?;
        self.check_attempt_owner(agent, workflow_id, action_index, attempt_id).await?;
        let progress: Vec<String> =
            lines.iter().filter(|l| crate::metrics::may_be_progress(&l.text)).map(|l| l.text.clone()).collect();
        let appended = self.store.append_logs(workflow_id, action_index, attempt_id, lines).await?;
        self.metrics.log_lines(attempt_id, appended.new_lines, progress.iter().map(String::as_str));
        let stored_through = appended.stored_through;
        self.events.logs_appended(workflow_id);
        Ok(stored_through)
    }

    /// The attempt exists, is of that action, and is `agent`'s (finished or
    /// not: an agent may flush lines after its report).
    pub(crate) async fn check_attempt_owner(
        &self,
        agent: &str,
        workflow_id: &str,
        action_index: u32,
        attempt_id: &str,
    ) -> Result<(), AppError> {
        let unknown = || AppError::NotFound(format!("attempt {attempt_id} is not an attempt of this action"));
        let access = self.store.attempt_access(workflow_id, attempt_id).await?.ok_or_else(unknown)?;
        if access.action_index != action_index {
            return Err(unknown());
        }
        if access.agent_id != agent {
            return Err(AppError::PermissionDenied(format!(
                "attempt belongs to agent {}, not to {agent}",
                access.agent_id
            )));
        }
        Ok(())
    }

    /// The lines of a workflow (of one action when `selector` names one), in
    /// storage order; with `follow`, the stream stays open and delivers new
    /// lines as they are stored until the workflow (or that action) ends.
    pub async fn read_logs(
        &self,
        opctx: &OpContext,
        workflow_id: &str,
        selector: &str,
        follow: bool,
    ) -> Result<ReceiverStream<Result<LogRecord, AppError>>, AppError> {
        opctx.require_operator_read()?;
        let mut appended = self.events.logs_subscription();
        let mut changed = self.events.workflow_subscription();
        let wf = self.store.get_workflow(workflow_id).await?;
        let only = select_action(&wf, selector)?;
        let names: Vec<String> = wf.actions.iter().map(|a| a.spec.name.clone()).collect();
        let (tx, rx) = mpsc::channel(64);
        let store = self.store.clone();
        let id = workflow_id.to_string();
        tokio::spawn(async move {
            let mut cursor = 0;
            loop {
                // Decide whether this is the last round *before* reading, so
                // lines stored just before the end are still delivered.
                let finished = !follow
                    || match store.get_workflow(&id).await {
                        Ok(wf) => match only {
                            Some(i) => wf.state.is_terminal() || wf.actions[i as usize].state().is_terminal(),
                            None => wf.state.is_terminal(),
                        },
                        Err(_) => true,
                    };
                loop {
                    let page = match store.read_logs(&id, only, cursor, LOG_PAGE).await {
                        Ok(page) => page,
                        Err(e) => {
                            let _ = tx.send(Err(e.into())).await;
                            return;
                        }
                    };
                    let full = page.len() as u32 == LOG_PAGE;
                    for line in page {
                        cursor = line.cursor;
                        let action_name = names.get(line.action_index as usize).cloned().unwrap_or_default();
                        if tx.send(Ok(LogRecord { action_name, line })).await.is_err() {
                            return;
                        }
                    }
                    if !full {
                        break;
                    }
                }
                if finished {
                    return;
                }
                tokio::select! {
                    open = wait_for(&mut appended, &id) => if !open { return },
                    open = wait_for(&mut changed, &id) => if !open { return },
                }
            }
        });
        Ok(ReceiverStream::new(rx))
    }
}

/// Resolves an operator's action selector (`name` or `task/name`; empty:
/// every action) to an index.
pub fn select_action(wf: &model::Workflow, selector: &str) -> Result<Option<u32>, AppError> {
    if selector.is_empty() {
        return Ok(None);
    }
    let matches: Vec<u32> = wf
        .actions
        .iter()
        .filter(|a| a.spec.name == selector || format!("{}/{}", a.spec.task, a.spec.name) == selector)
        .map(|a| a.index)
        .collect();
    match matches.as_slice() {
        [one] => Ok(Some(*one)),
        [] => Err(AppError::NotFound(format!(
            "workflow {:?} has no action {selector:?} (actions: {})",
            wf.id,
            wf.actions.iter().map(|a| a.spec.name.as_str()).collect::<Vec<_>>().join(", ")
        ))),
        _ => Err(AppError::InvalidArgument(format!("action name {selector:?} is ambiguous: use TASK/NAME"))),
    }
}
