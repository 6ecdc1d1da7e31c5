//! `kiln apply`: creates or updates objects from YAML documents.

use kiln_proto::v1::{AdoptRequest, ApplyRequest, ApplyResponse};

use crate::connection::{Client, status};
use crate::files::read_file;

pub async fn run(c: &mut Client, files: Vec<String>) -> anyhow::Result<()> {
    for f in files {
        let yaml = read_file(&f)?;
        let source = if f == "-" { "stdin".to_string() } else { f };
        let res = c.apply(ApplyRequest { yaml, source }).await.map_err(status)?.into_inner();
        print_applied(res);
    }
    Ok(())
}

/// `kiln adopt NAME --as NEWNAME`: a discovered machine becomes a normal
/// Hardware with its MAC.
pub async fn adopt(c: &mut Client, name: String, new_name: String) -> anyhow::Result<()> {
    let res = c.adopt(AdoptRequest { name, new_name }).await.map_err(status)?.into_inner();
    print_applied(res);
    Ok(())
}

fn print_applied(res: ApplyResponse) {
    {
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
}
