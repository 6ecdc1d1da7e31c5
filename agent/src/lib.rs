//! kiln's machine agent. It asks the server for the next action, runs it
//! as a privileged container through the Docker Engine API, streams its
//! output, and reports every state change of the attempt.
//!
//! - [`client`]: the gRPC client (agent id on every call, retries).
//! - [`lifecycle`]: one attempt, from assignment to terminal report.
//! - [`runtime`]: everything Docker-specific.
//! - [`log_shipper`]: batching the container's output to the server.

pub mod client;
pub mod config;
pub mod enrol;
pub mod external;
pub mod identity;
pub mod lease;
pub mod lifecycle;
pub mod log_shipper;
pub mod power;
pub mod prefetch;
pub mod runtime;

use std::future::Future;
use std::time::Duration;

use crate::client::{ServerClient, backoff};
use crate::config::AgentConfig;
use crate::runtime::Engine;

pub struct Agent {
    pub id: String,
    pub config: AgentConfig,
    pub client: ServerClient,
    /// The Docker engine, which may still be starting when the agent does.
    pub engine: Engine,
    pub image_policy: kiln_documents::ImagePolicy,
    /// The workflow of the last attempt, to notice when one ends.
    current_workflow: tokio::sync::Mutex<String>,
    /// Background pulls of the images of the next actions.
    pub prefetch: prefetch::Prefetcher,
    /// The attempt whose lease this agent keeps alive.
    pub lease: lease::Lease,
    /// The server's CA, given to actions as `/kiln/ca.pem` for the action API.
    pub api_ca_pem: Option<Vec<u8>>,
}

/// Longest the agent waits for its first inventory report to be taken
/// before it asks for work (see `run_work`).
const FIRST_INVENTORY_WAIT: Duration = Duration::from_secs(15);

impl Agent {
    /// Resolves the agent id, enrols when the agent has an enrolment
    /// credential instead of a token ([`enrol`]), and reads the TLS
    /// material. The server connection is made by the first call, the
    /// engine's by the first use (see [`Engine`]).
    pub async fn new(config: AgentConfig) -> anyhow::Result<Self> {
        let id = match &config.agent_id {
            Some(id) => id.trim().to_ascii_lowercase(),
            None => identity::first_nic_mac()
                .ok_or_else(|| anyhow::anyhow!("no agent_id configured and no network interface with a MAC found"))?,
        };
        let (token, enrolled_identity) = enrol::credentials(&config, &id).await?;
        let mut tls = config.client_tls()?;
        if tls.identity.is_none() {
            tls.identity = enrolled_identity;
        }
        let client = ServerClient::new(&config.server, &id, token, &tls)?;
        let api_ca_pem = tls.ca_pem.clone();
        let engine = Engine::new(&config.docker_host, Duration::from_secs(config.engine_wait_seconds));
        let image_policy = config.image_policy().map_err(anyhow::Error::msg)?;
        Ok(Self {
            id,
            config,
            client,
            engine,
            image_policy,
            current_workflow: Default::default(),
            prefetch: prefetch::Prefetcher::new(),
            lease: lease::Lease::default(),
            api_ca_pem,
        })
    }

    /// Called before each attempt. When work moves to another workflow, the
    /// previous one is over for this machine: its kept (failed) containers go.
    pub async fn on_workflow(&self, workflow_id: &str) {
        let mut current = self.current_workflow.lock().await;
        if *current != workflow_id {
            match self.engine.get().await {
                Ok(runtime) => runtime::remove_kept_containers(runtime.as_ref(), &self.id, workflow_id).await,
                Err(e) => tracing::warn!(error = %e, "cannot remove the kept containers of earlier workflows"),
            }
            *current = workflow_id.to_string();
        }
    }

    /// Asks for work and runs it, one attempt at a time, until `shutdown`;
    /// meanwhile reports the machine's inventory, at start and whenever it
    /// changes.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        let (reported_tx, reported_rx) = tokio::sync::watch::channel(false);
        tokio::select! {
            () = self.run_work(shutdown, reported_rx) => {}
            () = self.report_inventory(reported_tx) => {}
        }
    }

    /// Collects the inventory and reports it when it differs from the last
    /// one the server acknowledged: at start, then every
    /// `inventory_interval_seconds` (a failed report is retried sooner).
    /// Never returns.
    async fn report_inventory(&self, first_report: tokio::sync::watch::Sender<bool>) {
        let mut reported: Option<String> = None;
        let mut failures = 0;
        loop {
            // Each time, so that partitions made since get theirs too.
            if self.config.disk_links {
                let root = self.config.inventory_root.clone();
                match tokio::task::spawn_blocking(move || kiln_inventory::names::create_links(&root)).await {
                    Ok(Ok(made)) if !made.is_empty() => {
                        tracing::info!(links = made.len(), "made the /dev/disk/by-id and by-path links (no udev here)")
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "making the /dev/disk links failed"),
                    Err(e) => tracing::warn!(error = %e, "making the /dev/disk links failed"),
                }
            }
            let root = self.config.inventory_root.clone();
            let collected =
                tokio::task::spawn_blocking(move || serde_json::to_string(&kiln_inventory::collect(&root))).await;
            let mut next = Duration::from_secs(self.config.inventory_interval_seconds);
            match collected {
                Ok(Ok(json)) if reported.as_ref() != Some(&json) => {
                    match self.client.report_inventory(json.clone()).await {
                        Ok(changed) => {
                            tracing::info!(changed, "inventory reported");
                            reported = Some(json);
                            failures = 0;
                        }
                        Err(status) => {
                            tracing::warn!(code = ?status.code(), error = %status.message(), "reporting the inventory failed");
                            // Soon when the server may answer next time;
                            // a refusal is not retried in a hurry.
                            next = if client::is_transient(&status) {
                                backoff(failures).max(Duration::from_secs(2))
                            } else {
                                Duration::from_secs(60)
                            };
                            failures += 1;
                        }
                    }
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "encoding the inventory failed"),
                Err(e) => tracing::warn!(error = %e, "collecting the inventory failed"),
            }
            // The first report was made (or failed): work may be asked for.
            first_report.send_replace(true);
            if next.is_zero() && reported.is_some() {
                return std::future::pending().await;
            }
            tokio::time::sleep(next.max(Duration::from_secs(1))).await;
        }
    }

    async fn run_work(
        &self,
        shutdown: impl Future<Output = ()>,
        mut inventory_reported: tokio::sync::watch::Receiver<bool>,
    ) {
        tracing::info!(agent_id = %self.id, server = %self.config.server, "agent started");
        tokio::pin!(shutdown);
        // The server resolves a workflow's disk hints against the reported
        // inventory when it hands out an action, and fails the workflow when
        // there is none: so the first question for work waits until the
        // first report was made (or failed), for a while at most.
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::timeout(FIRST_INVENTORY_WAIT, inventory_reported.wait_for(|done| *done)) => {}
        }
        let mut failures = 0;
        // The first question is answered at once, so that a restarted agent
        // with nothing to do clears what its predecessor left running
        // (below) now, not after a long poll.
        let mut started = true;
        loop {
            let wait = if started { Duration::ZERO } else { client::LONG_POLL };
            let next = tokio::select! {
                _ = &mut shutdown => return,
                next = self.client.next_action(wait) => next,
            };
            match next {
                Ok(Some(assignment)) => {
                    failures = 0;
                    started = false;
                    // An attempt runs to its end even when shutdown is asked
                    // for meanwhile: a half-reported action helps no one.
                    // It stops early only when the server ended it (its
                    // lease ran out): then its container goes too, since
                    // the action is now someone else's (a new attempt).
                    self.lease.hold(&assignment.attempt_id);
                    let finished = tokio::select! {
                        finished = lifecycle::run_attempt(self, &assignment) => Some(finished),
                        () = self.lease.keep_alive(&self.client, &assignment.attempt_id) => None,
                    };
                    self.lease.release();
                    let Some(finished) = finished else {
                        tracing::warn!(workflow = %assignment.workflow_id, attempt = %assignment.attempt_id,
                            "the server ended this attempt (its lease ran out); stopping it");
                        match self.engine.get().await {
                            Ok(runtime) => runtime.remove(&lifecycle::container_name(&assignment)).await,
                            Err(e) => tracing::warn!(error = %e, "cannot remove the container of the ended attempt"),
                        }
                        continue;
                    };
                    match finished {
                        Ok(lifecycle::Next::Continue) => {}
                        Ok(lifecycle::Next::Power(kind)) => {
                            power::perform(&self.config, &kind);
                            // The machine is going down (or, with a test
                            // command, pretends to): this agent's life ends.
                            return;
                        }
                        Err(e) => {
                            tracing::warn!(workflow = %assignment.workflow_id, attempt = %assignment.attempt_id, error = %e, "attempt abandoned")
                        }
                    }
                }
                Ok(None) => {
                    failures = 0;
                    started = false;
                    // The server hands an open attempt back to its agent,
                    // so with none to give, any running container of this
                    // agent belongs to an attempt that is over (lost while
                    // the agent was down): it must not go on writing.
                    // (Not waiting for an engine that is still starting,
                    // which has none; polling goes on meanwhile.)
                    if let Some(runtime) = self.engine.now().await {
                        runtime::remove_running_except(runtime.as_ref(), &self.id, "").await;
                    }
                }
                Err(status) => {
                    tracing::warn!(code = ?status.code(), error = %status.message(), "asking the server for work failed");
                    tokio::select! {
                        _ = &mut shutdown => return,
                        _ = tokio::time::sleep(backoff(failures)) => {}
                    }
                    failures += 1;
                }
            }
        }
    }
}
