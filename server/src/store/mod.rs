//! Where the server keeps everything. The rest of the server sees only the
//! [`Store`] trait, so a PostgreSQL implementation can sit beside the
//! embedded SQLite one without anything above this module changing.
//!
//! Two implementations: [`sqlite::SqliteStore`], embedded in one server's
//! data directory (the default), and [`postgres::PostgresStore`], one
//! database several server replicas share. [`open`] picks one from the
//! `--database-url`.
//!
//! Consistency contract every implementation keeps:
//! - [`Store::apply`] writes a whole batch or nothing.
//! - [`Store::update_workflow`] runs the mutation on the latest committed
//!   workflow and commits the result in one transaction, serialised with any
//!   other update of the same workflow; it returns only after the commit, so
//!   whatever the caller acknowledges is durable.
//! - Among several servers on one store, a change committed by one wakes
//!   the waiters of the others ([`Store::forward_changes`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kiln_documents::{ActionDefinitionDoc, HardwareDoc, RuleDoc, TemplateDoc};

use crate::events::Events;
use crate::model::{ActionState, Millis, Workflow, WorkflowState};
use crate::state_machine::TransitionError;

#[cfg(test)]
mod conformance;
pub mod postgres;
pub mod sqlite;

pub type DynStore = Arc<dyn Store>;

/// A change to one workflow, run inside the store's transaction. Returns
/// whether it changed anything (nothing is written otherwise).
pub type Mutation = Box<dyn FnOnce(&mut Workflow) -> Result<bool, TransitionError> + Send>;

/// The start of the keys of workflow `id`'s BMC step jobs
/// (`app::bmc::workflow_job_key`): deleting the workflow deletes them.
pub fn workflow_jobs_prefix(id: &str) -> String {
    format!("workflow/{id}/")
}

/// SQL: a claimable BMC job `j` also waits for its machine's other jobs
/// (docs/bmc.md): none of them may be running (lease held) or older and
/// unfinished, so one machine's jobs run one at a time, in the order
/// submitted ("power off" then "power on" never race). `now` is the
/// statement's placeholder for the current time. Both stores use it.
pub(crate) fn one_job_per_machine(now: &str) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM bmc_jobs o
         WHERE o.hardware_id = j.hardware_id AND o.id <> j.id AND o.state IN ('pending', 'running')
         AND ((o.created_at, o.id) < (j.created_at, j.id) OR (o.state = 'running' AND o.lease_until >= {now})))"
    )
}

/// A [`Mutation`] that also submits BMC jobs (idempotent by key) in the same
/// transaction: a workflow's finishing BMC step commits with its SUCCESS, so
/// a server that stops between the two cannot lose the step.
pub type MutationWithJobs = Box<dyn FnOnce(&mut Workflow) -> Result<(bool, Vec<BmcJob>), TransitionError> + Send>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{kind} {name:?} not found")]
    NotFound { kind: &'static str, name: String },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    InUse(String),
    #[error(transparent)]
    Transition(#[from] TransitionError),
    /// The database failed (I/O, connection, corrupt row...). `context` says
    /// what kiln was doing and is safe to show; `source` keeps the backend's
    /// own error for the server log only: its text may name tables, queries
    /// or hosts, which clients have no use for.
    #[error("store failure: {context}")]
    Backend {
        context: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl StoreError {
    pub fn backend(context: impl Into<String>, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Backend { context: context.into(), source: Some(source.into()) }
    }

    /// A failure with no underlying error (a row kiln cannot make sense of).
    pub fn corrupt(context: impl Into<String>) -> Self {
        Self::Backend { context: context.into(), source: None }
    }

    /// The error with its whole chain of causes, for the server's log.
    pub fn detailed(&self) -> String {
        let mut text = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            text.push_str(": ");
            text.push_str(&c.to_string());
            cause = c.source();
        }
        text
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoredHardware {
    pub doc: HardwareDoc,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// A stored template format. One this build does not know (written by a
/// newer server) is read as kiln's own: strict, the safe side.
pub(crate) fn template_format(stored: &str) -> kiln_documents::TemplateFormat {
    kiln_documents::TemplateFormat::parse(stored).unwrap_or_default()
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoredTemplate {
    pub doc: TemplateDoc,
    pub created_at: Millis,
    pub updated_at: Millis,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoredDefinition {
    pub doc: ActionDefinitionDoc,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// Everything one `kiln apply` writes.
#[derive(Debug, Default)]
pub struct ApplyBatch {
    pub hardware: Vec<HardwareDoc>,
    pub definitions: Vec<ActionDefinitionDoc>,
    pub templates: Vec<TemplateDoc>,
    pub workflows: Vec<Workflow>,
    /// BMC credentials, sealed by the app ([`crate::app::bmc`]); written
    /// after the templates, before the workflows (and so are their outcomes).
    pub bmc_secrets: Vec<SealedBmcSecret>,
    /// sha256 (hex) of the agent token of each hardware id, used only when
    /// that hardware is *created* by this batch: an update keeps the stored
    /// hash, so re-applying a document never changes a machine's credential.
    pub token_hashes: HashMap<String, String>,
    /// Discovered hardware this batch adopts (a Hardware of the batch names
    /// its MAC): deleted first, in the same transaction, if still discovered.
    pub adopt: Vec<String>,
    /// Rules (docs/rules.md); written after the BMC secrets, before the
    /// workflows (and so are their outcomes).
    pub rules: Vec<RuleDoc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoredRule {
    pub doc: RuleDoc,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// A machine a rule adopted, as recorded in the adoption's transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleMatch {
    /// The discovered MAC: a machine is matched once.
    pub mac: String,
    pub rule: String,
    /// The Hardware it was adopted as.
    pub hardware_id: String,
    pub matched_at: Millis,
}

/// What [`Store::adopt_by_rule`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleAdoption {
    /// Written: the batch's outcomes, as [`Store::apply`]'s.
    Adopted(Vec<Outcome>),
    /// Nothing written: the rule has adopted `max_count` machines already.
    Full { max_count: u32 },
    /// Nothing written: this MAC was matched before (by `rule`).
    AlreadyMatched { rule: String, hardware_id: String },
    /// Nothing written: the MAC is not (or no longer) a discovered machine.
    NotDiscovered,
    /// Nothing written: the rule is gone (deleted since it was read).
    NoRule,
    /// Nothing written: a hardware of that name exists already.
    NameTaken,
}

/// A BmcSecret as the store keeps it: sealed (encrypted and authenticated)
/// by the server; the store never sees the password.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedBmcSecret {
    pub name: String,
    pub sealed: String,
}

impl std::fmt::Debug for SealedBmcSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedBmcSecret").field("name", &self.name).finish_non_exhaustive()
    }
}

/// The last power state a hardware's BMC reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PowerReading {
    /// As kiln_bmc::PowerState displays it: "on", "off", ...
    pub state: String,
    pub read_at: Millis,
}

/// A BMC operation as a durable job (see [`crate::app::background::bmc_jobs`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BmcJob {
    pub id: String,
    /// Submissions with the same key are one job.
    pub key: String,
    pub hardware_id: String,
    /// "power on", "power cycle", "boot pxe once uefi", ...
    pub operation: String,
    /// "pending", "running", "succeeded" or "failed".
    pub state: String,
    /// Runs started so far.
    pub attempts: u32,
    /// A pending job is not claimed before this.
    pub next_attempt_at: Millis,
    /// The server running it (empty when none) and until when.
    pub lease_owner: String,
    pub lease_until: Millis,
    /// A job not done by then fails ("timed out") instead of retrying.
    pub deadline: Millis,
    /// What the BMC reported (succeeded), e.g. "on".
    pub result: String,
    /// The last error (retried or final).
    pub error: String,
    pub created_at: Millis,
    pub updated_at: Millis,
}

impl BmcJob {
    /// Not ended yet: pending (waiting for its first or next run) or
    /// running.
    pub fn is_open(&self) -> bool {
        self.state == "pending" || self.state == "running"
    }
}

/// How a job's run ended, as [`Store::finish_bmc_job`] records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobEnd {
    Succeeded {
        result: String,
    },
    /// Pending again, not before `at`.
    Retry {
        error: String,
        at: Millis,
    },
    Failed {
        error: String,
    },
}

/// A job end as stored: (state, result, error, next_attempt_at).
pub(crate) fn job_end(end: &JobEnd) -> (&'static str, &str, &str, Millis) {
    match end {
        JobEnd::Succeeded { result } => ("succeeded", result.as_str(), "", 0),
        JobEnd::Retry { error, at } => ("pending", "", error.as_str(), *at),
        JobEnd::Failed { error } => ("failed", "", error.as_str(), 0),
    }
}

/// What the server checks an agent's token against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentCredential {
    /// The hardware whose `agent_id` the agent claimed.
    pub hardware_id: String,
    /// sha256 (hex) of its current token; `None` when revoked (or never
    /// issued): every token is then refused.
    pub token_hash: Option<String>,
}

/// One enrolment credential as stored: what it is bound to, never the
/// credential itself (only its sha256).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolment {
    /// sha256 (hex) of the credential.
    pub credential_hash: String,
    pub hardware_id: String,
    /// The agent id and the MAC it is bound to.
    pub agent_id: String,
    pub mac: String,
    /// The workflow of the boot it was issued for.
    pub workflow: String,
    pub created_at: Millis,
    pub expires_at: Millis,
    /// When it was presented first (it works only that time); `None`: never.
    pub used_at: Option<Millis>,
}

/// A machine's inventory as stored: the JSON document its agent reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredInventory {
    pub hardware_id: String,
    pub agent_id: String,
    pub inventory_json: String,
    /// sha256 (hex) of `inventory_json`: a report that repeats it changes
    /// only `seen_at`.
    pub digest: String,
    /// When the stored document last changed.
    pub reported_at: Millis,
    /// When it was last reported, changed or not.
    pub seen_at: Millis,
}

/// One attempt as seen by [`Store::attempt_access`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptAccess {
    pub action_index: u32,
    pub agent_id: String,
    pub state: ActionState,
    pub workflow_state: WorkflowState,
}

impl AttemptAccess {
    /// From a row of either store (states as stored text).
    pub fn from_row(
        action_index: u32,
        agent_id: String,
        state: &str,
        workflow_state: &str,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            action_index,
            agent_id,
            state: ActionState::parse(state).ok_or_else(|| StoreError::corrupt(format!("attempt state {state:?}")))?,
            workflow_state: WorkflowState::parse(workflow_state)
                .ok_or_else(|| StoreError::corrupt(format!("workflow state {workflow_state:?}")))?,
        })
    }

    /// The attempt is open and so is its workflow: it may still act.
    pub fn is_open(&self) -> bool {
        !self.state.is_terminal() && !self.workflow_state.is_terminal()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "lowercase")]
pub enum Outcome {
    Created,
    Updated,
    Unchanged,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// One stored log line, with the position readers resume from.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredLogLine {
    /// Increases with every stored line across the whole store.
    pub cursor: i64,
    pub action_index: u32,
    pub attempt_id: String,
    pub seq: u64,
    pub stream: i32,
    pub time: Millis,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewLogLine {
    pub seq: u64,
    pub stream: i32,
    pub time: Millis,
    pub text: String,
}

/// What [`Store::append_logs`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The highest seq stored for the attempt.
    pub stored_through: u64,
    /// Lines of the batch that were not stored before (a resent batch: 0).
    pub new_lines: u64,
}

/// The index entry of one uploaded artifact.
#[derive(Debug, Clone, PartialEq)]
pub struct Artifact {
    pub workflow_id: String,
    pub action_index: u32,
    pub attempt_id: String,
    pub path: String,
    pub size: u64,
    pub sha256: String,
    pub created_at: Millis,
}

/// What an audit event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::EnumString)]
#[strum(serialize_all = "lowercase", ascii_case_insensitive)]
pub enum EventKind {
    /// An operator's write (apply, delete, retry, credentials), done or
    /// refused.
    Write,
    /// A refused credential (agent, operator or action token).
    Security,
}

/// How an audited operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::EnumString)]
#[strum(serialize_all = "lowercase")]
pub enum EventOutcome {
    Ok,
    Refused,
}

macro_rules! stored_names {
    ($($t:ty),*) => {$(
        impl $t {
            pub fn as_str(self) -> &'static str {
                self.into()
            }

            pub fn parse(s: &str) -> Option<Self> {
                s.parse().ok()
            }
        }
    )*};
}
stored_names!(EventKind, EventOutcome);

/// One entry of the audit trail. Never holds a secret: tokens, passwords
/// and token hashes stay out of every field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Increases with every stored event; set by the store (ignored when
    /// recording).
    pub cursor: i64,
    pub time: Millis,
    pub kind: EventKind,
    /// Which credential acted: `operator`, `agent ID`, an action's attempt,
    /// or what a refused caller claimed to be.
    pub actor: String,
    /// The caller's address, when known; empty otherwise.
    pub peer: String,
    pub action: String,
    pub object: String,
    pub outcome: EventOutcome,
    /// Why it was refused (empty when ok).
    pub reason: String,
    /// How many identical events this one stands for (refusals repeated
    /// within the rate limit's window are counted, not stored one by one).
    pub count: u64,
}

/// Which events [`Store::list_events`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventQuery {
    /// Only events stored after this cursor (0: from the first).
    pub after: i64,
    /// Only events at or after this time (0: any).
    pub since: Millis,
    pub kind: Option<EventKind>,
    pub limit: u32,
    /// When more than `limit` match: the newest `limit` (true) or the
    /// oldest (false). Either way they come oldest first.
    pub newest: bool,
}

/// A workflow without its actions: one row of the workflows list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowSummary {
    pub id: String,
    pub template: String,
    pub hardware: String,
    pub state: WorkflowState,
    pub reason: String,
    pub created_at: Millis,
    pub started_at: Option<Millis>,
    pub finished_at: Option<Millis>,
}

/// The column a workflows list is ordered by (then by id, so pages never
/// overlap).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, strum::IntoStaticStr, strum::EnumString)]
#[strum(serialize_all = "lowercase")]
pub enum WorkflowSort {
    Id,
    Template,
    Hardware,
    State,
    #[default]
    Created,
    Finished,
}

impl WorkflowSort {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
    }

    /// The column, the same in both stores.
    pub(crate) fn column(self) -> &'static str {
        match self {
            Self::Id => "id",
            Self::Template => "template",
            Self::Hardware => "hardware",
            Self::State => "state",
            Self::Created => "created_at",
            Self::Finished => "finished_at",
        }
    }
}

/// Which workflows [`Store::list_workflow_page`] returns: equality filters
/// (`None`: any), an order, and a window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkflowListQuery {
    pub id: Option<String>,
    pub state: Option<WorkflowState>,
    pub template: Option<String>,
    pub hardware: Option<String>,
    pub sort: WorkflowSort,
    pub descending: bool,
    pub offset: u64,
    pub limit: u32,
}

impl WorkflowListQuery {
    /// The filters as (column, value) pairs, for both stores' SQL.
    pub(crate) fn filters(&self) -> Vec<(&'static str, String)> {
        let mut f = Vec::new();
        if let Some(id) = &self.id {
            f.push(("id", id.clone()));
        }
        if let Some(state) = self.state {
            f.push(("state", state.as_str().to_string()));
        }
        if let Some(t) = &self.template {
            f.push(("template", t.clone()));
        }
        if let Some(h) = &self.hardware {
            f.push(("hardware", h.clone()));
        }
        f
    }

    /// `ORDER BY` for both stores: unfinished workflows (no `finished_at`)
    /// sort last ascending, first descending.
    pub(crate) fn order_by(&self) -> String {
        let dir = if self.descending { "DESC" } else { "ASC" };
        let col = self.sort.column();
        if col == "id" {
            format!("id {dir}")
        } else {
            let nulls = if self.descending { "NULLS FIRST" } else { "NULLS LAST" };
            format!("{col} {dir} {nulls}, id {dir}")
        }
    }
}

/// One window of a workflows list, and how many match in all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkflowPage {
    pub rows: Vec<WorkflowSummary>,
    pub total: u64,
}

/// Builds a summary from a stored row (state as stored text).
#[allow(clippy::too_many_arguments)]
pub(crate) fn summary_from_row(
    id: String,
    template: String,
    hardware: String,
    state: &str,
    reason: String,
    created_at: Millis,
    started_at: Option<Millis>,
    finished_at: Option<Millis>,
) -> Result<WorkflowSummary, StoreError> {
    Ok(WorkflowSummary {
        id,
        template,
        hardware,
        state: WorkflowState::parse(state).ok_or_else(|| StoreError::corrupt(format!("workflow state {state:?}")))?,
        reason,
        created_at,
        started_at,
        finished_at,
    })
}

/// Parses a stored row's kind and outcome.
pub(crate) fn event_from_row(
    cursor: i64,
    time: Millis,
    kind: &str,
    [actor, peer, action, object]: [String; 4],
    outcome: &str,
    reason: String,
    count: i64,
) -> Result<Event, StoreError> {
    Ok(Event {
        cursor,
        time,
        kind: EventKind::parse(kind).ok_or_else(|| StoreError::corrupt(format!("event kind {kind:?}")))?,
        actor,
        peer,
        action,
        object,
        outcome: EventOutcome::parse(outcome)
            .ok_or_else(|| StoreError::corrupt(format!("event outcome {outcome:?}")))?,
        reason,
        count: count.max(0) as u64,
    })
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Writes hardware and templates (create or update) and creates
    /// workflows, all in one transaction. Returns one outcome per object in
    /// batch order: hardware, definitions, templates, workflows. A workflow id that exists
    /// with a different definition is a [`StoreError::Conflict`]: workflows
    /// are immutable once created.
    async fn apply(&self, batch: ApplyBatch) -> Result<Vec<Outcome>, StoreError>;

    async fn get_hardware(&self, id: &str) -> Result<StoredHardware, StoreError>;
    async fn list_hardware(&self) -> Result<Vec<StoredHardware>, StoreError>;
    async fn get_template(&self, name: &str) -> Result<StoredTemplate, StoreError>;
    async fn list_templates(&self) -> Result<Vec<StoredTemplate>, StoreError>;
    async fn get_workflow(&self, id: &str) -> Result<Workflow, StoreError>;
    async fn list_workflows(&self) -> Result<Vec<Workflow>, StoreError>;
    /// One window of the workflows `query` selects, without their actions,
    /// and how many it selects in all (the console's list: fast with tens
    /// of thousands of workflows).
    async fn list_workflow_page(&self, query: WorkflowListQuery) -> Result<WorkflowPage, StoreError>;

    /// How many workflows there are, by template and state: `(template,
    /// state, count)`, without loading them (every metrics scrape asks).
    async fn workflow_counts(&self) -> Result<Vec<(String, String, u64)>, StoreError>;

    /// Deletes hardware or a template unless an unfinished workflow uses it
    /// ([`StoreError::InUse`]); deletes a workflow with its attempts and logs.
    async fn delete(&self, kind: ObjectKind, name: &str) -> Result<(), StoreError>;

    /// Ids of unfinished workflows with at least one action for `agent_id`,
    /// oldest first.
    async fn active_workflows_for_agent(&self, agent_id: &str) -> Result<Vec<String>, StoreError>;

    /// Ids of unfinished workflows that have a global timeout.
    async fn workflows_with_deadline(&self) -> Result<Vec<String>, StoreError>;

    /// Ids of workflows with an open attempt whose lease ran out before
    /// `now` (candidates for [`crate::state_machine::lose_expired`]).
    async fn workflows_with_expired_leases(&self, now: Millis) -> Result<Vec<String>, StoreError>;

    /// A heartbeat: moves the lease of each named attempt that is open and
    /// `agent_id`'s to `until` (never backwards), without loading its
    /// workflow. Returns the named attempts that are not open or not the
    /// agent's, which the agent must drop.
    async fn renew_leases(
        &self,
        agent_id: &str,
        attempt_ids: Vec<String>,
        until: Millis,
    ) -> Result<Vec<String>, StoreError>;

    /// Who owns attempt `attempt_id` of workflow `workflow_id`, and whether
    /// it and its workflow are still open: what every call that touches an
    /// attempt without changing its workflow (log batches, artifacts, action
    /// tokens) must check, in one indexed read instead of loading the whole
    /// workflow. `None` when there is no such attempt in that workflow.
    async fn attempt_access(&self, workflow_id: &str, attempt_id: &str) -> Result<Option<AttemptAccess>, StoreError>;

    /// Runs `mutation` on the workflow in one transaction and returns the
    /// workflow as committed and whether it changed.
    async fn update_workflow(&self, id: &str, mutation: Mutation) -> Result<(Workflow, bool), StoreError> {
        self.update_workflow_with_jobs(id, Box::new(move |wf| mutation(wf).map(|changed| (changed, Vec::new())))).await
    }

    /// [`Store::update_workflow`], and creates the jobs the mutation returns
    /// (only when it changed the workflow) in the same transaction; a job
    /// whose key exists is left as it is.
    async fn update_workflow_with_jobs(
        &self,
        id: &str,
        mutation: MutationWithJobs,
    ) -> Result<(Workflow, bool), StoreError>;

    /// Stores log lines of an attempt; lines whose seq is already stored are
    /// skipped.
    async fn append_logs(
        &self,
        workflow_id: &str,
        action_index: u32,
        attempt_id: &str,
        lines: Vec<NewLogLine>,
    ) -> Result<Appended, StoreError>;

    /// The workflow's data document (JSON) and its version.
    async fn workflow_data(&self, id: &str) -> Result<(String, u64), StoreError>;

    /// Replaces the data document if it is still at `expected_version`
    /// ([`StoreError::Conflict`] otherwise); returns the new version.
    async fn set_workflow_data(&self, id: &str, json: String, expected_version: u64) -> Result<u64, StoreError>;

    /// ActionDefinitions, by name.
    async fn list_definitions(&self) -> Result<Vec<StoredDefinition>, StoreError>;

    /// Records an artifact (replacing one of the same attempt and path).
    async fn put_artifact(&self, artifact: Artifact) -> Result<(), StoreError>;

    /// Artifacts of a workflow, by action, attempt and path.
    async fn list_artifacts(&self, workflow_id: &str) -> Result<Vec<Artifact>, StoreError>;

    /// Log lines of a workflow stored after `after_cursor`, in storage order,
    /// optionally of one action only, at most `limit`.
    async fn read_logs(
        &self,
        workflow_id: &str,
        action_index: Option<u32>,
        after_cursor: i64,
        limit: u32,
    ) -> Result<Vec<StoredLogLine>, StoreError>;

    /// The credential of the hardware whose agent id is `agent_id`, or
    /// `None` when no hardware has that agent id.
    async fn agent_credential(&self, agent_id: &str) -> Result<Option<AgentCredential>, StoreError>;

    /// The agent id of the hardware whose current token hash is
    /// `token_hash`, if any: tells a token of another machine from a bad one.
    async fn agent_for_token_hash(&self, token_hash: &str) -> Result<Option<String>, StoreError>;

    /// Replaces the token hash of a hardware (rotate: a new hash; revoke:
    /// `None`). [`StoreError::NotFound`] for unknown hardware.
    async fn set_token_hash(&self, hardware_id: &str, token_hash: Option<String>) -> Result<(), StoreError>;

    /// Stores a new enrolment credential (`enrolment.used_at` is ignored),
    /// deleting in the same transaction the unused credentials of the same
    /// hardware (a later boot supersedes an earlier one) and every
    /// credential that expired before `prune_before`.
    async fn issue_enrolment(&self, enrolment: Enrolment, prune_before: Millis) -> Result<(), StoreError>;

    /// Marks the credential whose hash is `credential_hash` used at `now`
    /// (unless it already was) and returns it as it was before: one
    /// transaction, so of two callers presenting the same credential at
    /// once exactly one sees it unused. `None`: no such credential.
    async fn take_enrolment(&self, credential_hash: &str, now: Millis) -> Result<Option<Enrolment>, StoreError>;

    /// Stores a hardware's inventory, replacing the previous one. Returns
    /// whether it changed (its digest differs from the stored one's);
    /// `seen_at` moves either way. [`StoreError::NotFound`] for unknown
    /// hardware.
    async fn put_inventory(&self, inventory: StoredInventory) -> Result<bool, StoreError>;

    /// Creates the discovered hardware `hw` for `mac` (server
    /// `--discovery`) unless that MAC already has a discovered record, and
    /// returns the id of the record that MAC has. One transaction keyed by
    /// the MAC's unique constraint: two boots of one machine at once, on
    /// one replica or two, get the same record.
    async fn discover_hardware(&self, mac: &str, hw: HardwareDoc, now: Millis) -> Result<String, StoreError>;

    /// The discovered (not yet adopted) hardware: (MAC, hardware id), by MAC.
    async fn list_discovered(&self) -> Result<Vec<(String, String)>, StoreError>;

    /// The rules, by name.
    async fn list_rules(&self) -> Result<Vec<StoredRule>, StoreError>;

    /// The machines rules adopted, by MAC.
    async fn list_rule_matches(&self) -> Result<Vec<RuleMatch>, StoreError>;

    /// A rule adopts a discovered machine: in one transaction, serialised
    /// with every other adoption by the same rule (on PostgreSQL the
    /// rule's row is locked, `SELECT ... FOR UPDATE`), checks that the rule
    /// still exists and has adopted fewer than its `max_count` machines,
    /// that `m.mac` is still discovered and was never matched, and that no
    /// hardware is named `m.hardware_id`; then writes `batch` (the adopting
    /// Hardware and its workflow, as [`Store::apply`]) and records `m`.
    /// A refusal writes nothing.
    async fn adopt_by_rule(&self, batch: ApplyBatch, m: RuleMatch) -> Result<RuleAdoption, StoreError>;

    /// The stored inventory of a hardware, if its agent reported one.
    async fn get_inventory(&self, hardware_id: &str) -> Result<Option<StoredInventory>, StoreError>;

    /// Appends events to the audit trail, all in one transaction, and
    /// tells the other servers on this store.
    async fn record_events(&self, events: Vec<Event>) -> Result<(), StoreError>;

    /// Events matching `query`, oldest first (see [`EventQuery::newest`]).
    async fn list_events(&self, query: EventQuery) -> Result<Vec<Event>, StoreError>;

    /// Retention: deletes events older than `before` and all but the newest
    /// `keep` events. Returns how many were deleted.
    async fn prune_events(&self, before: Millis, keep: u64) -> Result<u64, StoreError>;

    /// A secret every server on this store must share (the action token
    /// key): the stored one, storing `candidate` first if there is none.
    /// `None`: this store is never shared, the data directory keeps it.
    async fn shared_secret(&self, _name: &str, _candidate: Vec<u8>) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(None)
    }

    /// The sealed BmcSecret `name`, if applied.
    async fn bmc_secret(&self, name: &str) -> Result<Option<SealedBmcSecret>, StoreError>;

    /// Records the power state a hardware's BMC reported (replacing the
    /// previous one unless that was read later). [`StoreError::NotFound`]
    /// for unknown hardware.
    async fn set_power_reading(&self, hardware_id: &str, reading: PowerReading) -> Result<(), StoreError>;

    /// The last recorded power state of a hardware.
    async fn power_reading(&self, hardware_id: &str) -> Result<Option<PowerReading>, StoreError>;

    /// Stores a new job, or returns the one with the same key
    /// ([`Outcome::Created`] or [`Outcome::Unchanged`]).
    async fn create_bmc_job(&self, job: BmcJob) -> Result<(BmcJob, Outcome), StoreError>;

    /// Claims the oldest job that is due (pending and past its
    /// `next_attempt_at`, or running with its lease run out) for `owner`
    /// until `lease_until`, counting an attempt. Two servers never claim
    /// one job at once.
    async fn claim_bmc_job(&self, owner: &str, now: Millis, lease_until: Millis) -> Result<Option<BmcJob>, StoreError>;

    /// Ends the run of a job `owner` holds; `false` (nothing written) when
    /// it no longer holds it.
    async fn finish_bmc_job(&self, id: &str, owner: &str, end: JobEnd) -> Result<bool, StoreError>;

    /// The newest `limit` jobs, newest first.
    async fn list_bmc_jobs(&self, limit: u32) -> Result<Vec<BmcJob>, StoreError>;
    /// The jobs whose key starts with `prefix` (a workflow's BMC steps:
    /// `workflow/ID/`), oldest first.
    async fn list_bmc_jobs_by_key_prefix(&self, prefix: &str) -> Result<Vec<BmcJob>, StoreError>;
    /// Renames the FAILED job `key` to `new_key`, so that the next
    /// submission under `key` creates a new job (a workflow step run again
    /// by `kiln retry`) while the failed one stays listed. False when no
    /// failed job has that key.
    async fn rekey_failed_bmc_job(&self, key: &str, new_key: &str) -> Result<bool, StoreError>;

    /// Makes the jobs `owner` holds due again at once (a server restarting
    /// with the same owner: whatever it was running died with it). Returns
    /// how many.
    async fn release_bmc_jobs(&self, owner: &str) -> Result<u64, StoreError>;

    /// Starts forwarding changes committed by *other* servers on this store
    /// into `events` (a store only one server uses has none: `None`).
    fn forward_changes(&self, _events: Arc<Events>) -> Option<tokio::task::JoinHandle<()>> {
        None
    }

    /// How long a waiter may sleep before it re-reads the store even
    /// without an event: set by stores whose events can be lost (another
    /// server's notification during a reconnect). `None`: events are never
    /// lost.
    fn recheck_interval(&self) -> Option<Duration> {
        None
    }
}

/// Where the store lives, from `--database-url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// The embedded SQLite store in this directory (`kiln.db` inside).
    Sqlite(PathBuf),
    /// A PostgreSQL database (the URL as given).
    Postgres(String),
}

impl DatabaseUrl {
    /// `postgres://...`, `postgresql://...` or `sqlite://DIR`; `None` means
    /// the embedded store in `data_dir`. The error names the flag and never
    /// contains the password.
    pub fn parse(url: Option<&str>, data_dir: &Path) -> Result<Self, String> {
        let Some(url) = url.map(str::trim).filter(|u| !u.is_empty()) else {
            return Ok(Self::Sqlite(data_dir.to_path_buf()));
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            format!(
                "--database-url {:?}: expected postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE or sqlite://DIR",
                redact_url(url)
            )
        })?;
        match scheme.to_ascii_lowercase().as_str() {
            "postgres" | "postgresql" => {
                // No host is allowed: like libpq, PostgreSQL's defaults apply.
                url::Url::parse(url)
                    .map_err(|e| format!("--database-url {:?}: not a valid URL: {e}", redact_url(url)))?;
                Ok(Self::Postgres(url.to_string()))
            }
            "sqlite" if !rest.is_empty() => Ok(Self::Sqlite(PathBuf::from(rest))),
            "sqlite" => Err("--database-url sqlite:// names no directory: use sqlite://DIR".to_string()),
            other => Err(format!(
                "--database-url: unsupported scheme {other:?}: use postgres://, postgresql:// or sqlite://"
            )),
        }
    }

    /// For logs: the URL with its password replaced.
    pub fn display(&self) -> String {
        match self {
            Self::Sqlite(dir) => format!("sqlite://{}", dir.display()),
            Self::Postgres(url) => redact_url(url),
        }
    }
}

/// `url` with any password replaced by `***`.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(_) => url.to_string(),
        // Not parseable: hide everything between "://" and "@", where a
        // password would be.
        Err(_) => match (url.find("://"), url.rfind('@')) {
            (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
            _ => url.to_string(),
        },
    }
}

/// Opens the store `url` names.
pub async fn open(url: &DatabaseUrl) -> Result<DynStore, StoreError> {
    Ok(match url {
        DatabaseUrl::Sqlite(dir) => Arc::new(sqlite::SqliteStore::open(dir)?),
        DatabaseUrl::Postgres(url) => {
            Arc::new(postgres::PostgresStore::connect(url, postgres::DEFAULT_MAX_CONNECTIONS).await?)
        }
    })
}

/// What `kiln delete` (and `kiln get`) names: parsed case-insensitively,
/// with the short forms operators type; shown by its plain name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::EnumString)]
#[strum(ascii_case_insensitive)]
pub enum ObjectKind {
    #[strum(
        to_string = "action definition",
        serialize = "action",
        serialize = "actions",
        serialize = "actiondefinition"
    )]
    ActionDefinition,
    #[strum(to_string = "hardware", serialize = "hw")]
    Hardware,
    #[strum(to_string = "template", serialize = "templates")]
    Template,
    #[strum(to_string = "workflow", serialize = "workflows", serialize = "wf")]
    Workflow,
    #[strum(to_string = "rule", serialize = "rules")]
    Rule,
}

impl ObjectKind {
    pub fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
    }

    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_url_selects_the_store() {
        let dir = Path::new("/var/lib/kiln");
        assert_eq!(DatabaseUrl::parse(None, dir), Ok(DatabaseUrl::Sqlite(dir.into())));
        assert_eq!(DatabaseUrl::parse(Some(" "), dir), Ok(DatabaseUrl::Sqlite(dir.into())));
        assert_eq!(DatabaseUrl::parse(Some("sqlite:///srv/kiln"), dir), Ok(DatabaseUrl::Sqlite("/srv/kiln".into())));
        for url in [
            "postgres://kiln:pw@db:5432/kiln",
            "postgresql://db/kiln",
            "postgres:///kiln?host=/run/postgresql",
            "postgres:///kiln",
        ] {
            assert_eq!(DatabaseUrl::parse(Some(url), dir), Ok(DatabaseUrl::Postgres(url.into())), "{url}");
        }
        for (url, expected) in [
            ("mysql://u:secret@db/kiln", "unsupported scheme \"mysql\""),
            ("db.example:5432", "expected postgres://"),
            ("sqlite://", "names no directory"),
            ("postgres://u:secret@/kiln", "empty host"),
            ("postgres://u:secret@db:99999/kiln", "not a valid URL"),
        ] {
            let err = DatabaseUrl::parse(Some(url), dir).unwrap_err();
            assert!(err.starts_with("--database-url"), "{err}");
            assert!(err.contains(expected), "{url}: {err}");
            assert!(!err.contains("secret"), "{url}: the password leaked: {err}");
        }
    }

    #[test]
    fn names_of_kinds_and_outcomes() {
        for (text, kind) in [
            ("hardware", ObjectKind::Hardware),
            ("HW", ObjectKind::Hardware),
            ("Template", ObjectKind::Template),
            ("templates", ObjectKind::Template),
            ("wf", ObjectKind::Workflow),
            ("ActionDefinition", ObjectKind::ActionDefinition),
            ("actions", ObjectKind::ActionDefinition),
        ] {
            assert_eq!(ObjectKind::parse(text), Some(kind), "{text}");
        }
        assert_eq!(ObjectKind::parse("action definition"), Some(ObjectKind::ActionDefinition));
        assert_eq!(ObjectKind::parse("machine"), None);
        assert_eq!(ObjectKind::ActionDefinition.as_str(), "action definition");
        assert_eq!(Outcome::Unchanged.as_str(), "unchanged");
        use crate::model::{ActionState, WorkflowState};
        assert_eq!(ActionState::parse("PULLING"), Some(ActionState::Pulling));
        assert_eq!(ActionState::Timeout.as_str(), "TIMEOUT");
        assert_eq!(WorkflowState::parse("running"), None, "stored names are exact");
        assert_eq!(WorkflowState::Success.as_str(), "SUCCESS");
    }

    #[test]
    fn urls_are_redacted_for_logs() {
        assert_eq!(redact_url("postgres://kiln:s3cret@db:5432/kiln"), "postgres://kiln:***@db:5432/kiln");
        assert_eq!(redact_url("postgres://kiln@db/kiln"), "postgres://kiln@db/kiln");
        assert_eq!(redact_url("postgres://kiln:s3cret@db:99999/kiln"), "postgres://***@db:99999/kiln");
        let url = DatabaseUrl::Postgres("postgresql://a:b@h/d".into());
        assert_eq!(url.display(), "postgresql://a:***@h/d");
    }
}
