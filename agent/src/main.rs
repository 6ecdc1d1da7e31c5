use std::path::PathBuf;

use clap::Parser;
use kiln_agent::Agent;
use kiln_agent::config::AgentConfig;

/// kiln agent: runs the actions the kiln server hands to this machine.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Agent configuration file (YAML). Registry credentials go here.
    #[arg(long, short, env = "KILN_AGENT_CONFIG")]
    config: Option<PathBuf>,
    /// Server endpoint; overrides the config file's `server`.
    #[arg(long, env = "KILN_SERVER")]
    server: Option<String>,
    /// Agent id; overrides the config file (default: MAC of the first NIC).
    #[arg(long, env = "KILN_AGENT_ID")]
    agent_id: Option<String>,
    /// Docker endpoint; overrides the config file.
    #[arg(long, env = "KILN_DOCKER_HOST")]
    docker_host: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let mut config = match &args.config {
        Some(path) => AgentConfig::load(path)?,
        None => AgentConfig::parse(&format!(
            "server: {:?}\n",
            args.server.clone().ok_or_else(|| anyhow::anyhow!("give --config FILE or --server URL"))?
        ))?,
    };
    if let Some(server) = args.server {
        config.server = server;
    }
    if args.agent_id.is_some() {
        config.agent_id = args.agent_id;
    }
    if let Some(host) = args.docker_host {
        config.docker_host = host;
    }
    let agent = Agent::new(config).await?;
    agent.run(shutdown_signal()).await;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}
