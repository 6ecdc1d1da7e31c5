//! The store contract as tests, run against every implementation: the
//! embedded SQLite store and PostgreSQL (a private server per test process,
//! from `kiln_tests::postgres`, one database per test).
//!
//! Each check takes a [`Backend`], which can open several store instances
//! on one database: that is how a restart (reopen) and several replicas
//! (two instances racing) are tested.

use std::sync::Arc;

use async_trait::async_trait;
use kiln_documents::{ActionDefinitionDoc, HardwareDoc, PlannedAction, TemplateDoc, TemplateFormat};

use super::{
    AgentCredential, Appended, ApplyBatch, Artifact, DynStore, Enrolment, Event, EventKind, EventOutcome, EventQuery,
    NewLogLine, ObjectKind, Outcome, RuleAdoption, RuleMatch, StoreError, StoredInventory,
};
use crate::events::Events;
use crate::model::{Action, ActionState, Millis, Workflow, WorkflowState, now_millis};
use crate::state_machine::{self, Report, TransitionError};

/// One database, and a way to open store instances on it.
#[async_trait]
pub trait Backend: Send + Sync {
    /// A new store instance (own connection or pool) on the same database.
    async fn open(&self) -> DynStore;
    /// Whether this store is meant to be shared by several servers.
    fn shared(&self) -> bool;
}

pub struct SqliteBackend {
    dir: tempfile::TempDir,
}

impl SqliteBackend {
    pub fn new() -> Self {
        Self { dir: tempfile::tempdir().unwrap() }
    }
}

#[async_trait]
impl Backend for SqliteBackend {
    async fn open(&self) -> DynStore {
        Arc::new(super::sqlite::SqliteStore::open(self.dir.path()).unwrap())
    }
    fn shared(&self) -> bool {
        false
    }
}

pub struct PostgresBackend {
    // Keeps the server running while the test uses it.
    server: Arc<kiln_tests::postgres::PgServer>,
    url: String,
}

impl PostgresBackend {
    pub fn new() -> Self {
        let server = kiln_tests::postgres::PgServer::shared().expect("start PostgreSQL");
        let url = server.create_database().expect("create database");
        Self { server, url }
    }
}

#[async_trait]
impl Backend for PostgresBackend {
    async fn open(&self) -> DynStore {
        match super::postgres::PostgresStore::connect(&self.url, 4).await {
            Ok(store) => Arc::new(store),
            Err(e) => panic!("connect {}: {e}\n{}", self.url, self.server.log()),
        }
    }
    fn shared(&self) -> bool {
        true
    }
}

fn planned(worker: &str, name: &str) -> PlannedAction {
    PlannedAction {
        task: "t".into(),
        name: name.into(),
        worker: worker.into(),
        image: "127.0.0.1:5000/a:v1".into(),
        command: vec!["echo".into()],
        environment: [("K".to_string(), "V".to_string())].into(),
        timeout_seconds: 60,
        ..Default::default()
    }
}

fn workflow(id: &str) -> Workflow {
    Workflow {
        id: id.into(),
        template: "tpl".into(),
        hardware: "hw".into(),
        hardware_map: [("device_1".to_string(), "agent-1".to_string())].into(),
        state: WorkflowState::Pending,
        reason: String::new(),
        global_timeout_seconds: Some(30),
        boot_options: Some(kiln_documents::BootOptions {
            network_boot: kiln_documents::NetworkBoot::Pxe,
            power_cycle: true,
            after_success: kiln_documents::AfterSuccess::Off,
        }),
        created_at: now_millis(),
        started_at: None,
        finished_at: None,
        actions: vec![
            Action { index: 0, spec: planned("agent-1", "one"), attempts: vec![] },
            Action { index: 1, spec: planned("agent-1", "two"), attempts: vec![] },
        ],
    }
}

fn hardware() -> HardwareDoc {
    HardwareDoc {
        id: "hw".into(),
        agent_id: "agent-1".into(),
        macs: vec!["agent-1".into()],
        disks: vec!["/dev/vda".into()],
        metadata: serde_json::json!({"a": 1}),
        netboot: true,
        spec: serde_json::Value::Null,
        object_meta: serde_json::Value::Null,
        bmc: None,
        root_disk: None,
    }
}

fn definition(description: &str) -> ActionDefinitionDoc {
    ActionDefinitionDoc {
        name: "def".into(),
        description: description.into(),
        image: "127.0.0.1:5000/d:v1".into(),
        input_schema: serde_json::json!({"type": "object"}),
        output_schema: serde_json::json!({"type": "object"}),
        resources: Default::default(),
    }
}

fn batch(workflows: Vec<Workflow>) -> ApplyBatch {
    ApplyBatch { hardware: vec![hardware()], workflows, ..Default::default() }
}

fn success(index: u32, attempt_id: &str) -> Report {
    Report {
        action_index: index,
        attempt_id: attempt_id.into(),
        state: ActionState::Success,
        exit_code: Some(0),
        reason: String::new(),
        message: String::new(),
        output_json: String::new(),
    }
}

const LEASE: Millis = 30_000;

async fn dispatch(store: &DynStore, id: &str, attempt_id: &str) -> (Workflow, bool) {
    let attempt_id = attempt_id.to_string();
    store
        .update_workflow(
            id,
            Box::new(move |wf| Ok(state_machine::dispatch(wf, "agent-1", now_millis(), LEASE, || attempt_id))),
        )
        .await
        .unwrap()
}

pub async fn apply_is_atomic_and_reports_outcomes(b: &dyn Backend) {
    let store = b.open().await;
    let first = ApplyBatch {
        hardware: vec![hardware()],
        definitions: vec![definition("one")],
        templates: vec![TemplateDoc::new("tpl", "x")],
        workflows: vec![workflow("wf1")],
        ..Default::default()
    };
    assert_eq!(store.apply(first).await.unwrap(), vec![Outcome::Created; 4]);
    // A conflicting workflow leaves the batch's other objects unwritten.
    let mut changed = workflow("wf1");
    changed.hardware_map.insert("device_1".into(), "bb".into());
    let mut hw2 = hardware();
    hw2.id = "hw2".into();
    hw2.agent_id = "agent-2".into();
    let err = store
        .apply(ApplyBatch {
            hardware: vec![hw2],
            definitions: vec![definition("two")],
            templates: vec![],
            workflows: vec![changed],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    assert!(matches!(store.get_hardware("hw2").await, Err(StoreError::NotFound { .. })));
    assert_eq!(store.list_definitions().await.unwrap()[0].doc.description, "one");
    // The same documents again: unchanged; changed ones: updated.
    let mut hw = hardware();
    hw.metadata = serde_json::json!({"a": 2});
    let again = ApplyBatch {
        hardware: vec![hw.clone()],
        definitions: vec![definition("one")],
        templates: vec![TemplateDoc::new("tpl", "y")],
        workflows: vec![workflow("wf1")],
        ..Default::default()
    };
    assert_eq!(
        store.apply(again).await.unwrap(),
        vec![Outcome::Updated, Outcome::Unchanged, Outcome::Updated, Outcome::Unchanged]
    );
    let stored = store.get_hardware("hw").await.unwrap();
    assert_eq!(stored.doc, hw);
    assert!(stored.updated_at >= stored.created_at);
    assert_eq!(store.list_hardware().await.unwrap().len(), 1);
    assert_eq!(store.get_template("tpl").await.unwrap().doc.data, "y");
    assert_eq!(store.list_templates().await.unwrap().len(), 1);
    // A new instance on the same database (a restart) finds everything, and
    // opening again does not re-run migrations.
    drop(store);
    let store = b.open().await;
    let wf = store.get_workflow("wf1").await.unwrap();
    assert_eq!(wf, workflow_with_times("wf1", &wf));
    assert_eq!(wf.actions[1].spec.name, "two");
    assert_eq!(wf.global_timeout_seconds, Some(30));
    assert_eq!(wf.boot_options, workflow("x").boot_options, "boot options read back as written");
    assert_eq!(store.list_workflows().await.unwrap(), vec![wf]);
    assert!(matches!(store.get_workflow("nope").await, Err(StoreError::NotFound { kind: "workflow", .. })));
    assert!(matches!(store.get_template("nope").await, Err(StoreError::NotFound { kind: "template", .. })));
}

/// A template keeps the format it was applied as (which decides how its
/// body is read when a workflow is created from it later), through updates
/// and a restart.
pub async fn templates_keep_their_format(b: &dyn Backend) {
    let store = b.open().await;
    let tink = |data: &str| TemplateDoc { format: TemplateFormat::Tinkerbell, ..TemplateDoc::new("tink", data) };
    let batch = |templates| ApplyBatch { templates, ..Default::default() };
    let created = store.apply(batch(vec![tink("x"), TemplateDoc::new("own", "x")])).await.unwrap();
    assert_eq!(created, vec![Outcome::Created; 2]);
    assert_eq!(store.get_template("tink").await.unwrap().doc, tink("x"));
    assert_eq!(store.get_template("own").await.unwrap().doc.format, TemplateFormat::Kiln);
    // The same text applied in the other format is a change, and is kept.
    let own_as_tink = TemplateDoc { format: TemplateFormat::Tinkerbell, ..TemplateDoc::new("own", "x") };
    let outcomes = store.apply(batch(vec![tink("x"), own_as_tink.clone()])).await.unwrap();
    assert_eq!(outcomes, vec![Outcome::Unchanged, Outcome::Updated]);
    let back = store.apply(batch(vec![TemplateDoc::new("tink", "y")])).await.unwrap();
    assert_eq!(back, vec![Outcome::Updated]);
    drop(store);
    let store = b.open().await;
    let formats: Vec<(String, TemplateFormat)> =
        store.list_templates().await.unwrap().into_iter().map(|t| (t.doc.name, t.doc.format)).collect();
    assert_eq!(
        formats,
        vec![("own".to_string(), TemplateFormat::Tinkerbell), ("tink".to_string(), TemplateFormat::Kiln)]
    );
    assert_eq!(store.get_template("own").await.unwrap().doc, own_as_tink);
}

/// `workflow(id)` with the stored workflow's creation time (set at build).
fn workflow_with_times(id: &str, stored: &Workflow) -> Workflow {
    Workflow { created_at: stored.created_at, ..workflow(id) }
}

pub async fn update_workflow_persists_and_in_use_blocks_delete(b: &dyn Backend) {
    let store = b.open().await;
    let mut apply = batch(vec![workflow("wf1")]);
    apply.templates.push(TemplateDoc::new("tpl", "x"));
    store.apply(apply).await.unwrap();
    let counts = |store: DynStore| async move { store.workflow_counts().await.unwrap() };
    assert_eq!(counts(store.clone()).await, vec![("tpl".to_string(), "PENDING".to_string(), 1)]);
    assert_eq!(store.active_workflows_for_agent("agent-1").await.unwrap(), vec!["wf1"]);
    assert!(store.active_workflows_for_agent("agent-2").await.unwrap().is_empty());
    assert!(store.workflows_with_deadline().await.unwrap().is_empty(), "pending workflows have no deadline yet");
    let (wf, changed) = dispatch(&store, "wf1", "att-1").await;
    assert!(changed);
    assert_eq!(wf.state, WorkflowState::Running);
    assert_eq!(store.workflows_with_deadline().await.unwrap(), vec!["wf1"]);
    assert_eq!(counts(store.clone()).await, vec![("tpl".to_string(), "RUNNING".to_string(), 1)]);
    // Committed: another instance sees it.
    assert_eq!(b.open().await.get_workflow("wf1").await.unwrap(), wf);
    // A mutation that changes nothing writes nothing; one that fails leaves
    // the workflow as it was.
    let (same, changed) = dispatch(&store, "wf1", "att-x").await;
    assert!(!changed);
    assert_eq!(same, wf);
    let err = store
        .update_workflow(
            "wf1",
            Box::new(|wf| {
                wf.state = WorkflowState::Failed;
                Err(TransitionError::UnknownAction(9))
            }),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Transition(TransitionError::UnknownAction(9))), "{err}");
    assert_eq!(store.get_workflow("wf1").await.unwrap(), wf);
    assert!(matches!(dispatch_missing(&store).await, StoreError::NotFound { .. }));
    // Reports move the attempt on; the finished attempt keeps its fields.
    let (wf, changed) = store
        .update_workflow(
            "wf1",
            Box::new(|wf| state_machine::apply_report(wf, "agent-1", &success(0, "att-1"), now_millis(), LEASE)),
        )
        .await
        .unwrap();
    assert!(changed);
    let loaded = store.get_workflow("wf1").await.unwrap();
    assert_eq!(loaded, wf);
    assert_eq!(loaded.actions[0].attempts[0].state, ActionState::Success);
    assert_eq!(loaded.actions[0].attempts[0].exit_code, Some(0));
    // In use: hardware and template of an unfinished workflow stay.
    let err = store.delete(ObjectKind::Hardware, "hw").await.unwrap_err();
    assert!(matches!(err, StoreError::InUse(ref m) if m.contains("wf1")), "{err}");
    let err = store.delete(ObjectKind::Template, "tpl").await.unwrap_err();
    assert!(matches!(err, StoreError::InUse(_)), "{err}");
    assert!(matches!(store.delete(ObjectKind::Template, "nope").await, Err(StoreError::NotFound { .. })));
    store.delete(ObjectKind::Workflow, "wf1").await.unwrap();
    assert!(matches!(store.get_workflow("wf1").await, Err(StoreError::NotFound { .. })));
    assert!(counts(store.clone()).await.is_empty());
    store.delete(ObjectKind::Hardware, "hw").await.unwrap();
    store.delete(ObjectKind::Template, "tpl").await.unwrap();
    assert!(store.list_hardware().await.unwrap().is_empty());
}

async fn dispatch_missing(store: &DynStore) -> StoreError {
    store.update_workflow("missing", Box::new(|_| Ok(true))).await.unwrap_err()
}

pub async fn logs_are_deduplicated_and_read_by_cursor(b: &dyn Backend) {
    let store = b.open().await;
    store.apply(batch(vec![workflow("wf1"), workflow("wf2")])).await.unwrap();
    let line = |seq: u64| NewLogLine { seq, stream: 1, time: 1000 + seq as i64, text: format!("line {seq}") };
    let appended = |stored_through, new_lines| Appended { stored_through, new_lines };
    assert_eq!(store.append_logs("wf1", 0, "att-1", vec![line(1), line(2)]).await.unwrap(), appended(2, 2));
    // A resent batch overlapping the stored lines: only new seqs are added.
    assert_eq!(store.append_logs("wf1", 0, "att-1", vec![line(2), line(3)]).await.unwrap(), appended(3, 1));
    assert_eq!(store.append_logs("wf1", 0, "att-1", vec![line(1)]).await.unwrap(), appended(3, 0));
    assert_eq!(store.append_logs("wf2", 0, "att-9", vec![line(1)]).await.unwrap(), appended(1, 1));
    assert_eq!(store.append_logs("wf1", 1, "att-2", vec![line(1)]).await.unwrap(), appended(1, 1));
    let logs = store.read_logs("wf1", None, 0, 100).await.unwrap();
    assert_eq!(
        logs.iter().map(|l| (l.action_index, l.attempt_id.as_str(), l.seq)).collect::<Vec<_>>(),
        vec![(0, "att-1", 1), (0, "att-1", 2), (0, "att-1", 3), (1, "att-2", 1)]
    );
    assert!(logs.windows(2).all(|w| w[0].cursor < w[1].cursor), "cursors increase: {logs:?}");
    assert_eq!((logs[0].stream, logs[0].time, logs[0].text.as_str()), (1, 1001, "line 1"));
    // Resuming after a cursor, one action, a page limit.
    let tail = store.read_logs("wf1", Some(0), logs[0].cursor, 100).await.unwrap();
    assert_eq!(tail.iter().map(|l| l.seq).collect::<Vec<_>>(), vec![2, 3]);
    let page = store.read_logs("wf1", None, 0, 2).await.unwrap();
    assert_eq!(page, logs[..2]);
    assert!(store.read_logs("wf1", None, logs[3].cursor, 100).await.unwrap().is_empty());
    assert_eq!(store.read_logs("wf1", Some(1), 0, 100).await.unwrap(), logs[3..]);
    // A workflow's logs go with it; others stay.
    store.delete(ObjectKind::Workflow, "wf1").await.unwrap();
    assert!(store.read_logs("wf1", None, 0, 100).await.unwrap().is_empty());
    assert_eq!(store.read_logs("wf2", None, 0, 100).await.unwrap().len(), 1);
}

pub async fn workflow_data_is_compare_and_swap(b: &dyn Backend) {
    let store = b.open().await;
    store.apply(batch(vec![workflow("wf1")])).await.unwrap();
    assert_eq!(store.workflow_data("wf1").await.unwrap(), ("{}".to_string(), 0));
    assert_eq!(store.set_workflow_data("wf1", r#"{"a":1}"#.into(), 0).await.unwrap(), 1);
    // A writer that read version 0 too loses, and learns the version.
    let err = store.set_workflow_data("wf1", r#"{"b":2}"#.into(), 0).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(ref m) if m.contains("version 1")), "{err}");
    assert_eq!(store.workflow_data("wf1").await.unwrap(), (r#"{"a":1}"#.to_string(), 1));
    assert!(matches!(store.set_workflow_data("nope", "{}".into(), 0).await, Err(StoreError::NotFound { .. })));
    assert!(matches!(store.workflow_data("nope").await, Err(StoreError::NotFound { .. })));
    // Racing writers from two instances at the same version: exactly one wins.
    let other = b.open().await;
    let (x, y) = tokio::join!(
        store.set_workflow_data("wf1", r#"{"x":1}"#.into(), 1),
        other.set_workflow_data("wf1", r#"{"y":1}"#.into(), 1)
    );
    assert_eq!(x.is_ok() as u8 + y.is_ok() as u8, 1, "{x:?} {y:?}");
    assert_eq!(store.workflow_data("wf1").await.unwrap().1, 2);
}

pub async fn artifacts_are_indexed(b: &dyn Backend) {
    let store = b.open().await;
    store.apply(batch(vec![workflow("wf1")])).await.unwrap();
    dispatch(&store, "wf1", "att-1").await;
    let artifact = |path: &str, size: u64| Artifact {
        workflow_id: "wf1".into(),
        action_index: 0,
        attempt_id: "att-1".into(),
        path: path.into(),
        size,
        sha256: format!("{size:064x}"),
        created_at: 7,
    };
    store.put_artifact(artifact("b.txt", 1)).await.unwrap();
    store.put_artifact(artifact("a.txt", 2)).await.unwrap();
    // The same attempt and path again replaces the entry.
    store.put_artifact(artifact("b.txt", 3)).await.unwrap();
    assert_eq!(store.list_artifacts("wf1").await.unwrap(), vec![artifact("a.txt", 2), artifact("b.txt", 3)]);
    assert!(store.list_artifacts("other").await.unwrap().is_empty());
    store.delete(ObjectKind::Workflow, "wf1").await.unwrap();
    assert!(store.list_artifacts("wf1").await.unwrap().is_empty());
}

/// Many tasks, on two store instances (two replicas), race to dispatch the
/// same workflows: every action gets exactly one attempt.
pub async fn concurrent_dispatch_creates_one_attempt(b: &dyn Backend) {
    const WORKFLOWS: usize = 10;
    const RACERS: usize = 8;
    let stores = [b.open().await, b.open().await];
    let ids: Vec<String> = (0..WORKFLOWS).map(|i| format!("wf{i}")).collect();
    stores[0].apply(batch(ids.iter().map(|id| workflow(id)).collect())).await.unwrap();
    for action in 0..2u32 {
        let mut tasks = Vec::new();
        for id in &ids {
            for r in 0..RACERS {
                let store = stores[r % 2].clone();
                let id = id.clone();
                tasks.push(tokio::spawn(async move {
                    let attempt = format!("{id}-a{action}-r{r}");
                    dispatch(&store, &id, &attempt).await.1
                }));
            }
        }
        let mut created = vec![0; WORKFLOWS];
        for (n, task) in tasks.into_iter().enumerate() {
            created[n / RACERS] += task.await.unwrap() as usize;
        }
        assert_eq!(created, vec![1; WORKFLOWS], "dispatches that created an attempt, per workflow (action {action})");
        for id in &ids {
            let wf = stores[1].get_workflow(id).await.unwrap();
            assert_eq!(wf.actions[action as usize].attempts.len(), 1, "{wf:?}");
            let attempt = wf.actions[action as usize].attempts[0].id.clone();
            // Finish the action so the next round races for the next one.
            stores[0]
                .update_workflow(
                    id,
                    Box::new(move |wf| {
                        state_machine::apply_report(wf, "agent-1", &success(action, &attempt), now_millis(), LEASE)
                    }),
                )
                .await
                .unwrap();
        }
    }
    for id in &ids {
        assert_eq!(stores[0].get_workflow(id).await.unwrap().state, WorkflowState::Success);
    }
}

/// A change committed through one instance wakes the waiters of another
/// (PostgreSQL); stores never shared forward nothing.
pub async fn changes_reach_other_instances(b: &dyn Backend) {
    let (a, other) = (b.open().await, b.open().await);
    let events = Arc::new(Events::default());
    let mut agent = events.agent_subscription("agent-1");
    let mut workflows = events.workflow_subscription();
    let mut logs = events.logs_subscription();
    let forwarder = a.forward_changes(events.clone());
    if !b.shared() {
        assert!(forwarder.is_none() && a.recheck_interval().is_none());
        assert_eq!(a.shared_secret("k", vec![1]).await.unwrap(), None);
        return;
    }
    let forwarder = forwarder.expect("a shared store forwards changes");
    assert!(a.recheck_interval().is_some());
    // The forwarder wakes everyone once it listens (a message for every
    // workflow has the empty id): wait for that first.
    within(agent.changed()).await.unwrap();
    agent.borrow_and_update();
    assert_eq!(within(workflows.recv()).await.unwrap(), "");
    assert_eq!(within(logs.recv()).await.unwrap(), "");

    other.apply(batch(vec![workflow("wf1")])).await.unwrap();
    within(agent.changed()).await.unwrap();
    assert_eq!(within(workflows.recv()).await.unwrap(), "wf1");
    agent.borrow_and_update();
    dispatch(&other, "wf1", "att-1").await;
    within(agent.changed()).await.unwrap();
    assert_eq!(within(workflows.recv()).await.unwrap(), "wf1");
    other
        .append_logs("wf1", 0, "att-1", vec![NewLogLine { seq: 1, stream: 1, time: 1, text: "x".into() }])
        .await
        .unwrap();
    assert_eq!(within(logs.recv()).await.unwrap(), "wf1");
    // Its own changes are not forwarded (its callers woke their waiters).
    agent.borrow_and_update();
    a.update_workflow("wf1", Box::new(|wf| Ok(state_machine::expire(wf, i64::MAX)))).await.unwrap();
    assert!(tokio::time::timeout(std::time::Duration::from_millis(500), workflows.recv()).await.is_err());
    // A credential changed through another instance: this one's verified
    // tokens must be forgotten (its cache listens here).
    let mut credentials = events.credentials_subscription();
    credentials.borrow_and_update();
    other.set_token_hash("hw", Some("h2".into())).await.unwrap();
    within(credentials.changed()).await.unwrap();
    credentials.borrow_and_update();
    let mut hw = hardware();
    hw.disks.push("/dev/vdb".into());
    other.apply(ApplyBatch { hardware: vec![hw], ..Default::default() }).await.unwrap();
    within(credentials.changed()).await.unwrap();
    forwarder.abort();
    // Every replica gets the same action token key.
    let key = a.shared_secret("k", vec![1; 32]).await.unwrap();
    assert_eq!(key, Some(vec![1; 32]));
    assert_eq!(other.shared_secret("k", vec![2; 32]).await.unwrap(), key);
}

pub async fn leases_are_renewed_never_backwards_and_found_expired(b: &dyn Backend) {
    let store = b.open().await;
    store.apply(batch(vec![workflow("wf1")])).await.unwrap();
    let before = now_millis();
    let (wf, _) = dispatch(&store, "wf1", "att-1").await;
    let granted = wf.actions[0].attempts[0].lease_expires_at.expect("a dispatched attempt holds a lease");
    assert!(granted >= before + LEASE, "{granted} < {before} + {LEASE}");
    assert!(store.workflows_with_expired_leases(granted - 1).await.unwrap().is_empty());
    assert_eq!(store.workflows_with_expired_leases(granted + 1).await.unwrap(), vec!["wf1"]);

    // A heartbeat renews only the caller's open attempts and names the rest.
    let until = granted + 60_000;
    let ended = store.renew_leases("agent-1", vec!["att-1".into(), "nope".into()], until).await.unwrap();
    assert_eq!(ended, vec!["nope"]);
    assert_eq!(store.renew_leases("agent-2", vec!["att-1".into()], until + 1).await.unwrap(), vec!["att-1"]);
    // Never backwards: neither an older heartbeat nor a report whose
    // transition computed a shorter lease moves it back.
    assert!(store.renew_leases("agent-1", vec!["att-1".into()], granted).await.unwrap().is_empty());
    let running = Report { state: ActionState::Running, exit_code: None, ..success(0, "att-1") };
    store
        .update_workflow(
            "wf1",
            Box::new(move |wf| state_machine::apply_report(wf, "agent-1", &running, now_millis(), LEASE)),
        )
        .await
        .unwrap();
    drop(store);
    let store = b.open().await;
    let wf = store.get_workflow("wf1").await.unwrap();
    assert_eq!(wf.actions[0].attempts[0].lease_expires_at, Some(until));
    assert!(store.workflows_with_expired_leases(until - 1).await.unwrap().is_empty());

    // An ended attempt holds no lease and cannot be renewed.
    let done = success(0, "att-1");
    let (wf, _) = store
        .update_workflow(
            "wf1",
            Box::new(move |wf| state_machine::apply_report(wf, "agent-1", &done, now_millis(), LEASE)),
        )
        .await
        .unwrap();
    assert_eq!(wf.actions[0].attempts[0].lease_expires_at, None);
    assert_eq!(store.renew_leases("agent-1", vec!["att-1".into()], until + 1).await.unwrap(), vec!["att-1"]);
    assert!(store.workflows_with_expired_leases(Millis::MAX).await.unwrap().is_empty());
}

pub async fn attempt_access_names_owner_and_openness(b: &dyn Backend) {
    use crate::store::AttemptAccess;
    let store = b.open().await;
    store.apply(batch(vec![workflow("wf1"), workflow("wf2")])).await.unwrap();
    assert_eq!(store.attempt_access("wf1", "att-1").await.unwrap(), None, "no attempt yet");
    dispatch(&store, "wf1", "att-1").await;
    let open = AttemptAccess {
        action_index: 0,
        agent_id: "agent-1".into(),
        state: ActionState::Pending,
        workflow_state: WorkflowState::Running,
    };
    assert_eq!(store.attempt_access("wf1", "att-1").await.unwrap(), Some(open.clone()));
    assert!(open.is_open());
    // The attempt id is not one of another workflow's.
    assert_eq!(store.attempt_access("wf2", "att-1").await.unwrap(), None);
    // Ended attempt, and then its workflow: no longer open.
    let done = success(0, "att-1");
    store
        .update_workflow(
            "wf1",
            Box::new(move |wf| state_machine::apply_report(wf, "agent-1", &done, now_millis(), LEASE)),
        )
        .await
        .unwrap();
    let ended = store.attempt_access("wf1", "att-1").await.unwrap().unwrap();
    assert_eq!((ended.state, ended.workflow_state), (ActionState::Success, WorkflowState::Running));
    assert!(!ended.is_open());
    dispatch(&store, "wf1", "att-2").await;
    let last = success(1, "att-2");
    store
        .update_workflow(
            "wf1",
            Box::new(move |wf| state_machine::apply_report(wf, "agent-1", &last, now_millis(), LEASE)),
        )
        .await
        .unwrap();
    let finished = store.attempt_access("wf1", "att-2").await.unwrap().unwrap();
    assert_eq!((finished.action_index, finished.workflow_state), (1, WorkflowState::Success));
}

pub async fn token_hashes_are_set_at_creation_kept_on_update_rotated_and_revoked(b: &dyn Backend) {
    let store = b.open().await;
    let batch = |hw: HardwareDoc, hash: &str| ApplyBatch {
        hardware: vec![hw],
        token_hashes: [("hw".to_string(), hash.to_string())].into(),
        ..Default::default()
    };
    assert_eq!(store.agent_credential("agent-1").await.unwrap(), None);
    store.apply(batch(hardware(), "h1")).await.unwrap();
    let cred =
        |hash: Option<&str>| Some(AgentCredential { hardware_id: "hw".into(), token_hash: hash.map(Into::into) });
    assert_eq!(store.agent_credential("agent-1").await.unwrap(), cred(Some("h1")));
    // An update (even one carrying a hash) keeps the stored credential.
    let mut changed = hardware();
    changed.disks.push("/dev/vdb".into());
    assert_eq!(store.apply(batch(changed, "h2")).await.unwrap(), vec![Outcome::Updated]);
    assert_eq!(store.agent_credential("agent-1").await.unwrap(), cred(Some("h1")));
    assert_eq!(store.agent_for_token_hash("h1").await.unwrap().as_deref(), Some("agent-1"));
    store.set_token_hash("hw", Some("h3".into())).await.unwrap();
    assert_eq!(store.agent_for_token_hash("h1").await.unwrap(), None);
    assert_eq!(store.agent_credential("agent-1").await.unwrap(), cred(Some("h3")));
    store.set_token_hash("hw", None).await.unwrap();
    assert_eq!(store.agent_credential("agent-1").await.unwrap(), cred(None));
    assert!(matches!(store.set_token_hash("nope", None).await, Err(StoreError::NotFound { .. })));
    // A hardware created without a hash has no valid token.
    let mut other = hardware();
    other.id = "hw2".into();
    other.agent_id = "agent-2".into();
    store.apply(ApplyBatch { hardware: vec![other], ..Default::default() }).await.unwrap();
    let none = store.agent_credential("agent-2").await.unwrap().unwrap();
    assert_eq!((none.hardware_id.as_str(), none.token_hash), ("hw2", None));
}

fn enrolment(hash: &str, hardware_id: &str, expires_at: Millis) -> Enrolment {
    Enrolment {
        credential_hash: hash.into(),
        hardware_id: hardware_id.into(),
        agent_id: "agent-1".into(),
        mac: "52:54:00:00:00:01".into(),
        workflow: "wf1".into(),
        created_at: 1_000,
        expires_at,
        used_at: None,
    }
}

pub async fn enrolments_are_used_once_superseded_pruned_and_deleted_with_hardware(b: &dyn Backend) {
    let store = b.open().await;
    let far = now_millis() + 3_600_000;
    // Only for hardware that exists.
    let unknown = store.issue_enrolment(enrolment("h0", "hw", far), 0).await;
    assert!(matches!(unknown, Err(StoreError::NotFound { .. })), "{unknown:?}");
    store.apply(ApplyBatch { hardware: vec![hardware()], ..Default::default() }).await.unwrap();
    store.issue_enrolment(enrolment("h1", "hw", far), 0).await.unwrap();
    assert_eq!(store.take_enrolment("nope", 5_000).await.unwrap(), None);
    // The first take sees it unused (and uses it); every later one, on any
    // instance, sees when it was used.
    assert_eq!(store.take_enrolment("h1", 5_000).await.unwrap(), Some(enrolment("h1", "hw", far)));
    let other = b.open().await;
    let again = other.take_enrolment("h1", 6_000).await.unwrap().unwrap();
    assert_eq!(again.used_at, Some(5_000), "used once, at the first take");
    // A new boot supersedes the unused credential of the same machine, not
    // the used one (kept to tell a replay from garbage).
    store.issue_enrolment(enrolment("h2", "hw", far), 0).await.unwrap();
    store.issue_enrolment(enrolment("h3", "hw", far), 0).await.unwrap();
    assert_eq!(store.take_enrolment("h2", 7_000).await.unwrap(), None, "superseded");
    assert!(store.take_enrolment("h1", 7_000).await.unwrap().is_some());
    // Issuing prunes what expired before the given time.
    store.issue_enrolment(enrolment("h4", "hw", 2_000), 0).await.unwrap();
    let mut hw2 = hardware();
    hw2.id = "hw2".into();
    hw2.agent_id = "agent-2".into();
    store.apply(ApplyBatch { hardware: vec![hw2], ..Default::default() }).await.unwrap();
    store.issue_enrolment(enrolment("h5", "hw2", far), 3_000).await.unwrap();
    assert_eq!(store.take_enrolment("h4", 7_000).await.unwrap(), None, "pruned");
    assert_eq!(store.take_enrolment("h1", 7_000).await.unwrap().map(|e| e.used_at), Some(Some(5_000)));
    // Deleting the hardware deletes its credentials.
    store.delete(ObjectKind::Hardware, "hw2").await.unwrap();
    assert_eq!(store.take_enrolment("h5", 7_000).await.unwrap(), None);
}

pub async fn concurrent_takes_of_one_enrolment_see_it_unused_once(b: &dyn Backend) {
    let store = b.open().await;
    store.apply(ApplyBatch { hardware: vec![hardware()], ..Default::default() }).await.unwrap();
    store.issue_enrolment(enrolment("h1", "hw", now_millis() + 60_000), 0).await.unwrap();
    let mut takes = Vec::new();
    for i in 0..8_i64 {
        // Replicas of a shared store race too; SQLite has one server.
        let store = if i % 2 == 1 && b.shared() { b.open().await } else { store.clone() };
        takes.push(tokio::spawn(async move { store.take_enrolment("h1", 10_000 + i).await.unwrap().unwrap() }));
    }
    let mut unused = 0;
    for t in takes {
        if t.await.unwrap().used_at.is_none() {
            unused += 1;
        }
    }
    assert_eq!(unused, 1, "exactly one caller may use the credential");
}

pub async fn discovered_hardware_is_created_once_per_mac_and_deleted_with_hardware(b: &dyn Backend) {
    let store = b.open().await;
    let doc = |mac: &str| {
        let mut hw = hardware();
        hw.id = format!("discovered-{}", mac.replace(':', ""));
        hw.agent_id = mac.into();
        hw.macs = vec![mac.into()];
        hw
    };
    let mac = "52:54:00:00:07:01";
    assert_eq!(store.list_discovered().await.unwrap(), vec![]);
    // Many boots at once, on two instances: one record.
    let other = b.open().await;
    let ids = futures_util::future::join_all((0..8).map(|i| {
        let s = if i % 2 == 0 { store.clone() } else { other.clone() };
        let d = doc(mac);
        async move { s.discover_hardware(mac, d, 1_000 + i).await }
    }))
    .await;
    for id in ids {
        assert_eq!(id.unwrap(), "discovered-525400000701");
    }
    let rows = vec![(mac.to_string(), "discovered-525400000701".to_string())];
    assert_eq!(other.list_discovered().await.unwrap(), rows);
    let hw = store.get_hardware("discovered-525400000701").await.unwrap();
    assert_eq!((hw.doc.agent_id.as_str(), hw.doc.macs.clone()), (mac, vec![mac.to_string()]));
    assert_eq!(store.list_hardware().await.unwrap().len(), 1);
    // No token until it enrols.
    assert_eq!(store.agent_credential(mac).await.unwrap().and_then(|c| c.token_hash), None);
    // Deleting the hardware (adoption) deletes the mark.
    store.delete(ObjectKind::Hardware, "discovered-525400000701").await.unwrap();
    assert_eq!(store.list_discovered().await.unwrap(), vec![]);
}

fn rule(name: &str, max_count: Option<u32>) -> kiln_documents::RuleDoc {
    kiln_documents::RuleDoc {
        name: name.into(),
        priority: 10,
        max_count,
        match_expr: "true".into(),
        hardware_name: "r-{{ .serial }}".into(),
        metadata: serde_json::json!({"rack": "r1"}),
        workflow: None,
    }
}

fn discovered_doc(mac: &str) -> HardwareDoc {
    let mut hw = hardware();
    hw.id = format!("discovered-{}", mac.replace(':', ""));
    hw.agent_id = mac.into();
    hw.macs = vec![mac.into()];
    hw
}

/// The batch that adopts discovered `mac` as `name`.
fn adoption(mac: &str, name: &str) -> (ApplyBatch, RuleMatch) {
    let mut hw = discovered_doc(mac);
    hw.id = name.into();
    let batch = ApplyBatch {
        hardware: vec![hw],
        adopt: vec![format!("discovered-{}", mac.replace(':', ""))],
        ..Default::default()
    };
    (batch, RuleMatch { mac: mac.into(), rule: "r1".into(), hardware_id: name.into(), matched_at: 5 })
}

pub async fn rules_are_applied_listed_updated_and_deleted(b: &dyn Backend) {
    let store = b.open().await;
    let batch = ApplyBatch { rules: vec![rule("r2", None), rule("r1", Some(3))], ..Default::default() };
    assert_eq!(store.apply(batch).await.unwrap(), vec![Outcome::Created, Outcome::Created]);
    let listed = b.open().await.list_rules().await.unwrap();
    assert_eq!(listed.iter().map(|r| r.doc.clone()).collect::<Vec<_>>(), vec![rule("r1", Some(3)), rule("r2", None)]);
    let again = ApplyBatch { rules: vec![rule("r1", Some(3)), rule("r2", Some(1))], ..Default::default() };
    assert_eq!(store.apply(again).await.unwrap(), vec![Outcome::Unchanged, Outcome::Updated]);
    assert_eq!(store.list_rules().await.unwrap()[1].doc.max_count, Some(1));
    store.delete(ObjectKind::Rule, "r2").await.unwrap();
    assert!(matches!(store.delete(ObjectKind::Rule, "r2").await, Err(StoreError::NotFound { .. })));
    assert_eq!(store.list_rules().await.unwrap().len(), 1);
}

pub async fn rule_adoptions_match_once_respect_max_count_and_refuse_atomically(b: &dyn Backend) {
    let store = b.open().await;
    store.apply(ApplyBatch { rules: vec![rule("r1", Some(2))], ..Default::default() }).await.unwrap();
    let macs: Vec<String> = (1..=4).map(|i| format!("52:54:00:00:08:0{i}")).collect();
    for mac in &macs {
        store.discover_hardware(mac, discovered_doc(mac), 1).await.unwrap();
    }
    // No such rule: nothing written.
    let (batch, mut m) = adoption(&macs[0], "a1");
    m.rule = "nope".into();
    assert_eq!(store.adopt_by_rule(batch, m).await.unwrap(), RuleAdoption::NoRule);
    assert_eq!(store.list_discovered().await.unwrap().len(), 4);
    // A name that is taken is refused, and nothing is written.
    let (batch, m) = adoption(&macs[0], "discovered-525400000802");
    assert_eq!(store.adopt_by_rule(batch, m).await.unwrap(), RuleAdoption::NameTaken);
    assert_eq!(store.list_discovered().await.unwrap().len(), 4);
    // Its boot's credential, used (its agent enrolled), and a later one
    // unused.
    let far = now_millis() + 3_600_000;
    let mut boot = enrolment("e-used", "discovered-525400000801", far);
    (boot.agent_id, boot.mac) = (macs[0].clone(), macs[0].clone());
    store.issue_enrolment(boot.clone(), 0).await.unwrap();
    store.take_enrolment("e-used", 2_000).await.unwrap();
    // Adopted: the discovered record goes, the hardware and the match come.
    let (batch, m) = adoption(&macs[0], "a1");
    assert_eq!(store.adopt_by_rule(batch, m.clone()).await.unwrap(), RuleAdoption::Adopted(vec![Outcome::Created]));
    // The used credential moved to the adopted hardware: a replay is still
    // told apart from an unknown credential.
    let replay = store.take_enrolment("e-used", 3_000).await.unwrap();
    assert_eq!(replay, Some(Enrolment { hardware_id: "a1".into(), used_at: Some(2_000), ..boot }));
    assert_eq!(store.list_rule_matches().await.unwrap(), vec![m.clone()]);
    assert_eq!(store.get_hardware("a1").await.unwrap().doc.macs, vec![macs[0].clone()]);
    assert_eq!(store.list_discovered().await.unwrap().len(), 3);
    // Matched once: again (another name) is refused, saying by what.
    let (batch, m2) = adoption(&macs[0], "a1b");
    assert_eq!(
        store.adopt_by_rule(batch, m2).await.unwrap(),
        RuleAdoption::AlreadyMatched { rule: "r1".into(), hardware_id: "a1".into() }
    );
    assert!(store.get_hardware("a1b").await.is_err());
    // A MAC that is not discovered is refused.
    let (batch, m) = adoption("52:54:00:00:08:09", "a9");
    assert_eq!(store.adopt_by_rule(batch, m).await.unwrap(), RuleAdoption::NotDiscovered);
    // max_count 2: three machines at once on two instances, one is refused.
    let other = b.open().await;
    let results = futures_util::future::join_all(macs[1..].iter().enumerate().map(|(i, mac)| {
        let s = if i % 2 == 0 { store.clone() } else { other.clone() };
        let (batch, m) = adoption(mac, &format!("a{}", i + 2));
        async move { s.adopt_by_rule(batch, m).await.unwrap() }
    }))
    .await;
    let adopted = results.iter().filter(|r| matches!(r, RuleAdoption::Adopted(_))).count();
    assert_eq!(adopted, 1, "{results:?}");
    assert_eq!(results.iter().filter(|r| **r == RuleAdoption::Full { max_count: 2 }).count(), 2, "{results:?}");
    assert_eq!(store.list_rule_matches().await.unwrap().len(), 2);
    assert_eq!(store.list_discovered().await.unwrap().len(), 2);
    // Deleting the rule forgets its matches.
    store.delete(ObjectKind::Rule, "r1").await.unwrap();
    assert_eq!(other.list_rule_matches().await.unwrap(), vec![]);
}

pub async fn inventory_is_replaced_when_it_changes_and_deleted_with_hardware(b: &dyn Backend) {
    let store = b.open().await;
    let inv = |json: &str, digest: &str, at: Millis| StoredInventory {
        hardware_id: "hw".into(),
        agent_id: "agent-1".into(),
        inventory_json: json.into(),
        digest: digest.into(),
        reported_at: at,
        seen_at: at,
    };
    let missing = store.put_inventory(inv("{}", "d0", 1)).await;
    assert!(matches!(missing, Err(StoreError::NotFound { .. })), "{missing:?}");
    store.apply(ApplyBatch { hardware: vec![hardware()], ..Default::default() }).await.unwrap();
    assert_eq!(store.get_inventory("hw").await.unwrap(), None);
    assert!(store.put_inventory(inv(r#"{"a":1}"#, "d1", 1_000)).await.unwrap(), "first report");
    assert_eq!(store.get_inventory("hw").await.unwrap(), Some(inv(r#"{"a":1}"#, "d1", 1_000)));
    // The same again: only seen_at moves.
    assert!(!store.put_inventory(inv(r#"{"a":1}"#, "d1", 2_000)).await.unwrap());
    let same = b.open().await.get_inventory("hw").await.unwrap().unwrap();
    assert_eq!((same.reported_at, same.seen_at), (1_000, 2_000));
    assert!(store.put_inventory(inv(r#"{"a":2}"#, "d2", 3_000)).await.unwrap(), "changed");
    assert_eq!(store.get_inventory("hw").await.unwrap(), Some(inv(r#"{"a":2}"#, "d2", 3_000)));
    // Updating the hardware keeps it; deleting the hardware deletes it.
    let mut changed = hardware();
    changed.disks.push("/dev/vdb".into());
    store.apply(ApplyBatch { hardware: vec![changed], ..Default::default() }).await.unwrap();
    assert!(store.get_inventory("hw").await.unwrap().is_some());
    store.delete(ObjectKind::Hardware, "hw").await.unwrap();
    assert_eq!(store.get_inventory("hw").await.unwrap(), None);
}

fn event(time: Millis, kind: EventKind, actor: &str) -> Event {
    Event {
        cursor: 0,
        time,
        kind,
        actor: actor.into(),
        peer: "192.0.2.7:40000".into(),
        action: "apply".into(),
        object: "hardware hw (created)".into(),
        outcome: if kind == EventKind::Write { EventOutcome::Ok } else { EventOutcome::Refused },
        reason: if kind == EventKind::Write { String::new() } else { "wrong token".into() },
        count: 1,
    }
}

fn query(after: i64, since: Millis, kind: Option<EventKind>, limit: u32, newest: bool) -> EventQuery {
    EventQuery { after, since, kind, limit, newest }
}

pub async fn events_are_listed_by_cursor_time_and_kind(b: &dyn Backend) {
    let store = b.open().await;
    assert_eq!(store.list_events(query(0, 0, None, 10, true)).await.unwrap(), vec![]);
    store
        .record_events(vec![
            event(1_000, EventKind::Write, "operator"),
            event(2_000, EventKind::Security, "agent a"),
            Event { count: 7, ..event(3_000, EventKind::Security, "agent b") },
        ])
        .await
        .unwrap();
    store.record_events(vec![event(4_000, EventKind::Write, "operator")]).await.unwrap();
    let all = store.list_events(query(0, 0, None, 10, false)).await.unwrap();
    assert_eq!(all.len(), 4);
    assert!(all.windows(2).all(|w| w[0].cursor < w[1].cursor), "oldest first, cursors increase: {all:?}");
    let mut first = all[0].clone();
    first.cursor = 0;
    assert_eq!(first, event(1_000, EventKind::Write, "operator"), "every field kept");
    assert_eq!(all[2].count, 7);
    // After a cursor; since a time; of one kind; the oldest or newest few.
    let after = store.list_events(query(all[1].cursor, 0, None, 10, false)).await.unwrap();
    assert_eq!(after, all[2..].to_vec());
    assert_eq!(store.list_events(query(0, 3_000, None, 10, false)).await.unwrap(), all[2..].to_vec());
    let security = store.list_events(query(0, 0, Some(EventKind::Security), 10, false)).await.unwrap();
    assert_eq!(security, all[1..3].to_vec());
    assert_eq!(store.list_events(query(0, 0, None, 2, false)).await.unwrap(), all[..2].to_vec());
    assert_eq!(store.list_events(query(0, 0, None, 2, true)).await.unwrap(), all[2..].to_vec(), "newest, oldest first");
    // Another instance (a restart, or another replica) sees the same trail.
    let other = b.open().await;
    assert_eq!(other.list_events(query(0, 0, None, 10, false)).await.unwrap(), all);
}

pub async fn events_are_pruned_by_age_and_count_and_cursors_never_reused(b: &dyn Backend) {
    let store = b.open().await;
    let events: Vec<Event> = (1..=10).map(|t| event(t * 1_000, EventKind::Write, &format!("op{t}"))).collect();
    store.record_events(events).await.unwrap();
    let all = store.list_events(query(0, 0, None, 100, false)).await.unwrap();
    // Age: older than 3 s go.
    assert_eq!(store.prune_events(3_000, 100).await.unwrap(), 2);
    assert_eq!(store.list_events(query(0, 0, None, 100, false)).await.unwrap(), all[2..].to_vec());
    // Count: the newest 5 stay.
    assert_eq!(store.prune_events(0, 5).await.unwrap(), 3);
    assert_eq!(store.list_events(query(0, 0, None, 100, false)).await.unwrap(), all[5..].to_vec());
    assert_eq!(store.prune_events(0, 5).await.unwrap(), 0, "nothing more to prune");
    // Everything pruned: a new event still gets a larger cursor, so a
    // follower resuming after the last one it saw does not miss it.
    assert_eq!(store.prune_events(Millis::MAX, 100).await.unwrap(), 5);
    store.record_events(vec![event(20_000, EventKind::Security, "agent x")]).await.unwrap();
    let after = store.list_events(query(all[9].cursor, 0, None, 100, false)).await.unwrap();
    assert_eq!(after.len(), 1, "{after:?}");
    assert!(after[0].cursor > all[9].cursor);
}

pub async fn recorded_events_reach_other_instances(b: &dyn Backend) {
    if !b.shared() {
        return;
    }
    let (a, other) = (b.open().await, b.open().await);
    let events = Arc::new(Events::default());
    let mut recorded = events.audit_subscription();
    let forwarder = other.forward_changes(events.clone()).expect("a shared store forwards changes");
    // The forwarder wakes everyone once it listens; wait for that first.
    within(recorded.changed()).await.unwrap();
    a.record_events(vec![event(1_000, EventKind::Write, "operator")]).await.unwrap();
    within(recorded.changed()).await.unwrap();
    forwarder.abort();
}

pub async fn workflow_pages_filter_sort_and_count(b: &dyn Backend) {
    use super::{WorkflowListQuery, WorkflowSort};
    let store = b.open().await;
    // 25 workflows: templates a/b alternating, created a millisecond apart
    // (reversed ids, so created order and id order disagree).
    let base = now_millis();
    let workflows: Vec<Workflow> = (0..25)
        .map(|i| Workflow {
            template: if i % 2 == 0 { "a".into() } else { "b".into() },
            created_at: base + i,
            ..workflow(&format!("wf-{:02}", 24 - i))
        })
        .collect();
    store.apply(batch(workflows)).await.unwrap();
    dispatch(&store, "wf-24", "att-1").await;
    let ids = |page: &super::WorkflowPage| page.rows.iter().map(|r| r.id.clone()).collect::<Vec<_>>();

    let all = WorkflowListQuery { limit: 10, ..Default::default() };
    let first = store.list_workflow_page(all.clone()).await.unwrap();
    assert_eq!(first.total, 25);
    assert_eq!(ids(&first), (15..25).rev().map(|i| format!("wf-{i:02}")).collect::<Vec<_>>(), "oldest first");
    let last = store.list_workflow_page(WorkflowListQuery { offset: 20, ..all.clone() }).await.unwrap();
    assert_eq!((last.total, last.rows.len()), (25, 5), "the last, partial page");
    let beyond = store.list_workflow_page(WorkflowListQuery { offset: 100, ..all.clone() }).await.unwrap();
    assert_eq!((beyond.total, beyond.rows.len()), (25, 0));

    let by_id = WorkflowListQuery { sort: WorkflowSort::Id, descending: true, limit: 3, ..Default::default() };
    assert_eq!(ids(&store.list_workflow_page(by_id).await.unwrap()), ["wf-24", "wf-23", "wf-22"]);

    let only_b = WorkflowListQuery { template: Some("b".into()), limit: 100, ..Default::default() };
    let b_page = store.list_workflow_page(only_b).await.unwrap();
    assert_eq!(b_page.total, 12);
    assert!(b_page.rows.iter().all(|r| r.template == "b"));

    let running = WorkflowListQuery { state: Some(WorkflowState::Running), limit: 100, ..Default::default() };
    let running = store.list_workflow_page(running).await.unwrap();
    assert_eq!(ids(&running), ["wf-24"]);
    assert_eq!(running.rows[0].state, WorkflowState::Running);
    assert!(running.rows[0].started_at.is_some());

    let combined = WorkflowListQuery {
        state: Some(WorkflowState::Pending),
        template: Some("a".into()),
        hardware: Some("hw".into()),
        limit: 100,
        ..Default::default()
    };
    assert_eq!(store.list_workflow_page(combined).await.unwrap().total, 12, "13 of a, one running");
    let none = WorkflowListQuery { hardware: Some("other".into()), limit: 100, ..Default::default() };
    assert_eq!(store.list_workflow_page(none).await.unwrap().total, 0);
    let one = WorkflowListQuery { id: Some("wf-03".into()), limit: 1, ..Default::default() };
    let one = store.list_workflow_page(one).await.unwrap();
    assert_eq!((one.total, one.rows[0].template.as_str(), one.rows[0].created_at), (1, "b", base + 21));

    // Descending by finished time: unfinished workflows first, every row
    // exactly once across pages.
    let mut seen = Vec::new();
    for offset in (0..25).step_by(7) {
        let q = WorkflowListQuery {
            sort: WorkflowSort::Finished,
            descending: true,
            offset,
            limit: 7,
            ..Default::default()
        };
        seen.extend(ids(&store.list_workflow_page(q).await.unwrap()));
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 25, "pages neither overlap nor skip");
}

/// BmcSecrets are written with the batch (after templates, before
/// workflows; atomically with them), rewritten on every apply, and read
/// back sealed as written; power readings keep the latest read and need
/// the hardware.
pub async fn bmc_secrets_and_power_readings(b: &dyn Backend) {
    use super::{PowerReading, SealedBmcSecret};
    let store = b.open().await;
    let sealed = |v: &str| SealedBmcSecret { name: "hw-bmc".into(), sealed: v.into() };
    let batch = ApplyBatch {
        hardware: vec![hardware()],
        templates: vec![TemplateDoc::new("tpl", "x")],
        bmc_secrets: vec![sealed("v1:first")],
        workflows: vec![workflow("wf1")],
        ..Default::default()
    };
    assert_eq!(store.apply(batch).await.unwrap(), vec![Outcome::Created; 4]);
    assert_eq!(store.bmc_secret("hw-bmc").await.unwrap(), Some(sealed("v1:first")));
    assert_eq!(store.bmc_secret("nope").await.unwrap(), None);
    // A batch that fails writes no secret.
    let mut changed = workflow("wf1");
    changed.hardware_map.insert("device_1".into(), "bb".into());
    let failed = ApplyBatch { bmc_secrets: vec![sealed("v1:lost")], workflows: vec![changed], ..Default::default() };
    assert!(matches!(store.apply(failed).await, Err(StoreError::Conflict(_))));
    assert_eq!(store.bmc_secret("hw-bmc").await.unwrap(), Some(sealed("v1:first")));
    // Applied again: rotated.
    let rotate = ApplyBatch { bmc_secrets: vec![sealed("v1:second")], ..Default::default() };
    assert_eq!(store.apply(rotate).await.unwrap(), vec![Outcome::Updated]);

    assert_eq!(store.power_reading("hw").await.unwrap(), None);
    let reading = |state: &str, read_at| PowerReading { state: state.into(), read_at };
    store.set_power_reading("hw", reading("on", 2_000)).await.unwrap();
    // An older reading that commits later does not win.
    store.set_power_reading("hw", reading("off", 1_000)).await.unwrap();
    assert_eq!(store.power_reading("hw").await.unwrap(), Some(reading("on", 2_000)));
    store.set_power_reading("hw", reading("off", 3_000)).await.unwrap();
    let err = store.set_power_reading("nope", reading("on", 1)).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { kind: "hardware", .. }), "{err}");
    // A restart finds both.
    drop(store);
    let store = b.open().await;
    assert_eq!(store.power_reading("hw").await.unwrap(), Some(reading("off", 3_000)));
    assert_eq!(store.bmc_secret("hw-bmc").await.unwrap(), Some(sealed("v1:second")));
}

/// A pending "power on" job for the BMC job tests, due at once.
fn pending_bmc_job(id: &str, key: &str, hardware: &str, created_at: Millis) -> super::BmcJob {
    super::BmcJob {
        id: id.into(),
        key: key.into(),
        hardware_id: hardware.into(),
        operation: "power on".into(),
        state: "pending".into(),
        attempts: 0,
        next_attempt_at: 0,
        lease_owner: String::new(),
        lease_until: 0,
        deadline: 1_000_000,
        result: String::new(),
        error: String::new(),
        created_at,
        updated_at: created_at,
    }
}

/// BMC jobs: a submission is idempotent by key; two instances claiming at
/// once never get the same job; only the lease holder finishes it; a retry
/// waits for its time; a job whose lease ran out is claimed again and its
/// old holder can no longer finish it.
pub async fn bmc_jobs_are_idempotent_claimed_once_and_leased(b: &dyn Backend) {
    use super::JobEnd;
    let (a, b2) = (b.open().await, b.open().await);
    // One machine each: one machine's jobs wait for each other (below).
    let job = |id: &str, key: &str, created_at| pending_bmc_job(id, key, &format!("hw-{key}"), created_at);
    let (first, outcome) = a.create_bmc_job(job("j1", "k1", 10)).await.unwrap();
    assert_eq!((first.id.as_str(), outcome), ("j1", Outcome::Created));
    let (again, outcome) = b2.create_bmc_job(job("j1-dup", "k1", 11)).await.unwrap();
    assert_eq!((again.id.as_str(), outcome), ("j1", Outcome::Unchanged), "same key, same job");
    a.create_bmc_job(job("j2", "k2", 20)).await.unwrap();

    // Two instances claim at once: two different jobs, then nothing.
    let (x, y) = tokio::join!(a.claim_bmc_job("server-a", 100, 1_000), b2.claim_bmc_job("server-b", 100, 1_000));
    let (x, y) = (x.unwrap().unwrap(), y.unwrap().unwrap());
    assert_ne!(x.id, y.id, "one job claimed twice");
    assert_eq!((x.state.as_str(), x.attempts), ("running", 1));
    assert!(a.claim_bmc_job("server-a", 150, 1_000).await.unwrap().is_none(), "both leases hold");
    let (j1_owner, j2_owner) = if x.id == "j1" { ("server-a", "server-b") } else { ("server-b", "server-a") };

    // Only the holder finishes; a retry waits for its time.
    assert!(!a.finish_bmc_job("j1", "intruder", JobEnd::Failed { error: "x".into() }).await.unwrap());
    let retry = JobEnd::Retry { error: "BMC failed: HTTP 500".into(), at: 300 };
    assert!(a.finish_bmc_job("j1", j1_owner, retry).await.unwrap());
    assert!(a.claim_bmc_job("server-a", 250, 400).await.unwrap().is_none(), "retried before its time");
    let retried = a.claim_bmc_job("server-a", 300, 400).await.unwrap().unwrap();
    assert_eq!((retried.id.as_str(), retried.attempts, retried.error.as_str()), ("j1", 2, "BMC failed: HTTP 500"));
    assert!(a.finish_bmc_job("j1", "server-a", JobEnd::Succeeded { result: "on".into() }).await.unwrap());

    // j2's holder dies: after its lease another server claims it, and the
    // old holder's late finish is refused.
    let reclaimed = a.claim_bmc_job("server-c", 1_001, 2_000).await.unwrap().unwrap();
    assert_eq!((reclaimed.id.as_str(), reclaimed.attempts), ("j2", 2));
    assert!(!b2.finish_bmc_job("j2", j2_owner, JobEnd::Succeeded { result: "on".into() }).await.unwrap());
    assert!(b2.finish_bmc_job("j2", "server-c", JobEnd::Failed { error: "timed out".into() }).await.unwrap());

    // A restarted server releases what it held: due again at once.
    b2.create_bmc_job(job("j3", "k3", 30)).await.unwrap();
    assert_eq!(a.claim_bmc_job("server-d", 2_000, 9_000).await.unwrap().unwrap().id, "j3");
    assert_eq!(a.release_bmc_jobs("server-x").await.unwrap(), 0);
    assert_eq!(a.release_bmc_jobs("server-d").await.unwrap(), 1);
    let again = b2.claim_bmc_job("server-d", 2_001, 9_000).await.unwrap().unwrap();
    assert_eq!((again.id.as_str(), again.attempts), ("j3", 2));
    assert!(a.finish_bmc_job("j3", "server-d", JobEnd::Succeeded { result: "on".into() }).await.unwrap());

    let jobs = b2.list_bmc_jobs(10).await.unwrap();
    let states: Vec<(&str, &str, &str)> =
        jobs.iter().map(|j| (j.id.as_str(), j.state.as_str(), j.result.as_str())).collect();
    assert_eq!(states, [("j3", "succeeded", "on"), ("j2", "failed", ""), ("j1", "succeeded", "on")]);
    assert_eq!(jobs[1].error, "timed out");
    assert_eq!(b2.list_bmc_jobs(1).await.unwrap().len(), 1);
}

/// One machine's jobs run one at a time, oldest first, even when the oldest
/// waits for a retry; other machines' jobs are not held up; on two
/// instances claiming at once too.
pub async fn one_machines_bmc_jobs_run_one_at_a_time_in_order(b: &dyn Backend) {
    use super::JobEnd;
    let (a, b2) = (b.open().await, b.open().await);
    let job = |id: &str, hardware: &str, created_at| pending_bmc_job(id, id, hardware, created_at);
    a.create_bmc_job(job("x-off", "x", 10)).await.unwrap();
    a.create_bmc_job(job("y-on", "y", 15)).await.unwrap();
    a.create_bmc_job(job("x-on", "x", 20)).await.unwrap();
    let claim = |s: &DynStore, owner: &'static str, now| {
        let s = s.clone();
        async move { s.claim_bmc_job(owner, now, now + 1_000).await.unwrap().map(|j| j.id) }
    };
    let (p, q) = tokio::join!(claim(&a, "s1", 100), claim(&b2, "s2", 100));
    let mut got = vec![p.unwrap(), q.unwrap()];
    got.sort();
    assert_eq!(got, ["x-off", "y-on"], "x-on waits for x-off");
    assert_eq!(claim(&a, "s1", 101).await, None);
    let y_owner = a.list_bmc_jobs(10).await.unwrap().into_iter().find(|j| j.id == "y-on").unwrap().lease_owner;
    assert!(a.finish_bmc_job("y-on", &y_owner, JobEnd::Succeeded { result: "on".into() }).await.unwrap());
    let x_owner = if a.list_bmc_jobs(10).await.unwrap().iter().any(|j| j.id == "x-off" && j.lease_owner == "s1") {
        "s1"
    } else {
        "s2"
    };
    // x-off is retried later: x-on still waits for it (order kept).
    assert!(a.finish_bmc_job("x-off", x_owner, JobEnd::Retry { error: "HTTP 503".into(), at: 500 }).await.unwrap());
    assert_eq!(claim(&b2, "s2", 200).await, None);
    assert_eq!(claim(&b2, "s2", 500).await.as_deref(), Some("x-off"));
    // Its server dies: the job itself is claimed again when its lease ends,
    // and still before x-on.
    assert_eq!(claim(&a, "s1", 1_501).await.as_deref(), Some("x-off"));
    assert!(a.finish_bmc_job("x-off", "s1", JobEnd::Succeeded { result: "off".into() }).await.unwrap());
    assert_eq!(claim(&a, "s1", 1_502).await.as_deref(), Some("x-on"));
}

/// A workflow's BMC steps: a job submitted with a workflow change commits
/// with it (and not when the change fails or changes nothing); jobs are
/// listed by key prefix, oldest first; a failed job renamed away lets the
/// same key be submitted again, and a job that did not fail is never renamed.
pub async fn workflow_bmc_steps_commit_with_the_workflow_and_are_rekeyed(b: &dyn Backend) {
    use super::BmcJob;
    let store = b.open().await;
    let mut apply = batch(vec![workflow("wf_1"), workflow("wf11")]);
    apply.templates.push(TemplateDoc::new("tpl", "x"));
    store.apply(apply).await.unwrap();
    let job = |id: &str, key: &str, created_at| BmcJob {
        operation: "power off".into(),
        ..pending_bmc_job(id, key, "hw", created_at)
    };
    // Fails: neither the change nor the job is kept.
    let finish = job("j-finish", "workflow/wf_1/finish", 20);
    let w = "wf_1";
    let err = store
        .update_workflow_with_jobs(
            w,
            Box::new(move |wf| {
                wf.state = WorkflowState::Success;
                Err(TransitionError::UnknownAction(9))
            }),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Transition(_)), "{err}");
    // Changes nothing: no job either.
    let j = finish.clone();
    let (_, changed) = store.update_workflow_with_jobs(w, Box::new(move |_| Ok((false, vec![j])))).await.unwrap();
    assert!(!changed);
    assert!(store.list_bmc_jobs(10).await.unwrap().is_empty(), "a job without its workflow change");
    // Changes: both, seen by another instance.
    let j = finish.clone();
    let (wf, changed) = store
        .update_workflow_with_jobs(
            w,
            Box::new(move |wf| {
                wf.state = WorkflowState::Success;
                Ok((true, vec![j]))
            }),
        )
        .await
        .unwrap();
    assert!(changed && wf.state == WorkflowState::Success);
    let other = b.open().await;
    assert_eq!(other.get_workflow(w).await.unwrap().state, WorkflowState::Success);
    other.create_bmc_job(job("j-start", "workflow/wf_1/start", 10)).await.unwrap();
    let other_machine = BmcJob { hardware_id: "hw2".into(), ..job("j-other", "workflow/wf11/start", 5) };
    other.create_bmc_job(other_machine).await.unwrap();
    let ids = |jobs: Vec<BmcJob>| jobs.into_iter().map(|j| j.id).collect::<Vec<_>>();
    // `_` is no wildcard: wf_1's prefix does not match wf11.
    assert_eq!(ids(other.list_bmc_jobs_by_key_prefix("workflow/wf_1/").await.unwrap()), ["j-start", "j-finish"]);
    // Only a failed job is renamed.
    assert!(!store.rekey_failed_bmc_job("workflow/wf_1/start", "workflow/wf_1/start/failed-j-start").await.unwrap());
    let claimed = store.claim_bmc_job("s", 100, 1_000).await.unwrap().unwrap();
    assert_eq!(claimed.id, "j-other");
    let claimed = store.claim_bmc_job("s", 100, 1_000).await.unwrap().unwrap();
    assert_eq!(claimed.id, "j-start");
    store.finish_bmc_job("j-start", "s", super::JobEnd::Failed { error: "HTTP 500".into() }).await.unwrap();
    assert!(store.rekey_failed_bmc_job("workflow/wf_1/start", "workflow/wf_1/start/failed-j-start").await.unwrap());
    let (again, outcome) = store.create_bmc_job(job("j-start-2", "workflow/wf_1/start", 30)).await.unwrap();
    assert_eq!((again.id.as_str(), outcome), ("j-start-2", Outcome::Created));
    let keys: Vec<String> =
        other.list_bmc_jobs_by_key_prefix("workflow/wf_1/").await.unwrap().into_iter().map(|j| j.key).collect();
    assert_eq!(keys, ["workflow/wf_1/start/failed-j-start", "workflow/wf_1/finish", "workflow/wf_1/start"]);
    // Deleting the workflow deletes its steps, and no other workflow's.
    store.delete(ObjectKind::Workflow, "wf_1").await.unwrap();
    assert_eq!(ids(other.list_bmc_jobs(10).await.unwrap()), ["j-other"]);
}

async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(std::time::Duration::from_secs(10), f).await.expect("no event within 10 s")
}

/// The suite as `#[tokio::test]`s for one backend.
macro_rules! conformance_tests {
    ($backend:expr) => {
        use crate::store::conformance as c;

        #[tokio::test]
        async fn apply_is_atomic_and_reports_outcomes() {
            c::apply_is_atomic_and_reports_outcomes(&$backend).await
        }

        #[tokio::test]
        async fn bmc_secrets_and_power_readings() {
            c::bmc_secrets_and_power_readings(&$backend).await
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn bmc_jobs_are_idempotent_claimed_once_and_leased() {
            c::bmc_jobs_are_idempotent_claimed_once_and_leased(&$backend).await
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn one_machines_bmc_jobs_run_one_at_a_time_in_order() {
            c::one_machines_bmc_jobs_run_one_at_a_time_in_order(&$backend).await
        }

        #[tokio::test]
        async fn workflow_bmc_steps_commit_with_the_workflow_and_are_rekeyed() {
            c::workflow_bmc_steps_commit_with_the_workflow_and_are_rekeyed(&$backend).await
        }

        #[tokio::test]
        async fn templates_keep_their_format() {
            c::templates_keep_their_format(&$backend).await
        }

        #[tokio::test]
        async fn update_workflow_persists_and_in_use_blocks_delete() {
            c::update_workflow_persists_and_in_use_blocks_delete(&$backend).await
        }

        #[tokio::test]
        async fn logs_are_deduplicated_and_read_by_cursor() {
            c::logs_are_deduplicated_and_read_by_cursor(&$backend).await
        }

        #[tokio::test]
        async fn workflow_data_is_compare_and_swap() {
            c::workflow_data_is_compare_and_swap(&$backend).await
        }

        #[tokio::test]
        async fn artifacts_are_indexed() {
            c::artifacts_are_indexed(&$backend).await
        }

        #[tokio::test]
        async fn leases_are_renewed_never_backwards_and_found_expired() {
            c::leases_are_renewed_never_backwards_and_found_expired(&$backend).await
        }

        #[tokio::test]
        async fn attempt_access_names_owner_and_openness() {
            c::attempt_access_names_owner_and_openness(&$backend).await
        }

        #[tokio::test]
        async fn token_hashes_are_set_at_creation_kept_on_update_rotated_and_revoked() {
            c::token_hashes_are_set_at_creation_kept_on_update_rotated_and_revoked(&$backend).await
        }

        #[tokio::test]
        async fn enrolments_are_used_once_superseded_pruned_and_deleted_with_hardware() {
            c::enrolments_are_used_once_superseded_pruned_and_deleted_with_hardware(&$backend).await
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn concurrent_takes_of_one_enrolment_see_it_unused_once() {
            c::concurrent_takes_of_one_enrolment_see_it_unused_once(&$backend).await
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn discovered_hardware_is_created_once_per_mac_and_deleted_with_hardware() {
            c::discovered_hardware_is_created_once_per_mac_and_deleted_with_hardware(&$backend).await
        }

        #[tokio::test]
        async fn inventory_is_replaced_when_it_changes_and_deleted_with_hardware() {
            c::inventory_is_replaced_when_it_changes_and_deleted_with_hardware(&$backend).await
        }

        #[tokio::test]
        async fn workflow_pages_filter_sort_and_count() {
            c::workflow_pages_filter_sort_and_count(&$backend).await
        }

        #[tokio::test]
        async fn events_are_listed_by_cursor_time_and_kind() {
            c::events_are_listed_by_cursor_time_and_kind(&$backend).await
        }

        #[tokio::test]
        async fn events_are_pruned_by_age_and_count_and_cursors_never_reused() {
            c::events_are_pruned_by_age_and_count_and_cursors_never_reused(&$backend).await
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn recorded_events_reach_other_instances() {
            c::recorded_events_reach_other_instances(&$backend).await
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn concurrent_dispatch_creates_one_attempt() {
            c::concurrent_dispatch_creates_one_attempt(&$backend).await
        }

        #[tokio::test]
        async fn rules_are_applied_listed_updated_and_deleted() {
            c::rules_are_applied_listed_updated_and_deleted(&$backend).await
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn rule_adoptions_match_once_respect_max_count_and_refuse_atomically() {
            c::rule_adoptions_match_once_respect_max_count_and_refuse_atomically(&$backend).await
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn changes_reach_other_instances() {
            c::changes_reach_other_instances(&$backend).await
        }
    };
}

mod sqlite {
    conformance_tests!(c::SqliteBackend::new());
}

mod postgres {
    conformance_tests!(c::PostgresBackend::new());
}
