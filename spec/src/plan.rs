//! Tinkerbell's template structure, and the plan of a workflow: the
//! rendered, validated, flattened list of actions it will run.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::documents::{ActionDefinitionDoc, HardwareDoc, TemplateDoc, WorkflowDoc, parse_mac};
use crate::{ImageRef, SpecError, template};

pub const DEFAULT_ACTION_TIMEOUT_SECONDS: u64 = 3600;
/// Longest name Tinkerbell accepts for tasks and actions.
const MAX_NAME: usize = 199;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedAction {
    pub task: String,
    pub name: String,
    /// The task's rendered worker (a MAC is lower-cased).
    pub worker: String,
    /// Canonical image reference; empty for a built-in step.
    pub image: String,
    pub command: Vec<String>,
    /// Task environment merged under the action's.
    pub environment: BTreeMap<String, String>,
    /// Task volumes, then the action's (the action wins for the same target).
    pub volumes: Vec<String>,
    /// "host" or "".
    pub pid: String,
    /// "host" or "".
    pub network: String,
    pub timeout_seconds: u64,
    pub on_timeout: Vec<String>,
    pub on_failure: Vec<String>,
    /// Resource limits of the container (kiln extension).
    #[serde(default)]
    pub resources: Resources,
    /// Extra attempts after a failure or timeout (kiln extension).
    #[serde(default)]
    pub retries: u32,
    /// Pause before each retry, in seconds.
    #[serde(default)]
    pub retry_backoff_seconds: u64,
    /// The step ends the agent's life (kexec, reboot): its SUCCESS is
    /// recorded before its effect (kiln extension).
    #[serde(default)]
    pub terminal: bool,
    /// A step the agent performs itself instead of a container:
    /// `reboot` or `poweroff` (always terminal).
    #[serde(default)]
    pub builtin: String,
    /// An external action (Replicante style) the agent's configuration
    /// defines: run on the agent's host by its start and check commands.
    #[serde(default)]
    pub external: String,
    /// The ActionDefinition of a typed action, "" otherwise.
    #[serde(default)]
    pub definition: String,
    /// A typed action's input (JSON, given on stdin), "" otherwise.
    #[serde(default)]
    pub input_json: String,
    /// A typed action's output schema (JSON), "" otherwise.
    #[serde(default)]
    pub output_schema_json: String,
}

/// Built-in steps an action may name with `builtin:` instead of `image:`.
pub const BUILTINS: &[&str] = &["reboot", "poweroff"];

/// Per-action limits. Absent fields mean "no limit".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub memory_bytes: Option<u64>,
    /// CPUs in billionths, as the Docker API takes them (1.5 CPUs = 1_500_000_000).
    pub nano_cpus: Option<u64>,
    pub pids: Option<u64>,
    /// GPUs to request from the nvidia driver: "all" or a count.
    pub gpus: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub template_name: String,
    pub version: String,
    pub global_timeout_seconds: Option<u64>,
    pub actions: Vec<PlannedAction>,
}

/// A YAML scalar where Tinkerbell takes a string (`COMPRESSED: true`).
#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Scalar {
    fn into_string(self) -> String {
        match self {
            Self::Str(s) => s,
            Self::Int(n) => n.to_string(),
            Self::Float(f) => f.to_string(),
            Self::Bool(b) => b.to_string(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateYaml {
    version: Scalar,
    name: String,
    #[serde(default)]
    #[allow(dead_code)]
    id: Option<String>,
    #[serde(default)]
    global_timeout: Option<u64>,
    tasks: Vec<TaskYaml>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskYaml {
    name: String,
    worker: String,
    #[serde(default)]
    volumes: Vec<String>,
    #[serde(default)]
    environment: BTreeMap<String, Scalar>,
    actions: Vec<ActionYaml>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionYaml {
    name: String,
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    builtin: Option<String>,
    #[serde(default)]
    external: Option<String>,
    /// A typed action: the name of an ActionDefinition.
    #[serde(default, rename = "use")]
    uses: Option<String>,
    /// Its input, validated against the definition's input schema.
    #[serde(default)]
    with: Option<serde_json::Value>,
    #[serde(default)]
    terminal: Option<bool>,
    #[serde(default)]
    timeout: Option<u64>,
    #[serde(default)]
    command: Option<Vec<String>>,
    #[serde(default)]
    environment: BTreeMap<String, Scalar>,
    #[serde(default)]
    volumes: Vec<String>,
    #[serde(default)]
    pid: Option<String>,
    #[serde(default)]
    namespaces: Option<NamespacesYaml>,
    #[serde(rename = "on-timeout", default)]
    on_timeout: Vec<String>,
    #[serde(rename = "on-failure", default)]
    on_failure: Vec<String>,
    #[serde(default)]
    resources: Option<ResourcesYaml>,
    #[serde(default)]
    retries: Option<u32>,
    #[serde(default)]
    retry_backoff: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResourcesYaml {
    /// `268435456`, `256Mi`, `512M`, `1Gi`, `2G`.
    #[serde(default)]
    memory: Option<Scalar>,
    /// `0.5`, `2`.
    #[serde(default)]
    cpus: Option<Scalar>,
    #[serde(default)]
    pids: Option<u64>,
    /// `all` or a count.
    #[serde(default)]
    gpus: Option<Scalar>,
}

/// Most retries one action may ask for: a loop, not a policy, beyond that.
const MAX_RETRIES: u32 = 100;

fn parse_memory(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let factor: u64 = match unit.trim() {
        "" | "b" | "B" => 1,
        "k" | "K" | "KB" => 1000,
        "Ki" | "KiB" => 1 << 10,
        "M" | "MB" => 1_000_000,
        "Mi" | "MiB" => 1 << 20,
        "G" | "GB" => 1_000_000_000,
        "Gi" | "GiB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(factor)
}

pub(crate) fn resources(obj: &str, field: &str, r: Option<ResourcesYaml>) -> Result<Resources, SpecError> {
    let Some(r) = r else { return Ok(Resources::default()) };
    let memory_bytes = match r.memory.map(Scalar::into_string) {
        None => None,
        Some(m) => Some(parse_memory(&m).filter(|b| *b >= 6 << 20).ok_or_else(|| {
            field_err(obj, format!("{field}.memory"), format!("{m:?} must be a size of at least 6Mi, like 512Mi or 2G"))
        })?),
    };
    let nano_cpus = match r.cpus.map(Scalar::into_string) {
        None => None,
        Some(c) => Some(
            c.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.01 && *v <= 4096.0)
                .map(|v| (v * 1e9).round() as u64)
                .ok_or_else(|| {
                    field_err(obj, format!("{field}.cpus"), format!("{c:?} must be a number of CPUs like 0.5 or 2"))
                })?,
        ),
    };
    if r.pids == Some(0) {
        return Err(field_err(obj, format!("{field}.pids"), "must be at least 1".into()));
    }
    let gpus = match r.gpus.map(Scalar::into_string) {
        None => None,
        Some(g) if g == "all" || g.parse::<u32>().is_ok_and(|n| n > 0) => Some(g),
        Some(g) => return Err(field_err(obj, format!("{field}.gpus"), format!("{g:?} must be \"all\" or a count"))),
    };
    Ok(Resources { memory_bytes, nano_cpus, pids: r.pids, gpus })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NamespacesYaml {
    #[serde(default)]
    pid: Option<String>,
    #[serde(default)]
    network: Option<String>,
}

fn object(t: &TemplateDoc) -> String {
    format!("template {:?}", t.name)
}

/// Validates a template at apply time, without hardware: syntax and
/// functions, then the structure of its output rendered with placeholders.
/// The returned plan holds [`template::PROBE`] where values need hardware.
pub fn check_template(t: &TemplateDoc, defs: &Definitions) -> Result<Plan, SpecError> {
    let obj = object(t);
    let rendered = template::render_probe(&obj, &t.data)?;
    let parsed = structure(&obj, &rendered)?;
    check(&obj, parsed, defs, false)
}

/// ActionDefinitions by name, for templates that `use` them.
pub type Definitions = BTreeMap<String, ActionDefinitionDoc>;

/// A JSON Pointer (`/disks/0/size`) as a field path (`.disks[0].size`).
fn pointer_to_path(pointer: &str) -> String {
    pointer
        .split('/')
        .filter(|p| !p.is_empty())
        .map(|p| if p.bytes().all(|b| b.is_ascii_digit()) { format!("[{p}]") } else { format!(".{p}") })
        .collect()
}

/// Validates `value` against `schema`; the error names the field below
/// `field` that is wrong.
pub fn validate_json(
    obj: &str,
    field: &str,
    schema: &serde_json::Value,
    value: &serde_json::Value,
) -> Result<(), SpecError> {
    let validator = crate::documents::compile_schema(schema).map_err(|e| field_err(obj, field.to_string(), e))?;
    match validator.iter_errors(value).next() {
        None => Ok(()),
        Some(e) => {
            Err(field_err(obj, format!("{field}{}", pointer_to_path(&e.instance_path().to_string())), e.to_string()))
        }
    }
}

fn contains_probe(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::String(s) => s.contains(template::PROBE),
        serde_json::Value::Array(a) => a.iter().any(contains_probe),
        serde_json::Value::Object(m) => m.values().any(contains_probe),
        _ => false,
    }
}

impl Plan {
    /// The template field path of action `index`, e.g. `tasks[1].actions[0]`.
    pub fn field_path(&self, index: usize) -> String {
        let mut task = 0;
        let mut first = 0;
        for i in 1..=index {
            if self.actions[i].task != self.actions[i - 1].task {
                task += 1;
                first = i;
            }
        }
        format!("tasks[{task}].actions[{}]", index - first)
    }
}

/// Renders `t` for workflow `w` on hardware `hw` and validates everything.
pub fn plan_workflow(
    t: &TemplateDoc,
    w: &WorkflowDoc,
    hw: &HardwareDoc,
    defs: &Definitions,
) -> Result<Plan, SpecError> {
    let obj = object(t);
    let rendered = template::render(&obj, &t.data, &render_data(w, hw))?;
    let parsed = structure(&obj, &rendered)?;
    check(&obj, parsed, defs, true)
}

/// What templates see: Tinkerbell's top-level hardware map keys, its legacy
/// `.Hardware` view, and the hardware document as `.hardware`.
fn render_data(w: &WorkflowDoc, hw: &HardwareDoc) -> serde_json::Value {
    let mut data = serde_json::Map::new();
    for (k, v) in &w.hardware_map {
        data.insert(k.clone(), json!(v));
    }
    data.insert(
        "Hardware".into(),
        json!({
            "ID": hw.id,
            "AgentID": hw.agent_id,
            "Disks": hw.disks,
            "MACs": hw.macs,
            "Interfaces": hw.macs.iter().map(|m| json!({"MAC": m})).collect::<Vec<_>>(),
            "Metadata": hw.metadata,
        }),
    );
    data.insert("hardware".into(), serde_json::to_value(hw).unwrap_or_default());
    data.insert("workflow".into(), json!({"id": w.id}));
    serde_json::Value::Object(data)
}

fn structure(obj: &str, rendered: &str) -> Result<TemplateYaml, SpecError> {
    let de = serde_yaml_ng::Deserializer::from_str(rendered);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        SpecError {
            object: obj.to_string(),
            // Rendering keeps line numbers unless a value spans lines.
            line: inner.location().map(|l| l.line()),
            field: (path != ".").then_some(path),
            message: crate::documents::bare_message(&inner),
        }
    })
}

fn field_err(obj: &str, field: String, message: String) -> SpecError {
    SpecError { object: obj.to_string(), line: None, field: Some(field), message }
}

fn check_name(obj: &str, field: String, name: &str, seen: &mut Vec<String>) -> Result<(), SpecError> {
    if name.trim().is_empty() || name.len() > MAX_NAME {
        return Err(field_err(obj, field, format!("name must be 1-{MAX_NAME} characters")));
    }
    if seen.iter().any(|s| s == name) {
        return Err(field_err(obj, field, format!("duplicate name {name:?}")));
    }
    seen.push(name.to_string());
    Ok(())
}

/// `host` or nothing: the only namespace sharing kiln offers.
fn host_only(obj: &str, field: String, v: Option<String>) -> Result<String, SpecError> {
    match v.as_deref().map(str::trim) {
        None | Some("") => Ok(String::new()),
        Some("host") => Ok("host".into()),
        Some(other) => Err(field_err(obj, field, format!("{other:?} is not supported; use \"host\" or leave it out"))),
    }
}

const VOLUME_OPTIONS: &[&str] =
    &["ro", "rw", "z", "Z", "shared", "rshared", "slave", "rslave", "private", "rprivate", "nocopy"];

/// `SRC:DST[:OPTS]`; returns DST.
fn check_volume(obj: &str, field: String, v: &str) -> Result<String, SpecError> {
    let parts: Vec<&str> = v.split(':').collect();
    let bad = |why: &str| Err(field_err(obj, field.clone(), format!("volume {v:?}: {why}")));
    if !(2..=3).contains(&parts.len()) {
        return bad("must be SRC:DST[:OPTIONS]");
    }
    let named_volume = |s: &str| {
        s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    };
    if !(parts[0].starts_with('/') || named_volume(parts[0])) {
        return bad("source must be an absolute path or a volume name");
    }
    if !parts[1].starts_with('/') {
        return bad("target must be an absolute path");
    }
    if let Some(opts) = parts.get(2)
        && let Some(o) = opts.split(',').find(|o| !VOLUME_OPTIONS.contains(o))
    {
        return bad(&format!("unknown option {o:?} (allowed: {})", VOLUME_OPTIONS.join(", ")));
    }
    Ok(parts[1].to_string())
}

/// Validates and flattens. `with_values` is false when fields may hold
/// probe placeholders (template apply): a value that came from data is
/// checked when a workflow renders it, literal values are checked now.
fn check(obj: &str, t: TemplateYaml, defs: &Definitions, with_values: bool) -> Result<Plan, SpecError> {
    let checkable = |v: &str| with_values || !v.contains(template::PROBE);
    if t.name.trim().is_empty() {
        return Err(field_err(obj, "name".into(), "must not be empty".into()));
    }
    if t.global_timeout == Some(0) {
        return Err(field_err(obj, "global_timeout".into(), "must be more than 0 seconds".into()));
    }
    if t.tasks.is_empty() {
        return Err(field_err(obj, "tasks".into(), "at least one task is required".into()));
    }
    let mut task_names = Vec::new();
    let mut actions = Vec::new();
    for (ti, task) in t.tasks.into_iter().enumerate() {
        let tf = format!("tasks[{ti}]");
        check_name(obj, format!("{tf}.name"), &task.name, &mut task_names)?;
        let worker = task.worker.trim().to_string();
        if worker.is_empty() {
            return Err(field_err(obj, format!("{tf}.worker"), "rendered to an empty string".into()));
        }
        let worker = parse_mac(&worker).unwrap_or(worker);
        if task.actions.is_empty() {
            return Err(field_err(obj, format!("{tf}.actions"), "at least one action is required".into()));
        }
        let mut task_volumes = Vec::new();
        for (vi, v) in task.volumes.iter().enumerate() {
            if checkable(v) {
                task_volumes.push((check_volume(obj, format!("{tf}.volumes[{vi}]"), v)?, v.clone()));
            }
        }
        let task_env: BTreeMap<String, String> =
            task.environment.into_iter().map(|(k, v)| (k, v.into_string())).collect();
        let mut action_names = Vec::new();
        for (ai, a) in task.actions.into_iter().enumerate() {
            let af = format!("{tf}.actions[{ai}]");
            check_name(obj, format!("{af}.name"), &a.name, &mut action_names)?;
            let typed = match (&a.uses, &a.with) {
                (None, None) => None,
                (None, Some(_)) => {
                    return Err(field_err(
                        obj,
                        format!("{af}.with"),
                        "with: gives the input of a typed action; add use:".into(),
                    ));
                }
                (Some(_), _) if a.image.is_some() || a.builtin.is_some() || a.external.is_some() => {
                    return Err(field_err(
                        obj,
                        format!("{af}.use"),
                        "a typed action takes its image from its definition: drop image, builtin and external".into(),
                    ));
                }
                (Some(name), with) => {
                    let def = defs.get(name).ok_or_else(|| {
                        let known: Vec<&str> = defs.keys().map(String::as_str).collect();
                        field_err(
                            obj,
                            format!("{af}.use"),
                            format!("no ActionDefinition {name:?} (known: {})", known.join(", ")),
                        )
                    })?;
                    let input = with.clone().unwrap_or_else(|| serde_json::json!({}));
                    if with_values || !contains_probe(&input) {
                        validate_json(obj, &format!("{af}.with"), &def.input_schema, &input)?;
                    }
                    Some((def, input))
                }
            };
            // Exactly one of: a container image, a built-in step, an
            // external action of the agent's configuration.
            let (image, builtin, external) = match (a.image, a.builtin, a.external) {
                _ if typed.is_some() => {
                    (typed.as_ref().map(|(d, _)| d.image.clone()).unwrap_or_default(), String::new(), String::new())
                }
                (Some(image), None, None) if checkable(&image) => (
                    ImageRef::parse(image.trim()).map_err(|e| field_err(obj, format!("{af}.image"), e))?.to_string(),
                    String::new(),
                    String::new(),
                ),
                (Some(image), None, None) => (image, String::new(), String::new()),
                (None, Some(b), None) if BUILTINS.contains(&b.as_str()) => (String::new(), b, String::new()),
                (None, Some(b), None) => {
                    return Err(field_err(
                        obj,
                        format!("{af}.builtin"),
                        format!("unknown builtin {b:?}; known: {}", BUILTINS.join(", ")),
                    ));
                }
                (None, None, Some(kind)) if !kind.trim().is_empty() => {
                    (String::new(), String::new(), kind.trim().to_string())
                }
                (None, None, None) => {
                    return Err(field_err(obj, format!("{af}.image"), "missing field `image`".into()));
                }
                _ => {
                    return Err(field_err(
                        obj,
                        af.clone(),
                        "an action has exactly one of image, builtin or external".into(),
                    ));
                }
            };
            if a.timeout == Some(0) {
                return Err(field_err(obj, format!("{af}.timeout"), "must be more than 0 seconds".into()));
            }
            let ns = a.namespaces.unwrap_or(NamespacesYaml { pid: None, network: None });
            let pid = host_only(obj, format!("{af}.pid"), a.pid.or(ns.pid))?;
            let network = host_only(obj, format!("{af}.namespaces.network"), ns.network)?;
            let mut volumes = task_volumes.clone();
            for (vi, v) in a.volumes.iter().enumerate() {
                if checkable(v) {
                    let dst = check_volume(obj, format!("{af}.volumes[{vi}]"), v)?;
                    volumes.retain(|(d, _)| *d != dst);
                    volumes.push((dst, v.clone()));
                }
            }
            let mut environment = task_env.clone();
            for (k, v) in a.environment {
                environment.insert(k, v.into_string());
            }
            if let Some(k) = environment.keys().find(|k| k.is_empty() || k.contains('=')) {
                return Err(field_err(obj, format!("{af}.environment"), format!("invalid variable name {k:?}")));
            }
            actions.push(PlannedAction {
                task: task.name.clone(),
                name: a.name,
                worker: worker.clone(),
                image,
                command: a.command.unwrap_or_default(),
                environment,
                volumes: volumes.into_iter().map(|(_, v)| v).collect(),
                pid,
                network,
                timeout_seconds: a.timeout.unwrap_or(DEFAULT_ACTION_TIMEOUT_SECONDS),
                resources: match (a.resources, &typed) {
                    (None, Some((def, _))) => def.resources.clone(),
                    (r, _) => resources(obj, &format!("{af}.resources"), r)?,
                },
                retries: match a.retries {
                    Some(n) if n > MAX_RETRIES => {
                        return Err(field_err(obj, format!("{af}.retries"), format!("at most {MAX_RETRIES}")));
                    }
                    n => n.unwrap_or(0),
                },
                retry_backoff_seconds: a.retry_backoff.unwrap_or(0),
                terminal: a.terminal.unwrap_or(false) || !builtin.is_empty(),
                builtin,
                external,
                definition: typed.as_ref().map(|(d, _)| d.name.clone()).unwrap_or_default(),
                input_json: typed.as_ref().map(|(_, input)| input.to_string()).unwrap_or_default(),
                output_schema_json: typed.as_ref().map(|(d, _)| d.output_schema.to_string()).unwrap_or_default(),
                on_timeout: a.on_timeout,
                on_failure: a.on_failure,
            });
        }
    }
    Ok(Plan {
        template_name: t.name,
        version: t.version.into_string(),
        global_timeout_seconds: t.global_timeout,
        actions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of Tinkerbell's playground Ubuntu template.
    const UBUNTU: &str = r#"version: "0.1"
name: ubuntu_provisioning
global_timeout: 1800
tasks:
  - name: "os-installation"
    worker: "{{.device_1}}"
    volumes:
      - /dev:/dev
      - /dev/console:/dev/console
      - /lib/firmware:/lib/firmware:ro
    environment:
      MIRROR_HOST: 10.1.1.11
    actions:
      - name: "stream-ubuntu-image"
        image: quay.io/tinkerbell-actions/image2disk:v1.0.0
        timeout: 600
        environment:
          DEST_DISK: {{ index .Hardware.Disks 0 }}
          IMG_URL: "http://10.1.1.11:8080/focal.raw.gz"
          COMPRESSED: true
      - name: "write-netplan"
        image: quay.io/tinkerbell-actions/writefile:v1.0.0
        timeout: 90
        environment:
          DEST_DISK: {{ formatPartition ( index .Hardware.Disks 0 ) 1 }}
          FS_TYPE: ext4
          DEST_PATH: /etc/netplan/config.yaml
          UID: 0
          MODE: 0644
      - name: "kexec-ubuntu"
        image: quay.io/tinkerbell-actions/kexec:v1.0.0
        timeout: 90
        pid: host
        volumes:
          - /dev/console:/dev/console:rw
        environment:
          BLOCK_DEVICE: {{ formatPartition ( index .Hardware.Disks 0 ) 1 }}
          FS_TYPE: ext4
"#;

    fn tpl(data: &str) -> TemplateDoc {
        TemplateDoc { name: "ubuntu".into(), data: data.into() }
    }

    fn hw() -> HardwareDoc {
        HardwareDoc {
            id: "m1".into(),
            agent_id: "52:54:00:12:34:56".into(),
            macs: vec!["52:54:00:12:34:56".into()],
            disks: vec!["/dev/nvme0n1".into()],
            metadata: json!({"instance": {"hostname": "m1"}}),
        }
    }

    fn wf() -> WorkflowDoc {
        WorkflowDoc {
            id: "w".into(),
            template: "ubuntu".into(),
            hardware: "m1".into(),
            hardware_map: [("device_1".to_string(), "52:54:00:12:34:56".to_string())].into(),
        }
    }

    #[test]
    fn plans_the_tinkerbell_ubuntu_template() {
        check_template(&tpl(UBUNTU), &Definitions::new()).unwrap();
        let plan = plan_workflow(&tpl(UBUNTU), &wf(), &hw(), &Definitions::new()).unwrap();
        assert_eq!(plan.global_timeout_seconds, Some(1800));
        assert_eq!(plan.actions.len(), 3);
        let a = &plan.actions[0];
        assert_eq!(a.worker, "52:54:00:12:34:56");
        assert_eq!(a.image, "quay.io/tinkerbell-actions/image2disk:v1.0.0");
        assert_eq!(a.environment["DEST_DISK"], "/dev/nvme0n1");
        assert_eq!(a.environment["COMPRESSED"], "true");
        assert_eq!(a.environment["MIRROR_HOST"], "10.1.1.11");
        assert_eq!(plan.actions[1].environment["DEST_DISK"], "/dev/nvme0n1p1");
        assert_eq!(plan.actions[1].environment["MODE"], "0644", "YAML 1.2 keeps 0644 a string: no octal surprise");
        let k = &plan.actions[2];
        assert_eq!(k.pid, "host");
        assert_eq!(k.volumes, vec!["/dev:/dev", "/lib/firmware:/lib/firmware:ro", "/dev/console:/dev/console:rw"]);
        assert_eq!(k.timeout_seconds, 90);
    }

    fn plan_err(data: &str) -> SpecError {
        match check_template(&tpl(data), &Definitions::new()) {
            Err(e) => e,
            Ok(_) => plan_workflow(&tpl(data), &wf(), &hw(), &Definitions::new()).unwrap_err(),
        }
    }

    #[test]
    fn resources_and_retries() {
        let data = UBUNTU.replace(
            "timeout: 600\n",
            "timeout: 600\n        retries: 2\n        retry_backoff: 1\n        resources: {memory: 256Mi, cpus: 0.5, pids: 64, gpus: all}\n",
        );
        let plan = plan_workflow(&tpl(&data), &wf(), &hw(), &Definitions::new()).unwrap();
        assert_eq!(plan.field_path(2), "tasks[0].actions[2]");
        let a = &plan.actions[0];
        assert_eq!((a.retries, a.retry_backoff_seconds), (2, 1));
        assert_eq!(
            a.resources,
            Resources {
                memory_bytes: Some(256 << 20),
                nano_cpus: Some(500_000_000),
                pids: Some(64),
                gpus: Some("all".into())
            }
        );
        assert_eq!(plan.actions[1].resources, Resources::default());
        assert_eq!(parse_memory("2G"), Some(2_000_000_000));
        assert_eq!(parse_memory("12 parsecs"), None);
        for (bad, field) in [
            ("{memory: lots}", "resources.memory"),
            ("{memory: 1Ki}", "resources.memory"),
            ("{cpus: -1}", "resources.cpus"),
            ("{pids: 0}", "resources.pids"),
            ("{gpus: some}", "resources.gpus"),
            ("{disk: 1G}", "resources.disk"),
        ] {
            let data = UBUNTU.replace("timeout: 600\n", &format!("timeout: 600\n        resources: {bad}\n"));
            let err = plan_err(&data);
            assert_eq!(err.field.as_deref(), Some(format!("tasks[0].actions[0].{field}").as_str()), "{err}");
        }
    }

    fn defs() -> Definitions {
        let yaml = "kind: ActionDefinition\nname: discover\nimage: reg.io/kiln/discover:v1\n\
            input_schema: {type: object, required: [min_gb], properties: {min_gb: {type: integer, minimum: 1}}, additionalProperties: false}\n\
            output_schema: {type: object, required: [disk]}\nresources: {memory: 64Mi}\n";
        let docs = crate::parse_documents("defs", yaml).unwrap();
        let crate::Document::ActionDefinition(d) = &docs[0] else { panic!() };
        [(d.name.clone(), d.clone())].into()
    }

    #[test]
    fn typed_actions_take_their_image_and_validate_their_input() {
        let data = "version: \"0.1\"\nname: t\ntasks:\n  - name: t\n    worker: \"{{.device_1}}\"\n    actions:\n      - name: find\n        use: discover\n        with: {min_gb: 8}\n      - name: write\n        image: reg.io/kiln/w:v1\n        environment: {DISK: \"{{ .actions.find.output.disk }}\"}\n";
        check_template(&tpl(data), &defs()).unwrap();
        let plan = plan_workflow(&tpl(data), &wf(), &hw(), &defs()).unwrap();
        let find = &plan.actions[0];
        assert_eq!(
            (find.image.as_str(), find.definition.as_str(), find.input_json.as_str()),
            ("reg.io/kiln/discover:v1", "discover", "{\"min_gb\":8}")
        );
        assert_eq!(find.resources.memory_bytes, Some(64 << 20));
        assert_eq!(find.output_schema_json, "{\"required\":[\"disk\"],\"type\":\"object\"}");
        assert_eq!(plan.actions[1].environment["DISK"], "{{ .actions.find.output.disk }}", "resolved at dispatch");
        for (bad, field) in [
            ("with: {min_gb: 0}", "tasks[0].actions[0].with.min_gb"),
            ("with: {min_gb: 8, colour: red}", "tasks[0].actions[0].with"),
            ("with: {}", "tasks[0].actions[0].with"),
        ] {
            let err = check_template(&tpl(&data.replace("with: {min_gb: 8}", bad)), &defs()).unwrap_err();
            assert_eq!(err.field.as_deref(), Some(field), "{bad}: {err}");
        }
        let err = check_template(&tpl(&data.replace("use: discover", "use: nothing")), &defs()).unwrap_err();
        assert!(err.to_string().contains("no ActionDefinition \"nothing\" (known: discover)"), "{err}");
        let err = check_template(&tpl(&data.replace("use: discover", "use: discover\n        image: x/y:z")), &defs())
            .unwrap_err();
        assert_eq!(err.field.as_deref(), Some("tasks[0].actions[0].use"));
    }

    #[test]
    fn errors_carry_field_paths() {
        let cases = [
            (
                UBUNTU.replace("timeout: 600", "timeout: 600\n        retries_please: 3"),
                "tasks[0].actions[0].retries_please",
                "unknown field",
            ),
            (
                UBUNTU.replace("quay.io/tinkerbell-actions/writefile", "Quay.io/Bad Image"),
                "tasks[0].actions[1].image",
                "invalid image",
            ),
            (UBUNTU.replace("\"write-netplan\"", "\"stream-ubuntu-image\""), "tasks[0].actions[1].name", "duplicate"),
            (UBUNTU.replace("pid: host", "pid: container"), "tasks[0].actions[2].pid", "host"),
            (
                UBUNTU.replace("timeout: 90\n        pid", "timeout: 0\n        pid"),
                "tasks[0].actions[2].timeout",
                "more than 0",
            ),
            (
                UBUNTU.replace("/dev/console:/dev/console:rw", "relative:dst"),
                "tasks[0].actions[2].volumes[0]",
                "target",
            ),
            (UBUNTU.replace("worker: \"{{.device_1}}\"", "worker: \"\""), "tasks[0].worker", "empty"),
            (UBUNTU.replace("global_timeout: 1800", "global_timeout: soon"), "global_timeout", "invalid"),
        ];
        for (data, field, needle) in cases {
            let err = plan_err(&data);
            assert_eq!(err.field.as_deref(), Some(field), "{err}");
            assert!(err.to_string().contains(needle), "{err}");
        }
        let err = plan_err(&UBUNTU.replace(".device_1", ".device_9"));
        assert_eq!((err.line, err.field.as_deref()), (Some(6), Some(".device_9")), "{err}");
        let err = plan_err("version: \"0.1\"\nname: x\ntasks: []\n");
        assert_eq!(err.field.as_deref(), Some("tasks"));
    }
}
