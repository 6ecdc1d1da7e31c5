//! Discovery (server `--discovery`): a machine whose MAC no Hardware has
//! that network-boots gets the hook image anyway, as a *discovered*
//! machine. The server creates a hardware record for it (keyed by the MAC,
//! `discovered-<mac>`, agent id the MAC) and a one-time enrolment
//! credential bound to it exactly as for known hardware ([`super::enrol`]),
//! so its agent enrols, reports its inventory and heartbeats. It runs
//! nothing: no workflow may target it, and the agent service refuses its
//! agent everything but Heartbeat, ReportInventory and NextAction
//! ([`crate::auth`]), until an operator adopts it.

use kiln_documents::HardwareDoc;

use super::boot::Decision;
use super::{App, AppError};
use crate::model::now_millis;
use crate::store::{Event, EventKind, EventOutcome};

/// Id prefix of discovered hardware records.
pub const DISCOVERED_PREFIX: &str = "discovered-";

/// The hardware record of a discovered machine booting from `mac`
/// (lower case, colon separated): its id is the MAC without colons, so
/// it is a valid name; its agent id is the MAC, which the hook's agent
/// is told on its command line.
pub fn discovered_doc(mac: &str) -> HardwareDoc {
    HardwareDoc {
        id: format!("{DISCOVERED_PREFIX}{}", mac.replace(':', "")),
        agent_id: mac.to_string(),
        macs: vec![mac.to_string()],
        disks: Vec::new(),
        metadata: serde_json::json!({}),
        netboot: true,
        spec: serde_json::Value::Null,
        object_meta: serde_json::Value::Null,
        bmc: None,
    }
}

impl App {
    /// Is hardware `id` a discovered (not adopted) machine?
    pub async fn is_discovered(&self, id: &str) -> Result<bool, AppError> {
        Ok(self.store.list_discovered().await?.iter().any(|(_, h)| h == id))
    }

    /// Is the agent `agent_id` a discovered machine's? (Its agent id is
    /// its MAC.)
    pub async fn is_discovered_agent(&self, agent_id: &str) -> Result<bool, AppError> {
        Ok(self.store.list_discovered().await?.iter().any(|(mac, _)| mac == agent_id))
    }

    /// The hook boot of an unknown (or discovered, not adopted) machine:
    /// its discovered record, created once whatever the number of boots
    /// and replicas, and a fresh enrolment credential for no workflow.
    pub(crate) async fn discovery_boot(&self, mac: &str) -> Decision {
        match self.discover(mac).await {
            Ok((doc, enrolment)) => Decision::Hook { agent_id: doc.agent_id, workflow: String::new(), enrolment },
            Err(e) => Decision::Local(format!("discovery of {mac} failed: {e}")),
        }
    }

    async fn discover(&self, mac: &str) -> Result<(HardwareDoc, String), AppError> {
        let known = self.store.list_discovered().await?.into_iter().any(|(m, _)| m == mac);
        let id = self.store.discover_hardware(mac, discovered_doc(mac), now_millis()).await?;
        let doc = self.store.get_hardware(&id).await?.doc;
        if !known {
            tracing::info!(target: "kiln::audit", %mac, hardware = %id, "machine discovered");
            self.record_events(vec![Event {
                cursor: 0,
                time: now_millis(),
                kind: EventKind::Write,
                actor: "discovery".into(),
                peer: String::new(),
                action: "discover".into(),
                object: format!("hardware {id} (MAC {mac})"),
                outcome: EventOutcome::Ok,
                reason: String::new(),
                count: 1,
            }])
            .await;
        }
        let enrolment = self.issue_enrolment(&doc, mac, "").await?;
        Ok((doc, enrolment))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::AppError;
    use crate::app::OpContext;
    use crate::app::enrol::EnrolRequest;
    use crate::app::tests::app_with_netboot;

    const MAC: &str = "52:54:00:00:07:01";

    #[tokio::test]
    async fn unknown_macs_boot_the_hook_only_with_discovery() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = OpContext::system("test");
        let off = app_with_netboot(dir.path(), Default::default());
        assert!(matches!(off.boot_decision(&ctx, MAC).await, Decision::Local(why) if why.contains("no hardware")));
        drop(off);

        let dir = tempfile::tempdir().unwrap();
        let app = app_with_netboot(dir.path(), crate::netboot::NetbootConfig { discovery: true, ..Default::default() });
        let Decision::Hook { agent_id, workflow, enrolment } = app.boot_decision(&ctx, MAC).await else {
            panic!("no hook boot")
        };
        assert_eq!((agent_id.as_str(), workflow.as_str()), (MAC, ""));
        // A second boot (and two at once) reuse the one record.
        let (a, b) = tokio::join!(app.boot_decision(&ctx, MAC), app.boot_decision(&ctx, MAC));
        assert!(matches!((&a, &b), (Decision::Hook { .. }, Decision::Hook { .. })), "{a:?} {b:?}");
        let hw = app.store.list_hardware().await.unwrap();
        assert_eq!(hw.len(), 1);
        assert_eq!(hw[0].doc.id, "discovered-525400000701");
        assert!(app.is_discovered("discovered-525400000701").await.unwrap());
        assert!(app.is_discovered_agent(MAC).await.unwrap());
        // The first credential was superseded by the later boots; the
        // latest one enrols the machine.
        let Decision::Hook { enrolment: latest, .. } = app.boot_decision(&ctx, MAC).await else { panic!() };
        let req = |c: &str| EnrolRequest { credential: c.into(), agent_id: MAC.into(), mac: MAC.into() };
        assert!(app.enrol(&ctx, req(&enrolment)).await.is_err());
        let enrolled = app.enrol(&ctx, req(&latest)).await.unwrap();
        assert_eq!(enrolled.hardware_id, "discovered-525400000701");
        // The discovery is audited once.
        let events = app
            .store
            .list_events(crate::store::EventQuery { after: 0, since: 0, kind: None, limit: 100, newest: false })
            .await
            .unwrap();
        assert_eq!(events.iter().filter(|e| e.action == "discover").count(), 1);
        // No workflow may target it.
        let op = OpContext::operator();
        app.apply(&op, "defs", crate::app::tests::DOCS).await.unwrap();
        let e = app
            .apply(&op, "wf", "kind: Workflow\nname: w9\ntemplate: t\nhardware: discovered-525400000701\nhardware_map: {device_1: \"52:54:00:00:07:01\"}\n")
            .await
            .unwrap_err();
        assert!(matches!(&e, AppError::FailedPrecondition(m) if m.contains("discovered machine")), "{e:?}");
    }
}
