//! Artifact files: what actions leave in /out, kept under
//! `DATA_DIR/artifacts/<attempt id>/<path>`. The store holds the index
//! (size, sha256); this module owns the files, the path rules and the one
//! writer every upload goes through (the agent's gRPC stream and the action
//! API's HTTP body alike).

use std::path::{Component, Path, PathBuf};

use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// Largest single artifact accepted.
pub const DEFAULT_MAX_ARTIFACT_BYTES: u64 = 256 << 20;

#[derive(Debug, Clone)]
pub struct ArtifactFiles {
    root: PathBuf,
    pub max_bytes: u64,
}

impl ArtifactFiles {
    pub fn new(data_dir: &Path, max_bytes: u64) -> Self {
        Self { root: data_dir.join("artifacts"), max_bytes }
    }

    /// Where an artifact lives; `Err` when `path` could escape its
    /// attempt's directory or is not a plain relative path.
    pub fn locate(&self, attempt_id: &str, path: &str) -> Result<PathBuf, String> {
        let ok_attempt = !attempt_id.is_empty() && attempt_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !ok_attempt {
            return Err(format!("invalid attempt id {attempt_id:?}"));
        }
        let rel = Path::new(path);
        let plain = !path.is_empty()
            && path.len() <= 1024
            && !path.contains('\0')
            && rel.components().all(|c| matches!(c, Component::Normal(_)));
        if !plain {
            return Err(format!("artifact path {path:?} must be relative, without `..`"));
        }
        Ok(self.root.join(attempt_id).join(rel))
    }

    /// Streams `body` into the artifact `path` of `attempt_id`: never whole
    /// in memory, refused as soon as it passes [`ArtifactFiles::max_bytes`]
    /// (or differs from a size announced in advance), written beside its
    /// final name, synced, then renamed, so a reader never sees half a file
    /// and a failed upload leaves nothing behind.
    pub async fn write<B, E>(
        &self,
        attempt_id: &str,
        path: &str,
        announced: Option<u64>,
        mut body: B,
    ) -> Result<Written, WriteError<E>>
    where
        B: Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    {
        let target = self.locate(attempt_id, path).map_err(WriteError::BadPath)?;
        let limit = self.max_bytes;
        if let Some(size) = announced.filter(|&s| s > limit) {
            return Err(WriteError::TooBig { size, limit });
        }
        let dir = target.parent().expect("artifact paths have a parent");
        tokio::fs::create_dir_all(dir).await.map_err(WriteError::Io)?;
        let mut partial_name = target.file_name().expect("artifact paths name a file").to_os_string();
        partial_name.push(".kiln-partial");
        let partial = target.with_file_name(partial_name);
        let result = async {
            let mut file = tokio::fs::File::create(&partial).await.map_err(WriteError::Io)?;
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(WriteError::Body)?;
                size += chunk.len() as u64;
                if size > limit {
                    return Err(WriteError::TooBig { size, limit });
                }
                hasher.update(&chunk);
                file.write_all(&chunk).await.map_err(WriteError::Io)?;
            }
            if let Some(announced) = announced.filter(|&a| a != size) {
                return Err(WriteError::Short { announced, received: size });
            }
            file.sync_all().await.map_err(WriteError::Io)?;
            tokio::fs::rename(&partial, &target).await.map_err(WriteError::Io)?;
            Ok(Written { size, sha256: hex::encode(hasher.finalize()) })
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&partial).await;
        }
        result
    }

    /// Removes the files of these attempts (their workflow was deleted).
    pub fn remove_attempts<'a>(&self, attempt_ids: impl IntoIterator<Item = &'a str>) {
        for id in attempt_ids {
            if let Ok(dir) = self.locate(id, "x").map(|p| p.parent().map(Path::to_path_buf).unwrap_or_default()) {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

/// What [`ArtifactFiles::write`] stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError<E> {
    #[error("{0}")]
    BadPath(String),
    #[error("{size} bytes; the limit is {limit}")]
    TooBig { size: u64, limit: u64 },
    #[error("the upload announced {announced} bytes, {received} arrived")]
    Short { announced: u64, received: u64 },
    #[error("receiving the upload failed")]
    Body(E),
    #[error("storing the file failed: {0}")]
    Io(std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: &[&'static [u8]]) -> impl Stream<Item = Result<bytes::Bytes, std::io::Error>> + Unpin {
        futures_util::stream::iter(parts.iter().map(|p| Ok(bytes::Bytes::from_static(p))).collect::<Vec<_>>())
    }

    #[tokio::test]
    async fn the_writer_streams_checks_the_limit_and_leaves_nothing_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let files = ArtifactFiles::new(dir.path(), 8);
        let w = files.write("a1", "out/r.txt", None, chunks(&[b"abc", b"def"])).await.unwrap();
        assert_eq!(w.size, 6);
        assert_eq!(w.sha256, hex::encode(Sha256::digest(b"abcdef")));
        assert_eq!(std::fs::read(dir.path().join("artifacts/a1/out/r.txt")).unwrap(), b"abcdef");

        // Over the limit while streaming: refused, no file, no partial.
        let err = files.write("a1", "big", None, chunks(&[b"12345", b"67890"])).await.unwrap_err();
        assert!(matches!(err, WriteError::TooBig { size: 10, limit: 8 }), "{err}");
        // Announced too big: refused before reading.
        let err = files.write("a1", "big", Some(9), chunks(&[])).await.unwrap_err();
        assert!(matches!(err, WriteError::TooBig { size: 9, limit: 8 }), "{err}");
        // Shorter than announced.
        let err = files.write("a1", "short", Some(5), chunks(&[b"abc"])).await.unwrap_err();
        assert!(matches!(err, WriteError::Short { announced: 5, received: 3 }), "{err}");
        let left: Vec<_> =
            std::fs::read_dir(dir.path().join("artifacts/a1")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("out")], "only the first upload remains");
    }

    #[test]
    fn paths_stay_inside_the_attempt() {
        let f = ArtifactFiles::new(Path::new("/data"), 10);
        assert_eq!(f.locate("abc-1", "sub/report.txt").unwrap(), Path::new("/data/artifacts/abc-1/sub/report.txt"));
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "./x"] {
            assert!(f.locate("abc", bad).is_err(), "{bad:?}");
        }
        assert!(f.locate("../evil", "x").is_err());
    }
}
