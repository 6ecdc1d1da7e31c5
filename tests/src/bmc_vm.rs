//! A machine kiln starts through its BMC, for the BMC VM tests
//! (`tests/bmc_vm.rs`): a libvirt domain (OVMF, 2 GiB, a raw disk, a NIC
//! on a bridge without option ROM) behind sushy-tools, on a site network
//! the test owns, and a kiln server beside it that is the only thing that
//! ever powers the domain on.
//!
//! Two namespaces, as in `netns::Site` (two DHCP servers cannot share
//! port 67 in one namespace):
//! - the lab's (`kv-lab-*`, where the private libvirtd runs, so its taps
//!   are there): the bridge at `10.82.S.1`, the domain's tap on it, and
//!   dnsmasq as the site's DHCP server (addresses only, plus IPv6 router
//!   advertisements: without them iPXE waits ~13 s for autoconfiguration);
//! - `kv-prx-*`, joined to the bridge by a veth, at `10.82.S.2`: the kiln
//!   server (plain HTTP and gRPC on one port, ProxyDHCP and TFTP on the
//!   veth), sushy-tools on its loopback (kiln reaches the BMC there, and
//!   sushy reaches libvirtd by its socket), and a second registry serving
//!   the test registry's storage read-only, so the hook pulls the action
//!   images without leaving the namespaces.
//!
//! Ports come from the range 43400-43499; they are private to the
//! namespace anyway.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::bmc_lab::{LIBVIRT_USER, Lab, Machine, Nic};
use crate::netns::{Netns, run, short_id};
use crate::{Proc, bin_dir, image_prefix, random_mac, stderr, stdout, wait_until};

/// Basic-auth credentials of the lab's Redfish BMC.
pub const BMC_USER: &str = "kv-admin";
pub const BMC_PASSWORD: &str = "kv-s3cret";
const SERVER_PORT: u16 = 43410;
const REGISTRY_PORT: u16 = 43411;
const SUSHY_PORT: u16 = 43412;

/// The test registry's state directory (scripts/test-env.sh's `STATE`).
fn test_state_dir() -> PathBuf {
    std::env::var_os("KILN_TEST_STATE").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/tmp/kiln-test-env"))
}

/// The rig; everything stops and goes when it is dropped.
pub struct Rig {
    // Dropped in this order: processes first, then the lab (domain,
    // libvirtd, its namespace), then the proxy's namespace.
    server: Proc,
    _registry: Proc,
    _dnsmasq: Proc,
    pub lab: Lab,
    pub proxy: Netns,
    pub dir: tempfile::TempDir,
    /// The server as the machine (and the CLI, in `proxy`) reaches it.
    pub server_url: String,
    /// The domain's Redfish BMC (sushy-tools), inside `proxy`.
    pub bmc_url: String,
    pub domain: String,
    pub mac: String,
    /// The action registry as the machine reaches it, `host:port`.
    pub registry: String,
}

impl Rig {
    /// Starts everything for site network `10.82.{subnet}.0/24`; the
    /// domain is defined and shut off. With `boot_services`, the server
    /// runs ProxyDHCP and TFTP on the site network (PXE); without, nothing
    /// there offers a boot file (the hook ISO's case: dnsmasq gives
    /// addresses only, to the hook's own DHCP client).
    pub fn start(subnet: u8, boot_services: bool) -> Result<Self> {
        let prefix = format!("10.82.{subnet}");
        let hook = crate::vm::hook_dir();
        for f in ["vmlinuz", "initramfs.img"] {
            if !hook.join(f).exists() {
                bail!(
                    "{} is missing: build it with hook-image/build.sh (or set KILN_HOOK_DIR)",
                    hook.join(f).display()
                );
            }
        }
        let mut lab = Lab::start_named("kv-lab")?;
        let id = short_id();
        let (bridge, tap) = (format!("kvbr{id}"), format!("kvtap{id}"));
        let (proxy_if, proxy_peer) = (format!("kvp{id}"), format!("kvpb{id}"));
        let in_lab = |args: &[&str]| -> Result<String> {
            let mut all = vec!["ip", "-n", &lab.netns];
            all.extend_from_slice(args);
            run(&all)
        };
        in_lab(&["link", "add", &bridge, "type", "bridge", "forward_delay", "0", "stp_state", "0"])?;
        in_lab(&["addr", "add", &format!("{prefix}.1/24"), "dev", &bridge])?;
        in_lab(&["addr", "add", &format!("fd00:6b76:{subnet}::1/64"), "dev", &bridge, "nodad"])?;
        in_lab(&["link", "set", &bridge, "up"])?;
        // libvirtd runs unprivileged: the tap must exist, owned by it.
        in_lab(&["tuntap", "add", "dev", &tap, "mode", "tap", "user", LIBVIRT_USER, "group", LIBVIRT_USER])?;
        in_lab(&["link", "set", &tap, "master", &bridge])?;
        in_lab(&["link", "set", &tap, "up"])?;
        let proxy = Netns::new(&format!("kv-prx-{id}"))?;
        run(&[
            "ip",
            "link",
            "add",
            &proxy_if,
            "netns",
            &proxy.name,
            "type",
            "veth",
            "peer",
            "name",
            &proxy_peer,
            "netns",
            &lab.netns,
        ])?;
        in_lab(&["link", "set", &proxy_peer, "master", &bridge])?;
        in_lab(&["link", "set", &proxy_peer, "up"])?;
        proxy.ip(&["addr", "add", &format!("{prefix}.2/24"), "dev", &proxy_if])?;
        proxy.ip(&["link", "set", &proxy_if, "up"])?;

        let dir = tempfile::Builder::new().prefix("kiln-kv-").tempdir()?;
        let d = dir.path().to_path_buf();
        let log = |name: &str| std::fs::File::create(d.join(format!("{name}.log")));

        // The site's DHCP server: addresses only; boot files are kiln's.
        let dnsmasq_log = log("dnsmasq")?;
        let child = Command::new("ip")
            .args(["netns", "exec", &lab.netns, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--port=0"])
            .arg(format!("--interface={bridge}"))
            .args(["--bind-interfaces", "--no-ping", "--log-dhcp", "--log-facility=-"])
            .arg(format!("--dhcp-leasefile={}", d.join("leases").display()))
            .arg(format!("--pid-file={}", d.join("dnsmasq.pid").display()))
            .arg(format!("--dhcp-range={prefix}.100,{prefix}.150,255.255.255.0,1h"))
            .arg(format!("--dhcp-option=option:router,{prefix}.1"))
            .arg("--enable-ra")
            .arg(format!("--dhcp-range=fd00:6b76:{subnet}::,ra-only,64"))
            .stdin(Stdio::null())
            .stdout(dnsmasq_log.try_clone()?)
            .stderr(dnsmasq_log)
            .spawn()
            .context("dnsmasq (apt-get install dnsmasq-base)")?;
        let dnsmasq = Proc { child, name: "dnsmasq".into() };

        // The test registry's storage, served read-only in the namespace.
        let registry = format!("{prefix}.2:{REGISTRY_PORT}");
        let storage = test_state_dir().join("registry-open");
        if !storage.is_dir() {
            bail!("{} is missing: run scripts/test-env.sh up", storage.display());
        }
        std::fs::write(
            d.join("registry.yml"),
            format!(
                "version: 0.1\nlog: {{ level: warn }}\nstorage: {{ filesystem: {{ rootdirectory: {} }}, \
                 maintenance: {{ uploadpurging: {{ enabled: false }}, readonly: {{ enabled: true }} }} }}\n\
                 http: {{ addr: {registry} }}\n",
                storage.display()
            ),
        )?;
        let registry_log = log("registry")?;
        let child = proxy
            .command("docker-registry")
            .arg("serve")
            .arg(d.join("registry.yml"))
            .stdin(Stdio::null())
            .stdout(registry_log.try_clone()?)
            .stderr(registry_log)
            .spawn()
            .context("docker-registry (apt-get install docker-registry)")?;
        let registry_proc = Proc { child, name: "docker-registry".into() };

        let bmc_url = lab.start_sushy_in(Some(&proxy.name), SUSHY_PORT, BMC_USER, BMC_PASSWORD, None)?;
        let mac = random_mac();
        let domain = format!("kv-node-{id}");
        lab.define_domain_with(
            &domain,
            &Machine {
                // The hook's initramfs unpacks to ~190 MB, and dockerd with it.
                memory_mib: 2048,
                cpus: 2,
                disk_bytes: 64 << 20,
                nic: Nic::Tap { tap: tap.clone(), mac: mac.clone() },
                cpu_max: true,
            },
        )?;

        let server_url = format!("http://{prefix}.2:{SERVER_PORT}");
        let cmdline = format!("console=ttyS0 panic=-1 kiln.console_log=1 kiln.insecure_registries={registry}");
        let server_log = log("server")?;
        let hook_dir = hook.display().to_string();
        let child = proxy
            .command(bin_dir().join("kiln-server").to_str().context("binary path")?)
            .args(["--plaintext", "--listen", &format!("{prefix}.2:{SERVER_PORT}"), "--data-dir"])
            .arg(d.join("data"))
            .args(["--public-url", &server_url, "--hook-dir", &hook_dir, "--hook-cmdline", &cmdline])
            .args(if boot_services {
                vec![
                    "--proxy-dhcp-listen".to_string(),
                    proxy_if.clone(),
                    "--tftp-listen".into(),
                    format!("{prefix}.2:69"),
                ]
            } else {
                Vec::new()
            })
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(server_log)
            .spawn()
            .context("start kiln-server")?;
        let mut server = Proc { child, name: "kiln-server".into() };
        let addr_file = d.join("data/admin-token");
        let started = wait_until(Duration::from_secs(30), || addr_file.exists() || server.exited());
        if started.is_err() || server.exited() {
            bail!("kiln-server did not start:\n{}", std::fs::read_to_string(d.join("server.log")).unwrap_or_default());
        }
        let rig = Self {
            server,
            _registry: registry_proc,
            _dnsmasq: dnsmasq,
            lab,
            proxy,
            dir,
            server_url,
            bmc_url,
            domain,
            mac,
            registry,
        };
        // The token file is written before the listener binds.
        wait_until(Duration::from_secs(30), || rig.kiln(&["get", "hardware"]).status.success())
            .with_context(|| format!("kiln-server does not answer:\n{}", rig.log("server")))?;
        wait_until(Duration::from_secs(20), || {
            Command::new("ip")
                .args(["netns", "exec", &rig.proxy.name, "curl", "-sf", "-o", "/dev/null"])
                .arg(format!("http://{}/v2/", rig.registry))
                .status()
                .is_ok_and(|s| s.success())
        })
        .with_context(|| format!("the registry did not answer:\n{}", rig.log("registry")))?;
        wait_until(Duration::from_secs(10), || rig.log("dnsmasq").contains("started, version"))
            .with_context(|| format!("dnsmasq did not start:\n{}", rig.log("dnsmasq")))?;
        Ok(rig)
    }

    /// A log of the rig's: `server`, `dnsmasq`, `registry`.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// The domain's serial console so far.
    pub fn console(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.lab.serial_path(&self.domain)).unwrap_or_default()).into_owned()
    }

    /// Everything worth reading when something failed.
    pub fn context(&self, what: &str) -> String {
        let tail = |text: String, n: usize| {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        };
        format!(
            "{what}\n--- domain {}: {}\n--- console (tail)\n{}\n--- server (tail)\n{}\n--- dnsmasq (tail)\n{}\n--- sushy (tail)\n{}",
            self.domain,
            self.lab.domstate(&self.domain),
            tail(self.console(), 60),
            tail(self.log("server"), 80),
            tail(self.log("dnsmasq"), 20),
            tail(self.lab.log(&format!("sushy-{SUSHY_PORT}")), 20),
        )
    }

    /// `kiln ARGS` as the operator, inside the proxy namespace.
    pub fn kiln(&self, args: &[&str]) -> Output {
        self.kiln_with_stdin(args, None)
    }

    pub fn kiln_with_stdin(&self, args: &[&str], input: Option<&str>) -> Output {
        use std::io::Write;
        let mut child = self
            .proxy
            .command(bin_dir().join("kiln").to_str().expect("binary path"))
            .args(["--server", &self.server_url])
            .args(args)
            .env_remove("KILN_TOKEN")
            .env("KILN_TOKEN_FILE", self.dir.path().join("data/admin-token"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kiln");
        let mut stdin = child.stdin.take().expect("stdin");
        if let Some(input) = input {
            stdin.write_all(input.as_bytes()).expect("write kiln's stdin");
        }
        drop(stdin);
        child.wait_with_output().expect("kiln output")
    }

    /// `kiln apply -f -`; panics with the server's log if it fails.
    pub fn apply(&self, yaml: &str) -> String {
        let out = self.kiln_with_stdin(&["apply", "-f", "-"], Some(yaml));
        assert!(out.status.success(), "kiln apply failed: {}\n{}", stderr(&out), self.context("apply"));
        stdout(&out)
    }

    pub fn workflow(&self, name: &str) -> Value {
        let out = self.kiln(&["get", "workflows", name, "-o", "json"]);
        assert!(out.status.success(), "kiln get failed: {}", stderr(&out));
        serde_json::from_slice(&out.stdout).expect("workflow JSON")
    }

    /// Waits for the workflow to end; SUCCESS, FAILED or TIMEOUT.
    pub fn wait_finished(&self, name: &str, limit: Duration) -> Value {
        let mut last = Value::Null;
        let done = wait_until(limit, || {
            last = self.workflow(name);
            let done = matches!(last["state"].as_str(), Some("SUCCESS" | "FAILED" | "TIMEOUT"));
            if !done {
                // Each look is a CLI process; the VM needs the CPU more.
                std::thread::sleep(Duration::from_secs(1));
            }
            done
        });
        assert!(done.is_ok(), "{}", self.context(&format!("workflow {name} still {} after {limit:?}", last["state"])));
        last
    }

    /// The BMC jobs (`kiln get bmc-jobs -o json`).
    pub fn bmc_jobs(&self) -> Vec<Value> {
        let out = self.kiln(&["get", "bmc-jobs", "-o", "json"]);
        assert!(out.status.success(), "kiln get bmc-jobs failed: {}", stderr(&out));
        serde_json::from_slice(&out.stdout).expect("BMC jobs JSON")
    }

    /// Waits for the BMC job with key `key` to end; the job.
    pub fn wait_bmc_job(&self, key: &str, limit: Duration) -> Value {
        let mut job = Value::Null;
        let done = wait_until(limit, || {
            job = self.bmc_jobs().into_iter().find(|j| j["key"] == key).unwrap_or(Value::Null);
            let done = job["state"] == "succeeded" || job["state"] == "failed";
            if !done {
                std::thread::sleep(Duration::from_millis(500));
            }
            done
        });
        assert!(done.is_ok(), "{}", self.context(&format!("BMC job {key} did not end: {job}")));
        job
    }

    /// The first `n` bytes of the domain's disk, read from the host.
    pub fn disk_head(&self, n: usize) -> Vec<u8> {
        let mut bytes = std::fs::read(self.lab.disk_path(&self.domain)).unwrap_or_default();
        bytes.truncate(n);
        bytes
    }

    /// The action image every workflow of these tests uses.
    pub fn busybox(&self) -> String {
        format!("{}/{}/busybox:v1", self.registry, image_prefix())
    }

    /// Is the kiln server still running?
    pub fn server_running(&mut self) -> bool {
        !self.server.exited()
    }
}
