//! The embedded store: one SQLite file in the server's data directory.
//!
//! One writing connection behind a mutex, used from blocking threads:
//! SQLite serialises writers anyway, and a single connection makes every
//! [`Store::update_workflow`] trivially serialisable. WAL mode with
//! `synchronous=FULL`, so a transition is on disk before it is acknowledged.
//!
//! Reads that are not part of a write (token checks, "which workflows has
//! this agent", `kiln get`, ...) use a small pool of read-only connections,
//! each read in its own transaction (one snapshot). In WAL mode they never
//! wait for the writer, and in particular not for its fsync: with thousands
//! of agents, reads far outnumber writes and would otherwise queue behind
//! every commit. A read sees every commit acknowledged before it started.
//!
//! Tested by the store contract suite (`store/conformance.rs`), which runs
//! the same checks against PostgreSQL.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use kiln_documents::{ActionDefinitionDoc, HardwareDoc, PlannedAction, RuleDoc, TemplateDoc};

use super::template_format;
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::{
    AgentCredential, Appended, ApplyBatch, Artifact, AttemptAccess, BmcJob, Enrolment, Event, EventQuery, JobEnd,
    MutationWithJobs, NewLogLine, ObjectKind, Outcome, PowerReading, RuleAdoption, RuleMatch, SealedBmcSecret, Store,
    StoreError, StoredDefinition, StoredHardware, StoredInventory, StoredLogLine, StoredRule, StoredTemplate,
    WorkflowListQuery, WorkflowPage, job_end, summary_from_row,
};
use crate::model::{Action, ActionState, Attempt, Millis, Workflow, WorkflowState, now_millis};
use crate::state_machine::sql;

/// Versioned migrations, applied in order, each in its own transaction.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("sqlite_migrations/0001_init.sql")),
    (2, include_str!("sqlite_migrations/0002_artifacts.sql")),
    (3, include_str!("sqlite_migrations/0003_typed_actions.sql")),
    (4, include_str!("sqlite_migrations/0004_workflow_data.sql")),
    (5, include_str!("sqlite_migrations/0005_leases.sql")),
    (6, include_str!("sqlite_migrations/0006_agent_tokens.sql")),
    (7, include_str!("sqlite_migrations/0007_events.sql")),
    (8, include_str!("sqlite_migrations/0008_template_format.sql")),
    (9, include_str!("sqlite_migrations/0009_enrolment_inventory.sql")),
    (10, include_str!("sqlite_migrations/0010_bmc.sql")),
    (11, include_str!("sqlite_migrations/0011_discovery.sql")),
    (12, include_str!("sqlite_migrations/0012_boot_options.sql")),
    (13, include_str!("sqlite_migrations/0013_rules.sql")),
    (16, include_str!("sqlite_migrations/0016_bmc_job_order.sql")),
];

pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    /// Read-only connections to the same file; `None` for an in-memory
    /// database (another connection would see another database), whose
    /// reads use the writer's connection.
    readers: Option<Arc<ReaderPool>>,
}

/// Idle read-only connections, opened on demand.
struct ReaderPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

/// Read connections kept open when idle (more are opened under a burst,
/// and closed after it).
const IDLE_READERS: usize = 8;

impl ReaderPool {
    fn take(&self) -> Result<Connection, StoreError> {
        if let Some(c) = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok(c);
        }
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&self.path, flags)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        Ok(conn)
    }

    fn give_back(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < IDLE_READERS {
            idle.push(conn);
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::backend("SQLite", e)
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::backend("corrupt JSON in store", e)
    }
}

impl SqliteStore {
    /// Opens (creating if needed) `dir/kiln.db` and migrates it.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::backend(format!("cannot create data dir {}", dir.display()), e))?;
        let path = dir.join("kiln.db");
        let conn = Connection::open(&path)?;
        let mut store = Self::init(conn)?;
        store.readers = Some(Arc::new(ReaderPool { path, idle: Mutex::new(Vec::new()) }));
        Ok(store)
    }

    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Self, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        migrate(&mut conn)?;
        Ok(Self { conn: Arc::new(Mutex::new(conn)), readers: None })
    }

    /// Runs a read in one transaction (one snapshot) on a read-only
    /// connection, or on the writer's when there are none.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let snapshot = move |c: &mut Connection| -> Result<T, StoreError> {
            let tx = c.transaction()?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        };
        let Some(pool) = self.readers.clone() else { return self.with_conn(snapshot).await };
        tokio::task::spawn_blocking(move || {
            let mut conn = pool.take()?;
            let out = snapshot(&mut conn);
            pool.give_back(conn);
            out
        })
        .await
        .map_err(|e| StoreError::backend("store task failed", e))?
    }

    async fn with_conn<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::backend("store task failed", e))?
    }
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
    )?;
    let current: i64 = conn.query_row("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", [], |r| r.get(0))?;
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
            params![version, now_millis()],
        )?;
        tx.commit()?;
    }
    Ok(())
}

fn load_hardware(tx: &Connection, id: &str) -> Result<Option<StoredHardware>, StoreError> {
    let row = tx
        .query_row("SELECT doc, created_at, updated_at FROM hardware WHERE id = ?1", [id], |r| {
            Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    row.map(|(doc, created_at, updated_at)| {
        Ok(StoredHardware { doc: serde_json::from_str(&doc)?, created_at, updated_at })
    })
    .transpose()
}

fn load_template(tx: &Connection, name: &str) -> Result<Option<StoredTemplate>, StoreError> {
    Ok(tx
        .query_row("SELECT name, data, format, created_at, updated_at FROM templates WHERE name = ?1", [name], |r| {
            Ok(StoredTemplate {
                doc: TemplateDoc { name: r.get(0)?, data: r.get(1)?, format: template_format(&r.get::<_, String>(2)?) },
                created_at: r.get(3)?,
                updated_at: r.get(4)?,
            })
        })
        .optional()?)
}

fn load_workflow(tx: &Connection, id: &str) -> Result<Option<Workflow>, StoreError> {
    let row = tx
        .query_row(
            "SELECT template, hardware, hardware_map, state, reason, global_timeout_seconds, created_at, started_at, finished_at, boot_options
             FROM workflows WHERE id = ?1",
            [id],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, Option<i64>>(5)?,
                    r.get::<_, i64>(6)?,
                    r.get::<_, Option<i64>>(7)?,
                    r.get::<_, Option<i64>>(8)?,
                    r.get::<_, Option<String>>(9)?,
                ))
            },
        )
        .optional()?;
    let Some((template, hardware, map, state, reason, timeout, created_at, started_at, finished_at, boot_options)) =
        row
    else {
        return Ok(None);
    };
    let mut actions = Vec::new();
    let mut stmt = tx.prepare_cached("SELECT idx, spec FROM actions WHERE workflow_id = ?1 ORDER BY idx")?;
    for row in stmt.query_map([id], |r| Ok((r.get::<_, u32>(0)?, r.get::<_, String>(1)?)))? {
        let (index, spec) = row?;
        let spec: PlannedAction = serde_json::from_str(&spec)?;
        actions.push(Action { index, spec, attempts: Vec::new() });
    }
    let mut stmt = tx.prepare_cached(
        "SELECT action_idx, id, number, agent_id, state, created_at, pulling_at, running_at, finished_at, exit_code, reason, message, output_json, lease_expires_at
         FROM attempts WHERE workflow_id = ?1 ORDER BY action_idx, number",
    )?;
    let attempts = stmt.query_map([id], |r| {
        let state: String = r.get(4)?;
        Ok((
            r.get::<_, u32>(0)?,
            Attempt {
                id: r.get(1)?,
                number: r.get(2)?,
                agent_id: r.get(3)?,
                state: ActionState::parse(&state).unwrap_or(ActionState::Failed),
                created_at: r.get(5)?,
                pulling_at: r.get(6)?,
                running_at: r.get(7)?,
                finished_at: r.get(8)?,
                exit_code: r.get(9)?,
                reason: r.get(10)?,
                message: r.get(11)?,
                output_json: r.get(12)?,
                lease_expires_at: r.get(13)?,
            },
        ))
    })?;
    for row in attempts {
        let (index, attempt) = row?;
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

fn insert_workflow(tx: &Transaction<'_>, wf: &Workflow) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO workflows (id, template, hardware, hardware_map, state, reason, global_timeout_seconds, created_at, started_at, finished_at, boot_options)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            wf.id,
            wf.template,
            wf.hardware,
            serde_json::to_string(&wf.hardware_map)?,
            wf.state.as_str(),
            wf.reason,
            wf.global_timeout_seconds.map(|t| t as i64),
            wf.created_at,
            wf.started_at,
            wf.finished_at,
            wf.boot_options.map(|b| serde_json::to_string(&b)).transpose()?
        ],
    )?;
    for action in &wf.actions {
        tx.execute(
            "INSERT INTO actions (workflow_id, idx, agent_id, spec) VALUES (?1, ?2, ?3, ?4)",
            params![wf.id, action.index, action.agent_id(), serde_json::to_string(&action.spec)?],
        )?;
    }
    save_attempts(tx, wf)
}

/// Writes the mutable part of a workflow: its row and its attempts (the plan
/// never changes after creation).
fn save_workflow(tx: &Transaction<'_>, wf: &Workflow) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE workflows SET state = ?2, reason = ?3, started_at = ?4, finished_at = ?5 WHERE id = ?1",
        params![wf.id, wf.state.as_str(), wf.reason, wf.started_at, wf.finished_at],
    )?;
    save_attempts(tx, wf)
}

fn save_attempts(tx: &Transaction<'_>, wf: &Workflow) -> Result<(), StoreError> {
    let mut stmt = tx.prepare_cached(&format!(
        "INSERT INTO attempts (id, workflow_id, action_idx, number, agent_id, state, created_at, pulling_at, running_at, finished_at, exit_code, reason, message, output_json, lease_expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
         ON CONFLICT(id) DO UPDATE SET state = excluded.state, pulling_at = excluded.pulling_at,
             running_at = excluded.running_at, finished_at = excluded.finished_at, exit_code = excluded.exit_code,
             reason = excluded.reason, message = excluded.message, output_json = excluded.output_json,
             -- a heartbeat may have moved the lease further since the load
             lease_expires_at = CASE WHEN excluded.lease_expires_at IS NULL THEN NULL ELSE {} END",
        sql::renewed_lease("MAX", "COALESCE(attempts.lease_expires_at, 0)", "excluded.lease_expires_at")
    ))?;
    for action in &wf.actions {
        for a in &action.attempts {
            stmt.execute(params![
                a.id,
                wf.id,
                action.index,
                a.number,
                a.agent_id,
                a.state.as_str(),
                a.created_at,
                a.pulling_at,
                a.running_at,
                a.finished_at,
                a.exit_code,
                a.reason,
                a.message,
                a.output_json,
                a.lease_expires_at
            ])?;
        }
    }
    Ok(())
}

/// True when two workflows were created from the same definition.
fn same_definition(a: &Workflow, b: &Workflow) -> bool {
    a.template == b.template && a.hardware == b.hardware && a.hardware_map == b.hardware_map
}

fn apply_batch(tx: &Transaction<'_>, batch: ApplyBatch) -> Result<Vec<Outcome>, StoreError> {
    let now = now_millis();
    let mut outcomes = Vec::new();
    // The used enrolment credentials of an adopted machine move with it
    // (its hardware row, and so its credentials, are deleted here): a
    // replay of its boot script's credential stays a replay, refused and
    // audited as one, not an unknown credential. Unused ones go: the
    // machine enrols anew at its next boot.
    let mut used_enrolments: Vec<Enrolment> = Vec::new();
    for id in &batch.adopt {
        let mut used = tx.prepare(
            "SELECT credential_hash, hardware_id, agent_id, mac, workflow, created_at, expires_at, used_at
             FROM enrolments WHERE hardware_id = ?1 AND used_at IS NOT NULL
             AND hardware_id IN (SELECT hardware_id FROM discovered_hardware)",
        )?;
        let rows = used.query_map([id], enrolment_from_row)?;
        used_enrolments.extend(rows.collect::<Result<Vec<_>, _>>()?);
        tx.execute("DELETE FROM hardware WHERE id = ?1 AND id IN (SELECT hardware_id FROM discovered_hardware)", [id])?;
    }
    for hw in &batch.hardware {
        let doc = serde_json::to_string(hw)?;
        let outcome = match load_hardware(tx, &hw.id)? {
            Some(old) if old.doc == *hw => Outcome::Unchanged,
            Some(_) => {
                tx.execute(
                    "UPDATE hardware SET agent_id = ?2, doc = ?3, updated_at = ?4 WHERE id = ?1",
                    params![hw.id, hw.agent_id, doc, now],
                )?;
                Outcome::Updated
            }
            None => {
                tx.execute(
                    "INSERT INTO hardware (id, agent_id, doc, created_at, updated_at, token_hash) VALUES (?1, ?2, ?3, ?4, ?4, ?5)",
                    params![hw.id, hw.agent_id, doc, now, batch.token_hashes.get(&hw.id)],
                )?;
                Outcome::Created
            }
        };
        outcomes.push(outcome);
    }
    // The adopting Hardware has the discovered machine's agent id.
    for e in used_enrolments {
        tx.execute(
            "INSERT INTO enrolments (credential_hash, hardware_id, agent_id, mac, workflow, created_at, expires_at, used_at)
             SELECT ?1, id, ?2, ?3, ?4, ?5, ?6, ?7 FROM hardware WHERE agent_id = ?2",
            params![e.credential_hash, e.agent_id, e.mac, e.workflow, e.created_at, e.expires_at, e.used_at],
        )?;
    }
    for d in &batch.definitions {
        let doc = serde_json::to_string(d)?;
        let old: Option<String> =
            tx.query_row("SELECT doc FROM action_definitions WHERE name = ?1", [&d.name], |r| r.get(0)).optional()?;
        let outcome = match old {
            Some(old) if serde_json::from_str::<ActionDefinitionDoc>(&old)? == *d => Outcome::Unchanged,
            Some(_) => {
                tx.execute(
                    "UPDATE action_definitions SET doc = ?2, updated_at = ?3 WHERE name = ?1",
                    params![d.name, doc, now],
                )?;
                Outcome::Updated
            }
            None => {
                tx.execute(
                    "INSERT INTO action_definitions (name, doc, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)",
                    params![d.name, doc, now],
                )?;
                Outcome::Created
            }
        };
        outcomes.push(outcome);
    }
    for t in &batch.templates {
        let outcome = match load_template(tx, &t.name)? {
            Some(old) if old.doc == *t => Outcome::Unchanged,
            Some(_) => {
                tx.execute(
                    "UPDATE templates SET data = ?2, format = ?4, updated_at = ?3 WHERE name = ?1",
                    params![t.name, t.data, now, t.format.as_str()],
                )?;
                Outcome::Updated
            }
            None => {
                tx.execute(
                    "INSERT INTO templates (name, data, format, created_at, updated_at) VALUES (?1, ?2, ?4, ?3, ?3)",
                    params![t.name, t.data, now, t.format.as_str()],
                )?;
                Outcome::Created
            }
        };
        outcomes.push(outcome);
    }
    for secret in &batch.bmc_secrets {
        // Sealed with a fresh nonce every time: an apply always rewrites it
        // (that is how an operator rotates it).
        let updated = tx.execute(
            "UPDATE bmc_secrets SET sealed = ?2, updated_at = ?3 WHERE name = ?1",
            params![secret.name, secret.sealed, now],
        )?;
        if updated == 0 {
            tx.execute(
                "INSERT INTO bmc_secrets (name, sealed, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)",
                params![secret.name, secret.sealed, now],
            )?;
        }
        outcomes.push(if updated == 0 { Outcome::Created } else { Outcome::Updated });
    }
    for rule in &batch.rules {
        let doc = serde_json::to_string(rule)?;
        let old: Option<String> =
            tx.query_row("SELECT doc FROM rules WHERE name = ?1", [&rule.name], |r| r.get(0)).optional()?;
        let outcome = match old {
            Some(old) if serde_json::from_str::<RuleDoc>(&old)? == *rule => Outcome::Unchanged,
            Some(_) => {
                tx.execute(
                    "UPDATE rules SET priority = ?2, max_count = ?3, doc = ?4, updated_at = ?5 WHERE name = ?1",
                    params![rule.name, rule.priority, rule.max_count, doc, now],
                )?;
                Outcome::Updated
            }
            None => {
                tx.execute(
                    "INSERT INTO rules (name, priority, max_count, doc, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                    params![rule.name, rule.priority, rule.max_count, doc, now],
                )?;
                Outcome::Created
            }
        };
        outcomes.push(outcome);
    }
    for wf in &batch.workflows {
        let outcome = match load_workflow(tx, &wf.id)? {
            Some(old) if same_definition(&old, wf) => Outcome::Unchanged,
            Some(_) => {
                return Err(StoreError::Conflict(format!(
                    "workflow {:?} already exists with a different template, hardware or hardware_map; \
                     workflows cannot be changed, delete it first",
                    wf.id
                )));
            }
            None => {
                insert_workflow(tx, wf)?;
                Outcome::Created
            }
        };
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

/// Inserts `job` unless a job with its key exists; the number of rows
/// inserted (1 or 0).
fn insert_job(tx: &Transaction<'_>, job: &BmcJob) -> rusqlite::Result<usize> {
    tx.execute(
        "INSERT INTO bmc_jobs (id, key, hardware_id, operation, state, attempts, next_attempt_at, lease_owner, lease_until, deadline, result, error, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14) ON CONFLICT (key) DO NOTHING",
        params![
            job.id,
            job.key,
            job.hardware_id,
            job.operation,
            job.state,
            job.attempts,
            job.next_attempt_at,
            job.lease_owner,
            job.lease_until,
            job.deadline,
            job.result,
            job.error,
            job.created_at,
            job.updated_at
        ],
    )
}

fn job_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BmcJob> {
    Ok(BmcJob {
        id: r.get(0)?,
        key: r.get(1)?,
        hardware_id: r.get(2)?,
        operation: r.get(3)?,
        state: r.get(4)?,
        attempts: r.get(5)?,
        next_attempt_at: r.get(6)?,
        lease_owner: r.get(7)?,
        lease_until: r.get(8)?,
        deadline: r.get(9)?,
        result: r.get(10)?,
        error: r.get(11)?,
        created_at: r.get(12)?,
        updated_at: r.get(13)?,
    })
}

/// A row of `SELECT credential_hash, hardware_id, agent_id, mac, workflow,
/// created_at, expires_at, used_at FROM enrolments`.
fn enrolment_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Enrolment> {
    Ok(Enrolment {
        credential_hash: r.get(0)?,
        hardware_id: r.get(1)?,
        agent_id: r.get(2)?,
        mac: r.get(3)?,
        workflow: r.get(4)?,
        created_at: r.get(5)?,
        expires_at: r.get(6)?,
        used_at: r.get(7)?,
    })
}

fn not_found(kind: &'static str, name: &str) -> StoreError {
    StoreError::NotFound { kind, name: name.to_string() }
}

#[async_trait]
impl Store for SqliteStore {
    async fn apply(&self, batch: ApplyBatch) -> Result<Vec<Outcome>, StoreError> {
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            let outcomes = apply_batch(&tx, batch)?;
            tx.commit()?;
            Ok(outcomes)
        })
        .await
    }

    async fn get_hardware(&self, id: &str) -> Result<StoredHardware, StoreError> {
        let id = id.to_string();
        self.read(move |c| load_hardware(c, &id)?.ok_or_else(|| not_found("hardware", &id))).await
    }

    async fn list_hardware(&self) -> Result<Vec<StoredHardware>, StoreError> {
        self.read(|c| {
            let ids: Vec<String> = c
                .prepare("SELECT id FROM hardware ORDER BY id")?
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            ids.iter().filter_map(|id| load_hardware(c, id).transpose()).collect()
        })
        .await
    }

    async fn get_template(&self, name: &str) -> Result<StoredTemplate, StoreError> {
        let name = name.to_string();
        self.read(move |c| load_template(c, &name)?.ok_or_else(|| not_found("template", &name))).await
    }

    async fn list_templates(&self) -> Result<Vec<StoredTemplate>, StoreError> {
        self.read(|c| {
            let names: Vec<String> = c
                .prepare("SELECT name FROM templates ORDER BY name")?
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            names.iter().filter_map(|n| load_template(c, n).transpose()).collect()
        })
        .await
    }

    async fn get_workflow(&self, id: &str) -> Result<Workflow, StoreError> {
        let id = id.to_string();
        self.read(move |c| load_workflow(c, &id)?.ok_or_else(|| not_found("workflow", &id))).await
    }

    async fn list_workflows(&self) -> Result<Vec<Workflow>, StoreError> {
        self.read(|c| {
            let ids: Vec<String> = c
                .prepare("SELECT id FROM workflows ORDER BY created_at, id")?
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            ids.iter().filter_map(|id| load_workflow(c, id).transpose()).collect()
        })
        .await
    }

    async fn list_workflow_page(&self, query: WorkflowListQuery) -> Result<WorkflowPage, StoreError> {
        self.read(move |c| {
            let filters = query.filters();
            let clause = if filters.is_empty() {
                String::new()
            } else {
                let terms: Vec<String> =
                    filters.iter().enumerate().map(|(i, (col, _))| format!("{col} = ?{}", i + 1)).collect();
                format!(" WHERE {}", terms.join(" AND "))
            };
            let values = rusqlite::params_from_iter(filters.iter().map(|(_, v)| v.as_str()));
            let total: i64 = c
                .prepare_cached(&format!("SELECT COUNT(*) FROM workflows{clause}"))?
                .query_row(values.clone(), |r| r.get(0))?;
            let sql = format!(
                "SELECT id, template, hardware, state, reason, created_at, started_at, finished_at FROM workflows{clause} \
                 ORDER BY {} LIMIT {} OFFSET {}",
                query.order_by(),
                query.limit,
                query.offset.min(i64::MAX as u64)
            );
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt
                .query_map(values, |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, i64>(5)?,
                        r.get::<_, Option<i64>>(6)?,
                        r.get::<_, Option<i64>>(7)?,
                    ))
                })?
                .map(|row| {
                    let (id, template, hardware, state, reason, created, started, finished) = row?;
                    summary_from_row(id, template, hardware, &state, reason, created, started, finished)
                })
                .collect::<Result<_, StoreError>>()?;
            Ok(WorkflowPage { rows, total: total.max(0) as u64 })
        })
        .await
    }

    async fn delete(&self, kind: ObjectKind, name: &str) -> Result<(), StoreError> {
        let name = name.to_string();
        self.with_conn(move |c| {
            let tx = c.transaction()?;
            let (table, key, user_column) = match kind {
                ObjectKind::ActionDefinition => ("action_definitions", "name", None),
                ObjectKind::Hardware => ("hardware", "id", Some("hardware")),
                ObjectKind::Template => ("templates", "name", Some("template")),
                ObjectKind::Workflow => ("workflows", "id", None),
                ObjectKind::Rule => ("rules", "name", None),
            };
            if let Some(column) = user_column {
                let users: Vec<String> = tx
                    .prepare(&format!(
                        "SELECT id FROM workflows WHERE {column} = ?1 AND state IN ({}) ORDER BY id",
                        *sql::OPEN_WORKFLOWS
                    ))?
                    .query_map([&name], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                if !users.is_empty() {
                    return Err(StoreError::InUse(format!(
                        "{} {name:?} is used by unfinished workflow(s) {}",
                        kind.as_str(),
                        users.join(", ")
                    )));
                }
            }
            let n = tx.execute(&format!("DELETE FROM {table} WHERE {key} = ?1"), [&name])?;
            if n == 0 {
                return Err(not_found(kind.as_str(), &name));
            }
            if kind == ObjectKind::Workflow {
                // Its BMC steps go with it: a workflow created again under
                // the name must run its own, not find these done.
                tx.execute(
                    "DELETE FROM bmc_jobs WHERE substr(key, 1, length(?1)) = ?1",
                    [super::workflow_jobs_prefix(&name)],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn active_workflows_for_agent(&self, agent_id: &str) -> Result<Vec<String>, StoreError> {
        let agent_id = agent_id.to_string();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT w.id FROM workflows w
                 WHERE w.state IN ({})
                   AND EXISTS (SELECT 1 FROM actions a WHERE a.workflow_id = w.id AND a.agent_id = ?1)
                 ORDER BY w.created_at, w.id",
                *sql::OPEN_WORKFLOWS
            ))?;
            let ids = stmt.query_map([&agent_id], |r| r.get(0))?.collect::<Result<_, _>>()?;
            Ok(ids)
        })
        .await
    }

    async fn workflow_counts(&self) -> Result<Vec<(String, String, u64)>, StoreError> {
        self.read(|c| {
            let mut stmt =
                c.prepare_cached("SELECT template, state, COUNT(*) FROM workflows GROUP BY template, state")?;
            let counts = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64)))?
                .collect::<Result<_, _>>()?;
            Ok(counts)
        })
        .await
    }

    async fn workflows_with_deadline(&self) -> Result<Vec<String>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT id FROM workflows WHERE state = 'RUNNING' AND global_timeout_seconds IS NOT NULL",
            )?;
            let ids = stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
            Ok(ids)
        })
        .await
    }

    async fn workflows_with_expired_leases(&self, now: Millis) -> Result<Vec<String>, StoreError> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT DISTINCT workflow_id FROM attempts WHERE state IN ({}) AND lease_expires_at < ?1",
                *sql::OPEN_ATTEMPTS
            ))?;
            let ids = stmt.query_map([now], |r| r.get(0))?.collect::<Result<_, _>>()?;
            Ok(ids)
        })
        .await
    }

    async fn renew_leases(
        &self,
        agent_id: &str,
        attempt_ids: Vec<String>,
        until: Millis,
    ) -> Result<Vec<String>, StoreError> {
        let agent_id = agent_id.to_string();
        self.with_conn(move |c| {
            let tx = c.transaction()?;
            let mut ended = Vec::new();
            {
                let mut stmt = tx.prepare_cached(&sql::renew_leases("MAX", "id = ?1", "?2", "?3"))?;
                for id in attempt_ids {
                    if stmt.execute(params![id, agent_id, until])? == 0 {
                        ended.push(id);
                    }
                }
            }
            tx.commit()?;
            Ok(ended)
        })
        .await
    }

    async fn attempt_access(&self, workflow_id: &str, attempt_id: &str) -> Result<Option<AttemptAccess>, StoreError> {
        let (workflow_id, attempt_id) = (workflow_id.to_string(), attempt_id.to_string());
        self.read(move |c| {
            let row: Option<(u32, String, String, String)> = c
                .prepare_cached(
                    "SELECT a.action_idx, a.agent_id, a.state, w.state FROM attempts a
                     JOIN workflows w ON w.id = a.workflow_id WHERE a.id = ?1 AND a.workflow_id = ?2",
                )?
                .query_row([&attempt_id, &workflow_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .optional()?;
            row.map(|(index, agent_id, state, workflow_state)| {
                AttemptAccess::from_row(index, agent_id, &state, &workflow_state)
            })
            .transpose()
        })
        .await
    }

    async fn update_workflow_with_jobs(
        &self,
        id: &str,
        mutation: MutationWithJobs,
    ) -> Result<(Workflow, bool), StoreError> {
        let id = id.to_string();
        self.with_conn(move |c| {
            // IMMEDIATE takes the write lock up front: the read and the write
            // below see no other writer in between.
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let mut wf = load_workflow(&tx, &id)?.ok_or_else(|| not_found("workflow", &id))?;
            let (changed, jobs) = mutation(&mut wf)?;
            if changed {
                save_workflow(&tx, &wf)?;
                for job in &jobs {
                    insert_job(&tx, job)?;
                }
                tx.commit()?;
            }
            Ok((wf, changed))
        })
        .await
    }

    async fn append_logs(
        &self,
        workflow_id: &str,
        action_index: u32,
        attempt_id: &str,
        lines: Vec<NewLogLine>,
    ) -> Result<Appended, StoreError> {
        let (workflow_id, attempt_id) = (workflow_id.to_string(), attempt_id.to_string());
        self.with_conn(move |c| {
            let tx = c.transaction()?;
            let mut new_lines = 0;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT OR IGNORE INTO logs (workflow_id, action_idx, attempt_id, seq, stream, time, text)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?;
                for l in &lines {
                    new_lines += stmt.execute(params![
                        workflow_id,
                        action_index,
                        attempt_id,
                        l.seq as i64,
                        l.stream,
                        l.time,
                        l.text
                    ])?;
                }
            }
            let through: i64 =
                tx.query_row("SELECT COALESCE(MAX(seq), 0) FROM logs WHERE attempt_id = ?1", [&attempt_id], |r| {
                    r.get(0)
                })?;
            tx.commit()?;
            Ok(Appended { stored_through: through as u64, new_lines: new_lines as u64 })
        })
        .await
    }

    async fn workflow_data(&self, id: &str) -> Result<(String, u64), StoreError> {
        let id = id.to_string();
        self.read(move |c| {
            c.query_row("SELECT data_json, data_version FROM workflows WHERE id = ?1", [&id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
            })
            .optional()?
            .ok_or_else(|| not_found("workflow", &id))
        })
        .await
    }

    async fn set_workflow_data(&self, id: &str, json: String, expected_version: u64) -> Result<u64, StoreError> {
        let id = id.to_string();
        self.with_conn(move |c| {
            let n = c.execute(
                "UPDATE workflows SET data_json = ?2, data_version = data_version + 1 WHERE id = ?1 AND data_version = ?3",
                params![id, json, expected_version as i64],
            )?;
            let current: i64 = c
                .query_row("SELECT data_version FROM workflows WHERE id = ?1", [&id], |r| r.get(0))
                .optional()?
                .ok_or_else(|| not_found("workflow", &id))?;
            if n == 0 {
                return Err(StoreError::Conflict(format!(
                    "workflow data is at version {current}, not {expected_version}: read it again and retry"
                )));
            }
            Ok(current as u64)
        })
        .await
    }

    async fn list_definitions(&self) -> Result<Vec<StoredDefinition>, StoreError> {
        self.read(|c| {
            let mut stmt =
                c.prepare_cached("SELECT doc, created_at, updated_at FROM action_definitions ORDER BY name")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?)))?;
            let mut out = Vec::new();
            for row in rows {
                let (doc, created_at, updated_at) = row?;
                out.push(StoredDefinition { doc: serde_json::from_str(&doc)?, created_at, updated_at });
            }
            Ok(out)
        })
        .await
    }

    async fn put_artifact(&self, a: Artifact) -> Result<(), StoreError> {
        self.with_conn(move |c| {
            c.execute(
                "INSERT INTO artifacts (workflow_id, action_idx, attempt_id, path, size, sha256, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(attempt_id, path) DO UPDATE SET size = excluded.size, sha256 = excluded.sha256,
                     created_at = excluded.created_at",
                params![a.workflow_id, a.action_index, a.attempt_id, a.path, a.size as i64, a.sha256, a.created_at],
            )?;
            Ok(())
        })
        .await
    }

    async fn list_artifacts(&self, workflow_id: &str) -> Result<Vec<Artifact>, StoreError> {
        let workflow_id = workflow_id.to_string();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT a.workflow_id, a.action_idx, a.attempt_id, a.path, a.size, a.sha256, a.created_at
                 FROM artifacts a JOIN attempts t ON t.id = a.attempt_id
                 WHERE a.workflow_id = ?1 ORDER BY a.action_idx, t.number, a.path",
            )?;
            let rows = stmt.query_map([&workflow_id], |r| {
                Ok(Artifact {
                    workflow_id: r.get(0)?,
                    action_index: r.get(1)?,
                    attempt_id: r.get(2)?,
                    path: r.get(3)?,
                    size: r.get::<_, i64>(4)? as u64,
                    sha256: r.get(5)?,
                    created_at: r.get(6)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn read_logs(
        &self,
        workflow_id: &str,
        action_index: Option<u32>,
        after_cursor: i64,
        limit: u32,
    ) -> Result<Vec<StoredLogLine>, StoreError> {
        let workflow_id = workflow_id.to_string();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT cursor, action_idx, attempt_id, seq, stream, time, text FROM logs
                 WHERE workflow_id = ?1 AND cursor > ?2 AND (?3 IS NULL OR action_idx = ?3)
                 ORDER BY cursor LIMIT ?4",
            )?;
            let rows = stmt.query_map(params![workflow_id, after_cursor, action_index, limit], |r| {
                Ok(StoredLogLine {
                    cursor: r.get(0)?,
                    action_index: r.get(1)?,
                    attempt_id: r.get(2)?,
                    seq: r.get::<_, i64>(3)? as u64,
                    stream: r.get(4)?,
                    time: r.get(5)?,
                    text: r.get(6)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn agent_credential(&self, agent_id: &str) -> Result<Option<AgentCredential>, StoreError> {
        let agent_id = agent_id.to_string();
        self.read(move |c| {
            Ok(c.query_row("SELECT id, token_hash FROM hardware WHERE agent_id = ?1", [&agent_id], |r| {
                Ok(AgentCredential { hardware_id: r.get(0)?, token_hash: r.get(1)? })
            })
            .optional()?)
        })
        .await
    }

    async fn agent_for_token_hash(&self, token_hash: &str) -> Result<Option<String>, StoreError> {
        let hash = token_hash.to_string();
        self.read(move |c| {
            Ok(c.query_row("SELECT agent_id FROM hardware WHERE token_hash = ?1", [&hash], |r| r.get(0)).optional()?)
        })
        .await
    }

    async fn set_token_hash(&self, hardware_id: &str, token_hash: Option<String>) -> Result<(), StoreError> {
        let id = hardware_id.to_string();
        self.with_conn(move |c| {
            let n = c.execute("UPDATE hardware SET token_hash = ?2 WHERE id = ?1", params![id, token_hash])?;
            if n == 0 { Err(not_found("hardware", &id)) } else { Ok(()) }
        })
        .await
    }

    async fn issue_enrolment(&self, e: Enrolment, prune_before: Millis) -> Result<(), StoreError> {
        self.with_conn(move |c| {
            let tx = c.transaction()?;
            tx.execute("DELETE FROM enrolments WHERE hardware_id = ?1 AND used_at IS NULL", [&e.hardware_id])?;
            tx.execute("DELETE FROM enrolments WHERE expires_at < ?1", [prune_before])?;
            let n = tx.execute(
                "INSERT INTO enrolments (credential_hash, hardware_id, agent_id, mac, workflow, created_at, expires_at)
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7 WHERE EXISTS (SELECT 1 FROM hardware WHERE id = ?2)",
                params![e.credential_hash, e.hardware_id, e.agent_id, e.mac, e.workflow, e.created_at, e.expires_at],
            )?;
            if n == 0 {
                return Err(not_found("hardware", &e.hardware_id));
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn take_enrolment(&self, credential_hash: &str, now: Millis) -> Result<Option<Enrolment>, StoreError> {
        let hash = credential_hash.to_string();
        self.with_conn(move |c| {
            // IMMEDIATE: the write lock before the read, so that the check
            // and the mark are one step even for another connection.
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let found = tx
                .query_row(
                    "SELECT credential_hash, hardware_id, agent_id, mac, workflow, created_at, expires_at, used_at
                     FROM enrolments WHERE credential_hash = ?1",
                    [&hash],
                    enrolment_from_row,
                )
                .optional()?;
            if found.as_ref().is_some_and(|e| e.used_at.is_none()) {
                tx.execute("UPDATE enrolments SET used_at = ?2 WHERE credential_hash = ?1", params![hash, now])?;
            }
            tx.commit()?;
            Ok(found)
        })
        .await
    }

    async fn put_inventory(&self, inv: StoredInventory) -> Result<bool, StoreError> {
        self.with_conn(move |c| {
            let tx = c.transaction()?;
            let exists: bool =
                tx.query_row("SELECT EXISTS (SELECT 1 FROM hardware WHERE id = ?1)", [&inv.hardware_id], |r| r.get(0))?;
            if !exists {
                return Err(not_found("hardware", &inv.hardware_id));
            }
            let stored: Option<String> = tx
                .query_row("SELECT digest FROM hardware_inventory WHERE hardware_id = ?1", [&inv.hardware_id], |r| {
                    r.get(0)
                })
                .optional()?;
            let changed = stored.as_deref() != Some(inv.digest.as_str());
            if changed {
                tx.execute(
                    "INSERT INTO hardware_inventory (hardware_id, agent_id, inventory, digest, reported_at, seen_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (hardware_id) DO UPDATE SET agent_id = ?2, inventory = ?3, digest = ?4,
                       reported_at = ?5, seen_at = ?6",
                    params![
                        inv.hardware_id,
                        inv.agent_id,
                        inv.inventory_json,
                        inv.digest,
                        inv.reported_at,
                        inv.seen_at
                    ],
                )?;
            } else {
                tx.execute(
                    "UPDATE hardware_inventory SET seen_at = ?2, agent_id = ?3 WHERE hardware_id = ?1",
                    params![inv.hardware_id, inv.seen_at, inv.agent_id],
                )?;
            }
            tx.commit()?;
            Ok(changed)
        })
        .await
    }

    async fn discover_hardware(&self, mac: &str, hw: HardwareDoc, now: Millis) -> Result<String, StoreError> {
        let mac = mac.to_string();
        self.with_conn(move |c| {
            let tx = c.transaction()?;
            // The MAC's unique constraint decides between concurrent boots:
            // the loser's insert does nothing and it reads the winner's record.
            let doc = serde_json::to_string(&hw)?;
            let inserted = tx.execute(
                "INSERT INTO hardware (id, agent_id, doc, created_at, updated_at, token_hash)
                 VALUES (?1, ?2, ?3, ?4, ?4, NULL) ON CONFLICT DO NOTHING",
                params![hw.id, hw.agent_id, doc, now],
            )?;
            if inserted == 1 {
                tx.execute(
                    "INSERT INTO discovered_hardware (mac, hardware_id, discovered_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT DO NOTHING",
                    params![mac, hw.id, now],
                )?;
            }
            let id: Option<String> = tx
                .query_row("SELECT hardware_id FROM discovered_hardware WHERE mac = ?1", [&mac], |r| r.get(0))
                .optional()?;
            tx.commit()?;
            id.ok_or_else(|| {
                StoreError::Conflict(format!("hardware {} exists and is not the discovered record of MAC {mac}", hw.id))
            })
        })
        .await
    }

    async fn list_discovered(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.read(|c| {
            Ok(c.prepare("SELECT mac, hardware_id FROM discovered_hardware ORDER BY mac")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn list_rules(&self) -> Result<Vec<StoredRule>, StoreError> {
        self.read(|c| {
            let rows: Vec<(String, Millis, Millis)> = c
                .prepare("SELECT doc, created_at, updated_at FROM rules ORDER BY name")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>()?;
            rows.into_iter()
                .map(|(doc, created_at, updated_at)| {
                    Ok(StoredRule { doc: serde_json::from_str(&doc)?, created_at, updated_at })
                })
                .collect()
        })
        .await
    }

    async fn list_rule_matches(&self) -> Result<Vec<RuleMatch>, StoreError> {
        self.read(|c| {
            Ok(c.prepare("SELECT mac, rule, hardware_id, matched_at FROM rule_matches ORDER BY mac")?
                .query_map([], |r| {
                    Ok(RuleMatch { mac: r.get(0)?, rule: r.get(1)?, hardware_id: r.get(2)?, matched_at: r.get(3)? })
                })?
                .collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn adopt_by_rule(&self, batch: ApplyBatch, m: RuleMatch) -> Result<RuleAdoption, StoreError> {
        self.with_conn(move |c| {
            // IMMEDIATE: the write lock is taken before the count is read,
            // so adoptions serialise even between two processes on one file.
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let max_count: Option<Option<u32>> =
                tx.query_row("SELECT max_count FROM rules WHERE name = ?1", [&m.rule], |r| r.get(0)).optional()?;
            let Some(max_count) = max_count else { return Ok(RuleAdoption::NoRule) };
            let earlier: Option<(String, String)> = tx
                .query_row("SELECT rule, hardware_id FROM rule_matches WHERE mac = ?1", [&m.mac], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?;
            if let Some((rule, hardware_id)) = earlier {
                return Ok(RuleAdoption::AlreadyMatched { rule, hardware_id });
            }
            let discovered: Option<String> = tx
                .query_row("SELECT hardware_id FROM discovered_hardware WHERE mac = ?1", [&m.mac], |r| r.get(0))
                .optional()?;
            if discovered.is_none() {
                return Ok(RuleAdoption::NotDiscovered);
            }
            if load_hardware(&tx, &m.hardware_id)?.is_some() {
                return Ok(RuleAdoption::NameTaken);
            }
            if let Some(max_count) = max_count {
                let count: u32 =
                    tx.query_row("SELECT COUNT(*) FROM rule_matches WHERE rule = ?1", [&m.rule], |r| r.get(0))?;
                if count >= max_count {
                    return Ok(RuleAdoption::Full { max_count });
                }
            }
            let outcomes = apply_batch(&tx, batch)?;
            tx.execute(
                "INSERT INTO rule_matches (mac, rule, hardware_id, matched_at) VALUES (?1, ?2, ?3, ?4)",
                params![m.mac, m.rule, m.hardware_id, m.matched_at],
            )?;
            tx.commit()?;
            Ok(RuleAdoption::Adopted(outcomes))
        })
        .await
    }

    async fn get_inventory(&self, hardware_id: &str) -> Result<Option<StoredInventory>, StoreError> {
        let id = hardware_id.to_string();
        self.read(move |c| {
            Ok(c.query_row(
                "SELECT hardware_id, agent_id, inventory, digest, reported_at, seen_at
                 FROM hardware_inventory WHERE hardware_id = ?1",
                [&id],
                |r| {
                    Ok(StoredInventory {
                        hardware_id: r.get(0)?,
                        agent_id: r.get(1)?,
                        inventory_json: r.get(2)?,
                        digest: r.get(3)?,
                        reported_at: r.get(4)?,
                        seen_at: r.get(5)?,
                    })
                },
            )
            .optional()?)
        })
        .await
    }

    async fn record_events(&self, events: Vec<Event>) -> Result<(), StoreError> {
        self.with_conn(move |c| {
            let tx = c.transaction()?;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO events (time, kind, actor, peer, action, object, outcome, reason, count)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )?;
                for e in &events {
                    stmt.execute(params![
                        e.time,
                        e.kind.as_str(),
                        e.actor,
                        e.peer,
                        e.action,
                        e.object,
                        e.outcome.as_str(),
                        e.reason,
                        e.count as i64
                    ])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn list_events(&self, q: EventQuery) -> Result<Vec<Event>, StoreError> {
        self.read(move |c| {
            let order = if q.newest { "DESC" } else { "ASC" };
            let mut stmt = c.prepare_cached(&format!(
                "SELECT cursor, time, kind, actor, peer, action, object, outcome, reason, count FROM events
                 WHERE cursor > ?1 AND time >= ?2 AND (?3 IS NULL OR kind = ?3)
                 ORDER BY cursor {order} LIMIT ?4"
            ))?;
            let rows = stmt.query_map(params![q.after, q.since, q.kind.map(|k| k.as_str()), q.limit], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    [r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?],
                    r.get::<_, String>(7)?,
                    r.get::<_, String>(8)?,
                    r.get::<_, i64>(9)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (cursor, time, kind, texts, outcome, reason, count) = row?;
                out.push(super::event_from_row(cursor, time, &kind, texts, &outcome, reason, count)?);
            }
            if q.newest {
                out.reverse();
            }
            Ok(out)
        })
        .await
    }

    async fn prune_events(&self, before: Millis, keep: u64) -> Result<u64, StoreError> {
        self.with_conn(move |c| {
            // With fewer than `keep` rows the subquery is NULL and the
            // comparison false: only age prunes.
            let n = c.execute(
                "DELETE FROM events WHERE time < ?1
                 OR cursor <= (SELECT cursor FROM events ORDER BY cursor DESC LIMIT 1 OFFSET ?2)",
                params![before, keep as i64],
            )?;
            Ok(n as u64)
        })
        .await
    }

    async fn bmc_secret(&self, name: &str) -> Result<Option<SealedBmcSecret>, StoreError> {
        let name = name.to_string();
        self.read(move |c| {
            let sealed: Option<String> =
                c.query_row("SELECT sealed FROM bmc_secrets WHERE name = ?1", [&name], |r| r.get(0)).optional()?;
            Ok(sealed.map(|sealed| SealedBmcSecret { name, sealed }))
        })
        .await
    }

    async fn set_power_reading(&self, hardware_id: &str, reading: PowerReading) -> Result<(), StoreError> {
        let id = hardware_id.to_string();
        self.with_conn(move |c| {
            let known: Option<i64> =
                c.query_row("SELECT 1 FROM hardware WHERE id = ?1", [&id], |r| r.get(0)).optional()?;
            if known.is_none() {
                return Err(not_found("hardware", &id));
            }
            // Two readings racing: the later read wins, whatever the commit order.
            c.execute(
                "INSERT INTO bmc_power (hardware_id, state, read_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (hardware_id) DO UPDATE SET state = excluded.state, read_at = excluded.read_at
                 WHERE excluded.read_at >= bmc_power.read_at",
                params![id, reading.state, reading.read_at],
            )?;
            Ok(())
        })
        .await
    }

    async fn create_bmc_job(&self, job: BmcJob) -> Result<(BmcJob, Outcome), StoreError> {
        self.with_conn(move |c| {
            let tx = c.transaction()?;
            let inserted = insert_job(&tx, &job)?;
            let stored = tx.query_row("SELECT id, key, hardware_id, operation, state, attempts, next_attempt_at, lease_owner, lease_until, deadline, result, error, created_at, updated_at FROM bmc_jobs WHERE key = ?1", [&job.key], job_from_row)?;
            tx.commit()?;
            Ok((stored, if inserted == 1 { Outcome::Created } else { Outcome::Unchanged }))
        })
        .await
    }

    async fn claim_bmc_job(&self, owner: &str, now: Millis, lease_until: Millis) -> Result<Option<BmcJob>, StoreError> {
        let owner = owner.to_string();
        self.with_conn(move |c| {
            // One writer at a time (SQLite): the select and update cannot interleave with another claim.
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let id: Option<String> = tx
                .query_row(
                    &format!(
                        "SELECT id FROM bmc_jobs j WHERE ((state = 'pending' AND next_attempt_at <= ?1)
                         OR (state = 'running' AND lease_until < ?1)) AND {}
                         ORDER BY created_at, id LIMIT 1",
                        super::one_job_per_machine("?1")
                    ),
                    [now],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(id) = id else { return Ok(None) };
            tx.execute(
                "UPDATE bmc_jobs SET state = 'running', lease_owner = ?2, lease_until = ?3, attempts = attempts + 1,
                 updated_at = ?4 WHERE id = ?1",
                params![id, owner, lease_until, now],
            )?;
            let job = tx.query_row("SELECT id, key, hardware_id, operation, state, attempts, next_attempt_at, lease_owner, lease_until, deadline, result, error, created_at, updated_at FROM bmc_jobs WHERE id = ?1", [&id], job_from_row)?;
            tx.commit()?;
            Ok(Some(job))
        })
        .await
    }

    async fn finish_bmc_job(&self, id: &str, owner: &str, end: JobEnd) -> Result<bool, StoreError> {
        let (id, owner) = (id.to_string(), owner.to_string());
        self.with_conn(move |c| {
            let now = now_millis();
            let (state, result, error, next) = job_end(&end);
            let n = c.execute(
                "UPDATE bmc_jobs SET state = ?3, result = ?4, error = ?5, next_attempt_at = ?6, lease_owner = '',
                 lease_until = 0, updated_at = ?7 WHERE id = ?1 AND lease_owner = ?2 AND state = 'running'",
                params![id, owner, state, result, error, next, now],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn list_bmc_jobs(&self, limit: u32) -> Result<Vec<BmcJob>, StoreError> {
        self.read(move |c| {
            Ok(c.prepare("SELECT id, key, hardware_id, operation, state, attempts, next_attempt_at, lease_owner, lease_until, deadline, result, error, created_at, updated_at FROM bmc_jobs ORDER BY created_at DESC, id DESC LIMIT ?1")?
                .query_map([limit], job_from_row)?
                .collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn list_bmc_jobs_by_key_prefix(&self, prefix: &str) -> Result<Vec<BmcJob>, StoreError> {
        // A prefix compare, not LIKE: `_` in a workflow name is no wildcard.
        let prefix = prefix.to_string();
        self.read(move |c| {
            Ok(c.prepare("SELECT id, key, hardware_id, operation, state, attempts, next_attempt_at, lease_owner, lease_until, deadline, result, error, created_at, updated_at FROM bmc_jobs WHERE substr(key, 1, length(?1)) = ?1 ORDER BY created_at, id")?
                .query_map([&prefix], job_from_row)?
                .collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn rekey_failed_bmc_job(&self, key: &str, new_key: &str) -> Result<bool, StoreError> {
        let (key, new_key) = (key.to_string(), new_key.to_string());
        self.with_conn(move |c| {
            Ok(c.execute("UPDATE bmc_jobs SET key = ?2 WHERE key = ?1 AND state = 'failed'", [&key, &new_key])? == 1)
        })
        .await
    }

    async fn release_bmc_jobs(&self, owner: &str) -> Result<u64, StoreError> {
        let owner = owner.to_string();
        self.with_conn(move |c| {
            let n = c.execute(
                "UPDATE bmc_jobs SET state = 'pending', lease_owner = '', lease_until = 0, next_attempt_at = 0
                 WHERE state = 'running' AND lease_owner = ?1",
                [&owner],
            )?;
            Ok(n as u64)
        })
        .await
    }

    async fn power_reading(&self, hardware_id: &str) -> Result<Option<PowerReading>, StoreError> {
        let id = hardware_id.to_string();
        self.read(move |c| {
            Ok(c.query_row("SELECT state, read_at FROM bmc_power WHERE hardware_id = ?1", [&id], |r| {
                Ok(PowerReading { state: r.get(0)?, read_at: r.get(1)? })
            })
            .optional()?)
        })
        .await
    }
}
