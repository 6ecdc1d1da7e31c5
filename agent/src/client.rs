//! The agent's side of the agent service: one channel, the agent id on
//! every call, and retries that survive a restarting server.

use std::time::Duration;

use crate::config::TokenSource;
use kiln_proto::connect::ClientTls;
use kiln_proto::v1::agent_service_client::AgentServiceClient;
use kiln_proto::v1::{
    ArtifactChunk, ArtifactHeader, ArtifactInfo, Assignment, HeartbeatRequest, HeartbeatResponse, InventoryReport,
    LogBatch, NextActionRequest, StateReport, artifact_chunk,
};
use kiln_proto::{AGENT_ID_METADATA, AUTHORIZATION_METADATA};
use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// How long one `NextAction` long poll may be held by the server.
pub const LONG_POLL: Duration = Duration::from_secs(30);
/// Longest pause between retries of a failed call.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Adds the agent id and the agent's token to every call.
#[derive(Clone)]
pub struct Identify {
    agent_id: AsciiMetadataValue,
    token: TokenSource,
}

impl Interceptor for Identify {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        // A token file is read for every call (a few bytes): a rotated token
        // written there takes effect without restarting the agent.
        let token = self.token.token().map_err(Status::unauthenticated)?;
        // The error names the field, never the value.
        let mut authorization: AsciiMetadataValue =
            format!("Bearer {token}").parse().map_err(|_| Status::unauthenticated("the agent token is not ASCII"))?;
        // Sensitive: never printed by tonic/hyper debug output.
        authorization.set_sensitive(true);
        req.metadata_mut().insert(AGENT_ID_METADATA, self.agent_id.clone());
        req.metadata_mut().insert(AUTHORIZATION_METADATA, authorization);
        Ok(req)
    }
}

#[derive(Clone)]
pub struct ServerClient {
    inner: AgentServiceClient<InterceptedService<Channel, Identify>>,
}

/// Whether a failed call may succeed when repeated unchanged.
pub fn is_transient(s: &Status) -> bool {
    matches!(
        s.code(),
        Code::Unavailable
            | Code::Unknown
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Internal
            | Code::Cancelled
    )
}

/// Exponential backoff with jitter, capped at [`MAX_BACKOFF`].
pub fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(100).saturating_mul(1 << attempt.min(6)).min(MAX_BACKOFF);
    // Jitter spreads reconnects of many agents after a server restart.
    let jitter = std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), attempt) % 1000;
    base.mul_f64(0.5 + jitter as f64 / 2000.0)
}

impl ServerClient {
    /// A lazily connecting client: the first call connects, and a dropped
    /// connection is re-established by the next call.
    pub fn new(server: &str, agent_id: &str, token: TokenSource, tls: &ClientTls) -> anyhow::Result<Self> {
        let endpoint = kiln_proto::connect::endpoint(server, tls)
            .map_err(|e| anyhow::anyhow!("field server: {e}"))?
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_while_idle(true);
        let agent_id =
            agent_id.parse().map_err(|_| anyhow::anyhow!("agent id {agent_id:?} is not valid ASCII metadata"))?;
        let inner = AgentServiceClient::with_interceptor(endpoint.connect_lazy(), Identify { agent_id, token });
        Ok(Self { inner })
    }

    /// Waits up to `wait` for the next assignment (zero: answered at once);
    /// `None` when there was none.
    pub async fn next_action(&self, wait: Duration) -> Result<Option<Assignment>, Status> {
        let req = NextActionRequest { wait_ms: wait.as_millis() as u32 };
        let mut request = tonic::Request::new(req);
        request.set_timeout(wait + Duration::from_secs(10));
        Ok(self.inner.clone().next_action(request).await?.into_inner().assignment)
    }

    /// Reports a state change, retrying transient failures until the server
    /// answers. Safe to repeat: reports are idempotent on the server.
    pub async fn report(&self, report: StateReport) -> Result<bool, Status> {
        let mut attempt = 0;
        loop {
            match self.inner.clone().report_state(report.clone()).await {
                Ok(ack) => return Ok(ack.into_inner().applied),
                Err(s) if is_transient(&s) => {
                    tracing::warn!(error = %s.message(), "report failed, retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                Err(s) => return Err(s),
            }
        }
    }

    /// One heartbeat, given up after `timeout` (no retry: the caller sends
    /// the next one soon, and a hung call must not hold up the next).
    pub async fn heartbeat(&self, attempt_ids: Vec<String>, timeout: Duration) -> Result<HeartbeatResponse, Status> {
        let mut request = tonic::Request::new(HeartbeatRequest { attempt_ids });
        request.set_timeout(timeout);
        Ok(self.inner.clone().heartbeat(request).await?.into_inner())
    }

    /// Reports the machine's inventory (one call: the caller tries again
    /// later). Returns whether the server's copy changed.
    pub async fn report_inventory(&self, inventory_json: String) -> Result<bool, Status> {
        let mut request = tonic::Request::new(InventoryReport { inventory_json });
        request.set_timeout(Duration::from_secs(30));
        Ok(self.inner.clone().report_inventory(request).await?.into_inner().changed)
    }

    /// Sends log lines, retrying transient failures; resends are
    /// deduplicated by seq on the server.
    pub async fn push_logs(&self, batch: LogBatch) -> Result<(), Status> {
        let mut attempt = 0;
        loop {
            match self.inner.clone().push_logs(batch.clone()).await {
                Ok(_) => return Ok(()),
                Err(s) if is_transient(&s) && attempt < 20 => {
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                Err(s) => return Err(s),
            }
        }
    }
}

/// Bytes per upload message: well under gRPC's 4 MiB message limit.
const UPLOAD_CHUNK: usize = 256 << 10;

impl ServerClient {
    /// Uploads one file as an artifact, streaming it from disk.
    pub async fn upload_artifact(
        &self,
        header: ArtifactHeader,
        file: &std::path::Path,
    ) -> Result<ArtifactInfo, Status> {
        use futures_util::StreamExt;
        use tokio::io::AsyncReadExt;
        let file =
            tokio::fs::File::open(file).await.map_err(|e| Status::internal(format!("open {}: {e}", file.display())))?;
        let first = ArtifactChunk { part: Some(artifact_chunk::Part::Header(header)) };
        let data = futures_util::stream::unfold(Some(file), |file| async move {
            let mut file = file?;
            let mut buf = vec![0u8; UPLOAD_CHUNK];
            match file.read(&mut buf).await {
                Ok(0) | Err(_) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((ArtifactChunk { part: Some(artifact_chunk::Part::Data(buf)) }, Some(file)))
                }
            }
        });
        let chunks = futures_util::stream::iter([first]).chain(data);
        Ok(self.inner.clone().upload_artifact(chunks).await?.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(0) <= Duration::from_millis(100));
        assert!(backoff(3) >= Duration::from_millis(400));
        for n in 0..40 {
            assert!(backoff(n) <= MAX_BACKOFF);
        }
    }
}
