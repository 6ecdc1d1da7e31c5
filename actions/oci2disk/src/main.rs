//! oci2disk: writes the disk image carried by an OCI artifact's layer to a
//! disk, with the Tinkerbell hub action's variables (`IMG_URL`, `DEST_DISK`,
//! `COMPRESSED`, `REGISTRY_USERNAME`, `REGISTRY_PASSWORD`, `SKIP_VERIFY`).

mod config;
mod pull;

use std::process::ExitCode;

fn main() -> ExitCode {
    kiln_action_kit::run("oci2disk", || {
        let config = config::Config::from_env(kiln_action_kit::env::Env::from_process())?;
        pull::write_artifact(&config)
    })
}
