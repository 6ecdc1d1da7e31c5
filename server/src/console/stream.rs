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
use crate::app::console::{FeedBatch, log_progress};
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

/// The JSON of the feed's latest batch, made once for every stream: 200
/// browsers cost one serialisation, not 200.
#[derive(Default)]
pub struct BatchJson {
    last: std::sync::Mutex<Option<(Arc<FeedBatch>, Arc<str>)>>,
}

impl BatchJson {
    fn of(&self, batch: &Arc<FeedBatch>) -> Arc<str> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((b, json)) = &*last
            && Arc::ptr_eq(b, batch)
        {
            return json.clone();
        }
        let changed: Vec<RowView<'_>> = batch.changed.iter().map(row_view).collect();
        let json: Arc<str> = serde_json::json!({
            "changed": changed,
            "deleted": batch.deleted,
            "resync": batch.resync,
        })
        .to_string()
        .into();
        // Holding the batch keeps its address from being reused.
        *last = Some((batch.clone(), json.clone()));
        json
    }
}

/// Every workflow change (list pages: workflows, machines), as it commits,
/// in `workflows` messages: the feed's batches (see
/// [`crate::app::console::FEED_INTERVAL`]).
pub async fn workflow_list(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    use tokio::sync::broadcast::error::RecvError;
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
        loop {
            let data = tokio::select! {
                batch = feed.recv() => match batch {
                    Ok(batch) => c.batch_json.of(&batch),
                    Err(RecvError::Lagged(_)) => r#"{"changed":[],"deleted":[],"resync":true}"#.into(),
                    Err(RecvError::Closed) => return,
                },
                () = tx.closed() => return,
            };
            if tx.send(Event::default().event("workflows").data(&*data)).await.is_err() {
                return;
            }
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
                    Some(Ok(watched)) => {
                        let wf = watched.workflow;
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
