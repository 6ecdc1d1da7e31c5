//! kiln's server.
//!
//! - [`app`]: every use case (apply, dispatch, report, logs, artifacts,
//!   retry, credentials, boot decisions), each taking an operation context
//!   that says who acts, and the background tasks.
//! - [`state_machine`]: every change to a workflow.
//! - [`store`]: where everything is kept (SQLite or PostgreSQL).
//! - Front doors that only translate: [`agent_api`] and [`admin_api`]
//!   (gRPC), [`action_api`], [`netboot`], [`metrics_api`] and the web
//!   [`console`] (HTTP).
//!
//! [`Server`] assembles them; `main.rs` only parses arguments.

pub mod action_api;
pub mod admin_api;
pub mod admission;
pub mod agent_api;
pub mod app;
pub mod artifacts;
pub mod auth;
pub mod boot_services;
pub mod console;
pub mod convert;
pub mod events;
pub mod metrics;
pub mod metrics_api;
pub mod model;
pub mod netboot;
pub mod state_machine;
pub mod store;
pub mod tls;
pub mod traces;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kiln_proto::v1::admin_service_server::AdminServiceServer;
use kiln_proto::v1::agent_service_server::AgentServiceServer;
use kiln_proto::v1::enrolment_service_server::EnrolmentServiceServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use crate::app::{App, AppParts};
use crate::events::Events;

pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Artifacts, and the embedded store unless `database` says otherwise.
    pub data_dir: PathBuf,
    /// Which store: the embedded SQLite one or a shared PostgreSQL.
    pub database: store::DatabaseUrl,
    /// Which action images templates may name.
    pub image_policy: kiln_documents::ImagePolicy,
    /// `--image-rewrite` rules for action images (hub names to a mirror).
    pub image_rewrites: app::images::ImageRewrites,
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
    /// The read-only operator credential: admin reads, no changes.
    pub read_only_token: Option<String>,
    /// The CA `kiln cert issue` signs agent certificates with.
    pub signing_ca: Option<tls::SigningCa>,
    /// Plain HTTP address serving only the netboot routes (iPXE cannot
    /// speak our TLS).
    pub netboot_listen: Option<SocketAddr>,
    /// How long, and how many, audit events are kept.
    pub event_retention: app::audit::EventRetention,
    /// Plain HTTP address serving `/metrics` without authentication (for a
    /// private network); the main port serves it to operators regardless.
    pub metrics_listen: Option<SocketAddr>,
    /// Address of the web console (its own port; TLS like the main port
    /// when that has TLS). `None`: no console.
    pub console_listen: Option<SocketAddr>,
    /// ProxyDHCP, DHCP with reservations and TFTP; all off by default.
    pub boot_services: boot_services::BootServicesConfig,
    /// `--bmc-secret-key-file`: the key BmcSecrets are sealed with (default
    /// `DATA_DIR/bmc-secret.key`, created at the first start).
    pub bmc_secret_key_file: Option<PathBuf>,
}

/// The default attempt lease: agents renew it every 10 s, so a lost agent
/// is noticed within half a minute while two missed heartbeats are not.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// A bound, not yet serving, kiln server.
pub struct Server {
    listener: TcpListener,
    app: Arc<App>,
    /// Forwards other replicas' changes into the app's events (shared stores).
    forwarder: Option<tokio::task::JoinHandle<()>>,
    tls: Option<tls::ServerTls>,
    admin_token: String,
    read_only_token: Option<String>,
    netboot_listener: Option<TcpListener>,
    metrics_listener: Option<TcpListener>,
    console_listener: Option<TcpListener>,
    /// The console's TLS: the server's certificate, no client certificates
    /// (browsers have none).
    console_rustls: Option<Arc<rustls::ServerConfig>>,
    /// Built (and so checked) when binding, before anything is served.
    rustls: Option<Arc<rustls::ServerConfig>>,
    boot_services: boot_services::BoundBootServices,
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
        let metrics_listener = match config.metrics_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (--metrics-listen): {e}"))?,
            ),
            None => None,
        };
        let console_listener = match config.console_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (--console-listen): {e}"))?,
            ),
            None => None,
        };
        let console_rustls = match (&config.tls, &console_listener) {
            (Some(t), Some(_)) => {
                Some(tls::ServerTls { client_ca_pem: None, require_client_cert: false, ..t.clone() }.rustls_config()?)
            }
            _ => None,
        };
        let (bmc_key, _) =
            app::bmc::SecretKey::load_or_create(&config.data_dir, config.bmc_secret_key_file.as_deref())?;
        let mut app = App::new(
            store,
            AppParts {
                events,
                image_policy: config.image_policy.clone(),
                image_rewrites: config.image_rewrites.clone(),
                artifacts: artifacts::ArtifactFiles::new(&config.data_dir, config.max_artifact_bytes),
                token_key,
                lease: config.lease,
                signing_ca: config.signing_ca.clone(),
                netboot: config.netboot.clone(),
                event_retention: config.event_retention,
            },
        );
        app.set_bmc_secret_key(bmc_key);
        app.set_bmc_job_owner(app::bmc::load_or_create_runner_id(&config.data_dir)?);
        let app = Arc::new(app);
        let netboot_port = netboot_listener.as_ref().and_then(|l| l.local_addr().ok()).map(|a| a.port());
        let boot_services = boot_services::BoundBootServices::bind(&config.boot_services, &app, netboot_port)?;
        Ok(Self {
            listener,
            app,
            boot_services,
            forwarder,
            tls: config.tls.clone(),
            admin_token: config.admin_token.clone(),
            read_only_token: config.read_only_token.clone(),
            netboot_listener,
            metrics_listener,
            console_listener,
            console_rustls,
            rustls: config.tls.as_ref().map(tls::ServerTls::rustls_config).transpose()?,
        })
    }

    /// The bound `--netboot-listen` address, if any.
    pub fn netboot_addr(&self) -> Option<SocketAddr> {
        self.netboot_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The bound `--metrics-listen` address, if any.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The bound `--console-listen` address, if any.
    pub fn console_addr(&self) -> Option<SocketAddr> {
        self.console_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The bound `--tftp-listen` address, if any.
    pub fn tftp_addr(&self) -> Option<SocketAddr> {
        self.boot_services.tftp_addr()
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves every front door, and runs the background tasks, until
    /// `shutdown` completes.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        let app = self.app;
        let background = app::background::start(&app);
        let boot_tasks = self.boot_services.spawn();
        let agent = auth::AgentAuthService::new(
            AgentServiceServer::new(agent_api::AgentApi::new(app.clone())),
            Arc::new(auth::AgentAuth {
                store: app.store().clone(),
                require_client_cert: self.tls.as_ref().is_some_and(|t| t.require_client_cert),
                verified: app.verified_tokens().clone(),
                refusals: app.refusal_log().clone(),
            }),
        );
        let admin = AdminServiceServer::with_interceptor(
            admin_api::AdminApi::new(app.clone()),
            auth::AdminAuth::new(&self.admin_token, self.read_only_token.as_deref(), app.refusal_log().clone()),
        );
        // Enrolment: no agent authentication layer (see agent_api::EnrolmentApi).
        let enrolment = EnrolmentServiceServer::new(agent_api::EnrolmentApi::new(app.clone()));
        let mut routes = tonic::service::Routes::builder();
        routes.add_service(agent).add_service(admin).add_service(enrolment);
        // The action API is plain HTTP beside the gRPC services, on the same
        // port: actions reach it at the address their agent uses.
        let router = routes
            .routes()
            .into_axum_router()
            .merge(action_api::router(app.clone()))
            .merge(netboot::router(app.clone()))
            .merge(metrics_api::router(
                app.clone(),
                auth::AdminAuth::new(&self.admin_token, self.read_only_token.as_deref(), app.refusal_log().clone()),
            ));
        // Netboot, when asked, also on its own plain HTTP listener: iPXE
        // cannot verify our certificates, and these routes carry no secret.
        let (stop_netboot, netboot_stopped) = tokio::sync::oneshot::channel::<()>();
        let netboot_task = self.netboot_listener.map(|listener| {
            let routes = tonic::service::Routes::from(netboot::router(app.clone()));
            tokio::spawn(
                tonic::transport::Server::builder().accept_http1(true).add_routes(routes).serve_with_incoming_shutdown(
                    TcpListenerStream::new(listener),
                    async {
                        let _ = netboot_stopped.await;
                    },
                ),
            )
        });
        // Metrics, when asked, on their own plain HTTP listener without
        // authentication: for a scraper on a private network.
        let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
        let metrics_task = self.metrics_listener.map(|listener| {
            let routes = tonic::service::Routes::from(metrics_api::open_router(app.clone()));
            tokio::spawn(
                tonic::transport::Server::builder().accept_http1(true).add_routes(routes).serve_with_incoming_shutdown(
                    TcpListenerStream::new(listener),
                    async {
                        let _ = metrics_stopped.await;
                    },
                ),
            )
        });
        // The web console, when asked, on its own port.
        let (stop_console, console_stopped) = tokio::sync::oneshot::channel::<()>();
        let console_task = self.console_listener.map(|listener| {
            let routes = tonic::service::Routes::from(console::router(
                app.clone(),
                auth::AdminAuth::new(&self.admin_token, self.read_only_token.as_deref(), app.refusal_log().clone()),
                self.console_rustls.is_some(),
            ));
            let server = tonic::transport::Server::builder().tcp_nodelay(true).accept_http1(true).add_routes(routes);
            let stopped = async {
                let _ = console_stopped.await;
            };
            match self.console_rustls {
                Some(config) => {
                    tokio::spawn(server.serve_with_incoming_shutdown(tls::incoming(listener, config), stopped))
                }
                None => tokio::spawn(server.serve_with_incoming_shutdown(TcpListenerStream::new(listener), stopped)),
            }
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
        background.stop();
        for task in boot_tasks {
            task.abort();
        }
        if let Some(forwarder) = self.forwarder {
            forwarder.abort();
        }
        let _ = stop_netboot.send(());
        if let Some(task) = netboot_task {
            let _ = task.await;
        }
        let _ = stop_console.send(());
        if let Some(task) = console_task {
            let _ = task.await;
        }
        let _ = stop_metrics.send(());
        if let Some(task) = metrics_task {
            let _ = task.await;
        }
        Ok(result?)
    }
}
