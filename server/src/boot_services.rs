//! The DHCP and TFTP front doors (kiln-boot-services): bound with the
//! server, served beside it. Like the other transports this module only
//! translates: whether a MAC boots and which address it has are the
//! application's ([`App::dhcp_boot_decision`], [`App::dhcp_reservation`]).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use kiln_boot_services::{BootFiles, Mac, Machines, Reservation, Verdict, dhcp, net, tftp};

use crate::app::boot::Decision;
use crate::app::{App, OpContext};

/// `--proxy-dhcp-listen`, `--dhcp-listen`, `--tftp-listen` and what they
/// hand out. Everything off by default.
#[derive(Clone, Debug, Default)]
pub struct BootServicesConfig {
    /// Interface for ProxyDHCP (UDP 67 and 4011).
    pub proxy_dhcp: Option<String>,
    /// Interface for the DHCP server with reservations (UDP 67).
    pub dhcp: Option<String>,
    /// Address of the TFTP server (usually `0.0.0.0:69`).
    pub tftp_listen: Option<SocketAddr>,
    /// The iPXE directory, already checked ([`kiln_boot_services::ipxe::locate`]).
    pub ipxe_dir: Option<PathBuf>,
    /// `ipxe.efi` or `snponly.efi`.
    pub efi: String,
    /// The address clients are sent to for TFTP and HTTP; default: the
    /// DHCP interface's own.
    pub server_ip: Option<Ipv4Addr>,
    /// `http://HOST:PORT` of the netboot routes as machines reach them;
    /// default: `http://SERVER_IP:PORT` of --netboot-listen.
    pub http_base: Option<String>,
}

impl BootServicesConfig {
    pub fn any_dhcp(&self) -> bool {
        self.proxy_dhcp.is_some() || self.dhcp.is_some()
    }
}

/// The bound sockets, not yet serving.
pub struct BoundBootServices {
    ctx: Option<Arc<dhcp::Context>>,
    proxy: Option<(tokio::net::UdpSocket, tokio::net::UdpSocket)>,
    dhcp: Option<tokio::net::UdpSocket>,
    tftp: Option<(std::net::UdpSocket, PathBuf)>,
}

/// The application as the boot services see it.
struct AppMachines(Arc<App>);

#[async_trait::async_trait]
impl Machines for AppMachines {
    async fn verdict(&self, mac: Mac) -> Verdict {
        match self.0.dhcp_boot_decision(&OpContext::system("dhcp"), &mac.to_string()).await {
            Decision::Hook { .. } => Verdict::Boot,
            Decision::Local(why) => Verdict::Skip(why),
        }
    }

    async fn reservation(&self, mac: Mac) -> Result<Option<Reservation>, String> {
        self.0.dhcp_reservation(&OpContext::system("dhcp"), &mac.to_string()).await
    }
}

impl BoundBootServices {
    /// Binds what the configuration asks for. `netboot_port`: the bound
    /// --netboot-listen port, the default HTTP base for iPXE.
    pub fn bind(config: &BootServicesConfig, app: &Arc<App>, netboot_port: Option<u16>) -> anyhow::Result<Self> {
        let tftp = match config.tftp_listen {
            Some(addr) => {
                let dir =
                    config.ipxe_dir.clone().ok_or_else(|| anyhow::anyhow!("--tftp-listen needs the iPXE directory"))?;
                let sock = std::net::UdpSocket::bind(addr)
                    .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (--tftp-listen): {e}"))?;
                Some((sock, dir))
            }
            None => None,
        };
        if !config.any_dhcp() {
            return Ok(Self { ctx: None, proxy: None, dhcp: None, tftp });
        }
        let (flag, iface) = match (&config.proxy_dhcp, &config.dhcp) {
            (Some(i), _) => ("--proxy-dhcp-listen", i.as_str()),
            (None, Some(i)) => ("--dhcp-listen", i.as_str()),
            (None, None) => unreachable!("any_dhcp"),
        };
        let server_ip = match config.server_ip {
            Some(ip) => ip,
            None => {
                net::interface_ipv4(iface)
                    .map_err(|e| anyhow::anyhow!("{flag} {iface}: {e} (give it one, or --boot-server-ip)"))?
                    .0
            }
        };
        let http_base = match (&config.http_base, netboot_port) {
            (Some(url), _) => url.trim_end_matches('/').to_string(),
            (None, Some(port)) => format!("http://{server_ip}:{port}"),
            (None, None) => anyhow::bail!(
                "--proxy-dhcp-listen/--dhcp-listen need the plain-HTTP netboot URL iPXE fetches its script from: \
                 give --netboot-listen (or --public-url http://...)"
            ),
        };
        if config.tftp_listen.is_none() {
            tracing::warn!("DHCP boot services without --tftp-listen: PXE clients are sent to {server_ip} for TFTP");
        }
        let files = BootFiles { efi: config.efi.clone(), tftp_server: server_ip, http_base };
        let ctx = Arc::new(dhcp::Context { files, server_ip, machines: Arc::new(AppMachines(app.clone())) });
        let with =
            |flag: &str, r: std::io::Result<tokio::net::UdpSocket>| r.map_err(|e| anyhow::anyhow!("{flag}: {e}"));
        let proxy = match &config.proxy_dhcp {
            Some(i) => Some((
                with("--proxy-dhcp-listen", net::dhcp_socket(i, 67))?,
                with("--proxy-dhcp-listen", net::dhcp_socket(i, dhcp::PXE_PORT))?,
            )),
            None => None,
        };
        let dhcp = match &config.dhcp {
            Some(i) => Some(with("--dhcp-listen", net::dhcp_socket(i, 67))?),
            None => None,
        };
        Ok(Self { ctx: Some(ctx), proxy, dhcp, tftp })
    }

    /// The TFTP address actually bound (with port 0 in tests).
    pub fn tftp_addr(&self) -> Option<SocketAddr> {
        self.tftp.as_ref().and_then(|(s, _)| s.local_addr().ok())
    }

    /// Starts serving; the tasks end with the returned handles' abort.
    pub fn spawn(self) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        if let (Some(ctx), Some((a, b))) = (&self.ctx, self.proxy) {
            let ctx = ctx.clone();
            tracing::info!(server_ip = %ctx.server_ip, http = %ctx.files.http_base, "ProxyDHCP on UDP 67 and 4011");
            tasks.push(tokio::spawn(async move {
                if let Err(e) = dhcp::serve_proxy(ctx, a, b).await {
                    tracing::error!(error = %e, "ProxyDHCP stopped");
                }
            }));
        }
        if let (Some(ctx), Some(sock)) = (&self.ctx, self.dhcp) {
            let ctx = ctx.clone();
            tracing::info!(server_ip = %ctx.server_ip, "DHCP server (reservations) on UDP 67");
            tasks.push(tokio::spawn(async move {
                if let Err(e) = dhcp::serve_dhcp(ctx, sock).await {
                    tracing::error!(error = %e, "DHCP server stopped");
                }
            }));
        }
        if let Some((sock, dir)) = self.tftp {
            tracing::info!(addr = ?sock.local_addr().ok(), dir = %dir.display(), "TFTP (read-only)");
            tasks.push(tokio::spawn(async move {
                if let Err(e) = tftp::serve(&dir, sock).await {
                    tracing::error!(error = %e, "TFTP stopped");
                }
            }));
        }
        tasks
    }
}
