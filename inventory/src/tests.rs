//! The collector against a fake `/sys`, `/proc` and `/dev` (built the way
//! the kernel lays them out: class links into `/sys/devices`), and once
//! against the real host.

use std::os::unix::fs::symlink;
use std::path::Path;

use super::*;

pub(crate) fn write(root: &Path, path: &str, content: impl AsRef<[u8]>) {
    let p = root.join(path);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

pub(crate) fn link(root: &Path, path: &str, target: &str) {
    let p = root.join(path);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    symlink(target, p).unwrap();
}

/// An SMBIOS 3.0 entry point and a table with two memory devices (one
/// empty socket) and the end marker, as /sys/firmware/dmi/tables has them.
fn smbios(root: &Path) {
    let mut table = Vec::new();
    let mut device = |locator: &str, size: u16, ext: u32, serial: &str| {
        let mut s = vec![17u8, 0x22, 0x11, 0x00, 0x10, 0x00, 0xfe, 0xff, 72, 0, 64, 0];
        s.extend(size.to_le_bytes());
        s.extend([0x09, 0x00, 1, 2, 0x1a]); // DIMM, no set, strings 1 and 2, DDR4
        s.extend([0x80, 0x00]); // type detail: synchronous
        s.extend(3200u16.to_le_bytes());
        s.extend([3, 4, 5, 6, 0x02]); // manufacturer, serial, asset tag, part number; rank 2
        s.extend(ext.to_le_bytes());
        s.extend(2933u16.to_le_bytes());
        assert_eq!(s.len(), 0x22);
        for text in [locator, "BANK 0", "Samsung", serial, "Not Specified", "M393A2K43DB3-CWE"] {
            s.extend(text.as_bytes());
            s.push(0);
        }
        s.push(0);
        table.extend(s);
    };
    device("DIMM_A1", 0x7fff, 65536, "S0001"); // 64 GiB, in extended_size
    device("DIMM_A2", 0, 0, "Not Specified"); // empty socket
    device("DIMM_B1", 16384, 0, "S0002"); // 16 GiB
    table.extend([127, 4, 0xff, 0xfe, 0, 0]);
    let mut entry = vec![b'_', b'S', b'M', b'3', b'_', 0, 0x18, 3, 0, 0, 1, 0];
    entry.extend((table.len() as u32).to_le_bytes());
    entry.extend(0u64.to_le_bytes());
    let sum = entry.iter().fold(0u8, |a, b| a.wrapping_add(*b));
    entry[5] = 0u8.wrapping_sub(sum);
    write(root, "sys/firmware/dmi/tables/smbios_entry_point", entry);
    write(root, "sys/firmware/dmi/tables/DMI", table);
}

/// A server: UEFI with Secure Boot, two sockets of two cores of two
/// threads, an NVMe, a SATA HDD with an MBR, a USB stick, a virtio disk
/// with a GPT, a loop device, two NICs and a bridge, a TPM 2.0.
pub(crate) fn server(root: &Path) {
    for (name, value) in [
        ("sys_vendor", "Dell Inc."),
        ("product_name", "PowerEdge R650"),
        ("product_serial", "7XK2J93"),
        ("product_uuid", "4C4C4544-0058-4B10-8032-B7C04F4A3933"),
        ("bios_vendor", "Dell Inc."),
        ("bios_version", "1.10.2"),
        ("bios_date", "To Be Filled By O.E.M."),
    ] {
        write(root, &format!("sys/class/dmi/id/{name}"), format!("{value}\n"));
    }
    write(root, "sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c", [6, 0, 0, 0, 1]);
    let mut cpuinfo = String::new();
    for cpu in 0..8 {
        let (package, core) = (cpu / 4, (cpu % 4) / 2);
        write(root, &format!("sys/devices/system/cpu/cpu{cpu}/topology/physical_package_id"), format!("{package}\n"));
        write(root, &format!("sys/devices/system/cpu/cpu{cpu}/topology/core_id"), format!("{core}\n"));
        cpuinfo.push_str(&format!("processor\t: {cpu}\nmodel name\t: Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz\n\n"));
    }
    // An offline CPU is not counted; the cpufreq directory is not a CPU.
    write(root, "sys/devices/system/cpu/cpu8/online", "0\n");
    write(root, "sys/devices/system/cpu/cpufreq/boost", "1\n");
    write(root, "proc/cpuinfo", cpuinfo);
    write(root, "proc/meminfo", "MemTotal:       82245632 kB\nMemFree:        1000 kB\n");
    smbios(root);

    let r = root.display();
    // NVMe: the namespace's controller holds model and serial.
    let nvme = "sys/devices/pci0000:00/0000:00:1d.0/0000:3b:00.0/nvme/nvme0";
    write(root, &format!("{nvme}/model"), "SAMSUNG MZQL2960HCJR-00A07            \n");
    write(root, &format!("{nvme}/serial"), "S64FNE0R812345\n");
    write(root, &format!("{nvme}/nvme0n1/size"), "1875385008\n");
    write(root, &format!("{nvme}/nvme0n1/wwid"), "eui.36344630528123450025384500000001\n");
    write(root, &format!("{nvme}/nvme0n1/removable"), "0\n");
    write(root, &format!("{nvme}/nvme0n1/queue/rotational"), "0\n");
    write(root, &format!("{nvme}/nvme0n1/queue/logical_block_size"), "512\n");
    write(root, &format!("{nvme}/nvme0n1/queue/physical_block_size"), "4096\n");
    link(root, &format!("{nvme}/nvme0n1/device"), &format!("{r}/{nvme}"));
    link(root, "sys/block/nvme0n1", &format!("{r}/{nvme}/nvme0n1"));
    // SATA HDD: vendor "ATA" is the SAT layer, not a vendor; serial in VPD.
    let sata = "sys/devices/pci0000:00/0000:00:17.0/ata3/host2/target2:0:0/2:0:0:0";
    write(root, &format!("{sata}/vendor"), "ATA     \n");
    write(root, &format!("{sata}/model"), "ST4000NM0035-1V4\n");
    write(root, &format!("{sata}/wwid"), "naa.5000c500a1b2c3d4\n");
    let mut pg80 = vec![0, 0x80, 0, 8];
    pg80.extend(b"ZC18ABCD");
    write(root, &format!("{sata}/vpd_pg80"), pg80);
    write(root, &format!("{sata}/block/sda/size"), "7814037168\n");
    write(root, &format!("{sata}/block/sda/removable"), "0\n");
    write(root, &format!("{sata}/block/sda/queue/rotational"), "1\n");
    write(root, &format!("{sata}/block/sda/queue/logical_block_size"), "512\n");
    write(root, &format!("{sata}/block/sda/queue/physical_block_size"), "4096\n");
    link(root, &format!("{sata}/block/sda/device"), &format!("{r}/{sata}"));
    link(root, "sys/block/sda", &format!("{r}/{sata}/block/sda"));
    // USB stick, removable.
    let usb = "sys/devices/pci0000:00/0000:00:14.0/usb1/1-4/1-4:1.0/host6/target6:0:0/6:0:0:0";
    write(root, &format!("{usb}/vendor"), "SanDisk \n");
    write(root, &format!("{usb}/model"), "Cruzer Blade    \n");
    write(root, &format!("{usb}/block/sdb/size"), "30031872\n");
    write(root, &format!("{usb}/block/sdb/removable"), "1\n");
    link(root, &format!("{usb}/block/sdb/device"), &format!("{r}/{usb}"));
    link(root, "sys/block/sdb", &format!("{r}/{usb}/block/sdb"));
    // virtio: a serial, nothing else.
    let vd = "sys/devices/pci0000:00/0000:00:05.0/virtio3";
    write(root, &format!("{vd}/block/vda/serial"), "kiln-disk-1\n");
    write(root, &format!("{vd}/block/vda/size"), "20971520\n");
    write(root, &format!("{vd}/block/vda/queue/rotational"), "1\n");
    link(root, &format!("{vd}/block/vda/device"), &format!("{r}/{vd}"));
    link(root, "sys/block/vda", &format!("{r}/{vd}/block/vda"));
    // loop: no device, not a disk.
    write(root, "sys/devices/virtual/block/loop0/size", "100\n");
    link(root, "sys/block/loop0", &format!("{r}/sys/devices/virtual/block/loop0"));
    // The disks' first sectors: sda an MBR, vda a GPT, the others nothing.
    let mut mbr = vec![0u8; 1024];
    mbr[446 + 4] = 0x83;
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    write(root, "dev/sda", &mbr);
    let mut gpt = vec![0u8; 1024];
    gpt[446 + 4] = 0xee;
    gpt[510] = 0x55;
    gpt[511] = 0xaa;
    gpt[512..520].copy_from_slice(b"EFI PART");
    write(root, "dev/vda", &gpt);
    write(root, "dev/nvme0n1", vec![0u8; 8192]);
    // udev's links.
    link(root, "dev/disk/by-id/nvme-SAMSUNG_MZQL2960HCJR-00A07_S64FNE0R812345", "../../nvme0n1");
    link(root, "dev/disk/by-id/nvme-eui.36344630528123450025384500000001", "../../nvme0n1");
    link(root, "dev/disk/by-id/ata-ST4000NM0035-1V4_ZC18ABCD", "../../sda");
    link(root, "dev/disk/by-id/wwn-0x5000c500a1b2c3d4", "../../sda");
    link(root, "dev/disk/by-id/ata-ST4000NM0035-1V4_ZC18ABCD-part1", "../../sda1");
    link(root, "dev/disk/by-path/pci-0000:3b:00.0-nvme-1", "../../nvme0n1");
    link(root, "dev/disk/by-path/pci-0000:00:17.0-ata-3", "../../sda");
    // NICs: an Intel with link, a Mellanox without, a bridge.
    let eno = "sys/devices/pci0000:00/0000:00:1c.0/0000:01:00.0";
    write(root, &format!("{eno}/net/eno1/address"), "B4:96:91:AA:BB:01\n");
    write(root, &format!("{eno}/net/eno1/speed"), "10000\n");
    write(root, &format!("{eno}/net/eno1/carrier"), "1\n");
    link(root, &format!("{eno}/net/eno1/device"), &format!("{r}/{eno}"));
    link(root, &format!("{eno}/driver"), &format!("{r}/sys/bus/pci/drivers/ixgbe"));
    link(root, "sys/class/net/eno1", &format!("{r}/{eno}/net/eno1"));
    let mlx = "sys/devices/pci0000:00/0000:00:1c.4/0000:5e:00.1";
    write(root, &format!("{mlx}/net/ens2f1/address"), "0c:42:a1:00:00:02\n");
    write(root, &format!("{mlx}/net/ens2f1/speed"), "-1\n");
    write(root, &format!("{mlx}/net/ens2f1/carrier"), "0\n");
    link(root, &format!("{mlx}/net/ens2f1/device"), &format!("{r}/{mlx}"));
    link(root, &format!("{mlx}/driver"), &format!("{r}/sys/bus/pci/drivers/mlx5_core"));
    link(root, "sys/class/net/ens2f1", &format!("{r}/{mlx}/net/ens2f1"));
    write(root, "sys/devices/virtual/net/br0/address", "02:00:00:00:00:09\n");
    link(root, "sys/class/net/br0", &format!("{r}/sys/devices/virtual/net/br0"));
    write(root, "sys/class/tpm/tpm0/tpm_version_major", "2\n");
}

#[test]
fn a_fake_server_is_described_field_by_field() {
    let dir = tempfile::tempdir().unwrap();
    server(dir.path());
    let inv = collect(dir.path());
    assert_eq!(
        inv.system,
        System {
            vendor: Some("Dell Inc.".into()),
            product: Some("PowerEdge R650".into()),
            serial: Some("7XK2J93".into()),
            uuid: Some("4c4c4544-0058-4b10-8032-b7c04f4a3933".into()),
            firmware_vendor: Some("Dell Inc.".into()),
            firmware_version: Some("1.10.2".into()),
            firmware_date: None,
            boot_mode: Some(BootMode::Uefi),
            secure_boot: Some(true),
        }
    );
    assert_eq!(
        inv.cpu,
        Cpu {
            model: Some("Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz".into()),
            sockets: Some(2),
            cores: Some(4),
            threads: Some(8)
        }
    );
    assert_eq!(inv.memory.total_bytes, Some(82245632 * 1024));
    assert_eq!(inv.memory.dimms.len(), 2, "the empty socket is left out: {:?}", inv.memory.dimms);
    assert_eq!(
        inv.memory.dimms[0],
        Dimm {
            locator: Some("DIMM_A1".into()),
            size_bytes: Some(64 << 30),
            memory_type: Some("Ddr4".into()),
            speed_mts: Some(3200),
            manufacturer: Some("Samsung".into()),
            serial: Some("S0001".into()),
            part_number: Some("M393A2K43DB3-CWE".into()),
        }
    );
    assert_eq!(inv.memory.dimms[1].size_bytes, Some(16 << 30));

    let names: Vec<&str> = inv.disks.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["nvme0n1", "sda", "sdb", "vda"], "loop devices are not disks");
    let nvme = &inv.disks[0];
    assert_eq!(
        *nvme,
        Disk {
            name: "nvme0n1".into(),
            by_id: vec![
                "/dev/disk/by-id/nvme-SAMSUNG_MZQL2960HCJR-00A07_S64FNE0R812345".into(),
                "/dev/disk/by-id/nvme-eui.36344630528123450025384500000001".into()
            ],
            by_path: vec!["/dev/disk/by-path/pci-0000:3b:00.0-nvme-1".into()],
            vendor: None,
            model: Some("SAMSUNG MZQL2960HCJR-00A07".into()),
            serial: Some("S64FNE0R812345".into()),
            wwn: Some("eui.36344630528123450025384500000001".into()),
            size_bytes: Some(1875385008 * 512),
            rotational: Some(false),
            removable: Some(false),
            transport: Some("nvme".into()),
            logical_sector_size: Some(512),
            physical_sector_size: Some(4096),
            partition_table: None,
        }
    );
    let sda = &inv.disks[1];
    assert_eq!(sda.by_id, ["/dev/disk/by-id/ata-ST4000NM0035-1V4_ZC18ABCD", "/dev/disk/by-id/wwn-0x5000c500a1b2c3d4"]);
    assert_eq!((sda.vendor.as_deref(), sda.model.as_deref()), (None, Some("ST4000NM0035-1V4")));
    assert_eq!((sda.serial.as_deref(), sda.wwn.as_deref()), (Some("ZC18ABCD"), Some("naa.5000c500a1b2c3d4")));
    assert_eq!((sda.transport.as_deref(), sda.rotational), (Some("sata"), Some(true)));
    assert_eq!(sda.partition_table.as_deref(), Some("dos"));
    let usb = &inv.disks[2];
    assert_eq!((usb.transport.as_deref(), usb.removable), (Some("usb"), Some(true)));
    assert_eq!((usb.vendor.as_deref(), usb.serial.as_deref()), (Some("SanDisk"), None));
    let vda = &inv.disks[3];
    assert_eq!((vda.transport.as_deref(), vda.serial.as_deref()), (Some("virtio"), Some("kiln-disk-1")));
    assert_eq!((vda.model.as_deref(), vda.wwn.as_deref(), vda.by_id.len()), (None, None, 0), "absent, not invented");
    assert_eq!(vda.partition_table.as_deref(), Some("gpt"));

    assert_eq!(
        inv.nics,
        vec![
            Nic {
                name: "eno1".into(),
                mac: Some("b4:96:91:aa:bb:01".into()),
                driver: Some("ixgbe".into()),
                pci_address: Some("0000:01:00.0".into()),
                speed_mbps: Some(10000),
                link: Some(true),
            },
            Nic {
                name: "ens2f1".into(),
                mac: Some("0c:42:a1:00:00:02".into()),
                driver: Some("mlx5_core".into()),
                pci_address: Some("0000:5e:00.1".into()),
                speed_mbps: None,
                link: Some(false),
            },
        ],
        "the bridge is not a NIC"
    );
    assert_eq!(inv.tpm, Some(Tpm { version: Some("2.0".into()) }));
    assert_eq!(inv.summary(), "Dell Inc. PowerEdge R650, 8 CPUs, 78.4 GiB, 4 disks, 2 NICs");
    // The JSON round-trips, and absent fields are absent.
    let json = serde_json::to_string(&inv).unwrap();
    assert_eq!(serde_json::from_str::<Inventory>(&json).unwrap(), inv);
    assert!(!json.contains("null") && !json.contains("firmware_date"), "{json}");
}

#[test]
fn a_bare_tree_has_nothing_and_bios_boot_has_no_secure_boot() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(collect(dir.path()), Inventory::default(), "nothing readable: nothing invented");
    assert_eq!(serde_json::to_string(&Inventory::default()).unwrap(), r#"{"system":{},"cpu":{},"memory":{}}"#);
    write(dir.path(), "sys/firmware/acpi/tables/x", "");
    write(dir.path(), "proc/cpuinfo", "processor\t: 0\nprocessor\t: 1\n");
    let inv = collect(dir.path());
    assert_eq!((inv.system.boot_mode, inv.system.secure_boot), (Some(BootMode::Bios), None));
    // Without sysfs topology: threads from /proc/cpuinfo, sockets and cores unknown.
    assert_eq!(inv.cpu, Cpu { model: None, sockets: None, cores: None, threads: Some(2) });
    // A TPM whose version the kernel does not say; a TPM 1.2 that does.
    write(dir.path(), "sys/class/tpm/tpm0/dev", "10:224\n");
    assert_eq!(collect(dir.path()).tpm, Some(Tpm { version: None }));
    write(dir.path(), "sys/class/tpm/tpm0/caps", "Manufacturer: 0x49465800\nTCG version: 1.2\n");
    assert_eq!(collect(dir.path()).tpm, Some(Tpm { version: Some("1.2".into()) }));
    // Unknown fields in a report are refused (a typo is not silently lost).
    assert!(serde_json::from_str::<Inventory>(r#"{"system":{"vendr":"x"}}"#).is_err());
}

#[test]
fn the_real_host_is_described_consistently_with_its_own_sysfs() {
    let inv = collect(Path::new("/"));
    let threads =
        std::fs::read_to_string("/proc/cpuinfo").unwrap().lines().filter(|l| l.starts_with("processor")).count();
    assert!(inv.cpu.threads.is_some_and(|t| t >= 1 && t as usize <= threads.max(1)), "{:?} vs {threads}", inv.cpu);
    if let (Some(s), Some(c), Some(t)) = (inv.cpu.sockets, inv.cpu.cores, inv.cpu.threads) {
        assert!(s >= 1 && s <= c && c <= t, "{:?}", inv.cpu);
    }
    assert!(inv.memory.total_bytes.is_some_and(|m| m > 64 << 20), "{:?}", inv.memory);
    for d in &inv.disks {
        assert!(Path::new("/sys/block").join(&d.name).join("device").exists(), "{d:?}");
        assert!(!d.name.starts_with("loop") && !d.name.starts_with("zram"), "{d:?}");
        let sectors: u64 =
            std::fs::read_to_string(format!("/sys/block/{}/size", d.name)).unwrap().trim().parse().unwrap();
        assert_eq!(d.size_bytes, Some(sectors * 512));
    }
    for n in &inv.nics {
        let mac = std::fs::read_to_string(format!("/sys/class/net/{}/address", n.name)).unwrap();
        assert_eq!(n.mac.as_deref(), Some(mac.trim()), "{n:?}");
    }
    assert_eq!(inv.system.boot_mode.is_some(), Path::new("/sys/firmware").is_dir());
    let json = serde_json::to_string(&inv).unwrap();
    assert_eq!(serde_json::from_str::<Inventory>(&json).unwrap(), inv);
}
