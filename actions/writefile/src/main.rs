//! writefile: writes one file into a filesystem on a disk (netplan,
//! cloud-init, a machine's identity), with its owner and mode, creating
//! missing directories, atomically, and unmounting even when it fails. The
//! contents are CONTENTS, or (EKS Anywhere's writefile) a kernel bootconfig
//! made from BOOTCONFIG_CONTENTS, or the user-data from HEGEL_URLS, or a
//! DHCP offer written as static network configuration (STATIC_NETPLAN,
//! STATIC_BOTTLEROCKET).

mod config;
mod dhcp;
mod write;

use std::path::PathBuf;
use std::process::ExitCode;

use kiln_action_kit::env::Env;
use kiln_action_kit::log;
use kiln_action_kit::mount::Mounts;

use config::{Config, Source};
use kiln_action_kit::{Failure, Result};

const ACTION: &str = "writefile";

fn main() -> ExitCode {
    kiln_action_kit::run(ACTION, || {
        // std::env::vars panics on a non-UTF-8 value; CONTENTS may be any
        // bytes, so it is read on its own and the rest is read lossily.
        let env = Env::from_pairs(
            std::env::vars_os().map(|(k, v)| (k.to_string_lossy().into_owned(), v.to_string_lossy().into_owned())),
        );
        let config = Config::from_env(env, std::env::var_os("CONTENTS"))?;
        // Fetched before the disk is touched: a metadata service that does
        // not answer leaves nothing half done.
        let mut dns = None;
        let contents = match &config.source {
            Source::Bytes(b) => b.clone(),
            Source::Hegel(urls) => user_data(urls)?,
            Source::Dhcp { bottlerocket, ifname, timeout } => {
                let ifname = dhcp::interface(ifname.as_deref())?;
                let offer = dhcp::request_offer(&ifname, *timeout)?;
                log(ACTION, format_args!("DHCP offer on {ifname}: {}/{}", offer.address, offer.prefix));
                if *bottlerocket {
                    dns = Some(dhcp::bottlerocket_dns(&offer));
                    dhcp::bottlerocket_net_toml(&offer).into_bytes()
                } else if dhcp::is_vlan_interface(&ifname) {
                    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
                    let Some(vlan) = dhcp::vlan_id(&cmdline) else {
                        return Err(Failure::new(
                            "DhcpFailed",
                            format!("{ifname} is a VLAN interface but /proc/cmdline has no vlan_id="),
                        ));
                    };
                    dhcp::netplan_vlan(&offer, vlan).into_bytes()
                } else {
                    dhcp::netplan(&offer).into_bytes()
                }
            }
        };
        let root = PathBuf::from(format!("/tmp/kiln-{ACTION}-{}", std::process::id()));
        let mut mounts = Mounts::new();
        mounts.mount_device(&config.disk, config.fs_type.as_deref(), &root)?;
        let written = write::write_into(&root, &config, &contents).and_then(|()| match &dns {
            Some(dns) => append_user_data(&root, dns),
            None => Ok(()),
        });
        // Unmounted whatever happened; an unmount error is reported because
        // it can mean the write never reached the disk.
        let unmounted = mounts.unmount_all();
        let _ = std::fs::remove_dir(&root);
        written?;
        unmounted?;
        log(
            ACTION,
            format_args!(
                "wrote {} ({} bytes, mode {:04o}, owner {}:{}) on {}",
                config.dest,
                contents.len(),
                config.mode,
                config.uid,
                config.gid,
                config.disk.display()
            ),
        );
        Ok(())
    })
}

/// The first answer of the metadata services in turn, as EKS Anywhere's
/// writefile: each gets 10 s, a failure or a non-2xx status moves on to the
/// next, and empty user-data is a failure ("No content").
fn user_data(urls: &[String]) -> Result<Vec<u8>> {
    let client = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(|e| Failure::new("DownloadFailed", format!("HTTP client: {e}")))?;
    let mut tried = Vec::new();
    for url in urls {
        let answer = client.get(url).send().and_then(|r| r.error_for_status()).and_then(|r| r.bytes());
        match answer {
            Ok(body) if !body.is_empty() => {
                log(ACTION, format_args!("user-data from {url} ({} bytes)", body.len()));
                return Ok(body.to_vec());
            }
            Ok(_) => tried.push(format!("{url}: empty user-data")),
            Err(e) => tried.push(format!("{url}: {e}")),
        }
    }
    Err(Failure::new("DownloadFailed", format!("no user-data from HEGEL_URLS: {}", tried.join("; "))))
}

/// Bottlerocket takes its DNS servers from its user-data: EKS Anywhere
/// appends them to /user-data.toml (creating it, mode 0644).
fn append_user_data(root: &std::path::Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = kiln_action_kit::mount::inside(root, "/user-data.toml").map_err(|e| Failure::new("WriteFailed", e))?;
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .open(&path)
        .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_all()))
        .map_err(|e| Failure::new("WriteFailed", format!("appending the DNS servers to /user-data.toml: {e}")))
}
