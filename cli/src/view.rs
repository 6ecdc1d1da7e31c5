//! What `-o json|yaml` prints: the API's objects with states as names and
//! times as RFC 3339 (UTC, milliseconds, so they also sort as text).

use std::collections::BTreeMap;

use kiln_proto::v1;
use serde::Serialize;

pub fn time(t: &Option<prost_types::Timestamp>) -> Option<String> {
    t.as_ref().map(|t| humantime::format_rfc3339_millis(kiln_proto::time::from_proto(t)).to_string())
}

/// A state as shown: the proto name without its enum prefix (`RUNNING`).
pub fn action_state(s: i32) -> &'static str {
    match v1::ActionState::try_from(s) {
        Ok(v1::ActionState::Unspecified) | Err(_) => "UNKNOWN",
        Ok(state) => state.as_str_name().trim_start_matches("ACTION_STATE_"),
    }
}

pub fn workflow_state(s: i32) -> &'static str {
    match v1::WorkflowState::try_from(s) {
        Ok(v1::WorkflowState::Unspecified) | Err(_) => "UNKNOWN",
        Ok(state) => state.as_str_name().trim_start_matches("WORKFLOW_STATE_"),
    }
}

pub fn is_terminal(state: i32) -> bool {
    matches!(workflow_state(state), "SUCCESS" | "FAILED" | "TIMEOUT")
}

#[derive(Serialize)]
pub struct Hardware {
    id: String,
    agent_id: String,
    macs: Vec<String>,
    disks: Vec<String>,
    metadata: serde_json::Value,
    created_at: Option<String>,
    updated_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bmc: Option<Bmc>,
    /// "discovered" (runs nothing until adopted) or "ready".
    state: String,
    /// The last inventory report's summary; absent before the first.
    #[serde(skip_serializing_if = "Option::is_none")]
    inventory: Option<serde_json::Value>,
}

/// A hardware's BMC and its last known power state.
#[derive(Serialize)]
pub struct Bmc {
    address: String,
    protocol: String,
    credentials: String,
    /// "unknown" until a `kiln power` call read it.
    power_state: String,
    power_read_at: Option<String>,
}

impl From<&v1::Hardware> for Hardware {
    fn from(h: &v1::Hardware) -> Self {
        Self {
            id: h.id.clone(),
            agent_id: h.agent_id.clone(),
            macs: h.macs.clone(),
            disks: h.disks.clone(),
            metadata: serde_json::from_str(&h.metadata_json).unwrap_or(serde_json::Value::Null),
            created_at: time(&h.created_at),
            updated_at: time(&h.updated_at),
            bmc: (!h.bmc_address.is_empty()).then(|| Bmc {
                address: h.bmc_address.clone(),
                protocol: h.bmc_protocol.clone(),
                credentials: h.bmc_credentials.clone(),
                power_state: if h.power_state.is_empty() { "unknown".into() } else { h.power_state.clone() },
                power_read_at: time(&h.power_read_at),
            }),
            state: h.state.clone(),
            inventory: h.inventory_known.then(|| {
                serde_json::json!({
                    "cpus": h.inventory_cpus,
                    "memory_bytes": h.inventory_memory_bytes,
                    "disks": h.inventory_disks,
                })
            }),
        }
    }
}

#[derive(Serialize)]
pub struct BmcJob {
    id: String,
    key: String,
    hardware: String,
    operation: String,
    state: String,
    attempts: u32,
    result: String,
    error: String,
    created_at: Option<String>,
    updated_at: Option<String>,
    deadline: Option<String>,
}

impl From<&v1::BmcJob> for BmcJob {
    fn from(j: &v1::BmcJob) -> Self {
        Self {
            id: j.id.clone(),
            key: j.key.clone(),
            hardware: j.hardware.clone(),
            operation: j.operation.clone(),
            state: j.state.clone(),
            attempts: j.attempts,
            result: j.result.clone(),
            error: j.error.clone(),
            created_at: time(&j.created_at),
            updated_at: time(&j.updated_at),
            deadline: time(&j.deadline),
        }
    }
}

/// `kiln describe hardware -o json|yaml`: the hardware, and everything its
/// agent reported (absent until it reported).
#[derive(Serialize)]
pub struct DescribedHardware {
    #[serde(flatten)]
    hardware: Hardware,
    #[serde(skip_serializing_if = "Option::is_none")]
    inventory: Option<ReportedInventory>,
}

#[derive(Serialize)]
pub struct ReportedInventory {
    agent_id: String,
    reported_at: Option<String>,
    seen_at: Option<String>,
    /// The `kiln_inventory::Inventory` document as stored.
    #[serde(flatten)]
    inventory: serde_json::Value,
}

impl DescribedHardware {
    pub fn new(h: &v1::Hardware, inventory: Option<&v1::HardwareInventory>) -> Self {
        Self {
            hardware: Hardware::from(h),
            inventory: inventory.map(|i| ReportedInventory {
                agent_id: i.agent_id.clone(),
                reported_at: time(&i.reported_at),
                seen_at: time(&i.seen_at),
                inventory: serde_json::from_str(&i.inventory_json).unwrap_or(serde_json::Value::Null),
            }),
        }
    }
}

#[derive(Serialize)]
pub struct ActionDefinition {
    name: String,
    description: String,
    image: String,
    input_schema: serde_json::Value,
    output_schema: serde_json::Value,
    created_at: Option<String>,
    updated_at: Option<String>,
}

impl From<&v1::ActionDefinition> for ActionDefinition {
    fn from(d: &v1::ActionDefinition) -> Self {
        Self {
            name: d.name.clone(),
            description: d.description.clone(),
            image: d.image.clone(),
            input_schema: serde_json::from_str(&d.input_schema_json).unwrap_or_default(),
            output_schema: serde_json::from_str(&d.output_schema_json).unwrap_or_default(),
            created_at: time(&d.created_at),
            updated_at: time(&d.updated_at),
        }
    }
}

/// A rule as `kiln get rules -o json|yaml` shows it.
#[derive(Serialize)]
pub struct Rule {
    name: String,
    priority: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_count: Option<u32>,
    adopted: u32,
    #[serde(rename = "match")]
    match_expr: String,
    hardware_name: String,
    metadata: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    workflow: Option<RuleWorkflow>,
}

#[derive(Serialize)]
pub struct RuleWorkflow {
    template: String,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    hardware_map: std::collections::BTreeMap<String, String>,
}

impl From<&v1::Rule> for Rule {
    fn from(r: &v1::Rule) -> Self {
        Self {
            name: r.name.clone(),
            priority: r.priority,
            max_count: (r.max_count > 0).then_some(r.max_count),
            adopted: r.adopted,
            match_expr: r.r#match.clone(),
            hardware_name: r.hardware_name.clone(),
            metadata: serde_json::from_str(&r.metadata_json).unwrap_or(serde_json::Value::Null),
            workflow: (!r.workflow_template.is_empty()).then(|| RuleWorkflow {
                template: r.workflow_template.clone(),
                hardware_map: r.workflow_hardware_map.clone().into_iter().collect(),
            }),
        }
    }
}

/// `kiln plan rule ... -o json|yaml`.
#[derive(Serialize)]
pub struct RulePlan {
    machine: String,
    mac: String,
    /// The rule that would adopt it; none: it stays discovered.
    winner: Option<String>,
    rules: Vec<RulePlanRow>,
}

#[derive(Serialize)]
pub struct RulePlanRow {
    rule: String,
    priority: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_count: Option<u32>,
    adopted: u32,
    matched: bool,
    winner: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    why_not: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    hardware_name: String,
    metadata: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    workflow: Option<PlannedRuleWorkflow>,
}

#[derive(Serialize)]
pub struct PlannedRuleWorkflow {
    name: String,
    template: String,
    hardware_map: std::collections::BTreeMap<String, String>,
}

impl From<&v1::RulePlan> for RulePlan {
    fn from(p: &v1::RulePlan) -> Self {
        Self {
            machine: p.machine.clone(),
            mac: p.mac.clone(),
            winner: p.rules.iter().find(|r| r.winner).map(|r| r.rule.clone()),
            rules: p
                .rules
                .iter()
                .map(|r| RulePlanRow {
                    rule: r.rule.clone(),
                    priority: r.priority,
                    max_count: (r.max_count > 0).then_some(r.max_count),
                    adopted: r.adopted,
                    matched: r.matched,
                    winner: r.winner,
                    why_not: r.why_not.clone(),
                    hardware_name: r.hardware_name.clone(),
                    metadata: serde_json::from_str(&r.metadata_json).unwrap_or(serde_json::Value::Null),
                    workflow: (!r.workflow.is_empty()).then(|| PlannedRuleWorkflow {
                        name: r.workflow.clone(),
                        template: r.workflow_template.clone(),
                        hardware_map: r.workflow_hardware_map.clone().into_iter().collect(),
                    }),
                })
                .collect(),
        }
    }
}

#[derive(Serialize)]
pub struct Template {
    name: String,
    data: String,
    created_at: Option<String>,
    updated_at: Option<String>,
}

impl From<&v1::Template> for Template {
    fn from(t: &v1::Template) -> Self {
        Self {
            name: t.name.clone(),
            data: t.data.clone(),
            created_at: time(&t.created_at),
            updated_at: time(&t.updated_at),
        }
    }
}

#[derive(Serialize)]
pub struct Attempt {
    id: String,
    number: u32,
    agent_id: String,
    state: &'static str,
    created_at: Option<String>,
    pulling_at: Option<String>,
    running_at: Option<String>,
    finished_at: Option<String>,
    exit_code: Option<i64>,
    reason: String,
    message: String,
    /// A typed action's JSON output.
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<serde_json::Value>,
}

#[derive(Serialize)]
pub struct Action {
    index: u32,
    task: String,
    name: String,
    agent_id: String,
    state: &'static str,
    image: String,
    /// The template's image where the server's --image-rewrite changed it
    /// (plans only).
    #[serde(skip_serializing_if = "String::is_empty")]
    template_image: String,
    /// SUCCESS is recorded before the step fires (kexec, reboot).
    terminal: bool,
    command: Vec<String>,
    environment: BTreeMap<String, String>,
    volumes: Vec<String>,
    pid: String,
    network: String,
    timeout_seconds: u64,
    /// Commands run when the action fails / times out (empty: none).
    on_failure: Vec<String>,
    on_timeout: Vec<String>,
    retries: u32,
    retry_backoff_seconds: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    builtin: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    external: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    definition: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    resources: Option<Resources>,
    attempts: Vec<Attempt>,
}

/// An action's resource limits (only those set).
#[derive(Serialize)]
pub struct Resources {
    #[serde(skip_serializing_if = "Option::is_none")]
    memory_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nano_cpus: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pids: Option<u64>,
    #[serde(skip_serializing_if = "String::is_empty")]
    gpus: String,
}

impl Resources {
    fn of(r: Option<&v1::Resources>) -> Option<Self> {
        let r = r.filter(|r| **r != v1::Resources::default())?;
        let set = |v: u64| (v > 0).then_some(v);
        Some(Self {
            memory_bytes: set(r.memory_bytes),
            nano_cpus: set(r.nano_cpus),
            pids: set(r.pids),
            gpus: r.gpus.clone(),
        })
    }
}

#[derive(Serialize)]
pub struct Workflow {
    id: String,
    template: String,
    hardware: String,
    hardware_map: BTreeMap<String, String>,
    state: &'static str,
    reason: String,
    created_at: Option<String>,
    started_at: Option<String>,
    finished_at: Option<String>,
    global_timeout_seconds: Option<u64>,
    /// Workflow data written by actions (GetWorkflow only).
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<serde_json::Value>,
    data_version: u64,
    actions: Vec<Action>,
    /// `kiln plan` only: how the actions' disk hints resolve.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    disk_hints: Vec<DiskHint>,
}

#[derive(Serialize)]
pub struct DiskHint {
    hint: String,
    actions: Vec<String>,
    /// The path the hint renders as, when exactly one disk matches.
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    candidates: Vec<DiskCandidate>,
}

#[derive(Serialize)]
pub struct DiskCandidate {
    disk: String,
    path: String,
    matches: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    why_not: String,
}

impl From<&v1::DiskHintResolution> for DiskHint {
    fn from(r: &v1::DiskHintResolution) -> Self {
        Self {
            hint: r.hint.clone(),
            actions: r.actions.clone(),
            path: (!r.path.is_empty()).then(|| r.path.clone()),
            error: (!r.error.is_empty()).then(|| r.error.clone()),
            candidates: r
                .candidates
                .iter()
                .map(|c| DiskCandidate {
                    disk: c.disk.clone(),
                    path: c.path.clone(),
                    matches: c.matches,
                    why_not: c.why_not.clone(),
                })
                .collect(),
        }
    }
}

impl From<&v1::Workflow> for Workflow {
    fn from(w: &v1::Workflow) -> Self {
        Self {
            id: w.id.clone(),
            template: w.template.clone(),
            hardware: w.hardware.clone(),
            hardware_map: w.hardware_map.clone().into_iter().collect(),
            state: workflow_state(w.state),
            reason: w.reason.clone(),
            created_at: time(&w.created_at),
            started_at: time(&w.started_at),
            finished_at: time(&w.finished_at),
            global_timeout_seconds: (w.global_timeout_seconds > 0).then_some(w.global_timeout_seconds),
            data: serde_json::from_str(&w.data_json).ok(),
            data_version: w.data_version,
            actions: w
                .actions
                .iter()
                .map(|a| {
                    let spec = a.spec.clone().unwrap_or_default();
                    Action {
                        index: a.index,
                        task: spec.task,
                        name: spec.name,
                        agent_id: a.agent_id.clone(),
                        state: action_state(a.state),
                        image: spec.image,
                        template_image: spec.template_image,
                        terminal: spec.terminal,
                        command: spec.command,
                        environment: spec.environment.into_iter().collect(),
                        volumes: spec.volumes,
                        pid: spec.pid,
                        network: spec.network,
                        timeout_seconds: spec.timeout_seconds,
                        on_failure: spec.on_failure,
                        on_timeout: spec.on_timeout,
                        retries: spec.retries,
                        retry_backoff_seconds: spec.retry_backoff_seconds,
                        builtin: spec.builtin,
                        external: spec.external,
                        definition: spec.definition,
                        resources: Resources::of(spec.resources.as_ref()),
                        attempts: a
                            .attempts
                            .iter()
                            .map(|t| Attempt {
                                id: t.id.clone(),
                                number: t.number,
                                agent_id: t.agent_id.clone(),
                                state: action_state(t.state),
                                created_at: time(&t.created_at),
                                pulling_at: time(&t.pulling_at),
                                running_at: time(&t.running_at),
                                finished_at: time(&t.finished_at),
                                exit_code: t.exit_code,
                                reason: t.reason.clone(),
                                message: t.message.clone(),
                                output: serde_json::from_str(&t.output_json).ok(),
                            })
                            .collect(),
                    }
                })
                .collect(),
            disk_hints: w.disk_hints.iter().map(DiskHint::from).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_show_by_their_plain_names() {
        assert_eq!(action_state(v1::ActionState::Pulling as i32), "PULLING");
        assert_eq!(action_state(v1::ActionState::Unspecified as i32), "UNKNOWN");
        assert_eq!(action_state(99), "UNKNOWN");
        assert_eq!(workflow_state(v1::WorkflowState::Timeout as i32), "TIMEOUT");
        assert!(is_terminal(v1::WorkflowState::Failed as i32));
        assert!(!is_terminal(v1::WorkflowState::Running as i32));
    }
}
