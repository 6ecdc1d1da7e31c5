//! Authentication, TLS and secrets hygiene against the real binaries:
//! agent tokens (missing, wrong, revoked, another machine's, rotated), the
//! operator credential, TLS with the dev CA, mutual TLS, netboot beside TLS,
//! and a grep of every log of a workflow run for the secrets it used.

use std::path::Path;
use std::time::Duration;

use kiln_proto::connect::{ClientTls, endpoint};
use kiln_proto::v1::agent_service_client::AgentServiceClient;
use kiln_proto::v1::{ActionState, LogBatch, LogLine, NextActionRequest, StateReport};
use kiln_proto::{AGENT_ID_METADATA, AUTHORIZATION_METADATA};
use kiln_tests::{Cluster, Machine, hardware_doc, random_mac, stderr, stdout, unique};
use sha2::Digest;
use tonic::Code;
use tonic::transport::Channel;

const LIMIT: Duration = Duration::from_secs(120);

fn tls_of(c: &Cluster, identity: Option<(Vec<u8>, Vec<u8>)>) -> ClientTls {
    ClientTls { ca_pem: c.ca_file.as_ref().map(|p| std::fs::read(p).unwrap()), identity }
}

async fn client(c: &Cluster, identity: Option<(Vec<u8>, Vec<u8>)>) -> AgentServiceClient<Channel> {
    let ep = endpoint(&c.server_url, &tls_of(c, identity)).unwrap();
    AgentServiceClient::new(ep.connect().await.expect("connect"))
}

fn req<T>(msg: T, agent: &str, token: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(AGENT_ID_METADATA, agent.parse().unwrap());
    if let Some(t) = token {
        r.metadata_mut().insert(AUTHORIZATION_METADATA, format!("Bearer {t}").parse().unwrap());
    }
    r
}

/// The status code of `NextAction` (no wait) for this agent id and token.
async fn poll(c: &mut AgentServiceClient<Channel>, agent: &str, token: Option<&str>) -> Result<(), Code> {
    c.next_action(req(NextActionRequest { wait_ms: 0 }, agent, token)).await.map(|_| ()).map_err(|s| s.code())
}

fn token(c: &Cluster, hw: &str) -> String {
    c.tokens.lock().unwrap().get(hw).cloned().unwrap_or_else(|| panic!("no token printed for {hw}"))
}

fn template_and_workflow(c: &Cluster, hw: &str, mac: &str) -> String {
    let (tpl, wf) = (unique("tpl"), unique("wf"));
    c.apply(&format!(
        "kind: Template\nname: {tpl}\ndata: |\n  version: \"0.1\"\n  name: {tpl}\n  tasks:\n    - name: t\n      worker: \"{{{{.device_1}}}}\"\n      actions:\n        - name: a\n          image: {}\n          timeout: 60\n---\nkind: Workflow\nname: {wf}\ntemplate: {tpl}\nhardware: {hw}\nhardware_map: {{device_1: \"{mac}\"}}\n",
        c.env.busybox()
    ));
    wf
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_tokens_missing_wrong_revoked_foreign_and_rotated() {
    let c = Cluster::start().unwrap();
    let (mx, my) = (random_mac(), random_mac().replace("02:", "06:"));
    let (hx, hy) = (unique("hwx"), unique("hwy"));
    let out = c.apply(&[hardware_doc(&hx, &mx), hardware_doc(&hy, &my)].join("---\n"));
    assert!(out.contains(&format!("agent token for hardware/{hx}")), "{out}");
    let (tx, ty) = (token(&c, &hx), token(&c, &hy));
    assert!(tx.starts_with("kiln_") && tx != ty);
    // Re-applying the same hardware shows no token and keeps the old one.
    let again = c.apply(&hardware_doc(&hx, &mx));
    assert!(!again.contains("agent token"), "{again}");

    let mut a = client(&c, None).await;
    assert_eq!(poll(&mut a, &mx, Some(&tx)).await, Ok(()));
    assert_eq!(poll(&mut a, &mx, None).await, Err(Code::Unauthenticated), "missing");
    assert_eq!(poll(&mut a, &mx, Some("kiln_wrong")).await, Err(Code::Unauthenticated), "wrong");
    assert_eq!(poll(&mut a, &mx, Some(&ty)).await, Err(Code::PermissionDenied), "another machine's");
    assert_eq!(poll(&mut a, "02:99:99:99:99:99", Some(&tx)).await, Err(Code::PermissionDenied), "unknown id");

    // Another machine's attempt: no report, log or artifact from X reaches it.
    let wf = template_and_workflow(&c, &hy, &my);
    let assignment = a
        .next_action(req(NextActionRequest { wait_ms: 5000 }, &my, Some(&ty)))
        .await
        .unwrap()
        .into_inner()
        .assignment
        .expect("Y gets its action");
    assert_eq!(assignment.workflow_id, wf);
    let report = StateReport {
        workflow_id: wf.clone(),
        action_index: 0,
        attempt_id: assignment.attempt_id.clone(),
        state: ActionState::Success as i32,
        ..Default::default()
    };
    let code = a.report_state(req(report.clone(), &mx, Some(&tx))).await.unwrap_err().code();
    assert_eq!(code, Code::PermissionDenied, "X reports Y's attempt");
    let batch = LogBatch {
        workflow_id: wf.clone(),
        action_index: 0,
        attempt_id: assignment.attempt_id.clone(),
        lines: vec![LogLine { seq: 1, stream: 1, text: "forged".into(), time: None }],
    };
    let code = a.push_logs(req(batch, &mx, Some(&tx))).await.unwrap_err().code();
    assert_eq!(code, Code::PermissionDenied, "X logs into Y's attempt");
    let header = kiln_proto::v1::ArtifactChunk {
        part: Some(kiln_proto::v1::artifact_chunk::Part::Header(kiln_proto::v1::ArtifactHeader {
            workflow_id: wf.clone(),
            action_index: 0,
            attempt_id: assignment.attempt_id.clone(),
            path: "x".into(),
            size: 0,
        })),
    };
    let upload = a.upload_artifact(req(tokio_stream::iter(vec![header]), &mx, Some(&tx))).await;
    assert_eq!(upload.unwrap_err().code(), Code::PermissionDenied, "X uploads into Y's attempt");
    // Y itself may.
    a.report_state(req(report, &my, Some(&ty))).await.expect("Y reports its own attempt");

    // Revoked: refused; rotated: the old one refused, the new one accepted.
    let out = c.kiln(&["token", "revoke", &hx]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(poll(&mut a, &mx, Some(&tx)).await, Err(Code::Unauthenticated), "revoked");
    let out = c.kiln(&["token", "rotate", &hx]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rotated = stdout(&out).trim().rsplit(' ').next().unwrap().to_string();
    assert!(rotated.starts_with("kiln_") && rotated != tx, "{}", stdout(&out));
    assert_eq!(poll(&mut a, &mx, Some(&tx)).await, Err(Code::Unauthenticated), "old token after rotation");
    assert_eq!(poll(&mut a, &mx, Some(&rotated)).await, Ok(()), "new token");
    let out = c.kiln(&["token", "rotate", "no-such-hardware"]);
    assert!(!out.status.success());
    assert_eq!(stderr(&out), "error: hardware \"no-such-hardware\" not found\n");

    // Rejections are logged with the agent id and the reason, never the token.
    let log = std::fs::read_to_string(c.dir.path().join("server.log")).unwrap();
    let rejected = |l: &str| l.contains("agent call rejected") && l.contains("token revoked") && l.contains(&mx);
    assert!(log.lines().any(rejected), "no line says the call of {mx} was rejected for its revoked token: {log}");
    for secret in [&tx, &ty, &rotated] {
        assert!(!log.contains(secret.as_str()), "a token in the server log");
    }
}

#[test]
fn admin_calls_need_the_operator_token() {
    let c = Cluster::start().unwrap();
    let token = std::fs::read_to_string(&c.admin_token_file).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&c.admin_token_file).unwrap().permissions().mode() & 0o777, 0o600);
    let none = c.kiln_as(&["get", "hardware"], None, None);
    assert!(!none.status.success());
    assert_eq!(
        stderr(&none),
        "error: no operator credential: give --token-file FILE (the server's DATA_DIR/admin-token), \
         KILN_TOKEN_FILE or KILN_TOKEN\n"
    );
    // Through KILN_TOKEN rather than a file, so the server is what refuses.
    let wrong = std::process::Command::new(kiln_tests::bin_dir().join("kiln"))
        .args(["--server", &c.server_url, "--ca"])
        .arg(c.ca_file.as_ref().unwrap())
        .args(["get", "hardware"])
        .env_remove("KILN_TOKEN_FILE")
        .env("KILN_TOKEN", "kiln_not_the_operator")
        .output()
        .unwrap();
    assert!(!wrong.status.success());
    assert_eq!(stderr(&wrong), "error: invalid operator token\n");
    let right = std::process::Command::new(kiln_tests::bin_dir().join("kiln"))
        .args(["--server", &c.server_url, "--ca"])
        .arg(c.ca_file.as_ref().unwrap())
        .args(["get", "hardware"])
        .env_remove("KILN_TOKEN_FILE")
        .env("KILN_TOKEN", token.trim())
        .output()
        .unwrap();
    assert!(right.status.success(), "{}", stderr(&right));
    // The server restarts with the same credential.
    let log = std::fs::read_to_string(c.dir.path().join("server.log")).unwrap();
    assert!(log.contains("wrong operator token") && !log.contains(token.trim()), "{log}");
}

/// The read-only operator credential (`DATA_DIR/read-only-token`) reads
/// through every admin call and /metrics, and every change is refused,
/// with the refusal in the audit trail.
#[test]
fn the_read_only_operator_credential_reads_and_changes_nothing() {
    let c = Cluster::start().unwrap();
    let read_only = c.admin_token_file.with_file_name("read-only-token");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&read_only).unwrap().permissions().mode() & 0o777, 0o600);
    let hw = "kind: Hardware\nname: ro1\nmacs: [\"52:54:00:00:0e:01\"]\n";
    let applied = c.kiln_with_stdin(&["apply", "-f", "-"], Some(hw));
    assert!(applied.status.success(), "{}", stderr(&applied));

    let get = c.kiln_as(&["get", "hardware", "-o", "json"], None, Some(&read_only));
    assert!(get.status.success(), "{}", stderr(&get));
    assert!(String::from_utf8_lossy(&get.stdout).contains("ro1"));
    let events = c.kiln_as(&["events", "-o", "json"], None, Some(&read_only));
    assert!(events.status.success(), "{}", stderr(&events));

    let change = "kind: Hardware\nname: ro2\nmacs: [\"52:54:00:00:0e:02\"]\n";
    let apply = c.kiln_as(&["apply", "-f", "-"], Some(change), Some(&read_only));
    assert!(!apply.status.success());
    assert_eq!(
        stderr(&apply),
        "error: the read-only operator credential cannot change anything: use the operator credential\n"
    );
    let delete = c.kiln_as(&["delete", "hardware", "ro1"], None, Some(&read_only));
    assert!(!delete.status.success());
    assert!(stderr(&delete).contains("read-only operator credential cannot change"), "{}", stderr(&delete));
    // Nothing changed, and the operator sees both refusals, named.
    let all = c.kiln(&["get", "hardware", "-o", "json"]);
    let text = String::from_utf8_lossy(&all.stdout);
    assert!(text.contains("ro1") && !text.contains("ro2"), "{text}");
    let trail = c.kiln(&["events", "-o", "json"]);
    let trail: serde_json::Value = serde_json::from_slice(&trail.stdout).expect("a JSON list");
    let refused: Vec<&str> = trail
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"] == "read-only operator")
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(refused, ["apply", "delete"], "{trail:?}");
}

#[test]
fn tls_needs_the_dev_ca_and_plaintext_only_by_flag() {
    let c = Cluster::start().unwrap();
    assert!(c.server_url.starts_with("https://"));
    // A plaintext client against the TLS port fails.
    let plain = c.server_url.replace("https://", "http://");
    let out = std::process::Command::new(kiln_tests::bin_dir().join("kiln"))
        .args(["--server", &plain, "get", "hardware"])
        .env("KILN_TOKEN_FILE", &c.admin_token_file)
        .output()
        .unwrap();
    assert!(!out.status.success(), "plaintext against TLS: {}", stdout(&out));
    // https without the CA: refused before connecting, naming the flag.
    let out = std::process::Command::new(kiln_tests::bin_dir().join("kiln"))
        .args(["--server", &c.server_url, "get", "hardware"])
        .env("KILN_TOKEN_FILE", &c.admin_token_file)
        .env_remove("KILN_CA")
        .output()
        .unwrap();
    let expected = format!(
        "error: server URL \"{}\" is https: give the CA that signed its certificate (--ca / ca_file)\n",
        c.server_url
    );
    assert_eq!(stderr(&out), expected);
    // A CA that did not sign the server's certificate: the handshake fails.
    let other = tempfile::tempdir().unwrap();
    let other_ca = other.path().join("ca.pem");
    let forged = Cluster::start().unwrap();
    std::fs::copy(forged.ca_file.as_ref().unwrap(), &other_ca).unwrap();
    let out = std::process::Command::new(kiln_tests::bin_dir().join("kiln"))
        .args(["--server", &c.server_url, "--ca"])
        .arg(&other_ca)
        .args(["get", "hardware"])
        .env("KILN_TOKEN_FILE", &c.admin_token_file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let expected =
        format!("error: cannot reach kiln server at {}: invalid peer certificate: BadSignature\n", c.server_url);
    assert_eq!(stderr(&out), expected);
    // Trusting the dev CA works (every other test relies on it too).
    assert!(c.kiln(&["get", "hardware"]).status.success());
    // curl over HTTP/1.1 with the CA reaches the action API on the TLS port.
    let code = std::process::Command::new("curl")
        .arg("--cacert")
        .arg(c.ca_file.as_ref().unwrap())
        .args(["--http1.1", "-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("{}/v1/action/data", c.server_url))
        .output()
        .unwrap();
    assert_eq!(stdout(&code), "401");

    // Without a TLS flag the server refuses to start, saying which to give.
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(kiln_tests::bin_dir().join("kiln-server"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    // The first line; a backtrace may follow when RUST_BACKTRACE is set.
    let expected = "Error: no TLS configured: give --tls-cert FILE --tls-key FILE, or --dev-tls \
                    (a generated development CA), or --plaintext to run without TLS";
    assert_eq!(err.lines().next(), Some(expected), "{err}");
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn netboot_is_served_over_plain_http_beside_tls() {
    let hook = tempfile::tempdir().unwrap();
    std::fs::write(hook.path().join("vmlinuz"), b"kernel bytes").unwrap();
    let mut c = Cluster::start_with(&["--hook-dir", hook.path().to_str().unwrap()]).unwrap();
    let port = free_port();
    let public = c.server_url.clone();
    c.restart_server(&["--netboot-listen", &format!("127.0.0.1:{port}"), "--public-url", &public]).unwrap();
    let (mac, hw) = (random_mac(), unique("hw"));
    c.apply(&hardware_doc(&hw, &mac));
    template_and_workflow(&c, &hw, &mac);
    let get = |path: &str| {
        let out = std::process::Command::new("curl").args(["-s", &format!("http://127.0.0.1:{port}{path}")]).output();
        stdout(&out.unwrap())
    };
    let script = get(&format!("/boot/ipxe/{mac}"));
    // The kernel line's words: the kernel's URL, then its arguments.
    let kernel: Vec<String> = script
        .lines()
        .find(|l| l.starts_with("kernel "))
        .unwrap_or_else(|| panic!("no kernel line: {script}"))
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let has_arg = |arg: &str| kernel.iter().skip(2).any(|a| a == arg);
    assert_eq!(kernel[1], format!("http://127.0.0.1:{port}/boot/hook/vmlinuz"), "{script}");
    assert!(has_arg(&format!("kiln.server={public}")), "{script}");
    assert_eq!(get("/boot/hook/vmlinuz"), "kernel bytes");
    // The hook image gets the CA of the server's certificate from there,
    // pinned by the script.
    let ca = std::fs::read_to_string(c.ca_file.as_ref().unwrap()).unwrap();
    assert_eq!(get("/boot/ca.pem"), ca);
    let pin = hex::encode(sha2::Sha256::digest(ca.as_bytes()));
    assert!(has_arg(&format!("kiln.ca_url=http://127.0.0.1:{port}/boot/ca.pem")), "{script}");
    assert!(has_arg(&format!("kiln.ca_sha256={pin}")), "{script}");
    // Only netboot there: the admin and action APIs are not on it.
    assert!(get("/v1/action/data").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_client_certificates_name_the_agent() {
    let mut c = Cluster::start_with(&["--require-client-cert"]).unwrap();
    let (mx, my) = (random_mac(), random_mac().replace("02:", "06:"));
    let (hx, hy) = (unique("hwx"), unique("hwy"));
    c.apply(&[hardware_doc(&hx, &mx), hardware_doc(&hy, &my)].join("---\n"));
    let (tx, ty) = (token(&c, &hx), token(&c, &hy));
    let certs = c.dir.path().join("certs-x");
    let out = c.kiln(&["cert", "issue", &hx, "--out", certs.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(certs.join("agent.key")).unwrap().permissions().mode() & 0o777, 0o600);
    let identity =
        |dir: &Path| (std::fs::read(dir.join("agent.pem")).unwrap(), std::fs::read(dir.join("agent.key")).unwrap());

    let mut without = client(&c, None).await;
    assert_eq!(poll(&mut without, &mx, Some(&tx)).await, Err(Code::Unauthenticated), "no client certificate");
    let mut with_x = client(&c, Some(identity(&certs))).await;
    assert_eq!(poll(&mut with_x, &mx, Some(&tx)).await, Ok(()), "X's certificate and token");
    assert_eq!(poll(&mut with_x, &my, Some(&ty)).await, Err(Code::PermissionDenied), "X's certificate claiming Y");
    // The CLI needs no certificate (optional at the TLS level).
    assert!(c.kiln(&["get", "hardware"]).status.success());

    // A real agent with its certificate runs a workflow.
    let extra = format!(
        "client_cert: {:?}\nclient_key: {:?}\nfailed_containers: remove\n",
        certs.join("agent.pem"),
        certs.join("agent.key")
    );
    c.start_agent(&mx, &extra).unwrap();
    let wf = template_and_workflow(&c, &hx, &mx);
    assert_eq!(c.wait_finished(&wf, LIMIT)["state"], "SUCCESS", "{}", c.logs());
}

#[test]
fn secrets_never_reach_logs_api_output_or_ps() {
    let env = kiln_tests::TestEnv::from_env();
    let creds = format!(
        "registries:\n  - registry: \"{}\"\n    username: \"{}\"\n    password: \"{}\"\nfailed_containers: remove\n",
        env.auth_registry, env.registry_user, env.registry_password
    );
    let m = Machine::start(&creds);
    let image = format!("{}/kiln/busybox:v1", env.auth_registry);
    // The action gets the server's CA for the action API and keeps its token
    // where the test can read it. (It does not call the API: busybox wget's
    // TLS fails the handshake with rustls; see contract.rs.)
    let cmd = "echo $KILN_ACTION_TOKEN > /workflow/token; test -s $KILN_API_CA && echo ca given; sleep 1";
    let actions = format!(
        "        - name: a\n          image: {image}\n          timeout: 60\n          command: [\"sh\", \"-c\", {cmd:?}]\n"
    );
    let wf = m.run(&actions);
    // ps of the running agent: its argv holds no secret.
    let agent_pid = m.cluster.agents[0].pid();
    let ps = std::process::Command::new("ps").args(["-o", "args=", "-p", &agent_pid.to_string()]).output().unwrap();
    let result = m.cluster.wait_finished(&wf, LIMIT);
    let logs = m.logs(&wf);
    assert_eq!(result["state"], "SUCCESS", "{logs}\n{}", m.cluster.logs());
    assert!(kiln_tests::has_line(&logs, "[a] ca given"), "{logs}");
    let action_token =
        std::fs::read_to_string(m.cluster.agent_state_dir(0).join("workflows").join(&wf).join("token")).unwrap();

    let c = &m.cluster;
    let mut everything = stdout(&ps);
    for args in [
        vec!["get", "workflows", wf.as_str(), "-o", "json"],
        vec!["get", "hardware", "-o", "json"],
        vec!["describe", "workflow", wf.as_str()],
        vec!["describe", "hardware", m.hw.as_str()],
        vec!["logs", wf.as_str()],
    ] {
        let out = c.kiln(&args);
        everything.push_str(&stdout(&out));
        everything.push_str(&stderr(&out));
    }
    for e in std::fs::read_dir(c.dir.path()).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "log") {
            everything.push_str(&std::fs::read_to_string(e.path()).unwrap());
        }
    }
    assert!(everything.contains("agent started") && everything.contains("kiln-server listening"), "logs were read");
    let secrets = [
        ("agent token", token(c, &m.hw)),
        ("operator token", std::fs::read_to_string(&c.admin_token_file).unwrap().trim().to_string()),
        ("registry password", env.registry_password.clone()),
        ("action token", action_token.trim().to_string()),
    ];
    for (what, secret) in secrets {
        assert!(secret.len() >= 8, "{what} too short to search for: {secret:?}");
        assert!(!everything.contains(&secret), "the {what} appears in logs, CLI output or ps");
    }
}
