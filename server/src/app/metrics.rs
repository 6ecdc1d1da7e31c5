//! The server's metrics: what each use case records ([`crate::metrics`]),
//! the timed store transactions every transition goes through, and the
//! scrape.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::{Actor, App, AppError, OpContext};
use crate::metrics::{Before, StoreOperation};
use crate::model::Workflow;
use crate::store::{Mutation, MutationWithJobs, StoreError};

impl App {
    /// The metrics in the Prometheus text format, workflow counts read from
    /// the store now. For operators, and for the unauthenticated
    /// `--metrics-listen` front door (a server task: metrics hold no secret).
    pub async fn scrape_metrics(&self, opctx: &OpContext) -> Result<String, AppError> {
        if !matches!(opctx.actor, Actor::System { .. }) {
            opctx.require_operator_read()?;
        }
        let counts = self.store.workflow_counts().await?;
        Ok(self.metrics.render(counts, self.lease).await)
    }

    /// [`crate::store::Store::update_workflow`], timed, and with what the
    /// committed transition did (attempts handed out and ended, the
    /// workflow's end) recorded. Every transition goes through here.
    pub(crate) async fn update_workflow(&self, id: &str, mutation: Mutation) -> Result<(Workflow, bool), StoreError> {
        self.update_workflow_with_jobs(id, Box::new(move |wf| mutation(wf).map(|changed| (changed, Vec::new())))).await
    }

    /// [`App::update_workflow`] that also submits the BMC jobs the mutation
    /// returns, in the same transaction.
    pub(crate) async fn update_workflow_with_jobs(
        &self,
        id: &str,
        mutation: MutationWithJobs,
    ) -> Result<(Workflow, bool), StoreError> {
        let before: Arc<Mutex<Option<Before>>> = Arc::default();
        let slot = before.clone();
        let observed: MutationWithJobs = Box::new(move |wf| {
            *slot.lock().expect("before slot") = Some(Before::of(wf));
            mutation(wf)
        });
        let started = Instant::now();
        let result = self.store.update_workflow_with_jobs(id, observed).await;
        self.metrics.store_transaction(StoreOperation::UpdateWorkflow, started.elapsed());
        if let Ok((wf, true)) = &result
            && let Some(before) = before.lock().expect("before slot").take()
        {
            self.metrics.transition(&before, wf);
            crate::traces::transition(&before, wf);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::ActionState;
    use crate::state_machine::Report;
    use crate::store::NewLogLine;

    use crate::app::tests::DOCS;

    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[tokio::test]
    async fn use_cases_feed_the_scrape_which_only_operators_and_the_open_listener_read() {
        let dir = tempfile::tempdir().unwrap();
        let app = crate::app::tests::app(dir.path());
        let (operator, agent) = (OpContext::operator(), OpContext::agent("52:54:00:00:00:01"));
        app.apply(&operator, "docs", DOCS).await.unwrap();
        let text = app.scrape_metrics(&operator).await.unwrap();
        assert_eq!(sample(&text, r#"kiln_workflows{template="t",state="PENDING"}"#), Some(1.0), "{text}");
        assert_eq!(sample(&text, r#"kiln_store_transaction_seconds_count{operation="apply"}"#), Some(1.0));

        for (index, lines) in [(0u32, 3u64), (1, 2)] {
            let a = app.next_assignment(&agent, Duration::ZERO).await.unwrap().expect("an attempt");
            assert_eq!(a.action_index, index);
            let batch: Vec<NewLogLine> =
                (1..=lines).map(|seq| NewLogLine { seq, stream: 1, time: 0, text: format!("line {seq}") }).collect();
            app.push_logs(&agent, "w", index, &a.attempt_id, batch.clone()).await.unwrap();
            // Resent after a lost answer: stored once, counted once.
            app.push_logs(&agent, "w", index, &a.attempt_id, batch).await.unwrap();
            let done = Report {
                action_index: index,
                attempt_id: a.attempt_id.clone(),
                state: ActionState::Success,
                exit_code: Some(0),
                reason: String::new(),
                message: String::new(),
                output_json: String::new(),
            };
            app.report(&agent, "w", done).await.unwrap();
        }

        // The open listener's context reads the same; agents read nothing.
        let text = app.scrape_metrics(&OpContext::system("metrics-listen")).await.unwrap();
        assert_eq!(sample(&text, r#"kiln_workflows{template="t",state="SUCCESS"}"#), Some(1.0), "{text}");
        assert_eq!(sample(&text, r#"kiln_workflows{template="t",state="PENDING"}"#), None, "states go away");
        assert_eq!(sample(&text, r#"kiln_workflows_finished_total{template="t",state="SUCCESS"}"#), Some(1.0));
        assert_eq!(sample(&text, r#"kiln_attempts_total{result="SUCCESS",reason=""}"#), Some(2.0));
        assert_eq!(sample(&text, r#"kiln_action_duration_seconds_count{template="t",action="b"}"#), Some(1.0));
        assert_eq!(sample(&text, "kiln_dispatch_latency_seconds_count"), Some(1.0), "b, after a's report");
        assert_eq!(sample(&text, "kiln_log_lines_received_total"), Some(5.0));
        assert_eq!(sample(&text, "kiln_connected_agents"), Some(1.0), "it reported just now");
        // Dispatches and reports: 2 + 2 transitions.
        assert_eq!(sample(&text, r#"kiln_store_transaction_seconds_count{operation="update_workflow"}"#), Some(4.0));
        assert!(matches!(app.scrape_metrics(&agent).await, Err(AppError::PermissionDenied(_))));
    }
}
