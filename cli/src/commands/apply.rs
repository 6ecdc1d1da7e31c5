//! `kiln apply`: creates or updates objects from YAML documents.

use kiln_proto::v1::ApplyRequest;

use crate::connection::{Client, status};
use crate::files::read_file;

pub async fn run(c: &mut Client, files: Vec<String>) -> anyhow::Result<()> {
    for f in files {
        let yaml = read_file(&f)?;
        let source = if f == "-" { "stdin".to_string() } else { f };
        let res = c.apply(ApplyRequest { yaml, source }).await.map_err(status)?.into_inner();
        for w in &res.warnings {
            eprintln!("warning: {w}");
        }
        for o in res.objects {
            println!("{}/{} {}", o.kind.to_lowercase(), o.name, o.outcome);
            if !o.agent_token.is_empty() {
                // Only the operator who created the hardware sees it.
                println!(
                    "agent token for hardware/{} (shown once, put it in the agent's token_file): {}",
                    o.name, o.agent_token
                );
            }
        }
    }
    Ok(())
}
