//! The lease of the attempt this agent runs (proto `AgentService.Heartbeat`).
//!
//! While an attempt is held, [`Lease::keep_alive`] renews its lease on the
//! server. It returns only when the server says the attempt is over although
//! this agent never finished it (the lease ran out during a network outage,
//! an operator retried the workflow, ...): the agent must then stop working
//! on it, because the server has given the action to a new attempt or ended
//! the workflow, and a second copy of a disk-writing action must not go on.
//!
//! The attempt is released just before its terminal report is sent, so the
//! server's "ended" answer that follows a normal finish never cancels
//! anything (a kexec step in particular still fires after its SUCCESS).

use std::sync::Mutex;
use std::time::Duration;

use crate::client::ServerClient;

/// Used until the server's first answer says otherwise (a third of its
/// default 30 s lease).
const DEFAULT_RENEW: Duration = Duration::from_secs(10);
/// A floor, so a misconfigured server cannot make the agent spin.
const MIN_RENEW: Duration = Duration::from_millis(100);

#[derive(Default)]
pub struct Lease {
    held: Mutex<Option<String>>,
}

impl Lease {
    pub fn hold(&self, attempt_id: &str) {
        *self.lock() = Some(attempt_id.to_string());
    }

    /// No more heartbeats for this attempt: it is being finished.
    pub fn release(&self) {
        *self.lock() = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn holds(&self, attempt_id: &str) -> bool {
        self.lock().as_deref() == Some(attempt_id)
    }

    /// Renews `attempt_id`'s lease for as long as it is held; completes only
    /// when the server ended the attempt while it was still held. Failed
    /// heartbeats are retried at the same pace: the lease is longer than
    /// two intervals, so a short outage costs nothing.
    pub async fn keep_alive(&self, client: &ServerClient, attempt_id: &str) {
        let mut interval = DEFAULT_RENEW;
        loop {
            if self.holds(attempt_id) {
                match client.heartbeat(vec![attempt_id.to_string()], interval).await {
                    Ok(answer) => {
                        if answer.renew_interval_ms > 0 {
                            interval = Duration::from_millis(answer.renew_interval_ms.into()).max(MIN_RENEW);
                        }
                        if answer.ended_attempt_ids.iter().any(|id| id == attempt_id) && self.holds(attempt_id) {
                            return;
                        }
                    }
                    Err(status) => {
                        tracing::warn!(code = ?status.code(), error = %status.message(), "heartbeat failed")
                    }
                }
            }
            tokio::time::sleep(interval).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_held_attempt_counts() {
        let lease = Lease::default();
        assert!(!lease.holds("a"));
        lease.hold("a");
        assert!(lease.holds("a") && !lease.holds("b"));
        lease.release();
        assert!(!lease.holds("a"));
    }
}
