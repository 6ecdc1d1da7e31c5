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
//! Every call carries `Authorization: Bearer TOKEN`. A token names one
//! attempt and is an HMAC of it under a key only the server holds; it is
//! good for that attempt's workflow only, and only while the attempt is
//! open: it expires with the attempt.

use std::path::Path;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hmac::{KeyInit, Mac};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::artifacts::ArtifactFiles;
use crate::model::now_millis;
use crate::store::{Artifact, DynStore, StoreError};

type HmacSha256 = hmac::Hmac<Sha256>;

/// Signs and checks action tokens.
#[derive(Clone)]
pub struct TokenKey(Arc<[u8; 32]>);

impl TokenKey {
    /// Loads the key from `DATA_DIR/action-token.key`, creating it on first
    /// start, so tokens survive a server restart.
    pub fn load_or_create(data_dir: &Path) -> std::io::Result<Self> {
        let path = data_dir.join("action-token.key");
        let key = match std::fs::read(&path) {
            Ok(bytes) if bytes.len() == 32 => bytes,
            _ => {
                // Two v4 UUIDs: 244 random bits from the OS generator.
                let bytes: Vec<u8> =
                    [uuid::Uuid::new_v4(), uuid::Uuid::new_v4()].iter().flat_map(|u| *u.as_bytes()).collect();
                std::fs::create_dir_all(data_dir)?;
                write_private(&path, &bytes)?;
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

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(bytes)
}

#[derive(Clone)]
pub struct ActionApi {
    pub store: DynStore,
    pub key: TokenKey,
    pub artifacts: ArtifactFiles,
}

pub fn router(api: ActionApi) -> axum::Router {
    axum::Router::new()
        .route("/v1/action/data", get(read_data).post(write_data))
        .route("/v1/action/files/{*path}", post(upload_file))
        .with_state(api)
}

struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let code = match e {
            StoreError::NotFound { .. } => StatusCode::NOT_FOUND,
            StoreError::Conflict(_) => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(code, e.to_string())
    }
}

/// The open attempt a request's token names.
struct Caller {
    workflow_id: String,
    action_index: u32,
    attempt_id: String,
}

async fn authorize(api: &ActionApi, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let unauthorized = |m: &str| ApiError(StatusCode::UNAUTHORIZED, m.to_string());
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| unauthorized("missing Authorization: Bearer KILN_ACTION_TOKEN"))?;
    let (workflow_id, action_index, attempt_id) =
        api.key.verify(token.trim()).ok_or_else(|| unauthorized("invalid action token"))?;
    let wf = api.store.get_workflow(&workflow_id).await?;
    let open = wf
        .actions
        .get(action_index as usize)
        .and_then(|a| a.attempts.iter().find(|t| t.id == attempt_id))
        .is_some_and(|t| !t.state.is_terminal() && !wf.state.is_terminal());
    if !open {
        // Logged without the token: it is a credential.
        tracing::warn!(workflow = %workflow_id, attempt = %attempt_id, "action token used after its attempt ended");
        return Err(ApiError(StatusCode::FORBIDDEN, "action token expired: its attempt has ended".into()));
    }
    Ok(Caller { workflow_id, action_index, attempt_id })
}

async fn read_data(State(api): State<ActionApi>, headers: HeaderMap) -> Result<Json<serde_json::Value>, ApiError> {
    let caller = authorize(&api, &headers).await?;
    let (json, version) = api.store.workflow_data(&caller.workflow_id).await?;
    let data: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
    Ok(Json(serde_json::json!({ "version": version, "data": data })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DataUpdate {
    version: u64,
    data: serde_json::Value,
}

async fn write_data(
    State(api): State<ActionApi>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let caller = authorize(&api, &headers).await?;
    let update: DataUpdate = serde_json::from_slice(&body).map_err(|e| {
        ApiError(StatusCode::BAD_REQUEST, format!("body must be {{\"version\": N, \"data\": {{...}}}}: {e}"))
    })?;
    if !update.data.is_object() {
        return Err(ApiError(StatusCode::BAD_REQUEST, "field data: must be a JSON object".into()));
    }
    let version = api.store.set_workflow_data(&caller.workflow_id, update.data.to_string(), update.version).await?;
    Ok(Json(serde_json::json!({ "version": version })))
}

async fn upload_file(
    State(api): State<ActionApi>,
    headers: HeaderMap,
    UrlPath(path): UrlPath<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let caller = authorize(&api, &headers).await?;
    let target = api.artifacts.locate(&caller.attempt_id, &path).map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))?;
    if body.len() as u64 > api.artifacts.max_bytes {
        return Err(ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{} bytes; the limit is {}", body.len(), api.artifacts.max_bytes),
        ));
    }
    let io = |e: std::io::Error| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("storing {path}: {e}"));
    tokio::fs::create_dir_all(target.parent().expect("artifact paths have a parent")).await.map_err(io)?;
    tokio::fs::write(&target, &body).await.map_err(io)?;
    let artifact = Artifact {
        workflow_id: caller.workflow_id,
        action_index: caller.action_index,
        attempt_id: caller.attempt_id,
        path: path.clone(),
        size: body.len() as u64,
        sha256: hex::encode(Sha256::digest(&body)),
        created_at: now_millis(),
    };
    api.store.put_artifact(artifact.clone()).await?;
    Ok(Json(serde_json::json!({ "path": path, "size": artifact.size, "sha256": artifact.sha256 })))
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
