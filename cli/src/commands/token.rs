//! `kiln token rotate|revoke`: agent tokens.

use kiln_proto::v1::GetRequest;

use crate::connection::{Client, status};

/// Prints HARDWARE's new agent token, once; the old one stops working.
pub async fn rotate(c: &mut Client, hardware: String) -> anyhow::Result<()> {
    let t = c.rotate_agent_token(GetRequest { name: hardware }).await.map_err(status)?.into_inner();
    println!(
        "agent token for hardware/{} (agent {}; shown once, the old one no longer works): {}",
        t.hardware, t.agent_id, t.token
    );
    Ok(())
}

pub async fn revoke(c: &mut Client, hardware: String) -> anyhow::Result<()> {
    c.revoke_agent_token(GetRequest { name: hardware.clone() }).await.map_err(status)?;
    println!("hardware/{hardware}: agent token revoked");
    Ok(())
}
