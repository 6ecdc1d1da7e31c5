//! `kiln artifacts list|get`: files actions left in /out.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use futures_util::StreamExt;
use kiln_proto::v1::{ArtifactRequest, GetRequest};

use crate::connection::{Client, status};
use crate::output::{Format, structured, table};
use crate::view;

pub async fn list(c: &mut Client, workflow: String, output: Format) -> anyhow::Result<()> {
    let items = c.list_artifacts(GetRequest { name: workflow }).await.map_err(status)?.into_inner().items;
    let view: Vec<_> = items
        .iter()
        .map(|a| {
            serde_json::json!({
                "action_index": a.action_index, "attempt_id": a.attempt_id, "path": a.path,
                "size": a.size, "sha256": a.sha256, "created_at": view::time(&a.created_at),
            })
        })
        .collect();
    if !structured(output, &view)? {
        let rows: Vec<_> = items
            .iter()
            .map(|a| vec![(a.action_index + 1).to_string(), a.path.clone(), a.size.to_string(), a.sha256.clone()])
            .collect();
        print!("{}", table(&["ACTION", "PATH", "SIZE", "SHA256"], &rows));
    }
    Ok(())
}

/// Streams one artifact into `file`, or stdout.
pub async fn get(
    c: &mut Client,
    workflow: String,
    action: String,
    path: String,
    file: Option<&Path>,
) -> anyhow::Result<()> {
    let req = ArtifactRequest { workflow_id: workflow, action, path };
    let mut stream = c.get_artifact(req).await.map_err(status)?.into_inner();
    let mut sink: Box<dyn Write> = match file {
        Some(f) => Box::new(std::fs::File::create(f).with_context(|| format!("cannot create {}", f.display()))?),
        None => Box::new(std::io::stdout().lock()),
    };
    while let Some(chunk) = stream.next().await {
        sink.write_all(&chunk.map_err(status)?.data)?;
    }
    sink.flush()?;
    Ok(())
}
