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

/// How often running workflows are checked against their global timeout.
const DEADLINE_SWEEP: Duration = Duration::from_secs(1);

pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Which action images templates may name.
    pub image_policy: kiln_spec::ImagePolicy,
    /// Largest artifact accepted, in bytes.
    pub max_artifact_bytes: u64,
    /// What machines network-boot (`/boot/...`).
    pub netboot: netboot::NetbootConfig,
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

/// A bound, not yet serving, kiln server.
pub struct Server {
    listener: TcpListener,
    store: DynStore,
    events: Arc<Events>,
    image_policy: kiln_spec::ImagePolicy,
    artifacts: artifacts::ArtifactFiles,
    token_key: action_api::TokenKey,
    netboot: netboot::NetbootConfig,
    tls: Option<tls::ServerTls>,
    admin_token: String,
    signing_ca: Option<tls::SigningCa>,
    netboot_listener: Option<TcpListener>,
    /// Built (and so checked) when binding, before anything is served.
    rustls: Option<Arc<rustls::ServerConfig>>,
}

impl Server {
    /// Opens the embedded store in `data_dir` and binds the listen address.
    pub async fn bind(config: &ServerConfig) -> anyhow::Result<Self> {
        let store: DynStore = Arc::new(store::sqlite::SqliteStore::open(&config.data_dir)?);
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
            events: Arc::new(Events::default()),
            image_policy: config.image_policy.clone(),
            artifacts: artifacts::ArtifactFiles::new(&config.data_dir, config.max_artifact_bytes),
            token_key: action_api::TokenKey::load_or_create(&config.data_dir)?,
            netboot: config.netboot.clone(),
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
        let agent = auth::AgentAuthService::new(
            AgentServiceServer::new(agent_api::AgentApi::new(
                self.store.clone(),
                self.events.clone(),
                self.artifacts.clone(),
                self.token_key.clone(),
            )),
            Arc::new(auth::AgentAuth {
                store: self.store.clone(),
                require_client_cert: self.tls.as_ref().is_some_and(|t| t.require_client_cert),
            }),
        );
        let admin = AdminServiceServer::with_interceptor(
            admin_api::AdminApi::new(
                self.store.clone(),
                self.events.clone(),
                self.image_policy.clone(),
                self.artifacts.clone(),
            )
            .with_signing_ca(self.signing_ca.clone()),
            auth::AdminAuth::new(&self.admin_token),
        );
        let sweeper = tokio::spawn(sweep_deadlines(self.store.clone(), self.events.clone()));
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
        let _ = stop_netboot.send(());
        if let Some(task) = netboot_task {
            let _ = task.await;
        }
        Ok(result?)
    }
}

/// Ends workflows whose global timeout passed, even when no agent reports.
async fn sweep_deadlines(store: DynStore, events: Arc<Events>) {
    let mut tick = tokio::time::interval(DEADLINE_SWEEP);
    loop {
        tick.tick().await;
        let ids = match store.workflows_with_deadline().await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::error!(error = %e, "deadline sweep failed");
                continue;
            }
        };
        for id in ids {
            match store.update_workflow(&id, Box::new(|wf| Ok(state_machine::expire(wf, now_millis())))).await {
                Ok((_, true)) => {
                    tracing::warn!(workflow = %id, "global timeout passed");
                    events.workflow_changed(&id);
                }
                Ok(_) => {}
                Err(e) => tracing::error!(workflow = %id, error = %e, "deadline check failed"),
            }
        }
    }
}
