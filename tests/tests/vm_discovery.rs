//! Issue 13's proof on a real machine: a QEMU VM that kiln has no Hardware
//! for, with two virtio disks (the wrong one first), network-boots the
//! hook image from a server with `--discovery`; its agent enrols with its
//! boot script's one-time credential and reports both disks; a Rule
//! matches it by that inventory, adopts it and gives it a workflow whose
//! template picks the data disk by a disk hint (`{{ disk (dict "serial"
//! "kiln-data") }}`), and the action writes a marker to the disk the hint
//! resolved. The test reads both disk images: the marker on the right one,
//! nothing on the other. The boot script passed through a recording proxy
//! (as iPXE fetched it); the credential it carried is refused when
//! replayed, and the refusal is in `kiln events`.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiln_proto::connect::{ClientTls, endpoint};
use kiln_proto::v1::EnrolRequest;
use kiln_proto::v1::enrolment_service_client::EnrolmentServiceClient;
use kiln_tests::vm::{accelerator, hook_dir};
use kiln_tests::{Cluster, TestEnv, has_line, image_prefix, stderr, stdout, unique, wait_until};
use serde_json::Value;
use tonic::Code;

/// The guest reaches the host's loopback here (QEMU user networking).
const HOST_FROM_GUEST: &str = "10.0.2.2";
const MAC: &str = "52:54:00:4b:44:31";
/// The first disk the kernel probes (vda): not the one to provision.
const SCRATCH_SERIAL: &str = "kiln-scratch";
const SCRATCH_BYTES: u64 = 64 << 20;
/// The second (vdb): the rule's template picks it by its serial.
const DATA_SERIAL: &str = "kiln-data";
const DATA_BYTES: u64 = 96 << 20;
const MARKER: &[u8] = b"kiln-marker\n";
/// The whole scenario, QEMU start to workflow end (TCG on a shared machine).
const LIMIT: Duration = Duration::from_secs(200);

/// Forwards the VM's HTTP connections to the server's netboot listener and
/// keeps the first bytes of each response: the boot script iPXE fetched,
/// with its one-time credential, which the server never shows again.
struct RecordingProxy {
    port: u16,
    responses: Arc<Mutex<Vec<u8>>>,
}

/// Bytes kept per connection: the script comes first; the kernel and
/// initramfs that may follow on the same connection need not be kept.
const RECORDED_PER_CONNECTION: usize = 64 << 10;

impl RecordingProxy {
    fn start(upstream: u16) -> RecordingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy listen");
        let port = listener.local_addr().unwrap().port();
        let responses = Arc::new(Mutex::new(Vec::new()));
        let record = responses.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else { continue };
                let (client_in, server_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || copy(client_in, server_out, None));
                let record = record.clone();
                std::thread::spawn(move || copy(server, client, Some(record)));
            }
        });
        RecordingProxy { port, responses }
    }

    /// The `kiln.enrol=` credentials of the scripts that passed, in order.
    fn credentials(&self) -> Vec<String> {
        let text = String::from_utf8_lossy(&self.responses.lock().unwrap()).into_owned();
        text.split_whitespace().filter_map(|w| w.strip_prefix("kiln.enrol=")).map(str::to_string).collect()
    }
}

fn copy(mut from: TcpStream, mut to: TcpStream, record: Option<Arc<Mutex<Vec<u8>>>>) {
    let mut buf = [0u8; 16 << 10];
    let mut kept = 0;
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || to.write_all(&buf[..n]).is_err() {
            break;
        }
        if let Some(record) = &record
            && kept < RECORDED_PER_CONNECTION
        {
            let take = n.min(RECORDED_PER_CONNECTION - kept);
            record.lock().unwrap().extend_from_slice(&buf[..take]);
            kept += take;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn json(c: &Cluster, args: &[&str]) -> Value {
    let out = c.kiln(args);
    assert!(out.status.success(), "kiln {args:?}: {}\n{}", stderr(&out), c.logs());
    serde_json::from_str(&stdout(&out)).unwrap_or_else(|e| panic!("kiln {args:?}: {e}: {}", stdout(&out)))
}

fn disk_image(dir: &Path, name: &str, bytes: u64) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::File::create(&path).unwrap().set_len(bytes).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_vm_is_discovered_adopted_by_a_rule_and_provisioned_onto_the_disk_its_hint_picks() {
    let env = TestEnv::from_env();
    let hook = hook_dir();
    for f in [hook.join("vmlinuz"), hook.join("initramfs.img")] {
        assert!(f.exists(), "{} is missing: build it with hook-image/build.sh", f.display());
    }
    let reg_port = env.registry.rsplit(':').next().expect("registry port");
    let guest_registry = format!("{HOST_FROM_GUEST}:{reg_port}");
    let cmdline = format!("console=ttyS0 quiet panic=-1 kiln.console_log=1 kiln.insecure_registries={guest_registry}");
    let mut c = Cluster::start_with(&["--hook-dir", hook.to_str().unwrap(), "--discovery"]).expect("server");
    let tls_port = c.server_url.rsplit(':').next().expect("server port").to_string();
    let netboot = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    c.restart_server(&[
        "--netboot-listen",
        &format!("127.0.0.1:{netboot}"),
        "--public-url",
        &format!("https://{HOST_FROM_GUEST}:{tls_port}"),
        "--hook-cmdline",
        &cmdline,
    ])
    .expect("server restart");

    // What the operator applies before any machine arrives: a template
    // that writes to the disk the hint picks (whatever its kernel name),
    // and a rule that adopts a machine with such a disk and runs it.
    let (tpl, rule) = (unique("data-disk"), unique("two-disks"));
    let busybox = format!("{guest_registry}/{}/busybox:v1", image_prefix());
    c.apply(&format!(
        r#"kind: Template
name: {tpl}
data: |
  version: "0.1"
  name: {tpl}
  tasks:
    - name: provision
      worker: "{{{{.device_1}}}}"
      actions:
        - name: write-marker
          image: {busybox}
          timeout: 120
          environment: {{DEST: '{{{{ disk (dict "serial" "{DATA_SERIAL}") }}}}'}}
          command: [sh, -c, "echo DEST=$DEST; echo kiln-marker | dd of=$DEST conv=fsync"]
---
kind: Rule
name: {rule}
match: >-
  disks.exists(d, has(d.serial) && d.serial == '{DATA_SERIAL}' && d.size_bytes == 96 * MiB)
hardware_name: "vm-{{{{ .mac | replace \":\" \"\" }}}}"
metadata: {{role: data}}
workflow: {{template: {tpl}}}
"#
    ));
    let hw = format!("vm-{}", MAC.replace(':', ""));
    let discovered = format!("discovered-{}", MAC.replace(':', ""));
    assert!(!c.kiln(&["get", "hardware", &hw]).status.success(), "no Hardware before the machine boots");

    let proxy = RecordingProxy::start(netboot);
    let dir = tempfile::tempdir().unwrap();
    let scratch = disk_image(dir.path(), "scratch.img", SCRATCH_BYTES);
    let data = disk_image(dir.path(), "data.img", DATA_BYTES);
    let console_path = dir.path().join("console.log");
    let bootfile = format!("http://{HOST_FROM_GUEST}:{}/boot/ipxe/{MAC}", proxy.port);
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(["-accel", &accelerator(), "-cpu", "max", "-m", "2048", "-smp", "2"])
        .args(["-display", "none", "-monitor", "none", "-no-reboot"])
        .arg("-serial")
        .arg(format!("file:{}", console_path.display()));
    // The wrong disk first: it is vda, the data disk vdb.
    for (n, (file, serial)) in [(&scratch, SCRATCH_SERIAL), (&data, DATA_SERIAL)].into_iter().enumerate() {
        qemu.args(["-drive", &format!("if=none,id=d{n},file={},format=raw", file.display())])
            .args(["-device", &format!("virtio-blk-pci,drive=d{n},serial={serial}")]);
    }
    qemu.args(["-device", &format!("virtio-net-pci,netdev=n0,mac={MAC}")]).args([
        "-boot",
        "n",
        "-netdev",
        &format!("user,id=n0,bootfile={bootfile}"),
    ]);
    let t0 = Instant::now();
    let mut vm = Qemu(
        qemu.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start qemu-system-x86_64 (apt-get install qemu-system-x86 ipxe-qemu)"),
    );

    // The rule adopts it once it reported, and names its workflow like it.
    let console = || String::from_utf8_lossy(&std::fs::read(&console_path).unwrap_or_default()).into_owned();
    let mut phases = Vec::new();
    let mut wf = Value::Null;
    loop {
        let out = c.kiln(&["get", "workflows", &hw, "-o", "json"]);
        if out.status.success() {
            if phases.is_empty() {
                phases.push(("adopted by the rule (its workflow exists)", t0.elapsed()));
            }
            wf = serde_json::from_slice(&out.stdout).unwrap_or_default();
            if matches!(wf["state"].as_str(), Some("SUCCESS" | "FAILED" | "TIMEOUT")) {
                phases.push(("workflow finished", t0.elapsed()));
                break;
            }
        }
        let exited = vm.0.try_wait().ok().flatten().is_some();
        if exited || t0.elapsed() > LIMIT {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(vm);
    for (what, at) in &phases {
        println!("{what}: {:.1}s after QEMU start", at.as_secs_f64());
    }
    let console = console();
    let tail: Vec<&str> = console.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
    let events = stdout(&c.kiln(&["events", "--limit", "50"]));
    let context = format!("{wf:#}\n--- console (tail)\n{}\n--- events\n{events}\n{}", tail.join("\n"), c.logs());
    assert_eq!(wf["state"], "SUCCESS", "{context}");

    // Discovered with both disks, then adopted: the record it had is gone,
    // the Hardware the rule named has its MAC, metadata and inventory.
    let adopted = json(&c, &["describe", "hardware", &hw, "-o", "json"]);
    assert_eq!(adopted["metadata"]["role"], "data", "{adopted:#}");
    // (QEMU's default CD-ROM drive is reported too; it is not virtio.)
    let disks = adopted["inventory"]["disks"].as_array().cloned().unwrap_or_default();
    let seen: Vec<(&str, u64)> = disks
        .iter()
        .filter(|d| d["transport"] == "virtio")
        .map(|d| (d["serial"].as_str().unwrap_or("-"), d["size_bytes"].as_u64().unwrap_or(0)))
        .collect();
    assert_eq!(seen, [(SCRATCH_SERIAL, SCRATCH_BYTES), (DATA_SERIAL, DATA_BYTES)], "{adopted:#}");
    assert!(!c.kiln(&["get", "hardware", &discovered]).status.success(), "{discovered} still exists");
    let all = json(&c, &["events", "-o", "json", "--limit", "1000"]);
    let object = format!("hardware {discovered} (MAC {MAC}) as hardware {hw}, workflow {hw}");
    let matched = all.as_array().unwrap().iter().any(|e| {
        e["action"] == "rule-match"
            && e["outcome"] == "ok"
            && e["actor"] == format!("rule {rule}")
            && e["object"] == object
    });
    assert!(matched, "no rule-match event for {object:?}: {all:#}");

    // The credential of the boot script iPXE fetched: used by the agent,
    // refused when replayed, and the refusal is in `kiln events`.
    let credentials = proxy.credentials();
    assert_eq!(credentials.len(), 1, "one boot script with a credential: {credentials:?}");
    let tls = ClientTls { ca_pem: c.ca_file.as_ref().map(|p| std::fs::read(p).unwrap()), identity: None };
    let channel = endpoint(&c.server_url, &tls).unwrap().connect().await.expect("connect");
    let replay = EnrolRequest { credential: credentials[0].clone(), agent_id: MAC.into(), mac: MAC.into() };
    let refused = EnrolmentServiceClient::new(channel).enrol(replay).await.expect_err("a replay was accepted");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("already used"), "{refused:?}");
    let recorded = wait_until(Duration::from_secs(20), || {
        let out = c.kiln(&["events", "--kind", "security", "-o", "json", "--limit", "1000"]);
        let list: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        list.iter().any(|e| {
            e["actor"] == format!("agent {MAC}")
                && e["action"] == "enrol"
                && e["outcome"] == "refused"
                && e["reason"].as_str().is_some_and(|r| r.contains(&format!("hardware {hw} already used")))
        })
    });
    assert!(recorded.is_ok(), "no refused enrol event:\n{}", stdout(&c.kiln(&["events", "--kind", "security"])));

    // The hint resolved to the data disk's by-id name, which the hook's
    // agent made (no udev there); the marker is on that disk, and the
    // disk the kernel probed first is untouched.
    let logs = stdout(&c.kiln(&["logs", &hw]));
    assert!(has_line(&logs, &format!("[write-marker] DEST=/dev/disk/by-id/virtio-{DATA_SERIAL}")), "{logs}\n{context}");
    let written = std::fs::read(&data).unwrap();
    assert_eq!(&written[..MARKER.len()], MARKER, "no marker on the data disk\n{logs}");
    assert!(written[MARKER.len()..].iter().all(|b| *b == 0), "more than the marker on the data disk");
    assert!(std::fs::read(&scratch).unwrap().iter().all(|b| *b == 0), "the scratch disk was written to");
}
