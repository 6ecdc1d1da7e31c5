//! image2disk: streams a disk image over HTTP(S) onto a block device or file.
//!
//! Tinkerbell's variables with Tinkerbell's defaults (`COMPRESSED` unset
//! writes the bytes as they are, `RETRY_ENABLED` is off), and stricter:
//! with `COMPRESSED=true` the format comes from the magic bytes, `CHECKSUM`
//! is verified on the stream, a short download is a failure, retries resume
//! with HTTP Range, and the result can be read back and compared
//! (`VERIFY=true`).

mod config;
mod pipeline;

use std::process::ExitCode;

fn main() -> ExitCode {
    kiln_action_kit::run("image2disk", || {
        let config = config::Config::from_env(kiln_action_kit::env::Env::from_process())?;
        pipeline::write_image(&config)
    })
}
