//! `kiln get`: lists objects of a kind, or shows one.

use anyhow::bail;
use kiln_proto::v1::{self, GetRequest, ListRequest};

use crate::Kind;
use crate::connection::{Client, status};
use crate::output::{Format, age, structured, table};
use crate::view::{self, action_state, workflow_state};

pub async fn run(c: &mut Client, kind: Kind, name: Option<String>, output: Format) -> anyhow::Result<()> {
    match (kind, name) {
        (Kind::Action, name) => {
            let mut items = c.list_action_definitions(ListRequest {}).await.map_err(status)?.into_inner().items;
            keep_named(&mut items, &name, |d| &d.name, |n| format!("action definition {n:?} not found"))?;
            let views: Vec<_> = items.iter().map(view::ActionDefinition::from).collect();
            if !structured_named(output, &name, &views)? {
                let rows: Vec<_> =
                    items.iter().map(|d| vec![d.name.clone(), d.image.clone(), d.description.clone()]).collect();
                print!("{}", table(&["NAME", "IMAGE", "DESCRIPTION"], &rows));
            }
        }
        (Kind::Hardware, Some(name)) => {
            let h = c.get_hardware(GetRequest { name }).await.map_err(status)?.into_inner();
            if !structured(output, &view::Hardware::from(&h))? {
                print!("{}", hardware_table(std::slice::from_ref(&h)));
            }
        }
        (Kind::Hardware, None) => {
            let items = c.list_hardware(ListRequest {}).await.map_err(status)?.into_inner().items;
            if !structured(output, &items.iter().map(view::Hardware::from).collect::<Vec<_>>())? {
                print!("{}", hardware_table(&items));
            }
        }
        (Kind::Template, Some(name)) => {
            let t = c.get_template(GetRequest { name }).await.map_err(status)?.into_inner();
            if !structured(output, &view::Template::from(&t))? {
                print!("{}", table(&["NAME", "AGE"], &[vec![t.name.clone(), age(&t.created_at)]]));
            }
        }
        (Kind::Template, None) => {
            let items = c.list_templates(ListRequest {}).await.map_err(status)?.into_inner().items;
            if !structured(output, &items.iter().map(view::Template::from).collect::<Vec<_>>())? {
                let rows: Vec<_> = items.iter().map(|t| vec![t.name.clone(), age(&t.created_at)]).collect();
                print!("{}", table(&["NAME", "AGE"], &rows));
            }
        }
        (Kind::Workflow, Some(name)) => {
            let w = c.get_workflow(GetRequest { name }).await.map_err(status)?.into_inner();
            if !structured(output, &view::Workflow::from(&w))? {
                print!("{}", workflow_table(std::slice::from_ref(&w)));
            }
        }
        (Kind::BmcJobs, name) => {
            let mut items =
                c.list_bmc_jobs(v1::ListBmcJobsRequest { limit: 1000 }).await.map_err(status)?.into_inner().items;
            keep_named(&mut items, &name, |j| &j.id, |n| format!("bmc job {n:?} not found (among the newest 1000)"))?;
            let views: Vec<_> = items.iter().map(view::BmcJob::from).collect();
            if !structured_named(output, &name, &views)? {
                let rows: Vec<_> = items
                    .iter()
                    .map(|j| {
                        let outcome = if j.state == "succeeded" { &j.result } else { &j.error };
                        // Jobs a workflow's boot options submitted are
                        // keyed workflow/ID/STEP.
                        let workflow = j
                            .key
                            .strip_prefix("workflow/")
                            .and_then(|k| k.rsplit_once('/'))
                            .map_or_else(|| "-".to_string(), |(w, step)| format!("{w} ({step})"));
                        vec![
                            j.id.clone(),
                            workflow,
                            j.hardware.clone(),
                            j.operation.clone(),
                            j.state.clone(),
                            j.attempts.to_string(),
                            outcome.clone(),
                            age(&j.created_at),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table(
                        &["ID", "WORKFLOW", "HARDWARE", "OPERATION", "STATE", "ATTEMPTS", "RESULT/ERROR", "AGE"],
                        &rows
                    )
                );
            }
        }
        (Kind::Rule, name) => {
            let mut items = c.list_rules(ListRequest {}).await.map_err(status)?.into_inner().items;
            keep_named(&mut items, &name, |r| &r.name, |n| format!("rule {n:?} not found"))?;
            let views: Vec<_> = items.iter().map(view::Rule::from).collect();
            if !structured_named(output, &name, &views)? {
                let rows: Vec<_> = items
                    .iter()
                    .map(|r| {
                        let max = if r.max_count > 0 { r.max_count.to_string() } else { "-".into() };
                        let workflow =
                            if r.workflow_template.is_empty() { "-".into() } else { r.workflow_template.clone() };
                        vec![
                            r.name.clone(),
                            r.priority.to_string(),
                            format!("{}/{max}", r.adopted),
                            r.hardware_name.clone(),
                            workflow,
                            r.r#match.clone(),
                        ]
                    })
                    .collect();
                print!("{}", table(&["NAME", "PRIORITY", "ADOPTED", "HARDWARE NAME", "TEMPLATE", "MATCH"], &rows));
            }
        }
        (Kind::Workflow, None) => {
            let items = c.list_workflows(ListRequest {}).await.map_err(status)?.into_inner().items;
            if !structured(output, &items.iter().map(view::Workflow::from).collect::<Vec<_>>())? {
                print!("{}", workflow_table(&items));
            }
        }
    }
    Ok(())
}

/// Kinds the server only lists: with a name, keep that one item, or fail
/// with `not_found(name)`.
fn keep_named<T>(
    items: &mut Vec<T>,
    name: &Option<String>,
    key: impl Fn(&T) -> &String,
    not_found: impl FnOnce(&str) -> String,
) -> anyhow::Result<()> {
    if let Some(name) = name {
        items.retain(|i| key(i) == name);
        if items.is_empty() {
            bail!(not_found(name));
        }
    }
    Ok(())
}

/// `-o json|yaml` of a listed kind: the item itself when it was asked for
/// by name, else the list.
fn structured_named<V: serde::Serialize>(output: Format, name: &Option<String>, views: &[V]) -> anyhow::Result<bool> {
    match (name, views) {
        (Some(_), [one]) => structured(output, one),
        _ => structured(output, &views),
    }
}

fn hardware_table(items: &[v1::Hardware]) -> String {
    let rows: Vec<_> = items
        .iter()
        .map(|h| {
            vec![
                h.id.clone(),
                h.agent_id.clone(),
                h.macs.join(","),
                h.disks.join(","),
                h.state.clone(),
                inventory_summary(h),
                age(&h.created_at),
            ]
        })
        .collect();
    table(&["ID", "AGENT ID", "MACS", "DISKS", "STATE", "INVENTORY", "AGE"], &rows)
}

/// "4 CPUs, 7.8 GiB, 2 disks"; "-" before the agent's first report.
fn inventory_summary(h: &v1::Hardware) -> String {
    if !h.inventory_known {
        return "-".into();
    }
    let gib = h.inventory_memory_bytes as f64 / (1u64 << 30) as f64;
    format!("{} CPUs, {gib:.1} GiB, {} disks", h.inventory_cpus, h.inventory_disks)
}

fn workflow_table(items: &[v1::Workflow]) -> String {
    let rows: Vec<_> = items
        .iter()
        .map(|w| {
            let done = w.actions.iter().filter(|a| action_state(a.state) == "SUCCESS").count();
            vec![
                w.id.clone(),
                w.template.clone(),
                w.hardware.clone(),
                workflow_state(w.state).to_string(),
                format!("{done}/{}", w.actions.len()),
                age(&w.created_at),
            ]
        })
        .collect();
    table(&["ID", "TEMPLATE", "HARDWARE", "STATE", "PROGRESS", "AGE"], &rows)
}
