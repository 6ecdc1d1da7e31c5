//! How a workflow's disk hints resolve against its machine's reported
//! disks, for `kiln plan` (the resolution itself, at dispatch, is in
//! `dispatch.rs`; both call `kiln_documents::hints`).

use kiln_documents::hints::{self, DiskHint};
use kiln_documents::template::deferred_disk_hints;

use super::{App, AppError, OpContext};
use crate::model::Workflow;

/// One distinct hint of a workflow and what it resolves to.
#[derive(Debug, Clone, PartialEq)]
pub struct HintResolution {
    /// As an operator writes it: `{rotational: false, size: ">= 100GiB"}`.
    pub hint: String,
    /// The actions that use it, in order.
    pub actions: Vec<String>,
    /// `Ok(path)`, or why there is no one disk (no inventory yet, none or
    /// several match).
    pub result: Result<String, String>,
    /// Every reported disk, in the inventory's order (empty without one).
    pub candidates: Vec<Candidate>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// `vda (10.0 GiB, virtio, serial "a")`.
    pub disk: String,
    pub path: String,
    /// `Ok(())` when the disk matches, else why not.
    pub matches: Result<(), String>,
}

impl App {
    /// The disk hints of `wf`'s actions (kept from its creation, see
    /// `kiln_documents::template::DiskContext`) resolved against the disks
    /// its hardware reported last; empty when no action has one.
    pub async fn disk_hint_resolutions(
        &self,
        opctx: &OpContext,
        wf: &Workflow,
    ) -> Result<Vec<HintResolution>, AppError> {
        opctx.require_operator_read()?;
        let mut found: Vec<(DiskHint, Vec<String>)> = Vec::new();
        for a in &wf.actions {
            for hint in super::dispatch::strings(&a.spec).flat_map(|s| deferred_disk_hints(s)) {
                match found.iter_mut().find(|(h, _)| *h == hint) {
                    Some((_, actions)) if actions.contains(&a.spec.name) => {}
                    Some((_, actions)) => actions.push(a.spec.name.clone()),
                    None => found.push((hint, vec![a.spec.name.clone()])),
                }
            }
        }
        if found.is_empty() {
            return Ok(Vec::new());
        }
        let stored = self.store.get_inventory(&wf.hardware).await?;
        let disks = match stored.map(|s| serde_json::from_str::<kiln_inventory::Inventory>(&s.inventory_json)) {
            Some(Ok(inventory)) => Ok(inventory.disks),
            Some(Err(e)) => Err(format!("the stored inventory of hardware {} is unreadable: {e}", wf.hardware)),
            None => Err(format!(
                "hardware {} has reported no inventory yet: the hint is resolved when its agent has \
                 (it reports one when it starts), before the first action runs",
                wf.hardware
            )),
        };
        Ok(found
            .into_iter()
            .map(|(hint, actions)| match &disks {
                Ok(disks) => HintResolution {
                    hint: hint.to_string(),
                    actions,
                    result: hints::resolve(&hint, disks).map(hints::stable_path),
                    candidates: hints::explain(&hint, disks)
                        .into_iter()
                        .map(|(d, matches)| Candidate {
                            disk: hints::describe(d),
                            path: hints::stable_path(d),
                            matches,
                        })
                        .collect(),
                },
                Err(why) => {
                    HintResolution { hint: hint.to_string(), actions, result: Err(why.clone()), candidates: Vec::new() }
                }
            })
            .collect())
    }
}
