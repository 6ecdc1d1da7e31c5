//! Ends open attempts whose agent stopped renewing their lease
//! ([`crate::state_machine::lose_expired`]); the retry policy then applies.
//!
//! Leases are judged only once this server has been up for a whole lease:
//! while it (or every replica) was down, agents could not heartbeat, so a
//! lease that ran out during the outage says nothing about its agent.

use std::sync::Arc;

use super::{SWEEP_INTERVAL, sweep_each};
use crate::app::App;
use crate::model::now_millis;
use crate::state_machine;

pub async fn run(app: Arc<App>) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    let judged_from = now_millis() + app.lease_millis();
    loop {
        tick.tick().await;
        let now = now_millis();
        if now < judged_from {
            continue;
        }
        match app.store.workflows_with_expired_leases(now).await {
            Ok(ids) => {
                let lost =
                    sweep_each(&app, ids, "agent lost: attempt lease ran out", state_machine::lose_expired).await;
                app.metrics.lease_expired(lost);
            }
            Err(e) => tracing::error!(error = %e.detailed(), "lease sweep failed"),
        }
    }
}
