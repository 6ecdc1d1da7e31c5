use super::*;
use crate::Firmware;
use dhcproto::v4::Architecture;
use proptest::prelude::*;

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 7, 0, 2);
const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

fn files() -> BootFiles {
    BootFiles { efi: "ipxe.efi".into(), tftp_server: SERVER, http_base: "http://10.7.0.2:7100".into() }
}

fn request(msg_type: MessageType, opts: Vec<DhcpOption>) -> Vec<u8> {
    let mut m = Message::new_with_id(
        0xdead_beef,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &MAC,
    );
    m.set_flags(dhcproto::v4::Flags::default().set_broadcast());
    m.opts_mut().insert(DhcpOption::MessageType(msg_type));
    for o in opts {
        m.opts_mut().insert(o);
    }
    encode(&m)
}

fn uefi_pxe() -> Vec<DhcpOption> {
    vec![
        DhcpOption::ClassIdentifier(b"PXEClient:Arch:00007:UNDI:003000".to_vec()),
        DhcpOption::ClientSystemArchitecture(Architecture::from(7)),
        DhcpOption::ClientMachineIdentifier(vec![0; 17]),
    ]
}

fn http_boot() -> Vec<DhcpOption> {
    vec![
        DhcpOption::ClassIdentifier(b"HTTPClient:Arch:00016:UNDI:003001".to_vec()),
        DhcpOption::ClientSystemArchitecture(Architecture::from(16)),
    ]
}

fn decode(bytes: &[u8]) -> Message {
    Message::decode(&mut Decoder::new(bytes)).unwrap()
}

/// The `file` field as text, without the NUL padding a decoded one keeps.
fn file(m: &Message) -> String {
    String::from_utf8_lossy(m.fname().unwrap_or_default()).trim_end_matches('\0').to_string()
}

fn opt(m: &Message, code: OptionCode) -> Option<&DhcpOption> {
    m.opts().get(code)
}

#[test]
fn proxy_offers_the_uefi_binary_and_no_address() {
    let req = parse(&request(MessageType::Discover, uefi_pxe())).unwrap();
    assert_eq!(req.mac, Mac(MAC));
    let m = proxy_reply(&req, Client::Pxe(Firmware::Uefi64), &files(), SERVER, false).unwrap();
    assert_eq!(m.opcode(), Opcode::BootReply);
    assert_eq!(m.xid(), 0xdead_beef);
    assert_eq!(m.chaddr(), &MAC);
    assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED, "a proxy never offers an address");
    assert_eq!(m.siaddr(), SERVER);
    assert_eq!(m.fname_str().unwrap().unwrap(), "ipxe.efi");
    assert_eq!(m.opts().msg_type(), Some(MessageType::Offer));
    assert_eq!(opt(&m, OptionCode::ServerIdentifier), Some(&DhcpOption::ServerIdentifier(SERVER)));
    assert_eq!(opt(&m, OptionCode::ClassIdentifier), Some(&DhcpOption::ClassIdentifier(b"PXEClient".to_vec())));
    assert_eq!(opt(&m, OptionCode::VendorExtensions), Some(&DhcpOption::VendorExtensions(vec![6, 1, 8, 255])));
    assert_eq!(
        opt(&m, OptionCode::ClientMachineIdentifier),
        Some(&DhcpOption::ClientMachineIdentifier(vec![0; 17])),
        "the PXE client's UUID is echoed"
    );
    assert!(!m.opts().contains(OptionCode::SubnetMask) && !m.opts().contains(OptionCode::AddressLeaseTime));
}

#[test]
fn proxy_answers_http_boot_with_a_url_and_httpclient() {
    let req = parse(&request(MessageType::Discover, http_boot())).unwrap();
    let m = proxy_reply(&req, Client::HttpBoot(Firmware::Uefi64), &files(), SERVER, false).unwrap();
    assert_eq!(m.fname_str().unwrap().unwrap(), "http://10.7.0.2:7100/boot/ipxe-bin/ipxe.efi");
    assert_eq!(opt(&m, OptionCode::ClassIdentifier), Some(&DhcpOption::ClassIdentifier(b"HTTPClient".to_vec())));
    assert!(!m.opts().contains(OptionCode::VendorExtensions));
}

#[test]
fn proxy_requests_on_67_only_when_they_name_us() {
    let other = DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 7, 0, 1));
    let req = parse(&request(MessageType::Request, [uefi_pxe(), vec![other]].concat())).unwrap();
    assert!(proxy_reply(&req, Client::Pxe(Firmware::Uefi64), &files(), SERVER, false).is_none());
    let ours = DhcpOption::ServerIdentifier(SERVER);
    let req = parse(&request(MessageType::Request, [uefi_pxe(), vec![ours]].concat())).unwrap();
    let m = proxy_reply(&req, Client::Pxe(Firmware::Uefi64), &files(), SERVER, false).unwrap();
    assert_eq!(m.opts().msg_type(), Some(MessageType::Ack));
    // On 4011 every REQUEST is for the proxy; a DISCOVER there is not.
    let req = parse(&request(MessageType::Request, uefi_pxe())).unwrap();
    let m = proxy_reply(&req, Client::Pxe(Firmware::Uefi64), &files(), SERVER, true).unwrap();
    assert_eq!(m.opts().msg_type(), Some(MessageType::Ack));
    let req = parse(&request(MessageType::Discover, uefi_pxe())).unwrap();
    assert!(proxy_reply(&req, Client::Pxe(Firmware::Uefi64), &files(), SERVER, true).is_none());
}

fn reservation() -> Reservation {
    Reservation {
        hardware: "m1".into(),
        address: Ipv4Addr::new(10, 7, 0, 50),
        netmask: Ipv4Addr::new(255, 255, 255, 0),
        gateway: Some(Ipv4Addr::new(10, 7, 0, 1)),
        dns: vec![Ipv4Addr::new(10, 7, 0, 53), Ipv4Addr::new(1, 1, 1, 1)],
        hostname: Some("m1".into()),
        domain_name: Some("lab.example".into()),
        lease_secs: 3600,
    }
}

fn reply(a: Answer) -> Message {
    match a {
        Answer::Reply(m) => m,
        other => panic!("{other:?}"),
    }
}

#[test]
fn dhcp_offers_and_acks_the_reservation() {
    let req = parse(&request(MessageType::Discover, vec![])).unwrap();
    let m = reply(dhcp_reply(&req, &reservation(), None, &files(), SERVER));
    assert_eq!(m.opts().msg_type(), Some(MessageType::Offer));
    assert_eq!(m.yiaddr(), Ipv4Addr::new(10, 7, 0, 50));
    assert_eq!(opt(&m, OptionCode::SubnetMask), Some(&DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0))));
    assert_eq!(opt(&m, OptionCode::Router), Some(&DhcpOption::Router(vec![Ipv4Addr::new(10, 7, 0, 1)])));
    assert_eq!(opt(&m, OptionCode::DomainNameServer), Some(&DhcpOption::DomainNameServer(reservation().dns)));
    assert_eq!(opt(&m, OptionCode::Hostname), Some(&DhcpOption::Hostname("m1".into())));
    assert_eq!(opt(&m, OptionCode::DomainName), Some(&DhcpOption::DomainName("lab.example".into())));
    assert_eq!(opt(&m, OptionCode::AddressLeaseTime), Some(&DhcpOption::AddressLeaseTime(3600)));
    assert!(m.fname().is_none_or(|f| f.iter().all(|b| *b == 0)), "no boot file unless asked to boot");
    assert!(!m.opts().contains(OptionCode::BootfileName));

    let asked = DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 7, 0, 50));
    let req = parse(&request(MessageType::Request, vec![asked, DhcpOption::ServerIdentifier(SERVER)])).unwrap();
    let m = reply(dhcp_reply(&req, &reservation(), None, &files(), SERVER));
    assert_eq!(m.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(m.yiaddr(), Ipv4Addr::new(10, 7, 0, 50));
}

#[test]
fn dhcp_naks_another_address_and_ignores_other_servers() {
    let asked = DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 7, 0, 99));
    let req = parse(&request(MessageType::Request, vec![asked])).unwrap();
    let m = reply(dhcp_reply(&req, &reservation(), None, &files(), SERVER));
    assert_eq!(m.opts().msg_type(), Some(MessageType::Nak));
    assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(
        destination(&decode(&request(MessageType::Request, vec![])), MessageType::Nak).to_string(),
        "255.255.255.255:68"
    );

    let other = DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 7, 0, 1));
    let req = parse(&request(MessageType::Request, vec![other])).unwrap();
    assert!(matches!(dhcp_reply(&req, &reservation(), None, &files(), SERVER), Answer::Silent { warn: false, .. }));
}

#[test]
fn dhcp_decline_is_a_logged_conflict() {
    let req = parse(&request(MessageType::Decline, vec![])).unwrap();
    match dhcp_reply(&req, &reservation(), None, &files(), SERVER) {
        Answer::Silent { why, warn: true } => assert!(why.contains("conflict") && why.contains("10.7.0.50"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn dhcp_adds_the_boot_file_for_a_booting_pxe_client() {
    let req = parse(&request(MessageType::Discover, uefi_pxe())).unwrap();
    let m = reply(dhcp_reply(&req, &reservation(), Some(Client::Pxe(Firmware::Uefi64)), &files(), SERVER));
    assert_eq!(m.yiaddr(), Ipv4Addr::new(10, 7, 0, 50));
    assert_eq!(m.fname_str().unwrap().unwrap(), "ipxe.efi");
    assert_eq!(m.siaddr(), SERVER);
    assert_eq!(opt(&m, OptionCode::ClassIdentifier), Some(&DhcpOption::ClassIdentifier(b"PXEClient".to_vec())));
    // Discovery control "use this file" for a full server too: without it
    // OVMF asks again on port 4011.
    assert_eq!(opt(&m, OptionCode::VendorExtensions), Some(&DhcpOption::VendorExtensions(vec![6, 1, 8, 255])));
}

#[test]
fn inform_gets_options_without_an_address() {
    let mut m = decode(&request(MessageType::Inform, vec![]));
    m.set_ciaddr(Ipv4Addr::new(10, 7, 0, 50));
    let req = parse(&encode(&m)).unwrap();
    let r = reply(dhcp_reply(&req, &reservation(), None, &files(), SERVER));
    assert_eq!(r.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert!(!r.opts().contains(OptionCode::AddressLeaseTime));
    assert_eq!(destination(&req.msg, MessageType::Ack).to_string(), "10.7.0.50:68");
}

#[test]
fn relayed_requests_go_back_to_the_relay() {
    let mut m = decode(&request(MessageType::Discover, vec![]));
    m.set_giaddr(Ipv4Addr::new(10, 9, 0, 1));
    assert_eq!(destination(&m, MessageType::Offer).to_string(), "10.9.0.1:67");
    let r = reply_to(&m, MessageType::Offer, SERVER);
    assert_eq!(r.giaddr(), Ipv4Addr::new(10, 9, 0, 1));
}

#[test]
fn malformed_packets_are_errors_not_panics() {
    assert!(matches!(parse(b""), Err(Malformed::Decode(_))));
    assert!(matches!(parse(&[1u8; 100]), Err(Malformed::Decode(_))));
    // hlen above 16: dhcproto's Message::chaddr would panic on it.
    let mut bytes = request(MessageType::Discover, vec![]);
    bytes[2] = 200;
    assert_eq!(parse(&bytes).unwrap_err(), Malformed::NotEthernet { htype: HType::Eth, hlen: 200 });
    let mut bytes = request(MessageType::Discover, vec![]);
    bytes[0] = 2;
    assert_eq!(parse(&bytes).unwrap_err(), Malformed::NotRequest);
    // Option lengths dhcproto's decoder asserts on (debug builds panic).
    for (code, len) in [(80u8, 1u8), (81, 0), (94, 2), (151, 0), (152, 3)] {
        let mut bytes = request(MessageType::Discover, vec![]);
        let end = bytes.len() - 1;
        assert_eq!(bytes[end], 255);
        bytes.truncate(end);
        bytes.extend([code, len]);
        bytes.extend(std::iter::repeat_n(0, usize::from(len)));
        bytes.push(255);
        assert_eq!(parse(&bytes).unwrap_err(), Malformed::OptionLength { code, len });
    }
    let mut m = decode(&request(MessageType::Discover, vec![]));
    m.opts_mut().remove(OptionCode::MessageType);
    assert_eq!(parse(&encode(&m)).unwrap_err(), Malformed::NoMessageType);
}

/// Answers the same for every MAC.
struct Fake {
    verdict: Verdict,
    reservation: Result<Option<Reservation>, String>,
}

#[async_trait::async_trait]
impl Machines for Fake {
    async fn verdict(&self, _mac: Mac) -> Verdict {
        self.verdict.clone()
    }
    async fn reservation(&self, _mac: Mac) -> Result<Option<Reservation>, String> {
        self.reservation.clone()
    }
}

fn ctx(verdict: Verdict, reservation: Result<Option<Reservation>, String>) -> Context {
    Context { files: files(), server_ip: SERVER, machines: Arc::new(Fake { verdict, reservation }) }
}

const FROM: &str = "0.0.0.0:68";

#[tokio::test]
async fn proxy_is_silent_unless_the_server_boots_the_machine() {
    let from: SocketAddr = FROM.parse().unwrap();
    let discover = request(MessageType::Discover, uefi_pxe());
    let (bytes, to) = handle_proxy(&ctx(Verdict::Boot, Ok(None)), &discover, from, false).await.unwrap();
    assert_eq!(to.to_string(), "255.255.255.255:68");
    assert_eq!(file(&decode(&bytes)), "ipxe.efi");
    let skip = ctx(Verdict::Skip("no pending workflow".into()), Ok(None));
    assert!(handle_proxy(&skip, &discover, from, false).await.is_none());
    // A plain client and an arm64 one: silent even for a machine to boot.
    let plain = request(MessageType::Discover, vec![]);
    assert!(handle_proxy(&ctx(Verdict::Boot, Ok(None)), &plain, from, false).await.is_none());
    let arm = request(
        MessageType::Discover,
        vec![
            DhcpOption::ClassIdentifier(b"PXEClient:Arch:00011:UNDI:003000".to_vec()),
            DhcpOption::ClientSystemArchitecture(Architecture::from(11)),
        ],
    );
    assert!(handle_proxy(&ctx(Verdict::Boot, Ok(None)), &arm, from, false).await.is_none());
    // 4011: the reply goes back where the request came from.
    let client: SocketAddr = "10.7.0.50:68".parse().unwrap();
    let req = request(MessageType::Request, uefi_pxe());
    let (_, to) = handle_proxy(&ctx(Verdict::Boot, Ok(None)), &req, client, true).await.unwrap();
    assert_eq!(to, client);
}

#[tokio::test]
async fn dhcp_answers_reserved_macs_only() {
    let from: SocketAddr = FROM.parse().unwrap();
    let discover = request(MessageType::Discover, uefi_pxe());
    assert!(handle_dhcp(&ctx(Verdict::Boot, Ok(None)), &discover, from).await.is_none(), "unknown MAC");
    let bad = ctx(Verdict::Boot, Err("interfaces[0].dhcp.ip.address: \"x\" is not an IPv4 address".into()));
    assert!(handle_dhcp(&bad, &discover, from).await.is_none());
    let (bytes, _) = handle_dhcp(&ctx(Verdict::Boot, Ok(Some(reservation()))), &discover, from).await.unwrap();
    let m = decode(&bytes);
    assert_eq!((m.yiaddr(), file(&m).as_str()), (Ipv4Addr::new(10, 7, 0, 50), "ipxe.efi"));
    // Known but not to be booted: an address, no boot file.
    let skip = ctx(Verdict::Skip("netboot off".into()), Ok(Some(reservation())));
    let (bytes, _) = handle_dhcp(&skip, &discover, from).await.unwrap();
    let m = decode(&bytes);
    assert_eq!(m.yiaddr(), Ipv4Addr::new(10, 7, 0, 50));
    assert!(!m.opts().contains(OptionCode::BootfileName));
}

/// Replies are small whatever came in: the largest variable part is a
/// copied option of at most 255 bytes.
const MAX_REPLY: usize = 1024;

fn check_any(bytes: &[u8], rt: &tokio::runtime::Runtime) {
    let _ = parse(bytes);
    let from: SocketAddr = FROM.parse().unwrap();
    for c in [ctx(Verdict::Boot, Ok(Some(reservation()))), ctx(Verdict::Boot, Ok(None))] {
        rt.block_on(async {
            for r in [
                handle_proxy(&c, bytes, from, false).await,
                handle_proxy(&c, bytes, from, true).await,
                handle_dhcp(&c, bytes, from).await,
            ]
            .into_iter()
            .flatten()
            {
                assert!(r.0.len() <= MAX_REPLY, "reply of {} bytes", r.0.len());
            }
        });
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Arbitrary datagrams: no panic, bounded replies.
    #[test]
    fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..RECV_BUF)) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        check_any(&bytes, &rt);
    }

    /// Valid requests with bytes overwritten: reaches past the header
    /// checks into the options, where random bytes rarely get.
    #[test]
    fn mutated_requests(
        kind in 0..3usize,
        msg_type in prop::sample::select(vec![MessageType::Discover, MessageType::Request, MessageType::Inform, MessageType::Decline]),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..12),
        cut in any::<usize>(),
    ) {
        let opts = [uefi_pxe(), http_boot(), vec![DhcpOption::UserClass(b"iPXE".to_vec())]][kind].clone();
        let mut bytes = request(msg_type, opts);
        for (at, b) in edits {
            let i = at % bytes.len();
            bytes[i] = b;
        }
        bytes.truncate(cut % (bytes.len() + 1) + 1);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        check_any(&bytes, &rt);
    }
}
