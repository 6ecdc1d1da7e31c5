//! Credentials changed through another server (PostgreSQL's notifications):
//! forget the agent tokens verified here, so a revocation anywhere takes
//! effect everywhere at once rather than after the cache's TTL.

use std::sync::Arc;

use crate::app::App;

pub async fn run(app: Arc<App>) {
    let mut credentials = app.events.credentials_subscription();
    while credentials.changed().await.is_ok() {
        app.verified.invalidate();
    }
}
