//! Out-of-band control of a machine through its BMC: power, the next boot
//! device, and (Redfish only) virtual media.
//!
//! [`Client`] is the one entry point; it speaks Redfish ([`redfish`]) or
//! IPMI over LAN ([`ipmi`]) as the [`Config`] says. Every call is bounded by
//! `Config::timeout` (a BMC that accepts a connection and never answers
//! fails with [`ErrorKind::Timeout`]) and every error names the BMC and the
//! step ([`BmcError`]).

mod error;
pub mod ipmi;
pub mod redfish;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

pub use error::{BmcError, ErrorKind, Result};

/// The wire protocol a BMC speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Redfish,
    Ipmi,
}

impl FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "redfish" => Ok(Self::Redfish),
            "ipmi" => Ok(Self::Ipmi),
            other => Err(format!("unknown BMC protocol {other:?} (expected redfish or ipmi)")),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Redfish => "redfish",
            Self::Ipmi => "ipmi",
        })
    }
}

/// How to check a Redfish BMC's TLS certificate.
#[derive(Clone, Default)]
pub enum Tls {
    /// The system's (webpki) roots.
    #[default]
    SystemRoots,
    /// Only this CA (PEM), e.g. the BMC vendor's or the site's own.
    Ca(String),
    /// No verification at all. Only on an explicit operator request; kiln
    /// warns about it when the document is applied.
    Insecure,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SystemRoots => f.write_str("SystemRoots"),
            Self::Ca(_) => f.write_str("Ca(..)"),
            Self::Insecure => f.write_str("Insecure"),
        }
    }
}

/// User name and password for the BMC. `Debug` never shows the password.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials").field("username", &self.username).field("password", &"<redacted>").finish()
    }
}

/// Everything needed to talk to one BMC.
#[derive(Debug, Clone)]
pub struct Config {
    pub protocol: Protocol,
    /// Redfish: a URL (`https://10.0.0.5`, `http://127.0.0.1:8000`, or with
    /// the system's path, `https://bmc/redfish/v1/Systems/1`); a bare
    /// `host[:port]` means https. IPMI: `host[:port]` (port 623 by default).
    pub address: String,
    pub credentials: Credentials,
    pub tls: Tls,
    /// Bound on each BMC call (connect + answer).
    pub timeout: Duration,
}

/// The default bound on one BMC call. Real BMCs take a few seconds for a
/// power action; one that has not answered in 30 s is not going to.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A machine's power state as its BMC reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerState {
    On,
    Off,
    PoweringOn,
    PoweringOff,
    /// Redfish `Paused` (a suspended VM, for instance).
    Paused,
}

impl fmt::Display for PowerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::On => "on",
            Self::Off => "off",
            Self::PoweringOn => "powering-on",
            Self::PoweringOff => "powering-off",
            Self::Paused => "paused",
        })
    }
}

/// What to do with the machine's power.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAction {
    On,
    /// Hard off, at once (Redfish ForceOff, IPMI power down).
    Off,
    /// Off then on; on a machine that is off, just on (what an operator who
    /// asks for "cycle" wants: the machine running, freshly booted).
    Cycle,
    /// Hard reset without removing power (Redfish ForceRestart, IPMI hard reset).
    Reset,
    /// Ask the OS to shut down (Redfish GracefulShutdown, IPMI soft off / ACPI).
    SoftOff,
}

impl FromStr for PowerAction {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "on" => Ok(Self::On),
            "off" => Ok(Self::Off),
            "cycle" => Ok(Self::Cycle),
            "reset" => Ok(Self::Reset),
            "soft-off" => Ok(Self::SoftOff),
            other => Err(format!("unknown power action {other:?} (expected on, off, cycle, reset or soft-off)")),
        }
    }
}

impl fmt::Display for PowerAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::On => "on",
            Self::Off => "off",
            Self::Cycle => "cycle",
            Self::Reset => "reset",
            Self::SoftOff => "soft-off",
        })
    }
}

/// The device to boot from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootDevice {
    /// Network boot (PXE).
    Pxe,
    /// UEFI HTTP boot (Redfish `UefiHttp`; IPMI has no such device).
    Http,
    /// The local disk (Redfish `Hdd`).
    Disk,
    /// CD/DVD, including virtual media.
    Cd,
}

impl FromStr for BootDevice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "pxe" => Ok(Self::Pxe),
            "http" => Ok(Self::Http),
            "disk" => Ok(Self::Disk),
            "cd" => Ok(Self::Cd),
            other => Err(format!("unknown boot device {other:?} (expected pxe, http, disk or cd)")),
        }
    }
}

impl fmt::Display for BootDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Pxe => "pxe",
            Self::Http => "http",
            Self::Disk => "disk",
            Self::Cd => "cd",
        })
    }
}

/// Firmware mode for the boot override.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootMode {
    Uefi,
    Legacy,
}

impl fmt::Display for BootMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Uefi => "uefi",
            Self::Legacy => "legacy",
        })
    }
}

/// A boot device override: the device, for the next boot only or for
/// every boot, and optionally the firmware mode (unchanged when `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootOverride {
    pub device: BootDevice,
    pub once: bool,
    pub mode: Option<BootMode>,
}

/// The boot override as the BMC reports it after a change. IPMI cannot read
/// it back reliably (most BMCs clear it on the next boot), so only Redfish
/// fills `device`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BootState {
    /// Redfish `BootSourceOverrideTarget` as reported (e.g. "Pxe").
    pub target: Option<String>,
    /// Redfish `BootSourceOverrideEnabled` (e.g. "Once", "Continuous").
    pub enabled: Option<String>,
    /// Redfish `BootSourceOverrideMode` (e.g. "UEFI", "Legacy").
    pub mode: Option<String>,
}

/// A client for one BMC.
#[derive(Debug, Clone)]
pub enum Client {
    Redfish(redfish::RedfishClient),
    Ipmi(ipmi::IpmiClient),
}

impl Client {
    /// Builds a client; fails only on a malformed address or CA (no I/O here).
    pub fn new(config: Config) -> Result<Self> {
        Ok(match config.protocol {
            Protocol::Redfish => Self::Redfish(redfish::RedfishClient::new(config)?),
            Protocol::Ipmi => Self::Ipmi(ipmi::IpmiClient::new(config)?),
        })
    }

    pub fn address(&self) -> &str {
        match self {
            Self::Redfish(c) => c.address(),
            Self::Ipmi(c) => c.address(),
        }
    }

    pub async fn power_state(&self) -> Result<PowerState> {
        match self {
            Self::Redfish(c) => c.power_state().await,
            Self::Ipmi(c) => c.power_state().await,
        }
    }

    /// Performs a power action and returns the power state read right after.
    /// `Cycle` on a machine that is off powers it on (see [`PowerAction::Cycle`]).
    pub async fn power(&self, action: PowerAction) -> Result<PowerState> {
        let action = if action == PowerAction::Cycle && self.power_state().await? == PowerState::Off {
            PowerAction::On
        } else {
            action
        };
        match self {
            Self::Redfish(c) => c.power(action).await?,
            Self::Ipmi(c) => c.power(action).await?,
        }
        self.power_state().await
    }

    /// Sets the boot device override and returns what the BMC reports after.
    pub async fn set_boot(&self, boot: BootOverride) -> Result<BootState> {
        match self {
            Self::Redfish(c) => c.set_boot(boot).await,
            Self::Ipmi(c) => c.set_boot(boot).await.map(|()| BootState::default()),
        }
    }

    /// Inserts an ISO (by URL the BMC downloads) into the virtual CD drive.
    pub async fn insert_media(&self, image_url: &str) -> Result<()> {
        match self {
            Self::Redfish(c) => c.insert_media(image_url).await,
            Self::Ipmi(c) => Err(c.unsupported("insert virtual media", "IPMI has no virtual media")),
        }
    }

    /// The virtual CD drive's image URL and whether it is inserted, as the
    /// BMC reports them.
    pub async fn media_state(&self) -> Result<(Option<String>, bool)> {
        match self {
            Self::Redfish(c) => c.media_state().await,
            Self::Ipmi(c) => Err(c.unsupported("read virtual media", "IPMI has no virtual media")),
        }
    }

    /// Ejects whatever the virtual CD drive holds.
    pub async fn eject_media(&self) -> Result<()> {
        match self {
            Self::Redfish(c) => c.eject_media().await,
            Self::Ipmi(c) => Err(c.unsupported("eject virtual media", "IPMI has no virtual media")),
        }
    }
}
