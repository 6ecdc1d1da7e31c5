//! IPMI 2.0 over LAN (RMCP+), on the `ipmi-rs` crate.
//!
//! `ipmi-rs` does the session work (RAKP key exchange, HMAC integrity, AES
//! confidentiality), so kiln uses it, with one patch (third_party/ipmi-rs):
//! unpatched it sent an ASF presence ping before every session and waited
//! for the pong, which virtualbmc never sends, so it did not hold up
//! against the emulator. It has no chassis commands (its command set is app,
//! storage and sensor commands), so the three kiln needs are defined here
//! on its `IpmiCommand` trait: Get Chassis Status (netfn 0x00, cmd 0x01),
//! Chassis Control (0x02) and Set System Boot Options (0x08), per the IPMI
//! 2.0 specification, sections 28.2, 28.3 and 28.12.
//!
//! `ipmi-rs` is blocking (a UDP socket with a read timeout); each call runs
//! on tokio's blocking pool and is bounded twice: the socket's timeout, and
//! a tokio timeout around the whole session in case a BMC dribbles answers.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use ipmi_rs::connection::{CompletionErrorCode, IpmiCommand, Message, NetFn};
use ipmi_rs::rmcp::{ActivationError, Rmcp, RmcpIpmiError, RmcpIpmiReceiveError, V2_0ActivationError};
use ipmi_rs::{Ipmi, IpmiError};

use crate::{BmcError, BootDevice, BootMode, BootOverride, Config, ErrorKind, PowerAction, PowerState, Result};

const DEFAULT_PORT: u16 = 623;

#[derive(Debug, Clone)]
pub struct IpmiClient {
    address: String,
    username: String,
    password: String,
    timeout: Duration,
}

impl IpmiClient {
    pub fn new(config: Config) -> Result<Self> {
        let client = Self {
            address: config.address,
            username: config.credentials.username,
            password: config.credentials.password,
            timeout: config.timeout,
        };
        if client.address.contains("://") {
            return Err(client.error(
                "configure client",
                ErrorKind::Rejected { status: None, message: "an IPMI address is host[:port], not a URL".into() },
            ));
        }
        Ok(client)
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    fn error(&self, step: &str, kind: ErrorKind) -> BmcError {
        BmcError { address: self.address.clone(), step: step.to_string(), kind }
    }

    pub(crate) fn unsupported(&self, step: &str, why: &str) -> BmcError {
        self.error(step, ErrorKind::Unsupported(why.to_string()))
    }

    fn socket_address(&self, step: &str) -> Result<SocketAddr> {
        let with_port = if self.address.parse::<SocketAddr>().is_ok() || has_port(&self.address) {
            self.address.clone()
        } else {
            format!("{}:{DEFAULT_PORT}", self.address.trim_start_matches('[').trim_end_matches(']'))
        };
        with_port
            .to_socket_addrs()
            .map_err(|e| self.error(step, ErrorKind::Unreachable(format!("cannot resolve {with_port}: {e}"))))?
            .next()
            .ok_or_else(|| self.error(step, ErrorKind::Unreachable(format!("{with_port} resolves to nothing"))))
    }

    /// Opens a session, runs `work` in it, bounded by the timeout.
    async fn session<T, F>(&self, step: &str, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Ipmi<Rmcp>) -> std::result::Result<T, ErrorKind> + Send + 'static,
    {
        let address = self.socket_address(step)?;
        let (username, password, timeout) = (self.username.clone(), self.password.clone(), self.timeout);
        let blocking = tokio::task::spawn_blocking(move || -> std::result::Result<T, ErrorKind> {
            let mut rmcp = Rmcp::new(address, timeout).map_err(|e| ErrorKind::Unreachable(e.to_string()))?;
            rmcp.activate(true, Some(&username), Some(password.as_bytes())).map_err(|e| activation_kind(e, timeout))?;
            let mut ipmi = Ipmi::new(rmcp);
            work(&mut ipmi)
        });
        // Activation alone is four round trips; allow each its timeout.
        match tokio::time::timeout(timeout * 6, blocking).await {
            Err(_) => Err(self.error(step, ErrorKind::Timeout(timeout))),
            Ok(Err(join)) => Err(self.error(step, ErrorKind::Garbage(format!("IPMI session task failed: {join}")))),
            Ok(Ok(result)) => result.map_err(|kind| self.error(step, kind)),
        }
    }

    pub async fn power_state(&self) -> Result<PowerState> {
        let timeout = self.timeout;
        self.session("read power state", move |ipmi| {
            let on = ipmi.send_recv(GetChassisStatus).map_err(|e| command_kind(e, timeout))?;
            Ok(if on { PowerState::On } else { PowerState::Off })
        })
        .await
    }

    pub async fn power(&self, action: PowerAction) -> Result<()> {
        let control = match action {
            PowerAction::Off => 0x00,
            PowerAction::On => 0x01,
            PowerAction::Cycle => 0x02,
            PowerAction::Reset => 0x03,
            PowerAction::SoftOff => 0x05,
        };
        let timeout = self.timeout;
        self.session(&format!("power {action}"), move |ipmi| {
            match ipmi.send_recv(ChassisControl(control)) {
                // Power cycle is optional in the specification; virtualbmc and
                // some BMCs refuse it (0xCC). Off then on is the same thing.
                Err(IpmiError::Failed { completion_code: CompletionErrorCode::InvalidDataFieldInRequest, .. })
                    if action == PowerAction::Cycle =>
                {
                    ipmi.send_recv(ChassisControl(0x00)).map_err(|e| command_kind(e, timeout))?;
                    ipmi.send_recv(ChassisControl(0x01)).map_err(|e| command_kind(e, timeout))
                }
                other => other.map_err(|e| command_kind(e, timeout)),
            }
        })
        .await
    }

    pub async fn set_boot(&self, boot: BootOverride) -> Result<()> {
        let step = format!("set boot device {}", boot.device);
        let device = match boot.device {
            BootDevice::Pxe => 0x04,
            BootDevice::Disk => 0x08,
            BootDevice::Cd => 0x14,
            BootDevice::Http => return Err(self.unsupported(&step, "IPMI has no HTTP boot device; use Redfish")),
        };
        // Boot flags (parameter 5), byte 1: bit 7 valid, bit 6 persistent,
        // bit 5 EFI; byte 2 bits 5:2 the device.
        let mut flags = 0x80u8;
        if !boot.once {
            flags |= 0x40;
        }
        if boot.mode == Some(BootMode::Uefi) {
            flags |= 0x20;
        }
        let timeout = self.timeout;
        self.session(&step, move |ipmi| {
            ipmi.send_recv(SetBootFlags([flags, device, 0, 0, 0])).map_err(|e| command_kind(e, timeout))
        })
        .await
    }
}

fn has_port(address: &str) -> bool {
    match address.rsplit_once(':') {
        // "[::1]:623" or "host:623", not a bare IPv6 address.
        Some((host, port)) => port.parse::<u16>().is_ok() && (!host.contains(':') || host.ends_with(']')),
        None => false,
    }
}

fn io_kind(e: &std::io::Error, timeout: Duration) -> ErrorKind {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => ErrorKind::Timeout(timeout),
        _ => ErrorKind::Unreachable(e.to_string()),
    }
}

fn receive_kind(e: &RmcpIpmiReceiveError, timeout: Duration) -> ErrorKind {
    match e {
        RmcpIpmiReceiveError::Io(io) => io_kind(io, timeout),
        other => ErrorKind::Garbage(format!("{other:?}")),
    }
}

fn activation_kind(e: ActivationError, timeout: Duration) -> ErrorKind {
    match e {
        ActivationError::BindSocket(io) | ActivationError::PingSend(io) | ActivationError::PongReceive(io) => {
            io_kind(&io, timeout)
        }
        // The first packet of the session: nothing there, or nothing answering.
        ActivationError::GetChannelAuthenticationCapabilities(IpmiError::Connection(RmcpIpmiError::Receive(r))) => {
            receive_kind(&r, timeout)
        }
        ActivationError::V2_0(v2) => match v2 {
            V2_0ActivationError::Io(io) => io_kind(&io, timeout),
            // The BMC answered Open Session a moment ago, then went silent at
            // RAKP 1, the message that carries the user name: that is how
            // virtualbmc (and some BMCs) treat an unknown user, where the
            // specification asks for RAKP 2 with status 0x0D.
            V2_0ActivationError::RakpMessage2Receive(RmcpIpmiReceiveError::Io(io))
                if matches!(io_kind(&io, timeout), ErrorKind::Timeout(_)) =>
            {
                ErrorKind::Unauthorized(
                    "no answer to RAKP 1 after the session opened: the BMC does not know this user name".into(),
                )
            }
            V2_0ActivationError::OpenSessionResponseReceive(r)
            | V2_0ActivationError::RakpMessage2Receive(r)
            | V2_0ActivationError::RakpMessage4Receive(r) => receive_kind(&r, timeout),
            // A wrong password: the BMC's RAKP 2 HMAC (keyed with its copy of
            // the password) does not match ours.
            V2_0ActivationError::ServerAuthenticationFailed
            | V2_0ActivationError::RakpMessage4InvalidIntegrityCheckValue => {
                ErrorKind::Unauthorized("the BMC's RAKP key exchange does not match this password".into())
            }
            // A wrong user name: RAKP 2 carries an error status (0x0D
            // unauthorized name, 0x12 illegal parameter, …).
            V2_0ActivationError::RakpMessage2Parse(p) => {
                ErrorKind::Unauthorized(format!("the BMC refused the session: {p:?}"))
            }
            other => ErrorKind::Garbage(format!("RMCP+ session setup: {other:?}")),
        },
        other => ErrorKind::Garbage(format!("RMCP session setup: {other:?}")),
    }
}

fn command_kind<E: std::fmt::Debug>(e: IpmiError<RmcpIpmiError, E>, timeout: Duration) -> ErrorKind {
    match e {
        IpmiError::Connection(RmcpIpmiError::Receive(r)) => receive_kind(&r, timeout),
        IpmiError::Failed { completion_code, .. } => {
            ErrorKind::Rejected { status: None, message: format!("completion code {completion_code:?}") }
        }
        IpmiError::Command { completion_code: Some(code), .. } => {
            ErrorKind::Rejected { status: None, message: format!("completion code {code:?}") }
        }
        other => ErrorKind::Garbage(format!("{other:?}")),
    }
}

/// Get Chassis Status: byte 1 bit 0 is "system power is on".
struct GetChassisStatus;

impl From<GetChassisStatus> for Message {
    fn from(_: GetChassisStatus) -> Message {
        Message::new_request(NetFn::Chassis, 0x01, Vec::new())
    }
}

impl IpmiCommand for GetChassisStatus {
    type Output = bool;
    type Error = String;
    fn parse_success_response(data: &[u8]) -> std::result::Result<bool, String> {
        data.first().map(|b| b & 0x01 == 0x01).ok_or_else(|| "empty chassis status".to_string())
    }
}

/// Chassis Control: 0 down, 1 up, 2 cycle, 3 hard reset, 5 soft off.
struct ChassisControl(u8);

impl From<ChassisControl> for Message {
    fn from(c: ChassisControl) -> Message {
        Message::new_request(NetFn::Chassis, 0x02, vec![c.0])
    }
}

impl IpmiCommand for ChassisControl {
    type Output = ();
    type Error = String;
    fn parse_success_response(_: &[u8]) -> std::result::Result<(), String> {
        Ok(())
    }
}

/// Set System Boot Options, parameter 5 (boot flags).
struct SetBootFlags([u8; 5]);

impl From<SetBootFlags> for Message {
    fn from(f: SetBootFlags) -> Message {
        let mut data = vec![0x05];
        data.extend_from_slice(&f.0);
        Message::new_request(NetFn::Chassis, 0x08, data)
    }
}

impl IpmiCommand for SetBootFlags {
    type Output = ();
    type Error = String;
    fn parse_success_response(_: &[u8]) -> std::result::Result<(), String> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        assert!(has_port("10.0.0.5:6230"));
        assert!(has_port("[::1]:623"));
        assert!(!has_port("::1"));
        assert!(!has_port("bmc.example"));
    }

    #[test]
    fn boot_flags_message() {
        let message: Message = SetBootFlags([0x80 | 0x20, 0x04, 0, 0, 0]).into();
        assert_eq!(message.cmd(), 0x08);
        assert_eq!(message.data(), &[0x05, 0xA0, 0x04, 0, 0, 0]);
    }
}
