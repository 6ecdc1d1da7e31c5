//! The server's Prometheus metrics: one [`Metrics`] per [`crate::app::App`],
//! fed by the use cases (dispatch, reports, logs, artifacts, the lease
//! sweeper, store transactions) and rendered in the Prometheus text format by
//! [`crate::app::App::scrape_metrics`]. docs/monitoring.md lists them.
//!
//! Every metric is named `kiln_...`. Label values that come from documents
//! or agents (templates, action names, failure reasons, progress kinds) are
//! cut to a safe alphabet and length: a reason an action writes must not be
//! able to grow the exposition without bound.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::model::{ActionState, Millis, Workflow, WorkflowState};

/// Entries of attempts whose progress is followed at most: when agents
/// vanish without their attempts ending here, the map is emptied rather
/// than let grow (progress then restarts from the next line's figure).
const MAX_FOLLOWED_PROGRESS: usize = 10_000;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkflowLabels {
    template: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    result: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    template: String,
    action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProgressLabels {
    what: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreLabels {
    operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: String,
}

/// Where an artifact came from.
/// Refused credentials by the front door that refused them (agent
/// service, admin service, action API, metrics): a closed set, so the
/// label cannot grow with what callers send.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    pub front_door: String,
}

/// The counter of refused credentials, shared with
/// [`crate::app::audit::RefusalLog`], which sees every refusal.
pub type RefusalCounter = Family<RefusalLabels, Counter>;

/// Enrolment credentials by what became of them: `issued` (a boot script
/// carried one), `enrolled`, or the refusal (`unknown`, `expired`,
/// `replayed`, `wrong_machine`): a closed set.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EnrolmentLabels {
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Copy)]
pub enum ArtifactSource {
    /// An action's `/out`, uploaded by its agent.
    Agent,
    /// An action's own upload through the action API.
    Action,
}

/// A store transaction that is timed.
#[derive(Debug, Clone, Copy)]
pub enum StoreOperation {
    Apply,
    UpdateWorkflow,
}

/// What an agent is doing, as far as this server saw.
#[derive(Debug, Default)]
struct Presence {
    /// NextAction long polls open right now.
    polls: u32,
    last_seen: Option<Instant>,
}

/// The state of one workflow before a transition: enough to tell afterwards
/// which attempts were created or ended by it.
#[derive(Debug, Clone)]
pub struct Before {
    state: WorkflowState,
    /// Per action: its number of attempts and the latest one's state.
    actions: Vec<(usize, Option<ActionState>)>,
}

impl Before {
    /// The workflow's state before the transition.
    pub fn state(&self) -> WorkflowState {
        self.state
    }

    /// Per action: its number of attempts and the latest one's state.
    pub fn actions(&self) -> &[(usize, Option<ActionState>)] {
        &self.actions
    }

    /// The attempts `after` ended (open before, terminal now): (action
    /// index, attempt index), in order. Only the attempt that was latest
    /// before can have changed, and attempts this transition created (which
    /// may have ended too).
    pub fn ended_in(&self, after: &Workflow) -> Vec<(usize, usize)> {
        let mut ended = Vec::new();
        for (action, &(count_before, last_before)) in after.actions.iter().zip(&self.actions) {
            for (i, attempt) in action.attempts.iter().enumerate().skip(count_before.saturating_sub(1)) {
                let was_open = i >= count_before || last_before.is_some_and(|s| !s.is_terminal());
                if was_open && attempt.state.is_terminal() {
                    ended.push((action.index as usize, i));
                }
            }
        }
        ended
    }

    pub fn of(wf: &Workflow) -> Self {
        Self {
            state: wf.state,
            actions: wf.actions.iter().map(|a| (a.attempts.len(), a.attempts.last().map(|t| t.state))).collect(),
        }
    }
}

/// When attempt `attempt` of action `index` became due: its predecessor's
/// end, or for a retry its backoff's end (or the operator's resume). `None`
/// for the first action's first attempt (due when its agent asks).
pub fn due_at(wf: &Workflow, index: usize, attempt: usize) -> Option<Millis> {
    let action = &wf.actions[index];
    if attempt > 0 {
        let previous = &action.attempts[attempt - 1];
        let backoff = (action.spec.retry_backoff_seconds as Millis).saturating_mul(1000);
        previous.finished_at.map(|f| (f + backoff).max(wf.started_at.unwrap_or(0)))
    } else if index > 0 {
        wf.actions[index - 1].attempts.last().and_then(|a| a.finished_at)
    } else {
        None
    }
}

pub struct Metrics {
    registry: Registry,
    workflows: Family<WorkflowLabels, Gauge>,
    workflows_finished: Family<WorkflowLabels, Counter>,
    attempts: Family<AttemptLabels, Counter>,
    action_duration: Family<ActionLabels, Histogram>,
    dispatch_latency: Histogram,
    progress_bytes: Family<ProgressLabels, Counter>,
    progress_rate: Family<ProgressLabels, Histogram>,
    connected_agents: Gauge,
    lease_expiries: Counter,
    store_transactions: Family<StoreLabels, Histogram>,
    log_lines: Counter,
    artifact_bytes: Family<SourceLabels, Counter>,
    refusals: RefusalCounter,
    enrolments: Family<EnrolmentLabels, Counter>,
    agents: Mutex<HashMap<String, Presence>>,
    /// Per (attempt, progress kind): the last `done` seen, so that repeated
    /// or resent lines add nothing to the byte counter.
    progress: Mutex<HashMap<(String, String), u64>>,
    /// One scrape at a time: a scrape rewrites the store-derived gauges
    /// before encoding them.
    scrape: tokio::sync::Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Seconds, 5 ms to ~1.4 h: a store transaction to a disk image written over
/// a slow link.
fn seconds_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.005, 2.0, 20)
}

impl Metrics {
    /// The refused-credential counter, for the refusal log to count into.
    pub fn refusal_counter(&self) -> RefusalCounter {
        self.refusals.clone()
    }

    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kiln");
        let workflows = Family::<WorkflowLabels, Gauge>::default();
        registry.register("workflows", "Workflows in the store, by template and state", workflows.clone());
        let workflows_finished = Family::<WorkflowLabels, Counter>::default();
        registry.register(
            "workflows_finished",
            "Workflows that ended (SUCCESS, FAILED, TIMEOUT) on this server, by template",
            workflows_finished.clone(),
        );
        let attempts = Family::<AttemptLabels, Counter>::default();
        registry.register(
            "attempts",
            "Attempts that ended, by result (SUCCESS, FAILED, TIMEOUT) and reason (empty on success)",
            attempts.clone(),
        );
        let action_duration =
            Family::<ActionLabels, Histogram>::new_with_constructor(|| Histogram::new(seconds_buckets()));
        registry.register_with_unit(
            "action_duration",
            "Time from an attempt's dispatch to its end (pull included), by template and action",
            Unit::Seconds,
            action_duration.clone(),
        );
        let dispatch_latency = Histogram::new(exponential_buckets(0.001, 2.0, 18));
        registry.register_with_unit(
            "dispatch_latency",
            "Time from the report that made an attempt due (the previous action's end, or a retry's \
             backoff passing) to the attempt being handed to its agent",
            Unit::Seconds,
            dispatch_latency.clone(),
        );
        let progress_bytes = Family::<ProgressLabels, Counter>::default();
        registry.register_with_unit(
            "action_progress",
            "Bytes actions reported done in progress lines, by what they move (image, archive, ...)",
            Unit::Bytes,
            progress_bytes.clone(),
        );
        let progress_rate = Family::<ProgressLabels, Histogram>::new_with_constructor(|| {
            // 64 KiB/s to 64 GiB/s.
            Histogram::new(exponential_buckets(65_536.0, 4.0, 11))
        });
        registry.register(
            "action_progress_rate_bytes_per_second",
            "Transfer rates actions report in progress lines (one observation per line)",
            progress_rate.clone(),
        );
        let connected_agents = Gauge::default();
        registry.register(
            "connected_agents",
            "Agents in a NextAction long poll on this server, or heard from within the attempt lease",
            connected_agents.clone(),
        );
        let lease_expiries = Counter::default();
        registry.register(
            "lease_expiries",
            "Open attempts ended because their agent stopped renewing the lease (AgentLost)",
            lease_expiries.clone(),
        );
        let store_transactions =
            Family::<StoreLabels, Histogram>::new_with_constructor(|| Histogram::new(seconds_buckets()));
        registry.register_with_unit(
            "store_transaction",
            "Duration of store transactions: apply (documents) and update_workflow (every transition)",
            Unit::Seconds,
            store_transactions.clone(),
        );
        let log_lines = Counter::default();
        registry.register(
            "log_lines_received",
            "Action output lines received from agents and stored (a line resent after a lost answer counts once)",
            log_lines.clone(),
        );
        let artifact_bytes = Family::<SourceLabels, Counter>::default();
        registry.register_with_unit(
            "artifacts_received",
            "Artifact bytes stored, by source (agent: an action's /out; action: the action API)",
            Unit::Bytes,
            artifact_bytes.clone(),
        );
        let refusals = RefusalCounter::default();
        registry.register(
            "credential_refusals",
            "Refused credentials (agent tokens and certificates, operator and action tokens), by front door; \
             the audit trail (kiln events --kind security) says who and why",
            refusals.clone(),
        );
        let enrolments = Family::<EnrolmentLabels, Counter>::default();
        registry.register(
            "enrolments",
            "Enrolment credentials issued in boot scripts, exchanged (enrolled), and refused, by outcome \
             (issued, enrolled, unknown, expired, replayed, wrong_machine)",
            enrolments.clone(),
        );
        Self {
            registry,
            refusals,
            enrolments,
            workflows,
            workflows_finished,
            attempts,
            action_duration,
            dispatch_latency,
            progress_bytes,
            progress_rate,
            connected_agents,
            lease_expiries,
            store_transactions,
            log_lines,
            artifact_bytes,
            agents: Mutex::default(),
            progress: Mutex::default(),
            scrape: tokio::sync::Mutex::new(()),
        }
    }

    /// Records what one committed transition did: attempts handed out
    /// (dispatch latency), attempts ended (by result and reason, and their
    /// duration), the workflow's end.
    pub fn transition(&self, before: &Before, after: &Workflow) {
        let template = label(&after.template);
        for (action, &(count_before, last_before)) in after.actions.iter().zip(&before.actions) {
            let name = label(&action.spec.name);
            // Only the attempt that was latest before can have changed, and
            // attempts this transition created (which may have ended too).
            for (i, attempt) in action.attempts.iter().enumerate().skip(count_before.saturating_sub(1)) {
                let is_new = i >= count_before;
                let was_open = is_new || last_before.is_some_and(|s| !s.is_terminal());
                if is_new {
                    self.dispatched(after, action.index as usize, i);
                }
                if was_open && attempt.state.is_terminal() {
                    self.attempts
                        .get_or_create(&AttemptLabels {
                            result: attempt.state.as_str().to_string(),
                            reason: label(&attempt.reason),
                        })
                        .inc();
                    if let Some(end) = attempt.finished_at {
                        self.action_duration
                            .get_or_create(&ActionLabels { template: template.clone(), action: name.clone() })
                            .observe(seconds(end - attempt.created_at));
                    }
                    self.forget_progress(&attempt.id);
                }
            }
        }
        if after.state != before.state && after.state.is_terminal() {
            self.workflows_finished
                .get_or_create(&WorkflowLabels { template, state: after.state.as_str().to_string() })
                .inc();
        }
    }

    /// Attempt `attempt` of action `index` was just created: how long it was
    /// due before that. The first attempt of a workflow's first action has
    /// no report before it (its machine may still be booting) and is not
    /// counted.
    fn dispatched(&self, wf: &Workflow, index: usize, attempt: usize) {
        let created = wf.actions[index].attempts[attempt].created_at;
        if let Some(due) = due_at(wf, index, attempt) {
            self.dispatch_latency.observe(seconds(created - due));
        }
    }

    /// Counts one enrolment credential issued, exchanged or refused.
    pub fn enrolment(&self, outcome: &'static str) {
        self.enrolments.get_or_create(&EnrolmentLabels { outcome }).inc();
    }

    pub fn lease_expired(&self, count: u64) {
        self.lease_expiries.inc_by(count);
    }

    pub fn store_transaction(&self, operation: StoreOperation, took: Duration) {
        let operation = match operation {
            StoreOperation::Apply => "apply",
            StoreOperation::UpdateWorkflow => "update_workflow",
        };
        self.store_transactions
            .get_or_create(&StoreLabels { operation: operation.to_string() })
            .observe(took.as_secs_f64());
    }

    pub fn artifact_received(&self, source: ArtifactSource, bytes: u64) {
        let source = match source {
            ArtifactSource::Agent => "agent",
            ArtifactSource::Action => "action",
        };
        self.artifact_bytes.get_or_create(&SourceLabels { source: source.to_string() }).inc_by(bytes);
    }

    /// A batch of an attempt's output lines was stored, `new_lines` of them
    /// for the first time: counts those, and follows the progress lines of
    /// the batch (`candidates`, see [`may_be_progress`]; a resent one adds
    /// nothing).
    pub fn log_lines<'a>(&self, attempt_id: &str, new_lines: u64, candidates: impl Iterator<Item = &'a str>) {
        self.log_lines.inc_by(new_lines);
        for progress in candidates.filter_map(parse_progress) {
            self.progress_line(attempt_id, progress);
        }
    }

    fn progress_line(&self, attempt_id: &str, p: ProgressLine) {
        let labels = ProgressLabels { what: p.what.as_deref().map_or_else(|| "unknown".to_string(), label) };
        if let Some(rate) = p.rate.filter(|r| r.is_finite() && *r >= 0.0) {
            self.progress_rate.get_or_create(&labels).observe(rate);
        }
        let added = {
            let mut seen = self.progress.lock().expect("progress map");
            if seen.len() >= MAX_FOLLOWED_PROGRESS {
                seen.clear();
            }
            let last = seen.entry((attempt_id.to_string(), labels.what.clone())).or_insert(0);
            let added = p.done.saturating_sub(*last);
            *last = (*last).max(p.done);
            added
        };
        if added > 0 {
            self.progress_bytes.get_or_create(&labels).inc_by(added);
        }
    }

    fn forget_progress(&self, attempt_id: &str) {
        self.progress.lock().expect("progress map").retain(|(attempt, _), _| attempt != attempt_id);
    }

    /// An agent called in (a heartbeat, a report).
    pub fn agent_seen(&self, agent: &str) {
        self.agents.lock().expect("agents map").entry(agent.to_string()).or_default().last_seen = Some(Instant::now());
    }

    /// An agent opened a NextAction long poll; it counts as connected until
    /// the returned guard is dropped (the poll answered, or the agent went
    /// away and the call was cancelled).
    pub fn agent_polling<'a>(&'a self, agent: &str) -> PollGuard<'a> {
        let mut agents = self.agents.lock().expect("agents map");
        let presence = agents.entry(agent.to_string()).or_default();
        presence.polls += 1;
        presence.last_seen = Some(Instant::now());
        PollGuard { metrics: self, agent: agent.to_string() }
    }

    /// Sets the gauges a scrape computes (connected agents; workflows by
    /// template and state from `counts`), then renders everything in the
    /// Prometheus text format.
    pub async fn render(&self, counts: Vec<(String, String, u64)>, lease: Duration) -> String {
        let _one_at_a_time = self.scrape.lock().await;
        let connected = {
            let mut agents = self.agents.lock().expect("agents map");
            agents.retain(|_, p| p.polls > 0 || p.last_seen.is_some_and(|t| t.elapsed() <= lease));
            agents.len()
        };
        self.connected_agents.set(connected as i64);
        self.workflows.clear();
        for (template, state, count) in counts {
            self.workflows.get_or_create(&WorkflowLabels { template: label(&template), state }).set(count as i64);
        }
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// The `Content-Type` of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// See [`Metrics::agent_polling`].
pub struct PollGuard<'a> {
    metrics: &'a Metrics,
    agent: String,
}

impl Drop for PollGuard<'_> {
    fn drop(&mut self) {
        let mut agents = self.metrics.agents.lock().expect("agents map");
        if let Some(p) = agents.get_mut(&self.agent) {
            p.polls = p.polls.saturating_sub(1);
            p.last_seen = Some(Instant::now());
        }
    }
}

fn seconds(millis: Millis) -> f64 {
    millis.max(0) as f64 / 1000.0
}

/// A label value from outside: printable ASCII letters, digits and `-_./:`
/// kept, anything else `_`, at most 64 characters.
fn label(value: &str) -> String {
    value.chars().take(64).map(|c| if c.is_ascii_alphanumeric() || "-_./:".contains(c) { c } else { '_' }).collect()
}

#[derive(Debug, PartialEq, serde::Deserialize)]
pub(crate) struct ProgressLine {
    pub done: u64,
    #[serde(default)]
    pub total: Option<u64>,
    #[serde(default)]
    rate: Option<f64>,
    #[serde(default)]
    what: Option<String>,
}

/// A cheap test that rules out almost every line that is not progress.
pub fn may_be_progress(text: &str) -> bool {
    text.trim_start().starts_with('{') && text.contains("\"progress\"")
}

/// The progress of a `{"progress":{"done":N,"total":T,"rate":R}}` line
/// (docs/action-contract.md); `None` for any other line.
pub(crate) fn parse_progress(text: &str) -> Option<ProgressLine> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        progress: ProgressLine,
    }
    if !may_be_progress(text) {
        return None;
    }
    serde_json::from_str::<Envelope>(text.trim()).ok().map(|e| e.progress)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Action, Attempt};

    fn attempt(id: &str, state: ActionState, created: Millis, finished: Option<Millis>, reason: &str) -> Attempt {
        Attempt {
            id: id.into(),
            number: 1,
            agent_id: "agent".into(),
            state,
            created_at: created,
            pulling_at: None,
            running_at: None,
            finished_at: finished,
            exit_code: None,
            reason: reason.into(),
            message: String::new(),
            output_json: String::new(),
            lease_expires_at: None,
        }
    }

    fn workflow(actions: Vec<Vec<Attempt>>) -> Workflow {
        Workflow {
            id: "wf".into(),
            template: "tpl".into(),
            hardware: "hw".into(),
            hardware_map: Default::default(),
            state: WorkflowState::Running,
            reason: String::new(),
            global_timeout_seconds: None,
            boot_options: None,
            created_at: 0,
            started_at: Some(0),
            finished_at: None,
            actions: actions
                .into_iter()
                .enumerate()
                .map(|(i, attempts)| Action {
                    index: i as u32,
                    spec: kiln_documents::PlannedAction {
                        name: format!("a{i}"),
                        retry_backoff_seconds: 2,
                        ..Default::default()
                    },
                    attempts,
                })
                .collect(),
        }
    }

    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    async fn render(m: &Metrics) -> String {
        m.render(vec![("tpl".into(), "RUNNING".into(), 3)], Duration::from_secs(30)).await
    }

    #[tokio::test]
    async fn transitions_count_ended_attempts_durations_and_dispatch_latency() {
        let m = Metrics::new();
        // a0 succeeded at 1000; a1's first attempt is handed out at 1250.
        let mut wf = workflow(vec![vec![attempt("x0", ActionState::Running, 0, None, "")], vec![]]);
        let before = Before::of(&wf);
        wf.actions[0].attempts[0] = attempt("x0", ActionState::Success, 0, Some(1000), "");
        m.transition(&before, &wf);
        let before = Before::of(&wf);
        wf.actions[1].attempts.push(attempt("x1", ActionState::Pending, 1250, None, ""));
        m.transition(&before, &wf);
        // x1 is lost; its retry is due at 3000 + 2 s backoff and handed out at 5500.
        let before = Before::of(&wf);
        wf.actions[1].attempts[0] = attempt("x1", ActionState::Failed, 1250, Some(3000), "AgentLost");
        m.transition(&before, &wf);
        let before = Before::of(&wf);
        wf.actions[1].attempts.push(attempt("x2", ActionState::Pending, 5500, None, ""));
        m.transition(&before, &wf);
        // A repeat (nothing changed) counts nothing.
        m.transition(&Before::of(&wf), &wf);
        let before = Before::of(&wf);
        wf.actions[1].attempts[1] = attempt("x2", ActionState::Failed, 5500, Some(6000), "Disk Too\nSmall{}");
        wf.state = WorkflowState::Failed;
        m.transition(&before, &wf);

        let text = render(&m).await;
        assert_eq!(sample(&text, r#"kiln_attempts_total{result="SUCCESS",reason=""}"#), Some(1.0), "{text}");
        assert_eq!(sample(&text, r#"kiln_attempts_total{result="FAILED",reason="AgentLost"}"#), Some(1.0));
        assert_eq!(sample(&text, r#"kiln_attempts_total{result="FAILED",reason="Disk_Too_Small__"}"#), Some(1.0));
        assert_eq!(sample(&text, r#"kiln_workflows_finished_total{template="tpl",state="FAILED"}"#), Some(1.0));
        assert_eq!(sample(&text, "kiln_dispatch_latency_seconds_count"), Some(2.0));
        assert_eq!(sample(&text, "kiln_dispatch_latency_seconds_sum"), Some(0.75));
        assert_eq!(sample(&text, r#"kiln_action_duration_seconds_sum{template="tpl",action="a1"}"#), Some(1.75 + 0.5));
        assert_eq!(sample(&text, r#"kiln_workflows{template="tpl",state="RUNNING"}"#), Some(3.0));
    }

    #[tokio::test]
    async fn progress_lines_add_bytes_once_and_other_lines_only_count() {
        let m = Metrics::new();
        let lines = [
            r#"{"progress":{"what":"image","done":100,"total":400,"rate":65536}}"#,
            "plain output",
            r#"{"progress":{"what":"image","done":300,"total":400,"rate":65536}}"#,
            r#"{"progress":{"done":50,"total":null}}"#,
            r#"{"progress": "not an object"}"#,
        ];
        m.log_lines("att", 5, lines.iter().copied());
        // Resent: no new line, no new bytes.
        m.log_lines("att", 0, lines[..1].iter().copied());
        let text = render(&m).await;
        assert_eq!(sample(&text, "kiln_log_lines_received_total"), Some(5.0), "{text}");
        assert_eq!(sample(&text, r#"kiln_action_progress_bytes_total{what="image"}"#), Some(300.0));
        assert_eq!(sample(&text, r#"kiln_action_progress_bytes_total{what="unknown"}"#), Some(50.0));
        assert_eq!(sample(&text, r#"kiln_action_progress_rate_bytes_per_second_count{what="image"}"#), Some(3.0));
    }

    #[tokio::test]
    async fn agents_count_while_polling_or_recently_seen() {
        let m = Metrics::new();
        let lease = Duration::from_millis(50);
        let connected = |text: String| sample(&text, "kiln_connected_agents");
        let poll = m.agent_polling("a");
        m.agent_seen("b");
        assert_eq!(connected(m.render(vec![], lease).await), Some(2.0));
        tokio::time::sleep(Duration::from_millis(80)).await;
        // b's heartbeat is older than the lease; a still polls.
        assert_eq!(connected(m.render(vec![], lease).await), Some(1.0));
        drop(poll);
        assert_eq!(connected(m.render(vec![], lease).await), Some(1.0), "a answered just now");
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(connected(m.render(vec![], lease).await), Some(0.0));
    }
}
