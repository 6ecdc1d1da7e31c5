//! The agent service over gRPC: translation only. Every call becomes one use
//! case of [`crate::app::App`] with the caller's [`OpContext`].
//!
//! Handlers receive the caller's identity from [`crate::auth::AgentAuthService`],
//! the layer every agent call passes through; none of them reads metadata.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use kiln_proto::time::proto_to_millis;
use kiln_proto::v1::agent_service_server::AgentService;
use kiln_proto::v1::enrolment_service_server::EnrolmentService;
use kiln_proto::v1::{
    ArtifactChunk, ArtifactInfo, EnrolRequest, EnrolResponse, HeartbeatRequest, HeartbeatResponse, InventoryAck,
    InventoryReport, LogAck, LogBatch, NextActionRequest, NextActionResponse, ReportAck, StateReport, artifact_chunk,
};
use tonic::{Request, Response, Status};

use crate::app::artifacts::ArtifactTarget;
use crate::app::{App, AppError, OpContext};
use crate::convert::{self, action_state_from_proto, status};
use crate::model::now_millis;
use crate::state_machine::{Report, TransitionError};
use crate::store::NewLogLine;

/// The authenticated caller of an agent RPC, put into the request's
/// extensions by [`crate::auth::AgentAuthService`], the layer every agent
/// call passes through (token, and client certificate when there is one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentIdentity(pub String);

#[allow(clippy::result_large_err)] // tonic's Status
fn caller<T>(req: &Request<T>) -> Result<OpContext, Status> {
    req.extensions()
        .get::<AgentIdentity>()
        .map(|a| OpContext::agent(&a.0))
        .ok_or_else(|| Status::internal("agent service mounted without its authentication layer"))
}

pub struct AgentApi {
    app: Arc<App>,
}

impl AgentApi {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

#[tonic::async_trait]
impl AgentService for AgentApi {
    async fn next_action(&self, req: Request<NextActionRequest>) -> Result<Response<NextActionResponse>, Status> {
        let opctx = caller(&req)?;
        let wait = Duration::from_millis(u64::from(req.get_ref().wait_ms));
        let assignment = self.app.next_assignment(&opctx, wait).await.map_err(status)?;
        Ok(Response::new(NextActionResponse { assignment: assignment.map(convert::assignment) }))
    }

    async fn report_state(&self, req: Request<StateReport>) -> Result<Response<ReportAck>, Status> {
        let opctx = caller(&req)?;
        let r = req.into_inner();
        let state =
            action_state_from_proto(r.state()).ok_or_else(|| status(AppError::from(TransitionError::NoState)))?;
        let report = Report {
            action_index: r.action_index,
            attempt_id: r.attempt_id,
            state,
            exit_code: r.exit_code,
            reason: r.reason,
            message: r.message,
            output_json: r.output_json,
        };
        let applied = self.app.report(&opctx, &r.workflow_id, report).await.map_err(status)?;
        Ok(Response::new(ReportAck { applied }))
    }

    async fn push_logs(&self, req: Request<LogBatch>) -> Result<Response<LogAck>, Status> {
        let opctx = caller(&req)?;
        let batch = req.into_inner();
        let lines = batch
            .lines
            .into_iter()
            .map(|l| NewLogLine {
                seq: l.seq,
                stream: l.stream,
                time: l.time.as_ref().map_or_else(now_millis, proto_to_millis),
                text: l.text,
            })
            .collect();
        let stored_through = self
            .app
            .push_logs(&opctx, &batch.workflow_id, batch.action_index, &batch.attempt_id, lines)
            .await
            .map_err(status)?;
        Ok(Response::new(LogAck { stored_through }))
    }

    async fn upload_artifact(
        &self,
        req: Request<tonic::Streaming<ArtifactChunk>>,
    ) -> Result<Response<ArtifactInfo>, Status> {
        let opctx = caller(&req)?;
        let mut chunks = req.into_inner();
        let header = match chunks.message().await?.and_then(|c| c.part) {
            Some(artifact_chunk::Part::Header(h)) => h,
            _ => return Err(Status::invalid_argument("an artifact upload starts with its header")),
        };
        let body = chunks.map(|chunk| match chunk.map(|c| c.part) {
            Ok(Some(artifact_chunk::Part::Data(data))) => Ok(bytes::Bytes::from(data)),
            Ok(_) => Err(AppError::InvalidArgument("only data may follow an artifact header".into())),
            Err(e) => Err(AppError::DataLoss(format!("the upload stream broke: {}", e.message()))),
        });
        let target = ArtifactTarget {
            workflow_id: header.workflow_id,
            action_index: header.action_index,
            attempt_id: header.attempt_id,
            path: header.path,
        };
        let artifact = self.app.upload_artifact(&opctx, target, header.size, body).await.map_err(status)?;
        Ok(Response::new(convert::artifact(&artifact)))
    }

    async fn report_inventory(&self, req: Request<InventoryReport>) -> Result<Response<InventoryAck>, Status> {
        let opctx = caller(&req)?;
        let changed = self.app.report_inventory(&opctx, &req.get_ref().inventory_json).await.map_err(status)?;
        Ok(Response::new(InventoryAck { changed }))
    }

    async fn heartbeat(&self, req: Request<HeartbeatRequest>) -> Result<Response<HeartbeatResponse>, Status> {
        let opctx = caller(&req)?;
        let beat = self.app.heartbeat(&opctx, req.into_inner().attempt_ids).await.map_err(status)?;
        Ok(Response::new(HeartbeatResponse {
            ended_attempt_ids: beat.ended_attempt_ids,
            renew_interval_ms: beat.renew_interval_ms,
        }))
    }
}

/// The enrolment service over gRPC: translation only. Mounted without the
/// agent authentication layer (the caller has no agent credential yet): the
/// enrolment credential in the request is checked by [`App::enrol`].
pub struct EnrolmentApi {
    app: Arc<App>,
}

impl EnrolmentApi {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

#[tonic::async_trait]
impl EnrolmentService for EnrolmentApi {
    async fn enrol(&self, req: Request<EnrolRequest>) -> Result<Response<EnrolResponse>, Status> {
        let opctx = OpContext::system("enrolment").with_peer(crate::auth::peer_addr(req.extensions()));
        let r = req.into_inner();
        let request = crate::app::enrol::EnrolRequest { credential: r.credential, agent_id: r.agent_id, mac: r.mac };
        let enrolled = self.app.enrol(&opctx, request).await.map_err(status)?;
        let (client_cert_pem, client_key_pem, client_ca_pem) = enrolled.cert.unwrap_or_default();
        Ok(Response::new(EnrolResponse {
            hardware_id: enrolled.hardware_id,
            agent_id: enrolled.agent_id,
            token: enrolled.token,
            client_cert_pem,
            client_key_pem,
            client_ca_pem,
        }))
    }
}
