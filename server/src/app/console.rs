//! What the web console reads that the CLI does not: a window of the
//! workflows list, the machines with their latest workflow, and one shared
//! feed of workflow changes for every open list page.
//!
//! The feed is shared on purpose: one store read per committed change, then
//! fanned out, so 200 open browsers cost 200 channel sends, not 200 store
//! reads (see docs/performance.md).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

use super::{App, AppError, OpContext};
use crate::store::{StoredHardware, WorkflowListQuery, WorkflowPage, WorkflowSort, WorkflowSummary};

/// The most rows one list page returns.
pub const MAX_PAGE_ROWS: u32 = 500;

/// Batches the feed holds for a slow reader before it skips ahead (the
/// reader is then told to resynchronise).
const FEED_CAPACITY: usize = 64;

/// Workflows read for one batch at most; beyond, the batch says resync.
const MAX_BATCH: usize = 2000;

/// A machine and the workflow it ran last (or runs now).
#[derive(Debug, Clone, PartialEq)]
pub struct MachineView {
    pub hardware: StoredHardware,
    pub latest_workflow: Option<WorkflowSummary>,
    /// The netboot gate: the machine may boot the hook image (netboot on,
    /// and a workflow of it unfinished), as [`App::boot_decision`] decides.
    pub netboot_open: bool,
}

/// What changed in the workflows since the feed's previous batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FeedBatch {
    /// Each changed workflow once, as it is now.
    pub changed: Vec<WorkflowSummary>,
    /// Workflows that no longer exist.
    pub deleted: Vec<String>,
    /// Changes may have been missed (the feed or a reader lagged, or
    /// another server's notifications were lost): read the list again.
    pub resync: bool,
}

/// The feed sends at most one batch per this interval: the first change
/// after a quiet spell at once, the changes that follow within the
/// interval together at its end, each workflow once. A busy server (10,000
/// agents: hundreds of transitions a second) then costs each reader four
/// wake-ups a second, and the store one read per changed workflow per
/// interval, however many readers there are.
pub const FEED_INTERVAL: Duration = Duration::from_millis(250);

/// The sender of the shared feed, started by its first subscriber.
#[derive(Default)]
pub struct WorkflowFeed {
    tx: std::sync::OnceLock<broadcast::Sender<Arc<FeedBatch>>>,
}

/// `{"progress":{"done":N,"total":T}}` of a log line (docs/action-contract.md):
/// `(done, total)`; `None` for any other line.
pub fn log_progress(text: &str) -> Option<(u64, Option<u64>)> {
    crate::metrics::parse_progress(text).map(|p| (p.done, p.total))
}

impl App {
    /// One window of the workflows list.
    pub async fn workflow_page(&self, opctx: &OpContext, query: WorkflowListQuery) -> Result<WorkflowPage, AppError> {
        opctx.require_operator_read()?;
        if query.limit == 0 || query.limit > MAX_PAGE_ROWS {
            return Err(AppError::InvalidArgument(format!(
                "limit must be between 1 and {MAX_PAGE_ROWS}, not {}",
                query.limit
            )));
        }
        Ok(self.store.list_workflow_page(query).await?)
    }

    /// Every machine with its latest workflow (by creation), in id order.
    pub async fn machines(&self, opctx: &OpContext) -> Result<Vec<MachineView>, AppError> {
        opctx.require_operator_read()?;
        let hardware = self.store.list_hardware().await?;
        // Summaries only (no actions): one light query however many
        // workflows there are.
        let all =
            WorkflowListQuery { sort: WorkflowSort::Created, descending: true, limit: u32::MAX, ..Default::default() };
        let mut latest: HashMap<String, WorkflowSummary> = HashMap::new();
        let mut unfinished: std::collections::HashSet<String> = Default::default();
        for wf in self.store.list_workflow_page(all).await?.rows {
            if !wf.state.is_terminal() {
                unfinished.insert(wf.hardware.clone());
            }
            latest.entry(wf.hardware.clone()).or_insert(wf);
        }
        Ok(hardware
            .into_iter()
            .map(|hardware| {
                let latest_workflow = latest.remove(&hardware.doc.id);
                let netboot_open = hardware.doc.netboot && unfinished.contains(&hardware.doc.id);
                MachineView { hardware, latest_workflow, netboot_open }
            })
            .collect())
    }

    /// Every workflow change from now on, as it commits, in batches (see
    /// [`FEED_INTERVAL`]): the list pages' live updates.
    pub fn follow_workflow_list(
        self: &Arc<Self>,
        opctx: &OpContext,
    ) -> Result<broadcast::Receiver<Arc<FeedBatch>>, AppError> {
        opctx.require_operator_read()?;
        let tx = self.feed.tx.get_or_init(|| {
            let (tx, _) = broadcast::channel(FEED_CAPACITY);
            tokio::spawn(run_feed(Arc::downgrade(self), tx.clone()));
            tx
        });
        Ok(tx.subscribe())
    }
}

/// Gathers changed workflow ids for up to [`FEED_INTERVAL`], reads each
/// once, and hands the batch to every subscriber.
async fn run_feed(app: std::sync::Weak<App>, tx: broadcast::Sender<Arc<FeedBatch>>) {
    use broadcast::error::RecvError;
    let Some(mut changes) = app.upgrade().map(|a| a.events.workflow_subscription()) else { return };
    let mut next_send = tokio::time::Instant::now();
    loop {
        let mut ids: Vec<String> = Vec::new();
        let mut resync = false;
        let mut note = |change: Result<String, RecvError>, ids: &mut Vec<String>| match change {
            Ok(id) if id.is_empty() => {
                resync = true;
                true
            }
            Ok(id) => {
                if !ids.contains(&id) {
                    ids.push(id);
                }
                true
            }
            Err(RecvError::Lagged(_)) => {
                resync = true;
                true
            }
            Err(RecvError::Closed) => false,
        };
        // The first change after a quiet spell.
        if !note(changes.recv().await, &mut ids) {
            return;
        }
        // And what follows it until the interval is over.
        loop {
            tokio::select! {
                change = changes.recv() => if !note(change, &mut ids) { return },
                () = tokio::time::sleep_until(next_send) => break,
            }
        }
        if tx.receiver_count() == 0 {
            // Nobody listens: no store read.
            continue;
        }
        let Some(app) = app.upgrade() else { return };
        let mut batch = FeedBatch { resync, ..Default::default() };
        if ids.len() > MAX_BATCH {
            batch.resync = true;
            ids.truncate(MAX_BATCH);
        }
        for id in ids {
            let query = WorkflowListQuery { id: Some(id.clone()), limit: 1, ..Default::default() };
            match app.store.list_workflow_page(query).await {
                Ok(page) => match page.rows.into_iter().next() {
                    Some(summary) => batch.changed.push(summary),
                    None => batch.deleted.push(id),
                },
                Err(e) => {
                    tracing::warn!(error = %e.detailed(), workflow = %id, "console feed: store read failed");
                    batch.resync = true;
                }
            }
        }
        drop(app);
        let _ = tx.send(Arc::new(batch));
        next_send = tokio::time::Instant::now() + FEED_INTERVAL;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_are_recognised() {
        assert_eq!(log_progress(r#"{"progress":{"done":5,"total":10,"rate":1.5}}"#), Some((5, Some(10))));
        assert_eq!(log_progress(r#"  {"progress":{"done":7}}"#), Some((7, None)));
        assert_eq!(log_progress("progress 5/10"), None);
        assert_eq!(log_progress(r#"{"progress":"soon"}"#), None);
    }
}
