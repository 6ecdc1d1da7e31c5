//! A UEFI machine network-boots the way a real server does, on a network
//! the test makes (a bridge in a namespace; nothing leaves it): OVMF's own
//! PXE or HTTP boot client (the NIC has no option ROM, so no iPXE is there
//! before kiln hands it one) gets its boot file from kiln's ProxyDHCP (beside
//! the site's dnsmasq) or DHCP, loads ipxe.efi over kiln's TFTP (or HTTP),
//! that iPXE fetches the machine's boot script and the real hook image, and
//! the hook's agent enrols with the script's one-time credential and runs a
//! workflow whose action image it pulls from the test registry.
//!
//! Shared by tests/vm_pxe.rs (asserts) and `bench-vm` (prints the times).
//! Needs root (namespaces), QEMU, OVMF, dnsmasq, Debian's ipxe, the hook
//! image (hook-image/out) and the test services. TCG only, bounded waits.

use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::netns::{NsServer, Relay, Site, short_id};
use crate::{Proc, TestEnv, image_prefix, random_mac, wait_until};

const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// The server's API and boot script port, at `PREFIX.2` (our range is
/// 43300-43399; TFTP is on 69, where firmware looks).
pub const SERVER_PORT: u16 = 43310;
/// The relay to the test registry, at the bridge's `PREFIX.1`.
pub const REGISTRY_PORT: u16 = 43350;
/// What the workflow's action prints.
pub const ACTION_TEXT: &str = "hello from a PXE-booted hook";

/// Who hands out addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dhcp {
    /// The site's dnsmasq; kiln runs ProxyDHCP.
    SiteAndProxy,
    /// kiln alone, from the Hardware's reservation.
    KilnOnly,
}

/// How far the machine goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// The hook's agent has enrolled and polled (the server assigned it
    /// the workflow's action).
    AgentConnected,
    /// The workflow ended (SUCCESS, or not).
    WorkflowDone,
}

/// One boot: the network (`prefix`: `/24` of the form `10.81.N`), the
/// firmware's client (`http_boot`: PXE off, as on a server set to UEFI HTTP
/// boot) and where to stop.
#[derive(Debug, Clone, Copy)]
pub struct Run<'a> {
    pub prefix: &'a str,
    pub dhcp: Dhcp,
    pub http_boot: bool,
    pub until: Until,
    pub limit: Duration,
}

/// What a boot produced; times in seconds from QEMU start.
pub struct Outcome {
    pub server_log: String,
    pub dnsmasq_log: String,
    pub console: String,
    /// The workflow as the server has it at the end.
    pub workflow: Value,
    /// `kiln logs` of the workflow.
    pub logs: String,
    pub ipxe_banner: f64,
    pub boot_script: f64,
    pub hook_started: Option<f64>,
    pub agent_connected: Option<f64>,
    pub workflow_done: Option<f64>,
}

impl Outcome {
    /// The figures, one line, for test output and the benchmark.
    pub fn summary(&self) -> String {
        let f = |t: Option<f64>| t.map(|t| format!("{t:.1} s")).unwrap_or_else(|| "-".into());
        format!(
            "iPXE banner {:.1} s, boot script {:.1} s, hook /init {}, agent connected {}, workflow done {}",
            self.ipxe_banner,
            self.boot_script,
            f(self.hook_started),
            f(self.agent_connected),
            f(self.workflow_done)
        )
    }
}

fn seconds_since(started: SystemTime, rfc3339: Option<&str>) -> Option<f64> {
    let t = humantime::parse_rfc3339(rfc3339?).ok()?;
    Some(t.duration_since(started).ok()?.as_secs_f64())
}

/// Boots the machine as `run` says. Errors carry the console, the server's
/// and dnsmasq's logs.
pub fn boot(run: Run<'_>) -> Result<Outcome> {
    let Run { prefix, dhcp, http_boot, until, limit } = run;
    let env = TestEnv::from_env();
    let hook = crate::vm::hook_dir();
    for f in ["vmlinuz", "initramfs.img"] {
        if !hook.join(f).exists() {
            bail!("{} is missing: build the hook image (hook-image/build.sh)", hook.join(f).display());
        }
    }
    let id = short_id();
    let site = Site::start_tagged("kp", &id, prefix, true, dhcp == Dhcp::SiteAndProxy)?;
    // The VM pulls its action image from the test registry through the
    // bridge's address (the registry itself listens on the host's loopback).
    let registry = format!("{prefix}.1:{REGISTRY_PORT}");
    let _relay = Relay::start(&site.site, &registry, &env.registry)?;
    let dhcp_flag = match dhcp {
        Dhcp::SiteAndProxy => "--proxy-dhcp-listen",
        Dhcp::KilnOnly => "--dhcp-listen",
    };
    let listen = format!("{prefix}.2:{SERVER_PORT}");
    let public = format!("http://{listen}");
    let tftp = format!("{prefix}.2:69");
    let cmdline = format!("console=ttyS0 quiet panic=-1 kiln.console_log=1 kiln.insecure_registries={registry}");
    // Plain HTTP for all (--plaintext): the boot script, the hook image and
    // the agent's API on one listener, which machines reach at --public-url.
    let server = NsServer::start_at(
        &site.proxy,
        &listen,
        &[
            dhcp_flag,
            &site.proxy_if,
            "--tftp-listen",
            &tftp,
            "--public-url",
            &public,
            "--hook-dir",
            hook.to_str().context("hook dir")?,
            "--hook-cmdline",
            &cmdline,
        ],
    )?;
    let mac = random_mac();
    let image = format!("{registry}/{}/busybox:v1", image_prefix());
    let applied = server.apply(&format!(
        "kind: Hardware\nname: uefi1\ninterfaces:\n- dhcp:\n    mac: {mac}\n    hostname: uefi1\n    \
         ip: {{address: {prefix}.60, netmask: 255.255.255.0, gateway: {prefix}.1}}\n\
         ---\nkind: Template\nname: t\ndata: |\n  version: \"0.1\"\n  \
         name: t\n  tasks:\n    - name: t\n      worker: \"{{{{.device_1}}}}\"\n      actions:\n        - \
         {{name: hello, image: \"{image}\", timeout: 120, command: [\"sh\", \"-c\", \"echo {ACTION_TEXT}\"]}}\n\
         ---\nkind: Workflow\nname: w\ntemplate: t\nhardware: uefi1\nhardware_map: {{device_1: \"{mac}\"}}\n"
    ))?;
    let workflow_id = applied
        .lines()
        .find_map(|l| l.strip_prefix("workflow/")?.split(' ').next().map(str::to_string))
        .with_context(|| format!("no workflow in kiln apply's output: {applied}"))?;

    let tap = format!("kptap{id}");
    site.site.ip(&["tuntap", "add", "dev", &tap, "mode", "tap"])?;
    site.site.ip(&["link", "set", &tap, "master", &site.bridge])?;
    site.site.ip(&["link", "set", &tap, "up"])?;
    let dir = tempfile::tempdir()?;
    let vars = dir.path().join("vars.fd");
    std::fs::copy(OVMF_VARS, &vars).context("OVMF (apt-get install ovmf)")?;
    let serial = dir.path().join("serial.log");
    let started = SystemTime::now();
    let start = Instant::now();
    let child = site
        .site
        .command("qemu-system-x86_64")
        .args(["-nodefaults", "-machine", "q35", "-accel", "tcg,thread=multi", "-smp", "2", "-m", "2048"])
        .args(["-display", "none"])
        .arg("-drive")
        .arg(format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"))
        .arg("-drive")
        .arg(format!("if=pflash,format=raw,file={}", vars.display()))
        .args(["-netdev", &format!("tap,id=n0,ifname={tap},script=no,downscript=no")])
        // No option ROM: OVMF's own PXE client runs, so an iPXE banner
        // means the ipxe.efi kiln served is running.
        .args(["-device", &format!("virtio-net-pci,netdev=n0,mac={mac},romfile=")])
        .args(if http_boot {
            ["-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=n"]
        } else {
            ["-fw_cfg", "name=opt/org.tianocore/IPv4HTTPSupport,string=n"]
        })
        .args(["-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=n"])
        .args(["-boot", "n", "-serial"])
        .arg(format!("file:{}", serial.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("qemu-system-x86_64")?;
    let mut qemu = Proc { child, name: "qemu".into() };
    let console = || String::from_utf8_lossy(&std::fs::read(&serial).unwrap_or_default()).into_owned();
    let tail = |text: String| {
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(80)..].join("\n")
    };
    let context = |what: &str| {
        format!(
            "{what}\n--- console (tail)\n{}\n--- server\n{}\n--- dnsmasq\n{}",
            tail(console()),
            server.log(),
            site.dnsmasq_log()
        )
    };

    wait_until(limit, || console().contains("iPXE initialising devices") || qemu.exited())
        .map_err(|_| anyhow::anyhow!(context("no iPXE banner on the console")))?;
    if qemu.exited() {
        bail!(context("QEMU exited"));
    }
    let ipxe_banner = start.elapsed().as_secs_f64();
    server
        .wait_log(&["netboot: hook image", "workflow="], limit.saturating_sub(start.elapsed()))
        .map_err(|_| anyhow::anyhow!(context("iPXE did not fetch the boot script")))?;
    let boot_script = start.elapsed().as_secs_f64();

    let mut hook_started = None;
    let mut agent_connected = None;
    let mut workflow_done = None;
    let workflow = loop {
        let now = start.elapsed().as_secs_f64();
        if hook_started.is_none() && console().contains("kiln-hook: stage 1") {
            hook_started = Some(now);
        }
        let workflow = server.workflow(&workflow_id)?;
        // The agent's first poll is when the server assigned it the first
        // action: that attempt's creation.
        agent_connected =
            agent_connected.or(seconds_since(started, workflow["actions"][0]["attempts"][0]["created_at"].as_str()));
        let state = workflow["state"].as_str().unwrap_or_default();
        if matches!(state, "SUCCESS" | "FAILED" | "TIMEOUT") {
            workflow_done = Some(now);
        }
        let done = match until {
            Until::AgentConnected => agent_connected.is_some() || workflow_done.is_some(),
            Until::WorkflowDone => workflow_done.is_some(),
        };
        if done {
            break workflow;
        }
        if qemu.exited() {
            bail!(context("QEMU exited"));
        }
        if start.elapsed() > limit {
            bail!(context(&format!("after {limit:?}: {until:?} not reached; workflow {workflow:#}")));
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    qemu.kill();
    let logs = crate::stdout(&server.kiln(&["logs", &workflow_id]));
    Ok(Outcome {
        server_log: server.log(),
        dnsmasq_log: site.dnsmasq_log(),
        console: console(),
        workflow,
        logs,
        ipxe_banner,
        boot_script,
        hook_started,
        agent_connected,
        workflow_done,
    })
}
