//! `kiln`, the operator's command line. Every command is one or two calls
//! of the admin service; errors become one `error: ...` line and exit 1.

pub mod output;
pub mod view;
pub mod watch;

use std::io::Read;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use futures_util::StreamExt;
use kiln_proto::v1::admin_service_client::AdminServiceClient;
use kiln_proto::v1::{
    ApplyRequest, DeleteRequest, GetRequest, ListRequest, LogStream, LogsRequest, PlanRequest, plan_request,
};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::output::{Format, age, between, elapsed, structured, table};
use crate::view::{action_state, workflow_state};

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
    /// Show one object in detail.
    Describe { kind: Kind, name: String },
    /// Delete one object.
    Delete { kind: Kind, name: String },
    /// Show the actions a workflow runs, rendered, without running anything.
    Plan {
        /// Render this workflow document (with any hardware/template documents beside it).
        #[arg(short = 'f', long = "filename", conflicts_with = "workflow")]
        file: Option<String>,
        /// Show the plan of an existing workflow.
        workflow: Option<String>,
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
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Action => "action",
            Self::Hardware => "hardware",
            Self::Template => "template",
            Self::Workflow => "workflow",
        }
    }
}

/// Adds the operator credential to every call.
#[derive(Clone)]
struct OperatorToken(tonic::metadata::AsciiMetadataValue);

impl tonic::service::Interceptor for OperatorToken {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert(kiln_proto::AUTHORIZATION_METADATA, self.0.clone());
        Ok(req)
    }
}

type Client = AdminServiceClient<InterceptedService<Channel, OperatorToken>>;

/// The operator credential: `--token-file`/`KILN_TOKEN_FILE`, else `KILN_TOKEN`.
fn operator_token(file: Option<&std::path::Path>) -> anyhow::Result<OperatorToken> {
    let token = match (file, std::env::var("KILN_TOKEN")) {
        (Some(f), _) => {
            std::fs::read_to_string(f).with_context(|| format!("--token-file {}", f.display()))?.trim().to_string()
        }
        (None, Ok(t)) => t.trim().to_string(),
        (None, Err(_)) => bail!(
            "no operator credential: give --token-file FILE (the server's DATA_DIR/admin-token), \
             KILN_TOKEN_FILE or KILN_TOKEN"
        ),
    };
    if token.is_empty() {
        bail!("the operator credential (--token-file / KILN_TOKEN) is empty");
    }
    let mut value: tonic::metadata::AsciiMetadataValue =
        format!("Bearer {token}").parse().map_err(|_| anyhow::anyhow!("the operator credential is not ASCII"))?;
    value.set_sensitive(true);
    Ok(OperatorToken(value))
}

async fn connect(cli: &Cli) -> anyhow::Result<Client> {
    let server = cli.server.as_str();
    let ca_pem = match &cli.ca {
        Some(p) => Some(std::fs::read(p).with_context(|| format!("--ca {}", p.display()))?),
        None => None,
    };
    let token = operator_token(cli.token_file.as_deref())?;
    let endpoint = kiln_proto::connect::endpoint(server, &kiln_proto::connect::ClientTls { ca_pem, identity: None })
        .map_err(anyhow::Error::msg)?
        .connect_timeout(Duration::from_secs(5));
    let channel = endpoint.connect().await.map_err(|e| {
        let cause = std::error::Error::source(&e).map(|s| format!(": {s}")).unwrap_or_default();
        anyhow::anyhow!("cannot reach kiln server at {server}{cause}")
    })?;
    Ok(AdminServiceClient::with_interceptor(channel, token).max_decoding_message_size(64 << 20))
}

/// Writes a file only its owner can read (created so, never readable by others).
fn write_private(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(bytes)?;
    Ok(())
}

/// gRPC errors carry a message meant for the operator: show just that.
fn status(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", s.message())
}

fn read_file(name: &str) -> anyhow::Result<String> {
    if name == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).context("reading stdin")?;
        Ok(s)
    } else {
        std::fs::read_to_string(name).with_context(|| format!("cannot read {name}"))
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut c = connect(&cli).await?;
    match cli.command {
        Command::Apply { files } => {
            for f in files {
                let yaml = read_file(&f)?;
                let source = if f == "-" { "stdin".to_string() } else { f };
                let res = c.apply(ApplyRequest { yaml, source }).await.map_err(status)?.into_inner();
                for o in res.objects {
                    println!("{}/{} {}", o.kind.to_lowercase(), o.name, o.outcome);
                    if !o.agent_token.is_empty() {
                        // Only the operator who created the hardware sees it.
                        println!(
                            "agent token for hardware/{} (shown once, put it in the agent's token_file): {}",
                            o.name, o.agent_token
                        );
                    }
                }
            }
        }
        Command::Get { kind, name, output } => get(&mut c, kind, name, output).await?,
        Command::Describe { kind, name } => describe(&mut c, kind, &name).await?,
        Command::Delete { kind, name } => {
            c.delete(DeleteRequest { kind: kind.as_str().into(), name: name.clone() }).await.map_err(status)?;
            println!("{}/{name} deleted", kind.as_str());
        }
        Command::Plan { file, workflow, output } => {
            let source = match (file, workflow) {
                (Some(f), _) => plan_request::Source::Documents(read_file(&f)?),
                (None, Some(w)) => plan_request::Source::WorkflowId(w),
                (None, None) => bail!("plan needs -f FILE or a WORKFLOW id"),
            };
            let wf = c.plan(PlanRequest { source: Some(source) }).await.map_err(status)?.into_inner();
            if !structured(output, &view::Workflow::from(&wf))? {
                print!("{}", plan_text(&wf));
            }
        }
        Command::Artifacts { command: ArtifactsCommand::List { workflow, output } } => {
            let items = c.list_artifacts(GetRequest { name: workflow }).await.map_err(status)?.into_inner().items;
            let view: Vec<_> = items
                .iter()
                .map(|a| {
                    serde_json::json!({
                        "action_index": a.action_index, "attempt_id": a.attempt_id, "path": a.path,
                        "size": a.size, "sha256": a.sha256, "created_at": view::time(&a.created_at),
                    })
                })
                .collect();
            if !structured(output, &view)? {
                let rows: Vec<_> = items
                    .iter()
                    .map(|a| {
                        vec![(a.action_index + 1).to_string(), a.path.clone(), a.size.to_string(), a.sha256.clone()]
                    })
                    .collect();
                print!("{}", table(&["ACTION", "PATH", "SIZE", "SHA256"], &rows));
            }
        }
        Command::Artifacts { command: ArtifactsCommand::Get { workflow, action, path, file } } => {
            use std::io::Write;
            let req = kiln_proto::v1::ArtifactRequest { workflow_id: workflow, action, path };
            let mut stream = c.get_artifact(req).await.map_err(status)?.into_inner();
            let mut sink: Box<dyn Write> = match &file {
                Some(f) => {
                    Box::new(std::fs::File::create(f).with_context(|| format!("cannot create {}", f.display()))?)
                }
                None => Box::new(std::io::stdout().lock()),
            };
            while let Some(chunk) = stream.next().await {
                sink.write_all(&chunk.map_err(status)?.data)?;
            }
            sink.flush()?;
        }
        Command::Token { command: TokenCommand::Rotate { hardware } } => {
            let t = c.rotate_agent_token(GetRequest { name: hardware }).await.map_err(status)?.into_inner();
            println!(
                "agent token for hardware/{} (agent {}; shown once, the old one no longer works): {}",
                t.hardware, t.agent_id, t.token
            );
        }
        Command::Token { command: TokenCommand::Revoke { hardware } } => {
            c.revoke_agent_token(GetRequest { name: hardware.clone() }).await.map_err(status)?;
            println!("hardware/{hardware}: agent token revoked");
        }
        Command::Cert { command: CertCommand::Issue { hardware, out } } => {
            let cert = c.issue_agent_cert(GetRequest { name: hardware }).await.map_err(status)?.into_inner();
            std::fs::create_dir_all(&out).with_context(|| format!("--out {}", out.display()))?;
            std::fs::write(out.join("agent.pem"), &cert.cert_pem)?;
            std::fs::write(out.join("ca.pem"), &cert.ca_pem)?;
            write_private(&out.join("agent.key"), cert.key_pem.as_bytes())?;
            println!(
                "client certificate for hardware/{} (agent {}): {dir}/agent.pem, key {dir}/agent.key, CA {dir}/ca.pem",
                cert.hardware,
                cert.agent_id,
                dir = out.display()
            );
        }
        Command::Retry { workflow } => {
            let wf = c.retry(GetRequest { name: workflow }).await.map_err(status)?.into_inner();
            println!("workflow/{} {}", wf.id, workflow_state(wf.state));
        }
        Command::Watch { workflow } => {
            let stream = c.watch_workflow(GetRequest { name: workflow.clone() }).await.map_err(status)?.into_inner();
            let logs_req = LogsRequest { workflow_id: workflow, action: String::new(), follow: true };
            let logs = c.clone().logs(logs_req).await.ok().map(|r| r.into_inner());
            let last = watch::watch(stream, logs).await?;
            if last.is_none_or(|w| workflow_state(w.state) != "SUCCESS") {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Logs { workflow, action, follow, output } => {
            let all = action.is_none();
            let req = LogsRequest { workflow_id: workflow, action: action.unwrap_or_default(), follow };
            let mut stream = c.logs(req).await.map_err(status)?.into_inner();
            while let Some(entry) = stream.next().await {
                let e = entry.map_err(status)?;
                let line = e.line.unwrap_or_default();
                if output == Format::Json {
                    let stream = if line.stream == LogStream::Stderr as i32 { "stderr" } else { "stdout" };
                    let obj = serde_json::json!({
                        "action_index": e.action_index, "action": e.action_name, "attempt": e.attempt_id,
                        "seq": line.seq, "stream": stream, "time": view::time(&line.time), "text": line.text,
                    });
                    println!("{obj}");
                } else if all {
                    println!("[{}] {}", e.action_name, line.text);
                } else {
                    println!("{}", line.text);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn get(c: &mut Client, kind: Kind, name: Option<String>, output: Format) -> anyhow::Result<()> {
    match (kind, name) {
        (Kind::Action, name) => {
            let mut items = c.list_action_definitions(ListRequest {}).await.map_err(status)?.into_inner().items;
            if let Some(name) = &name {
                items.retain(|d| d.name == *name);
                if items.is_empty() {
                    bail!("action definition {name:?} not found");
                }
            }
            let views: Vec<_> = items.iter().map(view::ActionDefinition::from).collect();
            let done = match (&name, views.as_slice()) {
                (Some(_), [one]) => structured(output, one)?,
                _ => structured(output, &views)?,
            };
            if !done {
                let rows: Vec<_> =
                    items.iter().map(|d| vec![d.name.clone(), d.image.clone(), d.description.clone()]).collect();
                print!("{}", table(&["NAME", "IMAGE", "DESCRIPTION"], &rows));
            }
        }
        (Kind::Hardware, Some(name)) => {
            let h = c.get_hardware(GetRequest { name }).await.map_err(status)?.into_inner();
            if !structured(output, &view::Hardware::from(&h))? {
                print!("{}", hardware_table(std::slice::from_ref(&h)));
            }
        }
        (Kind::Hardware, None) => {
            let items = c.list_hardware(ListRequest {}).await.map_err(status)?.into_inner().items;
            if !structured(output, &items.iter().map(view::Hardware::from).collect::<Vec<_>>())? {
                print!("{}", hardware_table(&items));
            }
        }
        (Kind::Template, Some(name)) => {
            let t = c.get_template(GetRequest { name }).await.map_err(status)?.into_inner();
            if !structured(output, &view::Template::from(&t))? {
                print!("{}", table(&["NAME", "AGE"], &[vec![t.name.clone(), age(&t.created_at)]]));
            }
        }
        (Kind::Template, None) => {
            let items = c.list_templates(ListRequest {}).await.map_err(status)?.into_inner().items;
            if !structured(output, &items.iter().map(view::Template::from).collect::<Vec<_>>())? {
                let rows: Vec<_> = items.iter().map(|t| vec![t.name.clone(), age(&t.created_at)]).collect();
                print!("{}", table(&["NAME", "AGE"], &rows));
            }
        }
        (Kind::Workflow, Some(name)) => {
            let w = c.get_workflow(GetRequest { name }).await.map_err(status)?.into_inner();
            if !structured(output, &view::Workflow::from(&w))? {
                print!("{}", workflow_table(std::slice::from_ref(&w)));
            }
        }
        (Kind::Workflow, None) => {
            let items = c.list_workflows(ListRequest {}).await.map_err(status)?.into_inner().items;
            if !structured(output, &items.iter().map(view::Workflow::from).collect::<Vec<_>>())? {
                print!("{}", workflow_table(&items));
            }
        }
    }
    Ok(())
}

fn hardware_table(items: &[kiln_proto::v1::Hardware]) -> String {
    let rows: Vec<_> = items
        .iter()
        .map(|h| vec![h.id.clone(), h.agent_id.clone(), h.macs.join(","), h.disks.join(","), age(&h.created_at)])
        .collect();
    table(&["ID", "AGENT ID", "MACS", "DISKS", "AGE"], &rows)
}

fn workflow_table(items: &[kiln_proto::v1::Workflow]) -> String {
    let rows: Vec<_> = items
        .iter()
        .map(|w| {
            let done = w.actions.iter().filter(|a| action_state(a.state) == "SUCCESS").count();
            vec![
                w.id.clone(),
                w.template.clone(),
                w.hardware.clone(),
                workflow_state(w.state).to_string(),
                format!("{done}/{}", w.actions.len()),
                age(&w.created_at),
            ]
        })
        .collect();
    table(&["ID", "TEMPLATE", "HARDWARE", "STATE", "PROGRESS", "AGE"], &rows)
}

fn plan_text(w: &kiln_proto::v1::Workflow) -> String {
    let mut out = format!("workflow {}: template {}, hardware {}", w.id, w.template, w.hardware);
    if w.global_timeout_seconds > 0 {
        out.push_str(&format!(", global timeout {}s", w.global_timeout_seconds));
    }
    out.push('\n');
    for a in &w.actions {
        let s = a.spec.clone().unwrap_or_default();
        out.push_str(&format!("{}. {}/{}\n", a.index + 1, s.task, s.name));
        if s.builtin.is_empty() {
            out.push_str(&format!("   image:   {}\n", s.image));
        } else {
            out.push_str(&format!("   builtin: {}\n", s.builtin));
        }
        if s.terminal {
            out.push_str("   terminal: SUCCESS is recorded before the step fires\n");
        }
        if !s.command.is_empty() {
            out.push_str(&format!("   command: {}\n", serde_json::to_string(&s.command).unwrap_or_default()));
        }
        let mut env: Vec<_> = s.environment.iter().collect();
        env.sort();
        if !env.is_empty() {
            out.push_str("   environment:\n");
            for (k, v) in env {
                out.push_str(&format!("     {k}={v}\n"));
            }
        }
        if !s.volumes.is_empty() {
            out.push_str(&format!("   volumes: {}\n", s.volumes.join(", ")));
        }
        if !s.pid.is_empty() {
            out.push_str(&format!("   pid:     {}\n", s.pid));
        }
        if !s.network.is_empty() {
            out.push_str(&format!("   network: {}\n", s.network));
        }
        out.push_str(&format!("   timeout: {}s\n", s.timeout_seconds));
        if s.retries > 0 {
            out.push_str(&format!("   retries: {} (backoff {}s)\n", s.retries, s.retry_backoff_seconds));
        }
        if let Some(r) = s.resources.as_ref().filter(|r| **r != Default::default()) {
            let mut limits = Vec::new();
            if r.memory_bytes > 0 {
                limits.push(format!("memory {} bytes", r.memory_bytes));
            }
            if r.nano_cpus > 0 {
                limits.push(format!("cpus {}", r.nano_cpus as f64 / 1e9));
            }
            if r.pids > 0 {
                limits.push(format!("pids {}", r.pids));
            }
            if !r.gpus.is_empty() {
                limits.push(format!("gpus {}", r.gpus));
            }
            out.push_str(&format!("   limits:  {}\n", limits.join(", ")));
        }
        out.push_str(&format!("   agent:   {}\n", a.agent_id));
    }
    out
}

async fn describe(c: &mut Client, kind: Kind, name: &str) -> anyhow::Result<()> {
    let name = name.to_string();
    match kind {
        Kind::Action => return get(c, kind, Some(name), Format::Yaml).await,
        Kind::Hardware => {
            let h = c.get_hardware(GetRequest { name }).await.map_err(status)?.into_inner();
            print!("{}", serde_yaml_ng::to_string(&view::Hardware::from(&h))?);
        }
        Kind::Template => {
            let t = c.get_template(GetRequest { name }).await.map_err(status)?.into_inner();
            println!("template {} (created {} ago)\n---\n{}", t.name, age(&t.created_at), t.data.trim_end());
        }
        Kind::Workflow => {
            let w = c.get_workflow(GetRequest { name }).await.map_err(status)?.into_inner();
            print!("{}", describe_workflow(&w));
        }
    }
    Ok(())
}

fn describe_workflow(w: &kiln_proto::v1::Workflow) -> String {
    let t = |ts: &Option<prost_types::Timestamp>| view::time(ts).unwrap_or_else(|| "-".into());
    let mut out = format!(
        "workflow:  {}\ntemplate:  {}\nhardware:  {}\nstate:     {}\n",
        w.id,
        w.template,
        w.hardware,
        workflow_state(w.state)
    );
    if !w.reason.is_empty() {
        out.push_str(&format!("reason:    {}\n", w.reason));
    }
    out.push_str(&format!(
        "created:   {}\nstarted:   {}\nfinished:  {}\n",
        t(&w.created_at),
        t(&w.started_at),
        t(&w.finished_at)
    ));
    if let Some(d) = between(&w.started_at, &w.finished_at) {
        out.push_str(&format!("duration:  {}\n", elapsed(d)));
    }
    out.push_str("actions:\n");
    for a in &w.actions {
        let s = a.spec.clone().unwrap_or_default();
        out.push_str(&format!("  {}. {}/{}  {}  ({})\n", a.index + 1, s.task, s.name, action_state(a.state), s.image));
        for at in &a.attempts {
            out.push_str(&format!(
                "     attempt {} [{}] {}: created {}, pulling {}, running {}, finished {}",
                at.number,
                at.id,
                action_state(at.state),
                t(&at.created_at),
                t(&at.pulling_at),
                t(&at.running_at),
                t(&at.finished_at)
            ));
            if let Some(d) = between(&at.running_at, &at.finished_at) {
                out.push_str(&format!(", ran {}", elapsed(d)));
            }
            out.push('\n');
            if at.exit_code.is_some() || !at.reason.is_empty() {
                out.push_str(&format!(
                    "       exit code {}  {} {}\n",
                    at.exit_code.map_or("-".into(), |c| c.to_string()),
                    at.reason,
                    at.message
                ));
            }
        }
    }
    out
}
