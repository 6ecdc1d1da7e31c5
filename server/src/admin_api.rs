//! The operator's service over gRPC (used by the `kiln` CLI): translation
//! only. Every call becomes one use case of [`crate::app::App`] with an
//! operator's [`OpContext`], which [`crate::auth::AdminAuth`] vouched for.

use std::pin::Pin;
use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use kiln_proto::time::millis_to_proto;
use kiln_proto::v1::admin_service_server::AdminService;
use kiln_proto::v1::{
    ActionDefinitionList, AdoptRequest, AgentCert, AgentToken, AppliedObject, ApplyRequest, ApplyResponse,
    ArtifactData, ArtifactList, ArtifactRequest, DeleteRequest, DeleteResponse, Event, EventList, EventsRequest,
    GetRequest, Hardware, HardwareInventory, HardwareList, ListRequest, LogEntry, LogLine, LogsRequest, PlanRequest,
    RevokeResponse, Template, TemplateList, Workflow, WorkflowList, plan_request,
};
use kiln_proto::v1::{
    BmcJob, BmcJobList, BmcJobRequest, BootDeviceRequest, BootDeviceResponse, ListBmcJobsRequest, PowerRequest,
    PowerResponse, VirtualMediaRequest, VirtualMediaResponse,
};
use kiln_proto::v1::{RuleList, RulePlan, RulePlanRequest};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::app::apply::PlanSource;
use crate::app::audit::EventFilter;
use crate::app::{App, OpContext};
use crate::auth::OperatorIdentity;
use crate::convert::{self, status};
use crate::store::{EventKind, ObjectKind};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Bytes per message when streaming an artifact to the CLI.
const ARTIFACT_CHUNK: usize = 256 << 10;

/// Warnings a plan response carries at most (each at most 512 bytes, 683
/// in base64), well below the 16 KiB of headers peers accept by default.
const MAX_PLAN_WARNINGS: usize = 10;

pub struct AdminApi {
    app: Arc<App>,
}

impl AdminApi {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

#[allow(clippy::result_large_err)] // tonic's Status
fn operator<T>(req: &Request<T>) -> Result<OpContext, Status> {
    req.extensions()
        .get::<OperatorIdentity>()
        .map(|OperatorIdentity(role)| role.context().with_peer(req.remote_addr()))
        .ok_or_else(|| Status::internal("admin service mounted without its authentication layer"))
}

#[allow(clippy::result_large_err)] // tonic's Status
fn event_filter(req: &EventsRequest) -> Result<EventFilter, Status> {
    let kind = match req.kind.as_str() {
        "" => None,
        k => Some(EventKind::parse(k).ok_or_else(|| {
            Status::invalid_argument(format!("unknown event kind {k:?}: expected write or security"))
        })?),
    };
    let since = req.since.as_ref().map_or(0, kiln_proto::time::proto_to_millis);
    Ok(EventFilter { since, kind, limit: req.limit })
}

fn source_name(source: &str) -> &str {
    if source.is_empty() { "input" } else { source }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn apply(&self, req: Request<ApplyRequest>) -> Result<Response<ApplyResponse>, Status> {
        let opctx = operator(&req)?;
        let req = req.into_inner();
        let (applied, warnings) =
            self.app.apply_with_warnings(&opctx, source_name(&req.source), &req.yaml).await.map_err(status)?;
        let objects = applied
            .into_iter()
            .map(|a| AppliedObject {
                kind: a.kind.into(),
                name: a.name,
                outcome: a.outcome.as_str().into(),
                agent_token: a.agent_token,
            })
            .collect();
        Ok(Response::new(ApplyResponse { objects, warnings }))
    }

    async fn adopt(&self, req: Request<AdoptRequest>) -> Result<Response<ApplyResponse>, Status> {
        let opctx = operator(&req)?;
        let req = req.into_inner();
        let applied = self.app.adopt(&opctx, &req.name, &req.new_name).await.map_err(status)?;
        let objects = applied
            .into_iter()
            .map(|a| AppliedObject {
                kind: a.kind.into(),
                name: a.name,
                outcome: a.outcome.as_str().into(),
                agent_token: a.agent_token,
            })
            .collect();
        Ok(Response::new(ApplyResponse { objects, warnings: Vec::new() }))
    }

    async fn get_hardware(&self, req: Request<GetRequest>) -> Result<Response<Hardware>, Status> {
        let opctx = operator(&req)?;
        let h = self.app.get_hardware(&opctx, &req.get_ref().name).await.map_err(status)?;
        let mut hardware = convert::hardware(&h);
        if let Some(s) = self.app.hardware_status(&opctx, &[h.doc.id.as_str()]).await.map_err(status)?.first() {
            convert::hardware_status(&mut hardware, s);
        }
        if let Some(reading) = self.app.power_reading(&opctx, &h.doc.id).await.map_err(status)? {
            hardware.power_state = reading.state;
            hardware.power_read_at = Some(millis_to_proto(reading.read_at));
        }
        Ok(Response::new(hardware))
    }

    async fn get_hardware_inventory(&self, req: Request<GetRequest>) -> Result<Response<HardwareInventory>, Status> {
        let inv = self.app.hardware_inventory(&operator(&req)?, &req.get_ref().name).await.map_err(status)?;
        Ok(Response::new(convert::hardware_inventory(inv)))
    }

    async fn list_hardware(&self, req: Request<ListRequest>) -> Result<Response<HardwareList>, Status> {
        let opctx = operator(&req)?;
        let items = self.app.list_hardware(&opctx).await.map_err(status)?;
        let mut list = Vec::with_capacity(items.len());
        for h in &items {
            let mut hardware = convert::hardware(h);
            // Only machines with a BMC have readings: one indexed read each.
            if h.doc.bmc.is_some()
                && let Some(reading) = self.app.power_reading(&opctx, &h.doc.id).await.map_err(status)?
            {
                hardware.power_state = reading.state;
                hardware.power_read_at = Some(millis_to_proto(reading.read_at));
            }
            list.push(hardware);
        }
        let ids: Vec<&str> = items.iter().map(|h| h.doc.id.as_str()).collect();
        let statuses = self.app.hardware_status(&opctx, &ids).await.map_err(status)?;
        for (hardware, s) in list.iter_mut().zip(statuses) {
            convert::hardware_status(hardware, &s);
        }
        Ok(Response::new(HardwareList { items: list }))
    }

    async fn list_action_definitions(
        &self,
        req: Request<ListRequest>,
    ) -> Result<Response<ActionDefinitionList>, Status> {
        let items = self.app.list_action_definitions(&operator(&req)?).await.map_err(status)?;
        Ok(Response::new(ActionDefinitionList { items: items.iter().map(convert::definition).collect() }))
    }

    async fn get_template(&self, req: Request<GetRequest>) -> Result<Response<Template>, Status> {
        let t = self.app.get_template(&operator(&req)?, &req.get_ref().name).await.map_err(status)?;
        Ok(Response::new(convert::template(&t)))
    }

    async fn list_templates(&self, req: Request<ListRequest>) -> Result<Response<TemplateList>, Status> {
        let items = self.app.list_templates(&operator(&req)?).await.map_err(status)?;
        Ok(Response::new(TemplateList { items: items.iter().map(convert::template).collect() }))
    }

    async fn get_workflow(&self, req: Request<GetRequest>) -> Result<Response<Workflow>, Status> {
        let w = self.app.get_workflow(&operator(&req)?, &req.get_ref().name).await.map_err(status)?;
        Ok(Response::new(Workflow {
            data_json: w.data_json,
            data_version: w.data_version,
            ..convert::workflow_with_steps(&w.workflow, &w.bmc_steps)
        }))
    }

    async fn list_workflows(&self, req: Request<ListRequest>) -> Result<Response<WorkflowList>, Status> {
        let items = self.app.list_workflows(&operator(&req)?).await.map_err(status)?;
        Ok(Response::new(WorkflowList { items: items.iter().map(convert::workflow).collect() }))
    }

    async fn delete(&self, req: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        let opctx = operator(&req)?;
        let req = req.into_inner();
        let kind = ObjectKind::parse(&req.kind).ok_or_else(|| {
            Status::invalid_argument(format!(
                "unknown kind {:?}: expected hardware, template, workflow, action or rule",
                req.kind
            ))
        })?;
        self.app.delete(&opctx, kind, &req.name).await.map_err(status)?;
        Ok(Response::new(DeleteResponse {}))
    }

    type WatchWorkflowStream = BoxStream<Workflow>;

    async fn watch_workflow(&self, req: Request<GetRequest>) -> Result<Response<Self::WatchWorkflowStream>, Status> {
        let changes = self.app.watch_workflow(&operator(&req)?, &req.get_ref().name).await.map_err(status)?;
        let stream = changes
            .map(|change| change.map(|w| convert::workflow_with_steps(&w.workflow, &w.bmc_steps)).map_err(status));
        Ok(Response::new(Box::pin(stream)))
    }

    type LogsStream = BoxStream<LogEntry>;

    async fn logs(&self, req: Request<LogsRequest>) -> Result<Response<Self::LogsStream>, Status> {
        let opctx = operator(&req)?;
        let req = req.into_inner();
        let records = self.app.read_logs(&opctx, &req.workflow_id, &req.action, req.follow).await.map_err(status)?;
        let stream = records.map(|record| {
            record
                .map(|r| LogEntry {
                    action_index: r.line.action_index,
                    action_name: r.action_name,
                    attempt_id: r.line.attempt_id,
                    line: Some(LogLine {
                        seq: r.line.seq,
                        stream: r.line.stream,
                        time: Some(millis_to_proto(r.line.time)),
                        text: r.line.text,
                    }),
                })
                .map_err(status)
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_artifacts(&self, req: Request<GetRequest>) -> Result<Response<ArtifactList>, Status> {
        let items = self.app.list_artifacts(&operator(&req)?, &req.get_ref().name).await.map_err(status)?;
        Ok(Response::new(ArtifactList { items: items.iter().map(convert::artifact).collect() }))
    }

    type GetArtifactStream = BoxStream<ArtifactData>;

    async fn get_artifact(&self, req: Request<ArtifactRequest>) -> Result<Response<Self::GetArtifactStream>, Status> {
        let opctx = operator(&req)?;
        let req = req.into_inner();
        let (_, mut file) =
            self.app.open_artifact(&opctx, &req.workflow_id, &req.action, &req.path).await.map_err(status)?;
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut buf = vec![0u8; ARTIFACT_CHUNK];
            loop {
                match file.read(&mut buf).await {
                    Ok(0) => return,
                    Ok(n) => {
                        if tx.send(Ok(ArtifactData { data: buf[..n].to_vec() })).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(Status::internal(format!("reading artifact: {e}")))).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn rotate_agent_token(&self, req: Request<GetRequest>) -> Result<Response<AgentToken>, Status> {
        let t = self.app.rotate_agent_token(&operator(&req)?, &req.get_ref().name).await.map_err(status)?;
        Ok(Response::new(AgentToken { hardware: t.hardware_id, agent_id: t.agent_id, token: t.token }))
    }

    async fn revoke_agent_token(&self, req: Request<GetRequest>) -> Result<Response<RevokeResponse>, Status> {
        self.app.revoke_agent_token(&operator(&req)?, &req.get_ref().name).await.map_err(status)?;
        Ok(Response::new(RevokeResponse {}))
    }

    async fn issue_agent_cert(&self, req: Request<GetRequest>) -> Result<Response<AgentCert>, Status> {
        let c = self.app.issue_agent_cert(&operator(&req)?, &req.get_ref().name).await.map_err(status)?;
        Ok(Response::new(AgentCert {
            hardware: c.hardware_id,
            agent_id: c.agent_id,
            cert_pem: c.cert_pem,
            key_pem: c.key_pem,
            ca_pem: c.ca_pem,
        }))
    }

    async fn retry(&self, req: Request<GetRequest>) -> Result<Response<Workflow>, Status> {
        let wf = self.app.retry_workflow(&operator(&req)?, &req.get_ref().name).await.map_err(status)?;
        Ok(Response::new(convert::workflow(&wf)))
    }

    async fn list_events(&self, req: Request<EventsRequest>) -> Result<Response<EventList>, Status> {
        let filter = event_filter(req.get_ref())?;
        let items = self.app.list_events(&operator(&req)?, &filter).await.map_err(status)?;
        Ok(Response::new(EventList { items: items.iter().map(convert::event).collect() }))
    }

    type WatchEventsStream = BoxStream<Event>;

    async fn watch_events(&self, req: Request<EventsRequest>) -> Result<Response<Self::WatchEventsStream>, Status> {
        let filter = event_filter(req.get_ref())?;
        let events = self.app.follow_events(&operator(&req)?, &filter).await.map_err(status)?;
        Ok(Response::new(Box::pin(events.map(|e| e.map(|e| convert::event(&e)).map_err(status)))))
    }

    async fn plan(&self, req: Request<PlanRequest>) -> Result<Response<Workflow>, Status> {
        let opctx = operator(&req)?;
        let source = match req.into_inner().source {
            Some(plan_request::Source::WorkflowId(id)) => PlanSource::Workflow(id),
            Some(plan_request::Source::Documents(yaml)) => PlanSource::Documents(yaml),
            None => return Err(Status::invalid_argument("plan needs documents or a workflow id")),
        };
        let (wf, template_images, warnings) = self.app.plan(&opctx, source).await.map_err(status)?;
        let hints = self.app.disk_hint_resolutions(&opctx, &wf).await.map_err(status)?;
        let mut planned = convert::planned_workflow(&wf, template_images);
        planned.disk_hints = hints.iter().map(convert::disk_hint_resolution).collect();
        let mut response = Response::new(planned);
        // The response is the workflow itself: warnings go beside it.
        add_warnings(response.metadata_mut(), &warnings);
        Ok(response)
    }

    async fn list_rules(&self, req: Request<ListRequest>) -> Result<Response<RuleList>, Status> {
        let rules = self.app.list_rules(&operator(&req)?).await.map_err(status)?;
        Ok(Response::new(RuleList { items: rules.iter().map(|(r, n)| convert::rule(&r.doc, *n)).collect() }))
    }

    async fn plan_rule(&self, req: Request<RulePlanRequest>) -> Result<Response<RulePlan>, Status> {
        let opctx = operator(&req)?;
        let req = req.into_inner();
        let rule = (!req.rule.is_empty()).then_some(req.rule.as_str());
        let plan = self.app.plan_rules(&opctx, rule, &req.machine).await.map_err(status)?;
        Ok(Response::new(convert::rule_plan(&plan)))
    }

    async fn power(&self, req: Request<PowerRequest>) -> Result<Response<PowerResponse>, Status> {
        let opctx = operator(&req)?;
        let req = req.into_inner();
        let action = match req.action.as_str() {
            "status" | "" => None,
            other => Some(other.parse::<kiln_bmc::PowerAction>().map_err(Status::invalid_argument)?),
        };
        let reading = self.app.bmc_power(&opctx, &req.hardware, action).await.map_err(status)?;
        Ok(Response::new(PowerResponse {
            hardware: req.hardware,
            power_state: reading.state,
            read_at: Some(millis_to_proto(reading.read_at)),
        }))
    }

    async fn set_boot_device(&self, req: Request<BootDeviceRequest>) -> Result<Response<BootDeviceResponse>, Status> {
        let opctx = operator(&req)?;
        let req = req.into_inner();
        let device = req.device.parse::<kiln_bmc::BootDevice>().map_err(Status::invalid_argument)?;
        let mode = match req.mode.as_str() {
            "" => None,
            "uefi" => Some(kiln_bmc::BootMode::Uefi),
            "legacy" => Some(kiln_bmc::BootMode::Legacy),
            other => {
                return Err(Status::invalid_argument(format!("unknown boot mode {other:?} (expected uefi or legacy)")));
            }
        };
        let boot = kiln_bmc::BootOverride { device, once: req.once, mode };
        let state = self.app.bmc_boot(&opctx, &req.hardware, boot).await.map_err(status)?;
        Ok(Response::new(BootDeviceResponse {
            hardware: req.hardware,
            target: state.target.unwrap_or_default(),
            enabled: state.enabled.unwrap_or_default(),
            mode: state.mode.unwrap_or_default(),
        }))
    }

    async fn submit_bmc_job(&self, req: Request<BmcJobRequest>) -> Result<Response<BmcJob>, Status> {
        let opctx = operator(&req)?;
        let req = req.into_inner();
        let operation = match (req.power_action.as_str(), req.boot_device.as_str()) {
            (action, "") if !action.is_empty() => {
                crate::app::bmc::BmcOperation::Power(action.parse().map_err(Status::invalid_argument)?)
            }
            ("", device) if !device.is_empty() => {
                let mode = match req.mode.as_str() {
                    "" => None,
                    "uefi" => Some(kiln_bmc::BootMode::Uefi),
                    "legacy" => Some(kiln_bmc::BootMode::Legacy),
                    other => {
                        return Err(Status::invalid_argument(format!(
                            "unknown boot mode {other:?} (expected uefi or legacy)"
                        )));
                    }
                };
                let device = device.parse().map_err(Status::invalid_argument)?;
                crate::app::bmc::BmcOperation::Boot(kiln_bmc::BootOverride { device, once: req.once, mode })
            }
            _ => return Err(Status::invalid_argument("give exactly one of power_action and boot_device")),
        };
        let key = (!req.key.is_empty()).then_some(req.key);
        let (job, outcome) = self.app.submit_bmc_job(&opctx, &req.hardware, operation, key).await.map_err(status)?;
        Ok(Response::new(convert::bmc_job(job, outcome == crate::store::Outcome::Created)))
    }

    async fn list_bmc_jobs(&self, req: Request<ListBmcJobsRequest>) -> Result<Response<BmcJobList>, Status> {
        let opctx = operator(&req)?;
        let limit = if req.get_ref().limit == 0 { 100 } else { req.get_ref().limit };
        let jobs = self.app.list_bmc_jobs(&opctx, limit).await.map_err(status)?;
        Ok(Response::new(BmcJobList { items: jobs.into_iter().map(|j| convert::bmc_job(j, false)).collect() }))
    }

    async fn virtual_media(&self, req: Request<VirtualMediaRequest>) -> Result<Response<VirtualMediaResponse>, Status> {
        let opctx = operator(&req)?;
        let req = req.into_inner();
        let url = (!req.image_url.is_empty()).then_some(req.image_url.as_str());
        let (image, inserted) = self.app.bmc_media(&opctx, &req.hardware, url).await.map_err(status)?;
        Ok(Response::new(VirtualMediaResponse { hardware: req.hardware, image: image.unwrap_or_default(), inserted }))
    }
}

/// Puts `warnings` in response metadata (binary, so any text fits), at most
/// [`MAX_PLAN_WARNINGS`] of at most 512 bytes and a count of the rest, to
/// stay well under the peers' header size limits.
fn add_warnings(metadata: &mut tonic::metadata::MetadataMap, warnings: &[String]) {
    let shown = warnings.len().min(MAX_PLAN_WARNINGS);
    let more = warnings.len() - shown;
    let summary = (more > 0).then(|| format!("{more} more warnings not shown; kiln apply shows all"));
    for w in warnings.iter().take(shown).chain(summary.as_ref()) {
        let mut end = w.len().min(512);
        while !w.is_char_boundary(end) {
            end -= 1;
        }
        metadata.append_bin(
            kiln_proto::PLAN_WARNING_METADATA,
            tonic::metadata::MetadataValue::from_bytes(&w.as_bytes()[..end]),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(metadata: &tonic::metadata::MetadataMap) -> Vec<String> {
        metadata
            .get_all_bin(kiln_proto::PLAN_WARNING_METADATA)
            .iter()
            .map(|v| String::from_utf8(v.to_bytes().unwrap().to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn plan_warnings_are_bounded_and_keep_utf8_whole() {
        let mut m = tonic::metadata::MetadataMap::new();
        add_warnings(&mut m, &[]);
        assert!(read(&m).is_empty());
        let long = "é".repeat(400);
        add_warnings(&mut m, &["line 3: ünknown".to_string(), long]);
        let got = read(&m);
        assert_eq!(got[0], "line 3: ünknown");
        assert_eq!(got[1], "é".repeat(256));
        let mut m = tonic::metadata::MetadataMap::new();
        let many: Vec<String> = (0..25).map(|i| format!("w{i}")).collect();
        add_warnings(&mut m, &many);
        let got = read(&m);
        assert_eq!(got.len(), MAX_PLAN_WARNINGS + 1);
        assert_eq!(got[..MAX_PLAN_WARNINGS], many[..MAX_PLAN_WARNINGS]);
        assert_eq!(got[MAX_PLAN_WARNINGS], "15 more warnings not shown; kiln apply shows all");
    }
}
