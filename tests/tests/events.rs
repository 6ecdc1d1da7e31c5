//! The audit trail against the real binaries: operator writes (apply,
//! retry, delete, token rotation) and refused credentials (a wrong operator
//! token, a wrong agent token, a forged action token) appear in
//! `kiln events -o json` with their actor, action and outcome and without
//! any of the secrets used; `kiln events -f` shows a new event as it is
//! stored.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kiln_proto::connect::{ClientTls, endpoint};
use kiln_proto::v1::agent_service_client::AgentServiceClient;
use kiln_proto::v1::{ActionState, NextActionRequest, StateReport};
use kiln_proto::{AGENT_ID_METADATA, AUTHORIZATION_METADATA};
use kiln_tests::{Cluster, hardware_doc, random_mac, stderr, stdout, unique};
use serde_json::Value;
use sha2::Digest;
use tonic::Code;

fn req<T>(msg: T, agent: &str, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(AGENT_ID_METADATA, agent.parse().unwrap());
    r.metadata_mut().insert(AUTHORIZATION_METADATA, format!("Bearer {token}").parse().unwrap());
    r
}

/// `kiln events -o json`, parsed.
fn events(c: &Cluster) -> (String, Vec<Value>) {
    let out = c.kiln(&["events", "-o", "json", "--limit", "1000"]);
    assert!(out.status.success(), "kiln events: {}", stderr(&out));
    let text = stdout(&out);
    let list = serde_json::from_str::<Value>(&text).expect("a JSON list").as_array().cloned().unwrap();
    (text, list)
}

/// The one event with this actor and action (and object, when given).
fn find<'a>(events: &'a [Value], actor: &str, action: &str, object: Option<&str>) -> Option<&'a Value> {
    let mut found = events
        .iter()
        .filter(|e| e["actor"] == actor && e["action"] == action && object.is_none_or(|o| e["object"] == o));
    let first = found.next();
    assert!(found.next().is_none(), "several events of {actor} {action} {object:?}: {events:#?}");
    first
}

fn outcome(e: &Value) -> (&str, &str) {
    (e["outcome"].as_str().unwrap(), e["reason"].as_str().unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_and_refused_credentials_are_recorded_without_secrets() {
    let c = Cluster::start().unwrap();
    let (mac, hw, tpl, wf) = (random_mac(), unique("hw"), unique("tpl"), unique("wf"));
    c.apply(&hardware_doc(&hw, &mac));
    let agent_token = c.tokens.lock().unwrap().get(&hw).cloned().expect("apply printed the agent token");
    c.apply(&format!(
        "kind: Template\nname: {tpl}\ndata: |\n  version: \"0.1\"\n  name: {tpl}\n  tasks:\n    - name: t\n      worker: \"{{{{.device_1}}}}\"\n      actions:\n        - name: a\n          image: {}\n          timeout: 60\n---\nkind: Workflow\nname: {wf}\ntemplate: {tpl}\nhardware: {hw}\nhardware_map: {{device_1: \"{mac}\"}}\n",
        c.env.busybox()
    ));

    // Fail the workflow's action as its agent would, so it can be retried.
    let tls = ClientTls { ca_pem: c.ca_file.as_ref().map(|p| std::fs::read(p).unwrap()), identity: None };
    let mut agent = AgentServiceClient::new(endpoint(&c.server_url, &tls).unwrap().connect().await.unwrap());
    let assignment = agent
        .next_action(req(NextActionRequest { wait_ms: 5000 }, &mac, &agent_token))
        .await
        .unwrap()
        .into_inner()
        .assignment
        .expect("the workflow's action");
    let failed = StateReport {
        workflow_id: wf.clone(),
        action_index: 0,
        attempt_id: assignment.attempt_id.clone(),
        state: ActionState::Failed as i32,
        exit_code: Some(1),
        reason: "NonZeroExit".into(),
        ..Default::default()
    };
    agent.report_state(req(failed, &mac, &agent_token)).await.unwrap();
    let out = c.kiln(&["retry", &wf]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = c.kiln(&["delete", "workflow", &wf]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = c.kiln(&["token", "rotate", &hw]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rotated = stdout(&out).trim().rsplit(' ').next().unwrap().to_string();
    assert!(rotated.starts_with("kiln_"), "{}", stdout(&out));

    // Refused credentials: the operator's, an agent's, an action's.
    let wrong_operator_token = "kiln_not_the_operator_token";
    let wrong = c
        .kiln_command()
        .args(["get", "hardware"])
        .env_remove("KILN_TOKEN_FILE")
        .env("KILN_TOKEN", wrong_operator_token)
        .output()
        .unwrap();
    assert!(!wrong.status.success() && stderr(&wrong).contains("invalid operator token"), "{}", stderr(&wrong));
    let wrong_agent_token = "kiln_not_this_agents_token";
    let refused = agent.next_action(req(NextActionRequest { wait_ms: 0 }, &mac, wrong_agent_token)).await;
    assert_eq!(refused.unwrap_err().code(), Code::Unauthenticated);
    let forged_action_token = format!("{wf}:0:{}:0123456789abcdef", assignment.attempt_id);
    let code = std::process::Command::new("curl")
        .arg("--cacert")
        .arg(c.ca_file.as_ref().unwrap())
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
        .arg(format!("Authorization: Bearer {forged_action_token}"))
        .arg(format!("{}/v1/action/data", c.server_url))
        .output()
        .unwrap();
    assert_eq!(stdout(&code), "401");

    // Refusals are stored in the background, within about a second.
    let agent_actor = format!("agent {}", mac.to_ascii_lowercase());
    let deadline = Instant::now() + Duration::from_secs(10);
    let (text, list) = loop {
        let (text, list) = events(&c);
        let refusals = [("operator", "authenticate"), (agent_actor.as_str(), "authenticate")];
        let all_there = refusals.iter().all(|(actor, action)| find(&list, actor, action, None).is_some())
            && find(&list, "action (unverified token)", "authenticate", None).is_some();
        if all_there {
            break (text, list);
        }
        assert!(Instant::now() < deadline, "refusals missing from the audit trail: {text}\n{}", c.logs());
        std::thread::sleep(Duration::from_millis(200));
    };

    let applies: Vec<&Value> = list.iter().filter(|e| e["action"] == "apply").collect();
    assert_eq!(applies.len(), 2, "{text}");
    assert!(applies.iter().all(|e| e["actor"] == "operator" && e["kind"] == "write" && outcome(e) == ("ok", "")));
    assert_eq!(applies[0]["object"], format!("Hardware {hw} (created)"));
    assert_eq!(applies[1]["object"], format!("Template {tpl} (created), Workflow {wf} (created)"));
    for (action, object) in [
        ("retry", format!("workflow {wf}")),
        ("delete", format!("workflow {wf}")),
        ("rotate agent token", format!("hardware {hw}")),
    ] {
        let e = find(&list, "operator", action, Some(&object)).unwrap_or_else(|| panic!("no {action}: {text}"));
        assert_eq!((e["kind"].as_str(), outcome(e)), (Some("write"), ("ok", "")), "{e}");
        assert!(e["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{e}");
    }
    let e = find(&list, "operator", "authenticate", None).unwrap();
    assert_eq!((e["kind"].as_str(), outcome(e)), (Some("security"), ("refused", "wrong operator token")), "{e}");
    assert!(e["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{e}");
    let e = find(&list, &agent_actor, "authenticate", None).unwrap();
    assert_eq!(outcome(e), ("refused", "wrong token"), "{e}");
    assert!(e["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{e}");
    let e = find(&list, "action (unverified token)", "authenticate", None).unwrap();
    assert_eq!(outcome(e), ("refused", "invalid action token"), "{e}");
    let times: Vec<&str> = list.iter().map(|e| e["time"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "oldest first: {times:?}");

    // No secret, in any form, in any output of the trail.
    let operator_token = std::fs::read_to_string(&c.admin_token_file).unwrap().trim().to_string();
    let yaml = stdout(&c.kiln(&["events", "-o", "yaml"]));
    let table = stdout(&c.kiln(&["events"]));
    assert!(table.contains("wrong operator token"), "{table}");
    for secret in [
        operator_token.clone(),
        agent_token.clone(),
        rotated.clone(),
        wrong_operator_token.to_string(),
        wrong_agent_token.to_string(),
        forged_action_token.clone(),
        hex::encode(sha2::Sha256::digest(agent_token.as_bytes())),
        hex::encode(sha2::Sha256::digest(operator_token.as_bytes())),
    ] {
        for output in [&text, &yaml, &table] {
            assert!(!output.contains(&secret), "a secret in kiln events: {secret}\n{output}");
        }
    }

    // Filters: by kind, and since a moment after everything above.
    let security = stdout(&c.kiln(&["events", "--kind", "security", "-o", "json"]));
    let security: Vec<Value> = serde_json::from_str(&security).unwrap();
    assert!(!security.is_empty() && security.iter().all(|e| e["kind"] == "security"), "{security:?}");
    let none = stdout(&c.kiln(&["events", "--since", "2999-01-01T00:00:00Z", "-o", "json"]));
    assert_eq!(serde_json::from_str::<Value>(&none).unwrap(), serde_json::json!([]));
}

#[test]
fn events_follow_shows_a_new_event_as_it_happens() {
    let c = Cluster::start().unwrap();
    let hw = unique("hw");
    c.apply(&hardware_doc(&hw, &random_mac()));
    let mut follow = c
        .kiln_command()
        .args(["events", "-f", "-o", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let out = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                return;
            }
        }
    });
    let next = |what: &str| -> Value {
        let line = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_else(|_| panic!("no {what} from kiln events -f"));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"))
    };
    // What was there first, then the delete as it happens.
    let first = next("existing event");
    assert_eq!(
        (first["action"].as_str(), first["object"].as_str()),
        (Some("apply"), Some(&*format!("Hardware {hw} (created)")))
    );
    let out = c.kiln(&["delete", "hardware", &hw]);
    assert!(out.status.success(), "{}", stderr(&out));
    let deleted = next("delete event");
    assert_eq!(
        (deleted["action"].as_str(), deleted["object"].as_str()),
        (Some("delete"), Some(&*format!("hardware {hw}")))
    );
    assert_eq!(deleted["outcome"], "ok");
    // A refusal shows too, once stored (about a second later).
    let wrong = c
        .kiln_command()
        .args(["get", "hardware"])
        .env_remove("KILN_TOKEN_FILE")
        .env("KILN_TOKEN", "kiln_wrong")
        .output()
        .unwrap();
    assert!(!wrong.status.success());
    let refused = next("refusal event");
    assert_eq!(
        (refused["kind"].as_str(), refused["reason"].as_str()),
        (Some("security"), Some("wrong operator token"))
    );
    let _ = follow.kill();
    let _ = follow.wait();
}
