//! Discovery against the real binaries: a server with `--discovery` (and
//! `--netboot-listen`) boots
//! a MAC no Hardware has into the hook as a discovered machine; a real
//! agent enrols with the boot script's credential, reports its inventory
//! and is listed as `discovered`; no workflow may target it and the agent
//! service refuses it anything but heartbeat/inventory/polling; `kiln
//! adopt` turns it into a Hardware whose workflow then runs to SUCCESS on
//! the same, still running, agent.

use std::process::Command;
use std::time::Duration;

use kiln_proto::connect::{ClientTls, endpoint};
use kiln_proto::v1::agent_service_client::AgentServiceClient;
use kiln_proto::v1::{LogBatch, NextActionRequest};
use kiln_proto::{AGENT_ID_METADATA, AUTHORIZATION_METADATA};
use kiln_tests::{Cluster, random_mac, stderr, stdout, unique, wait_until};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(120);

fn hook_dir() -> tempfile::TempDir {
    let hook = tempfile::tempdir().unwrap();
    std::fs::write(hook.path().join("vmlinuz"), b"kernel").unwrap();
    std::fs::write(hook.path().join("initramfs.img"), b"initramfs").unwrap();
    hook
}

/// The machine's boot script, fetched as iPXE would: plain HTTP on
/// `--netboot-listen`.
fn boot_script(port: u16, mac: &str) -> String {
    let url = format!("http://127.0.0.1:{port}/boot/ipxe/{mac}");
    let out = Command::new("curl").args(["-sS", "--fail", "--max-time", "30", &url]).output().expect("curl");
    assert!(out.status.success(), "boot script of {mac}: {}", stderr(&out));
    stdout(&out)
}

fn kernel_arg(script: &str, name: &str) -> String {
    script
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name}= in {script}"))
        .to_string()
}

fn hardware_list(c: &Cluster) -> Vec<Value> {
    let out = c.kiln(&["get", "hardware", "-o", "json"]);
    assert!(out.status.success(), "kiln get hardware: {}", stderr(&out));
    serde_json::from_str::<Value>(&stdout(&out)).unwrap().as_array().cloned().unwrap()
}

fn workflow_yaml(c: &Cluster, hw: &str, mac: &str) -> (String, String) {
    let (tpl, wf) = (unique("tpl"), unique("wf"));
    let yaml = format!(
        "kind: Template\nname: {tpl}\ndata: |\n  version: \"0.1\"\n  name: {tpl}\n  tasks:\n    - name: t\n      worker: \"{{{{.device_1}}}}\"\n      actions:\n        - name: a\n          image: {}\n          timeout: 60\n          command: [\"true\"]\n---\nkind: Workflow\nname: {wf}\ntemplate: {tpl}\nhardware: {hw}\nhardware_map: {{device_1: \"{mac}\"}}\n",
        c.env.busybox()
    );
    (yaml, wf)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_machine_is_discovered_reports_inventory_runs_nothing_and_works_once_adopted() {
    let hook = hook_dir();
    let mut c = Cluster::start_with(&["--hook-dir", hook.path().to_str().unwrap(), "--discovery"]).unwrap();
    // Netboot over plain HTTP beside TLS, as a site serves it (a port of
    // this test's range: 7300-7399, free now).
    let port = (7300..7400)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port in 7300-7399");
    let public = c.server_url.clone();
    c.restart_server(&["--netboot-listen", &format!("127.0.0.1:{port}"), "--public-url", &public]).unwrap();
    let mac = random_mac();
    let id = format!("discovered-{}", mac.replace(':', ""));

    // The unknown machine powers on: the hook, with a credential.
    let script = boot_script(port, &mac.to_uppercase());
    assert!(script.contains("boots the hook image"), "{script}");
    assert_eq!(kernel_arg(&script, "kiln.agent_id"), mac);
    let secret = kernel_arg(&script, "kiln.enrol");
    // A second boot reuses the record (and supersedes the credential).
    let secret = {
        let again = boot_script(port, &mac);
        assert_ne!(kernel_arg(&again, "kiln.enrol"), secret);
        kernel_arg(&again, "kiln.enrol")
    };

    // A real agent with nothing but the credential.
    let token_file = c.dir.path().join("enrolled-token");
    let enrol_file = c.dir.path().join("enrol");
    std::fs::write(&token_file, "").unwrap();
    kiln_tests::write_private(&enrol_file, &format!("{secret}\n")).unwrap();
    let extra = format!(
        "token_file: {:?}\nenrolment_file: {:?}\nboot_mac: {:?}\n",
        token_file.display(),
        enrol_file.display(),
        mac
    );
    c.start_agent(&mac, &extra).unwrap();

    // Listed as discovered, with its inventory summary once reported.
    let mut listed = Value::Null;
    let waited = wait_until(Duration::from_secs(60), || {
        listed = hardware_list(&c).into_iter().find(|h| h["id"] == id.as_str()).unwrap_or_default();
        listed["inventory"].is_object()
    });
    assert!(waited.is_ok(), "no inventory for {id}: {listed:#}\n{}", c.logs());
    assert_eq!(hardware_list(&c).len(), 1, "one record for two boots");
    assert_eq!(listed["state"], "discovered");
    assert!(listed["inventory"]["cpus"].as_u64().unwrap() >= 1, "{listed:#}");
    assert!(listed["inventory"]["memory_bytes"].as_u64().unwrap() > 0, "{listed:#}");
    let table = stdout(&c.kiln(&["get", "hardware"]));
    assert!(table.contains("STATE") && table.contains("discovered") && table.contains("CPUs"), "{table}");

    // No workflow may target it.
    let (yaml, _) = workflow_yaml(&c, &id, &mac);
    let out = c.kiln_with_stdin(&["apply", "-f", "-"], Some(&yaml));
    assert!(!out.status.success(), "a workflow for a discovered machine was accepted");
    assert!(stderr(&out).contains("discovered machine"), "{}", stderr(&out));

    // Its agent credential works for polling (no work), nothing else.
    let token = std::fs::read_to_string(&token_file).unwrap().trim().to_string();
    let tls = ClientTls { ca_pem: c.ca_file.as_ref().map(|p| std::fs::read(p).unwrap()), identity: None };
    let channel = endpoint(&c.server_url, &tls).unwrap().connect().await.unwrap();
    let mut agent_api = AgentServiceClient::new(channel);
    fn authed<T>(msg: T, mac: &str, token: &str) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.metadata_mut().insert(AGENT_ID_METADATA, mac.parse().unwrap());
        r.metadata_mut().insert(AUTHORIZATION_METADATA, format!("Bearer {token}").parse().unwrap());
        r
    }
    let next = agent_api.next_action(authed(NextActionRequest { wait_ms: 0 }, &mac, &token)).await.unwrap();
    assert!(next.into_inner().assignment.is_none(), "a discovered machine got work");
    let refused = agent_api.push_logs(authed(LogBatch::default(), &mac, &token)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("discovered machine"), "{refused:?}");

    // Adopted: a Hardware with its MAC; the running agent keeps working.
    let out = c.kiln(&["adopt", &id, "--as", "web-1"]);
    assert!(out.status.success(), "kiln adopt: {}", stderr(&out));
    assert!(stdout(&out).contains("hardware/web-1 created"), "{}", stdout(&out));
    let list = hardware_list(&c);
    assert_eq!(list.len(), 1, "{list:#?}");
    assert_eq!((&list[0]["id"], &list[0]["state"]), (&Value::from("web-1"), &Value::from("ready")));
    assert_eq!(list[0]["macs"], serde_json::json!([mac]));
    assert!(list[0]["inventory"].is_object(), "inventory kept: {:#}", list[0]);
    let events = stdout(&c.kiln(&["events", "-o", "json", "--limit", "1000"]));
    assert!(events.contains("\"adopt\"") && events.contains("as hardware web-1"), "{events}");

    let (yaml, wf) = workflow_yaml(&c, "web-1", &mac);
    c.apply(&yaml);
    let done = c.wait_finished(&wf, LIMIT);
    assert_eq!(done["state"], "SUCCESS", "{done:#}\n{}", c.logs());
}
