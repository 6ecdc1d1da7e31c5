//! In-band inventory: what a machine's agent found on it (system, CPUs,
//! memory, disks, NICs, TPM; the `kiln_inventory` document), reported at
//! its start and whenever it changes, kept per hardware, read by operators
//! (`kiln describe hardware NAME`).

use sha2::{Digest, Sha256};

use super::{App, AppError, OpContext};
use crate::model::now_millis;
use crate::store::StoredInventory;

/// The largest inventory document accepted: a machine with hundreds of
/// disks and NICs stays well under it.
pub const MAX_INVENTORY_BYTES: usize = 1 << 20;

impl App {
    /// Stores the inventory the calling agent reported for its hardware.
    /// Returns whether it differs from the stored one. The document must be
    /// a `kiln_inventory::Inventory` (unknown fields refused, naming the
    /// field); it is stored in its canonical form.
    pub async fn report_inventory(&self, opctx: &OpContext, inventory_json: &str) -> Result<bool, AppError> {
        let agent_id = opctx.require_agent()?;
        if inventory_json.len() > MAX_INVENTORY_BYTES {
            return Err(AppError::InvalidArgument(format!(
                "field inventory_json: {} bytes, over the limit of {MAX_INVENTORY_BYTES}",
                inventory_json.len()
            )));
        }
        let inventory: kiln_inventory::Inventory =
            serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(inventory_json)).map_err(|e| {
                AppError::InvalidArgument(format!("field inventory_json: at {}: {}", e.path(), e.inner()))
            })?;
        let canonical = serde_json::to_string(&inventory).map_err(|e| {
            AppError::internal("encoding the inventory", Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
        })?;
        let hardware_id = self
            .store
            .agent_credential(agent_id)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("no hardware has agent id {agent_id}")))?
            .hardware_id;
        let now = now_millis();
        let changed = self
            .store
            .put_inventory(StoredInventory {
                hardware_id: hardware_id.clone(),
                agent_id: agent_id.to_string(),
                digest: hex::encode(Sha256::digest(canonical.as_bytes())),
                inventory_json: canonical,
                reported_at: now,
                seen_at: now,
            })
            .await?;
        if changed {
            tracing::info!(agent = %agent_id, hardware = %hardware_id, summary = %inventory.summary(), "inventory reported");
        }
        // A discovered machine's agent id is its MAC: each report (a new
        // one, or the same after a restart of agent or server) gives the
        // rules their chance; one that matched before is not matched again.
        if self.is_discovered_agent(agent_id).await? {
            self.evaluate_rules(agent_id).await;
        }
        Ok(changed)
    }

    /// The inventory a hardware's agent last reported.
    pub async fn hardware_inventory(&self, opctx: &OpContext, hardware: &str) -> Result<StoredInventory, AppError> {
        opctx.require_operator_read()?;
        let hw = self.store.get_hardware(hardware).await?;
        self.store.get_inventory(&hw.doc.id).await?.ok_or_else(|| {
            AppError::NotFound(format!(
                "hardware {hardware} has no inventory yet: its agent reports one when it starts"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{DOCS, app};
    use super::*;

    #[tokio::test]
    async fn an_agent_reports_its_own_inventory_and_operators_read_it() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(dir.path());
        app.apply(&OpContext::operator(), "test", DOCS).await.unwrap();
        let agent = OpContext::agent("52:54:00:00:00:01");
        let op = OpContext::operator();
        assert!(matches!(app.hardware_inventory(&op, "m1").await, Err(AppError::NotFound(_))));
        let json = r#"{"system":{"vendor":"QEMU"},"cpu":{"threads":2},"memory":{},"disks":[{"name":"vda","size_bytes":1024}]}"#;
        assert!(app.report_inventory(&agent, json).await.unwrap(), "first report");
        assert!(!app.report_inventory(&agent, json).await.unwrap(), "the same again");
        // The same document with other whitespace is the same inventory.
        let spaced = json.replace(',', " , ");
        assert!(!app.report_inventory(&agent, &spaced).await.unwrap());
        let stored = app.hardware_inventory(&OpContext::read_only_operator(), "m1").await.unwrap();
        assert_eq!((stored.hardware_id.as_str(), stored.agent_id.as_str()), ("m1", "52:54:00:00:00:01"));
        let inv: kiln_inventory::Inventory = serde_json::from_str(&stored.inventory_json).unwrap();
        assert_eq!(inv.disks[0].name, "vda");
        assert!(matches!(app.hardware_inventory(&op, "m2").await, Err(AppError::NotFound(_))));
        // Bad documents name the field; only agents report; only operators read.
        let typo = app.report_inventory(&agent, r#"{"system":{"vendr":"x"}}"#).await.unwrap_err().to_string();
        assert!(typo.starts_with("field inventory_json: at system"), "{typo}");
        let big = format!(r#"{{"system":{{"vendor":"{}"}}}}"#, "x".repeat(MAX_INVENTORY_BYTES));
        assert!(matches!(app.report_inventory(&agent, &big).await, Err(AppError::InvalidArgument(_))));
        assert!(matches!(app.report_inventory(&op, json).await, Err(AppError::PermissionDenied(_))));
        assert!(matches!(app.hardware_inventory(&agent, "m1").await, Err(AppError::PermissionDenied(_))));
    }
}
