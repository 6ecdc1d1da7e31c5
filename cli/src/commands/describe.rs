//! `kiln describe`: one object in detail.

use kiln_proto::v1::{self, GetRequest};

use crate::Kind;
use crate::connection::{Client, status};
use crate::output::{Format, age, between, elapsed};
use crate::view::{self, action_state, workflow_state};

pub async fn run(c: &mut Client, kind: Kind, name: &str, output: Option<Format>) -> anyhow::Result<()> {
    let name = name.to_string();
    match (kind, output) {
        (Kind::Hardware, _) => {
            let h = c.get_hardware(GetRequest { name: name.clone() }).await.map_err(status)?.into_inner();
            // NOT_FOUND: its agent reported none yet (the hardware exists).
            let inventory = match c.get_hardware_inventory(GetRequest { name }).await {
                Ok(i) => Some(i.into_inner()),
                Err(s) if s.code() == tonic::Code::NotFound => None,
                Err(s) => return Err(status(s)),
            };
            let described = view::DescribedHardware::new(&h, inventory.as_ref());
            if !crate::output::structured(output.unwrap_or(Format::Table), &described)? {
                print!("{}", serde_yaml_ng::to_string(&view::Hardware::from(&h))?);
                print!("{}", describe_inventory(inventory.as_ref()));
            }
        }
        (Kind::Action | Kind::BmcJobs | Kind::Rule, _) => {
            return super::get::run(c, kind, Some(name), output.unwrap_or(Format::Yaml)).await;
        }
        (_, Some(format)) if format != Format::Table => return super::get::run(c, kind, Some(name), format).await,
        (Kind::Template, _) => {
            let t = c.get_template(GetRequest { name }).await.map_err(status)?.into_inner();
            println!("template {} (created {} ago)\n---\n{}", t.name, age(&t.created_at), t.data.trim_end());
        }
        (Kind::Workflow, _) => {
            let w = c.get_workflow(GetRequest { name }).await.map_err(status)?.into_inner();
            print!("{}", describe_workflow(&w));
            // Its BMC steps (boot options, docs/bmc.md).
            print!("{}", describe_bmc_steps(&w.id, &w.bmc_steps));
        }
    }
    Ok(())
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// The inventory, readable: one line per subject, one per disk and NIC.
fn describe_inventory(inventory: Option<&v1::HardwareInventory>) -> String {
    let Some(reported) = inventory else {
        return "inventory: none reported yet (the agent reports it when it starts)\n".into();
    };
    let inv: kiln_inventory::Inventory = match serde_json::from_str(&reported.inventory_json) {
        Ok(inv) => inv,
        Err(e) => return format!("inventory: not readable by this kiln ({e}); see -o json\n"),
    };
    let join = |parts: Vec<Option<String>>| {
        let parts: Vec<String> = parts.into_iter().flatten().collect();
        if parts.is_empty() { "-".to_string() } else { parts.join(", ") }
    };
    let s = &inv.system;
    let mut out = format!(
        "inventory: (reported by agent {}, changed {} ago, last seen {} ago)\n",
        reported.agent_id,
        age(&reported.reported_at),
        age(&reported.seen_at)
    );
    let name = [&s.vendor, &s.product].iter().filter_map(|v| v.as_deref()).collect::<Vec<_>>().join(" ");
    out.push_str(&format!(
        "  system:    {}\n",
        join(vec![
            (!name.is_empty()).then_some(name),
            s.serial.as_ref().map(|v| format!("serial {v}")),
            s.uuid.as_ref().map(|v| format!("uuid {v}")),
        ])
    ));
    out.push_str(&format!(
        "  firmware:  {}\n",
        join(vec![
            s.firmware_vendor.clone(),
            s.firmware_version.as_ref().map(|v| format!("version {v}")),
            s.boot_mode.map(|m| if m == kiln_inventory::BootMode::Uefi { "UEFI".into() } else { "BIOS".into() }),
            s.secure_boot.map(|on| format!("Secure Boot {}", if on { "on" } else { "off" })),
        ])
    ));
    let c = &inv.cpu;
    out.push_str(&format!(
        "  cpu:       {}\n",
        join(vec![
            c.model.clone(),
            c.sockets.map(|n| format!("{n} sockets")),
            c.cores.map(|n| format!("{n} cores")),
            c.threads.map(|n| format!("{n} threads")),
        ])
    ));
    let dimms: Vec<String> = inv
        .memory
        .dimms
        .iter()
        .map(|d| {
            join(vec![
                d.locator.clone(),
                d.size_bytes.map(bytes),
                d.memory_type.clone(),
                d.speed_mts.map(|s| format!("{s} MT/s")),
                d.serial.as_ref().map(|v| format!("serial {v}")),
            ])
        })
        .collect();
    out.push_str(&format!(
        "  memory:    {}{}\n",
        inv.memory.total_bytes.map_or("-".into(), bytes),
        if dimms.is_empty() { String::new() } else { format!(" ({} DIMMs: {})", dimms.len(), dimms.join("; ")) }
    ));
    out.push_str(if inv.disks.is_empty() { "  disks:     none\n" } else { "  disks:\n" });
    for d in &inv.disks {
        out.push_str(&format!(
            "    {:<10} {}\n",
            d.name,
            join(
                vec![
                    d.size_bytes.map(bytes),
                    d.transport.clone(),
                    d.rotational.map(|r| if r { "rotational".into() } else { "solid state".into() }),
                    d.removable.filter(|r| *r).map(|_| "removable".into()),
                    [&d.vendor, &d.model].iter().filter_map(|v| v.as_deref()).collect::<Vec<_>>().join(" ").into(),
                    d.serial.as_ref().map(|v| format!("serial {v}")),
                    d.wwn.as_ref().map(|v| format!("wwn {v}")),
                    d.logical_sector_size.map(|l| format!("sectors {l}/{}", d.physical_sector_size.unwrap_or(l))),
                    d.partition_table.as_ref().map(|t| format!("{t} partition table")),
                ]
                .into_iter()
                .map(|p| p.filter(|p| !p.is_empty()))
                .collect()
            )
        ));
        for path in d.by_id.iter().chain(&d.by_path) {
            out.push_str(&format!("               {path}\n"));
        }
    }
    out.push_str(if inv.nics.is_empty() { "  nics:      none\n" } else { "  nics:\n" });
    for n in &inv.nics {
        out.push_str(&format!(
            "    {:<10} {}\n",
            n.name,
            join(vec![
                n.mac.clone(),
                n.driver.clone(),
                n.pci_address.as_ref().map(|p| format!("pci {p}")),
                n.speed_mbps.map(|s| format!("{s} Mb/s")),
                n.link.map(|l| if l { "link up".into() } else { "no link".into() }),
            ])
        ));
    }
    out.push_str(&format!(
        "  tpm:       {}\n",
        match &inv.tpm {
            None => "none".to_string(),
            Some(t) => t.version.clone().unwrap_or_else(|| "present (version unknown)".into()),
        }
    ));
    out
}

/// One line per BMC step of workflow `id` (the jobs keyed
/// `workflow/ID/STEP`), oldest first, with state, timing and outcome.
fn describe_bmc_steps(id: &str, jobs: &[v1::BmcJob]) -> String {
    let prefix = format!("workflow/{id}/");
    let mut steps: Vec<&v1::BmcJob> = jobs.iter().filter(|j| j.key.starts_with(&prefix)).collect();
    if steps.is_empty() {
        return String::new();
    }
    steps.sort_by_key(|j| j.created_at.as_ref().map(|t| (t.seconds, t.nanos)));
    let t = |ts: &Option<prost_types::Timestamp>| view::time(ts).unwrap_or_else(|| "-".into());
    let mut out = String::from("bmc steps:\n");
    for j in steps {
        let step = &j.key[prefix.len()..];
        out.push_str(&format!(
            "  {step}: {}  {} [{}] attempts {}: submitted {}, updated {}",
            j.operation,
            j.state,
            j.id,
            j.attempts,
            t(&j.created_at),
            t(&j.updated_at)
        ));
        if (j.state == "succeeded" || j.state == "failed")
            && let Some(d) = between(&j.created_at, &j.updated_at)
        {
            out.push_str(&format!(", took {}", elapsed(d)));
        }
        out.push('\n');
        let outcome = if j.state == "succeeded" { &j.result } else { &j.error };
        if !outcome.is_empty() {
            out.push_str(&format!("       {outcome}\n"));
        }
    }
    out
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

#[cfg(test)]
mod inventory_tests {
    use super::*;

    #[test]
    fn an_inventory_reads_as_one_line_per_subject_disk_and_nic() {
        let inventory = v1::HardwareInventory {
            hardware_id: "r1-07".into(),
            agent_id: "b4:96:91:aa:bb:01".into(),
            inventory_json: r#"{"system":{"vendor":"Dell Inc.","product":"PowerEdge R650","serial":"7XK2J93","firmware_vendor":"Dell Inc.","firmware_version":"1.10.2","boot_mode":"uefi","secure_boot":true},
                "cpu":{"model":"Xeon Gold 6338","sockets":2,"cores":64,"threads":128},
                "memory":{"total_bytes":274877906944,"dimms":[{"locator":"A1","size_bytes":68719476736,"memory_type":"Ddr4","speed_mts":3200}]},
                "disks":[{"name":"nvme0n1","by_id":["/dev/disk/by-id/nvme-X_S1"],"model":"X","serial":"S1","size_bytes":960197124096,"rotational":false,"transport":"nvme","logical_sector_size":512,"physical_sector_size":4096,"partition_table":"gpt"}],
                "nics":[{"name":"eno1","mac":"b4:96:91:aa:bb:01","driver":"ixgbe","pci_address":"0000:01:00.0","speed_mbps":10000,"link":true}]}"#.into(),
            reported_at: None,
            seen_at: None,
        };
        let text = describe_inventory(Some(&inventory));
        let lines: Vec<&str> = text.lines().skip(1).collect();
        assert_eq!(
            lines,
            [
                "  system:    Dell Inc. PowerEdge R650, serial 7XK2J93",
                "  firmware:  Dell Inc., version 1.10.2, UEFI, Secure Boot on",
                "  cpu:       Xeon Gold 6338, 2 sockets, 64 cores, 128 threads",
                "  memory:    256.0 GiB (1 DIMMs: A1, 64.0 GiB, Ddr4, 3200 MT/s)",
                "  disks:",
                "    nvme0n1    894.3 GiB, nvme, solid state, X, serial S1, sectors 512/4096, gpt partition table",
                "               /dev/disk/by-id/nvme-X_S1",
                "  nics:",
                "    eno1       b4:96:91:aa:bb:01, ixgbe, pci 0000:01:00.0, 10000 Mb/s, link up",
                "  tpm:       none",
            ]
        );
        assert!(describe_inventory(None).contains("none reported yet"));
    }
}
