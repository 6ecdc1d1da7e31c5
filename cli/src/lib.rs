//! `kiln`, the operator's command line. Every command is one or two calls
//! of the admin service; errors become one `error: ...` line and exit 1.
//!
//! This file is the command line itself (clap) and the dispatch to
//! `commands`, one module per command.

mod commands;
mod connection;
mod credential;
mod files;
pub mod output;
pub mod view;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::commands as cmd;
use crate::output::Format;

/// kiln: provision bare-metal machines with container actions.
#[derive(Parser)]
#[command(name = "kiln", version)]
pub struct Cli {
    /// The kiln server (`http://` only for a `--plaintext` server).
    #[arg(long, global = true, env = "KILN_SERVER", default_value = "https://127.0.0.1:42113")]
    server: String,
    /// CA (PEM) that signed the server's certificate, e.g. the server's
    /// DATA_DIR/tls/ca.pem with --dev-tls.
    #[arg(long, global = true, env = "KILN_CA")]
    ca: Option<std::path::PathBuf>,
    /// File with the operator credential (the server's DATA_DIR/admin-token).
    /// KILN_TOKEN may hold the credential itself instead.
    #[arg(long, global = true, env = "KILN_TOKEN_FILE")]
    token_file: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create or update hardware, templates and workflows from YAML documents.
    Apply {
        /// File to read (`-` for stdin); may repeat.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<String>,
    },
    /// List objects of a kind, or show one.
    Get {
        kind: Kind,
        name: Option<String>,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Show one object in detail (hardware: with the inventory its agent
    /// reported).
    Describe {
        kind: Kind,
        name: String,
        /// Everything, as JSON or YAML, instead of the readable summary.
        #[arg(short, long, value_enum)]
        output: Option<Format>,
    },
    /// Delete one object.
    Delete { kind: Kind, name: String },
    /// Show the actions a workflow runs, rendered, without running anything;
    /// or, as `kiln plan rule [NAME] --machine DISCOVERED`, what the rules
    /// (or one) would do with a discovered machine.
    Plan {
        /// Render this workflow document (with any hardware/template documents beside it).
        #[arg(short = 'f', long = "filename", conflicts_with = "workflow")]
        file: Option<String>,
        /// Show the plan of an existing workflow (or `rule`, with --machine).
        workflow: Option<String>,
        /// With `rule`: the rule to plan (all, in order, when left out).
        #[arg(requires = "machine")]
        rule: Option<String>,
        /// The discovered machine (discovered-MAC, or its MAC) a rule plan is for.
        #[arg(long)]
        machine: Option<String>,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Files actions left in /out.
    Artifacts {
        #[command(subcommand)]
        command: ArtifactsCommand,
    },
    /// Agent tokens: rotate (print a new one; the old stops working) or revoke.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Client certificates for agents (mutual TLS).
    Cert {
        #[command(subcommand)]
        command: CertCommand,
    },
    /// Resume a FAILED or TIMEOUT workflow from its failed action.
    Retry { workflow: String },
    /// Turn a discovered machine (server --discovery) into a normal Hardware
    /// named NEWNAME that keeps its MAC (and its enrolled agent and inventory).
    Adopt {
        /// The discovered machine (`kiln get hardware` shows its state).
        name: String,
        #[arg(long = "as", value_name = "NEWNAME")]
        new_name: String,
    },
    /// Follow a workflow until it ends; exits 0 on SUCCESS, 1 otherwise.
    Watch { workflow: String },
    /// Print a workflow's action output (stdout and stderr, in order).
    Logs {
        workflow: String,
        /// Only this action (`name` or `task/name`).
        action: Option<String>,
        /// Keep following until the workflow (or the action) ends.
        #[arg(short, long)]
        follow: bool,
        /// `json`: one object per line.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// A machine's power, through its BMC (the hardware's bmc: section);
    /// prints the state the BMC reports after the action.
    Power {
        action: PowerAction,
        hardware: String,
        /// Submit it as a durable job (retried, survives a server restart;
        /// see kiln get bmc-jobs) instead of waiting for the BMC.
        #[arg(long)]
        job: bool,
        /// With --job: submitting again with this key returns the first job.
        #[arg(long, requires = "job")]
        key: Option<String>,
    },
    /// Set the device a machine boots from, through its BMC.
    Boot {
        hardware: String,
        #[arg(long, value_enum)]
        device: BootDevice,
        /// Next boot only (otherwise every boot).
        #[arg(long)]
        once: bool,
        /// Boot in UEFI mode.
        #[arg(long, conflicts_with = "legacy")]
        uefi: bool,
        /// Boot in legacy (BIOS) mode.
        #[arg(long)]
        legacy: bool,
        /// Submit it as a durable job instead of waiting for the BMC.
        #[arg(long)]
        job: bool,
        /// With --job: submitting again with this key returns the first job.
        #[arg(long, requires = "job")]
        key: Option<String>,
    },
    /// A machine's virtual CD drive, through its BMC (Redfish).
    Media {
        #[command(subcommand)]
        command: MediaCommand,
    },
    /// The audit trail: operator writes and refused credentials, oldest first.
    Events {
        /// Keep following: print each new event as it is stored.
        #[arg(short, long)]
        follow: bool,
        /// Only events since DURATION ago (`1h`, `2d`) or TIME (`2026-01-31T12:00:00Z`).
        #[arg(long, value_name = "DURATION|TIME")]
        since: Option<String>,
        /// Only operator writes or only refused credentials.
        #[arg(long, value_enum)]
        kind: Option<EventKind>,
        /// Show at most the newest N (at most 10000).
        #[arg(long, value_name = "N", default_value_t = 100)]
        limit: u32,
        /// `json`/`yaml`: a list; with `-f`, one object (JSON line, YAML document) per event.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PowerAction {
    /// Read the power state.
    Status,
    On,
    /// Hard off.
    Off,
    /// Off then on (on when off).
    Cycle,
    /// Hard reset.
    Reset,
    /// Ask the OS to shut down.
    SoftOff,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BootDevice {
    /// Network boot (PXE).
    Pxe,
    /// UEFI HTTP boot (Redfish only).
    Http,
    Disk,
    /// CD/DVD, virtual media included.
    Cd,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum EventKind {
    /// Operator writes (apply, delete, retry, tokens, certificates).
    Write,
    /// Refused credentials (agents, the operator credential, action tokens).
    Security,
}

#[derive(Subcommand)]
enum MediaCommand {
    /// Insert the ISO at URL (the BMC downloads it) into MACHINE's virtual CD drive.
    Insert { hardware: String, url: String },
    /// Eject MACHINE's virtual CD.
    Eject { hardware: String },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// A new token for HARDWARE's agent, printed once.
    Rotate { hardware: String },
    /// HARDWARE's agent has no valid token until the next rotate.
    Revoke { hardware: String },
}

#[derive(Subcommand)]
enum CertCommand {
    /// Have the server sign a client certificate for HARDWARE's agent; writes
    /// agent.pem, agent.key (0600) and ca.pem into DIR.
    Issue {
        hardware: String,
        #[arg(long)]
        out: std::path::PathBuf,
    },
}

#[derive(Subcommand)]
enum ArtifactsCommand {
    /// List a workflow's artifacts with size and sha256.
    List {
        workflow: String,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Write one artifact to stdout or a file (of the action's latest attempt that has it).
    Get {
        workflow: String,
        /// Action name or task/name.
        action: String,
        path: String,
        /// Write here instead of stdout.
        #[arg(short = 'f', long = "file")]
        file: Option<std::path::PathBuf>,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Kind {
    /// ActionDefinitions (typed actions).
    #[value(alias = "actions", alias = "actiondefinition", alias = "actiondefinitions")]
    Action,
    #[value(alias = "hw")]
    Hardware,
    #[value(alias = "templates", alias = "tpl")]
    Template,
    #[value(alias = "workflows", alias = "wf")]
    Workflow,
    /// BMC jobs (kiln power/boot --job); get only.
    #[value(name = "bmc-jobs", alias = "bmc-job", alias = "bmcjobs")]
    BmcJobs,
    /// Rules that adopt discovered machines (docs/rules.md).
    #[value(alias = "rules")]
    Rule,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Action => "action",
            Self::Hardware => "hardware",
            Self::Template => "template",
            Self::Workflow => "workflow",
            Self::BmcJobs => "bmc-job",
            Self::Rule => "rule",
        }
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut c = connection::connect(&cli.server, cli.ca.as_deref(), cli.token_file.as_deref()).await?;
    match cli.command {
        Command::Apply { files } => cmd::apply::run(&mut c, files).await?,
        Command::Get { kind, name, output } => cmd::get::run(&mut c, kind, name, output).await?,
        Command::Describe { kind, name, output } => cmd::describe::run(&mut c, kind, &name, output).await?,
        Command::Delete { kind, name } => cmd::delete::run(&mut c, kind, name).await?,
        Command::Plan { file: _, workflow, rule, machine: Some(machine), output } => match workflow.as_deref() {
            Some("rule" | "rules") => cmd::plan::rules(&mut c, rule, machine, output).await?,
            _ => anyhow::bail!("--machine plans rules: kiln plan rule [NAME] --machine DISCOVERED"),
        },
        Command::Plan { file, workflow, rule: _, machine: None, output } => {
            cmd::plan::run(&mut c, file, workflow, output).await?
        }
        Command::Artifacts { command: ArtifactsCommand::List { workflow, output } } => {
            cmd::artifacts::list(&mut c, workflow, output).await?
        }
        Command::Artifacts { command: ArtifactsCommand::Get { workflow, action, path, file } } => {
            cmd::artifacts::get(&mut c, workflow, action, path, file.as_deref()).await?
        }
        Command::Token { command: TokenCommand::Rotate { hardware } } => cmd::token::rotate(&mut c, hardware).await?,
        Command::Token { command: TokenCommand::Revoke { hardware } } => cmd::token::revoke(&mut c, hardware).await?,
        Command::Cert { command: CertCommand::Issue { hardware, out } } => {
            cmd::cert::issue(&mut c, hardware, &out).await?
        }
        Command::Retry { workflow } => cmd::retry::run(&mut c, workflow).await?,
        Command::Adopt { name, new_name } => cmd::apply::adopt(&mut c, name, new_name).await?,
        Command::Watch { workflow } => return cmd::watch::run(&mut c, workflow).await,
        Command::Logs { workflow, action, follow, output } => {
            cmd::logs::run(&mut c, workflow, action, follow, output).await?
        }
        Command::Power { action, hardware, job, key } => {
            let action = action.to_possible_value().expect("no skipped values");
            if job {
                let request = kiln_proto::v1::BmcJobRequest {
                    hardware,
                    power_action: action.get_name().to_string(),
                    key: key.unwrap_or_default(),
                    ..Default::default()
                };
                cmd::power::submit(&mut c, request).await?
            } else {
                cmd::power::power(&mut c, action.get_name(), hardware).await?
            }
        }
        Command::Boot { hardware, device, once, uefi, legacy, job, key } => {
            let device = device.to_possible_value().expect("no skipped values");
            let mode = if uefi {
                "uefi"
            } else if legacy {
                "legacy"
            } else {
                ""
            };
            if job {
                let request = kiln_proto::v1::BmcJobRequest {
                    hardware,
                    boot_device: device.get_name().to_string(),
                    once,
                    mode: mode.to_string(),
                    key: key.unwrap_or_default(),
                    ..Default::default()
                };
                cmd::power::submit(&mut c, request).await?
            } else {
                cmd::power::boot(&mut c, hardware, device.get_name(), once, mode).await?
            }
        }
        Command::Media { command: MediaCommand::Insert { hardware, url } } => {
            cmd::power::media(&mut c, hardware, url).await?
        }
        Command::Media { command: MediaCommand::Eject { hardware } } => {
            cmd::power::media(&mut c, hardware, String::new()).await?
        }
        Command::Events { follow, since, kind, limit, output } => {
            let kind = kind.map(|k| if k == EventKind::Write { "write" } else { "security" }.to_string());
            cmd::events::run(&mut c, cmd::events::Query { follow, since, kind, limit }, output).await?
        }
    }
    Ok(ExitCode::SUCCESS)
}
