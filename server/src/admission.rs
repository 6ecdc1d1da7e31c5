//! Admission: turns the documents of one `kiln apply` into a validated
//! [`ApplyBatch`], or into one error that names the document and field.
//! Nothing is written here; the store writes the batch in one transaction.

use std::collections::{BTreeMap, HashSet};

use kiln_spec::{
    Document, HardwareDoc, ImagePolicy, ImageRef, Plan, PlannedAction, SpecError, TemplateDoc, WorkflowDoc,
    check_template, plan_workflow,
};

use crate::model::{Action, Workflow, WorkflowState, now_millis};
use crate::store::{ApplyBatch, DynStore, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    #[error(transparent)]
    Invalid(#[from] SpecError),
    #[error("{0}")]
    Reference(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Validates `docs` against each other, the store and the image policy.
pub async fn admit(store: &DynStore, docs: Vec<Document>, policy: &ImagePolicy) -> Result<ApplyBatch, AdmissionError> {
    let mut seen = HashSet::new();
    for d in &docs {
        if !seen.insert((d.kind(), d.name().to_string())) {
            return Err(AdmissionError::Reference(format!("{} {:?} appears twice in this apply", d.kind(), d.name())));
        }
    }
    let mut batch = ApplyBatch::default();
    let mut workflow_docs = Vec::new();
    for d in docs {
        match d {
            Document::Hardware(h) => batch.hardware.push(h),
            Document::Template(t) => {
                let plan = check_template(&t)?;
                // Images that come from hardware data are checked when a
                // workflow renders them.
                check_images(&t.name, &plan, policy, |image| !image.contains(kiln_spec::template::PROBE))?;
                batch.templates.push(t);
            }
            Document::Workflow(w) => workflow_docs.push(w),
        }
    }
    let known = KnownObjects::load(store, &batch).await?;
    known.check_hardware_identities(&batch.hardware)?;
    for w in &workflow_docs {
        let (workflow, plan) = known.build_workflow(w)?;
        check_images(&w.template, &plan, policy, |_| true)?;
        batch.workflows.push(workflow);
    }
    Ok(batch)
}

/// The server's side of the registry allow-list (the agent checks again).
fn check_images(
    template: &str,
    plan: &Plan,
    policy: &ImagePolicy,
    checkable: impl Fn(&str) -> bool,
) -> Result<(), AdmissionError> {
    for (i, action) in plan.actions.iter().enumerate().filter(|(_, a)| !a.image.is_empty() && checkable(&a.image)) {
        let image = ImageRef::parse(&action.image).map_err(|e| {
            AdmissionError::Reference(format!("template {template:?}, field {}.image: {e}", plan.field_path(i)))
        })?;
        policy.check(&image).map_err(|e| {
            AdmissionError::Reference(format!("template {template:?}, field {}.image: {e}", plan.field_path(i)))
        })?;
    }
    Ok(())
}

/// Renders one workflow document without admitting anything (`kiln plan`).
/// Hardware and templates in `docs` take precedence over stored ones, so an
/// operator can plan before applying.
pub async fn plan(store: &DynStore, docs: Vec<Document>) -> Result<Workflow, AdmissionError> {
    let mut batch = ApplyBatch::default();
    let mut workflows = Vec::new();
    for d in docs {
        match d {
            Document::Hardware(h) => batch.hardware.push(h),
            Document::Template(t) => batch.templates.push(t),
            Document::Workflow(w) => workflows.push(w),
        }
    }
    let [w] = workflows.as_slice() else {
        return Err(AdmissionError::Reference(format!(
            "plan needs exactly one Workflow document, got {}",
            workflows.len()
        )));
    };
    let known = KnownObjects::load(store, &batch).await?;
    Ok(known.build_workflow(w)?.0)
}

/// Hardware and templates visible to an apply: the stored ones overlaid with
/// those of the apply itself.
struct KnownObjects {
    hardware: BTreeMap<String, HardwareDoc>,
    templates: BTreeMap<String, TemplateDoc>,
}

impl KnownObjects {
    async fn load(store: &DynStore, batch: &ApplyBatch) -> Result<Self, StoreError> {
        let mut hardware: BTreeMap<_, _> =
            store.list_hardware().await?.into_iter().map(|h| (h.doc.id.clone(), h.doc)).collect();
        let mut templates: BTreeMap<_, _> =
            store.list_templates().await?.into_iter().map(|t| (t.doc.name.clone(), t.doc)).collect();
        hardware.extend(batch.hardware.iter().map(|h| (h.id.clone(), h.clone())));
        templates.extend(batch.templates.iter().map(|t| (t.name.clone(), t.clone())));
        Ok(Self { hardware, templates })
    }

    /// An agent id or MAC must identify one machine, or actions would reach
    /// the wrong one.
    fn check_hardware_identities(&self, applied: &[HardwareDoc]) -> Result<(), AdmissionError> {
        for new in applied {
            let ids: HashSet<&str> = new.macs.iter().map(String::as_str).chain([new.agent_id.as_str()]).collect();
            for other in self.hardware.values().filter(|o| o.id != new.id) {
                if let Some(clash) =
                    other.macs.iter().map(String::as_str).chain([other.agent_id.as_str()]).find(|x| ids.contains(x))
                {
                    return Err(AdmissionError::Reference(format!(
                        "Hardware {:?}: {clash} is already used by hardware {:?}",
                        new.id, other.id
                    )));
                }
            }
        }
        Ok(())
    }

    /// The agent that runs actions for `worker`: the hardware whose agent id
    /// or one of whose MACs the rendered worker names.
    fn agent_for_worker(&self, worker: &str) -> Option<&str> {
        let worker = worker.to_ascii_lowercase();
        self.hardware.values().find(|h| h.agent_id == worker || h.macs.contains(&worker)).map(|h| h.agent_id.as_str())
    }

    fn build_workflow(&self, w: &WorkflowDoc) -> Result<(Workflow, Plan), AdmissionError> {
        let template = self.templates.get(&w.template).ok_or_else(|| {
            AdmissionError::Reference(format!(
                "Workflow {:?}: field template: template {:?} not found",
                w.id, w.template
            ))
        })?;
        let hardware = self.hardware.get(&w.hardware).ok_or_else(|| {
            AdmissionError::Reference(format!(
                "Workflow {:?}: field hardware: hardware {:?} not found",
                w.id, w.hardware
            ))
        })?;
        let plan = plan_workflow(template, w, hardware)?;
        let mut actions = Vec::with_capacity(plan.actions.len());
        for (index, spec) in plan.actions.iter().enumerate() {
            let mut spec = spec.clone();
            spec.worker = self.resolve_worker(w, &spec)?;
            actions.push(Action { index: index as u32, spec, attempts: Vec::new() });
        }
        let workflow = Workflow {
            id: w.id.clone(),
            template: w.template.clone(),
            hardware: w.hardware.clone(),
            hardware_map: w.hardware_map.clone(),
            state: WorkflowState::Pending,
            reason: String::new(),
            global_timeout_seconds: plan.global_timeout_seconds,
            created_at: now_millis(),
            started_at: None,
            finished_at: None,
            actions,
        };
        Ok((workflow, plan))
    }

    fn resolve_worker(&self, w: &WorkflowDoc, spec: &PlannedAction) -> Result<String, AdmissionError> {
        self.agent_for_worker(&spec.worker).map(str::to_string).ok_or_else(|| {
            AdmissionError::Reference(format!(
                "Workflow {:?}: template {:?} task {:?}: unknown worker {:?}: no hardware has this agent id or MAC",
                w.id, w.template, spec.task, spec.worker
            ))
        })
    }
}
