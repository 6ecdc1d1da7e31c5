//! Model → wire conversions, and the mapping of internal errors to gRPC
//! status codes (one place, so every handler answers alike).

use kiln_documents::PlannedAction;
use kiln_proto::time::millis_to_proto;
use kiln_proto::v1;
use tonic::Status;

use crate::app::AppError;
use crate::app::dispatch::Assignment;
use crate::model::{ActionState, Attempt, Workflow, WorkflowState};
use crate::store::{StoreError, StoredHardware, StoredTemplate};

pub fn action_state(s: ActionState) -> v1::ActionState {
    match s {
        ActionState::Pending => v1::ActionState::Pending,
        ActionState::Pulling => v1::ActionState::Pulling,
        ActionState::Running => v1::ActionState::Running,
        ActionState::Success => v1::ActionState::Success,
        ActionState::Failed => v1::ActionState::Failed,
        ActionState::Timeout => v1::ActionState::Timeout,
    }
}

pub fn action_state_from_proto(s: v1::ActionState) -> Option<ActionState> {
    Some(match s {
        v1::ActionState::Unspecified => return None,
        v1::ActionState::Pending => ActionState::Pending,
        v1::ActionState::Pulling => ActionState::Pulling,
        v1::ActionState::Running => ActionState::Running,
        v1::ActionState::Success => ActionState::Success,
        v1::ActionState::Failed => ActionState::Failed,
        v1::ActionState::Timeout => ActionState::Timeout,
    })
}

pub fn workflow_state(s: WorkflowState) -> v1::WorkflowState {
    match s {
        WorkflowState::Pending => v1::WorkflowState::Pending,
        WorkflowState::Running => v1::WorkflowState::Running,
        WorkflowState::Success => v1::WorkflowState::Success,
        WorkflowState::Failed => v1::WorkflowState::Failed,
        WorkflowState::Timeout => v1::WorkflowState::Timeout,
    }
}

pub fn action_spec(p: &PlannedAction) -> v1::ActionSpec {
    v1::ActionSpec {
        task: p.task.clone(),
        name: p.name.clone(),
        image: p.image.clone(),
        command: p.command.clone(),
        environment: p.environment.clone().into_iter().collect(),
        volumes: p.volumes.clone(),
        pid: p.pid.clone(),
        timeout_seconds: p.timeout_seconds,
        network: p.network.clone(),
        resources: Some(v1::Resources {
            memory_bytes: p.resources.memory_bytes.unwrap_or(0),
            nano_cpus: p.resources.nano_cpus.unwrap_or(0),
            pids: p.resources.pids.unwrap_or(0),
            gpus: p.resources.gpus.clone().unwrap_or_default(),
        }),
        retries: p.retries,
        retry_backoff_seconds: p.retry_backoff_seconds,
        terminal: p.terminal,
        builtin: p.builtin.clone(),
        on_failure: p.on_failure.clone(),
        on_timeout: p.on_timeout.clone(),
        external: p.external.clone(),
        definition: p.definition.clone(),
        input_json: p.input_json.clone(),
        template_image: String::new(),
    }
}

/// A planned workflow, with the image each action's template named where
/// `--image-rewrite` changed it.
pub fn planned_workflow(w: &Workflow, template_images: Vec<String>) -> v1::Workflow {
    let mut out = workflow(w);
    for (action, template_image) in out.actions.iter_mut().zip(template_images) {
        if let Some(spec) = action.spec.as_mut() {
            spec.template_image = template_image;
        }
    }
    out
}

fn attempt(a: &Attempt) -> v1::Attempt {
    v1::Attempt {
        id: a.id.clone(),
        number: a.number,
        agent_id: a.agent_id.clone(),
        state: action_state(a.state) as i32,
        created_at: Some(millis_to_proto(a.created_at)),
        pulling_at: a.pulling_at.map(millis_to_proto),
        running_at: a.running_at.map(millis_to_proto),
        finished_at: a.finished_at.map(millis_to_proto),
        exit_code: a.exit_code,
        reason: a.reason.clone(),
        message: a.message.clone(),
        output_json: a.output_json.clone(),
        lease_expires_at: a.lease_expires_at.map(millis_to_proto),
    }
}

pub fn disk_hint_resolution(r: &crate::app::disk_hints::HintResolution) -> v1::DiskHintResolution {
    v1::DiskHintResolution {
        hint: r.hint.clone(),
        actions: r.actions.clone(),
        path: r.result.clone().unwrap_or_default(),
        error: r.result.clone().err().unwrap_or_default(),
        candidates: r
            .candidates
            .iter()
            .map(|c| v1::DiskCandidate {
                disk: c.disk.clone(),
                path: c.path.clone(),
                matches: c.matches.is_ok(),
                why_not: c.matches.clone().err().unwrap_or_default(),
            })
            .collect(),
    }
}

pub fn workflow(w: &Workflow) -> v1::Workflow {
    v1::Workflow {
        id: w.id.clone(),
        template: w.template.clone(),
        hardware: w.hardware.clone(),
        hardware_map: w.hardware_map.clone().into_iter().collect(),
        state: workflow_state(w.state) as i32,
        reason: w.reason.clone(),
        created_at: Some(millis_to_proto(w.created_at)),
        started_at: w.started_at.map(millis_to_proto),
        finished_at: w.finished_at.map(millis_to_proto),
        global_timeout_seconds: w.global_timeout_seconds.unwrap_or(0),
        actions: w
            .actions
            .iter()
            .map(|a| v1::ActionStatus {
                index: a.index,
                agent_id: a.agent_id().to_string(),
                spec: Some(action_spec(&a.spec)),
                state: action_state(a.state()) as i32,
                attempts: a.attempts.iter().map(attempt).collect(),
            })
            .collect(),
        data_json: String::new(),
        data_version: 0,
        bmc_steps: Vec::new(),
        disk_hints: Vec::new(),
    }
}

/// A workflow with its BMC steps (GetWorkflow, WatchWorkflow).
pub fn workflow_with_steps(w: &Workflow, steps: &[crate::store::BmcJob]) -> v1::Workflow {
    v1::Workflow { bmc_steps: steps.iter().map(|j| bmc_job(j.clone(), false)).collect(), ..workflow(w) }
}

/// `created`: whether this submission created the job.
pub fn bmc_job(j: crate::store::BmcJob, created: bool) -> v1::BmcJob {
    v1::BmcJob {
        id: j.id,
        key: j.key,
        hardware: j.hardware_id,
        operation: j.operation,
        state: j.state,
        attempts: j.attempts,
        result: j.result,
        error: j.error,
        created_at: Some(millis_to_proto(j.created_at)),
        updated_at: Some(millis_to_proto(j.updated_at)),
        deadline: Some(millis_to_proto(j.deadline)),
        created,
    }
}

/// Adds a hardware's discovery state and inventory summary.
pub fn hardware_status(hardware: &mut v1::Hardware, s: &crate::app::discovery::HardwareStatus) {
    hardware.state = if s.discovered { "discovered" } else { "ready" }.into();
    if let Some((cpus, memory, disks)) = s.inventory {
        hardware.inventory_known = true;
        hardware.inventory_cpus = cpus;
        hardware.inventory_memory_bytes = memory;
        hardware.inventory_disks = disks;
    }
}

pub fn hardware(h: &StoredHardware) -> v1::Hardware {
    v1::Hardware {
        id: h.doc.id.clone(),
        agent_id: h.doc.agent_id.clone(),
        macs: h.doc.macs.clone(),
        disks: h.doc.disks.clone(),
        metadata_json: h.doc.metadata.to_string(),
        created_at: Some(millis_to_proto(h.created_at)),
        updated_at: Some(millis_to_proto(h.updated_at)),
        bmc_address: h.doc.bmc.as_ref().map(|b| b.address.clone()).unwrap_or_default(),
        bmc_protocol: h.doc.bmc.as_ref().map(|b| b.protocol.clone()).unwrap_or_default(),
        bmc_credentials: h.doc.bmc.as_ref().map(|b| b.credentials.clone()).unwrap_or_default(),
        power_state: String::new(),
        power_read_at: None,
        ..Default::default()
    }
}

pub fn hardware_inventory(i: crate::store::StoredInventory) -> v1::HardwareInventory {
    v1::HardwareInventory {
        hardware_id: i.hardware_id,
        agent_id: i.agent_id,
        inventory_json: i.inventory_json,
        reported_at: Some(millis_to_proto(i.reported_at)),
        seen_at: Some(millis_to_proto(i.seen_at)),
    }
}

pub fn definition(d: &crate::store::StoredDefinition) -> v1::ActionDefinition {
    v1::ActionDefinition {
        name: d.doc.name.clone(),
        description: d.doc.description.clone(),
        image: d.doc.image.clone(),
        input_schema_json: d.doc.input_schema.to_string(),
        output_schema_json: d.doc.output_schema.to_string(),
        created_at: Some(millis_to_proto(d.created_at)),
        updated_at: Some(millis_to_proto(d.updated_at)),
    }
}

pub fn rule(r: &kiln_documents::RuleDoc, adopted: u32) -> v1::Rule {
    let workflow = r.workflow.clone();
    v1::Rule {
        name: r.name.clone(),
        priority: r.priority,
        max_count: r.max_count.unwrap_or(0),
        r#match: r.match_expr.clone(),
        hardware_name: r.hardware_name.clone(),
        metadata_json: r.metadata.to_string(),
        workflow_template: workflow.as_ref().map(|w| w.template.clone()).unwrap_or_default(),
        adopted,
        workflow_hardware_map: workflow.map(|w| w.hardware_map.into_iter().collect()).unwrap_or_default(),
    }
}

pub fn rule_plan(p: &crate::app::rules::RulePlan) -> v1::RulePlan {
    v1::RulePlan {
        machine: p.machine.clone(),
        mac: p.mac.clone(),
        rules: p
            .rows
            .iter()
            .map(|r| {
                let (workflow, workflow_template, map) = r.workflow.clone().unwrap_or_default();
                v1::RulePlanRow {
                    rule: r.rule.clone(),
                    priority: r.priority,
                    max_count: r.max_count.unwrap_or(0),
                    adopted: r.adopted,
                    matched: r.matched,
                    why_not: r.why_not.clone(),
                    hardware_name: r.hardware_name.clone(),
                    metadata_json: r.metadata.to_string(),
                    workflow,
                    workflow_template,
                    workflow_hardware_map: map.into_iter().collect(),
                    winner: r.winner,
                }
            })
            .collect(),
    }
}

pub fn template(t: &StoredTemplate) -> v1::Template {
    v1::Template {
        name: t.doc.name.clone(),
        data: t.doc.data.clone(),
        created_at: Some(millis_to_proto(t.created_at)),
        updated_at: Some(millis_to_proto(t.updated_at)),
    }
}

pub fn artifact(a: &crate::store::Artifact) -> v1::ArtifactInfo {
    v1::ArtifactInfo {
        workflow_id: a.workflow_id.clone(),
        action_index: a.action_index,
        attempt_id: a.attempt_id.clone(),
        path: a.path.clone(),
        size: a.size,
        sha256: a.sha256.clone(),
        created_at: Some(millis_to_proto(a.created_at)),
    }
}

/// An audit event, as `kiln events` shows it.
pub fn event(e: &crate::store::Event) -> v1::Event {
    v1::Event {
        cursor: e.cursor,
        time: Some(millis_to_proto(e.time)),
        kind: e.kind.as_str().into(),
        actor: e.actor.clone(),
        peer: e.peer.clone(),
        action: e.action.clone(),
        object: e.object.clone(),
        outcome: e.outcome.as_str().into(),
        reason: e.reason.clone(),
        count: e.count,
    }
}

/// An application error as a gRPC status: one mapping for every handler.
/// Internal errors are logged with their causes; the caller gets only what
/// kiln was doing.
pub fn status(e: AppError) -> Status {
    e.log_internal();
    let message = e.to_string();
    match e {
        AppError::InvalidArgument(_) => Status::invalid_argument(message),
        AppError::NotFound(_) => Status::not_found(message),
        AppError::Conflict(_) => Status::already_exists(message),
        AppError::FailedPrecondition(_) => Status::failed_precondition(message),
        AppError::PermissionDenied(_) => Status::permission_denied(message),
        AppError::Unauthenticated(_) => Status::unauthenticated(message),
        AppError::ResourceExhausted(_) => Status::resource_exhausted(message),
        AppError::DataLoss(_) => Status::data_loss(message),
        AppError::Unavailable(_) => Status::unavailable(message),
        AppError::Internal { .. } => Status::internal(message),
    }
}

/// A store error as a gRPC status (through [`AppError`]).
pub fn store_status(e: StoreError) -> Status {
    status(e.into())
}

pub fn assignment(a: Assignment) -> v1::Assignment {
    v1::Assignment {
        workflow_id: a.workflow_id,
        action_index: a.action_index,
        attempt_id: a.attempt_id,
        attempt: a.attempt_number,
        action_count: a.action_count,
        hardware_id: a.hardware_id,
        action_token: a.action_token,
        action: Some(action_spec(&a.action)),
        upcoming_images: a.upcoming_images,
        traceparent: a.traceparent,
    }
}
