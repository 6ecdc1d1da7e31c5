//! The documents of `kiln apply`: a YAML stream of `kind: Hardware`,
//! `kind: Template` and `kind: Workflow` documents, parsed strictly.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::SpecError;

#[derive(Debug, Clone, PartialEq)]
pub enum Document {
    Hardware(HardwareDoc),
    Template(TemplateDoc),
    Workflow(WorkflowDoc),
    ActionDefinition(ActionDefinitionDoc),
    /// BMC credentials (write-only; see [`crate::bmc`]).
    BmcSecret(crate::bmc::BmcSecretDoc),
    /// What to do with discovered machines (see [`crate::rule`]).
    Rule(crate::rule::RuleDoc),
}

impl Document {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Hardware(_) => "Hardware",
            Self::Template(_) => "Template",
            Self::Workflow(_) => "Workflow",
            Self::ActionDefinition(_) => "ActionDefinition",
            Self::BmcSecret(_) => "BmcSecret",
            Self::Rule(_) => "Rule",
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Self::Hardware(h) => &h.id,
            Self::Template(t) => &t.name,
            Self::Workflow(w) => &w.id,
            Self::ActionDefinition(d) => &d.name,
            Self::BmcSecret(s) => &s.name,
            Self::Rule(r) => &r.name,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HardwareDoc {
    pub id: String,
    /// The id its agent reports (lower case); the first MAC unless given.
    pub agent_id: String,
    /// Lower case, colon separated.
    pub macs: Vec<String>,
    pub disks: Vec<String>,
    pub metadata: serde_json::Value,
    /// May this machine network-boot the hook image while it has a pending
    /// workflow? (`netboot: false` keeps it on its disk always.)
    #[serde(default = "yes")]
    pub netboot: bool,
    /// Tinkerbell's `HardwareSpec` as its JSON (known fields only, zero
    /// `omitempty` fields left out): the interfaces with their DHCP and
    /// netboot data, userData, Tinkerbell metadata, bmcRef... Templates see
    /// it as `.hardware.spec` and `.Hardware`. Null for a hardware without.
    #[serde(default)]
    pub spec: serde_json::Value,
    /// A Tinkerbell object's `metadata` (its Kubernetes name, namespace,
    /// labels, annotations), for `.hardware.metadata`. Null for kiln's own.
    #[serde(default)]
    pub object_meta: serde_json::Value,
    /// The machine's BMC, for out-of-band power and boot control.
    /// Left out of the stored JSON when absent, so hardware stored before
    /// it existed compares unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bmc: Option<crate::bmc::BmcSpec>,
    /// Which disk is the root disk, by what it is (docs/templates.md, disk
    /// hints): resolved against the reported inventory when a workflow
    /// runs (`{{ rootDisk }}`). Left out of the stored JSON when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_disk: Option<Box<crate::hints::DiskHint>>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateDoc {
    pub name: String,
    /// The template source (a Go-template YAML text), exactly as written.
    pub data: String,
    /// Where it came from, which decides how strictly its body is read.
    #[serde(default)]
    pub format: TemplateFormat,
}

impl TemplateDoc {
    /// kiln's own template (`kind: Template`): a strict body.
    pub fn new(name: impl Into<String>, data: impl Into<String>) -> Self {
        Self { name: name.into(), data: data.into(), format: TemplateFormat::Kiln }
    }
}

/// The kind of document a template was applied as. Tinkerbell ignores
/// fields of a template body it does not know, so a template applied as a
/// Tinkerbell object (`apiVersion: tinkerbell.org/v1alpha1`) keeps that
/// leniency for as long as it is stored: its unknown fields are warnings.
/// kiln's own templates stay strict: an unknown field is an error.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TemplateFormat {
    #[default]
    Kiln,
    Tinkerbell,
}

impl TemplateFormat {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kiln => "kiln",
            Self::Tinkerbell => "tinkerbell",
        }
    }

    /// The stored spelling back; `None` for one this build does not know.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Kiln, Self::Tinkerbell].into_iter().find(|f| f.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowDoc {
    pub id: String,
    pub template: String,
    pub hardware: String,
    pub hardware_map: BTreeMap<String, String>,
    /// What the server does through the machine's BMC around the workflow
    /// (docs/bmc.md); `None`: nothing.
    pub boot_options: Option<BootOptions>,
}

/// A workflow's boot options (Tinkerbell's `bootOptions`): before the first
/// action, set a one-time boot device and power-cycle; after SUCCESS, power
/// off or boot from disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootOptions {
    pub network_boot: NetworkBoot,
    pub power_cycle: bool,
    pub after_success: AfterSuccess,
}

/// The one-time boot device set before the first action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkBoot {
    Pxe,
    Http,
    /// The hook ISO the server builds for the machine, inserted through
    /// the BMC's virtual media (no DHCP boot file or PXE needed).
    Iso,
    None,
}

/// What happens to the machine after the workflow succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AfterSuccess {
    None,
    Off,
    Disk,
}

impl BootOptions {
    /// Nothing to do: no BMC job is needed.
    pub fn is_noop(&self) -> bool {
        self.network_boot == NetworkBoot::None && !self.power_cycle && self.after_success == AfterSuccess::None
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BootOptionsYaml {
    #[serde(default)]
    network_boot: Option<String>,
    #[serde(default)]
    power_cycle: Option<bool>,
    #[serde(default)]
    after_success: Option<String>,
}

fn boot_options(object: &str, b: BootOptionsYaml) -> Result<BootOptions, SpecError> {
    let network_boot = match b.network_boot.as_deref() {
        None | Some("none") => NetworkBoot::None,
        Some("pxe") => NetworkBoot::Pxe,
        Some("http") => NetworkBoot::Http,
        Some("iso") => NetworkBoot::Iso,
        Some(other) => {
            return Err(field_error(
                object,
                "boot_options.network_boot",
                &format!("{other:?} must be pxe, http, iso or none"),
            ));
        }
    };
    let after_success = match b.after_success.as_deref() {
        None | Some("none") => AfterSuccess::None,
        Some("off") => AfterSuccess::Off,
        Some("disk") => AfterSuccess::Disk,
        Some(other) => {
            return Err(field_error(
                object,
                "boot_options.after_success",
                &format!("{other:?} must be none, off or disk"),
            ));
        }
    };
    // Network boot without a power cycle would wait for someone to
    // reboot the machine: the cycle is the point of setting it.
    let power_cycle = b.power_cycle.unwrap_or(network_boot != NetworkBoot::None);
    Ok(BootOptions { network_boot, power_cycle, after_success })
}

/// A typed action (the generic container plugin contract): an image whose
/// input arrives as JSON on stdin and whose stdout is its JSON output, both
/// described by JSON Schemas. Templates use it with `use:` and `with:`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionDefinitionDoc {
    pub name: String,
    pub description: String,
    /// Canonical image reference.
    pub image: String,
    pub input_schema: serde_json::Value,
    pub output_schema: serde_json::Value,
    pub resources: crate::plan::Resources,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionDefinitionYaml {
    #[serde(rename = "apiVersion", default)]
    _api_version: Option<String>,
    kind: String,
    name: String,
    #[serde(default)]
    description: String,
    image: String,
    #[serde(default)]
    input_schema: Option<serde_json::Value>,
    #[serde(default)]
    output_schema: Option<serde_json::Value>,
    #[serde(default)]
    resources: Option<crate::plan::ResourcesYaml>,
}

/// Compiles a JSON Schema, so a broken one is an apply-time error.
pub(crate) fn compile_schema(schema: &serde_json::Value) -> Result<jsonschema::Validator, String> {
    jsonschema::validator_for(schema).map_err(|e| format!("not a valid JSON Schema: {e}"))
}

// The YAML shapes. `kind` and `apiVersion` are read by `KindProbe` and
// accepted (ignored) here so that `deny_unknown_fields` can catch typos.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HardwareYaml {
    #[serde(rename = "apiVersion", default)]
    _api_version: Option<String>,
    kind: String,
    name: String,
    #[serde(default)]
    agent_id: Option<String>,
    /// May be left out when `interfaces` give them (`dhcp.mac`).
    #[serde(default)]
    macs: Vec<String>,
    #[serde(default)]
    disks: Vec<String>,
    #[serde(default)]
    metadata: Option<serde_json::Value>,
    #[serde(default)]
    netboot: Option<bool>,
    // Tinkerbell-shaped data for templates (`.Hardware.Interfaces[].DHCP`,
    // `.Hardware.UserData`, ...), in Tinkerbell's own field names.
    #[serde(default)]
    interfaces: Option<serde_json::Value>,
    #[serde(default, alias = "userData")]
    user_data: Option<serde_json::Value>,
    #[serde(default, alias = "vendorData")]
    vendor_data: Option<serde_json::Value>,
    #[serde(default)]
    tinkerbell_metadata: Option<serde_json::Value>,
    #[serde(default, alias = "bmcRef")]
    bmc_ref: Option<serde_json::Value>,
    #[serde(default)]
    bmc: Option<crate::bmc::BmcYaml>,
    #[serde(default)]
    root_disk: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateYaml {
    #[serde(rename = "apiVersion", default)]
    _api_version: Option<String>,
    kind: String,
    name: String,
    data: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkflowYaml {
    #[serde(rename = "apiVersion", default)]
    _api_version: Option<String>,
    kind: String,
    name: String,
    template: String,
    hardware: String,
    #[serde(default, alias = "hardwareMap")]
    hardware_map: BTreeMap<String, String>,
    #[serde(default)]
    boot_options: Option<BootOptionsYaml>,
}

const KINDS: &str = "Hardware, Template, Workflow, ActionDefinition, BmcSecret, Rule";

/// Top-level keys of the template data that a `hardware_map` key would
/// hide: Tinkerbell's and kiln's views of the hardware, the workflow, and
/// the outputs of earlier actions.
pub(crate) const RESERVED_KEYS: &[&str] = &["Hardware", "hardware", "workflow", crate::template::ACTIONS_KEY];

/// One document of the stream with where it starts.
pub(crate) struct Chunk<'a> {
    pub text: &'a str,
    /// Lines before this document in the stream.
    pub offset: usize,
    pub number: usize,
}

fn split_stream(yaml: &str) -> Vec<Chunk<'_>> {
    let mut chunks = Vec::new();
    let (mut start, mut start_line, mut line) = (0, 0, 0);
    let mut pos = 0;
    for l in yaml.split_inclusive('\n') {
        let bare = l.trim_end();
        let is_separator = bare == "---" || (bare.starts_with("--- #")) || bare.starts_with("---\t");
        if is_separator {
            chunks.push((start, pos, start_line));
            start = pos + l.len();
            start_line = line + 1;
        }
        pos += l.len();
        line += 1;
    }
    chunks.push((start, yaml.len(), start_line));
    chunks
        .into_iter()
        .filter(|(s, e, _)| yaml[*s..*e].lines().any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')))
        .enumerate()
        .map(|(i, (s, e, offset))| Chunk { text: &yaml[s..e], offset, number: i + 1 })
        .collect()
}

/// A raw Tinkerbell template: no top-level `kind:` but a top-level `tasks:`.
/// Detected by text because the Go-template actions inside need not be valid
/// YAML until rendered. `Some(None)` is a raw template without a name.
fn raw_template(text: &str) -> Option<Option<String>> {
    let top = |key: &str| text.lines().find_map(|l| l.strip_prefix(key).map(str::trim));
    if top("kind:").is_some() || top("tasks:").is_none() {
        return None;
    }
    let Some(name) = top("name:") else { return Some(None) };
    let name = name.split(" #").next().unwrap_or(name).trim();
    Some(Some(name.trim_matches(|c| c == '"' || c == '\'').to_string()))
}

/// Parses a multi-document YAML stream. `source` names it in errors.
/// Warnings (unknown fields of Tinkerbell objects) are dropped; see
/// [`parse_documents_with_warnings`].
pub fn parse_documents(source: &str, yaml: &str) -> Result<Vec<Document>, SpecError> {
    parse_documents_with_warnings(source, yaml).map(|(docs, _)| docs)
}

/// Parses a multi-document YAML stream of kiln documents and Tinkerbell
/// objects (`apiVersion: tinkerbell.org/v1alpha1`, `kind: List`). kiln's
/// own documents are strict; a Tinkerbell object's unknown field is a
/// warning (Tinkerbell ignores it), returned with the documents.
pub fn parse_documents_with_warnings(source: &str, yaml: &str) -> Result<(Vec<Document>, Vec<SpecError>), SpecError> {
    let mut docs = Vec::new();
    let mut warnings = Vec::new();
    let mut rufio = crate::tinkerbell::rufio::Found::default();
    for chunk in split_stream(yaml) {
        let parsed = parse_one(source, &chunk)?;
        docs.extend(parsed.docs);
        warnings.extend(parsed.warnings);
        rufio.extend(parsed.rufio);
    }
    crate::tinkerbell::rufio::resolve(&mut docs, rufio, &mut warnings);
    Ok((docs, warnings))
}

fn parse_one(source: &str, chunk: &Chunk<'_>) -> Result<crate::tinkerbell::Parsed, SpecError> {
    if let Ok(serde_yaml_ng::Value::Mapping(top)) = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(chunk.text)
        && crate::tinkerbell::is_tinkerbell(&top)
    {
        return crate::tinkerbell::parse(source, chunk, serde_yaml_ng::Value::Mapping(top));
    }
    let doc = parse_kiln(source, chunk)?;
    let mut warnings = Vec::new();
    // A raw Tinkerbell template's name is mapped like a Tinkerbell object's;
    // say so, as for those.
    if let (Document::Template(t), Some(Some(written))) = (&doc, raw_template(chunk.text))
        && t.name != written
    {
        warnings.push(SpecError {
            object: format!("{source} document {} (Template {written:?})", chunk.number),
            line: crate::locate::line_of(chunk.text, "name").map(|l| l + chunk.offset),
            field: Some("name".into()),
            message: format!("{written:?} is {:?} in kiln (kiln names are 1-63 of [a-z0-9._-])", t.name),
        });
    }
    Ok(crate::tinkerbell::Parsed { docs: vec![doc], warnings, rufio: Default::default() })
}

fn parse_kiln(source: &str, chunk: &Chunk<'_>) -> Result<Document, SpecError> {
    parse_kind(source, chunk).map_err(|mut e| {
        // Checks made after deserialising know the field, not the line.
        if e.line.is_none()
            && let Some(field) = &e.field
        {
            // The operator may have written the field under its alias.
            let written = field.strip_prefix("hardware_map").map(|rest| format!("hardwareMap{rest}"));
            e.line = crate::locate::line_of(chunk.text, field)
                .or_else(|| written.and_then(|w| crate::locate::line_of(chunk.text, &w)))
                .map(|line| line + chunk.offset);
        }
        e
    })
}

fn parse_kind(source: &str, chunk: &Chunk<'_>) -> Result<Document, SpecError> {
    let label = |kind: &str, name: Option<&str>| match name {
        Some(n) => format!("{source} document {} ({kind} {n:?})", chunk.number),
        None => format!("{source} document {}", chunk.number),
    };
    match raw_template(chunk.text) {
        // A raw template is Tinkerbell's format: its name is mapped as a
        // Tinkerbell object's is, not refused (`Ubuntu_Focal` is
        // `ubuntu_focal-<hash>`; see tinkerbell::kiln_name).
        Some(Some(name)) => {
            let object = label("Template", Some(&name));
            if name.trim().is_empty() {
                return Err(field_error(&object, "name", "a Tinkerbell template needs a non-empty name"));
            }
            let name = crate::tinkerbell::kiln_name(&name);
            // Its body is read as Tinkerbell reads it, too.
            let format = crate::TemplateFormat::Tinkerbell;
            return Ok(Document::Template(TemplateDoc { format, ..TemplateDoc::new(name, chunk.text) }));
        }
        Some(None) => {
            return Err(field_error(
                &label("Template", None),
                "name",
                "a Tinkerbell template needs a top-level name: line",
            ));
        }
        None => {}
    }
    let unnamed = label("", None);
    let top: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(chunk.text).map_err(|e| yaml_error(&unnamed, chunk, e, None))?;
    let serde_yaml_ng::Value::Mapping(top) = top else {
        return Err(SpecError {
            object: unnamed,
            line: Some(chunk.offset + 1 + leading_blank_lines(chunk.text)),
            field: None,
            message: format!("a document must be a mapping with kind: (one of {KINDS})"),
        });
    };
    let name = top.get("name").and_then(|n| n.as_str()).map(str::to_string);
    // "" is a missing kind and "?" one that is not a string, both reported below.
    let kind = match top.get("kind") {
        None => String::new(),
        Some(k) => k.as_str().map(str::to_string).unwrap_or_else(|| "?".into()),
    };
    let object = label(&kind, name.as_deref());
    if let Some(v) = top.get("apiVersion")
        && !v.as_str().is_some_and(|v| v.starts_with("kiln"))
    {
        return Err(field_error(
            &object,
            "apiVersion",
            &format!("{} is not a kiln apiVersion: use kiln.dev/v1 or leave it out", show(v)),
        ));
    }
    match kind.as_str() {
        "Hardware" => {
            let h: HardwareYaml = strict(&object, chunk)?;
            debug_assert_eq!(h.kind, "Hardware");
            Ok(Document::Hardware(hardware(&object, h)?))
        }
        "Template" => {
            let t: TemplateYaml = strict(&object, chunk)?;
            debug_assert_eq!(t.kind, "Template");
            check_name(&object, "name", &t.name)?;
            if t.data.trim().is_empty() {
                return Err(field_error(&object, "data", "template source is empty"));
            }
            Ok(Document::Template(TemplateDoc::new(t.name, t.data)))
        }
        "Workflow" => {
            let w: WorkflowYaml = strict(&object, chunk)?;
            debug_assert_eq!(w.kind, "Workflow");
            check_name(&object, "name", &w.name)?;
            check_name(&object, "template", &w.template)?;
            check_name(&object, "hardware", &w.hardware)?;
            if let Some(k) = w.hardware_map.keys().find(|k| RESERVED_KEYS.contains(&k.as_str())) {
                return Err(field_error(
                    &object,
                    &format!("hardware_map.{k}"),
                    &format!("{k:?} is reserved for the template's own data ({})", RESERVED_KEYS.join(", ")),
                ));
            }
            if let Some(k) = w.hardware_map.keys().find(|k| k.is_empty()) {
                return Err(field_error(&object, &format!("hardware_map.{k}"), "a key must not be empty"));
            }
            let hardware_map = w
                .hardware_map
                .into_iter()
                .map(|(k, v)| (k, if parse_mac(&v).is_some() { v.to_ascii_lowercase().replace('-', ":") } else { v }))
                .collect();
            let boot_options = w.boot_options.map(|b| boot_options(&object, b)).transpose()?;
            Ok(Document::Workflow(WorkflowDoc {
                id: w.name,
                template: w.template,
                hardware: w.hardware,
                hardware_map,
                boot_options,
            }))
        }
        "ActionDefinition" => {
            let d: ActionDefinitionYaml = strict(&object, chunk)?;
            debug_assert_eq!(d.kind, "ActionDefinition");
            check_name(&object, "name", &d.name)?;
            let image =
                crate::ImageRef::parse(d.image.trim()).map_err(|e| field_error(&object, "image", &e))?.to_string();
            let input_schema = d.input_schema.unwrap_or_else(|| serde_json::json!({}));
            let output_schema = d.output_schema.unwrap_or_else(|| serde_json::json!({}));
            compile_schema(&input_schema).map_err(|e| field_error(&object, "input_schema", &e))?;
            compile_schema(&output_schema).map_err(|e| field_error(&object, "output_schema", &e))?;
            let resources = crate::plan::resources(&object, "resources", d.resources)?;
            Ok(Document::ActionDefinition(ActionDefinitionDoc {
                name: d.name,
                description: d.description,
                image,
                input_schema,
                output_schema,
                resources,
            }))
        }
        "BmcSecret" => {
            let y: crate::bmc::BmcSecretYaml = strict(&object, chunk)?;
            debug_assert_eq!(y.kind, "BmcSecret");
            check_name(&object, "name", &y.name)?;
            let secret = crate::bmc::bmc_secret(y).map_err(|(field, m)| field_error(&object, &field, &m))?;
            Ok(Document::BmcSecret(secret))
        }
        "Rule" => {
            let y: crate::rule::RuleYaml = strict(&object, chunk)?;
            debug_assert_eq!(y.kind, "Rule");
            let rule = crate::rule::rule_doc(y).map_err(|(field, m)| field_error(&object, &field, &m))?;
            Ok(Document::Rule(rule))
        }
        "" => Err(field_error(&object, "kind", &format!("missing; expected one of {KINDS}"))),
        "?" => Err(field_error(&object, "kind", &format!("must be one of {KINDS}"))),
        other => Err(field_error(&object, "kind", &format!("unknown kind {other:?}; expected one of {KINDS}"))),
    }
}

/// A YAML value as the operator wrote it, for messages.
fn show(v: &serde_yaml_ng::Value) -> String {
    match v {
        serde_yaml_ng::Value::String(s) => format!("{s:?}"),
        other => serde_yaml_ng::to_string(other).map_or_else(|_| "this value".into(), |s| s.trim().to_string()),
    }
}

fn leading_blank_lines(text: &str) -> usize {
    text.lines().take_while(|l| l.trim().is_empty() || l.trim_start().starts_with('#')).count()
}

fn strict<T: serde::de::DeserializeOwned>(object: &str, chunk: &Chunk<'_>) -> Result<T, SpecError> {
    let de = serde_yaml_ng::Deserializer::from_str(chunk.text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = field_of(e.path());
        yaml_error(object, chunk, e.into_inner(), field)
    })
}

/// A serde path as a field path, without the `?` serde_path_to_error
/// writes for a position it could not name (inside a syntax error).
pub(crate) fn field_of(path: &serde_path_to_error::Path) -> Option<String> {
    let path = path.to_string();
    let known = path.split_once('?').map_or(path.as_str(), |(known, _)| known).trim_end_matches('.');
    (!known.is_empty()).then(|| known.to_string())
}

fn yaml_error(object: &str, chunk: &Chunk<'_>, e: serde_yaml_ng::Error, field: Option<String>) -> SpecError {
    // An error at the end of input (an unclosed bracket) is placed past the
    // document's last line, which may be the next document's separator.
    let last = chunk.text.lines().count().max(1);
    let first = 1 + leading_blank_lines(chunk.text);
    let mut message = bare_message(&e);
    let line = match e.location() {
        Some(l) => l.line().min(last),
        // serde_yaml_ng says where a second document starts in none of its
        // wording: point at the marker that starts it, if any, else at the
        // document's first line, and say how to fix it.
        None if message.contains("more than one document") => {
            message = "this part of the stream holds more than one YAML document (a document marker \
                       such as `...` or `--- text`, or text after the document's top-level value); \
                       separate documents with a line of just ---"
                .into();
            chunk
                .text
                .lines()
                .enumerate()
                .skip(first)
                .find(|(_, l)| l.starts_with("---") || l.starts_with("..."))
                .map_or(first, |(i, _)| i + 1)
        }
        None => first,
    };
    // The message repeats the location; the line is reported separately.
    SpecError { object: object.to_string(), line: Some(line.min(last) + chunk.offset), field, message }
}

/// serde_yaml_ng's message without the location and path it prepends and
/// appends: [`SpecError`] reports those as fields of their own.
pub(crate) fn bare_message(e: &serde_yaml_ng::Error) -> String {
    let full = e.to_string();
    let message = full.split(" at line ").next().unwrap_or(&full);
    match message.split_once(": ") {
        Some((path, rest)) if !path.contains(' ') => rest.to_string(),
        _ => message.to_string(),
    }
}

fn field_error(object: &str, field: &str, message: &str) -> SpecError {
    SpecError { object: object.to_string(), line: None, field: Some(field.to_string()), message: message.to_string() }
}

/// Names are what URLs, container names and logs carry: `[a-z0-9]` first,
/// then `[a-z0-9._-]`, at most 63.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

fn check_name(object: &str, field: &str, name: &str) -> Result<(), SpecError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(field_error(
            object,
            field,
            &format!("{name:?} must be 1-63 of [a-z0-9._-], starting with a letter or digit"),
        ))
    }
}

/// `aa:bb:cc:dd:ee:ff` or with `-`, any case.
pub fn parse_mac(s: &str) -> Option<String> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    (parts.len() == 6 && parts.iter().all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit())))
        .then(|| parts.join(":").to_ascii_lowercase())
}

/// A disk is a `/dev/` path.
pub(crate) fn check_disk(d: &str) -> Result<(), String> {
    if !d.starts_with("/dev/") || d.len() <= 5 || d.contains(char::is_whitespace) {
        return Err(format!("{d:?} must be a /dev/ path"));
    }
    Ok(())
}

fn hardware(object: &str, h: HardwareYaml) -> Result<HardwareDoc, SpecError> {
    check_name(object, "name", &h.name)?;
    let mut problems = Vec::new();
    let spec = crate::tinkerbell::native_spec(
        &[
            ("interfaces", "interfaces", h.interfaces),
            ("user_data", "userData", h.user_data),
            ("vendor_data", "vendorData", h.vendor_data),
            ("tinkerbell_metadata", "metadata", h.tinkerbell_metadata),
            ("bmc_ref", "bmcRef", h.bmc_ref),
        ],
        &mut problems,
    );
    // kiln's own documents are strict: an unknown field is an error here.
    if let Some(p) = problems.first() {
        return Err(field_error(object, &p.path, &p.message.replace(", ignored", "")));
    }
    let mut macs = Vec::new();
    for (i, m) in h.macs.iter().enumerate() {
        let mac = parse_mac(m)
            .ok_or_else(|| field_error(object, &format!("macs[{i}]"), &format!("{m:?} is not a MAC address")))?;
        if macs.contains(&mac) {
            return Err(field_error(object, &format!("macs[{i}]"), &format!("{mac} is listed twice")));
        }
        macs.push(mac);
    }
    // The interfaces' MACs count too, after the listed ones.
    for (i, iface) in spec.get("interfaces").and_then(|v| v.as_array()).into_iter().flatten().enumerate() {
        if let Some(m) = iface.pointer("/dhcp/mac").and_then(|m| m.as_str()) {
            let mac = parse_mac(m).ok_or_else(|| {
                field_error(object, &format!("interfaces[{i}].dhcp.mac"), &format!("{m:?} is not a MAC address"))
            })?;
            if !macs.contains(&mac) {
                macs.push(mac);
            }
        }
    }
    if macs.is_empty() {
        return Err(field_error(
            object,
            "macs",
            "at least one MAC address is required (macs, or interfaces[].dhcp.mac)",
        ));
    }
    for (i, d) in h.disks.iter().enumerate() {
        check_disk(d).map_err(|m| field_error(object, &format!("disks[{i}]"), &m))?;
    }
    let agent_id = match h.agent_id {
        Some(id) => {
            let id = id.trim().to_ascii_lowercase();
            let id = parse_mac(&id).unwrap_or(id);
            if id.is_empty() || id.len() > 128 || id.contains(|c: char| c.is_whitespace() || c.is_control()) {
                return Err(field_error(object, "agent_id", "must be 1-128 printable characters without spaces"));
            }
            id
        }
        None => macs[0].clone(),
    };
    let metadata = h.metadata.unwrap_or_else(|| serde_json::json!({}));
    let bmc = match h.bmc {
        Some(b) => Some(crate::bmc::bmc_spec(b).map_err(|(field, m)| field_error(object, &field, &m))?),
        None => None,
    };
    let root_disk = match &h.root_disk {
        Some(v) => Some(Box::new(crate::hints::DiskHint::from_json(v).map_err(|e| match &e.field {
            Some(k) => field_error(object, &format!("root_disk.{k}"), &e.message),
            None => field_error(object, "root_disk", &e.message),
        })?)),
        None => None,
    };
    Ok(HardwareDoc {
        id: h.name,
        agent_id,
        macs,
        disks: h.disks,
        metadata,
        netboot: h.netboot.unwrap_or(true),
        spec,
        object_meta: serde_json::Value::Null,
        bmc,
        root_disk,
    })
}

#[cfg(test)]
mod tests;
