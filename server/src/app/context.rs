//! Who is acting, for every use case.

use std::fmt;
use std::net::SocketAddr;

use super::AppError;

/// The caller of a use case, as authenticated by its front door.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A machine's agent (its token, and certificate when mTLS is on, were
    /// checked by the agent service's authentication layer).
    Agent { agent_id: String },
    /// An operator presenting the operator credential: may read and change
    /// everything.
    Operator,
    /// An operator presenting the read-only operator credential: may read
    /// what an operator reads (inventory, workflows, logs, artifacts,
    /// events, metrics), and change nothing.
    ReadOnlyOperator,
    /// An action inside its container, with the action token of one open
    /// attempt.
    Action { workflow_id: String, action_index: u32, attempt_id: String },
    /// A server-side task (a sweeper), or an unauthenticated front door that
    /// reveals nothing secret (network boot).
    System { task: &'static str },
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Agent { agent_id } => write!(f, "agent {agent_id}"),
            Self::Operator => f.write_str("operator"),
            Self::ReadOnlyOperator => f.write_str("read-only operator"),
            Self::Action { workflow_id, action_index, attempt_id } => {
                write!(f, "action {action_index} of workflow {workflow_id} (attempt {attempt_id})")
            }
            Self::System { task } => write!(f, "server task {task}"),
        }
    }
}

/// The context of one operation: who acts. Built by the transports from what
/// they authenticated; the use cases decide what that actor may do.
#[derive(Debug, Clone)]
pub struct OpContext {
    pub actor: Actor,
    /// The caller's address, when the front door knows it: for the audit
    /// trail only, never for authorization.
    pub peer: Option<SocketAddr>,
}

impl OpContext {
    pub fn agent(agent_id: impl Into<String>) -> Self {
        Self { actor: Actor::Agent { agent_id: agent_id.into() }, peer: None }
    }

    pub fn operator() -> Self {
        Self { actor: Actor::Operator, peer: None }
    }

    pub fn read_only_operator() -> Self {
        Self { actor: Actor::ReadOnlyOperator, peer: None }
    }

    pub fn system(task: &'static str) -> Self {
        Self { actor: Actor::System { task }, peer: None }
    }

    /// The same context, with the caller's address.
    pub fn with_peer(self, peer: Option<SocketAddr>) -> Self {
        Self { peer, ..self }
    }

    /// The calling agent's id, or PERMISSION_DENIED for anyone else.
    pub fn require_agent(&self) -> Result<&str, AppError> {
        match &self.actor {
            Actor::Agent { agent_id } => Ok(agent_id),
            other => Err(AppError::PermissionDenied(format!("only an agent may do this, not {other}"))),
        }
    }

    /// Ok for operators with the (full) operator credential: every change
    /// an operator makes goes through here. PERMISSION_DENIED for anyone
    /// else, the read-only operator included.
    pub fn require_operator_write(&self) -> Result<(), AppError> {
        match &self.actor {
            Actor::Operator => Ok(()),
            Actor::ReadOnlyOperator => Err(AppError::PermissionDenied(
                "the read-only operator credential cannot change anything: use the operator credential".into(),
            )),
            other => Err(AppError::PermissionDenied(format!("only an operator may do this, not {other}"))),
        }
    }

    /// Ok for operators, read-only or not: what an operator may look at.
    /// PERMISSION_DENIED for anyone else.
    pub fn require_operator_read(&self) -> Result<(), AppError> {
        match &self.actor {
            Actor::Operator | Actor::ReadOnlyOperator => Ok(()),
            other => Err(AppError::PermissionDenied(format!("only an operator may do this, not {other}"))),
        }
    }

    /// The attempt an action's token names, or PERMISSION_DENIED.
    pub fn require_action(&self) -> Result<(&str, u32, &str), AppError> {
        match &self.actor {
            Actor::Action { workflow_id, action_index, attempt_id } => Ok((workflow_id, *action_index, attempt_id)),
            other => Err(AppError::PermissionDenied(format!("only an action may do this, not {other}"))),
        }
    }
}
