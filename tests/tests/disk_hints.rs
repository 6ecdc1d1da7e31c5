//! Disk hints end to end: a real agent reports a machine with two virtio
//! disks (a fake sysfs tree, as the kernel lays it out), makes the
//! `/dev/disk/by-id` links udev would have made (no udev in the hook), and
//! the server renders a template's hint into the action's environment as
//! the chosen disk's by-id path; a hint matching no disk or both fails the
//! workflow before its first action runs, with the reason.

use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::Duration;

use kiln_tests::{Cluster, has_line, random_mac, stdout, unique, wait_until};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(120);

/// A virtio disk `name` with this serial and size, as the kernel lays it out.
fn fake_disk(root: &Path, slot: u32, name: &str, serial: &str, sectors: u64) {
    let dev = root.join(format!("sys/devices/pci0000:00/0000:00:{slot:02x}.0/virtio{slot}"));
    let block = dev.join("block").join(name);
    std::fs::create_dir_all(block.join("queue")).unwrap();
    std::fs::write(block.join("serial"), format!("{serial}\n")).unwrap();
    std::fs::write(block.join("size"), format!("{sectors}\n")).unwrap();
    std::fs::write(block.join("queue/rotational"), "0\n").unwrap();
    symlink(&dev, block.join("device")).unwrap();
    std::fs::create_dir_all(root.join("sys/block")).unwrap();
    symlink(&block, root.join("sys/block").join(name)).unwrap();
}

struct Machine {
    cluster: Cluster,
    mac: String,
    hw: String,
    _root: tempfile::TempDir,
}

/// A machine whose disks are, in probe order, a small one first (the
/// wrong one for `root_disk`), then the big one.
fn machine() -> Machine {
    let mut cluster = Cluster::start().expect("server");
    let root = tempfile::tempdir().unwrap();
    fake_disk(root.path(), 4, "vda", "kiln-small", 2048);
    fake_disk(root.path(), 5, "vdb", "kiln-big", 4 << 21);
    let (mac, hw) = (random_mac(), unique("hw"));
    cluster.apply(&format!(
        "kind: Hardware\nname: {hw}\nmacs: [\"{mac}\"]\nroot_disk: {{size: \">= 1GiB\", rotational: false}}\n"
    ));
    let extra =
        format!("inventory_root: {:?}\ninventory_interval_seconds: 1\ndisk_links: true\n", root.path().display());
    cluster.start_agent(&mac, &extra).expect("agent");
    // The agent made the links udev would have made, and reports them.
    let made = wait_until(Duration::from_secs(30), || {
        let out = cluster.kiln(&["describe", "hardware", &hw, "-o", "json"]);
        let v: Value = serde_json::from_str(&stdout(&out)).unwrap_or_default();
        v["inventory"]["disks"][1]["by_id"][0] == "/dev/disk/by-id/virtio-kiln-big"
    });
    assert!(made.is_ok(), "no by-id names reported\n{}", cluster.logs());
    let link = std::fs::read_link(root.path().join("dev/disk/by-id/virtio-kiln-small")).unwrap();
    assert_eq!(link, Path::new("../../vda"));
    assert!(root.path().join("dev/disk/by-path/pci-0000:00:05.0").is_symlink());
    Machine { cluster, mac, hw, _root: root }
}

impl Machine {
    /// Runs a workflow of two actions: `first` echoes a marker, `second`
    /// prints its environment; `env` is the second's environment (YAML
    /// flow map). Returns the finished workflow and its logs.
    fn run(&self, env: &str) -> (Value, String) {
        let (tpl, wf) = (unique("tpl"), unique("wf"));
        let image = self.cluster.env.busybox();
        let doc = format!(
            "kind: Template\nname: {tpl}\ndata: |\n  version: \"0.1\"\n  name: {tpl}\n  tasks:\n    - name: t\n      worker: \"{{{{.device_1}}}}\"\n      actions:\n        - name: first\n          image: {image}\n          command: [sh, -c, \"echo first ran\"]\n        - name: second\n          image: {image}\n          environment: {env}\n          command: [sh, -c, \"echo DEST=$DEST; echo ROOT=$ROOT\"]\n---\nkind: Workflow\nname: {wf}\ntemplate: {tpl}\nhardware: {}\nhardware_map: {{device_1: \"{}\"}}\n",
            self.hw, self.mac
        );
        self.cluster.apply(&doc);
        let done = self.cluster.wait_finished(&wf, LIMIT);
        (done, stdout(&self.cluster.kiln(&["logs", &wf])))
    }
}

#[test]
fn hints_render_the_chosen_disks_by_id_path_and_unresolvable_ones_fail_before_the_first_action() {
    let m = machine();

    // The template's hint and the hardware's root_disk both pick vdb.
    let (wf, logs) = m.run(r#"{DEST: '{{ disk (dict "serial" "kiln-big") }}', ROOT: "{{ rootDisk }}"}"#);
    assert_eq!(wf["state"], "SUCCESS", "{wf:#}\n{logs}\n{}", m.cluster.logs());
    assert!(has_line(&logs, "[second] DEST=/dev/disk/by-id/virtio-kiln-big"), "{logs}");
    assert!(has_line(&logs, "[second] ROOT=/dev/disk/by-id/virtio-kiln-big"), "{logs}");
    // `kiln plan` shows the resolution, and why the other disk was not chosen.
    let id = wf["id"].as_str().unwrap();
    let plan = stdout(&m.cluster.kiln(&["plan", id]));
    for line in [
        r#"  {serial: "kiln-big"} (in second):"#,
        "    chosen: /dev/disk/by-id/virtio-kiln-big",
        r#"    vda (1.0 MiB, virtio, serial "kiln-small"): not chosen: serial "kiln-small" is not "kiln-big""#,
        r#"    vdb (4.0 GiB, virtio, serial "kiln-big"): matches (/dev/disk/by-id/virtio-kiln-big)"#,
        r#"  {rotational: false, size: ">= 1GiB"} (in second):"#,
        r#"    vda (1.0 MiB, virtio, serial "kiln-small"): not chosen: size 1.0 MiB is not >= 1GiB"#,
    ] {
        assert!(has_line(&plan, line), "{line:?} not in:\n{plan}");
    }
    let json: Value = serde_json::from_str(&stdout(&m.cluster.kiln(&["plan", id, "-o", "json"]))).unwrap();
    assert_eq!(json["disk_hints"][0]["path"], "/dev/disk/by-id/virtio-kiln-big", "{json:#}");
    assert_eq!(json["disk_hints"][0]["candidates"][0]["matches"], false, "{json:#}");
    assert_eq!(json["disk_hints"][0]["candidates"][1]["path"], "/dev/disk/by-id/virtio-kiln-big", "{json:#}");

    // A hint no disk matches: the workflow fails before `first` runs, and
    // the reason names the hint and both candidates.
    let (wf, logs) = m.run(r#"{DEST: '{{ disk (dict "serial" "kiln-nope") }}'}"#);
    assert_eq!(wf["state"], "FAILED", "{wf:#}");
    let reason = wf["reason"].as_str().unwrap();
    assert!(reason.contains("(DiskHintUnresolved)"), "{reason}");
    assert!(
        reason.contains(r#"disk hint {serial: "kiln-nope"} matches no disk: vda (serial "kiln-small" is not "kiln-nope"); vdb (serial "kiln-big" is not "kiln-nope")"#),
        "{reason}"
    );
    assert!(!logs.contains("first ran"), "no action ran: {logs}");
    assert_eq!(wf["actions"][0]["attempts"][0]["reason"], "DiskHintUnresolved", "{wf:#}");
    let plan = stdout(&m.cluster.kiln(&["plan", wf["id"].as_str().unwrap()]));
    assert!(
        has_line(
            &plan,
            r#"    unresolved: disk hint {serial: "kiln-nope"} matches no disk: vda (serial "kiln-small" is not "kiln-nope"); vdb (serial "kiln-big" is not "kiln-nope")"#
        ),
        "{plan}"
    );
    assert!(wf["actions"][1]["attempts"].as_array().is_none_or(|a| a.is_empty()), "{wf:#}");

    // A hint both disks match.
    let (wf, logs) = m.run(r#"{DEST: '{{ disk (dict "transport" "virtio" "rotational" false) }}'}"#);
    assert_eq!(wf["state"], "FAILED", "{wf:#}");
    let reason = wf["reason"].as_str().unwrap();
    assert!(
        reason.contains(r#"disk hint {rotational: false, transport: "virtio"} matches 2 disks: vda (1.0 MiB, virtio, serial "kiln-small"); vdb (4.0 GiB, virtio, serial "kiln-big")"#),
        "{reason}"
    );
    assert!(!logs.contains("first ran"), "no action ran: {logs}");

    // A machine that has not booted yet: the plan says so; its workflow
    // waits (nothing is handed out without an agent asking).
    let (mac, hw, tpl, wf) = (random_mac(), unique("hw"), unique("tpl"), unique("wf"));
    m.cluster.apply(&format!(
        "kind: Hardware\nname: {hw}\nmacs: [\"{mac}\"]\nroot_disk: {{serial: kiln-big}}\n---\nkind: Template\nname: {tpl}\ndata: |\n  version: \"0.1\"\n  name: {tpl}\n  tasks:\n    - name: t\n      worker: \"{{{{.device_1}}}}\"\n      actions:\n        - name: only\n          image: {}\n          environment: {{DEST: '{{{{ rootDisk }}}}'}}\n---\nkind: Workflow\nname: {wf}\ntemplate: {tpl}\nhardware: {hw}\nhardware_map: {{device_1: \"{mac}\"}}\n",
        m.cluster.env.busybox()
    ));
    let plan = stdout(&m.cluster.kiln(&["plan", &wf]));
    assert!(has_line(&plan, r#"  {serial: "kiln-big"} (in only):"#), "{plan}");
    assert!(plan.contains(&format!("    unresolved: hardware {hw} has reported no inventory yet")), "{plan}");
}
