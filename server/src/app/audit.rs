//! The audit trail: every operator write and every refused credential,
//! stored as an [`Event`] (who, what, on which object, the outcome) and
//! listed or followed by operators (`kiln events [-f]`). Never a secret:
//! events name credentials (the operator, an agent id, an action's attempt),
//! never their tokens or hashes.
//!
//! Operator writes are stored before the call returns ([`App::audit`]): they
//! are rare, and an operator's action must not go unrecorded. Refused
//! credentials arrive on hot paths (a misconfigured fleet retrying every
//! second, or someone guessing tokens), so they go through [`RefusalLog`]:
//! a mutex-guarded map costs the refusing call nothing measurable, the same
//! refusal (same claimed actor, action and reason) is stored at most once per
//! [`REFUSAL_WINDOW`] with the repeats counted in a follow-up event, and a
//! background task ([`super::background::refusals`]) stores what gathered
//! once a second, in one transaction.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{App, AppError, OpContext};
use crate::metrics::{RefusalCounter, RefusalLabels};
use crate::model::{Millis, now_millis};
use crate::store::{Event, EventKind, EventOutcome, EventQuery};

/// Identical refusals within this window are stored once, then counted.
pub const REFUSAL_WINDOW: Duration = Duration::from_secs(10);

/// Distinct refusals (actor, action, reason) tracked at once; beyond this
/// (someone cycling through made-up agent ids), refusals are only counted,
/// in one event per flush.
pub const MAX_TRACKED_REFUSALS: usize = 10_000;

/// Events of `kiln events` without `--limit`.
pub const DEFAULT_EVENT_LIMIT: u32 = 100;
/// The most events one list returns.
pub const MAX_EVENT_LIMIT: u32 = 10_000;

/// How long events are kept: the older and the surplus are pruned by
/// [`super::background::event_retention`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventRetention {
    pub max_age: Duration,
    pub max_rows: u64,
}

/// 30 days, and at most 100,000 events.
impl Default for EventRetention {
    fn default() -> Self {
        Self { max_age: Duration::from_secs(30 * 24 * 3600), max_rows: 100_000 }
    }
}

/// Which events an operator asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only events at or after this time (0: any).
    pub since: Millis,
    pub kind: Option<EventKind>,
    /// The newest this many (0: [`DEFAULT_EVENT_LIMIT`]).
    pub limit: u32,
}

/// Refused credentials waiting to be stored, rate-limited, and counted
/// (every one) for `/metrics`.
#[derive(Default)]
pub struct RefusalLog {
    state: Mutex<RefusalState>,
    counter: RefusalCounter,
}

#[derive(Default)]
struct RefusalState {
    /// First refusals of their window, to store at the next flush.
    pending: Vec<Event>,
    /// By (actor, action, reason): the window's first event and how many
    /// times it repeated since.
    windows: HashMap<(String, String, String), Window>,
    /// Refusals not tracked: [`MAX_TRACKED_REFUSALS`] was reached.
    untracked: u64,
}

struct Window {
    opened: Instant,
    first: Event,
    repeats: u64,
}

impl RefusalLog {
    /// A log that also counts each refusal into `counter` (by `object`, the
    /// front door).
    pub fn new(counter: RefusalCounter) -> Self {
        Self { state: Mutex::default(), counter }
    }

    /// Notes a refused credential. `actor` is what the caller claimed to be
    /// (`agent ID`, `operator`, an action's attempt), never its secret;
    /// `object` is the front door that refused it.
    pub fn refused(&self, actor: String, peer: Option<SocketAddr>, action: &str, object: &str, reason: &str) {
        self.counter.get_or_create(&RefusalLabels { front_door: object.to_string() }).inc();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let key = (actor, action.to_string(), reason.to_string());
        if let Some(window) = state.windows.get_mut(&key) {
            window.repeats += 1;
            return;
        }
        if state.windows.len() >= MAX_TRACKED_REFUSALS {
            state.untracked += 1;
            return;
        }
        let event = Event {
            cursor: 0,
            time: now_millis(),
            kind: EventKind::Security,
            actor: key.0.clone(),
            peer: peer.map(|p| p.to_string()).unwrap_or_default(),
            action: key.1.clone(),
            object: object.to_string(),
            outcome: EventOutcome::Refused,
            reason: key.2.clone(),
            count: 1,
        };
        state.pending.push(event.clone());
        state.windows.insert(key, Window { opened: Instant::now(), first: event, repeats: 0 });
    }

    /// What is due for storing at `now`: the first refusals noted since the
    /// last call, one event per closed window that saw repeats (their
    /// count), and the untracked count.
    fn take(&self, now: Instant) -> Vec<Event> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut due = std::mem::take(&mut state.pending);
        let time = now_millis();
        state.windows.retain(|_, w| {
            if now.duration_since(w.opened) < REFUSAL_WINDOW {
                return true;
            }
            if w.repeats > 0 {
                due.push(Event {
                    time,
                    reason: format!("{} (repeated within {}s)", w.first.reason, REFUSAL_WINDOW.as_secs()),
                    count: w.repeats,
                    ..w.first.clone()
                });
            }
            false
        });
        if state.untracked > 0 {
            due.push(Event {
                cursor: 0,
                time,
                kind: EventKind::Security,
                actor: "(too many distinct callers)".into(),
                peer: String::new(),
                action: "authenticate".into(),
                object: String::new(),
                outcome: EventOutcome::Refused,
                reason: format!("more than {MAX_TRACKED_REFUSALS} distinct refusals at once: counted only"),
                count: std::mem::take(&mut state.untracked),
            });
        }
        due
    }
}

impl App {
    /// Records an operator's write: who, what, on which object, and how it
    /// ended, in the server log (target `kiln::audit`) and in the audit
    /// trail. Never given a secret. A failure to store it is logged; the
    /// write itself has happened and stands.
    pub(crate) async fn audit(&self, opctx: &OpContext, action: &str, object: &str, outcome: &Result<(), &AppError>) {
        let (outcome, reason) = match outcome {
            Ok(()) => {
                tracing::info!(target: "kiln::audit", actor = %opctx.actor, action, object, "done");
                (EventOutcome::Ok, String::new())
            }
            Err(e) => {
                tracing::warn!(target: "kiln::audit", actor = %opctx.actor, action, object, error = %e, "refused");
                (EventOutcome::Refused, e.to_string())
            }
        };
        let event = Event {
            cursor: 0,
            time: now_millis(),
            kind: EventKind::Write,
            actor: opctx.actor.to_string(),
            peer: opctx.peer.map(|p| p.to_string()).unwrap_or_default(),
            action: action.to_string(),
            object: object.to_string(),
            outcome,
            reason,
            count: 1,
        };
        self.record_events(vec![event]).await;
    }

    /// Lets only the (full) operator change things ([`OpContext::require_operator_write`]);
    /// a refused attempt (the read-only operator trying to apply, retry,
    /// ...) is itself an audit event, named as the write would have been.
    pub(crate) async fn authorize_write(&self, opctx: &OpContext, action: &str, object: &str) -> Result<(), AppError> {
        let allowed = opctx.require_operator_write();
        if let Err(e) = &allowed {
            self.audit(opctx, action, object, &Err(e)).await;
        }
        allowed
    }

    pub(crate) async fn record_events(&self, events: Vec<Event>) {
        let n = events.len();
        match self.store.record_events(events).await {
            Ok(()) => self.events.audit_recorded(),
            Err(e) => {
                tracing::error!(target: "kiln::audit", error = %e.detailed(), events = n, "audit events not stored")
            }
        }
    }

    /// The log refused credentials are noted in (shared with the agent and
    /// operator authentication layers).
    pub fn refusal_log(&self) -> &std::sync::Arc<RefusalLog> {
        &self.refusals
    }

    /// Stores the refusals noted since the last flush (see
    /// [`RefusalLog`]); run every second by the background task.
    pub(crate) async fn flush_refusals(&self) {
        let due = self.refusals.take(Instant::now());
        if !due.is_empty() {
            self.record_events(due).await;
        }
    }

    /// The newest `filter.limit` events matching `filter`, oldest first.
    pub async fn list_events(&self, opctx: &OpContext, filter: &EventFilter) -> Result<Vec<Event>, AppError> {
        opctx.require_operator_read()?;
        Ok(self.store.list_events(first_page(filter)).await?)
    }

    /// What [`App::list_events`] returns, then every matching event as it
    /// is stored, until the caller hangs up.
    pub async fn follow_events(
        &self,
        opctx: &OpContext,
        filter: &EventFilter,
    ) -> Result<ReceiverStream<Result<Event, AppError>>, AppError> {
        opctx.require_operator_read()?;
        // Subscribe before the first read: no event between them is lost.
        let mut recorded = self.events.audit_subscription();
        let first = self.store.list_events(first_page(filter)).await?;
        let (tx, rx) = mpsc::channel(64);
        let store = self.store.clone();
        let recheck = store.recheck_interval().unwrap_or(Duration::MAX);
        let (since, kind) = (filter.since, filter.kind);
        tokio::spawn(async move {
            let mut cursor = 0;
            let mut page = first;
            loop {
                let full = page.len() as u32 == MAX_EVENT_LIMIT;
                for event in page {
                    cursor = event.cursor;
                    if tx.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
                if !full {
                    tokio::select! {
                        changed = recorded.changed() => if changed.is_err() { return },
                        // Notifications from other servers can be lost.
                        () = tokio::time::sleep(recheck) => {}
                        () = tx.closed() => return,
                    }
                }
                // After the last one sent, with the same filter: when the first
                // page was empty, that is every matching event since.
                let next = EventQuery { after: cursor, since, kind, limit: MAX_EVENT_LIMIT, newest: false };
                page = match store.list_events(next).await {
                    Ok(page) => page,
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                };
            }
        });
        Ok(ReceiverStream::new(rx))
    }
}

fn first_page(filter: &EventFilter) -> EventQuery {
    let limit = if filter.limit == 0 { DEFAULT_EVENT_LIMIT } else { filter.limit.min(MAX_EVENT_LIMIT) };
    EventQuery { after: 0, since: filter.since, kind: filter.kind, limit, newest: true }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_refusals_are_stored_once_then_counted() {
        let log = RefusalLog::default();
        let start = Instant::now();
        for _ in 0..5 {
            log.refused("agent a".into(), None, "authenticate", "agent service", "wrong token");
        }
        log.refused("agent b".into(), None, "authenticate", "agent service", "wrong token");
        let first = log.take(start);
        assert_eq!(first.len(), 2, "one event per distinct refusal: {first:?}");
        assert!(first.iter().all(|e| e.count == 1 && e.outcome == EventOutcome::Refused));
        assert!(log.take(start).is_empty(), "nothing new within the window");
        // The window closes: the repeats of agent a are one event.
        let later = log.take(Instant::now() + REFUSAL_WINDOW);
        assert_eq!(later.len(), 1, "{later:?}");
        assert_eq!((later[0].actor.as_str(), later[0].count), ("agent a", 4));
        assert!(later[0].reason.starts_with("wrong token"), "{}", later[0].reason);
        // A new window starts with a stored event again.
        log.refused("agent a".into(), None, "authenticate", "agent service", "wrong token");
        assert_eq!(log.take(Instant::now()).len(), 1);
    }

    #[test]
    fn refusals_beyond_the_tracked_limit_are_counted() {
        let log = RefusalLog::default();
        for i in 0..MAX_TRACKED_REFUSALS + 3 {
            log.refused(format!("agent {i}"), None, "authenticate", "agent service", "no hardware has this agent id");
        }
        let due = log.take(Instant::now());
        assert_eq!(due.len(), MAX_TRACKED_REFUSALS + 1);
        let summary = due.last().unwrap();
        assert_eq!(summary.count, 3);
        assert!(summary.reason.contains("counted only"), "{}", summary.reason);
    }

    #[test]
    fn filters_get_a_bounded_limit() {
        assert_eq!(first_page(&EventFilter::default()).limit, DEFAULT_EVENT_LIMIT);
        assert_eq!(first_page(&EventFilter { limit: u32::MAX, ..Default::default() }).limit, MAX_EVENT_LIMIT);
        assert!(first_page(&EventFilter::default()).newest);
    }
}
