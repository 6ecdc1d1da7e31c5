//! Network boot: what a machine's iPXE asks for when it powers on.
//!
//! `GET /boot/ipxe/MAC` answers a script that boots the hook image, with the
//! kernel parameters its init and agent need, while the machine has a
//! pending or running workflow (and its hardware allows netboot); otherwise
//! a script that exits to the next boot device, the local disk. The gate is
//! derived from the workflow's state rather than stored, so it closes the
//! moment the workflow succeeds and can never be left open by mistake
//! (Tinkerbell machines that keep `allowPXE` loop through provisioning
//! forever). `GET /boot/ipxe` is the entry point for DHCP: it chains to the
//! per-MAC script with iPXE's own `${net0/mac}`. The hook kernel and
//! initramfs are served from `--hook-dir`. A hook script carries the boot's
//! one-time enrolment credential (`kiln.enrol=`, see [`crate::app::enrol`]).

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::app::boot::Decision;
use crate::app::{App, OpContext};

#[derive(Clone, Debug, Default)]
pub struct NetbootConfig {
    /// Directory holding `vmlinuz` and `initramfs.img` (hook-image/build.sh).
    pub hook_dir: Option<PathBuf>,
    /// Extra kernel parameters for the hook (e.g. `console=ttyS0`).
    pub cmdline: String,
    /// The server's URL as machines reach it; default: the Host header of
    /// the request, which the machine evidently can reach.
    pub public_url: Option<String>,
    /// The URL agents use (`kiln.server=`) when it is not the one netboot
    /// is served from: the TLS port, while netboot is on `--netboot-listen`.
    pub agent_url: Option<String>,
    /// The CA of the server's certificate, served as `/boot/ca.pem` and
    /// pinned on the hook's command line (`kiln.ca_sha256=`): the hook image
    /// carries no CA of its own, and the pin, which the script is the only
    /// source of, makes the unauthenticated download safe to trust as far
    /// as the script itself is.
    pub ca_pem: Option<Vec<u8>>,
    /// How long an enrolment credential in a boot script stays valid
    /// (`--enrolment-ttl`); `None`: [`crate::app::enrol::DEFAULT_ENROLMENT_TTL`].
    pub enrolment_ttl: Option<std::time::Duration>,
    /// The iPXE binaries (`--ipxe-dir`, or Debian's), served as
    /// `/boot/ipxe-bin/FILE` for UEFI HTTP boot.
    pub ipxe_dir: Option<PathBuf>,
    /// `--discovery`: a machine whose MAC no Hardware has boots the hook
    /// as a discovered machine ([`crate::app::discovery`]) instead of its
    /// disk.
    pub discovery: bool,
    /// The base hook ISO, built at its first download ([`crate::app::hook_iso`]).
    pub iso_cache: crate::app::hook_iso::IsoCache,
}

struct Netboot {
    app: Arc<App>,
    config: NetbootConfig,
}

/// The netboot routes; what to boot is the application's
/// [`App::boot_decision`], this module only writes iPXE.
pub fn router(app: Arc<App>) -> axum::Router {
    let config = app.netboot.clone();
    axum::Router::new()
        .route("/boot/ipxe", get(chain))
        .route("/boot/ipxe/{mac}", get(script))
        .route("/boot/hook/{file}", get(hook_file))
        .route("/boot/ca.pem", get(ca_pem))
        .route("/boot/ipxe-bin/{file}", get(ipxe_binary))
        .route("/boot/iso/{mac}/hook.iso", get(hook_iso))
        .with_state(Arc::new(Netboot { app, config }))
}

fn ipxe(text: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
}

fn base_url(n: &Netboot, headers: &HeaderMap) -> String {
    if let Some(url) = &n.config.public_url {
        return url.trim_end_matches('/').to_string();
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
    format!("http://{host}")
}

async fn chain(State(n): State<Arc<Netboot>>, headers: HeaderMap) -> Response {
    ipxe(format!("#!ipxe\nchain {}/boot/ipxe/${{net0/mac}}\n", base_url(&n, &headers)))
}

async fn script(State(n): State<Arc<Netboot>>, Path(mac): Path<String>, headers: HeaderMap) -> Response {
    let decision = n.app.boot_decision(&OpContext::system("netboot"), &mac).await;
    let base = base_url(&n, &headers);
    let text = match decision {
        Decision::Hook { .. } if n.config.hook_dir.is_none() => {
            tracing::warn!(%mac, "a machine wants the hook image, but the server has no --hook-dir");
            local("this server has no hook image (--hook-dir)")
        }
        Decision::Hook { agent_id, workflow, enrolment } => {
            tracing::info!(%mac, %workflow, "netboot: hook image");
            // A discovered machine boots for no workflow.
            let workflow = if workflow.is_empty() { "none (discovery)".to_string() } else { workflow };
            // `kiln.enrol=`: this boot's one-time enrolment credential (the
            // script is its only carrier: never logged). `initrd=initramfs`:
            // the kernel's EFI stub loads the initrd by that name from
            // iPXE's virtual file system under UEFI (iPXE before 1.21,
            // Debian 12's, has no LoadFile2 initrd; without it the hook
            // panics with no root fs). BIOS boots ignore it.
            let args = n.app.hook_kernel_args(&base, &agent_id, "${net0/mac}", &enrolment);
            format!(
                "#!ipxe\n\
                 echo kiln: {mac} boots the hook image for workflow {workflow}\n\
                 kernel {base}/boot/hook/vmlinuz initrd=initramfs {args}\n\
                 initrd {base}/boot/hook/initramfs\n\
                 boot\n"
            )
        }
        Decision::Local(why) => {
            tracing::info!(%mac, %why, "netboot: local disk");
            local(&why)
        }
    };
    ipxe(text)
}

/// The machine's hook ISO, for its BMC's virtual media.
async fn hook_iso(State(n): State<Arc<Netboot>>, Path(mac): Path<String>, headers: HeaderMap) -> Response {
    use crate::app::AppError;
    let base = base_url(&n, &headers);
    match n.app.hook_iso(&OpContext::system("netboot"), &mac, &base).await {
        Ok(iso) => {
            let len = iso.len().to_string();
            let pieces = iso.pieces.map(Ok::<_, std::convert::Infallible>);
            let body = Body::from_stream(tokio_stream::iter(pieces));
            ([(header::CONTENT_TYPE, "application/octet-stream"), (header::CONTENT_LENGTH, len.as_str())], body)
                .into_response()
        }
        Err(e) => {
            let status = match &e {
                AppError::NotFound(_) => StatusCode::NOT_FOUND,
                AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::CONFLICT,
            };
            tracing::info!(%mac, reason = %e, "netboot: no hook ISO");
            (status, format!("{e}\n")).into_response()
        }
    }
}

async fn ca_pem(State(n): State<Arc<Netboot>>) -> Response {
    match &n.config.ca_pem {
        Some(pem) => ([(header::CONTENT_TYPE, "application/x-pem-file")], pem.clone()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

fn local(why: &str) -> String {
    format!("#!ipxe\necho kiln: {why}; booting from the local disk\nexit\n")
}

async fn hook_file(State(n): State<Arc<Netboot>>, Path(file): Path<String>) -> Response {
    let name = match file.as_str() {
        "vmlinuz" => "vmlinuz",
        "initramfs" => "initramfs.img",
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    let Some(dir) = &n.config.hook_dir else { return StatusCode::NOT_FOUND.into_response() };
    send_file(dir.join(name)).await
}

/// An iPXE binary for UEFI HTTP boot: only the names kiln hands out.
async fn ipxe_binary(State(n): State<Arc<Netboot>>, Path(file): Path<String>) -> Response {
    let known = kiln_boot_services::ipxe::EFI_FILES.contains(&file.as_str()) || file == kiln_boot_services::BIOS_FILE;
    let Some(dir) = n.config.ipxe_dir.as_ref().filter(|_| known) else { return StatusCode::NOT_FOUND.into_response() };
    tracing::info!(%file, "netboot: iPXE binary over HTTP");
    send_file(dir.join(file)).await
}

async fn send_file(path: PathBuf) -> Response {
    let f = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot serve the hook image");
            return StatusCode::NOT_FOUND.into_response();
        }
    };
    let len = f.metadata().await.map(|m| m.len()).unwrap_or(0);
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(f, 1 << 20));
    ([(header::CONTENT_TYPE, "application/octet-stream"), (header::CONTENT_LENGTH, &len.to_string())], body)
        .into_response()
}
