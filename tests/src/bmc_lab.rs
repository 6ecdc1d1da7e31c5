//! A BMC lab for tests: a private libvirtd running in a network namespace
//! the test creates, tiny QEMU (TCG) domains in it, and the BMC emulators
//! the Ironic and Metal3 projects test against in front of them:
//! sushy-tools (Redfish, libvirt driver, HTTP basic auth, TLS from a test CA)
//! and virtualbmc (IPMI over LAN).
//!
//! libvirtd runs unprivileged as `kiln-libvirt` (a user test-env.sh
//! creates), so it is a *session* daemon: its sockets, domains, nvram and
//! storage pool all live in this lab's temporary directory, nothing touches
//! /etc/libvirt or /var/lib/libvirt, and labs of parallel tests (or other
//! checkouts) never see each other. The emulators and `virsh` reach it by
//! its socket (`qemu+unix:///session?socket=…`). No domain has a network
//! other than QEMU's user-mode one inside the namespace, so no test traffic
//! leaves it.
//!
//! Tools come from `scripts/test-env.sh up`: `KILN_TEST_BMC_VENV` is the
//! venv with `sushy-emulator`, `vbmcd` and `vbmc`.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::Proc;

/// The unprivileged user libvirtd runs as (created by test-env.sh).
pub const LIBVIRT_USER: &str = "kiln-libvirt";

static LAB_COUNTER: AtomicU32 = AtomicU32::new(0);

/// The venv with the emulators (`KILN_TEST_BMC_VENV`).
pub fn venv() -> PathBuf {
    let venv = std::env::var("KILN_TEST_BMC_VENV")
        .expect("KILN_TEST_BMC_VENV is not set: run `scripts/test-env.sh up` and source its env file");
    PathBuf::from(venv)
}

/// A free loopback TCP port (bound and released; the emulator binds it next).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind a free port").local_addr().unwrap().port()
}

/// A free loopback UDP port.
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a free UDP port").local_addr().unwrap().port()
}

fn run(what: &str, command: &mut Command) -> Result<String> {
    let out = command.output().with_context(|| format!("{what}: cannot run {command:?}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn chown_to_libvirt(path: &Path) -> Result<()> {
    run("chown", Command::new("chown").arg("-R").arg(format!("{LIBVIRT_USER}:{LIBVIRT_USER}")).arg(path)).map(drop)
}

fn wait_until(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if ready() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("timed out after {limit:?} waiting for {what}")
}

/// A domain's hardware ([`Lab::define_domain_with`]).
pub struct Machine {
    pub memory_mib: u32,
    pub cpus: u32,
    pub disk_bytes: u64,
    pub nic: Nic,
    /// QEMU's `-cpu max` (`<cpu mode='maximum'>`) instead of TCG's default
    /// model (qemu64), which lacks what a distribution's userland expects.
    pub cpu_max: bool,
}

impl Default for Machine {
    fn default() -> Self {
        Self { memory_mib: 128, cpus: 1, disk_bytes: 1 << 20, nic: Nic::User, cpu_max: false }
    }
}

/// A domain's network interface (never with an option ROM: OVMF's own
/// network stack runs).
pub enum Nic {
    /// QEMU's user-mode network inside the lab's namespace.
    User,
    /// A tap the test made in the lab's namespace, owned by
    /// [`LIBVIRT_USER`], with this MAC.
    Tap { tap: String, mac: String },
}

/// Is something listening on TCP `127.0.0.1:port` (in `netns`, if given)?
fn listening(netns: Option<&str>, port: u16) -> bool {
    let connect = || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
    let Some(ns) = netns else { return connect() };
    let Ok(file) = std::fs::File::open(format!("/var/run/netns/{ns}")) else { return false };
    std::thread::scope(|s| {
        s.spawn(|| {
            use std::os::fd::AsRawFd;
            // SAFETY: setns on a valid namespace fd changes only this
            // thread's network namespace; the thread ends here.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            rc == 0 && connect()
        })
        .join()
        .unwrap_or(false)
    })
}

/// One lab: a netns, a libvirtd in it, and whatever domains and emulators
/// the test adds. Everything is stopped and removed on drop.
pub struct Lab {
    pub dir: tempfile::TempDir,
    pub netns: String,
    pub libvirt_uri: String,
    libvirtd: Option<Proc>,
    emulators: Vec<Proc>,
    domains: Vec<String>,
}

impl Lab {
    pub fn start() -> Result<Self> {
        Self::start_named("km-bmc")
    }

    /// A lab whose namespace is `PREFIX-PID-N` (tests with their own
    /// resource prefix).
    pub fn start_named(prefix: &str) -> Result<Self> {
        let n = LAB_COUNTER.fetch_add(1, Ordering::SeqCst);
        let netns = format!("{prefix}-{}-{n}", std::process::id());
        let dir = tempfile::Builder::new().prefix("kiln-bmc-lab-").tempdir()?;
        for sub in ["config", "runtime", "data", "cache", "images", "pool"] {
            std::fs::create_dir_all(dir.path().join(sub))?;
        }
        // The lab directory is the libvirt user's home; tempdir made it 0700 root.
        chown_to_libvirt(dir.path())?;
        run("ip netns add", Command::new("ip").args(["netns", "add", &netns]))?;
        let mut lab = Self {
            libvirt_uri: format!("qemu+unix:///session?socket={}/runtime/libvirt/libvirt-sock", dir.path().display()),
            dir,
            netns,
            libvirtd: None,
            emulators: Vec::new(),
            domains: Vec::new(),
        };
        run("ip link set lo up", Command::new("ip").args(["-n", &lab.netns, "link", "set", "lo", "up"]))?;
        let d = lab.dir.path().to_path_buf();
        let log = std::fs::File::create(d.join("libvirtd.log"))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &lab.netns, "setpriv"])
            .arg(format!("--reuid={LIBVIRT_USER}"))
            .arg(format!("--regid={LIBVIRT_USER}"))
            .args(["--clear-groups", "env"])
            .arg(format!("HOME={}", d.display()))
            .arg(format!("XDG_CONFIG_HOME={}/config", d.display()))
            .arg(format!("XDG_RUNTIME_DIR={}/runtime", d.display()))
            .arg(format!("XDG_DATA_HOME={}/data", d.display()))
            .arg(format!("XDG_CACHE_HOME={}/cache", d.display()))
            .args(["libvirtd", "--timeout", "0"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start libvirtd (apt-get install libvirt-daemon libvirt-daemon-driver-qemu)")?;
        lab.libvirtd = Some(Proc { child, name: "libvirtd".into() });
        let socket = d.join("runtime/libvirt/libvirt-sock");
        wait_until("libvirtd's socket", Duration::from_secs(30), || socket.exists())
            .with_context(|| std::fs::read_to_string(d.join("libvirtd.log")).unwrap_or_default())?;
        // sushy-tools downloads virtual media ISOs into the pool named "default".
        lab.virsh(&["pool-define-as", "default", "dir", "--target", &d.join("pool").display().to_string()])?;
        lab.virsh(&["pool-start", "default"])?;
        Ok(lab)
    }

    pub fn virsh(&self, args: &[&str]) -> Result<String> {
        run(&format!("virsh {}", args.join(" ")), Command::new("virsh").arg("-c").arg(&self.libvirt_uri).args(args))
    }

    /// Defines a tiny domain: q35, TCG, 128 MiB, OVMF (its own copy of the
    /// variable store), a 1 MiB raw disk, an empty SATA CD drive and a
    /// user-mode NIC without option ROM. It never gets as far as an OS; the
    /// firmware running is enough to show power and boot order changes.
    pub fn define_domain(&mut self, name: &str) -> Result<String> {
        self.define_domain_with(name, &Machine::default())
    }

    /// The raw disk image of domain `name`.
    pub fn disk_path(&self, name: &str) -> PathBuf {
        self.dir.path().join("images").join(format!("{name}.img"))
    }

    /// The serial console log of domain `name`.
    pub fn serial_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}-serial.log"))
    }

    /// Defines a domain as [`define_domain`](Self::define_domain) does,
    /// with `machine`'s memory, CPUs, disk size and NIC.
    pub fn define_domain_with(&mut self, name: &str, machine: &Machine) -> Result<String> {
        let d = self.dir.path();
        let disk = self.disk_path(name);
        std::fs::File::create(&disk)?.set_len(machine.disk_bytes)?;
        let vars = d.join("images").join(format!("{name}-vars.fd"));
        std::fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", &vars).context("copy OVMF vars (apt-get install ovmf)")?;
        chown_to_libvirt(&d.join("images"))?;
        let nic = match &machine.nic {
            Nic::User => "<interface type='user'><model type='virtio'/><rom enabled='no'/></interface>".to_string(),
            // An unprivileged libvirtd cannot make taps: the test made this
            // one (owned by the libvirt user) and put it on its bridge.
            Nic::Tap { tap, mac } => format!(
                "<interface type='ethernet'><mac address='{mac}'/><target dev='{tap}' managed='no'/><model type='virtio'/><rom enabled='no'/></interface>"
            ),
        };
        let xml = format!(
            r#"<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>{memory}</memory>
  <vcpu>{cpus}</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>
    <nvram>{vars}</nvram>
    <boot dev='hd'/>
  </os>
  <features><acpi/></features>
  {cpu}
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='{disk}'/><target dev='vda' bus='virtio'/></disk>
    <disk type='file' device='cdrom'><driver name='qemu' type='raw'/><target dev='sda' bus='sata'/><readonly/></disk>
    {nic}
    <serial type='file'><source path='{serial}'/></serial>
  </devices>
</domain>
"#,
            memory = machine.memory_mib,
            cpus = machine.cpus,
            cpu = if machine.cpu_max { "<cpu mode='maximum' check='none'/>" } else { "" },
            vars = vars.display(),
            disk = disk.display(),
            serial = self.serial_path(name).display(),
        );
        let file = d.join(format!("{name}.xml"));
        std::fs::write(&file, xml)?;
        self.virsh(&["define", &file.display().to_string()])?;
        self.domains.push(name.to_string());
        Ok(self.virsh(&["domuuid", name])?.trim().to_string())
    }

    /// `virsh domstate`: "running", "shut off", ...
    pub fn domstate(&self, name: &str) -> String {
        self.virsh(&["domstate", name]).map(|s| s.trim().to_string()).unwrap_or_else(|e| format!("error: {e}"))
    }

    /// The domain's id while running (a new one on every start), else None.
    pub fn domid(&self, name: &str) -> Option<u32> {
        self.virsh(&["domid", name]).ok()?.trim().parse().ok()
    }

    pub fn dumpxml(&self, name: &str) -> String {
        self.virsh(&["dumpxml", "--inactive", name]).unwrap_or_default()
    }

    /// Waits for `virsh domstate` to say `state`.
    pub fn wait_domstate(&self, name: &str, state: &str, limit: Duration) -> Result<()> {
        wait_until(&format!("domain {name} to be {state:?}"), limit, || self.domstate(name) == state)
            .with_context(|| format!("domain {name} is {:?}", self.domstate(name)))
    }

    fn spawn(&mut self, name: &str, command: &mut Command) -> Result<()> {
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.log")))?;
        // Own process group: vbmcd forks a process per BMC; the group goes with it.
        let child = command
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {name}: {command:?}"))?;
        self.emulators.push(Proc { child, name: name.into() });
        Ok(())
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Starts sushy-tools on `127.0.0.1:port` with basic auth for
    /// `user`/`password` and, given `tls` (cert PEM, key PEM), HTTPS.
    pub fn start_sushy(&mut self, port: u16, user: &str, password: &str, tls: Option<(&str, &str)>) -> Result<String> {
        self.start_sushy_in(None, port, user, password, tls)
    }

    /// [`start_sushy`](Self::start_sushy) inside network namespace
    /// `netns` (its loopback), for a kiln server that runs there.
    pub fn start_sushy_in(
        &mut self,
        netns: Option<&str>,
        port: u16,
        user: &str,
        password: &str,
        tls: Option<(&str, &str)>,
    ) -> Result<String> {
        let d = self.dir.path().to_path_buf();
        let htpasswd = d.join("sushy.htpasswd");
        let line = run("htpasswd", Command::new("htpasswd").args(["-Bbn", user, password]))?;
        std::fs::write(&htpasswd, line)?;
        let mut config = format!(
            "SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\n\
             SUSHY_EMULATOR_LISTEN_PORT = {port}\n\
             SUSHY_EMULATOR_LIBVIRT_URI = '{uri}'\n\
             SUSHY_EMULATOR_STATE_DIR = '{state}'\n\
             SUSHY_EMULATOR_AUTH_FILE = '{htpasswd}'\n\
             SUSHY_EMULATOR_STORAGE_POOL = 'default'\n\
             SUSHY_EMULATOR_BOOT_LOADER_MAP = {{'UEFI': {{'x86_64': '/usr/share/OVMF/OVMF_CODE_4M.fd'}}, 'Legacy': {{'x86_64': None}}}}\n\
             SUSHY_EMULATOR_SECURE_BOOT_DISABLED_NVRAM = '/usr/share/OVMF/OVMF_VARS_4M.fd'\n",
            uri = self.libvirt_uri,
            state = d.join("sushy-state").display(),
            htpasswd = htpasswd.display(),
        );
        let scheme = if let Some((cert, key)) = tls {
            std::fs::write(d.join("sushy-cert.pem"), cert)?;
            std::fs::write(d.join("sushy-key.pem"), key)?;
            config.push_str(&format!(
                "SUSHY_EMULATOR_SSL_CERT = '{}'\nSUSHY_EMULATOR_SSL_KEY = '{}'\n",
                d.join("sushy-cert.pem").display(),
                d.join("sushy-key.pem").display()
            ));
            "https"
        } else {
            "http"
        };
        let config_file = d.join(format!("sushy-{port}.conf"));
        std::fs::write(&config_file, config)?;
        let sushy = venv().join("bin/sushy-emulator");
        let mut command = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&sushy);
                c
            }
            None => Command::new(&sushy),
        };
        self.spawn(&format!("sushy-{port}"), command.env("SUSHY_EMULATOR_CONFIG", &config_file))?;
        let name = format!("sushy-{port}");
        wait_until("sushy-emulator to listen", Duration::from_secs(60), || listening(netns, port))
            .with_context(|| self.log(&name))?;
        Ok(format!("{scheme}://127.0.0.1:{port}"))
    }

    /// Starts vbmcd (its control port private to this lab) and an IPMI BMC
    /// for `domain` on UDP `127.0.0.1:port`.
    pub fn start_vbmc(&mut self, domain: &str, port: u16, user: &str, password: &str) -> Result<String> {
        let d = self.dir.path().to_path_buf();
        let config_dir = d.join("vbmc");
        std::fs::create_dir_all(&config_dir)?;
        let config = d.join("vbmc.conf");
        std::fs::write(
            &config,
            format!(
                "[default]\nconfig_dir = {}\npid_file = {}\nserver_port = {}\n[log]\nlogfile = {}\ndebug = true\n",
                config_dir.display(),
                d.join("vbmcd.pid").display(),
                free_port(),
                d.join("vbmcd-debug.log").display()
            ),
        )?;
        let vbmc = |args: &[&str]| -> Result<String> {
            run(
                &format!("vbmc {}", args.join(" ")),
                Command::new(venv().join("bin/vbmc")).env("VIRTUALBMC_CONFIG", &config).args(args),
            )
        };
        if !d.join("vbmcd.pid").exists() {
            self.spawn(
                "vbmcd",
                Command::new(venv().join("bin/vbmcd")).arg("--foreground").env("VIRTUALBMC_CONFIG", &config),
            )?;
            wait_until("vbmcd to answer", Duration::from_secs(60), || vbmc(&["list"]).is_ok())
                .with_context(|| self.log("vbmcd"))?;
        }
        let port_text = port.to_string();
        vbmc(&[
            "add",
            domain,
            "--port",
            &port_text,
            "--address",
            "127.0.0.1",
            "--libvirt-uri",
            &self.libvirt_uri,
            "--username",
            user,
            "--password",
            password,
        ])?;
        vbmc(&["start", domain])?;
        // vbmc start returns before the BMC's socket is bound.
        wait_until("the IPMI BMC to bind", Duration::from_secs(30), || {
            std::net::UdpSocket::bind(("127.0.0.1", port)).is_err()
        })?;
        Ok(format!("127.0.0.1:{port}"))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for emulator in self.emulators.iter_mut().rev() {
            // The process group this lab created for the emulator.
            let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", emulator.pid())]).status();
            emulator.kill();
        }
        for domain in &self.domains {
            let _ = self.virsh(&["destroy", domain]);
        }
        if let Some(mut libvirtd) = self.libvirtd.take() {
            libvirtd.kill();
        }
        // QEMU children of libvirtd outlive it; each domain's pid file names its QEMU.
        let run_dir = self.dir.path().join("runtime/libvirt/qemu/run");
        for domain in &self.domains {
            if let Ok(pid) = std::fs::read_to_string(run_dir.join(format!("{domain}.pid"))) {
                let _ = Command::new("kill").arg("-9").arg(pid.trim()).status();
            }
        }
        // libvirtd started a session virtlogd (detached, idles out after 120 s).
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("runtime/libvirt/virtlogd.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
        let _ = Command::new("ip").args(["netns", "delete", &self.netns]).status();
    }
}

/// A test CA and a server certificate for 127.0.0.1 signed by it:
/// (ca_pem, cert_pem, key_pem).
pub fn test_ca_and_server_cert() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

/// A fake Redfish service for load only (not a substitute for sushy-tools):
/// `systems` ComputerSystems at `/redfish/v1/Systems/0..systems`, all On,
/// that count every Reset they get. One tokio runtime of its own, HTTP/1.1
/// keep-alive, no authentication. `delay` is how long a Reset takes, as a
/// slow BMC's would.
pub struct FakeRedfish {
    pub url: String,
    /// Resets received per system, by index.
    pub resets: std::sync::Arc<std::sync::Mutex<Vec<u32>>>,
}

impl FakeRedfish {
    pub fn start(systems: usize, delay: Duration) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the fake BMC");
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let resets = std::sync::Arc::new(std::sync::Mutex::new(vec![0u32; systems]));
        let counted = resets.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let Ok((stream, _)) = listener.accept().await else { continue };
                    tokio::spawn(fake_connection(stream, counted.clone(), delay));
                }
            });
        });
        Self { url, resets }
    }
}

async fn fake_connection(
    mut stream: tokio::net::TcpStream,
    resets: std::sync::Arc<std::sync::Mutex<Vec<u32>>>,
    delay: Duration,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // One request: the head, then Content-Length bytes of body.
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let length: usize = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
            .unwrap_or(0);
        while buf.len() < head_end + length {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).to_string();
        buf.drain(..head_end + length);
        let mut words = head.split_whitespace();
        let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        let index = path
            .strip_prefix("/redfish/v1/Systems/")
            .and_then(|rest| rest.split('/').next())
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n < resets.lock().unwrap().len());
        let (status, reply) = match (method, index, path.ends_with("/Actions/ComputerSystem.Reset")) {
            ("GET", Some(n), false) => (
                "200 OK",
                serde_json::json!({
                    "Id": n.to_string(),
                    "PowerState": "On",
                    "Actions": {"#ComputerSystem.Reset": {
                        "target": format!("/redfish/v1/Systems/{n}/Actions/ComputerSystem.Reset"),
                        "ResetType@Redfish.AllowableValues": ["On", "ForceOff", "ForceRestart", "GracefulShutdown"]
                    }}
                })
                .to_string(),
            ),
            ("POST", Some(n), true) if body.contains("ResetType") => {
                tokio::time::sleep(delay).await;
                resets.lock().unwrap()[n] += 1;
                ("204 No Content", String::new())
            }
            _ => ("404 Not Found", r#"{"error":{"message":"no such resource"}}"#.to_string()),
        };
        // A 204 has no body and so no Content-Length.
        let length =
            if status.starts_with("204") { String::new() } else { format!("Content-Length: {}\r\n", reply.len()) };
        let response = format!("HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{length}\r\n{reply}");
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}
