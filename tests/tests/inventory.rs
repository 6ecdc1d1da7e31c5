//! In-band inventory against the real binaries: a real agent reports what
//! it finds on this host (and, pointed at a fake tree, a change it sees
//! later), the server keeps it, and `kiln describe hardware` shows it,
//! readable and as JSON.

use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::Duration;

use kiln_tests::{Cluster, hardware_doc, random_mac, stderr, stdout, unique, wait_until};
use serde_json::Value;

fn described(c: &Cluster, hw: &str) -> Value {
    let out = c.kiln(&["describe", "hardware", hw, "-o", "json"]);
    assert!(out.status.success(), "kiln describe: {}", stderr(&out));
    serde_json::from_str(&stdout(&out)).expect("JSON")
}

fn wait_inventory(c: &Cluster, hw: &str, what: &str, mut ok: impl FnMut(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    let waited = wait_until(Duration::from_secs(60), || {
        last = described(c, hw);
        ok(&last)
    });
    assert!(waited.is_ok(), "no inventory with {what} for {hw}: {last:#}\n{}", c.logs());
    last
}

/// A virtio disk `name` with this serial and size, as the kernel lays it out.
fn fake_disk(root: &Path, name: &str, serial: &str, sectors: u64) {
    let dev = root.join(format!("sys/devices/pci0000:00/0000:00:0{}.0/virtio{}", name.len(), name.len()));
    let block = dev.join("block").join(name);
    std::fs::create_dir_all(block.join("queue")).unwrap();
    std::fs::write(block.join("serial"), format!("{serial}\n")).unwrap();
    std::fs::write(block.join("size"), format!("{sectors}\n")).unwrap();
    std::fs::write(block.join("queue/rotational"), "1\n").unwrap();
    symlink(&dev, block.join("device")).unwrap();
    std::fs::create_dir_all(root.join("sys/block")).unwrap();
    symlink(&block, root.join("sys/block").join(name)).unwrap();
}

#[test]
fn a_real_agent_reports_this_hosts_inventory_and_its_changes_and_the_cli_shows_them() {
    let mut c = Cluster::start().unwrap();
    let (mac, hw) = (random_mac(), unique("hw"));
    c.apply(&hardware_doc(&hw, &mac));
    let out = c.kiln(&["describe", "hardware", &hw]);
    assert!(stdout(&out).contains("inventory: none reported yet"), "{}", stdout(&out));

    // This host, as the agent reads it from /.
    c.start_agent(&mac, "").unwrap();
    let got = wait_inventory(&c, &hw, "cpu threads", |v| v["inventory"]["cpu"]["threads"].is_u64());
    let here = serde_json::to_value(kiln_inventory::collect(Path::new("/"))).unwrap();
    for subject in ["system", "cpu", "memory", "disks", "tpm"] {
        assert_eq!(got["inventory"][subject], here[subject], "{subject}: {got:#}");
    }
    let names = |v: &Value| -> Vec<String> {
        v.as_array().into_iter().flatten().map(|n| n["name"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(names(&got["inventory"]["nics"]), names(&here["nics"]));
    assert_eq!(got["inventory"]["agent_id"], mac.as_str());
    assert_eq!(got["id"], hw.as_str(), "the hardware's own fields are there too");
    let readable = stdout(&c.kiln(&["describe", "hardware", &hw]));
    assert!(readable.contains(&format!("inventory: (reported by agent {mac}")), "{readable}");
    for line in ["  system:", "  firmware:", "  cpu:", "  memory:", "  disks:", "  nics:", "  tpm:"] {
        assert!(readable.contains(line), "{line}: {readable}");
    }
    if let Some(threads) = here["cpu"]["threads"].as_u64() {
        assert!(readable.contains(&format!("{threads} threads")), "{readable}");
    }
    for disk in names(&here["disks"]) {
        assert!(readable.contains(&format!("    {disk} ")), "{disk}: {readable}");
    }
    let yaml = stdout(&c.kiln(&["describe", "hardware", &hw, "-o", "yaml"]));
    assert!(yaml.contains("inventory:") && yaml.contains("threads:"), "{yaml}");

    // A machine whose disks change: the agent, collecting every second,
    // reports the new one.
    let root = tempfile::tempdir().unwrap();
    fake_disk(root.path(), "vda", "kiln-small", 2048);
    std::fs::write(root.path().join("placeholder"), "").unwrap();
    let (mac2, hw2) = (random_mac().replace("02:", "06:"), unique("hw2"));
    c.apply(&hardware_doc(&hw2, &mac2));
    c.start_agent(&mac2, &format!("inventory_root: {:?}\ninventory_interval_seconds: 1\n", root.path().display()))
        .unwrap();
    let first = wait_inventory(&c, &hw2, "vda", |v| v["inventory"]["disks"][0]["serial"] == "kiln-small");
    assert_eq!(first["inventory"]["disks"].as_array().unwrap().len(), 1, "{first:#}");
    assert_eq!(first["inventory"]["disks"][0]["size_bytes"], 2048 * 512);
    assert_eq!(first["inventory"]["disks"][0]["transport"], "virtio");
    assert!(first["inventory"]["disks"][0].get("model").is_none(), "absent, not invented: {first:#}");
    assert!(first["inventory"]["cpu"].as_object().unwrap().is_empty(), "nothing of the host: {first:#}");
    fake_disk(root.path(), "vdb", "kiln-big", 4096);
    let second = wait_inventory(&c, &hw2, "vdb", |v| v["inventory"]["disks"][1]["serial"] == "kiln-big");
    assert!(second["inventory"]["reported_at"] != first["inventory"]["reported_at"], "{second:#}");
}
