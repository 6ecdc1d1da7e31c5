//! `kiln plan`: the actions a workflow runs, rendered, without running anything.

use anyhow::bail;
use kiln_proto::v1::{self, PlanRequest, plan_request};

use crate::connection::{Client, status};
use crate::files::read_file;
use crate::output::{Format, structured};
use crate::view;

/// Plans the workflow document in `file` (with any hardware/template
/// documents beside it), or the existing workflow `workflow`.
pub async fn run(c: &mut Client, file: Option<String>, workflow: Option<String>, output: Format) -> anyhow::Result<()> {
    let source = match (file, workflow) {
        (Some(f), _) => plan_request::Source::Documents(read_file(&f)?),
        (None, Some(w)) => plan_request::Source::WorkflowId(w),
        (None, None) => bail!("plan needs -f FILE or a WORKFLOW id"),
    };
    let res = c.plan(PlanRequest { source: Some(source) }).await.map_err(status)?;
    for w in res.metadata().get_all_bin(kiln_proto::PLAN_WARNING_METADATA) {
        if let Ok(bytes) = w.to_bytes() {
            eprintln!("warning: {}", String::from_utf8_lossy(&bytes));
        }
    }
    let wf = res.into_inner();
    if !structured(output, &view::Workflow::from(&wf))? {
        print!("{}", plan_text(&wf));
    }
    Ok(())
}

/// What the rules (`rule`, or all in order) would do with discovered
/// machine `machine`.
pub async fn rules(c: &mut Client, rule: Option<String>, machine: String, output: Format) -> anyhow::Result<()> {
    let req = v1::RulePlanRequest { rule: rule.unwrap_or_default(), machine };
    let plan = c.plan_rule(req).await.map_err(status)?.into_inner();
    if !structured(output, &view::RulePlan::from(&plan))? {
        print!("{}", rule_plan_text(&plan));
    }
    Ok(())
}

fn rule_plan_text(p: &v1::RulePlan) -> String {
    let mut out = format!("machine {} (MAC {})\n", p.machine, p.mac);
    if p.rules.is_empty() {
        out.push_str("no rules\n");
    }
    for r in &p.rules {
        let limit = if r.max_count > 0 { format!(", {}/{} adopted", r.adopted, r.max_count) } else { String::new() };
        let verdict = if r.winner {
            "WINS: would adopt it".to_string()
        } else if r.why_not.is_empty() {
            "matches, but a rule before it wins".to_string()
        } else {
            format!("no: {}", r.why_not)
        };
        out.push_str(&format!("rule {} (priority {}{limit}): {verdict}\n", r.rule, r.priority));
        if !r.hardware_name.is_empty() {
            out.push_str(&format!("   hardware: {}\n", r.hardware_name));
        }
        if r.metadata_json != "{}" && !r.metadata_json.is_empty() {
            out.push_str(&format!("   metadata: {}\n", r.metadata_json));
        }
        if !r.workflow.is_empty() {
            let mut map: Vec<_> = r.workflow_hardware_map.iter().map(|(k, v)| format!("{k}={v}")).collect();
            map.sort();
            out.push_str(&format!(
                "   workflow: {} from template {} ({})\n",
                r.workflow,
                r.workflow_template,
                map.join(", ")
            ));
        }
    }
    if !p.rules.iter().any(|r| r.winner) {
        out.push_str("no rule would adopt it: it stays discovered\n");
    }
    out
}

fn plan_text(w: &v1::Workflow) -> String {
    let mut out = format!("workflow {}: template {}, hardware {}", w.id, w.template, w.hardware);
    if w.global_timeout_seconds > 0 {
        out.push_str(&format!(", global timeout {}s", w.global_timeout_seconds));
    }
    out.push('\n');
    for a in &w.actions {
        let s = a.spec.clone().unwrap_or_default();
        out.push_str(&format!("{}. {}/{}\n", a.index + 1, s.task, s.name));
        if s.builtin.is_empty() {
            out.push_str(&format!("   image:   {}\n", s.image));
            if !s.template_image.is_empty() {
                out.push_str(&format!("            (the template's {}, by --image-rewrite)\n", s.template_image));
            }
        } else {
            out.push_str(&format!("   builtin: {}\n", s.builtin));
        }
        if s.terminal {
            out.push_str("   terminal: SUCCESS is recorded before the step fires\n");
        }
        if !s.command.is_empty() {
            out.push_str(&format!("   command: {}\n", serde_json::to_string(&s.command).unwrap_or_default()));
        }
        let mut env: Vec<_> = s.environment.iter().collect();
        env.sort();
        if !env.is_empty() {
            out.push_str("   environment:\n");
            for (k, v) in env {
                out.push_str(&format!("     {k}={v}\n"));
            }
        }
        if !s.volumes.is_empty() {
            out.push_str(&format!("   volumes: {}\n", s.volumes.join(", ")));
        }
        if !s.pid.is_empty() {
            out.push_str(&format!("   pid:     {}\n", s.pid));
        }
        if !s.network.is_empty() {
            out.push_str(&format!("   network: {}\n", s.network));
        }
        out.push_str(&format!("   timeout: {}s\n", s.timeout_seconds));
        if s.retries > 0 {
            out.push_str(&format!("   retries: {} (backoff {}s)\n", s.retries, s.retry_backoff_seconds));
        }
        // Handlers run only when the action fails or times out: the plan is
        // where an operator can check them without breaking anything.
        for (handler, argv) in [("on-failure", &s.on_failure), ("on-timeout", &s.on_timeout)] {
            if !argv.is_empty() {
                out.push_str(&format!("   {handler}: {}\n", serde_json::to_string(argv).unwrap_or_default()));
            }
        }
        if let Some(r) = s.resources.as_ref().filter(|r| **r != Default::default()) {
            let mut limits = Vec::new();
            if r.memory_bytes > 0 {
                limits.push(format!("memory {} bytes", r.memory_bytes));
            }
            if r.nano_cpus > 0 {
                limits.push(format!("cpus {}", r.nano_cpus as f64 / 1e9));
            }
            if r.pids > 0 {
                limits.push(format!("pids {}", r.pids));
            }
            if !r.gpus.is_empty() {
                limits.push(format!("gpus {}", r.gpus));
            }
            out.push_str(&format!("   limits:  {}\n", limits.join(", ")));
        }
        out.push_str(&format!("   agent:   {}\n", a.agent_id));
    }
    if !w.disk_hints.is_empty() {
        out.push_str("disk hints (resolved again when the first action is handed out):\n");
    }
    for h in &w.disk_hints {
        out.push_str(&format!("  {} (in {}):\n", h.hint, h.actions.join(", ")));
        if h.error.is_empty() {
            out.push_str(&format!("    chosen: {}\n", h.path));
        } else {
            out.push_str(&format!("    unresolved: {}\n", h.error));
        }
        for c in &h.candidates {
            if c.matches {
                out.push_str(&format!("    {}: matches ({})\n", c.disk, c.path));
            } else {
                out.push_str(&format!("    {}: not chosen: {}\n", c.disk, c.why_not));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned(on_failure: &[&str], on_timeout: &[&str]) -> v1::Workflow {
        let spec = v1::ActionSpec {
            task: "t".into(),
            name: "a".into(),
            image: "reg.io/a:v1".into(),
            timeout_seconds: 60,
            on_failure: on_failure.iter().map(|s| s.to_string()).collect(),
            on_timeout: on_timeout.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        v1::Workflow {
            id: "wf".into(),
            template: "tpl".into(),
            hardware: "hw1".into(),
            actions: vec![v1::ActionStatus {
                index: 0,
                agent_id: "agent".into(),
                spec: Some(spec),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn text_shows_failure_and_timeout_handlers() {
        let text = plan_text(&planned(&["/bin/sh", "-c", "echo failed"], &["echo", "late"]));
        assert!(text.contains("\n   on-failure: [\"/bin/sh\",\"-c\",\"echo failed\"]\n"), "{text}");
        assert!(text.contains("\n   on-timeout: [\"echo\",\"late\"]\n"), "{text}");
        let none = plan_text(&planned(&[], &[]));
        assert!(!none.contains("on-failure") && !none.contains("on-timeout"), "{none}");
    }

    #[test]
    fn text_and_json_show_a_rewritten_image_and_terminal_steps() {
        let mut wf = planned(&[], &[]);
        let spec = wf.actions[0].spec.as_mut().unwrap();
        spec.template_image = "quay.io/tinkerbell/actions/kexec:latest".into();
        spec.terminal = true;
        let text = plan_text(&wf);
        assert!(
            text.contains(
                "   image:   reg.io/a:v1\n            (the template's quay.io/tinkerbell/actions/kexec:latest, by --image-rewrite)\n"
            ),
            "{text}"
        );
        assert!(text.contains("terminal: SUCCESS is recorded before the step fires"), "{text}");
        assert!(!plan_text(&planned(&[], &[])).contains("--image-rewrite"));
        let json = serde_json::to_value(view::Workflow::from(&wf)).unwrap();
        assert_eq!(json["actions"][0]["template_image"], "quay.io/tinkerbell/actions/kexec:latest", "{json}");
        assert_eq!(json["actions"][0]["terminal"], true, "{json}");
    }

    #[test]
    fn json_shows_failure_and_timeout_handlers() {
        let json = serde_json::to_value(view::Workflow::from(&planned(&["cleanup"], &["echo", "late"]))).unwrap();
        assert_eq!(json["actions"][0]["on_failure"], serde_json::json!(["cleanup"]), "{json}");
        assert_eq!(json["actions"][0]["on_timeout"], serde_json::json!(["echo", "late"]), "{json}");
    }

    #[test]
    fn json_shows_retries_terminal_builtin_and_limits() {
        let mut wf = planned(&[], &[]);
        let spec = wf.actions[0].spec.as_mut().unwrap();
        spec.retries = 2;
        spec.retry_backoff_seconds = 5;
        spec.terminal = true;
        spec.resources = Some(v1::Resources { memory_bytes: 1 << 30, pids: 100, ..Default::default() });
        let json = serde_json::to_value(view::Workflow::from(&wf)).unwrap();
        let a = &json["actions"][0];
        assert_eq!((a["retries"].as_u64(), a["retry_backoff_seconds"].as_u64()), (Some(2), Some(5)), "{a}");
        assert_eq!(a["terminal"], true);
        assert_eq!(a["resources"], serde_json::json!({"memory_bytes": 1u64 << 30, "pids": 100}));
        assert!(a.get("builtin").is_none() && a.get("external").is_none(), "empty ones are left out: {a}");
        let plain = serde_json::to_value(view::Workflow::from(&planned(&[], &[]))).unwrap();
        assert!(plain["actions"][0].get("resources").is_none());
        assert_eq!(plain["actions"][0]["terminal"], false);
    }
}
