//! Admission: turns the documents of one `kiln apply` into a validated
//! [`ApplyBatch`], or into one error that names the document and field.
//! Nothing is written here; the store writes the batch in one transaction.

use std::collections::{BTreeMap, HashSet};

use kiln_documents::{
    Definitions, Document, HardwareDoc, ImagePolicy, ImageRef, Plan, PlannedAction, SpecError, TemplateDoc,
    WorkflowDoc, check_template_with_warnings, plan_workflow_with_warnings,
};

use crate::app::images::ImageRewrites;
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

/// Validates `docs` against each other, the store and the image policy
/// (which applies to images as `rewrites` turn them into what is pulled).
/// Also returns the warnings of Tinkerbell templates (their body fields
/// kiln ignores, as Tinkerbell does), of the templates applied and of
/// those the workflows applied are created from, each once.
pub async fn admit(
    store: &DynStore,
    docs: Vec<Document>,
    policy: &ImagePolicy,
    rewrites: &ImageRewrites,
) -> Result<(ApplyBatch, Vec<SpecError>), AdmissionError> {
    let policy = &(policy, rewrites);
    let mut seen = HashSet::new();
    for d in &docs {
        if !seen.insert((d.kind(), d.name().to_string())) {
            return Err(AdmissionError::Reference(format!("{} {:?} appears twice in this apply", d.kind(), d.name())));
        }
    }
    let (mut batch, workflow_docs) = sort(docs);
    // A Hardware naming a discovered machine's MAC adopts it: the
    // discovered record goes (in the apply's transaction), so it clashes
    // with nothing.
    for (mac, id) in store.list_discovered().await? {
        if batch.hardware.iter().any(|h| h.id != id && h.macs.contains(&mac)) {
            batch.adopt.push(id);
        }
    }
    let known = KnownObjects::load(store, &batch).await?;
    known.check_hardware_identities(&batch.hardware)?;
    for d in &batch.definitions {
        check_images(&format!("ActionDefinition {:?}", d.name), &[(d.image.as_str(), "image".to_string())], policy)?;
    }
    let mut warnings = Warnings::default();
    for t in &batch.templates {
        let (plan, template_warnings) = check_template_with_warnings(t, &known.definitions)?;
        warnings.extend(template_warnings);
        // Images that come from hardware data are checked when a workflow
        // renders them.
        let images = plan_images(&plan);
        let literal: Vec<_> =
            images.into_iter().filter(|(image, _)| !image.contains(kiln_documents::template::PROBE)).collect();
        check_images(&format!("template {:?}", t.name), &literal, policy)?;
    }
    // A rule's workflow template must exist when the rule is applied, so a
    // typo fails here and not at each machine's adoption.
    for r in &batch.rules {
        if let Some(w) = &r.workflow
            && !known.templates.contains_key(&w.template)
        {
            return Err(AdmissionError::Reference(format!(
                "Rule {:?}, field workflow.template: no template {:?}",
                r.name, w.template
            )));
        }
    }
    for w in &workflow_docs {
        let (workflow, plan, workflow_warnings) = known.build_workflow(w)?;
        warnings.extend(workflow_warnings);
        check_images(&format!("template {:?}", w.template), &plan_images(&plan), policy)?;
        batch.workflows.push(workflow);
    }
    Ok((batch, warnings.0))
}

/// Warnings in the order met, each once: a template applied with a
/// workflow is checked, then rendered for it, and both find the same field.
#[derive(Default)]
struct Warnings(Vec<SpecError>);

impl Warnings {
    fn extend(&mut self, more: Vec<SpecError>) {
        for w in more {
            if !self.0.iter().any(|seen| seen.to_string() == w.to_string()) {
                self.0.push(w);
            }
        }
    }
}

/// Splits documents by kind; workflows are built once the rest is known.
fn sort(docs: Vec<Document>) -> (ApplyBatch, Vec<WorkflowDoc>) {
    let mut batch = ApplyBatch::default();
    let mut workflows = Vec::new();
    for d in docs {
        match d {
            Document::Hardware(h) => batch.hardware.push(h),
            Document::ActionDefinition(d) => batch.definitions.push(d),
            Document::Template(t) => batch.templates.push(t),
            Document::Workflow(w) => workflows.push(w),
            // Sealed by the app and added to the batch there (app::bmc): the
            // password never reaches admission. A plan ignores them.
            Document::BmcSecret(_) => {}
            Document::Rule(r) => batch.rules.push(r),
        }
    }
    (batch, workflows)
}

/// The container images of a plan with their field paths.
fn plan_images(plan: &Plan) -> Vec<(&str, String)> {
    plan.actions
        .iter()
        .enumerate()
        .filter(|(_, a)| !a.image.is_empty())
        .map(|(i, a)| (a.image.as_str(), format!("{}.image", plan.field_path(i))))
        .collect()
}

/// The server's side of the registry allow-list (the agent checks again).
fn check_images(
    object: &str,
    images: &[(&str, String)],
    (policy, rewrites): &(&ImagePolicy, &ImageRewrites),
) -> Result<(), AdmissionError> {
    for (image, field) in images {
        let refused = |e: String| AdmissionError::Reference(format!("{object}, field {field}: {e}"));
        ImageRef::parse(image).map_err(refused)?;
        match rewrites.apply(image) {
            None => policy.check(&ImageRef::parse(image).map_err(refused)?).map_err(refused)?,
            Some(pulled) => {
                let refused =
                    |e: String| refused(format!("{image:?} is rewritten to {pulled:?} (--image-rewrite): {e}"));
                policy.check(&ImageRef::parse(&pulled).map_err(refused)?).map_err(refused)?;
            }
        }
    }
    Ok(())
}

/// Renders one workflow document without admitting anything (`kiln plan`).
/// Hardware and templates in `docs` take precedence over stored ones, so an
/// operator can plan before applying.
/// Also returns the warnings of a Tinkerbell template (see [`admit`]).
pub async fn plan(store: &DynStore, docs: Vec<Document>) -> Result<(Workflow, Vec<SpecError>), AdmissionError> {
    let (batch, workflows) = sort(docs);
    let [w] = workflows.as_slice() else {
        return Err(AdmissionError::Reference(format!(
            "plan needs exactly one Workflow document, got {}",
            workflows.len()
        )));
    };
    let known = KnownObjects::load(store, &batch).await?;
    let (workflow, _, warnings) = known.build_workflow(w)?;
    Ok((workflow, warnings))
}

/// Hardware and templates visible to an apply: the stored ones overlaid with
/// those of the apply itself.
struct KnownObjects {
    hardware: BTreeMap<String, HardwareDoc>,
    templates: BTreeMap<String, TemplateDoc>,
    definitions: Definitions,
}

impl KnownObjects {
    async fn load(store: &DynStore, batch: &ApplyBatch) -> Result<Self, StoreError> {
        let mut hardware: BTreeMap<_, _> =
            store.list_hardware().await?.into_iter().map(|h| (h.doc.id.clone(), h.doc)).collect();
        let mut templates: BTreeMap<_, _> =
            store.list_templates().await?.into_iter().map(|t| (t.doc.name.clone(), t.doc)).collect();
        hardware.retain(|id, _| !batch.adopt.contains(id));
        hardware.extend(batch.hardware.iter().map(|h| (h.id.clone(), h.clone())));
        templates.extend(batch.templates.iter().map(|t| (t.name.clone(), t.clone())));
        let mut definitions: Definitions =
            store.list_definitions().await?.into_iter().map(|d| (d.doc.name.clone(), d.doc)).collect();
        definitions.extend(batch.definitions.iter().map(|d| (d.name.clone(), d.clone())));
        Ok(Self { hardware, templates, definitions })
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

    fn build_workflow(&self, w: &WorkflowDoc) -> Result<(Workflow, Plan, Vec<SpecError>), AdmissionError> {
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
        // Refused now rather than failed when the workflow starts.
        if w.boot_options.is_some_and(|b| !b.is_noop()) && hardware.bmc.is_none() {
            return Err(AdmissionError::Reference(format!(
                "Workflow {:?}: field boot_options: hardware {:?} has no bmc section to carry them out (docs/bmc.md)",
                w.id, w.hardware
            )));
        }
        let (plan, warnings) = plan_workflow_with_warnings(template, w, hardware, &self.definitions)?;
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
            boot_options: w.boot_options.filter(|b| !b.is_noop()),
        };
        Ok((workflow, plan, warnings))
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
