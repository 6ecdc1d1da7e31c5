//! The errors of the use cases: what went wrong in terms every transport can
//! map (gRPC status, HTTP status), with messages for the caller.

use crate::admission::AdmissionError;
use crate::state_machine::TransitionError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    /// The object exists in another form, or someone else changed it first.
    #[error("{0}")]
    Conflict(String),
    /// The request is valid but the object's state does not allow it.
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    ResourceExhausted(String),
    /// Data went missing on the way (an upload shorter than announced).
    #[error("{0}")]
    DataLoss(String),
    /// Something kiln depends on (a BMC) is unreachable, timed out or
    /// failed; trying again later may work.
    #[error("{0}")]
    Unavailable(String),
    /// The server failed. The message says what it was doing and nothing of
    /// its internals; the source goes to the server log (see
    /// [`AppError::log_internal`]).
    #[error("{context}")]
    Internal {
        context: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl AppError {
    pub fn internal(context: impl Into<String>, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Internal { context: context.into(), source: Some(source.into()) }
    }

    /// The same error, its message prefixed with `context` (the step that
    /// failed); the kind, and so whether it is retried, is kept.
    pub fn with_context(self, context: &str) -> Self {
        let prefix = |m: String| format!("{context}: {m}");
        match self {
            Self::InvalidArgument(m) => Self::InvalidArgument(prefix(m)),
            Self::NotFound(m) => Self::NotFound(prefix(m)),
            Self::Conflict(m) => Self::Conflict(prefix(m)),
            Self::FailedPrecondition(m) => Self::FailedPrecondition(prefix(m)),
            Self::PermissionDenied(m) => Self::PermissionDenied(prefix(m)),
            Self::Unauthenticated(m) => Self::Unauthenticated(prefix(m)),
            Self::ResourceExhausted(m) => Self::ResourceExhausted(prefix(m)),
            Self::DataLoss(m) => Self::DataLoss(prefix(m)),
            Self::Unavailable(m) => Self::Unavailable(prefix(m)),
            Self::Internal { context: c, source } => Self::Internal { context: prefix(c), source },
        }
    }

    /// Logs an internal error with its whole chain of causes (the caller
    /// only gets the context).
    pub fn log_internal(&self) {
        if let Self::Internal { context, source } = self {
            let mut detail = String::new();
            let mut cause: Option<&(dyn std::error::Error + 'static)> = source.as_deref().map(|s| s as _);
            while let Some(c) = cause {
                detail.push_str(": ");
                detail.push_str(&c.to_string());
                cause = c.source();
            }
            tracing::error!(error = %format!("{context}{detail}"), "internal error");
        }
    }
}

impl From<TransitionError> for AppError {
    fn from(e: TransitionError) -> Self {
        let message = e.to_string();
        match e {
            TransitionError::NotOwner { .. } => Self::PermissionDenied(message),
            TransitionError::UnknownAction(_) | TransitionError::UnknownAttempt(_) => Self::NotFound(message),
            TransitionError::NoState => Self::InvalidArgument(message),
            TransitionError::NotResumable(_)
            | TransitionError::StaleAttempt { .. }
            | TransitionError::WorkflowFinished(_)
            | TransitionError::Illegal { .. } => Self::FailedPrecondition(message),
        }
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        let message = e.to_string();
        match e {
            StoreError::NotFound { .. } => Self::NotFound(message),
            StoreError::Conflict(_) => Self::Conflict(message),
            StoreError::InUse(_) => Self::FailedPrecondition(message),
            StoreError::Transition(t) => t.into(),
            StoreError::Backend { context, source } => {
                Self::Internal { context: format!("store failure: {context} (details in the server log)"), source }
            }
        }
    }
}

impl From<AdmissionError> for AppError {
    fn from(e: AdmissionError) -> Self {
        match e {
            AdmissionError::Invalid(e) => Self::InvalidArgument(e.to_string()),
            AdmissionError::Reference(e) => Self::InvalidArgument(e),
            AdmissionError::Store(e) => e.into(),
        }
    }
}
