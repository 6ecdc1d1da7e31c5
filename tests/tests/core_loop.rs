//! The core provisioning loop end to end: CLI → server → agent → Docker →
//! registry, with real processes and a real engine.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kiln_tests::{Cluster, hardware_doc, has_line, random_mac, stderr, stdout, unique, wait_until};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(120);

/// A template whose actions are `(name, timeout, shell command)`.
fn template(name: &str, image: &str, actions: &[(&str, u64, &str)], extra_action_yaml: &str) -> String {
    let mut t = format!(
        "kind: Template\nname: {name}\ndata: |\n  version: \"0.1\"\n  name: {name}\n  global_timeout: 600\n  tasks:\n    - name: provision\n      worker: \"{{{{.device_1}}}}\"\n      environment:\n        GREETING: hello\n      actions:\n"
    );
    for (action, timeout, cmd) in actions {
        t.push_str(&format!(
            "        - name: {action}\n          image: {image}\n          timeout: {timeout}\n          command: [\"sh\", \"-c\", {cmd:?}]\n{extra_action_yaml}"
        ));
    }
    t
}

fn workflow_doc(id: &str, template: &str, hardware: &str, mac: &str) -> String {
    format!(
        "kind: Workflow\nname: {id}\ntemplate: {template}\nhardware: {hardware}\nhardware_map:\n  device_1: \"{mac}\"\n"
    )
}

/// Applies hardware + template + workflow for a new machine and starts its agent.
struct Scenario {
    cluster: Cluster,
    workflow: String,
    agent_pid: u32,
}

fn scenario(actions: &[(&str, u64, &str)], extra_action_yaml: &str, agent_extra: &str) -> Scenario {
    let mut cluster = Cluster::start().expect("start server");
    let mac = random_mac();
    let hw = unique("hw");
    let tpl = unique("tpl");
    let wf = unique("wf");
    let image = cluster.env.busybox();
    let docs = [
        hardware_doc(&hw, &mac),
        template(&tpl, &image, actions, extra_action_yaml),
        workflow_doc(&wf, &tpl, &hw, &mac),
    ]
    .join("---\n");
    let applied = cluster.apply(&docs);
    assert!(has_line(&applied, &format!("workflow/{wf} created")), "{applied}");
    let agent_pid = cluster.start_agent(&mac, agent_extra).expect("start agent");
    Scenario { cluster, workflow: wf, agent_pid }
}

fn actions(wf: &Value) -> &Vec<Value> {
    wf["actions"].as_array().expect("actions array")
}

fn attempts(action: &Value) -> &Vec<Value> {
    action["attempts"].as_array().expect("attempts array")
}

#[test]
fn three_action_workflow_succeeds_with_states_timestamps_and_logs() {
    let s = scenario(
        &[
            ("one", 60, "echo one says $GREETING; echo one-to-stderr >&2"),
            ("two", 60, "for i in 1 2 3; do echo two line $i; done"),
            ("three", 60, "echo three done"),
        ],
        "",
        "",
    );
    // `kiln watch` follows the workflow live and exits 0 on SUCCESS.
    let watch = s.cluster.kiln(&["watch", &s.workflow]);
    assert!(watch.status.success(), "watch: {}{}\n{}", stdout(&watch), stderr(&watch), s.cluster.logs());
    let watched = stdout(&watch);
    // One line per change: "TIME action N/3 provision/NAME SUCCESS after ...".
    for (n, name) in ["one", "two", "three"].iter().enumerate() {
        let (count, action) = (format!("{}/3", n + 1), format!("provision/{name}"));
        let said =
            |l: &str| l.split_whitespace().skip(1).take(4).eq(["action", count.as_str(), action.as_str(), "SUCCESS"]);
        assert!(watched.lines().any(said), "no line of watch says {action} SUCCESS: {watched}");
    }

    let wf = s.cluster.workflow(&s.workflow);
    assert_eq!(wf["state"], "SUCCESS", "{wf:#}");
    let mut previous_end = String::new();
    for action in actions(&wf) {
        assert_eq!(action["state"], "SUCCESS");
        let tries = attempts(action);
        assert_eq!(tries.len(), 1, "exactly one attempt: {action:#}");
        let a = &tries[0];
        assert_eq!(a["exit_code"], 0);
        for field in ["created_at", "pulling_at", "running_at", "finished_at"] {
            assert!(a[field].is_string(), "attempt lacks {field}: {a:#}");
        }
        // RFC 3339 UTC timestamps order lexically: each action starts after
        // the previous one finished.
        let (created, running, finished) =
            (a["created_at"].as_str().unwrap(), a["running_at"].as_str().unwrap(), a["finished_at"].as_str().unwrap());
        assert!(created >= previous_end.as_str() && created <= running && running <= finished, "{a:#}");
        previous_end = finished.to_string();
    }

    let logs = stdout(&s.cluster.kiln(&["logs", &s.workflow]));
    for line in
        ["[one] one says hello", "[one] one-to-stderr", "[two] two line 1", "[two] two line 3", "[three] three done"]
    {
        assert!(has_line(&logs, line), "logs lack {line:?}: {logs}");
    }
    let described = stdout(&s.cluster.kiln(&["describe", "workflow", &s.workflow]));
    let three = format!("  3. provision/three  SUCCESS  ({})", s.cluster.env.busybox());
    assert!(has_line(&described, &three), "{described}");
    let first_attempts =
        described.lines().filter(|l| l.trim_start().starts_with("attempt 1 [") && l.contains("] SUCCESS: "));
    assert_eq!(first_attempts.count(), 3, "{described}");
    let yaml = stdout(&s.cluster.kiln(&["get", "workflows", &s.workflow, "-o", "yaml"]));
    // The top-level state (unindented) and each attempt's exit code.
    assert!(has_line(&yaml, "state: SUCCESS"), "{yaml}");
    assert_eq!(yaml.lines().filter(|l| l.trim_start() == "exit_code: 0").count(), 3, "{yaml}");
    let table = stdout(&s.cluster.kiln(&["get", "workflows"]));
    // ID TEMPLATE HARDWARE STATE PROGRESS AGE
    let row = |l: &str| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() == 6 && f[0] == s.workflow && f[3] == "SUCCESS" && f[4] == "3/3"
    };
    assert!(table.lines().any(row), "{table}");
    let two = stdout(&s.cluster.kiln(&["logs", &s.workflow, "two"]));
    assert!(has_line(&two, "two line 2") && !two.contains("three done"), "{two}");
    // The successful containers are gone (removed just after each report).
    let filter = format!("label=kiln.workflow={}", s.workflow);
    wait_until(Duration::from_secs(20), || {
        stdout(&s.cluster.env.docker(&["ps", "-aq", "--filter", &filter])).trim().is_empty()
    })
    .expect("successful containers removed");
}

#[test]
fn failing_action_fails_the_workflow_and_later_actions_never_run() {
    let s = scenario(
        &[("ok", 60, "echo fine"), ("breaks", 60, "echo about to fail; exit 3"), ("never", 60, "echo must not run")],
        "",
        "",
    );
    let watch = s.cluster.kiln(&["watch", &s.workflow]);
    assert_eq!(watch.status.code(), Some(1), "watch exits 1 on failure: {}", stdout(&watch));
    let wf = s.cluster.workflow(&s.workflow);
    assert_eq!(wf["state"], "FAILED");
    assert_eq!(wf["reason"], "action \"breaks\" FAILED with exit code 3 (NonZeroExit): exited with code 3");
    let acts = actions(&wf);
    assert_eq!(acts[1]["state"], "FAILED");
    assert_eq!(attempts(&acts[1])[0]["exit_code"], 3);
    assert_eq!(attempts(&acts[1])[0]["reason"], "NonZeroExit");
    assert!(attempts(&acts[2]).is_empty(), "the action after the failure never ran: {:#}", acts[2]);
    let logs = stdout(&s.cluster.kiln(&["logs", &s.workflow]));
    assert!(has_line(&logs, "[breaks] about to fail") && !logs.contains("must not run"), "{logs}");
    // The failed container is kept for inspection.
    let kept = s.cluster.env.docker(&["ps", "-aq", "--filter", &format!("label=kiln.workflow={}", s.workflow)]);
    assert_eq!(stdout(&kept).trim().lines().count(), 1, "failed container kept");
    s.cluster.env.docker(&["rm", "-f", stdout(&kept).trim()]);
}

#[test]
fn action_past_its_timeout_is_killed_and_reported_timeout() {
    let s = scenario(&[("sleepy", 2, "echo going to sleep; sleep 300")], "", "failed_containers: remove\n");
    let start = Instant::now();
    let wf = s.cluster.wait_finished(&s.workflow, LIMIT);
    assert!(start.elapsed() < Duration::from_secs(60), "killed long before the sleep ended");
    assert_eq!(wf["state"], "TIMEOUT", "{wf:#}");
    let a = &attempts(&actions(&wf)[0])[0];
    assert_eq!(a["state"], "TIMEOUT");
    assert_eq!(a["reason"], "Timeout");
    let logs = stdout(&s.cluster.kiln(&["logs", &s.workflow]));
    assert!(has_line(&logs, "[sleepy] going to sleep"), "{logs}");
    let filter = format!("label=kiln.workflow={}", s.workflow);
    wait_until(Duration::from_secs(20), || {
        stdout(&s.cluster.env.docker(&["ps", "-aq", "--filter", &filter])).trim().is_empty()
    })
    .expect("killed container removed (failed_containers: remove)");
}

/// Runs one action on a fresh server and agent; the agent's pid is in the
/// action's environment as AGENT_PID. Returns (workflow state, logs, agent pid).
fn single_action(cmd: &str, action_yaml: &str, agent_extra: &str) -> (String, String, u32) {
    let mut cluster = Cluster::start().expect("server");
    let mac = random_mac();
    let (hw, tpl, wf) = (unique("hw"), unique("tpl"), unique("wf"));
    let agent_pid = cluster.start_agent(&mac, &format!("failed_containers: remove\n{agent_extra}")).unwrap();
    let tpl_doc = template(&tpl, &cluster.env.busybox(), &[("look", 60, cmd)], action_yaml)
        .replace("GREETING: hello", &format!("GREETING: hello\n        AGENT_PID: \"{agent_pid}\""));
    cluster.apply(&[hardware_doc(&hw, &mac), tpl_doc, workflow_doc(&wf, &tpl, &hw, &mac)].join("---\n"));
    let result = cluster.wait_finished(&wf, LIMIT);
    (result["state"].as_str().unwrap().to_string(), stdout(&cluster.kiln(&["logs", &wf])), agent_pid)
}

#[test]
fn pid_host_sees_the_agents_processes() {
    // The same check with and without `pid: host`: it must fail without it,
    // or the test proves nothing.
    let check = "test -d /proc/$AGENT_PID && echo sees agent $AGENT_PID";
    let (state, logs, pid) = single_action(check, "          pid: host\n", "");
    assert_eq!(state, "SUCCESS", "{logs}");
    assert!(has_line(&logs, &format!("[look] sees agent {pid}")), "{logs}");
    let (state, _, _) = single_action(check, "", "");
    assert_eq!(state, "FAILED", "a private PID namespace must not see the agent");
}

#[test]
fn network_host_from_the_template_shares_the_host_network() {
    // With the engine's bridge off, a private network namespace has only lo.
    let check = "ls /sys/class/net; test $(ls /sys/class/net | wc -l) -gt 1";
    let agent = "host_network: false\n";
    let (state, logs, _) = single_action(check, "          namespaces: {network: host}\n", agent);
    assert_eq!(state, "SUCCESS", "{logs}");
    let (state, logs, _) = single_action(check, "", agent);
    assert_eq!(state, "FAILED", "private network namespace: {logs}");
}

#[test]
fn action_writes_to_a_block_device() {
    let backing = tempfile::NamedTempFile::new().unwrap();
    backing.as_file().set_len(8 << 20).unwrap();
    let losetup = Command::new("losetup").args(["-f", "--show"]).arg(backing.path()).output().unwrap();
    assert!(losetup.status.success(), "losetup: {}", stderr(&losetup));
    let dev = stdout(&losetup).trim().to_string();
    struct Detach(String);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = Command::new("losetup").args(["-d", &self.0]).status();
        }
    }
    let _detach = Detach(dev.clone());

    let marker = unique("kiln-marker");
    let cmd = format!("printf '{marker}' | dd of={dev} bs=512 seek=2048 conv=notrunc,fsync && echo wrote {dev}");
    let s = scenario(&[("mark", 60, &cmd)], "", "");
    let wf = s.cluster.wait_finished(&s.workflow, LIMIT);
    assert_eq!(wf["state"], "SUCCESS", "{}", stdout(&s.cluster.kiln(&["logs", &s.workflow])));
    let data = std::fs::read(backing.path()).unwrap();
    let at = 2048 * 512;
    assert_eq!(&data[at..at + marker.len()], marker.as_bytes(), "marker read back from the backing file");
    let _ = s.agent_pid;
}

#[test]
fn pulls_from_a_registry_with_credentials_and_reports_pull_errors() {
    let run = |image: String, agent_extra: String| {
        let mut cluster = Cluster::start().expect("server");
        let mac = random_mac();
        let (hw, tpl, wf) = (unique("hw"), unique("tpl"), unique("wf"));
        let t = template(&tpl, &image, &[("pull", 60, "echo pulled fine")], "");
        cluster.apply(&[hardware_doc(&hw, &mac), t, workflow_doc(&wf, &tpl, &hw, &mac)].join("---\n"));
        cluster.start_agent(&mac, &agent_extra).unwrap();
        let result = cluster.wait_finished(&wf, LIMIT);
        let attempt = attempts(&actions(&result)[0])[0].clone();
        (result["state"].as_str().unwrap().to_string(), attempt)
    };
    let env = kiln_tests::TestEnv::from_env();
    let private = format!("{}/kiln/busybox:v1", env.auth_registry);
    // Make sure the engine has no cached copy, so the agent must pull.
    env.docker(&["rmi", "-f", &private]);
    let creds = |password: &str| {
        format!(
            "registries:\n  - registry: \"{}\"\n    username: \"{}\"\n    password: \"{password}\"\n",
            env.auth_registry, env.registry_user
        )
    };

    let (state, attempt) = run(private.clone(), creds(&env.registry_password));
    assert_eq!(state, "SUCCESS", "right credentials pull: {attempt:#}");

    env.docker(&["rmi", "-f", &private]);
    let (state, attempt) = run(private.clone(), creds("wrong-password"));
    assert_eq!(state, "FAILED");
    assert_eq!(attempt["reason"], "PullFailed");
    let message = attempt["message"].as_str().unwrap().to_lowercase();
    assert!(message.contains("unauthorized") || message.contains("authentication"), "{message}");

    let (state, attempt) = run(private.clone(), String::new());
    assert_eq!(state, "FAILED");
    assert!(
        attempt["message"].as_str().unwrap().contains("basic auth")
            || attempt["message"].as_str().unwrap().contains("unauthorized"),
        "{attempt:#}"
    );

    // pull_policy: never runs only what the engine already has.
    let (state, attempt) = run(private.clone(), "pull_policy: never\n".into());
    assert_eq!(state, "FAILED");
    assert!(attempt["message"].as_str().unwrap().contains("not present"), "{attempt:#}");

    let (state, attempt) = run(format!("{}/kiln/does-not-exist:v1", env.registry), String::new());
    assert_eq!(state, "FAILED");
    assert_eq!(attempt["reason"], "PullFailed");
    let message = attempt["message"].as_str().unwrap();
    assert!(
        message.contains("does-not-exist") && (message.contains("not found") || message.contains("unknown")),
        "{message}"
    );
}

#[test]
fn logs_follow_shows_lines_while_the_action_runs() {
    let s = scenario(&[("slow", 60, "echo first-line; sleep 4; echo second-line")], "", "");
    let mut follow = s
        .cluster
        .kiln_command()
        .args(["logs", "-f", &s.workflow])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    let first = lines.next().expect("a line").unwrap();
    assert_eq!(first, "[slow] first-line");
    // The first line arrived while the action was still running.
    let wf = s.cluster.workflow(&s.workflow);
    assert_eq!(wf["state"], "RUNNING", "line streamed live, before the action ended");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l == "[slow] second-line"), "{rest:?}");
    // `logs -f` ends by itself when the workflow finished.
    wait_until(Duration::from_secs(20), || follow.try_wait().unwrap().is_some()).expect("logs -f exits");
    assert_eq!(s.cluster.workflow(&s.workflow)["state"], "SUCCESS");
}

#[test]
fn a_restarted_agent_reattaches_to_its_running_action_instead_of_running_it_again() {
    let mut cluster = Cluster::start().expect("server");
    let mac = random_mac();
    let (hw, tpl, wf) = (unique("hw"), unique("tpl"), unique("wf"));
    let cmd = "echo started >> /workflow/runs; echo before; sleep 4; echo after";
    cluster.apply(
        &[
            hardware_doc(&hw, &mac),
            template(&tpl, &cluster.env.busybox(), &[("long", 60, cmd), ("next", 60, "echo next")], ""),
            workflow_doc(&wf, &tpl, &hw, &mac),
        ]
        .join("---\n"),
    );
    cluster.start_agent(&mac, "").unwrap();
    wait_until(Duration::from_secs(30), || cluster.workflow(&wf)["actions"][0]["state"] == "RUNNING")
        .unwrap_or_else(|e| panic!("{e}: {:#}\n{}", cluster.workflow(&wf), cluster.logs()));
    // Killed once its first line was shipped, so the new agent's re-ship
    // of it (below) is the duplicate the server must drop.
    wait_until(Duration::from_secs(20), || has_line(&stdout(&cluster.kiln(&["logs", &wf, "long"])), "before"))
        .unwrap_or_else(|e| panic!("{e}: the first line was not shipped\n{}", cluster.logs()));
    cluster.agents[0].kill();
    // The machine's agent comes back, with its state directory, while the
    // container still runs.
    let same_machine = format!("state_dir: {:?}\n", cluster.agent_state_dir(0).display());
    cluster.start_agent(&mac, &same_machine).unwrap();
    let result = cluster.wait_finished(&wf, LIMIT);
    assert_eq!(result["state"], "SUCCESS", "{}", cluster.logs());
    assert_eq!(actions(&result)[0]["attempts"].as_array().unwrap().len(), 1);
    let runs = std::fs::read_to_string(cluster.agent_state_dir(0).join("workflows").join(&wf).join("runs")).unwrap();
    assert_eq!(runs, "started\n", "the action ran once");
    let logs = stdout(&cluster.kiln(&["logs", &wf, "long"]));
    // The new agent ships the container's output from its start again; the
    // server keeps each line once.
    assert_eq!(logs.lines().filter(|l| *l == "before").count(), 1, "re-shipped lines are not duplicated: {logs}");
    assert_eq!(logs.lines().filter(|l| *l == "after").count(), 1, "{logs}");
}
