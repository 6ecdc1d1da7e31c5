//! The hook ISO: for networks without DHCP boot files or PXE, the machine
//! boots the hook image from a CD its BMC inserts over virtual media
//! (workflow `boot_options: {network_boot: iso}`, Tinkerbell's `bootMode:
//! iso`).
//!
//! One base ISO per hook image, built once with `grub-mkrescue` (GRUB for
//! UEFI and BIOS, El Torito, xorriso) from `--hook-dir`'s kernel and
//! initramfs, and kept in memory. Its grub.cfg has a fixed-length
//! placeholder where the kernel command line goes; each download gets the
//! base with that placeholder overwritten, in place, by the machine's
//! command line padded with spaces (Tinkerbell's Smee patches its hook ISO
//! the same way), so a download costs no rebuild. The command line is the
//! iPXE script's ([`App::hook_kernel_args`]): the server's address and a
//! one-time enrolment credential for that machine and boot, issued by the
//! same gate and rules ([`App::boot_decision`], [`super::enrol`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

use super::boot::Decision;
use super::{App, AppError, OpContext};

/// Starts the placeholder in grub.cfg; unique in the image.
const MAGIC: &str = "kiln-hook-iso-cmdline:";
/// The placeholder's length: the kernel command line fits in it (x86's
/// COMMAND_LINE_SIZE is 2048, with the `linux` line's own words).
const PLACEHOLDER_LEN: usize = 1900;

/// The base ISO, built at the first download; shared by the server's
/// clones of its configuration.
#[derive(Clone, Default)]
pub struct IsoCache(Arc<tokio::sync::Mutex<Option<BaseIso>>>);

impl std::fmt::Debug for IsoCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IsoCache")
    }
}

#[derive(Clone)]
struct BaseIso {
    bytes: Bytes,
    /// Where the placeholder starts.
    at: usize,
    /// The hook files it was built from: (path, length, modified).
    built_from: Vec<(PathBuf, u64, Option<SystemTime>)>,
}

/// One machine's hook ISO, as three pieces (the base before the
/// placeholder, the command line, the rest): sent without copying the base.
pub struct HookIso {
    pub pieces: [Bytes; 3],
}

impl HookIso {
    pub fn len(&self) -> usize {
        self.pieces.iter().map(Bytes::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

const HOOK_FILES: [&str; 2] = ["vmlinuz", "initramfs.img"];

fn hook_files(dir: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    HOOK_FILES
        .iter()
        .map(|f| {
            let path = dir.join(f);
            let meta = std::fs::metadata(&path).ok();
            let (len, modified) = meta.map_or((0, None), |m| (m.len(), m.modified().ok()));
            (path, len, modified)
        })
        .collect()
}

/// grub.cfg: no menu, the hook at once; the placeholder stays a single
/// kernel argument when left unpatched.
fn grub_cfg() -> String {
    let placeholder = format!("{MAGIC}{}", "#".repeat(PLACEHOLDER_LEN - MAGIC.len()));
    format!(
        "set timeout=0\nset default=0\nmenuentry \"kiln hook\" {{\n  linux /vmlinuz {placeholder}\n  \
         initrd /initramfs.img\n}}\n"
    )
}

/// Builds the base ISO from `hook_dir` with grub-mkrescue.
async fn build(hook_dir: &Path) -> Result<BaseIso, String> {
    let built_from = hook_files(hook_dir);
    let work = tempfile::Builder::new().prefix("kiln-hook-iso-").tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let root = work.path().join("root");
    tokio::fs::create_dir_all(root.join("boot/grub")).await.map_err(|e| format!("{}: {e}", root.display()))?;
    for (file, (path, _, _)) in HOOK_FILES.iter().zip(&built_from) {
        tokio::fs::copy(path, root.join(file)).await.map_err(|e| format!("{}: {e}", path.display()))?;
    }
    tokio::fs::write(root.join("boot/grub/grub.cfg"), grub_cfg()).await.map_err(|e| format!("grub.cfg: {e}"))?;
    let out = work.path().join("hook.iso");
    let result =
        tokio::process::Command::new("grub-mkrescue").arg("-o").arg(&out).arg(&root).output().await.map_err(|e| {
            format!("cannot run grub-mkrescue ({e}): apt-get install grub-common grub-efi-amd64-bin xorriso mtools")
        })?;
    if !result.status.success() {
        return Err(format!(
            "grub-mkrescue failed ({}): {}",
            result.status,
            String::from_utf8_lossy(&result.stderr).lines().rev().take(5).collect::<Vec<_>>().join(" / ")
        ));
    }
    let bytes = tokio::fs::read(&out).await.map_err(|e| format!("{}: {e}", out.display()))?;
    let at = placeholder_at(&bytes)?;
    Ok(BaseIso { bytes: Bytes::from(bytes), at, built_from })
}

/// The one place in the image where the placeholder is (grub.cfg is stored
/// uncompressed); anything else means the image cannot be patched.
fn placeholder_at(image: &[u8]) -> Result<usize, String> {
    let magic = MAGIC.as_bytes();
    let mut found = image.windows(magic.len()).enumerate().filter(|(_, w)| *w == magic).map(|(i, _)| i);
    match (found.next(), found.next()) {
        (Some(at), None) if image.len() >= at + PLACEHOLDER_LEN => Ok(at),
        (None, _) => Err("the built ISO has no command line placeholder".into()),
        _ => Err("the built ISO has the command line placeholder more than once".into()),
    }
}

impl BaseIso {
    /// The base with `cmdline` in place of the placeholder.
    fn patched(&self, cmdline: &str) -> Result<HookIso, String> {
        if cmdline.len() > PLACEHOLDER_LEN || cmdline.contains(['\n', '\r']) {
            return Err(format!(
                "the hook command line ({} bytes) does not fit the ISO's {PLACEHOLDER_LEN} or has a line break",
                cmdline.len()
            ));
        }
        let mut line = cmdline.as_bytes().to_vec();
        line.resize(PLACEHOLDER_LEN, b' ');
        Ok(HookIso {
            pieces: [self.bytes.slice(..self.at), Bytes::from(line), self.bytes.slice(self.at + PLACEHOLDER_LEN..)],
        })
    }
}

impl App {
    /// The hook ISO for the machine with `mac`, its command line naming
    /// the server as `base` (the URL the request came to). Anyone on the
    /// provisioning network may ask, as for the iPXE script: a machine
    /// without a pending workflow gets [`AppError::NotFound`] with the
    /// reason, and no credential is issued.
    pub async fn hook_iso(&self, opctx: &OpContext, mac: &str, base: &str) -> Result<HookIso, AppError> {
        let Some(hook_dir) = self.netboot.hook_dir.clone() else {
            return Err(AppError::FailedPrecondition("this server has no hook image (--hook-dir)".into()));
        };
        // Built before the decision, so a failed build spends no credential.
        let iso = {
            let mut cache = self.netboot.iso_cache.0.lock().await;
            match cache.as_ref() {
                Some(iso) if iso.built_from == hook_files(&hook_dir) => iso.clone(),
                _ => {
                    let started = std::time::Instant::now();
                    let iso = build(&hook_dir).await.map_err(|e| {
                        tracing::error!(error = %e, "cannot build the hook ISO");
                        AppError::Unavailable(format!("cannot build the hook ISO: {e}"))
                    })?;
                    tracing::info!(bytes = iso.bytes.len(), took = ?started.elapsed(), "hook ISO built");
                    *cache = Some(iso.clone());
                    iso
                }
            }
        };
        match self.boot_decision(opctx, mac).await {
            Decision::Hook { agent_id, workflow, enrolment } => {
                let mac = kiln_documents::parse_mac(mac).unwrap_or_default();
                let args = self.hook_kernel_args(base, &agent_id, &mac, &enrolment);
                tracing::info!(%mac, %workflow, "netboot: hook ISO");
                iso.patched(&args).map_err(AppError::FailedPrecondition)
            }
            Decision::Local(why) => Err(AppError::NotFound(format!("no hook ISO for {mac}: {why}"))),
        }
    }

    /// The URL a BMC downloads `hardware_id`'s hook ISO from: the server's
    /// `--public-url` (the BMC must reach it; the Host header of a request
    /// is not there to go by).
    pub(crate) async fn hook_iso_url(&self, hardware_id: &str) -> Result<String, AppError> {
        let base = self.netboot.public_url.as_deref().or(self.netboot.agent_url.as_deref()).ok_or_else(|| {
            AppError::FailedPrecondition(
                "ISO boot needs --public-url: the URL the BMC downloads the hook ISO from".into(),
            )
        })?;
        let hardware = self.store.get_hardware(hardware_id).await?;
        let mac = hardware.doc.macs.first().ok_or_else(|| {
            AppError::FailedPrecondition(format!("hardware {hardware_id:?} has no MAC: the hook ISO is per MAC"))
        })?;
        Ok(format!("{}/boot/iso/{mac}/hook.iso", base.trim_end_matches('/')))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(image: &[u8]) -> BaseIso {
        BaseIso { bytes: Bytes::copy_from_slice(image), at: placeholder_at(image).unwrap(), built_from: Vec::new() }
    }

    #[test]
    fn the_command_line_replaces_the_placeholder_in_place() {
        let cfg = grub_cfg();
        let image = [b"head".as_slice(), cfg.as_bytes(), b"tail"].concat();
        let iso = base(&image).patched("kiln.server=http://10.0.0.1 kiln.enrol=kiln_enrol_x").unwrap();
        let patched = iso.pieces.concat();
        assert_eq!(patched.len(), image.len(), "the image keeps its size (and so its layout)");
        let text = String::from_utf8(patched).unwrap();
        assert!(text.contains("  linux /vmlinuz kiln.server=http://10.0.0.1 kiln.enrol=kiln_enrol_x   "), "{text}");
        assert!(!text.contains(MAGIC) && text.starts_with("head") && text.ends_with("}\ntail"), "{text}");
    }

    #[test]
    fn a_command_line_that_does_not_fit_is_refused() {
        let image = grub_cfg().into_bytes();
        let e = base(&image).patched(&"x".repeat(PLACEHOLDER_LEN + 1)).err().unwrap();
        assert!(e.contains("does not fit"), "{e}");
        assert!(base(&image).patched("a\nb").is_err());
        assert!(placeholder_at(b"no placeholder here").unwrap_err().contains("no command line placeholder"));
        let twice = [grub_cfg(), grub_cfg()].concat();
        assert!(placeholder_at(twice.as_bytes()).unwrap_err().contains("more than once"));
    }
}
