//! writefile: writes one file into a filesystem on a disk (netplan,
//! cloud-init, a machine's identity), with its owner and mode, creating
//! missing directories, atomically, and unmounting even when it fails. The
//! contents are CONTENTS, or (EKS Anywhere's writefile) a kernel bootconfig
//! made from BOOTCONFIG_CONTENTS, or the user-data from HEGEL_URLS.

mod config;
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
        let contents = match &config.source {
            Source::Bytes(b) => b.clone(),
            Source::Hegel(urls) => user_data(urls)?,
        };
        let root = PathBuf::from(format!("/tmp/kiln-{ACTION}-{}", std::process::id()));
        let mut mounts = Mounts::new();
        mounts.mount_device(&config.disk, config.fs_type.as_deref(), &root)?;
        let written = write::write_into(&root, &config, &contents);
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
