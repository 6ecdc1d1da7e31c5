//! The agent's configuration: a YAML file, with a few fields that command
//! line flags may override. Secrets (registry passwords) live only in the
//! file, never in flags, so they do not show up in `ps`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The server's gRPC endpoint, e.g. `https://10.0.0.1:42113` (`http://`
    /// only against a `--plaintext` server).
    pub server: String,
    /// This machine's agent token (`kiln apply` prints it when the hardware
    /// is created; `kiln token rotate` makes a new one). Keep the file 0600.
    #[serde(default)]
    pub token: Option<Secret>,
    /// A file holding the token instead (first line).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// A file holding a one-time enrolment credential (first line): the
    /// hook writes the `kiln.enrol=` of the machine's boot script here.
    /// When the agent has no token (no `token`, or an empty `token_file`)
    /// it exchanges the credential for one at start (see `enrol.rs`),
    /// written to `token_file` when there is one, and deletes this file.
    #[serde(default)]
    pub enrolment_file: Option<PathBuf>,
    /// The MAC of the NIC the machine booted from (the hook's `kiln.mac=`),
    /// sent at enrolment: the credential is bound to it.
    #[serde(default)]
    pub boot_mac: Option<String>,
    /// Where the in-band inventory is read from (`/sys`, `/proc`, `/dev`
    /// below it): `/` on a machine; tests point it at a fake tree.
    #[serde(default = "default_inventory_root")]
    pub inventory_root: PathBuf,
    /// How often the inventory is collected again (it is reported at start
    /// and then only when it changed); 0: only at start.
    #[serde(default = "default_inventory_interval")]
    pub inventory_interval_seconds: u64,
    /// Make the `/dev/disk/by-id` and `/dev/disk/by-path` links udev would
    /// have made (below `inventory_root`), at start, where none exists and
    /// udev does not run. The hook image turns it on: it has no udev, and
    /// disk hints render by-id names into actions (docs/templates.md). Off
    /// by default: on a host with its own `/dev` management the agent
    /// leaves `/dev` alone.
    #[serde(default)]
    pub disk_links: bool,
    /// CA (PEM) that signed the server's certificate: needed for `https://`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS (`kiln cert issue`).
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// The id this agent reports; default: the MAC of the first NIC.
    #[serde(default)]
    pub agent_id: Option<String>,
    /// Docker Engine endpoint: `unix:///path` or a bare socket path.
    #[serde(default = "default_docker_host")]
    pub docker_host: String,
    #[serde(default)]
    pub pull_policy: PullPolicy,
    /// Run every action in the host network namespace (templates may also
    /// ask for it per action with `namespaces.network: host`).
    #[serde(default)]
    pub host_network: bool,
    /// What happens to the container of a failed action.
    #[serde(default)]
    pub failed_containers: FailedContainers,
    #[serde(default)]
    pub registries: Vec<RegistryCredentials>,
    /// Export this agent's spans (each attempt's pull, run and reports, in
    /// its workflow's trace) to this OTLP/gRPC endpoint. Off when absent.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// Where the agent keeps per-workflow (`/workflow`) and per-attempt
    /// directories on the host.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Host directory behind each action's `/tmp_disk`: put it on a disk, so
    /// large temporary files do not fill the in-memory OS. Default:
    /// `STATE_DIR/scratch`.
    #[serde(default)]
    pub scratch_dir: Option<PathBuf>,
    /// Registries or repository prefixes action images may come from
    /// (`REGISTRY[:PORT][/PATH]`); empty allows any. The server enforces its
    /// own list when templates are applied; this is the machine's own guard.
    #[serde(default)]
    pub allowed_images: Vec<String>,
    /// Run only images pinned by digest.
    #[serde(default)]
    pub digests_only: bool,
    /// Commands that replace the reboot(2) call of the built-in `reboot` and
    /// `poweroff` steps (for tests, or hosts where a supervisor must be
    /// asked): `{reboot: [argv...], poweroff: [argv...]}`.
    #[serde(default)]
    pub power_commands: BTreeMap<String, Vec<String>>,
    /// External actions (Replicante style) by kind: commands run on this
    /// host instead of a container.
    #[serde(default)]
    pub external_actions: BTreeMap<String, ExternalAction>,
    /// On timeout an action gets SIGTERM, then SIGKILL after this many seconds.
    #[serde(default = "default_stop_grace")]
    pub stop_grace_seconds: u64,
    /// How long after the agent's start a missing Docker engine is waited
    /// for (the hook image starts the agent while dockerd starts). Later,
    /// an action that finds no engine fails with `EngineUnavailable`.
    #[serde(default = "default_engine_wait")]
    pub engine_wait_seconds: u64,
}

fn default_inventory_root() -> PathBuf {
    PathBuf::from("/")
}

fn default_inventory_interval() -> u64 {
    300
}

fn default_engine_wait() -> u64 {
    120
}

fn default_stop_grace() -> u64 {
    10
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalAction {
    #[serde(default)]
    pub description: String,
    /// Starts the action (argv); gets the action record as JSON on stdin and
    /// must return quickly, leaving the work running.
    pub action: Vec<String>,
    /// Reports progress (argv): prints `{"status": "running|finished|failed", "error": "..."}`.
    pub check: Vec<String>,
    /// Pause between checks.
    #[serde(default = "default_check_interval")]
    pub check_interval_ms: u64,
}

fn default_check_interval() -> u64 {
    1000
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/kiln-agent")
}

fn default_docker_host() -> String {
    "unix:///var/run/docker.sock".into()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PullPolicy {
    /// `if-not-present` for images pinned by digest (their content cannot
    /// change), `always` for tags (they can be moved).
    #[default]
    Default,
    Always,
    IfNotPresent,
    Never,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailedContainers {
    /// Keep the container (and its logs) for inspection until this agent
    /// starts work on another workflow.
    #[default]
    Keep,
    Remove,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryCredentials {
    /// Registry host as it appears in image references, e.g. `registry.local:5000`.
    pub registry: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RegistryCredentials {
    // Never print the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryCredentials")
            .field("registry", &self.registry)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// A secret string from the config: usable, but never printed by `{:?}`.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Clone)]
pub enum TokenSource {
    Inline(Secret),
    File(PathBuf),
}

impl TokenSource {
    /// The current token. Errors name the file, never the content.
    pub fn token(&self) -> Result<String, String> {
        match self {
            Self::Inline(t) => Ok(t.0.clone()),
            Self::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| format!("token_file {}: {e}", path.display()))?;
                let token = text.lines().next().unwrap_or_default().trim().to_string();
                if token.is_empty() { Err(format!("token_file {} is empty", path.display())) } else { Ok(token) }
            }
        }
    }
}

impl AgentConfig {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read config {}: {e}", path.display()))?;
        let config = Self::parse(&text).map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))?;
        // Secrets in a file others can read are not secret.
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).map(|m| m.permissions().mode()).unwrap_or(0);
        if (config.token.is_some() || config.registries.iter().any(|r| !r.password.is_empty())) && mode & 0o077 != 0 {
            tracing::warn!(config = %path.display(), mode = format!("{:o}", mode & 0o777),
                "the config holds secrets but others may read it: chmod 600");
        }
        Ok(config)
    }

    /// Where the agent token comes from: `token`, or `token_file` (read
    /// again for every call, so a rotated token written there is used
    /// without a restart).
    pub fn token_source(&self) -> anyhow::Result<TokenSource> {
        match (&self.token, &self.token_file) {
            (Some(_), Some(_)) => anyhow::bail!("fields token and token_file: give only one"),
            (Some(t), None) if t.0.trim().is_empty() => anyhow::bail!("field token: must not be empty"),
            (Some(t), None) => Ok(TokenSource::Inline(Secret(t.0.trim().to_string()))),
            (None, Some(path)) => Ok(TokenSource::File(path.clone())),
            (None, None) => anyhow::bail!(
                "field token: the agent needs its machine's token (`kiln apply` prints it for new hardware, \
                 `kiln token rotate HARDWARE` makes a new one); give token or token_file"
            ),
        }
    }

    /// The server's CA only, without a client identity (for enrolment,
    /// which happens before the agent has one).
    pub fn client_tls_ca(&self) -> anyhow::Result<kiln_proto::connect::ClientTls> {
        let ca_pem = self
            .ca_file
            .as_deref()
            .map(|p| std::fs::read(p).map_err(|e| anyhow::anyhow!("field ca_file: {}: {e}", p.display())))
            .transpose()?;
        Ok(kiln_proto::connect::ClientTls { ca_pem, identity: None })
    }

    /// TLS material for the server connection.
    pub fn client_tls(&self) -> anyhow::Result<kiln_proto::connect::ClientTls> {
        let read = |field: &str, p: &Path| {
            std::fs::read(p).map_err(|e| anyhow::anyhow!("field {field}: {}: {e}", p.display()))
        };
        let identity = match (&self.client_cert, &self.client_key) {
            (Some(c), Some(k)) => Some((read("client_cert", c)?, read("client_key", k)?)),
            (None, None) => None,
            (Some(_), None) => anyhow::bail!("field client_key: needed with client_cert"),
            (None, Some(_)) => anyhow::bail!("field client_cert: needed with client_key"),
        };
        Ok(kiln_proto::connect::ClientTls {
            ca_pem: self.ca_file.as_deref().map(|p| read("ca_file", p)).transpose()?,
            identity,
        })
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        // serde_yaml_ng's errors already name the field and the line.
        let config = Self::deserialize(serde_yaml_ng::Deserializer::from_str(text))?;
        if config.server.is_empty() {
            anyhow::bail!("field server: must not be empty");
        }
        if let Some(mac) = &config.boot_mac
            && kiln_documents::parse_mac(mac).is_none()
        {
            anyhow::bail!("field boot_mac: {mac:?} is not a MAC address");
        }
        config.image_policy().map_err(|e| anyhow::anyhow!("field allowed_images: {e}"))?;
        for (kind, e) in &config.external_actions {
            if e.action.is_empty() || e.check.is_empty() {
                anyhow::bail!("field external_actions.{kind}: action and check must both be commands (argv lists)");
            }
        }
        for (i, r) in config.registries.iter().enumerate() {
            if r.registry.is_empty() || r.registry.contains('/') {
                anyhow::bail!("field registries[{i}].registry: {:?} must be a registry host[:port]", r.registry);
            }
        }
        Ok(config)
    }

    pub fn image_policy(&self) -> Result<kiln_documents::ImagePolicy, String> {
        kiln_documents::ImagePolicy::new(&self.allowed_images, self.digests_only)
    }

    pub fn scratch_dir(&self) -> PathBuf {
        self.scratch_dir.clone().unwrap_or_else(|| self.state_dir.join("scratch"))
    }

    /// Credentials for the registry an image comes from.
    pub fn credentials_for(&self, registry: &str) -> Option<&RegistryCredentials> {
        self.registries.iter().find(|r| r.registry == registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_config_and_hides_passwords() {
        let c = AgentConfig::parse(
            "server: http://127.0.0.1:42113\npull_policy: if-not-present\nregistries:\n  - {registry: '127.0.0.1:5001', username: u, password: hunter2}\n",
        )
        .unwrap();
        assert_eq!(c.pull_policy, PullPolicy::IfNotPresent);
        assert_eq!(c.credentials_for("127.0.0.1:5001").unwrap().username, "u");
        assert!(c.credentials_for("127.0.0.1:5000").is_none());
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn the_token_comes_from_the_file_or_inline_and_is_never_printed() {
        let c = AgentConfig::parse("server: https://h:1\ntoken: kiln_sekrit\n").unwrap();
        assert_eq!(c.token_source().unwrap().token().unwrap(), "kiln_sekrit");
        assert!(!format!("{c:?}").contains("kiln_sekrit"));
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t");
        std::fs::write(&f, "kiln_fromfile\n").unwrap();
        let c = AgentConfig::parse(&format!("server: https://h:1\ntoken_file: {}\n", f.display())).unwrap();
        let source = c.token_source().unwrap();
        assert_eq!(source.token().unwrap(), "kiln_fromfile");
        std::fs::write(&f, "kiln_rotated\n").unwrap();
        assert_eq!(source.token().unwrap(), "kiln_rotated", "read again: a rotation needs no restart");
        let err = AgentConfig::parse("server: https://h:1\n").unwrap().token_source().unwrap_err().to_string();
        assert!(err.contains("field token"), "{err}");
        let err =
            AgentConfig::parse("server: https://h:1\nclient_cert: /x\n").unwrap().client_tls().unwrap_err().to_string();
        assert!(err.contains("client_key"), "{err}");
    }

    #[test]
    fn rejects_unknown_fields_and_bad_values() {
        let err = AgentConfig::parse("server: x\nsurprise: 1\n").unwrap_err().to_string();
        assert!(err.contains("surprise"), "{err}");
        let err = AgentConfig::parse("server: x\npull_policy: sometimes\n").unwrap_err().to_string();
        assert!(err.contains("pull_policy") || err.contains("sometimes"), "{err}");
        let err = AgentConfig::parse("server: x\nregistries: [{registry: 'a/b', username: u, password: p}]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("registries[0].registry"), "{err}");
    }
}
