//! kiln-server on PostgreSQL: two replicas sharing one database, agents
//! split across them, a replica dying under its agents (a server killed with
//! SIGKILL mid-workflow: `faults.rs`). Each test starts its own PostgreSQL
//! (`kiln_tests::postgres`).

use std::net::TcpListener;
use std::time::{Duration, SystemTime};

use kiln_proto::connect::{ClientTls, endpoint};
use kiln_proto::v1::NextActionRequest;
use kiln_proto::v1::agent_service_client::AgentServiceClient;
use kiln_proto::{AGENT_ID_METADATA, AUTHORIZATION_METADATA};
use kiln_tests::postgres::PgServer;
use kiln_tests::proxy::Proxy;
use kiln_tests::{Cluster, hardware_doc, has_line, random_mac, stdout, unique, wait_until};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(120);

/// A template of one task for `{{.device_1}}` whose actions are
/// `(name, shell command)`.
fn template(name: &str, image: &str, actions: &[(&str, &str)]) -> String {
    let mut t = format!(
        "kind: Template\nname: {name}\ndata: |\n  version: \"0.1\"\n  name: {name}\n  global_timeout: 600\n  tasks:\n    - name: t\n      worker: \"{{{{.device_1}}}}\"\n      actions:\n"
    );
    for (action, cmd) in actions {
        t.push_str(&format!(
            "        - name: {action}\n          image: {image}\n          timeout: 60\n          command: [\"sh\", \"-c\", {cmd:?}]\n"
        ));
    }
    t
}

fn workflow_doc(id: &str, template: &str, hardware: &str, mac: &str) -> String {
    format!(
        "kind: Workflow\nname: {id}\ntemplate: {template}\nhardware: {hardware}\nhardware_map: {{device_1: \"{mac}\"}}\n"
    )
}

fn attempts(wf: &Value, action: usize) -> &Vec<Value> {
    wf["actions"][action]["attempts"].as_array().expect("attempts")
}

fn time(v: &Value) -> SystemTime {
    humantime::parse_rfc3339(v.as_str().expect("a timestamp")).expect("RFC 3339")
}

/// Every action succeeded with exactly one attempt.
fn assert_succeeded_once(wf: &Value, context: &str) {
    assert_eq!(wf["state"], "SUCCESS", "{wf:#}\n{context}");
    for (i, action) in wf["actions"].as_array().unwrap().iter().enumerate() {
        assert_eq!(attempts(wf, i).len(), 1, "action {i} ran more than once: {action:#}\n{context}");
    }
}

#[test]
fn replicas_share_one_database_and_take_over_each_others_agents() {
    let pg = PgServer::start().expect("start PostgreSQL");
    let url = pg.create_database().unwrap();
    let args = ["--database-url", url.as_str()];
    let mut r1 = Cluster::start_with(&args).expect("replica 1");
    // Replicas behind one address present one certificate: replica 1's,
    // from its development CA.
    let tls = r1.dir.path().join("data").join("tls");
    let (cert, key) = (tls.join("server.pem"), tls.join("server.key"));
    let mut r2 = Cluster::start_with(&[
        args[0],
        args[1],
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ])
    .expect("replica 2");
    r2.ca_file = r1.ca_file.clone();
    let context = |r1: &Cluster, r2: &Cluster| format!("replica 1:\n{}\nreplica 2:\n{}", r1.logs(), r2.logs());
    // A TCP forwarder stands in for the load balancer in front of the
    // replicas; the test switches it when a replica dies.
    let balancer = Proxy::start(&r1.server_addr()).unwrap();
    let balancer_url = format!("https://{}", balancer.addr());
    let (mac1, mac2) = (random_mac(), random_mac());
    let (hw1, hw2, tpl) = (unique("hw1"), unique("hw2"), unique("tpl"));
    let image = r1.env.busybox();
    r1.apply(
        &[
            hardware_doc(&hw1, &mac1),
            hardware_doc(&hw2, &mac2),
            template(&tpl, &image, &[("one", "echo one from $HOSTNAME; sleep 1"), ("two", "echo two")]),
        ]
        .join("---\n"),
    );
    // Agent tokens are per machine, not per replica: the ones replica 1
    // issued work on replica 2.
    *r2.tokens.lock().unwrap() = r1.tokens.lock().unwrap().clone();
    // Machine 1 reaches replica 1 through the balancer, machine 2 talks to
    // replica 2 directly.
    r1.start_agent_at(&balancer_url, &mac1, "").unwrap();
    r2.start_agent(&mac2, "").unwrap();
    // Both agents sit in their long poll before the workflows exist. A
    // sleep, as nothing outside the server shows a held long poll (the
    // agent's first question is answered at once, its long poll follows).
    // An agent slower than this only makes the test weaker, not flaky: it
    // finds its workflow in the store instead of hearing the notification.
    std::thread::sleep(Duration::from_secs(2));

    // Both workflows are created through replica 1: replica 2 learns of its
    // agent's workflow only from PostgreSQL's notification.
    let (wf1, wf2) = (unique("wf1"), unique("wf2"));
    r1.apply(&[workflow_doc(&wf1, &tpl, &hw1, &mac1), workflow_doc(&wf2, &tpl, &hw2, &mac2)].join("---\n"));
    let done1 = r2.wait_finished(&wf1, LIMIT);
    let done2 = r1.wait_finished(&wf2, LIMIT);
    assert_succeeded_once(&done1, &context(&r1, &r2));
    assert_succeeded_once(&done2, &context(&r1, &r2));
    // Dispatched at once, not at the next periodic re-check (10 s) or the
    // end of the agent's long poll.
    let waited = time(&attempts(&done2, 0)[0]["created_at"]).duration_since(time(&done2["created_at"])).unwrap();
    println!("cross-replica dispatch latency: {waited:?}");
    assert!(waited < Duration::from_secs(3), "workflow 2 waited {waited:?} for its first attempt");
    // Logs shipped to one replica are read from the other.
    let logs1 = stdout(&r2.kiln(&["logs", &wf1]));
    assert!(logs1.lines().any(|l| l.starts_with("[one] one from ")), "{logs1}\n{}", context(&r1, &r2));
    assert!(has_line(&stdout(&r1.kiln(&["logs", &wf2])), "[two] two"), "{}", context(&r1, &r2));

    // A token revoked through replica 1 is refused by replica 2 at once,
    // although replica 2 verified it moments ago: its cache of verified
    // tokens hears of the change from PostgreSQL.
    let token2 = r1.tokens.lock().unwrap().get(&hw2).cloned().expect("token of machine 2");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let tls = ClientTls { ca_pem: r2.ca_file.as_ref().map(|p| std::fs::read(p).unwrap()), identity: None };
    let poll_r2 = || {
        runtime.block_on(async {
            let mut client = AgentServiceClient::new(endpoint(&r2.server_url, &tls).unwrap().connect().await.unwrap());
            let mut req = tonic::Request::new(NextActionRequest { wait_ms: 0 });
            req.metadata_mut().insert(AGENT_ID_METADATA, mac2.parse().unwrap());
            req.metadata_mut().insert(AUTHORIZATION_METADATA, format!("Bearer {token2}").parse().unwrap());
            client.next_action(req).await.map(|_| ()).map_err(|s| s.code())
        })
    };
    assert_eq!(poll_r2(), Ok(()));
    let revoked = r1.kiln(&["token", "revoke", &hw2]);
    assert!(revoked.status.success(), "{}", kiln_tests::stderr(&revoked));
    wait_until(Duration::from_secs(3), || poll_r2() == Err(tonic::Code::Unauthenticated))
        .unwrap_or_else(|e| panic!("{e}: replica 2 still accepts the revoked token\n{}", context(&r1, &r2)));

    // Replica 1 dies while machine 1 runs an action; the balancer sends the
    // agent's retries to replica 2, and the workflow finishes there.
    let wf3 = unique("wf3");
    let tpl3 = unique("tpl3");
    r2.apply(
        &[
            template(
                &tpl3,
                &image,
                &[("long", "echo line-begin; sleep 4; echo line-end"), ("after", "echo line-after")],
            ),
            workflow_doc(&wf3, &tpl3, &hw1, &mac1),
        ]
        .join("---\n"),
    );
    wait_until(Duration::from_secs(60), || r2.workflow(&wf3)["actions"][0]["state"] == "RUNNING")
        .unwrap_or_else(|e| panic!("{e}\n{}", context(&r1, &r2)));
    r1.server.kill();
    balancer.set_upstream(&r2.server_addr());
    let done3 = r2.wait_finished(&wf3, LIMIT);
    assert_succeeded_once(&done3, &context(&r1, &r2));
    let logs = stdout(&r2.kiln(&["logs", &wf3]));
    for line in ["line-begin", "line-end", "line-after"] {
        assert_eq!(logs.matches(line).count(), 1, "{line:?} once in the logs: {logs}\n{}", context(&r1, &r2));
    }
}

/// Runs `kiln-server` with `args` until it exits (it must, within 30 s).
fn server_fails(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(kiln_tests::bin_dir().join("kiln-server"));
    cmd.args(["--listen", "127.0.0.1:0", "--plaintext", "--data-dir"]).arg(dir.path()).args(args);
    let mut child = cmd.stderr(std::process::Stdio::piped()).spawn().expect("run kiln-server");
    wait_until(Duration::from_secs(30), || child.try_wait().unwrap().is_some()).expect("kiln-server exits");
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_bad_or_unreachable_database_url_is_a_clear_error_without_the_password() {
    let err = server_fails(&["--database-url", "mysql://kiln:hunter2@db/kiln"]);
    let first = err.lines().next().unwrap_or_default();
    assert_eq!(
        first,
        "Error: --database-url: unsupported scheme \"mysql\": use postgres://, postgresql:// or sqlite://"
    );
    assert!(!err.contains("hunter2"), "password printed: {err}");
    // A port where nothing listens.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let err = server_fails(&["--database-url", &format!("postgres://kiln:hunter2@127.0.0.1:{port}/kiln")]);
    // Exact up to the driver's own words for the refused connection.
    let expected = format!(
        "Error: --database-url postgres://kiln:***@127.0.0.1:{port}/kiln: store failure: cannot connect to PostgreSQL: "
    );
    assert!(err.starts_with(&expected), "{err}");
    assert!(!err.contains("hunter2"), "password printed: {err}");
    // A server that refuses the password (only this user may log in).
    let pg = PgServer::start().expect("start PostgreSQL");
    let err = server_fails(&["--database-url", &pg.url("no_such_db").replace("postgres@", "postgres:hunter2@")]);
    let redacted = pg.url("no_such_db").replace("postgres@", "postgres:***@");
    let expected = format!(
        "Error: --database-url {redacted}: store failure: cannot connect to PostgreSQL: \
         error returned from database: database \"no_such_db\" does not exist"
    );
    assert_eq!(err.lines().next(), Some(expected.as_str()), "{err}");
    assert!(!err.contains("hunter2"), "password printed: {err}");
}
