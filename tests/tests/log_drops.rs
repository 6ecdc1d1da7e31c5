//! Connections between agent and server drop, again and again, while an
//! action writes its output: the logs still arrive complete, each line once,
//! in order per stream, and the action runs once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kiln_tests::proxy::Proxy;
use kiln_tests::{Cluster, Rng, hardware_doc, random_mac, stderr, stdout, unique};
use serde_json::Value;

/// Lines per stream, written in bursts of `BURST` with a pause between.
const LINES: u32 = 1500;
const BURST: u32 = 100;

#[test]
fn logs_arrive_complete_and_in_order_across_connection_drops() {
    let mut cluster = Cluster::start().expect("start server");
    let proxy = Proxy::start(&cluster.server_addr()).expect("start proxy");
    let scheme = cluster.server_url.split("://").next().unwrap().to_string();
    let (mac, hw, tpl, wf) = (random_mac(), unique("hw"), unique("tpl"), unique("wf"));
    cluster.apply(&hardware_doc(&hw, &mac));
    cluster.start_agent_at(&format!("{scheme}://{}", proxy.addr()), &mac, "").expect("start agent");

    // Numbered lines on both streams, in bursts over about 6 s.
    let script = format!(
        "i=1; while [ $i -le {LINES} ]; do echo \"out $i\"; echo \"err $i\" >&2; \
         if [ $((i % {BURST})) -eq 0 ]; then sleep 0.4; fi; i=$((i+1)); done"
    );
    let image = cluster.env.busybox();
    cluster.apply(&format!(
        "kind: Template\nname: {tpl}\ndata: |\n  version: \"0.1\"\n  name: {tpl}\n  tasks:\n    - name: t\n      worker: \"{{{{.device_1}}}}\"\n      actions:\n        - name: count\n          image: {image}\n          timeout: 300\n          command: [\"sh\", \"-c\", {script:?}]\n---\nkind: Workflow\nname: {wf}\ntemplate: {tpl}\nhardware: {hw}\nhardware_map: {{device_1: \"{mac}\"}}\n"
    ));

    // Cut every connection every 300-700 ms until the workflow ends; now
    // and then also refuse new connections for a moment.
    let seed = Rng::from_clock().seed();
    println!("cut schedule seed: {seed}");
    let proxy = Arc::new(proxy);
    let done = Arc::new(AtomicBool::new(false));
    let cutter = {
        let (proxy, done) = (proxy.clone(), done.clone());
        std::thread::spawn(move || {
            let mut rng = Rng::new(seed);
            let mut cuts = 0;
            while !done.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(rng.between(300, 700)));
                if proxy.cut_all() > 0 {
                    cuts += 1;
                }
                if rng.between(0, 3) == 0 {
                    proxy.refuse_for(Duration::from_millis(rng.between(100, 400)));
                }
            }
            cuts
        })
    };
    let start = Instant::now();
    let finished = cluster.wait_finished(&wf, Duration::from_secs(180));
    done.store(true, Ordering::SeqCst);
    let cuts = cutter.join().unwrap();
    let stats = proxy.stats();
    println!("workflow ended after {:?}; {cuts} cuts; proxy: {stats:?}", start.elapsed());
    assert_eq!(finished["state"], "SUCCESS", "{finished:#}\n{}", cluster.logs());
    // The action ran once: one attempt, and (below) each line once.
    let attempts = finished["actions"][0]["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 1, "{finished:#}");
    assert!(cuts >= 5 && stats.cut >= 5, "the test cut too little to mean anything: {cuts} cuts, {stats:?}");

    let out = cluster.kiln(&["logs", &wf, "-o", "json"]);
    assert!(out.status.success(), "kiln logs: {}", stderr(&out));
    let entries: Vec<Value> =
        stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    let attempt = attempts[0]["id"].as_str().unwrap_or_default().to_string();
    let mut seqs = Vec::new();
    let (mut outs, mut errs) = (Vec::new(), Vec::new());
    for e in &entries {
        assert_eq!(e["attempt"].as_str(), Some(attempt.as_str()), "a line of another attempt: {e}");
        seqs.push(e["seq"].as_u64().expect("seq"));
        let text = e["text"].as_str().expect("text");
        let (stream, want) = match e["stream"].as_str() {
            Some("stdout") => (&mut outs, "out "),
            Some("stderr") => (&mut errs, "err "),
            other => panic!("stream {other:?} in {e}"),
        };
        let n: u32 = text.strip_prefix(want).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("line {e}"));
        stream.push(n);
    }
    let expected: Vec<u32> = (1..=LINES).collect();
    for (name, got) in [("stdout", &outs), ("stderr", &errs)] {
        let missing: Vec<_> = expected.iter().filter(|n| !got.contains(n)).take(20).collect();
        assert!(missing.is_empty(), "{name}: {} of {LINES} lines, missing e.g. {missing:?}", got.len());
        assert_eq!(got, &expected, "{name}: every line once, in order");
    }
    // Stored once each, in the order the agent numbered them.
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seqs not increasing");
    assert_eq!(seqs.len(), 2 * LINES as usize);
}
