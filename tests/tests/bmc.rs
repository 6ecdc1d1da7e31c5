//! kiln's BMC clients (crate kiln-bmc) against real BMC emulators driving
//! real libvirt/QEMU domains (tests/src/bmc_lab.rs), and against BMCs that
//! misbehave: refused, hung, failing with 500, answering garbage.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use kiln_bmc::{
    BootDevice, BootMode, BootOverride, Client, Config, Credentials, ErrorKind, PowerAction, PowerState, Protocol, Tls,
};
use kiln_tests::bmc_lab::{self, Lab};

const USER: &str = "admin";
const PASSWORD: &str = "bmc-s3cret";

fn config(protocol: Protocol, address: &str, password: &str, tls: Tls, timeout: Duration) -> Config {
    Config {
        protocol,
        address: address.to_string(),
        credentials: Credentials { username: USER.into(), password: password.into() },
        tls,
        timeout,
    }
}

fn client(protocol: Protocol, address: &str, tls: Tls) -> Client {
    Client::new(config(protocol, address, PASSWORD, tls, Duration::from_secs(30))).unwrap()
}

/// Serves `body` at any path, `count` times, on a loopback port: the ISO
/// sushy-tools downloads for virtual media.
fn serve_file(body: Vec<u8>, count: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(count) {
            let Ok(mut stream) = stream else { continue };
            read_request(&mut stream);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    format!("http://127.0.0.1:{port}/boot.iso")
}

fn read_request(stream: &mut std::net::TcpStream) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// A BMC that answers every request with `status` and `body`.
fn answering_bmc(status: &'static str, body: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            read_request(&mut stream);
            let _ = stream.write_all(
                format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        }
    });
    format!("http://127.0.0.1:{port}")
}

#[tokio::test(flavor = "multi_thread")]
async fn redfish_over_tls_drives_a_libvirt_domain() {
    let mut lab = Lab::start().unwrap();
    lab.define_domain("node1").unwrap();
    let (ca, cert, key) = bmc_lab::test_ca_and_server_cert();
    let url = lab.start_sushy(bmc_lab::free_port(), USER, PASSWORD, Some((&cert, &key))).unwrap();
    assert!(url.starts_with("https://"));
    let bmc = client(Protocol::Redfish, &url, Tls::Ca(ca.clone()));

    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
    assert_eq!(lab.domstate("node1"), "shut off");

    // One-time PXE in UEFI mode: the NIC comes first in the boot order.
    let boot =
        bmc.set_boot(BootOverride { device: BootDevice::Pxe, once: true, mode: Some(BootMode::Uefi) }).await.unwrap();
    assert_eq!(boot.target.as_deref(), Some("Pxe"));
    assert_eq!(boot.mode.as_deref(), Some("UEFI"));
    let xml = lab.dumpxml("node1");
    let nic = &xml[xml.find("<interface").unwrap()..xml.find("</interface>").unwrap()];
    assert!(nic.contains("<boot order='1'/>"), "NIC is not first to boot:\n{xml}");

    // Disk, every boot: the disk comes first and the NIC loses its place.
    bmc.set_boot(BootOverride { device: BootDevice::Disk, once: false, mode: None }).await.unwrap();
    let xml = lab.dumpxml("node1");
    let disk = &xml[xml.find("<disk type='file' device='disk'>").unwrap()..];
    let disk = &disk[..disk.find("</disk>").unwrap()];
    assert!(disk.contains("<boot order='1'/>"), "disk is not first to boot:\n{xml}");
    let nic = &xml[xml.find("<interface").unwrap()..xml.find("</interface>").unwrap()];
    assert!(!nic.contains("<boot order='1'/>"), "NIC still first:\n{xml}");

    // Power on: the domain runs.
    assert_eq!(bmc.power(PowerAction::On).await.unwrap(), PowerState::On);
    lab.wait_domstate("node1", "running", Duration::from_secs(20)).unwrap();
    let first = lab.domid("node1").expect("running domain has an id");

    // Cycle: a new QEMU (libvirt gives every start a new domain id).
    assert_eq!(bmc.power(PowerAction::Cycle).await.unwrap(), PowerState::On);
    lab.wait_domstate("node1", "running", Duration::from_secs(20)).unwrap();
    let second = lab.domid("node1").expect("running after cycle");
    assert_ne!(first, second, "cycle did not restart the domain");

    // Reset (ForceRestart on sushy-tools): restarted again.
    bmc.power(PowerAction::Reset).await.unwrap();
    lab.wait_domstate("node1", "running", Duration::from_secs(20)).unwrap();
    assert_ne!(lab.domid("node1"), Some(second), "reset did not restart the domain");

    // Virtual media: sushy-tools downloads the ISO and attaches it to the CD drive.
    let iso_url = serve_file(vec![0u8; 64 * 1024], 4);
    bmc.insert_media(&iso_url).await.unwrap();
    let kiln_bmc::Client::Redfish(redfish) = &bmc else { unreachable!() };
    let (image, inserted) = redfish.media_state().await.unwrap();
    assert!(inserted, "BMC reports no media");
    assert_eq!(image.as_deref(), Some(iso_url.as_str()));
    // sushy-tools changes the persistent definition (the next boot sees it).
    let xml = lab.dumpxml("node1");
    let cdrom = &xml[xml.find("device='cdrom'").unwrap()..];
    let cdrom = &cdrom[..cdrom.find("</disk>").unwrap()];
    assert!(cdrom.contains("<source file="), "no ISO in the CD drive:\n{xml}");
    bmc.eject_media().await.unwrap();
    assert!(!redfish.media_state().await.unwrap().1, "BMC still reports media after eject");

    // Off.
    assert_eq!(bmc.power(PowerAction::Off).await.unwrap(), PowerState::Off);
    lab.wait_domstate("node1", "shut off", Duration::from_secs(20)).unwrap();
    // Cycle of a machine that is off powers it on.
    assert_eq!(bmc.power(PowerAction::Cycle).await.unwrap(), PowerState::On);
    lab.wait_domstate("node1", "running", Duration::from_secs(20)).unwrap();
    bmc.power(PowerAction::Off).await.unwrap();

    // Wrong password: the documented error, naming the BMC and the step.
    let wrong =
        Client::new(config(Protocol::Redfish, &url, "nope", Tls::Ca(ca.clone()), Duration::from_secs(30))).unwrap();
    let err = wrong.power(PowerAction::On).await.unwrap_err();
    assert!(matches!(err.kind, ErrorKind::Unauthorized(_)), "{err}");
    assert_eq!(err.to_string(), format!("BMC {url}: power on: wrong credentials: HTTP 401"));
    assert_eq!(lab.domstate("node1"), "shut off", "a refused request changed the domain");

    // The test CA is not in the system roots: TLS fails, and says so.
    let err = client(Protocol::Redfish, &url, Tls::SystemRoots).power_state().await.unwrap_err();
    assert!(matches!(err.kind, ErrorKind::Tls(_)), "{err}");
    assert!(err.to_string().starts_with(&format!("BMC {url}: read power state: TLS failed:")), "{err}");
    // Explicitly insecure: works.
    assert_eq!(client(Protocol::Redfish, &url, Tls::Insecure).power_state().await.unwrap(), PowerState::Off);
}

#[tokio::test(flavor = "multi_thread")]
async fn ipmi_drives_a_libvirt_domain() {
    let mut lab = Lab::start().unwrap();
    lab.define_domain("node2").unwrap();
    let address = lab.start_vbmc("node2", bmc_lab::free_udp_port(), USER, PASSWORD).unwrap();
    let bmc = client(Protocol::Ipmi, &address, Tls::SystemRoots);

    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);

    // chassis bootdev pxe, persistent: the domain's boot order says network.
    bmc.set_boot(BootOverride { device: BootDevice::Pxe, once: false, mode: None }).await.unwrap();
    let xml = lab.dumpxml("node2");
    assert!(xml.contains("<boot dev='network'/>"), "boot order is not network:\n{xml}");
    bmc.set_boot(BootOverride { device: BootDevice::Disk, once: false, mode: None }).await.unwrap();
    let xml = lab.dumpxml("node2");
    assert!(
        xml.contains("<boot dev='hd'/>") && !xml.contains("<boot dev='network'/>"),
        "boot order is not disk:\n{xml}"
    );

    assert_eq!(bmc.power(PowerAction::On).await.unwrap(), PowerState::On);
    lab.wait_domstate("node2", "running", Duration::from_secs(20)).unwrap();
    let first = lab.domid("node2").unwrap();

    // Reset keeps QEMU (a system reset); the domain stays running.
    bmc.power(PowerAction::Reset).await.unwrap();
    assert_eq!(lab.domstate("node2"), "running");

    // Cycle: off then on, a new QEMU.
    assert_eq!(bmc.power(PowerAction::Cycle).await.unwrap(), PowerState::On);
    lab.wait_domstate("node2", "running", Duration::from_secs(20)).unwrap();
    assert_ne!(lab.domid("node2"), Some(first), "cycle did not restart the domain");

    assert_eq!(bmc.power(PowerAction::Off).await.unwrap(), PowerState::Off);
    lab.wait_domstate("node2", "shut off", Duration::from_secs(20)).unwrap();

    // HTTP boot does not exist in IPMI; virtual media neither.
    let err = bmc.set_boot(BootOverride { device: BootDevice::Http, once: true, mode: None }).await.unwrap_err();
    assert!(matches!(err.kind, ErrorKind::Unsupported(_)), "{err}");
    assert!(matches!(bmc.insert_media("http://x/y.iso").await.unwrap_err().kind, ErrorKind::Unsupported(_)));

    // Wrong password, then wrong user: refused, named.
    let wrong =
        Client::new(config(Protocol::Ipmi, &address, "nope", Tls::SystemRoots, Duration::from_secs(5))).unwrap();
    let err = wrong.power(PowerAction::On).await.unwrap_err();
    assert!(matches!(err.kind, ErrorKind::Unauthorized(_)), "{err}");
    assert!(err.to_string().starts_with(&format!("BMC {address}: power on: wrong credentials:")), "{err}");
    let mut bad_user = config(Protocol::Ipmi, &address, PASSWORD, Tls::SystemRoots, Duration::from_secs(5));
    bad_user.credentials.username = "nobody".into();
    let err = Client::new(bad_user).unwrap().power_state().await.unwrap_err();
    assert!(matches!(err.kind, ErrorKind::Unauthorized(_)), "{err}");
    assert_eq!(lab.domstate("node2"), "shut off", "a refused session changed the domain");
}

#[tokio::test(flavor = "multi_thread")]
async fn misbehaving_bmcs_give_the_documented_errors() {
    let quick = Duration::from_secs(2);

    // Nothing listening: unreachable, at once.
    let closed = bmc_lab::free_port();
    let address = format!("http://127.0.0.1:{closed}");
    let err = Client::new(config(Protocol::Redfish, &address, PASSWORD, Tls::SystemRoots, quick))
        .unwrap()
        .power_state()
        .await
        .unwrap_err();
    assert!(matches!(err.kind, ErrorKind::Unreachable(_)), "{err}");
    assert!(err.to_string().starts_with(&format!("BMC {address}: read power state: unreachable:")), "{err}");

    // Accepts the connection and never answers: a timeout, bounded.
    let hung = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("http://{}", hung.local_addr().unwrap());
    let held = std::thread::spawn(move || hung.incoming().take(4).filter_map(|s| s.ok()).collect::<Vec<_>>());
    let started = Instant::now();
    let err = Client::new(config(Protocol::Redfish, &address, PASSWORD, Tls::SystemRoots, quick))
        .unwrap()
        .power(PowerAction::On)
        .await
        .unwrap_err();
    assert!(matches!(err.kind, ErrorKind::Timeout(_)), "{err}");
    assert_eq!(err.to_string(), format!("BMC {address}: power on: timed out: no answer within 2s"));
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    drop(held);

    // 500 with a Redfish error body: a server error carrying the BMC's message.
    let address = answering_bmc(
        "500 Internal Server Error",
        r#"{"error":{"code":"Base.1.0.GeneralError","message":"power controller on fire"}}"#,
    );
    let err = Client::new(config(Protocol::Redfish, &address, PASSWORD, Tls::SystemRoots, quick))
        .unwrap()
        .power_state()
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::ServerError { status: 500, message: "power controller on fire".into() });
    assert!(err.kind.is_transient());
    assert_eq!(
        err.to_string(),
        format!("BMC {address}: read power state: BMC failed the request: HTTP 500: power controller on fire")
    );

    // 200 with something that is not JSON: garbage.
    let address = answering_bmc("200 OK", "<html>welcome to the BMC</html>");
    let err = Client::new(config(Protocol::Redfish, &address, PASSWORD, Tls::SystemRoots, quick))
        .unwrap()
        .power_state()
        .await
        .unwrap_err();
    assert!(matches!(err.kind, ErrorKind::Garbage(_)), "{err}");
    assert!(!err.kind.is_transient());

    // JSON without the fields Redfish requires: garbage, saying which.
    let address = answering_bmc("200 OK", r#"{"hello":"world"}"#);
    let err = Client::new(config(Protocol::Redfish, &address, PASSWORD, Tls::SystemRoots, quick))
        .unwrap()
        .power_state()
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Garbage("service root has no Systems link".into()));

    // IPMI: a UDP port that swallows everything: a timeout, bounded.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let address = silent.local_addr().unwrap().to_string();
    let started = Instant::now();
    let err = Client::new(config(Protocol::Ipmi, &address, PASSWORD, Tls::SystemRoots, quick))
        .unwrap()
        .power_state()
        .await
        .unwrap_err();
    assert!(matches!(err.kind, ErrorKind::Timeout(_)), "{err}");
    assert!(err.to_string().starts_with(&format!("BMC {address}: read power state: timed out")), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());

    // IPMI: nothing bound on the port (loopback answers ICMP port unreachable).
    let address = format!("127.0.0.1:{}", bmc_lab::free_udp_port());
    let err = Client::new(config(Protocol::Ipmi, &address, PASSWORD, Tls::SystemRoots, quick))
        .unwrap()
        .power_state()
        .await
        .unwrap_err();
    assert!(matches!(err.kind, ErrorKind::Unreachable(_)), "{err}");
}

fn indent(text: &str, by: &str) -> String {
    text.lines().map(|l| format!("{by}{l}\n")).collect()
}

fn kiln_ok(cluster: &kiln_tests::Cluster, args: &[&str]) -> String {
    let out = cluster.kiln(args);
    assert!(out.status.success(), "kiln {args:?} failed: {}\n{}", kiln_tests::stderr(&out), cluster.logs());
    kiln_tests::stdout(&out)
}

/// Everything through the CLI and the server: a Hardware with a bmc:
/// section and a BmcSecret applied, `kiln power` and `kiln boot` drive the
/// domain through sushy-tools (HTTPS, basic auth, the test CA), `kiln
/// describe hardware` shows the last reading, the password is nowhere to
/// be read back, and applying the secret again rotates it.
#[tokio::test(flavor = "multi_thread")]
async fn cli_power_and_boot_through_the_server() {
    let mut lab = Lab::start().unwrap();
    lab.define_domain("node3").unwrap();
    let (ca, cert, key) = bmc_lab::test_ca_and_server_cert();
    let url = lab.start_sushy(bmc_lab::free_port(), USER, PASSWORD, Some((&cert, &key))).unwrap();
    let cluster = kiln_tests::Cluster::start().unwrap();
    let secret = |password: &str| format!("kind: BmcSecret\nname: node3-bmc\nusername: {USER}\npassword: {password}\n");
    let hardware = format!(
        "kind: Hardware\nname: node3\nmacs: [\"52:54:00:00:03:01\"]\nbmc:\n  address: {url}\n  protocol: redfish\n  credentials: node3-bmc\n  tls:\n    ca: |\n{}",
        indent(&ca, "      ")
    );
    let applied = cluster.apply(&format!("{hardware}---\n{}", secret(PASSWORD)));
    assert!(
        applied.contains("hardware/node3 created\n") && applied.contains("bmcsecret/node3-bmc created\n"),
        "{applied}"
    );
    assert!(!applied.contains(PASSWORD), "apply printed the password: {applied}");

    let described = kiln_ok(&cluster, &["describe", "hardware", "node3"]);
    assert!(described.contains("power_state: unknown"), "{described}");

    let out = kiln_ok(&cluster, &["power", "status", "node3"]);
    assert!(out.starts_with("hardware/node3: power off (read from the BMC at "), "{out}");
    let out = kiln_ok(&cluster, &["power", "on", "node3"]);
    assert!(out.starts_with("hardware/node3: power on"), "{out}");
    lab.wait_domstate("node3", "running", Duration::from_secs(20)).unwrap();
    let described = kiln_ok(&cluster, &["describe", "hardware", "node3"]);
    assert!(described.contains("power_state: on") && described.contains("power_read_at: "), "{described}");
    assert!(described.contains(&format!("address: {url}")) && !described.contains(PASSWORD), "{described}");
    let listed: serde_json::Value =
        serde_json::from_str(&kiln_ok(&cluster, &["get", "hardware", "-o", "json"])).unwrap();
    assert_eq!(listed[0]["bmc"]["power_state"], "on", "{listed}");

    let out = kiln_ok(&cluster, &["boot", "node3", "--device", "pxe", "--once", "--uefi"]);
    assert!(out.contains("BMC reports target Pxe"), "{out}");
    let xml = lab.dumpxml("node3");
    let nic = &xml[xml.find("<interface").unwrap()..xml.find("</interface>").unwrap()];
    assert!(nic.contains("<boot order='1'/>"), "NIC is not first to boot:\n{xml}");

    // Virtual media: the ISO is in the domain's CD drive, then gone.
    let iso_url = serve_file(vec![0u8; 64 * 1024], 4);
    let out = kiln_ok(&cluster, &["media", "insert", "node3", &iso_url]);
    assert_eq!(out, format!("hardware/node3: virtual CD holds {iso_url}\n"));
    let xml = lab.dumpxml("node3");
    let cdrom = &xml[xml.find("device='cdrom'").unwrap()..];
    assert!(cdrom[..cdrom.find("</disk>").unwrap()].contains("<source file="), "no ISO in the CD drive:\n{xml}");
    assert_eq!(kiln_ok(&cluster, &["media", "eject", "node3"]), "hardware/node3: virtual CD empty\n");
    let out = cluster.kiln(&["media", "insert", "node3", "ftp://x/y.iso"]);
    assert!(kiln_tests::stderr(&out).contains("must be an http:// or https:// URL"), "{}", kiln_tests::stderr(&out));

    let before = lab.domid("node3");
    kiln_ok(&cluster, &["power", "cycle", "node3"]);
    lab.wait_domstate("node3", "running", Duration::from_secs(20)).unwrap();
    assert_ne!(lab.domid("node3"), before, "cycle did not restart the domain");
    let out = kiln_ok(&cluster, &["power", "off", "node3"]);
    assert!(out.starts_with("hardware/node3: power off"), "{out}");
    lab.wait_domstate("node3", "shut off", Duration::from_secs(20)).unwrap();

    // Rotation: a wrong password applied again replaces the old one...
    assert_eq!(cluster.apply(&secret("not-the-password")), "bmcsecret/node3-bmc updated\n");
    let out = cluster.kiln(&["power", "on", "node3"]);
    assert!(!out.status.success());
    let err = kiln_tests::stderr(&out);
    assert!(err.contains(&format!("hardware \"node3\": BMC {url}: power on: wrong credentials: HTTP 401")), "{err}");
    assert_eq!(lab.domstate("node3"), "shut off");
    // ...and the right one again works.
    cluster.apply(&secret(PASSWORD));
    kiln_ok(&cluster, &["power", "status", "node3"]);

    // A BMC without TLS verification is applied with a warning.
    let insecure =
        hardware.replace("  tls:\n    ca: |\n", "  tls:\n    insecure: true\n").replace(&indent(&ca, "      "), "");
    let out = cluster.kiln_with_stdin(&["apply", "-f", "-"], Some(&insecure));
    assert!(out.status.success(), "{}", kiln_tests::stderr(&out));
    let warned = format!("{}{}", kiln_tests::stdout(&out), kiln_tests::stderr(&out));
    assert!(warned.contains("bmc.tls.insecure: true"), "{warned}");

    // The password is not in the store, the server's log, the audit trail
    // or anything the CLI prints.
    let data = cluster.dir.path().join("data");
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            assert!(!bytes.windows(PASSWORD.len()).any(|w| w == PASSWORD.as_bytes()), "password in {}", path.display());
        }
    }
    assert!(!cluster.logs().contains(PASSWORD), "password in the server log");
    let everything =
        [kiln_ok(&cluster, &["get", "hardware", "node3", "-o", "yaml"]), kiln_ok(&cluster, &["events", "-o", "json"])]
            .concat();
    assert!(!everything.contains(PASSWORD), "password printed: {everything}");
    assert!(everything.contains("power on"), "power actions are audited: {everything}");
}

fn jobs(cluster: &kiln_tests::Cluster) -> Vec<serde_json::Value> {
    serde_json::from_str(&kiln_ok(cluster, &["get", "bmc-jobs", "-o", "json"])).expect("bmc-jobs JSON")
}

fn wait_job(cluster: &kiln_tests::Cluster, id: &str, limit: Duration) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let job = jobs(cluster).into_iter().find(|j| j["id"] == id).expect("job listed");
        if job["state"] == "succeeded" || job["state"] == "failed" {
            return job;
        }
        assert!(start.elapsed() < limit, "job still {} after {limit:?}: {job}\n{}", job["state"], cluster.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// BMC operations as durable jobs: a submission with a key is idempotent,
/// the job runs in the background and changes the domain, and one against
/// a BMC that keeps failing with 500 is retried with backoff until it
/// fails with the BMC's reason.
#[tokio::test(flavor = "multi_thread")]
async fn bmc_jobs_are_idempotent_retried_and_visible() {
    let mut lab = Lab::start().unwrap();
    lab.define_domain("node4").unwrap();
    let url = lab.start_sushy(bmc_lab::free_port(), USER, PASSWORD, None).unwrap();
    let failing = answering_bmc("500 Internal Server Error", r#"{"error":{"message":"controller busy"}}"#);
    let cluster = kiln_tests::Cluster::start().unwrap();
    let hw = |name: &str, address: &str| {
        format!(
            "kind: Hardware\nname: {name}\nmacs: [\"{}\"]\nbmc:\n  address: {address}\n  protocol: redfish\n  credentials: lab-bmc\n---\n",
            if name == "node4" { "52:54:00:00:04:01" } else { "52:54:00:00:04:02" }
        )
    };
    cluster.apply(&format!(
        "{}{}kind: BmcSecret\nname: lab-bmc\nusername: {USER}\npassword: {PASSWORD}\n",
        hw("node4", &url),
        hw("broken", &failing)
    ));

    let out = kiln_ok(&cluster, &["power", "on", "node4", "--job", "--key", "first-boot"]);
    assert!(out.starts_with("bmc-job/bmcjob-") && out.contains(" created: power on on hardware/node4"), "{out}");
    let id = out["bmc-job/".len()..].split(' ').next().unwrap().to_string();
    let again = kiln_ok(&cluster, &["power", "on", "node4", "--job", "--key", "first-boot"]);
    assert!(again.starts_with(&format!("bmc-job/{id} unchanged")), "{again}");
    // The same key for another operation is refused.
    let out = cluster.kiln(&["power", "off", "node4", "--job", "--key", "first-boot"]);
    assert!(!out.status.success() && kiln_tests::stderr(&out).contains("is job"), "{}", kiln_tests::stderr(&out));

    let job = wait_job(&cluster, &id, Duration::from_secs(30));
    assert_eq!(
        (job["state"].as_str(), job["result"].as_str(), job["attempts"].as_u64()),
        (Some("succeeded"), Some("on"), Some(1)),
        "{job}"
    );
    lab.wait_domstate("node4", "running", Duration::from_secs(20)).unwrap();
    assert!(kiln_ok(&cluster, &["describe", "hardware", "node4"]).contains("power_state: on"));

    // A boot job reports what the BMC read back.
    let out = kiln_ok(&cluster, &["boot", "node4", "--device", "pxe", "--once", "--job"]);
    let boot_id = out["bmc-job/".len()..].split(' ').next().unwrap().to_string();
    let job = wait_job(&cluster, &boot_id, Duration::from_secs(30));
    assert_eq!(job["result"], "target Pxe", "{job}");
    assert_eq!(job["operation"], "boot pxe once", "{job}");

    // 500 every time: 5 attempts 1 + 2 + 4 + 8 s apart, then failed with the BMC's message.
    let started = Instant::now();
    let out = kiln_ok(&cluster, &["power", "cycle", "broken", "--job"]);
    let failing_id = out["bmc-job/".len()..].split(' ').next().unwrap().to_string();
    let job = wait_job(&cluster, &failing_id, Duration::from_secs(60));
    assert_eq!((job["state"].as_str(), job["attempts"].as_u64()), (Some("failed"), Some(5)), "{job}");
    assert!(job["error"].as_str().unwrap().contains("HTTP 500: controller busy"), "{job}");
    assert!(started.elapsed() >= Duration::from_secs(15), "retried without backoff: {:?}", started.elapsed());
    let table = kiln_ok(&cluster, &["get", "bmc-jobs"]);
    assert!(table.contains(&failing_id) && table.contains("failed"), "{table}");

    // A job for a hardware without a BMC is refused at once.
    cluster.apply("kind: Hardware\nname: plain\nmacs: [\"52:54:00:00:04:03\"]\n");
    let out = cluster.kiln(&["power", "on", "plain", "--job"]);
    assert!(kiln_tests::stderr(&out).contains("has no bmc section"), "{}", kiln_tests::stderr(&out));
}

/// Power-cycles `n` fake BMCs with one job each through `servers` (one
/// server, or replicas sharing a store) and returns how long until all
/// jobs succeeded; asserts every machine was cycled exactly once.
async fn cycle_all(n: usize, servers: &[&kiln_tests::sim::BenchServer], fake: &bmc_lab::FakeRedfish) -> Duration {
    use kiln_proto::v1::{ApplyRequest, BmcJobRequest, ListBmcJobsRequest};
    let mut yaml = String::from("kind: BmcSecret\nname: fake\nusername: u\npassword: p\n");
    for i in 0..n {
        yaml.push_str(&format!(
            "---\nkind: Hardware\nname: m{i}\nmacs: [\"52:54:01:{:02x}:{:02x}:01\"]\nbmc:\n  address: {}/redfish/v1/Systems/{i}\n  protocol: redfish\n  credentials: fake\n",
            i / 256,
            i % 256,
            fake.url
        ));
    }
    let mut admin = servers[0].admin().await.unwrap();
    admin.apply(ApplyRequest { yaml, source: "scale".into() }).await.unwrap();
    let started = Instant::now();
    let mut submits = tokio::task::JoinSet::new();
    for i in 0..n {
        let mut admin = servers[i % servers.len()].admin().await.unwrap();
        submits.spawn(async move {
            let request = BmcJobRequest {
                hardware: format!("m{i}"),
                power_action: "cycle".into(),
                key: format!("cycle-m{i}"),
                ..Default::default()
            };
            admin.submit_bmc_job(request).await.unwrap();
        });
    }
    submits.join_all().await;
    loop {
        let jobs = admin.list_bmc_jobs(ListBmcJobsRequest { limit: n as u32 + 10 }).await.unwrap().into_inner().items;
        let failed: Vec<_> = jobs.iter().filter(|j| j.state == "failed").collect();
        assert!(failed.is_empty(), "failed jobs: {failed:?}");
        if jobs.len() == n && jobs.iter().all(|j| j.state == "succeeded") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(600), "jobs not done after 10 min");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let elapsed = started.elapsed();
    let resets = fake.resets.lock().unwrap().clone();
    let wrong: Vec<_> = resets.iter().enumerate().filter(|(_, r)| **r != 1).collect();
    assert!(wrong.is_empty(), "machines not cycled exactly once (index, resets): {wrong:?}");
    elapsed
}

/// Scale: `KILN_TEST_BMC_SCALE` (default 100) BMCs, each power-cycled by
/// one job, with one server; each BMC takes 200 ms for a reset. Prints the
/// time until all are done (docs/bmc.md has the measured figures).
#[tokio::test(flavor = "multi_thread")]
async fn many_bmcs_are_power_cycled_by_one_server() {
    use kiln_tests::sim::{BenchServer, StoreKind};
    let n: usize = std::env::var("KILN_TEST_BMC_SCALE").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let fake = bmc_lab::FakeRedfish::start(n, Duration::from_millis(200));
    let server = BenchServer::start(&kiln_tests::bin_dir(), StoreKind::Sqlite, true, "kiln-bmc-scale-").unwrap();
    let elapsed = cycle_all(n, &[&server], &fake).await;
    println!("{n} BMCs power-cycled by one server (SQLite) in {elapsed:.1?}");
}

/// Two servers sharing a PostgreSQL store: jobs submitted to either are
/// run once each (every machine reset exactly once), and both run some.
#[tokio::test(flavor = "multi_thread")]
async fn replicas_never_run_a_bmc_job_twice() {
    use kiln_tests::sim::{BenchServer, StoreKind};
    let n = 60;
    let fake = bmc_lab::FakeRedfish::start(n, Duration::from_millis(100));
    let pg = kiln_tests::postgres::PgServer::shared().unwrap();
    let url = pg.create_database().unwrap();
    let key_dir = tempfile::tempdir().unwrap();
    let key_file = key_dir.path().join("bmc.key");
    std::fs::write(&key_file, "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=").unwrap();
    let args = ["--database-url".to_string(), url, "--bmc-secret-key-file".into(), key_file.display().to_string()];
    let a = BenchServer::start_with(&kiln_tests::bin_dir(), StoreKind::Sqlite, true, "kiln-bmc-a-", &args).unwrap();
    let b = BenchServer::start_with(&kiln_tests::bin_dir(), StoreKind::Sqlite, true, "kiln-bmc-b-", &args).unwrap();
    let elapsed = cycle_all(n, &[&a, &b], &fake).await;
    let ran = |s: &BenchServer| {
        std::fs::read_to_string(s.dir.path().join("server.log")).unwrap().matches("BMC job done").count()
    };
    let (by_a, by_b) = (ran(&a), ran(&b));
    assert_eq!(by_a + by_b, n, "jobs done: {by_a} + {by_b}");
    assert!(by_a > 0 && by_b > 0, "one replica ran every job: {by_a} / {by_b}");
    println!("{n} BMCs power-cycled by two replicas (PostgreSQL) in {elapsed:.1?}: {by_a} + {by_b}");
}

/// A server killed (SIGKILL) while running a BMC job runs it again as soon
/// as it is back, not when the job's 5-minute lease runs out.
#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_server_resumes_its_bmc_jobs() {
    let fake = bmc_lab::FakeRedfish::start(1, Duration::from_secs(3));
    let mut cluster = kiln_tests::Cluster::start().unwrap();
    cluster.apply(&format!(
        "kind: Hardware\nname: slow\nmacs: [\"52:54:00:00:05:01\"]\nbmc:\n  address: {}/redfish/v1/Systems/0\n  protocol: redfish\n  credentials: s\n---\nkind: BmcSecret\nname: s\nusername: u\npassword: p\n",
        fake.url
    ));
    let out = kiln_ok(&cluster, &["power", "cycle", "slow", "--job"]);
    let id = out["bmc-job/".len()..].split(' ').next().unwrap().to_string();
    let start = Instant::now();
    while jobs(&cluster).iter().find(|j| j["id"] == id.as_str()).unwrap()["state"] != "running" {
        assert!(start.elapsed() < Duration::from_secs(20), "job never ran");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The Reset is in flight (the fake takes 3 s): kill the server now.
    std::thread::sleep(Duration::from_millis(500));
    cluster.restart_server(&[]).unwrap();
    let restarted = Instant::now();
    let job = wait_job(&cluster, &id, Duration::from_secs(30));
    assert_eq!((job["state"].as_str(), job["attempts"].as_u64()), (Some("succeeded"), Some(2)), "{job}");
    assert!(restarted.elapsed() < Duration::from_secs(30), "resumed only after {:?}", restarted.elapsed());
    assert!(cluster.logs().contains("BMC jobs this server was running when it stopped are due again"));
    // The interrupted Reset may have reached the BMC too: at least one, at most two.
    let resets = fake.resets.lock().unwrap()[0];
    assert!((1..=2).contains(&resets), "{resets} resets");
}

/// Workflow boot options carried out through the BMC: applying a workflow
/// with `boot_options` for a machine that is off sets its one-time PXE
/// boot and powers it on (sushy-tools, a real libvirt domain) before the
/// agent gets the first action; after SUCCESS the machine is powered off.
/// `kiln get bmc-jobs` and `kiln describe workflow` show both steps. A
/// workflow whose BMC rejects the credentials fails naming the step and
/// the BMC.
#[tokio::test(flavor = "multi_thread")]
async fn workflow_boot_options_drive_the_machine_through_its_bmc() {
    let mut lab = Lab::start().unwrap();
    lab.define_domain("node5").unwrap();
    let url = lab.start_sushy(bmc_lab::free_port(), USER, PASSWORD, None).unwrap();
    let rejecting = answering_bmc("401 Unauthorized", r#"{"error":{"message":"bad credentials"}}"#);
    let mut cluster = kiln_tests::Cluster::start().unwrap();
    let (mac, other_mac) = (kiln_tests::random_mac(), kiln_tests::random_mac());
    let image = cluster.env.busybox();
    let hardware = |name: &str, mac: &str, address: &str| {
        format!(
            "kind: Hardware\nname: {name}\nmacs: [\"{mac}\"]\nbmc:\n  address: {address}\n  protocol: redfish\n  credentials: lab-bmc\n---\n"
        )
    };
    let template = format!(
        "kind: Template\nname: install\ndata: |\n  version: \"0.1\"\n  name: install\n  global_timeout: 600\n  tasks:\n    - name: provision\n      worker: \"{{{{.device_1}}}}\"\n      actions:\n        - name: install\n          image: {image}\n          timeout: 60\n          command: [\"sh\", \"-c\", \"echo installed\"]\n---\n"
    );
    let workflow = |name: &str, hw: &str, mac: &str| {
        format!(
            "kind: Workflow\nname: {name}\ntemplate: install\nhardware: {hw}\nhardware_map: {{device_1: \"{mac}\"}}\nboot_options: {{network_boot: pxe, power_cycle: true, after_success: off}}\n---\n"
        )
    };
    cluster.apply(&format!(
        "{}{}{template}kind: BmcSecret\nname: lab-bmc\nusername: {USER}\npassword: {PASSWORD}\n",
        hardware("node5", &mac, &url),
        hardware("locked", &other_mac, &rejecting),
    ));
    assert_eq!(lab.domstate("node5"), "shut off");

    // The agent runs from the start: it must get nothing until the BMC
    // start step succeeded.
    cluster.start_agent(&mac, "").unwrap();
    let applied = cluster.apply(&workflow("wf-node5", "node5", &mac));
    assert!(applied.contains("workflow/wf-node5 created"), "{applied}");
    lab.wait_domstate("node5", "running", Duration::from_secs(30)).unwrap();
    let xml = lab.dumpxml("node5");
    let nic = &xml[xml.find("<interface").unwrap()..xml.find("</interface>").unwrap()];
    assert!(nic.contains("<boot order='1'/>"), "NIC is not first to boot:\n{xml}");

    let wf = cluster.wait_finished("wf-node5", Duration::from_secs(120));
    assert_eq!(wf["state"], "SUCCESS", "{wf}\n{}", cluster.logs());
    lab.wait_domstate("node5", "shut off", Duration::from_secs(30)).unwrap();

    let steps: Vec<serde_json::Value> = jobs(&cluster)
        .into_iter()
        .filter(|j| j["key"].as_str().unwrap_or("").starts_with("workflow/wf-node5/"))
        .collect();
    let step = |name: &str| {
        steps.iter().find(|j| j["key"] == format!("workflow/wf-node5/{name}")).unwrap_or_else(|| panic!("{steps:?}"))
    };
    assert_eq!(
        (step("start")["operation"].as_str(), step("start")["state"].as_str()),
        (Some("start pxe cycle"), Some("succeeded"))
    );
    assert!(step("start")["result"].as_str().unwrap().contains("pxe once, power on"), "{steps:?}");
    let finish = wait_job(&cluster, step("finish")["id"].as_str().unwrap(), Duration::from_secs(30));
    assert_eq!((finish["operation"].as_str(), finish["state"].as_str()), (Some("power off"), Some("succeeded")));
    // The first action started only after the start step ended.
    let started = wf["actions"][0]["attempts"][0]["created_at"].as_str().unwrap().to_string();
    let start_done = step("start")["updated_at"].as_str().unwrap().to_string();
    assert!(started >= start_done, "action at {started} before the BMC start step ended at {start_done}");
    let described = kiln_ok(&cluster, &["describe", "workflow", "wf-node5"]);
    assert!(described.contains("bmc steps:\n  start: start pxe cycle  succeeded"), "{described}");
    assert!(described.contains("  finish: power off  succeeded"), "{described}");
    let table = kiln_ok(&cluster, &["get", "bmc-jobs"]);
    assert!(table.contains("wf-node5 (start)") && table.contains("wf-node5 (finish)"), "{table}");
    // `kiln watch` shows the steps like actions, and follows the finishing
    // step to its end (it may still run when the workflow has succeeded).
    let watched = kiln_ok(&cluster, &["watch", "wf-node5"]);
    assert!(watched.contains("bmc start (start pxe cycle) SUCCEEDED after"), "{watched}");
    assert!(watched.contains("bmc finish (power off) SUCCEEDED after"), "{watched}");
    assert!(watched.contains("workflow wf-node5 SUCCESS in"), "{watched}");

    // A BMC that rejects the credentials fails the workflow, saying which.
    cluster.apply(&workflow("wf-locked", "locked", &other_mac));
    let wf = cluster.wait_finished("wf-locked", Duration::from_secs(60));
    assert_eq!(wf["state"], "FAILED", "{wf}");
    let reason = wf["reason"].as_str().unwrap();
    assert!(
        reason.contains("BMC step start") && reason.contains("hardware \"locked\"") && reason.contains(&rejecting),
        "{reason}"
    );
    assert!(wf["actions"][0]["attempts"].as_array().is_none_or(Vec::is_empty), "an action ran: {wf}");

    // Once the BMC is fixed, `kiln retry` runs the failed start step again
    // (the failed job stays listed under another key), then the workflow.
    cluster.apply(&hardware("locked", &other_mac, &url));
    cluster.start_agent(&other_mac, "").unwrap();
    kiln_ok(&cluster, &["retry", "wf-locked"]);
    let wf = cluster.wait_finished("wf-locked", Duration::from_secs(120));
    assert_eq!(wf["state"], "SUCCESS", "{wf}\n{}", cluster.logs());
    let watched = kiln_ok(&cluster, &["watch", "wf-locked"]);
    assert!(watched.contains("bmc start (earlier run) (start pxe cycle) FAILED"), "{watched}");
    assert!(watched.contains("bmc start (start pxe cycle) SUCCEEDED"), "{watched}");
    assert!(watched.contains("bmc finish (power off) SUCCEEDED"), "{watched}");
    lab.wait_domstate("node5", "shut off", Duration::from_secs(30)).unwrap();

    // Boot options for a hardware without a BMC are refused at apply.
    cluster.apply(&kiln_tests::hardware_doc("plain", "52:54:00:00:05:09"));
    let out = cluster.kiln_with_stdin(&["apply", "-f", "-"], Some(&workflow("wf-plain", "plain", "52:54:00:00:05:09")));
    assert!(!out.status.success());
    assert!(kiln_tests::stderr(&out).contains("field boot_options"), "{}", kiln_tests::stderr(&out));
}
