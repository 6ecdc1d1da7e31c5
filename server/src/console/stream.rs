//! Live updates by server-sent events, fed by the same notifications as
//! `kiln watch`, `kiln logs -f` and `kiln events -f`: a message leaves the
//! moment a change commits. Messages are JSON; the script applies them with
//! `textContent`, never as markup.
//!
//! A stream starts with `hello` (the script then drops what an earlier
//! connection showed: logs are sent again from the start) and, when there
//! is nothing more to say (a finished workflow), ends with `end` (the
//! script closes it instead of reconnecting).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::Console;
use super::pages::{EventView, WorkflowView, time};
use crate::app::console::{FeedUpdate, log_progress};
use crate::app::{AppError, OpContext};

fn json_event(name: &str, value: &impl Serialize) -> Event {
    Event::default().event(name).data(serde_json::to_string(value).unwrap_or_else(|_| "null".into()))
}

fn sse(rx: mpsc::Receiver<Event>) -> Response {
    let stream = ReceiverStream::new(rx).map(Ok::<_, Infallible>);
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response()
}

fn not_logged_in() -> Response {
    (StatusCode::UNAUTHORIZED, "not logged in\n").into_response()
}

fn failed(e: AppError) -> Response {
    e.log_internal();
    let status = match e {
        AppError::NotFound(_) => StatusCode::NOT_FOUND,
        AppError::PermissionDenied(_) => StatusCode::FORBIDDEN,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, format!("{e}\n")).into_response()
}

/// One row of a list, as the list pages show it.
#[derive(Serialize)]
struct RowView<'a> {
    id: &'a str,
    template: &'a str,
    hardware: &'a str,
    state: &'a str,
    reason: &'a str,
    finished: String,
    duration: String,
}

/// Changes sent in one message at most.
const MAX_BATCH: usize = 1024;

/// A list stream sends at most one message per this interval: the first
/// change after a quiet spell goes at once, the changes that follow it
/// within the interval go together at its end, each workflow once (its
/// latest state). A busy server then costs each browser ten messages a
/// second, not one per transition.
const LIST_INTERVAL: Duration = Duration::from_millis(100);

fn row_view(wf: &crate::store::WorkflowSummary) -> RowView<'_> {
    RowView {
        id: &wf.id,
        template: &wf.template,
        hardware: &wf.hardware,
        state: wf.state.as_str(),
        reason: &wf.reason,
        finished: time(wf.finished_at),
        duration: super::pages::duration(wf.started_at, wf.finished_at),
    }
}

/// Every workflow change (list pages: workflows, machines), as it commits,
/// in `workflows` messages (see [`LIST_INTERVAL`]).
pub async fn workflow_list(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    use tokio::sync::broadcast::error::{RecvError, TryRecvError};
    let Some(s) = c.sessions.of_request(&headers) else { return not_logged_in() };
    let mut feed = match c.app.follow_workflow_list(&s.opctx()) {
        Ok(feed) => feed,
        Err(e) => return failed(e),
    };
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        if tx.send(Event::default().event("hello").data("{}")).await.is_err() {
            return;
        }
        let mut next_send = tokio::time::Instant::now();
        loop {
            let mut batch = tokio::select! {
                update = feed.recv() => match update {
                    Ok(update) => vec![update],
                    Err(RecvError::Lagged(_)) => vec![Arc::new(FeedUpdate::Resync)],
                    Err(RecvError::Closed) => return,
                },
                () = tx.closed() => return,
            };
            tokio::time::sleep_until(next_send).await;
            while batch.len() < MAX_BATCH {
                match feed.try_recv() {
                    Ok(update) => batch.push(update),
                    Err(TryRecvError::Lagged(_)) => batch.push(Arc::new(FeedUpdate::Resync)),
                    Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                }
            }
            // Each workflow once, as it is last.
            let mut latest: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
            let mut changed = Vec::new();
            let mut deleted = Vec::new();
            let mut resync = false;
            for update in &batch {
                match &**update {
                    FeedUpdate::Changed(wf) => match latest.get(wf.id.as_str()) {
                        Some(&i) => changed[i] = row_view(wf),
                        None => {
                            latest.insert(&wf.id, changed.len());
                            changed.push(row_view(wf));
                        }
                    },
                    FeedUpdate::Deleted(id) => deleted.push(id.as_str()),
                    FeedUpdate::Resync => resync = true,
                }
            }
            let message = json_event(
                "workflows",
                &serde_json::json!({
                    "changed": changed,
                    "deleted": deleted,
                    "resync": resync,
                }),
            );
            if tx.send(message).await.is_err() {
                return;
            }
            next_send = tokio::time::Instant::now() + LIST_INTERVAL;
        }
    });
    sse(rx)
}

#[derive(Serialize)]
struct LogView<'a> {
    action: u32,
    name: &'a str,
    stream: i32,
    text: &'a str,
}

#[derive(Serialize)]
struct ProgressView {
    action: u32,
    done: u64,
    total: Option<u64>,
}

/// One workflow: its state after every change, its log lines (progress
/// lines as progress) as they are stored.
pub async fn workflow(State(c): State<Arc<Console>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let Some(s) = c.sessions.of_request(&headers) else { return not_logged_in() };
    let opctx: OpContext = s.opctx();
    let mut states = match c.app.watch_workflow(&opctx, &id).await {
        Ok(stream) => stream,
        Err(e) => return failed(e),
    };
    let mut logs = match c.app.read_logs(&opctx, &id, "", true).await {
        Ok(stream) => stream,
        Err(e) => return failed(e),
    };
    let (tx, rx) = mpsc::channel(256);
    let app = c.app.clone();
    tokio::spawn(async move {
        if tx.send(Event::default().event("hello").data("{}")).await.is_err() {
            return;
        }
        let (mut states_open, mut logs_open) = (true, true);
        while states_open || logs_open {
            let event = tokio::select! {
                next = states.next(), if states_open => match next {
                    Some(Ok(wf)) => {
                        let artifacts = app.list_artifacts(&opctx, &wf.id).await.unwrap_or_default();
                        json_event("workflow", &WorkflowView::new(&wf, &artifacts))
                    }
                    Some(Err(e)) => { e.log_internal(); states_open = false; continue }
                    None => { states_open = false; continue }
                },
                next = logs.next(), if logs_open => match next {
                    Some(Ok(record)) => {
                        let line = &record.line;
                        match log_progress(&line.text) {
                            Some((done, total)) => json_event("progress", &ProgressView { action: line.action_index, done, total }),
                            None => json_event("log", &LogView {
                                action: line.action_index,
                                name: &record.action_name,
                                stream: line.stream,
                                text: &line.text,
                            }),
                        }
                    }
                    Some(Err(e)) => { e.log_internal(); logs_open = false; continue }
                    None => { logs_open = false; continue }
                },
                () = tx.closed() => return,
            };
            if tx.send(event).await.is_err() {
                return;
            }
        }
        // The workflow ended: artifacts may have arrived with its last
        // report; send the final picture once more.
        if let Ok(wf) = app.get_workflow(&opctx, &id).await {
            let artifacts = app.list_artifacts(&opctx, &id).await.unwrap_or_default();
            let _ = tx.send(json_event("workflow", &WorkflowView::new(&wf.workflow, &artifacts))).await;
        }
        let _ = tx.send(Event::default().event("end").data("{}")).await;
    });
    sse(rx)
}

#[derive(Deserialize)]
pub struct EventsParams {
    #[serde(default)]
    after: i64,
}

/// Audit events stored after the page's newest.
pub async fn events(State(c): State<Arc<Console>>, headers: HeaderMap, Query(p): Query<EventsParams>) -> Response {
    let Some(s) = c.sessions.of_request(&headers) else { return not_logged_in() };
    let filter = crate::app::audit::EventFilter { limit: 1, ..Default::default() };
    let mut events = match c.app.follow_events(&s.opctx(), &filter).await {
        Ok(stream) => stream,
        Err(e) => return failed(e),
    };
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        if tx.send(Event::default().event("hello").data("{}")).await.is_err() {
            return;
        }
        loop {
            tokio::select! {
                next = events.next() => match next {
                    Some(Ok(e)) if e.cursor > p.after => {
                        if tx.send(json_event("event", &EventView::from(&e))).await.is_err() {
                            return;
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => { e.log_internal(); return }
                    None => return,
                },
                () = tx.closed() => return,
            }
        }
    });
    sse(rx)
}
