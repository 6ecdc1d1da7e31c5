//! The console's HTML, written with maud: every value interpolated is
//! escaped, so names, metadata, reasons and log lines can only ever be
//! text. No inline script or style anywhere (the CSP forbids them).
//!
//! What the live script updates is described once, by the serialisable
//! views below ([`WorkflowView`]): the page renders them, the stream sends
//! them, so both show the same.

use axum::http::StatusCode;
use maud::{DOCTYPE, Markup, html};
use serde::Serialize;

use super::session::Session;
use super::{ListParams, can_write};
use crate::app::console::MachineView;
use crate::model::{Millis, Workflow, WorkflowState};
use crate::store::{Artifact, Event, StoredTemplate, WorkflowListQuery, WorkflowPage, WorkflowSummary};

/// `2026-12-06 18:20:01` (UTC), or "—".
pub fn time(t: Option<Millis>) -> String {
    match t {
        Some(ms) if ms > 0 => {
            let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64);
            let text = humantime::format_rfc3339_seconds(at).to_string();
            text.trim_end_matches('Z').replace('T', " ")
        }
        _ => "—".into(),
    }
}

/// `1.25s`, `3m 4s`, or "" when it has not started.
pub fn duration(from: Option<Millis>, to: Option<Millis>) -> String {
    let (Some(from), Some(to)) = (from, to) else { return String::new() };
    let ms = (to - from).max(0) as u64;
    if ms < 60_000 {
        format!("{:.2}s", ms as f64 / 1000.0)
    } else {
        humantime::format_duration(std::time::Duration::from_secs(ms / 1000)).to_string()
    }
}

/// Percent-encodes a path segment or query value.
pub fn path_segment(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>().replace('+', "%20")
}

fn state_class(state: &str) -> String {
    format!("state state-{}", state.to_ascii_lowercase())
}

fn layout(session: Option<&Session>, title: &str, stream: Option<&str>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · kiln" }
                link rel="stylesheet" href="/static/console.css";
                script src="/static/console.js" defer {}
            }
            body data-stream=[stream] {
                header {
                    a.brand href="/machines" { "kiln" }
                    @if let Some(s) = session {
                        nav {
                            a href="/machines" { "Machines" }
                            a href="/workflows" { "Workflows" }
                            a href="/templates" { "Templates" }
                            a href="/events" { "Events" }
                        }
                        span.who { "signed in as " (s.actor) }
                        form.logout method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(s.csrf);
                            button type="submit" id="logout" { "Log out" }
                        }
                    }
                }
                main { h1 { (title) } (body) }
                footer { span id="live" { } }
            }
        }
    }
}

pub fn login(error: Option<&str>) -> Markup {
    layout(
        None,
        "Log in",
        None,
        html! {
            form.login method="post" action="/login" {
                p { "The operator credential: the token the CLI uses (the server's " code { "DATA_DIR/admin-token" } ")." }
                @if let Some(e) = error { p.error role="alert" { (e) } }
                label for="token" { "Operator token" }
                input id="token" name="token" type="password" autocomplete="current-password" required autofocus;
                button type="submit" id="login" { "Log in" }
            }
        },
    )
}

pub fn error(session: Option<&Session>, status: StatusCode, message: &str) -> Markup {
    layout(
        session,
        &format!("{} {}", status.as_u16(), status.canonical_reason().unwrap_or("")),
        None,
        html! {
            p.error { (message) }
        },
    )
}

fn workflow_link(id: &str) -> Markup {
    html! { a href={ "/workflows/" (path_segment(id)) } { (id) } }
}

pub fn machines(session: &Session, list: &[MachineView]) -> Markup {
    layout(
        Some(session),
        "Machines",
        Some("/workflows/stream"),
        html! {
            p.summary { (list.len()) " machines" }
            table id="machines" {
                thead { tr {
                    th { "Machine" } th { "Agent id" } th { "MACs" } th { "Netboot gate" } th { "Inventory" }
                    th { "Workflow" } th { "State" } th { "Metadata" }
                } }
                tbody {
                    @for m in list {
                        @let doc = &m.hardware.doc;
                        tr data-hw=(doc.id) {
                            td.name { (doc.id) }
                            td { (doc.agent_id) }
                            td { @for mac in &doc.macs { span.mac { (mac) } " " } }
                            td.gate {
                                @if m.netboot_open { span.gate-open { "open" } }
                                @else if doc.netboot { span.gate-closed { "closed" } }
                                @else { span.gate-closed { "closed (netboot off)" } }
                            }
                            // Inventory arrives with hardware discovery.
                            td.inventory { "—" }
                            @match &m.latest_workflow {
                                Some(wf) => {
                                    td.wf-id { (workflow_link(&wf.id)) }
                                    td.wf-state { span class=(state_class(wf.state.as_str())) { (wf.state.as_str()) } }
                                }
                                None => { td.wf-id { "—" } td.wf-state { "—" } }
                            }
                            td.metadata { code { (doc.metadata.to_string()) } }
                        }
                    }
                }
            }
        },
    )
}

const STATES: [WorkflowState; 5] = [
    WorkflowState::Pending,
    WorkflowState::Running,
    WorkflowState::Success,
    WorkflowState::Failed,
    WorkflowState::Timeout,
];

/// A link to the workflows list with `params`, changed by `f`.
fn list_href(params: &ListParams, f: impl FnOnce(&mut Vec<(&'static str, String)>)) -> String {
    let mut q: Vec<(&'static str, String)> = vec![
        ("state", params.state.clone()),
        ("template", params.template.clone()),
        ("machine", params.machine.clone()),
        ("sort", params.sort.clone()),
        ("dir", params.dir.clone()),
    ];
    f(&mut q);
    let pairs: Vec<String> =
        q.into_iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| format!("{k}={}", path_segment(&v))).collect();
    format!("/workflows?{}", pairs.join("&"))
}

pub fn workflows(
    session: &Session,
    params: &ListParams,
    query: &WorkflowListQuery,
    page: &WorkflowPage,
    templates: &[StoredTemplate],
) -> Markup {
    let per_page = u64::from(query.limit);
    let number = query.offset / per_page + 1;
    let pages = page.total.div_ceil(per_page).max(1);
    let sort = query.sort.as_str();
    let header = |column: &'static str, label: &'static str| {
        let dir = if sort == column && !query.descending { "desc" } else { "asc" };
        let mark = match (sort == column, query.descending) {
            (true, true) => " ▼",
            (true, false) => " ▲",
            _ => "",
        };
        html! { th { a.sort href=(list_href(params, |q| { q[3].1 = column.into(); q[4].1 = dir.into(); })) { (label) (mark) } } }
    };
    layout(
        Some(session),
        "Workflows",
        Some("/workflows/stream"),
        html! {
            form.filters method="get" action="/workflows" {
                label { "State " select name="state" {
                    option value="" { "any" }
                    @for s in STATES { option value=(s.as_str()) selected[query.state == Some(s)] { (s.as_str()) } }
                } }
                label { "Template " select name="template" {
                    option value="" { "any" }
                    @for t in templates {
                        option value=(t.doc.name) selected[query.template.as_deref() == Some(t.doc.name.as_str())] { (t.doc.name) }
                    }
                } }
                label { "Machine " input name="machine" value=(params.machine) placeholder="hardware id"; }
                input type="hidden" name="sort" value=(params.sort);
                input type="hidden" name="dir" value=(params.dir);
                button type="submit" { "Filter" }
            }
            p.summary {
                span id="total" { (page.total) } " workflows · page " (number) " of " (pages)
                " " span id="new-workflows" hidden { }
            }
            table id="workflows" {
                thead { tr {
                    (header("id", "Workflow")) (header("template", "Template")) (header("hardware", "Machine"))
                    (header("state", "State")) (header("created", "Created")) (header("finished", "Finished"))
                    th { "Duration" } th { "Reason" }
                } }
                tbody {
                    @for wf in &page.rows { (workflow_row(wf)) }
                }
            }
            nav.pages {
                @if number > 1 {
                    a id="prev" href=(list_href(params, |q| q.push(("page", (number - 1).to_string())))) { "← previous" }
                }
                @if number < pages {
                    a id="next" href=(list_href(params, |q| q.push(("page", (number + 1).to_string())))) { "next →" }
                }
            }
        },
    )
}

fn workflow_row(wf: &WorkflowSummary) -> Markup {
    html! {
        tr data-wf=(wf.id) {
            td { (workflow_link(&wf.id)) }
            td { a href={ "/templates/" (path_segment(&wf.template)) "?workflow=" (path_segment(&wf.id)) } { (wf.template) } }
            td { (wf.hardware) }
            td.wf-state { span class=(state_class(wf.state.as_str())) { (wf.state.as_str()) } }
            td { (time(Some(wf.created_at))) }
            td.wf-finished { (time(wf.finished_at)) }
            td.wf-duration { (duration(wf.started_at, wf.finished_at)) }
            td.wf-reason { (wf.reason) }
        }
    }
}

/// A workflow as the page and its stream show it.
#[derive(Debug, Clone, Serialize)]
pub struct WorkflowView {
    pub id: String,
    pub state: String,
    pub reason: String,
    pub started: String,
    pub finished: String,
    pub duration: String,
    /// FAILED or TIMEOUT: `kiln retry` applies.
    pub retryable: bool,
    pub actions: Vec<ActionView>,
    pub artifacts: Vec<ArtifactView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ActionView {
    pub index: u32,
    pub state: String,
    /// `attempt 2 of 3` (retries allow more).
    pub attempts_label: String,
    pub attempts: Vec<AttemptView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AttemptView {
    pub number: u32,
    pub agent: String,
    pub state: String,
    pub created: String,
    pub pulling: String,
    pub running: String,
    pub finished: String,
    pub duration: String,
    pub exit_code: String,
    pub reason: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ArtifactView {
    pub action: String,
    pub path: String,
    pub size: u64,
    pub sha256: String,
    pub href: String,
}

impl WorkflowView {
    pub fn new(wf: &Workflow, artifacts: &[Artifact]) -> Self {
        let selector = |index: u32| {
            wf.actions.get(index as usize).map(|a| format!("{}/{}", a.spec.task, a.spec.name)).unwrap_or_default()
        };
        Self {
            id: wf.id.clone(),
            state: wf.state.as_str().into(),
            reason: wf.reason.clone(),
            started: time(wf.started_at),
            finished: time(wf.finished_at),
            duration: duration(wf.started_at, wf.finished_at.or(wf.started_at.map(|_| crate::model::now_millis()))),
            retryable: matches!(wf.state, WorkflowState::Failed | WorkflowState::Timeout),
            actions: wf
                .actions
                .iter()
                .map(|a| ActionView {
                    index: a.index,
                    state: a.state().as_str().into(),
                    attempts_label: format!("{} of at most {} attempts", a.attempts.len(), a.spec.retries + 1),
                    attempts: a
                        .attempts
                        .iter()
                        .map(|t| AttemptView {
                            number: t.number,
                            agent: t.agent_id.clone(),
                            state: t.state.as_str().into(),
                            created: time(Some(t.created_at)),
                            pulling: time(t.pulling_at),
                            running: time(t.running_at),
                            finished: time(t.finished_at),
                            duration: duration(t.running_at.or(t.pulling_at).or(Some(t.created_at)), t.finished_at),
                            exit_code: t.exit_code.map(|c| c.to_string()).unwrap_or_default(),
                            reason: t.reason.clone(),
                            message: t.message.clone(),
                        })
                        .collect(),
                })
                .collect(),
            artifacts: artifacts
                .iter()
                .map(|a| {
                    let action = selector(a.action_index);
                    ArtifactView {
                        href: format!(
                            "/workflows/{}/artifact?action={}&path={}",
                            path_segment(&wf.id),
                            path_segment(&action),
                            path_segment(&a.path)
                        ),
                        action,
                        path: a.path.clone(),
                        size: a.size,
                        sha256: a.sha256.clone(),
                    }
                })
                .collect(),
        }
    }
}

fn attempt_rows(action: &ActionView) -> Markup {
    html! {
        @for t in &action.attempts {
            tr {
                td { (t.number) } td { (t.agent) }
                td { span class=(state_class(&t.state)) { (t.state) } }
                td { (t.created) } td { (t.pulling) } td { (t.running) } td { (t.finished) }
                td { (t.duration) } td { (t.exit_code) } td { (t.reason) } td { (t.message) }
            }
        }
    }
}

pub fn workflow(session: &Session, wf: &Workflow, artifacts: &[Artifact]) -> Markup {
    let view = WorkflowView::new(wf, artifacts);
    let stream = format!("/workflows/{}/stream", path_segment(&wf.id));
    layout(
        Some(session),
        &format!("Workflow {}", wf.id),
        Some(&stream),
        html! {
            dl.facts {
                dt { "Template" } dd { a href={ "/templates/" (path_segment(&wf.template)) "?workflow=" (path_segment(&wf.id)) } { (wf.template) } }
                dt { "Machine" } dd { (wf.hardware) }
                dt { "State" } dd { span id="wf-state" class=(state_class(&view.state)) { (view.state) } }
                dt { "Reason" } dd id="wf-reason" { (view.reason) }
                dt { "Created" } dd { (time(Some(wf.created_at))) }
                dt { "Started" } dd id="wf-started" { (view.started) }
                dt { "Finished" } dd id="wf-finished" { (view.finished) }
                dt { "Duration" } dd id="wf-duration" { (view.duration) }
            }
            @if can_write(&session.actor) {
                form id="retry-form" method="post" action={ "/workflows/" (path_segment(&wf.id)) "/retry" } hidden[!view.retryable] {
                    input type="hidden" name="csrf" value=(session.csrf);
                    button type="submit" id="retry" { "Retry from the failed action" }
                }
            }
            h2 { "Timeline" }
            @for (action, a) in view.actions.iter().zip(&wf.actions) {
                section.action data-action=(action.index) {
                    h3 {
                        span.action-name { (a.spec.task) " / " (a.spec.name) }
                        " " span.action-state class=(state_class(&action.state)) { (action.state) }
                    }
                    p.spec {
                        @if !a.spec.builtin.is_empty() { "built-in " code { (a.spec.builtin) } }
                        @else if !a.spec.external.is_empty() { "external " code { (a.spec.external) } }
                        @else { "image " code { (a.spec.image) } }
                        " · timeout " (a.spec.timeout_seconds) "s · retries " (a.spec.retries)
                        @if a.spec.retry_backoff_seconds > 0 { " (backoff " (a.spec.retry_backoff_seconds) "s)" }
                        " · " span.attempts-label { (action.attempts_label) }
                    }
                    @if !a.spec.on_failure.is_empty() || !a.spec.on_timeout.is_empty() {
                        p.handlers {
                            @if !a.spec.on_failure.is_empty() { "on failure: " code { (a.spec.on_failure.join(" ")) } " " }
                            @if !a.spec.on_timeout.is_empty() { "on timeout: " code { (a.spec.on_timeout.join(" ")) } }
                        }
                    }
                    div.progress hidden {
                        progress max="1" value="0" {}
                        " " span.progress-label {}
                    }
                    table.attempts {
                        thead { tr {
                            th { "#" } th { "Agent" } th { "State" } th { "Created" } th { "Pulling" } th { "Running" }
                            th { "Finished" } th { "Duration" } th { "Exit" } th { "Reason" } th { "Message" }
                        } }
                        tbody { (attempt_rows(action)) }
                    }
                }
            }
            h2 { "Artifacts" }
            ul id="artifacts" {
                @for a in &view.artifacts {
                    li { a.artifact href=(a.href) download { (a.action) ": " (a.path) } " (" (a.size) " bytes, sha256 " code { (a.sha256) } ")" }
                }
            }
            h2 { "Logs" }
            pre id="log" { }
        },
    )
}

pub fn templates(session: &Session, list: &[StoredTemplate]) -> Markup {
    layout(
        Some(session),
        "Templates",
        None,
        html! {
            table id="templates" {
                thead { tr { th { "Template" } th { "Updated" } th { "Lines" } } }
                tbody {
                    @for t in list {
                        tr {
                            td { a href={ "/templates/" (path_segment(&t.doc.name)) } { (t.doc.name) } }
                            td { (time(Some(t.updated_at))) }
                            td { (t.doc.data.lines().count()) }
                        }
                    }
                }
            }
        },
    )
}

/// `plan`: the workflow as dispatched, and per action the image its
/// template named where `--image-rewrite` changed it ("" elsewhere).
pub fn template(
    session: &Session,
    t: &StoredTemplate,
    choices: &[WorkflowSummary],
    plan: Option<&(Workflow, Vec<String>)>,
) -> Markup {
    let template_images = plan.map(|(_, images)| images.as_slice()).unwrap_or_default();
    let plan = plan.map(|(wf, _)| wf);
    layout(
        Some(session),
        &format!("Template {}", t.doc.name),
        None,
        html! {
            pre id="template-text" { (t.doc.data) }
            h2 { "Rendered plan" }
            form method="get" action={ "/templates/" (path_segment(&t.doc.name)) } {
                label { "Workflow " select name="workflow" {
                    @for wf in choices {
                        option value=(wf.id) selected[plan.is_some_and(|p| p.id == wf.id)] { (wf.id) " (" (wf.hardware) ")" }
                    }
                } }
                button type="submit" { "Show plan" }
            }
            @if let Some(p) = plan {
                p { "Workflow " (workflow_link(&p.id)) " on " (p.hardware) ", as " code { "kiln plan --workflow" } " shows it." }
                table id="plan" {
                    thead { tr {
                        th { "#" } th { "Task" } th { "Action" } th { "Worker" } th { "Image" } th { "Command" }
                        th { "Environment" } th { "Timeout" } th { "Retries" } th { "On failure" } th { "On timeout" }
                    } }
                    tbody {
                        @for a in &p.actions {
                            tr {
                                td { (a.index) } td { (a.spec.task) } td { (a.spec.name) } td { (a.spec.worker) }
                                td {
                                    code { @if a.spec.builtin.is_empty() { (a.spec.image) } @else { "builtin " (a.spec.builtin) } }
                                    @if let Some(written) = template_images.get(a.index as usize).filter(|w| !w.is_empty()) {
                                        br; "template: " code { (written) }
                                    }
                                }
                                td { code { (a.spec.command.join(" ")) } }
                                td { @for (k, v) in &a.spec.environment { code { (k) "=" (v) } br; } }
                                td { (a.spec.timeout_seconds) "s" } td { (a.spec.retries) }
                                td { code { (a.spec.on_failure.join(" ")) } } td { code { (a.spec.on_timeout.join(" ")) } }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// An audit event as the events page and its stream show it.
#[derive(Debug, Clone, Serialize)]
pub struct EventView {
    pub time: String,
    pub kind: String,
    pub actor: String,
    pub peer: String,
    pub action: String,
    pub object: String,
    pub outcome: String,
    pub reason: String,
    pub count: u64,
}

impl From<&Event> for EventView {
    fn from(e: &Event) -> Self {
        Self {
            time: time(Some(e.time)),
            kind: e.kind.as_str().into(),
            actor: e.actor.clone(),
            peer: e.peer.clone(),
            action: e.action.clone(),
            object: e.object.clone(),
            outcome: e.outcome.as_str().into(),
            reason: e.reason.clone(),
            count: e.count,
        }
    }
}

pub fn events(session: &Session, list: &[Event]) -> Markup {
    let stream = format!("/events/stream?after={}", list.iter().map(|e| e.cursor).max().unwrap_or(0));
    layout(
        Some(session),
        "Events",
        Some(&stream),
        html! {
            p.summary { "The audit trail, newest first: operator writes and refused credentials." }
            table id="events" {
                thead { tr {
                    th { "Time" } th { "Kind" } th { "Actor" } th { "Peer" } th { "Action" } th { "Object" }
                    th { "Outcome" } th { "Reason" } th { "Count" }
                } }
                tbody {
                    @for e in list.iter().rev().map(EventView::from) {
                        tr {
                            td { (e.time) } td { (e.kind) } td { (e.actor) } td { (e.peer) } td { (e.action) }
                            td { (e.object) } td { (e.outcome) } td { (e.reason) } td { (e.count) }
                        }
                    }
                }
            }
        },
    )
}
