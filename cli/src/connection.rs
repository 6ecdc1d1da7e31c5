//! The admin service client every command uses, and how its errors read.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use kiln_proto::v1::admin_service_client::AdminServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::credential::{OperatorToken, operator_token};

pub type Client = AdminServiceClient<InterceptedService<Channel, OperatorToken>>;

/// Connects to `server`, trusting `ca` (PEM) if given, with the operator
/// credential of `token_file` (or `KILN_TOKEN`).
pub async fn connect(server: &str, ca: Option<&Path>, token_file: Option<&Path>) -> anyhow::Result<Client> {
    let ca_pem = match ca {
        Some(p) => Some(std::fs::read(p).with_context(|| format!("--ca {}", p.display()))?),
        None => None,
    };
    let token = operator_token(token_file)?;
    let endpoint = kiln_proto::connect::endpoint(server, &kiln_proto::connect::ClientTls { ca_pem, identity: None })
        .map_err(anyhow::Error::msg)?
        .connect_timeout(Duration::from_secs(5));
    let channel = endpoint.connect().await.map_err(|e| {
        let cause = std::error::Error::source(&e).map(|s| format!(": {s}")).unwrap_or_default();
        anyhow::anyhow!("cannot reach kiln server at {server}{cause}")
    })?;
    Ok(AdminServiceClient::with_interceptor(channel, token).max_decoding_message_size(64 << 20))
}

/// gRPC errors carry a message meant for the operator: show just that.
pub fn status(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", s.message())
}
