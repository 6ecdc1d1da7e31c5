//! kiln's DHCP, ProxyDHCP and TFTP services against real clients, inside
//! network namespaces this test creates (prefix `kb`): busybox udhcpc gets
//! its reservation from kiln's DHCP server and nothing for an unknown MAC;
//! beside a site DHCP server (dnsmasq, in its own namespace), kiln's
//! ProxyDHCP answers PXE, UEFI HTTP boot and iPXE clients it boots and no
//! one else; busybox tftp and tftp-hpa fetch the iPXE binaries
//! byte-identical, and a path outside the iPXE directory is refused.
//!
//! Needs root, iproute2, busybox, dnsmasq, tftp-hpa and Debian's ipxe
//! (scripts/test-env.sh installs them).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use dhcproto::v4::{Architecture, DhcpOption, Flags, Message, MessageType, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use kiln_tests::netns::{Netns, NsServer, Site, run, short_id, veth};
use kiln_tests::stdout;

const IPXE_DIR: &str = "/usr/lib/ipxe";

/// A hook directory: the DHCP services boot a machine only when the server
/// has a hook image to chain to.
fn hook_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("vmlinuz"), b"kernel").unwrap();
    std::fs::write(d.path().join("initramfs.img"), b"initramfs").unwrap();
    d
}

/// A template and a pending workflow for hardware `hw` (MAC `mac`): the
/// netboot gate opens for it. No agent runs it.
fn workflow(hw: &str, mac: &str) -> String {
    format!(
        "kind: Template\nname: t-{hw}\ndata: |\n  version: \"0.1\"\n  name: t\n  tasks:\n    - name: t\n      \
         worker: \"{{{{.device_1}}}}\"\n      actions:\n        - {{name: a, image: \"127.0.0.1:5000/a:v1\"}}\n\
         ---\nkind: Workflow\nname: w-{hw}\ntemplate: t-{hw}\nhardware: {hw}\nhardware_map: {{device_1: \"{mac}\"}}\n"
    )
}

/// busybox udhcpc on `iface` in `ns`: the variables its script saw when it
/// got a lease, or `None` when it got none.
fn udhcpc(ns: &Netns, iface: &str, extra: &[&str]) -> Option<String> {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("script");
    let out_file = dir.path().join("lease");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$1\" = bound ] && echo \"ip=$ip subnet=$subnet router=$router dns=$dns hostname=$hostname \
             domain=$domain lease=$lease serverid=$serverid boot_file=$boot_file siaddr=$siaddr\" > {}\nexit 0\n",
            out_file.display()
        ),
    )
    .unwrap();
    run(&["chmod", "+x", script.to_str().unwrap()]).unwrap();
    let mut args = vec!["busybox", "udhcpc", "-i", iface, "-f", "-q", "-n", "-t", "3", "-T", "1", "-s"];
    args.push(script.to_str().unwrap());
    args.extend_from_slice(extra);
    let out = ns.output(&args);
    let lease = std::fs::read_to_string(&out_file).ok().map(|l| l.trim().to_string());
    assert_eq!(out.status.success(), lease.is_some(), "udhcpc: {}{}", stdout(&out), kiln_tests::stderr(&out));
    lease
}

fn field<'a>(lease: &'a str, name: &str) -> &'a str {
    lease.split(' ').find_map(|kv| kv.strip_prefix(&format!("{name}="))).unwrap_or_default()
}

fn ipxe_file(name: &str) -> Vec<u8> {
    std::fs::read(format!("{IPXE_DIR}/{name}")).expect("Debian's ipxe package (apt-get install ipxe)")
}

#[test]
fn kiln_as_the_dhcp_server_hands_out_reservations_only() {
    let id = short_id();
    let srv = Netns::new(&format!("kb-dsrv-{id}")).unwrap();
    let cli = Netns::new(&format!("kb-dcli-{id}")).unwrap();
    let (s_if, c_if) = (format!("kbs{id}"), format!("kbc{id}"));
    veth(&srv, &s_if, &cli, &c_if).unwrap();
    srv.ip(&["addr", "add", "10.71.0.1/24", "dev", &s_if]).unwrap();
    let mac = kiln_tests::random_mac();
    cli.ip(&["link", "set", &c_if, "address", &mac]).unwrap();

    let hook = hook_dir();
    let server = NsServer::start(
        &srv,
        &[
            "--dhcp-listen",
            &s_if,
            "--tftp-listen",
            "10.71.0.1:69",
            "--netboot-listen",
            "10.71.0.1:7100",
            "--ipxe-dir",
            IPXE_DIR,
            "--hook-dir",
            hook.path().to_str().unwrap(),
        ],
    )
    .unwrap();
    server
        .apply(&format!(
            "kind: Hardware\nname: m1\ninterfaces:\n- dhcp:\n    mac: {mac}\n    hostname: m1\n    domain_name: lab.test\n    \
             lease_time: 600\n    name_servers: [10.71.0.53, 10.71.0.54]\n    \
             ip: {{address: 10.71.0.50, netmask: 255.255.255.0, gateway: 10.71.0.1}}\n"
        ))
        .unwrap();

    // A plain client: its reservation, every field from the Hardware.
    let lease = udhcpc(&cli, &c_if, &[]).expect("a lease for the reserved MAC");
    assert_eq!(
        [
            field(&lease, "ip"),
            field(&lease, "subnet"),
            field(&lease, "router"),
            field(&lease, "dns"),
            field(&lease, "hostname"),
            field(&lease, "domain"),
            field(&lease, "lease"),
            field(&lease, "serverid"),
            field(&lease, "boot_file"),
        ],
        ["10.71.0.50", "255.255.255.0", "10.71.0.1", "10.71.0.53", "m1", "lab.test", "600", "10.71.0.1", ""],
        "{lease}"
    );
    assert!(lease.contains("dns=10.71.0.53 10.71.0.54"), "{lease}");

    // A PXE client of a machine with no work: an address, no boot file.
    let pxe = ["-V", "PXEClient:Arch:00007:UNDI:003000", "-x", "0x5d:0007"];
    let lease = udhcpc(&cli, &c_if, &pxe).unwrap();
    assert_eq!((field(&lease, "ip"), field(&lease, "boot_file")), ("10.71.0.50", ""), "{lease}");
    // With a pending workflow: the UEFI iPXE, from this server.
    server.apply(&workflow("m1", &mac)).unwrap();
    let lease = udhcpc(&cli, &c_if, &pxe).unwrap();
    assert_eq!(
        (field(&lease, "ip"), field(&lease, "boot_file"), field(&lease, "siaddr")),
        ("10.71.0.50", "ipxe.efi", "10.71.0.1"),
        "{lease}"
    );

    // Malformed packets are logged and survived.
    cli.ip(&["addr", "add", "10.71.0.50/24", "dev", &c_if]).unwrap();
    cli.enter(|| {
        let s = std::net::UdpSocket::bind("10.71.0.50:0").unwrap();
        for junk in [&b"junk"[..], &[1u8, 1, 200, 0][..], &[0u8; 300][..]] {
            s.send_to(junk, "10.71.0.1:67").unwrap();
        }
    });
    server.wait_log(&["dhcp: malformed packet ignored"], Duration::from_secs(10)).unwrap();

    // TFTP: busybox with a block size, and tftp-hpa, byte-identical.
    let out_dir = tempfile::tempdir().unwrap();
    let got = out_dir.path().join("ipxe.efi");
    let out = cli.output(&[
        "busybox",
        "tftp",
        "-g",
        "-b",
        "1468",
        "-r",
        "ipxe.efi",
        "-l",
        got.to_str().unwrap(),
        "10.71.0.1",
    ]);
    assert!(out.status.success(), "busybox tftp: {}\n{}", kiln_tests::stderr(&out), server.log());
    assert!(std::fs::read(&got).unwrap() == ipxe_file("ipxe.efi"), "ipxe.efi differs");
    let got = out_dir.path().join("undionly.kpxe");
    let out = cli.output(&["tftp", "-m", "binary", "10.71.0.1", "-c", "get", "undionly.kpxe", got.to_str().unwrap()]);
    assert!(out.status.success(), "tftp-hpa: {}{}", stdout(&out), kiln_tests::stderr(&out));
    assert!(std::fs::read(&got).unwrap() == ipxe_file("undionly.kpxe"), "undionly.kpxe differs");
    // A path out of the directory is refused, and nothing is written.
    for escape in ["../../../etc/passwd", "/../etc/hostname"] {
        let got = out_dir.path().join("escape");
        let out = cli.output(&["busybox", "tftp", "-g", "-r", escape, "-l", got.to_str().unwrap(), "10.71.0.1"]);
        assert!(!out.status.success(), "{escape} was served");
        assert!(std::fs::read(&got).unwrap_or_default().is_empty(), "{escape} was served");
    }
    server.wait_log(&["tftp: refused", "etc/passwd"], Duration::from_secs(5)).unwrap();

    // An unknown MAC gets nothing at all.
    cli.ip(&["addr", "flush", "dev", &c_if]).unwrap();
    let stranger = kiln_tests::random_mac();
    cli.ip(&["link", "set", &c_if, "address", &stranger]).unwrap();
    assert_eq!(udhcpc(&cli, &c_if, &[]), None);
    server.wait_log(&[&stranger, "no reservation for this MAC"], Duration::from_secs(5)).unwrap();
}

/// A DHCP client by hand, in a namespace: sends one request and collects
/// the replies to it for a while.
fn exchange(ns: &Netns, iface: &str, to: SocketAddr, msg: &Message, wait: Duration) -> Vec<Message> {
    ns.enter(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let sock = kiln_boot_services::net::dhcp_socket(iface, 68).unwrap();
            let mut buf = Vec::new();
            msg.encode(&mut Encoder::new(&mut buf)).unwrap();
            sock.send_to(&buf, to).await.unwrap();
            let mut replies = Vec::new();
            let end = Instant::now() + wait;
            let mut b = vec![0u8; 1500];
            while let Ok(Ok((n, _))) = tokio::time::timeout_at(end.into(), sock.recv_from(&mut b)).await {
                let m = Message::decode(&mut Decoder::new(&b[..n])).unwrap();
                if m.xid() == msg.xid() {
                    replies.push(m);
                }
            }
            replies
        })
    })
}

fn mac_bytes(mac: &str) -> Vec<u8> {
    mac.split(':').map(|p| u8::from_str_radix(p, 16).unwrap()).collect()
}

fn request(mac: &str, msg_type: MessageType, opts: Vec<DhcpOption>) -> Message {
    let u = Ipv4Addr::UNSPECIFIED;
    let mut m = Message::new(u, u, u, u, &mac_bytes(mac));
    m.set_flags(Flags::default().set_broadcast());
    m.opts_mut().insert(DhcpOption::MessageType(msg_type));
    for o in opts {
        m.opts_mut().insert(o);
    }
    m
}

fn client_opts(class: &str, arch: u16) -> Vec<DhcpOption> {
    vec![
        DhcpOption::ClassIdentifier(class.as_bytes().to_vec()),
        DhcpOption::ClientSystemArchitecture(Architecture::from(arch)),
    ]
}

fn file(m: &Message) -> String {
    String::from_utf8_lossy(m.fname().unwrap_or_default()).trim_end_matches('\0').to_string()
}

/// The site network with a client namespace on its bridge.
fn site(id: &str) -> (Site, Netns, String) {
    let site = Site::start(id, "10.72.0", false, true).unwrap();
    let client = Netns::new(&format!("kb-pcli-{id}")).unwrap();
    let client_if = format!("kbc{id}");
    veth(&client, &client_if, &site.site, &format!("kbcb{id}")).unwrap();
    site.site.ip(&["link", "set", &format!("kbcb{id}"), "master", &site.bridge]).unwrap();
    (site, client, client_if)
}

/// The namespaces of the ProxyDHCP test, by role.
struct Sites<'a> {
    site: &'a Site,
    proxy: &'a Netns,
    client: &'a Netns,
    client_if: &'a str,
}

/// kiln in the site's proxy namespace: ProxyDHCP on its interface, TFTP
/// and the boot routes on 10.72.0.2.
fn proxy_dhcp_server(proxy: &Netns, id: &str, hook: &tempfile::TempDir) -> NsServer {
    NsServer::start(
        proxy,
        &[
            "--proxy-dhcp-listen",
            &format!("kbp{id}"),
            "--tftp-listen",
            "10.72.0.2:69",
            "--netboot-listen",
            "10.72.0.2:7100",
            "--ipxe-dir",
            IPXE_DIR,
            "--hook-dir",
            hook.path().to_str().unwrap(),
        ],
    )
    .unwrap()
}

#[test]
fn proxy_dhcp_answers_the_pxe_clients_it_boots_beside_the_site_dhcp_server() {
    let id = short_id();
    let (site, client, client_if) = site(&id);
    let s = Sites { site: &site, proxy: &site.proxy, client: &client, client_if: &client_if };
    let hook = hook_dir();
    let server = proxy_dhcp_server(s.proxy, &id, &hook);
    let (booting, idle) = (kiln_tests::random_mac(), kiln_tests::random_mac());
    server
        .apply(&format!(
            "kind: Hardware\nname: pxe1\nmacs: [\"{booting}\"]\n---\nkind: Hardware\nname: idle\nmacs: [\"{idle}\"]\n---\n{}",
            workflow("pxe1", &booting)
        ))
        .unwrap();
    let bcast: SocketAddr = "255.255.255.255:67".parse().unwrap();
    let proxy_ip = Ipv4Addr::new(10, 72, 0, 2);
    let from_proxy =
        |m: &&Message| m.opts().get(OptionCode::ServerIdentifier) == Some(&DhcpOption::ServerIdentifier(proxy_ip));
    let wait = Duration::from_secs(3);

    // A UEFI PXE DISCOVER: an address from the site, the boot file from kiln.
    let discover = request(&booting, MessageType::Discover, client_opts("PXEClient:Arch:00007:UNDI:003000", 7));
    let replies = exchange(s.client, s.client_if, bcast, &discover, wait);
    let site_offer = replies
        .iter()
        .find(|m| !from_proxy(m))
        .unwrap_or_else(|| panic!("no offer from dnsmasq: {replies:?}\n{}", s.site.dnsmasq_log()));
    let addr = site_offer.yiaddr();
    assert!(addr.octets()[..3] == [10, 72, 0] && addr.octets()[3] >= 100, "{site_offer:?}");
    let proxy_offer = replies.iter().find(from_proxy).unwrap_or_else(|| panic!("no proxy offer:\n{}", server.log()));
    assert_eq!(proxy_offer.opts().msg_type(), Some(MessageType::Offer));
    assert_eq!(proxy_offer.yiaddr(), Ipv4Addr::UNSPECIFIED, "a proxy offers no address");
    assert_eq!((file(proxy_offer).as_str(), proxy_offer.siaddr()), ("ipxe.efi", proxy_ip));
    assert_eq!(
        proxy_offer.opts().get(OptionCode::ClassIdentifier),
        Some(&DhcpOption::ClassIdentifier(b"PXEClient".to_vec()))
    );

    // With the site's address, the client asks the proxy on 4011.
    s.client.ip(&["addr", "add", &format!("{addr}/24"), "dev", s.client_if]).unwrap();
    let mut req = request(&booting, MessageType::Request, client_opts("PXEClient:Arch:00007:UNDI:003000", 7));
    req.set_ciaddr(addr);
    let acks = exchange(s.client, s.client_if, "10.72.0.2:4011".parse().unwrap(), &req, wait);
    assert_eq!(acks.len(), 1, "{acks:?}");
    assert_eq!((acks[0].opts().msg_type(), file(&acks[0])), (Some(MessageType::Ack), "ipxe.efi".to_string()));

    // It then fetches ipxe.efi from the proxy over TFTP.
    let out_dir = tempfile::tempdir().unwrap();
    let got = out_dir.path().join("ipxe.efi");
    let out = s.client.output(&[
        "busybox",
        "tftp",
        "-g",
        "-b",
        "1428",
        "-r",
        "ipxe.efi",
        "-l",
        got.to_str().unwrap(),
        "10.72.0.2",
    ]);
    assert!(out.status.success(), "tftp: {}", kiln_tests::stderr(&out));
    assert!(std::fs::read(&got).unwrap() == ipxe_file("ipxe.efi"));

    // A legacy BIOS PXE client: undionly.kpxe.
    let bios = request(&booting, MessageType::Discover, client_opts("PXEClient:Arch:00000:UNDI:002001", 0));
    let replies = exchange(s.client, s.client_if, bcast, &bios, wait);
    assert_eq!(replies.iter().find(from_proxy).map(file).as_deref(), Some("undionly.kpxe"));

    // The iPXE it loaded: the boot script's URL, which serves the hook.
    let mut opts = client_opts("PXEClient:Arch:00007:UNDI:003010", 7);
    opts.push(DhcpOption::UserClass(b"iPXE".to_vec()));
    let replies = exchange(s.client, s.client_if, bcast, &request(&booting, MessageType::Discover, opts), wait);
    let url = replies.iter().find(from_proxy).map(file).expect("proxy offer to iPXE");
    assert_eq!(url, "http://10.72.0.2:7100/boot/ipxe");
    let chain = stdout(&s.client.output(&["curl", "-sS", &url]));
    assert!(chain.contains("/boot/ipxe/${net0/mac}"), "{chain}");
    let script = stdout(&s.client.output(&["curl", "-sS", &format!("{url}/{booting}")]));
    assert!(script.contains("kernel http://10.72.0.2:7100/boot/hook/vmlinuz"), "{script}");

    // UEFI HTTP boot: the EFI binary's URL, vendor class HTTPClient back;
    // the URL serves the binary.
    let http = request(&booting, MessageType::Discover, client_opts("HTTPClient:Arch:00016:UNDI:003001", 16));
    let replies = exchange(s.client, s.client_if, bcast, &http, wait);
    let offer = replies.iter().find(from_proxy).expect("proxy offer to HTTP boot");
    assert_eq!(file(offer), "http://10.72.0.2:7100/boot/ipxe-bin/ipxe.efi");
    assert_eq!(
        offer.opts().get(OptionCode::ClassIdentifier),
        Some(&DhcpOption::ClassIdentifier(b"HTTPClient".to_vec()))
    );
    let got = out_dir.path().join("http.efi");
    let out = s.client.output(&["curl", "-sS", "-o", got.to_str().unwrap(), &file(offer)]);
    assert!(out.status.success());
    assert!(std::fs::read(&got).unwrap() == ipxe_file("ipxe.efi"));

    // Silent for a machine without work, for arm64, and for plain clients:
    // only the site answers them.
    let idle_discover = request(&idle, MessageType::Discover, client_opts("PXEClient:Arch:00007:UNDI:003000", 7));
    let arm = request(&booting, MessageType::Discover, client_opts("PXEClient:Arch:00011:UNDI:003000", 11));
    let plain = request(&booting, MessageType::Discover, vec![]);
    for (what, m) in [("idle machine", &idle_discover), ("arm64", &arm), ("plain client", &plain)] {
        let replies = exchange(s.client, s.client_if, bcast, m, wait);
        assert!(replies.iter().any(|m| !from_proxy(&m)), "{what}: the site still answers");
        assert!(!replies.iter().any(|m| from_proxy(&m)), "{what}: the proxy answered");
    }
    server.wait_log(&[&idle, "has no pending workflow"], Duration::from_secs(5)).unwrap();
    server.wait_log(&["unsupported architecture", "arch=11"], Duration::from_secs(5)).unwrap();

    // A real client beside the proxy: busybox udhcpc gets the site's lease.
    s.client.ip(&["addr", "flush", "dev", s.client_if]).unwrap();
    let lease = udhcpc(s.client, s.client_if, &["-V", "PXEClient:Arch:00007:UNDI:003000", "-x", "0x5d:0007"])
        .expect("a lease from the site");
    assert_eq!(field(&lease, "serverid"), "10.72.0.1", "{lease}");
}

/// A legacy BIOS machine whose NIC ROM is a plain PXE client, not iPXE
/// (Intel and Broadcom boot agents): kiln's ProxyDHCP hands it
/// `undionly.kpxe` from kiln's TFTP, the ROM fetches it intact, and the
/// iPXE that file starts (arch 0, user class iPXE) gets the boot script.
/// Packet level: QEMU has no non-iPXE ROM (vm_pxe.rs boots the iPXE-ROM
/// path of the same machine in a VM).
#[test]
fn proxy_dhcp_hands_a_legacy_bios_pxe_client_undionly_kpxe_over_tftp() {
    let id = short_id();
    let (site, client, client_if) = site(&id);
    let hook = hook_dir();
    let server = proxy_dhcp_server(&site.proxy, &id, &hook);
    let mac = kiln_tests::random_mac();
    server.apply(&format!("kind: Hardware\nname: bios1\nmacs: [\"{mac}\"]\n---\n{}", workflow("bios1", &mac))).unwrap();
    let bcast: SocketAddr = "255.255.255.255:67".parse().unwrap();
    let proxy_ip = Ipv4Addr::new(10, 72, 0, 2);
    let from_proxy =
        |m: &&Message| m.opts().get(OptionCode::ServerIdentifier) == Some(&DhcpOption::ServerIdentifier(proxy_ip));
    let wait = Duration::from_secs(3);
    // What a PXE 2.1 BIOS ROM sends: option 93 = 0 (x86 BIOS), vendor class
    // PXEClient with the same architecture, no iPXE user class.
    let bios = || client_opts("PXEClient:Arch:00000:UNDI:002001", 0);

    let replies = exchange(&client, &client_if, bcast, &request(&mac, MessageType::Discover, bios()), wait);
    let site_offer = replies.iter().find(|m| !from_proxy(m)).unwrap_or_else(|| panic!("{}", site.dnsmasq_log()));
    let offer = replies.iter().find(from_proxy).unwrap_or_else(|| panic!("no proxy offer:\n{}", server.log()));
    assert_eq!(offer.opts().msg_type(), Some(MessageType::Offer));
    assert_eq!(offer.yiaddr(), Ipv4Addr::UNSPECIFIED, "a proxy offers no address");
    assert_eq!((file(offer).as_str(), offer.siaddr()), ("undionly.kpxe", proxy_ip));
    assert_eq!(
        offer.opts().get(OptionCode::ClassIdentifier),
        Some(&DhcpOption::ClassIdentifier(b"PXEClient".to_vec()))
    );
    server.wait_log(&["proxydhcp: boot file offered", "client=Pxe(Bios)", "file=undionly.kpxe"], wait).unwrap();

    // Without option 93 the vendor class's architecture decides (some old
    // ROMs): still undionly.kpxe.
    let no_93 = vec![DhcpOption::ClassIdentifier(b"PXEClient:Arch:00000:UNDI:002001".to_vec())];
    let replies = exchange(&client, &client_if, bcast, &request(&mac, MessageType::Discover, no_93), wait);
    assert_eq!(replies.iter().find(from_proxy).map(file).as_deref(), Some("undionly.kpxe"));

    // With the site's address, the ROM asks the proxy on port 4011 ...
    let addr = site_offer.yiaddr();
    client.ip(&["addr", "add", &format!("{addr}/24"), "dev", &client_if]).unwrap();
    let mut req = request(&mac, MessageType::Request, bios());
    req.set_ciaddr(addr);
    let acks = exchange(&client, &client_if, "10.72.0.2:4011".parse().unwrap(), &req, wait);
    assert_eq!(acks.len(), 1, "{acks:?}\n{}", server.log());
    assert_eq!((acks[0].opts().msg_type(), file(&acks[0])), (Some(MessageType::Ack), "undionly.kpxe".to_string()));
    assert_eq!(acks[0].siaddr(), proxy_ip);

    // ... and fetches the file from siaddr over TFTP, in the 512-byte blocks
    // of a ROM that asks for no options (tftp-hpa), and byte for byte.
    let out_dir = tempfile::tempdir().unwrap();
    let got = out_dir.path().join("undionly.kpxe");
    let out =
        client.output(&["tftp", "-m", "binary", "10.72.0.2", "-c", "get", "undionly.kpxe", got.to_str().unwrap()]);
    assert!(out.status.success(), "tftp-hpa: {}{}\n{}", stdout(&out), kiln_tests::stderr(&out), server.log());
    let served = std::fs::read(&got).unwrap();
    assert!(served.len() > 60_000 && served == ipxe_file("undionly.kpxe"), "undionly.kpxe differs");
    server.wait_log(&["tftp: sending", "undionly.kpxe"], wait).unwrap();

    // undionly.kpxe's iPXE asks again, as iPXE on arch 0: the script's URL.
    let mut ipxe = bios();
    ipxe.push(DhcpOption::UserClass(b"iPXE".to_vec()));
    let replies = exchange(&client, &client_if, bcast, &request(&mac, MessageType::Discover, ipxe), wait);
    assert_eq!(replies.iter().find(from_proxy).map(file).as_deref(), Some("http://10.72.0.2:7100/boot/ipxe"));
}
