//! A UEFI machine boots through kiln's boot services the way a real server
//! does: OVMF's own PXE client (the NIC has no option ROM, so no iPXE is
//! there before kiln hands it one) loads ipxe.efi over kiln's TFTP, and that
//! iPXE fetches the machine's boot script. Two networks:
//! - the site's DHCP server (dnsmasq, addresses only) beside kiln's
//!   ProxyDHCP in a second namespace;
//! - kiln as the only DHCP server, the address from the Hardware's
//!   reservation.
//!
//! and UEFI HTTP boot (the firmware's PXE off) beside the site's server.
//!
//! The tests stop at the boot script (the workflow itself is the other VM
//! tests' subject). TCG only, bounded waits.

use std::process::Stdio;
use std::time::{Duration, Instant};

use kiln_tests::netns::{NsServer, Site, short_id};
use kiln_tests::{Proc, random_mac, wait_until};

const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
const LIMIT: Duration = Duration::from_secs(180);

/// Who hands out addresses.
#[derive(Clone, Copy, PartialEq)]
enum Dhcp {
    /// The site's dnsmasq; kiln runs ProxyDHCP.
    SiteAndProxy,
    /// kiln alone, from the Hardware's reservation.
    KilnOnly,
}

/// Boots the VM until iPXE has fetched its script; returns the server log
/// and the site's DHCP log.
/// `http_boot`: the firmware's PXE is off (as on a server set to UEFI HTTP
/// boot), so OVMF's HTTP boot client asks instead.
fn boot(prefix: &str, dhcp: Dhcp, http_boot: bool) -> (String, String) {
    let id = short_id();
    let site = Site::start(&id, prefix, true, dhcp == Dhcp::SiteAndProxy).unwrap();
    let hook = tempfile::tempdir().unwrap();
    std::fs::write(hook.path().join("vmlinuz"), b"not a kernel").unwrap();
    std::fs::write(hook.path().join("initramfs.img"), b"not an initramfs").unwrap();
    let dhcp_flag = match dhcp {
        Dhcp::SiteAndProxy => "--proxy-dhcp-listen",
        Dhcp::KilnOnly => "--dhcp-listen",
    };
    let (tftp, http) = (format!("{prefix}.2:69"), format!("{prefix}.2:7100"));
    let hook_dir = hook.path().to_str().unwrap();
    let server = NsServer::start(
        &site.proxy,
        &[dhcp_flag, &site.proxy_if, "--tftp-listen", &tftp, "--netboot-listen", &http, "--hook-dir", hook_dir],
    )
    .unwrap();
    let mac = random_mac();
    server
        .apply(&format!(
            "kind: Hardware\nname: uefi1\ninterfaces:\n- dhcp:\n    mac: {mac}\n    hostname: uefi1\n    \
             ip: {{address: {prefix}.60, netmask: 255.255.255.0, gateway: {prefix}.1}}\n\
             ---\nkind: Template\nname: t\ndata: |\n  version: \"0.1\"\n  \
             name: t\n  tasks:\n    - name: t\n      worker: \"{{{{.device_1}}}}\"\n      actions:\n        - \
             {{name: a, image: \"127.0.0.1:5000/a:v1\"}}\n---\nkind: Workflow\nname: w\ntemplate: t\nhardware: uefi1\n\
             hardware_map: {{device_1: \"{mac}\"}}\n"
        ))
        .unwrap();

    let tap = format!("kbtap{id}");
    site.site.ip(&["tuntap", "add", "dev", &tap, "mode", "tap"]).unwrap();
    site.site.ip(&["link", "set", &tap, "master", &site.bridge]).unwrap();
    site.site.ip(&["link", "set", &tap, "up"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let vars = dir.path().join("vars.fd");
    std::fs::copy(OVMF_VARS, &vars).expect("OVMF (apt-get install ovmf)");
    let serial = dir.path().join("serial.log");
    let start = Instant::now();
    let child = site
        .site
        .command("qemu-system-x86_64")
        .args(["-nodefaults", "-machine", "q35", "-accel", "tcg", "-m", "512", "-display", "none"])
        .arg("-drive")
        .arg(format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"))
        .arg("-drive")
        .arg(format!("if=pflash,format=raw,file={}", vars.display()))
        .args(["-netdev", &format!("tap,id=n0,ifname={tap},script=no,downscript=no")])
        // No option ROM: OVMF's own PXE client runs, so an iPXE banner
        // means the ipxe.efi kiln served is running.
        .args(["-device", &format!("virtio-net-pci,netdev=n0,mac={mac},romfile=")])
        .args(if http_boot {
            ["-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=n"]
        } else {
            ["-fw_cfg", "name=opt/org.tianocore/IPv4HTTPSupport,string=n"]
        })
        .args(["-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=n"])
        .args(["-boot", "n", "-serial"])
        .arg(format!("file:{}", serial.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("qemu-system-x86_64");
    let mut qemu = Proc { child, name: "qemu".into() };
    let console = || String::from_utf8_lossy(&std::fs::read(&serial).unwrap_or_default()).into_owned();
    let context = |what: &str| {
        format!("{what}\n--- console\n{}\n--- server\n{}\n--- dnsmasq\n{}", console(), server.log(), site.dnsmasq_log())
    };

    wait_until(LIMIT, || console().contains("iPXE initialising devices") || qemu.exited())
        .unwrap_or_else(|_| panic!("{}", context("no iPXE banner on the console")));
    assert!(!qemu.exited(), "{}", context("QEMU exited"));
    let banner = start.elapsed();
    server
        .wait_log(&["netboot: hook image", "workflow=w"], LIMIT)
        .unwrap_or_else(|_| panic!("{}", context("iPXE did not fetch the boot script")));
    let script = start.elapsed();
    qemu.kill();
    let log = server.log();
    // The exchange, for whoever reads the test output.
    for l in log.lines().filter(|l| ["dhcp:", "proxydhcp", "tftp:", "netboot:"].iter().any(|w| l.contains(w))) {
        println!("{l}");
    }
    println!(
        "OVMF {} ({dhcp_flag}): iPXE banner {banner:.1?}, boot script {script:.1?} after QEMU start",
        if http_boot { "HTTP boot" } else { "PXE" }
    );
    if !http_boot {
        assert!(log.contains("tftp: sending") && log.contains("file=ipxe.efi"), "{log}");
    }
    assert!(log.contains(&format!("file=http://{prefix}.2:7100/boot/ipxe")), "iPXE got the script URL: {log}");
    (log, site.dnsmasq_log())
}

#[test]
fn ovmf_pxe_beside_the_site_dhcp_server_through_kiln_proxy_dhcp() {
    let (log, dnsmasq) = boot("10.73.0", Dhcp::SiteAndProxy, false);
    assert!(log.contains("proxydhcp: boot file offered") && log.contains("client=Pxe(Uefi64)"), "{log}");
    // OVMF took its address from the site, not from kiln.
    assert!(dnsmasq.contains("DHCPACK(") && dnsmasq.contains(" 10.73.0.1"), "{dnsmasq}");
}

#[test]
fn ovmf_pxe_with_kiln_as_the_only_dhcp_server() {
    let (log, dnsmasq) = boot("10.74.0", Dhcp::KilnOnly, false);
    // Firmware and iPXE both got the reserved address, with their boot
    // file (and the firmware's PXE, not its HTTP boot fallback, loaded it).
    assert!(log.contains("reply=Ack address=10.74.0.60 boot=Some(Pxe(Uefi64)) file=ipxe.efi"), "{log}");
    assert!(log.contains("reply=Ack address=10.74.0.60 boot=Some(Ipxe)"), "{log}");
    assert!(!log.contains("HttpBoot"), "{log}");
    assert!(!dnsmasq.contains("DHCPOFFER"), "only router advertisements from the site: {dnsmasq}");
}

#[test]
fn ovmf_http_boot_beside_the_site_dhcp_server_through_kiln_proxy_dhcp() {
    let (log, _) = boot("10.75.0", Dhcp::SiteAndProxy, true);
    assert!(
        log.contains("client=HttpBoot(Uefi64)") && log.contains("file=http://10.75.0.2:7100/boot/ipxe-bin/ipxe.efi"),
        "{log}"
    );
    assert!(log.contains("netboot: iPXE binary over HTTP file=ipxe.efi"), "{log}");
    assert!(!log.contains("tftp: sending"), "HTTP boot uses no TFTP: {log}");
}

/// Case (4), a legacy BIOS machine: SeaBIOS (`-machine pc`, no pflash) has
/// no PXE client of its own; the NIC's option ROM boots, and in QEMU that
/// ROM is iPXE (Debian's ipxe-qemu). It asks DHCP as "arch 0, user class
/// iPXE", which kiln's ProxyDHCP answers with the boot script's URL (an iPXE
/// needs no undionly.kpxe), beside the site's dnsmasq, which gives the
/// address. Unlike the UEFI tests above this one boots the real hook image
/// (`KILN_HOOK_DIR`, default hook-image/out) through that script and waits
/// for its agent to enrol and take the workflow's first action.
///
/// What is not covered here: a BIOS PXE ROM that is *not* iPXE (Intel or
/// Broadcom boot agents) loading `undionly.kpxe` over TFTP and running it.
/// QEMU has no such ROM, and its iPXE ROM never asks for a boot file as a
/// plain PXE client. What kiln does for that client is tested at packet
/// level (boot_services.rs: the offer, the ACK on port 4011 and the TFTP
/// transfer of `undionly.kpxe`, byte for byte); what undionly.kpxe's iPXE
/// then does, ask again as iPXE on arch 0, is exactly the path this test
/// runs.
#[test]
fn seabios_machine_boots_the_hook_through_its_ipxe_rom_and_kiln_proxy_dhcp() {
    let prefix = "10.83.4";
    let id = short_id();
    let site = Site::start(&id, prefix, true, true).unwrap();
    let hook = kiln_tests::vm::hook_dir();
    assert!(
        hook.join("initramfs.img").exists(),
        "{}/initramfs.img is missing: build it with hook-image/build.sh",
        hook.display()
    );
    // The agent service and the boot routes on one plain-HTTP port the VM
    // reaches (kiln.server= in the script is this URL).
    let listen = format!("{prefix}.2:43210");
    let url = format!("http://{listen}");
    let server = NsServer::start(
        &site.proxy,
        &[
            "--listen",
            &listen,
            "--public-url",
            &url,
            "--proxy-dhcp-listen",
            &site.proxy_if,
            "--tftp-listen",
            &format!("{prefix}.2:69"),
            "--hook-dir",
            hook.to_str().unwrap(),
            "--hook-cmdline",
            "console=ttyS0 panic=-1 kiln.console_log=1",
        ],
    )
    .unwrap();
    let mac = random_mac();
    server
        .apply(&format!(
            "kind: Hardware\nname: bios1\nmacs: [\"{mac}\"]\n---\nkind: Template\nname: t\ndata: |\n  \
             version: \"0.1\"\n  name: t\n  tasks:\n    - name: t\n      worker: \"{{{{.device_1}}}}\"\n      \
             actions:\n        - {{name: a, image: \"127.0.0.1:5000/a:v1\"}}\n---\nkind: Workflow\nname: w\n\
             template: t\nhardware: bios1\nhardware_map: {{device_1: \"{mac}\"}}\n"
        ))
        .unwrap();

    let tap = format!("kbtap{id}");
    site.site.ip(&["tuntap", "add", "dev", &tap, "mode", "tap"]).unwrap();
    site.site.ip(&["link", "set", &tap, "master", &site.bridge]).unwrap();
    site.site.ip(&["link", "set", &tap, "up"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let serial = dir.path().join("serial.log");
    let start = Instant::now();
    let child = site
        .site
        .command("qemu-system-x86_64")
        // SeaBIOS: the pc machine's default firmware when no pflash is given.
        .args(["-nodefaults", "-machine", "pc", "-accel", &kiln_tests::vm::accelerator(), "-cpu", "max"])
        .args(["-m", "2048", "-smp", "2", "-display", "none"])
        .args(["-netdev", &format!("tap,id=n0,ifname={tap},script=no,downscript=no")])
        // The default option ROM of virtio-net-pci: iPXE (ipxe-qemu).
        .args(["-device", &format!("virtio-net-pci,netdev=n0,mac={mac}")])
        .args(["-boot", "n", "-serial"])
        .arg(format!("file:{}", serial.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("qemu-system-x86_64");
    let mut qemu = Proc { child, name: "qemu".into() };
    let console = || String::from_utf8_lossy(&std::fs::read(&serial).unwrap_or_default()).into_owned();
    let context = |what: &str| {
        format!("{what}\n--- console\n{}\n--- server\n{}\n--- dnsmasq\n{}", console(), server.log(), site.dnsmasq_log())
    };
    let limit = Duration::from_secs(240);
    server
        .wait_log(&["proxydhcp: boot file offered", "client=Ipxe"], limit)
        .unwrap_or_else(|_| panic!("{}", context("kiln's ProxyDHCP made no offer to the iPXE ROM")));
    let offered = start.elapsed();
    server
        .wait_log(&["netboot: hook image", "workflow=w"], limit)
        .unwrap_or_else(|_| panic!("{}", context("iPXE did not fetch the boot script")));
    let script = start.elapsed();
    wait_until(limit, || console().contains("kiln-hook: agent started") || qemu.exited())
        .unwrap_or_else(|_| panic!("{}", context("the hook's agent did not start")));
    let agent = start.elapsed();
    server
        .wait_log(&["assigned", "action=0"], limit)
        .unwrap_or_else(|_| panic!("{}", context("the hook's agent did not connect and take the first action")));
    let connected = start.elapsed();
    assert!(!qemu.exited(), "{}", context("QEMU exited"));
    qemu.kill();
    let log = server.log();
    for l in log.lines().filter(|l| ["proxydhcp", "netboot:", "enrolled", "assigned"].iter().any(|w| l.contains(w))) {
        println!("{l}");
    }
    println!(
        "SeaBIOS + iPXE ROM via ProxyDHCP: offer {offered:.1?}, boot script {script:.1?}, agent started {agent:.1?}, \
         agent connected {connected:.1?} after QEMU start"
    );
    // A BIOS client (arch 0): kiln knew it as iPXE, so no undionly.kpxe and
    // no TFTP; the address came from the site.
    assert!(!log.contains("tftp: sending"), "{log}");
    assert!(log.contains("agent enrolled"), "{log}");
    let dnsmasq = site.dnsmasq_log();
    assert!(dnsmasq.contains("DHCPACK(") && dnsmasq.contains(&mac), "{dnsmasq}");
    // The hook took the site's lease too (kernel console).
    assert!(console().contains("kiln-hook: network: "), "{}", console());
}
