//! The server's record of a workflow: the frozen plan plus every attempt
//! made at each of its actions. Store implementations load and save this
//! aggregate. Every change to it is made by a function of
//! [`crate::state_machine`]; the stores' own updates that do not load it
//! (heartbeats) follow the rules that module writes down for them.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use kiln_documents::PlannedAction;

/// Milliseconds since the Unix epoch: the one time unit the store keeps.
pub type Millis = i64;

pub fn now_millis() -> Millis {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::EnumString)]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
pub enum WorkflowState {
    Pending,
    Running,
    Success,
    Failed,
    Timeout,
}

impl WorkflowState {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Success | Self::Failed | Self::Timeout)
    }

    /// The name stored and shown (`"RUNNING"`).
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, strum::IntoStaticStr, strum::EnumString)]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
pub enum ActionState {
    Pending,
    Pulling,
    Running,
    Success,
    Failed,
    Timeout,
}

impl ActionState {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Success | Self::Failed | Self::Timeout)
    }

    /// The name stored and shown (`"RUNNING"`).
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
    }
}

/// One execution of one action by one agent.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub id: String,
    pub number: u32,
    pub agent_id: String,
    pub state: ActionState,
    pub created_at: Millis,
    pub pulling_at: Option<Millis>,
    pub running_at: Option<Millis>,
    pub finished_at: Option<Millis>,
    pub exit_code: Option<i64>,
    pub reason: String,
    pub message: String,
    /// A typed action's JSON output, validated; "" otherwise.
    pub output_json: String,
    /// Open attempts only: the attempt is lost unless its agent renews this
    /// (heartbeats) in time. `None` once the attempt is finished.
    pub lease_expires_at: Option<Millis>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Action {
    pub index: u32,
    pub spec: PlannedAction,
    /// Oldest first. Never shrinks: history is kept.
    pub attempts: Vec<Attempt>,
}

impl Action {
    /// The state of the latest attempt; PENDING before the first one.
    pub fn state(&self) -> ActionState {
        self.attempts.last().map_or(ActionState::Pending, |a| a.state)
    }

    /// The agent that runs this action: the task's rendered worker.
    pub fn agent_id(&self) -> &str {
        &self.spec.worker
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Workflow {
    pub id: String,
    pub template: String,
    pub hardware: String,
    pub hardware_map: BTreeMap<String, String>,
    pub state: WorkflowState,
    pub reason: String,
    pub global_timeout_seconds: Option<u64>,
    pub created_at: Millis,
    pub started_at: Option<Millis>,
    pub finished_at: Option<Millis>,
    pub actions: Vec<Action>,
    /// BMC steps around the workflow (docs/bmc.md); `None`: none.
    pub boot_options: Option<kiln_documents::BootOptions>,
}

impl Workflow {
    /// The workflow cursor: the first action that has not succeeded. Derived,
    /// never stored, so it cannot disagree with the attempts.
    pub fn current_action(&self) -> Option<&Action> {
        self.actions.iter().find(|a| a.state() != ActionState::Success)
    }
}
