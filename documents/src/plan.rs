//! Tinkerbell's template structure, and the plan of a workflow: the
//! rendered, validated, flattened list of actions it will run.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::documents::{ActionDefinitionDoc, HardwareDoc, TemplateDoc, TemplateFormat, WorkflowDoc, parse_mac};
use crate::{ImageRef, SpecError, locate, template};

pub const DEFAULT_ACTION_TIMEOUT_SECONDS: u64 = 3600;
/// Longest name Tinkerbell accepts for tasks and actions.
const MAX_NAME: usize = 199;

/// One action of a plan, every field resolved. `Default` is an empty action
/// (note `timeout_seconds: 0`) for literals that name only the fields they
/// care about (`..Default::default()`); a plan sets every field.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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

/// A YAML scalar where Tinkerbell takes a string, kept as written, as Go's
/// YAML decoding into a string keeps it: `COMPRESSED: true` is `"true"`,
/// `VERSION: 1.10` stays `"1.10"` (not `1.1`), `MODE: 0644` stays `"0644"`.
/// A null (`KEY:`) is the empty string; a list or map is an error.
pub(crate) struct Scalar(String);

impl Scalar {
    fn into_string(self) -> String {
        self.0
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Scalar;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string, number or bool")
            }
            fn visit_none<E>(self) -> Result<Scalar, E> {
                Ok(Scalar(String::new()))
            }
            fn visit_unit<E>(self) -> Result<Scalar, E> {
                Ok(Scalar(String::new()))
            }
            // serde_yaml_ng hands any scalar to `deserialize_str` as written.
            fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Scalar, D::Error> {
                d.deserialize_str(self)
            }
            fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        d.deserialize_option(Visitor)
    }
}

/// A number or bool that a template may take from hardware data
/// (`timeout: {{ .hardware.metadata.timeout }}`). When a template is checked
/// without hardware, the placeholder stands there instead; the real value
/// is required when a workflow renders it.
enum Lenient<T> {
    Value(T),
    Probe(String),
}

impl<'de, T: serde::de::DeserializeOwned> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_yaml_ng::Value::deserialize(d)?;
        if let serde_yaml_ng::Value::String(s) = &v
            && s.contains(template::PROBE)
        {
            return Ok(Self::Probe(s.clone()));
        }
        T::deserialize(v).map(Self::Value).map_err(|e| serde::de::Error::custom(crate::documents::bare_message(&e)))
    }
}

// The template body. Unknown fields are not refused by serde here
// (no `deny_unknown_fields`): [`structure`] collects them, then refuses the
// first with serde's own message for a kiln template, or warns about each
// for a Tinkerbell one. `ResourcesYaml` (a kiln extension, shared with
// ActionDefinition) stays strict either way.
#[derive(Deserialize)]
struct TemplateYaml {
    /// Optional only to serde: [`Scalar`] reads a missing value as empty,
    /// and a missing version must be named as such.
    version: Option<Scalar>,
    name: String,
    #[serde(default)]
    #[allow(dead_code)]
    id: Option<Scalar>,
    #[serde(default)]
    global_timeout: Option<Lenient<u64>>,
    tasks: Vec<TaskYaml>,
}

/// `environment:` with nothing after it is an empty map to Go's YAML
/// decoding (Tinkerbell), and EKS Anywhere writes templates that way.
fn null_is_empty<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Deserialize)]
struct TaskYaml {
    name: String,
    worker: String,
    #[serde(default, deserialize_with = "null_is_empty")]
    volumes: Vec<String>,
    #[serde(default, deserialize_with = "null_is_empty")]
    environment: BTreeMap<String, Scalar>,
    actions: Vec<ActionYaml>,
}

#[derive(Deserialize)]
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
    terminal: Option<Lenient<bool>>,
    #[serde(default)]
    timeout: Option<Lenient<u64>>,
    #[serde(default)]
    command: Option<Vec<String>>,
    #[serde(default, deserialize_with = "null_is_empty")]
    environment: BTreeMap<String, Scalar>,
    #[serde(default, deserialize_with = "null_is_empty")]
    volumes: Vec<String>,
    #[serde(default)]
    pid: Option<String>,
    #[serde(default)]
    namespaces: Option<NamespacesYaml>,
    #[serde(rename = "on-timeout", default, deserialize_with = "null_is_empty")]
    on_timeout: Vec<String>,
    #[serde(rename = "on-failure", default, deserialize_with = "null_is_empty")]
    on_failure: Vec<String>,
    #[serde(default)]
    resources: Option<ResourcesYaml>,
    #[serde(default)]
    retries: Option<Lenient<u32>>,
    #[serde(default)]
    retry_backoff: Option<Lenient<u64>>,
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
/// Values that come from hardware are checked by [`plan_workflow`]; the
/// returned plan holds [`template::PROBE`] where they will be.
pub fn check_template(t: &TemplateDoc, defs: &Definitions) -> Result<Plan, SpecError> {
    check_template_with_warnings(t, defs).map(|(plan, _)| plan)
}

/// [`check_template`], with the warnings of a Tinkerbell template: each
/// unknown field of its body, by field path and template line.
pub fn check_template_with_warnings(t: &TemplateDoc, defs: &Definitions) -> Result<(Plan, Vec<SpecError>), SpecError> {
    let obj = object(t);
    let rendered = template::render_probe_mapped(&obj, &t.data)?;
    build(&obj, &rendered, t.format, defs, false)
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
        for i in 1..=index.min(self.actions.len().saturating_sub(1)) {
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
    plan_workflow_with_warnings(t, w, hw, defs).map(|(plan, _)| plan)
}

/// [`plan_workflow`], with the warnings of a Tinkerbell template (see
/// [`check_template_with_warnings`]).
pub fn plan_workflow_with_warnings(
    t: &TemplateDoc,
    w: &WorkflowDoc,
    hw: &HardwareDoc,
    defs: &Definitions,
) -> Result<(Plan, Vec<SpecError>), SpecError> {
    let obj = object(t);
    // The disks are not known yet: hint calls are kept for dispatch, and
    // `rootDisk` becomes the hardware's `root_disk` hint.
    let disks = template::DiskContext { disks: None, root_disk: hw.root_disk.as_deref() };
    let rendered = template::render_mapped_with_disks(&obj, &t.data, &render_data(w, hw), disks)?;
    build(&obj, &rendered, t.format, defs, true)
}

/// What templates see, as Tinkerbell's workflow controller builds it: the
/// workflow's hardware map keys at the top, `.Hardware` (its legacy view, a
/// Go struct), `.hardware` (the hardware object), `.references` (empty:
/// kiln fetches no referenced objects); and kiln's `.workflow`. Table in
/// docs/templates.md.
pub fn render_data(w: &WorkflowDoc, hw: &HardwareDoc) -> serde_json::Value {
    let mut data = serde_json::Map::new();
    for (k, v) in &w.hardware_map {
        data.insert(k.clone(), json!(v));
    }
    let (legacy, object) = crate::tinkerbell::hardware_views(hw);
    data.insert("Hardware".into(), legacy);
    data.insert("hardware".into(), object);
    data.entry("references").or_insert_with(|| json!({}));
    data.insert("workflow".into(), json!({"id": w.id}));
    serde_json::Value::Object(data)
}

/// The structure, then the values, of a rendered template. Errors point at
/// the template line that produced the offending output line.
fn build(
    obj: &str,
    rendered: &template::Rendered,
    format: TemplateFormat,
    defs: &Definitions,
    with_values: bool,
) -> Result<(Plan, Vec<SpecError>), SpecError> {
    let (parsed, warnings) = structure(obj, rendered, format)?;
    let plan = check(obj, parsed, defs, with_values).map_err(|mut e| {
        if e.line.is_none()
            && let Some(line) = e.field.as_deref().and_then(|f| locate::line_of(&rendered.text, f))
        {
            e.line = Some(rendered.source_line(line));
        }
        e
    })?;
    Ok((plan, warnings))
}

/// Parses the rendered body. Fields it does not know are collected as they
/// are met; for a kiln template the first is the error (as
/// `deny_unknown_fields` would have made it: nothing after it is read), for
/// a Tinkerbell template each is a warning and the field is ignored, as
/// Tinkerbell ignores it.
fn structure(
    obj: &str,
    rendered: &template::Rendered,
    format: TemplateFormat,
) -> Result<(TemplateYaml, Vec<SpecError>), SpecError> {
    let mut ignored: Vec<Vec<Seg>> = Vec::new();
    let parsed = {
        let mut record = |path: serde_ignored::Path<'_>| ignored.push(segments(&path));
        let de = serde_yaml_ng::Deserializer::from_str(&rendered.text);
        serde_path_to_error::deserialize(serde_ignored::Deserializer::new(de, &mut record))
    };
    let line_of = |field: &str| locate::line_of(&rendered.text, field).map(|l| rendered.source_line(l));
    if format == TemplateFormat::Kiln
        && let Some(first) = ignored.first()
    {
        let field = field_path(first);
        return Err(SpecError {
            object: obj.to_string(),
            line: line_of(&field),
            field: Some(field),
            message: unknown_field_message(first),
        });
    }
    let warnings = ignored
        .iter()
        .map(|path| {
            let field = field_path(path);
            SpecError {
                object: obj.to_string(),
                line: line_of(&field),
                field: Some(field),
                message: "unknown field, ignored (as Tinkerbell ignores it)".into(),
            }
        })
        .collect();
    let parsed = parsed.map_err(|e| {
        let field = crate::documents::field_of(e.path());
        let inner = e.into_inner();
        // serde_yaml_ng places some errors (a type error raised by a
        // `Deserialize` impl of ours) at the start of the enclosing mapping;
        // the field's own line, further down, is better when the path can be
        // followed to it. A syntax error's own position is past the last
        // field it could name, so the later of the two lines is right.
        let located = field.as_deref().and_then(|f| locate::exact_line_of(&rendered.text, f));
        let line = located.max(inner.location().map(|l| l.line())).map(|l| rendered.source_line(l));
        SpecError { object: obj.to_string(), line, field, message: crate::documents::bare_message(&inner) }
    })?;
    Ok((parsed, warnings))
}

/// One step of the path to an ignored field.
#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Key(String),
    Index(usize),
}

fn segments(path: &serde_ignored::Path<'_>) -> Vec<Seg> {
    use serde_ignored::Path;
    match path {
        Path::Root => Vec::new(),
        Path::Seq { parent, index } => {
            let mut v = segments(parent);
            v.push(Seg::Index(*index));
            v
        }
        Path::Map { parent, key } => {
            let mut v = segments(parent);
            v.push(Seg::Key(key.clone()));
            v
        }
        Path::Some { parent } | Path::NewtypeStruct { parent } | Path::NewtypeVariant { parent } => segments(parent),
    }
}

/// `tasks[0].actions[1].args`, as errors name fields.
fn field_path(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) if out.is_empty() => out.push_str(k),
            Seg::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// serde's own message for an unknown field (what `deny_unknown_fields`
/// says), with the fields of the struct the path leads into.
fn unknown_field_message(path: &[Seg]) -> String {
    let Some((Seg::Key(key), parent)) = path.split_last() else {
        return "unknown field".into();
    };
    let is = |i: usize, k: &str| matches!(parent.get(i), Some(Seg::Key(x)) if x == k);
    let fields = match parent.len() {
        0 => fields_of::<TemplateYaml>(),
        2 if is(0, "tasks") => fields_of::<TaskYaml>(),
        4 if is(0, "tasks") && is(2, "actions") => fields_of::<ActionYaml>(),
        5 if is(4, "namespaces") => fields_of::<NamespacesYaml>(),
        _ => &[],
    };
    let e = <serde_yaml_ng::Error as serde::de::Error>::unknown_field(key, fields);
    crate::documents::bare_message(&e)
}

/// The field names serde knows for struct `T` (which it lists in an
/// unknown-field error): a deserializer that only asks.
fn fields_of<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
    struct Ask<'a>(&'a mut &'static [&'static str]);
    impl<'de> serde::Deserializer<'de> for Ask<'_> {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(serde::de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(serde::de::Error::custom("asked"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
            unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Ask(&mut fields));
    fields
}

fn field_err(obj: &str, field: String, message: String) -> SpecError {
    SpecError { object: obj.to_string(), line: None, field: Some(field), message }
}

fn check_name(obj: &str, field: String, name: &str, seen: &mut Vec<String>) -> Result<(), SpecError> {
    if name.trim().is_empty() || name.chars().count() > MAX_NAME {
        return Err(field_err(obj, field, format!("name must be 1-{MAX_NAME} characters")));
    }
    if seen.iter().any(|s| s == name) {
        return Err(field_err(obj, field, format!("duplicate name {name:?}")));
    }
    seen.push(name.to_string());
    Ok(())
}

/// `host` or nothing: the only namespace sharing kiln offers.
fn host_only(obj: &str, field: String, v: Option<&str>) -> Result<String, SpecError> {
    match v.map(str::trim) {
        None | Some("") => Ok(String::new()),
        Some("host") => Ok("host".into()),
        Some(other) => Err(field_err(obj, field, format!("{other:?} is not supported; use \"host\" or leave it out"))),
    }
}

/// The value of a field that may hold a placeholder when the template is
/// checked without hardware: unknown (`None`) then, an error when real data
/// was rendered.
fn value<T>(obj: &str, field: String, v: Option<Lenient<T>>, with_values: bool) -> Result<Option<T>, SpecError> {
    match v {
        None => Ok(None),
        Some(Lenient::Value(v)) => Ok(Some(v)),
        Some(Lenient::Probe(_)) if !with_values => Ok(None),
        Some(Lenient::Probe(s)) => {
            Err(field_err(obj, field, format!("invalid type: string {s:?}, expected a {}", std::any::type_name::<T>())))
        }
    }
}

const VOLUME_OPTIONS: &[&str] =
    &["ro", "rw", "z", "Z", "shared", "rshared", "slave", "rslave", "private", "rprivate", "nocopy"];

/// `SRC:DST[:OPTS]`; returns DST without a trailing `/`. SRC may also be a
/// named Docker volume, which Tinkerbell passes through.
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
    let target = parts[1].trim_end_matches('/');
    Ok(if target.is_empty() { "/".to_string() } else { target.to_string() })
}

/// Checks a list of volumes; a target mounted twice in one list is a
/// mistake Docker would refuse when the action starts.
fn volumes(
    obj: &str,
    field: &str,
    list: &[String],
    checkable: impl Fn(&str) -> bool,
) -> Result<Vec<(String, String)>, SpecError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (i, v) in list.iter().enumerate() {
        if !checkable(v) {
            continue;
        }
        let target = check_volume(obj, format!("{field}[{i}]"), v)?;
        if out.iter().any(|(t, _)| *t == target) {
            return Err(field_err(obj, format!("{field}[{i}]"), format!("target {target} is mounted twice")));
        }
        out.push((target, v.clone()));
    }
    Ok(out)
}

/// Validates and flattens. `with_values` is false when fields may hold
/// probe placeholders (template apply): a value that came from data is
/// checked when a workflow renders it, literal values are checked now.
fn check(obj: &str, t: TemplateYaml, defs: &Definitions, with_values: bool) -> Result<Plan, SpecError> {
    let checkable = |v: &str| with_values || !v.contains(template::PROBE);
    let Some(version) = t.version.map(Scalar::into_string) else {
        return Err(field_err(obj, "version".into(), "missing field `version`".into()));
    };
    if version.trim().is_empty() {
        return Err(field_err(obj, "version".into(), "must not be empty".into()));
    }
    if t.name.trim().is_empty() {
        return Err(field_err(obj, "name".into(), "must not be empty".into()));
    }
    let global_timeout = value(obj, "global_timeout".into(), t.global_timeout, with_values)?;
    if global_timeout == Some(0) {
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
        let task_volumes = volumes(obj, &format!("{tf}.volumes"), &task.volumes, checkable)?;
        let task_env: BTreeMap<String, String> =
            task.environment.into_iter().map(|(k, v)| (k, v.into_string())).collect();
        if let Some(k) = task_env.keys().find(|k| !valid_env_name(k)) {
            return Err(field_err(obj, format!("{tf}.environment"), format!("invalid variable name {k:?}")));
        }
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
            let timeout = value(obj, format!("{af}.timeout"), a.timeout, with_values)?;
            if timeout == Some(0) {
                return Err(field_err(obj, format!("{af}.timeout"), "must be more than 0 seconds".into()));
            }
            let ns = a.namespaces.unwrap_or(NamespacesYaml { pid: None, network: None });
            let pid = host_only(obj, format!("{af}.pid"), a.pid.as_deref())?;
            let ns_pid = host_only(obj, format!("{af}.namespaces.pid"), ns.pid.as_deref())?;
            if a.pid.is_some() && ns.pid.is_some() && pid != ns_pid {
                return Err(field_err(
                    obj,
                    format!("{af}.namespaces.pid"),
                    format!("{ns_pid:?} contradicts pid: {pid:?}; give one of them"),
                ));
            }
            let pid = if pid.is_empty() { ns_pid } else { pid };
            let network = host_only(obj, format!("{af}.namespaces.network"), ns.network.as_deref())?;
            // The action's volumes replace the task's with the same target.
            let mut merged = task_volumes.clone();
            for (target, v) in volumes(obj, &format!("{af}.volumes"), &a.volumes, checkable)? {
                merged.retain(|(t, _)| *t != target);
                merged.push((target, v));
            }
            let mut environment = task_env.clone();
            for (k, v) in a.environment {
                if !valid_env_name(&k) {
                    return Err(field_err(obj, format!("{af}.environment"), format!("invalid variable name {k:?}")));
                }
                environment.insert(k, v.into_string());
            }
            let retries = value(obj, format!("{af}.retries"), a.retries, with_values)?.unwrap_or(0);
            if retries > MAX_RETRIES {
                return Err(field_err(obj, format!("{af}.retries"), format!("at most {MAX_RETRIES}")));
            }
            let retry_backoff_seconds =
                value(obj, format!("{af}.retry_backoff"), a.retry_backoff, with_values)?.unwrap_or(0);
            let terminal = value(obj, format!("{af}.terminal"), a.terminal, with_values)?.unwrap_or(false);
            actions.push(PlannedAction {
                task: task.name.clone(),
                name: a.name,
                worker: worker.clone(),
                image,
                command: a.command.unwrap_or_default(),
                environment,
                volumes: merged.into_iter().map(|(_, v)| v).collect(),
                pid,
                network,
                timeout_seconds: timeout.unwrap_or(DEFAULT_ACTION_TIMEOUT_SECONDS),
                resources: match (a.resources, &typed) {
                    (None, Some((def, _))) => def.resources.clone(),
                    (r, _) => resources(obj, &format!("{af}.resources"), r)?,
                },
                retries,
                retry_backoff_seconds,
                terminal: terminal || !builtin.is_empty(),
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
    Ok(Plan { template_name: t.name, version, global_timeout_seconds: global_timeout, actions })
}

/// What a process environment can carry: not empty, no `=` (it would
/// split the name), no NUL.
fn valid_env_name(k: &str) -> bool {
    !k.is_empty() && !k.contains(['=', '\0'])
}

#[cfg(test)]
mod tests;
