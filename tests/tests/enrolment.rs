//! Enrolment against the real binaries: the boot script a machine fetches
//! over HTTP(S) carries a one-time credential (`kiln.enrol=`); a real agent
//! given only that credential enrols and runs a workflow to SUCCESS, with a
//! token (and, under mutual TLS, a client certificate) it got from the
//! server. Then every refusal over the real gRPC API: replay, garbage,
//! another machine, expiry; each one, and the enrolment, in `kiln events`
//! without any secret.

use std::process::Command;
use std::time::Duration;

use kiln_proto::connect::{ClientTls, endpoint};
use kiln_proto::v1::agent_service_client::AgentServiceClient;
use kiln_proto::v1::enrolment_service_client::EnrolmentServiceClient;
use kiln_proto::v1::{EnrolRequest, NextActionRequest};
use kiln_proto::{AGENT_ID_METADATA, AUTHORIZATION_METADATA};
use kiln_tests::{Cluster, hardware_doc, random_mac, stderr, stdout, unique, wait_until};
use serde_json::Value;
use tonic::Code;

const LIMIT: Duration = Duration::from_secs(120);

fn hook_dir() -> tempfile::TempDir {
    let hook = tempfile::tempdir().unwrap();
    std::fs::write(hook.path().join("vmlinuz"), b"kernel").unwrap();
    std::fs::write(hook.path().join("initramfs.img"), b"initramfs").unwrap();
    hook
}

/// The machine's boot script, fetched as iPXE would (over the server's
/// TLS port here: `--netboot-listen` serves the same routes over HTTP).
fn boot_script(c: &Cluster, mac: &str) -> String {
    let mut curl = Command::new("curl");
    curl.args(["-sS", "--fail", "--max-time", "30"]);
    if let Some(ca) = &c.ca_file {
        curl.arg("--cacert").arg(ca);
    }
    let out = curl.arg(format!("{}/boot/ipxe/{mac}", c.server_url)).output().expect("curl");
    assert!(out.status.success(), "boot script of {mac}: {}", stderr(&out));
    stdout(&out)
}

/// The `kiln.enrol=` of a boot script.
fn credential(script: &str) -> String {
    script
        .split_whitespace()
        .find_map(|w| w.strip_prefix("kiln.enrol="))
        .unwrap_or_else(|| panic!("no kiln.enrol= in {script}"))
        .to_string()
}

fn template_and_workflow(c: &Cluster, hw: &str, mac: &str) -> String {
    let (tpl, wf) = (unique("tpl"), unique("wf"));
    let out = c.apply(&format!(
        "kind: Template\nname: {tpl}\ndata: |\n  version: \"0.1\"\n  name: {tpl}\n  tasks:\n    - name: t\n      worker: \"{{{{.device_1}}}}\"\n      actions:\n        - name: a\n          image: {}\n          timeout: 60\n          command: [\"true\"]\n---\nkind: Workflow\nname: {wf}\ntemplate: {tpl}\nhardware: {hw}\nhardware_map: {{device_1: \"{mac}\"}}\n",
        c.env.busybox()
    ));
    out.lines().find_map(|l| l.strip_prefix("workflow/")?.split(' ').next().map(str::to_string)).unwrap()
}

fn tls(c: &Cluster) -> ClientTls {
    ClientTls { ca_pem: c.ca_file.as_ref().map(|p| std::fs::read(p).unwrap()), identity: None }
}

async fn enrol(c: &Cluster, credential: &str, agent_id: &str, mac: &str) -> Result<String, (Code, String)> {
    let channel = endpoint(&c.server_url, &tls(c)).unwrap().connect().await.expect("connect");
    let request = EnrolRequest { credential: credential.into(), agent_id: agent_id.into(), mac: mac.into() };
    EnrolmentServiceClient::new(channel)
        .enrol(request)
        .await
        .map(|r| r.into_inner().token)
        .map_err(|s| (s.code(), s.message().to_string()))
}

/// `kiln events --kind security -o json`, as text and parsed.
fn security_events(c: &Cluster) -> (String, Vec<Value>) {
    let out = c.kiln(&["events", "--kind", "security", "-o", "json", "--limit", "1000"]);
    assert!(out.status.success(), "kiln events: {}", stderr(&out));
    let text = stdout(&out);
    let list = serde_json::from_str::<Value>(&text).expect("a JSON list").as_array().cloned().unwrap();
    (text, list)
}

/// Waits until the security events have one with this action, outcome
/// and a reason containing `reason` (refusals are stored within a second).
fn wait_event(c: &Cluster, actor: &str, outcome: &str, reason: &str) -> Value {
    let mut found = None;
    let waited = wait_until(Duration::from_secs(20), || {
        found = security_events(c).1.into_iter().find(|e| {
            e["actor"] == actor
                && e["action"] == "enrol"
                && e["outcome"] == outcome
                && e["reason"].as_str().is_some_and(|r| r.contains(reason))
        });
        found.is_some()
    });
    assert!(waited.is_ok(), "no {outcome} enrol event of {actor} with {reason:?}: {:#?}", security_events(c).1);
    found.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_netbooted_agent_enrols_with_its_boot_credential_and_every_misuse_is_refused_and_recorded() {
    let hook = hook_dir();
    let mut c = Cluster::start_with(&["--hook-dir", hook.path().to_str().unwrap()]).unwrap();
    let (mac, hw) = (random_mac(), unique("hw"));
    c.apply(&hardware_doc(&hw, &mac));
    let applied_token = c.tokens.lock().unwrap().get(&hw).cloned().expect("apply printed a token");
    let wf = template_and_workflow(&c, &hw, &mac);

    // The machine powers on: its boot script carries the credential.
    let script = boot_script(&c, &mac.to_uppercase());
    assert!(script.contains("boots the hook image"), "{script}");
    let secret = credential(&script);
    assert!(secret.starts_with("kiln_enrol_"), "{secret}");

    // A real agent with nothing but the credential (the hook writes
    // kiln.enrol= to enrolment_file, its token file starts empty).
    let token_file = c.dir.path().join("enrolled-token");
    let enrol_file = c.dir.path().join("enrol");
    std::fs::write(&token_file, "").unwrap();
    kiln_tests::write_private(&enrol_file, &format!("{secret}\n")).unwrap();
    let extra = format!(
        "token_file: {:?}\nenrolment_file: {:?}\nboot_mac: {:?}\n",
        token_file.display(),
        enrol_file.display(),
        mac.to_uppercase()
    );
    c.start_agent(&mac, &extra).unwrap();
    let done = c.wait_finished(&wf, LIMIT);
    assert_eq!(done["state"], "SUCCESS", "{done:#}\n{}", c.logs());
    let token = std::fs::read_to_string(&token_file).unwrap().trim().to_string();
    assert!(token.starts_with("kiln_") && token != applied_token, "a fresh token: {token}");
    assert!(!enrol_file.exists(), "the used credential is deleted");
    // The token `kiln apply` printed was replaced.
    let channel = endpoint(&c.server_url, &tls(&c)).unwrap().connect().await.unwrap();
    let mut agent_api = AgentServiceClient::new(channel);
    let mut poll = tonic::Request::new(NextActionRequest { wait_ms: 0 });
    poll.metadata_mut().insert(AGENT_ID_METADATA, mac.parse().unwrap());
    poll.metadata_mut().insert(AUTHORIZATION_METADATA, format!("Bearer {applied_token}").parse().unwrap());
    assert_eq!(agent_api.next_action(poll).await.unwrap_err().code(), Code::Unauthenticated);
    let enrolled = wait_event(&c, &format!("agent {mac}"), "ok", "");
    assert_eq!(enrolled["object"], format!("hardware {hw} (agent token and client certificate)"));

    // Replay: the credential works once.
    let (code, message) = enrol(&c, &secret, &mac, &mac).await.unwrap_err();
    assert_eq!(code, Code::FailedPrecondition, "{message}");
    assert!(message.contains("already used"), "{message}");
    // Garbage.
    let (code, message) = enrol(&c, "kiln_enrol_not-a-credential", &mac, "").await.unwrap_err();
    assert_eq!(code, Code::Unauthenticated, "{message}");
    assert!(message.contains("unknown enrolment credential"), "{message}");
    // Another machine's credential: a second machine with a pending
    // workflow boots; its credential presented by the first machine.
    let (mac2, hw2) = (random_mac().replace("02:", "06:"), unique("hw2"));
    c.apply(&hardware_doc(&hw2, &mac2));
    template_and_workflow(&c, &hw2, &mac2);
    let foreign = credential(&boot_script(&c, &mac2));
    let (code, message) = enrol(&c, &foreign, &mac, &mac).await.unwrap_err();
    assert_eq!(code, Code::PermissionDenied, "{message}");
    // ... and by a machine lying about its MAC (the right agent id, another
    // boot NIC): refused too. Each attempt uses the credential up.
    let lying = credential(&boot_script(&c, &mac2));
    let (code, _) = enrol(&c, &lying, &mac2, "02:00:00:00:00:01").await.unwrap_err();
    assert_eq!(code, Code::PermissionDenied);
    assert_eq!(enrol(&c, &lying, &mac2, &mac2).await.unwrap_err().0, Code::FailedPrecondition);
    let replayed = wait_event(&c, &format!("agent {mac}"), "refused", "already used");
    assert!(replayed["peer"].as_str().is_some_and(|p| p.starts_with("127.0.0.1:")), "{replayed}");
    wait_event(&c, &format!("agent {mac}"), "refused", "unknown enrolment credential");
    wait_event(&c, &format!("agent {mac}"), "refused", &format!("hardware {hw2}"));
    wait_event(&c, &format!("agent {mac2}"), "refused", "presented as mac 02:00:00:00:00:01");

    // Expiry: a server whose credentials live a second.
    c.restart_server(&["--enrolment-ttl", "1s"]).unwrap();
    let stale = credential(&boot_script(&c, &mac2));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (code, message) = enrol(&c, &stale, &mac2, &mac2).await.unwrap_err();
    assert_eq!(code, Code::Unauthenticated, "{message}");
    assert!(message.contains("expired"), "{message}");
    wait_event(&c, &format!("agent {mac2}"), "refused", "expired");
    // A fresh one within the TTL still works (for the second machine).
    let fresh = credential(&boot_script(&c, &mac2));
    let token2 = enrol(&c, &fresh, &mac2, &mac2).await.expect("enrolment within the TTL");

    // No secret in the events, in any format, nor in the server's log.
    let (text, _) = security_events(&c);
    let yaml = stdout(&c.kiln(&["events", "-o", "yaml", "--limit", "1000"]));
    let log = std::fs::read_to_string(c.dir.path().join("server.log")).unwrap();
    for s in [&secret, &foreign, &lying, &stale, &fresh, &token, &token2] {
        for (name, output) in [("kiln events -o json", &text), ("kiln events -o yaml", &yaml), ("server log", &log)] {
            assert!(!output.contains(s.as_str()), "a secret in {name}: {s}");
        }
    }
    // Counted for /metrics (since the restart): two issued, one expired,
    // one enrolled.
    let admin = std::fs::read_to_string(&c.admin_token_file).unwrap();
    let out = Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "30", "--cacert"])
        .arg(c.ca_file.as_ref().unwrap())
        .args(["-H", &format!("Authorization: Bearer {}", admin.trim())])
        .arg(format!("{}/metrics", c.server_url))
        .output()
        .unwrap();
    let metrics = stdout(&out);
    for line in [
        "kiln_enrolments_total{outcome=\"issued\"} 2",
        "kiln_enrolments_total{outcome=\"expired\"} 1",
        "kiln_enrolments_total{outcome=\"enrolled\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "no {line} in\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn under_mutual_tls_enrolment_brings_the_client_certificate() {
    let hook = hook_dir();
    let mut c = Cluster::start_with(&["--hook-dir", hook.path().to_str().unwrap(), "--require-client-cert"]).unwrap();
    let (mac, hw) = (random_mac(), unique("hw"));
    c.apply(&hardware_doc(&hw, &mac));
    let wf = template_and_workflow(&c, &hw, &mac);
    let secret = credential(&boot_script(&c, &mac));
    let token_file = c.dir.path().join("enrolled-token");
    let enrol_file = c.dir.path().join("enrol");
    std::fs::write(&token_file, "").unwrap();
    kiln_tests::write_private(&enrol_file, &secret).unwrap();
    let extra = format!("token_file: {:?}\nenrolment_file: {:?}\n", token_file.display(), enrol_file.display());
    c.start_agent(&mac, &extra).unwrap();
    let done = c.wait_finished(&wf, LIMIT);
    assert_eq!(done["state"], "SUCCESS", "{done:#}\n{}", c.logs());
    // Kept beside the token (in the hook: in RAM), for a restarted agent.
    let cert = std::fs::read_to_string(format!("{}.crt", token_file.display())).unwrap();
    assert!(cert.contains("BEGIN CERTIFICATE"), "{cert}");
    use std::os::unix::fs::PermissionsExt;
    let key_mode = std::fs::metadata(format!("{}.key", token_file.display())).unwrap().permissions().mode();
    assert_eq!(key_mode & 0o777, 0o600);
    // Without a certificate, the enrolled token alone is refused here.
    let token = std::fs::read_to_string(&token_file).unwrap().trim().to_string();
    let channel = endpoint(&c.server_url, &tls(&c)).unwrap().connect().await.unwrap();
    let mut poll = tonic::Request::new(NextActionRequest { wait_ms: 0 });
    poll.metadata_mut().insert(AGENT_ID_METADATA, mac.parse().unwrap());
    poll.metadata_mut().insert(AUTHORIZATION_METADATA, format!("Bearer {token}").parse().unwrap());
    let refused = AgentServiceClient::new(channel).next_action(poll).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
}
