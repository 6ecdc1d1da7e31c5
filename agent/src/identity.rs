//! The agent's default id: the MAC address of the machine's first network
//! interface, which is what the hardware record and the iPXE script know.

use std::path::Path;

/// MAC of the non-loopback interface with the lowest ifindex that has a
/// real (non-zero) address, lower case with colons.
pub fn first_nic_mac() -> Option<String> {
    first_nic_mac_in(Path::new("/sys/class/net"))
}

fn first_nic_mac_in(sysfs_net: &Path) -> Option<String> {
    let mut nics: Vec<(u32, String)> = std::fs::read_dir(sysfs_net)
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let dir = entry.path();
            let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok().map(|s| s.trim().to_ascii_lowercase());
            let mac = read("address")?;
            let index = read("ifindex")?.parse().ok()?;
            // type 1 = ARPHRD_ETHER; loopback is 772.
            (read("type").as_deref() == Some("1") && mac != "00:00:00:00:00:00" && mac.len() == 17)
                .then_some((index, mac))
        })
        .collect();
    nics.sort();
    nics.into_iter().next().map(|(_, mac)| mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nic(root: &Path, name: &str, index: u32, kind: u32, mac: &str) {
        let d = root.join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("address"), format!("{mac}\n")).unwrap();
        std::fs::write(d.join("ifindex"), format!("{index}\n")).unwrap();
        std::fs::write(d.join("type"), format!("{kind}\n")).unwrap();
    }

    #[test]
    fn picks_the_lowest_ifindex_ethernet_nic() {
        let t = tempfile::tempdir().unwrap();
        nic(t.path(), "lo", 1, 772, "00:00:00:00:00:00");
        nic(t.path(), "eth1", 3, 1, "52:54:00:00:00:02");
        nic(t.path(), "eth0", 2, 1, "52:54:00:AB:CD:01");
        assert_eq!(first_nic_mac_in(t.path()).as_deref(), Some("52:54:00:ab:cd:01"));
        assert_eq!(first_nic_mac_in(&t.path().join("none")), None);
    }
}
