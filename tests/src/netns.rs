//! Network namespaces a test creates for itself (network boot tests: DHCP
//! and TFTP traffic never leaves them), and a kiln server running inside
//! one. Every name starts with the caller's prefix, so tests running at
//! once (and other people's) never share a namespace or an interface.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::{Proc, bin_dir, stderr, stdout, wait_until};

/// Runs a command, failing with its output when it fails.
pub fn run(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0]).args(&args[1..]).output().with_context(|| format!("run {args:?}"))?;
    if !out.status.success() {
        bail!("{args:?} failed: {}{}", stdout(&out), stderr(&out));
    }
    Ok(stdout(&out))
}

/// A short id for names: interface names have 15 characters at most.
pub fn short_id() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{:05x}", (n ^ (std::process::id() << 8) ^ N.fetch_add(1, Ordering::Relaxed)) & 0xfffff)
}

/// A network namespace, deleted (with its interfaces) when dropped.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: &str) -> Result<Self> {
        run(&["ip", "netns", "add", name])?;
        let ns = Self { name: name.to_string() };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip -n NAME ARGS...`
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["ip", "-n", &self.name];
        all.extend_from_slice(args);
        run(&all)
    }

    /// A command run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs `args` inside the namespace and returns its output, whatever
    /// its exit status.
    pub fn output(&self, args: &[&str]) -> Output {
        self.command(args[0]).args(&args[1..]).output().expect("ip netns exec")
    }

    /// Runs `f` on a thread inside the namespace: sockets it opens live
    /// there.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let file = std::fs::File::open(&path).expect("netns file");
                use std::os::fd::AsRawFd;
                // SAFETY: setns on a valid namespace fd changes only this
                // thread's network namespace; the thread ends with `f`.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .expect("thread in the namespace")
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// A veth pair: `a` in namespace `na`, `b` in `nb`, both up.
pub fn veth(na: &Netns, a: &str, nb: &Netns, b: &str) -> Result<()> {
    run(&["ip", "link", "add", a, "netns", &na.name, "type", "veth", "peer", "name", b, "netns", &nb.name])?;
    na.ip(&["link", "set", a, "up"])?;
    nb.ip(&["link", "set", b, "up"])?;
    Ok(())
}

/// A kiln server (plain HTTP) running inside a namespace, with its own data
/// directory; killed when dropped.
pub struct NsServer {
    pub proc: Proc,
    pub dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT` inside the namespace.
    pub url: String,
    pub ns: String,
}

impl NsServer {
    /// Listens on `127.0.0.1:0` unless `args` has a `--listen` of its own
    /// (a machine in the namespace must reach the agent service).
    pub fn start(ns: &Netns, args: &[&str]) -> Result<Self> {
        // A `--listen` among the arguments is where the server listens.
        if let Some(i) = args.iter().position(|a| *a == "--listen") {
            let listen = *args.get(i + 1).context("--listen without an address")?;
            let rest: Vec<&str> =
                args.iter().enumerate().filter(|(j, _)| *j != i && *j != i + 1).map(|(_, a)| *a).collect();
            return Self::start_at(ns, listen, &rest);
        }
        Self::start_at(ns, "127.0.0.1:0", args)
    }

    /// Listening on `listen` (an address of the namespace): where machines
    /// on the site network must reach the server's API, not only its boot
    /// services.
    pub fn start_at(ns: &Netns, listen: &str, args: &[&str]) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let log = std::fs::File::create(dir.path().join("server.log"))?;
        let addr_file = dir.path().join("server.addr");
        let child = ns
            .command(bin_dir().join("kiln-server").to_str().unwrap())
            .args(["--plaintext", "--listen", listen, "--data-dir"])
            .arg(dir.path().join("data"))
            .arg("--addr-file")
            .arg(&addr_file)
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("start kiln-server")?;
        let mut proc = Proc { child, name: "kiln-server".into() };
        let started = wait_until(Duration::from_secs(20), || addr_file.exists() || proc.exited());
        let server = Self { url: String::new(), proc, dir, ns: ns.name.clone() };
        if started.is_err() || !addr_file.exists() {
            bail!("kiln-server did not start:\n{}", server.log());
        }
        let url = format!("http://{}", std::fs::read_to_string(&addr_file)?.trim());
        Ok(Self { url, ..server })
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Waits until the log has a line containing every one of `parts`.
    pub fn wait_log(&self, parts: &[&str], limit: Duration) -> Result<()> {
        wait_until(limit, || self.log().lines().any(|l| parts.iter().all(|p| l.contains(p))))
            .with_context(|| format!("no log line with {parts:?}:\n{}", self.log()))
    }

    /// `kiln apply -f -` inside the namespace, as the operator.
    pub fn apply(&self, yaml: &str) -> Result<String> {
        use std::io::Write;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(bin_dir().join("kiln"))
            .args(["--server", &self.url, "apply", "-f", "-"])
            .env_remove("KILN_TOKEN")
            .env("KILN_TOKEN_FILE", self.admin_token_file())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child.stdin.take().unwrap().write_all(yaml.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("kiln apply failed: {}\n{}", stderr(&out), self.log());
        }
        Ok(stdout(&out))
    }

    pub fn admin_token_file(&self) -> PathBuf {
        self.dir.path().join("data").join("admin-token")
    }

    /// `kiln ARGS...` inside the namespace, as the operator.
    pub fn kiln(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(bin_dir().join("kiln"))
            .args(["--server", &self.url])
            .args(args)
            .env_remove("KILN_TOKEN")
            .env("KILN_TOKEN_FILE", self.admin_token_file())
            .output()
            .expect("run kiln")
    }

    /// `kiln get workflows ID -o json`.
    pub fn workflow(&self, id: &str) -> Result<serde_json::Value> {
        let out = self.kiln(&["get", "workflows", id, "-o", "json"]);
        if !out.status.success() {
            bail!("kiln get workflows {id}: {}", stderr(&out));
        }
        serde_json::from_slice(&out.stdout).context("workflow JSON")
    }
}

/// A TCP relay from an address inside a namespace to one outside it (the
/// test's registry on the host's loopback, for a VM on the namespace's
/// bridge): the listening socket is made in the namespace, the upstream
/// connections from the caller's. Stops, and cuts its connections, when
/// dropped.
pub struct Relay {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Relay {
    pub fn start(ns: &Netns, listen: &str, upstream: &str) -> Result<Self> {
        use std::net::{TcpListener, TcpStream};
        use std::sync::atomic::Ordering;
        let listener = ns
            .enter(|| TcpListener::bind(listen))
            .with_context(|| format!("relay: listen on {listen} in {}", ns.name))?;
        // Non-blocking, so that the loop sees the stop flag: nothing in the
        // caller's namespace could connect to wake a blocking accept.
        listener.set_nonblocking(true)?;
        let relay = Self { stop: Default::default(), open: Default::default() };
        let (stop, open, upstream) = (relay.stop.clone(), relay.open.clone(), upstream.to_string());
        // Spawned from the caller's thread, so in the caller's namespace.
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let client = match listener.accept() {
                    Ok((client, _)) => client,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                    Err(_) => continue,
                };
                let Ok(server) = TcpStream::connect(&upstream) else { continue };
                let _ = client.set_nonblocking(false);
                let clones = (client.try_clone(), server.try_clone(), client.try_clone(), server.try_clone());
                let (Ok(c2), Ok(s2), Ok(c3), Ok(s3)) = clones else { continue };
                open.lock().unwrap().extend([c3, s3]);
                for (mut from, mut into) in [(client, s2), (server, c2)] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut into);
                        let _ = into.shutdown(std::net::Shutdown::Write);
                    });
                }
            }
        });
        Ok(relay)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// A site network: a bridge in its own namespace with a DHCP server that
/// hands out addresses only (dnsmasq, `PREFIX.100-150`, router `PREFIX.1`),
/// and a second namespace joined to the bridge by a veth, at `PREFIX.2`, for
/// kiln's ProxyDHCP (two DHCP servers cannot share port 67 in one
/// namespace). With `ra`, the bridge also sends IPv6 router advertisements:
/// without them iPXE waits ~13 s for IPv6 autoconfiguration. Without
/// `dhcp4`, dnsmasq does no DHCPv4 at all (kiln is the DHCP server).
pub struct Site {
    // Declared first, so dropped first: dnsmasq ends before its namespace.
    _dnsmasq: Proc,
    pub site: Netns,
    pub proxy: Netns,
    pub bridge: String,
    /// The proxy's interface in `proxy`.
    pub proxy_if: String,
    dir: tempfile::TempDir,
}

impl Site {
    pub fn start(id: &str, prefix: &str, ra: bool, dhcp4: bool) -> Result<Self> {
        Self::start_tagged("kb", id, prefix, ra, dhcp4)
    }

    /// With `tag` starting every namespace and interface name (2
    /// characters: interface names have 15 at most).
    pub fn start_tagged(tag: &str, id: &str, prefix: &str, ra: bool, dhcp4: bool) -> Result<Self> {
        let site = Netns::new(&format!("{tag}-site-{id}"))?;
        let proxy = Netns::new(&format!("{tag}-prx-{id}"))?;
        let bridge = format!("{tag}br{id}");
        site.ip(&["link", "add", &bridge, "type", "bridge", "forward_delay", "0", "stp_state", "0"])?;
        site.ip(&["addr", "add", &format!("{prefix}.1/24"), "dev", &bridge])?;
        site.ip(&["link", "set", &bridge, "up"])?;
        let proxy_if = format!("{tag}p{id}");
        veth(&proxy, &proxy_if, &site, &format!("{tag}pb{id}"))?;
        site.ip(&["link", "set", &format!("{tag}pb{id}"), "master", &bridge])?;
        proxy.ip(&["addr", "add", &format!("{prefix}.2/24"), "dev", &proxy_if])?;
        let dir = tempfile::tempdir()?;
        let log_path = dir.path().join("dnsmasq.log");
        let log = std::fs::File::create(&log_path)?;
        let mut args = vec![
            "--keep-in-foreground".to_string(),
            "--conf-file=/dev/null".into(),
            "--port=0".into(),
            format!("--interface={bridge}"),
            "--bind-interfaces".into(),
            // No ping before an offer: it delays each by seconds.
            "--no-ping".into(),
            format!("--dhcp-leasefile={}", dir.path().join("leases").display()),
            format!("--pid-file={}", dir.path().join("pid").display()),
            "--log-dhcp".into(),
            "--log-facility=-".into(),
        ];
        if dhcp4 {
            args.push(format!("--dhcp-range={prefix}.100,{prefix}.150,255.255.255.0,1h"));
            args.push(format!("--dhcp-option=option:router,{prefix}.1"));
        }
        if ra {
            site.ip(&["addr", "add", "fd00:6b62::1/64", "dev", &bridge, "nodad"])?;
            args.extend(["--enable-ra".into(), "--dhcp-range=fd00:6b62::,ra-only,64".into()]);
        }
        let child = site
            .command("dnsmasq")
            .args(&args)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("dnsmasq (apt-get install dnsmasq-base)")?;
        let dnsmasq = Proc { child, name: "dnsmasq".into() };
        let started = wait_until(Duration::from_secs(10), || {
            std::fs::read_to_string(&log_path).unwrap_or_default().contains("started, version")
        });
        let s = Self { _dnsmasq: dnsmasq, site, proxy, bridge, proxy_if, dir };
        if started.is_err() {
            bail!("dnsmasq did not start: {}", s.dnsmasq_log());
        }
        Ok(s)
    }

    pub fn dnsmasq_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dnsmasq.log")).unwrap_or_default()
    }
}
