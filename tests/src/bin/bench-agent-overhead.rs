//! Agent overhead benchmark: a workflow of N no-op actions through kiln
//! against a shell loop of N `docker run` of the same image with the same
//! container settings, on the same engine, in the same run. Prints figures;
//! asserts nothing.
//!
//! Needs the services of `scripts/test-env.sh up` (see `scripts/bench.sh`).

use std::process::Command;
use std::time::{Duration, Instant};

use kiln_tests::{Cluster, hardware_doc, random_mac, stdout, unique};
use serde_json::Value;

const ACTIONS: usize = 20;

fn millis(v: &Value) -> Option<i64> {
    let t = humantime::parse_rfc3339(v.as_str()?).ok()?;
    Some(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as i64)
}

fn median(mut v: Vec<i64>) -> i64 {
    v.sort();
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let mut cluster = Cluster::start()?;
    let env = cluster.env.clone();
    let image = env.busybox();
    let pulled = env.docker(&["pull", "-q", &image]);
    anyhow::ensure!(pulled.status.success(), "pull {image}: {}", String::from_utf8_lossy(&pulled.stderr));

    // Baseline: the same container settings the agent uses on this host
    // (privileged-equivalent, host /dev, host network), one after another.
    let script = format!(
        "for i in $(seq {ACTIONS}); do docker run --rm --net host --cap-add ALL --cap-drop SYS_RESOURCE \
         --security-opt seccomp=unconfined --security-opt apparmor=unconfined --device-cgroup-rule 'a *:* rwm' \
         -v /dev:/dev {image} true || exit 1; done"
    );
    let start = Instant::now();
    let status = Command::new("sh").arg("-c").arg(&script).env("DOCKER_HOST", &env.docker_host).status()?;
    anyhow::ensure!(status.success(), "docker run loop failed");
    let docker_loop = start.elapsed();

    // kiln: apply, and wait for the end with `kiln watch`.
    let mac = random_mac();
    let (hw, tpl, wf) = (unique("bench-hw"), unique("bench-tpl"), unique("bench-wf"));
    let mut template = format!(
        "kind: Template\nname: {tpl}\ndata: |\n  version: \"0.1\"\n  name: {tpl}\n  tasks:\n    - name: bench\n      worker: \"{{{{.device_1}}}}\"\n      actions:\n"
    );
    for i in 0..ACTIONS {
        template
            .push_str(&format!("        - name: noop-{i}\n          image: {image}\n          command: [\"true\"]\n"));
    }
    let workflow =
        format!("kind: Workflow\nname: {wf}\ntemplate: {tpl}\nhardware: {hw}\nhardware_map: {{device_1: \"{mac}\"}}\n");
    cluster.start_agent(&mac, "pull_policy: if-not-present\nfailed_containers: remove\n")?;
    cluster.apply(&[hardware_doc(&hw, &mac), template].join("---\n"));
    std::thread::sleep(Duration::from_millis(500)); // let the agent connect and start its long poll
    let start = Instant::now();
    cluster.apply(&workflow);
    let watch = cluster.kiln(&["watch", &wf]);
    let kiln_run = start.elapsed();
    anyhow::ensure!(watch.status.success(), "workflow failed: {}", stdout(&watch));

    let wf = cluster.workflow(&wf);
    let attempts: Vec<&Value> = wf["actions"].as_array().unwrap().iter().map(|a| &a["attempts"][0]).collect();
    let mut dispatch = Vec::new();
    let mut exit_to_start = Vec::new();
    for pair in attempts.windows(2) {
        let prev_end = millis(&pair[0]["finished_at"]).unwrap();
        dispatch.push(millis(&pair[1]["created_at"]).unwrap() - prev_end);
        exit_to_start.push(millis(&pair[1]["running_at"]).unwrap() - prev_end);
    }
    let run_times: Vec<i64> =
        attempts.iter().map(|a| millis(&a["finished_at"]).unwrap() - millis(&a["running_at"]).unwrap()).collect();

    println!("agent overhead benchmark: {ACTIONS} no-op actions, image cached, {}", env.docker_host);
    println!("  docker run loop (shell):        {:>8.3} s", docker_loop.as_secs_f64());
    println!("  kiln workflow (apply -> watch): {:>8.3} s", kiln_run.as_secs_f64());
    println!("  ratio kiln / docker loop:       {:>8.3}", kiln_run.as_secs_f64() / docker_loop.as_secs_f64());
    println!("  median SUCCESS report -> next attempt created:   {} ms", median(dispatch));
    println!(
        "  median SUCCESS report -> next container running: {} ms (includes docker create + start)",
        median(exit_to_start)
    );
    println!("  median container running -> exit reported:       {} ms", median(run_times));
    Ok(())
}
