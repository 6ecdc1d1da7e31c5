//! Sockets for the DHCP services. A DHCP server must receive broadcasts, so
//! it binds the wildcard address; it serves one interface only
//! (`SO_BINDTODEVICE`), which also lets it send to 255.255.255.255 there
//! without a route.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use socket2::{Domain, Protocol, Socket, Type};

/// The first IPv4 address and netmask of an interface.
pub fn interface_ipv4(iface: &str) -> io::Result<(Ipv4Addr, Ipv4Addr)> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(io::Error::from)?;
    for a in addrs.filter(|a| a.interface_name == iface) {
        let ip = a.address.as_ref().and_then(|s| s.as_sockaddr_in()).map(|s| s.ip());
        let mask = a.netmask.as_ref().and_then(|s| s.as_sockaddr_in()).map(|s| s.ip());
        if let (Some(ip), Some(mask)) = (ip, mask) {
            return Ok((ip, mask));
        }
    }
    Err(io::Error::new(io::ErrorKind::NotFound, format!("interface {iface:?} has no IPv4 address")))
}

/// A UDP socket on `0.0.0.0:port` that sees and sends only on `iface`.
pub fn dhcp_socket(iface: &str, port: u16) -> io::Result<tokio::net::UdpSocket> {
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    // No SO_REUSEADDR: a second DHCP server on the interface (another
    // kiln, dnsmasq) is an error at start, not two servers answering.
    sock.set_broadcast(true)?;
    sock.bind_device(Some(iface.as_bytes()))
        .map_err(|e| io::Error::new(e.kind(), format!("cannot bind to interface {iface:?}: {e}")))?;
    sock.bind(&SocketAddr::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)).into())
        .map_err(|e| io::Error::new(e.kind(), format!("cannot bind UDP port {port} on {iface:?}: {e}")))?;
    sock.set_nonblocking(true)?;
    tokio::net::UdpSocket::from_std(sock.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_has_its_address() {
        assert_eq!(interface_ipv4("lo").unwrap(), (Ipv4Addr::LOCALHOST, Ipv4Addr::new(255, 0, 0, 0)));
        let e = interface_ipv4("kb-no-such-if").unwrap_err();
        assert!(e.to_string().contains("kb-no-such-if"), "{e}");
    }

    #[tokio::test]
    async fn bound_to_loopback() {
        // Port 0: any free one; the point is the device binding works.
        let s = dhcp_socket("lo", 0).unwrap();
        assert!(s.local_addr().unwrap().port() != 0);
        let e = dhcp_socket("kb-no-such-if", 0).unwrap_err();
        assert!(e.to_string().contains("kb-no-such-if"), "{e}");
    }
}
