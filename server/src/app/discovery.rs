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

use super::apply::Applied;
use super::boot::Decision;
use super::{App, AppError, OpContext};
use crate::model::now_millis;
use crate::store::{ApplyBatch, Event, EventKind, EventOutcome, StoredInventory};

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
        root_disk: None,
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

/// A discovered machine a batch adopts, and what it keeps.
pub(crate) struct Adoption {
    old_id: String,
    pub(crate) new_id: String,
    mac: String,
    /// The enrolled agent's token (hash), kept when the new Hardware keeps
    /// its agent id.
    pub(crate) token_hash: Option<String>,
    inventory: Option<StoredInventory>,
}

/// What `kiln get hardware` shows of a machine besides its document.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct HardwareStatus {
    pub discovered: bool,
    /// From its last inventory report: (CPU threads, or cores, or sockets;
    /// memory bytes; disks). `None`: no report yet.
    pub inventory: Option<(u32, u64, u32)>,
}

impl App {
    /// The status of each hardware in `ids`, in that order.
    pub async fn hardware_status(&self, opctx: &OpContext, ids: &[&str]) -> Result<Vec<HardwareStatus>, AppError> {
        opctx.require_operator_read()?;
        let discovered = self.store.list_discovered().await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let inventory = match self.store.get_inventory(id).await? {
                // A report this server cannot read shows as none.
                Some(stored) => {
                    serde_json::from_str::<kiln_inventory::Inventory>(&stored.inventory_json).ok().map(|i| {
                        let cpus = i.cpu.threads.or(i.cpu.cores).or(i.cpu.sockets).unwrap_or(0);
                        (cpus, i.memory.total_bytes.unwrap_or(0), i.disks.len() as u32)
                    })
                }
                None => None,
            };
            out.push(HardwareStatus { discovered: discovered.iter().any(|(_, h)| h == id), inventory });
        }
        Ok(out)
    }

    /// Turns discovered machine `name` into the Hardware `new_name` with
    /// the discovered MAC (an apply of that Hardware, see [`App::apply`]).
    pub async fn adopt(&self, opctx: &OpContext, name: &str, new_name: &str) -> Result<Vec<Applied>, AppError> {
        let discovered = self.store.list_discovered().await?;
        let Some((mac, _)) = discovered.iter().find(|(_, id)| id == name) else {
            return Err(match self.store.get_hardware(name).await {
                Ok(_) => AppError::FailedPrecondition(format!("hardware {name} is not a discovered machine")),
                Err(e) => e.into(),
            });
        };
        if new_name.trim().is_empty() {
            return Err(AppError::InvalidArgument("field as: the new name must not be empty".into()));
        }
        let doc = serde_json::json!({"kind": "Hardware", "name": new_name, "macs": [mac]});
        self.apply(opctx, &format!("adopt {name}"), &doc.to_string()).await
    }

    /// The adoptions of `batch`, read before the apply deletes their
    /// discovered records.
    pub(crate) async fn adoptions(&self, batch: &ApplyBatch) -> Result<Vec<Adoption>, AppError> {
        let discovered = self.store.list_discovered().await?;
        let mut out = Vec::new();
        for old_id in &batch.adopt {
            let Some((mac, _)) = discovered.iter().find(|(_, id)| id == old_id) else { continue };
            let Some(new) = batch.hardware.iter().find(|h| h.macs.contains(mac)) else { continue };
            let token_hash = if new.agent_id == *mac {
                self.store.agent_credential(mac).await?.and_then(|c| c.token_hash)
            } else {
                None
            };
            out.push(Adoption {
                old_id: old_id.clone(),
                new_id: new.id.clone(),
                mac: mac.clone(),
                token_hash,
                inventory: self.store.get_inventory(old_id).await?,
            });
        }
        Ok(out)
    }

    /// After the apply: the inventory moves to the new Hardware, the
    /// agent's cached verdicts go (it is no longer discovered), and each
    /// adoption is audited.
    pub(crate) async fn adopted(&self, opctx: &OpContext, adoptions: Vec<Adoption>) {
        if adoptions.is_empty() {
            return;
        }
        self.verified.invalidate();
        let mut events = Vec::new();
        for a in adoptions {
            if let Some(mut inv) = a.inventory {
                inv.hardware_id = a.new_id.clone();
                if let Err(e) = self.store.put_inventory(inv).await {
                    tracing::warn!(hardware = %a.new_id, error = %e, "adopted machine's inventory not kept");
                }
            }
            tracing::info!(target: "kiln::audit", mac = %a.mac, from = %a.old_id, to = %a.new_id, "machine adopted");
            events.push(Event {
                cursor: 0,
                time: now_millis(),
                kind: EventKind::Write,
                actor: opctx.actor.to_string(),
                peer: opctx.peer.map(|p| p.to_string()).unwrap_or_default(),
                action: "adopt".into(),
                object: format!("hardware {} (MAC {}) as hardware {}", a.old_id, a.mac, a.new_id),
                outcome: EventOutcome::Ok,
                reason: String::new(),
                count: 1,
            });
        }
        self.record_events(events).await;
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

        // Adoption keeps the MAC, the enrolled agent's token and the
        // inventory; the discovered record goes, and it is audited.
        let id = "discovered-525400000701";
        let inv = StoredInventory {
            hardware_id: id.into(),
            agent_id: MAC.into(),
            inventory_json: "{}".into(),
            digest: "d".into(),
            reported_at: 1,
            seen_at: 1,
        };
        app.store.put_inventory(inv.clone()).await.unwrap();
        let token = app.store.agent_credential(MAC).await.unwrap().unwrap().token_hash;
        assert!(token.is_some());
        let viewer = OpContext::read_only_operator();
        assert!(matches!(app.adopt(&viewer, id, "web1").await, Err(AppError::PermissionDenied(_))));
        assert!(matches!(app.adopt(&op, "m1", "web1").await, Err(AppError::FailedPrecondition(_))));
        let applied = app.adopt(&op, id, "web1").await.unwrap();
        assert_eq!((applied[0].name.as_str(), applied[0].agent_token.as_str()), ("web1", ""));
        assert_eq!(app.store.list_discovered().await.unwrap(), vec![]);
        let web1 = app.store.get_hardware("web1").await.unwrap().doc;
        assert_eq!((web1.agent_id.as_str(), web1.macs.clone()), (MAC, vec![MAC.to_string()]));
        assert!(app.store.get_hardware(id).await.is_err());
        assert_eq!(app.store.agent_credential(MAC).await.unwrap().unwrap().token_hash, token);
        assert_eq!(app.store.get_inventory("web1").await.unwrap().unwrap().inventory_json, "{}");
        let events = app
            .store
            .list_events(crate::store::EventQuery { after: 0, since: 0, kind: None, limit: 100, newest: false })
            .await
            .unwrap();
        assert!(events.iter().any(|e| e.action == "adopt" && e.object.contains("as hardware web1")), "{events:?}");
        // Now a workflow may target it.
        app.apply(
            &op,
            "wf",
            "kind: Workflow\nname: w9\ntemplate: t\nhardware: web1\nhardware_map: {device_1: \"52:54:00:00:07:01\"}\n",
        )
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn applying_hardware_with_a_discovered_mac_adopts_it() {
        let dir = tempfile::tempdir().unwrap();
        let app = app_with_netboot(dir.path(), crate::netboot::NetbootConfig { discovery: true, ..Default::default() });
        let ctx = OpContext::system("test");
        assert!(matches!(app.boot_decision(&ctx, MAC).await, Decision::Hook { .. }));
        let doc = format!("kind: Hardware\nname: db1\nmacs: [\"{MAC}\"]\n");
        let applied = app.apply(&OpContext::operator(), "hw", &doc).await.unwrap();
        // Never enrolled: no token to keep, so the new one is shown.
        assert!(!applied[0].agent_token.is_empty());
        let ids: Vec<String> = app.store.list_hardware().await.unwrap().into_iter().map(|h| h.doc.id).collect();
        assert_eq!(ids, ["db1"]);
        assert_eq!(app.store.list_discovered().await.unwrap(), vec![]);
        // Known now: it boots for work, not discovery.
        assert!(
            matches!(app.boot_decision(&ctx, MAC).await, Decision::Local(why) if why.contains("no pending workflow"))
        );
    }

    #[tokio::test]
    async fn one_apply_may_adopt_a_discovered_machine_and_give_it_a_workflow() {
        let dir = tempfile::tempdir().unwrap();
        let app = app_with_netboot(dir.path(), crate::netboot::NetbootConfig { discovery: true, ..Default::default() });
        let op = OpContext::operator();
        assert!(matches!(app.boot_decision(&OpContext::system("test"), MAC).await, Decision::Hook { .. }));
        app.apply(&op, "defs", crate::app::tests::DOCS).await.unwrap();
        // The workflow names the MAC, which is discovered until this very
        // apply adopts it: accepted, as the Hardware comes with it.
        let docs = format!(
            "kind: Hardware\nname: db1\nmacs: [\"{MAC}\"]\n---\nkind: Workflow\nname: w9\ntemplate: t\nhardware: db1\nhardware_map: {{device_1: \"{MAC}\"}}\n"
        );
        app.apply(&op, "adopt+wf", &docs).await.unwrap();
        assert_eq!(app.store.get_workflow("w9").await.unwrap().hardware, "db1");
        assert_eq!(app.store.list_discovered().await.unwrap(), vec![]);
    }
}
