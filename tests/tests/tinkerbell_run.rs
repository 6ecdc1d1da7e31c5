//! Tinkerbell templates run as they run under Tinkerbell
//! (docs/action-contract.md, "Coming from Tinkerbell: run time"): hub image
//! names resolved by the server's `--image-rewrite`, kexec and reboot steps
//! terminal without kiln's `terminal:` field, and the waitdaemon pattern
//! (an action that finds its own container by its hostname and leaves a
//! detached container behind).

use std::time::{Duration, Instant, SystemTime};

use kiln_tests::{Machine, has_line, stderr, stdout, unique};

const LIMIT: Duration = Duration::from_secs(120);

/// Applies a template of `actions` (YAML, indented by 8 spaces, images
/// named in full) and a workflow for the machine; returns the workflow id.
/// Unlike [`Machine::run`], nothing in `actions` is replaced: a waitdaemon
/// action has a variable named IMAGE.
fn apply(m: &Machine, actions: &str) -> String {
    let (tpl, wf) = (unique("tpl"), unique("wf"));
    let doc = format!(
        "kind: Template\nname: {tpl}\ndata: |\n  version: \"0.1\"\n  name: {tpl}\n  tasks:\n    - name: t\n      worker: \"{{{{.device_1}}}}\"\n      actions:\n{actions}---\nkind: Workflow\nname: {wf}\ntemplate: {tpl}\nhardware: {}\nhardware_map: {{device_1: \"{}\"}}\n",
        m.hw, m.mac
    );
    let out = m.cluster.kiln_with_stdin(&["apply", "-f", "-"], Some(&doc));
    assert!(out.status.success(), "kiln apply failed: {}", stderr(&out));
    stdout(&out).lines().find_map(|l| l.strip_prefix("workflow/")?.split(' ').next().map(str::to_string)).unwrap()
}

/// Waits until agent number `n` of the machine has exited.
fn wait_agent_exit(m: &mut Machine, n: usize) {
    let start = Instant::now();
    while m.cluster.agents[n].child.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < LIMIT, "agent {n} did not exit\n{}", m.cluster.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A template names the hub's reboot image, as Tinkerbell templates do,
/// with no `terminal:`; the server rewrites the name to a local image (here
/// busybox standing in for a reboot that kills the agent) and infers that
/// the step is terminal. The image does not speak the handshake, so its
/// SUCCESS is stored before its container starts, and the agent it kills
/// cannot lose it.
#[test]
fn a_hub_reboot_step_is_rewritten_terminal_and_its_success_is_stored_before_it_fires() {
    let env = kiln_tests::TestEnv::from_env();
    let rules = [
        format!("quay.io/tinkerbell/actions/reboot:latest={}", env.busybox()),
        format!("quay.io/tinkerbell/actions/={}/{}/actions/", env.registry, kiln_tests::image_prefix()),
    ];
    let mut m = Machine::start_with(
        &["--image-rewrite", &rules[0], "--image-rewrite", &rules[1]],
        "failed_containers: remove\n",
    );
    let agent_pid = m.cluster.agents[0].pid();
    let actions = [
        "        - name: reboot\n".to_string(),
        "          image: quay.io/tinkerbell/actions/reboot:latest\n".to_string(),
        "          timeout: 60\n          pid: host\n".to_string(),
        format!("          command: [\"sh\", \"-c\", \"echo rebooting; kill -9 {agent_pid}; sleep 30\"]\n"),
        "        - name: after\n          image: IMAGE\n          timeout: 60\n".to_string(),
        "          command: [\"echo\", \"back after the reboot\"]\n".to_string(),
    ]
    .concat();
    let wf = m.run(&actions);
    wait_agent_exit(&mut m, 0);
    let result = m.cluster.workflow(&wf);
    assert_eq!(result["actions"][0]["state"], "SUCCESS", "{result:#}");
    assert_eq!(result["state"], "RUNNING", "{result:#}");
    // The stored workflow keeps the template's name; the plan shows what
    // runs, and that the step is terminal.
    assert_eq!(result["actions"][0]["image"], "quay.io/tinkerbell/actions/reboot:latest");
    let plan = stdout(&m.cluster.kiln(&["plan", &wf]));
    assert!(plan.contains(&format!("image:   {}\n", env.busybox())), "{plan}");
    assert!(plan.contains("(the template's quay.io/tinkerbell/actions/reboot:latest, by --image-rewrite)"), "{plan}");
    assert!(plan.contains("terminal: SUCCESS is recorded before the step fires"), "{plan}");

    m.cluster.start_agent(&m.mac, "failed_containers: remove\n").unwrap();
    let result = m.cluster.wait_finished(&wf, LIMIT);
    assert_eq!(result["state"], "SUCCESS", "{result:#}");
    assert_eq!(result["actions"][0]["attempts"].as_array().unwrap().len(), 1, "the reboot did not run again");
    assert!(has_line(&m.logs(&wf), "[after] back after the reboot"), "{}", m.logs(&wf));
    for id in stdout(&m.cluster.env.docker(&["ps", "-aq", "--filter", &format!("label=kiln.workflow={wf}")])).lines() {
        m.cluster.env.docker(&["rm", "-f", id]);
    }
}

/// A rewritten name is what the registry allow-list judges.
#[test]
fn the_allow_list_applies_to_rewritten_names() {
    let env = kiln_tests::TestEnv::from_env();
    let rule = format!("quay.io/tinkerbell/actions/={}/{}/actions/", env.registry, kiln_tests::image_prefix());
    let m = Machine::start_with(&["--image-rewrite", &rule, "--allow-image", &env.registry], "");
    let hub =
        "        - name: write\n          image: quay.io/tinkerbell/actions/writefile:latest\n          timeout: 60\n";
    let out = m.try_run(hub);
    assert!(out.status.success(), "{}", stderr(&out));
    let other = "        - name: other\n          image: quay.io/elsewhere/tool:1\n          timeout: 60\n";
    let out = m.try_run(other);
    let err = stderr(&out);
    assert!(!out.status.success() && err.contains("quay.io/elsewhere/tool:1"), "{err}");
}

/// The waitdaemon pattern, unchanged: the action (a stand-in for
/// ghcr.io/jacobweinstock/waitdaemon, actions/testbins/waitdaemon.c) finds
/// its own container through the Docker socket by its hostname, starts a
/// detached copy of itself and exits 0; the copy waits, then runs IMAGE
/// with the action's command. The workflow succeeds, and the detached
/// container outlives the action.
#[test]
fn the_waitdaemon_pattern_leaves_a_detached_container_that_outlives_the_action() {
    let m = Machine::start("failed_containers: remove\n");
    let env = &m.cluster.env;
    let socket = env.docker_host.strip_prefix("unix://").unwrap_or(&env.docker_host).to_string();
    let dir = tempfile::tempdir().unwrap();
    let marker_dir = dir.path().display().to_string();
    // A mount point of its own, to find the detached containers by.
    let mount = format!("/{}", unique("marker"));
    let (waitdaemon, busybox) = (env.waitdaemon(), env.busybox());
    let actions = [
        format!("        - name: kexec-later\n          image: {waitdaemon}\n          timeout: 60\n"),
        format!("          command: [\"sh\", \"-c\", \"echo fired > {mount}/fired\"]\n"),
        format!("          environment: {{IMAGE: {busybox}, WAIT_TIME: \"2\"}}\n"),
        format!("          volumes: [\"{socket}:/var/run/docker.sock\", \"{marker_dir}:{mount}\"]\n"),
        format!("        - name: after\n          image: {busybox}\n          timeout: 60\n"),
        "          command: [\"echo\", \"next\"]\n".to_string(),
    ]
    .concat();
    let wf = apply(&m, &actions);
    let result = m.cluster.wait_finished(&wf, LIMIT);
    let logs = m.logs(&wf);
    assert_eq!(result["state"], "SUCCESS", "{result:#}\n{logs}\n{}", m.cluster.logs());
    assert!(has_line(&logs, "[kexec-later] waitdaemon: first fork done; exiting 0"), "{logs}");
    let finished =
        humantime::parse_rfc3339(result["actions"][0]["attempts"][0]["finished_at"].as_str().unwrap()).unwrap();
    let fired = dir.path().join("fired");
    let start = Instant::now();
    while !fired.exists() {
        assert!(start.elapsed() < LIMIT, "the detached container never ran the command");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The detached containers: the copy of the action, and IMAGE running
    // the command, which started after the action's container had ended.
    let detached: Vec<String> =
        stdout(&env.docker(&["ps", "-aq", "--filter", &format!("volume={mount}")])).lines().map(String::from).collect();
    let started = |id: &str| {
        let out = stdout(&env.docker(&["inspect", "-f", "{{.Config.Image}} {{.State.StartedAt}}", id]));
        let (image, at) = out.trim().split_once(' ').unwrap();
        (image.to_string(), humantime::parse_rfc3339_weak(at.trim_end_matches('Z')).unwrap())
    };
    let ran: Vec<(String, SystemTime)> = detached.iter().map(|id| started(id)).collect();
    assert!(ran.iter().any(|(image, _)| *image == waitdaemon), "the action's copy: {ran:?}");
    let user = ran.iter().find(|(image, _)| *image == busybox).expect("IMAGE ran");
    assert!(user.1 > finished, "IMAGE started after the action ended: {ran:?}, action finished at {finished:?}");
    for id in stdout(&env.docker(&["ps", "-aq", "--filter", &format!("volume={mount}")])).lines() {
        env.docker(&["rm", "-f", id]);
    }
}
