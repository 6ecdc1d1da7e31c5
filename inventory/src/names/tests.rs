//! Stable names against fake sysfs trees laid out as real machines' are
//! (the paths and attribute values of a Dell R650, a QEMU VM, a SATA SSD
//! desktop and a SAS server), compared with the names udev gave them.

use std::collections::BTreeSet;
use std::path::Path;

use super::*;
use crate::tests::{link, server, write};

fn names_of(root: &Path, target: &str) -> BTreeSet<String> {
    stable_names(root).into_iter().filter(|n| n.target == target).map(|n| n.link).collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

#[test]
fn the_server_gets_the_names_udev_gave_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    server(root);
    assert_eq!(
        names_of(root, "nvme0n1"),
        set(&[
            "/dev/disk/by-id/nvme-SAMSUNG_MZQL2960HCJR-00A07_S64FNE0R812345",
            "/dev/disk/by-id/nvme-eui.36344630528123450025384500000001",
            "/dev/disk/by-path/pci-0000:3b:00.0-nvme-1",
        ])
    );
    assert_eq!(
        names_of(root, "sda"),
        set(&[
            "/dev/disk/by-id/ata-ST4000NM0035-1V4_ZC18ABCD",
            "/dev/disk/by-id/wwn-0x5000c500a1b2c3d4",
            "/dev/disk/by-path/pci-0000:00:17.0-ata-3",
            "/dev/disk/by-path/pci-0000:00:17.0-ata-3.0",
        ])
    );
    // A USB stick without a serial: usb_id leaves the serial out.
    assert_eq!(
        names_of(root, "sdb"),
        set(&[
            "/dev/disk/by-id/usb-SanDisk_Cruzer_Blade-0:0",
            "/dev/disk/by-path/pci-0000:00:14.0-usb-0:4:1.0-scsi-0:0:0:0",
        ])
    );
    assert_eq!(
        names_of(root, "vda"),
        set(&[
            "/dev/disk/by-id/virtio-kiln-disk-1",
            "/dev/disk/by-path/pci-0000:00:05.0",
            "/dev/disk/by-path/virtio-pci-0000:00:05.0",
        ])
    );
    assert!(names_of(root, "loop0").is_empty(), "no device, no names");
    // Every whole-disk link udev made in the fixture is among ours.
    let ours: BTreeSet<String> = stable_names(root).into_iter().map(|n| n.link).collect();
    for kind in ["by-id", "by-path"] {
        for e in std::fs::read_dir(root.join("dev/disk").join(kind)).unwrap().flatten() {
            let name = format!("/dev/disk/{kind}/{}", e.file_name().to_string_lossy());
            if !name.contains("-part") {
                assert!(ours.contains(&name), "udev's {name} is missing from {ours:#?}");
            }
        }
    }
}

/// A QEMU VM: virtio disks with odd serials, none, partitions.
#[test]
fn virtio_serials_are_escaped_a_disk_without_one_gets_none_and_partitions_get_part_n() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let r = root.display();
    for (slot, name, serial) in
        [("04", "vda", Some("  QM 0001\t x ")), ("05", "vdb", None), ("06", "vdc", Some("a/b*c"))]
    {
        let dev = format!("sys/devices/pci0000:00/0000:00:{slot}.0/virtio{slot}");
        if let Some(s) = serial {
            write(root, &format!("{dev}/block/{name}/serial"), format!("{s}\n"));
        }
        write(root, &format!("{dev}/block/{name}/size"), "2048\n");
        link(root, &format!("{dev}/block/{name}/device"), &format!("{r}/{dev}"));
        link(root, &format!("sys/block/{name}"), &format!("{r}/{dev}/block/{name}"));
    }
    for n in [1, 2] {
        write(
            root,
            &format!("sys/devices/pci0000:00/0000:00:04.0/virtio04/block/vda/vda{n}/partition"),
            format!("{n}\n"),
        );
    }
    assert_eq!(
        names_of(root, "vda"),
        set(&[
            "/dev/disk/by-id/virtio-QM_0001_x",
            "/dev/disk/by-path/pci-0000:00:04.0",
            "/dev/disk/by-path/virtio-pci-0000:00:04.0",
        ])
    );
    assert_eq!(
        names_of(root, "vda2"),
        set(&[
            "/dev/disk/by-id/virtio-QM_0001_x-part2",
            "/dev/disk/by-path/pci-0000:00:04.0-part2",
            "/dev/disk/by-path/virtio-pci-0000:00:04.0-part2",
        ])
    );
    assert_eq!(
        names_of(root, "vdb"),
        set(&["/dev/disk/by-path/pci-0000:00:05.0", "/dev/disk/by-path/virtio-pci-0000:00:05.0"]),
        "no serial: no by-id name"
    );
    assert!(names_of(root, "vdc").contains("/dev/disk/by-id/virtio-a_b_c"), "{:?}", names_of(root, "vdc"));
    assert_eq!(escape(" Samsung SSD  870 "), "Samsung_SSD_870");
}

/// A desktop's SATA SSD: the full model from IDENTIFY (VPD page 0x89),
/// which the 16-character SCSI model cuts; a second NVMe namespace.
#[test]
fn ata_names_use_the_identify_model_and_nvme_namespaces_are_numbered() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let r = root.display();
    let sata = "sys/devices/pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0";
    write(root, &format!("{sata}/vendor"), "ATA     \n");
    write(root, &format!("{sata}/model"), "Samsung SSD 870 \n");
    write(root, &format!("{sata}/wwid"), "t10.ATA     Samsung SSD 870 EVO 1TB                 S6PUNX0R123456A     \n");
    let mut identify = vec![b' '; 512];
    let mut put = |word: usize, text: &str, words: usize| {
        let mut bytes = format!("{text:<width$}", width = words * 2).into_bytes();
        for pair in bytes.chunks_mut(2) {
            pair.swap(0, 1);
        }
        identify[word * 2..(word + words) * 2].copy_from_slice(&bytes);
    };
    put(10, "S6PUNX0R123456A", 10);
    put(27, "Samsung SSD 870 EVO 1TB", 20);
    let mut pg89 = vec![0u8; 60];
    pg89[1] = 0x89;
    pg89.extend(identify);
    write(root, &format!("{sata}/vpd_pg89"), pg89);
    write(root, &format!("{sata}/block/sda/size"), "1953525168\n");
    link(root, &format!("{sata}/block/sda/device"), &format!("{r}/{sata}"));
    link(root, "sys/block/sda", &format!("{r}/{sata}/block/sda"));
    write(root, &format!("{sata}/block/sda/sda1/partition"), "1\n");
    assert_eq!(
        names_of(root, "sda"),
        set(&[
            "/dev/disk/by-id/ata-Samsung_SSD_870_EVO_1TB_S6PUNX0R123456A",
            "/dev/disk/by-path/pci-0000:00:17.0-ata-1",
            "/dev/disk/by-path/pci-0000:00:17.0-ata-1.0",
        ]),
        "a t10 wwid is no WWN"
    );
    assert!(names_of(root, "sda1").contains("/dev/disk/by-id/ata-Samsung_SSD_870_EVO_1TB_S6PUNX0R123456A-part1"));

    let nvme = "sys/devices/pci0000:00/0000:00:1d.0/0000:02:00.0/nvme/nvme1";
    write(root, &format!("{nvme}/model"), "WDC WDS500G2B0C-00PXH0                  \n");
    write(root, &format!("{nvme}/serial"), "21234A800123        \n");
    write(root, &format!("{nvme}/nvme1n2/nsid"), "2\n");
    link(root, &format!("{nvme}/nvme1n2/device"), &format!("{r}/{nvme}"));
    link(root, "sys/block/nvme1n2", &format!("{r}/{nvme}/nvme1n2"));
    assert_eq!(
        names_of(root, "nvme1n2"),
        set(&[
            "/dev/disk/by-id/nvme-WDC_WDS500G2B0C-00PXH0_21234A800123_2",
            "/dev/disk/by-path/pci-0000:02:00.0-nvme-2",
        ]),
        "no wwid: no eui name"
    );
}

/// A SAS disk behind an HBA (mpt3sas): SCSI names, the WWN, the SAS address.
#[test]
fn sas_disks_get_scsi_wwn_and_sas_address_names() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let r = root.display();
    let hba = "sys/devices/pci0000:00/0000:00:01.0/0000:03:00.0";
    let sas = format!("{hba}/host4/port-4:0/end_device-4:0/target4:0:0/4:0:0:0");
    write(root, &format!("{sas}/vendor"), "SEAGATE \n");
    write(root, &format!("{sas}/model"), "ST600MM0006     \n");
    write(root, &format!("{sas}/wwid"), "naa.5000C500A1B2C3D4\n");
    let mut pg80 = vec![0, 0x80, 0, 8];
    pg80.extend(b"S0M1ABCD");
    write(root, &format!("{sas}/vpd_pg80"), pg80);
    link(root, &format!("{sas}/block/sdc/device"), &format!("{r}/{sas}"));
    link(root, "sys/block/sdc", &format!("{r}/{sas}/block/sdc"));
    write(root, "sys/class/sas_device/end_device-4:0/sas_address", "0x5000c500a1b2c3d5\n");
    assert_eq!(
        names_of(root, "sdc"),
        set(&[
            "/dev/disk/by-id/scsi-35000c500a1b2c3d4",
            "/dev/disk/by-id/scsi-SSEAGATE_ST600MM0006_S0M1ABCD",
            "/dev/disk/by-id/wwn-0x5000c500a1b2c3d4",
            "/dev/disk/by-path/pci-0000:03:00.0-sas-0x5000c500a1b2c3d5-lun-0",
        ])
    );
}

#[test]
fn links_are_made_where_absent_and_the_inventory_then_reports_them() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    server(root);
    // udev's links of the fixture stay; only the missing ones are made.
    let made = create_links(root).unwrap();
    let made: BTreeSet<String> = made.into_iter().map(|n| n.link).collect();
    assert!(made.contains("/dev/disk/by-id/virtio-kiln-disk-1"), "{made:?}");
    assert!(!made.contains("/dev/disk/by-id/ata-ST4000NM0035-1V4_ZC18ABCD"), "udev's link stays: {made:?}");
    assert_eq!(
        std::fs::read_link(root.join("dev/disk/by-id/virtio-kiln-disk-1")).unwrap(),
        Path::new("../../vda"),
        "relative, as udev's"
    );
    assert!(create_links(root).unwrap().is_empty(), "a second start makes nothing");
    let inv = crate::collect(root);
    let vda = inv.disks.iter().find(|d| d.name == "vda").unwrap();
    assert_eq!(vda.by_id, ["/dev/disk/by-id/virtio-kiln-disk-1"]);
    assert_eq!(vda.by_path, ["/dev/disk/by-path/pci-0000:00:05.0", "/dev/disk/by-path/virtio-pci-0000:00:05.0"]);

    // Where udev runs, the names are udev's to make.
    let other = tempfile::tempdir().unwrap();
    server(other.path());
    write(other.path(), "run/udev/control", "");
    assert!(create_links(other.path()).unwrap().is_empty());
    assert!(!other.path().join("dev/disk/by-id/virtio-kiln-disk-1").exists());
}
