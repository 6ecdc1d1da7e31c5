//! The operator's service (used by the `kiln` CLI).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use kiln_proto::time::millis_to_proto;
use kiln_proto::v1::admin_service_server::AdminService;
use kiln_proto::v1::{
    ActionDefinitionList, AppliedObject, ApplyRequest, ApplyResponse, ArtifactData, ArtifactList, ArtifactRequest,
    DeleteRequest, DeleteResponse, GetRequest, Hardware, HardwareList, ListRequest, LogEntry, LogLine, LogsRequest,
    PlanRequest, Template, TemplateList, Workflow, WorkflowList, plan_request,
};
use kiln_proto::v1::{AgentCert, AgentToken, RevokeResponse};
use kiln_documents::{ImagePolicy, parse_documents};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::admission::{self, AdmissionError};
use crate::artifacts::ArtifactFiles;
use crate::auth;
use crate::convert::{self, store_status};
use crate::events::{Events, wait_for};
use crate::model;
use crate::state_machine;
use crate::store::{DynStore, ObjectKind, Outcome};
use crate::tls::{SigningCa, issue_agent_cert};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Log lines read from the store per query while streaming.
const LOG_PAGE: u32 = 1000;

pub struct AdminApi {
    store: DynStore,
    events: Arc<Events>,
    policy: ImagePolicy,
    artifacts: ArtifactFiles,
    /// The CA agent certificates are signed with, when the server manages one.
    signing_ca: Option<SigningCa>,
    /// The agent tokens the agent service accepts without a store read:
    /// emptied by every credential change made here.
    verified: Arc<auth::VerifiedTokens>,
}

impl AdminApi {
    pub fn new(store: DynStore, events: Arc<Events>, policy: ImagePolicy, artifacts: ArtifactFiles) -> Self {
        Self { store, events, policy, artifacts, signing_ca: None, verified: Arc::default() }
    }

    /// Shares the agent service's cache of verified tokens, to invalidate it.
    pub fn with_verified_tokens(mut self, verified: Arc<auth::VerifiedTokens>) -> Self {
        self.verified = verified;
        self
    }

    pub fn with_signing_ca(mut self, ca: Option<SigningCa>) -> Self {
        self.signing_ca = ca;
        self
    }
}

/// Bytes per message when streaming an artifact to the CLI.
const ARTIFACT_CHUNK: usize = 256 << 10;

fn admission_status(e: AdmissionError) -> Status {
    match e {
        AdmissionError::Invalid(e) => Status::invalid_argument(e.to_string()),
        AdmissionError::Reference(e) => Status::invalid_argument(e),
        AdmissionError::Store(e) => store_status(e),
    }
}

fn source_name(source: &str) -> &str {
    if source.is_empty() { "input" } else { source }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn apply(&self, req: Request<ApplyRequest>) -> Result<Response<ApplyResponse>, Status> {
        let req = req.into_inner();
        let docs = parse_documents(source_name(&req.source), &req.yaml)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if docs.is_empty() {
            return Err(Status::invalid_argument(format!("{}: no documents", source_name(&req.source))));
        }
        let mut batch = admission::admit(&self.store, docs, &self.policy).await.map_err(admission_status)?;
        // A token for every hardware in the batch; the store keeps the hash
        // only for those it creates, and only theirs are shown (once).
        let mut tokens: HashMap<String, String> = HashMap::new();
        for h in &batch.hardware {
            let token = auth::new_token();
            batch.token_hashes.insert(h.id.clone(), auth::token_hash(&token));
            tokens.insert(h.id.clone(), token);
        }
        let names: Vec<(&'static str, String)> = batch
            .hardware
            .iter()
            .map(|h| ("Hardware", h.id.clone()))
            .chain(batch.definitions.iter().map(|d| ("ActionDefinition", d.name.clone())))
            .chain(batch.templates.iter().map(|t| ("Template", t.name.clone())))
            .chain(batch.workflows.iter().map(|w| ("Workflow", w.id.clone())))
            .collect();
        let agents: Vec<String> =
            batch.workflows.iter().filter_map(|w| w.current_action().map(|a| a.agent_id().to_string())).collect();
        let outcomes = self.store.apply(batch).await.map_err(store_status)?;
        // An updated hardware may have a new agent id: its token now
        // answers for that one only.
        if names.iter().zip(&outcomes).any(|((kind, _), o)| *kind == "Hardware" && *o == Outcome::Updated) {
            self.verified.invalidate();
        }
        for ((kind, name), outcome) in names.iter().zip(&outcomes) {
            if *kind == "Workflow" && *outcome == Outcome::Created {
                self.events.workflow_changed(name);
            }
        }
        for agent in agents {
            self.events.wake_agent(&agent);
        }
        let objects = names
            .into_iter()
            .zip(outcomes)
            .map(|((kind, name), outcome)| {
                let agent_token = match (kind, outcome) {
                    ("Hardware", Outcome::Created) => tokens.remove(&name).unwrap_or_default(),
                    _ => String::new(),
                };
                AppliedObject { kind: kind.into(), name, outcome: outcome.as_str().into(), agent_token }
            })
            .collect();
        Ok(Response::new(ApplyResponse { objects }))
    }

    async fn get_hardware(&self, req: Request<GetRequest>) -> Result<Response<Hardware>, Status> {
        let h = self.store.get_hardware(&req.get_ref().name).await.map_err(store_status)?;
        Ok(Response::new(convert::hardware(&h)))
    }

    async fn list_hardware(&self, _: Request<ListRequest>) -> Result<Response<HardwareList>, Status> {
        let items = self.store.list_hardware().await.map_err(store_status)?;
        Ok(Response::new(HardwareList { items: items.iter().map(convert::hardware).collect() }))
    }

    async fn list_action_definitions(&self, _: Request<ListRequest>) -> Result<Response<ActionDefinitionList>, Status> {
        let items = self.store.list_definitions().await.map_err(store_status)?;
        Ok(Response::new(ActionDefinitionList { items: items.iter().map(convert::definition).collect() }))
    }

    async fn get_template(&self, req: Request<GetRequest>) -> Result<Response<Template>, Status> {
        let t = self.store.get_template(&req.get_ref().name).await.map_err(store_status)?;
        Ok(Response::new(convert::template(&t)))
    }

    async fn list_templates(&self, _: Request<ListRequest>) -> Result<Response<TemplateList>, Status> {
        let items = self.store.list_templates().await.map_err(store_status)?;
        Ok(Response::new(TemplateList { items: items.iter().map(convert::template).collect() }))
    }

    async fn get_workflow(&self, req: Request<GetRequest>) -> Result<Response<Workflow>, Status> {
        let w = self.store.get_workflow(&req.get_ref().name).await.map_err(store_status)?;
        let (data_json, data_version) = self.store.workflow_data(&w.id).await.map_err(store_status)?;
        Ok(Response::new(Workflow { data_json, data_version, ..convert::workflow(&w) }))
    }

    async fn list_workflows(&self, _: Request<ListRequest>) -> Result<Response<WorkflowList>, Status> {
        let items = self.store.list_workflows().await.map_err(store_status)?;
        Ok(Response::new(WorkflowList { items: items.iter().map(convert::workflow).collect() }))
    }

    async fn delete(&self, req: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        let req = req.into_inner();
        let kind = ObjectKind::parse(&req.kind).ok_or_else(|| {
            Status::invalid_argument(format!("unknown kind {:?}: expected hardware, template or workflow", req.kind))
        })?;
        let attempts: Vec<String> = match kind {
            ObjectKind::Workflow => {
                let wf = self.store.get_workflow(&req.name).await.map_err(store_status)?;
                wf.actions.iter().flat_map(|a| a.attempts.iter().map(|t| t.id.clone())).collect()
            }
            _ => Vec::new(),
        };
        self.store.delete(kind, &req.name).await.map_err(store_status)?;
        if kind == ObjectKind::Hardware {
            self.verified.invalidate();
        }
        if kind == ObjectKind::Workflow {
            self.artifacts.remove_attempts(attempts.iter().map(String::as_str));
            self.events.workflow_changed(&req.name);
        }
        Ok(Response::new(DeleteResponse {}))
    }

    type WatchWorkflowStream = BoxStream<Workflow>;

    async fn watch_workflow(&self, req: Request<GetRequest>) -> Result<Response<Self::WatchWorkflowStream>, Status> {
        let id = req.into_inner().name;
        let mut changes = self.events.workflow_subscription();
        let first = self.store.get_workflow(&id).await.map_err(store_status)?;
        let (tx, rx) = mpsc::channel(16);
        let store = self.store.clone();
        tokio::spawn(async move {
            let mut last = first;
            if tx.send(Ok(convert::workflow(&last))).await.is_err() {
                return;
            }
            while !last.state.is_terminal() && wait_for(&mut changes, &id).await {
                let wf = match store.get_workflow(&id).await {
                    Ok(wf) => wf,
                    Err(e) => {
                        let _ = tx.send(Err(store_status(e))).await;
                        return;
                    }
                };
                if wf != last {
                    if tx.send(Ok(convert::workflow(&wf))).await.is_err() {
                        return;
                    }
                    last = wf;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type LogsStream = BoxStream<LogEntry>;

    async fn logs(&self, req: Request<LogsRequest>) -> Result<Response<Self::LogsStream>, Status> {
        let req = req.into_inner();
        let mut appended = self.events.logs_subscription();
        let mut changed = self.events.workflow_subscription();
        let wf = self.store.get_workflow(&req.workflow_id).await.map_err(store_status)?;
        let only = select_action(&wf, &req.action)?;
        let names: Vec<String> = wf.actions.iter().map(|a| a.spec.name.clone()).collect();
        let (tx, rx) = mpsc::channel(64);
        let store = self.store.clone();
        tokio::spawn(async move {
            let id = req.workflow_id;
            let mut cursor = 0;
            loop {
                // Decide whether this is the last round *before* reading, so
                // lines stored just before the end are still delivered.
                let finished = !req.follow
                    || match store.get_workflow(&id).await {
                        Ok(wf) => match only {
                            Some(i) => wf.state.is_terminal() || wf.actions[i as usize].state().is_terminal(),
                            None => wf.state.is_terminal(),
                        },
                        Err(_) => true,
                    };
                loop {
                    let page = match store.read_logs(&id, only, cursor, LOG_PAGE).await {
                        Ok(page) => page,
                        Err(e) => {
                            let _ = tx.send(Err(store_status(e))).await;
                            return;
                        }
                    };
                    let full = page.len() as u32 == LOG_PAGE;
                    for l in page {
                        cursor = l.cursor;
                        let entry = LogEntry {
                            action_index: l.action_index,
                            action_name: names.get(l.action_index as usize).cloned().unwrap_or_default(),
                            attempt_id: l.attempt_id,
                            line: Some(LogLine {
                                seq: l.seq,
                                stream: l.stream,
                                time: Some(millis_to_proto(l.time)),
                                text: l.text,
                            }),
                        };
                        if tx.send(Ok(entry)).await.is_err() {
                            return;
                        }
                    }
                    if !full {
                        break;
                    }
                }
                if finished {
                    return;
                }
                tokio::select! {
                    open = wait_for(&mut appended, &id) => if !open { return },
                    open = wait_for(&mut changed, &id) => if !open { return },
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn list_artifacts(&self, req: Request<GetRequest>) -> Result<Response<ArtifactList>, Status> {
        let items = self.store.list_artifacts(&req.get_ref().name).await.map_err(store_status)?;
        Ok(Response::new(ArtifactList { items: items.iter().map(convert::artifact).collect() }))
    }

    type GetArtifactStream = BoxStream<ArtifactData>;

    async fn get_artifact(&self, req: Request<ArtifactRequest>) -> Result<Response<Self::GetArtifactStream>, Status> {
        let req = req.into_inner();
        let wf = self.store.get_workflow(&req.workflow_id).await.map_err(store_status)?;
        let index = select_action(&wf, &req.action)?
            .ok_or_else(|| Status::invalid_argument("name the action the artifact belongs to"))?;
        let artifact = self
            .store
            .list_artifacts(&req.workflow_id)
            .await
            .map_err(store_status)?
            .into_iter()
            .rfind(|a| a.action_index == index && a.path == req.path)
            .ok_or_else(|| Status::not_found(format!("action {:?} has no artifact {:?}", req.action, req.path)))?;
        let path = self.artifacts.locate(&artifact.attempt_id, &artifact.path).map_err(Status::internal)?;
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| Status::internal(format!("artifact {} unreadable: {e}", artifact.path)))?;
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
        let hw = self.store.get_hardware(&req.get_ref().name).await.map_err(store_status)?;
        let token = auth::new_token();
        self.store.set_token_hash(&hw.doc.id, Some(auth::token_hash(&token))).await.map_err(store_status)?;
        self.verified.invalidate();
        tracing::info!(hardware = %hw.doc.id, agent = %hw.doc.agent_id, "agent token rotated");
        Ok(Response::new(AgentToken { hardware: hw.doc.id, agent_id: hw.doc.agent_id, token }))
    }

    async fn revoke_agent_token(&self, req: Request<GetRequest>) -> Result<Response<RevokeResponse>, Status> {
        let hw = self.store.get_hardware(&req.get_ref().name).await.map_err(store_status)?;
        self.store.set_token_hash(&hw.doc.id, None).await.map_err(store_status)?;
        // From now on no call of this agent passes on this server.
        self.verified.invalidate();
        tracing::info!(hardware = %hw.doc.id, agent = %hw.doc.agent_id, "agent token revoked");
        Ok(Response::new(RevokeResponse {}))
    }

    async fn issue_agent_cert(&self, req: Request<GetRequest>) -> Result<Response<AgentCert>, Status> {
        let Some(ca) = &self.signing_ca else {
            return Err(Status::failed_precondition(
                "this server manages no CA: start it with --dev-tls, or --client-ca with --client-ca-key",
            ));
        };
        let hw = self.store.get_hardware(&req.get_ref().name).await.map_err(store_status)?;
        let (cert_pem, key_pem) =
            issue_agent_cert(ca, &hw.doc.agent_id).map_err(|e| Status::internal(format!("issuing: {e}")))?;
        tracing::info!(hardware = %hw.doc.id, agent = %hw.doc.agent_id, "agent certificate issued");
        Ok(Response::new(AgentCert {
            hardware: hw.doc.id,
            agent_id: hw.doc.agent_id,
            cert_pem,
            key_pem,
            ca_pem: ca.cert_pem.clone(),
        }))
    }

    async fn retry(&self, req: Request<GetRequest>) -> Result<Response<Workflow>, Status> {
        let id = req.into_inner().name;
        let (wf, _) = self
            .store
            .update_workflow(&id, Box::new(|wf| state_machine::resume(wf, model::now_millis())))
            .await
            .map_err(store_status)?;
        self.events.workflow_changed(&wf.id);
        if let Some(action) = wf.current_action() {
            self.events.wake_agent(action.agent_id());
        }
        Ok(Response::new(convert::workflow(&wf)))
    }

    async fn plan(&self, req: Request<PlanRequest>) -> Result<Response<Workflow>, Status> {
        let wf = match req.into_inner().source {
            Some(plan_request::Source::WorkflowId(id)) => self.store.get_workflow(&id).await.map_err(store_status)?,
            Some(plan_request::Source::Documents(yaml)) => {
                let docs = parse_documents("input", &yaml).map_err(|e| Status::invalid_argument(e.to_string()))?;
                admission::plan(&self.store, docs).await.map_err(admission_status)?
            }
            None => {
                return Err(Status::invalid_argument("plan needs documents or a workflow id"));
            }
        };
        Ok(Response::new(convert::workflow(&wf)))
    }
}

/// Resolves a CLI action selector (`name` or `task/name`) to an index.
#[allow(clippy::result_large_err)]
fn select_action(wf: &model::Workflow, selector: &str) -> Result<Option<u32>, Status> {
    if selector.is_empty() {
        return Ok(None);
    }
    let matches: Vec<u32> = wf
        .actions
        .iter()
        .filter(|a| a.spec.name == selector || format!("{}/{}", a.spec.task, a.spec.name) == selector)
        .map(|a| a.index)
        .collect();
    match matches.as_slice() {
        [one] => Ok(Some(*one)),
        [] => Err(Status::not_found(format!(
            "workflow {:?} has no action {selector:?} (actions: {})",
            wf.id,
            wf.actions.iter().map(|a| a.spec.name.as_str()).collect::<Vec<_>>().join(", ")
        ))),
        _ => Err(Status::invalid_argument(format!("action name {selector:?} is ambiguous: use TASK/NAME"))),
    }
}
