//! `kiln describe`: one object in detail.

use kiln_proto::v1::{self, GetRequest};

use crate::Kind;
use crate::connection::{Client, status};
use crate::output::{Format, age, between, elapsed};
use crate::view::{self, action_state, workflow_state};

pub async fn run(c: &mut Client, kind: Kind, name: &str) -> anyhow::Result<()> {
    let name = name.to_string();
    match kind {
        Kind::Action | Kind::BmcJobs => return super::get::run(c, kind, Some(name), Format::Yaml).await,
        Kind::Hardware => {
            let h = c.get_hardware(GetRequest { name }).await.map_err(status)?.into_inner();
            print!("{}", serde_yaml_ng::to_string(&view::Hardware::from(&h))?);
        }
        Kind::Template => {
            let t = c.get_template(GetRequest { name }).await.map_err(status)?.into_inner();
            println!("template {} (created {} ago)\n---\n{}", t.name, age(&t.created_at), t.data.trim_end());
        }
        Kind::Workflow => {
            let w = c.get_workflow(GetRequest { name }).await.map_err(status)?.into_inner();
            print!("{}", describe_workflow(&w));
        }
    }
    Ok(())
}

fn describe_workflow(w: &v1::Workflow) -> String {
    let t = |ts: &Option<prost_types::Timestamp>| view::time(ts).unwrap_or_else(|| "-".into());
    let mut out = format!(
        "workflow:  {}\ntemplate:  {}\nhardware:  {}\nstate:     {}\n",
        w.id,
        w.template,
        w.hardware,
        workflow_state(w.state)
    );
    if !w.reason.is_empty() {
        out.push_str(&format!("reason:    {}\n", w.reason));
    }
    out.push_str(&format!(
        "created:   {}\nstarted:   {}\nfinished:  {}\n",
        t(&w.created_at),
        t(&w.started_at),
        t(&w.finished_at)
    ));
    if let Some(d) = between(&w.started_at, &w.finished_at) {
        out.push_str(&format!("duration:  {}\n", elapsed(d)));
    }
    out.push_str("actions:\n");
    for a in &w.actions {
        let s = a.spec.clone().unwrap_or_default();
        out.push_str(&format!("  {}. {}/{}  {}  ({})\n", a.index + 1, s.task, s.name, action_state(a.state), s.image));
        // What happens when it fails: retries, then the handlers (whose
        // lines are in `kiln logs` under the action's prefix).
        if s.retries > 0 {
            out.push_str(&format!("     retries: {} (backoff {}s)\n", s.retries, s.retry_backoff_seconds));
        }
        for (handler, argv) in [("on-failure", &s.on_failure), ("on-timeout", &s.on_timeout)] {
            if !argv.is_empty() {
                out.push_str(&format!("     {handler}: {}\n", serde_json::to_string(argv).unwrap_or_default()));
            }
        }
        for at in &a.attempts {
            out.push_str(&format!(
                "     attempt {} [{}] {}: created {}, pulling {}, running {}, finished {}",
                at.number,
                at.id,
                action_state(at.state),
                t(&at.created_at),
                t(&at.pulling_at),
                t(&at.running_at),
                t(&at.finished_at)
            ));
            if let Some(d) = between(&at.running_at, &at.finished_at) {
                out.push_str(&format!(", ran {}", elapsed(d)));
            }
            out.push('\n');
            if at.exit_code.is_some() || !at.reason.is_empty() {
                out.push_str(&format!(
                    "       exit code {}  {} {}\n",
                    at.exit_code.map_or("-".into(), |c| c.to_string()),
                    at.reason,
                    at.message
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workflow_shows_each_actions_retries_and_handlers() {
        let spec = |retries, on_failure: &[&str]| v1::ActionSpec {
            task: "t".into(),
            name: format!("a{retries}"),
            image: "reg.io/a:v1".into(),
            retries,
            retry_backoff_seconds: 3,
            on_failure: on_failure.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let wf = v1::Workflow {
            id: "wf".into(),
            actions: vec![
                v1::ActionStatus {
                    index: 0,
                    state: v1::ActionState::Pending as i32,
                    spec: Some(spec(2, &["sh", "-c", "cleanup"])),
                    ..Default::default()
                },
                v1::ActionStatus { index: 1, spec: Some(spec(0, &[])), ..Default::default() },
            ],
            ..Default::default()
        };
        let text = describe_workflow(&wf);
        let first = text.find("1. t/a2").unwrap();
        let second = text.find("2. t/a0").unwrap();
        assert_eq!(
            &text[first..second],
            "1. t/a2  PENDING  (reg.io/a:v1)\n     retries: 2 (backoff 3s)\n     on-failure: [\"sh\",\"-c\",\"cleanup\"]\n  "
        );
        assert!(!text[second..].contains("retries") && !text[second..].contains("on-failure"), "{text}");
    }
}
