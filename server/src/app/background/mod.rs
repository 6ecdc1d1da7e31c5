//! Work the server does on its own, one file per task, all started here.
//!
//! | task | what it does |
//! |---|---|
//! | [`deadlines`] | ends workflows whose `global_timeout` passed |
//! | [`leases`] | ends attempts whose agent stopped renewing their lease |
//! | [`credential_cache`] | forgets verified agent tokens when another server changed credentials |
//! | [`refusals`] | stores the refused credentials noted since its last run (audit trail) |
//! | [`event_retention`] | prunes the audit trail to its age and size bounds |
//! | [`bmc_jobs`] | runs BMC jobs: claimed with a lease, retried with backoff, ended by their deadline |

pub mod bmc_jobs;
pub mod credential_cache;
pub mod deadlines;
pub mod event_retention;
pub mod leases;
pub mod refusals;

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::App;
use crate::model::{Millis, Workflow, now_millis};

/// How often the sweepers look.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// The running background tasks; dropping this does not stop them, call
/// [`Tasks::stop`].
pub struct Tasks(Vec<JoinHandle<()>>);

impl Tasks {
    pub fn stop(self) {
        for task in self.0 {
            task.abort();
        }
    }
}

/// Starts every background task of `app`.
pub fn start(app: &Arc<App>) -> Tasks {
    Tasks(vec![
        tokio::spawn(deadlines::run(app.clone())),
        tokio::spawn(leases::run(app.clone())),
        tokio::spawn(credential_cache::run(app.clone())),
        tokio::spawn(refusals::run(app.clone())),
        tokio::spawn(event_retention::run(app.clone())),
        tokio::spawn(bmc_jobs::run(app.clone())),
    ])
}

/// Runs `transition` on each workflow of `ids`, each in its own store
/// transaction (so a report or heartbeat that lands first wins, and several
/// replicas may sweep the same store), and tells whoever waits. Returns how
/// many workflows it changed.
pub(crate) async fn sweep_each(
    app: &App,
    ids: Vec<String>,
    what: &'static str,
    transition: fn(&mut Workflow, Millis) -> bool,
) -> u64 {
    let mut changed = 0;
    for id in ids {
        match app.update_workflow(&id, Box::new(move |wf| Ok(transition(wf, now_millis())))).await {
            Ok((wf, true)) => {
                changed += 1;
                tracing::warn!(workflow = %id, "{what}");
                app.events.workflow_changed(&id);
                // A retry of the ended action may be due for its agent.
                if let Some(next) = wf.current_action() {
                    app.events.wake_agent(next.agent_id());
                }
            }
            Ok(_) => {}
            Err(e) => tracing::error!(workflow = %id, error = %e.detailed(), "{what}: check failed"),
        }
    }
    changed
}
