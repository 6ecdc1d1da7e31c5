//! Network boot from the server: the per-machine iPXE script follows the
//! machine's workflow (hook image while one is pending or running, local
//! disk once it succeeded), and the hook files are served.

use std::process::Command;
use std::time::Duration;

use kiln_tests::{Cluster, hardware_doc, random_mac, stdout, unique};

fn get(url: &str) -> (String, Vec<u8>) {
    let out = Command::new("curl").args(["-sS", "-o", "-", "-w", "\n%{http_code}", url]).output().expect("curl");
    let mut body = out.stdout;
    let split = body.iter().rposition(|b| *b == b'\n').unwrap();
    let code = String::from_utf8_lossy(&body[split + 1..]).to_string();
    body.truncate(split);
    (code, body)
}

fn script(c: &Cluster, mac: &str) -> String {
    let (code, body) = get(&format!("{}/boot/ipxe/{mac}", c.server_url));
    assert_eq!(code, "200");
    String::from_utf8(body).unwrap()
}

#[test]
fn the_ipxe_script_follows_the_workflow_and_closes_when_it_succeeds() {
    let hook = tempfile::tempdir().unwrap();
    std::fs::write(hook.path().join("vmlinuz"), b"kernel bytes").unwrap();
    std::fs::write(hook.path().join("initramfs.img"), vec![7u8; 3 << 20]).unwrap();
    // iPXE speaks plain HTTP: netboot on the shared port needs --plaintext
    // (security.rs covers --netboot-listen beside TLS).
    let mut c = Cluster::start_with(&[
        "--plaintext",
        "--hook-dir",
        hook.path().to_str().unwrap(),
        "--hook-cmdline",
        "console=ttyS0 kiln.insecure_registries=10.0.2.2:5000",
    ])
    .unwrap();
    let mac = random_mac();
    let hw = unique("hw");
    c.apply(&hardware_doc(&hw, &mac));

    // Known machine, nothing to do: local disk.
    let s = script(&c, &mac);
    let local_disk =
        format!("#!ipxe\necho kiln: hardware {hw} has no pending workflow; booting from the local disk\nexit\n");
    assert_eq!(s, local_disk);
    // Unknown machine: local disk.
    assert_eq!(
        script(&c, "02:00:00:00:00:99"),
        "#!ipxe\necho kiln: no hardware has MAC 02:00:00:00:00:99; booting from the local disk\nexit\n"
    );

    let tpl = unique("tpl");
    let wf = unique("wf");
    let busybox = c.env.busybox();
    let out = c.apply(&format!(
        "kind: Template\nname: {tpl}\ndata: |\n  version: \"0.1\"\n  name: {tpl}\n  tasks:\n    - name: t\n      worker: \"{{{{.device_1}}}}\"\n      actions:\n        - name: hello\n          image: {busybox}\n          timeout: 60\n          command: [\"true\"]\n---\nkind: Workflow\nname: {wf}\ntemplate: {tpl}\nhardware: {hw}\nhardware_map: {{device_1: \"{mac}\"}}\n"
    ));
    let id = out.lines().find_map(|l| l.strip_prefix("workflow/")?.split(' ').next().map(str::to_string)).unwrap();

    // Pending workflow: the hook image, with what its init and agent need
    // (iPXE sends the MAC in upper case).
    let s = script(&c, &mac.to_uppercase());
    let host = c.server_url.trim_start_matches("http://");
    let upper = mac.to_uppercase();
    // With this boot's one-time enrolment credential (tests/tests/enrolment.rs).
    let enrol = s.split_whitespace().find_map(|w| w.strip_prefix("kiln.enrol=")).expect("kiln.enrol=").to_string();
    assert!(enrol.starts_with("kiln_enrol_") && enrol.len() == 11 + 43, "{enrol}");
    let expected = format!(
        "#!ipxe\necho kiln: {upper} boots the hook image for workflow {id}\n\
         kernel http://{host}/boot/hook/vmlinuz initrd=initramfs kiln.server=http://{host} kiln.agent_id={mac} kiln.mac=${{net0/mac}} \
         kiln.enrol={enrol} console=ttyS0 kiln.insecure_registries=10.0.2.2:5000\n\
         initrd http://{host}/boot/hook/initramfs\nboot\n"
    );
    assert_eq!(s, expected);
    assert!(!script(&c, &mac).contains(&enrol), "every boot script has its own credential");
    // DHCP's entry point chains to the per-machine script.
    let (_, chain) = get(&format!("{}/boot/ipxe", c.server_url));
    assert_eq!(String::from_utf8(chain).unwrap(), format!("#!ipxe\nchain http://{host}/boot/ipxe/${{net0/mac}}\n"));
    // The files behind it.
    assert_eq!(get(&format!("{}/boot/hook/vmlinuz", c.server_url)).1, b"kernel bytes");
    assert_eq!(get(&format!("{}/boot/hook/initramfs", c.server_url)).1.len(), 3 << 20);
    assert_eq!(get(&format!("{}/boot/hook/passwd", c.server_url)).0, "404");

    // The machine provisions itself; afterwards it boots its disk.
    c.start_agent(&mac, "").unwrap();
    let done = c.wait_finished(&id, Duration::from_secs(60));
    assert_eq!(done["state"], "SUCCESS", "{done:#}");
    let s = script(&c, &mac);
    assert_eq!(s, local_disk, "the gate must close on success");
    assert!(stdout(&c.kiln(&["get", "hardware", &hw])).contains(&hw));
}

#[test]
fn hardware_with_netboot_off_never_gets_the_hook() {
    let hook = tempfile::tempdir().unwrap();
    let c = Cluster::start_with(&["--plaintext", "--hook-dir", hook.path().to_str().unwrap()]).unwrap();
    let mac = random_mac();
    let hw = unique("hw");
    c.apply(&format!("kind: Hardware\nname: {hw}\nmacs: [\"{mac}\"]\nnetboot: false\n"));
    let s = script(&c, &mac);
    assert!(s.contains(&format!("hardware {hw} has netboot off")), "{s}");
}
