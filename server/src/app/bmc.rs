//! Out-of-band control: a machine's power and next boot device through its
//! BMC (docs/bmc.md), and the BMC credentials those calls use.
//!
//! Credentials arrive as `kind: BmcSecret` documents in `kiln apply`. They
//! are sealed here, before the store sees them (ChaCha20-Poly1305 with the
//! server's BMC secret key, bound to the secret's name), and are opened
//! only to build a BMC client. Nothing returns, logs or audits them: the
//! apply response and the audit trail name the secret, never its content.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use kiln_bmc::{BmcError, BootOverride, BootState, Client, PowerAction};
use kiln_documents::{BmcSecretDoc, Document};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use super::{App, AppError, OpContext};
use crate::model::now_millis;
use crate::store::{BmcJob, Outcome, PowerReading, SealedBmcSecret};

/// A job not done this long after it was submitted fails instead of retrying.
pub const JOB_DEADLINE: Duration = Duration::from_secs(600);

/// BMC calls one server runs at once; more wait their turn. A BMC call is
/// mostly waiting on a slow embedded web server; this bounds sockets and
/// blocking IPMI threads, not CPU.
pub const MAX_CONCURRENT_BMC_CALLS: usize = 64;

/// The file name of the key in the data directory.
const KEY_FILE: &str = "bmc-secret.key";

/// What every BMC call of the server shares.
pub struct BmcRuntime {
    /// `None`: the server was built without one (some tests); applying a
    /// BmcSecret then fails instead of storing it unsealed.
    pub(crate) key: Option<Arc<SecretKey>>,
    pub(crate) permits: tokio::sync::Semaphore,
    /// Bound on each BMC call.
    pub(crate) timeout: Duration,
    /// Jobs this server runs at once (background/bmc_jobs.rs).
    pub(crate) job_slots: Arc<tokio::sync::Semaphore>,
    /// Wakes the job runner when a job is submitted.
    pub(crate) job_submitted: tokio::sync::Notify,
    /// Who this server is when it claims jobs: kept in the data directory,
    /// so a restarted server knows the jobs it held died with it.
    pub(crate) job_owner: String,
}

impl Default for BmcRuntime {
    fn default() -> Self {
        Self {
            key: None,
            permits: tokio::sync::Semaphore::new(MAX_CONCURRENT_BMC_CALLS),
            timeout: kiln_bmc::DEFAULT_TIMEOUT,
            job_slots: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_BMC_CALLS)),
            job_submitted: tokio::sync::Notify::new(),
            job_owner: format!("server-{}", uuid::Uuid::new_v4().simple()),
        }
    }
}

/// A BMC operation, as a job stores it ("power on", "boot pxe once uefi").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BmcOperation {
    Power(PowerAction),
    Boot(BootOverride),
    /// A workflow's first BMC step ("start pxe cycle", "start none on"):
    /// the one-time boot device, if any, then a power cycle (`cycle`) or
    /// power on; a machine that is off is powered on either way.
    Start {
        device: Option<kiln_bmc::BootDevice>,
        cycle: bool,
    },
    /// The first step of an ISO-booting workflow ("start iso cycle"): the
    /// machine's hook ISO into the virtual CD, one-time boot from CD, then
    /// as [`Self::Start`].
    StartIso {
        cycle: bool,
    },
    /// The last step of an ISO-booting workflow ("eject media", "eject
    /// media, then power off"): the hook ISO out, then the workflow's
    /// after-success operation, if any.
    Eject(Option<Box<BmcOperation>>),
}

impl std::fmt::Display for BmcOperation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Power(action) => write!(f, "power {action}"),
            Self::Boot(boot) => {
                write!(f, "boot {} {}", boot.device, if boot.once { "once" } else { "always" })?;
                match boot.mode {
                    Some(mode) => write!(f, " {mode}"),
                    None => Ok(()),
                }
            }
            Self::Start { device, cycle } => write!(
                f,
                "start {} {}",
                device.map_or_else(|| "none".to_string(), |d| d.to_string()),
                if *cycle { "cycle" } else { "on" }
            ),
            Self::StartIso { cycle } => write!(f, "start iso {}", if *cycle { "cycle" } else { "on" }),
            Self::Eject(None) => write!(f, "eject media"),
            Self::Eject(Some(then)) => write!(f, "eject media, then {then}"),
        }
    }
}

impl std::str::FromStr for BmcOperation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let words: Vec<&str> = s.split_whitespace().collect();
        match words.as_slice() {
            ["power", action] => Ok(Self::Power(action.parse()?)),
            ["boot", device, when, rest @ ..] if rest.len() <= 1 => {
                let once = match *when {
                    "once" => true,
                    "always" => false,
                    other => return Err(format!("{other:?} must be once or always")),
                };
                let mode = match rest.first() {
                    None => None,
                    Some(&"uefi") => Some(kiln_bmc::BootMode::Uefi),
                    Some(&"legacy") => Some(kiln_bmc::BootMode::Legacy),
                    Some(other) => return Err(format!("unknown boot mode {other:?}")),
                };
                Ok(Self::Boot(BootOverride { device: device.parse()?, once, mode }))
            }
            ["start", "iso", power] => Ok(Self::StartIso {
                cycle: match *power {
                    "cycle" => true,
                    "on" => false,
                    other => return Err(format!("{other:?} must be cycle or on")),
                },
            }),
            ["eject", "media"] => Ok(Self::Eject(None)),
            ["eject", "media,", "then", then @ ..] => match then.join(" ").parse()? {
                Self::Eject(_) => Err(format!("{s:?}: eject then eject")),
                then => Ok(Self::Eject(Some(Box::new(then)))),
            },
            ["start", device, power] => Ok(Self::Start {
                device: if *device == "none" { None } else { Some(device.parse()?) },
                cycle: match *power {
                    "cycle" => true,
                    "on" => false,
                    other => return Err(format!("{other:?} must be cycle or on")),
                },
            }),
            _ => Err(format!("unknown BMC operation {s:?}")),
        }
    }
}

/// This server's name as a BMC job runner: `DATA_DIR/bmc-runner-id`,
/// created at the first start. Replicas have data directories of their own
/// and so names of their own.
pub fn load_or_create_runner_id(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("bmc-runner-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_string()),
        Ok(_) => anyhow::bail!("{}: empty", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = format!("server-{}", uuid::Uuid::new_v4().simple());
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&path, &id).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            Ok(id)
        }
        Err(e) => anyhow::bail!("{}: {e}", path.display()),
    }
}

/// The 256-bit key BmcSecrets are sealed with. `Debug` shows nothing.
pub struct SecretKey {
    key: LessSafeKey,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

/// The plaintext inside a sealed secret.
#[derive(serde::Serialize, serde::Deserialize)]
struct Plain {
    username: String,
    password: String,
}

impl SecretKey {
    /// Reads the key from `explicit` (`--bmc-secret-key-file`; replicas on
    /// one PostgreSQL store must all be given the same file), else from
    /// `DATA_DIR/bmc-secret.key`, created (random, mode 0600) at the first
    /// start. The file holds the key in base64. The key never goes into the
    /// store: a copy of the database alone does not open the secrets.
    pub fn load_or_create(data_dir: &Path, explicit: Option<&Path>) -> anyhow::Result<(Self, PathBuf)> {
        let path = explicit.map_or_else(|| data_dir.join(KEY_FILE), Path::to_path_buf);
        let bytes = match std::fs::read_to_string(&path) {
            Ok(text) => B64
                .decode(text.trim())
                .map_err(|e| anyhow::anyhow!("BMC secret key {}: not base64: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && explicit.is_none() => {
                let mut key = [0u8; 32];
                SystemRandom::new()
                    .fill(&mut key)
                    .map_err(|_| anyhow::anyhow!("no randomness for the BMC secret key"))?;
                crate::auth::write_secret(&path, B64.encode(key).as_bytes())?;
                key.to_vec()
            }
            Err(e) => anyhow::bail!("--bmc-secret-key-file {}: {e}", path.display()),
        };
        Ok((Self::from_bytes(&bytes).map_err(|e| anyhow::anyhow!("BMC secret key {}: {e}", path.display()))?, path))
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, bytes)
            .map_err(|_| format!("must be {} bytes, not {}", CHACHA20_POLY1305.key_len(), bytes.len()))?;
        Ok(Self { key: LessSafeKey::new(unbound) })
    }

    fn aad(name: &str) -> Aad<Vec<u8>> {
        // Bound to the name: a sealed value moved to another row does not open.
        Aad::from(format!("kiln-bmc-secret/v1/{name}").into_bytes())
    }

    pub(crate) fn seal(&self, secret: &BmcSecretDoc) -> Result<SealedBmcSecret, AppError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| AppError::Internal { context: "no randomness to seal a BMC secret".into(), source: None })?;
        let plain = Plain { username: secret.username.clone(), password: secret.password.clone() };
        let mut data = serde_json::to_vec(&plain).map_err(|e| AppError::internal("seal a BMC secret", e))?;
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Self::aad(&secret.name), &mut data)
            .map_err(|_| AppError::Internal { context: "seal a BMC secret".into(), source: None })?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Ok(SealedBmcSecret { name: secret.name.clone(), sealed: format!("v1:{}", B64.encode(out)) })
    }

    fn open(&self, sealed: &SealedBmcSecret) -> Result<kiln_bmc::Credentials, AppError> {
        let failed = || {
            AppError::FailedPrecondition(format!(
                "BmcSecret {:?} cannot be opened with this server's BMC secret key (another key sealed it: \
                 give every server the same --bmc-secret-key-file, or apply the BmcSecret again)",
                sealed.name
            ))
        };
        let bytes = sealed.sealed.strip_prefix("v1:").and_then(|b| B64.decode(b).ok()).ok_or_else(failed)?;
        if bytes.len() < NONCE_LEN {
            return Err(failed());
        }
        let (nonce, data) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| failed())?;
        let mut data = data.to_vec();
        let plain = self.key.open_in_place(nonce, Self::aad(&sealed.name), &mut data).map_err(|_| failed())?;
        let plain: Plain = serde_json::from_slice(plain).map_err(|_| failed())?;
        Ok(kiln_bmc::Credentials { username: plain.username, password: plain.password })
    }
}

/// The key of a workflow's BMC step `step` (`start`, `finish`): one job per
/// key, so a repeat (a second report, another replica) never runs a step
/// twice, and `kiln get bmc-jobs` shows which workflow a job serves. A step
/// run again by `kiln retry` renames the failed job `KEY/failed-JOBID`.
pub fn workflow_job_key(workflow_id: &str, step: &str) -> String {
    format!("{}{step}", crate::store::workflow_jobs_prefix(workflow_id))
}

/// The workflow and step a job key names, for jobs a workflow submitted.
pub fn workflow_of_job_key(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix("workflow/")?;
    rest.split_once('/')
}

/// Why a workflow failed when its BMC step `step` (job `job`) failed.
pub fn workflow_step_failure(job: &BmcJob, step: &str, error: &str) -> String {
    format!("BMC step {step} ({}) on hardware {:?} failed: {error}", job.operation, job.hardware_id)
}

/// A BMC error for the caller: transient ones (unreachable, timed out, 5xx)
/// are UNAVAILABLE, the rest FAILED_PRECONDITION; the message names the
/// hardware, the BMC and the step.
fn bmc_error(hardware_id: &str, e: BmcError) -> AppError {
    let message = format!("hardware {hardware_id:?}: {e}");
    if e.kind.is_transient() { AppError::Unavailable(message) } else { AppError::FailedPrecondition(message) }
}

impl App {
    /// Takes the BmcSecrets out of `docs` and seals them (called by apply
    /// before anything else sees the documents).
    pub(crate) fn seal_bmc_secrets(&self, docs: &mut Vec<Document>) -> Result<Vec<SealedBmcSecret>, AppError> {
        let mut sealed = Vec::new();
        let mut rest = Vec::with_capacity(docs.len());
        for doc in docs.drain(..) {
            match doc {
                Document::BmcSecret(secret) => {
                    let key = self.bmc.key.as_ref().ok_or_else(|| {
                        AppError::FailedPrecondition(
                            "this server has no BMC secret key: it cannot store BmcSecrets".into(),
                        )
                    })?;
                    if sealed.iter().any(|s: &SealedBmcSecret| s.name == secret.name) {
                        return Err(AppError::InvalidArgument(format!("BmcSecret {:?} appears twice", secret.name)));
                    }
                    sealed.push(key.seal(&secret)?);
                }
                other => rest.push(other),
            }
        }
        *docs = rest;
        Ok(sealed)
    }

    /// Warnings an apply of `docs` gives about BMCs: TLS verification off.
    pub(crate) fn bmc_warnings(docs: &[Document]) -> Vec<String> {
        docs.iter()
            .filter_map(|d| match d {
                Document::Hardware(h) if h.bmc.as_ref().is_some_and(|b| b.insecure) => Some(format!(
                    "Hardware {:?}: bmc.tls.insecure: true: kiln will not verify the BMC's TLS certificate \
                     (anyone on the path can read its credentials); give bmc.tls.ca instead",
                    h.id
                )),
                _ => None,
            })
            .collect()
    }

    /// A client for the BMC of `hardware_id`.
    async fn bmc_client(&self, hardware_id: &str) -> Result<Client, AppError> {
        let hardware = self.store.get_hardware(hardware_id).await?;
        let spec = hardware.doc.bmc.ok_or_else(|| {
            AppError::FailedPrecondition(format!("hardware {hardware_id:?} has no bmc section (docs/bmc.md)"))
        })?;
        let sealed = self.store.bmc_secret(&spec.credentials).await?.ok_or_else(|| {
            AppError::FailedPrecondition(format!(
                "hardware {hardware_id:?}: bmc.credentials names BmcSecret {:?}, which is not applied",
                spec.credentials
            ))
        })?;
        let key = self.bmc.key.as_ref().ok_or_else(|| {
            AppError::FailedPrecondition("this server has no BMC secret key: it cannot open BmcSecrets".into())
        })?;
        let credentials = key.open(&sealed)?;
        let protocol = spec.protocol.parse().map_err(AppError::FailedPrecondition)?;
        let tls = match (spec.tls_ca, spec.insecure) {
            (_, true) => kiln_bmc::Tls::Insecure,
            (Some(ca), false) => kiln_bmc::Tls::Ca(ca),
            (None, false) => kiln_bmc::Tls::SystemRoots,
        };
        let config = kiln_bmc::Config { protocol, address: spec.address, credentials, tls, timeout: self.bmc.timeout };
        Client::new(config).map_err(|e| bmc_error(hardware_id, e))
    }

    /// Runs one power call (or a read) and records the reading.
    pub(crate) async fn run_power(
        &self,
        hardware_id: &str,
        action: Option<PowerAction>,
    ) -> Result<PowerReading, AppError> {
        let client = self.bmc_client(hardware_id).await?;
        let _permit = self.bmc.permits.acquire().await.map_err(|e| AppError::internal("BMC call limit", e))?;
        let state = match action {
            None => client.power_state().await,
            Some(action) => client.power(action).await,
        }
        .map_err(|e| bmc_error(hardware_id, e))?;
        let reading = PowerReading { state: state.to_string(), read_at: now_millis() };
        self.store.set_power_reading(hardware_id, reading.clone()).await?;
        Ok(reading)
    }

    /// Sets the boot override; what the BMC reports after.
    pub(crate) async fn run_boot(&self, hardware_id: &str, boot: BootOverride) -> Result<BootState, AppError> {
        let client = self.bmc_client(hardware_id).await?;
        let _permit = self.bmc.permits.acquire().await.map_err(|e| AppError::internal("BMC call limit", e))?;
        client.set_boot(boot).await.map_err(|e| bmc_error(hardware_id, e))
    }

    /// A workflow's first BMC step ([`BmcOperation::Start`]); each failure
    /// names the step.
    pub(crate) async fn run_start(
        &self,
        hardware_id: &str,
        device: Option<kiln_bmc::BootDevice>,
        cycle: bool,
    ) -> Result<String, AppError> {
        let step = |step: String| move |e: AppError| e.with_context(&step);
        if let Some(device) = device {
            self.run_boot(hardware_id, BootOverride { device, once: true, mode: None })
                .await
                .map_err(step(format!("set one-time boot to {device}")))?;
        }
        let before = self.run_power(hardware_id, None).await.map_err(step("read power state".into()))?;
        let action = if before.state == kiln_bmc::PowerState::Off.to_string() {
            PowerAction::On
        } else if cycle {
            PowerAction::Cycle
        } else {
            return Ok(format!(
                "boot {}, already {}",
                device.map_or("unchanged".into(), |d| d.to_string()),
                before.state
            ));
        };
        let after = self.run_power(hardware_id, Some(action)).await.map_err(step(format!("power {action}")))?;
        Ok(format!(
            "boot {}, power {action}: {}",
            device.map_or("unchanged".into(), |d| format!("{d} once")),
            after.state
        ))
    }

    /// Inserts (`Some(url)`) or ejects the virtual CD; what the BMC
    /// reports after.
    pub(crate) async fn run_media(
        &self,
        hardware_id: &str,
        image_url: Option<&str>,
    ) -> Result<(Option<String>, bool), AppError> {
        let client = self.bmc_client(hardware_id).await?;
        let _permit = self.bmc.permits.acquire().await.map_err(|e| AppError::internal("BMC call limit", e))?;
        match image_url {
            Some(url) => client.insert_media(url).await,
            None => client.eject_media().await,
        }
        .map_err(|e| bmc_error(hardware_id, e))?;
        client.media_state().await.map_err(|e| bmc_error(hardware_id, e))
    }

    /// Is something in the virtual CD drive? (A retried step must not
    /// insert twice or eject an empty drive: BMCs refuse both.)
    async fn media_inserted(&self, hardware_id: &str) -> Result<bool, AppError> {
        let client = self.bmc_client(hardware_id).await?;
        let _permit = self.bmc.permits.acquire().await.map_err(|e| AppError::internal("BMC call limit", e))?;
        client.media_state().await.map(|(_, inserted)| inserted).map_err(|e| bmc_error(hardware_id, e))
    }

    /// [`BmcOperation::StartIso`]: the BMC downloads the machine's hook ISO
    /// from this server ([`App::hook_iso_url`]) into its virtual CD, then
    /// the machine boots it once. Whatever was in the drive (an earlier
    /// attempt's ISO, whose credential a new download supersedes) comes
    /// out first.
    pub(crate) async fn run_start_iso(&self, hardware_id: &str, cycle: bool) -> Result<String, AppError> {
        let url = self.hook_iso_url(hardware_id).await.map_err(|e| e.with_context("the hook ISO's URL"))?;
        if self.media_inserted(hardware_id).await.map_err(|e| e.with_context("read virtual media"))? {
            self.run_media(hardware_id, None).await.map_err(|e| e.with_context("eject the old media"))?;
        }
        self.run_media(hardware_id, Some(&url)).await.map_err(|e| e.with_context("insert the hook ISO"))?;
        let started = self.run_start(hardware_id, Some(kiln_bmc::BootDevice::Cd), cycle).await?;
        Ok(format!("hook ISO inserted ({url}), {started}"))
    }

    /// [`BmcOperation::Eject`]: the CD out, then `then`.
    pub(crate) async fn run_eject(&self, hardware_id: &str, then: Option<BmcOperation>) -> Result<String, AppError> {
        if self.media_inserted(hardware_id).await.map_err(|e| e.with_context("read virtual media"))? {
            self.run_media(hardware_id, None).await.map_err(|e| e.with_context("eject the hook ISO"))?;
        }
        let then = match then {
            None => return Ok("media ejected".into()),
            Some(BmcOperation::Power(action)) => self.run_power(hardware_id, Some(action)).await?.state,
            Some(BmcOperation::Boot(boot)) => {
                let after = self.run_boot(hardware_id, boot).await?;
                format!("boot {}", after.target.map_or_else(|| boot.device.to_string(), |t| t.to_string()))
            }
            Some(other) => {
                return Err(AppError::InvalidArgument(format!("{other} cannot follow an eject")));
            }
        };
        Ok(format!("media ejected, then {then}"))
    }

    /// Fails workflow `workflow_id` because its BMC step failed (the job
    /// runner calls this; `reason` names the step, the BMC and the error).
    pub(crate) async fn fail_workflow_for_bmc(
        &self,
        workflow_id: &str,
        step: &str,
        reason: &str,
    ) -> Result<(), AppError> {
        let (reason, after_success) = (reason.to_string(), step == "finish");
        let (wf, changed) = self
            .update_workflow(
                workflow_id,
                Box::new(move |wf| Ok(crate::state_machine::fail_for_bmc(wf, &reason, after_success, now_millis()))),
            )
            .await?;
        if changed {
            tracing::warn!(workflow = %wf.id, reason = %wf.reason, "workflow failed: BMC step failed");
            self.events.workflow_changed(&wf.id);
        }
        Ok(())
    }

    /// Sets up the BMC steps of workflows just created: the start job of
    /// each with boot options. Also called by dispatch, so a server that
    /// stopped between creating the workflow and submitting it catches up.
    pub(crate) async fn start_workflow_bmc_steps(
        &self,
        wf: &crate::model::Workflow,
    ) -> Result<Option<BmcJob>, AppError> {
        let Some(job) = start_step_job(wf) else { return Ok(None) };
        let (job, outcome) = self.store.create_bmc_job(job).await?;
        if outcome == Outcome::Created {
            tracing::info!(workflow = %wf.id, job = %job.id, operation = %job.operation, "workflow BMC step submitted");
            self.bmc.job_submitted.notify_one();
        }
        Ok(Some(job))
    }

    /// Runs the job runner now: a job was committed with a workflow change
    /// ([`finish_step_job`]).
    pub(crate) fn bmc_job_submitted(&self) {
        self.bmc.job_submitted.notify_one();
    }

    /// Reads the machine's power state from its BMC (`action: None`) or
    /// performs `action` and reads it after; records the reading.
    pub async fn bmc_power(
        &self,
        opctx: &OpContext,
        hardware_id: &str,
        action: Option<PowerAction>,
    ) -> Result<PowerReading, AppError> {
        let result = self.run_power(hardware_id, action);
        match action {
            None => {
                opctx.require_operator_read()?;
                result.await
            }
            Some(action) => {
                let verb = format!("power {action}");
                self.authorize_write(opctx, &verb, hardware_id).await?;
                let result = result.await;
                self.audit(opctx, &verb, hardware_id, &result.as_ref().map(|_| ())).await;
                result
            }
        }
    }

    /// Sets the machine's boot device override through its BMC; returns
    /// what the BMC reports after (Redfish; IPMI reports nothing back).
    pub async fn bmc_boot(
        &self,
        opctx: &OpContext,
        hardware_id: &str,
        boot: BootOverride,
    ) -> Result<BootState, AppError> {
        let verb = format!("boot {}{}", boot.device, if boot.once { " once" } else { "" });
        self.authorize_write(opctx, &verb, hardware_id).await?;
        let result = self.run_boot(hardware_id, boot).await;
        self.audit(opctx, &verb, hardware_id, &result.as_ref().map(|_| ())).await;
        result
    }

    /// Submits `operation` as a durable job (background/bmc_jobs.rs runs
    /// it, retried on transient errors until its deadline). With a `key`,
    /// submitting again returns the first job ([`Outcome::Unchanged`]).
    pub async fn submit_bmc_job(
        &self,
        opctx: &OpContext,
        hardware_id: &str,
        operation: BmcOperation,
        key: Option<String>,
    ) -> Result<(BmcJob, Outcome), AppError> {
        let verb = format!("bmc job {operation}");
        self.authorize_write(opctx, &verb, hardware_id).await?;
        let result = async {
            // Refused now rather than failed later: no such hardware, no BMC.
            let hardware = self.store.get_hardware(hardware_id).await?;
            if hardware.doc.bmc.is_none() {
                return Err(AppError::FailedPrecondition(format!(
                    "hardware {hardware_id:?} has no bmc section (docs/bmc.md)"
                )));
            }
            let job = pending_job(key, hardware_id, &operation);
            let (job, outcome) = self.store.create_bmc_job(job).await?;
            if job.hardware_id != hardware_id || job.operation != operation.to_string() {
                return Err(AppError::Conflict(format!(
                    "job key {:?} is job {} ({} on hardware {:?}), not this one",
                    job.key, job.id, job.operation, job.hardware_id
                )));
            }
            self.bmc.job_submitted.notify_one();
            Ok((job, outcome))
        }
        .await;
        self.audit(opctx, &verb, hardware_id, &result.as_ref().map(|_| ())).await;
        result
    }

    /// The newest BMC jobs, newest first.
    pub async fn list_bmc_jobs(&self, opctx: &OpContext, limit: u32) -> Result<Vec<BmcJob>, AppError> {
        opctx.require_operator_read()?;
        Ok(self.store.list_bmc_jobs(limit.clamp(1, 10_000)).await?)
    }

    /// Inserts the ISO at `image_url` into the machine's virtual CD drive
    /// (`None`: ejects it); returns what the BMC reports after.
    pub async fn bmc_media(
        &self,
        opctx: &OpContext,
        hardware_id: &str,
        image_url: Option<&str>,
    ) -> Result<(Option<String>, bool), AppError> {
        let verb = if image_url.is_some() { "virtual media insert" } else { "virtual media eject" };
        self.authorize_write(opctx, verb, hardware_id).await?;
        let result = async {
            if let Some(url) = image_url
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                return Err(AppError::InvalidArgument(format!("image_url {url:?} must be an http:// or https:// URL")));
            }
            self.run_media(hardware_id, image_url).await
        }
        .await;
        self.audit(opctx, verb, hardware_id, &result.as_ref().map(|_| ())).await;
        result
    }

    /// The last power state recorded for a hardware (no BMC call).
    pub async fn power_reading(&self, opctx: &OpContext, hardware_id: &str) -> Result<Option<PowerReading>, AppError> {
        opctx.require_operator_read()?;
        Ok(self.store.power_reading(hardware_id).await?)
    }
}

/// The BMC step before workflow `wf`'s first action (one-time boot device,
/// power cycle), when its boot options ask for one.
pub fn start_step_job(wf: &crate::model::Workflow) -> Option<BmcJob> {
    let options = wf.boot_options?;
    let device = match options.network_boot {
        kiln_documents::NetworkBoot::Pxe => Some(kiln_bmc::BootDevice::Pxe),
        kiln_documents::NetworkBoot::Http => Some(kiln_bmc::BootDevice::Http),
        kiln_documents::NetworkBoot::Iso => {
            let operation = BmcOperation::StartIso { cycle: options.power_cycle };
            return Some(pending_job(Some(workflow_job_key(&wf.id, "start")), &wf.hardware, &operation));
        }
        kiln_documents::NetworkBoot::None => None,
    };
    if device.is_none() && !options.power_cycle {
        return None;
    }
    let operation = BmcOperation::Start { device, cycle: options.power_cycle };
    Some(pending_job(Some(workflow_job_key(&wf.id, "start")), &wf.hardware, &operation))
}

/// The finishing BMC step of workflow `wf` (power off, or boot from disk
/// from now on; the hook ISO out first), when its boot options ask for one:
/// created in the same transaction as the workflow's SUCCESS
/// (`App::report`), so a server that stops in between cannot lose it.
pub fn finish_step_job(wf: &crate::model::Workflow) -> Option<BmcJob> {
    let options = wf.boot_options?;
    let then = match options.after_success {
        kiln_documents::AfterSuccess::None => None,
        kiln_documents::AfterSuccess::Off => Some(BmcOperation::Power(PowerAction::Off)),
        // Persistent: the installed system boots from disk from now on
        // (the one-time network boot was used up by the start step).
        kiln_documents::AfterSuccess::Disk => {
            Some(BmcOperation::Boot(BootOverride { device: kiln_bmc::BootDevice::Disk, once: false, mode: None }))
        }
    };
    let operation = match (options.network_boot, then) {
        // The hook ISO comes out whatever happens next: the credential in
        // it is spent, and a CD left in would boot again.
        (kiln_documents::NetworkBoot::Iso, then) => BmcOperation::Eject(then.map(Box::new)),
        (_, Some(then)) => then,
        (_, None) => return None,
    };
    Some(pending_job(Some(workflow_job_key(&wf.id, "finish")), &wf.hardware, &operation))
}

/// A new job, due now: `key` names it for idempotency (none or empty: the
/// job's own id).
fn pending_job(key: Option<String>, hardware_id: &str, operation: &BmcOperation) -> BmcJob {
    let id = format!("bmcjob-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let now = now_millis();
    BmcJob {
        key: key.filter(|k| !k.is_empty()).unwrap_or_else(|| id.clone()),
        id,
        hardware_id: hardware_id.to_string(),
        operation: operation.to_string(),
        state: "pending".into(),
        attempts: 0,
        next_attempt_at: now,
        lease_owner: String::new(),
        lease_until: 0,
        deadline: now + JOB_DEADLINE.as_millis() as i64,
        result: String::new(),
        error: String::new(),
        created_at: now,
        updated_at: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(password: &str) -> BmcSecretDoc {
        BmcSecretDoc { name: "n1-bmc".into(), username: "admin".into(), password: password.into() }
    }

    #[test]
    fn sealed_secrets_open_only_with_their_key_and_name() {
        let key = SecretKey::from_bytes(&[7u8; 32]).unwrap();
        let sealed = key.seal(&secret("hunter2-pw")).unwrap();
        assert!(sealed.sealed.starts_with("v1:"));
        assert!(!sealed.sealed.contains("hunter2"), "plaintext in the sealed value");
        assert!(!format!("{sealed:?}").contains(&sealed.sealed), "Debug shows the sealed value");
        let open = key.open(&sealed).unwrap();
        assert_eq!((open.username.as_str(), open.password.as_str()), ("admin", "hunter2-pw"));
        // A fresh nonce every time: sealing twice gives two values.
        assert_ne!(key.seal(&secret("hunter2-pw")).unwrap().sealed, sealed.sealed);
        // Another key, another name, or a flipped bit: refused, saying why.
        let other = SecretKey::from_bytes(&[8u8; 32]).unwrap();
        let err = other.open(&sealed).unwrap_err().to_string();
        assert!(err.contains("cannot be opened") && err.contains("n1-bmc"), "{err}");
        let moved = SealedBmcSecret { name: "other".into(), ..sealed.clone() };
        assert!(key.open(&moved).is_err());
        let mut bytes = B64.decode(&sealed.sealed[3..]).unwrap();
        bytes[20] ^= 1;
        let flipped = SealedBmcSecret { sealed: format!("v1:{}", B64.encode(bytes)), ..sealed };
        assert!(key.open(&flipped).is_err());
        assert!(SecretKey::from_bytes(&[1u8; 16]).unwrap_err().contains("32 bytes"));
    }

    #[test]
    fn operations_read_back_as_written() {
        for text in [
            "power on",
            "power soft-off",
            "boot pxe once uefi",
            "boot disk always",
            "boot cd once legacy",
            "start pxe cycle",
            "start none on",
            "start iso cycle",
            "start iso on",
            "eject media",
            "eject media, then power off",
            "eject media, then boot disk always",
        ] {
            let op: BmcOperation = text.parse().unwrap();
            assert_eq!(op.to_string(), text);
        }
        for bad in [
            "power",
            "power sideways",
            "boot pxe",
            "boot pxe sometimes",
            "boot pxe once bios",
            "reboot",
            "start pxe",
            "start usb cycle",
            "start pxe twice",
            "start iso twice",
            "eject",
            "eject media, then",
            "eject media, then eject media",
        ] {
            assert!(bad.parse::<BmcOperation>().is_err(), "{bad}");
        }
    }

    #[test]
    fn workflow_job_keys_name_their_workflow() {
        // Workflow names have no `/` (kiln-documents' valid_name).
        let key = workflow_job_key("wf.1", "start");
        assert_eq!(workflow_of_job_key(&key), Some(("wf.1", "start")));
        assert_eq!(workflow_of_job_key("workflow/wf.1/start/failed-j1"), Some(("wf.1", "start/failed-j1")));
        assert_eq!(workflow_of_job_key("bmcjob-1"), None);
    }

    #[test]
    fn the_key_file_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (a, path) = SecretKey::load_or_create(dir.path(), None).unwrap();
        assert_eq!(path, dir.path().join(KEY_FILE));
        let sealed = a.seal(&secret("pw")).unwrap();
        let (b, _) = SecretKey::load_or_create(dir.path(), None).unwrap();
        assert_eq!(b.open(&sealed).unwrap().password, "pw");
        let missing = dir.path().join("nope");
        assert!(SecretKey::load_or_create(dir.path(), Some(&missing)).unwrap_err().to_string().contains("nope"));
    }
}
