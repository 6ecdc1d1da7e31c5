//! The action contract (docs/action-contract.md): what an action gets
//! (environment, /workflow, /tmp_disk, /kiln, limits) and how its end is
//! reported (exit-code table, failure files, retries, `kiln retry`).

use std::time::Duration;

use kiln_tests::{Machine, has_line, stderr, stdout};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(120);

fn shell_action(name: &str, timeout: u64, cmd: &str, extra: &str) -> String {
    format!(
        "        - name: {name}\n          image: IMAGE\n          timeout: {timeout}\n          command: [\"sh\", \"-c\", {cmd:?}]\n{extra}"
    )
}

fn attempt(wf: &Value, action: usize, n: usize) -> &Value {
    &wf["actions"][action]["attempts"][n]
}

#[test]
fn actions_see_kiln_environment_and_shared_workflow_directory() {
    let m = Machine::start("");
    let actions = [
        shell_action(
            "first",
            60,
            "env | grep ^KILN_ | grep -v TOKEN | sort; echo from-first > /workflow/note; echo scratch > /tmp_disk/file; test -d /kiln",
            "          environment: {KILN_AGENT_ID: forged}\n",
        ),
        shell_action("second", 60, "echo second read $(cat /workflow/note); test ! -e /tmp_disk/file", ""),
    ]
    .concat();
    let wf = m.run(&actions);
    let result = m.cluster.wait_finished(&wf, LIMIT);
    let logs = m.logs(&wf);
    assert_eq!(result["state"], "SUCCESS", "{logs}");
    let first = attempt(&result, 0, 0);
    for expected in [
        format!("KILN_WORKFLOW_ID={wf}"),
        "KILN_ACTION_ID=0".into(),
        "KILN_ACTION_NAME=first".into(),
        "KILN_ATTEMPT=1".into(),
        format!("KILN_ATTEMPT_ID={}", first["id"].as_str().unwrap()),
        format!("KILN_AGENT_ID={}", m.mac),
        format!("KILN_HARDWARE_ID={}", m.hw),
        format!("KILN_API_ENDPOINT={}", m.cluster.server_url),
    ] {
        assert!(has_line(&logs, &format!("[first] {expected}")), "missing {expected}: {logs}");
    }
    assert!(!logs.contains("forged"), "templates cannot override kiln's variables: {logs}");
    // /workflow is shared by the workflow's actions; /tmp_disk is per attempt.
    assert!(has_line(&logs, "[second] second read from-first"), "{logs}");
    let state = m.cluster.agent_state_dir(0);
    assert_eq!(std::fs::read_to_string(state.join("workflows").join(&wf).join("note")).unwrap(), "from-first\n");
    let scratch: Vec<_> = std::fs::read_dir(state.join("scratch")).unwrap().collect();
    assert!(scratch.is_empty(), "scratch directories are removed after each attempt");
}

#[test]
fn exit_codes_are_reported_with_their_meaning() {
    let m = Machine::start("failed_containers: remove\n");
    let cases = [
        ("3", "exit 3", "", "FAILED", 3, "NonZeroExit"),
        ("127", "no-such-command", "", "FAILED", 127, "CommandNotFound"),
        ("126", "/etc/passwd", "", "FAILED", 126, "CommandCannotInvoke"),
        ("139", "kiln-segfault", "", "FAILED", 139, "Segfault"),
        (
            "oom",
            "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived",
            "          resources: {memory: 32Mi}\n",
            "FAILED",
            137,
            "OOMKilled",
        ),
        ("143", "trap 'echo got TERM; exit 143' TERM; echo waiting; sleep 300 & wait", "", "TIMEOUT", 143, "Timeout"),
    ];
    let workflows: Vec<String> = cases
        .iter()
        .map(|(name, cmd, extra, ..)| {
            let timeout = if *name == "143" { 2 } else { 60 };
            m.run(&shell_action(&format!("code-{name}"), timeout, cmd, extra))
        })
        .collect();
    for (wf, (name, _, _, state, code, reason)) in workflows.iter().zip(cases) {
        let result = m.cluster.wait_finished(wf, LIMIT);
        let a = attempt(&result, 0, 0);
        let context = format!("case {name}: {a:#}\n{}", m.logs(wf));
        assert_eq!(result["state"], state, "{context}");
        assert_eq!(a["exit_code"], code, "{context}");
        assert_eq!(a["reason"], reason, "{context}");
        if name == "143" {
            assert!(has_line(&m.logs(wf), "[code-143] got TERM"), "the action was sent SIGTERM first: {context}");
        }
    }
}

#[test]
fn limits_reach_the_container_and_gpu_requests_are_passed_through() {
    let m = Machine::start("");
    let wf =
        m.run(&shell_action("limited", 60, "exit 1", "          resources: {memory: 64Mi, cpus: 0.5, pids: 50}\n"));
    let result = m.cluster.wait_finished(&wf, LIMIT);
    assert_eq!(result["state"], "FAILED");
    // The failed container is kept: inspect it.
    let ids = stdout(&m.cluster.env.docker(&["ps", "-aq", "--filter", &format!("label=kiln.workflow={wf}")]));
    let id = ids.trim();
    let inspect = m.cluster.env.docker(&["inspect", "--format", "{{json .HostConfig}}", id]);
    let host: Value = serde_json::from_slice(&inspect.stdout).expect("inspect JSON");
    assert_eq!(host["Memory"], 64 << 20);
    assert_eq!(host["NanoCpus"], 500_000_000);
    assert_eq!(host["PidsLimit"], 50);
    assert!(host["Binds"].as_array().unwrap().iter().any(|b| b.as_str().unwrap().ends_with(":/tmp_disk")));

    // No nvidia driver here: the request reaches the engine, which refuses it.
    let wf = m.run(&shell_action("gpu", 60, "nvidia-smi", "          resources: {gpus: all}\n"));
    let result = m.cluster.wait_finished(&wf, LIMIT);
    let a = attempt(&result, 0, 0);
    assert_eq!(result["state"], "FAILED");
    assert_eq!(a["reason"], "StartFailed", "{a:#}");
    let ids = stdout(&m.cluster.env.docker(&["ps", "-aq", "--filter", &format!("label=kiln.workflow={wf}")]));
    let inspect = m.cluster.env.docker(&["inspect", "--format", "{{json .HostConfig.DeviceRequests}}", ids.trim()]);
    let requests = stdout(&inspect);
    let requests: Value = serde_json::from_str(&requests).expect("DeviceRequests JSON");
    let r = &requests[0];
    assert_eq!(requests.as_array().map(Vec::len), Some(1), "{requests}");
    assert_eq!(
        (&r["Driver"], &r["Count"], &r["Capabilities"]),
        (&"nvidia".into(), &(-1).into(), &serde_json::json!([["gpu"]]))
    );
    for id in stdout(&m.cluster.env.docker(&["ps", "-aq", "--filter", &format!("label=kiln.agent={}", m.mac)])).lines()
    {
        m.cluster.env.docker(&["rm", "-f", id]);
    }
}

#[test]
fn actions_explain_their_own_failure() {
    let m = Machine::start("failed_containers: remove\n");
    let cmd = "echo DiskTooSmall > /kiln/failure-reason; echo need 8 GiB, found 4 GiB > /kiln/failure-message; exit 4";
    let wf = m.run(&shell_action("check-disk", 60, cmd, ""));
    let result = m.cluster.wait_finished(&wf, LIMIT);
    let a = attempt(&result, 0, 0);
    assert_eq!(
        (a["reason"].as_str(), a["message"].as_str(), a["exit_code"].as_i64()),
        (Some("DiskTooSmall"), Some("need 8 GiB, found 4 GiB"), Some(4))
    );
    assert_eq!(
        result["reason"],
        "action \"check-disk\" FAILED with exit code 4 (DiskTooSmall): need 8 GiB, found 4 GiB"
    );
}

/// Fails the first time it runs in a workflow, succeeds after.
const FLAKY: &str = "if [ -e /workflow/tried ]; then echo second try works; else touch /workflow/tried; echo first try fails; exit 1; fi";

#[test]
fn retries_make_new_attempts_after_the_backoff() {
    let m = Machine::start("failed_containers: remove\n");
    let wf = m.run(&shell_action("flaky", 60, FLAKY, "          retries: 2\n          retry_backoff: 1\n"));
    let result = m.cluster.wait_finished(&wf, LIMIT);
    assert_eq!(result["state"], "SUCCESS", "{result:#}");
    let attempts = result["actions"][0]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{attempts:#?}");
    assert_eq!((attempts[0]["state"].as_str(), attempts[1]["state"].as_str()), (Some("FAILED"), Some("SUCCESS")));
    assert_ne!(attempts[0]["id"], attempts[1]["id"]);
    let parse = |v: &Value| humantime::parse_rfc3339(v.as_str().unwrap()).unwrap();
    let pause = parse(&attempts[1]["created_at"]).duration_since(parse(&attempts[0]["finished_at"])).unwrap();
    assert!(pause >= Duration::from_millis(1000), "backoff respected: {pause:?}");
    let logs = m.logs(&wf);
    assert!(has_line(&logs, "[flaky] first try fails") && has_line(&logs, "[flaky] second try works"), "{logs}");
}

#[test]
fn kiln_retry_resumes_a_failed_workflow_from_the_failed_action() {
    let m = Machine::start("failed_containers: remove\n");
    let actions =
        [shell_action("once", 60, "echo ran-once >> /workflow/count", ""), shell_action("flaky", 60, FLAKY, "")]
            .concat();
    let wf = m.run(&actions);
    assert_eq!(m.cluster.wait_finished(&wf, LIMIT)["state"], "FAILED");
    let out = m.cluster.kiln(&["retry", &wf]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("workflow/{wf} RUNNING\n"));
    let watch = m.cluster.kiln(&["watch", &wf]);
    assert!(watch.status.success(), "{}", stdout(&watch));
    let result = m.cluster.workflow(&wf);
    assert_eq!(result["actions"][0]["attempts"].as_array().unwrap().len(), 1, "the succeeded action did not run again");
    assert_eq!(result["actions"][1]["attempts"].as_array().unwrap().len(), 2);
    let count = m.cluster.agent_state_dir(0).join("workflows").join(&wf).join("count");
    assert_eq!(std::fs::read_to_string(count).unwrap(), "ran-once\n");
    // A finished workflow cannot be retried.
    let out = m.cluster.kiln(&["retry", &wf]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "error: only a FAILED or TIMEOUT workflow can be retried; this one is SUCCESS\n");
}

#[test]
fn registry_allow_list_is_enforced_at_apply_and_by_the_agent() {
    let env = kiln_tests::TestEnv::from_env();
    let prefix = kiln_tests::image_prefix();
    let allowed = format!("{}/{prefix}", env.registry);
    let m = Machine::start_with(&["--allow-image", &allowed], "failed_containers: remove\n");
    // An image from elsewhere is refused when the template is applied.
    let elsewhere =
        shell_action("a", 60, "true", "").replace("IMAGE", &format!("{}/{prefix}/busybox:v1", env.auth_registry));
    let out = m.try_run(&elsewhere);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    // The template's name is try_run's own; the rest is exact.
    let expected = format!(
        "\", field tasks[0].actions[0].image: image {}/kiln/busybox:v1 is not from an allowed registry (allowed: {allowed})\n",
        env.auth_registry
    );
    assert!(err.starts_with("error: template \"tpl-") && err.ends_with(&expected), "{err}");
    // Look-alike prefixes do not pass.
    let lookalike =
        shell_action("a", 60, "true", "").replace("IMAGE", &format!("{}/{prefix}-evil/busybox:v1", env.registry));
    assert_eq!(m.try_run(&lookalike).status.code(), Some(1));
    let wf = m.run(&shell_action("a", 60, "echo allowed", ""));
    assert_eq!(m.cluster.wait_finished(&wf, LIMIT)["state"], "SUCCESS");

    // Defence in depth: an agent with its own list refuses what it does not allow.
    let m = Machine::start(&format!("allowed_images: [\"{}\"]\nfailed_containers: remove\n", env.auth_registry));
    let wf = m.run(&shell_action("a", 60, "echo must not run", ""));
    let result = m.cluster.wait_finished(&wf, LIMIT);
    let a = attempt(&result, 0, 0);
    assert_eq!((result["state"].as_str(), a["reason"].as_str()), (Some("FAILED"), Some("ImageNotAllowed")), "{a:#}");
    assert!(!m.logs(&wf).contains("must not run"));
}

/// Waits until agent number `n` of the cluster has exited.
fn wait_agent_exit(m: &mut Machine, n: usize) -> std::process::ExitStatus {
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = m.cluster.agents[n].child.try_wait().unwrap() {
            return status;
        }
        assert!(start.elapsed() < LIMIT, "agent {n} did not exit\n{}", m.cluster.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn terminal_action_success_is_recorded_before_it_fires_and_the_workflow_continues_after() {
    let mut m = Machine::start("failed_containers: remove\n");
    let agent_pid = m.cluster.agents[0].pid();
    // A stand-in for kexec (the host kernel here has none), from an image
    // labelled as speaking the handshake: offered it, it prepares, says it
    // is ready, waits for the go, then ends the agent's life as a kexec
    // would.
    let fire = format!(
        "echo preparing kexec; test \"$KILN_TERMINAL_HANDSHAKE\" = /kiln || exit 3; \
         touch /kiln/terminal-ready; while [ ! -e /kiln/terminal-go ]; do sleep 0.05; done; \
         echo firing; kill -9 {agent_pid}; sleep 30"
    );
    let handshake_image = m.cluster.env.busybox().replace("/busybox:", "/busybox-handshake:");
    let actions = [
        shell_action("prepare", 60, "echo before", ""),
        shell_action("kexec", 60, &fire, "          pid: host\n          terminal: true\n")
            .replace("image: IMAGE", &format!("image: {handshake_image}")),
        shell_action("after", 60, "echo after the new kernel booted", ""),
    ]
    .concat();
    let wf = m.run(&actions);
    wait_agent_exit(&mut m, 0);
    // The agent died by the action's hand, and yet the SUCCESS is stored:
    // it was acknowledged before the action fired.
    let result = m.cluster.workflow(&wf);
    assert_eq!(result["state"], "RUNNING");
    assert_eq!(result["actions"][1]["state"], "SUCCESS", "{result:#}");
    assert!(result["actions"][2]["attempts"].as_array().unwrap().is_empty());
    assert!(has_line(&m.logs(&wf), "[kexec] preparing kexec"), "logs before the handshake are kept");

    // The machine comes back with the same agent id: the next action runs,
    // nothing runs twice.
    m.cluster.start_agent(&m.mac, "failed_containers: remove\n").unwrap();
    let result = m.cluster.wait_finished(&wf, LIMIT);
    assert_eq!(result["state"], "SUCCESS", "{result:#}");
    for action in result["actions"].as_array().unwrap() {
        assert_eq!(action["attempts"].as_array().unwrap().len(), 1, "{action:#}");
    }
    assert!(has_line(&m.logs(&wf), "[after] after the new kernel booted"), "{}", m.logs(&wf));
    for id in stdout(&m.cluster.env.docker(&["ps", "-aq", "--filter", &format!("label=kiln.workflow={wf}")])).lines() {
        m.cluster.env.docker(&["rm", "-f", id]);
    }
}

#[test]
fn builtin_reboot_reports_success_before_rebooting() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("rebooted");
    let power = format!("power_commands: {{reboot: [\"sh\", \"-c\", \"date +%s%3N > {}\"]}}\n", marker.display());
    let mut m = Machine::start(&power);
    let actions = [
        "        - name: reboot\n          builtin: reboot\n".to_string(),
        shell_action("after", 60, "echo back after reboot", ""),
    ]
    .concat();
    let wf = m.run(&actions);
    let status = wait_agent_exit(&mut m, 0);
    assert!(status.success(), "the agent ends its life after a reboot step: {status}");
    let result = m.cluster.workflow(&wf);
    let reboot = attempt(&result, 0, 0);
    assert_eq!(reboot["state"], "SUCCESS", "{result:#}");
    let rebooted_at: i64 = std::fs::read_to_string(&marker).expect("reboot command ran").trim().parse().unwrap();
    let finished = humantime::parse_rfc3339(reboot["finished_at"].as_str().unwrap()).unwrap();
    let finished_ms = finished.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    assert!(finished_ms <= rebooted_at, "SUCCESS stored ({finished_ms}) before the reboot ({rebooted_at})");

    m.cluster.start_agent(&m.mac, &power).unwrap();
    let result = m.cluster.wait_finished(&wf, LIMIT);
    assert_eq!(result["state"], "SUCCESS");
    assert_eq!(result["actions"][0]["attempts"].as_array().unwrap().len(), 1, "the reboot step did not run again");
    let plan = stdout(&m.cluster.kiln(&["plan", &wf]));
    assert!(has_line(&plan, "   builtin: reboot"), "{plan}");
    assert!(has_line(&plan, "   terminal: SUCCESS is recorded before the step fires"), "{plan}");
}

#[test]
fn on_failure_and_on_timeout_handlers_run_before_the_failure_is_reported() {
    let m = Machine::start("failed_containers: remove\n");
    let handler =
        |kind: &str| format!("          {kind}: [\"sh\", \"-c\", \"echo {kind} cleanup for $KILN_ACTION_NAME\"]\n");
    let wf = m.run(&shell_action("breaks", 60, "exit 3", &handler("on-failure")));
    let result = m.cluster.wait_finished(&wf, LIMIT);
    assert_eq!(attempt(&result, 0, 0)["exit_code"], 3, "the handler does not change the result");
    let logs = m.logs(&wf);
    assert!(has_line(&logs, "[breaks] [on-failure] on-failure cleanup for breaks"), "{logs}");
    assert!(has_line(&logs, "[breaks] [on-failure] handler exited with code 0"), "{logs}");

    let wf = m.run(&shell_action("hangs", 1, "sleep 300", &[handler("on-failure"), handler("on-timeout")].concat()));
    assert_eq!(m.cluster.wait_finished(&wf, LIMIT)["state"], "TIMEOUT");
    let logs = m.logs(&wf);
    assert!(
        has_line(&logs, "[hangs] [on-timeout] on-timeout cleanup for hangs") && !logs.contains("on-failure cleanup"),
        "{logs}"
    );
}

#[test]
fn files_in_out_become_artifacts_downloadable_byte_for_byte() {
    use sha2::{Digest, Sha256};
    let m = Machine::start_with(&["--max-artifact-bytes", "1000000"], "failed_containers: remove\n");
    let cmd = "echo hello report > /out/report.txt; mkdir -p /out/sub; dd if=/dev/urandom of=/out/sub/data.bin bs=1024 count=700 2>/dev/null; \
               dd if=/dev/zero of=/out/too-big.bin bs=1024 count=1100 2>/dev/null; ln -s /etc/passwd /out/link; sha256sum /out/sub/data.bin";
    let wf = m.run(&shell_action("produce", 60, cmd, ""));
    let result = m.cluster.wait_finished(&wf, LIMIT);
    assert_eq!(result["state"], "SUCCESS");
    let logs = m.logs(&wf);
    let refused = "[produce] [kiln-agent] artifact too-big.bin NOT uploaded: \
                   artifact \"too-big.bin\" is 1126400 bytes; the limit is 1000000";
    assert!(has_line(&logs, refused), "{logs}");

    let out = m.cluster.kiln(&["artifacts", "list", &wf, "-o", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let paths: Vec<&str> = list.as_array().unwrap().iter().map(|a| a["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["report.txt", "sub/data.bin"], "symlinks and oversized files are not artifacts");

    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("data.bin");
    let out = m.cluster.kiln(&["artifacts", "get", &wf, "produce", "sub/data.bin", "-f", target.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let bytes = std::fs::read(&target).unwrap();
    assert_eq!(bytes.len(), 700 * 1024);
    let sha = hex::encode(Sha256::digest(&bytes));
    assert_eq!(list[1]["sha256"], sha.as_str(), "recorded sha256 matches the download");
    assert!(logs.contains(&format!("{sha}  /out/sub/data.bin")), "and what the action computed inside: {logs}");
    let report = m.cluster.kiln(&["artifacts", "get", &wf, "produce", "report.txt"]);
    assert_eq!(stdout(&report), "hello report\n");
    let missing = m.cluster.kiln(&["artifacts", "get", &wf, "produce", "nope.txt"]);
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(stderr(&missing), "error: action \"produce\" has no artifact \"nope.txt\"\n");
}

#[test]
fn external_actions_run_their_start_and_check_commands() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let script = |name: &str, body: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, body).unwrap();
        format!("[\"/bin/sh\", \"{}\"]", path.display())
    };
    let start = script("start.sh", &format!("cat > {d}/record.json; echo started the work\n"));
    let finishes = script(
        "check-finishes.sh",
        &format!(
            "n=$(cat {d}/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > {d}/n\n\
             if [ $n -ge 3 ]; then echo '{{\"status\": \"finished\"}}'; else echo '{{\"status\": \"running\"}}'; fi\n"
        ),
    );
    let fails = script("check-fails.sh", "echo '{\"status\": \"failed\", \"error\": \"disk on fire\"}'\n");
    let garbage = script("check-garbage.sh", "echo hello there\n");
    let never = script("check-never.sh", "echo '{\"status\": \"running\"}'\n");
    let config = format!(
        "failed_containers: remove\nexternal_actions:\n  \
         demo.finishes: {{description: finishes, action: {start}, check: {finishes}, check_interval_ms: 100}}\n  \
         demo.fails: {{action: {start}, check: {fails}, check_interval_ms: 100}}\n  \
         demo.garbage: {{action: {start}, check: {garbage}, check_interval_ms: 100}}\n  \
         demo.never: {{action: {start}, check: {never}, check_interval_ms: 100}}\n"
    );
    let m = Machine::start(&config);
    let external = |kind: &str, timeout: u64| {
        format!(
            "        - name: ext\n          external: {kind}\n          timeout: {timeout}\n          environment: {{SIZE: \"42\"}}\n"
        )
    };

    let wf = m.run(&external("demo.finishes", 60));
    let result = m.cluster.wait_finished(&wf, LIMIT);
    assert_eq!(result["state"], "SUCCESS", "{result:#}\n{}", m.logs(&wf));
    assert!(has_line(&m.logs(&wf), "[ext] [start] started the work"), "{}", m.logs(&wf));
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("record.json")).unwrap()).unwrap();
    assert_eq!(record["id"], attempt(&result, 0, 0)["id"]);
    assert_eq!(record["kind"], "demo.finishes");
    assert_eq!(record["args"]["SIZE"], "42");
    assert_eq!(std::fs::read_to_string(dir.path().join("n")).unwrap().trim(), "3", "checked until finished");

    for (kind, state, reason, needle) in [
        ("demo.fails", "FAILED", "ExternalActionFailed", "disk on fire"),
        ("demo.garbage", "FAILED", "BadCheckOutput", "hello there"),
        ("demo.never", "TIMEOUT", "Timeout", "timeout of 1s"),
        ("demo.unknown", "FAILED", "UnknownExternalAction", "demo.finishes"),
    ] {
        let wf = m.run(&external(kind, 1));
        let result = m.cluster.wait_finished(&wf, LIMIT);
        let a = attempt(&result, 0, 0);
        assert_eq!((result["state"].as_str(), a["reason"].as_str()), (Some(state), Some(reason)), "{kind}: {a:#}");
        assert!(a["message"].as_str().unwrap().contains(needle), "{kind}: {a:#}");
    }
}

#[test]
fn typed_actions_get_json_input_and_their_validated_output_feeds_later_actions() {
    let m = Machine::start("failed_containers: remove\n");
    let image = m.cluster.env.busybox();
    let definition = format!(
        "kind: ActionDefinition\nname: discover\ndescription: finds the install disk\nimage: {image}\n\
         input_schema: {{type: object, required: [min_gb], properties: {{min_gb: {{type: integer, minimum: 1}}}}}}\n\
         output_schema: {{type: object, required: [disk], properties: {{disk: {{type: string, pattern: '^/dev/'}}}}}}\n"
    );
    m.cluster.apply(&definition);
    let listed = stdout(&m.cluster.kiln(&["get", "actions"]));
    let row = ["discover", image.as_str(), "finds", "the", "install", "disk"];
    assert!(listed.lines().any(|l| l.split_whitespace().eq(row)), "{listed}");

    let typed = |name: &str, with: &str, prints: &str| {
        format!(
            "        - name: {name}\n          use: discover\n          with: {with}\n          timeout: 60\n          command: [\"sh\", \"-c\", {:?}]\n",
            format!("input=$(cat); echo got $input >&2; echo '{prints}'")
        )
    };
    let actions = [
        typed("find", "{min_gb: 8}", r#"{"disk": "/dev/vdb"}"#),
        shell_action(
            "write",
            60,
            "echo disk is $DISK",
            "          environment: {DISK: \"{{ .actions.find.output.disk }}\"}\n",
        ),
    ]
    .concat();
    let wf = m.run(&actions);
    let result = m.cluster.wait_finished(&wf, LIMIT);
    let logs = m.logs(&wf);
    assert_eq!(result["state"], "SUCCESS", "{result:#}\n{logs}");
    assert!(logs.contains(r#"got {"min_gb":8}"#), "input on stdin: {logs}");
    assert!(has_line(&logs, "[write] disk is /dev/vdb"), "output passed on at dispatch: {logs}");
    assert!(!logs.contains(r#"{"disk""#), "stdout is output, not log: {logs}");
    assert_eq!(attempt(&result, 0, 0)["output"]["disk"], "/dev/vdb");

    // Output that breaks the schema, or is no JSON at all, fails the action.
    for (prints, needle) in [(r#"{"disk": "sdb"}"#, "output.disk"), ("not json", "not a JSON document")] {
        let wf = m.run(&typed("find", "{min_gb: 8}", prints));
        let result = m.cluster.wait_finished(&wf, LIMIT);
        let a = attempt(&result, 0, 0);
        assert_eq!((result["state"].as_str(), a["reason"].as_str()), (Some("FAILED"), Some("InvalidOutput")), "{a:#}");
        assert!(a["message"].as_str().unwrap().contains(needle), "{a:#}");
    }

    // Input that breaks the schema is refused at apply time, naming the field.
    let out = m.try_run(&typed("find", "{min_gb: lots}", "{}"));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let expected = "\", line 9, field tasks[0].actions[0].with.min_gb: \"lots\" is not of type \"integer\"\n";
    assert!(err.starts_with("error: template \"tpl-") && err.ends_with(expected), "{err}");
}

#[test]
fn actions_call_the_api_for_their_own_workflow_while_their_attempt_is_open() {
    // --plaintext: the action below is busybox wget, whose TLS (which
    // verifies no certificate anyway) fails the handshake with rustls. The
    // API over TLS is covered by curl in security.rs.
    let m = Machine::start_with(&["--plaintext"], "failed_containers: remove\n");
    let api = "$KILN_API_ENDPOINT/v1/action";
    let auth = "--header \"Authorization: Bearer $KILN_ACTION_TOKEN\"";
    let writer = format!(
        "wget -q -O - {auth} {api}/data; echo; \
         wget -q -O - {auth} --post-data '{{\"version\": 0, \"data\": {{\"disk\": \"/dev/vdb\"}}}}' {api}/data; echo; \
         echo stale: $(wget -S -q -O - {auth} --post-data '{{\"version\": 0, \"data\": {{}}}}' {api}/data 2>&1 \
                       | sed -n 's/^ *HTTP\\/[0-9.]* \\([0-9]*\\).*/\\1/p'); \
         echo report from the action > /tmp/r.txt; wget -q -O - {auth} --post-file /tmp/r.txt {api}/files/notes/r.txt; echo; \
         echo $KILN_ACTION_TOKEN > /workflow/token"
    );
    let reader = format!("wget -q -O - {auth} {api}/data; echo");
    let wf = m.run(&[shell_action("writer", 60, &writer, ""), shell_action("reader", 60, &reader, "")].concat());
    let result = m.cluster.wait_finished(&wf, LIMIT);
    let logs = m.logs(&wf);
    assert_eq!(result["state"], "SUCCESS", "{logs}");
    assert!(has_line(&logs, r#"[writer] {"data":{},"version":0}"#), "{logs}");
    assert!(has_line(&logs, r#"[writer] {"version":1}"#), "{logs}");
    // The status line of the refused write (wget -S), as its code alone.
    assert!(has_line(&logs, "[writer] stale: 409"), "a stale version is refused with 409 Conflict: {logs}");
    assert!(has_line(&logs, r#"[reader] {"data":{"disk":"/dev/vdb"},"version":1}"#), "{logs}");
    assert_eq!(result["data"]["disk"], "/dev/vdb");
    let file = m.cluster.kiln(&["artifacts", "get", &wf, "writer", "notes/r.txt"]);
    assert_eq!(stdout(&file), "report from the action\n");

    // The writer's token died with its attempt, and a forged one never lived.
    let token =
        std::fs::read_to_string(m.cluster.agent_state_dir(0).join("workflows").join(&wf).join("token")).unwrap();
    let call = |token: &str| {
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-H",
                &format!("Authorization: Bearer {}", token.trim()),
            ])
            .arg(format!("{}/v1/action/data", m.cluster.server_url))
            .output()
            .unwrap();
        stdout(&out)
    };
    assert_eq!(call(&token), "403");
    assert_eq!(call(&token.replace(&wf, "other-workflow")), "401");
    assert_eq!(call(""), "401");
}

#[test]
fn the_next_actions_image_is_pulled_while_the_current_action_runs() {
    let m = Machine::start("failed_containers: remove\n");
    let env = &m.cluster.env;
    // A tag this engine has never pulled: pushed, then removed locally.
    let tag = format!("{}/kiln/busybox:prefetch-{}", env.registry, kiln_tests::unique("t"));
    assert!(env.docker(&["tag", &env.busybox(), &tag]).status.success());
    assert!(env.docker(&["push", "-q", &tag]).status.success());
    assert!(env.docker(&["rmi", &tag]).status.success());
    let present = || env.docker(&["image", "inspect", &tag]).status.success();
    assert!(!present());
    let second = shell_action("second", 60, "true", "").replace("IMAGE", &tag);
    let wf = m.run(&[shell_action("first", 60, "sleep 4", ""), second].concat());
    // Wait for the first action to run, then for the second image to
    // arrive: it must come while the first still runs.
    kiln_tests::wait_until(LIMIT, || m.cluster.workflow(&wf)["actions"][0]["state"] == "RUNNING").unwrap();
    kiln_tests::wait_until(Duration::from_secs(30), present).expect("the next image was not prefetched");
    assert_eq!(m.cluster.workflow(&wf)["actions"][0]["state"], "RUNNING", "prefetch must overlap the running action");
    let result = m.cluster.wait_finished(&wf, LIMIT);
    assert_eq!(result["state"], "SUCCESS", "{result:#}");
}

#[test]
fn action_api_files_stream_to_disk_up_to_the_artifact_limit() {
    // A limit of 110 MiB: 6 MiB (over axum's default 2 MB body limit, which
    // answered 413 before) and 100 MiB are stored, 111 MiB is refused.
    // --plaintext: busybox wget, as in the test above. Its --post-file sends
    // the file as a C string (up to the first NUL byte), so the files are
    // text: a random line repeated.
    const MIB: u64 = 1 << 20;
    let limit = (110 * MIB).to_string();
    let m = Machine::start_with(&["--plaintext", "--max-artifact-bytes", &limit], "failed_containers: remove\n");
    let post = "wget -q -O - --header \"Authorization: Bearer $KILN_ACTION_TOKEN\"";
    let script = format!(
        "for n in 6 100 111; do yes \"$n $(head -c 48 /dev/urandom | base64)\" | head -c $((n * 1048576)) > /tmp_disk/f; \
         echo sha$n=$(sha256sum /tmp_disk/f | cut -d' ' -f1); \
         {post} --post-file /tmp_disk/f $KILN_API_ENDPOINT/v1/action/files/f$n.bin 2>&1; rc=$?; echo; echo rc$n=$rc; done"
    );
    let wf = m.run(&shell_action("upload", 300, &script, ""));
    let result = m.cluster.wait_finished(&wf, LIMIT);
    let logs = m.logs(&wf);
    assert_eq!(result["state"], "SUCCESS", "{logs}");
    let value = |key: &str| -> String {
        logs.lines()
            .find_map(|l| l.split_once("] ").map(|(_, t)| t).and_then(|t| t.strip_prefix(&format!("{key}="))))
            .unwrap_or_else(|| panic!("no {key}= line in {logs}"))
            .to_string()
    };
    let listed = m.cluster.kiln(&["artifacts", "list", &wf, "-o", "json"]);
    let artifacts: Value = serde_json::from_str(&stdout(&listed)).expect("artifacts as JSON");
    let find = |path: &str| artifacts.as_array().unwrap().iter().find(|a| a["path"] == path).cloned();
    for n in [6u64, 100] {
        let a = find(&format!("f{n}.bin")).unwrap_or_else(|| panic!("f{n}.bin missing: {artifacts:#} {logs}"));
        assert_eq!(a["size"], n * MIB, "{a:#} {logs}");
        assert_eq!(a["sha256"], value(&format!("sha{n}")), "{a:#}");
    }
    assert!(find("f111.bin").is_none(), "over the limit, nothing is kept: {artifacts:#}");
    assert_ne!(value("rc111"), "0", "{logs}");
    assert!(logs.contains("413"), "the refusal is 413 Payload Too Large: {logs}");
    // Streamed: the server never held a 100 MiB body in memory.
    let status = std::fs::read_to_string(format!("/proc/{}/status", m.cluster.server.pid())).unwrap();
    let hwm_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(hwm_kib * 1024 < 96 * MIB, "server peak RSS {hwm_kib} KiB: the upload was buffered");
    // The file itself, byte for byte.
    let out = m.cluster.kiln(&["artifacts", "get", &wf, "upload", "f100.bin"]);
    assert_eq!(out.stdout.len() as u64, 100 * MIB);
    assert_eq!(hex_sha256(&out.stdout), value("sha100"));
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}
