//! A UEFI machine boots through kiln's boot services the way a real server
//! does (`kiln_tests::pxe`): OVMF's own PXE client (the NIC has no option
//! ROM, so no iPXE is there before kiln hands it one) loads ipxe.efi over
//! kiln's TFTP, that iPXE fetches the machine's boot script and the real
//! hook image, and the hook's agent enrols with the script's one-time
//! credential. Three networks:
//! - the site's DHCP server (dnsmasq, addresses only) beside kiln's
//!   ProxyDHCP in a second namespace: the workflow runs to SUCCESS, its
//!   action image pulled from the test registry;
//! - kiln as the only DHCP server, the address from the Hardware's
//!   reservation: until the agent has connected;
//! - UEFI HTTP boot (the firmware's PXE off) beside the site's server:
//!   until the agent has connected.
//!
//! TCG only, bounded waits, everything inside namespaces the test makes.

use std::time::Duration;

use kiln_tests::pxe::{self, ACTION_TEXT, Dhcp, Outcome, Until};

const LIMIT: Duration = Duration::from_secs(300);

fn boot(prefix: &str, dhcp: Dhcp, http_boot: bool, until: Until) -> Outcome {
    let run = pxe::boot(pxe::Run { prefix, dhcp, http_boot, until, limit: LIMIT }).unwrap_or_else(|e| panic!("{e:#}"));
    let log = &run.server_log;
    // The exchange, for whoever reads the test output.
    for l in log.lines().filter(|l| ["dhcp:", "proxydhcp", "tftp:", "netboot:"].iter().any(|w| l.contains(w))) {
        println!("{l}");
    }
    println!("OVMF {} ({dhcp:?}): {}", if http_boot { "HTTP boot" } else { "PXE" }, run.summary());
    if !http_boot {
        assert!(log.contains("tftp: sending") && log.contains("file=ipxe.efi"), "{log}");
    }
    assert!(
        log.contains(&format!("file=http://{prefix}.2:{}/boot/ipxe", pxe::SERVER_PORT)),
        "iPXE got the script URL: {log}"
    );
    // The real hook booted and its agent enrolled with the boot script's
    // one-time credential.
    let context = format!("{:#}\n--- console\n{}\n--- server\n{log}", run.workflow, run.console);
    assert!(run.console.contains("kiln-hook: agent started"), "{context}");
    assert!(run.console.contains("agent credential: enrolment"), "{context}");
    assert!(run.agent_connected.is_some(), "{context}");
    run
}

#[test]
fn ovmf_pxe_beside_the_site_dhcp_server_through_kiln_proxy_dhcp_runs_a_workflow() {
    let run = boot("10.81.1", Dhcp::SiteAndProxy, false, Until::WorkflowDone);
    let log = &run.server_log;
    assert!(log.contains("proxydhcp: boot file offered") && log.contains("client=Pxe(Uefi64)"), "{log}");
    // OVMF took its address from the site, not from kiln.
    assert!(run.dnsmasq_log.contains("DHCPACK(") && run.dnsmasq_log.contains(" 10.81.1.1"), "{}", run.dnsmasq_log);
    let context = format!("{:#}\n--- logs\n{}\n--- console\n{}", run.workflow, run.logs, run.console);
    assert_eq!(run.workflow["state"], "SUCCESS", "{context}");
    // The action image came from the registry, through the site network.
    assert!(run.logs.contains(ACTION_TEXT), "{context}");
}

#[test]
fn ovmf_pxe_with_kiln_as_the_only_dhcp_server() {
    let run = boot("10.81.2", Dhcp::KilnOnly, false, Until::AgentConnected);
    let log = &run.server_log;
    // Firmware and iPXE both got the reserved address, with their boot
    // file (and the firmware's PXE, not its HTTP boot fallback, loaded it);
    // the hook's own DHCP client got it too.
    assert!(log.contains("reply=Ack address=10.81.2.60 boot=Some(Pxe(Uefi64)) file=ipxe.efi"), "{log}");
    assert!(log.contains("reply=Ack address=10.81.2.60 boot=Some(Ipxe)"), "{log}");
    assert!(log.contains("reply=Ack address=10.81.2.60 boot=None"), "{log}");
    assert!(!log.contains("HttpBoot"), "{log}");
    assert!(!run.dnsmasq_log.contains("DHCPOFFER"), "only router advertisements from the site: {}", run.dnsmasq_log);
}

#[test]
fn ovmf_http_boot_beside_the_site_dhcp_server_through_kiln_proxy_dhcp() {
    let run = boot("10.81.3", Dhcp::SiteAndProxy, true, Until::AgentConnected);
    let log = &run.server_log;
    let port = pxe::SERVER_PORT;
    assert!(
        log.contains("client=HttpBoot(Uefi64)")
            && log.contains(&format!("file=http://10.81.3.2:{port}/boot/ipxe-bin/ipxe.efi")),
        "{log}"
    );
    assert!(log.contains("netboot: iPXE binary over HTTP file=ipxe.efi"), "{log}");
    assert!(!log.contains("tftp: sending"), "HTTP boot uses no TFTP: {log}");
}
