//! A machine's BMC (`bmc:` in a Hardware document) and the credentials for
//! it (`kind: BmcSecret`), kept apart so the password never sits in a
//! Hardware document that `kiln get`/`describe` print.
//!
//! ```yaml
//! kind: Hardware
//! name: node1
//! macs: [52:54:00:00:00:01]
//! bmc:
//!   address: https://10.0.0.5        # or host:port (https for Redfish, UDP 623 for IPMI)
//!   protocol: redfish                # redfish | ipmi
//!   credentials: node1-bmc           # a BmcSecret's name
//!   tls:
//!     ca: |                          # PEM; or `insecure: true` (warned about at apply)
//!       -----BEGIN CERTIFICATE-----
//! ---
//! kind: BmcSecret
//! name: node1-bmc
//! username: admin
//! password: s3cret
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

/// The `bmc:` section of a Hardware document, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BmcSpec {
    pub address: String,
    /// "redfish" or "ipmi".
    pub protocol: String,
    /// The name of the BmcSecret holding user name and password.
    pub credentials: String,
    /// A CA (PEM) the BMC's certificate must chain to; the system roots when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<String>,
    /// No TLS verification (explicit; kiln warns at apply).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
}

/// `kind: BmcSecret`: write-only credentials. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct BmcSecretDoc {
    pub name: String,
    pub username: String,
    pub password: String,
}

impl fmt::Debug for BmcSecretDoc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BmcSecretDoc")
            .field("name", &self.name)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BmcYaml {
    address: String,
    protocol: String,
    credentials: String,
    #[serde(default)]
    tls: Option<TlsYaml>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsYaml {
    #[serde(default)]
    ca: Option<String>,
    #[serde(default)]
    insecure: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BmcSecretYaml {
    #[serde(rename = "apiVersion", default)]
    _api_version: Option<String>,
    pub(crate) kind: String,
    pub(crate) name: String,
    // Read as any YAML value and checked here: serde's own type errors
    // quote the value (`invalid type: integer `123456``), and this one is
    // a password.
    username: serde_yaml_ng::Value,
    password: serde_yaml_ng::Value,
}

/// Checks a `bmc:` section; errors are (field path, message).
pub(crate) fn bmc_spec(y: BmcYaml) -> Result<BmcSpec, (String, String)> {
    let err = |field: &str, message: String| Err((format!("bmc.{field}"), message));
    let protocol = y.protocol.trim().to_ascii_lowercase();
    if protocol != "redfish" && protocol != "ipmi" {
        return err("protocol", format!("{:?} must be redfish or ipmi", y.protocol));
    }
    let address = y.address.trim().to_string();
    if address.is_empty() || address.contains(char::is_whitespace) {
        return err("address", format!("{:?} must be a URL or host[:port]", y.address));
    }
    if protocol == "ipmi" && address.contains("://") {
        return err("address", format!("{address:?}: an IPMI address is host[:port], not a URL"));
    }
    if let Some((scheme, _)) = address.split_once("://")
        && scheme != "http"
        && scheme != "https"
    {
        return err("address", format!("{address:?}: a Redfish URL is http:// or https://"));
    }
    if !crate::documents::valid_name(&y.credentials) {
        return err("credentials", format!("{:?} must name a BmcSecret (1-63 of [a-z0-9._-])", y.credentials));
    }
    let (tls_ca, insecure) = match y.tls {
        None => (None, false),
        Some(TlsYaml { ca: Some(_), insecure: true }) => {
            return err("tls", "give either ca or insecure: true, not both".into());
        }
        Some(TlsYaml { ca: Some(ca), insecure: false }) => {
            if !ca.contains("-----BEGIN CERTIFICATE-----") {
                return err("tls.ca", "must be a PEM certificate (-----BEGIN CERTIFICATE-----)".into());
            }
            (Some(ca), false)
        }
        Some(TlsYaml { ca: None, insecure }) => (None, insecure),
    };
    if protocol == "ipmi" && (tls_ca.is_some() || insecure) {
        return err("tls", "IPMI has no TLS; leave tls out".into());
    }
    Ok(BmcSpec { address, protocol, credentials: y.credentials, tls_ca, insecure })
}

/// Checks a BmcSecret document; errors are (field path, message).
pub(crate) fn bmc_secret(y: BmcSecretYaml) -> Result<BmcSecretDoc, (String, String)> {
    let (Some(username), Some(password)) = (y.username.as_str(), y.password.as_str()) else {
        let field = if y.username.as_str().is_none() { "username" } else { "password" };
        return Err((field.into(), "must be a string (quote it)".into()));
    };
    let (username, password) = (username.to_string(), password.to_string());
    if username.is_empty() || username.len() > 64 || username.contains(char::is_control) {
        return Err(("username".into(), "must be 1-64 printable characters".into()));
    }
    if password.is_empty() || password.len() > 1024 {
        return Err(("password".into(), "must be 1-1024 bytes".into()));
    }
    Ok(BmcSecretDoc { name: y.name, username, password })
}
