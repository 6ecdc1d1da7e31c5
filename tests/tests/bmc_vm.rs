//! The machine is started by kiln through its BMC, never by the test: a
//! libvirt domain (OVMF, a NIC on the test's bridge without option ROM, a
//! raw disk) behind sushy-tools' Redfish (tests/src/bmc_vm.rs). A workflow
//! with `boot_options: {network_boot: pxe|iso, power_cycle: true,
//! after_success: off}` makes kiln power it on into a one-time boot of the
//! real hook image, whose agent runs an action that writes a marker to the
//! disk; at SUCCESS kiln powers the machine off. A second workflow
//! reimages the same machine with no manual step. The test reads the
//! markers from the disk image on the host.
//!
//! - PXE: OVMF's own PXE client takes its address from the site's dnsmasq
//!   and ipxe.efi from kiln's ProxyDHCP and TFTP; iPXE boots the hook.
//! - ISO: nothing on the site network offers a boot file (dnsmasq gives
//!   addresses only, to the hook's own DHCP client); kiln's start step has
//!   the BMC insert the machine's hook ISO (built by the server, its
//!   command line carrying the server and a one-time enrolment credential)
//!   and boot it once from CD; the finish step ejects it, then powers off.
//!
//! TCG only (see docs/bmc.md): bounded but generous waits.

use std::time::{Duration, Instant};

use kiln_tests::bmc_vm::{BMC_PASSWORD, BMC_USER, Rig};

/// One boot of the hook under TCG on a busy 2-core host, with the action.
const RUN_LIMIT: Duration = Duration::from_secs(900);

fn marker(run: u32) -> String {
    format!("kiln-bmcvm-marker-{run}")
}

/// The machine, its BMC and a template of one action that writes the
/// workflow's `marker` (from its hardware map) at the start of the disk.
fn setup(rig: &Rig) {
    rig.apply(&format!(
        "kind: BmcSecret\nname: lab-bmc\nusername: {BMC_USER}\npassword: {BMC_PASSWORD}\n---\n\
         kind: Hardware\nname: node\nmacs: [\"{mac}\"]\ndisks: [/dev/vda]\n\
         bmc:\n  address: {bmc}\n  protocol: redfish\n  credentials: lab-bmc\n---\n\
         kind: Template\nname: mark-disk\ndata: |\n  version: \"0.1\"\n  name: mark-disk\n  global_timeout: 900\n  \
         tasks:\n    - name: provision\n      worker: \"{{{{.device_1}}}}\"\n      actions:\n        \
         - name: mark-disk\n          image: {image}\n          timeout: 300\n          \
         environment: {{MARKER: \"{{{{.marker}}}}\"}}\n          \
         command: [\"sh\", \"-c\", \"printf '%s\\\\n' \\\"$MARKER\\\" | dd of=/dev/vda conv=fsync && echo wrote $MARKER\"]\n",
        mac = rig.mac,
        bmc = rig.bmc_url,
        image = rig.busybox(),
    ));
    assert_eq!(rig.lab.domstate(&rig.domain), "shut off");
}

/// Runs workflow `name` (`network_boot`) on a machine that is off: kiln
/// powers it on, it boots the hook, the action writes the marker, kiln
/// powers it off. Returns seconds from apply to: domain running, SUCCESS,
/// shut off.
fn provision(rig: &Rig, name: &str, run: u32, network_boot: &str) -> (f64, f64, f64) {
    assert_eq!(rig.lab.domstate(&rig.domain), "shut off", "{}", rig.context("the machine is not off"));
    let t0 = Instant::now();
    let applied = rig.apply(&format!(
        "kind: Workflow\nname: {name}\ntemplate: mark-disk\nhardware: node\n\
         hardware_map: {{device_1: \"{mac}\", marker: \"{marker}\"}}\n\
         boot_options: {{network_boot: {network_boot}, power_cycle: true, after_success: off}}\n",
        mac = rig.mac,
        marker = marker(run),
    ));
    assert!(applied.contains(&format!("workflow/{name} created")), "{applied}");
    rig.lab
        .wait_domstate(&rig.domain, "running", Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{}", rig.context(&format!("kiln did not power the machine on: {e:#}"))));
    let running = t0.elapsed().as_secs_f64();
    let wf = rig.wait_finished(name, RUN_LIMIT);
    assert_eq!(wf["state"], "SUCCESS", "{wf}\n{}", rig.context("the workflow did not succeed"));
    let success = t0.elapsed().as_secs_f64();
    rig.lab
        .wait_domstate(&rig.domain, "shut off", Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{}", rig.context(&format!("kiln did not power the machine off: {e:#}"))));
    let off = t0.elapsed().as_secs_f64();
    let head = rig.disk_head(64);
    assert!(
        head.starts_with(marker(run).as_bytes()),
        "the disk starts with {:?}, not the marker of run {run}",
        String::from_utf8_lossy(&head)
    );
    let logs = kiln_tests::stdout(&rig.kiln(&["logs", name]));
    assert!(logs.contains(&format!("wrote {}", marker(run))), "{logs}");
    // Both BMC steps of this workflow ran and succeeded (the finish job
    // ends just after the domain does).
    let (start, finish) = match network_boot {
        "iso" => ("start iso cycle", "eject media, then power off"),
        _ => ("start pxe cycle", "power off"),
    };
    for (step, operation) in [("start", start), ("finish", finish)] {
        let job = rig.wait_bmc_job(&format!("workflow/{name}/{step}"), Duration::from_secs(30));
        assert_eq!((job["operation"].as_str(), job["state"].as_str()), (Some(operation), Some("succeeded")), "{job}");
    }
    println!(
        "{network_boot} run {run}: apply → domain running {running:.1} s → SUCCESS {success:.1} s → shut off {off:.1} s"
    );
    (running, success, off)
}

#[test]
fn kiln_powers_on_pxe_boots_reimages_and_powers_off_a_libvirt_machine_through_redfish() {
    let rig = Rig::start(1, true).unwrap();
    setup(&rig);
    provision(&rig, "install-1", 1, "pxe");
    let log = rig.log("server");
    // The machine booted through kiln: ProxyDHCP offered the boot file,
    // TFTP sent ipxe.efi, iPXE fetched the machine's script ...
    assert!(log.contains("proxydhcp: boot file offered"), "{}", rig.context("no ProxyDHCP offer"));
    assert!(log.contains("tftp: sending") && log.contains("file=ipxe.efi"), "{}", rig.context("no TFTP"));
    assert!(log.contains("netboot: hook image"), "{}", rig.context("no hook boot script"));
    // ... with its address from the site's DHCP server.
    assert!(rig.log("dnsmasq").contains("DHCPACK("), "{}", rig.log("dnsmasq"));

    // Reimage: a second workflow, nothing done by hand in between.
    provision(&rig, "install-2", 2, "pxe");
}

#[test]
fn kiln_boots_the_hook_iso_through_redfish_virtual_media_twice() {
    let rig = Rig::start(2, false).unwrap();
    setup(&rig);
    provision(&rig, "iso-1", 1, "iso");
    let log = rig.log("server");
    assert!(log.contains("hook ISO built"), "{}", rig.context("no ISO built"));
    assert!(log.contains("netboot: hook ISO"), "{}", rig.context("the BMC did not download the ISO"));
    assert!(!log.contains("netboot: hook image"), "no iPXE script was fetched: {log}");
    // The hook's kernel got its command line from the ISO, with the
    // machine's MAC and a one-time credential (the console shows it).
    let console = rig.console();
    let line = console.lines().find(|l| l.contains("Kernel command line:")).unwrap_or_default();
    assert!(
        line.contains(&format!("kiln.mac={}", rig.mac)) && line.contains("kiln.enrol=kiln_enrol_"),
        "{}",
        rig.context("no hook command line from the ISO")
    );
    // The finish step ejected the ISO: no CD drive of the domain has a
    // source (sushy-tools removes the drive it attached).
    let xml = rig.lab.dumpxml(&rig.domain);
    let disks: Vec<&str> = xml.split("<disk ").skip(1).map(|d| &d[..d.find("</disk>").unwrap_or(d.len())]).collect();
    assert!(disks.iter().any(|d| d.contains("device='disk'")), "{xml}");
    assert!(!disks.iter().any(|d| d.contains("device='cdrom'") && d.contains("<source")), "the CD is still in: {xml}");

    // Reimage from a fresh ISO (a new credential: the first one is spent).
    provision(&rig, "iso-2", 2, "iso");
    let downloads = rig.log("server").matches("netboot: hook ISO").count();
    assert_eq!(downloads, 2, "{}", rig.context("one ISO download per boot"));
    assert_eq!(rig.log("server").matches("hook ISO built").count(), 1, "built once, patched per download");
}

fn get(url: &str) -> (String, Vec<u8>) {
    let out = std::process::Command::new("curl")
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}", url])
        .output()
        .expect("curl");
    let mut body = out.stdout;
    let split = body.iter().rposition(|b| *b == b'\n').unwrap();
    let code = String::from_utf8_lossy(&body[split + 1..]).to_string();
    body.truncate(split);
    (code, body)
}

/// The hook ISO without a VM: `GET /boot/iso/MAC/hook.iso` follows the
/// iPXE script's gate (404 with the reason while the machine has nothing
/// to do), answers an ISO 9660 image whose command line has the machine's
/// MAC and a fresh one-time credential per download; ISO boot on a server
/// without `--public-url` fails the workflow naming the flag, before any
/// BMC call.
#[test]
fn the_hook_iso_follows_the_netboot_gate_and_iso_boot_needs_a_public_url() {
    let hook = tempfile::tempdir().unwrap();
    std::fs::write(hook.path().join("vmlinuz"), b"kernel bytes").unwrap();
    std::fs::write(hook.path().join("initramfs.img"), vec![7u8; 1 << 20]).unwrap();
    let hook_dir = hook.path().to_str().unwrap();
    let c =
        kiln_tests::Cluster::start_with(&["--plaintext", "--hook-dir", hook_dir, "--hook-cmdline", "console=ttyS0"])
            .unwrap();
    let mac = kiln_tests::random_mac();
    c.apply(&format!(
        "kind: BmcSecret\nname: lab-bmc\nusername: {BMC_USER}\npassword: {BMC_PASSWORD}\n---\n\
         kind: Hardware\nname: node\nmacs: [\"{mac}\"]\n\
         bmc:\n  address: http://127.0.0.1:9\n  protocol: redfish\n  credentials: lab-bmc\n---\n\
         kind: Template\nname: t\ndata: |\n  version: \"0.1\"\n  name: t\n  tasks:\n    - name: t\n      \
         worker: \"{{{{.device_1}}}}\"\n      actions:\n        - {{name: a, image: {image}}}\n",
        image = c.env.busybox(),
    ));
    let url = format!("{}/boot/iso/{mac}/hook.iso", c.server_url);
    let (code, body) = get(&url);
    assert_eq!(code, "404", "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("has no pending workflow"), "{}", String::from_utf8_lossy(&body));

    let workflow = |name: &str, boot: &str| {
        format!(
            "kind: Workflow\nname: {name}\ntemplate: t\nhardware: node\nhardware_map: {{device_1: \"{mac}\"}}\n{boot}"
        )
    };
    c.apply(&workflow("wf-iso", "boot_options: {network_boot: iso}\n"));
    let wf = c.wait_finished("wf-iso", Duration::from_secs(60));
    assert_eq!(wf["state"], "FAILED", "{wf}");
    let reason = wf["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("BMC step start (start iso cycle)") && reason.contains("--public-url"), "{reason}");

    c.apply(&workflow("wf-plain", ""));
    let credential = |iso: &[u8]| {
        let text = String::from_utf8_lossy(iso);
        let at = text.find("linux /vmlinuz ").expect("grub.cfg in the ISO");
        let line = text[at..].lines().next().unwrap().to_string();
        assert!(line.contains(&format!("kiln.mac={mac}")) && line.contains("console=ttyS0"), "{line}");
        line.split_whitespace().find_map(|w| w.strip_prefix("kiln.enrol=")).expect("kiln.enrol=").to_string()
    };
    let (code, first) = get(&url);
    assert_eq!(code, "200", "{}", String::from_utf8_lossy(&first[..first.len().min(500)]));
    // ISO 9660: the primary volume descriptor at sector 16.
    assert_eq!(&first[0x8001..0x8006], b"CD001");
    let (_, second) = get(&url);
    assert_eq!(first.len(), second.len(), "patched in place");
    let (a, b) = (credential(&first), credential(&second));
    assert!(a.starts_with("kiln_enrol_") && a != b, "{a} {b}");
}
