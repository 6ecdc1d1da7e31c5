//! Rules against the real binaries (docs/rules.md): unknown machines boot
//! (their boot script fetched as iPXE would), enrol with the script's
//! credential and report an inventory over the real agent API, as the
//! hook's agent does; the winning rule adopts each under its rendered name
//! with its metadata and gives it a workflow (which a real agent then runs
//! to SUCCESS); a machine no rule matches
//! stays discovered; a bad match is refused at apply naming the field; a
//! restarted server matches nothing twice; and `max_count` holds when 30
//! machines report at once to two replicas on one PostgreSQL.

use std::process::Command;

use kiln_proto::connect::{ClientTls, endpoint};
use kiln_proto::v1::agent_service_client::AgentServiceClient;
use kiln_proto::v1::enrolment_service_client::EnrolmentServiceClient;
use kiln_proto::v1::{EnrolRequest, InventoryReport};
use kiln_proto::{AGENT_ID_METADATA, AUTHORIZATION_METADATA};
use kiln_tests::postgres::PgServer;
use kiln_tests::{Cluster, random_mac, stderr, stdout, unique};
use serde_json::Value;

fn hook_dir() -> tempfile::TempDir {
    let hook = tempfile::tempdir().unwrap();
    std::fs::write(hook.path().join("vmlinuz"), b"kernel").unwrap();
    std::fs::write(hook.path().join("initramfs.img"), b"initramfs").unwrap();
    hook
}

fn tls(c: &Cluster) -> ClientTls {
    ClientTls { ca_pem: c.ca_file.as_ref().map(|p| std::fs::read(p).unwrap()), identity: None }
}

/// A simulated unknown machine: its boot script's credential, enrolment,
/// and one inventory report, against the server at `url`.
struct Machine {
    mac: String,
    token: String,
}

impl Machine {
    /// Boots (fetches its boot script from `c`) and enrols there.
    async fn boot(c: &Cluster) -> Machine {
        let mac = random_mac();
        let mut curl = Command::new("curl");
        curl.args(["-sS", "--fail", "--max-time", "30"]);
        if let Some(ca) = &c.ca_file {
            curl.arg("--cacert").arg(ca);
        }
        let url = format!("{}/boot/ipxe/{mac}", c.server_url);
        let out = tokio::task::spawn_blocking(move || curl.arg(url).output().expect("curl")).await.unwrap();
        assert!(out.status.success(), "boot script of {mac}: {}", stderr(&out));
        let script = stdout(&out);
        let credential = script
            .split_whitespace()
            .find_map(|w| w.strip_prefix("kiln.enrol="))
            .unwrap_or_else(|| panic!("no kiln.enrol= in {script}"))
            .to_string();
        let channel = endpoint(&c.server_url, &tls(c)).unwrap().connect().await.expect("connect");
        let request = EnrolRequest { credential, agent_id: mac.clone(), mac: mac.clone() };
        let token = EnrolmentServiceClient::new(channel).enrol(request).await.expect("enrol").into_inner().token;
        Machine { mac, token }
    }

    /// Reports `inventory` to the server of `c`, as its agent would.
    async fn report(&self, c: &Cluster, inventory: &Value) {
        let channel = endpoint(&c.server_url, &tls(c)).unwrap().connect().await.expect("connect");
        let mut req = tonic::Request::new(InventoryReport { inventory_json: inventory.to_string() });
        req.metadata_mut().insert(AGENT_ID_METADATA, self.mac.parse().unwrap());
        req.metadata_mut().insert(AUTHORIZATION_METADATA, format!("Bearer {}", self.token).parse().unwrap());
        AgentServiceClient::new(channel).report_inventory(req).await.expect("report inventory");
    }

    fn discovered_id(&self) -> String {
        format!("discovered-{}", self.mac.replace(':', ""))
    }
}

fn inventory(serial: &str, cpus: u32, boot_mode: &str) -> Value {
    serde_json::json!({
        "system": {"vendor": "QEMU", "product": "Standard PC (Q35 + ICH9, 2009)", "serial": serial, "boot_mode": boot_mode},
        "cpu": {"threads": cpus, "cores": cpus / 2, "sockets": 1},
        "memory": {"total_bytes": 68_719_476_736_u64},
        "disks": [
            {"name": "vda", "serial": format!("{serial}-0"), "size_bytes": 21_474_836_480_u64, "rotational": true, "transport": "virtio"},
            {"name": "nvme0n1", "size_bytes": 1_099_511_627_776_u64, "rotational": false, "transport": "nvme"}
        ],
        "nics": [{"name": "eth0", "speed_mbps": 25000, "link": true}]
    })
}

fn json(c: &Cluster, args: &[&str]) -> Value {
    let out = c.kiln(args);
    assert!(out.status.success(), "kiln {args:?}: {}\n{}", stderr(&out), c.logs());
    serde_json::from_str(&stdout(&out)).unwrap_or_else(|e| panic!("kiln {args:?}: {e}: {}", stdout(&out)))
}

fn hardware_ids(c: &Cluster) -> Vec<String> {
    let list = json(c, &["get", "hardware", "-o", "json"]);
    list.as_array().unwrap().iter().map(|h| h["id"].as_str().unwrap().to_string()).collect()
}

fn template(c: &Cluster, name: &str) -> String {
    format!(
        "kind: Template\nname: {name}\ndata: |\n  version: \"0.1\"\n  name: {name}\n  tasks:\n    - name: t\n      worker: \"{{{{.device_1}}}}\"\n      actions:\n        - name: a\n          image: {}\n          timeout: 60\n          command: [\"true\"]\n",
        c.env.busybox()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_winning_rule_adopts_names_and_provisions_discovered_machines_once() {
    let hook = hook_dir();
    let mut c = Cluster::start_with(&["--hook-dir", hook.path().to_str().unwrap(), "--discovery"]).unwrap();
    let tpl = unique("tpl");

    // A bad match is refused at apply, naming rule, field and column.
    let bad = "kind: Rule\nname: broken\nmatch: cpus >= && true\nhardware_name: x\n";
    let out = c.kiln_with_stdin(&["apply", "-f", "-"], Some(bad));
    assert!(!out.status.success(), "a broken match was accepted");
    let err = stderr(&out);
    assert!(err.contains("Rule \"broken\"") && err.contains("field match") && err.contains("column"), "{err}");

    let rules = format!(
        "{}---\nkind: Rule\nname: compute\npriority: 20\nmatch: cpus >= 16 && disks.exists(d, d.transport == 'nvme' && d.size_bytes >= 1 * TiB)\nhardware_name: \"c-{{{{ .serial | lower }}}}\"\nmetadata: {{role: compute, rack: r7}}\nworkflow: {{template: {tpl}}}\n---\nkind: Rule\nname: any-uefi\npriority: 10\nmatch: boot_mode == 'uefi'\nhardware_name: \"u-{{{{ .mac | replace \\\":\\\" \\\"\\\" }}}}\"\n",
        template(&c, &tpl)
    );
    c.apply(&rules);

    // A big UEFI machine matches both: `compute` wins on priority.
    let big = Machine::boot(&c).await;
    big.report(&c, &inventory("SN-A1", 32, "uefi")).await;
    let hw = json(&c, &["get", "hardware", "c-sn-a1", "-o", "json"]);
    assert_eq!(hw["macs"], serde_json::json!([big.mac]), "{hw:#}");
    assert_eq!(hw["metadata"], serde_json::json!({"role": "compute", "rack": "r7"}), "{hw:#}");
    assert_eq!(hw["state"], "ready", "{hw:#}");
    let wf = json(&c, &["get", "workflow", "c-sn-a1", "-o", "json"]);
    assert_eq!(
        (&wf["template"], &wf["hardware"], &wf["state"]),
        (&Value::from(tpl.as_str()), &Value::from("c-sn-a1"), &Value::from("PENDING")),
        "{wf:#}"
    );
    assert_eq!(wf["hardware_map"]["device_1"], big.mac.as_str(), "{wf:#}");

    // The machine's agent (a real one now, with the token it enrolled
    // for) runs the rule's workflow to SUCCESS.
    let token_file = c.dir.path().join("big-token");
    kiln_tests::write_private(&token_file, &big.token).unwrap();
    c.start_agent(&big.mac, &format!("token_file: {:?}\n", token_file.display())).unwrap();
    let done = c.wait_finished("c-sn-a1", std::time::Duration::from_secs(120));
    assert_eq!(done["state"], "SUCCESS", "{done:#}\n{}", c.logs());

    // A small UEFI machine: the other rule, named by its MAC, no workflow.
    let small = Machine::boot(&c).await;
    small.report(&c, &inventory("SN-B2", 4, "uefi")).await;
    let small_name = format!("u-{}", small.mac.replace(':', ""));
    assert!(hardware_ids(&c).contains(&small_name), "{:?}", hardware_ids(&c));

    // A BIOS machine no rule matches stays discovered.
    let legacy = Machine::boot(&c).await;
    legacy.report(&c, &inventory("SN-C3", 4, "bios")).await;
    let list = json(&c, &["get", "hardware", "-o", "json"]);
    let listed = list.as_array().unwrap().iter().find(|h| h["id"] == legacy.discovered_id().as_str()).cloned();
    assert_eq!(listed.map(|h| h["state"].clone()), Some(Value::from("discovered")), "{list:#}");

    // The plan says why, without doing anything.
    let plan = stdout(&c.kiln(&["plan", "rule", "--machine", &legacy.discovered_id()]));
    assert!(plan.contains("rule any-uefi (priority 10): no: match: boot_mode == 'uefi' is false"), "{plan}");
    assert!(plan.contains("no rule would adopt it: it stays discovered"), "{plan}");
    let plan = json(&c, &["plan", "rule", "compute", "--machine", &legacy.mac, "-o", "json"]);
    assert_eq!(plan["winner"], Value::Null, "{plan:#}");
    assert_eq!(plan["rules"][0]["hardware_name"], "c-sn-c3", "{plan:#}");
    assert!(plan["rules"][0]["why_not"].as_str().unwrap().contains("false for this machine"), "{plan:#}");

    // Every match is an audit event.
    let events = json(&c, &["events", "-o", "json", "--limit", "1000"]);
    let matched: Vec<&Value> =
        events.as_array().unwrap().iter().filter(|e| e["action"] == "rule-match" && e["outcome"] == "ok").collect();
    assert_eq!(matched.len(), 2, "{events:#}");
    assert!(matched.iter().any(|e| e["actor"] == "rule compute"
        && e["object"].as_str().unwrap().contains("as hardware c-sn-a1, workflow c-sn-a1")));

    // Restarted: the same reports match nothing twice, and the BIOS
    // machine is still waiting.
    let before = hardware_ids(&c);
    c.restart_server(&[]).unwrap();
    big.report(&c, &inventory("SN-A1", 32, "uefi")).await;
    legacy.report(&c, &inventory("SN-C3", 4, "bios")).await;
    assert_eq!(hardware_ids(&c), before);
    let rules_listed = json(&c, &["get", "rules", "-o", "json"]);
    let adopted: Vec<(String, u64)> = rules_listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].as_str().unwrap().to_string(), r["adopted"].as_u64().unwrap()))
        .collect();
    assert_eq!(adopted, [("compute".to_string(), 1), ("any-uefi".to_string(), 1)]);

    // A rule applied later adopts the machine discovered before it.
    c.apply("kind: Rule\nname: legacy\nmatch: boot_mode == 'bios'\nhardware_name: \"l-{{ .serial | lower }}\"\n");
    assert!(hardware_ids(&c).contains(&"l-sn-c3".to_string()), "{:?}", hardware_ids(&c));
    let out = c.kiln(&["delete", "rule", "legacy"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json(&c, &["get", "rules", "-o", "json"]).as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn max_count_holds_under_concurrent_discovery_on_two_replicas() {
    const MACHINES: usize = 30;
    const MAX_COUNT: usize = 7;
    let pg = PgServer::start().expect("start PostgreSQL");
    let url = pg.create_database().unwrap();
    let hook = hook_dir();
    let common = ["--database-url", url.as_str(), "--hook-dir", hook.path().to_str().unwrap(), "--discovery"];
    let r1 = Cluster::start_with(&common).expect("replica 1");
    // Both replicas present replica 1's certificate (one name behind a
    // balancer, as in postgres.rs).
    let tls_dir = r1.dir.path().join("data").join("tls");
    let (cert, key) = (tls_dir.join("server.pem"), tls_dir.join("server.key"));
    let mut args = common.to_vec();
    args.extend(["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()]);
    let mut r2 = Cluster::start_with(&args).expect("replica 2");
    r2.ca_file = r1.ca_file.clone();
    let replicas = [&r1, &r2];
    r1.apply(&format!(
        "kind: Rule\nname: first-rack\nmax_count: {MAX_COUNT}\nmatch: cpus >= 8\nhardware_name: \"rack-{{{{ .serial | lower }}}}\"\n"
    ));

    // Thirty unknown machines boot and enrol, half on each replica...
    let machines = futures_util::future::join_all((0..MACHINES).map(|i| Machine::boot(replicas[i % 2]))).await;
    // ...then all report at once, each to the other replica.
    futures_util::future::join_all(machines.iter().enumerate().map(|(i, m)| async move {
        m.report(replicas[(i + 1) % 2], &inventory(&format!("SN{i:03}"), 16, "uefi")).await
    }))
    .await;

    let context = format!("replica 1:\n{}\nreplica 2:\n{}", r1.logs(), r2.logs());
    let list = json(&r2, &["get", "hardware", "-o", "json"]);
    let list = list.as_array().unwrap();
    let adopted: Vec<&Value> = list.iter().filter(|h| h["id"].as_str().unwrap().starts_with("rack-")).collect();
    let discovered: Vec<&Value> = list.iter().filter(|h| h["state"] == "discovered").collect();
    assert_eq!(adopted.len(), MAX_COUNT, "{list:#?}\n{context}");
    assert_eq!(discovered.len(), MACHINES - MAX_COUNT, "{list:#?}");
    assert_eq!(list.len(), MACHINES, "every machine once: {list:#?}");
    // No MAC twice.
    let mut macs: Vec<String> = list.iter().map(|h| h["macs"][0].as_str().unwrap().to_string()).collect();
    macs.sort();
    macs.dedup();
    assert_eq!(macs.len(), MACHINES);
    let rules = json(&r1, &["get", "rules", "-o", "json"]);
    assert_eq!(rules[0]["adopted"], MAX_COUNT as u64, "{rules:#}");
    // The machines turned away are audited as refusals saying why.
    let events = json(&r1, &["events", "-o", "json", "--limit", "1000"]);
    let full = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "rule-match" && e["reason"].as_str().unwrap_or("").contains("max_count 7 reached"))
        .count();
    assert!(full >= MACHINES - MAX_COUNT, "{full} refusals: {events:#}");

    // A replica restarted, the discovered machines reporting again: still
    // seven.
    drop(r2);
    let r1 = {
        let mut r1 = r1;
        r1.restart_server(&[]).unwrap();
        r1
    };
    for (i, m) in machines.iter().enumerate().take(10) {
        m.report(&r1, &inventory(&format!("SN{i:03}"), 16, "uefi")).await;
    }
    let list = json(&r1, &["get", "hardware", "-o", "json"]);
    let adopted = list.as_array().unwrap().iter().filter(|h| h["id"].as_str().unwrap().starts_with("rack-")).count();
    assert_eq!((adopted, list.as_array().unwrap().len()), (MAX_COUNT, MACHINES));
}
