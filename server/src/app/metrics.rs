//! The server's metrics: what each use case records ([`crate::metrics`]),
//! the timed store transactions every transition goes through, and the
//! scrape.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::{Actor, App, AppError, OpContext};
use crate::metrics::{Before, StoreOperation};
use crate::model::Workflow;
use crate::store::{Mutation, StoreError};

impl App {
    /// The metrics in the Prometheus text format, workflow counts read from
    /// the store now. For operators, and for the unauthenticated
    /// `--metrics-listen` front door (a server task: metrics hold no secret).
    pub async fn scrape_metrics(&self, opctx: &OpContext) -> Result<String, AppError> {
        if !matches!(opctx.actor, Actor::System { .. }) {
            opctx.require_operator()?;
        }
        let counts = self.store.workflow_counts().await?;
        Ok(self.metrics.render(counts, self.lease).await)
    }

    /// [`crate::store::Store::update_workflow`], timed, and with what the
    /// committed transition did (attempts handed out and ended, the
    /// workflow's end) recorded. Every transition goes through here.
    pub(crate) async fn update_workflow(&self, id: &str, mutation: Mutation) -> Result<(Workflow, bool), StoreError> {
        let before: Arc<Mutex<Option<Before>>> = Arc::default();
        let slot = before.clone();
        let observed: Mutation = Box::new(move |wf| {
            *slot.lock().expect("before slot") = Some(Before::of(wf));
            mutation(wf)
        });
        let started = Instant::now();
        let result = self.store.update_workflow(id, observed).await;
        self.metrics.store_transaction(StoreOperation::UpdateWorkflow, started.elapsed());
        if let Ok((wf, true)) = &result
            && let Some(before) = before.lock().expect("before slot").take()
        {
            self.metrics.transition(&before, wf);
        }
        result
    }
}
