//! Keeps the audit trail bounded: events older than `--event-retention`
//! (default 30 days) and all but the newest `--event-max-rows` (default
//! 100,000) are deleted, once a minute. Several replicas on one store may
//! all prune: deleting what another already deleted does nothing.

use std::sync::Arc;
use std::time::Duration;

use crate::app::App;
use crate::app::audit::EventRetention;
use crate::model::{Millis, now_millis};
use crate::store::StoreError;

/// How often the trail is pruned: between two runs it may exceed its bounds
/// by a minute's worth of events.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

pub async fn run(app: Arc<App>) {
    let mut tick = tokio::time::interval(PRUNE_INTERVAL);
    loop {
        tick.tick().await;
        match prune(&app, now_millis()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(events = n, "audit trail pruned"),
            Err(e) => tracing::error!(error = %e.detailed(), "pruning the audit trail failed"),
        }
    }
}

/// Deletes what `app`'s retention no longer keeps at `now`; returns how many.
pub async fn prune(app: &App, now: Millis) -> Result<u64, StoreError> {
    let EventRetention { max_age, max_rows } = app.event_retention;
    let before = now.saturating_sub(Millis::try_from(max_age.as_millis()).unwrap_or(Millis::MAX));
    app.store.prune_events(before, max_rows).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::audit::EventFilter;
    use crate::app::{AppParts, OpContext};
    use crate::store::{Event, EventKind, EventOutcome};

    fn app(dir: &std::path::Path, retention: EventRetention) -> App {
        App::new(
            Arc::new(crate::store::sqlite::SqliteStore::open_in_memory().unwrap()),
            AppParts {
                events: Arc::default(),
                image_policy: Default::default(),
                image_rewrites: Default::default(),
                artifacts: crate::artifacts::ArtifactFiles::new(dir, 1 << 20),
                token_key: crate::action_api::TokenKey::load_or_create(dir).unwrap(),
                lease: Duration::from_secs(30),
                signing_ca: None,
                netboot: Default::default(),
                event_retention: retention,
            },
        )
    }

    fn event(time: Millis) -> Event {
        Event {
            cursor: 0,
            time,
            kind: EventKind::Write,
            actor: "operator".into(),
            peer: String::new(),
            action: "apply".into(),
            object: format!("template t{time}"),
            outcome: EventOutcome::Ok,
            reason: String::new(),
            count: 1,
        }
    }

    async fn times(app: &App) -> Vec<Millis> {
        let all = EventFilter { limit: 1000, ..Default::default() };
        app.list_events(&OpContext::operator(), &all).await.unwrap().iter().map(|e| e.time).collect()
    }

    #[tokio::test]
    async fn events_past_their_age_go() {
        let dir = tempfile::tempdir().unwrap();
        let day = 24 * 3600 * 1000;
        let app = app(dir.path(), EventRetention { max_age: Duration::from_secs(24 * 3600), max_rows: 100 });
        let now = 10 * day;
        app.store
            .record_events(vec![event(now - 3 * day), event(now - day - 1), event(now - day), event(now)])
            .await
            .unwrap();
        assert_eq!(prune(&app, now).await.unwrap(), 2);
        assert_eq!(times(&app).await, vec![now - day, now]);
        assert_eq!(prune(&app, now).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn only_the_newest_rows_stay() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(dir.path(), EventRetention { max_age: Duration::from_secs(3600), max_rows: 3 });
        let now = now_millis();
        app.store.record_events((0..5).map(|i| event(now - 5 + i)).collect()).await.unwrap();
        assert_eq!(prune(&app, now).await.unwrap(), 2);
        assert_eq!(times(&app).await, vec![now - 3, now - 2, now - 1]);
    }

    #[test]
    fn the_defaults_are_thirty_days_and_a_hundred_thousand_rows() {
        let d = EventRetention::default();
        assert_eq!((d.max_age, d.max_rows), (Duration::from_secs(30 * 86_400), 100_000));
    }
}
