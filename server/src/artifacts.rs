//! Artifact files: what actions leave in /out, kept under
//! `DATA_DIR/artifacts/<attempt id>/<path>`. The store holds the index
//! (size, sha256); this module owns the files and the path rules.

use std::path::{Component, Path, PathBuf};

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

    /// Removes the files of these attempts (their workflow was deleted).
    pub fn remove_attempts<'a>(&self, attempt_ids: impl IntoIterator<Item = &'a str>) {
        for id in attempt_ids {
            if let Ok(dir) = self.locate(id, "x").map(|p| p.parent().map(Path::to_path_buf).unwrap_or_default()) {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
