//! `kiln cert issue`: client certificates for agents (mutual TLS).

use std::path::Path;

use anyhow::Context;
use kiln_proto::v1::GetRequest;

use crate::connection::{Client, status};
use crate::files::write_private;

/// Writes agent.pem, agent.key (0600) and ca.pem for HARDWARE's agent into `out`.
pub async fn issue(c: &mut Client, hardware: String, out: &Path) -> anyhow::Result<()> {
    let cert = c.issue_agent_cert(GetRequest { name: hardware }).await.map_err(status)?.into_inner();
    std::fs::create_dir_all(out).with_context(|| format!("--out {}", out.display()))?;
    std::fs::write(out.join("agent.pem"), &cert.cert_pem)?;
    std::fs::write(out.join("ca.pem"), &cert.ca_pem)?;
    write_private(&out.join("agent.key"), cert.key_pem.as_bytes())?;
    println!(
        "client certificate for hardware/{} (agent {}): {dir}/agent.pem, key {dir}/agent.key, CA {dir}/ca.pem",
        cert.hardware,
        cert.agent_id,
        dir = out.display()
    );
    Ok(())
}
