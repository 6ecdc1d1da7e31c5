use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use kiln_server::{Server, ServerConfig};

/// kiln server: stores hardware, templates and workflows, and hands actions
/// to machine agents.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Address for both the agent and the admin gRPC services.
    #[arg(long, env = "KILN_LISTEN", default_value = "127.0.0.1:42113")]
    listen: SocketAddr,
    /// Directory of the embedded store and of artifacts (created if missing).
    #[arg(long, env = "KILN_DATA_DIR", default_value = "/var/lib/kiln")]
    data_dir: PathBuf,
    /// The store: `postgres://USER[:PASSWORD]@HOST[:PORT]/DB` for a
    /// PostgreSQL several servers share, or `sqlite://DIR`. Default: the
    /// embedded SQLite store in --data-dir.
    #[arg(long, env = "KILN_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Allow only action images from this registry or repository prefix
    /// (`REGISTRY[:PORT][/PATH]`); repeat for several. Default: any.
    #[arg(long = "allow-image", value_name = "PATTERN")]
    allow_images: Vec<String>,
    /// Allow only images pinned by digest (`...@sha256:...`).
    #[arg(long)]
    digests_only: bool,
    /// Largest artifact (one file of an action's /out) accepted, in bytes.
    #[arg(long, default_value_t = kiln_server::artifacts::DEFAULT_MAX_ARTIFACT_BYTES)]
    max_artifact_bytes: u64,
    /// Directory with the hook image (`vmlinuz`, `hook.cpio.zst` from
    /// hook-image/build.sh), served to network-booting machines.
    #[arg(long, env = "KILN_HOOK_DIR")]
    hook_dir: Option<PathBuf>,
    /// Extra kernel parameters for the hook image, e.g. `console=ttyS0`.
    #[arg(long, default_value = "")]
    hook_cmdline: String,
    /// This server's URL as machines reach it (default: the Host header of
    /// their request).
    #[arg(long)]
    public_url: Option<String>,
    /// How long an open attempt survives without a heartbeat from its agent
    /// (agents renew every third of it). When it runs out the attempt is
    /// FAILED with reason AgentLost and the action's retries apply.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_lease)]
    attempt_lease: humantime::Duration,
    /// Write the bound address here once listening (useful with port 0).
    #[arg(long)]
    addr_file: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let image_policy =
        kiln_spec::ImagePolicy::new(&args.allow_images, args.digests_only).map_err(anyhow::Error::msg)?;
    let database = kiln_server::store::DatabaseUrl::parse(args.database_url.as_deref(), &args.data_dir)
        .map_err(anyhow::Error::msg)?;
    let config = ServerConfig {
        listen: args.listen,
        data_dir: args.data_dir.clone(),
        database: database.clone(),
        image_policy,
        max_artifact_bytes: args.max_artifact_bytes,
        netboot: kiln_server::netboot::NetbootConfig {
            hook_dir: args.hook_dir.clone(),
            cmdline: args.hook_cmdline.clone(),
            public_url: args.public_url.clone(),
        },
        lease: args.attempt_lease.into(),
    };
    let server = Server::bind(&config).await?;
    let addr = server.local_addr()?;
    tracing::info!(%addr, data_dir = %args.data_dir.display(), store = %database.display(), "kiln-server listening");
    if let Some(path) = &args.addr_file {
        // Written whole under a temporary name, so a reader never sees half.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, addr.to_string())?;
        std::fs::rename(&tmp, path)?;
    }
    server.serve(shutdown_signal()).await
}

fn parse_lease(s: &str) -> Result<humantime::Duration, String> {
    let d: humantime::Duration = s.parse().map_err(|e| format!("{e} (e.g. 30s, 2m)"))?;
    if std::time::Duration::from(d) < std::time::Duration::from_millis(300) {
        return Err("must be at least 300ms (agents renew every third of it)".into());
    }
    Ok(d)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    tracing::info!("shutting down");
}
