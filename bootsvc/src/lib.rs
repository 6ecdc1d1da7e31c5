//! kiln's network boot services, for machines whose firmware boots from the
//! network with plain PXE or UEFI HTTP boot:
//!
//! - [`dhcp::serve_proxy`]: ProxyDHCP (UDP 67 and 4011) beside the site's own
//!   DHCP server. It answers only network-boot clients the server decides
//!   to boot, with a boot file and never an address.
//! - [`dhcp::serve_dhcp`]: a DHCP server with reservations, for networks where
//!   kiln is the only DHCP server: an address only for a known MAC.
//! - [`tftp::serve`]: read-only TFTP of the iPXE binaries.
//!
//! What to do for a MAC is not decided here: the server answers through
//! [`Machines`], so the netboot gate stays in one place.

pub mod client;
pub mod dhcp;
pub mod ipxe;
pub mod net;
pub mod tftp;

use std::fmt;
use std::net::Ipv4Addr;

pub use client::{Client, Firmware, Kind};

/// An Ethernet MAC address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// The server's answer to "should this machine boot from the network now?".
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Boot,
    /// Stay silent, so the firmware moves on to its next boot device; the
    /// reason is logged.
    Skip(String),
}

/// An address reserved for one MAC (Tinkerbell's `interfaces[].dhcp`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    /// The Hardware document it comes from, for logs.
    pub hardware: String,
    pub address: Ipv4Addr,
    pub netmask: Ipv4Addr,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub hostname: Option<String>,
    pub domain_name: Option<String>,
    pub lease_secs: u32,
}

/// What the server knows about machines: the one place boot decisions and
/// reservations come from.
#[async_trait::async_trait]
pub trait Machines: Send + Sync + 'static {
    async fn verdict(&self, mac: Mac) -> Verdict;
    /// `Err` when the machine's documents hold a reservation that cannot be
    /// used (a malformed field, an address two machines claim): logged, and
    /// the machine gets no answer.
    async fn reservation(&self, mac: Mac) -> Result<Option<Reservation>, String>;
}

/// What the boot services hand out, and where clients fetch it.
#[derive(Clone, Debug)]
pub struct BootFiles {
    /// The UEFI iPXE binary's name in the iPXE directory: `ipxe.efi` (its
    /// own drivers) or `snponly.efi` (the firmware's network driver).
    pub efi: String,
    /// The TFTP server clients are sent to (`siaddr`, option 66).
    pub tftp_server: Ipv4Addr,
    /// `http://HOST:PORT` of the server's plain-HTTP netboot routes: UEFI
    /// HTTP boot fetches `{http_base}/boot/ipxe-bin/{efi}`, iPXE the script
    /// `{http_base}/boot/ipxe`.
    pub http_base: String,
}

/// The legacy BIOS iPXE: it keeps using the PXE ROM's network driver.
pub const BIOS_FILE: &str = "undionly.kpxe";

impl BootFiles {
    /// The boot file for a client: a TFTP file name or an HTTP URL.
    pub fn boot_file(&self, client: Client) -> String {
        let base = self.http_base.trim_end_matches('/');
        match client {
            Client::Ipxe => format!("{base}/boot/ipxe"),
            Client::Pxe(Firmware::Bios) => BIOS_FILE.to_string(),
            Client::Pxe(Firmware::Uefi64) => self.efi.clone(),
            // HTTP boot of a BIOS machine does not exist; arch 16 is UEFI.
            Client::HttpBoot(_) => format!("{base}/boot/ipxe-bin/{}", self.efi),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_files_per_client() {
        let files = BootFiles {
            efi: "snponly.efi".into(),
            tftp_server: Ipv4Addr::new(10, 0, 0, 2),
            http_base: "http://10.0.0.2:7100/".into(),
        };
        assert_eq!(files.boot_file(Client::Ipxe), "http://10.0.0.2:7100/boot/ipxe");
        assert_eq!(files.boot_file(Client::Pxe(Firmware::Bios)), "undionly.kpxe");
        assert_eq!(files.boot_file(Client::Pxe(Firmware::Uefi64)), "snponly.efi");
        assert_eq!(
            files.boot_file(Client::HttpBoot(Firmware::Uefi64)),
            "http://10.0.0.2:7100/boot/ipxe-bin/snponly.efi"
        );
    }

    #[test]
    fn mac_display() {
        assert_eq!(Mac([0x52, 0x54, 0, 0xab, 1, 0xff]).to_string(), "52:54:00:ab:01:ff");
    }
}
