//! The API an action calls from inside its container (`KILN_API_ENDPOINT`,
//! `KILN_ACTION_TOKEN`). Plain HTTP/JSON on the server's port, so any action
//! with curl or busybox wget can use it:
//!
//! ```text
//! GET  /v1/action/data           -> {"version": N, "data": {...}}   the workflow's data
//! POST /v1/action/data           <- {"version": N, "data": {...}}   replace it if still at version N
//!                                -> {"version": N+1}                (409 when someone else wrote first)
//! POST /v1/action/files/PATH     <- raw bytes: stored as an artifact of the attempt
//!                                -> {"path": ..., "size": ..., "sha256": ...}
//! ```
//!
//! This module only translates HTTP to the use cases of
//! [`crate::app::action_data`] and [`crate::app::artifacts`].
//!
//! Every call carries `Authorization: Bearer TOKEN`. A token names one
//! attempt and is an HMAC of it under a key only the server holds; it is
//! good for that attempt's workflow only, and only while the attempt is
//! open: it expires with the attempt.

use std::path::Path;
use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use hmac::{KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;

use crate::app::{App, AppError, OpContext};
use crate::store::DynStore;

type HmacSha256 = hmac::Hmac<Sha256>;

/// Signs and checks action tokens.
#[derive(Clone)]
pub struct TokenKey(Arc<[u8; 32]>);

impl TokenKey {
    /// Loads the key from `DATA_DIR/action-token.key`, creating it on first
    /// start, so tokens survive a server restart.
    pub fn load_or_create(data_dir: &Path) -> anyhow::Result<Self> {
        let path = data_dir.join("action-token.key");
        let key = match std::fs::read(&path) {
            Ok(bytes) if bytes.len() == 32 => bytes,
            _ => {
                // Two v4 UUIDs: 244 random bits from the OS generator.
                let bytes: Vec<u8> =
                    [uuid::Uuid::new_v4(), uuid::Uuid::new_v4()].iter().flat_map(|u| *u.as_bytes()).collect();
                crate::auth::write_secret(&path, &bytes)?;
                bytes
            }
        };
        let mut array = [0u8; 32];
        array.copy_from_slice(&key);
        Ok(Self(Arc::new(array)))
    }

    /// The key all servers on a shared store use (tokens issued by one
    /// replica must verify on another), or the data directory's.
    pub async fn load_shared(store: &DynStore, data_dir: &Path) -> anyhow::Result<Self> {
        let candidate: Vec<u8> =
            [uuid::Uuid::new_v4(), uuid::Uuid::new_v4()].iter().flat_map(|u| *u.as_bytes()).collect();
        match store.shared_secret("action-token-key", candidate).await? {
            Some(key) => {
                let array: [u8; 32] = key
                    .try_into()
                    .map_err(|k: Vec<u8>| anyhow::anyhow!("stored action token key has {} bytes, not 32", k.len()))?;
                Ok(Self(Arc::new(array)))
            }
            None => Ok(Self::load_or_create(data_dir)?),
        }
    }

    fn mac(&self, subject: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(self.0.as_slice()).expect("HMAC takes any key length");
        mac.update(subject.as_bytes());
        mac
    }

    /// The token of one attempt: `WORKFLOW:ACTION:ATTEMPT:SIGNATURE`.
    pub fn issue(&self, workflow_id: &str, action_index: u32, attempt_id: &str) -> String {
        let subject = format!("{workflow_id}:{action_index}:{attempt_id}");
        let signature = hex::encode(self.mac(&subject).finalize().into_bytes());
        format!("{subject}:{signature}")
    }

    /// The attempt a token names, if its signature is ours.
    pub fn verify(&self, token: &str) -> Option<(String, u32, String)> {
        let (subject, signature) = token.rsplit_once(':')?;
        let signature = hex::decode(signature).ok()?;
        // Constant-time comparison.
        self.mac(subject).verify_slice(&signature).ok()?;
        let mut parts = subject.splitn(3, ':');
        let (workflow, index, attempt) = (parts.next()?, parts.next()?.parse().ok()?, parts.next()?);
        Some((workflow.to_string(), index, attempt.to_string()))
    }
}

/// The action API's routes, over the application.
pub fn router(app: Arc<App>) -> axum::Router {
    axum::Router::new()
        .route("/v1/action/data", get(read_data).post(write_data))
        // Files stream to disk: no body limit here but the artifact limit,
        // which the writer enforces while streaming.
        .route("/v1/action/files/{*path}", post(upload_file).layer(DefaultBodyLimit::disable()))
        .with_state(app)
}

struct ApiError(AppError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = self.0;
        e.log_internal();
        let code = match &e {
            AppError::InvalidArgument(_) => StatusCode::BAD_REQUEST,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::FailedPrecondition(_) => StatusCode::PRECONDITION_FAILED,
            AppError::PermissionDenied(_) => StatusCode::FORBIDDEN,
            AppError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            AppError::ResourceExhausted(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::DataLoss(_) => StatusCode::BAD_REQUEST,
            AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (code, Json(serde_json::json!({ "error": e.to_string() }))).into_response()
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        Self(e)
    }
}

/// What a request says about its caller: the bearer token (empty when
/// none) and, for the audit trail, its address.
struct Caller {
    token: String,
    peer: Option<std::net::SocketAddr>,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(crate::auth::bearer_token)
            .unwrap_or_default()
            .to_string();
        Ok(Self { token, peer: crate::auth::peer_addr(&parts.extensions) })
    }
}

/// The context of the action whose token the request carries.
async fn authenticate(app: &App, caller: Caller) -> Result<OpContext, ApiError> {
    Ok(app.authenticate_action(&caller.token, caller.peer).await?)
}

async fn read_data(State(app): State<Arc<App>>, caller: Caller) -> Result<Json<serde_json::Value>, ApiError> {
    let opctx = authenticate(&app, caller).await?;
    let (data, version) = app.read_workflow_data(&opctx).await?;
    Ok(Json(serde_json::json!({ "version": version, "data": data })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DataUpdate {
    version: u64,
    data: serde_json::Value,
}

async fn write_data(
    State(app): State<Arc<App>>,
    caller: Caller,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let opctx = authenticate(&app, caller).await?;
    let update: DataUpdate = serde_json::from_slice(&body)
        .map_err(|e| AppError::InvalidArgument(format!("body must be {{\"version\": N, \"data\": {{...}}}}: {e}")))?;
    let version = app.write_workflow_data(&opctx, update.version, update.data).await?;
    Ok(Json(serde_json::json!({ "version": version })))
}

async fn upload_file(
    State(app): State<Arc<App>>,
    caller: Caller,
    UrlPath(path): UrlPath<String>,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let opctx = authenticate(&app, caller).await?;
    let body = body
        .into_data_stream()
        .map(|chunk| chunk.map_err(|e| AppError::DataLoss(format!("receiving the file failed: {e}"))));
    let artifact = app.upload_action_file(&opctx, &path, body).await?;
    Ok(Json(serde_json::json!({ "path": artifact.path, "size": artifact.size, "sha256": artifact.sha256 })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_name_one_attempt_and_cannot_be_forged() {
        let dir = tempfile::tempdir().unwrap();
        let key = TokenKey::load_or_create(dir.path()).unwrap();
        let token = key.issue("wf-1", 2, "att-9");
        assert_eq!(key.verify(&token), Some(("wf-1".into(), 2, "att-9".into())));
        // Same key after a restart.
        assert_eq!(
            TokenKey::load_or_create(dir.path()).unwrap().verify(&token),
            Some(("wf-1".into(), 2, "att-9".into()))
        );
        let forged = token.replace("wf-1", "wf-2");
        assert_eq!(key.verify(&forged), None);
        assert_eq!(key.verify("wf-1:2:att-9:00"), None);
        assert_eq!(key.verify(""), None);
        let other = TokenKey::load_or_create(tempfile::tempdir().unwrap().path()).unwrap();
        assert_eq!(other.verify(&token), None);
    }
}
