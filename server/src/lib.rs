//! kiln's server: the workflow state machine ([`state_machine`]), the store
//! behind it ([`store`]), and the two gRPC services that drive it — one for
//! agents ([`agent_api`]) and one for operators ([`admin_api`]).
//!
//! [`Server`] assembles them; `main.rs` only parses arguments.

pub mod action_api;
pub mod admin_api;
pub mod admission;
pub mod agent_api;
pub mod artifacts;
pub mod auth;
pub mod convert;
pub mod events;
pub mod model;
pub mod netboot;
pub mod state_machine;
pub mod store;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kiln_proto::v1::admin_service_server::AdminServiceServer;
use kiln_proto::v1::agent_service_server::AgentServiceServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use crate::events::Events;
use crate::model::now_millis;
use crate::store::DynStore;

/// How often running workflows are checked against their global timeout
/// and open attempts against their lease.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Artifacts, and the embedded store unless `database` says otherwise.
    pub data_dir: PathBuf,
    /// Which store: the embedded SQLite one or a shared PostgreSQL.
    pub database: store::DatabaseUrl,
    /// Which action images templates may name.
    pub image_policy: kiln_documents::ImagePolicy,
    /// Largest artifact accepted, in bytes.
    pub max_artifact_bytes: u64,
    /// What machines network-boot (`/boot/...`).
    pub netboot: netboot::NetbootConfig,
    /// How long an open attempt survives without its agent's heartbeat.
    pub lease: Duration,
    /// TLS on the listen address; `None` is plaintext (only by the explicit
    /// `--plaintext`).
    pub tls: Option<tls::ServerTls>,
    /// The operator credential every admin call must present.
    pub admin_token: String,
    /// The CA `kiln cert issue` signs agent certificates with.
    pub signing_ca: Option<tls::SigningCa>,
    /// Plain HTTP address serving only the netboot routes (iPXE cannot
    /// speak our TLS).
    pub netboot_listen: Option<SocketAddr>,
}

/// The default attempt lease: agents renew it every 10 s, so a lost agent
/// is noticed within half a minute while two missed heartbeats are not.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// A bound, not yet serving, kiln server.
pub struct Server {
    listener: TcpListener,
    store: DynStore,
    events: Arc<Events>,
    image_policy: kiln_documents::ImagePolicy,
    artifacts: artifacts::ArtifactFiles,
    token_key: action_api::TokenKey,
    netboot: netboot::NetbootConfig,
    lease: Duration,
    /// Forwards other replicas' changes into `events` (shared stores).
    forwarder: Option<tokio::task::JoinHandle<()>>,
    tls: Option<tls::ServerTls>,
    admin_token: String,
    signing_ca: Option<tls::SigningCa>,
    netboot_listener: Option<TcpListener>,
    /// Built (and so checked) when binding, before anything is served.
    rustls: Option<Arc<rustls::ServerConfig>>,
}

impl Server {
    /// Opens the store `config.database` names and binds the listen address.
    pub async fn bind(config: &ServerConfig) -> anyhow::Result<Self> {
        let store = store::open(&config.database)
            .await
            .map_err(|e| anyhow::anyhow!("--database-url {}: {e}", config.database.display()))?;
        let events = Arc::new(Events::default());
        // Listening starts before serving: no change committed after this
        // server answers its first call goes unnoticed.
        let forwarder = store.forward_changes(events.clone());
        let token_key = action_api::TokenKey::load_shared(&store, &config.data_dir).await?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
        let netboot_listener = match config.netboot_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (--netboot-listen): {e}"))?,
            ),
            None => None,
        };
        Ok(Self {
            listener,
            store,
            events,
            image_policy: config.image_policy.clone(),
            artifacts: artifacts::ArtifactFiles::new(&config.data_dir, config.max_artifact_bytes),
            token_key,
            netboot: config.netboot.clone(),
            lease: config.lease,
            forwarder,
            tls: config.tls.clone(),
            admin_token: config.admin_token.clone(),
            signing_ca: config.signing_ca.clone(),
            netboot_listener,
            rustls: config.tls.as_ref().map(tls::ServerTls::rustls_config).transpose()?,
        })
    }

    /// The bound `--netboot-listen` address, if any.
    pub fn netboot_addr(&self) -> Option<SocketAddr> {
        self.netboot_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves both services until `shutdown` completes.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        let verified = Arc::new(auth::VerifiedTokens::default());
        // Credentials changed through another server (PostgreSQL's
        // notifications): forget what was verified here, so a revocation
        // anywhere takes effect everywhere at once.
        let mut credentials = self.events.credentials_subscription();
        let forget = {
            let verified = verified.clone();
            tokio::spawn(async move {
                while credentials.changed().await.is_ok() {
                    verified.invalidate();
                }
            })
        };
        let agent = auth::AgentAuthService::new(
            AgentServiceServer::new(agent_api::AgentApi::new(
                self.store.clone(),
                self.events.clone(),
                self.artifacts.clone(),
                self.token_key.clone(),
                self.lease,
            )),
            Arc::new(auth::AgentAuth {
                store: self.store.clone(),
                require_client_cert: self.tls.as_ref().is_some_and(|t| t.require_client_cert),
                verified: verified.clone(),
            }),
        );
        let admin = AdminServiceServer::with_interceptor(
            admin_api::AdminApi::new(
                self.store.clone(),
                self.events.clone(),
                self.image_policy.clone(),
                self.artifacts.clone(),
            )
            .with_signing_ca(self.signing_ca.clone())
            .with_verified_tokens(verified),
            auth::AdminAuth::new(&self.admin_token),
        );
        let sweeper = tokio::spawn(sweep(self.store.clone(), self.events.clone(), self.lease));
        // The action API is plain HTTP beside the gRPC services, on the same
        // port: actions reach it at the address their agent uses.
        let action_api = action_api::router(action_api::ActionApi {
            store: self.store.clone(),
            key: self.token_key.clone(),
            artifacts: self.artifacts.clone(),
        });
        let mut routes = tonic::service::Routes::builder();
        routes.add_service(agent).add_service(admin);
        let router = routes
            .routes()
            .into_axum_router()
            .merge(action_api)
            .merge(netboot::router(self.store.clone(), self.netboot.clone()));
        // Netboot, when asked, also on its own plain HTTP listener: iPXE
        // cannot verify our certificates, and these routes carry no secret.
        let (stop_netboot, netboot_stopped) = tokio::sync::oneshot::channel::<()>();
        let netboot_task = self.netboot_listener.map(|listener| {
            let routes = tonic::service::Routes::from(netboot::router(self.store.clone(), self.netboot.clone()));
            tokio::spawn(
                tonic::transport::Server::builder().accept_http1(true).add_routes(routes).serve_with_incoming_shutdown(
                    TcpListenerStream::new(listener),
                    async {
                        let _ = netboot_stopped.await;
                    },
                ),
            )
        });
        let server = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .accept_http1(true)
            .add_routes(tonic::service::Routes::from(router));
        let result = match self.rustls {
            // Our own acceptor rather than tonic's TLS: see
            // `ServerTls::rustls_config` (ALPN for HTTP/1.1 clients).
            Some(config) => {
                let incoming = tls::incoming(self.listener, config);
                server.serve_with_incoming_shutdown(incoming, shutdown).await
            }
            None => server.serve_with_incoming_shutdown(TcpListenerStream::new(self.listener), shutdown).await,
        };
        sweeper.abort();
        forget.abort();
        if let Some(forwarder) = self.forwarder {
            forwarder.abort();
        }
        let _ = stop_netboot.send(());
        if let Some(task) = netboot_task {
            let _ = task.await;
        }
        Ok(result?)
    }
}

/// Ends workflows whose global timeout passed, and attempts whose agent
/// stopped renewing their lease, even when no agent reports. Each candidate
/// is re-checked inside its own transaction, so a report or heartbeat that
/// lands first wins and several replicas may sweep the same store.
///
/// Leases are judged only once this server has been up for a whole lease:
/// while it (or every replica) was down, agents could not heartbeat, so a
/// lease that ran out during the outage says nothing about its agent.
async fn sweep(store: DynStore, events: Arc<Events>, lease: Duration) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    let leases_judged_from = now_millis() + lease.as_millis() as model::Millis;
    loop {
        tick.tick().await;
        let now = now_millis();
        match store.workflows_with_deadline().await {
            Ok(ids) => sweep_each(&store, &events, ids, "global timeout passed", state_machine::expire).await,
            Err(e) => tracing::error!(error = %e, "deadline sweep failed"),
        }
        if now < leases_judged_from {
            continue;
        }
        match store.workflows_with_expired_leases(now).await {
            Ok(ids) => {
                sweep_each(&store, &events, ids, "agent lost: attempt lease ran out", state_machine::lose_expired).await
            }
            Err(e) => tracing::error!(error = %e, "lease sweep failed"),
        }
    }
}

async fn sweep_each(
    store: &DynStore,
    events: &Events,
    ids: Vec<String>,
    what: &'static str,
    transition: fn(&mut model::Workflow, model::Millis) -> bool,
) {
    for id in ids {
        match store.update_workflow(&id, Box::new(move |wf| Ok(transition(wf, now_millis())))).await {
            Ok((wf, true)) => {
                tracing::warn!(workflow = %id, "{what}");
                events.workflow_changed(&id);
                // A retry of the lost action may be due for its agent.
                if let Some(next) = wf.current_action() {
                    events.wake_agent(next.agent_id());
                }
            }
            Ok(_) => {}
            Err(e) => tracing::error!(workflow = %id, error = %e, "{what}: check failed"),
        }
    }
}
