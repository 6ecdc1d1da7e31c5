//! The use cases through their contexts: who may do what, whatever the
//! front door.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::artifacts::ArtifactFiles;
use crate::state_machine::Report;
use crate::store::NewLogLine;
use crate::store::sqlite::SqliteStore;

/// Two machines, a template of two actions, and a workflow for m1.
pub(crate) const DOCS: &str = r#"
kind: Hardware
name: m1
macs: ["52:54:00:00:00:01"]
---
kind: Hardware
name: m2
macs: ["52:54:00:00:00:02"]
---
kind: Template
name: t
data: |
  version: "0.1"
  name: t
  tasks:
    - name: one
      worker: "{{.device_1}}"
      actions:
        - {name: a, image: "127.0.0.1:5000/a:v1"}
        - {name: b, image: "127.0.0.1:5000/b:v1"}
---
kind: Workflow
name: w
template: t
hardware: m1
hardware_map: {device_1: "52:54:00:00:00:01"}
"#;

/// An application on an in-memory store, for tests of the use cases.
pub(crate) fn app(dir: &std::path::Path) -> Arc<App> {
    app_with_netboot(dir, Default::default())
}

pub(crate) fn app_with_netboot(dir: &std::path::Path, netboot: crate::netboot::NetbootConfig) -> Arc<App> {
    let store: crate::store::DynStore = Arc::new(SqliteStore::open_in_memory().unwrap());
    Arc::new(App::new(
        store,
        AppParts {
            events: Arc::default(),
            image_policy: Default::default(),
            image_rewrites: Default::default(),
            artifacts: ArtifactFiles::new(dir, 1 << 20),
            token_key: crate::action_api::TokenKey::load_or_create(dir).unwrap(),
            lease: Duration::from_secs(30),
            signing_ca: None,
            netboot,
            event_retention: Default::default(),
        },
    ))
}

fn denied<T: std::fmt::Debug>(r: Result<T, AppError>) -> String {
    match r {
        Err(AppError::PermissionDenied(m)) => m,
        other => panic!("expected PERMISSION_DENIED, got {other:?}"),
    }
}

#[tokio::test]
async fn each_actor_may_do_only_its_own_part() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path());
    let operator = OpContext::operator();
    let agent = OpContext::agent("52:54:00:00:00:01");
    let stranger = OpContext::agent("52:54:00:00:00:02");

    // Agents and tasks cannot write documents or read the fleet.
    assert!(denied(app.apply(&agent, "x", DOCS).await).contains("only an operator"));
    denied(app.list_workflows(&OpContext::system("test")).await);
    denied(app.rotate_agent_token(&agent, "m1").await);
    app.apply(&operator, "docs", DOCS).await.unwrap();

    // Operators do not run actions.
    denied(app.next_assignment(&operator, Duration::ZERO).await);
    let a = app.next_assignment(&agent, Duration::ZERO).await.unwrap().expect("an attempt for m1");
    assert_eq!((a.workflow_id.as_str(), a.action_index, a.attempt_number), ("w", 0, 1));
    assert!(app.next_assignment(&stranger, Duration::ZERO).await.unwrap().is_none());

    // Only the attempt's own agent may report on it or ship its lines.
    let line = || vec![NewLogLine { seq: 1, stream: 1, time: 0, text: "hi".into() }];
    assert!(denied(app.push_logs(&stranger, "w", 0, &a.attempt_id, line()).await).contains("belongs to agent"));
    denied(app.push_logs(&operator, "w", 0, &a.attempt_id, line()).await);
    assert!(matches!(app.push_logs(&agent, "w", 1, &a.attempt_id, line()).await, Err(AppError::NotFound(_))));
    assert_eq!(app.push_logs(&agent, "w", 0, &a.attempt_id, line()).await.unwrap(), 1);
    let running = Report {
        action_index: 0,
        attempt_id: a.attempt_id.clone(),
        state: crate::model::ActionState::Running,
        exit_code: None,
        reason: String::new(),
        message: String::new(),
        output_json: String::new(),
    };
    denied(app.report(&stranger, "w", running.clone()).await);
    assert!(app.report(&agent, "w", running).await.unwrap());

    // The action's token works for its own workflow while the attempt is
    // open; an agent context is no action context.
    let action = app.authenticate_action(&a.action_token, None).await.unwrap();
    assert_eq!(app.read_workflow_data(&action).await.unwrap().1, 0);
    denied(app.read_workflow_data(&agent).await);
    assert!(matches!(app.authenticate_action("w:0:forged:00", None).await, Err(AppError::Unauthenticated(_))));
}

#[test]
fn store_failures_reach_callers_without_the_databases_text() {
    let source = std::io::Error::other("no such table: kiln_secret_table at 10.0.0.7");
    let e: AppError = crate::store::StoreError::backend("SQLite", source).into();
    let shown = e.to_string();
    assert!(shown.contains("store failure") && shown.contains("SQLite"), "{shown}");
    assert!(!shown.contains("kiln_secret_table") && !shown.contains("10.0.0.7"), "{shown}");
    let status = crate::convert::status(e);
    assert_eq!(status.code(), tonic::Code::Internal);
    assert!(!status.message().contains("kiln_secret_table"), "{}", status.message());
    // The log keeps the cause.
    let kept = crate::store::StoreError::backend("SQLite", std::io::Error::other("disk I/O error"));
    assert!(kept.detailed().ends_with("store failure: SQLite: disk I/O error"), "{}", kept.detailed());
}

#[tokio::test]
async fn operator_writes_and_refused_credentials_are_in_the_audit_trail_without_secrets() {
    use crate::store::{EventKind, EventOutcome};
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path());
    let operator = OpContext::operator().with_peer(Some("192.0.2.1:5000".parse().unwrap()));
    let applied = app.apply(&operator, "docs", DOCS).await.unwrap();
    let token = app.rotate_agent_token(&operator, "m1").await.unwrap().token;
    assert!(app.retry_workflow(&operator, "w").await.is_err(), "a pending workflow cannot be retried");
    let forged = "w:0:forged:00";
    assert!(app.authenticate_action(forged, None).await.is_err());
    app.refusal_log().refused("agent m9".into(), None, "authenticate", "agent service", "wrong token");
    app.flush_refusals().await;

    let events = app.list_events(&operator, &audit::EventFilter::default()).await.unwrap();
    let summary: Vec<(EventKind, &str, &str, EventOutcome)> =
        events.iter().map(|e| (e.kind, e.actor.as_str(), e.action.as_str(), e.outcome)).collect();
    assert_eq!(
        summary,
        vec![
            (EventKind::Write, "operator", "apply", EventOutcome::Ok),
            (EventKind::Write, "operator", "rotate agent token", EventOutcome::Ok),
            (EventKind::Write, "operator", "retry", EventOutcome::Refused),
            (EventKind::Security, "action (unverified token)", "authenticate", EventOutcome::Refused),
            (EventKind::Security, "agent m9", "authenticate", EventOutcome::Refused),
        ]
    );
    assert!(events[0].object.contains("Hardware m1 (created)"), "{}", events[0].object);
    assert_eq!(events[0].peer, "192.0.2.1:5000");
    assert!(!events[2].reason.is_empty());
    let text = format!("{events:?}");
    let secrets = applied.iter().map(|a| a.agent_token.clone()).filter(|t| !t.is_empty()).chain([token.clone()]);
    for secret in secrets.chain([crate::auth::token_hash(&token), forged.to_string()]) {
        assert!(!text.contains(&secret), "a secret reached the audit trail: {text}");
    }
    // Only operators read it.
    denied(app.list_events(&OpContext::agent("m1"), &audit::EventFilter::default()).await);

    // Followers get what was there, then each new event.
    let mut follow =
        app.follow_events(&operator, &audit::EventFilter { limit: 1, ..Default::default() }).await.unwrap();
    use futures_util::StreamExt;
    assert_eq!(follow.next().await.unwrap().unwrap().actor, "agent m9");
    app.revoke_agent_token(&operator, "m1").await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), follow.next()).await.unwrap().unwrap().unwrap();
    assert_eq!((next.action.as_str(), next.object.as_str()), ("revoke agent token", "hardware m1"));
}

#[tokio::test]
async fn the_read_only_operator_reads_everything_and_changes_nothing() {
    use crate::store::{EventOutcome, ObjectKind};
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path());
    let (operator, viewer) = (OpContext::operator(), OpContext::read_only_operator());
    app.apply(&operator, "docs", DOCS).await.unwrap();

    // Reads: the same answers an operator gets.
    assert_eq!(app.list_hardware(&viewer).await.unwrap().len(), 2);
    app.get_hardware(&viewer, "m1").await.unwrap();
    assert_eq!(app.list_templates(&viewer).await.unwrap().len(), 1);
    app.get_template(&viewer, "t").await.unwrap();
    app.list_action_definitions(&viewer).await.unwrap();
    assert_eq!(app.list_workflows(&viewer).await.unwrap().len(), 1);
    app.get_workflow(&viewer, "w").await.unwrap();
    app.watch_workflow(&viewer, "w").await.unwrap();
    app.read_logs(&viewer, "w", "", false).await.unwrap();
    app.list_artifacts(&viewer, "w").await.unwrap();
    let planned = app.plan(&viewer, apply::PlanSource::Workflow("w".into())).await.unwrap();
    assert!(planned.2.is_empty(), "a stored workflow is not rendered again: {:?}", planned.2);
    assert_eq!(planned.0.actions.len(), 2);
    app.list_events(&viewer, &audit::EventFilter::default()).await.unwrap();
    app.scrape_metrics(&viewer).await.unwrap();

    // Writes: each refused with a reason that says what to use instead.
    let refusal = denied(app.apply(&viewer, "docs", DOCS).await);
    assert!(refusal.contains("read-only operator credential cannot change anything"), "{refusal}");
    denied(app.retry_workflow(&viewer, "w").await);
    denied(app.delete(&viewer, ObjectKind::Workflow, "w").await);
    denied(app.rotate_agent_token(&viewer, "m1").await);
    denied(app.revoke_agent_token(&viewer, "m1").await);
    denied(app.issue_agent_cert(&viewer, "m1").await);
    // Nothing changed...
    assert_eq!(app.list_workflows(&operator).await.unwrap().len(), 1);
    // ...and each attempt is in the audit trail under its own name.
    let events = app.list_events(&operator, &audit::EventFilter::default()).await.unwrap();
    let refused: Vec<&str> = events
        .iter()
        .filter(|e| e.actor == "read-only operator")
        .inspect(|e| assert_eq!(e.outcome, EventOutcome::Refused, "{e:?}"))
        .map(|e| e.action.as_str())
        .collect();
    assert_eq!(
        refused,
        ["apply", "retry", "delete", "rotate agent token", "revoke agent token", "issue agent certificate"],
        "{events:?}"
    );
}

/// A Tinkerbell template whose action has `args:` (which Tinkerbell
/// ignores) on line 9 of its body.
const TINK_TEMPLATE: &str = r#"apiVersion: tinkerbell.org/v1alpha1
kind: Template
metadata:
  name: t
spec:
  data: |
    version: "0.1"
    name: t
    tasks:
      - name: one
        worker: "{{.device_1}}"
        actions:
          - name: a
            image: "127.0.0.1:5000/a:v1"
            args: ["--force"]
"#;

#[tokio::test]
async fn unknown_fields_of_a_tinkerbell_template_body_are_warnings_at_apply_and_workflow_creation() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path());
    let operator = OpContext::operator();
    let hardware = DOCS.split("---").next().unwrap();
    app.apply(&operator, "hw", hardware).await.unwrap();
    let expected =
        "template \"t\", line 9, field tasks[0].actions[0].args: unknown field, ignored (as Tinkerbell ignores it)";
    let (_, warnings) = app.apply_with_warnings(&operator, "tink.yaml", TINK_TEMPLATE).await.unwrap();
    assert_eq!(warnings, vec![expected.to_string()]);
    // A workflow created later from the stored template: the same warning
    // (the store kept the format), and the action runs without the field.
    let workflow =
        "kind: Workflow\nname: w\ntemplate: t\nhardware: m1\nhardware_map: {device_1: \"52:54:00:00:00:01\"}\n";
    let (applied, warnings) = app.apply_with_warnings(&operator, "wf.yaml", workflow).await.unwrap();
    assert_eq!((applied.len(), warnings), (1, vec![expected.to_string()]));
    let wf = app.store.get_workflow("w").await.unwrap();
    assert_eq!(wf.actions[0].spec.image, "127.0.0.1:5000/a:v1");
    // Template and workflow together: once.
    let both = format!("{TINK_TEMPLATE}---\n{}", workflow.replace("name: w", "name: w2"));
    let (_, warnings) = app.apply_with_warnings(&operator, "both.yaml", &both).await.unwrap();
    assert_eq!(warnings, vec![expected.to_string()]);
    // The same body as kiln's own template: refused, as before.
    let body = TINK_TEMPLATE.split_once("  data: |\n").unwrap().1;
    let own = format!("kind: Template\nname: own\ndata: |\n{}", body.replace("\n  ", "\n").replacen("  ", "", 1));
    let err = app.apply(&operator, "own.yaml", &own).await.unwrap_err().to_string();
    assert!(err.contains("field tasks[0].actions[0].args: unknown field `args`, expected one of"), "{err}");
}
