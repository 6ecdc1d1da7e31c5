//! Rufio, Tinkerbell's BMC controller: its `Machine` objects
//! (`bmc.tinkerbell.org/v1alpha1`) and the Kubernetes `Secret`s their
//! `authSecretRef` names become kiln's `bmc:` section and `BmcSecret`, so a
//! Tinkerbell Hardware whose `bmcRef` names a Machine applied in the same
//! stream gets its BMC.
//!
//! Mapping: `spec.connection.host` + `port` is the address; the protocol is
//! Redfish (`https://host:port`) when `providerOptions.redfish` is set or
//! the port is not 623, else IPMI (`host:623`); `insecureTLS: true` is
//! `tls.insecure: true` (warned about at apply, like kiln's own);
//! `authSecretRef.name` is the credentials' name. A Secret's
//! `data.username`/`data.password` (base64) or `stringData` are the
//! BmcSecret's.

use base64::Engine;
use serde_json::Value;

use super::{Ctx, kiln_name, str_at};
use crate::bmc::{BmcSecretDoc, BmcSpec};
use crate::{Document, SpecError};

/// Rufio's API group.
pub(super) const GROUP: &str = "bmc.tinkerbell.org/";

/// Is this a Rufio object or a Secret kiln reads?
pub(super) fn is_rufio(api: &str, kind: &str) -> bool {
    api.starts_with(GROUP) || (api == "v1" && kind == "Secret")
}

/// A Rufio Machine, by its kiln name, waiting for the Hardware that names it.
#[derive(Debug, Clone)]
pub(crate) struct Machine {
    pub name: String,
    pub bmc: BmcSpec,
}

/// The Machines and Secrets of a stream, resolved once all are read: a
/// Secret becomes a BmcSecret only when a Machine of the stream names it
/// (an export holds other Secrets too, which are none of kiln's business).
#[derive(Debug, Default)]
pub(crate) struct Found {
    pub machines: Vec<Machine>,
    pub secrets: Vec<(BmcSecretDoc, String)>,
}

impl Found {
    pub fn extend(&mut self, other: Found) {
        self.machines.extend(other.machines);
        self.secrets.extend(other.secrets);
    }
}

/// Reads a Rufio object or Secret: `Ok(true)` when it was one.
#[allow(clippy::too_many_arguments)]
pub(super) fn object(
    ctx: &mut Ctx<'_>,
    obj: &Value,
    label: &str,
    at: &dyn Fn(&str) -> String,
    name: &str,
    api: &str,
    kind: &str,
    found: &mut Found,
) -> Result<bool, SpecError> {
    if !is_rufio(api, kind) {
        return Ok(false);
    }
    if name.is_empty() {
        return Err(ctx.error(label, &at("metadata.name"), "is required"));
    }
    match kind {
        "Secret" => {
            let has = |key: &str| {
                obj.pointer(&format!("/stringData/{key}")).is_some() || obj.pointer(&format!("/data/{key}")).is_some()
            };
            if !has("username") && !has("password") {
                ctx.warn(label, &at("apiVersion"), "a Secret without username and password is not a BMC's; ignored");
                return Ok(true);
            }
            let field = |key: &str| -> Result<String, SpecError> {
                if let Some(text) = obj.pointer(&format!("/stringData/{key}")).and_then(Value::as_str) {
                    return Ok(text.to_string());
                }
                let encoded = obj
                    .pointer(&format!("/data/{key}"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| ctx.error(label, &at(&format!("data.{key}")), "is required for a BMC secret"))?;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(encoded.trim())
                    .map_err(|_| ctx.error(label, &at(&format!("data.{key}")), "is not base64"))?;
                String::from_utf8(bytes).map_err(|_| ctx.error(label, &at(&format!("data.{key}")), "is not UTF-8"))
            };
            let (username, password) = (field("username")?, field("password")?);
            found.secrets.push((BmcSecretDoc { name: kiln_name(name), username, password }, label.to_string()));
        }
        "Machine" => {
            let connection = obj.pointer("/spec/connection").cloned().unwrap_or(Value::Null);
            let host = str_at(&connection, "host");
            let secret = connection.pointer("/authSecretRef/name").and_then(Value::as_str).unwrap_or("");
            // As before kiln read Machines: one it cannot use is ignored
            // with a warning, so an export holding such a Machine still applies.
            if host.is_empty() || secret.is_empty() {
                ctx.warn(
                    label,
                    &at("apiVersion"),
                    "a Rufio Machine without spec.connection.host and authSecretRef.name gives kiln no BMC; ignored",
                );
                return Ok(true);
            }
            let port = connection.get("port").and_then(Value::as_u64).unwrap_or(623);
            let redfish = connection.pointer("/providerOptions/redfish").is_some_and(|v| !v.is_null()) || port != 623;
            let (address, protocol) = if redfish {
                let port = connection.pointer("/providerOptions/redfish/port").and_then(Value::as_u64).unwrap_or(port);
                let port = if port == 623 { 443 } else { port };
                (format!("https://{host}:{port}"), "redfish")
            } else {
                (format!("{host}:{port}"), "ipmi")
            };
            let insecure = redfish && connection.get("insecureTLS").and_then(Value::as_bool).unwrap_or(false);
            let bmc =
                BmcSpec { address, protocol: protocol.into(), credentials: kiln_name(secret), tls_ca: None, insecure };
            found.machines.push(Machine { name: kiln_name(name), bmc });
        }
        other => {
            ctx.warn(label, &at("kind"), format!("kiln has no Rufio {other}; ignored (it takes Machine)"));
        }
    }
    Ok(true)
}

/// Gives each Tinkerbell Hardware whose `bmcRef` names a Machine of the
/// stream that Machine's BMC; a `bmcRef` to a Machine not in the stream is
/// a warning (the Hardware gets no BMC).
pub(crate) fn resolve(docs: &mut Vec<Document>, found: Found, warnings: &mut Vec<SpecError>) {
    let machines = &found.machines;
    for (secret, label) in found.secrets {
        if machines.iter().any(|m| m.bmc.credentials == secret.name) {
            docs.push(Document::BmcSecret(secret));
        } else {
            warnings.push(SpecError {
                object: label,
                line: None,
                field: None,
                message: "no Rufio Machine of these documents names this Secret; ignored".into(),
            });
        }
    }
    for doc in docs.iter_mut() {
        let Document::Hardware(hw) = doc else { continue };
        let Some(reference) = hw.spec.get("bmcRef") else { continue };
        if hw.bmc.is_some() || str_at(reference, "kind") != "Machine" {
            continue;
        }
        let name = kiln_name(str_at(reference, "name"));
        match machines.iter().find(|m| m.name == name) {
            Some(machine) => hw.bmc = Some(machine.bmc.clone()),
            None => warnings.push(SpecError {
                object: format!("Hardware {:?}", hw.id),
                line: None,
                field: Some("spec.bmcRef".into()),
                message: format!("names Machine {name:?}, which is not among the documents applied; no BMC for it"),
            }),
        }
    }
}
