//! Files the action left in `/out`, uploaded as the attempt's artifacts.

use std::path::{Path, PathBuf};

use kiln_proto::v1::{ArtifactHeader, Assignment};

use crate::Agent;
use crate::log_shipper::LogShipper;
use crate::runtime::OutputLine;

/// Uploads what the action left in `out`. A file that cannot be uploaded
/// (too large, server gone) is named in the attempt's logs; the action's
/// result stands.
pub(super) async fn upload(agent: &Agent, a: &Assignment, out: &Path, shipper: &LogShipper) {
    let mut files = Vec::new();
    collect_files(out, out, &mut files);
    for (rel, path, size) in files {
        let header = ArtifactHeader {
            workflow_id: a.workflow_id.clone(),
            action_index: a.action_index,
            attempt_id: a.attempt_id.clone(),
            path: rel.clone(),
            size,
        };
        let text = match agent.client.upload_artifact(header, &path).await {
            Ok(info) => format!("[kiln-agent] artifact {rel} uploaded ({} bytes, sha256 {})", info.size, info.sha256),
            Err(e) => format!("[kiln-agent] artifact {rel} NOT uploaded: {}", e.message()),
        };
        shipper.send(OutputLine { stderr: true, text }).await;
    }
}

/// Regular files below `dir`, as (path relative to `root`, path, size).
/// Symbolic links are skipped: they could point anywhere on the host.
fn collect_files(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf, u64)>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let Ok(meta) = e.path().symlink_metadata() else { continue };
        if meta.is_dir() {
            collect_files(root, &e.path(), out);
        } else if meta.is_file()
            && let Ok(rel) = e.path().strip_prefix(root)
        {
            out.push((rel.to_string_lossy().into_owned(), e.path(), meta.len()));
        }
    }
}
