//! The shared store: one PostgreSQL database that several kiln-server
//! replicas use at once.
//!
//! Same tables and semantics as [`super::sqlite`]; what differs is how
//! writers are serialised, because other processes write too:
//! - [`Store::update_workflow`] locks the workflow row (`SELECT ... FOR
//!   UPDATE`) before it reads the workflow, so two replicas dispatching the
//!   same workflow run one after the other and the second sees the first's
//!   attempt: no double dispatch. `UNIQUE (workflow_id, action_idx, number)`
//!   refuses a second attempt with the same number should that ever fail.
//! - `apply` and `delete` take one transaction-scoped advisory lock, so
//!   "is this hardware used by an unfinished workflow?" and "create a
//!   workflow on it" cannot interleave.
//! - `claim_bmc_job` takes one advisory lock: whether a machine already has
//!   a job running must be read after every earlier claim committed.
//! - `record_events` takes one advisory lock, for the same reason as
//!   `append_logs` below: event cursors become visible in order.
//! - `append_logs` takes an advisory lock per workflow: log cursors come
//!   from a sequence, and a reader that saw cursor N must never later find
//!   a smaller one commit. Serialising a workflow's appends makes its
//!   cursors become visible in order.
//!
//! Every transaction commits before the call returns, and PostgreSQL's
//! default `synchronous_commit = on` makes a commit durable (WAL flushed),
//! so whatever a server acknowledges survives its crash.
//!
//! Changes are announced with `NOTIFY` inside the same transaction (so a
//! notification exists exactly when the change committed); every replica
//! LISTENs and forwards them into its [`Events`], which wakes long polls
//! and watchers there. See [`PostgresStore::forward_changes`].

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kiln_documents::{ActionDefinitionDoc, HardwareDoc, PlannedAction, RuleDoc, TemplateDoc};

use super::template_format;
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use super::{
    AgentCredential, Appended, ApplyBatch, Artifact, AttemptAccess, BmcJob, Enrolment, Event, EventQuery, JobEnd,
    MutationWithJobs, NewLogLine, ObjectKind, Outcome, PowerReading, RuleAdoption, RuleMatch, SealedBmcSecret, Store,
    StoreError, StoredDefinition, StoredHardware, StoredInventory, StoredLogLine, StoredRule, StoredTemplate,
    WorkflowListQuery, WorkflowPage, job_end, summary_from_row,
};
use crate::events::Events;
use crate::model::{Action, ActionState, Attempt, Millis, Workflow, WorkflowState, now_millis};
use crate::state_machine::sql;

/// Versioned migrations, applied in order in one transaction at open.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("postgres_migrations/0001_init.sql")),
    (2, include_str!("postgres_migrations/0002_events.sql")),
    (3, include_str!("postgres_migrations/0003_template_format.sql")),
    (4, include_str!("postgres_migrations/0004_enrolment_inventory.sql")),
    (5, include_str!("postgres_migrations/0005_bmc.sql")),
    (6, include_str!("postgres_migrations/0006_discovery.sql")),
    (7, include_str!("postgres_migrations/0007_boot_options.sql")),
    (8, include_str!("postgres_migrations/0008_rules.sql")),
    (11, include_str!("postgres_migrations/0011_bmc_job_order.sql")),
];

/// Connections per server. Long polls hold none while they wait (they sleep
/// on in-process events), so a few cover many agents; PostgreSQL's default
/// `max_connections` (100) leaves room for several replicas.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 16;

/// Notification channels.
const WORKFLOW_CHANNEL: &str = "kiln_workflow";
const LOGS_CHANNEL: &str = "kiln_logs";
/// Agent credentials changed (token rotated or revoked, hardware updated or
/// deleted): other replicas forget the tokens they verified.
const CREDENTIALS_CHANNEL: &str = "kiln_credentials";
/// Events were added to the audit trail: followers (`kiln events -f`) read.
const EVENTS_CHANNEL: &str = "kiln_events";

/// Advisory lock keys (arbitrary constants, "kiln" in ASCII plus a number).
const MIGRATE_LOCK: i64 = 0x6b69_6c6e_0001;
const APPLY_LOCK: i64 = 0x6b69_6c6e_0002;
/// Serialises appends to the audit trail, so that event cursors (from a
/// sequence) become visible in increasing order and a follower that saw
/// cursor N never later finds a smaller one commit. Events are rare (operator
/// writes, rate-limited refusals): one lock costs nothing.
const EVENTS_LOCK: i64 = 0x6b69_6c6e_0003;
/// Serialises BMC job claims: see `claim_bmc_job`.
const BMC_CLAIM_LOCK: i64 = 0x6b69_6c6e_0004;

/// How often a long poll re-reads the store even without a notification:
/// notifications are lost while a listener reconnects, and this bounds how
/// long such a loss can delay a dispatch.
const RECHECK: Duration = Duration::from_secs(10);

pub struct PostgresStore {
    pool: PgPool,
    /// This instance's name in notifications, so it can skip its own (its
    /// callers already woke their local waiters).
    origin: String,
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::backend("PostgreSQL", e)
    }
}

/// What a notification carries: who sent it, which workflow changed and
/// which agents should look at it again.
#[derive(Debug, Serialize, Deserialize)]
struct Change {
    origin: String,
    workflow: String,
    #[serde(default)]
    agents: Vec<String>,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://...`), migrates the database, and
    /// keeps a pool of at most `max_connections`. Errors never contain the
    /// URL's password.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let redact = |msg: String| match url::Url::parse(url).ok().and_then(|u| u.password().map(str::to_string)) {
            Some(p) if !p.is_empty() => msg.replace(&p, "***"),
            _ => msg,
        };
        let options =
            PgConnectOptions::from_str(url).map_err(|e| StoreError::corrupt(redact(format!("invalid URL: {e}"))))?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(|e| StoreError::corrupt(redact(format!("cannot connect to PostgreSQL: {e}"))))?;
        migrate(&pool).await?;
        Ok(Self { pool, origin: uuid::Uuid::new_v4().to_string() })
    }

    /// A transaction that reads one consistent snapshot: a workflow is read
    /// with several statements, which must not see a commit in between.
    async fn snapshot(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY").execute(&mut *tx).await?;
        Ok(tx)
    }

    /// Writes `batch` in `tx` and announces what it changed.
    async fn apply_and_notify(&self, tx: &mut PgConnection, batch: &ApplyBatch) -> Result<Vec<Outcome>, StoreError> {
        let outcomes = apply_batch(tx, batch).await?;
        if outcomes[..batch.hardware.len()].contains(&Outcome::Updated) || !batch.adopt.is_empty() {
            self.notify_credentials(tx).await?;
        }
        // Offsets: outcomes are in batch order, workflows last.
        let first_workflow = outcomes.len() - batch.workflows.len();
        for (wf, outcome) in batch.workflows.iter().zip(&outcomes[first_workflow..]) {
            if *outcome == Outcome::Created {
                self.notify_workflow(tx, &wf.id, agents_to_wake(wf)).await?;
            }
        }
        Ok(outcomes)
    }

    async fn notify_credentials(&self, tx: &mut PgConnection) -> Result<(), StoreError> {
        let change = Change { origin: self.origin.clone(), workflow: String::new(), agents: Vec::new() };
        notify(tx, CREDENTIALS_CHANNEL, &change).await
    }

    async fn notify_workflow(&self, tx: &mut PgConnection, wf: &str, agents: Vec<String>) -> Result<(), StoreError> {
        let change = Change { origin: self.origin.clone(), workflow: wf.to_string(), agents };
        notify(tx, WORKFLOW_CHANNEL, &change).await
    }

    /// Forwards other replicas' changes into `events` until the task is
    /// aborted. After the listening connection was lost (notifications may
    /// have been missed) every waiter is woken to re-read the store.
    pub fn spawn_forwarder(&self, events: Arc<Events>) -> tokio::task::JoinHandle<()> {
        let pool = self.pool.clone();
        let origin = self.origin.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = listen(&pool, &origin, &events).await {
                    tracing::warn!(error = %e, "PostgreSQL notifications interrupted; reconnecting");
                }
                events.wake_everyone();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    }
}

/// Listens until the connection fails.
async fn listen(pool: &PgPool, origin: &str, events: &Events) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen_all([WORKFLOW_CHANNEL, LOGS_CHANNEL, CREDENTIALS_CHANNEL, EVENTS_CHANNEL]).await?;
    // Anything committed before LISTEN took effect was not announced to us.
    events.wake_everyone();
    loop {
        // `try_recv` says when the connection dropped (None) instead of
        // silently reconnecting, so a possible loss is never hidden.
        let Some(n) = listener.try_recv().await? else {
            return Err(sqlx::Error::Protocol("listening connection closed".into()));
        };
        let change: Change = match serde_json::from_str(n.payload()) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(channel = n.channel(), error = %e, "ignoring malformed notification");
                continue;
            }
        };
        if change.origin == origin {
            continue;
        }
        match n.channel() {
            LOGS_CHANNEL => events.logs_appended(&change.workflow),
            CREDENTIALS_CHANNEL => events.credentials_changed(),
            EVENTS_CHANNEL => events.audit_recorded(),
            _ => {
                events.workflow_changed(&change.workflow);
                for agent in &change.agents {
                    events.wake_agent(agent);
                }
            }
        }
    }
}

async fn notify(tx: &mut PgConnection, channel: &str, change: &Change) -> Result<(), StoreError> {
    let payload = serde_json::to_string(change)?;
    sqlx::query("SELECT pg_notify($1, $2)").bind(channel).bind(payload).execute(tx).await?;
    Ok(())
}

async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    // Replicas starting together: one migrates, the others wait and then
    // find nothing left to do.
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(MIGRATE_LOCK).execute(&mut *tx).await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .execute(&mut *tx)
    .await?;
    let (current,): (i64,) =
        sqlx::query_as("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetch_one(&mut *tx).await?;
    for &(version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        // A plain string runs as a simple query, which may hold several
        // statements (`sqlx::raw_sql` would too, but its future is not
        // `Send` across this loop).
        sqlx::Executor::execute(&mut *tx, sql)
            .await
            .map_err(|e| StoreError::backend(format!("migration {version}"), e))?;
        sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
            .bind(version)
            .bind(now_millis())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn load_hardware(c: &mut PgConnection, id: &str) -> Result<Option<StoredHardware>, StoreError> {
    let row: Option<(String, i64, i64)> =
        sqlx::query_as("SELECT doc, created_at, updated_at FROM hardware WHERE id = $1")
            .bind(id)
            .fetch_optional(c)
            .await?;
    row.map(|(doc, created_at, updated_at)| {
        Ok(StoredHardware { doc: serde_json::from_str(&doc)?, created_at, updated_at })
    })
    .transpose()
}

async fn load_template(c: &mut PgConnection, name: &str) -> Result<Option<StoredTemplate>, StoreError> {
    let row: Option<(String, String, String, i64, i64)> =
        sqlx::query_as("SELECT name, data, format, created_at, updated_at FROM templates WHERE name = $1")
            .bind(name)
            .fetch_optional(c)
            .await?;
    Ok(row.map(|(name, data, format, created_at, updated_at)| StoredTemplate {
        doc: TemplateDoc { name, data, format: template_format(&format) },
        created_at,
        updated_at,
    }))
}

type WorkflowRow = (String, String, String, String, String, Option<i64>, i64, Option<i64>, Option<i64>, Option<String>);
type AttemptRow = (
    i32,
    String,
    i32,
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    String,
    String,
    String,
    Option<i64>,
);

async fn load_workflow(c: &mut PgConnection, id: &str) -> Result<Option<Workflow>, StoreError> {
    let row: Option<WorkflowRow> = sqlx::query_as(
        "SELECT template, hardware, hardware_map, state, reason, global_timeout_seconds, created_at, started_at, finished_at, boot_options
         FROM workflows WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *c)
    .await?;
    let Some((template, hardware, map, state, reason, timeout, created_at, started_at, finished_at, boot_options)) =
        row
    else {
        return Ok(None);
    };
    let mut actions = Vec::new();
    let specs: Vec<(i32, String)> = sqlx::query_as("SELECT idx, spec FROM actions WHERE workflow_id = $1 ORDER BY idx")
        .bind(id)
        .fetch_all(&mut *c)
        .await?;
    for (index, spec) in specs {
        let spec: PlannedAction = serde_json::from_str(&spec)?;
        actions.push(Action { index: index as u32, spec, attempts: Vec::new() });
    }
    let attempts: Vec<AttemptRow> = sqlx::query_as(
        "SELECT action_idx, id, number, agent_id, state, created_at, pulling_at, running_at, finished_at, exit_code, reason, message, output_json, lease_expires_at
         FROM attempts WHERE workflow_id = $1 ORDER BY action_idx, number",
    )
    .bind(id)
    .fetch_all(&mut *c)
    .await?;
    for row in attempts {
        let (
            index,
            id,
            number,
            agent_id,
            state,
            created_at,
            pulling_at,
            running_at,
            finished_at,
            exit_code,
            reason,
            message,
            output_json,
            lease_expires_at,
        ) = row;
        let attempt = Attempt {
            id,
            number: number as u32,
            agent_id,
            state: ActionState::parse(&state).unwrap_or(ActionState::Failed),
            created_at,
            pulling_at,
            running_at,
            finished_at,
            exit_code,
            reason,
            message,
            output_json,
            lease_expires_at,
        };
        let action = actions
            .get_mut(index as usize)
            .ok_or_else(|| StoreError::corrupt(format!("attempt {} names missing action {index}", attempt.id)))?;
        action.attempts.push(attempt);
    }
    Ok(Some(Workflow {
        id: id.to_string(),
        template,
        hardware,
        hardware_map: serde_json::from_str::<BTreeMap<String, String>>(&map)?,
        state: WorkflowState::parse(&state)
            .ok_or_else(|| StoreError::corrupt(format!("workflow {id} has unknown state {state:?}")))?,
        reason,
        global_timeout_seconds: timeout.map(|t| t as u64),
        created_at,
        started_at,
        finished_at,
        actions,
        boot_options: boot_options.map(|b| serde_json::from_str(&b)).transpose()?,
    }))
}

async fn insert_workflow(tx: &mut PgConnection, wf: &Workflow) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO workflows (id, template, hardware, hardware_map, state, reason, global_timeout_seconds, created_at, started_at, finished_at, boot_options)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&wf.id)
    .bind(&wf.template)
    .bind(&wf.hardware)
    .bind(serde_json::to_string(&wf.hardware_map)?)
    .bind(wf.state.as_str())
    .bind(&wf.reason)
    .bind(wf.global_timeout_seconds.map(|t| t as i64))
    .bind(wf.created_at)
    .bind(wf.started_at)
    .bind(wf.finished_at)
    .bind(wf.boot_options.map(|b| serde_json::to_string(&b)).transpose()?)
    .execute(&mut *tx)
    .await?;
    for action in &wf.actions {
        sqlx::query("INSERT INTO actions (workflow_id, idx, agent_id, spec) VALUES ($1, $2, $3, $4)")
            .bind(&wf.id)
            .bind(action.index as i32)
            .bind(action.agent_id())
            .bind(serde_json::to_string(&action.spec)?)
            .execute(&mut *tx)
            .await?;
    }
    save_attempts(tx, wf).await
}

/// Writes what a mutation changed: the workflow's row when its state
/// changed, and the attempts that are new or differ from `before` (the plan
/// never changes after creation). Every statement is a round trip to
/// PostgreSQL; a report usually changes one attempt only.
async fn save_changes(tx: &mut PgConnection, before: &Workflow, wf: &Workflow) -> Result<(), StoreError> {
    let row = |w: &Workflow| (w.state, w.reason.clone(), w.started_at, w.finished_at);
    if row(before) != row(wf) {
        sqlx::query("UPDATE workflows SET state = $2, reason = $3, started_at = $4, finished_at = $5 WHERE id = $1")
            .bind(&wf.id)
            .bind(wf.state.as_str())
            .bind(&wf.reason)
            .bind(wf.started_at)
            .bind(wf.finished_at)
            .execute(&mut *tx)
            .await?;
    }
    for action in &wf.actions {
        let old = before.actions.get(action.index as usize);
        for a in &action.attempts {
            if old.is_some_and(|o| o.attempts.iter().any(|b| b == a)) {
                continue;
            }
            save_attempt(tx, &wf.id, action.index, a).await?;
        }
    }
    Ok(())
}

async fn save_attempts(tx: &mut PgConnection, wf: &Workflow) -> Result<(), StoreError> {
    for action in &wf.actions {
        for a in &action.attempts {
            save_attempt(tx, &wf.id, action.index, a).await?;
        }
    }
    Ok(())
}

async fn save_attempt(
    tx: &mut PgConnection,
    workflow_id: &str,
    action_index: u32,
    a: &Attempt,
) -> Result<(), StoreError> {
    sqlx::query(&format!(
                "INSERT INTO attempts (id, workflow_id, action_idx, number, agent_id, state, created_at, pulling_at, running_at, finished_at, exit_code, reason, message, output_json, lease_expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
                 ON CONFLICT (id) DO UPDATE SET state = excluded.state, pulling_at = excluded.pulling_at,
                     running_at = excluded.running_at, finished_at = excluded.finished_at, exit_code = excluded.exit_code,
                     reason = excluded.reason, message = excluded.message, output_json = excluded.output_json,
                     -- a heartbeat may have moved the lease further since the load
                     lease_expires_at = CASE WHEN excluded.lease_expires_at IS NULL THEN NULL ELSE {} END",
                sql::renewed_lease("GREATEST", "attempts.lease_expires_at", "excluded.lease_expires_at")
            ))
            .bind(&a.id)
            .bind(workflow_id)
            .bind(action_index as i32)
            .bind(a.number as i32)
            .bind(&a.agent_id)
            .bind(a.state.as_str())
            .bind(a.created_at)
            .bind(a.pulling_at)
            .bind(a.running_at)
            .bind(a.finished_at)
            .bind(a.exit_code)
            .bind(&a.reason)
            .bind(&a.message)
            .bind(&a.output_json)
            .bind(a.lease_expires_at)
            .execute(&mut *tx)
            .await?;
    Ok(())
}

/// True when two workflows were created from the same definition.
fn same_definition(a: &Workflow, b: &Workflow) -> bool {
    a.template == b.template && a.hardware == b.hardware && a.hardware_map == b.hardware_map
}

/// The agent that should look at `wf` now: the one of its current action.
fn agents_to_wake(wf: &Workflow) -> Vec<String> {
    wf.current_action().map(|a| a.agent_id().to_string()).into_iter().collect()
}

async fn apply_batch(tx: &mut PgConnection, batch: &ApplyBatch) -> Result<Vec<Outcome>, StoreError> {
    let now = now_millis();
    let mut outcomes = Vec::new();
    // The used enrolment credentials of an adopted machine move with it
    // (its hardware row, and so its credentials, are deleted here): a
    // replay of its boot script's credential stays a replay, refused and
    // audited as one, not an unknown credential. Unused ones go: the
    // machine enrols anew at its next boot.
    type EnrolmentRow = (String, String, String, String, i64, i64, Option<i64>);
    let mut used_enrolments: Vec<EnrolmentRow> = Vec::new();
    for id in &batch.adopt {
        let rows: Vec<EnrolmentRow> = sqlx::query_as(
            "SELECT credential_hash, agent_id, mac, workflow, created_at, expires_at, used_at
             FROM enrolments WHERE hardware_id = $1 AND used_at IS NOT NULL
             AND hardware_id IN (SELECT hardware_id FROM discovered_hardware)",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
        used_enrolments.extend(rows);
        sqlx::query("DELETE FROM hardware WHERE id = $1 AND id IN (SELECT hardware_id FROM discovered_hardware)")
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    for hw in &batch.hardware {
        let doc = serde_json::to_string(hw)?;
        let outcome = match load_hardware(tx, &hw.id).await? {
            Some(old) if old.doc == *hw => Outcome::Unchanged,
            Some(_) => {
                sqlx::query("UPDATE hardware SET agent_id = $2, doc = $3, updated_at = $4 WHERE id = $1")
                    .bind(&hw.id)
                    .bind(&hw.agent_id)
                    .bind(doc)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                Outcome::Updated
            }
            None => {
                sqlx::query(
                    "INSERT INTO hardware (id, agent_id, doc, created_at, updated_at, token_hash)
                     VALUES ($1, $2, $3, $4, $4, $5)",
                )
                .bind(&hw.id)
                .bind(&hw.agent_id)
                .bind(doc)
                .bind(now)
                .bind(batch.token_hashes.get(&hw.id))
                .execute(&mut *tx)
                .await?;
                Outcome::Created
            }
        };
        outcomes.push(outcome);
    }
    // The adopting Hardware has the discovered machine's agent id.
    for (hash, agent_id, mac, workflow, created_at, expires_at, used_at) in used_enrolments {
        sqlx::query(
            "INSERT INTO enrolments (credential_hash, hardware_id, agent_id, mac, workflow, created_at, expires_at, used_at)
             SELECT $1, id, $2, $3, $4, $5, $6, $7 FROM hardware WHERE agent_id = $2",
        )
        .bind(hash)
        .bind(agent_id)
        .bind(mac)
        .bind(workflow)
        .bind(created_at)
        .bind(expires_at)
        .bind(used_at)
        .execute(&mut *tx)
        .await?;
    }
    for d in &batch.definitions {
        let doc = serde_json::to_string(d)?;
        let old: Option<(String,)> = sqlx::query_as("SELECT doc FROM action_definitions WHERE name = $1")
            .bind(&d.name)
            .fetch_optional(&mut *tx)
            .await?;
        let outcome = match old {
            Some((old,)) if serde_json::from_str::<ActionDefinitionDoc>(&old)? == *d => Outcome::Unchanged,
            Some(_) => {
                sqlx::query("UPDATE action_definitions SET doc = $2, updated_at = $3 WHERE name = $1")
                    .bind(&d.name)
                    .bind(doc)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                Outcome::Updated
            }
            None => {
                sqlx::query(
                    "INSERT INTO action_definitions (name, doc, created_at, updated_at) VALUES ($1, $2, $3, $3)",
                )
                .bind(&d.name)
                .bind(doc)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                Outcome::Created
            }
        };
        outcomes.push(outcome);
    }
    for t in &batch.templates {
        let outcome = match load_template(tx, &t.name).await? {
            Some(old) if old.doc == *t => Outcome::Unchanged,
            Some(_) => {
                sqlx::query("UPDATE templates SET data = $2, updated_at = $3, format = $4 WHERE name = $1")
                    .bind(&t.name)
                    .bind(&t.data)
                    .bind(now)
                    .bind(t.format.as_str())
                    .execute(&mut *tx)
                    .await?;
                Outcome::Updated
            }
            None => {
                sqlx::query(
                    "INSERT INTO templates (name, data, created_at, updated_at, format) VALUES ($1, $2, $3, $3, $4)",
                )
                .bind(&t.name)
                .bind(&t.data)
                .bind(now)
                .bind(t.format.as_str())
                .execute(&mut *tx)
                .await?;
                Outcome::Created
            }
        };
        outcomes.push(outcome);
    }
    for secret in &batch.bmc_secrets {
        // Sealed with a fresh nonce every time: an apply always rewrites it
        // (that is how an operator rotates it).
        let (created,): (bool,) = sqlx::query_as(
            "INSERT INTO bmc_secrets (name, sealed, created_at, updated_at) VALUES ($1, $2, $3, $3)
             ON CONFLICT (name) DO UPDATE SET sealed = EXCLUDED.sealed, updated_at = EXCLUDED.updated_at
             RETURNING (xmax = 0)",
        )
        .bind(&secret.name)
        .bind(&secret.sealed)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        outcomes.push(if created { Outcome::Created } else { Outcome::Updated });
    }
    for rule in &batch.rules {
        let doc = serde_json::to_string(rule)?;
        let old: Option<(String,)> =
            sqlx::query_as("SELECT doc FROM rules WHERE name = $1").bind(&rule.name).fetch_optional(&mut *tx).await?;
        let max_count = rule.max_count.map(i64::from);
        let outcome = match old {
            Some((old,)) if serde_json::from_str::<RuleDoc>(&old)? == *rule => Outcome::Unchanged,
            Some(_) => {
                sqlx::query(
                    "UPDATE rules SET priority = $2, max_count = $3, doc = $4, updated_at = $5 WHERE name = $1",
                )
                .bind(&rule.name)
                .bind(rule.priority)
                .bind(max_count)
                .bind(doc)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                Outcome::Updated
            }
            None => {
                sqlx::query(
                    "INSERT INTO rules (name, priority, max_count, doc, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $5)",
                )
                .bind(&rule.name)
                .bind(rule.priority)
                .bind(max_count)
                .bind(doc)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                Outcome::Created
            }
        };
        outcomes.push(outcome);
    }
    for wf in &batch.workflows {
        let outcome = match load_workflow(tx, &wf.id).await? {
            Some(old) if same_definition(&old, wf) => Outcome::Unchanged,
            Some(_) => {
                return Err(StoreError::Conflict(format!(
                    "workflow {:?} already exists with a different template, hardware or hardware_map; \
                     workflows cannot be changed, delete it first",
                    wf.id
                )));
            }
            None => {
                insert_workflow(tx, wf).await?;
                Outcome::Created
            }
        };
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

/// A bmc_jobs row (by hand: sqlx's derive macros are not built here).
struct JobRow(BmcJob);

impl<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> for JobRow {
    fn from_row(r: &'r sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        use sqlx::Row;
        Ok(Self(BmcJob {
            id: r.try_get("id")?,
            key: r.try_get("key")?,
            hardware_id: r.try_get("hardware_id")?,
            operation: r.try_get("operation")?,
            state: r.try_get("state")?,
            attempts: r.try_get::<i64, _>("attempts")?.max(0) as u32,
            next_attempt_at: r.try_get("next_attempt_at")?,
            lease_owner: r.try_get("lease_owner")?,
            lease_until: r.try_get("lease_until")?,
            deadline: r.try_get("deadline")?,
            result: r.try_get("result")?,
            error: r.try_get("error")?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
        }))
    }
}

impl From<JobRow> for BmcJob {
    fn from(r: JobRow) -> Self {
        r.0
    }
}

fn not_found(kind: &'static str, name: &str) -> StoreError {
    StoreError::NotFound { kind, name: name.to_string() }
}

/// Inserts `job` unless a job with its key exists; whether it did.
async fn insert_job(conn: &mut sqlx::PgConnection, job: &BmcJob) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO bmc_jobs (id, key, hardware_id, operation, state, attempts, next_attempt_at, lease_owner, lease_until, deadline, result, error, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) ON CONFLICT (key) DO NOTHING",
    )
    .bind(&job.id)
    .bind(&job.key)
    .bind(&job.hardware_id)
    .bind(&job.operation)
    .bind(&job.state)
    .bind(job.attempts as i64)
    .bind(job.next_attempt_at)
    .bind(&job.lease_owner)
    .bind(job.lease_until)
    .bind(job.deadline)
    .bind(&job.result)
    .bind(&job.error)
    .bind(job.created_at)
    .bind(job.updated_at)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

#[async_trait]
impl Store for PostgresStore {
    async fn apply(&self, batch: ApplyBatch) -> Result<Vec<Outcome>, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(APPLY_LOCK).execute(&mut *tx).await?;
        let outcomes = self.apply_and_notify(&mut tx, &batch).await?;
        tx.commit().await?;
        Ok(outcomes)
    }

    async fn list_rules(&self) -> Result<Vec<StoredRule>, StoreError> {
        let rows: Vec<(String, i64, i64)> =
            sqlx::query_as("SELECT doc, created_at, updated_at FROM rules ORDER BY name").fetch_all(&self.pool).await?;
        rows.into_iter()
            .map(|(doc, created_at, updated_at)| {
                Ok(StoredRule { doc: serde_json::from_str(&doc)?, created_at, updated_at })
            })
            .collect()
    }

    async fn list_rule_matches(&self) -> Result<Vec<RuleMatch>, StoreError> {
        let rows: Vec<(String, String, String, i64)> =
            sqlx::query_as("SELECT mac, rule, hardware_id, matched_at FROM rule_matches ORDER BY mac")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(|(mac, rule, hardware_id, matched_at)| RuleMatch { mac, rule, hardware_id, matched_at })
            .collect())
    }

    async fn adopt_by_rule(&self, batch: ApplyBatch, m: RuleMatch) -> Result<RuleAdoption, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Every apply takes this lock (see the module doc), so this one is
        // consistent with concurrent applies and deletes too.
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(APPLY_LOCK).execute(&mut *tx).await?;
        // The rule's row lock is what serialises this rule's adoptions on
        // every replica: the count below cannot change until commit, so
        // max_count holds even if the apply lock above is ever narrowed.
        let rule: Option<(Option<i64>,)> = sqlx::query_as("SELECT max_count FROM rules WHERE name = $1 FOR UPDATE")
            .bind(&m.rule)
            .fetch_optional(&mut *tx)
            .await?;
        let Some((max_count,)) = rule else { return Ok(RuleAdoption::NoRule) };
        let earlier: Option<(String, String)> =
            sqlx::query_as("SELECT rule, hardware_id FROM rule_matches WHERE mac = $1")
                .bind(&m.mac)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some((rule, hardware_id)) = earlier {
            return Ok(RuleAdoption::AlreadyMatched { rule, hardware_id });
        }
        let discovered: Option<(String,)> =
            sqlx::query_as("SELECT hardware_id FROM discovered_hardware WHERE mac = $1")
                .bind(&m.mac)
                .fetch_optional(&mut *tx)
                .await?;
        if discovered.is_none() {
            return Ok(RuleAdoption::NotDiscovered);
        }
        if load_hardware(&mut tx, &m.hardware_id).await?.is_some() {
            return Ok(RuleAdoption::NameTaken);
        }
        if let Some(max_count) = max_count {
            let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM rule_matches WHERE rule = $1")
                .bind(&m.rule)
                .fetch_one(&mut *tx)
                .await?;
            if count >= max_count {
                return Ok(RuleAdoption::Full { max_count: u32::try_from(max_count).unwrap_or(u32::MAX) });
            }
        }
        let outcomes = self.apply_and_notify(&mut tx, &batch).await?;
        // The MAC's primary key is the last guard: a second match of one
        // machine fails here and rolls everything back.
        sqlx::query("INSERT INTO rule_matches (mac, rule, hardware_id, matched_at) VALUES ($1, $2, $3, $4)")
            .bind(&m.mac)
            .bind(&m.rule)
            .bind(&m.hardware_id)
            .bind(m.matched_at)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(RuleAdoption::Adopted(outcomes))
    }

    async fn get_hardware(&self, id: &str) -> Result<StoredHardware, StoreError> {
        let mut c = self.pool.acquire().await?;
        load_hardware(&mut c, id).await?.ok_or_else(|| not_found("hardware", id))
    }

    async fn list_hardware(&self) -> Result<Vec<StoredHardware>, StoreError> {
        let rows: Vec<(String, i64, i64)> =
            sqlx::query_as("SELECT doc, created_at, updated_at FROM hardware ORDER BY id")
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter()
            .map(|(doc, created_at, updated_at)| {
                Ok(StoredHardware { doc: serde_json::from_str(&doc)?, created_at, updated_at })
            })
            .collect()
    }

    async fn get_template(&self, name: &str) -> Result<StoredTemplate, StoreError> {
        let mut c = self.pool.acquire().await?;
        load_template(&mut c, name).await?.ok_or_else(|| not_found("template", name))
    }

    async fn list_templates(&self) -> Result<Vec<StoredTemplate>, StoreError> {
        let rows: Vec<(String, String, String, i64, i64)> =
            sqlx::query_as("SELECT name, data, format, created_at, updated_at FROM templates ORDER BY name")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(|(name, data, format, created_at, updated_at)| StoredTemplate {
                doc: TemplateDoc { name, data, format: template_format(&format) },
                created_at,
                updated_at,
            })
            .collect())
    }

    async fn get_workflow(&self, id: &str) -> Result<Workflow, StoreError> {
        let mut tx = self.snapshot().await?;
        let wf = load_workflow(&mut tx, id).await?.ok_or_else(|| not_found("workflow", id))?;
        tx.commit().await?;
        Ok(wf)
    }

    async fn list_workflows(&self) -> Result<Vec<Workflow>, StoreError> {
        let mut tx = self.snapshot().await?;
        let ids: Vec<(String,)> =
            sqlx::query_as("SELECT id FROM workflows ORDER BY created_at, id").fetch_all(&mut *tx).await?;
        let mut out = Vec::with_capacity(ids.len());
        for (id,) in ids {
            out.extend(load_workflow(&mut tx, &id).await?);
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn list_workflow_page(&self, query: WorkflowListQuery) -> Result<WorkflowPage, StoreError> {
        let filters = query.filters();
        let clause = if filters.is_empty() {
            String::new()
        } else {
            let terms: Vec<String> =
                filters.iter().enumerate().map(|(i, (col, _))| format!("{col} = ${}", i + 1)).collect();
            format!(" WHERE {}", terms.join(" AND "))
        };
        let mut tx = self.snapshot().await?;
        let count_sql = format!("SELECT COUNT(*) FROM workflows{clause}");
        let mut count = sqlx::query_as::<_, (i64,)>(&count_sql);
        for (_, v) in &filters {
            count = count.bind(v);
        }
        let (total,) = count.fetch_one(&mut *tx).await?;
        let sql = format!(
            "SELECT id, template, hardware, state, reason, created_at, started_at, finished_at FROM workflows{clause} \
             ORDER BY {} LIMIT {} OFFSET {}",
            query.order_by(),
            query.limit,
            query.offset.min(i64::MAX as u64)
        );
        type Row = (String, String, String, String, String, i64, Option<i64>, Option<i64>);
        let mut select = sqlx::query_as::<_, Row>(&sql);
        for (_, v) in &filters {
            select = select.bind(v);
        }
        let rows = select.fetch_all(&mut *tx).await?;
        tx.commit().await?;
        let rows = rows
            .into_iter()
            .map(|(id, template, hardware, state, reason, created, started, finished)| {
                summary_from_row(id, template, hardware, &state, reason, created, started, finished)
            })
            .collect::<Result<_, _>>()?;
        Ok(WorkflowPage { rows, total: total.max(0) as u64 })
    }

    async fn delete(&self, kind: ObjectKind, name: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(APPLY_LOCK).execute(&mut *tx).await?;
        let (table, key, user_column) = match kind {
            ObjectKind::ActionDefinition => ("action_definitions", "name", None),
            ObjectKind::Hardware => ("hardware", "id", Some("hardware")),
            ObjectKind::Template => ("templates", "name", Some("template")),
            ObjectKind::Workflow => ("workflows", "id", None),
            ObjectKind::Rule => ("rules", "name", None),
        };
        if let Some(column) = user_column {
            let users: Vec<(String,)> = sqlx::query_as(&format!(
                "SELECT id FROM workflows WHERE {column} = $1 AND state IN ({}) ORDER BY id",
                *sql::OPEN_WORKFLOWS
            ))
            .bind(name)
            .fetch_all(&mut *tx)
            .await?;
            if !users.is_empty() {
                let users: Vec<String> = users.into_iter().map(|(id,)| id).collect();
                return Err(StoreError::InUse(format!(
                    "{} {name:?} is used by unfinished workflow(s) {}",
                    kind.as_str(),
                    users.join(", ")
                )));
            }
        }
        let n = sqlx::query(&format!("DELETE FROM {table} WHERE {key} = $1")).bind(name).execute(&mut *tx).await?;
        if n.rows_affected() == 0 {
            return Err(not_found(kind.as_str(), name));
        }
        match kind {
            ObjectKind::Workflow => {
                // Its BMC steps go with it: a workflow created again under
                // the name must run its own, not find these done.
                sqlx::query("DELETE FROM bmc_jobs WHERE starts_with(key, $1)")
                    .bind(super::workflow_jobs_prefix(name))
                    .execute(&mut *tx)
                    .await?;
                self.notify_workflow(&mut tx, name, Vec::new()).await?
            }
            ObjectKind::Hardware => self.notify_credentials(&mut tx).await?,
            _ => {}
        }
        tx.commit().await?;
        Ok(())
    }

    async fn active_workflows_for_agent(&self, agent_id: &str) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> = sqlx::query_as(&format!(
            "SELECT w.id FROM workflows w
             WHERE w.state IN ({})
               AND EXISTS (SELECT 1 FROM actions a WHERE a.workflow_id = w.id AND a.agent_id = $1)
             ORDER BY w.created_at, w.id",
            *sql::OPEN_WORKFLOWS
        ))
        .bind(agent_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    async fn workflow_counts(&self) -> Result<Vec<(String, String, u64)>, StoreError> {
        let rows: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT template, state, COUNT(*) FROM workflows GROUP BY template, state")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|(template, state, n)| (template, state, n as u64)).collect())
    }

    async fn workflows_with_deadline(&self) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT id FROM workflows WHERE state = 'RUNNING' AND global_timeout_seconds IS NOT NULL")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    async fn agent_credential(&self, agent_id: &str) -> Result<Option<AgentCredential>, StoreError> {
        let row: Option<(String, Option<String>)> =
            sqlx::query_as("SELECT id, token_hash FROM hardware WHERE agent_id = $1")
                .bind(agent_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(hardware_id, token_hash)| AgentCredential { hardware_id, token_hash }))
    }

    async fn agent_for_token_hash(&self, token_hash: &str) -> Result<Option<String>, StoreError> {
        let row: Option<(String,)> = sqlx::query_as("SELECT agent_id FROM hardware WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|(id,)| id))
    }

    async fn set_token_hash(&self, hardware_id: &str, token_hash: Option<String>) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("UPDATE hardware SET token_hash = $2 WHERE id = $1")
            .bind(hardware_id)
            .bind(token_hash)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(not_found("hardware", hardware_id));
        }
        self.notify_credentials(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn workflows_with_expired_leases(&self, now: Millis) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> = sqlx::query_as(&format!(
            "SELECT DISTINCT workflow_id FROM attempts WHERE state IN ({}) AND lease_expires_at < $1",
            *sql::OPEN_ATTEMPTS
        ))
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    async fn renew_leases(
        &self,
        agent_id: &str,
        attempt_ids: Vec<String>,
        until: Millis,
    ) -> Result<Vec<String>, StoreError> {
        // One statement: the ids it did not renew are the ended ones.
        let renewed: Vec<(String,)> =
            sqlx::query_as(&format!("{} RETURNING id", sql::renew_leases("GREATEST", "id = ANY($1)", "$2", "$3")))
                .bind(&attempt_ids)
                .bind(agent_id)
                .bind(until)
                .fetch_all(&self.pool)
                .await?;
        Ok(attempt_ids.into_iter().filter(|id| !renewed.iter().any(|(r,)| r == id)).collect())
    }

    async fn attempt_access(&self, workflow_id: &str, attempt_id: &str) -> Result<Option<AttemptAccess>, StoreError> {
        let row: Option<(i32, String, String, String)> = sqlx::query_as(
            "SELECT a.action_idx, a.agent_id, a.state, w.state FROM attempts a
             JOIN workflows w ON w.id = a.workflow_id WHERE a.id = $1 AND a.workflow_id = $2",
        )
        .bind(attempt_id)
        .bind(workflow_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|(index, agent_id, state, workflow_state)| {
            AttemptAccess::from_row(index as u32, agent_id, &state, &workflow_state)
        })
        .transpose()
    }

    async fn update_workflow_with_jobs(
        &self,
        id: &str,
        mutation: MutationWithJobs,
    ) -> Result<(Workflow, bool), StoreError> {
        let mut tx = self.pool.begin().await?;
        // The row lock serialises this update with every other one of the
        // same workflow, from any replica. Under READ COMMITTED each later
        // statement takes a fresh snapshot, so the reads below see what the
        // previous lock holder committed.
        let locked: Option<(String,)> = sqlx::query_as("SELECT id FROM workflows WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        if locked.is_none() {
            return Err(not_found("workflow", id));
        }
        let mut wf = load_workflow(&mut tx, id).await?.ok_or_else(|| not_found("workflow", id))?;
        let before = wf.clone();
        let (changed, jobs) = mutation(&mut wf)?;
        if changed {
            save_changes(&mut tx, &before, &wf).await?;
            for job in &jobs {
                insert_job(&mut tx, job).await?;
            }
            self.notify_workflow(&mut tx, id, agents_to_wake(&wf)).await?;
            tx.commit().await?;
        } else {
            tx.rollback().await?;
        }
        Ok((wf, changed))
    }

    async fn append_logs(
        &self,
        workflow_id: &str,
        action_index: u32,
        attempt_id: &str,
        lines: Vec<NewLogLine>,
    ) -> Result<Appended, StoreError> {
        let mut tx = self.pool.begin().await?;
        // See the module comment: a workflow's cursors must become visible
        // in increasing order.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('kiln-logs:' || $1, 0))")
            .bind(workflow_id)
            .execute(&mut *tx)
            .await?;
        let (seqs, streams, times, texts): (Vec<i64>, Vec<i32>, Vec<i64>, Vec<String>) = lines
            .into_iter()
            .map(|l| (l.seq as i64, l.stream, l.time, l.text))
            .fold((Vec::new(), Vec::new(), Vec::new(), Vec::new()), |mut acc, (seq, stream, time, text)| {
                acc.0.push(seq);
                acc.1.push(stream);
                acc.2.push(time);
                acc.3.push(text);
                acc
            });
        // One statement for the batch; ORDER BY n keeps the batch's order in
        // the cursors.
        let inserted = sqlx::query(
            "INSERT INTO logs (workflow_id, action_idx, attempt_id, seq, stream, time, text)
             SELECT $1, $2, $3, l.seq, l.stream, l.time, l.text
             FROM UNNEST($4::BIGINT[], $5::INTEGER[], $6::BIGINT[], $7::TEXT[]) WITH ORDINALITY AS l(seq, stream, time, text, n)
             ORDER BY l.n
             ON CONFLICT (attempt_id, seq) DO NOTHING",
        )
        .bind(workflow_id)
        .bind(action_index as i32)
        .bind(attempt_id)
        .bind(&seqs)
        .bind(&streams)
        .bind(&times)
        .bind(&texts)
        .execute(&mut *tx)
        .await?;
        let (through,): (i64,) = sqlx::query_as("SELECT COALESCE(MAX(seq), 0) FROM logs WHERE attempt_id = $1")
            .bind(attempt_id)
            .fetch_one(&mut *tx)
            .await?;
        let change = Change { origin: self.origin.clone(), workflow: workflow_id.to_string(), agents: Vec::new() };
        notify(&mut tx, LOGS_CHANNEL, &change).await?;
        tx.commit().await?;
        Ok(Appended { stored_through: through as u64, new_lines: inserted.rows_affected() })
    }

    async fn workflow_data(&self, id: &str) -> Result<(String, u64), StoreError> {
        let row: Option<(String, i64)> = sqlx::query_as("SELECT data_json, data_version FROM workflows WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|(json, version)| (json, version as u64)).ok_or_else(|| not_found("workflow", id))
    }

    async fn set_workflow_data(&self, id: &str, json: String, expected_version: u64) -> Result<u64, StoreError> {
        // The compare and the swap are one statement: atomic across replicas.
        let updated: Option<(i64,)> = sqlx::query_as(
            "UPDATE workflows SET data_json = $2, data_version = data_version + 1
             WHERE id = $1 AND data_version = $3 RETURNING data_version",
        )
        .bind(id)
        .bind(json)
        .bind(expected_version as i64)
        .fetch_optional(&self.pool)
        .await?;
        if let Some((version,)) = updated {
            return Ok(version as u64);
        }
        let (_, current) = self.workflow_data(id).await?;
        Err(StoreError::Conflict(format!(
            "workflow data is at version {current}, not {expected_version}: read it again and retry"
        )))
    }

    async fn list_definitions(&self) -> Result<Vec<StoredDefinition>, StoreError> {
        let rows: Vec<(String, i64, i64)> =
            sqlx::query_as("SELECT doc, created_at, updated_at FROM action_definitions ORDER BY name")
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter()
            .map(|(doc, created_at, updated_at)| {
                Ok(StoredDefinition { doc: serde_json::from_str(&doc)?, created_at, updated_at })
            })
            .collect()
    }

    async fn put_artifact(&self, a: Artifact) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO artifacts (workflow_id, action_idx, attempt_id, path, size, sha256, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (attempt_id, path) DO UPDATE SET size = excluded.size, sha256 = excluded.sha256,
                 created_at = excluded.created_at",
        )
        .bind(&a.workflow_id)
        .bind(a.action_index as i32)
        .bind(&a.attempt_id)
        .bind(&a.path)
        .bind(a.size as i64)
        .bind(&a.sha256)
        .bind(a.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn list_artifacts(&self, workflow_id: &str) -> Result<Vec<Artifact>, StoreError> {
        let rows: Vec<(String, i32, String, String, i64, String, i64)> = sqlx::query_as(
            "SELECT a.workflow_id, a.action_idx, a.attempt_id, a.path, a.size, a.sha256, a.created_at
             FROM artifacts a JOIN attempts t ON t.id = a.attempt_id
             WHERE a.workflow_id = $1 ORDER BY a.action_idx, t.number, a.path",
        )
        .bind(workflow_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(workflow_id, action_index, attempt_id, path, size, sha256, created_at)| Artifact {
                workflow_id,
                action_index: action_index as u32,
                attempt_id,
                path,
                size: size as u64,
                sha256,
                created_at,
            })
            .collect())
    }

    async fn read_logs(
        &self,
        workflow_id: &str,
        action_index: Option<u32>,
        after_cursor: i64,
        limit: u32,
    ) -> Result<Vec<StoredLogLine>, StoreError> {
        let rows: Vec<(i64, i32, String, i64, i32, i64, String)> = sqlx::query_as(
            "SELECT cursor, action_idx, attempt_id, seq, stream, time, text FROM logs
             WHERE workflow_id = $1 AND cursor > $2 AND ($3::INTEGER IS NULL OR action_idx = $3)
             ORDER BY cursor LIMIT $4",
        )
        .bind(workflow_id)
        .bind(after_cursor)
        .bind(action_index.map(|i| i as i32))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(cursor, action_index, attempt_id, seq, stream, time, text)| StoredLogLine {
                cursor,
                action_index: action_index as u32,
                attempt_id,
                seq: seq as u64,
                stream,
                time,
                text,
            })
            .collect())
    }

    async fn issue_enrolment(&self, e: Enrolment, prune_before: Millis) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM enrolments WHERE hardware_id = $1 AND used_at IS NULL")
            .bind(&e.hardware_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM enrolments WHERE expires_at < $1").bind(prune_before).execute(&mut *tx).await?;
        let done = sqlx::query(
            "INSERT INTO enrolments (credential_hash, hardware_id, agent_id, mac, workflow, created_at, expires_at)
             SELECT $1, $2, $3, $4, $5, $6, $7 WHERE EXISTS (SELECT 1 FROM hardware WHERE id = $2)",
        )
        .bind(&e.credential_hash)
        .bind(&e.hardware_id)
        .bind(&e.agent_id)
        .bind(&e.mac)
        .bind(&e.workflow)
        .bind(e.created_at)
        .bind(e.expires_at)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(not_found("hardware", &e.hardware_id));
        }
        tx.commit().await?;
        Ok(())
    }

    async fn take_enrolment(&self, credential_hash: &str, now: Millis) -> Result<Option<Enrolment>, StoreError> {
        type Row = (String, String, String, String, String, i64, i64, Option<i64>);
        let mut tx = self.pool.begin().await?;
        // FOR UPDATE: a second replica presenting the same credential waits
        // for this transaction and then reads it used.
        let row: Option<Row> = sqlx::query_as(
            "SELECT credential_hash, hardware_id, agent_id, mac, workflow, created_at, expires_at, used_at
             FROM enrolments WHERE credential_hash = $1 FOR UPDATE",
        )
        .bind(credential_hash)
        .fetch_optional(&mut *tx)
        .await?;
        let found =
            row.map(|(credential_hash, hardware_id, agent_id, mac, workflow, created_at, expires_at, used_at)| {
                Enrolment { credential_hash, hardware_id, agent_id, mac, workflow, created_at, expires_at, used_at }
            });
        if found.as_ref().is_some_and(|e| e.used_at.is_none()) {
            sqlx::query("UPDATE enrolments SET used_at = $2 WHERE credential_hash = $1")
                .bind(credential_hash)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(found)
    }

    async fn put_inventory(&self, inv: StoredInventory) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Locks the hardware row: two reports of one machine apply in turn,
        // and a concurrent delete of the hardware waits (or wins: NotFound).
        let exists: Option<(String,)> = sqlx::query_as("SELECT id FROM hardware WHERE id = $1 FOR UPDATE")
            .bind(&inv.hardware_id)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(not_found("hardware", &inv.hardware_id));
        }
        let stored: Option<(String,)> = sqlx::query_as("SELECT digest FROM hardware_inventory WHERE hardware_id = $1")
            .bind(&inv.hardware_id)
            .fetch_optional(&mut *tx)
            .await?;
        let changed = stored.map(|(d,)| d).as_deref() != Some(inv.digest.as_str());
        if changed {
            sqlx::query(
                "INSERT INTO hardware_inventory (hardware_id, agent_id, inventory, digest, reported_at, seen_at)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (hardware_id) DO UPDATE SET agent_id = $2, inventory = $3, digest = $4,
                   reported_at = $5, seen_at = $6",
            )
            .bind(&inv.hardware_id)
            .bind(&inv.agent_id)
            .bind(&inv.inventory_json)
            .bind(&inv.digest)
            .bind(inv.reported_at)
            .bind(inv.seen_at)
            .execute(&mut *tx)
            .await?;
        } else {
            sqlx::query("UPDATE hardware_inventory SET seen_at = $2, agent_id = $3 WHERE hardware_id = $1")
                .bind(&inv.hardware_id)
                .bind(inv.seen_at)
                .bind(&inv.agent_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(changed)
    }

    async fn discover_hardware(&self, mac: &str, hw: HardwareDoc, now: Millis) -> Result<String, StoreError> {
        let doc = serde_json::to_string(&hw)?;
        let mut tx = self.pool.begin().await?;
        // The MAC's unique constraint decides between concurrent boots: the
        // loser's insert does nothing and it reads the winner's record.
        let inserted = sqlx::query(
            "INSERT INTO hardware (id, agent_id, doc, created_at, updated_at, token_hash)
             VALUES ($1, $2, $3, $4, $4, NULL) ON CONFLICT DO NOTHING",
        )
        .bind(&hw.id)
        .bind(&hw.agent_id)
        .bind(doc)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 1 {
            sqlx::query(
                "INSERT INTO discovered_hardware (mac, hardware_id, discovered_at) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
            )
            .bind(mac)
            .bind(&hw.id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        let row: Option<(String,)> = sqlx::query_as("SELECT hardware_id FROM discovered_hardware WHERE mac = $1")
            .bind(mac)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        row.map(|(id,)| id).ok_or_else(|| {
            StoreError::Conflict(format!("hardware {} exists and is not the discovered record of MAC {mac}", hw.id))
        })
    }

    async fn list_discovered(&self) -> Result<Vec<(String, String)>, StoreError> {
        Ok(sqlx::query_as("SELECT mac, hardware_id FROM discovered_hardware ORDER BY mac")
            .fetch_all(&self.pool)
            .await?)
    }

    async fn get_inventory(&self, hardware_id: &str) -> Result<Option<StoredInventory>, StoreError> {
        type Row = (String, String, String, String, i64, i64);
        let row: Option<Row> = sqlx::query_as(
            "SELECT hardware_id, agent_id, inventory, digest, reported_at, seen_at
             FROM hardware_inventory WHERE hardware_id = $1",
        )
        .bind(hardware_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(hardware_id, agent_id, inventory_json, digest, reported_at, seen_at)| StoredInventory {
            hardware_id,
            agent_id,
            inventory_json,
            digest,
            reported_at,
            seen_at,
        }))
    }

    async fn record_events(&self, events: Vec<Event>) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(EVENTS_LOCK).execute(&mut *tx).await?;
        for e in &events {
            sqlx::query(
                "INSERT INTO events (time, kind, actor, peer, action, object, outcome, reason, count)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(e.time)
            .bind(e.kind.as_str())
            .bind(&e.actor)
            .bind(&e.peer)
            .bind(&e.action)
            .bind(&e.object)
            .bind(e.outcome.as_str())
            .bind(&e.reason)
            .bind(e.count as i64)
            .execute(&mut *tx)
            .await?;
        }
        let change = Change { origin: self.origin.clone(), workflow: String::new(), agents: Vec::new() };
        notify(&mut tx, EVENTS_CHANNEL, &change).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_events(&self, q: EventQuery) -> Result<Vec<Event>, StoreError> {
        type Row = (i64, i64, String, String, String, String, String, String, String, i64);
        let order = if q.newest { "DESC" } else { "ASC" };
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT cursor, time, kind, actor, peer, action, object, outcome, reason, count FROM events
             WHERE cursor > $1 AND time >= $2 AND ($3::TEXT IS NULL OR kind = $3)
             ORDER BY cursor {order} LIMIT $4"
        ))
        .bind(q.after)
        .bind(q.since)
        .bind(q.kind.map(|k| k.as_str()))
        .bind(i64::from(q.limit))
        .fetch_all(&self.pool)
        .await?;
        let mut out = rows
            .into_iter()
            .map(|(cursor, time, kind, actor, peer, action, object, outcome, reason, count)| {
                super::event_from_row(cursor, time, &kind, [actor, peer, action, object], &outcome, reason, count)
            })
            .collect::<Result<Vec<_>, _>>()?;
        if q.newest {
            out.reverse();
        }
        Ok(out)
    }

    async fn prune_events(&self, before: Millis, keep: u64) -> Result<u64, StoreError> {
        // With fewer than `keep` rows the subquery is NULL and the
        // comparison false: only age prunes.
        let done = sqlx::query(
            "DELETE FROM events WHERE time < $1
             OR cursor <= (SELECT cursor FROM events ORDER BY cursor DESC LIMIT 1 OFFSET $2)",
        )
        .bind(before)
        .bind(keep as i64)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn shared_secret(&self, name: &str, candidate: Vec<u8>) -> Result<Option<Vec<u8>>, StoreError> {
        // The first replica's candidate wins; everyone reads the winner.
        sqlx::query("INSERT INTO secrets (name, value, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(candidate)
            .bind(now_millis())
            .execute(&self.pool)
            .await?;
        let (value,): (Vec<u8>,) =
            sqlx::query_as("SELECT value FROM secrets WHERE name = $1").bind(name).fetch_one(&self.pool).await?;
        Ok(Some(value))
    }

    async fn bmc_secret(&self, name: &str) -> Result<Option<SealedBmcSecret>, StoreError> {
        let sealed: Option<(String,)> = sqlx::query_as("SELECT sealed FROM bmc_secrets WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(sealed.map(|(sealed,)| SealedBmcSecret { name: name.to_string(), sealed }))
    }

    async fn set_power_reading(&self, hardware_id: &str, reading: PowerReading) -> Result<(), StoreError> {
        // Two readings racing: the later read wins, whatever the commit order.
        let done = sqlx::query(
            "INSERT INTO bmc_power (hardware_id, state, read_at) SELECT id, $2, $3 FROM hardware WHERE id = $1
             ON CONFLICT (hardware_id) DO UPDATE SET state = EXCLUDED.state, read_at = EXCLUDED.read_at
             WHERE EXCLUDED.read_at >= bmc_power.read_at",
        )
        .bind(hardware_id)
        .bind(&reading.state)
        .bind(reading.read_at)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            let known: Option<(i32,)> = sqlx::query_as("SELECT 1 FROM hardware WHERE id = $1")
                .bind(hardware_id)
                .fetch_optional(&self.pool)
                .await?;
            if known.is_none() {
                return Err(not_found("hardware", hardware_id));
            }
        }
        Ok(())
    }

    async fn create_bmc_job(&self, job: BmcJob) -> Result<(BmcJob, Outcome), StoreError> {
        let mut conn = self.pool.acquire().await?;
        let inserted = insert_job(&mut conn, &job).await?;
        let row: JobRow =
            sqlx::query_as("SELECT id, key, hardware_id, operation, state, attempts, next_attempt_at, lease_owner, lease_until, deadline, result, error, created_at, updated_at FROM bmc_jobs WHERE key = $1").bind(&job.key).fetch_one(&mut *conn).await?;
        Ok((row.into(), if inserted { Outcome::Created } else { Outcome::Unchanged }))
    }

    async fn rekey_failed_bmc_job(&self, key: &str, new_key: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE bmc_jobs SET key = $2 WHERE key = $1 AND state = 'failed'")
            .bind(key)
            .bind(new_key)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn claim_bmc_job(&self, owner: &str, now: Millis, lease_until: Millis) -> Result<Option<BmcJob>, StoreError> {
        // Claims from all replicas take turns (a claim is one short
        // statement): "no other job of this machine is running" can only be
        // decided seeing every earlier claim committed. Under READ COMMITTED
        // the statement's snapshot is taken after the lock is held.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(BMC_CLAIM_LOCK).execute(&mut *tx).await?;
        let row: Option<JobRow> = sqlx::query_as(&format!(
            "UPDATE bmc_jobs SET state = 'running', lease_owner = $2, lease_until = $3, attempts = attempts + 1,
             updated_at = $1
             WHERE id = (SELECT id FROM bmc_jobs j WHERE ((state = 'pending' AND next_attempt_at <= $1)
                         OR (state = 'running' AND lease_until < $1)) AND {}
                         ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED)
             RETURNING id, key, hardware_id, operation, state, attempts, next_attempt_at, lease_owner, lease_until, deadline, result, error, created_at, updated_at",
            super::one_job_per_machine("$1")
        ))
        .bind(now)
        .bind(owner)
        .bind(lease_until)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row.map(Into::into))
    }

    async fn finish_bmc_job(&self, id: &str, owner: &str, end: JobEnd) -> Result<bool, StoreError> {
        let (state, result, error, next) = job_end(&end);
        let done = sqlx::query(
            "UPDATE bmc_jobs SET state = $3, result = $4, error = $5, next_attempt_at = $6, lease_owner = '',
             lease_until = 0, updated_at = $7 WHERE id = $1 AND lease_owner = $2 AND state = 'running'",
        )
        .bind(id)
        .bind(owner)
        .bind(state)
        .bind(result)
        .bind(error)
        .bind(next)
        .bind(now_millis())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn list_bmc_jobs(&self, limit: u32) -> Result<Vec<BmcJob>, StoreError> {
        let rows: Vec<JobRow> = sqlx::query_as("SELECT id, key, hardware_id, operation, state, attempts, next_attempt_at, lease_owner, lease_until, deadline, result, error, created_at, updated_at FROM bmc_jobs ORDER BY created_at DESC, id DESC LIMIT $1")
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn list_bmc_jobs_by_key_prefix(&self, prefix: &str) -> Result<Vec<BmcJob>, StoreError> {
        // starts_with, not LIKE: `_` in a workflow name is no wildcard.
        let rows: Vec<JobRow> = sqlx::query_as("SELECT id, key, hardware_id, operation, state, attempts, next_attempt_at, lease_owner, lease_until, deadline, result, error, created_at, updated_at FROM bmc_jobs WHERE starts_with(key, $1) ORDER BY created_at, id")
            .bind(prefix)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn release_bmc_jobs(&self, owner: &str) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE bmc_jobs SET state = 'pending', lease_owner = '', lease_until = 0, next_attempt_at = 0
             WHERE state = 'running' AND lease_owner = $1",
        )
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn power_reading(&self, hardware_id: &str) -> Result<Option<PowerReading>, StoreError> {
        let row: Option<(String, i64)> = sqlx::query_as("SELECT state, read_at FROM bmc_power WHERE hardware_id = $1")
            .bind(hardware_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|(state, read_at)| PowerReading { state, read_at }))
    }

    fn forward_changes(&self, events: Arc<Events>) -> Option<tokio::task::JoinHandle<()>> {
        Some(self.spawn_forwarder(events))
    }

    fn recheck_interval(&self) -> Option<Duration> {
        Some(RECHECK)
    }
}
