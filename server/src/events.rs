//! In-process notifications that turn polling into waiting: agents blocked in
//! `NextAction`, `kiln watch`, `kiln logs -f` and `kiln events -f` sleep here
//! until something they care about was committed to the store.
//!
//! Notifications carry no data. Whoever wakes re-reads the store, so a
//! missed or coalesced wake-up can delay nothing beyond the next one, and the
//! store stays the only source of truth.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::{broadcast, watch};

pub struct Events {
    agents: Mutex<HashMap<String, watch::Sender<u64>>>,
    workflows: broadcast::Sender<String>,
    logs: broadcast::Sender<String>,
    /// Bumped when agent credentials changed through another server: its
    /// subscriber forgets the tokens this server verified.
    credentials: watch::Sender<u64>,
    /// Bumped when events were added to the audit trail (`kiln events -f`).
    audit: watch::Sender<u64>,
}

impl Default for Events {
    fn default() -> Self {
        Self {
            agents: Mutex::new(HashMap::new()),
            workflows: broadcast::channel(1024).0,
            logs: broadcast::channel(1024).0,
            credentials: watch::channel(0).0,
            audit: watch::channel(0).0,
        }
    }
}

impl Events {
    /// A receiver that changes whenever [`Events::wake_agent`] is called for
    /// `agent_id`. Subscribe *before* looking at the store, so a change that
    /// lands between the look and the wait is not lost.
    pub fn agent_subscription(&self, agent_id: &str) -> watch::Receiver<u64> {
        let mut agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        agents.entry(agent_id.to_string()).or_insert_with(|| watch::channel(0).0).subscribe()
    }

    pub fn wake_agent(&self, agent_id: &str) {
        let mut agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        // Forget agents nobody waits for, so the map does not grow with every
        // agent id ever seen.
        agents.retain(|_, tx| tx.receiver_count() > 0);
        if let Some(tx) = agents.get(agent_id) {
            tx.send_modify(|v| *v += 1);
        }
    }

    /// Wakes every waiter: some change may have been missed (another
    /// server's notifications were lost), so everyone re-reads the store.
    pub fn wake_everyone(&self) {
        let agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        for tx in agents.values() {
            tx.send_modify(|v| *v += 1);
        }
        drop(agents);
        let _ = self.workflows.send(ANY.to_string());
        let _ = self.logs.send(ANY.to_string());
        self.credentials_changed();
        self.audit_recorded();
    }

    pub fn credentials_changed(&self) {
        self.credentials.send_modify(|v| *v += 1);
    }

    pub fn credentials_subscription(&self) -> watch::Receiver<u64> {
        self.credentials.subscribe()
    }

    pub fn audit_recorded(&self) {
        self.audit.send_modify(|v| *v += 1);
    }

    pub fn audit_subscription(&self) -> watch::Receiver<u64> {
        self.audit.subscribe()
    }

    pub fn workflow_changed(&self, workflow_id: &str) {
        let _ = self.workflows.send(workflow_id.to_string());
    }

    pub fn workflow_subscription(&self) -> broadcast::Receiver<String> {
        self.workflows.subscribe()
    }

    pub fn logs_appended(&self, workflow_id: &str) {
        let _ = self.logs.send(workflow_id.to_string());
    }

    pub fn logs_subscription(&self) -> broadcast::Receiver<String> {
        self.logs.subscribe()
    }
}

/// The id in a message meant for every subscriber: no workflow has an empty
/// id.
const ANY: &str = "";

/// Waits until `rx` carries a message for `id` or for everyone (or the
/// channel lagged, which may have hidden one). Returns false when the
/// channel closed.
pub async fn wait_for(rx: &mut broadcast::Receiver<String>, id: &str) -> bool {
    loop {
        match rx.recv().await {
            Ok(changed) if changed == id || changed == ANY => return true,
            Ok(_) => continue,
            Err(broadcast::error::RecvError::Lagged(_)) => return true,
            Err(broadcast::error::RecvError::Closed) => return false,
        }
    }
}
