//! Enrolment: a network-booted machine's agent gets its credential without
//! anyone typing it into the machine's boot configuration.
//!
//! The boot script of a machine that should boot the hook image
//! ([`App::boot_decision`]) carries a one-time enrolment credential
//! (`kiln.enrol=`), issued here: random (32 bytes from the OS), bound to the
//! machine (its hardware, agent id and the MAC the script was asked for) and
//! to that boot (issuing one deletes the machine's unused ones), short-lived
//! (`--enrolment-ttl`), usable once, and stored only as its sha256. The
//! agent's first call ([`App::enrol`], the unauthenticated enrolment
//! service) exchanges it for a fresh agent token (and a client certificate
//! when this server signs them), which the hook keeps in memory only.
//!
//! Refused: a credential never issued or superseded (garbage), expired,
//! already used (a replay), or presented by another machine. Every refusal
//! goes to the audit trail through the [`super::audit::RefusalLog`] (the
//! enrolment service is open to anyone on the network, so refusals must stay
//! cheap), every enrolment is stored at once, and both are counted
//! (`kiln_enrolments`). Threat model: docs/security.md.

use std::time::Duration;

use kiln_documents::HardwareDoc;

use super::{App, AppError, OpContext};
use crate::auth;
use crate::model::{Millis, now_millis};
use crate::store::{Enrolment, Event, EventKind, EventOutcome};
use crate::tls::issue_agent_cert;

/// Prefix of enrolment credentials (not `kiln_`: they are never agent
/// tokens, and a secret scanner can tell them apart).
pub const ENROLMENT_PREFIX: &str = "kiln_enrol_";

/// How long an enrolment credential is valid after its boot script was
/// served, by default: the hook image's download and boot take a minute or
/// two on a slow network or under emulation.
pub const DEFAULT_ENROLMENT_TTL: Duration = Duration::from_secs(5 * 60);

/// Used and expired credentials are kept this long past their expiry, so a
/// replay is recognised as one; then they are pruned.
const KEEP_EXPIRED: Duration = Duration::from_secs(24 * 3600);

/// What an agent asks for at enrolment.
#[derive(Clone)]
pub struct EnrolRequest {
    /// The credential from `kiln.enrol=`: a secret, never logged.
    pub credential: String,
    pub agent_id: String,
    /// The MAC the machine booted from; empty when unknown.
    pub mac: String,
}

// Hand-written: the credential must not reach a log through `{:?}`.
impl std::fmt::Debug for EnrolRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrolRequest")
            .field("credential", &"<redacted>")
            .field("agent_id", &self.agent_id)
            .field("mac", &self.mac)
            .finish()
    }
}

/// A machine's agent credential, handed out by [`App::enrol`].
#[derive(Clone, PartialEq, Eq)]
pub struct Enrolled {
    pub hardware_id: String,
    pub agent_id: String,
    pub token: String,
    /// Client certificate, key and CA (PEM), when the server signs them.
    pub cert: Option<(String, String, String)>,
}

impl std::fmt::Debug for Enrolled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrolled")
            .field("hardware_id", &self.hardware_id)
            .field("agent_id", &self.agent_id)
            .field("cert", &self.cert.is_some())
            .finish_non_exhaustive()
    }
}

/// Why a credential was refused: the metric label, the reason in the audit
/// trail (never the credential) and the caller's error.
struct Refusal {
    outcome: &'static str,
    reason: String,
    error: AppError,
}

impl App {
    /// The enrolment credential's time to live (`--enrolment-ttl`).
    pub fn enrolment_ttl(&self) -> Duration {
        self.netboot.enrolment_ttl.unwrap_or(DEFAULT_ENROLMENT_TTL)
    }

    /// Issues the enrolment credential of one boot of `hw` (asked for by
    /// MAC `mac`, booting for `workflow`): stored hashed, returned once.
    pub(crate) async fn issue_enrolment(
        &self,
        hw: &HardwareDoc,
        mac: &str,
        workflow: &str,
    ) -> Result<String, AppError> {
        let credential = new_credential();
        let now = now_millis();
        let ttl = self.enrolment_ttl().as_millis() as Millis;
        let enrolment = Enrolment {
            credential_hash: auth::token_hash(&credential),
            hardware_id: hw.id.clone(),
            agent_id: hw.agent_id.clone(),
            mac: mac.to_string(),
            workflow: workflow.to_string(),
            created_at: now,
            expires_at: now + ttl,
            used_at: None,
        };
        self.store.issue_enrolment(enrolment, now - KEEP_EXPIRED.as_millis() as Millis).await?;
        self.metrics.enrolment("issued");
        Ok(credential)
    }

    /// Exchanges an enrolment credential for the machine's agent
    /// credential: a fresh agent token (the previous one stops working) and,
    /// when this server signs agent certificates, a client certificate.
    /// Anyone may call (`opctx` only gives the caller's address for the
    /// audit trail); the credential is the authentication.
    pub async fn enrol(&self, opctx: &OpContext, req: EnrolRequest) -> Result<Enrolled, AppError> {
        let agent_id = req.agent_id.trim().to_ascii_lowercase();
        if agent_id.is_empty() || agent_id.len() > 128 || agent_id.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(AppError::InvalidArgument(format!("field agent_id: {agent_id:?} is not a valid agent id")));
        }
        let mac = match req.mac.trim() {
            "" => None,
            m => Some(
                kiln_documents::parse_mac(m)
                    .ok_or_else(|| AppError::InvalidArgument(format!("field mac: {m:?} is not a MAC address")))?,
            ),
        };
        let credential = req.credential.trim();
        if credential.is_empty() {
            return Err(AppError::InvalidArgument("field credential: must not be empty (kiln.enrol=)".into()));
        }
        match self.redeem(credential, &agent_id, mac.as_deref()).await {
            Ok(enrolled) => {
                self.metrics.enrolment("enrolled");
                tracing::info!(target: "kiln::audit", agent = %agent_id, hardware = %enrolled.hardware_id,
                    cert = enrolled.cert.is_some(), "agent enrolled");
                let event = Event {
                    cursor: 0,
                    time: now_millis(),
                    kind: EventKind::Security,
                    actor: format!("agent {agent_id}"),
                    peer: opctx.peer.map(|p| p.to_string()).unwrap_or_default(),
                    action: "enrol".into(),
                    object: format!(
                        "hardware {} (agent token{})",
                        enrolled.hardware_id,
                        if enrolled.cert.is_some() { " and client certificate" } else { "" }
                    ),
                    outcome: EventOutcome::Ok,
                    reason: String::new(),
                    count: 1,
                };
                self.record_events(vec![event]).await;
                Ok(enrolled)
            }
            Err(Ok(refusal)) => {
                self.metrics.enrolment(refusal.outcome);
                tracing::warn!(agent = %agent_id, reason = %refusal.reason, "enrolment refused");
                self.refusals.refused(
                    format!("agent {agent_id}"),
                    opctx.peer,
                    "enrol",
                    "enrolment service",
                    &refusal.reason,
                );
                Err(refusal.error)
            }
            Err(Err(failed)) => Err(failed),
        }
    }

    /// The checks of [`App::enrol`]. The outer error is a refusal, the
    /// inner one a failure of the server (no verdict on the credential).
    async fn redeem(
        &self,
        credential: &str,
        agent_id: &str,
        mac: Option<&str>,
    ) -> Result<Enrolled, Result<Refusal, AppError>> {
        let unknown = || Refusal {
            outcome: "unknown",
            reason: "unknown enrolment credential".into(),
            error: AppError::Unauthenticated(
                "unknown enrolment credential: never issued, superseded by a later boot of the machine, \
                 or expired long ago; network-boot the machine again for a new one"
                    .into(),
            ),
        };
        if !credential.starts_with(ENROLMENT_PREFIX) {
            return Err(Ok(unknown()));
        }
        let now = now_millis();
        let Some(e) = self.store.take_enrolment(&auth::token_hash(credential), now).await.map_err(|e| Err(e.into()))?
        else {
            return Err(Ok(unknown()));
        };
        if let Some(used) = e.used_at {
            return Err(Ok(Refusal {
                outcome: "replayed",
                reason: format!("enrolment credential of hardware {} already used (a replay)", e.hardware_id),
                error: AppError::FailedPrecondition(format!(
                    "this enrolment credential was already used {}s ago: each one works once; \
                     network-boot the machine again for a new one",
                    (now - used).max(0) / 1000
                )),
            }));
        }
        if now > e.expires_at {
            return Err(Ok(Refusal {
                outcome: "expired",
                reason: format!("enrolment credential of hardware {} expired", e.hardware_id),
                error: AppError::Unauthenticated(format!(
                    "this enrolment credential expired {}s ago (valid for {}s after the boot script was served, \
                     --enrolment-ttl); network-boot the machine again for a new one",
                    (now - e.expires_at) / 1000,
                    self.enrolment_ttl().as_secs()
                )),
            }));
        }
        // The hardware as it is now: it may have been given another agent
        // id since the script was served.
        let hw = self.store.get_hardware(&e.hardware_id).await.map_err(|e| Err(e.into()))?;
        let wrong_mac = mac.is_some_and(|m| m != e.mac);
        if agent_id != e.agent_id || agent_id != hw.doc.agent_id || wrong_mac {
            let claimed = if wrong_mac && agent_id == e.agent_id {
                format!("mac {}", mac.unwrap_or_default())
            } else {
                format!("agent {agent_id}")
            };
            return Err(Ok(Refusal {
                outcome: "wrong_machine",
                reason: format!(
                    "enrolment credential of hardware {} (agent {}, mac {}) presented as {claimed}; the credential is used up",
                    e.hardware_id, e.agent_id, e.mac
                ),
                error: AppError::PermissionDenied(format!(
                    "this enrolment credential was issued to another machine than {claimed}; it is used up now"
                )),
            }));
        }
        let token = auth::new_token();
        self.store.set_token_hash(&hw.doc.id, Some(auth::token_hash(&token))).await.map_err(|e| Err(e.into()))?;
        self.verified.invalidate();
        let cert = match &self.signing_ca {
            Some(ca) => {
                let (cert, key) = issue_agent_cert(ca, agent_id)
                    .map_err(|e| Err(AppError::internal("issuing the agent certificate", e.into_boxed_dyn_error())))?;
                Some((cert, key, ca.cert_pem.clone()))
            }
            None => None,
        };
        Ok(Enrolled { hardware_id: hw.doc.id, agent_id: agent_id.to_string(), token, cert })
    }
}

/// A new random enrolment credential: 32 bytes from the OS, base64url.
fn new_credential() -> String {
    let token = auth::new_token();
    format!("{ENROLMENT_PREFIX}{}", token.strip_prefix(auth::TOKEN_PREFIX).unwrap_or(&token))
}

#[cfg(test)]
mod tests {
    use super::super::boot::Decision;
    use super::super::tests::{DOCS, app};
    use super::*;
    use crate::store::EventQuery;

    async fn hook(app: &App, mac: &str) -> (String, String) {
        match app.boot_decision(&OpContext::system("netboot"), mac).await {
            Decision::Hook { agent_id, enrolment, .. } => (agent_id, enrolment),
            other => panic!("{other:?}"),
        }
    }

    fn req(credential: &str, agent_id: &str, mac: &str) -> EnrolRequest {
        EnrolRequest { credential: credential.into(), agent_id: agent_id.into(), mac: mac.into() }
    }

    async fn security_events(app: &App) -> Vec<Event> {
        app.flush_refusals().await;
        let q = EventQuery { after: 0, since: 0, kind: Some(EventKind::Security), limit: 100, newest: false };
        app.store.list_events(q).await.unwrap()
    }

    #[tokio::test]
    async fn a_boot_credential_enrols_its_machine_once() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(dir.path());
        app.apply(&OpContext::operator(), "test", DOCS).await.unwrap();
        let mac = "52:54:00:00:00:01";
        let (agent_id, credential) = hook(&app, &mac.to_uppercase()).await;
        assert!(credential.starts_with(ENROLMENT_PREFIX) && credential.len() == ENROLMENT_PREFIX.len() + 43);
        let peer = OpContext::system("enrolment").with_peer(Some("192.0.2.9:4000".parse().unwrap()));
        let enrolled = app.enrol(&peer, req(&format!(" {credential}\n"), &agent_id.to_uppercase(), mac)).await.unwrap();
        assert_eq!((enrolled.hardware_id.as_str(), enrolled.agent_id.as_str()), ("m1", mac));
        assert!(enrolled.cert.is_none(), "no signing CA, no certificate");
        // The token is the machine's agent credential now.
        let stored = app.store.agent_credential(mac).await.unwrap().unwrap();
        assert_eq!(stored.token_hash, Some(auth::token_hash(&enrolled.token)));
        // Once only: a replay is refused, and does not touch the token.
        let replay = app.enrol(&peer, req(&credential, mac, mac)).await.unwrap_err();
        assert!(matches!(replay, AppError::FailedPrecondition(_)), "{replay:?}");
        assert!(replay.to_string().contains("already used"), "{replay}");
        assert_eq!(app.store.agent_credential(mac).await.unwrap().unwrap(), stored);
        let events = security_events(&app).await;
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!((events[0].action.as_str(), events[0].outcome), ("enrol", EventOutcome::Ok));
        assert_eq!(events[0].peer, "192.0.2.9:4000");
        assert_eq!(events[0].object, "hardware m1 (agent token)");
        assert_eq!(events[1].outcome, EventOutcome::Refused);
        assert!(events[1].reason.contains("already used"), "{:?}", events[1]);
        for e in &events {
            let text = format!("{e:?}");
            assert!(!text.contains(&credential) && !text.contains(&enrolled.token), "secret in {text}");
            assert!(!text.contains(&auth::token_hash(&credential)), "hash in {text}");
        }
    }

    #[tokio::test]
    async fn garbage_expired_superseded_and_foreign_credentials_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(dir.path());
        app.apply(&OpContext::operator(), "test", DOCS).await.unwrap();
        let before = app.store.agent_credential("52:54:00:00:00:01").await.unwrap();
        let ctx = OpContext::system("enrolment");
        let (m1, m2) = ("52:54:00:00:00:01", "52:54:00:00:00:02");
        let code = |r: Result<Enrolled, AppError>| match r.unwrap_err() {
            AppError::Unauthenticated(_) => "unauthenticated",
            AppError::PermissionDenied(_) => "permission denied",
            AppError::FailedPrecondition(_) => "failed precondition",
            AppError::InvalidArgument(_) => "invalid argument",
            other => panic!("{other:?}"),
        };
        // Garbage, with and without the prefix; missing fields.
        assert_eq!(code(app.enrol(&ctx, req("kiln_enrol_AAAA", m1, m1)).await), "unauthenticated");
        assert_eq!(code(app.enrol(&ctx, req("hunter2", m1, m1)).await), "unauthenticated");
        assert_eq!(code(app.enrol(&ctx, req("", m1, m1)).await), "invalid argument");
        assert_eq!(code(app.enrol(&ctx, req("kiln_enrol_x", "", m1)).await), "invalid argument");
        let bad_mac = app.enrol(&ctx, req("kiln_enrol_x", m1, "nope")).await.unwrap_err().to_string();
        assert!(bad_mac.starts_with("field mac"), "{bad_mac}");
        // Superseded by a later boot of the same machine.
        let (_, first) = hook(&app, m1).await;
        let (_, second) = hook(&app, m1).await;
        assert_eq!(code(app.enrol(&ctx, req(&first, m1, m1)).await), "unauthenticated");
        // Another machine's agent id, or another MAC: refused, and used up.
        assert_eq!(code(app.enrol(&ctx, req(&second, m2, m2)).await), "permission denied");
        assert_eq!(code(app.enrol(&ctx, req(&second, m1, m1)).await), "failed precondition");
        let (_, third) = hook(&app, m1).await;
        assert_eq!(code(app.enrol(&ctx, req(&third, m1, m2)).await), "permission denied");
        // Expired: the TTL has passed (issued with a zero TTL).
        let expired_app = {
            let mut a = super::super::tests::app(dir.path());
            Arc::get_mut(&mut a).unwrap().netboot.enrolment_ttl = Some(Duration::ZERO);
            a
        };
        expired_app.apply(&OpContext::operator(), "test", DOCS).await.unwrap();
        let (_, stale) = hook(&expired_app, m1).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        let expired = expired_app.enrol(&ctx, req(&stale, m1, m1)).await.unwrap_err();
        assert!(
            matches!(expired, AppError::Unauthenticated(_)) && expired.to_string().contains("expired"),
            "{expired}"
        );
        // No refusal touched the machine's token.
        assert_eq!(app.store.agent_credential(m1).await.unwrap(), before);
        let reasons: Vec<String> = security_events(&app).await.into_iter().map(|e| e.reason).collect();
        for expected in ["unknown enrolment credential", "presented as agent", "presented as mac", "already used"] {
            assert!(reasons.iter().any(|r| r.contains(expected)), "{expected}: {reasons:?}");
        }
        let expired_reasons: Vec<String> = security_events(&expired_app).await.into_iter().map(|e| e.reason).collect();
        assert!(expired_reasons.iter().any(|r| r.contains("expired")), "{expired_reasons:?}");
    }

    #[test]
    fn requests_and_results_never_print_their_secrets() {
        let r = req("kiln_enrol_sekrit", "a", "");
        assert!(!format!("{r:?}").contains("sekrit"), "{r:?}");
        let e = Enrolled {
            hardware_id: "h".into(),
            agent_id: "a".into(),
            token: "kiln_tok".into(),
            cert: Some(("c".into(), "KEY".into(), "ca".into())),
        };
        assert!(!format!("{e:?}").contains("kiln_tok") && !format!("{e:?}").contains("KEY"), "{e:?}");
    }

    #[tokio::test]
    async fn a_server_with_a_ca_hands_out_a_certificate_naming_the_agent() {
        let dir = tempfile::tempdir().unwrap();
        let mut app = app(dir.path());
        let dev = crate::tls::dev_tls(dir.path(), &[]).unwrap();
        Arc::get_mut(&mut app).unwrap().signing_ca = Some(dev.ca.clone());
        app.apply(&OpContext::operator(), "test", DOCS).await.unwrap();
        let (agent_id, credential) = hook(&app, "52:54:00:00:00:01").await;
        let enrolled = app.enrol(&OpContext::system("enrolment"), req(&credential, &agent_id, "")).await.unwrap();
        let (cert, key, ca) = enrolled.cert.expect("a certificate");
        assert!(key.contains("PRIVATE KEY"));
        assert_eq!(ca, dev.ca.cert_pem);
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let der = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
        assert_eq!(auth::cert_agent_id(&der).as_deref(), Some(agent_id.as_str()));
    }

    use std::sync::Arc;
}
