//! `kiln describe`: one object in detail.

use kiln_proto::v1::{self, GetRequest};

use crate::Kind;
use crate::connection::{Client, status};
use crate::output::{Format, age, between, elapsed};
use crate::view::{self, action_state, workflow_state};

pub async fn run(c: &mut Client, kind: Kind, name: &str) -> anyhow::Result<()> {
    let name = name.to_string();
    match kind {
        Kind::Action => return super::get::run(c, kind, Some(name), Format::Yaml).await,
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
