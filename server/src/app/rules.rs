//! Rules (`kind: Rule`, docs/rules.md): a discovered machine whose
//! inventory matches a rule's expression is adopted under the name the rule
//! renders, with its metadata, and gets a workflow from the rule's template.
//!
//! Rules are evaluated when a discovered machine reports its inventory
//! (again or for the first time) and when rules are applied (for the
//! machines already discovered). They are tried in order, highest priority
//! first, then by name; the first that matches *and* can adopt wins. A rule
//! that matches but cannot adopt (its `max_count` reached, its name taken,
//! its name not rendering, its workflow refused) is skipped, audited, and
//! the next one is tried. The adoption is one store transaction with the
//! record of the match, keyed by MAC, which is what makes a machine matched
//! once across reports, restarts and replicas, and keeps `max_count`
//! ([`crate::store::Store::adopt_by_rule`]).

use std::collections::BTreeMap;

use kiln_documents::{Document, Facts, HardwareDoc, Rule, WorkflowDoc, rule_order};

use super::apply::Committed;
use super::{App, AppError, OpContext};
use crate::model::now_millis;
use crate::store::{Event, EventKind, EventOutcome, RuleAdoption, RuleMatch, StoredRule};

/// What one rule would do with one discovered machine (`kiln plan rule`).
#[derive(Debug, Clone, PartialEq)]
pub struct RulePlanRow {
    pub rule: String,
    pub priority: i64,
    pub max_count: Option<u32>,
    /// Machines it adopted so far.
    pub adopted: u32,
    pub matched: bool,
    /// Why it would not adopt the machine (no match, an evaluation error,
    /// full, a name that does not render); empty when it would.
    pub why_not: String,
    /// The adopted Hardware's name, when it renders.
    pub hardware_name: String,
    pub metadata: serde_json::Value,
    /// The workflow it would create: (name, template, hardware_map).
    pub workflow: Option<(String, String, BTreeMap<String, String>)>,
    /// The rule that would adopt the machine (at most one row).
    pub winner: bool,
}

/// Every rule's verdict on one discovered machine, in the order tried.
#[derive(Debug, Clone, PartialEq)]
pub struct RulePlan {
    /// The discovered machine's hardware id and MAC.
    pub machine: String,
    pub mac: String,
    pub rows: Vec<RulePlanRow>,
}

/// A rule's actions for one machine, computed before anything is written.
struct Prepared {
    name: String,
    metadata: serde_json::Value,
    workflow: Option<WorkflowDoc>,
}

fn prepare(rule: &Rule, facts: &Facts) -> Result<Prepared, String> {
    let name = rule.hardware_name(facts).map_err(|e| format!("hardware_name: {e}"))?;
    let workflow = rule.doc.workflow.as_ref().map(|w| {
        let mut hardware_map = w.hardware_map.clone();
        // Tinkerbell's usual map: the machine as device_1, by its MAC
        // (the adopted Hardware's agent id is that MAC).
        hardware_map.insert("device_1".into(), facts.mac.clone());
        WorkflowDoc {
            id: name.clone(),
            template: w.template.clone(),
            hardware: name.clone(),
            hardware_map,
            boot_options: None,
        }
    });
    Ok(Prepared { name, metadata: rule.doc.metadata.clone(), workflow })
}

/// The stored rules compiled, in the order they are tried. A stored rule
/// this build cannot compile (written by another version) is left out,
/// with a warning in the log.
fn compiled(stored: Vec<StoredRule>) -> Vec<Rule> {
    let mut docs: Vec<_> = stored.into_iter().map(|r| r.doc).collect();
    docs.sort_by(rule_order);
    docs.into_iter()
        .filter_map(|doc| {
            let name = doc.name.clone();
            Rule::compile(doc)
                .map_err(|e| tracing::warn!(rule = %name, error = %e, "stored rule does not compile; skipped"))
                .ok()
        })
        .collect()
}

impl App {
    /// The facts of discovered machine `mac` (hardware `id`): `None`
    /// before its first inventory report.
    async fn facts(&self, mac: &str, id: &str) -> Result<Option<Facts>, AppError> {
        let Some(stored) = self.store.get_inventory(id).await? else { return Ok(None) };
        let inventory = serde_json::from_str(&stored.inventory_json)
            .map_err(|e| AppError::internal(format!("reading the inventory of {id}"), e))?;
        Ok(Some(Facts { mac: mac.to_string(), inventory }))
    }

    /// Evaluates the rules for every discovered machine that reported its
    /// inventory (after rules were applied). Errors are logged and audited
    /// per machine; they fail no apply.
    pub(crate) async fn evaluate_all_rules(&self) {
        let discovered = match self.store.list_discovered().await {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e.detailed(), "cannot list discovered machines for the rules");
                return;
            }
        };
        // Listed and compiled once for all machines (thousands may wait).
        let rules = match self.store.list_rules().await {
            Ok(stored) => compiled(stored),
            Err(e) => {
                tracing::error!(error = %e.detailed(), "cannot list the rules");
                return;
            }
        };
        for (mac, id) in discovered {
            if let Err(e) = self.try_rules(&mac, &id, &rules).await {
                tracing::error!(%mac, error = %e, "rules not evaluated");
            }
        }
    }

    /// Evaluates the rules for discovered machine `mac`, adopting it by
    /// the first that matches and can. Returns the name it was adopted
    /// as, if it was (by this call).
    pub(crate) async fn evaluate_rules(&self, mac: &str) -> Option<String> {
        let found = async {
            // Without rules (the usual case while only discovering) this
            // costs one small read per report.
            let rules = compiled(self.store.list_rules().await?);
            if rules.is_empty() {
                return Ok(None);
            }
            let discovered = self.store.list_discovered().await?.into_iter().find(|(m, _)| m == mac);
            let Some((_, id)) = discovered else { return Ok(None) };
            self.try_rules(mac, &id, &rules).await
        };
        match found.await {
            Ok(adopted) => adopted,
            Err(e) => {
                tracing::error!(%mac, error = %e, "rules not evaluated");
                None
            }
        }
    }

    /// Tries `rules` (in order) on discovered machine `mac` (hardware `id`).
    async fn try_rules(&self, mac: &str, id: &str, rules: &[Rule]) -> Result<Option<String>, AppError> {
        let Some(facts) = self.facts(mac, id).await? else { return Ok(None) };
        let mut events = Vec::new();
        let mut adopted = None;
        for rule in rules {
            let rule_name = &rule.doc.name;
            let event = |action: &str, outcome: EventOutcome, object: String, reason: String| Event {
                cursor: 0,
                time: now_millis(),
                kind: EventKind::Write,
                actor: format!("rule {rule_name}"),
                peer: String::new(),
                action: action.into(),
                object,
                outcome,
                reason,
                count: 1,
            };
            let machine = format!("hardware {id} (MAC {mac})");
            match rule.matches(&facts) {
                Ok(false) => continue,
                Ok(true) => {}
                Err(e) => {
                    tracing::warn!(target: "kiln::audit", rule = %rule_name, %mac, error = %e, "rule not evaluated");
                    events.push(event("rule-evaluate", EventOutcome::Refused, machine, format!("match: {e}")));
                    continue;
                }
            }
            let refused = |reason: String| event("rule-match", EventOutcome::Refused, machine.clone(), reason);
            let prepared = match prepare(rule, &facts) {
                Ok(p) => p,
                Err(e) => {
                    events.push(refused(e));
                    continue;
                }
            };
            let m = RuleMatch {
                mac: mac.to_string(),
                rule: rule_name.clone(),
                hardware_id: prepared.name.clone(),
                matched_at: now_millis(),
            };
            match self.adopt_for_rule(id, mac, &prepared, m).await {
                Ok(Committed::Applied(_)) => {
                    let workflow =
                        prepared.workflow.as_ref().map(|w| format!(", workflow {}", w.id)).unwrap_or_default();
                    tracing::info!(target: "kiln::audit", rule = %rule_name, %mac, hardware = %prepared.name, "rule matched");
                    events.push(event(
                        "rule-match",
                        EventOutcome::Ok,
                        format!("{machine} as hardware {}{workflow}", prepared.name),
                        String::new(),
                    ));
                    adopted = Some(prepared.name);
                    break;
                }
                Ok(Committed::Refused(RuleAdoption::Full { max_count })) => {
                    events.push(refused(format!("rule {rule_name} is full: max_count {max_count} reached")));
                }
                Ok(Committed::Refused(RuleAdoption::NameTaken)) => {
                    events.push(refused(format!("hardware {} exists already", prepared.name)));
                }
                // Deleted meanwhile: as if it never was.
                Ok(Committed::Refused(RuleAdoption::NoRule)) => {}
                // Matched or adopted by another replica (or an operator)
                // meanwhile: nothing left to do.
                Ok(Committed::Refused(RuleAdoption::AlreadyMatched { .. } | RuleAdoption::NotDiscovered)) => break,
                Ok(Committed::Refused(RuleAdoption::Adopted(_))) => unreachable!("an adoption is not a refusal"),
                Err(e) => events.push(refused(e.to_string())),
            }
        }
        if !events.is_empty() {
            self.record_events(events).await;
        }
        Ok(adopted)
    }

    /// The adoption of discovered machine `id` (`mac`) as `p` says, with
    /// its workflow, through the apply path (admission, the kept agent
    /// token and inventory, the workflow's start) in one transaction with
    /// the match `m`.
    async fn adopt_for_rule(&self, id: &str, mac: &str, p: &Prepared, m: RuleMatch) -> Result<Committed, AppError> {
        let discovered = self.store.get_hardware(id).await?.doc;
        let mut metadata = match discovered.metadata {
            serde_json::Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        if let serde_json::Value::Object(add) = &p.metadata {
            metadata.extend(add.clone());
        }
        let hardware = HardwareDoc {
            id: p.name.clone(),
            // Its enrolled agent keeps its token (see App::adoptions).
            agent_id: mac.to_string(),
            macs: vec![mac.to_string()],
            metadata: serde_json::Value::Object(metadata),
            ..super::discovery::discovered_doc(mac)
        };
        let mut docs = vec![Document::Hardware(hardware)];
        docs.extend(p.workflow.clone().map(Document::Workflow));
        let (committed, _) = self.write_documents(&OpContext::system("rules"), docs, Vec::new(), Some(m)).await?;
        Ok(committed)
    }

    /// What the rules would do with discovered machine `machine` (its
    /// hardware id or MAC): `rule` alone, or every rule in order. Nothing
    /// is written.
    pub async fn plan_rules(&self, opctx: &OpContext, rule: Option<&str>, machine: &str) -> Result<RulePlan, AppError> {
        opctx.require_operator_read()?;
        let discovered = self.store.list_discovered().await?;
        let wanted = kiln_documents::parse_mac(machine).unwrap_or_else(|| machine.to_string());
        let Some((mac, id)) = discovered.into_iter().find(|(m, id)| *m == wanted || *id == machine) else {
            return Err(match self.store.get_hardware(machine).await {
                Ok(_) => AppError::FailedPrecondition(format!(
                    "field machine: hardware {machine} is not a discovered machine"
                )),
                Err(_) => AppError::NotFound(format!("field machine: no discovered machine {machine}")),
            });
        };
        let facts = self.facts(&mac, &id).await?.ok_or_else(|| {
            AppError::FailedPrecondition(format!(
                "discovered machine {id} has not reported its inventory yet: rules match on it"
            ))
        })?;
        let stored = self.store.list_rules().await?;
        if let Some(name) = rule
            && !stored.iter().any(|r| r.doc.name == name)
        {
            return Err(AppError::NotFound(format!("field rule: no rule {name}")));
        }
        let matches = self.store.list_rule_matches().await?;
        // A machine is matched once (docs/rules.md): one matched before,
        // adopted since and deleted, is discovered again but not adopted.
        let earlier = matches.iter().find(|m| m.mac == mac);
        let mut rows = Vec::new();
        let mut won = false;
        for r in compiled(stored) {
            let adopted = matches.iter().filter(|m| m.rule == r.doc.name).count() as u32;
            let mut row = RulePlanRow {
                rule: r.doc.name.clone(),
                priority: r.doc.priority,
                max_count: r.doc.max_count,
                adopted,
                matched: false,
                why_not: String::new(),
                hardware_name: String::new(),
                metadata: r.doc.metadata.clone(),
                workflow: None,
                winner: false,
            };
            match r.matches(&facts) {
                Ok(true) => row.matched = true,
                Ok(false) => row.why_not = format!("match: {} is false for this machine", r.doc.match_expr),
                Err(e) => row.why_not = format!("match: {e}"),
            }
            match prepare(&r, &facts) {
                Ok(p) => {
                    row.hardware_name = p.name;
                    row.workflow = p.workflow.map(|w| (w.id, w.template, w.hardware_map));
                }
                Err(e) if row.why_not.is_empty() => row.why_not = e,
                Err(_) => {}
            }
            if row.why_not.is_empty()
                && let Some(m) = earlier
            {
                row.why_not = format!(
                    "this machine was matched before, by rule {} as {}: it is matched once",
                    m.rule, m.hardware_id
                );
            }
            if row.why_not.is_empty()
                && let Some(max) = r.doc.max_count
                && adopted >= max
            {
                row.why_not = format!("full: max_count {max} reached");
            }
            if row.why_not.is_empty() && !won {
                row.winner = true;
                won = true;
            }
            if rule.is_none_or(|name| name == r.doc.name) {
                rows.push(row);
            }
        }
        Ok(RulePlan { machine: id, mac, rows })
    }

    /// The rules, in the order they are tried, with the number of machines
    /// each adopted.
    pub async fn list_rules(&self, opctx: &OpContext) -> Result<Vec<(StoredRule, u32)>, AppError> {
        opctx.require_operator_read()?;
        let mut rules = self.store.list_rules().await?;
        rules.sort_by(|a, b| rule_order(&a.doc, &b.doc));
        let matches = self.store.list_rule_matches().await?;
        Ok(rules
            .into_iter()
            .map(|r| {
                let n = matches.iter().filter(|m| m.rule == r.doc.name).count() as u32;
                (r, n)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::boot::Decision;
    use crate::app::tests::app_with_netboot;
    use crate::store::EventQuery;

    const TEMPLATE: &str = r#"
kind: Template
name: t
data: |
  version: "0.1"
  name: t
  tasks:
    - name: one
      worker: "{{.device_1}}"
      actions:
        - {name: a, image: "127.0.0.1:5000/a:v1"}
"#;

    const RULES: &str = r#"
kind: Rule
name: big
priority: 20
max_count: 1
match: cpus >= 64 && disks.exists(d, d.size_bytes >= 1 * TiB)
hardware_name: "big-{{ .serial | lower }}"
metadata: {role: storage}
workflow: {template: t}
---
kind: Rule
name: small
priority: 10
match: cpus < 64
hardware_name: "small-{{ .serial | lower }}"
"#;

    fn inventory(cpus: u32, serial: &str) -> String {
        serde_json::json!({
            "system": {"vendor": "QEMU", "serial": serial},
            "cpu": {"threads": cpus},
            "disks": [{"name": "vda", "size_bytes": 2_u64 << 40}]
        })
        .to_string()
    }

    async fn events(app: &App, action: &str) -> Vec<Event> {
        let q = EventQuery { after: 0, since: 0, kind: None, limit: 1000, newest: false };
        app.store.list_events(q).await.unwrap().into_iter().filter(|e| e.action == action).collect()
    }

    #[tokio::test]
    async fn the_winning_rule_adopts_a_reporting_machine_once_within_max_count() {
        let dir = tempfile::tempdir().unwrap();
        let app = app_with_netboot(dir.path(), crate::netboot::NetbootConfig { discovery: true, ..Default::default() });
        let (op, sys) = (OpContext::operator(), OpContext::system("test"));
        app.apply(&op, "defs", &format!("{TEMPLATE}---{RULES}")).await.unwrap();
        let macs = ["52:54:00:00:09:01", "52:54:00:00:09:02", "52:54:00:00:09:03"];
        for mac in macs {
            assert!(matches!(app.boot_decision(&sys, mac).await, Decision::Hook { .. }));
        }
        // No inventory yet: nothing to match on, and plan says so.
        let e = app.plan_rules(&op, None, macs[0]).await.unwrap_err();
        assert!(matches!(&e, AppError::FailedPrecondition(m) if m.contains("inventory")), "{e:?}");

        // The big machine: `big` wins (priority), with its name, metadata
        // and workflow (device_1 = its MAC).
        app.report_inventory(&OpContext::agent(macs[0]), &inventory(64, "S1")).await.unwrap();
        let hw = app.store.get_hardware("big-s1").await.unwrap().doc;
        assert_eq!((hw.macs.clone(), hw.agent_id.as_str()), (vec![macs[0].to_string()], macs[0]));
        assert_eq!(hw.metadata, serde_json::json!({"role": "storage"}));
        let wf = app.store.get_workflow("big-s1").await.unwrap();
        assert_eq!((wf.template.as_str(), wf.hardware.as_str()), ("t", "big-s1"));
        assert_eq!(wf.hardware_map.get("device_1").map(String::as_str), Some(macs[0]));
        assert!(!app.is_discovered_agent(macs[0]).await.unwrap());
        // Its inventory moved with it.
        assert!(app.store.get_inventory("big-s1").await.unwrap().is_some());

        // Another big one: `big` is full (max_count 1), `small` does not
        // match: it stays discovered, and the refusal is audited.
        app.report_inventory(&OpContext::agent(macs[1]), &inventory(64, "S2")).await.unwrap();
        assert!(app.is_discovered_agent(macs[1]).await.unwrap());
        let refused = events(&app, "rule-match").await;
        assert!(
            refused.iter().any(|e| e.outcome == EventOutcome::Refused && e.reason.contains("max_count 1")),
            "{refused:?}"
        );
        let plan = app.plan_rules(&op, None, "discovered-525400000902").await.unwrap();
        let rows: Vec<_> = plan.rows.iter().map(|r| (r.rule.as_str(), r.matched, r.winner)).collect();
        assert_eq!(rows, [("big", true, false), ("small", false, false)]);
        assert!(plan.rows[0].why_not.contains("full"), "{:?}", plan.rows[0]);
        assert_eq!(plan.rows[0].hardware_name, "big-s2");

        // A small one: `small`, no workflow. Plan first shows the winner.
        app.report_inventory(&OpContext::agent(macs[2]), &inventory(8, "S3")).await.unwrap();
        assert!(app.store.get_hardware("small-s3").await.is_ok());
        assert!(app.store.get_workflow("small-s3").await.is_err());

        // Matched once: the same reports again change nothing.
        for (mac, cpus, serial) in [(macs[0], 64, "S1"), (macs[2], 8, "S3")] {
            let _ = app.report_inventory(&OpContext::agent(mac), &inventory(cpus, serial)).await;
        }
        let matches = app.store.list_rule_matches().await.unwrap();
        assert_eq!(matches.iter().map(|m| m.hardware_id.as_str()).collect::<Vec<_>>(), ["big-s1", "small-s3"]);
        let ok = events(&app, "rule-match").await.into_iter().filter(|e| e.outcome == EventOutcome::Ok).count();
        assert_eq!(ok, 2);

        // A rule applied later adopts a machine discovered before it.
        let more = "kind: Rule\nname: more\nmatch: serial == 'S2'\nhardware_name: \"late-{{ .serial | lower }}\"\n";
        app.apply(&op, "more", more).await.unwrap();
        assert!(app.store.get_hardware("late-s2").await.is_ok());
        assert_eq!(app.store.list_discovered().await.unwrap(), vec![]);
        let listed = app.list_rules(&op).await.unwrap();
        let counts: Vec<_> = listed.iter().map(|(r, n)| (r.doc.name.as_str(), *n)).collect();
        assert_eq!(counts, [("big", 1), ("small", 1), ("more", 1)]);
    }

    #[tokio::test]
    async fn rules_are_refused_at_apply_naming_rule_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let app = app_with_netboot(dir.path(), Default::default());
        let op = OpContext::operator();
        let bad = "kind: Rule\nname: r1\nmatch: cpus >= \nhardware_name: x\n";
        let e = app.apply(&op, "r.yaml", bad).await.unwrap_err().to_string();
        assert!(e.contains("Rule \"r1\"") && e.contains("field match") && e.contains("column"), "{e}");
        let typo = "kind: Rule\nname: r1\nmatch: cpu >= 4\nhardware_name: x\n";
        let e = app.apply(&op, "r.yaml", typo).await.unwrap_err().to_string();
        assert!(e.contains("field match") && e.contains("\"cpu\""), "{e}");
        let no_template = "kind: Rule\nname: r1\nmatch: 'true'\nhardware_name: x\nworkflow: {template: nope}\n";
        let e = app.apply(&op, "r.yaml", no_template).await.unwrap_err().to_string();
        assert!(e.contains("workflow.template") && e.contains("nope"), "{e}");
        let e = app.apply(&op, "r.yaml", "kind: Rule\nname: r1\nmatch: 'true'\nhardware_name: x\nmax_count: 0\n").await;
        assert!(e.unwrap_err().to_string().contains("field max_count"));
        // Read-only operators may list and plan, not apply.
        assert!(matches!(
            app.apply(&OpContext::read_only_operator(), "r", "kind: Rule\nname: r1\nmatch: 'true'\nhardware_name: x\n")
                .await,
            Err(AppError::PermissionDenied(_))
        ));
        assert!(app.list_rules(&OpContext::read_only_operator()).await.unwrap().is_empty());
        assert!(matches!(app.plan_rules(&op, Some("r1"), "52:54:00:00:09:09").await, Err(AppError::NotFound(_))));
    }
}
