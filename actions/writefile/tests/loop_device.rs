//! writefile against an ext4 filesystem on a loop device (needs root).

#[path = "../../kit/testsupport/ext4_loop.rs"]
mod disk;

use disk::{LoopDisk, action, text};

const BIN: &str = env!("CARGO_BIN_EXE_writefile");

#[test]
fn writes_nested_file_with_modes_and_owner_then_overwrites() {
    let disk = LoopDisk::new();
    disk.with_mounted(|m| {
        std::fs::create_dir(m.join("etc")).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
        std::fs::set_permissions(m.join("etc"), mode).unwrap();
    });
    let contents = "network:\n  version: 2\n  ethernets: {eth0: {dhcp4: true}}\n";
    let vars = [
        ("DEST_DISK", disk.device.as_str()),
        ("FS_TYPE", "ext4"),
        ("DEST_PATH", "/etc/netplan/kiln/01-kiln.yaml"),
        ("CONTENTS", contents),
        ("UID", "1000"),
        ("GID", "1001"),
        ("MODE", "0600"),
        ("DIRMODE", "0750"),
    ];
    let out = action(BIN, &vars);
    assert!(out.status.success(), "{}", text(&out));
    let summary =
        format!("wrote /etc/netplan/kiln/01-kiln.yaml ({} bytes, mode 0600, owner 1000:1001)", contents.len());
    assert!(text(&out).contains(&summary), "{}", text(&out));
    assert!(!disk.is_mounted(), "left mounted");
    assert_eq!(disk.read("/etc/netplan/kiln/01-kiln.yaml").unwrap(), contents.as_bytes());
    assert_eq!(disk.stat("/etc/netplan/kiln/01-kiln.yaml").unwrap(), ("regular".into(), 0o600, 1000, 1001));
    for dir in ["/etc/netplan", "/etc/netplan/kiln"] {
        assert_eq!(disk.stat(dir).unwrap(), ("directory".into(), 0o750, 1000, 1001), "{dir}");
    }
    assert_eq!(disk.stat("/etc").unwrap(), ("directory".into(), 0o755, 0, 0), "existing directory untouched");

    // Overwrite with binary contents and defaults: the old mode/owner go too.
    let mut vars2: Vec<(&str, &str)> = vars[..3].to_vec();
    vars2.push(("CONTENTS_BASE64", "AP8Kc2Vjb25k"));
    let out = action(BIN, &vars2);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(disk.read("/etc/netplan/kiln/01-kiln.yaml").unwrap(), b"\x00\xff\nsecond");
    assert_eq!(disk.stat("/etc/netplan/kiln/01-kiln.yaml").unwrap(), ("regular".into(), 0o644, 0, 0));
    assert_eq!(disk.list("/etc/netplan/kiln"), ["01-kiln.yaml"], "no temporary file left");

    // Empty is a file, not a missing variable.
    let out = action(BIN, &[("DEST_DISK", &disk.device), ("DEST_PATH", "/etc/empty"), ("CONTENTS", "")]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(disk.read("/etc/empty").unwrap(), b"");
    assert!(!disk.is_mounted());
}

#[test]
fn bad_configuration_touches_nothing_and_names_every_variable() {
    let disk = LoopDisk::new();
    let out = action(
        BIN,
        &[
            ("DEST_DISK", &disk.device),
            ("DEST_PATH", "/etc/../../escape"),
            ("MODE", "0899"),
            ("CONTENTS", "x"),
            ("BOOTCONFIG_CONTENTS", "kernel {}"),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let t = text(&out);
    for needle in [
        "DEST_PATH: \"/etc/../../escape\" must not contain '..'",
        "BOOTCONFIG_CONTENTS: only one of CONTENTS, BOOTCONFIG_CONTENTS can be set",
        "MODE:",
    ] {
        assert!(t.contains(needle), "{needle} not in {t}");
    }
    assert_eq!(disk.list("/"), ["lost+found"]);
    assert!(!disk.is_mounted());
}

#[test]
fn a_failed_write_still_unmounts() {
    let disk = LoopDisk::new();
    disk.with_mounted(|m| {
        assert!(disk.is_mounted(), "the leftover check sees mounts");
        std::fs::create_dir(m.join("taken")).unwrap()
    });
    let out = action(BIN, &[("DEST_DISK", &disk.device), ("DEST_PATH", "/taken"), ("CONTENTS", "x")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("/taken is a directory"), "{}", text(&out));
    assert!(!disk.is_mounted(), "left mounted after a failure");
}

/// The helper's own teardown: a process still working in the mount (as a
/// child forked by a parallel test holds copies of the descriptors until
/// it execs) is waited for, not an error, and the writes reach the image.
#[test]
fn the_helper_waits_for_a_holder_of_the_mount() {
    let disk = LoopDisk::new();
    let started = std::time::Instant::now();
    disk.with_mounted(|m| {
        std::fs::write(m.join("kept"), "yes\n").unwrap();
        // The sleep is the scenario: a holder that lets go by itself, 1 s
        // after the unmount is first tried.
        let mut holder = std::process::Command::new("sleep").arg("1").current_dir(m).spawn().unwrap();
        std::thread::spawn(move || holder.wait());
    });
    assert!(started.elapsed() >= std::time::Duration::from_millis(900), "unmounted while held?");
    assert!(!disk.is_mounted());
    assert_eq!(disk.read("/kept").unwrap(), b"yes\n");
}

/// As the hub: no CONTENTS at all writes an empty file.
#[test]
fn unset_contents_writes_an_empty_file() {
    let disk = LoopDisk::new();
    let out = action(BIN, &[("DEST_DISK", &disk.device), ("FS_TYPE", "ext4"), ("DEST_PATH", "/etc/cloud/empty")]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(disk.read("/etc/cloud/empty").unwrap(), b"");
}

/// EKS Anywhere's Bottlerocket template: BOOTCONFIG_CONTENTS becomes the
/// kernel's bootconfig format in /bootconfig.data.
#[test]
fn bootconfig_contents_is_written_in_the_kernels_format() {
    let disk = LoopDisk::new();
    let text_in = "kernel {\n    console = \"tty0\", \"ttyS0,115200n8\"\n}\n";
    let out = action(
        BIN,
        &[
            ("DEST_DISK", &disk.device),
            ("FS_TYPE", "ext4"),
            ("DEST_PATH", "/bootconfig.data"),
            ("BOOTCONFIG_CONTENTS", text_in),
            ("UID", "0"),
            ("GID", "0"),
            ("MODE", "0644"),
            ("DIRMODE", "0700"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let data = disk.read("/bootconfig.data").unwrap();
    assert!(data.ends_with(b"#BOOTCONFIG\n"));
    let footer = data.len() - 20;
    let size = u32::from_le_bytes(data[footer..footer + 4].try_into().unwrap()) as usize;
    let sum = u32::from_le_bytes(data[footer + 4..footer + 8].try_into().unwrap());
    assert_eq!(size, footer, "the size counts everything before the footer");
    assert_eq!(size % 4, 0);
    assert_eq!(&data[..text_in.len()], text_in.as_bytes());
    assert!(data[text_in.len()..size].iter().all(|b| *b == 0));
    assert_eq!(sum, text_in.bytes().map(u32::from).sum::<u32>());
}

/// HEGEL_URLS: each metadata service in turn until one gives user-data.
#[test]
fn hegel_urls_take_the_first_answer() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let mut conn = conn.unwrap();
            let mut req = [0u8; 4096];
            let n = conn.read(&mut req).unwrap();
            let line = String::from_utf8_lossy(&req[..n]).lines().next().unwrap_or_default().to_string();
            seen2.lock().unwrap().push(line.clone());
            let reply: &[u8] = if line.starts_with("GET /good/2009-04-04/user-data ") {
                b"HTTP/1.1 200 OK\r\nContent-Length: 23\r\nConnection: close\r\n\r\n[settings]\nmotd = \"hi\"\n"
            } else {
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            };
            let _ = conn.write_all(reply);
        }
    });
    let disk = LoopDisk::new();
    // Nothing listens on port 9 (discard); then a 404; then the answer.
    let urls = format!("http://127.0.0.1:9,{base}/missing,{base}/good");
    let out = action(
        BIN,
        &[("DEST_DISK", &disk.device), ("FS_TYPE", "ext4"), ("DEST_PATH", "/user-data.toml"), ("HEGEL_URLS", &urls)],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(disk.read("/user-data.toml").unwrap(), b"[settings]\nmotd = \"hi\"\n");
    assert_eq!(
        *seen.lock().unwrap(),
        ["GET /missing/2009-04-04/user-data HTTP/1.1", "GET /good/2009-04-04/user-data HTTP/1.1"]
    );
    // None answers: a failure naming each, and nothing written.
    let out = action(
        BIN,
        &[("DEST_DISK", &disk.device), ("DEST_PATH", "/none.toml"), ("HEGEL_URLS", &format!("{base}/missing"))],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("no user-data from HEGEL_URLS"), "{}", text(&out));
    assert!(disk.read("/none.toml").is_none());
}

/// Two network namespaces joined by a veth pair, a DHCP server (busybox
/// udhcpd) on one end; removed on drop.
struct DhcpNet {
    client_ns: String,
    server_ns: String,
    server: std::process::Child,
    _dir: tempfile::TempDir,
}

impl DhcpNet {
    fn new() -> DhcpNet {
        let id = std::process::id() % 100_000;
        let (client_ns, server_ns) = (format!("kiln-wf-c{id}"), format!("kiln-wf-s{id}"));
        let ip = |args: &str| {
            let ok = std::process::Command::new("ip").args(args.split(' ')).status().unwrap().success();
            assert!(ok, "ip {args}");
        };
        ip(&format!("netns add {client_ns}"));
        ip(&format!("netns add {server_ns}"));
        ip(&format!("link add kwfs{id} netns {server_ns} type veth peer name kwfc netns {client_ns}"));
        ip(&format!("-n {server_ns} addr add 10.77.0.1/24 dev kwfs{id}"));
        ip(&format!("-n {server_ns} link set kwfs{id} up"));
        ip(&format!("-n {client_ns} link set kwfc up"));
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("udhcpd.conf");
        std::fs::write(
            &conf,
            format!(
                "start 10.77.0.50\nend 10.77.0.60\ninterface kwfs{id}\nlease_file {}\npidfile {}\n\
                 option subnet 255.255.255.0\noption router 10.77.0.1\noption dns 10.77.0.2 10.77.0.3\n",
                dir.path().join("leases").display(),
                dir.path().join("pid").display()
            ),
        )
        .unwrap();
        std::fs::write(dir.path().join("leases"), b"").unwrap();
        let server = std::process::Command::new("ip")
            .args(["netns", "exec", &server_ns, "busybox", "udhcpd", "-f"])
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        DhcpNet { client_ns, server_ns, server, _dir: dir }
    }

    /// Runs writefile in the client namespace (interface `kwfc`).
    fn writefile(&self, vars: &[(&str, &str)]) -> std::process::Output {
        std::process::Command::new("ip")
            .args(["netns", "exec", &self.client_ns, BIN])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(vars.iter().copied())
            .output()
            .unwrap()
    }

    fn stop_server(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }

    fn client_mac(&self) -> String {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &self.client_ns, "cat", "/sys/class/net/kwfc/address"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }
}

impl Drop for DhcpNet {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        for ns in [&self.client_ns, &self.server_ns] {
            let _ = std::process::Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// EKS Anywhere's STATIC_NETPLAN and STATIC_BOTTLEROCKET: a real DHCP
/// server's offer, written as static configuration.
#[test]
fn static_netplan_and_bottlerocket_from_a_dhcp_offer() {
    let mut net = DhcpNet::new();
    let mac = net.client_mac();
    let disk = LoopDisk::new();
    let out = net.writefile(&[
        ("DEST_DISK", &disk.device),
        ("FS_TYPE", "ext4"),
        ("DEST_PATH", "/etc/netplan/config.yaml"),
        ("STATIC_NETPLAN", "true"),
        ("IFNAME", "kwfc"),
        ("DHCP_TIMEOUT", "20s"),
        ("MODE", "0600"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let netplan = String::from_utf8(disk.read("/etc/netplan/config.yaml").unwrap()).unwrap();
    let expected = format!(
        "network:\n    version: 2\n    renderer: networkd\n    ethernets:\n        id0:\n            match:\n                \
         macaddress: {mac}\n            addresses:\n                - 10.77.0.5X/24\n            nameservers:\n                \
         addresses: [10.77.0.2, 10.77.0.3]\n            routes:\n                - to: default\n                  via: 10.77.0.1\n"
    );
    // The address is whichever the server picked from its pool
    // (10.77.0.50-60: udhcpd may offer any free one); the rest is exact.
    let at = expected.find("10.77.0.5X").unwrap();
    assert_eq!(netplan[..at], expected[..at], "{netplan}");
    let end = at + netplan[at..].find('/').expect("a prefix length after the address");
    let offered: std::net::Ipv4Addr = netplan[at..end].parse().expect("an address");
    assert!((50..=60).contains(&offered.octets()[3]) && offered.octets()[..3] == [10, 77, 0], "{netplan}");
    assert_eq!(netplan[end..], expected[at + 10..], "{netplan}");
    assert_eq!(disk.stat("/etc/netplan/config.yaml").unwrap().1, 0o600);

    disk.with_mounted(|m| std::fs::write(m.join("user-data.toml"), "[settings]\n").unwrap());
    let out = net.writefile(&[
        ("DEST_DISK", &disk.device),
        ("DEST_PATH", "/net.toml"),
        ("STATIC_BOTTLEROCKET", "true"),
        ("IFNAME", "kwfc"),
        ("DHCP_TIMEOUT", "20s"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let toml = String::from_utf8(disk.read("/net.toml").unwrap()).unwrap();
    assert!(toml.starts_with(&format!("# Version is required, it will change as we support\n# additional settings\nversion = 3\n\n[\"{mac}\".static4]\naddresses = [\"10.77.0.")), "{toml}");
    assert!(
        toml.ends_with(&format!(
            "/24\"]\n\n[[\"{mac}\".route]]\nto = \"default\"\nvia = \"10.77.0.1\"\nroute-metric = 100\n"
        )),
        "{toml}"
    );
    assert_eq!(
        disk.read("/user-data.toml").unwrap(),
        b"[settings]\n\n\n[settings.dns]\nname-servers = [\"10.77.0.2\", \"10.77.0.3\"]\n\n"
    );

    // No server answering: DHCP_TIMEOUT ends it, nothing written.
    net.stop_server();
    let out = net.writefile(&[
        ("DEST_DISK", &disk.device),
        ("DEST_PATH", "/none.yaml"),
        ("STATIC_NETPLAN", "true"),
        ("IFNAME", "kwfc"),
        ("DHCP_TIMEOUT", "1s"),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("no DHCP offer on kwfc within 1s (DHCP_TIMEOUT)"), "{}", text(&out));
    assert!(disk.read("/none.yaml").is_none());
}
