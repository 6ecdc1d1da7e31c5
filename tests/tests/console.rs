//! The web console in a real browser: headless Chromium (Debian's
//! `chromium` + `chromium-driver`) driven over WebDriver (fantoccini),
//! against a server with dev TLS, a real agent and Docker.
//!
//! One browser session walks through: log in (a wrong token refused), watch
//! a workflow advance action by action on one page load (a marker set on
//! `window` survives, so the page never reloaded) with its logs streaming
//! and a progress bar moving, download an artifact through the page's link
//! and compare the bytes, retry a failed workflow, the XSS case (markup in
//! action names, metadata, environment and log lines stays text and never
//! runs), secrets never on a page or in a stream, CSRF/Origin and the
//! security headers, and logout. Screenshots of every page go to
//! `target/console-screenshots/`.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use kiln_tests::{Cluster, hardware_doc, random_mac, unique};
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(120);

/// Markup that would run if it were ever treated as HTML.
const SCRIPT_PAYLOAD: &str = "<script>window.__pwned=1</script>";
const IMG_PAYLOAD: &str = "<img src=x onerror=\"window.__pwned=1\">";
const NAME_PAYLOAD: &str = "<img src=x onerror=window.__pwned=1>";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// chromedriver on a free port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Self {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver (Debian: apt-get install chromium chromium-driver)");
        let url = format!("http://127.0.0.1:{port}");
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(start.elapsed() < Duration::from_secs(20), "chromedriver did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, url }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000", "--ignore-certificate-errors"]
        }),
    );
    caps.insert("acceptInsecureCerts".into(), json!(true));
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("WebDriver session with chromium")
}

fn screenshots_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Counts the checks the walk makes (reported at the end).
#[derive(Default)]
struct Checks(usize);

impl Checks {
    #[track_caller]
    fn check(&mut self, ok: bool, what: impl std::fmt::Display) {
        self.0 += 1;
        assert!(ok, "{what}");
    }
}

async fn js(c: &Client, script: &str) -> Value {
    c.execute(script, vec![]).await.unwrap_or_else(|e| panic!("script {script}: {e}"))
}

/// Waits (polling the DOM from the test, not the page) until `script`
/// returns true.
async fn wait_js(c: &Client, script: &str, what: &str, cluster: &Cluster) {
    let start = Instant::now();
    loop {
        if js(c, script).await == json!(true) {
            return;
        }
        if start.elapsed() > LIMIT {
            let text = js(c, "return document.body.innerText").await;
            panic!("timed out waiting for {what}\npage: {text}\n{}", cluster.logs());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn text_of(c: &Client, css: &str) -> String {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap(),
        Err(e) => panic!(
            "{css}: {e}\nat {:?}: {}",
            c.current_url().await.map(|u| u.to_string()),
            c.source().await.unwrap_or_default()
        ),
    }
}

/// Clicks `#id` and waits until a new page has loaded that has `css`.
async fn click_to_page(c: &Client, id: &str, css: &str) {
    js(c, "window.__old_page = true; return true").await;
    c.find(Locator::Id(id)).await.unwrap().click().await.unwrap();
    let start = Instant::now();
    loop {
        let script = format!(
            "return window.__old_page === undefined && document.readyState === 'complete' && document.querySelector({css:?}) !== null"
        );
        if c.execute(&script, vec![]).await.ok() == Some(json!(true)) {
            return;
        }
        assert!(
            start.elapsed() < LIMIT,
            "no page with {css} after clicking #{id}: {}",
            c.source().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(screenshots_dir().join(format!("{name}.png")), png).unwrap();
}

/// `curl` against the console with the session cookie; returns the headers
/// and body.
fn curl(args: &[&str]) -> String {
    // A bound against a hang, not a speed goal: CI machines are busy.
    let out = Command::new("curl").args(["-sk", "-i", "--max-time", "30"]).args(args).output().expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn status_of(response: &str) -> u16 {
    response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

fn template_doc(name: &str, image: &str, actions: &[(&str, &str)], env: &str) -> String {
    let mut t = format!(
        "kind: Template\nname: {name}\ndata: |\n  version: \"0.1\"\n  name: {name}\n  tasks:\n    - name: provision\n      worker: \"{{{{.device_1}}}}\"\n      environment:\n        NOTE: {env:?}\n      actions:\n"
    );
    for (action, cmd) in actions {
        t.push_str(&format!(
            "        - name: {action:?}\n          image: {image}\n          timeout: 60\n          command: [\"sh\", \"-c\", {cmd:?}]\n"
        ));
    }
    t
}

fn workflow_doc(id: &str, template: &str, hw: &str, mac: &str) -> String {
    format!("kind: Workflow\nname: {id}\ntemplate: {template}\nhardware: {hw}\nhardware_map:\n  device_1: \"{mac}\"\n")
}

/// What the artifact action writes: 3,000 numbered lines.
fn numbers() -> String {
    (1..=3000).map(|i| format!("{i}\n")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_real_browser() {
    let console_addr = format!("127.0.0.1:{}", free_port());
    let mut cluster = Cluster::start_with(&["--console-listen", &console_addr]).expect("server");
    let base = format!("https://{console_addr}");
    let operator_token = std::fs::read_to_string(&cluster.admin_token_file).unwrap().trim().to_string();
    let image = cluster.env.busybox();
    let mac = random_mac();
    let hw = unique("hw");
    // Metadata carries markup too.
    let hardware = hardware_doc(&hw, &mac).replace(
        "metadata: {instance: {hostname: ",
        &format!("metadata: {{note: {:?}, instance: {{hostname: ", format!("{SCRIPT_PAYLOAD}{IMG_PAYLOAD}")),
    );
    cluster.apply(&hardware);
    cluster.start_agent(&mac, "").expect("agent");
    let mut checks = Checks::default();

    let driver = Driver::start();
    let c = browser(&driver).await;

    // Log in: a wrong token is refused, the operator's is accepted.
    c.goto(&format!("{base}/machines")).await.unwrap();
    checks.check(c.current_url().await.unwrap().path() == "/login", "not logged in: sent to /login");
    screenshot(&c, "login").await;
    c.find(Locator::Id("token")).await.unwrap().send_keys("kiln_not-the-token").await.unwrap();
    click_to_page(&c, "login", "p.error").await;
    let refused = text_of(&c, "main").await;
    checks.check(refused.contains("not an operator credential"), format!("wrong token refused: {refused}"));
    c.find(Locator::Id("token")).await.unwrap().send_keys(&operator_token).await.unwrap();
    click_to_page(&c, "login", "table#machines").await;
    let landed = c.current_url().await.unwrap();
    checks.check(
        landed.path() == "/machines",
        format!("logged in: on /machines, not {landed}: {}", c.source().await.unwrap()),
    );
    checks.check(js(&c, "return document.cookie").await == json!(""), "the session cookie is HttpOnly");
    let cookies = c.get_all_cookies().await.unwrap();
    let session = cookies.iter().find(|k| k.name() == "__Host-kiln_session").expect("session cookie");
    checks.check(session.http_only() == Some(true), "HttpOnly");
    checks.check(session.secure() == Some(true), "Secure under TLS");
    checks.check(format!("{:?}", session.same_site()).contains("Strict"), "SameSite=Strict");
    let cookie_header = format!("Cookie: __Host-kiln_session={}", session.value());

    // Watch a workflow advance action by action without reloading.
    let tpl = unique("tpl-live");
    let wf = unique("wf-live");
    let progress = |done: u32| format!(r#"echo '{{"progress":{{"what":"image","done":{done},"total":100}}}}'"#);
    let second = format!(
        "{}; echo line 1; sleep 1; {}; echo line 2; sleep 1; {}; echo line 3; sleep 1; {}; seq 1 3000 > /out/numbers.txt; sleep 1",
        progress(25),
        progress(50),
        progress(75),
        progress(100)
    );
    let docs = [
        template_doc(
            &tpl,
            &image,
            &[("wait", "echo first action; sleep 3"), ("write", &second), ("finish", "sleep 1; echo all done")],
            "plain",
        ),
        workflow_doc(&wf, &tpl, &hw, &mac),
    ]
    .join("---\n");
    cluster.apply(&docs);
    c.goto(&format!("{base}/workflows/{wf}")).await.unwrap();
    js(&c, "window.__same_page = 'yes'; return true").await;
    wait_js(
        &c,
        r#"return document.querySelector('section[data-action="0"] .action-state').textContent === 'RUNNING'"#,
        "action 0 running",
        &cluster,
    )
    .await;
    checks.check(true, "action 0 seen RUNNING");
    wait_js(
        &c,
        r#"return document.querySelector('section[data-action="0"] .action-state').textContent === 'SUCCESS'
                && document.querySelector('section[data-action="1"] .action-state').textContent === 'RUNNING'"#,
        "action 0 done, action 1 running",
        &cluster,
    )
    .await;
    checks.check(true, "action 0 SUCCESS while action 1 RUNNING");
    wait_js(
        &c,
        r#"return document.querySelector('section[data-action="1"] progress').value >= 50"#,
        "progress ≥ 50",
        &cluster,
    )
    .await;
    let bar = js(&c, r#"return [document.querySelector('section[data-action="1"] .progress').hidden, document.querySelector('section[data-action="1"] .progress-label').textContent]"#).await;
    checks.check(bar[0] == json!(false), "the progress bar is shown");
    checks.check(bar[1].as_str().unwrap_or_default().contains("% ("), format!("progress label: {bar}"));
    screenshot(&c, "workflow-running").await;
    wait_js(
        &c,
        "return document.getElementById('log').textContent.includes('line 2')",
        "log line 2 streamed",
        &cluster,
    )
    .await;
    checks.check(
        js(&c, "return document.getElementById('wf-state').textContent").await == json!("RUNNING"),
        "log lines arrive while the workflow runs",
    );
    wait_js(&c, "return document.getElementById('wf-state').textContent === 'SUCCESS'", "workflow SUCCESS", &cluster)
        .await;
    checks.check(js(&c, "return window.__same_page").await == json!("yes"), "the page was never reloaded");
    let log = text_of(&c, "#log").await;
    for line in ["first action", "line 1", "line 3", "all done"] {
        checks.check(log.contains(line), format!("log has {line:?}: {log}"));
    }
    checks.check(!log.contains("\"progress\""), "progress lines become the bar, not log text");
    checks.check(
        js(&c, r#"return document.querySelector('section[data-action="1"] progress').value"#).await == json!(100),
        "the bar reached 100",
    );
    let attempts = js(&c, "return document.querySelectorAll('table.attempts tbody tr').length").await;
    checks.check(attempts == json!(3), format!("one attempt row per action: {attempts}"));

    // Download the artifact through the page's link; compare the bytes.
    wait_js(&c, "return document.querySelectorAll('a.artifact').length === 1", "artifact link", &cluster).await;
    let fetched = c
        .execute_async(
            "const done = arguments[0]; const a = document.querySelector('a.artifact');
             fetch(a.href).then(r => r.arrayBuffer().then(b => done({status: r.status, type: r.headers.get('content-type'),
               bytes: Array.from(new Uint8Array(b))})));",
            vec![],
        )
        .await
        .unwrap();
    checks.check(fetched["status"] == json!(200), format!("artifact status: {}", fetched["status"]));
    let bytes: Vec<u8> = fetched["bytes"].as_array().unwrap().iter().map(|b| b.as_u64().unwrap() as u8).collect();
    checks.check(bytes == numbers().into_bytes(), "the downloaded artifact is byte for byte what the action wrote");
    checks.check(fetched["type"] == json!("application/octet-stream"), "artifacts are downloads, never rendered");
    screenshot(&c, "workflow").await;

    // Retry a failed workflow.
    let tpl_retry = unique("tpl-flaky");
    let wf_retry = unique("wf-flaky");
    let flaky = "if [ -e /workflow/tried ]; then echo second try works; else touch /workflow/tried; echo first try fails; exit 3; fi";
    cluster.apply(
        &[
            template_doc(&tpl_retry, &image, &[("flaky", flaky)], "plain"),
            workflow_doc(&wf_retry, &tpl_retry, &hw, &mac),
        ]
        .join("---\n"),
    );
    c.goto(&format!("{base}/workflows/{wf_retry}")).await.unwrap();
    js(&c, "window.__same_page = 'retry'; return true").await;
    wait_js(
        &c,
        "return document.getElementById('wf-state').textContent === 'FAILED'",
        "flaky workflow FAILED",
        &cluster,
    )
    .await;
    wait_js(&c, "return !document.getElementById('retry-form').hidden", "the retry button appears", &cluster).await;
    checks.check(js(&c, "return window.__same_page").await == json!("retry"), "the failure arrived live");
    let reason = text_of(&c, r#"section[data-action="0"] table.attempts tbody"#).await;
    checks.check(reason.contains("NonZeroExit") || reason.contains('3'), format!("the failure's reason: {reason}"));
    screenshot(&c, "workflow-failed").await;
    click_to_page(&c, "retry", "#wf-state").await;
    wait_js(
        &c,
        "return document.getElementById('wf-state').textContent === 'SUCCESS'",
        "retried workflow SUCCESS",
        &cluster,
    )
    .await;
    let rows =
        js(&c, r#"return document.querySelectorAll('section[data-action="0"] table.attempts tbody tr').length"#).await;
    checks.check(rows == json!(2), format!("the retry is a second attempt: {rows}"));
    checks.check(text_of(&c, "#log").await.contains("second try works"), "the retry's log");
    c.goto(&format!("{base}/events")).await.unwrap();
    let events = text_of(&c, "#events").await;
    checks.check(
        events
            .lines()
            .any(|l| l.contains("retry") && l.contains(&format!("workflow {wf_retry}")) && l.contains("operator")),
        format!("the console's retry is in the audit trail like the CLI's: {events}"),
    );
    // New events arrive live.
    js(&c, "window.__same_page = 'events'; return true").await;
    wait_js(&c, "return document.getElementById('live').textContent === 'live'", "events stream open", &cluster).await;
    let other_hw = unique("hw-other");
    cluster.apply(&hardware_doc(&other_hw, &random_mac()));
    wait_js(
        &c,
        &format!("return document.querySelector('#events tbody tr').textContent.includes('{other_hw}')"),
        "the apply's event on top of the events page",
        &cluster,
    )
    .await;
    checks.check(js(&c, "return window.__same_page").await == json!("events"), "the events page was never reloaded");
    screenshot(&c, "events").await;

    // XSS: markup in action and task names, metadata, environment and log
    // lines is shown as text and never runs.
    let tpl_xss = unique("tpl-xss");
    let wf_xss = unique("wf-xss");
    let print =
        format!("echo '{SCRIPT_PAYLOAD}'; echo '{IMG_PAYLOAD}'; printf '%s' '{SCRIPT_PAYLOAD}' > /out/page.html");
    cluster.apply(
        &[
            template_doc(&tpl_xss, &image, &[(NAME_PAYLOAD, &print)], SCRIPT_PAYLOAD),
            workflow_doc(&wf_xss, &tpl_xss, &hw, &mac),
        ]
        .join("---\n"),
    );
    let done = cluster.wait_finished(&wf_xss, LIMIT);
    checks.check(done["state"] == json!("SUCCESS"), format!("the XSS workflow ran: {done}"));
    let pages = [
        ("machines", "/machines".to_string()),
        ("workflows", "/workflows".to_string()),
        ("workflows-filtered", format!("/workflows?template={tpl_xss}&sort=id&dir=desc")),
        ("workflow-xss", format!("/workflows/{wf_xss}")),
        ("templates", "/templates".to_string()),
        ("template", format!("/templates/{tpl_xss}?workflow={wf_xss}")),
        ("events-after", "/events".to_string()),
    ];
    let mut sources = Vec::new();
    for (name, path) in &pages {
        c.goto(&format!("{base}{path}")).await.unwrap();
        if name.starts_with("workflow-") {
            wait_js(
                &c,
                "return document.getElementById('live').textContent === 'finished'",
                "stream finished",
                &cluster,
            )
            .await;
        } else {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        checks.check(
            js(&c, "return window.__pwned === undefined").await == json!(true),
            format!("nothing ran on {path}"),
        );
        let text = text_of(&c, "body").await;
        match *name {
            "machines" => {
                // As JSON text: the quotes escaped, the markup intact.
                let json = serde_json::to_string(&format!("{SCRIPT_PAYLOAD}{IMG_PAYLOAD}")).unwrap();
                checks.check(text.contains(&json), format!("metadata shown as text: {text}"))
            }
            "workflow-xss" => {
                checks.check(text.contains(NAME_PAYLOAD), "the action name shown as text");
                let log = text_of(&c, "#log").await;
                checks.check(
                    log.contains(SCRIPT_PAYLOAD) && log.contains(IMG_PAYLOAD),
                    format!("log lines shown as text: {log}"),
                );
                let injected = js(&c, "return document.querySelectorAll('main script, main img').length").await;
                checks.check(injected == json!(0), "no element made from data");
            }
            "template" => {
                checks.check(text.contains(NAME_PAYLOAD), "the plan's action name as text");
                checks.check(text.contains(&format!("NOTE={SCRIPT_PAYLOAD}")), "the environment as text");
            }
            "workflows" => checks.check(text.contains(&wf_xss), "the list shows the workflow"),
            _ => {}
        }
        screenshot(&c, name).await;
        sources.push((path.clone(), c.source().await.unwrap()));
    }
    c.goto(&format!("{base}/machines")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    screenshot(&c, "machines").await;
    c.goto(&format!("{base}/workflows")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    screenshot(&c, "workflows").await;

    // No secret on any page or in any stream.
    let mut secrets = vec![operator_token.clone()];
    secrets.extend(cluster.tokens.lock().unwrap().values().cloned());
    checks.check(secrets.len() >= 2, "the operator token and an agent token to look for");
    for stream in [
        "/workflows/stream".to_string(),
        format!("/workflows/{wf}/stream"),
        format!("/workflows/{wf_xss}/stream"),
        "/events/stream".to_string(),
    ] {
        // A stream never ends: read it for 3 s (curl takes the last --max-time).
        let body = curl(&["--max-time", "3", "-N", "-H", &cookie_header, &format!("{base}{stream}")]);
        checks.check(body.contains("event: hello"), format!("{stream} streams: {body}"));
        sources.push((stream, body));
    }
    // Headers, CSRF and Origin.
    let head = curl(&["-H", &cookie_header, &format!("{base}/machines")]).to_ascii_lowercase();
    for h in [
        "content-security-policy: default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        "x-content-type-options: nosniff",
        "referrer-policy: no-referrer",
    ] {
        checks.check(head.contains(h), format!("header {h}: {head}"));
    }
    let retry_url = format!("{base}/workflows/{wf_retry}/retry");
    let origin = format!("Origin: {base}");
    let no_csrf = curl(&["-X", "POST", "-H", &cookie_header, "-H", &origin, "-d", "csrf=", &retry_url]);
    checks.check(status_of(&no_csrf) == 403, format!("POST without the CSRF token: {no_csrf}"));
    let csrf = js(&c, "return document.querySelector('form.logout input[name=csrf]').value").await;
    let csrf = format!("csrf={}", csrf.as_str().unwrap());
    let foreign =
        curl(&["-X", "POST", "-H", &cookie_header, "-H", "Origin: https://evil.example", "-d", &csrf, &retry_url]);
    checks.check(status_of(&foreign) == 403, format!("POST from another origin: {foreign}"));
    let no_origin = curl(&["-X", "POST", "-H", &cookie_header, "-d", &csrf, &retry_url]);
    checks.check(status_of(&no_origin) == 403, format!("POST without Origin: {no_origin}"));
    let no_session = curl(&["-X", "POST", "-H", &origin, "-d", &csrf, &retry_url]);
    checks.check(status_of(&no_session) == 403, format!("POST without a session: {no_session}"));
    let stream_anon = curl(&[&format!("{base}/workflows/stream")]);
    checks.check(status_of(&stream_anon) == 401, format!("streams need a session: {stream_anon}"));

    // Logout: the session is gone, in the browser and on the server.
    c.goto(&format!("{base}/machines")).await.unwrap();
    click_to_page(&c, "logout", "#token").await;
    checks.check(c.current_url().await.unwrap().path() == "/login", "logged out: on /login");
    c.goto(&format!("{base}/workflows")).await.unwrap();
    checks.check(c.current_url().await.unwrap().path() == "/login", "pages need a new login");
    let old = curl(&["-H", &cookie_header, &format!("{base}/machines")]);
    checks.check(status_of(&old) == 303, format!("the old session id is dead: {old}"));

    // The read-only operator sees everything, no write button, and gets
    // 403 on writes.
    let tpl_fail = unique("tpl-fail");
    let wf_fail = unique("wf-fail");
    cluster.apply(
        &[
            template_doc(&tpl_fail, &image, &[("fails", "echo no luck; exit 4")], "plain"),
            workflow_doc(&wf_fail, &tpl_fail, &hw, &mac),
        ]
        .join("---\n"),
    );
    checks.check(cluster.wait_finished(&wf_fail, LIMIT)["state"] == json!("FAILED"), "a failed workflow to retry");
    let read_only_token = std::fs::read_to_string(cluster.dir.path().join("data/read-only-token"))
        .expect("read-only token")
        .trim()
        .to_string();
    c.goto(&format!("{base}/login")).await.unwrap();
    c.find(Locator::Id("token")).await.unwrap().send_keys(&read_only_token).await.unwrap();
    click_to_page(&c, "login", "table#machines").await;
    checks.check(c.current_url().await.unwrap().path() == "/machines", "the read-only operator logs in");
    checks.check(text_of(&c, ".who").await.contains("read-only operator"), "and is told so");
    c.goto(&format!("{base}/workflows/{wf_fail}")).await.unwrap();
    checks.check(text_of(&c, "#wf-state").await == "FAILED", "the read-only operator sees the failed workflow");
    let buttons = js(
        &c,
        "return [document.getElementById('retry-form'), document.querySelectorAll('main form[method=post]').length]",
    )
    .await;
    checks.check(buttons == json!([null, 0]), format!("no write button for the read-only operator: {buttons}"));
    screenshot(&c, "workflow-read-only").await;
    let ro_cookie = c.get_all_cookies().await.unwrap().into_iter().find(|k| k.name() == "__Host-kiln_session").unwrap();
    let ro_header = format!("Cookie: __Host-kiln_session={}", ro_cookie.value());
    let ro_csrf = js(&c, "return document.querySelector('form.logout input[name=csrf]').value").await;
    let refused = curl(&[
        "-X",
        "POST",
        "-H",
        &ro_header,
        "-H",
        &origin,
        "-d",
        &format!("csrf={}", ro_csrf.as_str().unwrap()),
        &format!("{base}/workflows/{wf_fail}/retry"),
    ]);
    checks.check(status_of(&refused) == 403, format!("the read-only operator's retry is refused: {refused}"));
    checks.check(cluster.workflow(&wf_fail)["state"] == json!("FAILED"), "and changed nothing");
    c.goto(&format!("{base}/events")).await.unwrap();
    let events = text_of(&c, "#events").await;
    checks.check(
        events.lines().any(|l| {
            l.contains("read-only operator") && l.contains(&format!("workflow {wf_fail}")) && l.contains("refused")
        }),
        format!("the refused write is in the audit trail: {events}"),
    );
    click_to_page(&c, "logout", "#token").await;
    secrets.push(read_only_token);
    for (path, body) in &sources {
        for secret in &secrets {
            checks.check(!body.contains(secret.as_str()), format!("a secret reached {path}"));
        }
    }

    c.close().await.unwrap();
    eprintln!("console browser test: {} checks passed; screenshots in {}", checks.0, screenshots_dir().display());
}
