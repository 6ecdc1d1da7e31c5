//! The application layer: every use case of the server, callable alike from
//! gRPC ([`crate::agent_api`], [`crate::admin_api`]), HTTP
//! ([`crate::action_api`], [`crate::netboot`]) and tests. Transports only
//! translate between their wire shapes and these calls.
//!
//! One file per subject, each adding methods to the one [`App`]:
//!
//! | file | use cases |
//! |---|---|
//! | [`apply`] | apply documents, plan a workflow without creating it |
//! | [`dispatch`] | hand an agent its next attempt (the long poll) |
//! | [`images`] | `--image-rewrite`, and steps terminal by their image |
//! | [`report`] | an agent's state reports and heartbeats |
//! | [`logs`] | log lines in (agents), and out (operators, followed live) |
//! | [`artifacts`] | files actions leave, in (agents, actions) and out |
//! | [`workflows`] | read, watch, retry and delete workflows |
//! | [`inventory`] | read hardware, templates and action definitions |
//! | [`hardware_inventory`] | in-band inventory: what agents found on their machines |
//! | [`credentials`] | agent tokens and certificates |
//! | [`enrol`] | one-time enrolment credentials in boot scripts, exchanged for agent credentials |
//! | [`action_data`] | the workflow data actions read and write |
//! | [`boot`] | what a network-booting machine should boot |
//! | [`audit`] | the audit trail: operator writes and refused credentials |
//! | [`bmc`] | power and boot device through a machine's BMC; BMC credentials |
//! | [`console`] | the web console's lists and its shared feed of workflow changes |
//! | `metrics` | the Prometheus scrape; timed, recorded workflow transitions |
//!
//! Every method takes an [`OpContext`] saying who acts. Authorization
//! happens here, once, for every front door: an agent touches only its own
//! attempts, an action only its own workflow, and only operators change
//! documents. Operator writes and refused credentials are recorded in the
//! audit trail (stored, `kiln events`; see [`audit`]). Changes to a workflow go through
//! [`crate::state_machine`], inside a store transaction.
//!
//! Background work (sweepers) lives in [`background`], one file per task.

pub mod action_data;
pub mod apply;
pub mod artifacts;
pub mod audit;
pub mod background;
pub mod bmc;
pub mod boot;
pub mod console;
mod context;
pub mod credentials;
pub mod discovery;
pub mod disk_hints;
pub mod dispatch;
pub mod enrol;
mod error;
pub mod hardware_inventory;
pub mod hook_iso;
pub mod images;
pub mod inventory;
pub mod logs;
mod metrics;
pub mod report;
pub mod rules;
pub mod workflows;

use std::sync::Arc;
use std::time::Duration;

pub use context::{Actor, OpContext};
pub use error::AppError;

use self::audit::{EventRetention, RefusalLog};
use crate::action_api::TokenKey;
use crate::artifacts::ArtifactFiles;
use crate::auth::VerifiedTokens;
use crate::events::Events;
use crate::metrics::Metrics;
use crate::model::Millis;
use crate::netboot::NetbootConfig;
use crate::store::DynStore;
use crate::tls::SigningCa;

/// The server's application: its store and what every use case shares.
pub struct App {
    pub(crate) store: DynStore,
    pub(crate) events: Arc<Events>,
    pub(crate) image_policy: kiln_documents::ImagePolicy,
    /// `--image-rewrite`: applied when an action is dispatched or planned.
    pub(crate) image_rewrites: images::ImageRewrites,
    pub(crate) artifacts: ArtifactFiles,
    pub(crate) token_key: TokenKey,
    /// How long an open attempt survives without its agent's heartbeat.
    pub(crate) lease: Duration,
    /// The CA agent certificates are signed with, when the server has one.
    pub(crate) signing_ca: Option<SigningCa>,
    /// Agent tokens accepted without a store read: emptied by every
    /// credential change (see [`credentials`]).
    pub(crate) verified: Arc<VerifiedTokens>,
    pub(crate) netboot: NetbootConfig,
    /// Refused credentials waiting to be stored in the audit trail.
    pub(crate) refusals: Arc<RefusalLog>,
    pub(crate) event_retention: EventRetention,
    pub(crate) metrics: Metrics,
    /// The console's shared feed of workflow changes.
    pub(crate) feed: console::WorkflowFeed,
    /// BMC calls: the secret key, the concurrency limit, the timeout.
    pub(crate) bmc: bmc::BmcRuntime,
}

/// What [`App::new`] needs besides the store.
pub struct AppParts {
    pub events: Arc<Events>,
    pub image_policy: kiln_documents::ImagePolicy,
    pub image_rewrites: images::ImageRewrites,
    pub artifacts: ArtifactFiles,
    pub token_key: TokenKey,
    pub lease: Duration,
    pub signing_ca: Option<SigningCa>,
    pub netboot: NetbootConfig,
    pub event_retention: EventRetention,
}

impl App {
    pub fn new(store: DynStore, parts: AppParts) -> Self {
        let metrics = Metrics::new();
        Self {
            store,
            events: parts.events,
            image_policy: parts.image_policy,
            image_rewrites: parts.image_rewrites,
            artifacts: parts.artifacts,
            token_key: parts.token_key,
            lease: parts.lease,
            signing_ca: parts.signing_ca,
            verified: Arc::default(),
            netboot: parts.netboot,
            refusals: Arc::new(RefusalLog::new(metrics.refusal_counter())),
            event_retention: parts.event_retention,
            metrics,
            feed: console::WorkflowFeed::default(),
            bmc: bmc::BmcRuntime::default(),
        }
    }

    pub fn store(&self) -> &DynStore {
        &self.store
    }

    pub fn events(&self) -> &Arc<Events> {
        &self.events
    }

    /// The cache of verified agent tokens, shared with the agent service's
    /// authentication layer.
    pub fn verified_tokens(&self) -> &Arc<VerifiedTokens> {
        &self.verified
    }

    /// Gives the server its BMC secret key (see [`bmc::SecretKey`]).
    pub fn set_bmc_secret_key(&mut self, key: bmc::SecretKey) {
        self.bmc.key = Some(Arc::new(key));
    }

    /// Names the server as a BMC job runner (see [`bmc::load_or_create_runner_id`]).
    pub fn set_bmc_job_owner(&mut self, owner: String) {
        self.bmc.job_owner = owner;
    }

    pub fn lease(&self) -> Duration {
        self.lease
    }

    pub(crate) fn lease_millis(&self) -> Millis {
        self.lease.as_millis() as Millis
    }
}

#[cfg(test)]
mod tests;
