//! Stores the refused credentials noted since the last run, once a second,
//! in one transaction (see [`crate::app::audit::RefusalLog`]): the refusing
//! calls themselves never wait for the store.

use std::sync::Arc;
use std::time::Duration;

use crate::app::App;

/// How often noted refusals are stored: the delay before one shows in
/// `kiln events`.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

pub async fn run(app: Arc<App>) {
    let mut tick = tokio::time::interval(FLUSH_INTERVAL);
    loop {
        tick.tick().await;
        app.flush_refusals().await;
    }
}
