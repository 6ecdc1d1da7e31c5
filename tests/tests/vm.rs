//! A real machine, provisioned end to end: a QEMU VM network-boots the hook
//! image from kiln, survives its agent being killed in a first (kiln)
//! workflow, then runs an unchanged Tinkerbell Template and Workflow,
//! applied with their Hardware as `tinkerbell.org/v1alpha1` objects:
//! image2disk streams a whole-disk image, writefile and cexec change its
//! root partition, kexec boots it. The hub's image names (resolved by the
//! server's --image-rewrite), the hub's variables, Tinkerbell's data views,
//! and no `terminal:` on kexec. Between the two, the hub's rootio lays out
//! a second disk from CPR metadata: partitions, filesystems and an LVM
//! logical volume, which only the VM's kernel can make.
//! (See `kiln_tests::vm` for the scenario; `bench-vm` prints its timings.)

use std::process::Command;
use std::time::Duration;

use kiln_tests::vm::{self, CEXEC_PATH, CEXEC_TEXT, CONFIG_PATH, CONFIG_TEXT, HUB, LOGICAL_VOLUME, VOLUME_GROUP};

#[test]
fn a_vm_netboots_provisions_its_disk_and_kexecs_into_it() {
    let run = vm::run(Duration::from_secs(240), true, vm::Boot::Network).expect("VM scenario");
    run.print_phases();
    let wf = &run.workflow;
    let killer = run.resilience.as_ref().expect("the resilience workflow");
    let context = format!("{killer:#}\n{wf:#}\n--- console (tail)\n{}\n--- logs\n{}", run.console_tail(60), run.logs);
    assert_eq!(killer["state"], "SUCCESS", "{context}");
    assert_eq!(wf["state"], "SUCCESS", "{context}");

    // Every action once, in order: the agent restart re-attached instead of
    // running the killer again.
    let mut actions: Vec<&serde_json::Value> = killer["actions"].as_array().unwrap().iter().collect();
    let tinkerbell = wf["actions"].as_array().unwrap();
    actions.extend(tinkerbell);
    let names: Vec<&str> = actions.iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "agent-killer",
            "rootio-partition",
            "rootio-format",
            "stream-image",
            "write-config",
            "run-in-chroot",
            "kexec-into-os"
        ]
    );
    // The Tinkerbell steps kept their hub names; the server resolved them
    // (--image-rewrite) and took kexec as terminal without `terminal:`.
    for a in tinkerbell {
        assert!(a["image"].as_str().unwrap().starts_with(HUB), "{a:#}");
    }
    let mut previous_end = String::new();
    for a in &actions {
        let attempts = a["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 1, "{} ran more than once: {a:#}", a["name"]);
        assert_eq!(attempts[0]["state"], "SUCCESS", "{a:#}");
        let created = attempts[0]["created_at"].as_str().unwrap();
        assert!(created >= previous_end.as_str(), "{} started before its predecessor ended", a["name"]);
        previous_end = attempts[0]["finished_at"].as_str().unwrap().to_string();
    }
    assert!(run.console.contains("restarting in"), "the supervisor did not restart the agent: {context}");
    // Over TLS, verified with the CA the hook fetched and checked against
    // the pin in its boot script.
    assert!(run.console.contains("server CA: http://") && run.console.contains("as pinned"), "{context}");
    // Enrolled with the boot script's one-time credential, once: the
    // restarted agent kept the credential it got.
    assert!(run.console.contains("agent credential: enrolment"), "{context}");
    assert_eq!(run.console.matches(" enrolled ").count(), 1, "{context}");
    assert_eq!(run.logs.matches("agent killed").count(), 1, "{}", run.logs);
    assert_eq!(run.logs.matches("killer finished").count(), 1, "{}", run.logs);
    // kiln's kexec was offered the handshake (its image says it speaks
    // it): its SUCCESS was reported after the kernel was loaded.
    // image2disk wrote the whole disk and the kernel took its new table.
    for line in ["disk.img.zst", "to /dev/vda (", CONFIG_PATH, "kernel loaded; waiting for the agent's go"] {
        assert!(run.logs.contains(line), "logs lack {line:?}: {}", run.logs);
    }
    assert!(!run.logs.contains("did not re-read the partition table"), "{}", run.logs);

    // After kexec: the installed OS booted and printed what writefile wrote.
    assert!(run.console.contains("KILN-TEST-OS: booted"), "{context}");
    assert!(run.console.contains(&format!("KILN-TEST-OS-CONFIG: {CONFIG_TEXT}")), "{context}");
    assert!(run.console.contains(&format!("KILN-TEST-OS-CEXEC: {CEXEC_TEXT}")), "{context}");
    // The netboot gate is closed: the machine now boots its disk.
    assert!(run.ipxe_after.contains("no pending workflow") && run.ipxe_after.contains("exit"), "{}", run.ipxe_after);

    // The disk, read back on the host: the image's GPT with its two
    // partitions...
    let table = Command::new("sfdisk").arg("--json").arg(&run.disk).output().unwrap();
    let table: serde_json::Value = serde_json::from_slice(&table.stdout).expect("sfdisk --json");
    let parts = table["partitiontable"]["partitions"].as_array().expect("partitions");
    assert_eq!(table["partitiontable"]["label"], "gpt");
    assert_eq!(parts.len(), 2, "{table:#}");
    assert_eq!(parts[0]["name"], "efi");
    assert_eq!(parts[0]["type"], "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
    assert_eq!(parts[0]["size"], 64 * 2048);
    assert_eq!(parts[1]["name"], "root");
    assert_eq!(parts[1]["type"], "0FC63DAF-8483-4772-8E79-3D69D8477DE4");
    // ...and in the second, the OS image with the config file (mode 0640).
    let start = parts[1]["start"].as_u64().unwrap() * 512;
    let size = parts[1]["size"].as_u64().unwrap() * 512;
    let root = tempfile::NamedTempFile::new().unwrap();
    let dd = Command::new("dd")
        .arg(format!("if={}", run.disk.display()))
        .arg(format!("of={}", root.path().display()))
        .args(["bs=1M", "iflag=skip_bytes,count_bytes", "status=none"])
        .arg(format!("skip={start}"))
        .arg(format!("count={size}"))
        .status()
        .unwrap();
    assert!(dd.success());
    let debugfs = |req: &str| {
        let out = Command::new("debugfs").args(["-R", req]).arg(root.path()).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(debugfs(&format!("cat {CONFIG_PATH}")), CONFIG_TEXT);
    assert_eq!(debugfs(&format!("cat {CEXEC_PATH}")), format!("{CEXEC_TEXT}\n"));
    assert!(
        debugfs(&format!("stat {CONFIG_PATH}")).contains("Mode:  0640"),
        "{}",
        debugfs(&format!("stat {CONFIG_PATH}"))
    );
    assert!(debugfs("ls -l /boot").contains("vmlinuz-"));
    check_second_disk(&run);
}

/// The bytes of `len` from `offset` of `file`.
fn read_range(file: &std::path::Path, offset: u64, len: u64) -> Vec<u8> {
    use std::io::{Read, Seek};
    let mut f = std::fs::File::open(file).unwrap();
    f.seek(std::io::SeekFrom::Start(offset)).unwrap();
    let mut buf = vec![0; len as usize];
    f.read_exact(&mut buf).unwrap();
    buf
}

/// `blkid -p` of `bytes` (a filesystem image).
fn blkid(bytes: &[u8]) -> String {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), bytes).unwrap();
    let out = Command::new("blkid").arg("-p").arg(f.path()).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The second disk as rootio left it, read on the host: the GPT of the
/// metadata, ext4 labelled ROOT in partition 2, and in partition 3 an LVM
/// physical volume whose volume group holds the logical volume with an
/// ext4 labelled DATA.
fn check_second_disk(run: &vm::Outcome) {
    let out = Command::new("sfdisk").arg("--json").arg(&run.disk2).output().unwrap();
    let table: serde_json::Value = serde_json::from_slice(&out.stdout).expect("sfdisk --json of the second disk");
    let parts = table["partitiontable"]["partitions"].as_array().expect("partitions");
    assert_eq!(table["partitiontable"]["label"], "gpt", "{table:#}");
    let names: Vec<&str> = parts.iter().map(|p| p["name"].as_str().unwrap_or_default()).collect();
    assert_eq!(names, ["BIOS", "ROOT", "LVM"], "{table:#}");
    assert_eq!(parts[0]["type"], "21686148-6449-6E6F-744E-656564454649", "{table:#}");
    let range = |p: &serde_json::Value| (p["start"].as_u64().unwrap() * 512, p["size"].as_u64().unwrap() * 512);
    let (start, size) = range(&parts[1]);
    let root = blkid(&read_range(&run.disk2, start, size));
    assert!(root.contains("TYPE=\"ext4\"") && root.contains("LABEL=\"ROOT\""), "{root}");
    let (start, size) = range(&parts[2]);
    let pv = read_range(&run.disk2, start, size);
    assert_eq!(&pv[512 + 24..512 + 32], b"LVM2 001", "an LVM physical volume label");
    let text = String::from_utf8_lossy(&pv[..1 << 20]);
    assert!(text.contains(&format!("{VOLUME_GROUP} {{")), "the volume group's metadata");
    assert!(
        text.contains(&format!("{LOGICAL_VOLUME} {{")) && text.contains("\"kiln\""),
        "the logical volume and its tag"
    );
    // The logical volume is the rest of the PV after LVM's 1 MiB header.
    let data = blkid(&pv[1 << 20..]);
    assert!(data.contains("TYPE=\"ext4\"") && data.contains("LABEL=\"DATA\""), "{data}");
}
