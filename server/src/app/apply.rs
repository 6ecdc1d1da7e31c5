//! `kiln apply` and `kiln plan`: documents in, validated and stored (or only
//! planned).

use std::collections::HashMap;

use kiln_documents::parse_documents_with_warnings;

use super::{App, AppError, OpContext};
use crate::store::{Outcome, RuleAdoption, RuleMatch};
use crate::{admission, auth, model};

/// One object an apply wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub kind: &'static str,
    pub name: String,
    pub outcome: Outcome,
    /// The agent token of hardware this apply created, shown once; empty
    /// otherwise (the store keeps only its hash).
    pub agent_token: String,
}

/// What [`App::write_documents`] did.
pub(crate) enum Committed {
    Applied(Vec<Applied>),
    /// A rule's adoption the store refused; nothing was written.
    Refused(RuleAdoption),
}

/// Where the documents of a plan come from.
pub enum PlanSource {
    /// A stored workflow.
    Workflow(String),
    /// Documents (YAML) not yet applied.
    Documents(String),
}

impl App {
    /// Validates every document of `yaml` against each other and the store,
    /// then writes them all in one transaction, or nothing.
    pub async fn apply(&self, opctx: &OpContext, source: &str, yaml: &str) -> Result<Vec<Applied>, AppError> {
        self.apply_with_warnings(opctx, source, yaml).await.map(|(applied, _)| applied)
    }

    /// [`App::apply`], with the warnings of the documents: fields of
    /// Tinkerbell objects that kiln ignores (as Tinkerbell does), including
    /// those in the body of a Tinkerbell template (when it is applied, and
    /// when a workflow applied is created from it), each naming the field
    /// and its line.
    pub async fn apply_with_warnings(
        &self,
        opctx: &OpContext,
        source: &str,
        yaml: &str,
    ) -> Result<(Vec<Applied>, Vec<String>), AppError> {
        self.authorize_write(opctx, "apply", source).await?;
        let result = self.apply_documents(opctx, source, yaml).await;
        let names = match &result {
            Ok((applied, _)) => applied
                .iter()
                .map(|a| format!("{} {} ({})", a.kind, a.name, a.outcome.as_str()))
                .collect::<Vec<_>>()
                .join(", "),
            Err(_) => source.to_string(),
        };
        self.audit(opctx, "apply", &names, &result.as_ref().map(|_| ())).await;
        result
    }

    async fn apply_documents(
        &self,
        opctx: &OpContext,
        source: &str,
        yaml: &str,
    ) -> Result<(Vec<Applied>, Vec<String>), AppError> {
        let (docs, warnings) =
            parse_documents_with_warnings(source, yaml).map_err(|e| AppError::InvalidArgument(e.to_string()))?;
        let warnings: Vec<String> = warnings.iter().map(ToString::to_string).collect();
        if docs.is_empty() {
            return Err(AppError::InvalidArgument(format!("{source}: no documents")));
        }
        let rules_applied = docs.iter().any(|d| matches!(d, kiln_documents::Document::Rule(_)));
        let (applied, warnings) = match self.write_documents(opctx, docs, warnings, None).await? {
            (Committed::Applied(applied), warnings) => (applied, warnings),
            (Committed::Refused(refusal), _) => {
                return Err(AppError::internal("apply", format!("refused as a rule adoption: {refusal:?}")));
            }
        };
        // Machines discovered before a rule was applied are matched now.
        if rules_applied && applied.iter().any(|a| a.kind == "Rule" && a.outcome != Outcome::Unchanged) {
            self.evaluate_all_rules().await;
        }
        Ok((applied, warnings))
    }

    /// Admits and writes parsed documents: by [`crate::store::Store::apply`],
    /// or, for a rule's adoption (`rule`), by
    /// [`crate::store::Store::adopt_by_rule`], which may refuse.
    pub(crate) async fn write_documents(
        &self,
        opctx: &OpContext,
        mut docs: Vec<kiln_documents::Document>,
        mut warnings: Vec<String>,
        rule: Option<RuleMatch>,
    ) -> Result<(Committed, Vec<String>), AppError> {
        warnings.extend(Self::bmc_warnings(&docs));
        // BmcSecrets are sealed first and go no further as plaintext.
        let bmc_secrets = self.seal_bmc_secrets(&mut docs)?;
        let (mut batch, template_warnings) =
            admission::admit(&self.store, docs, &self.image_policy, &self.image_rewrites).await?;
        batch.bmc_secrets = bmc_secrets;
        // A discovered machine runs nothing until it is adopted.
        // (Those this batch adopts are not: their workflows come with them.)
        let discovered: Vec<(String, String)> =
            self.store.list_discovered().await?.into_iter().filter(|(_, id)| !batch.adopt.contains(id)).collect();
        for w in &batch.workflows {
            // `hardware_map` values are agent ids, a discovered machine's is its MAC.
            for hw in std::iter::once(&w.hardware).chain(w.hardware_map.values()) {
                if let Some((mac, _)) = discovered.iter().find(|(mac, id)| id == hw || mac == hw) {
                    return Err(AppError::FailedPrecondition(format!(
                        "workflow {}: hardware {hw} is a discovered machine (MAC {mac}) and runs nothing until \
                         it is adopted (kiln adopt {hw} --as NAME)",
                        w.id
                    )));
                }
            }
        }
        let warnings: Vec<String> =
            warnings.into_iter().chain(template_warnings.iter().map(ToString::to_string)).collect();
        // A token for every hardware in the batch; the store keeps the hash
        // only for those it creates, and only theirs are shown (once).
        let mut tokens: HashMap<String, String> = HashMap::new();
        for h in &batch.hardware {
            let token = auth::new_token();
            batch.token_hashes.insert(h.id.clone(), auth::token_hash(&token));
            tokens.insert(h.id.clone(), token);
        }
        // An adopted machine's enrolled agent keeps working (its agent id
        // is its MAC: when the adopting Hardware keeps that agent id, it
        // keeps that token, and no new one is shown) and its inventory is
        // kept.
        let adoptions = self.adoptions(&batch).await?;
        for a in &adoptions {
            if let Some(hash) = &a.token_hash {
                batch.token_hashes.insert(a.new_id.clone(), hash.clone());
                tokens.remove(&a.new_id);
            }
        }
        let names: Vec<(&'static str, String)> = batch
            .hardware
            .iter()
            .map(|h| ("Hardware", h.id.clone()))
            .chain(batch.definitions.iter().map(|d| ("ActionDefinition", d.name.clone())))
            .chain(batch.templates.iter().map(|t| ("Template", t.name.clone())))
            .chain(batch.bmc_secrets.iter().map(|s| ("BmcSecret", s.name.clone())))
            .chain(batch.rules.iter().map(|r| ("Rule", r.name.clone())))
            .chain(batch.workflows.iter().map(|w| ("Workflow", w.id.clone())))
            .collect();
        let agents: Vec<String> =
            batch.workflows.iter().filter_map(|w| w.current_action().map(|a| a.agent_id().to_string())).collect();
        let created: Vec<(String, crate::model::Millis)> =
            batch.workflows.iter().map(|w| (w.id.clone(), w.created_at)).collect();
        // Workflows with BMC steps: their start step is submitted once
        // they are stored.
        let with_bmc_steps: Vec<crate::model::Workflow> =
            batch.workflows.iter().filter(|w| w.boot_options.is_some()).cloned().collect();
        let (started, wall_clock) = (std::time::Instant::now(), std::time::SystemTime::now());
        let outcomes = match rule {
            None => self.store.apply(batch).await,
            Some(m) => match self.store.adopt_by_rule(batch, m).await {
                Ok(RuleAdoption::Adopted(outcomes)) => Ok(outcomes),
                Ok(refusal) => return Ok((Committed::Refused(refusal), warnings)),
                Err(e) => Err(e),
            },
        };
        self.metrics.store_transaction(crate::metrics::StoreOperation::Apply, started.elapsed());
        let outcomes = outcomes?;
        self.adopted(opctx, adoptions).await;
        // An updated hardware may have a new agent id: its token now
        // answers for that one only.
        if names.iter().zip(&outcomes).any(|((kind, _), o)| *kind == "Hardware" && *o == Outcome::Updated) {
            self.verified.invalidate();
        }
        for ((kind, name), outcome) in names.iter().zip(&outcomes) {
            if *kind == "Workflow" && *outcome == Outcome::Created {
                self.events.workflow_changed(name);
                if let Some((_, created_at)) = created.iter().find(|(id, _)| id == name) {
                    crate::traces::applied(name, *created_at, wall_clock);
                }
            }
        }
        for wf in &with_bmc_steps {
            let created = names
                .iter()
                .zip(&outcomes)
                .any(|((kind, name), o)| *kind == "Workflow" && *name == wf.id && *o == Outcome::Created);
            if created && let Err(e) = self.start_workflow_bmc_steps(wf).await {
                // Not lost: dispatch submits it again before the first action.
                tracing::error!(workflow = %wf.id, error = %e, "cannot submit the workflow's BMC start step");
            }
        }
        for agent in agents {
            self.events.wake_agent(&agent);
        }
        let applied = names
            .into_iter()
            .zip(outcomes)
            .map(|((kind, name), outcome)| {
                let agent_token = match (kind, outcome) {
                    ("Hardware", Outcome::Created) => tokens.remove(&name).unwrap_or_default(),
                    _ => String::new(),
                };
                Applied { kind, name, outcome, agent_token }
            })
            .collect();
        Ok((Committed::Applied(applied), warnings))
    }

    /// The workflow `source` describes, rendered and planned, without
    /// creating anything.
    /// Its actions are shown as they are dispatched (images rewritten by
    /// `--image-rewrite`, terminal steps inferred from their image); the
    /// second value holds, per action, the image the template named where
    /// a rewrite changed it ("" elsewhere); the third, for documents, the
    /// warnings an apply of them would give (fields kiln ignores, as
    /// Tinkerbell does, of Tinkerbell objects and template bodies).
    pub async fn plan(
        &self,
        opctx: &OpContext,
        source: PlanSource,
    ) -> Result<(model::Workflow, Vec<String>, Vec<String>), AppError> {
        opctx.require_operator_read()?;
        let (mut wf, warnings) = match source {
            PlanSource::Workflow(id) => (self.store.get_workflow(&id).await?, Vec::new()),
            PlanSource::Documents(yaml) => {
                let (docs, warnings) = parse_documents_with_warnings("input", &yaml)
                    .map_err(|e| AppError::InvalidArgument(e.to_string()))?;
                let (wf, template_warnings) = admission::plan(&self.store, docs).await?;
                (wf, warnings.iter().chain(&template_warnings).map(ToString::to_string).collect())
            }
        };
        let mut template_images = Vec::with_capacity(wf.actions.len());
        for action in &mut wf.actions {
            let written = action.spec.image.clone();
            action.spec = super::images::dispatched(&self.image_rewrites, std::mem::take(&mut action.spec));
            template_images.push(if action.spec.image == written { String::new() } else { written });
        }
        Ok((wf, template_images, warnings))
    }
}
