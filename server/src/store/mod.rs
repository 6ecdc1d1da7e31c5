//! Where the server keeps everything. The rest of the server sees only the
//! [`Store`] trait, so a PostgreSQL implementation can sit beside the
//! embedded SQLite one without anything above this module changing.
//!
//! Consistency contract every implementation keeps:
//! - [`Store::apply`] writes a whole batch or nothing.
//! - [`Store::update_workflow`] runs the mutation on the latest committed
//!   workflow and commits the result in one transaction, serialised with any
//!   other update of the same workflow; it returns only after the commit, so
//!   whatever the caller acknowledges is durable.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use kiln_spec::{ActionDefinitionDoc, HardwareDoc, TemplateDoc};

use crate::model::{Millis, Workflow};
use crate::state_machine::TransitionError;

pub mod sqlite;

pub type DynStore = Arc<dyn Store>;

/// A change to one workflow, run inside the store's transaction. Returns
/// whether it changed anything (nothing is written otherwise).
pub type Mutation = Box<dyn FnOnce(&mut Workflow) -> Result<bool, TransitionError> + Send>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{kind} {name:?} not found")]
    NotFound { kind: &'static str, name: String },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    InUse(String),
    #[error(transparent)]
    Transition(#[from] TransitionError),
    #[error("store failure: {0}")]
    Backend(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoredHardware {
    pub doc: HardwareDoc,
    pub created_at: Millis,
    pub updated_at: Millis,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoredTemplate {
    pub doc: TemplateDoc,
    pub created_at: Millis,
    pub updated_at: Millis,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoredDefinition {
    pub doc: ActionDefinitionDoc,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// Everything one `kiln apply` writes.
#[derive(Debug, Default)]
pub struct ApplyBatch {
    pub hardware: Vec<HardwareDoc>,
    pub definitions: Vec<ActionDefinitionDoc>,
    pub templates: Vec<TemplateDoc>,
    pub workflows: Vec<Workflow>,
    /// sha256 (hex) of the agent token of each hardware id, used only when
    /// that hardware is *created* by this batch: an update keeps the stored
    /// hash, so re-applying a document never changes a machine's credential.
    pub token_hashes: HashMap<String, String>,
}

/// What the server checks an agent's token against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentCredential {
    /// The hardware whose `agent_id` the agent claimed.
    pub hardware_id: String,
    /// sha256 (hex) of its current token; `None` when revoked (or never
    /// issued): every token is then refused.
    pub token_hash: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Updated,
    Unchanged,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Updated => "updated",
            Self::Unchanged => "unchanged",
        }
    }
}

/// One stored log line, with the position readers resume from.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredLogLine {
    /// Increases with every stored line across the whole store.
    pub cursor: i64,
    pub action_index: u32,
    pub attempt_id: String,
    pub seq: u64,
    pub stream: i32,
    pub time: Millis,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewLogLine {
    pub seq: u64,
    pub stream: i32,
    pub time: Millis,
    pub text: String,
}

/// The index entry of one uploaded artifact.
#[derive(Debug, Clone, PartialEq)]
pub struct Artifact {
    pub workflow_id: String,
    pub action_index: u32,
    pub attempt_id: String,
    pub path: String,
    pub size: u64,
    pub sha256: String,
    pub created_at: Millis,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Writes hardware and templates (create or update) and creates
    /// workflows, all in one transaction. Returns one outcome per object in
    /// batch order: hardware, definitions, templates, workflows. A workflow id that exists
    /// with a different definition is a [`StoreError::Conflict`]: workflows
    /// are immutable once created.
    async fn apply(&self, batch: ApplyBatch) -> Result<Vec<Outcome>, StoreError>;

    async fn get_hardware(&self, id: &str) -> Result<StoredHardware, StoreError>;
    async fn list_hardware(&self) -> Result<Vec<StoredHardware>, StoreError>;
    async fn get_template(&self, name: &str) -> Result<StoredTemplate, StoreError>;
    async fn list_templates(&self) -> Result<Vec<StoredTemplate>, StoreError>;
    async fn get_workflow(&self, id: &str) -> Result<Workflow, StoreError>;
    async fn list_workflows(&self) -> Result<Vec<Workflow>, StoreError>;

    /// Deletes hardware or a template unless an unfinished workflow uses it
    /// ([`StoreError::InUse`]); deletes a workflow with its attempts and logs.
    async fn delete(&self, kind: ObjectKind, name: &str) -> Result<(), StoreError>;

    /// Ids of unfinished workflows with at least one action for `agent_id`,
    /// oldest first.
    async fn active_workflows_for_agent(&self, agent_id: &str) -> Result<Vec<String>, StoreError>;

    /// Ids of unfinished workflows that have a global timeout.
    async fn workflows_with_deadline(&self) -> Result<Vec<String>, StoreError>;

    /// Runs `mutation` on the workflow in one transaction and returns the
    /// workflow as committed and whether it changed.
    async fn update_workflow(&self, id: &str, mutation: Mutation) -> Result<(Workflow, bool), StoreError>;

    /// Stores log lines of an attempt; lines whose seq is already stored are
    /// skipped. Returns the highest seq stored for the attempt.
    async fn append_logs(
        &self,
        workflow_id: &str,
        action_index: u32,
        attempt_id: &str,
        lines: Vec<NewLogLine>,
    ) -> Result<u64, StoreError>;

    /// The workflow's data document (JSON) and its version.
    async fn workflow_data(&self, id: &str) -> Result<(String, u64), StoreError>;

    /// Replaces the data document if it is still at `expected_version`
    /// ([`StoreError::Conflict`] otherwise); returns the new version.
    async fn set_workflow_data(&self, id: &str, json: String, expected_version: u64) -> Result<u64, StoreError>;

    /// ActionDefinitions, by name.
    async fn list_definitions(&self) -> Result<Vec<StoredDefinition>, StoreError>;

    /// Records an artifact (replacing one of the same attempt and path).
    async fn put_artifact(&self, artifact: Artifact) -> Result<(), StoreError>;

    /// Artifacts of a workflow, by action, attempt and path.
    async fn list_artifacts(&self, workflow_id: &str) -> Result<Vec<Artifact>, StoreError>;

    /// Log lines of a workflow stored after `after_cursor`, in storage order,
    /// optionally of one action only, at most `limit`.
    async fn read_logs(
        &self,
        workflow_id: &str,
        action_index: Option<u32>,
        after_cursor: i64,
        limit: u32,
    ) -> Result<Vec<StoredLogLine>, StoreError>;

    /// The credential of the hardware whose agent id is `agent_id`, or
    /// `None` when no hardware has that agent id.
    async fn agent_credential(&self, agent_id: &str) -> Result<Option<AgentCredential>, StoreError>;

    /// The agent id of the hardware whose current token hash is
    /// `token_hash`, if any: tells a token of another machine from a bad one.
    async fn agent_for_token_hash(&self, token_hash: &str) -> Result<Option<String>, StoreError>;

    /// Replaces the token hash of a hardware (rotate: a new hash; revoke:
    /// `None`). [`StoreError::NotFound`] for unknown hardware.
    async fn set_token_hash(&self, hardware_id: &str, token_hash: Option<String>) -> Result<(), StoreError>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    ActionDefinition,
    Hardware,
    Template,
    Workflow,
}

impl ObjectKind {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "hardware" | "hw" => Self::Hardware,
            "action" | "actions" | "actiondefinition" => Self::ActionDefinition,
            "template" | "templates" => Self::Template,
            "workflow" | "workflows" | "wf" => Self::Workflow,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hardware => "hardware",
            Self::ActionDefinition => "action definition",
            Self::Template => "template",
            Self::Workflow => "workflow",
        }
    }
}
