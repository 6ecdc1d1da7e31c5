//! Read-only TFTP of the iPXE directory, with `async-tftp` (RFC 1350 and
//! the blksize, tsize, timeout and windowsize options). kiln's own handler
//! replaces the crate's directory handler: it refuses every request that
//! is not a plain relative name under the directory, refuses writes, reads
//! files whole with a size cap, and logs what it serves and refuses.
//!
//! Symbolic links inside the directory are followed: they are the
//! directory owner's, not the client's (Debian's `/usr/lib/ipxe/ipxe.efi`
//! is a link to `/boot/ipxe.efi`), and a client can only name entries of
//! the directory, never leave it by `..` or an absolute path.

use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};

use async_tftp::packet;
use async_tftp::server::{Handler, TftpServerBuilder};

/// Block size and window limits: a client may ask for 65464-byte blocks
/// and a 65535-block window, which would buffer gigabytes per transfer.
/// 1468 fills one Ethernet frame (what iPXE and U-Boot ask for).
pub const MAX_BLOCK_SIZE: u16 = 1468;
pub const MAX_WINDOW: u16 = 64;
/// Files are read whole into memory (the iPXE binaries are about 1 MB);
/// anything larger is refused rather than buffered.
pub const MAX_FILE_BYTES: u64 = 32 << 20;
/// The longest request path accepted.
const MAX_PATH: usize = 255;

/// Why a request was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("not a plain relative path under the iPXE directory")]
    Escape,
    #[error("longer than {MAX_PATH} bytes")]
    TooLong,
    #[error("no such file")]
    NotFound,
    #[error("larger than {MAX_FILE_BYTES} bytes")]
    TooLarge,
    #[error("write requests are refused: this TFTP server is read-only")]
    ReadOnly,
}

impl From<Refused> for packet::Error {
    fn from(r: Refused) -> Self {
        match r {
            Refused::NotFound => packet::Error::FileNotFound,
            Refused::ReadOnly => packet::Error::IllegalOperation,
            other => packet::Error::Msg(other.to_string()),
        }
    }
}

/// The relative path a request names, or why it is refused: only normal
/// components (no `..`, no root, no `.`), one leading `/` tolerated (some
/// firmware sends `/ipxe.efi`).
pub fn confine(requested: &str) -> Result<PathBuf, Refused> {
    if requested.len() > MAX_PATH {
        return Err(Refused::TooLong);
    }
    let rel = requested.strip_prefix('/').unwrap_or(requested);
    if rel.is_empty() || rel.contains(['\0', '\\']) {
        return Err(Refused::Escape);
    }
    let path = Path::new(rel);
    // `Path::components` drops inner `.` components; refuse them by hand.
    if rel.split('/').any(|c| c == "." || c == "..") || !path.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(Refused::Escape);
    }
    Ok(path.to_path_buf())
}

/// The file to send: a regular file (or a link to one) named under `root`.
fn resolve(root: &Path, requested: &str) -> Result<PathBuf, Refused> {
    let path = root.join(confine(requested)?);
    if !path.is_file() {
        return Err(Refused::NotFound);
    }
    Ok(path)
}

/// Serves the files of one directory, read-only.
pub struct IpxeDir {
    root: PathBuf,
}

impl IpxeDir {
    pub fn new(root: &Path) -> std::io::Result<Self> {
        Ok(Self { root: root.canonicalize()? })
    }
}

impl Handler for IpxeDir {
    type Reader = futures_lite::io::Cursor<Vec<u8>>;
    type Writer = futures_lite::io::Sink;

    async fn read_req_open(
        &mut self,
        client: &SocketAddr,
        path: &Path,
    ) -> Result<(Self::Reader, Option<u64>), packet::Error> {
        let requested = path.to_string_lossy();
        let root = self.root.clone();
        let req = requested.to_string();
        let read = tokio::task::spawn_blocking(move || {
            let real = resolve(&root, &req)?;
            let len = std::fs::metadata(&real).map_err(|_| Refused::NotFound)?.len();
            if len > MAX_FILE_BYTES {
                return Err(Refused::TooLarge);
            }
            std::fs::read(&real).map_err(|_| Refused::NotFound)
        })
        .await
        .unwrap_or(Err(Refused::NotFound));
        match read {
            Ok(bytes) => {
                tracing::info!(%client, file = %requested, bytes = bytes.len(), "tftp: sending");
                let len = bytes.len() as u64;
                Ok((futures_lite::io::Cursor::new(bytes), Some(len)))
            }
            Err(why) => {
                tracing::warn!(%client, file = ?requested, %why, "tftp: refused");
                Err(why.into())
            }
        }
    }

    async fn write_req_open(
        &mut self,
        client: &SocketAddr,
        path: &Path,
        _size: Option<u64>,
    ) -> Result<Self::Writer, packet::Error> {
        tracing::warn!(%client, file = %path.display(), "tftp: write request refused");
        Err(Refused::ReadOnly.into())
    }
}

/// Serves `dir` on `sock` until the socket fails.
pub async fn serve(dir: &Path, sock: std::net::UdpSocket) -> Result<(), ServeError> {
    let server = TftpServerBuilder::with_handler(IpxeDir::new(dir)?)
        .std_socket(sock)?
        .block_size_limit(MAX_BLOCK_SIZE)
        .window_size_limit(MAX_WINDOW)
        // 3 s apart: a client gone for 30 s is given up on.
        .max_send_retries(10)
        .build()
        .await?;
    server.serve().await?;
    Ok(())
}

/// Why [`serve`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Tftp(#[from] async_tftp::Error),
}

#[cfg(test)]
mod tests;
