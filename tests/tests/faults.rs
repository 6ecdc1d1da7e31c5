//! Faults: agents killed with SIGKILL (and some never coming back), agents
//! frozen past their lease, servers killed mid-workflow. What must hold:
//! every workflow ends, no finished action runs twice, no attempt is left
//! open, and a lost agent's attempt ends as `AgentLost` with the retry
//! policy applied.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use kiln_tests::{Cluster, Machine, Rng, hardware_doc, has_line, random_mac, unique, wait_until};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(120);

fn attempts(wf: &Value, action: usize) -> &Vec<Value> {
    wf["actions"][action]["attempts"].as_array().expect("attempts")
}

/// The per-workflow directory (`/workflow` of its actions) of agent `n`.
fn workflow_dir(c: &Cluster, n: usize, wf: &str) -> PathBuf {
    c.agent_state_dir(n).join("workflows").join(wf)
}

fn runs(c: &Cluster, n: usize, wf: &str) -> String {
    std::fs::read_to_string(workflow_dir(c, n, wf).join("runs")).unwrap_or_default()
}

/// The agent config line that makes a restarted agent the same machine's.
fn same_machine(c: &Cluster, n: usize) -> String {
    format!("state_dir: {:?}\n", c.agent_state_dir(n).display())
}

/// Running containers of the test engine labelled with this attempt.
fn running_containers_of(c: &Cluster, attempt_id: &str) -> String {
    let out = c.env.docker(&["ps", "-q", "--filter", &format!("label=kiln.attempt={attempt_id}")]);
    assert!(out.status.success(), "docker ps: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn wait_running(c: &Cluster, wf: &str) -> Value {
    wait_until(Duration::from_secs(60), || c.workflow(wf)["actions"][0]["state"] == "RUNNING")
        .unwrap_or_else(|e| panic!("{e}: {:#}\n{}", c.workflow(wf), c.logs()));
    // Past its start: the action has written its line (every caller runs
    // LONG on agent 0, for the first time).
    wait_until(Duration::from_secs(20), || runs(c, 0, wf) == "start\n")
        .unwrap_or_else(|e| panic!("{e}: no start line: {:?}\n{}", runs(c, 0, wf), c.logs()));
    c.workflow(wf)
}

const LONG: &str = "        - name: long\n          image: IMAGE\n          timeout: 60\n          command: [\"sh\", \"-c\", \"echo start >> /workflow/runs; sleep 10; echo end >> /workflow/runs\"]\n";

#[test]
fn an_agent_that_never_comes_back_fails_the_workflow_with_agent_lost() {
    let mut m = Machine::start_with(&["--attempt-lease", "2s"], "");
    let wf = m.run(LONG);
    let running = wait_running(&m.cluster, &wf);
    let attempt = attempts(&running, 0)[0]["id"].as_str().unwrap().to_string();
    m.cluster.agents[0].kill();
    // Lease (2 s) plus a sweep (1 s), not the global or action timeout.
    let killed = Instant::now();
    let done = m.cluster.wait_finished(&wf, LIMIT);
    assert!(killed.elapsed() < Duration::from_secs(8), "noticed after {:?}", killed.elapsed());
    assert_eq!(done["state"], "FAILED", "{done:#}");
    let lost = &attempts(&done, 0)[0];
    assert_eq!((lost["state"].as_str(), lost["reason"].as_str()), (Some("FAILED"), Some("AgentLost")), "{lost:#}");
    // Exact up to how long ago the lease ran out.
    let lost_reason = format!(
        "action \"long\" FAILED (AgentLost): agent lost: agent {} stopped renewing the attempt's lease, which ran out ",
        m.mac
    );
    assert!(done["reason"].as_str().unwrap().starts_with(&lost_reason), "{done:#}");
    // The container the dead agent left runs on until an agent of this
    // machine is back: with nothing to do, it removes it.
    assert!(!running_containers_of(&m.cluster, &attempt).is_empty(), "the orphan still runs");
    let again = same_machine(&m.cluster, 0);
    m.cluster.start_agent(&m.mac, &again).unwrap();
    wait_until(Duration::from_secs(20), || running_containers_of(&m.cluster, &attempt).is_empty())
        .unwrap_or_else(|e| panic!("{e}: the lost attempt's container still runs\n{}", m.cluster.logs()));
    // A container that no longer runs writes nothing more, and the failed
    // workflow has no attempt left to start: no wait needed.
    assert_eq!(runs(&m.cluster, 0, &wf), "start\n", "the lost attempt was stopped before its end");
}

#[test]
fn a_lost_attempt_is_retried_and_the_old_container_never_runs_beside_the_new_one() {
    let mut m = Machine::start_with(&["--attempt-lease", "2s"], "");
    let wf = m.run(&format!("{LONG}          retries: 1\n"));
    let running = wait_running(&m.cluster, &wf);
    let first = attempts(&running, 0)[0]["id"].as_str().unwrap().to_string();
    m.cluster.agents[0].kill();
    // Lost, and the workflow goes on: the retry is created when the
    // machine's agent asks for work again.
    wait_until(Duration::from_secs(10), || attempts(&m.cluster.workflow(&wf), 0)[0]["reason"] == "AgentLost")
        .unwrap_or_else(|e| panic!("{e}: not lost: {:#}", m.cluster.workflow(&wf)));
    assert_eq!(m.cluster.workflow(&wf)["state"], "RUNNING");
    let again = same_machine(&m.cluster, 0);
    m.cluster.start_agent(&m.mac, &again).unwrap();
    // The second attempt runs 10 s under a 2 s lease: only heartbeats keep
    // it alive.
    let done = m.cluster.wait_finished(&wf, LIMIT);
    assert_eq!(done["state"], "SUCCESS", "{done:#}\n{}", m.cluster.logs());
    let tries = attempts(&done, 0);
    assert_eq!(tries.len(), 2, "{done:#}");
    assert_eq!((tries[0]["id"].as_str(), tries[0]["reason"].as_str()), (Some(first.as_str()), Some("AgentLost")));
    assert_eq!(tries[1]["state"], "SUCCESS");
    // The first attempt's container was stopped before the second started:
    // one "end", the second's.
    assert!(running_containers_of(&m.cluster, &first).is_empty());
    assert_eq!(runs(&m.cluster, 0, &wf), "start\nstart\nend\n");
}

#[test]
fn a_frozen_agent_stops_the_action_the_server_gave_up_on() {
    let m = Machine::start_with(&["--attempt-lease", "2s"], "");
    let wf = m.run(LONG);
    let running = wait_running(&m.cluster, &wf);
    let attempt = attempts(&running, 0)[0]["id"].as_str().unwrap().to_string();
    // Frozen, not dead: the agent comes back to find the server ended the
    // attempt while it slept (a partition looks the same to both sides).
    let pid = m.cluster.agents[0].pid().to_string();
    let signal = |sig: &str| assert!(Command::new("kill").args([sig, &pid]).status().unwrap().success());
    signal("-STOP");
    let done = m.cluster.wait_finished(&wf, Duration::from_secs(20));
    signal("-CONT");
    assert_eq!(done["state"], "FAILED", "{done:#}");
    assert_eq!(attempts(&done, 0)[0]["reason"], "AgentLost");
    // Its next heartbeat hears the attempt is over; the agent removes the
    // container instead of finishing the action or reporting it.
    wait_until(Duration::from_secs(10), || running_containers_of(&m.cluster, &attempt).is_empty())
        .unwrap_or_else(|e| panic!("{e}: the container of the lost attempt still runs\n{}", m.cluster.logs()));
    // The sleep is the scenario: a late report has no sign to wait for.
    // Had the agent not stopped the action, it would have ended and been
    // reported within the action's 10 s.
    std::thread::sleep(Duration::from_secs(10));
    assert_eq!(runs(&m.cluster, 0, &wf), "start\n");
    assert_eq!(m.cluster.workflow(&wf), done, "a late report changed a finished workflow");
}

#[test]
fn a_server_down_longer_than_the_lease_does_not_lose_its_agents() {
    let mut m = Machine::start_with(&["--attempt-lease", "2s"], "");
    let wf = m.run(LONG);
    let running = wait_running(&m.cluster, &wf);
    // Down for twice the lease: every lease runs out meanwhile, but no
    // agent could have renewed one. The restarted server waits a lease for
    // heartbeats before it judges any.
    m.cluster.server.kill();
    // The sleep is the scenario: the time the server is away.
    std::thread::sleep(Duration::from_secs(5));
    m.cluster.restart_server(&[]).expect("restart");
    let done = m.cluster.wait_finished(&wf, LIMIT);
    assert_eq!(done["state"], "SUCCESS", "{done:#}\n{}", m.cluster.logs());
    assert_eq!(attempts(&done, 0).len(), 1, "{done:#}");
    assert_eq!(attempts(&done, 0)[0]["id"], attempts(&running, 0)[0]["id"]);
    assert_eq!(runs(&m.cluster, 0, &wf), "start\nend\n");
}

/// Agents of `MACHINES` machines are killed with SIGKILL at random moments
/// and restarted (as the hook image's supervisor does) while 100 workflows
/// of two short actions run.
#[test]
fn agents_killed_at_random_points_across_100_workflows() {
    const MACHINES: usize = 4;
    const WORKFLOWS: usize = 100;
    // The lease only has to outlast a restart (the agent is started again
    // at once); on a loaded 2-core machine that took over 3 s once.
    let mut c = Cluster::start_with(&["--attempt-lease", "8s"]).expect("server");
    let image = c.env.busybox();
    let tpl = unique("tpl");
    // Each action leaves a start and an end line in its workflow's
    // directory; a re-run would leave a second start.
    let action = |name: &str| {
        format!(
            "        - name: {name}\n          image: {image}\n          timeout: 60\n          command: [\"sh\", \"-c\", \"echo start-$KILN_ACTION_NAME >> /workflow/runs; sleep 0.$((RANDOM % 5)); echo end-$KILN_ACTION_NAME >> /workflow/runs\"]\n"
        )
    };
    let mut docs = vec![format!(
        "kind: Template\nname: {tpl}\ndata: |\n  version: \"0.1\"\n  name: {tpl}\n  tasks:\n    - name: t\n      worker: \"{{{{.device_1}}}}\"\n      actions:\n{}{}",
        action("a"),
        action("b")
    )];
    let macs: Vec<String> = (0..MACHINES).map(|_| random_mac()).collect();
    let mut workflows = Vec::new();
    for (n, mac) in macs.iter().enumerate() {
        let hw = unique(&format!("hw{n}"));
        docs.push(hardware_doc(&hw, mac));
        for i in 0..WORKFLOWS / MACHINES {
            let wf = format!("{}-{n}-{i}", unique("wf"));
            docs.push(format!(
                "kind: Workflow\nname: {wf}\ntemplate: {tpl}\nhardware: {hw}\nhardware_map: {{device_1: \"{mac}\"}}\n"
            ));
            workflows.push((n, wf));
        }
    }
    c.apply(&docs.join("---\n"));
    for (n, mac) in macs.iter().enumerate() {
        c.start_agent(mac, &format!("state_dir: {:?}\n", c.agent_state_dir(n).display())).unwrap();
    }
    // agents[i] is machine i's current agent process.
    let started = Instant::now();
    let mut kills = 0;
    // Different kill points each run; the seed replays one.
    let mut rng = Rng::from_clock();
    println!("kill schedule seed: {}", rng.seed());
    let finished = |c: &Cluster| {
        let out = c.kiln(&["get", "workflows", "-o", "json"]);
        let list: Value = serde_json::from_slice(&out.stdout).expect("workflow list");
        list.as_array()
            .unwrap()
            .iter()
            .filter(|w| matches!(w["state"].as_str(), Some("SUCCESS" | "FAILED" | "TIMEOUT")))
            .count()
    };
    while finished(&c) < WORKFLOWS {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "not finished in 10 min after {kills} kills\n{}",
            c.logs()
        );
        // The sleep is the scenario: a random kill point.
        std::thread::sleep(Duration::from_millis(rng.between(200, 1500)));
        let n = rng.between(0, MACHINES as u64 - 1) as usize;
        c.agents[n].kill();
        kills += 1;
        let mac = macs[n].clone();
        let again = same_machine(&c, n);
        c.start_agent(&mac, &again).unwrap();
        let restarted = c.agents.pop().unwrap();
        c.agents[n] = restarted;
    }
    eprintln!("{WORKFLOWS} workflows, {kills} agent kills, {:?}", started.elapsed());
    assert!(kills >= 10, "too few kills to mean anything: {kills}");
    for (n, wf) in &workflows {
        let w = c.workflow(wf);
        assert_eq!(w["state"], "SUCCESS", "{w:#}\n{}", c.logs());
        for (i, name) in ["a", "b"].iter().enumerate() {
            let tries = attempts(&w, i);
            assert_eq!(tries.len(), 1, "action {name} of {wf} had {} attempts: {w:#}", tries.len());
            assert!(tries.iter().all(|t| t["state"] == "SUCCESS"), "an attempt left open: {w:#}");
        }
        assert_eq!(runs(&c, *n, wf), "start-a\nend-a\nstart-b\nend-b\n", "{wf} on machine {n}");
    }
}

/// The server killed with SIGKILL mid-workflow and started again: what it
/// acknowledged is there, the agent carries on, nothing runs twice.
fn server_killed_mid_workflow_loses_nothing(server_args: &[&str]) {
    let mut m = Machine::start_with(server_args, "");
    let wf = m.run(
        "        - name: one\n          image: IMAGE\n          command: [\"sh\", \"-c\", \"echo one | tee -a /workflow/runs\"]\n        - name: slow\n          image: IMAGE\n          command: [\"sh\", \"-c\", \"echo begin | tee -a /workflow/runs; sleep 3; echo end | tee -a /workflow/runs\"]\n        - name: three\n          image: IMAGE\n          command: [\"sh\", \"-c\", \"echo three | tee -a /workflow/runs\"]\n",
    );
    let c = &mut m.cluster;
    wait_until(Duration::from_secs(60), || c.workflow(&wf)["actions"][1]["state"] == "RUNNING")
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    let before = c.workflow(&wf);
    c.restart_server(&[]).expect("restart");
    // Everything acknowledged before the kill is there after it.
    let after = c.workflow(&wf);
    assert_eq!(after["actions"][0], before["actions"][0], "the finished action is unchanged");
    assert_eq!(attempts(&after, 1)[0]["id"], attempts(&before, 1)[0]["id"], "the running attempt is kept");
    let done = c.wait_finished(&wf, LIMIT);
    assert_eq!(done["state"], "SUCCESS", "{done:#}\n{}", c.logs());
    for i in 0..3 {
        assert_eq!(attempts(&done, i).len(), 1, "action {i} ran more than once: {done:#}");
    }
    assert_eq!(runs(c, 0, &wf), "one\nbegin\nend\nthree\n");
    // The logs shipped before and after the restart are all there.
    let logs = kiln_tests::stdout(&c.kiln(&["logs", &wf]));
    for line in ["[one] one", "[slow] begin", "[slow] end", "[three] three"] {
        assert!(has_line(&logs, line), "{line:?} missing from the logs: {logs}\n{}", c.logs());
    }
}

#[test]
fn server_killed_mid_workflow_loses_nothing_on_sqlite() {
    server_killed_mid_workflow_loses_nothing(&[]);
}

#[test]
fn server_killed_mid_workflow_loses_nothing_on_postgres() {
    let pg = kiln_tests::postgres::PgServer::start().expect("start PostgreSQL");
    let url = pg.create_database().unwrap();
    server_killed_mid_workflow_loses_nothing(&["--database-url", &url]);
}

/// The hook image starts the agent while dockerd is still starting: the
/// agent takes its work at once, and the action waits for the engine
/// instead of the agent exiting (as it did) and being restarted.
#[test]
fn an_action_given_before_the_engine_is_up_waits_for_it_and_runs_once() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    let m = Machine::start(&format!("docker_host: unix://{}\nengine_wait_seconds: 120\n", socket.display()));
    let wf = m.run("        - name: hello\n          image: IMAGE\n          timeout: 60\n          command: [\"sh\", \"-c\", \"echo the engine answered\"]\n");
    // The agent asked and was given the action, with no engine anywhere.
    wait_until(Duration::from_secs(30), || !attempts(&m.cluster.workflow(&wf), 0).is_empty())
        .unwrap_or_else(|e| panic!("{e}: {:#}\n{}", m.cluster.workflow(&wf), m.cluster.logs()));
    // The sleep is the scenario: nothing is pulled, and the action is not
    // given up, for 2 s without an engine (there is no event to wait for).
    std::thread::sleep(Duration::from_secs(2));
    let waiting = m.cluster.workflow(&wf);
    let attempt = &attempts(&waiting, 0)[0];
    assert!(attempt["pulling_at"].is_null(), "pulled without an engine: {waiting:#}");
    assert!(attempt["finished_at"].is_null(), "gave up while the engine may still come: {waiting:#}");

    // The engine appears (its socket, as when dockerd has started).
    let engine = m.cluster.env.docker_host.trim_start_matches("unix://");
    std::os::unix::fs::symlink(engine, &socket).unwrap();
    let done = m.cluster.wait_finished(&wf, LIMIT);
    assert_eq!(done["state"], "SUCCESS", "{done:#}\n{}", m.cluster.logs());
    assert_eq!(attempts(&done, 0).len(), 1, "{done:#}");
    assert!(has_line(&m.logs(&wf), "[hello] the engine answered"), "{}", m.logs(&wf));
}

#[test]
fn an_engine_that_never_answers_fails_the_action_as_engine_unavailable() {
    let m = Machine::start("docker_host: unix:///nonexistent/kiln-test/docker.sock\nengine_wait_seconds: 2\n");
    let wf =
        m.run("        - name: hello\n          image: IMAGE\n          timeout: 60\n          command: [\"true\"]\n");
    let done = m.cluster.wait_finished(&wf, LIMIT);
    assert_eq!(done["state"], "FAILED", "{done:#}");
    let attempt = attempts(&done, 0).last().unwrap();
    assert_eq!(attempt["reason"], "EngineUnavailable", "{done:#}");
    let message = attempt["message"].as_str().unwrap();
    let socket = "/nonexistent/kiln-test/docker.sock";
    assert_eq!(message, format!("cannot reach the Docker engine at unix://{socket}: Socket not found: {socket}"));
}
