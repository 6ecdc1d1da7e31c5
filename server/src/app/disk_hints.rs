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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::tests::app;
    use super::*;
    use crate::model::WorkflowState;

    /// m1 (root disk: the one with serial "big"), a template of two
    /// actions whose second writes to it, and workflow `name` for m1.
    fn docs(name: &str) -> String {
        format!(
            r#"
kind: Hardware
name: m1
macs: ["52:54:00:00:00:01"]
root_disk: {{serial: big}}
---
kind: Template
name: t
data: |
  version: "0.1"
  name: t
  tasks:
    - name: one
      worker: "{{{{.device_1}}}}"
      actions:
        - {{name: a, image: "127.0.0.1:5000/a:v1"}}
        - {{name: b, image: "127.0.0.1:5000/b:v1", environment: {{DEST: "{{{{ rootDisk }}}}"}}}}
---
kind: Workflow
name: {name}
template: t
hardware: m1
hardware_map: {{device_1: "52:54:00:00:00:01"}}
"#
        )
    }

    #[tokio::test]
    async fn without_an_inventory_the_workflow_fails_before_its_first_action_and_with_one_the_hint_resolves() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(dir.path());
        let (op, agent) = (OpContext::operator(), OpContext::agent("52:54:00:00:00:01"));
        app.apply(&op, "docs", &docs("w1")).await.unwrap();
        let wf = app.store.get_workflow("w1").await.unwrap();
        let planned = app.disk_hint_resolutions(&op, &wf).await.unwrap();
        assert_eq!(planned.len(), 1);
        assert_eq!(
            (planned[0].hint.as_str(), planned[0].actions.as_slice()),
            (r#"{serial: "big"}"#, &["b".to_string()][..])
        );
        assert!(planned[0].result.as_ref().unwrap_err().contains("has reported no inventory yet"), "{planned:?}");
        assert!(matches!(app.disk_hint_resolutions(&agent, &wf).await, Err(AppError::PermissionDenied(_))));

        // No inventory: nothing is handed out, and the workflow fails with the reason.
        assert!(app.next_assignment(&agent, Duration::ZERO).await.unwrap().is_none());
        let wf = app.store.get_workflow("w1").await.unwrap();
        assert_eq!(wf.state, WorkflowState::Failed);
        assert!(wf.reason.contains("(DiskHintUnresolved): hardware m1 has reported no inventory yet"), "{}", wf.reason);

        // With the inventory: action b gets the by-id path of the disk.
        let inventory = r#"{"system":{},"cpu":{},"memory":{},"disks":[
            {"name":"vda","by_id":["/dev/disk/by-id/virtio-small"],"serial":"small","size_bytes":1024},
            {"name":"vdb","by_id":["/dev/disk/by-id/virtio-big"],"serial":"big","size_bytes":2048}]}"#;
        app.report_inventory(&agent, inventory).await.unwrap();
        app.apply(&op, "docs", &docs("w2")).await.unwrap();
        let a = app.next_assignment(&agent, Duration::ZERO).await.unwrap().expect("action a");
        assert_eq!(a.action.name, "a");
        let wf = app.store.get_workflow("w2").await.unwrap();
        let planned = app.disk_hint_resolutions(&op, &wf).await.unwrap();
        assert_eq!(planned[0].result, Ok("/dev/disk/by-id/virtio-big".to_string()));
        assert_eq!(planned[0].candidates[0].matches, Err(r#"serial "small" is not "big""#.to_string()));
        let done = crate::state_machine::Report {
            action_index: 0,
            attempt_id: a.attempt_id.clone(),
            state: crate::model::ActionState::Success,
            exit_code: Some(0),
            reason: String::new(),
            message: String::new(),
            output_json: String::new(),
        };
        app.report(&agent, "w2", done).await.unwrap();
        let b = app.next_assignment(&agent, Duration::ZERO).await.unwrap().expect("action b");
        assert_eq!(b.action.environment["DEST"], "/dev/disk/by-id/virtio-big");
    }
}
