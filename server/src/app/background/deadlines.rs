//! Ends running workflows whose `global_timeout` has passed, even when no
//! agent reports ([`crate::state_machine::expire`]).

use std::sync::Arc;

use super::{SWEEP_INTERVAL, sweep_each};
use crate::app::App;
use crate::state_machine;

pub async fn run(app: Arc<App>) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    loop {
        tick.tick().await;
        match app.store.workflows_with_deadline().await {
            Ok(ids) => {
                sweep_each(&app, ids, "global timeout passed", state_machine::expire).await;
            }
            Err(e) => tracing::error!(error = %e.detailed(), "deadline sweep failed"),
        }
    }
}
