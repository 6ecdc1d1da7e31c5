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
    /// Rewrite action image names: `FROM=TO` replaces the prefix FROM with
    /// TO when an action is dispatched (and in `kiln plan`), e.g.
    /// `quay.io/tinkerbell/actions/=registry.local/kiln/actions/` runs the
    /// Tinkerbell hub's names from kiln's action library or a mirror.
    /// Repeatable; the longest matching FROM wins. --allow-image applies
    /// to the rewritten name.
    #[arg(long = "image-rewrite", value_name = "FROM=TO")]
    image_rewrites: Vec<String>,
    /// Largest artifact (one file of an action's /out) accepted, in bytes.
    #[arg(long, default_value_t = kiln_server::artifacts::DEFAULT_MAX_ARTIFACT_BYTES)]
    max_artifact_bytes: u64,
    /// Directory with the hook image (`vmlinuz`, `initramfs.img` from
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
    /// How long the one-time enrolment credential in a machine's boot
    /// script (`kiln.enrol=`) stays valid: long enough for the hook image
    /// to download and boot, short enough that a copied script is soon
    /// worthless.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_enrolment_ttl)]
    enrolment_ttl: humantime::Duration,
    /// Discovery: a machine whose MAC no Hardware has that network-boots
    /// gets the hook image, enrols as a *discovered* machine and reports
    /// its inventory, but runs nothing until an operator adopts it (docs/network-boot.md).
    #[arg(long)]
    discovery: bool,
    /// How long an open attempt survives without a heartbeat from its agent
    /// (agents renew every third of it). When it runs out the attempt is
    /// FAILED with reason AgentLost and the action's retries apply.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_lease)]
    attempt_lease: humantime::Duration,
    /// Write the bound address here once listening (useful with port 0).
    #[arg(long)]
    addr_file: Option<PathBuf>,
    /// Server certificate (PEM, with its chain) for TLS.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The CA (PEM) that signed --tls-cert, if machines do not trust it
    /// already: the hook image fetches it at boot (`/boot/ca.pem`), checked
    /// against the sha256 its kernel command line carries.
    #[arg(long, requires = "tls_cert")]
    tls_ca: Option<PathBuf>,
    /// TLS with a development CA generated into DATA_DIR/tls/ (kept across
    /// restarts); its path is printed, for `kiln --ca` and the agent's
    /// `ca_file`. Also accepts agent certificates it signs (`kiln cert issue`).
    #[arg(long, conflicts_with_all = ["tls_cert", "plaintext"])]
    dev_tls: bool,
    /// No TLS at all: tokens then cross the network readable. Only by
    /// this explicit flag.
    #[arg(long, conflicts_with_all = ["tls_cert", "client_ca"])]
    plaintext: bool,
    /// Accept client certificates signed by this CA (PEM): mutual TLS for
    /// agents, whose certificate must name their agent id.
    #[arg(long)]
    client_ca: Option<PathBuf>,
    /// Key (PEM) of --client-ca, so that `kiln cert issue` can sign agent
    /// certificates.
    #[arg(long, requires = "client_ca")]
    client_ca_key: Option<PathBuf>,
    /// Agents must present a client certificate (with --client-ca or --dev-tls).
    #[arg(long)]
    require_client_cert: bool,
    /// File holding the operator credential. Default: DATA_DIR/admin-token,
    /// created (random, mode 0600) at the first start.
    #[arg(long)]
    admin_token_file: Option<PathBuf>,
    /// File holding the read-only operator credential: it reads everything
    /// an operator reads (`kiln get`, logs, events, /metrics, the console)
    /// and changes nothing. Default: DATA_DIR/read-only-token, created
    /// (random, mode 0600) at the first start.
    #[arg(long)]
    read_only_token_file: Option<PathBuf>,
    /// Also serve the netboot routes (/boot/...) over plain HTTP here: iPXE
    /// cannot verify the server's certificate.
    #[arg(long)]
    netboot_listen: Option<SocketAddr>,
    /// How long audit events (`kiln events`: operator writes, refused
    /// credentials) are kept.
    #[arg(long, value_name = "DURATION", default_value = "30d")]
    event_retention: humantime::Duration,
    /// The most audit events kept: beyond it the oldest are deleted.
    #[arg(long, value_name = "N", default_value_t = kiln_server::app::audit::EventRetention::default().max_rows)]
    event_max_rows: u64,
    /// Also serve /metrics (Prometheus) over plain HTTP here, without
    /// authentication: for a scraper on a private network. Without it,
    /// /metrics on the main address needs the operator credential
    /// (Authorization: Bearer).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Serve the web console here (its own port, e.g. 0.0.0.0:42114): with
    /// TLS when the server has TLS. Log in with the operator credential.
    /// Default: no console.
    #[arg(long, env = "KILN_CONSOLE_LISTEN", value_name = "ADDR")]
    console_listen: Option<SocketAddr>,
    /// The key BmcSecrets are sealed with (32 bytes, base64). Default:
    /// DATA_DIR/bmc-secret.key, created at the first start. Servers sharing
    /// a PostgreSQL store must all be given the same file (docs/bmc.md).
    #[arg(long, env = "KILN_BMC_SECRET_KEY_FILE", value_name = "FILE")]
    bmc_secret_key_file: Option<PathBuf>,
    /// Export workflow traces (OpenTelemetry) to this OTLP/gRPC endpoint
    /// (`http://collector:4317`): one trace per workflow, its actions'
    /// attempts and their phases. Off by default.
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// Answer PXE and UEFI HTTP boot clients as a ProxyDHCP server on this
    /// interface (UDP 67 and 4011), beside the site's DHCP server: a boot
    /// file for machines the server boots, never an address. Off by default.
    #[arg(long, value_name = "IFACE", help_heading = "Boot services")]
    proxy_dhcp_listen: Option<String>,
    /// Be the DHCP server on this interface (UDP 67): addresses only for
    /// MACs whose Hardware reserves one (`interfaces[].dhcp.ip`), with a
    /// boot file for machines the server boots. Off by default.
    #[arg(long, value_name = "IFACE", help_heading = "Boot services", conflicts_with = "proxy_dhcp_listen")]
    dhcp_listen: Option<String>,
    /// Serve the iPXE binaries over read-only TFTP here (e.g. 0.0.0.0:69).
    #[arg(long, value_name = "ADDR", help_heading = "Boot services")]
    tftp_listen: Option<SocketAddr>,
    /// Directory with ipxe.efi, snponly.efi and undionly.kpxe (default:
    /// Debian's `ipxe` package, /usr/lib/ipxe).
    #[arg(long, value_name = "DIR", help_heading = "Boot services")]
    ipxe_dir: Option<PathBuf>,
    /// The UEFI iPXE handed out: ipxe.efi (iPXE's NIC drivers) or
    /// snponly.efi (the firmware's).
    #[arg(long, value_name = "FILE", default_value = "ipxe.efi", help_heading = "Boot services")]
    ipxe_efi: String,
    /// The address machines are sent to for TFTP and HTTP (default: the
    /// DHCP interface's IPv4 address).
    #[arg(long, value_name = "IP", help_heading = "Boot services")]
    boot_server_ip: Option<std::net::Ipv4Addr>,
}

/// The boot services' settings; the iPXE directory is checked here, so a
/// missing binary stops the server at start rather than a machine at boot.
fn boot_services_config(args: &Args) -> anyhow::Result<kiln_server::boot_services::BootServicesConfig> {
    let wanted = args.proxy_dhcp_listen.is_some() || args.dhcp_listen.is_some() || args.tftp_listen.is_some();
    let ipxe_dir = match (wanted, &args.ipxe_dir) {
        (true, dir) | (false, dir @ Some(_)) => {
            Some(kiln_boot_services::ipxe::locate(dir.as_deref(), &args.ipxe_efi).map_err(anyhow::Error::msg)?)
        }
        (false, None) => None,
    };
    Ok(kiln_server::boot_services::BootServicesConfig {
        proxy_dhcp: args.proxy_dhcp_listen.clone(),
        dhcp: args.dhcp_listen.clone(),
        tftp_listen: args.tftp_listen,
        ipxe_dir,
        efi: args.ipxe_efi.clone(),
        server_ip: args.boot_server_ip,
        // A plain-HTTP --public-url is what machines reach; otherwise
        // --netboot-listen's port on the boot server address.
        http_base: args.public_url.clone().filter(|u| u.starts_with("http://")),
    })
}

/// With TLS and `--netboot-listen`, iPXE fetches over plain HTTP (from the
/// Host it used) while agents need the TLS URL: `--public-url`.
fn netboot_config(
    args: &Args,
    tls: Option<&kiln_server::tls::ServerTls>,
) -> anyhow::Result<kiln_server::netboot::NetbootConfig> {
    let split = tls.is_some() && args.netboot_listen.is_some();
    if split && !args.public_url.as_deref().is_some_and(|u| u.starts_with("https://")) {
        anyhow::bail!("--netboot-listen with TLS needs --public-url https://HOST:PORT (the URL agents use)");
    }
    Ok(kiln_server::netboot::NetbootConfig {
        hook_dir: args.hook_dir.clone(),
        cmdline: args.hook_cmdline.clone(),
        public_url: if split { None } else { args.public_url.clone() },
        agent_url: if split { args.public_url.clone() } else { None },
        ca_pem: tls.and_then(|t| t.ca_pem.clone()),
        enrolment_ttl: Some(args.enrolment_ttl.into()),
        ipxe_dir: None,
        discovery: args.discovery,
        iso_cache: Default::default(),
    })
}

fn read(path: &std::path::Path, flag: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| anyhow::anyhow!("{flag} {}: {e}", path.display()))
}

/// TLS settings from the flags, and the CA agent certificates are signed with.
fn tls_from_args(
    args: &Args,
) -> anyhow::Result<(Option<kiln_server::tls::ServerTls>, Option<kiln_server::tls::SigningCa>)> {
    use kiln_server::tls::{ServerTls, SigningCa};
    if args.require_client_cert && args.client_ca.is_none() && !args.dev_tls {
        anyhow::bail!("--require-client-cert needs --client-ca FILE or --dev-tls");
    }
    let mut signing = match (&args.client_ca, &args.client_ca_key) {
        (Some(ca), Some(key)) => Some(SigningCa {
            cert_pem: String::from_utf8(read(ca, "--client-ca")?)?,
            key_pem: String::from_utf8(read(key, "--client-ca-key")?)?,
        }),
        _ => None,
    };
    let client_ca_pem = args.client_ca.as_deref().map(|p| read(p, "--client-ca")).transpose()?;
    let tls = if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        Some(ServerTls {
            cert_pem: read(cert, "--tls-cert")?,
            key_pem: read(key, "--tls-key")?,
            client_ca_pem,
            require_client_cert: args.require_client_cert,
            ca_pem: args.tls_ca.as_deref().map(|p| read(p, "--tls-ca")).transpose()?,
        })
    } else if args.dev_tls {
        let hosts: Vec<String> = args.public_url.iter().filter_map(|u| kiln_server::tls::url_host(u)).collect();
        let dev = kiln_server::tls::dev_tls(&args.data_dir, &hosts)?;
        eprintln!(
            "kiln-server: development TLS. CA: {ca}\n  trust it with: kiln --ca {ca} ...   (agent config: ca_file: {ca})\n  \
             or system-wide: cp {ca} /usr/local/share/ca-certificates/kiln-dev.crt && update-ca-certificates",
            ca = dev.ca_path.display()
        );
        // The dev CA is also the client CA, unless another was given.
        let client_ca_pem = client_ca_pem.or_else(|| Some(dev.ca.cert_pem.clone().into_bytes()));
        if args.client_ca.is_none() {
            signing = Some(dev.ca.clone());
        }
        Some(ServerTls {
            cert_pem: dev.server_cert_pem.into_bytes(),
            key_pem: dev.server_key_pem.into_bytes(),
            client_ca_pem,
            require_client_cert: args.require_client_cert,
            ca_pem: Some(dev.ca.cert_pem.into_bytes()),
        })
    } else if args.plaintext {
        None
    } else {
        anyhow::bail!(
            "no TLS configured: give --tls-cert FILE --tls-key FILE, or --dev-tls (a generated development CA), \
             or --plaintext to run without TLS"
        );
    };
    Ok((tls, signing))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The server's spans are rebuilt from committed transitions
    // (kiln_server::traces), not from `tracing` spans: none is exported.
    let _telemetry =
        kiln_telemetry::Telemetry::init(args.otlp_endpoint.as_deref().map(|endpoint| kiln_telemetry::TraceExport {
            endpoint,
            service: "kiln-server",
            span_targets: &[],
        }))?;
    let image_policy =
        kiln_documents::ImagePolicy::new(&args.allow_images, args.digests_only).map_err(anyhow::Error::msg)?;
    let image_rewrites =
        kiln_server::app::images::ImageRewrites::parse(&args.image_rewrites).map_err(anyhow::Error::msg)?;
    let database = kiln_server::store::DatabaseUrl::parse(args.database_url.as_deref(), &args.data_dir)
        .map_err(anyhow::Error::msg)?;
    let (tls, signing_ca) = tls_from_args(&args)?;
    let boot_services = boot_services_config(&args)?;
    let mut netboot = netboot_config(&args, tls.as_ref())?;
    netboot.ipxe_dir = boot_services.ipxe_dir.clone();
    let (admin_token, admin_token_path) =
        kiln_server::auth::load_or_create_admin_token(&args.data_dir, args.admin_token_file.as_deref())?;
    let (read_only_token, _) =
        kiln_server::auth::load_or_create_read_only_token(&args.data_dir, args.read_only_token_file.as_deref())?;
    // One secret for two roles would make the read-only one a full operator.
    anyhow::ensure!(
        read_only_token != admin_token,
        "--read-only-token-file holds the operator credential: give the read-only role its own token"
    );
    let config = ServerConfig {
        listen: args.listen,
        data_dir: args.data_dir.clone(),
        database: database.clone(),
        image_policy,
        image_rewrites,
        max_artifact_bytes: args.max_artifact_bytes,
        lease: args.attempt_lease.into(),
        netboot,
        tls,
        admin_token,
        read_only_token: Some(read_only_token),
        signing_ca,
        netboot_listen: args.netboot_listen,
        event_retention: kiln_server::app::audit::EventRetention {
            max_age: args.event_retention.into(),
            max_rows: args.event_max_rows,
        },
        metrics_listen: args.metrics_listen,
        console_listen: args.console_listen,
        boot_services,
        bmc_secret_key_file: args.bmc_secret_key_file.clone(),
    };
    let server = Server::bind(&config).await?;
    let addr = server.local_addr()?;
    let scheme = if config.tls.is_some() { "https" } else { "http" };
    tracing::info!(%addr, %scheme, data_dir = %args.data_dir.display(), store = %database.display(),
        admin_token_file = %admin_token_path.display(), "kiln-server listening");
    if let Some(netboot) = server.netboot_addr() {
        tracing::info!(addr = %netboot, "netboot over plain HTTP");
    }
    if let Some(tftp) = server.tftp_addr() {
        tracing::info!(addr = %tftp, "TFTP of the iPXE binaries");
    }
    if let Some(metrics) = server.metrics_addr() {
        tracing::info!(addr = %metrics, "metrics over plain HTTP, unauthenticated");
    }
    if let Some(console) = server.console_addr() {
        tracing::info!(url = %format!("{scheme}://{console}/"), "web console");
    }
    if let Some(path) = &args.addr_file {
        // Written whole under a temporary name, so a reader never sees half.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, addr.to_string())?;
        std::fs::rename(&tmp, path)?;
    }
    server.serve(shutdown_signal()).await
}

fn parse_enrolment_ttl(s: &str) -> Result<humantime::Duration, String> {
    let d: humantime::Duration = s.parse().map_err(|e| format!("{e} (e.g. 5m, 90s)"))?;
    if std::time::Duration::from(d).is_zero() {
        return Err("must be more than 0 (a machine needs time to boot the hook image)".into());
    }
    Ok(d)
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
