//! Who is asking: a network-boot client's kind, from DHCP options 93
//! (client system architecture, RFC 4578), 60 (vendor class) and 77 (user
//! class). What each kind is handed is [`crate::BootFiles::boot_file`].

use dhcproto::v4::{DhcpOption, Message, OptionCode};

/// The firmware a PXE or HTTP boot client runs, as far as kiln serves it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firmware {
    /// Legacy BIOS PXE (arch 0): `undionly.kpxe`.
    Bios,
    /// x86-64 UEFI (arch 7 or 9 for PXE, 16 for HTTP boot): `ipxe.efi`.
    Uefi64,
}

/// A network-boot client kiln knows how to serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Client {
    /// The firmware's own PXE client: a boot file over TFTP.
    Pxe(Firmware),
    /// UEFI HTTP boot (vendor class `HTTPClient`): the EFI binary as a URL.
    HttpBoot(Firmware),
    /// iPXE itself (user class `iPXE`), whatever loaded it: the boot script.
    Ipxe,
}

/// What a DHCP request says about its sender.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An ordinary DHCP client (an OS, a BMC): no boot file.
    Plain,
    /// A network-boot client kiln serves.
    Netboot(Client),
    /// A network-boot client of an architecture kiln has no iPXE for (arm64,
    /// 32-bit UEFI...): logged, never answered with a boot file.
    Unsupported { arch: u16, vendor_class: String },
}

/// RFC 4578 / IANA "Processor Architecture Types" that kiln serves.
const ARCH_BIOS: u16 = 0;
const ARCH_EFI_BC: u16 = 7; // x86-64 UEFI, as most firmware sends it
const ARCH_EFI_X86_64: u16 = 9;
const ARCH_EFI_X86_64_HTTP: u16 = 16;

/// The client's kind. Reads only options, so any decoded message is safe to
/// classify.
pub fn classify(msg: &Message) -> Kind {
    let vendor_class = match msg.opts().get(OptionCode::ClassIdentifier) {
        Some(DhcpOption::ClassIdentifier(v)) => v.as_slice(),
        _ => &[],
    };
    let pxe = vendor_class.starts_with(b"PXEClient");
    let http = vendor_class.starts_with(b"HTTPClient");
    // iPXE sends its user class as the bare string (not RFC 3004's
    // length-prefixed list), so look for the bytes anywhere in it.
    let ipxe = match msg.opts().get(OptionCode::UserClass) {
        Some(DhcpOption::UserClass(v)) => v.windows(4).any(|w| w == b"iPXE"),
        _ => false,
    };
    if !pxe && !http && !ipxe {
        return Kind::Plain;
    }
    let arch = match msg.opts().get(OptionCode::ClientSystemArchitecture) {
        Some(DhcpOption::ClientSystemArchitecture(a)) => Some(u16::from(*a)),
        _ => arch_from_vendor_class(vendor_class),
    };
    let unsupported =
        |arch: u16| Kind::Unsupported { arch, vendor_class: String::from_utf8_lossy(vendor_class).into_owned() };
    let firmware = match arch {
        Some(ARCH_BIOS) => Firmware::Bios,
        Some(ARCH_EFI_BC | ARCH_EFI_X86_64 | ARCH_EFI_X86_64_HTTP) => Firmware::Uefi64,
        // iPXE that does not say its architecture is one kiln handed out.
        None if ipxe => Firmware::Uefi64,
        // A PXE client must send option 93 (RFC 4578); without it we cannot
        // know which binary would run.
        None => return unsupported(u16::MAX),
        Some(other) => return unsupported(other),
    };
    let client = if ipxe {
        Client::Ipxe
    } else if http {
        Client::HttpBoot(firmware)
    } else {
        Client::Pxe(firmware)
    };
    Kind::Netboot(client)
}

/// `PXEClient:Arch:00007:UNDI:003016`: the architecture, for clients that
/// put it only in the vendor class.
fn arch_from_vendor_class(vendor_class: &[u8]) -> Option<u16> {
    let s = std::str::from_utf8(vendor_class).ok()?;
    let rest = s.split_once(":Arch:")?.1;
    rest.get(..5)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcproto::v4::Architecture;

    fn msg(opts: Vec<DhcpOption>) -> Message {
        let mut m = Message::default();
        for o in opts {
            m.opts_mut().insert(o);
        }
        m
    }

    fn arch(n: u16) -> DhcpOption {
        DhcpOption::ClientSystemArchitecture(Architecture::from(n))
    }

    fn class(s: &str) -> DhcpOption {
        DhcpOption::ClassIdentifier(s.as_bytes().to_vec())
    }

    #[test]
    fn uefi_pxe_by_option_93() {
        for a in [7, 9] {
            assert_eq!(
                classify(&msg(vec![class("PXEClient:Arch:00007:UNDI:003000"), arch(a)])),
                Kind::Netboot(Client::Pxe(Firmware::Uefi64))
            );
        }
    }

    #[test]
    fn bios_pxe() {
        assert_eq!(
            classify(&msg(vec![class("PXEClient:Arch:00000:UNDI:002001"), arch(0)])),
            Kind::Netboot(Client::Pxe(Firmware::Bios))
        );
    }

    #[test]
    fn arch_from_the_vendor_class_when_option_93_is_missing() {
        assert_eq!(
            classify(&msg(vec![class("PXEClient:Arch:00000:UNDI:002001")])),
            Kind::Netboot(Client::Pxe(Firmware::Bios))
        );
        assert!(matches!(classify(&msg(vec![class("PXEClient")])), Kind::Unsupported { .. }));
    }

    #[test]
    fn uefi_http_boot() {
        assert_eq!(
            classify(&msg(vec![class("HTTPClient:Arch:00016:UNDI:003001"), arch(16)])),
            Kind::Netboot(Client::HttpBoot(Firmware::Uefi64))
        );
    }

    #[test]
    fn ipxe_user_class_wins_over_the_pxe_vendor_class() {
        let m = msg(vec![class("PXEClient:Arch:00007:UNDI:003010"), arch(7), DhcpOption::UserClass(b"iPXE".to_vec())]);
        assert_eq!(classify(&m), Kind::Netboot(Client::Ipxe));
        // undionly.kpxe's iPXE on a BIOS machine is iPXE too.
        let m = msg(vec![arch(0), DhcpOption::UserClass(b"iPXE".to_vec())]);
        assert_eq!(classify(&m), Kind::Netboot(Client::Ipxe));
    }

    #[test]
    fn arm64_is_unsupported() {
        for a in [11, 19] {
            match classify(&msg(vec![class("PXEClient:Arch:00011:UNDI:003000"), arch(a)])) {
                Kind::Unsupported { arch, vendor_class } => {
                    assert_eq!(arch, a);
                    assert!(vendor_class.starts_with("PXEClient"));
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn plain_clients() {
        assert_eq!(classify(&msg(vec![])), Kind::Plain);
        assert_eq!(classify(&msg(vec![class("udhcp 1.35.0")])), Kind::Plain);
        // Option 93 alone (some OS DHCP clients send it) is no boot request.
        assert_eq!(classify(&msg(vec![arch(7)])), Kind::Plain);
    }
}
