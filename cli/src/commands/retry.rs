//! `kiln retry`: resumes a FAILED or TIMEOUT workflow from its failed action.

use kiln_proto::v1::GetRequest;

use crate::connection::{Client, status};
use crate::view::workflow_state;

pub async fn run(c: &mut Client, workflow: String) -> anyhow::Result<()> {
    let wf = c.retry(GetRequest { name: workflow }).await.map_err(status)?.into_inner();
    println!("workflow/{} {}", wf.id, workflow_state(wf.state));
    Ok(())
}
