//! `kiln logs`: a workflow's action output, stdout and stderr in order.

use futures_util::StreamExt;
use kiln_proto::v1::{LogStream, LogsRequest};

use crate::connection::{Client, status};
use crate::output::Format;
use crate::view;

/// Prints each line, prefixed with its action's name when all actions are
/// shown; `Format::Json` prints one object per line instead.
pub async fn run(
    c: &mut Client,
    workflow: String,
    action: Option<String>,
    follow: bool,
    output: Format,
) -> anyhow::Result<()> {
    let all = action.is_none();
    let req = LogsRequest { workflow_id: workflow, action: action.unwrap_or_default(), follow };
    let mut stream = c.logs(req).await.map_err(status)?.into_inner();
    while let Some(entry) = stream.next().await {
        let e = entry.map_err(status)?;
        let line = e.line.unwrap_or_default();
        if output == Format::Json {
            let stream = if line.stream == LogStream::Stderr as i32 { "stderr" } else { "stdout" };
            let obj = serde_json::json!({
                "action_index": e.action_index, "action": e.action_name, "attempt": e.attempt_id,
                "seq": line.seq, "stream": stream, "time": view::time(&line.time), "text": line.text,
            });
            println!("{obj}");
        } else if all {
            println!("[{}] {}", e.action_name, line.text);
        } else {
            println!("{}", line.text);
        }
    }
    Ok(())
}
