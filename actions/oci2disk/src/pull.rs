//! Pull and write: the manifest names the layers; every layer the hub would
//! write (media type `application/vnd.oci.image.layer.v1.tar` with an
//! `org.opencontainers.image.title` annotation, as `oras push` makes them)
//! is streamed, in manifest order, onto the disk. oci-client checks each
//! blob's digest as its last bytes arrive.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use kiln_action_kit::decompress::{Format, decoder};
use kiln_action_kit::disk::reread_partitions;
use kiln_action_kit::progress::{Progress, bytes};
use kiln_action_kit::{Failure, OrFail, Result, log};
use oci_client::Client;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;

use crate::config::Config;

const ACTION: &str = "oci2disk";
/// The only layer media type the hub lets through (oras' default for files).
pub const DISK_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
const TITLE: &str = "org.opencontainers.image.title";
const BLOCK: usize = 4 << 20;

/// Whether the hub would write this layer.
pub fn is_disk_layer(layer: &OciDescriptor) -> bool {
    layer.media_type == DISK_LAYER
        && layer.annotations.as_ref().and_then(|a| a.get(TITLE)).is_some_and(|t| !t.is_empty())
}

pub fn write_artifact(config: &Config) -> Result<()> {
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .or_fail("Internal", || "starting the async runtime".into())?;
    let client = Client::new(ClientConfig {
        protocol: if config.plain_http { ClientProtocol::Http } else { ClientProtocol::Https },
        accept_invalid_certificates: config.skip_verify,
        ..Default::default()
    });
    let auth = match &config.credentials {
        Some((user, password)) => {
            log(ACTION, "registry credentials provided, using an authenticated pull");
            RegistryAuth::Basic(user.clone(), password.clone())
        }
        None => RegistryAuth::Anonymous,
    };
    let reference = &config.reference;
    let (manifest, digest) = runtime
        .block_on(client.pull_image_manifest(reference, &auth))
        .or_fail("PullFailed", || format!("pulling the manifest of {reference}"))?;
    log(ACTION, format!("{reference} is {digest} with {} layer(s)", manifest.layers.len()));
    let layers: Vec<&OciDescriptor> = manifest.layers.iter().filter(|l| is_disk_layer(l)).collect();
    if layers.is_empty() {
        // The hub writes nothing and reports success; an untouched disk
        // reported as written is worse than a failure.
        let seen: Vec<String> = manifest.layers.iter().map(|l| format!("{} ({})", l.digest, l.media_type)).collect();
        return Err(Failure::new(
            "NoDiskLayer",
            format!(
                "{reference} has no layer of type {DISK_LAYER} with a {TITLE} annotation; layers: [{}]",
                seen.join(", ")
            ),
        ));
    }

    let mut file = OpenOptions::new()
        .write(true)
        .open(&config.dest)
        .or_fail("OpenFailed", || format!("opening {}", config.dest.display()))?;
    let total: u64 = layers.iter().map(|l| l.size.max(0) as u64).sum();
    let mut progress = Progress::new("image", (config.format == Format::Raw).then_some(total), Duration::from_secs(3));
    let mut written = 0u64;
    for layer in layers {
        let title = layer.annotations.as_ref().and_then(|a| a.get(TITLE)).cloned().unwrap_or_default();
        log(
            ACTION,
            format!(
                "writing layer {title} ({}, {}) to {}",
                layer.digest,
                bytes(layer.size as u64),
                config.dest.display()
            ),
        );
        let result = runtime
            .block_on(client.pull_blob_stream(reference, layer))
            .or_fail("PullFailed", || format!("pulling layer {}", layer.digest))
            .and_then(|blob| {
                let body = BufReader::with_capacity(
                    1 << 20,
                    BlobReader { runtime: &runtime, stream: blob.stream, chunk: Default::default() },
                );
                let input = decoder(config.format, body)
                    .or_fail("DecompressFailed", || format!("reading layer {}", layer.digest))?;
                copy(input, &mut file, &mut written, &mut progress)
            });
        if let Err(failure) = result {
            // Part of an image may be on the disk: make sure it cannot boot.
            if written > 0 {
                let _ = file.write_all_at(&vec![0u8; (1 << 20).min(written as usize)], 0);
                let _ = file.sync_all();
            }
            return Err(failure);
        }
    }
    file.sync_all().or_fail("WriteFailed", || format!("flushing {}", config.dest.display()))?;
    progress.finish(written);
    // As the hub: a failed re-read is a warning (a file has no partitions).
    if let Err(e) = reread_partitions(&file) {
        log(ACTION, format!("warning: re-reading the partition table of {} failed: {e}", config.dest.display()));
    }
    log(
        ACTION,
        format!(
            "wrote {} from {reference} to {} in {:.1}s",
            bytes(written),
            config.dest.display(),
            started.elapsed().as_secs_f64()
        ),
    );
    Ok(())
}

/// Copies at the disk's current position, counting into `written`.
fn copy(
    mut input: Box<dyn Read + Send + '_>,
    file: &mut File,
    written: &mut u64,
    progress: &mut Progress,
) -> Result<()> {
    let mut buf = vec![0u8; BLOCK];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let reason = if e.kind() == io::ErrorKind::InvalidData { "DecompressFailed" } else { "PullFailed" };
                return Err(Failure::new(reason, format!("after {written} bytes: {e}")));
            }
        };
        file.write_all(&buf[..n]).or_fail("WriteFailed", || format!("writing at byte {written}"))?;
        *written += n as u64;
        progress.update(*written);
    }
}

/// The blob's byte stream as a blocking reader (the decoders are blocking).
struct BlobReader<'a> {
    runtime: &'a tokio::runtime::Runtime,
    stream: BoxStream<'static, std::result::Result<bytes::Bytes, io::Error>>,
    chunk: bytes::Bytes,
}

impl Read for BlobReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            match self.runtime.block_on(self.stream.next()) {
                Some(chunk) => self.chunk = chunk?,
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.chunk.len());
        out[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk = self.chunk.slice(n..);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn layer(media_type: &str, title: Option<&str>) -> OciDescriptor {
        OciDescriptor {
            media_type: media_type.into(),
            annotations: title.map(|t| BTreeMap::from([(TITLE.to_string(), t.to_string())])),
            ..Default::default()
        }
    }

    #[test]
    fn only_titled_tar_layers_are_disk_layers() {
        assert!(is_disk_layer(&layer(DISK_LAYER, Some("disk.raw.gz"))));
        assert!(!is_disk_layer(&layer(DISK_LAYER, None)));
        assert!(!is_disk_layer(&layer(DISK_LAYER, Some(""))));
        assert!(!is_disk_layer(&layer("application/vnd.docker.image.rootfs.diff.tar.gzip", Some("x"))));
        assert!(!is_disk_layer(&layer("application/vnd.oci.image.layer.v1.tar+gzip", Some("x"))));
    }
}
