//! One error type for every BMC call. It always names the BMC (its address
//! as configured) and the step that failed, and sorts the cause into the
//! few kinds an operator acts on differently: fix the network, fix the
//! credentials, fix the BMC, or wait and retry.

use std::fmt;
use std::time::Duration;

/// A failed BMC call: which BMC, which step, and why.
#[derive(Debug, thiserror::Error)]
#[error("BMC {address}: {step}: {kind}")]
pub struct BmcError {
    /// The BMC's address as configured (URL or host:port), never credentials.
    pub address: String,
    /// What kiln was doing, e.g. "read power state" or "set boot device".
    pub step: String,
    pub kind: ErrorKind,
}

/// Why a BMC call failed. Callers decide on retries by kind:
/// `Unreachable`, `Timeout` and `ServerError` are transient; the others
/// will fail the same way until someone changes something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// Nothing answered: connection refused, no route, name not resolved.
    Unreachable(String),
    /// Something answered but not within the time limit (a hung BMC).
    Timeout(Duration),
    /// The BMC rejected the user name or password (HTTP 401/403, IPMI RAKP).
    Unauthorized(String),
    /// TLS failed: the certificate is not trusted, expired, or names another host.
    Tls(String),
    /// The BMC answered with something that is not the protocol: not JSON,
    /// JSON without the fields Redfish requires, a malformed IPMI packet.
    Garbage(String),
    /// HTTP 5xx: the BMC accepted the request and failed it.
    ServerError { status: u16, message: String },
    /// HTTP 4xx other than 401/403, or an IPMI completion code: the BMC
    /// understood and refused (unsupported value, resource missing).
    Rejected { status: Option<u16>, message: String },
    /// The protocol or this BMC has no such operation (IPMI virtual media,
    /// IPMI HTTP boot, a Redfish service without VirtualMedia).
    Unsupported(String),
}

impl ErrorKind {
    /// Whether trying again later may succeed without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unreachable(_) | Self::Timeout(_) | Self::ServerError { .. })
    }

    /// A stable short name for logs, metrics and the API.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Unreachable(_) => "unreachable",
            Self::Timeout(_) => "timeout",
            Self::Unauthorized(_) => "unauthorized",
            Self::Tls(_) => "tls",
            Self::Garbage(_) => "garbage",
            Self::ServerError { .. } => "server-error",
            Self::Rejected { .. } => "rejected",
            Self::Unsupported(_) => "unsupported",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreachable(why) => write!(f, "unreachable: {why}"),
            Self::Timeout(limit) => write!(f, "timed out: no answer within {}", humantime(*limit)),
            Self::Unauthorized(why) => write!(f, "wrong credentials: {why}"),
            Self::Tls(why) => write!(f, "TLS failed: {why}"),
            Self::Garbage(why) => write!(f, "answer is not valid: {why}"),
            Self::ServerError { status, message } => write!(f, "BMC failed the request: HTTP {status}: {message}"),
            Self::Rejected { status: Some(status), message } => {
                write!(f, "BMC refused the request: HTTP {status}: {message}")
            }
            Self::Rejected { status: None, message } => write!(f, "BMC refused the request: {message}"),
            Self::Unsupported(what) => write!(f, "not supported: {what}"),
        }
    }
}

fn humantime(d: Duration) -> String {
    if d.subsec_millis() == 0 { format!("{}s", d.as_secs()) } else { format!("{}ms", d.as_millis()) }
}

pub type Result<T> = std::result::Result<T, BmcError>;
