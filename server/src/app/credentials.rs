//! Agent credentials: tokens (rotate, revoke) and client certificates.
//! Every change empties the cache of verified tokens, so it takes effect on
//! this server before the call returns (other replicas hear of it through
//! the store).

use super::{App, AppError, OpContext};
use crate::auth;
use crate::tls::issue_agent_cert;

/// A machine's new agent token, shown once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentToken {
    pub hardware_id: String,
    pub agent_id: String,
    pub token: String,
}

/// A client certificate for a machine's agent (mutual TLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentCert {
    pub hardware_id: String,
    pub agent_id: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub ca_pem: String,
}

impl App {
    /// Replaces a machine's agent token; the old one stops working at once.
    pub async fn rotate_agent_token(&self, opctx: &OpContext, hardware: &str) -> Result<AgentToken, AppError> {
        self.authorize_write(opctx, "rotate agent token", &format!("hardware {hardware}")).await?;
        let result = async {
            let hw = self.store.get_hardware(hardware).await?;
            let token = auth::new_token();
            self.store.set_token_hash(&hw.doc.id, Some(auth::token_hash(&token))).await?;
            self.verified.invalidate();
            Ok(AgentToken { hardware_id: hw.doc.id, agent_id: hw.doc.agent_id, token })
        }
        .await;
        self.audit(opctx, "rotate agent token", &format!("hardware {hardware}"), &result.as_ref().map(|_| ())).await;
        result
    }

    /// Revokes a machine's agent token: no call of its agent passes any more.
    pub async fn revoke_agent_token(&self, opctx: &OpContext, hardware: &str) -> Result<(), AppError> {
        self.authorize_write(opctx, "revoke agent token", &format!("hardware {hardware}")).await?;
        let result = async {
            let hw = self.store.get_hardware(hardware).await?;
            self.store.set_token_hash(&hw.doc.id, None).await?;
            self.verified.invalidate();
            Ok(())
        }
        .await;
        self.audit(opctx, "revoke agent token", &format!("hardware {hardware}"), &result.as_ref().map(|_| ())).await;
        result
    }

    /// Issues a client certificate for a machine's agent, signed by the
    /// server's CA.
    pub async fn issue_agent_cert(&self, opctx: &OpContext, hardware: &str) -> Result<AgentCert, AppError> {
        self.authorize_write(opctx, "issue agent certificate", &format!("hardware {hardware}")).await?;
        let result = async {
            let Some(ca) = &self.signing_ca else {
                return Err(AppError::FailedPrecondition(
                    "this server manages no CA: start it with --dev-tls, or --client-ca with --client-ca-key".into(),
                ));
            };
            let hw = self.store.get_hardware(hardware).await?;
            let (cert_pem, key_pem) = issue_agent_cert(ca, &hw.doc.agent_id)
                .map_err(|e| AppError::internal("issuing the agent certificate", e.into_boxed_dyn_error()))?;
            Ok(AgentCert {
                hardware_id: hw.doc.id,
                agent_id: hw.doc.agent_id,
                cert_pem,
                key_pem,
                ca_pem: ca.cert_pem.clone(),
            })
        }
        .await;
        self.audit(opctx, "issue agent certificate", &format!("hardware {hardware}"), &result.as_ref().map(|_| ()))
            .await;
        result
    }
}
