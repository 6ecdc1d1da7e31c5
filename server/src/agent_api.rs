//! The agent service: hands out attempts, takes reports and logs.
//!
//! Handlers receive the caller's identity from [`crate::auth::AgentAuthService`],
//! the layer every agent call passes through; none of them reads metadata.

use std::sync::Arc;
use std::time::Duration;

use kiln_proto::time::proto_to_millis;
use kiln_proto::v1::agent_service_server::AgentService;
use kiln_proto::v1::{
    ActionSpec, ArtifactChunk, ArtifactInfo, Assignment, HeartbeatRequest, HeartbeatResponse, LogAck, LogBatch,
    NextActionRequest, NextActionResponse, ReportAck, StateReport, artifact_chunk,
};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tonic::{Request, Response, Status};

use crate::action_api::TokenKey;
use crate::artifacts::ArtifactFiles;
use crate::convert::{action_spec, action_state_from_proto, store_status, transition_status};
use crate::events::Events;
use crate::model::{ActionState, Millis, Workflow, now_millis};
use crate::state_machine::{self, Report, TransitionError};
use crate::store::{Artifact, DynStore, NewLogLine};

/// Longest a `NextAction` call is held open.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// An agent runs one attempt at a time; a few are allowed for agents that
/// drop one while the next starts.
const MAX_HEARTBEAT_ATTEMPTS: usize = 16;

/// The authenticated caller of an agent RPC, put into the request's
/// extensions by [`crate::auth::AgentAuthService`], the layer every agent
/// call passes through (token, and client certificate when there is one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentIdentity(pub String);

fn caller<T>(req: &Request<T>) -> Result<String, Status> {
    req.extensions()
        .get::<AgentIdentity>()
        .map(|a| a.0.clone())
        .ok_or_else(|| Status::internal("agent service mounted without its authentication layer"))
}

pub struct AgentApi {
    store: DynStore,
    events: Arc<Events>,
    artifacts: ArtifactFiles,
    token_key: TokenKey,
    /// How long an open attempt survives without a report or heartbeat.
    lease: Duration,
}

impl AgentApi {
    pub fn new(
        store: DynStore,
        events: Arc<Events>,
        artifacts: ArtifactFiles,
        token_key: TokenKey,
        lease: Duration,
    ) -> Self {
        Self { store, events, artifacts, token_key, lease }
    }

    fn lease_millis(&self) -> Millis {
        self.lease.as_millis() as Millis
    }

    /// The attempt must exist and belong to the caller.
    async fn check_owner(
        &self,
        agent: &str,
        workflow_id: &str,
        action_index: u32,
        attempt_id: &str,
    ) -> Result<(), Status> {
        let wf = self.store.get_workflow(workflow_id).await.map_err(store_status)?;
        let attempt = wf
            .actions
            .get(action_index as usize)
            .and_then(|a| a.attempts.iter().find(|t| t.id == attempt_id))
            .ok_or_else(|| transition_status(&TransitionError::UnknownAttempt(attempt_id.to_string())))?;
        if attempt.agent_id != agent {
            return Err(transition_status(&TransitionError::NotOwner {
                owner: attempt.agent_id.clone(),
                caller: agent.to_string(),
            }));
        }
        Ok(())
    }

    /// Finds (creating when it is due) the attempt `agent` should run now;
    /// otherwise, when a retry waits for its backoff, when that is due.
    async fn assignment_for(&self, agent: &str) -> Result<(Option<Assignment>, Option<Millis>), Status> {
        let mut retry_due: Option<Millis> = None;
        for id in self.store.active_workflows_for_agent(agent).await.map_err(store_status)? {
            let who = agent.to_string();
            let lease = self.lease_millis();
            let (wf, changed) = self
                .store
                .update_workflow(
                    &id,
                    Box::new(move |wf| {
                        Ok(state_machine::dispatch(wf, &who, now_millis(), lease, || uuid::Uuid::new_v4().to_string()))
                    }),
                )
                .await
                .map_err(store_status)?;
            if changed {
                self.events.workflow_changed(&wf.id);
            }
            if let Some((index, attempt)) = state_machine::open_attempt_for(&wf, agent) {
                if !changed {
                    // Handed out again (the agent restarted or lost the
                    // answer): the agent is evidently alive.
                    self.store
                        .renew_leases(agent, vec![attempt.id.clone()], now_millis() + self.lease_millis())
                        .await
                        .map_err(store_status)?;
                }
                let spec = match with_outputs(&wf, index) {
                    Ok(spec) => spec,
                    Err(e) => {
                        self.fail_unrenderable(&wf.id, index, attempt.id.clone(), e).await?;
                        continue;
                    }
                };
                return Ok((
                    Some(Assignment {
                        workflow_id: wf.id.clone(),
                        action_index: index,
                        attempt_id: attempt.id.clone(),
                        attempt: attempt.number,
                        action_count: wf.actions.len() as u32,
                        hardware_id: wf.hardware.clone(),
                        action_token: self.token_key.issue(&wf.id, index, &attempt.id),
                        action: Some(spec),
                        upcoming_images: upcoming_images(&wf, index, agent),
                    }),
                    None,
                ));
            }
            if let Some(due) = state_machine::retry_due_at(&wf, agent) {
                retry_due = Some(retry_due.map_or(due, |d| d.min(due)));
            }
        }
        Ok((None, retry_due))
    }
}

#[tonic::async_trait]
impl AgentService for AgentApi {
    async fn next_action(&self, req: Request<NextActionRequest>) -> Result<Response<NextActionResponse>, Status> {
        let agent = caller(&req)?;
        let wait = Duration::from_millis(u64::from(req.get_ref().wait_ms)).min(MAX_WAIT);
        let deadline = tokio::time::Instant::now() + wait;
        let mut wakeups = self.events.agent_subscription(&agent);
        loop {
            wakeups.borrow_and_update();
            let (assignment, retry_due) = self.assignment_for(&agent).await?;
            if let Some(assignment) = assignment {
                tracing::info!(agent = %agent, workflow = %assignment.workflow_id, action = assignment.action_index,
                    attempt = %assignment.attempt_id, "assigned");
                return Ok(Response::new(NextActionResponse { assignment: Some(assignment) }));
            }
            // A retry waiting for its backoff needs no event: wake when due.
            let wake_at = retry_due.map_or(deadline, |due| {
                let wait = Duration::from_millis(due.saturating_sub(now_millis()).max(0) as u64);
                deadline.min(tokio::time::Instant::now() + wait)
            });
            // A store shared with other servers may lose their wake-ups:
            // re-read it now and then, so a loss only delays a dispatch.
            let recheck_at = self.store.recheck_interval().map(|d| tokio::time::Instant::now() + d);
            let sleep_until = recheck_at.map_or(wake_at, |r| r.min(wake_at));
            match tokio::time::timeout_at(sleep_until, wakeups.changed()).await {
                Ok(Ok(())) => continue,
                Err(_) if sleep_until < wake_at => continue,
                // Deadline passed, or the server is shutting down.
                Ok(Err(_)) | Err(_) => {
                    return Ok(Response::new(NextActionResponse { assignment: None }));
                }
            }
        }
    }

    async fn report_state(&self, req: Request<StateReport>) -> Result<Response<ReportAck>, Status> {
        let agent = caller(&req)?;
        let r = req.into_inner();
        let state = action_state_from_proto(r.state()).ok_or_else(|| transition_status(&TransitionError::NoState))?;
        let report = Report {
            action_index: r.action_index,
            attempt_id: r.attempt_id.clone(),
            state,
            exit_code: r.exit_code,
            reason: r.reason,
            message: r.message,
            output_json: r.output_json,
        };
        let who = agent.clone();
        let lease = self.lease_millis();
        let (wf, changed) = self
            .store
            .update_workflow(
                &r.workflow_id,
                Box::new(move |wf| {
                    let report = check_output(wf, report);
                    state_machine::apply_report(wf, &who, &report, now_millis(), lease)
                }),
            )
            .await
            .map_err(|e| {
                tracing::warn!(agent = %agent, workflow = %r.workflow_id, attempt = %r.attempt_id, error = %e, "report rejected");
                store_status(e)
            })?;
        if changed {
            tracing::info!(agent = %agent, workflow = %wf.id, action = r.action_index, state = state.as_str(), "state");
            self.events.workflow_changed(&wf.id);
            if state == ActionState::Success
                && let Some(next) = wf.current_action()
            {
                self.events.wake_agent(next.agent_id());
            }
        }
        Ok(Response::new(ReportAck { applied: changed }))
    }

    async fn push_logs(&self, req: Request<LogBatch>) -> Result<Response<LogAck>, Status> {
        let agent = caller(&req)?;
        let batch = req.into_inner();
        let wf = self.store.get_workflow(&batch.workflow_id).await.map_err(store_status)?;
        let attempt = wf
            .actions
            .get(batch.action_index as usize)
            .and_then(|a| a.attempts.iter().find(|t| t.id == batch.attempt_id))
            .ok_or_else(|| transition_status(&TransitionError::UnknownAttempt(batch.attempt_id.clone())))?;
        if attempt.agent_id != agent {
            return Err(transition_status(&TransitionError::NotOwner {
                owner: attempt.agent_id.clone(),
                caller: agent,
            }));
        }
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
            .store
            .append_logs(&batch.workflow_id, batch.action_index, &batch.attempt_id, lines)
            .await
            .map_err(store_status)?;
        self.events.logs_appended(&batch.workflow_id);
        Ok(Response::new(LogAck { stored_through }))
    }

    async fn upload_artifact(
        &self,
        req: Request<tonic::Streaming<ArtifactChunk>>,
    ) -> Result<Response<ArtifactInfo>, Status> {
        let agent = caller(&req)?;
        let info = self.receive_artifact(&agent, req.into_inner()).await?;
        tracing::info!(agent = %agent, workflow = %info.workflow_id, path = %info.path, size = info.size, "artifact stored");
        Ok(Response::new(info))
    }

    async fn heartbeat(&self, req: Request<HeartbeatRequest>) -> Result<Response<HeartbeatResponse>, Status> {
        let agent = caller(&req)?;
        let ids = req.into_inner().attempt_ids;
        if ids.len() > MAX_HEARTBEAT_ATTEMPTS {
            return Err(Status::invalid_argument(format!(
                "attempt_ids: {} attempts named, at most {MAX_HEARTBEAT_ATTEMPTS}",
                ids.len()
            )));
        }
        // An idle agent's heartbeat writes nothing.
        let ended = if ids.is_empty() {
            Vec::new()
        } else {
            self.store.renew_leases(&agent, ids, now_millis() + self.lease_millis()).await.map_err(store_status)?
        };
        for id in &ended {
            tracing::info!(agent = %agent, attempt = %id, "heartbeat for an attempt that is no longer open");
        }
        Ok(Response::new(HeartbeatResponse {
            ended_attempt_ids: ended,
            renew_interval_ms: (self.lease.as_millis() / 3).min(u128::from(u32::MAX)) as u32,
        }))
    }
}

/// Container images of `agent`'s actions after `index`, first use order.
fn upcoming_images(wf: &Workflow, index: u32, agent: &str) -> Vec<String> {
    let current = &wf.actions[index as usize].spec.image;
    let mut images: Vec<String> = Vec::new();
    for a in &wf.actions[index as usize + 1..] {
        let image = &a.spec.image;
        if a.agent_id() == agent && !image.is_empty() && image != current && !images.contains(image) {
            images.push(image.clone());
        }
    }
    images
}

/// The action as the agent gets it, with references to earlier actions'
/// outputs (`{{ .actions.NAME.output... }}`) rendered now that they exist.
fn with_outputs(wf: &Workflow, index: u32) -> Result<ActionSpec, String> {
    let mut spec = action_spec(&wf.actions[index as usize].spec);
    let deferred = |s: &String| s.contains("{{");
    if !spec.environment.values().any(deferred) && !spec.command.iter().any(deferred) {
        return Ok(spec);
    }
    let mut outputs = serde_json::Map::new();
    for action in &wf.actions[..index as usize] {
        if let Some(out) = action.attempts.last().filter(|a| !a.output_json.is_empty()) {
            let value: serde_json::Value = serde_json::from_str(&out.output_json).map_err(|e| e.to_string())?;
            outputs.insert(action.spec.name.clone(), serde_json::json!({ "output": value }));
        }
    }
    let data = serde_json::json!({ kiln_documents::template::ACTIONS_KEY: outputs });
    let object = format!("action {:?}", spec.name);
    let render = |s: &mut String| -> Result<(), String> {
        if s.contains("{{") {
            *s = kiln_documents::template::render(&object, s, &data).map_err(|e| e.to_string())?;
        }
        Ok(())
    };
    for value in spec.environment.values_mut() {
        render(value)?;
    }
    for arg in &mut spec.command {
        render(arg)?;
    }
    Ok(spec)
}

/// A SUCCESS of a typed action carries its output: one that is not JSON or
/// does not match the output schema makes the report a failure.
fn check_output(wf: &Workflow, mut report: Report) -> Report {
    let Some(action) = wf.actions.get(report.action_index as usize) else { return report };
    if report.state != ActionState::Success || action.spec.output_schema_json.is_empty() {
        return report;
    }
    let object = format!("output of action {:?}", action.spec.name);
    let result = serde_json::from_str::<serde_json::Value>(&action.spec.output_schema_json)
        .map_err(|e| e.to_string())
        .and_then(|schema| {
            let output: serde_json::Value = serde_json::from_str(&report.output_json)
                .map_err(|e| format!("stdout is not a JSON document ({e})"))?;
            kiln_documents::validate_json(&object, "output", &schema, &output).map_err(|e| e.to_string())
        });
    if let Err(message) = result {
        report.state = ActionState::Failed;
        report.reason = "InvalidOutput".into();
        report.message = message;
        report.output_json.clear();
    }
    report
}

impl AgentApi {
    /// An action whose references to earlier outputs cannot be rendered
    /// fails at once, with the reason, instead of running with a hole.
    async fn fail_unrenderable(
        &self,
        workflow_id: &str,
        index: u32,
        attempt_id: String,
        error: String,
    ) -> Result<(), Status> {
        let (wf, _) = self
            .store
            .update_workflow(
                workflow_id,
                Box::new(move |wf| {
                    let owner =
                        wf.actions[index as usize].attempts.last().map(|a| a.agent_id.clone()).unwrap_or_default();
                    let report = Report {
                        action_index: index,
                        attempt_id,
                        state: ActionState::Failed,
                        exit_code: None,
                        reason: "RenderFailed".into(),
                        message: error,
                        output_json: String::new(),
                    };
                    state_machine::apply_report(wf, &owner, &report, now_millis(), 0)
                }),
            )
            .await
            .map_err(store_status)?;
        self.events.workflow_changed(&wf.id);
        Ok(())
    }

    async fn receive_artifact(
        &self,
        agent: &str,
        mut chunks: tonic::Streaming<ArtifactChunk>,
    ) -> Result<ArtifactInfo, Status> {
        let header = match chunks.message().await?.and_then(|c| c.part) {
            Some(artifact_chunk::Part::Header(h)) => h,
            _ => return Err(Status::invalid_argument("an artifact upload starts with its header")),
        };
        self.check_owner(agent, &header.workflow_id, header.action_index, &header.attempt_id).await?;
        let path = self.artifacts.locate(&header.attempt_id, &header.path).map_err(Status::invalid_argument)?;
        let limit = self.artifacts.max_bytes;
        let too_big = |size: u64| {
            Status::resource_exhausted(format!("artifact {:?} is {size} bytes; the limit is {limit}", header.path))
        };
        if header.size > limit {
            return Err(too_big(header.size));
        }
        let dir = path.parent().expect("artifact paths have a parent");
        tokio::fs::create_dir_all(dir).await.map_err(|e| Status::internal(format!("artifact dir: {e}")))?;
        // Written beside its final name, renamed when complete: a reader
        // never sees half a file.
        let partial = path.with_extension("kiln-partial");
        let mut file =
            tokio::fs::File::create(&partial).await.map_err(|e| Status::internal(format!("artifact file: {e}")))?;
        let mut hasher = Sha256::new();
        let mut received = 0u64;
        while let Some(chunk) = chunks.message().await? {
            let Some(artifact_chunk::Part::Data(data)) = chunk.part else {
                return Err(Status::invalid_argument("only data may follow an artifact header"));
            };
            received += data.len() as u64;
            if received > limit {
                let _ = tokio::fs::remove_file(&partial).await;
                return Err(too_big(received));
            }
            hasher.update(&data);
            file.write_all(&data).await.map_err(|e| Status::internal(format!("artifact write: {e}")))?;
        }
        file.sync_all().await.map_err(|e| Status::internal(format!("artifact sync: {e}")))?;
        if received != header.size {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(Status::data_loss(format!(
                "artifact {:?}: header says {} bytes, {received} arrived",
                header.path, header.size
            )));
        }
        tokio::fs::rename(&partial, &path).await.map_err(|e| Status::internal(format!("artifact rename: {e}")))?;
        let artifact = Artifact {
            workflow_id: header.workflow_id,
            action_index: header.action_index,
            attempt_id: header.attempt_id,
            path: header.path,
            size: received,
            sha256: hex::encode(hasher.finalize()),
            created_at: now_millis(),
        };
        self.store.put_artifact(artifact.clone()).await.map_err(store_status)?;
        Ok(crate::convert::artifact(&artifact))
    }
}
