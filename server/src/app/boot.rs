//! What a network-booting machine should boot: the hook image (it has work)
//! or its local disk. Every boot path (the iPXE script today) asks here, so
//! the netboot gate is decided in one place. A hook boot carries the
//! machine's one-time enrolment credential ([`super::enrol`]).

use super::{App, OpContext};

/// What a machine should boot, and why.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// `enrolment`: the one-time credential the agent exchanges for its
    /// agent credential (`kiln.enrol=`); a secret.
    Hook {
        agent_id: String,
        workflow: String,
        enrolment: String,
    },
    Local(String),
}

impl App {
    /// Anyone on the provisioning network may ask, so this takes any
    /// context. The answer's only secret is the enrolment credential of
    /// this boot: bound to the machine, short-lived and usable once, it
    /// supersedes the machine's earlier unused ones (docs/security.md says
    /// what that does and does not prevent).
    pub async fn boot_decision(&self, _opctx: &OpContext, mac: &str) -> Decision {
        let Some(mac) = kiln_documents::parse_mac(mac) else {
            return Decision::Local(format!("{mac:?} is not a MAC address"));
        };
        let hardware = match self.store.list_hardware().await {
            Ok(h) => h,
            Err(e) => return Decision::Local(format!("store error: {e}")),
        };
        let Some(hw) = hardware.into_iter().find(|h| h.doc.macs.contains(&mac)) else {
            return Decision::Local(format!("no hardware has MAC {mac}"));
        };
        if !hw.doc.netboot {
            return Decision::Local(format!("hardware {} has netboot off", hw.doc.id));
        }
        match self.store.active_workflows_for_agent(&hw.doc.agent_id).await {
            Ok(ids) if !ids.is_empty() => match self.issue_enrolment(&hw.doc, &mac, &ids[0]).await {
                Ok(enrolment) => Decision::Hook { agent_id: hw.doc.agent_id, workflow: ids[0].clone(), enrolment },
                Err(e) => Decision::Local(format!("cannot issue an enrolment credential: {e}")),
            },
            Ok(_) => Decision::Local(format!("hardware {} has no pending workflow", hw.doc.id)),
            Err(e) => Decision::Local(format!("store error: {e}")),
        }
    }
}
