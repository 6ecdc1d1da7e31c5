//! Who may call the server: agents with their machine's token (and, with
//! mutual TLS, a client certificate naming their agent id), operators with
//! the operator credential.
//!
//! Secrets never reach a log line or an error message: rejections name the
//! agent id and the reason only. Every rejection is also noted in the audit
//! trail ([`RefusalLog`]: a map update, rate-limited, stored in the
//! background), so refusing stays as cheap as it was.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use base64::Engine;
use kiln_proto::{AGENT_ID_METADATA, AUTHORIZATION_METADATA};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::NamedService;
use tonic::service::Interceptor;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Request, Status};

use crate::agent_api::AgentIdentity;
use crate::app::OpContext;
use crate::app::audit::RefusalLog;
use crate::store::DynStore;

/// Prefix of agent tokens, so a leaked one is recognisable (secret scanners).
pub const TOKEN_PREFIX: &str = "kiln_";

/// A new random credential: 32 bytes from the OS, `kiln_` + base64url.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random number generator failed");
    format!("{TOKEN_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// What the store keeps of a token: its sha256, hex.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn hashes_equal(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// The token of an `Authorization: Bearer TOKEN` header value, if any: the
/// one parser of every credential kiln receives (agent, operator and action
/// tokens). The scheme is case-insensitive (RFC 9110 section 11.1).
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

fn bearer(value: Option<&http::HeaderValue>) -> Option<&str> {
    bearer_token(value?.to_str().ok()?)
}

/// The caller's address, from what tonic's server put in the request's
/// extensions (plain TCP or TLS); `None` elsewhere (tests).
pub fn peer_addr(extensions: &http::Extensions) -> Option<SocketAddr> {
    extensions
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| extensions.get::<TlsConnectInfo<TcpConnectInfo>>().and_then(|i| i.get_ref().remote_addr()))
}

/// The agent id a caller claims (`kiln-agent-id`), normalised.
#[allow(clippy::result_large_err)] // tonic's Status
fn claimed_agent_id(headers: &http::HeaderMap) -> Result<String, Status> {
    let id = headers
        .get(AGENT_ID_METADATA)
        .ok_or_else(|| Status::unauthenticated(format!("missing {AGENT_ID_METADATA} metadata")))?
        .to_str()
        .map_err(|_| Status::invalid_argument(format!("{AGENT_ID_METADATA} must be ASCII")))?
        .trim()
        .to_ascii_lowercase();
    if id.is_empty() || id.len() > 128 || id.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(Status::invalid_argument(format!("{AGENT_ID_METADATA} {id:?} is not a valid agent id")));
    }
    Ok(id)
}

/// The agent id a client certificate names: its subject CN.
pub fn cert_agent_id(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?;
    Some(cn.trim().to_ascii_lowercase())
}

/// How long a token verified against the store is accepted again without
/// reading the store. A change made through this server (rotate, revoke,
/// hardware updated or deleted) empties the cache at once
/// ([`VerifiedTokens::invalidate`]), and so does a change another server
/// sharing the store announces ([`crate::events::Events::credentials_changed`]);
/// this bounds how long a change whose announcement was lost goes unnoticed.
pub const VERIFIED_TOKEN_TTL: Duration = Duration::from_secs(30);

/// Agent tokens this server verified recently, by agent id, so that most
/// agent calls (heartbeats, long polls, reports of thousands of agents) cost
/// no store read. Only successes are kept: a rejected token is looked up
/// every time.
#[derive(Default)]
pub struct VerifiedTokens {
    entries: Mutex<HashMap<String, Verified>>,
    /// Bumped by every invalidation. An entry carries the generation read
    /// *before* its store lookup, and is only stored while that is still
    /// current: a lookup that raced with a revocation never re-adds the
    /// revoked token.
    generation: AtomicU64,
}

struct Verified {
    token_hash: String,
    at: Instant,
    generation: u64,
}

impl VerifiedTokens {
    /// Forgets every verified token: credentials changed.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Verified>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    fn accepts(&self, agent: &str, token_hash: &str) -> bool {
        let generation = self.generation();
        self.lock().get(agent).is_some_and(|v| {
            v.generation == generation && v.at.elapsed() < VERIFIED_TOKEN_TTL && hashes_equal(&v.token_hash, token_hash)
        })
    }

    fn remember(&self, agent: &str, token_hash: String, generation: u64) {
        let mut entries = self.lock();
        if generation == self.generation() {
            entries.insert(agent.to_string(), Verified { token_hash, at: Instant::now(), generation });
        }
    }
}

/// Agent authentication, run for every agent call by [`AgentAuthService`].
pub struct AgentAuth {
    pub store: DynStore,
    /// Agents must present a client certificate (mutual TLS).
    pub require_client_cert: bool,
    /// Tokens recently verified; shared with the admin service, which
    /// invalidates it when credentials change.
    pub verified: Arc<VerifiedTokens>,
    /// Where rejections are noted for the audit trail.
    pub refusals: Arc<RefusalLog>,
}

/// The agent calls a discovered (not adopted) machine may make: it reports
/// what it is and that it is alive, and asks for work (it gets none).
const DISCOVERED_MAY_CALL: [&str; 3] = ["/Heartbeat", "/ReportInventory", "/NextAction"];

impl AgentAuth {
    /// Refuses a discovered machine's agent every call but those of
    /// [`DISCOVERED_MAY_CALL`] (`path`: the gRPC method's). Looked up in the
    /// store only for the other calls, which such a machine has no reason
    /// to make.
    pub async fn check_discovered(&self, agent: &AgentIdentity, path: &str) -> Result<(), Status> {
        if DISCOVERED_MAY_CALL.iter().any(|m| path.ends_with(m)) {
            return Ok(());
        }
        let discovered = self.store.list_discovered().await.map_err(crate::convert::store_status)?;
        if let Some((mac, id)) = discovered.iter().find(|(mac, _)| *mac == agent.0) {
            tracing::warn!(agent = %agent.0, %path, "agent call rejected: discovered machine");
            self.refusals.refused(
                format!("agent {}", agent.0),
                None,
                path,
                "agent service",
                "discovered machine, not adopted",
            );
            return Err(Status::permission_denied(format!(
                "hardware {id} (MAC {mac}) is a discovered machine: it may only heartbeat and report its \
                 inventory until an operator adopts it (kiln adopt {id} --as NAME)"
            )));
        }
        Ok(())
    }

    /// The caller's identity, or the status that rejects the call.
    pub async fn authenticate(
        &self,
        headers: &http::HeaderMap,
        extensions: &http::Extensions,
    ) -> Result<AgentIdentity, Status> {
        // Looked up only when refusing: accepted calls are the hot path.
        let peer = || peer_addr(extensions);
        let agent = claimed_agent_id(headers).inspect_err(|status| {
            self.refusals.refused(
                "agent (no valid id)".into(),
                peer(),
                "authenticate",
                "agent service",
                status.message(),
            );
        })?;
        let reject = |status: Status, reason: &str| {
            // The reason and the agent id, never the token.
            tracing::warn!(agent = %agent, reason, code = ?status.code(), "agent call rejected");
            self.refusals.refused(format!("agent {agent}"), peer(), "authenticate", "agent service", reason);
            status
        };
        let Some(token) = bearer(headers.get(AUTHORIZATION_METADATA)) else {
            return Err(reject(Status::unauthenticated("missing agent token (authorization: Bearer ...)"), "no token"));
        };
        let hash = token_hash(token);
        if !self.verified.accepts(&agent, &hash) {
            self.verify_with_store(&agent, hash).await?.map_err(|(status, reason)| reject(status, reason))?;
        }
        let peer_cert = extensions
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(|info| info.peer_certs())
            .and_then(|certs| certs.first().map(|c| c.to_vec()));
        match peer_cert {
            Some(der) => {
                let named = cert_agent_id(&der);
                if named.as_deref() != Some(agent.as_str()) {
                    tracing::warn!(agent = %agent, cert_names = ?named, "agent call rejected: client certificate of another agent");
                    let status =
                        Status::permission_denied(format!("the client certificate does not name agent {agent}"));
                    return Err(reject(status, "client certificate of another agent"));
                }
            }
            None if self.require_client_cert => {
                return Err(reject(
                    Status::unauthenticated("this server requires a client certificate from agents"),
                    "no client certificate",
                ));
            }
            None => {}
        }
        Ok(AgentIdentity(agent))
    }

    /// Checks a token against the store, and remembers it when valid. The
    /// outer error is a store failure (no verdict on the credential); the
    /// inner one a refusal with its reason (for the log and the audit trail).
    #[allow(clippy::result_large_err)] // tonic's Status
    async fn verify_with_store(&self, agent: &str, hash: String) -> Result<Result<(), (Status, &'static str)>, Status> {
        let store_failed = crate::convert::store_status;
        // Read before the store: see [`VerifiedTokens::generation`].
        let generation = self.verified.generation();
        let credential = self.store.agent_credential(agent).await.map_err(store_failed)?;
        let valid = credential.as_ref().and_then(|c| c.token_hash.as_deref()).is_some_and(|h| hashes_equal(h, &hash));
        if valid {
            self.verified.remember(agent, hash, generation);
            return Ok(Ok(()));
        }
        // A token that is valid, but for another machine, is a different
        // failure than a bad one: the caller is someone, just not who it
        // claims to be.
        if let Some(owner) = self.store.agent_for_token_hash(&hash).await.map_err(store_failed)? {
            tracing::warn!(agent = %agent, token_of = %owner, "agent call rejected: token of another machine");
            let status = Status::permission_denied(format!("this token does not belong to agent {agent}"));
            return Ok(Err((status, "token of another machine")));
        }
        let reason = match &credential {
            None => "no hardware has this agent id",
            Some(c) if c.token_hash.is_none() => "token revoked",
            Some(_) => "wrong token",
        };
        Ok(Err((Status::unauthenticated("invalid agent token"), reason)))
    }
}

/// Wraps the agent service: a call reaches it only once [`AgentAuth`]
/// accepted it, with the caller's [`AgentIdentity`] in its extensions. Being
/// a layer around the whole service, no handler can forget it.
#[derive(Clone)]
pub struct AgentAuthService<S> {
    inner: S,
    auth: Arc<AgentAuth>,
}

impl<S> AgentAuthService<S> {
    pub fn new(inner: S, auth: Arc<AgentAuth>) -> Self {
        Self { inner, auth }
    }
}

impl<S: NamedService> NamedService for AgentAuthService<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for AgentAuthService<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        // The clone that was polled ready serves this call (tower's rule).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = self.auth.clone();
        Box::pin(async move {
            let identity = match auth.authenticate(req.headers(), req.extensions()).await {
                Ok(identity) => auth.check_discovered(&identity, req.uri().path()).await.map(|()| identity),
                Err(status) => Err(status),
            };
            match identity {
                Ok(identity) => {
                    req.extensions_mut().insert(identity);
                    inner.call(req).await
                }
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

/// Which operator credential a caller presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperatorRole {
    /// The operator credential: reads and changes everything.
    Full,
    /// The read-only operator credential: reads what an operator reads.
    ReadOnly,
}

impl OperatorRole {
    /// The context a use case sees for this caller.
    pub fn context(self) -> OpContext {
        match self {
            Self::Full => OpContext::operator(),
            Self::ReadOnly => OpContext::read_only_operator(),
        }
    }
}

/// Checks the operator credentials (the full one, and the read-only one
/// when configured) on every admin call and for the HTTP front doors that
/// operators use.
#[derive(Clone)]
pub struct AdminAuth {
    /// sha256 of the operator token: compared in constant time.
    hash: Arc<String>,
    /// sha256 of the read-only operator token, when there is one.
    read_only_hash: Option<Arc<String>>,
    /// Where rejections are noted for the audit trail.
    refusals: Arc<RefusalLog>,
}

impl AdminAuth {
    pub fn new(token: &str, read_only_token: Option<&str>, refusals: Arc<RefusalLog>) -> Self {
        Self {
            hash: Arc::new(token_hash(token)),
            read_only_hash: read_only_token.map(|t| Arc::new(token_hash(t))),
            refusals,
        }
    }

    fn refused(&self, req: &Request<()>, reason: &str) {
        tracing::warn!(reason, "admin call rejected");
        self.refusals.refused("operator".into(), req.remote_addr(), "authenticate", "admin service", reason);
    }

    /// The role a presented token (the bare token, not a header) grants, if
    /// any: the one place a credential becomes an operator. Both hashes are
    /// always compared, so the time taken does not say which one matched.
    pub fn role(&self, token: &str) -> Option<OperatorRole> {
        let presented = token_hash(token);
        let full = hashes_equal(&presented, &self.hash);
        let read_only = self.read_only_hash.as_deref().is_some_and(|h| hashes_equal(&presented, h));
        match (full, read_only) {
            (true, _) => Some(OperatorRole::Full),
            (false, true) => Some(OperatorRole::ReadOnly),
            (false, false) => None,
        }
    }

    /// The role an `Authorization` header value grants, if any (for HTTP
    /// front doors; gRPC calls go through the interceptor below).
    pub fn role_of_header(&self, authorization: Option<&str>) -> Option<OperatorRole> {
        authorization.and_then(bearer_token).and_then(|t| self.role(t))
    }

    /// Notes a refused operator credential (a failed console login) for the
    /// audit trail.
    pub fn note_refusal(&self, peer: Option<SocketAddr>, object: &str, reason: &str) {
        tracing::warn!(reason, object, "operator credential refused");
        self.refusals.refused("operator".into(), peer, "authenticate", object, reason);
    }
}

/// Put into an admin request's extensions by [`AdminAuth`]: the caller
/// presented an operator credential, with this role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OperatorIdentity(pub OperatorRole);

impl Interceptor for AdminAuth {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let presented = req.metadata().get(AUTHORIZATION_METADATA).and_then(|v| v.to_str().ok());
        let Some(token) = presented.and_then(bearer_token) else {
            self.refused(&req, "no operator token");
            return Err(Status::unauthenticated(
                "missing operator token: give --token-file, KILN_TOKEN_FILE or KILN_TOKEN (the server's DATA_DIR/admin-token)",
            ));
        };
        match self.role(token) {
            Some(role) => {
                req.extensions_mut().insert(OperatorIdentity(role));
                Ok(req)
            }
            None => {
                self.refused(&req, "wrong operator token");
                Err(Status::unauthenticated("invalid operator token"))
            }
        }
    }
}

/// The operator token: read from `explicit` when given, otherwise from
/// `DATA_DIR/admin-token`, created (random, mode 0600) at the first start.
pub fn load_or_create_admin_token(data_dir: &Path, explicit: Option<&Path>) -> anyhow::Result<(String, PathBuf)> {
    load_or_create_token(data_dir, "admin-token", "--admin-token-file", explicit)
}

/// The read-only operator token: read from `explicit` when given,
/// otherwise from `DATA_DIR/read-only-token`, created (random, mode 0600)
/// at the first start like the operator token, so that a console viewer or
/// a monitoring script never needs the credential that changes things.
pub fn load_or_create_read_only_token(data_dir: &Path, explicit: Option<&Path>) -> anyhow::Result<(String, PathBuf)> {
    load_or_create_token(data_dir, "read-only-token", "--read-only-token-file", explicit)
}

fn load_or_create_token(
    data_dir: &Path,
    default_name: &str,
    flag: &str,
    explicit: Option<&Path>,
) -> anyhow::Result<(String, PathBuf)> {
    let path = explicit.map_or_else(|| data_dir.join(default_name), Path::to_path_buf);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let token = text.trim().to_string();
            anyhow::ensure!(!token.is_empty(), "{flag} {}: the file is empty", path.display());
            Ok((token, path))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && explicit.is_none() => {
            let token = new_token();
            write_secret(&path, token.as_bytes())?;
            Ok((token, path))
        }
        Err(e) => Err(anyhow::anyhow!("{flag} {}: {e}", path.display())),
    }
}

/// Writes a file only its owner can read (see [`kiln_proto::secret_file`]).
pub fn write_secret(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    Ok(kiln_proto::secret_file::write(path, bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ApplyBatch;
    use crate::store::sqlite::SqliteStore;
    use tonic::Code;

    #[test]
    fn tokens_are_random_prefixed_and_hashed() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert!(a.starts_with("kiln_") && a.len() == 5 + 43, "{a}");
        assert_eq!(token_hash(&a).len(), 64);
        assert_eq!(token_hash(&a), token_hash(&a));
        assert_ne!(token_hash(&a), token_hash(&b));
    }

    fn headers(agent: Option<&str>, token: Option<&str>) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        if let Some(a) = agent {
            h.insert(AGENT_ID_METADATA, a.parse().unwrap());
        }
        if let Some(t) = token {
            h.insert(AUTHORIZATION_METADATA, format!("Bearer {t}").parse().unwrap());
        }
        h
    }

    fn hw(id: &str, agent: &str) -> kiln_documents::HardwareDoc {
        kiln_documents::HardwareDoc {
            id: id.into(),
            agent_id: agent.into(),
            macs: vec![],
            disks: vec![],
            metadata: serde_json::json!({}),
            netboot: true,
            spec: serde_json::Value::Null,
            object_meta: serde_json::Value::Null,
            bmc: None,
            root_disk: None,
        }
    }

    #[tokio::test]
    async fn agent_tokens_missing_wrong_revoked_and_foreign_are_rejected() {
        let store: DynStore = Arc::new(SqliteStore::open_in_memory().unwrap());
        let (tx, ty) = (new_token(), new_token());
        store
            .apply(ApplyBatch {
                hardware: vec![hw("x", "agent-x"), hw("y", "agent-y")],
                token_hashes: [("x".to_string(), token_hash(&tx)), ("y".to_string(), token_hash(&ty))].into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let auth = AgentAuth {
            store: store.clone(),
            require_client_cert: false,
            verified: Arc::default(),
            refusals: Arc::default(),
        };
        let ext = http::Extensions::new();
        let code = |r: Result<AgentIdentity, Status>| r.map_err(|s| s.code());
        assert_eq!(
            code(auth.authenticate(&headers(Some("agent-x"), Some(&tx)), &ext).await),
            Ok(AgentIdentity("agent-x".into()))
        );
        assert_eq!(code(auth.authenticate(&headers(Some("agent-x"), None), &ext).await), Err(Code::Unauthenticated));
        assert_eq!(code(auth.authenticate(&headers(None, Some(&tx)), &ext).await), Err(Code::Unauthenticated));
        assert_eq!(
            code(auth.authenticate(&headers(Some("agent-x"), Some(&new_token())), &ext).await),
            Err(Code::Unauthenticated)
        );
        assert_eq!(
            code(auth.authenticate(&headers(Some("nobody"), Some(&new_token())), &ext).await),
            Err(Code::Unauthenticated)
        );
        assert_eq!(
            code(auth.authenticate(&headers(Some("agent-y"), Some(&tx)), &ext).await),
            Err(Code::PermissionDenied)
        );
        store.set_token_hash("x", None).await.unwrap();
        // A revocation this server did not see (another replica's) is
        // noticed when the verified token expires; the admin service
        // invalidates the cache with every change it makes.
        assert_eq!(
            code(auth.authenticate(&headers(Some("agent-x"), Some(&tx)), &ext).await),
            Ok(AgentIdentity("agent-x".into()))
        );
        auth.verified.invalidate();
        assert_eq!(
            code(auth.authenticate(&headers(Some("agent-x"), Some(&tx)), &ext).await),
            Err(Code::Unauthenticated)
        );
        // A rejected token is never remembered: rotating back in works at once.
        let tx2 = new_token();
        store.set_token_hash("x", Some(token_hash(&tx2))).await.unwrap();
        assert_eq!(
            code(auth.authenticate(&headers(Some("agent-x"), Some(&tx2)), &ext).await),
            Ok(AgentIdentity("agent-x".into()))
        );
        assert_eq!(
            code(auth.authenticate(&headers(Some("agent-x"), Some(&tx)), &ext).await),
            Err(Code::Unauthenticated),
            "the old token, not cached, is still refused"
        );
        let strict = AgentAuth { store, require_client_cert: true, verified: Arc::default(), refusals: Arc::default() };
        assert_eq!(
            code(strict.authenticate(&headers(Some("agent-y"), Some(&ty)), &ext).await),
            Err(Code::Unauthenticated)
        );
    }

    #[test]
    fn admin_token_is_checked_and_created_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (token, path) = load_or_create_admin_token(dir.path(), None).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(load_or_create_admin_token(dir.path(), None).unwrap().0, token, "kept across restarts");
        let missing = load_or_create_admin_token(dir.path(), Some(&dir.path().join("nope"))).unwrap_err();
        assert!(missing.to_string().contains("--admin-token-file"), "{missing}");
        let (read_only, ro_path) = load_or_create_read_only_token(dir.path(), None).unwrap();
        assert_eq!(ro_path, dir.path().join("read-only-token"));
        assert_eq!(std::fs::metadata(&ro_path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_ne!(read_only, token);
        std::fs::write(dir.path().join("empty"), "\n").unwrap();
        let empty = load_or_create_read_only_token(dir.path(), Some(&dir.path().join("empty"))).unwrap_err();
        assert!(empty.to_string().starts_with("--read-only-token-file "), "{empty}");

        let mut auth = AdminAuth::new(&token, Some(&read_only), Arc::default());
        let call = |auth: &mut AdminAuth, value: Option<String>| {
            let mut req = Request::new(());
            if let Some(v) = value {
                req.metadata_mut().insert(AUTHORIZATION_METADATA, v.parse().unwrap());
            }
            auth.call(req).map(|r| r.extensions().get::<OperatorIdentity>().copied()).map_err(|s| s.code())
        };
        assert_eq!(call(&mut auth, Some(format!("Bearer {token}"))), Ok(Some(OperatorIdentity(OperatorRole::Full))));
        assert_eq!(
            call(&mut auth, Some(format!("Bearer {read_only}"))),
            Ok(Some(OperatorIdentity(OperatorRole::ReadOnly)))
        );
        assert_eq!(call(&mut auth, None), Err(Code::Unauthenticated));
        assert_eq!(call(&mut auth, Some(format!("Bearer {}", new_token()))), Err(Code::Unauthenticated));
        assert_eq!(call(&mut auth, Some(token.clone())), Err(Code::Unauthenticated), "scheme required");
        assert_eq!(auth.role_of_header(Some(&format!("bearer {read_only}"))), Some(OperatorRole::ReadOnly));
        assert_eq!(auth.role_of_header(Some("Bearer ")), None);
        // Without a read-only credential configured, only the full one works.
        let full_only = AdminAuth::new(&token, None, Arc::default());
        assert_eq!(full_only.role(&read_only), None);
        assert_eq!(full_only.role(&token), Some(OperatorRole::Full));
    }
}

#[cfg(test)]
mod cache_tests {
    use super::*;

    #[test]
    fn a_lookup_that_raced_an_invalidation_is_not_remembered() {
        let cache = VerifiedTokens::default();
        let before = cache.generation();
        cache.invalidate();
        cache.remember("a", "h".into(), before);
        assert!(!cache.accepts("a", "h"));
        cache.remember("a", "h".into(), cache.generation());
        assert!(cache.accepts("a", "h"));
        assert!(!cache.accepts("a", "other"));
        assert!(!cache.accepts("b", "h"));
        cache.invalidate();
        assert!(!cache.accepts("a", "h"));
    }
}
