//! ProxyDHCP and DHCP with reservations: decoding, the answers, and the
//! receive loops. Deciding is [`crate::Machines`]'s; this module only
//! translates between packets and those decisions.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;

use dhcproto::v4::{DhcpOption, HType, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use tokio::net::UdpSocket;

use crate::client::{Client, Kind, classify};
use crate::{BootFiles, Mac, Machines, Reservation, Verdict};

/// The DHCP client port replies go to.
pub const CLIENT_PORT: u16 = 68;
/// The PXE boot server port a PXE client asks its ProxyDHCP on.
pub const PXE_PORT: u16 = 4011;
/// Larger than any DHCP packet on an Ethernet link; what does not fit is
/// cut off and then fails to decode, like any other malformed packet.
const RECV_BUF: usize = 1500;
/// The `file` field of a BOOTP header.
const FILE_FIELD: usize = 128;

/// A decoded, well-formed request from an Ethernet client.
#[derive(Debug)]
pub struct Request {
    pub msg: Message,
    pub mac: Mac,
    pub msg_type: MessageType,
    pub kind: Kind,
}

/// Why a packet was not a request we can answer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Malformed {
    #[error("not a DHCP message: {0}")]
    Decode(String),
    #[error("a BOOTREPLY (from another server), not a request")]
    NotRequest,
    #[error("hardware type {htype:?} with address length {hlen}: only Ethernet (1, 6) is served")]
    NotEthernet { htype: HType, hlen: u8 },
    #[error("no DHCP message type (option 53)")]
    NoMessageType,
    #[error("option {code} has length {len}, which that option cannot have")]
    OptionLength { code: u8, len: u8 },
}

/// Where options start: the fixed BOOTP header (236 bytes) and the magic
/// cookie.
const OPTIONS_AT: usize = 240;

/// Refuses options whose length their type cannot have, before `dhcproto`
/// sees them: its decoder `debug_assert!`s these lengths (a panic in debug
/// builds, found by the fuzz test below) and subtracts from them (an
/// underflow).
fn check_option_lengths(bytes: &[u8]) -> Result<(), Malformed> {
    let mut i = OPTIONS_AT;
    while i < bytes.len() {
        let code = bytes[i];
        match code {
            0 => {
                i += 1;
                continue;
            }
            255 => break,
            _ => {}
        }
        let Some(&len) = bytes.get(i + 1) else { break };
        let ok = match code {
            80 => len == 0,        // rapid commit
            81 => len >= 3,        // client FQDN
            94 => len == 3,        // client network interface
            151 => len >= 1,       // bulk leasequery status
            152..=155 => len == 4, // bulk leasequery times
            _ => true,
        };
        if !ok {
            return Err(Malformed::OptionLength { code, len });
        }
        i += 2 + usize::from(len);
    }
    Ok(())
}

/// Decodes a request. Checks what `dhcproto` would panic on itself: option
/// lengths ([`check_option_lengths`]), and the hardware address length
/// (it decodes any `hlen`, and `Message::chaddr` then panics on one above
/// 16).
pub fn parse(bytes: &[u8]) -> Result<Request, Malformed> {
    check_option_lengths(bytes)?;
    let msg = Message::decode(&mut Decoder::new(bytes)).map_err(|e| Malformed::Decode(e.to_string()))?;
    if msg.opcode() != Opcode::BootRequest {
        return Err(Malformed::NotRequest);
    }
    if msg.htype() != HType::Eth || msg.hlen() != 6 {
        return Err(Malformed::NotEthernet { htype: msg.htype(), hlen: msg.hlen() });
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&msg.chaddr()[..6]);
    let msg_type = msg.opts().msg_type().ok_or(Malformed::NoMessageType)?;
    let kind = classify(&msg);
    Ok(Request { msg, mac: Mac(mac), msg_type, kind })
}

fn encode(msg: &Message) -> Vec<u8> {
    let mut buf = Vec::with_capacity(576);
    // Encoding a message we built cannot fail (it writes into a Vec).
    if let Err(e) = msg.encode(&mut Encoder::new(&mut buf)) {
        tracing::error!(error = %e, "cannot encode a DHCP reply");
        buf.clear();
    }
    buf
}

/// A BOOTREPLY to `req` with its transaction, hardware address and relay.
fn reply_to(req: &Message, msg_type: MessageType, server_ip: Ipv4Addr) -> Message {
    let mut m = Message::new_with_id(
        req.xid(),
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        req.giaddr(),
        req.chaddr(),
    );
    m.set_opcode(Opcode::BootReply).set_htype(req.htype()).set_flags(req.flags());
    m.opts_mut().insert(DhcpOption::MessageType(msg_type));
    m.opts_mut().insert(DhcpOption::ServerIdentifier(server_ip));
    m
}

/// The boot file and what the client needs to recognise it.
fn add_boot(m: &mut Message, req: &Message, client: Client, files: &BootFiles) {
    let file = files.boot_file(client);
    m.set_siaddr(files.tftp_server);
    if file.len() < FILE_FIELD {
        m.set_fname_str(&file);
    }
    m.opts_mut().insert(DhcpOption::BootfileName(file.into_bytes()));
    m.opts_mut().insert(DhcpOption::TFTPServerName(files.tftp_server.to_string().into_bytes()));
    // UEFI HTTP boot accepts only an answer that says `HTTPClient` (UEFI
    // 2.x, 24.7); a PXE client only one that says `PXEClient`.
    let class: &[u8] = if matches!(client, Client::HttpBoot(_)) { b"HTTPClient" } else { b"PXEClient" };
    m.opts_mut().insert(DhcpOption::ClassIdentifier(class.to_vec()));
    if let Some(DhcpOption::ClientMachineIdentifier(uuid)) = req.opts().get(OptionCode::ClientMachineIdentifier) {
        m.opts_mut().insert(DhcpOption::ClientMachineIdentifier(uuid.clone()));
    }
    if matches!(client, Client::Pxe(_) | Client::Ipxe) {
        // PXE vendor options: discovery control (6) = 8, "boot the file
        // in this packet, no boot server discovery" (PXE 2.1, 2.4.7.1).
        // Without it an offer with vendor class PXEClient is a "BINL"
        // offer, and OVMF asks for the boot file again on port 4011 of
        // the server (found by tests/tests/vm_pxe.rs: with kiln as the
        // only DHCP server, OVMF's PXE gave up and fell back to HTTP boot).
        m.opts_mut().insert(DhcpOption::VendorExtensions(vec![6, 1, 8, 255]));
    }
}

/// Where a reply goes: the relay, the client's own address, or (a client
/// without one yet) the broadcast address.
fn destination(req: &Message, reply_type: MessageType) -> SocketAddr {
    if !req.giaddr().is_unspecified() {
        return SocketAddrV4::new(req.giaddr(), 67).into();
    }
    if !req.ciaddr().is_unspecified() && reply_type != MessageType::Nak {
        return SocketAddrV4::new(req.ciaddr(), CLIENT_PORT).into();
    }
    SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT).into()
}

/// The ProxyDHCP answer, or `None` to stay silent. `on_pxe_port`: the
/// request came to port 4011 (a PXE client asking its proxy directly).
pub fn proxy_reply(
    req: &Request,
    client: Client,
    files: &BootFiles,
    server_ip: Ipv4Addr,
    on_pxe_port: bool,
) -> Option<Message> {
    let reply_type = match (req.msg_type, on_pxe_port) {
        (MessageType::Discover, false) => MessageType::Offer,
        (MessageType::Request | MessageType::Inform, true) => MessageType::Ack,
        // A REQUEST on 67 names the server it accepted; only one naming us
        // (a client that took our offer as a whole) is ours to answer.
        (MessageType::Request, false)
            if req.msg.opts().get(OptionCode::ServerIdentifier) == Some(&DhcpOption::ServerIdentifier(server_ip)) =>
        {
            MessageType::Ack
        }
        _ => return None,
    };
    let mut m = reply_to(&req.msg, reply_type, server_ip);
    add_boot(&mut m, &req.msg, client, files);
    Some(m)
}

/// What the DHCP server does with a request from a MAC with a reservation.
#[derive(Debug)]
pub enum Answer {
    Reply(Message),
    /// No answer; the reason is logged at this level.
    Silent {
        why: String,
        warn: bool,
    },
}

fn silent(why: impl Into<String>) -> Answer {
    Answer::Silent { why: why.into(), warn: false }
}

/// The DHCP server's answer to a client with a reservation. `boot`: the
/// client is a network-boot client the server decided to boot.
pub fn dhcp_reply(
    req: &Request,
    res: &Reservation,
    boot: Option<Client>,
    files: &BootFiles,
    server_ip: Ipv4Addr,
) -> Answer {
    let opts = req.msg.opts();
    let server_id = match opts.get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
        _ => None,
    };
    let requested = match opts.get(OptionCode::RequestedIpAddress) {
        Some(DhcpOption::RequestedIpAddress(ip)) => Some(*ip),
        _ => (!req.msg.ciaddr().is_unspecified()).then(|| req.msg.ciaddr()),
    };
    let reply_type = match req.msg_type {
        MessageType::Discover => MessageType::Offer,
        MessageType::Request if server_id.is_some_and(|s| s != server_ip) => {
            return silent(format!("it accepted another server's offer ({})", server_id.unwrap_or(server_ip)));
        }
        MessageType::Request if requested == Some(res.address) => MessageType::Ack,
        MessageType::Request => {
            let mut m = reply_to(&req.msg, MessageType::Nak, server_ip);
            let asked = requested.map_or("no address".to_string(), |a| a.to_string());
            m.opts_mut().insert(DhcpOption::Message(format!("{asked} is not reserved for this MAC")));
            return Answer::Reply(m);
        }
        MessageType::Inform => MessageType::Ack,
        MessageType::Decline => {
            return Answer::Silent {
                why: format!("address conflict: the client declined {} (another host answers ARP for it)", res.address),
                warn: true,
            };
        }
        MessageType::Release => return silent("released its lease"),
        other => return silent(format!("{other:?} is not served")),
    };
    let mut m = reply_to(&req.msg, reply_type, server_ip);
    if req.msg_type == MessageType::Inform {
        // RFC 2131 4.3.5: no address and no lease for an INFORM.
        m.set_ciaddr(req.msg.ciaddr());
    } else {
        m.set_yiaddr(res.address);
        m.opts_mut().insert(DhcpOption::AddressLeaseTime(res.lease_secs));
        m.opts_mut().insert(DhcpOption::Renewal(res.lease_secs / 2));
        m.opts_mut().insert(DhcpOption::Rebinding(res.lease_secs / 8 * 7));
    }
    m.opts_mut().insert(DhcpOption::SubnetMask(res.netmask));
    if let Some(gw) = res.gateway {
        m.opts_mut().insert(DhcpOption::Router(vec![gw]));
    }
    if !res.dns.is_empty() {
        m.opts_mut().insert(DhcpOption::DomainNameServer(res.dns.clone()));
    }
    if let Some(h) = &res.hostname {
        m.opts_mut().insert(DhcpOption::Hostname(h.clone()));
    }
    if let Some(d) = &res.domain_name {
        m.opts_mut().insert(DhcpOption::DomainName(d.clone()));
    }
    if let Some(client) = boot {
        add_boot(&mut m, &req.msg, client, files);
    }
    Answer::Reply(m)
}

/// What both servers share: the boot files and the machines' decisions.
pub struct Context {
    pub files: BootFiles,
    pub server_ip: Ipv4Addr,
    pub machines: Arc<dyn Machines>,
}

/// Whether to hand a network-boot client its boot file, with the log line
/// that says why not.
async fn boot_client(ctx: &Context, req: &Request, service: &str) -> Option<Client> {
    match &req.kind {
        Kind::Plain => None,
        Kind::Unsupported { arch, vendor_class } => {
            tracing::warn!(mac = %req.mac, arch, %vendor_class, "{service}: unsupported architecture, not answered \
                (kiln serves x86-64 UEFI and legacy BIOS)");
            None
        }
        Kind::Netboot(client) => match ctx.machines.verdict(req.mac).await {
            Verdict::Boot => Some(*client),
            Verdict::Skip(why) => {
                tracing::info!(mac = %req.mac, %why, "{service}: not booting this machine from the network");
                None
            }
        },
    }
}

/// One ProxyDHCP packet: the reply and where it goes, if any.
pub async fn handle_proxy(
    ctx: &Context,
    bytes: &[u8],
    from: SocketAddr,
    on_pxe_port: bool,
) -> Option<(Vec<u8>, SocketAddr)> {
    let req = match parse(bytes) {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(%from, error = %e, "proxydhcp: packet ignored");
            return None;
        }
    };
    let client = boot_client(ctx, &req, "proxydhcp").await?;
    let reply = proxy_reply(&req, client, &ctx.files, ctx.server_ip, on_pxe_port)?;
    tracing::info!(mac = %req.mac, ?client, request = ?req.msg_type, file = %ctx.files.boot_file(client),
        "proxydhcp: boot file offered");
    // On 4011 the client has an address and listens where it sent from.
    let to = if on_pxe_port { from } else { destination(&req.msg, MessageType::Offer) };
    Some((encode(&reply), to))
}

/// One DHCP server packet: the reply and where it goes, if any.
pub async fn handle_dhcp(ctx: &Context, bytes: &[u8], from: SocketAddr) -> Option<(Vec<u8>, SocketAddr)> {
    let req = match parse(bytes) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(%from, error = %e, "dhcp: malformed packet ignored");
            return None;
        }
    };
    let res = match ctx.machines.reservation(req.mac).await {
        Ok(Some(res)) => res,
        Ok(None) => {
            tracing::info!(mac = %req.mac, request = ?req.msg_type, "dhcp: no reservation for this MAC, not answered");
            return None;
        }
        Err(why) => {
            tracing::warn!(mac = %req.mac, %why, "dhcp: reservation unusable, not answered");
            return None;
        }
    };
    // Addresses for every known machine; a boot file only for those the
    // server decided to boot.
    let boot = match req.msg_type {
        MessageType::Discover | MessageType::Request => boot_client(ctx, &req, "dhcp").await,
        _ => None,
    };
    match dhcp_reply(&req, &res, boot, &ctx.files, ctx.server_ip) {
        Answer::Reply(m) => {
            let reply_type = m.opts().msg_type().unwrap_or(MessageType::Ack);
            let file = boot.map(|c| ctx.files.boot_file(c));
            tracing::info!(mac = %req.mac, hardware = %res.hardware, request = ?req.msg_type, reply = ?reply_type,
                address = %res.address, boot = ?boot, file = %file.as_deref().unwrap_or(""), "dhcp: answered");
            Some((encode(&m), destination(&req.msg, reply_type)))
        }
        Answer::Silent { why, warn: true } => {
            tracing::warn!(mac = %req.mac, hardware = %res.hardware, %why, "dhcp: not answered");
            None
        }
        Answer::Silent { why, warn: false } => {
            tracing::info!(mac = %req.mac, hardware = %res.hardware, %why, "dhcp: not answered");
            None
        }
    }
}

async fn send(sock: &UdpSocket, reply: Option<(Vec<u8>, SocketAddr)>) {
    if let Some((bytes, to)) = reply
        && let Err(e) = sock.send_to(&bytes, to).await
    {
        tracing::warn!(%to, error = %e, "cannot send a DHCP reply");
    }
}

/// ProxyDHCP on a socket bound to port 67 and one bound to 4011, until an
/// error on a socket.
pub async fn serve_proxy(ctx: Arc<Context>, dhcp: UdpSocket, pxe: UdpSocket) -> std::io::Result<()> {
    let mut a = vec![0u8; RECV_BUF];
    let mut b = vec![0u8; RECV_BUF];
    loop {
        tokio::select! {
            r = dhcp.recv_from(&mut a) => {
                let (n, from) = r?;
                send(&dhcp, handle_proxy(&ctx, &a[..n], from, false).await).await;
            }
            r = pxe.recv_from(&mut b) => {
                let (n, from) = r?;
                send(&pxe, handle_proxy(&ctx, &b[..n], from, true).await).await;
            }
        }
    }
}

/// The DHCP server on a socket bound to port 67, until a socket error.
pub async fn serve_dhcp(ctx: Arc<Context>, sock: UdpSocket) -> std::io::Result<()> {
    let mut buf = vec![0u8; RECV_BUF];
    loop {
        let (n, from) = sock.recv_from(&mut buf).await?;
        send(&sock, handle_dhcp(&ctx, &buf[..n], from).await).await;
    }
}

#[cfg(test)]
mod tests;
