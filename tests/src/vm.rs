//! The end-to-end scenario: a QEMU virtual machine network-boots the hook
//! image from a kiln server, its agent runs the action library against the
//! VM's own disk, and the VM kexecs into what was written.
//!
//! Shared by the VM test (`tests/vm.rs`, asserts) and `bench-vm` (prints the
//! phases). Needs hook-image/build.sh's output and tests/vm/build-test-os.sh's
//! (scripts/test.sh builds both), QEMU with iPXE, and the test services.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::http::{Faults, FileServer};
use crate::{Cluster, TestEnv, unique};

/// The guest reaches the host's loopback here (QEMU user networking).
const HOST_FROM_GUEST: &str = "10.0.2.2";
const MAC: &str = "52:54:00:4b:49:4c";
/// The config file the workflow writes and the installed OS prints.
pub const CONFIG_PATH: &str = "/etc/kiln-test-os.conf";
pub const CONFIG_TEXT: &str = "greeting=hello from kiln";
/// The machine's hostname in its Hardware object, which the template puts
/// into the config file (CONFIG_TEXT).
const HOSTNAME: &str = "kiln";
/// The file the template's cexec step writes (in a chroot into the written
/// OS), which the installed OS prints too.
pub const CEXEC_PATH: &str = "/etc/kiln-test-os.cexec";
pub const CEXEC_TEXT: &str = "written by cexec in the chroot";
/// The prefix of the Tinkerbell hub's image names, which the server's
/// `--image-rewrite` resolves to kiln's action library.
pub const HUB: &str = "quay.io/tinkerbell/actions/";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace").to_path_buf()
}

/// `KILN_HOOK_DIR`, default hook-image/out.
pub fn hook_dir() -> PathBuf {
    std::env::var_os("KILN_HOOK_DIR").map(PathBuf::from).unwrap_or_else(|| workspace().join("hook-image/out"))
}

/// `KILN_TEST_OS_DIR`, default target/kiln-test-os.
pub fn test_os_dir() -> PathBuf {
    std::env::var_os("KILN_TEST_OS_DIR").map(PathBuf::from).unwrap_or_else(|| workspace().join("target/kiln-test-os"))
}

/// The QEMU accelerator: `KILN_VM_ACCEL`, default `tcg`. Never chosen from
/// the mere presence of /dev/kvm: on our machines it exists and hangs
/// guests (nested PVM), so KVM is used only when asked for.
pub fn accelerator() -> String {
    match std::env::var("KILN_VM_ACCEL").as_deref() {
        Ok("kvm") => "kvm".into(),
        _ => "tcg,thread=multi".into(),
    }
}

/// How the VM gets the hook image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Boot {
    /// The real path: the firmware (QEMU's iPXE ROM) asks DHCP, fetches the
    /// machine's boot script from the server and downloads the kernel and
    /// initramfs over HTTP.
    Network,
    /// QEMU loads the hook's kernel and initramfs itself (`-kernel`,
    /// `-initrd`) with the kernel command line of the server's boot script:
    /// the hook image's own boot, without the firmware's part.
    Direct,
}

/// What one run produced.
pub struct Outcome {
    /// The Tinkerbell workflow that installs the OS.
    pub workflow: Value,
    /// The kiln workflow before it whose step kills the agent, if asked for.
    pub resilience: Option<Value>,
    pub logs: String,
    pub console: String,
    pub disk: PathBuf,
    /// The second disk, laid out by rootio.
    pub disk2: PathBuf,
    /// The iPXE script the machine gets after the run.
    pub ipxe_after: String,
    /// Seconds from QEMU start to each console milestone / event.
    pub phases: Vec<(String, f64)>,
    pub started: SystemTime,
    _dir: tempfile::TempDir,
    _cluster: Cluster,
}

pub struct ActionTimes {
    pub name: String,
    pub pulling: Option<f64>,
    pub running: Option<f64>,
    pub finished: Option<f64>,
}

struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The machine as a Tinkerbell Hardware object, as `kubectl get -o yaml`
/// prints it (server-side fields included; kiln ignores them).
fn tinkerbell_hardware(name: &str) -> String {
    format!(
        r#"apiVersion: tinkerbell.org/v1alpha1
kind: Hardware
metadata:
  name: {name}
  namespace: tink-system
  resourceVersion: "4242"
  uid: 0b4c9c5e-0000-4000-8000-00000000aa01
spec:
  disks:
    - device: /dev/vda
  interfaces:
    - dhcp:
        arch: x86_64
        hostname: {HOSTNAME}
        mac: {MAC}
        uefi: false
      netboot:
        allowPXE: true
        allowWorkflow: true
  metadata:
    instance:
      hostname: {HOSTNAME}
      operating_system:
        slug: kiln-test-os
status: {{}}
"#
    )
}

/// A Tinkerbell Template and Workflow installing the test OS the way the
/// Tinkerbell playground installs Ubuntu: stream a whole-disk image, write
/// a file into its root partition, run a command chrooted into it, kexec.
/// Hub image names, the hub's variables, the data read as Tinkerbell's
/// renderer offers it, and nothing kiln-only.
fn tinkerbell_install(hw: &str, image_url: &str) -> String {
    let tpl = unique("vm-tpl");
    let wf = unique("vm-wf");
    format!(
        r#"apiVersion: tinkerbell.org/v1alpha1
kind: Template
metadata:
  name: {tpl}
  namespace: tink-system
spec:
  data: |
    version: "0.1"
    name: {tpl}
    global_timeout: 1800
    tasks:
      - name: "os-installation"
        worker: "{{{{.device_1}}}}"
        actions:
          - name: "stream-image"
            image: {HUB}image2disk:latest
            timeout: 600
            environment:
              DEST_DISK: {{{{ index .Hardware.Disks 0 }}}}
              IMG_URL: {{{{ .img_url }}}}
              COMPRESSED: true
          - name: "write-config"
            image: {HUB}writefile:latest
            timeout: 90
            environment:
              DEST_DISK: {{{{ formatPartition ( index .Hardware.Disks 0 ) 2 }}}}
              FS_TYPE: ext4
              DEST_PATH: {CONFIG_PATH}
              CONTENTS: "greeting=hello from {{{{ (index .Hardware.Interfaces 0).DHCP.Hostname }}}}"
              UID: 0
              GID: 0
              MODE: 0640
              DIRMODE: 0755
          - name: "run-in-chroot"
            image: {HUB}cexec:latest
            timeout: 90
            environment:
              BLOCK_DEVICE: {{{{ formatPartition ( index .Hardware.Disks 0 ) 2 }}}}
              FS_TYPE: ext4
              CHROOT: y
              DEFAULT_INTERPRETER: "/bin/sh -c"
              CMD_LINE: "echo '{CEXEC_TEXT}' > {CEXEC_PATH}"
          - name: "kexec-into-os"
            image: {HUB}kexec:latest
            timeout: 90
            pid: host
            environment:
              BLOCK_DEVICE: {{{{ formatPartition ( index .Hardware.Disks 0 ) 2 }}}}
              FS_TYPE: ext4
---
apiVersion: tinkerbell.org/v1alpha1
kind: Workflow
metadata:
  name: {wf}
  namespace: tink-system
spec:
  templateRef: {tpl}
  hardwareRef: {hw}
  hardwareMap:
    device_1: {MAC}
    img_url: {image_url}
"#
    )
}

/// The second disk's size: 256 MiB.
pub const SECOND_DISK_SECTORS: u64 = 524_288;
/// The volume group and logical volume rootio makes on it.
pub const VOLUME_GROUP: &str = "kilnvg";
pub const LOGICAL_VOLUME: &str = "data";

/// CPR storage metadata (the hub's test/standard.json shape) for the second
/// disk: a GPT with a BIOS boot partition, an ext4 root and an LVM physical
/// volume holding a volume group with one ext4 logical volume.
fn second_disk_metadata() -> Value {
    serde_json::json!({"metadata": {"instance": {"hostname": HOSTNAME, "storage": {
        "disks": [{"device": "/dev/vdb", "wipe_table": true, "partitions": [
            {"label": "BIOS", "number": 1, "size": 4096},
            {"label": "ROOT", "number": 2, "size": 131072},
            {"label": "LVM", "number": 3, "size": 0}]}],
        "volume_groups": [{"name": VOLUME_GROUP, "physical_volumes": ["/dev/vdb3"], "tags": ["kiln"],
            "logical_volumes": [{"name": LOGICAL_VOLUME, "size": 0, "tags": ["kiln"]}]}],
        "filesystems": [
            {"mount": {"create": {"options": ["-L", "ROOT"]}, "device": "/dev/vdb2", "format": "ext4", "point": "/"}},
            {"mount": {"create": {"options": ["-L", "DATA"]}, "device": format!("/dev/{VOLUME_GROUP}/{LOGICAL_VOLUME}"),
                "format": "ext4", "point": "/data"}}]}}}})
}

/// The id of the workflow `kiln apply` printed it made.
fn workflow_id(applied: &str) -> Result<String> {
    applied
        .lines()
        .find_map(|l| l.strip_prefix("workflow/")?.split(' ').next().map(str::to_string))
        .with_context(|| format!("no workflow in kiln apply's output: {applied}"))
}

/// Runs the whole scenario; `limit` bounds it. With `kill_agent`, an action
/// in the middle kills the agent (the supervisor-restart scenario).
pub fn run(limit: Duration, kill_agent: bool, boot: Boot) -> Result<Outcome> {
    let env = TestEnv::from_env();
    let hook = hook_dir();
    let os = test_os_dir();
    for f in [hook.join("vmlinuz"), hook.join("initramfs.img"), os.join("os.img.zst")] {
        if !f.exists() {
            bail!("{} is missing: build it with hook-image/build.sh and tests/vm/build-test-os.sh", f.display());
        }
    }
    let reg_port = env.registry.rsplit(':').next().context("registry port")?.to_string();
    let guest_registry = format!("{HOST_FROM_GUEST}:{reg_port}");
    let cmdline = format!("console=ttyS0 quiet panic=-1 kiln.console_log=1 kiln.insecure_registries={guest_registry}");
    // TLS as in production: iPXE fetches over plain HTTP from the netboot
    // listener; the hook's agent talks to the TLS port with the CA it
    // fetched from there, pinned by the script (kiln.ca_sha256=). The
    // agent has no credential of its own: it exchanges the one-time
    // enrolment credential of its boot script (kiln.enrol=) for one.
    // The template names the Tinkerbell hub's images, as Tinkerbell
    // templates do; the server resolves them to kiln's action library.
    let prefix = crate::image_prefix();
    let rewrite = format!("{HUB}={guest_registry}/{prefix}/actions/");
    let mut cluster = Cluster::start_with(&["--hook-dir", hook.to_str().unwrap(), "--image-rewrite", &rewrite])?;
    // The machine, as Tinkerbell describes it (a `kubectl get -o yaml`
    // style object): kiln maps it; its interface's DHCP data is the
    // template's to read.
    let hw = unique("vm");
    cluster.apply(&tinkerbell_hardware(&hw));
    let tls_port = cluster.server_url.rsplit(':').next().context("server port")?.to_string();
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    cluster.restart_server(&[
        "--netboot-listen",
        &format!("127.0.0.1:{port}"),
        "--public-url",
        &format!("https://{HOST_FROM_GUEST}:{tls_port}"),
        "--hook-cmdline",
        &cmdline,
    ])?;

    let image = std::fs::read(os.join("disk.img.zst"))?;
    let images = FileServer::start(image, Faults::default());
    let image_url = images.url("disk.img.zst").replace("127.0.0.1", HOST_FROM_GUEST);

    // The CPR storage metadata rootio reads (the hub's format), for the
    // second disk.
    let metadata = FileServer::start(serde_json::to_vec(&second_disk_metadata())?, Faults::default());
    let resilience = if kill_agent {
        // First, a kiln workflow of one step: the agent is killed (by PID,
        // from the host PID namespace) while it runs; the hook's supervisor
        // restarts the agent, which must follow this container to its end,
        // not run it again. The server hands the machine its workflows in
        // the order they were made, so the Tinkerbell one runs next, on
        // the restarted agent.
        // Then the hub's rootio lays out the machine's second disk from
        // CPR storage metadata, where the hook's kernel has what the host's
        // lacks: partition tables and device-mapper (LVM).
        let tpl = unique("vm-killer");
        let wf = unique("vm-killer-wf");
        let killer = format!(
            "        - name: agent-killer\n          image: {guest_registry}/{prefix}/busybox:v1\n          timeout: 180\n          pid: host\n          command: [\"sh\", \"-c\", \"sleep 1; kill -9 $(pidof kiln-agent); echo agent killed; sleep 6; echo killer finished\"]\n"
        );
        let mirror = metadata.url("").trim_end_matches('/').rsplit(':').next().unwrap_or_default().to_string();
        let rootio = |step: &str| {
            format!(
                "        - name: rootio-{step}\n          image: {HUB}rootio:latest\n          timeout: 180\n          command: [\"{step}\"]\n          environment: {{MIRROR_HOST: \"{HOST_FROM_GUEST}\", METADATA_SERVICE_PORT: \"{mirror}\"}}\n"
            )
        };
        let actions = [killer, rootio("partition"), rootio("format")].concat();
        let out = cluster.apply(&format!(
            "kind: Template\nname: {tpl}\ndata: |\n  version: \"0.1\"\n  name: {tpl}\n  tasks:\n    - name: kiln-steps\n      worker: \"{{{{.device_1}}}}\"\n      actions:\n{actions}---\nkind: Workflow\nname: {wf}\ntemplate: {tpl}\nhardware: {hw}\nhardware_map: {{device_1: \"{MAC}\"}}\n"
        ));
        Some(workflow_id(&out)?)
    } else {
        None
    };
    // Then a Tinkerbell Template and Workflow, unchanged from what a
    // Tinkerbell user applies: hub image names, the hub's variables, the
    // machine's data read the Tinkerbell way, no `terminal:` on kexec.
    let out = cluster.apply(&tinkerbell_install(&hw, &image_url));
    let id = workflow_id(&out)?;

    let dir = tempfile::tempdir()?;
    let disk = dir.path().join("disk.img");
    std::fs::File::create(&disk)?.set_len(1 << 30)?;
    let disk2 = dir.path().join("disk2.img");
    std::fs::File::create(&disk2)?.set_len(SECOND_DISK_SECTORS * 512)?;
    let console_path = dir.path().join("console.log");
    let bootfile = format!("http://{HOST_FROM_GUEST}:{port}/boot/ipxe/{MAC}");
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(["-accel", &accelerator(), "-cpu", "max", "-m", "2048", "-smp", "2"])
        .args(["-display", "none", "-monitor", "none", "-no-reboot"])
        .arg("-serial")
        .arg(format!("file:{}", console_path.display()))
        .arg("-drive")
        .arg(format!("file={},if=virtio,format=raw", disk.display()))
        .arg("-drive")
        .arg(format!("file={},if=virtio,format=raw", disk2.display()))
        .args(["-device", &format!("virtio-net-pci,netdev=n0,mac={MAC}")]);
    match boot {
        Boot::Network => {
            qemu.args(["-boot", "n", "-netdev", &format!("user,id=n0,bootfile={bootfile}")]);
        }
        Boot::Direct => {
            let script = boot_script(port);
            let cmdline = script
                .lines()
                .find_map(|l| l.strip_prefix("kernel "))
                .and_then(|l| l.split_once(' '))
                .map(|(_url, args)| args.replace("${net0/mac}", MAC))
                .with_context(|| format!("no kernel line in the boot script:\n{script}"))?;
            qemu.args(["-netdev", "user,id=n0"])
                .arg("-kernel")
                .arg(hook.join("vmlinuz"))
                .arg("-initrd")
                .arg(hook.join("initramfs.img"))
                .args(["-append", &cmdline]);
        }
    }
    let started = SystemTime::now();
    let t0 = Instant::now();
    let console = ConsoleWatch::start(console_path.clone(), t0);
    let mut qemu = Qemu(
        qemu.stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("start qemu-system-x86_64 (apt-get install qemu-system-x86 ipxe-qemu)")?,
    );

    let mut phases: Vec<(String, f64)> = Vec::new();
    let mut workflow_done = None;
    let mut exited = None;
    loop {
        if workflow_done.is_none() {
            let wf = cluster.workflow(&id);
            if matches!(wf["state"].as_str(), Some("SUCCESS" | "FAILED" | "TIMEOUT")) {
                phases.push((format!("workflow {}", wf["state"].as_str().unwrap()), t0.elapsed().as_secs_f64()));
                workflow_done = Some(wf);
            }
        }
        if exited.is_none()
            && let Some(status) = qemu.0.try_wait()?
        {
            phases.push(("VM powered off".into(), t0.elapsed().as_secs_f64()));
            exited = Some(status);
        }
        let failed = workflow_done.as_ref().is_some_and(|w| w["state"] != "SUCCESS");
        if (workflow_done.is_some() && exited.is_some()) || failed {
            break;
        }
        if exited.is_some() && t0.elapsed() > limit / 2 && workflow_done.is_none() {
            break; // QEMU died and nothing will finish the workflow
        }
        if t0.elapsed() > limit {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    drop(qemu);
    phases.extend(console.stop());
    let console = String::from_utf8_lossy(&std::fs::read(&console_path).unwrap_or_default()).into_owned();
    let workflow = workflow_done.unwrap_or_else(|| cluster.workflow(&id));
    let resilience = resilience.map(|id| cluster.workflow(&id));
    let mut logs = String::new();
    for wf in resilience.iter().chain([&workflow]) {
        let id = wf["id"].as_str().unwrap_or_default();
        logs.push_str(&crate::stdout(&cluster.kiln(&["logs", id])));
    }
    let ipxe_after = boot_script(port);
    // The agent's first poll is when the server assigned it the first
    // action: the creation time of that action's first attempt.
    let first = resilience.as_ref().unwrap_or(&workflow);
    let first_poll = first["actions"][0]["attempts"][0]["created_at"].as_str().and_then(|t| seconds_since(started, t));
    if let Some(t) = first_poll {
        phases.push((AGENT_CONNECTED.to_string(), t));
    }
    phases.sort_by(|a, b| a.1.total_cmp(&b.1));
    Ok(Outcome {
        workflow,
        resilience,
        logs,
        console,
        disk,
        disk2,
        ipxe_after,
        phases,
        started,
        _dir: dir,
        _cluster: cluster,
    })
}

/// The machine's iPXE script from the netboot listener on `port`, as the
/// machine would get it (its URLs name the host as the guest sees it);
/// empty if it cannot be fetched.
fn boot_script(port: u16) -> String {
    Command::new("curl")
        .args(["-s", "-H", &format!("Host: {HOST_FROM_GUEST}:{port}")])
        .arg(format!("http://127.0.0.1:{port}/boot/ipxe/{MAC}"))
        .output()
        .map(|o| crate::stdout(&o))
        .unwrap_or_default()
}

/// Console lines that mark a phase, by phase name.
const MILESTONES: [(&str, &str); 7] = [
    ("hook /init starts (stage 1)", "kiln-hook: stage 1"),
    ("hook init running", "kiln-hook: stage 2"),
    ("network up (DHCP lease)", "kiln-hook: network:"),
    ("agent started", "kiln-hook: agent started"),
    ("dockerd is up (its socket exists)", "kiln-hook: dockerd is up"),
    ("agent restarted by the supervisor", "restarting in"),
    ("test OS booted (after kexec)", "KILN-TEST-OS: booted"),
];

/// The phase name of the hook kernel's start, told by the uptimes the
/// hook's /init prints on its console lines (`[  4.42] kiln-hook: ...`).
pub const HOOK_KERNEL_STARTED: &str = "hook kernel starts (console uptimes)";

/// Follows the serial console (a file QEMU appends to) in a thread and
/// notes when each milestone first appears; it looks every 20 ms, so the
/// times are that close.
struct ConsoleWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<(String, f64)>>,
}

impl ConsoleWatch {
    fn start(path: PathBuf, t0: Instant) -> Self {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut phases: Vec<(String, f64)> = Vec::new();
            // Each hook line seen at `now` says the kernel started at most
            // `now - uptime` ago; the smallest bound is the closest.
            let mut kernel_start = f64::INFINITY;
            let mut done_lines = 0;
            loop {
                let last_look = flag.load(Ordering::Relaxed);
                let now = t0.elapsed().as_secs_f64();
                let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap_or_default()).into_owned();
                let complete: Vec<&str> = text.split_inclusive('\n').filter(|l| l.ends_with('\n')).collect();
                for line in &complete[done_lines.min(complete.len())..] {
                    for (name, needle) in MILESTONES {
                        if line.contains(needle) && !phases.iter().any(|(n, _)| n == name) {
                            phases.push((name.to_string(), now));
                        }
                    }
                    if let Some(uptime) = hook_uptime(line) {
                        kernel_start = kernel_start.min(now - uptime);
                    }
                }
                done_lines = complete.len();
                if last_look {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if kernel_start.is_finite() {
                phases.push((HOOK_KERNEL_STARTED.to_string(), kernel_start.max(0.0)));
            }
            phases
        });
        Self { stop, thread }
    }

    /// Takes a last look and returns the phases seen.
    fn stop(self) -> Vec<(String, f64)> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// The uptime on a hook /init console line: `[    4.42] kiln-hook: ...`.
fn hook_uptime(line: &str) -> Option<f64> {
    let (uptime, rest) = line.trim_start().strip_prefix('[')?.split_once(']')?;
    rest.trim_start().starts_with("kiln-hook:").then_some(())?;
    uptime.trim().parse().ok()
}

/// The phase name of the agent's first poll (boot to agent connected).
pub const AGENT_CONNECTED: &str = "agent connected (first poll; the server assigns action 1)";

fn seconds_since(started: SystemTime, rfc3339: &str) -> Option<f64> {
    let t = humantime::parse_rfc3339(rfc3339).ok()?;
    Some(t.duration_since(started).ok()?.as_secs_f64())
}

impl Outcome {
    /// Seconds from QEMU start to an RFC 3339 timestamp of the server.
    pub fn at(&self, rfc3339: &Value) -> Option<f64> {
        seconds_since(self.started, rfc3339.as_str()?)
    }

    /// Seconds from QEMU start to the phase `name`, if it happened.
    pub fn phase(&self, name: &str) -> Option<f64> {
        self.phases.iter().find(|(n, _)| n == name).map(|(_, t)| *t)
    }

    /// Per action: its name and when it started pulling, running and
    /// finished, in seconds from QEMU start.
    pub fn action_times(&self) -> Vec<ActionTimes> {
        let empty = Vec::new();
        let actions = self.workflow["actions"].as_array().unwrap_or(&empty);
        actions
            .iter()
            .map(|a| {
                let last = a["attempts"].as_array().and_then(|t| t.last()).cloned().unwrap_or(Value::Null);
                ActionTimes {
                    name: a["name"].as_str().unwrap_or("?").to_string(),
                    pulling: self.at(&last["pulling_at"]),
                    running: self.at(&last["running_at"]),
                    finished: self.at(&last["finished_at"]),
                }
            })
            .collect()
    }

    pub fn print_phases(&self) {
        println!("| phase | seconds from QEMU start |");
        println!("|---|---|");
        for (name, t) in &self.phases {
            println!("| {name} | {t:.1} |");
        }
        for a in self.action_times() {
            let f = |t: Option<f64>| t.map(|t| format!("{t:.1}")).unwrap_or_else(|| "-".into());
            println!("| action {}: pull {} → run {} → end | {} |", a.name, f(a.pulling), f(a.running), f(a.finished));
        }
    }

    /// The console's last lines, for assertion messages.
    pub fn console_tail(&self, n: usize) -> String {
        let lines: Vec<&str> = self.console.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::hook_uptime;

    #[test]
    fn hook_uptime_reads_the_init_console_prefix_only() {
        assert_eq!(hook_uptime("[    4.42] kiln-hook: stage 2: kernel 6.1\n"), Some(4.42));
        assert_eq!(hook_uptime("[  123.5] kiln-hook: agent started (pid 3)"), Some(123.5));
        assert_eq!(hook_uptime("[    3.366087] Freeing initrd memory: 185500K"), None);
        assert_eq!(hook_uptime("KILN-TEST-OS: booted"), None);
    }
}
