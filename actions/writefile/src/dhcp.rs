//! EKS Anywhere's writefile static-IP modes: `STATIC_NETPLAN=true` and
//! `STATIC_BOTTLEROCKET=true` ask the DHCP server for an address (a
//! DISCOVER, and the OFFER's address, mask, router and DNS servers) on the
//! machine's interface and write it as static configuration: a netplan file
//! at DEST_PATH, or Bottlerocket's net.toml at DEST_PATH plus the DNS
//! servers appended to /user-data.toml. On a VLAN interface Hook made
//! (`eth0.N`, from `vlan_id=N` on the kernel command line) the netplan is
//! EKS Anywhere's VLAN one. `IFNAME` names the interface
//! (default: the first with a global IPv4 address), `DHCP_TIMEOUT` bounds
//! the wait (a Go duration, default 2m). kiln's actions run in the host's
//! network namespace, so the action's own interfaces are the machine's.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use kiln_action_kit::{Failure, Result};
use socket2::{Domain, Protocol, Socket, Type};

/// What the OFFER said.
#[derive(Debug, Clone, PartialEq)]
pub struct Offer {
    pub mac: [u8; 6],
    pub address: Ipv4Addr,
    pub prefix: u32,
    pub gateway: Option<Ipv4Addr>,
    pub nameservers: Vec<Ipv4Addr>,
}

const COOKIE: [u8; 4] = [99, 130, 83, 99];

/// A DHCPDISCOVER from `mac`, asking for a broadcast answer (we have no
/// address to be sent one) and for the mask, router and DNS options.
pub fn discover(mac: [u8; 6], xid: u32) -> Vec<u8> {
    let mut p = vec![0u8; 236];
    p[0] = 1; // BOOTREQUEST
    p[1] = 1; // Ethernet
    p[2] = 6;
    p[4..8].copy_from_slice(&xid.to_be_bytes());
    p[10] = 0x80; // broadcast flag
    p[28..34].copy_from_slice(&mac);
    p.extend_from_slice(&COOKIE);
    p.extend_from_slice(&[53, 1, 1, 55, 3, 1, 3, 6, 255]);
    p
}

/// The OFFER for `xid`, or None for any other packet.
pub fn parse_offer(p: &[u8], xid: u32, mac: [u8; 6]) -> Option<Offer> {
    if p.len() < 240 || p[0] != 2 || p[4..8] != xid.to_be_bytes() || p[236..240] != COOKIE {
        return None;
    }
    let address = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
    let (mut kind, mut mask, mut gateway, mut nameservers) = (None, None, None, Vec::new());
    let mut i = 240;
    while i < p.len() {
        let code = p[i];
        if code == 255 {
            break;
        }
        if code == 0 {
            i += 1;
            continue;
        }
        let len = *p.get(i + 1)? as usize;
        let value = p.get(i + 2..i + 2 + len)?;
        let ip = |v: &[u8]| Ipv4Addr::new(v[0], v[1], v[2], v[3]);
        match code {
            53 if len == 1 => kind = Some(value[0]),
            1 if len == 4 => mask = Some(u32::from(ip(value))),
            3 if len >= 4 => gateway = Some(ip(value)),
            6 => nameservers = value.chunks_exact(4).map(ip).collect(),
            _ => {}
        }
        i += 2 + len;
    }
    if kind != Some(2) {
        return None;
    }
    // Go's net.IPNet of a mask that is not contiguous prints no prefix;
    // servers send contiguous ones.
    let prefix = mask.map_or(32, u32::count_ones);
    Some(Offer { mac, address, prefix, gateway, nameservers })
}

/// Go's `time.ParseDuration` for the forms a template uses: `90s`, `2m`,
/// `1m30s`, `500ms`, `1.5h`.
pub fn parse_go_duration(v: &str) -> std::result::Result<Duration, String> {
    let bad = || format!("expected a Go duration like 2m or 90s, got {v:?}");
    let mut rest = v;
    let mut total = 0f64;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        let number: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += number * seconds;
        rest = &rest[unit_len..];
    }
    Ok(Duration::from_secs_f64(total))
}

/// The interface to ask on: `IFNAME`, or the first with a global IPv4
/// address (as EKS Anywhere's writefile picks it).
pub fn interface(ifname: Option<&str>) -> Result<String> {
    if let Some(name) = ifname {
        return Ok(name.to_string());
    }
    let addrs =
        nix::ifaddrs::getifaddrs().map_err(|e| Failure::new("DhcpFailed", format!("listing interfaces: {e}")))?;
    for a in addrs {
        let Some(ip) = a.address.as_ref().and_then(|s| s.as_sockaddr_in()).map(|s| s.ip()) else { continue };
        if !(ip.is_loopback() || ip.is_link_local() || ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast()) {
            return Ok(a.interface_name);
        }
    }
    Err(Failure::new("DhcpFailed", "no interface with a global IPv4 address; set IFNAME"))
}

fn mac_of(ifname: &str) -> Result<[u8; 6]> {
    let path = format!("/sys/class/net/{ifname}/address");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Failure::new("DhcpFailed", format!("IFNAME: no interface {ifname:?} ({path}: {e})")))?;
    let bytes: Vec<u8> = text.trim().split(':').filter_map(|b| u8::from_str_radix(b, 16).ok()).collect();
    bytes.try_into().map_err(|_| Failure::new("DhcpFailed", format!("{path}: {:?} is not a MAC address", text.trim())))
}

/// Sends DISCOVERs on `ifname` (again every 4 s) until an OFFER arrives or
/// `timeout` passes.
pub fn request_offer(ifname: &str, timeout: Duration) -> Result<Offer> {
    let mac = mac_of(ifname)?;
    let fail = |what: &str, e: std::io::Error| Failure::new("DhcpFailed", format!("{what} on {ifname}: {e}"));
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(|e| fail("socket", e))?;
    socket.set_reuse_address(true).map_err(|e| fail("SO_REUSEADDR", e))?;
    socket.set_broadcast(true).map_err(|e| fail("SO_BROADCAST", e))?;
    socket.bind_device(Some(ifname.as_bytes())).map_err(|e| fail("SO_BINDTODEVICE", e))?;
    socket.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68).into()).map_err(|e| fail("binding port 68", e))?;
    let socket: std::net::UdpSocket = socket.into();
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let xid = seed.subsec_nanos() ^ std::process::id().rotate_left(16);
    let started = Instant::now();
    let mut buf = [0u8; 1500];
    loop {
        socket
            .send_to(&discover(mac, xid), (Ipv4Addr::BROADCAST, 67))
            .map_err(|e| fail("sending a DHCPDISCOVER", e))?;
        let resend = Instant::now() + Duration::from_secs(4);
        loop {
            let left = timeout.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(Failure::new(
                    "DhcpFailed",
                    format!("no DHCP offer on {ifname} within {timeout:?} (DHCP_TIMEOUT)"),
                ));
            }
            let wait = left.min(resend.saturating_duration_since(Instant::now()));
            if wait.is_zero() {
                break;
            }
            socket.set_read_timeout(Some(wait)).map_err(|e| fail("setting a timeout", e))?;
            match socket.recv(&mut buf) {
                Ok(n) => {
                    if let Some(offer) = parse_offer(&buf[..n], xid, mac) {
                        return Ok(offer);
                    }
                }
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) => return Err(fail("receiving", e)),
            }
        }
    }
}

fn mac_text(mac: [u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

fn joined(ips: &[Ipv4Addr], sep: &str) -> String {
    ips.iter().map(Ipv4Addr::to_string).collect::<Vec<_>>().join(sep)
}

/// EKS Anywhere's netplan for an offer (its template, rendered).
pub fn netplan(o: &Offer) -> String {
    let mut out = format!(
        "network:\n    version: 2\n    renderer: networkd\n    ethernets:\n        id0:\n            match:\n                \
         macaddress: {}\n            addresses:\n                - {}/{}\n            nameservers:\n                \
         addresses: [{}]",
        mac_text(o.mac),
        o.address,
        o.prefix,
        joined(&o.nameservers, ", ")
    );
    if let Some(gw) = o.gateway {
        out.push_str(&format!("\n            routes:\n                - to: default\n                  via: {gw}"));
    }
    out.push('\n');
    out
}

/// Hook names a VLAN interface `eth0.5` when `vlan_id=5` is on the kernel
/// command line; EKS Anywhere then writes the VLAN netplan. Its test:
/// `eth`, a digit, any one character, and 1 to 4096.
pub fn is_vlan_interface(name: &str) -> bool {
    let b = name.as_bytes();
    if b.len() < 6 || !name.starts_with("eth") || !b[3].is_ascii_digit() {
        return false;
    }
    let Some(id) = name.get(5..) else { return false };
    !id.starts_with('0')
        && id.bytes().all(|c| c.is_ascii_digit())
        && id.parse::<u32>().is_ok_and(|n| (1..=4096).contains(&n))
}

/// `vlan_id=N` from a kernel command line.
pub fn vlan_id(cmdline: &str) -> Option<u32> {
    cmdline.split_whitespace().find_map(|w| w.strip_prefix("vlan_id=")?.parse().ok())
}

/// EKS Anywhere's netplan for a VLAN: the NIC matched by MAC and renamed
/// `mainif`, the address on `vlanN` over it.
pub fn netplan_vlan(o: &Offer, vlan: u32) -> String {
    let mut out = format!(
        "network:\n    version: 2\n    renderer: networkd\n    ethernets:\n        mainif:\n            match:\n                \
         macaddress: {}\n            set-name: mainif\n\n    vlans:\n        vlan{vlan}:\n            id: {vlan}\n            \
         link: mainif\n            addresses:\n            - {}/{}\n            nameservers:\n                addresses: [{}]",
        mac_text(o.mac),
        o.address,
        o.prefix,
        joined(&o.nameservers, ", ")
    );
    if let Some(gw) = o.gateway {
        out.push_str(&format!("\n            routes:\n                - to: default\n                  via: {gw}"));
    }
    out.push('\n');
    out
}

/// EKS Anywhere's Bottlerocket net.toml (version 3, the interface named by
/// its MAC address).
pub fn bottlerocket_net_toml(o: &Offer) -> String {
    let gateway = o.gateway.map(|g| g.to_string()).unwrap_or_else(|| "<no value>".into());
    format!(
        "# Version is required, it will change as we support\n# additional settings\nversion = 3\n\n[\"{mac}\".static4]\n\
         addresses = [\"{}/{}\"]\n\n[[\"{mac}\".route]]\nto = \"default\"\nvia = \"{gateway}\"\nroute-metric = 100\n",
        o.address,
        o.prefix,
        mac = mac_text(o.mac),
    )
}

/// The DNS settings EKS Anywhere appends to Bottlerocket's /user-data.toml.
pub fn bottlerocket_dns(o: &Offer) -> String {
    let servers: Vec<String> = o.nameservers.iter().map(|n| format!("\"{n}\"")).collect();
    format!("\n\n[settings.dns]\nname-servers = [{}]\n\n", servers.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer_packet(xid: u32, kind: u8) -> Vec<u8> {
        let mut p = discover([2, 0, 0, 0, 0, 1], xid);
        p[0] = 2;
        p[16..20].copy_from_slice(&[10, 0, 0, 50]);
        p.truncate(240);
        p.extend_from_slice(&[
            53, 1, kind, 1, 4, 255, 255, 255, 0, 3, 4, 10, 0, 0, 1, 6, 8, 1, 1, 1, 1, 8, 8, 8, 8, 255,
        ]);
        p
    }

    #[test]
    fn offers_are_parsed_and_others_ignored() {
        let mac = [2, 0, 0, 0, 0, 1];
        let o = parse_offer(&offer_packet(7, 2), 7, mac).unwrap();
        assert_eq!(o.address, Ipv4Addr::new(10, 0, 0, 50));
        assert_eq!((o.prefix, o.gateway), (24, Some(Ipv4Addr::new(10, 0, 0, 1))));
        assert_eq!(o.nameservers, [Ipv4Addr::new(1, 1, 1, 1), Ipv4Addr::new(8, 8, 8, 8)]);
        assert_eq!(parse_offer(&offer_packet(8, 2), 7, mac), None, "another client's");
        assert_eq!(parse_offer(&offer_packet(7, 5), 7, mac), None, "an ACK is not an offer");
        assert_eq!(parse_offer(&discover(mac, 7), 7, mac), None, "a request");
        assert_eq!(parse_offer(&offer_packet(7, 2)[..100], 7, mac), None, "truncated");
    }

    #[test]
    fn rendered_like_eks_anywhere() {
        let o = Offer {
            mac: [0x52, 0x54, 0, 0x12, 0x34, 0x56],
            address: Ipv4Addr::new(192, 168, 1, 20),
            prefix: 24,
            gateway: Some(Ipv4Addr::new(192, 168, 1, 1)),
            nameservers: vec![Ipv4Addr::new(192, 168, 1, 2), Ipv4Addr::new(8, 8, 8, 8)],
        };
        assert_eq!(
            netplan(&o),
            "network:\n    version: 2\n    renderer: networkd\n    ethernets:\n        id0:\n            match:\n                macaddress: 52:54:00:12:34:56\n            addresses:\n                - 192.168.1.20/24\n            nameservers:\n                addresses: [192.168.1.2, 8.8.8.8]\n            routes:\n                - to: default\n                  via: 192.168.1.1\n"
        );
        assert!(!netplan(&Offer { gateway: None, ..o.clone() }).contains("routes"));
        assert_eq!(
            bottlerocket_net_toml(&o),
            "# Version is required, it will change as we support\n# additional settings\nversion = 3\n\n[\"52:54:00:12:34:56\".static4]\naddresses = [\"192.168.1.20/24\"]\n\n[[\"52:54:00:12:34:56\".route]]\nto = \"default\"\nvia = \"192.168.1.1\"\nroute-metric = 100\n"
        );
        assert_eq!(bottlerocket_dns(&o), "\n\n[settings.dns]\nname-servers = [\"192.168.1.2\", \"8.8.8.8\"]\n\n");
    }

    #[test]
    fn vlan_netplan_like_eks_anywhere() {
        for (name, vlan) in [("eth0.5", true), ("eth1.4096", true), ("eth0.4097", false), ("eth0.05", false)] {
            assert_eq!(is_vlan_interface(name), vlan, "{name}");
        }
        for name in ["eth0", "eno1.5", "ethx.5", "eth0."] {
            assert!(!is_vlan_interface(name), "{name}");
        }
        assert_eq!(vlan_id("BOOT_IMAGE=/vmlinuz vlan_id=42 console=ttyS0\n"), Some(42));
        assert_eq!(vlan_id("quiet vlan_id=7\n"), Some(7));
        assert_eq!(vlan_id("quiet\n"), None);
        let o = Offer {
            mac: [0x52, 0x54, 0, 0x12, 0x34, 0x56],
            address: Ipv4Addr::new(10, 1, 2, 3),
            prefix: 16,
            gateway: Some(Ipv4Addr::new(10, 1, 0, 1)),
            nameservers: vec![Ipv4Addr::new(10, 1, 0, 2)],
        };
        assert_eq!(
            netplan_vlan(&o, 42),
            "network:\n    version: 2\n    renderer: networkd\n    ethernets:\n        mainif:\n            match:\n                macaddress: 52:54:00:12:34:56\n            set-name: mainif\n\n    vlans:\n        vlan42:\n            id: 42\n            link: mainif\n            addresses:\n            - 10.1.2.3/16\n            nameservers:\n                addresses: [10.1.0.2]\n            routes:\n                - to: default\n                  via: 10.1.0.1\n"
        );
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_go_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_go_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_go_duration("1.5h").unwrap(), Duration::from_secs(5400));
        for bad in ["", "5", "2 m", "m", "2d"] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?}");
        }
    }
}
