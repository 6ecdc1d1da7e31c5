//! What a network-booting machine should boot: the hook image (it has work)
//! or its local disk. Every boot path (the iPXE script, ProxyDHCP, kiln's
//! DHCP server) asks here, so the netboot gate is decided in one place;
//! the DHCP server's address reservations come from here too. A hook
//! boot carries the machine's one-time enrolment credential
//! ([`super::enrol`]).

use std::net::Ipv4Addr;

use kiln_boot_services::Reservation;
use serde_json::Value;

use super::{App, OpContext};

/// What a machine should boot, and why.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// `enrolment`: the one-time credential the agent exchanges for its
    /// agent credential (`kiln.enrol=`); a secret.
    Hook {
        agent_id: String,
        workflow: String,
        enrolment: String,
    },
    Local(String),
}

/// Tinkerbell's lease time when a Hardware gives none (Smee's default).
pub const DEFAULT_LEASE_SECS: u32 = 86_400;

impl App {
    /// Anyone on the provisioning network may ask, so this takes any
    /// context. The answer's only secret is the enrolment credential of
    /// this boot: bound to the machine, short-lived and usable once, it
    /// supersedes the machine's earlier unused ones (docs/security.md says
    /// what that does and does not prevent).
    pub async fn boot_decision(&self, _opctx: &OpContext, mac: &str) -> Decision {
        let Some(mac) = kiln_documents::parse_mac(mac) else {
            return Decision::Local(format!("{mac:?} is not a MAC address"));
        };
        let hardware = match self.store.list_hardware().await {
            Ok(h) => h,
            Err(e) => return Decision::Local(format!("store error: {e}")),
        };
        let Some(hw) = hardware.into_iter().find(|h| h.doc.macs.contains(&mac)) else {
            if self.netboot.discovery {
                return self.discovery_boot(&mac).await;
            }
            return Decision::Local(format!("no hardware has MAC {mac}"));
        };
        if !hw.doc.netboot {
            return Decision::Local(format!("hardware {} has netboot off", hw.doc.id));
        }
        if hw.doc.id.starts_with(super::discovery::DISCOVERED_PREFIX) && self.netboot.discovery {
            match self.is_discovered(&hw.doc.id).await {
                Ok(true) => return self.discovery_boot(&mac).await,
                Ok(false) => {}
                Err(e) => return Decision::Local(format!("store error: {e}")),
            }
        }
        match self.store.active_workflows_for_agent(&hw.doc.agent_id).await {
            Ok(ids) if !ids.is_empty() => match self.issue_enrolment(&hw.doc, &mac, &ids[0]).await {
                Ok(enrolment) => Decision::Hook { agent_id: hw.doc.agent_id, workflow: ids[0].clone(), enrolment },
                Err(e) => Decision::Local(format!("cannot issue an enrolment credential: {e}")),
            },
            Ok(_) => Decision::Local(format!("hardware {} has no pending workflow", hw.doc.id)),
            Err(e) => Decision::Local(format!("store error: {e}")),
        }
    }

    /// The hook's kernel parameters for one boot, after the kernel image:
    /// what its init and agent need. `base` is the server's URL as the
    /// machine reached it; `mac` is the boot NIC's (iPXE's `${net0/mac}` in
    /// a script); `enrolment` is this boot's one-time credential, a secret
    /// (never logged). The iPXE script and the hook ISO carry the same.
    pub fn hook_kernel_args(&self, base: &str, agent_id: &str, mac: &str, enrolment: &str) -> String {
        let n = &self.netboot;
        let server = n.agent_url.as_deref().map_or(base, |u| u.trim_end_matches('/'));
        let ca = n.ca_pem.as_ref().map_or(String::new(), |pem| {
            use sha2::Digest;
            format!(" kiln.ca_url={base}/boot/ca.pem kiln.ca_sha256={}", hex::encode(sha2::Sha256::digest(pem)))
        });
        format!("kiln.server={server} kiln.agent_id={agent_id} kiln.mac={mac}{ca} kiln.enrol={enrolment} {}", n.cmdline)
    }

    /// Should the DHCP services hand this machine a boot file? The same
    /// gate as [`App::boot_decision`], and no when there is no hook image
    /// to chain to (the firmware then moves on to its disk at once instead
    /// of loading iPXE only to be told to exit).
    pub async fn dhcp_boot_decision(&self, opctx: &OpContext, mac: &str) -> Decision {
        match self.boot_decision(opctx, mac).await {
            Decision::Hook { .. } if self.netboot.hook_dir.is_none() => {
                Decision::Local("this server has no hook image (--hook-dir)".into())
            }
            d => d,
        }
    }

    /// The address reserved for `mac` by its Hardware's Tinkerbell
    /// `interfaces[].dhcp` (with `ip.address` and `ip.netmask`), for kiln's
    /// DHCP server. `Ok(None)`: no reservation (unknown MAC, no address, or
    /// `disableDhcp`). `Err`: one that cannot be used, naming the field (or
    /// the other machine claiming the same address).
    pub async fn dhcp_reservation(&self, _opctx: &OpContext, mac: &str) -> Result<Option<Reservation>, String> {
        let mac = kiln_documents::parse_mac(mac).ok_or_else(|| format!("{mac:?} is not a MAC address"))?;
        let hardware = self.store.list_hardware().await.map_err(|e| format!("store error: {e}"))?;
        let mut found = None;
        for hw in &hardware {
            for (i, iface) in interfaces(&hw.doc.spec) {
                if iface_mac(iface).as_deref() == Some(mac.as_str()) {
                    found = Some((hw, i, iface));
                }
            }
        }
        let Some((hw, i, iface)) = found else { return Ok(None) };
        if iface.get("disableDhcp").and_then(Value::as_bool) == Some(true) {
            return Ok(None);
        }
        let Some(dhcp) = iface.get("dhcp") else { return Ok(None) };
        if dhcp.pointer("/ip/address").is_none() {
            return Ok(None);
        }
        let res = reservation(&hw.doc.id, i, dhcp).map_err(|e| format!("hardware {}: {e}", hw.doc.id))?;
        // Two machines given one address would take it in turns; refuse
        // it to both rather than pick one.
        for other in &hardware {
            for (j, iface) in interfaces(&other.doc.spec) {
                let same_iface = other.doc.id == hw.doc.id && j == i;
                let addr = iface.pointer("/dhcp/ip/address").and_then(Value::as_str);
                if !same_iface && addr.and_then(|a| a.parse::<Ipv4Addr>().ok()) == Some(res.address) {
                    return Err(format!(
                        "address conflict: {} is reserved for hardware {} interfaces[{i}] and hardware {} \
                         interfaces[{j}]",
                        res.address, hw.doc.id, other.doc.id
                    ));
                }
            }
        }
        Ok(Some(res))
    }
}

fn interfaces(spec: &Value) -> impl Iterator<Item = (usize, &Value)> {
    spec.get("interfaces").and_then(Value::as_array).into_iter().flatten().enumerate()
}

fn iface_mac(iface: &Value) -> Option<String> {
    iface.pointer("/dhcp/mac").and_then(Value::as_str).and_then(kiln_documents::parse_mac)
}

/// One interface's `dhcp` as a reservation; errors name the field.
fn reservation(hardware: &str, i: usize, dhcp: &Value) -> Result<Reservation, String> {
    let field = |name: &str| format!("interfaces[{i}].dhcp.{name}");
    let ip = |name: &str, v: &Value| -> Result<Ipv4Addr, String> {
        v.as_str().and_then(|s| s.parse().ok()).ok_or_else(|| format!("{}: {v} is not an IPv4 address", field(name)))
    };
    let opt_str = |name: &str| -> Result<Option<String>, String> {
        match dhcp.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(format!("{}: {v} is not a string", field(name))),
        }
    };
    let address = ip("ip.address", &dhcp["ip"]["address"])?;
    let netmask = match dhcp.pointer("/ip/netmask") {
        Some(v) => ip("ip.netmask", v)?,
        None => return Err(format!("{}: missing (needed with ip.address)", field("ip.netmask"))),
    };
    if u32::from(netmask).leading_ones() != u32::from(netmask).count_ones() {
        return Err(format!("{}: {netmask} is not a netmask", field("ip.netmask")));
    }
    let gateway = match dhcp.pointer("/ip/gateway") {
        Some(Value::String(s)) if s.is_empty() => None,
        Some(v) => Some(ip("ip.gateway", v)?),
        None => None,
    };
    let dns = match dhcp.get("name_servers") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => {
            a.iter().enumerate().map(|(k, v)| ip(&format!("name_servers[{k}]"), v)).collect::<Result<_, _>>()?
        }
        Some(v) => return Err(format!("{}: {v} is not a list", field("name_servers"))),
    };
    let lease_secs = match dhcp.get("lease_time") {
        None | Some(Value::Null) => DEFAULT_LEASE_SECS,
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=u64::from(u32::MAX)).contains(n))
            .map(|n| n as u32)
            .ok_or_else(|| format!("{}: {v} is not a number of seconds", field("lease_time")))?,
    };
    Ok(Reservation {
        hardware: hardware.to_string(),
        address,
        netmask,
        gateway,
        dns,
        hostname: opt_str("hostname")?,
        domain_name: opt_str("domain_name")?,
        lease_secs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::tests::app;

    const HW: &str = r#"
kind: Hardware
name: m1
interfaces:
- dhcp:
    mac: 52:54:00:00:00:01
    hostname: m1
    domain_name: lab.example
    lease_time: 600
    name_servers: [10.7.0.53]
    ip: {address: 10.7.0.50, netmask: 255.255.255.0, gateway: 10.7.0.1}
- dhcp:
    mac: 52:54:00:00:00:03
  disableDhcp: true
---
kind: Hardware
name: m2
interfaces:
- dhcp: {mac: 52:54:00:00:00:02}
"#;

    #[tokio::test]
    async fn reservations_from_tinkerbell_dhcp_fields() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(dir.path());
        let ctx = OpContext::system("test");
        app.apply(&OpContext::operator(), "hw", HW).await.unwrap();
        let r = app.dhcp_reservation(&ctx, "52-54-00-00-00-01").await.unwrap().unwrap();
        assert_eq!(
            r,
            Reservation {
                hardware: "m1".into(),
                address: Ipv4Addr::new(10, 7, 0, 50),
                netmask: Ipv4Addr::new(255, 255, 255, 0),
                gateway: Some(Ipv4Addr::new(10, 7, 0, 1)),
                dns: vec![Ipv4Addr::new(10, 7, 0, 53)],
                hostname: Some("m1".into()),
                domain_name: Some("lab.example".into()),
                lease_secs: 600,
            }
        );
        // Known without an address, disableDhcp, unknown: no reservation.
        for mac in ["52:54:00:00:00:02", "52:54:00:00:00:03", "52:54:00:00:00:09"] {
            assert_eq!(app.dhcp_reservation(&ctx, mac).await, Ok(None), "{mac}");
        }
        assert!(app.dhcp_reservation(&ctx, "nope").await.unwrap_err().contains("not a MAC"));
    }

    #[tokio::test]
    async fn bad_fields_and_conflicts_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(dir.path());
        let ctx = OpContext::system("test");
        let op = OpContext::operator();
        let hw = |name: &str, mac: &str, ip: &str| {
            format!("kind: Hardware\nname: {name}\ninterfaces:\n- dhcp:\n    mac: {mac}\n    ip: {ip}\n")
        };
        app.apply(&op, "a", &hw("a", "52:54:00:00:00:0a", "{address: 10.7.0.300, netmask: 255.255.255.0}"))
            .await
            .unwrap();
        let e = app.dhcp_reservation(&ctx, "52:54:00:00:00:0a").await.unwrap_err();
        assert!(e.contains("hardware a: interfaces[0].dhcp.ip.address") && e.contains("10.7.0.300"), "{e}");
        app.apply(&op, "b", &hw("b", "52:54:00:00:00:0b", "{address: 10.7.0.5}")).await.unwrap();
        let e = app.dhcp_reservation(&ctx, "52:54:00:00:00:0b").await.unwrap_err();
        assert!(e.contains("interfaces[0].dhcp.ip.netmask: missing"), "{e}");
        app.apply(&op, "c", &hw("c", "52:54:00:00:00:0c", "{address: 10.7.0.5, netmask: 255.0.255.0}")).await.unwrap();
        let e = app.dhcp_reservation(&ctx, "52:54:00:00:00:0c").await.unwrap_err();
        assert!(e.contains("is not a netmask"), "{e}");
        // d and e both claim 10.7.0.6: neither gets it.
        let ip = "{address: 10.7.0.6, netmask: 255.255.255.0}";
        app.apply(&op, "d", &hw("d", "52:54:00:00:00:0d", ip)).await.unwrap();
        assert!(app.dhcp_reservation(&ctx, "52:54:00:00:00:0d").await.unwrap().is_some());
        app.apply(&op, "e", &hw("e", "52:54:00:00:00:0e", ip)).await.unwrap();
        for mac in ["52:54:00:00:00:0d", "52:54:00:00:00:0e"] {
            let e = app.dhcp_reservation(&ctx, mac).await.unwrap_err();
            assert!(
                e.contains("address conflict: 10.7.0.6") && e.contains("hardware d") && e.contains("hardware e"),
                "{e}"
            );
        }
    }

    #[tokio::test]
    async fn dhcp_boot_needs_a_hook_image() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(dir.path());
        app.apply(&OpContext::operator(), "docs", crate::app::tests::DOCS).await.unwrap();
        let ctx = OpContext::system("test");
        // m1 has a pending workflow: the script would boot the hook, but
        // without --hook-dir the DHCP services say no.
        assert!(matches!(app.boot_decision(&ctx, "52:54:00:00:00:01").await, Decision::Hook { .. }));
        match app.dhcp_boot_decision(&ctx, "52:54:00:00:00:01").await {
            Decision::Local(why) => assert!(why.contains("--hook-dir"), "{why}"),
            d => panic!("{d:?}"),
        }
        assert!(matches!(app.dhcp_boot_decision(&ctx, "52:54:00:00:00:02").await, Decision::Local(_)));
    }
}
