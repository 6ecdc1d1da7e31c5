//! Tinkerbell's own objects (`apiVersion: tinkerbell.org/v1alpha1`
//! `Hardware`, `Template`, `Workflow`, and `kind: List` as `kubectl get -o
//! yaml` exports them), mapped onto kiln's documents, and the data a
//! template sees, built as Tinkerbell's workflow controller builds it
//! (tink/controller/internal/workflow/reconciler.go).
//!
//! Tinkerbell's API server drops fields it does not know; here an unknown
//! field is a warning naming it and its line, and the object still applies.
//! Server-side fields (`status`, `metadata.uid`, `managedFields`, ...) are
//! ignored without a word.

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::documents::{Chunk, HardwareDoc, TemplateDoc, TemplateFormat, WorkflowDoc, check_disk, parse_mac};
use crate::{Document, SpecError};

pub(crate) mod rufio;
pub(crate) mod schema;

use schema::{Problem, Views};

/// Tinkerbell's API group.
const GROUP: &str = "tinkerbell.org/";

/// `metadata` fields the API server writes: ignored silently.
const SERVER_METADATA: &[&str] = &[
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
    "finalizers",
    "ownerReferences",
    "generateName",
];

/// Is this document a Tinkerbell object (or a List of them)?
pub(crate) fn is_tinkerbell(top: &serde_yaml_ng::Mapping) -> bool {
    let api = top.get("apiVersion").and_then(|v| v.as_str()).unwrap_or("");
    let kind = top.get("kind").and_then(|v| v.as_str()).unwrap_or("");
    api.starts_with(GROUP) || (api == "v1" && kind == "List") || rufio::is_rufio(api, kind)
}

/// The kiln name of a Kubernetes name. A name kiln takes as it is (1-63 of
/// `[a-z0-9._-]`, starting with a letter or digit: every Kubernetes name of
/// up to 63 characters) stays; any other is lower-cased, its other
/// characters become `-`, and it is cut to 54 characters followed by `-`
/// and the first 8 hex digits of the SHA-256 of the original, so that two
/// long names sharing a prefix stay apart. The namespace is not part of it:
/// kiln has one namespace.
pub fn kiln_name(name: &str) -> String {
    if crate::documents::valid_name(name) {
        return name.to_string();
    }
    let mut cleaned: String = name
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c) { c } else { '-' })
        .collect();
    cleaned = cleaned.trim_start_matches(|c: char| !c.is_ascii_alphanumeric()).to_string();
    cleaned.truncate(54);
    let hash = Sha256::digest(name.as_bytes());
    let hex: String = hash.iter().take(4).map(|b| format!("{b:02x}")).collect();
    if cleaned.is_empty() { hex } else { format!("{cleaned}-{hex}") }
}

/// What one Tinkerbell document became: kiln documents, and warnings.
pub(crate) struct Parsed {
    pub docs: Vec<Document>,
    pub warnings: Vec<SpecError>,
    /// Rufio Machines and Secrets, for the Hardware of any document that names them.
    pub rufio: rufio::Found,
}

struct Ctx<'a> {
    source: &'a str,
    chunk: &'a Chunk<'a>,
    warnings: Vec<SpecError>,
    rufio: rufio::Found,
}

impl Ctx<'_> {
    fn label(&self, kind: &str, name: &str) -> String {
        format!("{} document {} ({kind} {name:?})", self.source, self.chunk.number)
    }

    fn line(&self, path: &str) -> Option<usize> {
        crate::locate::line_of(self.chunk.text, path).map(|l| l + self.chunk.offset)
    }

    fn error(&self, object: &str, path: &str, message: impl Into<String>) -> SpecError {
        SpecError {
            object: object.to_string(),
            line: self.line(path),
            field: Some(path.to_string()),
            message: message.into(),
        }
    }

    fn warn(&mut self, object: &str, path: &str, message: impl Into<String>) {
        let w = self.error(object, path, message);
        self.warnings.push(w);
    }

    /// Unknown fields become warnings, a wrong type the error.
    fn problems(&mut self, object: &str, problems: Vec<Problem>) -> Result<(), SpecError> {
        for p in problems {
            if p.unknown {
                self.warn(object, &p.path, p.message);
            } else {
                return Err(self.error(object, &p.path, p.message));
            }
        }
        Ok(())
    }
}

pub(crate) fn parse(source: &str, chunk: &Chunk<'_>, top: serde_yaml_ng::Value) -> Result<Parsed, SpecError> {
    let top: Value = serde_json::to_value(&top).map_err(|e| SpecError {
        object: format!("{source} document {}", chunk.number),
        line: None,
        field: None,
        message: format!("not a Kubernetes object: {e}"),
    })?;
    let mut ctx = Ctx { source, chunk, warnings: Vec::new(), rufio: rufio::Found::default() };
    let mut docs = Vec::new();
    object(&mut ctx, &top, "", &mut docs)?;
    Ok(Parsed { docs, warnings: ctx.warnings, rufio: ctx.rufio })
}

fn str_at<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// One object at `prefix` (`""`, or `items[3]` inside a List).
fn object(ctx: &mut Ctx<'_>, obj: &Value, prefix: &str, docs: &mut Vec<Document>) -> Result<(), SpecError> {
    let at = |field: &str| if prefix.is_empty() { field.to_string() } else { format!("{prefix}.{field}") };
    let kind = str_at(obj, "kind").to_string();
    let api = str_at(obj, "apiVersion").to_string();
    let meta = obj.get("metadata").cloned().unwrap_or(Value::Null);
    let name = str_at(&meta, "name").to_string();
    let label = ctx.label(&kind, &name);
    let Value::Object(fields) = obj else {
        return Err(ctx.error(&label, prefix, "must be a mapping with apiVersion and kind"));
    };
    if kind == "List" || (api.starts_with(GROUP) && kind.ends_with("List")) {
        for key in fields.keys() {
            if !["apiVersion", "kind", "metadata", "items"].contains(&key.as_str()) {
                ctx.warn(&label, &at(key), "unknown field, ignored");
            }
        }
        let items = obj.get("items").and_then(Value::as_array).cloned().unwrap_or_default();
        for (i, item) in items.iter().enumerate() {
            object(ctx, item, &at(&format!("items[{i}]")), docs)?;
        }
        return Ok(());
    }
    let mut found = std::mem::take(&mut ctx.rufio);
    let rufio = rufio::object(ctx, obj, &label, &at, &name, &api, &kind, &mut found);
    ctx.rufio = found;
    if rufio? {
        return Ok(());
    }
    if !api.starts_with(GROUP) {
        ctx.warn(&label, &at("apiVersion"), format!("{api} {kind} is not a Tinkerbell object; kiln ignores it"));
        return Ok(());
    }
    if !["Hardware", "Template", "Workflow"].contains(&kind.as_str()) {
        ctx.warn(&label, &at("kind"), format!("kiln has no {kind}; ignored (it takes Hardware, Template, Workflow)"));
        return Ok(());
    }
    for key in fields.keys() {
        if !["apiVersion", "kind", "metadata", "spec", "status"].contains(&key.as_str()) {
            ctx.warn(&label, &at(key), "unknown field, ignored");
        }
    }
    if let Value::Object(m) = &meta {
        for key in m.keys() {
            if !["name", "namespace", "labels", "annotations"].contains(&key.as_str())
                && !SERVER_METADATA.contains(&key.as_str())
            {
                ctx.warn(&label, &at(&format!("metadata.{key}")), "unknown field, ignored");
            }
        }
    }
    if name.is_empty() {
        return Err(ctx.error(&label, &at("metadata.name"), "is required"));
    }
    let id = kiln_name(&name);
    if id != name {
        ctx.warn(
            &label,
            &at("metadata.name"),
            format!("{name:?} is {id:?} in kiln (kiln names are 1-63 of [a-z0-9._-])"),
        );
    }
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    let spec_at = at("spec");
    match kind.as_str() {
        "Hardware" => {
            let mut problems = Vec::new();
            let views = schema::read_struct(schema::SPEC, Some(&spec), &spec_at, &mut problems);
            ctx.problems(&label, problems)?;
            let spec_json = views.json.unwrap_or_else(|| json!({}));
            if spec.get("references").is_some_and(|r| r.as_object().is_some_and(|m| !m.is_empty())) {
                ctx.warn(
                    &label,
                    &format!("{spec_at}.references"),
                    "kiln does not fetch referenced objects; .references is empty in templates",
                );
            }
            let mut macs: Vec<String> = Vec::new();
            let interfaces = spec.get("interfaces").and_then(Value::as_array).cloned().unwrap_or_default();
            for (i, iface) in interfaces.iter().enumerate() {
                let Some(mac) = iface.get("dhcp").and_then(|d| d.get("mac")).and_then(Value::as_str) else { continue };
                let path = format!("{spec_at}.interfaces[{i}].dhcp.mac");
                let mac =
                    parse_mac(mac).ok_or_else(|| ctx.error(&label, &path, format!("{mac:?} is not a MAC address")))?;
                if !macs.contains(&mac) {
                    macs.push(mac);
                }
            }
            let agent = str_at(&spec, "agentID").trim().to_ascii_lowercase();
            if macs.is_empty() {
                return Err(ctx.error(
                    &label,
                    &format!("{spec_at}.interfaces"),
                    "kiln needs at least one interface with dhcp.mac to know the machine",
                ));
            }
            let agent_id = if agent.is_empty() { macs[0].clone() } else { parse_mac(&agent).unwrap_or(agent) };
            let mut disks = Vec::new();
            for (i, d) in spec.get("disks").and_then(Value::as_array).cloned().unwrap_or_default().iter().enumerate() {
                let device = str_at(d, "device").to_string();
                if device.is_empty() {
                    continue;
                }
                check_disk(&device).map_err(|m| ctx.error(&label, &format!("{spec_at}.disks[{i}].device"), m))?;
                disks.push(device);
            }
            let mut object_meta = Map::new();
            for key in ["namespace", "labels", "annotations"] {
                if let Some(v) = meta.get(key).filter(|v| !v.is_null()) {
                    object_meta.insert(key.to_string(), v.clone());
                }
            }
            object_meta.insert("name".into(), json!(name));
            docs.push(Document::Hardware(HardwareDoc {
                id,
                agent_id,
                macs,
                disks,
                metadata: json!({}),
                // kiln decides when a machine network-boots (while a
                // workflow is pending); allowPXE is only data here, else an
                // export taken after provisioning (allowPXE: false) could
                // never be provisioned again.
                netboot: true,
                spec: spec_json,
                object_meta: Value::Object(object_meta),
                // bmcRef names a Rufio Machine object, which kiln does not
                // read yet: it stays data in `spec` (docs/bmc.md).
                bmc: None,
                root_disk: None,
            }));
        }
        "Template" => {
            check_fields(ctx, &label, &spec, &spec_at, &["data"]);
            let data = str_at(&spec, "data");
            if data.trim().is_empty() {
                return Err(ctx.error(&label, &format!("{spec_at}.data"), "is required: the template source"));
            }
            docs.push(Document::Template(TemplateDoc {
                name: id,
                data: data.to_string(),
                format: TemplateFormat::Tinkerbell,
            }));
        }
        "Workflow" => {
            check_fields(
                ctx,
                &label,
                &spec,
                &spec_at,
                &["templateRef", "hardwareRef", "hardwareMap", "disabled", "bootOptions"],
            );
            let boot_options = tinkerbell_boot_options(ctx, &label, &spec, &spec_at)?;
            if spec.get("disabled").and_then(Value::as_bool) == Some(true) {
                ctx.warn(&label, &format!("{spec_at}.disabled"), "ignored: kiln runs every applied workflow");
            }
            let template = str_at(&spec, "templateRef");
            let hardware = str_at(&spec, "hardwareRef");
            if template.is_empty() {
                return Err(ctx.error(&label, &format!("{spec_at}.templateRef"), "is required"));
            }
            if hardware.is_empty() {
                return Err(ctx.error(&label, &format!("{spec_at}.hardwareRef"), "is required"));
            }
            let mut hardware_map = std::collections::BTreeMap::new();
            if let Some(map) = spec.get("hardwareMap").and_then(Value::as_object) {
                for (k, v) in map {
                    let path = format!("{spec_at}.hardwareMap.{k}");
                    if crate::documents::RESERVED_KEYS.contains(&k.as_str()) || k.is_empty() {
                        ctx.warn(
                            &label,
                            &path,
                            format!("{k:?} is the template's own data in kiln; this entry is dropped"),
                        );
                        continue;
                    }
                    let Some(v) = v.as_str() else {
                        return Err(ctx.error(&label, &path, "must be a string"));
                    };
                    let v = parse_mac(v).unwrap_or_else(|| v.to_string());
                    hardware_map.insert(k.clone(), v);
                }
            }
            docs.push(Document::Workflow(WorkflowDoc {
                id,
                template: kiln_name(template),
                hardware: kiln_name(hardware),
                hardware_map,
                boot_options,
            }));
        }
        _ => unreachable!("kinds checked above"),
    }
    Ok(())
}

/// Tinkerbell's `spec.bootOptions` as kiln's boot options: `bootMode:
/// netboot` is a one-time PXE boot and a power cycle before the first
/// action. `toggleAllowNetboot` is what kiln does anyway (a machine
/// network-boots the hook while it has a pending workflow). `bootMode:
/// iso` (or `isoboot`) boots the hook ISO kiln serves through the BMC's
/// virtual media.
fn tinkerbell_boot_options(
    ctx: &mut Ctx<'_>,
    label: &str,
    spec: &Value,
    spec_at: &str,
) -> Result<Option<crate::documents::BootOptions>, SpecError> {
    use crate::documents::{AfterSuccess, BootOptions, NetworkBoot};
    let Some(options) = spec.get("bootOptions").filter(|b| !b.is_null()) else { return Ok(None) };
    let at = format!("{spec_at}.bootOptions");
    let Some(map) = options.as_object() else {
        return Err(ctx.error(label, &at, "must be a mapping"));
    };
    for key in map.keys() {
        if !["toggleAllowNetboot", "bootMode", "isoURL"].contains(&key.as_str()) {
            ctx.warn(label, &format!("{at}.{key}"), "ignored: not a field kiln knows");
        }
    }
    if let Some(toggle) = map.get("toggleAllowNetboot")
        && !toggle.is_boolean()
    {
        return Err(ctx.error(label, &format!("{at}.toggleAllowNetboot"), "must be true or false"));
    }
    match map.get("bootMode").map(|m| m.as_str()) {
        None | Some(Some("")) => {
            if !map.is_empty() {
                ctx.warn(
                    label,
                    &at,
                    "ignored without bootMode: kiln network-boots a machine while it has a pending workflow; \
                     give bootMode: netboot to have kiln power-cycle it into network boot through its BMC",
                );
            }
            Ok(None)
        }
        Some(Some("netboot")) => Ok(Some(BootOptions {
            network_boot: NetworkBoot::Pxe,
            power_cycle: true,
            after_success: AfterSuccess::None,
        })),
        Some(Some("iso" | "isoboot")) => {
            // Tinkerbell points isoURL at Smee, which patches its hook ISO
            // per machine; kiln's server does the same itself.
            if map.get("isoURL").is_some() {
                ctx.warn(
                    label,
                    &format!("{at}.isoURL"),
                    "ignored: kiln builds the machine's hook ISO and serves it to the BMC itself",
                );
            }
            Ok(Some(BootOptions {
                network_boot: NetworkBoot::Iso,
                power_cycle: true,
                after_success: AfterSuccess::None,
            }))
        }
        Some(other) => Err(ctx.error(
            label,
            &format!("{at}.bootMode"),
            format!("{} must be netboot or iso", other.map_or("not a string".into(), |s| format!("{s:?}"))),
        )),
    }
}

fn check_fields(ctx: &mut Ctx<'_>, label: &str, spec: &Value, spec_at: &str, known: &[&str]) {
    if let Some(m) = spec.as_object() {
        for key in m.keys() {
            if !known.contains(&key.as_str()) {
                ctx.warn(label, &format!("{spec_at}.{key}"), "unknown field, ignored");
            }
        }
    }
}

/// kiln's own Hardware document with Tinkerbell-shaped fields, read
/// strictly (an unknown field is an error), into a Tinkerbell spec. Each
/// entry is (kiln field, Tinkerbell spec field, value); problems name the
/// kiln field as written.
pub(crate) fn native_spec(fields: &[(&str, &str, Option<Value>)], problems: &mut Vec<Problem>) -> Value {
    let spec: Map<String, Value> =
        fields.iter().filter_map(|(_, tink, v)| v.clone().map(|v| ((*tink).to_string(), v))).collect();
    if spec.is_empty() {
        return Value::Null;
    }
    let views = schema::read_struct(schema::SPEC, Some(&Value::Object(spec)), "", problems);
    for p in problems.iter_mut() {
        if let Some((kiln, rest)) =
            fields.iter().find_map(|(kiln, tink, _)| p.path.strip_prefix(tink).map(|rest| (kiln, rest.to_string())))
        {
            p.path = format!("{kiln}{rest}");
        }
    }
    views.json.unwrap_or_else(|| json!({}))
}

/// The spec a template sees for `hw`: as written for a Tinkerbell hardware,
/// and for kiln's own one (or one stored before kiln kept specs) its MACs
/// as interfaces and its disks as disks.
fn effective_spec(hw: &HardwareDoc) -> Value {
    let mut spec = match &hw.spec {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    if !spec.contains_key("interfaces") {
        let interfaces: Vec<Value> = hw
            .macs
            .iter()
            .map(|m| json!({"dhcp": {"mac": m}, "netboot": {"allowPXE": hw.netboot, "allowWorkflow": hw.netboot}}))
            .collect();
        spec.insert("interfaces".into(), Value::Array(interfaces));
    }
    if !spec.contains_key("disks") && !hw.disks.is_empty() {
        spec.insert("disks".into(), hw.disks.iter().map(|d| json!({"device": d})).collect());
    }
    Value::Object(spec)
}

/// The hardware in a template's data: `.Hardware` (Tinkerbell's legacy
/// view, a Go struct: Go field names, every field present) and `.hardware`
/// (the Kubernetes object as JSON). kiln's own keys of both views stay.
pub(crate) fn hardware_views(hw: &HardwareDoc) -> (Value, Value) {
    let spec = effective_spec(hw);
    let mut ignored = Vec::new();
    let Views { json: spec_json, go: spec_go } = schema::read_struct(schema::SPEC, Some(&spec), "", &mut ignored);
    let go = |k: &str| spec_go.get(k).cloned().unwrap_or(Value::Null);

    // .Hardware: Tinkerbell's templateHardwareData.
    let interfaces: Vec<Value> = go("Interfaces")
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|mut iface| {
            // kiln's earlier view had `.MAC` on each interface; kept.
            // (lower case, as before; DHCP.MAC is as written, as Tinkerbell has it).
            let written = iface.pointer("/DHCP/MAC").and_then(Value::as_str).unwrap_or("");
            let mac = json!(parse_mac(written).unwrap_or_else(|| written.to_string()));
            if let Value::Object(m) = &mut iface {
                m.insert("MAC".into(), mac);
            }
            iface
        })
        .collect();
    let mut metadata = match go("Metadata") {
        Value::Null => schema::read_struct(schema::METADATA, None, "", &mut ignored).go,
        m => m,
    };
    // kiln's own free-form metadata keys, where they do not hide
    // Tinkerbell's.
    if let (Value::Object(m), Value::Object(own)) = (&mut metadata, &hw.metadata) {
        for (k, v) in own {
            m.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    let legacy = json!({
        "Disks": hw.disks,
        "Interfaces": interfaces,
        "UserData": go("UserData"),
        "Metadata": metadata,
        "VendorData": go("VendorData"),
        // kiln's own keys.
        "ID": hw.id,
        "AgentID": hw.agent_id,
        "MACs": hw.macs,
    });

    // .hardware: the object as JSON, plus kiln's own keys.
    let mut object_meta = match &hw.object_meta {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    object_meta.entry("name").or_insert_with(|| json!(hw.id));
    // kiln's own metadata keys first (`.hardware.metadata.x` as before),
    // then the object's name, namespace, labels and annotations.
    let meta = match &hw.metadata {
        Value::Object(m) => {
            let mut meta = m.clone();
            for (k, v) in object_meta {
                meta.entry(k).or_insert(v);
            }
            Value::Object(meta)
        }
        Value::Null => Value::Object(object_meta),
        other => other.clone(),
    };
    let object = json!({
        "apiVersion": "tinkerbell.org/v1alpha1",
        "kind": "Hardware",
        "metadata": meta,
        "spec": spec_json.unwrap_or_else(|| json!({})),
        "status": {},
        // kiln's own keys.
        "id": hw.id,
        "agent_id": hw.agent_id,
        "macs": hw.macs,
        "disks": hw.disks,
    });
    (legacy, object)
}

#[cfg(test)]
mod tests;
