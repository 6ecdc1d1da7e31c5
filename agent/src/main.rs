use std::path::PathBuf;

use clap::{Parser, Subcommand};
use kiln_agent::Agent;
use kiln_agent::config::AgentConfig;

/// kiln agent: runs the actions the kiln server hands to this machine.
#[derive(Parser)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
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
    /// Export this agent's spans (pull, run, report of each attempt, in its
    /// workflow's trace) to this OTLP/gRPC endpoint. Off by default.
    #[arg(long, env = "KILN_OTLP_ENDPOINT", value_name = "URL")]
    otlp_endpoint: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Load the kernel modules of the devices present and the ones named
    /// (udev's job at boot; the hook image's /init runs this). Prints one
    /// summary line; failures are in it, and are not an error.
    Coldplug {
        /// Also load these modules, whatever the hardware.
        #[arg(long, value_delimiter = ',')]
        load: Vec<String>,
        /// Module directory (default: /lib/modules/RELEASE of this kernel).
        #[arg(long)]
        modules_dir: Option<PathBuf>,
        /// Print each module loaded and the device (modalias) it is for.
        #[arg(long, short)]
        verbose: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.command {
        Some(Command::Coldplug { load, modules_dir, verbose }) => {
            // No async runtime: this runs early in the hook's boot, where
            // every thread started costs.
            let options = kiln_coldplug::Options { also: load, ..Default::default() };
            let report = kiln_coldplug::run_here(modules_dir.as_deref(), &options)?;
            if verbose {
                for l in &report.loaded {
                    eprintln!("coldplug: {:.2} s {} <- {}", l.at.as_secs_f64(), l.module, l.because);
                }
            }
            println!("{report}");
            Ok(())
        }
        None => tokio::runtime::Runtime::new()?.block_on(run_agent(args)),
    }
}

async fn run_agent(args: Args) -> anyhow::Result<()> {
    // The configuration may name the trace endpoint: read it first (its
    // errors are returned before any log output exists, and main prints them).
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
    if args.otlp_endpoint.is_some() {
        config.otlp_endpoint = args.otlp_endpoint;
    }
    let _telemetry =
        kiln_telemetry::Telemetry::init(config.otlp_endpoint.as_deref().filter(|e| !e.is_empty()).map(|endpoint| {
            kiln_telemetry::TraceExport { endpoint, service: "kiln-agent", span_targets: &["kiln_agent::lifecycle"] }
        }))?;
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
