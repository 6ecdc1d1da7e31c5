//! image2disk: streams a disk image over HTTP(S) onto a block device or file.
//!
//! Tinkerbell-compatible (`IMG_URL`, `DEST_DISK`, `COMPRESSED`), and stricter:
//! decompression from magic bytes, `CHECKSUM` verified on the stream, a
//! short download is a failure, drops resume with HTTP Range, and the result
//! can be read back and compared (`VERIFY=true`).

mod config;
mod pipeline;

use std::process::ExitCode;

fn main() -> ExitCode {
    kiln_action_kit::run("image2disk", || {
        let config = config::Config::from_env(kiln_action_kit::env::Env::from_process())?;
        pipeline::write_image(&config)
    })
}
