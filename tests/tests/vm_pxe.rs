//! A UEFI machine boots through kiln's ProxyDHCP and TFTP the way a real
//! server does: OVMF's own PXE client (the NIC has no option ROM, so no
//! iPXE is there before kiln hands it one) gets its address from the site's
//! DHCP server (dnsmasq, addresses only) and its boot file from kiln's
//! ProxyDHCP in a second namespace, loads ipxe.efi over TFTP, and that iPXE
//! fetches the machine's boot script. The test stops there (the workflow
//! itself is the other VM tests' subject). TCG only.

use std::process::Stdio;
use std::time::{Duration, Instant};

use kiln_tests::netns::{NsServer, Site, short_id};
use kiln_tests::{Proc, random_mac, wait_until};

const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

#[test]
fn ovmf_pxe_loads_ipxe_from_kiln_and_ipxe_fetches_the_boot_script() {
    let id = short_id();
    let site = Site::start(&id, "10.73.0", true).unwrap();
    let hook = tempfile::tempdir().unwrap();
    std::fs::write(hook.path().join("vmlinuz"), b"not a kernel").unwrap();
    std::fs::write(hook.path().join("initramfs.img"), b"not an initramfs").unwrap();
    let server = NsServer::start(
        &site.proxy,
        &[
            "--proxy-dhcp-listen",
            &site.proxy_if,
            "--tftp-listen",
            "10.73.0.2:69",
            "--netboot-listen",
            "10.73.0.2:7100",
            "--hook-dir",
            hook.path().to_str().unwrap(),
        ],
    )
    .unwrap();
    let mac = random_mac();
    server
        .apply(&format!(
            "kind: Hardware\nname: uefi1\nmacs: [\"{mac}\"]\n---\nkind: Template\nname: t\ndata: |\n  version: \"0.1\"\n  \
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
        .args(["-boot", "n", "-serial"])
        .arg(format!("file:{}", serial.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qemu-system-x86_64");
    let mut qemu = Proc { child, name: "qemu".into() };
    let console = || String::from_utf8_lossy(&std::fs::read(&serial).unwrap_or_default()).into_owned();
    let context = |what: &str| {
        format!("{what}\n--- console\n{}\n--- server\n{}\n--- dnsmasq\n{}", console(), server.log(), site.dnsmasq_log())
    };

    let limit = Duration::from_secs(180);
    wait_until(limit, || console().contains("iPXE initialising devices") || qemu.exited())
        .unwrap_or_else(|_| panic!("{}", context("no iPXE banner on the console")));
    assert!(!qemu.exited(), "{}", context("QEMU exited"));
    let banner = start.elapsed();
    server
        .wait_log(&["netboot: hook image", "workflow=w"], limit)
        .unwrap_or_else(|_| panic!("{}", context("iPXE did not fetch the boot script")));
    let script = start.elapsed();
    let log = server.log();
    assert!(log.contains("proxydhcp: boot file offered") && log.contains("file=ipxe.efi"), "{log}");
    assert!(log.contains("tftp: sending") && log.contains("ipxe.efi"), "{log}");
    assert!(log.contains("file=http://10.73.0.2:7100/boot/ipxe"), "iPXE got the script URL from the proxy: {log}");
    // OVMF took its address from the site, not from kiln.
    assert!(site.dnsmasq_log().contains(&format!("DHCPACK(kbbr{id}) 10.73.0.")), "{}", site.dnsmasq_log());
    // The exchange, for whoever reads the test output.
    for l in log.lines().filter(|l| ["proxydhcp", "tftp:", "netboot:"].iter().any(|w| l.contains(w))) {
        println!("{l}");
    }
    println!(
        "OVMF PXE -> ProxyDHCP -> TFTP ipxe.efi: iPXE banner {banner:.1?}, boot script {script:.1?} after QEMU start"
    );
    qemu.kill();
}
