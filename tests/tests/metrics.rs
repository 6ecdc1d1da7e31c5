//! Metrics: `/metrics` behind the operator credential on the main port and
//! open on `--metrics-listen`; a real Prometheus (Debian's `prometheus`)
//! scraping a server that runs workflows agrees with what happened; the
//! shipped Grafana dashboard and alert rules (docs/monitoring/) are valid
//! and use only metrics the server exports.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kiln_tests::{Cluster, Machine, Proc, wait_until};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(120);

/// A loopback port free right now (for the servers that cannot report the
/// port they picked).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A plain HTTP/1.0 GET (HTTP/1.0: the answer is never chunked). Returns
/// the status and the body.
fn get(addr: &str, path: &str, bearer: Option<&str>) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let auth = bearer.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok((status, body.to_string()))
}

fn operator_token(c: &Cluster) -> String {
    std::fs::read_to_string(&c.admin_token_file).unwrap().trim().to_string()
}

/// The value of the sample `series` (name and labels as exposed) in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn metrics_need_the_operator_credential_on_the_main_port_and_nothing_on_metrics_listen() {
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let c = Cluster::start_with(&["--plaintext", "--metrics-listen", &metrics_addr]).expect("server");
    let main = c.server_addr();
    let token = operator_token(&c);

    let (status, body) = get(&main, "/metrics", None).unwrap();
    assert_eq!(status, 401, "{body}");
    assert!(!body.contains("kiln_"), "no metric without the credential: {body}");
    assert_eq!(get(&main, "/metrics", Some("not-the-operator-token")).unwrap().0, 401);
    let (status, text) = get(&main, "/metrics", Some(&token)).unwrap();
    assert_eq!(status, 200, "{text}");
    assert_eq!(sample(&text, "kiln_connected_agents"), Some(0.0), "{text}");
    // The two refused scrapes are counted, and in the audit trail.
    assert_eq!(sample(&text, r#"kiln_credential_refusals_total{front_door="metrics"}"#), Some(2.0), "{text}");
    let read_only = std::fs::read_to_string(c.admin_token_file.with_file_name("read-only-token")).unwrap();
    assert_eq!(get(&main, "/metrics", Some(read_only.trim())).unwrap().0, 200, "the read-only operator scrapes");
    // Stored in the background, within a second or so.
    let refused = || {
        let trail = c.kiln(&["events", "--kind", "security", "-o", "json"]);
        let trail: serde_json::Value = serde_json::from_slice(&trail.stdout).expect("kiln events -o json");
        trail
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["object"] == "metrics")
            .map(|e| (e["actor"].as_str().unwrap().to_string(), e["reason"].as_str().unwrap().to_string()))
            .collect::<Vec<_>>()
    };
    let _ = kiln_tests::wait_until(Duration::from_secs(10), || refused().len() >= 2);
    let reasons = refused();
    let reasons: Vec<(&str, &str)> = reasons.iter().map(|(a, r)| (a.as_str(), r.as_str())).collect();
    assert_eq!(reasons, [("operator", "no operator token"), ("operator", "wrong operator token")]);

    // The open listener: metrics without a credential, and nothing else.
    let (status, open) = get(&metrics_addr, "/metrics", None).unwrap();
    assert_eq!(status, 200, "{open}");
    assert!(open.contains("# TYPE kiln_lease_expiries_total counter"), "{open}");
    assert_eq!(get(&metrics_addr, "/v1/action/data", None).unwrap().0, 404);
    assert_eq!(get(&metrics_addr, "/boot/ipxe", None).unwrap().0, 404);

    // Without --metrics-listen, the main port is the only way, still
    // behind the credential.
    let c = Cluster::start_with(&["--plaintext"]).expect("server");
    assert_eq!(get(&c.server_addr(), "/metrics", None).unwrap().0, 401);
    assert_eq!(get(&c.server_addr(), "/metrics", Some(&operator_token(&c))).unwrap().0, 200);
}

/// A Prometheus server scraping `target` every second, with its data in a
/// directory of its own; killed when dropped.
struct Prometheus {
    proc: Proc,
    addr: String,
    dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: &str) -> Self {
        let binary = which("prometheus").unwrap_or_else(|| {
            panic!("no prometheus binary: apt-get install prometheus (scripts/test-env.sh installs it)")
        });
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: kiln\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let mut p = Prometheus { proc: Proc { child, name: "prometheus".into() }, addr, dir };
        let ready = wait_until(Duration::from_secs(30), || {
            p.proc.exited() || get(&p.addr, "/-/ready", None).is_ok_and(|(s, _)| s == 200)
        });
        assert!(ready.is_ok() && !p.proc.exited(), "prometheus did not become ready:\n{}", p.log());
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// The value of an instant query whose answer is one number (an empty
    /// answer: `None`).
    fn query(&self, promql: &str) -> Option<f64> {
        let (status, body) = get(&self.addr, &format!("/api/v1/query?query={}", percent_encode(promql)), None).ok()?;
        let answer: Value = serde_json::from_str(&body).ok()?;
        assert_eq!(status, 200, "{promql}: {body}");
        let result = answer["data"]["result"].as_array()?;
        assert!(result.len() <= 1, "{promql} has several series: {body}");
        result.first()?["value"][1].as_str()?.parse().ok()
    }

    /// Whether Prometheus accepts `promql` (parses and evaluates it).
    fn accepts(&self, promql: &str) -> Result<(), String> {
        let (status, body) = get(&self.addr, &format!("/api/v1/query?query={}", percent_encode(promql)), None)
            .map_err(|e| e.to_string())?;
        let answer: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        if status == 200 && answer["status"] == "success" { Ok(()) } else { Err(body) }
    }

    /// Waits until every query answers its expected value; on the deadline,
    /// fails with what each answered.
    fn expect(&self, expected: &[(&str, f64)], c: &Cluster) {
        let start = Instant::now();
        loop {
            let answers: Vec<Option<f64>> = expected.iter().map(|(q, _)| self.query(q)).collect();
            if answers.iter().zip(expected).all(|(a, (_, want))| *a == Some(*want)) {
                return;
            }
            if start.elapsed() > Duration::from_secs(60) {
                let table: Vec<String> = expected
                    .iter()
                    .zip(&answers)
                    .map(|((q, want), got)| format!("{q}: want {want}, got {got:?}"))
                    .collect();
                panic!("Prometheus disagrees with what happened:\n{}\n{}", table.join("\n"), c.logs());
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn shell_action(name: &str, cmd: &str, extra: &str) -> String {
    format!(
        "        - name: {name}\n          image: IMAGE\n          timeout: 60\n          command: [\"sh\", \"-c\", {cmd:?}]\n{extra}"
    )
}

/// Fails the first time it runs in a workflow, succeeds after.
const FLAKY: &str = "if [ -e /workflow/tried ]; then echo second try works; else touch /workflow/tried; echo first try fails; exit 1; fi";

#[test]
fn a_real_prometheus_sees_what_happened() {
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let mut m = Machine::start_with(
        &["--plaintext", "--metrics-listen", &metrics_addr, "--attempt-lease", "2s"],
        "failed_containers: remove\n",
    );
    let prometheus = Prometheus::start(&metrics_addr);
    let c = &m.cluster;

    // Succeeds: two actions, 3 + 3 lines, one of them progress.
    let progress = r#"{"progress":{"what":"image","done":4096,"total":4096,"rate":65536}}"#;
    let ok = m.run(
        &[
            shell_action("first", "echo one; echo two; echo three >&2", ""),
            shell_action(
                "second",
                &format!("echo '{progress}'; echo four; echo five; echo data > /out/report.txt"),
                "",
            ),
        ]
        .concat(),
    );
    assert_eq!(c.wait_finished(&ok, LIMIT)["state"], "SUCCESS");
    // Fails: 1 line.
    let failing = m.run(&shell_action("broken", "echo about to fail; exit 3", ""));
    assert_eq!(c.wait_finished(&failing, LIMIT)["state"], "FAILED");
    // Fails once, succeeds on its retry: 1 + 1 lines.
    let retried = m.run(&shell_action("flaky", FLAKY, "          retries: 1\n          retry_backoff: 1\n"));
    let retried = c.wait_finished(&retried, LIMIT);
    assert_eq!(retried["state"], "SUCCESS", "{retried:#}");
    // Lines the actions printed, and the agent's own note in the logs
    // ("[kiln-agent] artifact report.txt uploaded ...").
    let lines = 6 + 1 + 2 + 1;

    prometheus.expect(
        &[
            (r#"sum(kiln_workflows{state="SUCCESS"})"#, 2.0),
            (r#"sum(kiln_workflows{state="FAILED"})"#, 1.0),
            (r#"sum(kiln_workflows{state=~"PENDING|RUNNING|TIMEOUT"}) or vector(0)"#, 0.0),
            (r#"sum(kiln_workflows_finished_total{state="SUCCESS"})"#, 2.0),
            (r#"sum(kiln_workflows_finished_total{state="FAILED"})"#, 1.0),
            (r#"sum(kiln_attempts_total{result="SUCCESS"})"#, 3.0),
            (r#"sum(kiln_attempts_total{result="FAILED",reason="NonZeroExit"})"#, 2.0),
            ("sum(kiln_attempts_total)", 5.0),
            ("sum(kiln_action_duration_seconds_count)", 5.0),
            // The second action of the first workflow, and the retry.
            ("kiln_dispatch_latency_seconds_count", 2.0),
            ("kiln_log_lines_received_total", lines as f64),
            (r#"kiln_action_progress_bytes_total{what="image"}"#, 4096.0),
            ("kiln_connected_agents", 1.0),
            ("kiln_lease_expiries_total", 0.0),
            (r#"kiln_artifacts_received_bytes_total{source="agent"}"#, 5.0),
            (r#"sum(kiln_store_transaction_seconds_count{operation="apply"}) > bool 0"#, 1.0),
            (r#"sum(kiln_store_transaction_seconds_count{operation="update_workflow"}) > bool 0"#, 1.0),
        ],
        c,
    );
    // Those are the lines `kiln logs` shows.
    let shown: usize =
        [&ok, &failing, retried["id"].as_str().unwrap()].iter().map(|wf| m.logs(wf).lines().count()).sum();
    assert_eq!(shown, lines, "kiln logs");

    // Every family has series now: the dashboard and the alert rules use
    // only names the server exports.
    let (_, exposition) = get(&metrics_addr, "/metrics", None).unwrap();
    check_names_exported(&exposition);

    // The dashboard's queries are PromQL Prometheus evaluates (with
    // Grafana's $__rate_interval as Grafana would set it).
    let mut exprs = Vec::new();
    collect_exprs(&dashboard(), &mut exprs);
    for expr in &exprs {
        let expr = expr.replace("$__rate_interval", "1m");
        if let Err(e) = prometheus.accepts(&expr) {
            panic!("dashboard query {expr}: {e}");
        }
    }

    // An agent that vanishes mid-action: its lease runs out.
    let lost = m.run(&shell_action("long", "echo started; sleep 15", ""));
    // Killed once its line is stored: that line is the last one counted.
    wait_until(Duration::from_secs(60), || m.logs(&lost).contains("started"))
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    m.cluster.agents[0].kill();
    let c = &m.cluster;
    assert_eq!(c.wait_finished(&lost, LIMIT)["state"], "FAILED");
    prometheus.expect(
        &[
            ("kiln_lease_expiries_total", 1.0),
            (r#"sum(kiln_attempts_total{result="FAILED",reason="AgentLost"})"#, 1.0),
            (r#"sum(kiln_workflows{state="FAILED"})"#, 2.0),
            ("kiln_connected_agents", 0.0),
            ("kiln_log_lines_received_total", lines as f64 + 1.0),
        ],
        c,
    );
}

/// Metric names a server exposes: each family's name from its `# TYPE`
/// line, with the series names of its type (`_total` of a counter;
/// `_bucket`, `_sum`, `_count` of a histogram).
fn exported_names(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else { continue };
        let (name, kind) = rest.split_once(' ').unwrap();
        names.insert(name.to_string());
        match kind {
            "counter" => {
                names.insert(format!("{}_total", name.trim_end_matches("_total")));
            }
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            _ => {}
        }
    }
    names
}

/// `kiln_...` names used in a PromQL expression.
fn used_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("kiln_") {
        let tail = &rest[at..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        // Not part of a longer identifier (a label value, a rule name).
        let before = rest[..at].chars().next_back();
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '"') {
            names.push(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    names
}

fn collect_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr", Value::String(s)) => out.push(s.clone()),
                    _ => collect_exprs(value, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect_exprs(i, out)),
        _ => {}
    }
}

fn monitoring_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/monitoring")
}

fn dashboard() -> Value {
    let text = std::fs::read_to_string(monitoring_dir().join("grafana-dashboard.json")).unwrap();
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

#[test]
fn the_shipped_alert_rules_pass_promtool_and_the_dashboard_is_json() {
    let docs = monitoring_dir();
    let alerts = docs.join("alerts.yml");
    let promtool = which("promtool").expect("no promtool: apt-get install prometheus");
    let check = Command::new(&promtool).arg("check").arg("rules").arg(&alerts).output().unwrap();
    assert!(
        check.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    // The rules' own unit tests: each alert fires on the series it is
    // about, and not on healthy ones.
    let test = Command::new(&promtool).arg("test").arg("rules").arg(docs.join("alerts_test.yml")).output().unwrap();
    assert!(
        test.status.success(),
        "promtool test rules: {}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );

    let dashboard = dashboard();
    assert!(dashboard["title"].is_string() && dashboard["panels"].is_array(), "a Grafana dashboard");
}

/// The `kiln_...` names the dashboard's queries and the alert rules use are
/// among those `exposition` has.
fn check_names_exported(exposition: &str) {
    let exported = exported_names(exposition);
    let mut exprs = Vec::new();
    collect_exprs(&dashboard(), &mut exprs);
    assert!(exprs.len() >= 8, "panels with queries: {exprs:?}");
    let mut used = BTreeSet::new();
    for expr in &exprs {
        let names = used_names(expr);
        assert!(!names.is_empty(), "uses no kiln metric: {expr}");
        used.extend(names);
    }
    // The rules file: expressions and the names its texts mention.
    let rules = std::fs::read_to_string(monitoring_dir().join("alerts.yml")).unwrap();
    assert!(rules.matches("- alert:").count() >= 3, "{rules}");
    for line in rules.lines().filter(|l| !l.trim_start().starts_with('#')) {
        used.extend(used_names(line));
    }
    let unknown: Vec<&String> = used.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(unknown.is_empty(), "not exported by the server: {unknown:?}\nexported: {exported:?}");
}

#[test]
fn names_in_expressions_are_found() {
    assert_eq!(
        used_names(r#"sum(rate(kiln_attempts_total{result="FAILED"}[5m])) / kiln_connected_agents"#),
        vec!["kiln_attempts_total", "kiln_connected_agents"]
    );
    assert!(used_names(r#"up{job="kiln_server"}"#).is_empty());
    let names = exported_names("# TYPE kiln_a counter\n# TYPE kiln_b_seconds histogram\n# TYPE kiln_c gauge\n");
    assert!(
        ["kiln_a_total", "kiln_b_seconds_count", "kiln_b_seconds_bucket", "kiln_c"].iter().all(|n| names.contains(*n))
    );
}
