//! The action library (`actions/`) run through the agent against loop
//! devices, with results checked byte for byte on the host.

use std::process::{Command, Stdio};
use std::time::Duration;

use kiln_tests::http::{Faults, FileServer};
use kiln_tests::library::{self, LIMIT, action, attempt, run};
use kiln_tests::{LoopDevice, Machine};
use serde_json::Value;
use sha2::{Digest, Sha256};

const MIB: u64 = 1 << 20;

/// The image data of this file's tests (its own seed, so the two suites'
/// images differ).
fn disk_image(len: usize) -> Vec<u8> {
    library::disk_image(len, 0x9e37_79b9_7f4a_7c15)
}

/// Compresses with the host's command-line tool, as an image publisher would.
fn compress(tool: &str, data: &[u8]) -> Vec<u8> {
    let mut child = Command::new(tool).arg("-c").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect(tool);
    let mut stdin = child.stdin.take().unwrap();
    let input = data.to_vec();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &input));
    let out = child.wait_with_output().expect(tool);
    writer.join().unwrap().unwrap();
    assert!(out.status.success());
    out.stdout
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

#[test]
fn image2disk_writes_every_compression_to_a_loop_device_byte_for_byte() {
    let image = disk_image(5 * MIB as usize + 12345);
    let disk = LoopDevice::new(16 * MIB).unwrap();
    // Old contents past the image must be left alone on a block device.
    std::fs::write(disk.backing_path(), vec![0xEEu8; 16 * MIB as usize]).unwrap();
    for tool in ["zstd", "gzip", "xz", "bzip2", "cat"] {
        let body = if tool == "cat" { image.clone() } else { compress(tool, &image) };
        let checksum = sha256(&body);
        let server = FileServer::start(body, Faults::default());
        // The URL says nothing about the compression: with COMPRESSED=true
        // the magic bytes decide (without it the bytes go as they are).
        let url = server.url("disk.img");
        let dest = disk.path.to_str().unwrap();
        let mut vars =
            vec![("IMG_URL", url.as_str()), ("DEST_DISK", dest), ("CHECKSUM", &checksum), ("VERIFY", "true")];
        if tool != "cat" {
            vars.push(("COMPRESSED", "true"));
        }
        let (wf, logs) = run(&action("image2disk", &vars));
        assert_eq!(wf["state"], "SUCCESS", "{tool}: {wf:#}\n{logs}");
        let written = disk.contents();
        assert!(written[..image.len()] == image[..], "{tool}: the disk differs from the image");
        assert!(written[image.len()..].iter().all(|b| *b == 0xEE), "{tool}: bytes past the image changed");
        // "wrote 5.0 MiB (zstd 1.7 MiB) in 0.0 s, 225.0 MiB/s, sha256 verified": exact but for the time and rate.
        let wrote =
            |l: &str| l.starts_with("[image2disk] image2disk: wrote 5.0 MiB (") && l.ends_with(", sha256 verified");
        assert!(logs.lines().any(wrote), "{tool}: {logs}");
        assert!(
            kiln_tests::has_line(&logs, "[image2disk] image2disk: read-back verification passed (5.0 MiB)"),
            "{logs}"
        );
        let progress = |l: &str| {
            let json = l.strip_prefix("[image2disk] ").and_then(|j| serde_json::from_str::<Value>(j).ok());
            json.is_some_and(|j| j["progress"]["what"] == "image" && j["progress"]["done"].is_u64())
        };
        assert!(logs.lines().any(progress), "no progress line: {logs}");
    }
}

#[test]
fn image2disk_resumes_after_the_server_drops_and_comes_back() {
    let image = disk_image(6 * MIB as usize);
    let body = compress("zstd", &image);
    let len = body.len() as u64;
    let checksum = sha256(&body);
    // Two cuts, each followed by 1.5 s of connection refused.
    let faults =
        Faults { cut_after: vec![len / 3, len / 4], down_for: Some(Duration::from_millis(1500)), ..Faults::default() };
    let server = FileServer::start(body, faults);
    let disk = LoopDevice::new(8 * MIB).unwrap();
    let m = Machine::start("failed_containers: remove\n");
    let id = m.run(&action(
        "image2disk",
        &[
            ("IMG_URL", &server.url("img")),
            ("DEST_DISK", disk.path.to_str().unwrap()),
            ("CHECKSUM", &checksum),
            ("COMPRESSED", "true"),
            ("RETRY_ENABLED", "true"),
        ],
    ));
    // `kiln watch` follows it live and shows the action's progress.
    let watch = m.cluster.kiln(&["watch", &id]);
    let wf = m.cluster.wait_finished(&id, LIMIT);
    let logs = m.logs(&id);
    assert_eq!(wf["state"], "SUCCESS", "{wf:#}\n{logs}");
    let watched = kiln_tests::stdout(&watch);
    let full =
        format!("action 1 image2disk 100%: {:.1} MiB / {:.1} MiB", len as f64 / MIB as f64, len as f64 / MIB as f64);
    // "TIME action 1 image2disk 100%: 2.0 MiB / 2.0 MiB, RATE".
    let said = |l: &str| l.split_once(' ').is_some_and(|(_, rest)| rest.starts_with(&format!("{full}, ")));
    assert!(watched.lines().any(said), "no {full:?} in:\n{watched}");
    assert!(disk.contents()[..image.len()] == image[..], "the disk differs from the image");
    // The second and third requests asked for the rest only.
    let ranges = server.ranges();
    assert_eq!(ranges.len(), 3, "{ranges:?}");
    assert_eq!(ranges[0], "");
    assert_eq!(ranges[1], format!("bytes={}-", len / 3));
    assert_eq!(ranges[2], format!("bytes={}-", len / 3 + len / 4));
    assert_eq!(server.bytes_sent(), len, "every byte was sent exactly once");
    let resuming =
        |l: &&str| l.starts_with("[image2disk] image2disk: download interrupted at byte ") && l.ends_with("; resuming");
    assert!(logs.lines().any(|l| resuming(&l)), "{logs}");
    let wrote = |l: &str| {
        l.starts_with("[image2disk] image2disk: wrote 6.0 MiB (") && l.ends_with(", sha256 verified, resumed 2 times")
    };
    assert!(logs.lines().any(wrote), "{logs}");
}

#[test]
fn image2disk_rejects_a_bad_checksum_and_scrubs_the_start() {
    let image = disk_image(3 * MIB as usize);
    let server = FileServer::start(compress("gzip", &image), Faults::default());
    let disk = LoopDevice::new(4 * MIB).unwrap();
    let wrong = sha256(b"another image");
    let (wf, logs) = run(&action(
        "image2disk",
        &[
            ("IMG_URL", &server.url("img.gz")),
            ("DEST_DISK", disk.path.to_str().unwrap()),
            ("CHECKSUM", &wrong),
            ("COMPRESSED", "true"),
        ],
    ));
    assert_eq!(wf["state"], "FAILED", "{wf:#}");
    let a = attempt(&wf);
    assert_eq!(a["reason"], "ChecksumMismatch", "{a:#}");
    let message = a["message"].as_str().unwrap();
    let (head, tail) = (
        format!("checksum mismatch for {}: expected {wrong}, got sha256:", server.url("img.gz")),
        "; the first 1 MiB of the target was zeroed so the bad image cannot boot",
    );
    assert!(message.starts_with(&head) && message.ends_with(tail), "{a:#}");
    let written = disk.contents();
    assert!(written[..MIB as usize].iter().all(|b| *b == 0), "the start of a bad image must be zeroed");
    assert!(kiln_tests::has_line(&logs, &format!("[image2disk] image2disk: {message}")), "{logs}");
}

#[test]
fn image2disk_fails_a_truncated_download_instead_of_reporting_success() {
    let image = disk_image(2 * MIB as usize);
    let body = image.clone();
    let short = body.len() as u64 / 2;
    // Every response claims the full length and stops half way: resuming
    // cannot help, and the retry budget runs out.
    let server = FileServer::start(body, Faults { always_short: Some(short), ..Faults::default() });
    let disk = LoopDevice::new(4 * MIB).unwrap();
    let (wf, logs) = run(&action(
        "image2disk",
        &[
            ("IMG_URL", &server.url("raw.img")),
            ("DEST_DISK", disk.path.to_str().unwrap()),
            ("RETRY_ENABLED", "true"),
            ("RETRY_DURATION_SECONDS", "2"),
        ],
    ));
    assert_eq!(wf["state"], "FAILED", "{wf:#}\n{logs}");
    let a = attempt(&wf);
    assert_eq!(a["reason"], "DownloadFailed", "{a:#}");
    // The URL, the HTTP client's words, then ours.
    let message = a["message"].as_str().unwrap();
    let tail = format!("; no progress for 2 s, gave up after {short} bytes of {}", image.len());
    assert!(message.starts_with(&server.url("raw.img")) && message.ends_with(&tail), "{a:#}");
}

#[test]
fn image2disk_names_every_missing_or_bad_variable_before_writing() {
    let disk = LoopDevice::new(MIB).unwrap();
    std::fs::write(disk.backing_path(), vec![0x55u8; MIB as usize]).unwrap();
    let (wf, _) = run(&action("image2disk", &[("COMPRESSED", "perhaps"), ("CHECKSUM", "sha256:12")]));
    assert_eq!(wf["state"], "FAILED");
    let a = attempt(&wf);
    assert_eq!(a["reason"], "InvalidConfig", "{a:#}");
    assert_eq!(a["exit_code"], 2, "{a:#}");
    let message = a["message"].as_str().unwrap();
    assert_eq!(
        message,
        "IMG_URL: is required; DEST_DISK: is required; COMPRESSED: expected a boolean (1, t, T, TRUE, true, True, \
         0, f, F, FALSE, false, False), got \"perhaps\"; \
         CHECKSUM: a sha256 digest has 64 hex digits, got 2"
    );
    // COMPRESSED=true on an uncompressed image: refused before any write.
    let server = FileServer::start(vec![7u8; 4096], Faults::default());
    let (wf, _) = run(&action(
        "image2disk",
        &[("IMG_URL", &server.url("x.gz")), ("DEST_DISK", disk.path.to_str().unwrap()), ("COMPRESSED", "true")],
    ));
    assert_eq!(attempt(&wf)["reason"], "NotCompressed", "{wf:#}");
    assert!(disk.contents().iter().all(|b| *b == 0x55), "nothing may be written");
}

/// A Tinkerbell hub template's image2disk: COMPRESSED unset writes the
/// bytes as they are even when they are zstd, Go's `T` is true, retrying
/// is off unless asked (one drop fails it, one request made), and a
/// boolean Go would not parse is an error naming the variable.
#[test]
fn image2disk_keeps_the_hubs_defaults_and_spellings() {
    let image = disk_image(2 * MIB as usize);
    let zst = compress("zstd", &image);
    let disk = LoopDevice::new(4 * MIB).unwrap();
    let dest = disk.path.to_str().unwrap();
    let server = FileServer::start(zst.clone(), Faults::default());
    let url = server.url("disk.img.zst");
    let (wf, logs) = run(&action("image2disk", &[("IMG_URL", &url), ("DEST_DISK", dest)]));
    assert_eq!(wf["state"], "SUCCESS", "{wf:#}\n{logs}");
    assert!(disk.contents()[..zst.len()] == zst[..], "COMPRESSED unset: the zstd bytes themselves");
    let (wf, logs) = run(&action("image2disk", &[("IMG_URL", &url), ("DEST_DISK", dest), ("COMPRESSED", "T")]));
    assert_eq!(wf["state"], "SUCCESS", "{wf:#}\n{logs}");
    assert!(disk.contents()[..image.len()] == image[..], "COMPRESSED=T: decompressed");

    let cut = FileServer::start(zst.clone(), Faults { cut_after: vec![zst.len() as u64 / 2], ..Faults::default() });
    let (wf, logs) =
        run(&action("image2disk", &[("IMG_URL", &cut.url("img")), ("DEST_DISK", dest), ("COMPRESSED", "1")]));
    let a = attempt(&wf);
    assert_eq!(a["reason"], "DownloadFailed", "{a:#}\n{logs}");
    // The URL, the HTTP client's words, then ours.
    let message = a["message"].as_str().unwrap();
    let tail = format!("; resuming is off (RETRY_ENABLED=false) after {} bytes of {}", zst.len() / 2, zst.len());
    assert!(message.starts_with(&cut.url("img")) && message.ends_with(&tail), "{a:#}");
    assert_eq!(cut.ranges().len(), 1, "no retry without RETRY_ENABLED");

    let (wf, _) = run(&action("image2disk", &[("IMG_URL", &url), ("DEST_DISK", dest), ("COMPRESSED", "yes")]));
    let a = attempt(&wf);
    assert_eq!(a["reason"], "InvalidConfig", "{a:#}");
    let expected =
        "COMPRESSED: expected a boolean (1, t, T, TRUE, true, True, 0, f, F, FALSE, false, False), got \"yes\"";
    assert_eq!(a["message"], expected, "{a:#}");
}

/// `sfdisk --json` of a disk image, on the host.
fn read_table(path: &std::path::Path) -> Value {
    let out = Command::new("sfdisk").arg("--json").arg(path).output().expect("sfdisk");
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

#[test]
fn partition_writes_gpt_and_mbr_tables_read_back_on_the_host() {
    let disk = LoopDevice::new(256 * MIB).unwrap();
    let dest = disk.path.to_str().unwrap();
    let layout = r#"{"partitions":[{"name":"efi","size":"64MiB","type":"efi"},{"name":"root","size":"rest"},{"name":"data","size":"25%","type":"home"}]}"#;
    let (wf, logs) = run(&action("partition", &[("DEST_DISK", dest), ("LAYOUT", layout)]));
    assert_eq!(wf["state"], "SUCCESS", "{wf:#}\n{logs}");
    let t = read_table(disk.backing_path());
    assert_eq!(t["partitiontable"]["label"], "gpt", "{t:#}");
    let p = t["partitiontable"]["partitions"].as_array().unwrap();
    let got: Vec<(u64, u64, &str, &str)> = p
        .iter()
        .map(|p| {
            (
                p["start"].as_u64().unwrap(),
                p["size"].as_u64().unwrap(),
                p["type"].as_str().unwrap(),
                p["name"].as_str().unwrap(),
            )
        })
        .collect();
    // 256 MiB = 524288 sectors; usable: after the first MiB and before
    // GPT's 33-sector backup, 522207. efi 64 MiB; data 25 % of the usable
    // space rounded down to whole MiB (63 MiB); root the rest in whole MiB.
    assert_eq!(
        got,
        [
            (2048, 131072, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "efi"),
            (133120, 260096, "0FC63DAF-8483-4772-8E79-3D69D8477DE4", "root"),
            (393216, 129024, "933AC7E1-2EB4-4F13-B844-0E14E2AEF915", "data"),
        ]
    );
    let wrote = format!("[partition] partition: wrote a GPT table on {dest} (256.0 MiB), read back and checked:");
    assert!(kiln_tests::has_line(&logs, &wrote), "{logs}");
    // Then the kernel's reason (a loop device without partition scanning).
    let warned = format!("[partition] partition: warning: the kernel did not re-read the table on {dest}: ");
    assert!(logs.lines().any(|l| l.starts_with(&warned)), "{logs}");

    // The same disk again, as MBR (Tinkerbell's MBR=true): the old table goes.
    let (wf, logs) = run(&action(
        "partition",
        &[
            ("DEST_DISK", dest),
            ("MBR", "true"),
            ("LAYOUT", r#"{"partitions":[{"size":"100M","type":"83"},{"size":"rest","type":"swap"}]}"#),
        ],
    ));
    assert_eq!(wf["state"], "SUCCESS", "{wf:#}\n{logs}");
    let t = read_table(disk.backing_path());
    assert_eq!(t["partitiontable"]["label"], "dos", "{t:#}");
    let p = t["partitiontable"]["partitions"].as_array().unwrap();
    assert_eq!(
        (p[0]["start"].as_u64(), p[0]["size"].as_u64(), p[0]["type"].as_str()),
        (Some(2048), Some(204800), Some("83"))
    );
    assert_eq!(
        (p[1]["start"].as_u64(), p[1]["size"].as_u64(), p[1]["type"].as_str()),
        (Some(206848), Some(524288 - 206848), Some("82"))
    );
}

#[test]
fn partition_refuses_a_layout_that_does_not_fit_and_leaves_the_disk_alone() {
    let disk = LoopDevice::new(64 * MIB).unwrap();
    std::fs::write(disk.backing_path(), vec![0xA5u8; 64 * MIB as usize]).unwrap();
    let (wf, _) = run(&action(
        "partition",
        &[
            ("DEST_DISK", disk.path.to_str().unwrap()),
            ("LAYOUT", r#"{"partitions":[{"size":"48MiB"},{"size":"32MiB"}]}"#),
        ],
    ));
    let a = attempt(&wf);
    assert_eq!(a["reason"], "DiskTooSmall", "{a:#}");
    let expected = format!(
        "{}: the layout needs 165921 sectors (81.0 MiB, counting the first MiB and the GPT backup) \
         but the disk has 131072 sectors (64.0 MiB)",
        disk.path.display()
    );
    assert_eq!(a["message"], expected.as_str(), "{a:#}");
    assert!(disk.contents().iter().all(|b| *b == 0xA5), "nothing may be written");
    // A bad field is named, with exit code 2.
    let (wf, _) = run(&action(
        "partition",
        &[
            ("DEST_DISK", disk.path.to_str().unwrap()),
            ("LAYOUT", r#"{"partitions":[{"size":"1G","type":"ntfs-please"}]}"#),
        ],
    ));
    let a = attempt(&wf);
    assert_eq!((a["reason"].as_str(), a["exit_code"].as_i64()), (Some("InvalidConfig"), Some(2)), "{a:#}");
    let expected = "LAYOUT.partitions[0].type: \"ntfs-please\" is not a type name \
                    (efi, esp, linux, swap, bios, lvm, raid, home, xbootldr, msr) or a GPT type GUID";
    assert_eq!(a["message"], expected, "{a:#}");
}

/// `blkid -p` of a device: its filesystem type and label.
fn probe(dev: &std::path::Path) -> (String, String) {
    let out = Command::new("blkid").args(["-p", "-o", "export"]).arg(dev).output().expect("blkid");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |k: &str| text.lines().find_map(|l| l.strip_prefix(&format!("{k}="))).unwrap_or_default().to_string();
    (field("TYPE"), field("LABEL"))
}

#[test]
fn format_makes_each_filesystem_on_loop_devices_at_offsets() {
    // One backing file, a loop device per "partition" at its offset: the
    // host kernel parses no partition tables, so this is how partitions look.
    let backing = tempfile::NamedTempFile::new().unwrap();
    backing.as_file().set_len(520 * MIB).unwrap();
    let at = |offset: u64, size: u64| -> LoopDevice {
        LoopDevice::over_range(backing.path(), offset * MIB, size * MIB).unwrap()
    };
    let devices = [
        ("ext4", "kiln-root", at(1, 64)),
        ("vfat", "KILNEFI", at(65, 64)),
        ("xfs", "kiln-data", at(129, 320)),
        ("swap", "kiln-swap", at(449, 64)),
    ];
    let actions: String =
        devices
            .iter()
            .map(|(fs, label, dev)| {
                action("format", &[("DEST_DISK", dev.path.to_str().unwrap()), ("FS_TYPE", fs), ("LABEL", label)])
                    .replacen("- name: format", &format!("- name: format-{fs}"), 1)
            })
            .collect();
    let (wf, logs) = run(&actions);
    assert_eq!(wf["state"], "SUCCESS", "{wf:#}\n{logs}");
    for (fs, label, dev) in &devices {
        assert_eq!(probe(&dev.path), (fs.to_string(), label.to_string()), "{fs} on {}", dev.path.display());
    }
}

/// An ext4 image file populated from `files` (path, contents, mode), on a
/// loop device.
fn ext4_with(files: &[(&str, &[u8], u32)]) -> LoopDevice {
    let disk = LoopDevice::new(64 * MIB).unwrap();
    let root = tempfile::tempdir().unwrap();
    for (path, contents, mode) in files {
        let p = root.path().join(path.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, contents).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
    }
    let ok = Command::new("mkfs.ext4").args(["-q", "-F", "-d"]).arg(root.path()).arg(&disk.path).status().unwrap();
    assert!(ok.success());
    disk
}

/// debugfs on the device's image, read without mounting.
fn debugfs(disk: &LoopDevice, request: &str) -> String {
    let out = Command::new("debugfs").args(["-R", request]).arg(&disk.path).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn writefile_writes_contents_mode_and_owner_with_new_directories() {
    let disk = ext4_with(&[("/etc/hostname", b"old\n", 0o644)]);
    let dev = disk.path.to_str().unwrap();
    let (wf, logs) = run(&action(
        "writefile",
        &[
            ("DEST_DISK", dev),
            ("FS_TYPE", "ext4"),
            ("DEST_PATH", "/etc/kiln/net/01-kiln.yaml"),
            ("CONTENTS", "network:\n  version: 2\n"),
            ("UID", "1000"),
            ("GID", "1001"),
            ("MODE", "0600"),
            ("DIRMODE", "0750"),
        ],
    ));
    assert_eq!(wf["state"], "SUCCESS", "{wf:#}\n{logs}");
    assert_eq!(debugfs(&disk, "cat /etc/kiln/net/01-kiln.yaml"), "network:\n  version: 2\n");
    let stat = debugfs(&disk, "stat /etc/kiln/net/01-kiln.yaml");
    assert!(stat.contains("Mode:  0600") && stat.contains("User:  1000") && stat.contains("Group:  1001"), "{stat}");
    for dir in ["/etc/kiln", "/etc/kiln/net"] {
        let stat = debugfs(&disk, &format!("stat {dir}"));
        assert!(stat.contains("Mode:  0750") && stat.contains("User:  1000"), "{dir}: {stat}");
    }
    assert!(debugfs(&disk, "stat /etc").contains("Mode:  0755"), "existing directories keep their mode");
    // Replacing a file, and `..` refused before mounting.
    let (wf, _) =
        run(&action("writefile", &[("DEST_DISK", dev), ("DEST_PATH", "/etc/hostname"), ("CONTENTS", "node-7\n")]));
    assert_eq!(wf["state"], "SUCCESS");
    assert_eq!(debugfs(&disk, "cat /etc/hostname"), "node-7\n");
    let (wf, _) =
        run(&action("writefile", &[("DEST_DISK", dev), ("DEST_PATH", "/etc/../../escape"), ("CONTENTS", "x")]));
    assert_eq!(attempt(&wf)["message"], "DEST_PATH: \"/etc/../../escape\" must not contain '..'", "{wf:#}");
    // The hub: no CONTENTS is an empty file.
    let (wf, _) = run(&action("writefile", &[("DEST_DISK", dev), ("DEST_PATH", "/etc/kiln/empty")]));
    assert_eq!(wf["state"], "SUCCESS", "{wf:#}");
    assert!(debugfs(&disk, "stat /etc/kiln/empty").contains("Size: 0"));
    // EKS Anywhere's Bottlerocket bootconfig.
    let (wf, _) = run(&action(
        "writefile",
        &[("DEST_DISK", dev), ("DEST_PATH", "/bootconfig.data"), ("BOOTCONFIG_CONTENTS", "kernel {}\n")],
    ));
    assert_eq!(wf["state"], "SUCCESS", "{wf:#}");
    let data = debugfs(&disk, "cat /bootconfig.data");
    assert!(data.starts_with("kernel {}\n\0") && data.ends_with("#BOOTCONFIG\n"), "{data:?}");
}

#[test]
fn cexec_runs_in_the_chroot_and_passes_the_exit_code_up() {
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static");
    let disk = ext4_with(&[("/bin/busybox", &busybox, 0o755)]);
    let dev = disk.path.to_str().unwrap();
    // /bin/sh inside the target: the test's "installed OS" is one busybox.
    // Two commands, split on `;` as the hub does, chrooted (CHROOT: y).
    let (wf, logs) = run(&action(
        "cexec",
        &[
            ("BLOCK_DEVICE", dev),
            ("FS_TYPE", "ext4"),
            ("CHROOT", "y"),
            ("CMD_LINE", "/bin/busybox ln -s busybox /bin/sh;/bin/busybox touch /second"),
        ],
    ));
    assert_eq!(wf["state"], "SUCCESS", "{wf:#}\n{logs}");
    assert!(debugfs(&disk, "ls -l /").contains("second"), "the second command ran in the disk");
    let (wf, logs) = run(&action(
        "cexec",
        &[
            ("BLOCK_DEVICE", dev),
            ("CHROOT", "y"),
            (
                "CMD_LINE",
                "echo hello from $(/bin/busybox cat /proc/1/comm >/dev/null && echo chroot) > /marker; exit 3",
            ),
            ("DEFAULT_INTERPRETER", "/bin/sh -c"),
        ],
    ));
    // The hub's exit code for a failed command, 30; the command's own code
    // is in the message.
    let a = attempt(&wf);
    assert_eq!((a["exit_code"].as_i64(), a["reason"].as_str()), (Some(30), Some("CommandFailed")), "{a:#}\n{logs}");
    assert!(
        a["message"].as_str().unwrap().starts_with("/bin/sh -c ")
            && a["message"].as_str().unwrap().ends_with("' exited with 3"),
        "{a:#}"
    );
    assert_eq!(debugfs(&disk, "cat /marker"), "hello from chroot\n", "/proc must be bound into the chroot");
    // A command missing from the target: 30, named.
    let (wf, _) =
        run(&action("cexec", &[("BLOCK_DEVICE", dev), ("CHROOT", "y"), ("CMD_LINE", "/usr/bin/apt-get update")]));
    let a = attempt(&wf);
    assert_eq!((a["exit_code"].as_i64(), a["reason"].as_str()), (Some(30), Some("CommandNotFound")), "{a:#}");
    assert_eq!(a["message"], "/usr/bin/apt-get: not found in the disk's root", "{a:#}");
    // CHROOT unset: the command runs in the action's container, where the
    // disk is not /.
    let (wf, logs) = run(&action(
        "cexec",
        &[("BLOCK_DEVICE", dev), ("DEFAULT_INTERPRETER", "/bin/busybox sh -c"), ("CMD_LINE", "test ! -e /marker")],
    ));
    assert_eq!(wf["state"], "SUCCESS", "{wf:#}\n{logs}");
    // Missing required: 20; malformed: 10.
    let (wf, _) = run(&action("cexec", &[("BLOCK_DEVICE", dev)]));
    let a = attempt(&wf);
    assert_eq!((a["exit_code"].as_i64(), a["message"].as_str()), (Some(20), Some("CMD_LINE: is required")), "{a:#}");
    let (wf, _) = run(&action("cexec", &[("BLOCK_DEVICE", dev), ("CMD_LINE", "x"), ("UPDATE_RESOLV_CONF", "yes")]));
    let a = attempt(&wf);
    let expected = "UPDATE_RESOLV_CONF: expected a boolean (1, t, T, TRUE, true, True, 0, f, F, FALSE, false, False), \
                    got \"yes\"";
    assert_eq!((a["exit_code"].as_i64(), a["message"].as_str()), (Some(10), Some(expected)), "{a:#}");
}

fn tar_zst(files: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    for (path, contents, mode) in files {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, contents).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
    }
    let tar = Command::new("tar")
        .arg("-C")
        .arg(dir.path())
        .args(["--owner=0", "--group=0", "-cf", "-", "."])
        .output()
        .unwrap();
    compress("zstd", &tar.stdout)
}

#[test]
fn archive2disk_unpacks_only_a_verified_archive() {
    let archive = tar_zst(&[("opt/app/run.sh", b"#!/bin/sh\necho run\n", 0o755), ("etc/app.conf", b"k=v\n", 0o640)]);
    let good = sha256(&archive);
    let server = FileServer::start(archive, Faults::default());
    let disk = ext4_with(&[("/etc/hostname", b"h\n", 0o644)]);
    let dev = disk.path.to_str().unwrap();
    let url = server.url("rootfs.tar.zst");
    // Wrong checksum: nothing unpacked, nothing left behind.
    let (wf, logs) = run(&action(
        "archive2disk",
        &[("DEST_DISK", dev), ("FS_TYPE", "ext4"), ("ARCHIVE_URL", &url), ("TARFILE_CHECKSUM", &sha256(b"other"))],
    ));
    assert_eq!(attempt(&wf)["reason"], "ChecksumMismatch", "{wf:#}\n{logs}");
    let root = debugfs(&disk, "ls -l /");
    assert!(!root.contains("opt") && !root.contains(".kiln-archive"), "{root}");
    // Without a checksum and without the explicit waiver: refused, named.
    let (wf, _) = run(&action("archive2disk", &[("DEST_DISK", dev), ("ARCHIVE_URL", &url)]));
    let expected = "TARFILE_CHECKSUM: is required (sha256:HEX, sha384:HEX or sha512:HEX), \
                    or set INSECURE_NO_TARFILE_CHECKSUM_VERIFICATION=true";
    assert_eq!(attempt(&wf)["message"], expected, "{wf:#}");
    // The right one: unpacked with modes, into DEST_PATH.
    let (wf, logs) = run(&action(
        "archive2disk",
        &[
            ("DEST_DISK", dev),
            ("ARCHIVE_URL", &url),
            ("TARFILE_CHECKSUM", &good),
            ("DEST_PATH", "/srv"),
            ("ARCHIVE_TYPE", "tarzst"),
        ],
    ));
    assert_eq!(wf["state"], "SUCCESS", "{wf:#}\n{logs}");
    assert_eq!(debugfs(&disk, "cat /srv/opt/app/run.sh"), "#!/bin/sh\necho run\n");
    assert!(debugfs(&disk, "stat /srv/opt/app/run.sh").contains("Mode:  0755"));
    assert!(debugfs(&disk, "stat /srv/etc/app.conf").contains("Mode:  0640"));
    assert!(!debugfs(&disk, "ls -l /").contains(".kiln-archive"));
}

/// A hub template's TARFILE_CHECKSUM: the digest of the decompressed tar
/// stream up to the end-of-archive marker, which is what Tinkerbell's
/// archive2disk computes. GNU tar itself says where that is: the same files
/// archived with 512-byte records (`-b 1`) end right after the marker,
/// while the default 10 KiB records add padding the hub never hashes.
#[test]
fn archive2disk_takes_the_hubs_tar_stream_checksum() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("etc")).unwrap();
    std::fs::write(dir.path().join("etc/motd"), b"from a hub template\n").unwrap();
    let tar = |blocking: &str| {
        let out = Command::new("tar")
            .arg("-C")
            .arg(dir.path())
            .args(["--owner=0", "--group=0", "--mtime=@1600000000", "-b", blocking, "-cf", "-", "etc"])
            .output()
            .unwrap();
        assert!(out.status.success());
        out.stdout
    };
    let (padded, exact) = (tar("20"), tar("1"));
    assert!(padded.len() > exact.len() && padded[..exact.len()] == exact[..], "same archive, less padding");
    let server = FileServer::start(compress("gzip", &padded), Faults::default());
    let disk = ext4_with(&[]);
    let dev = disk.path.to_str().unwrap();
    let sha512 = format!("sha512:{}", hex::encode(sha2::Sha512::digest(&exact)));
    for (sum, at) in [(sha256(&exact), "/a"), (sha512, "/b")] {
        let (wf, logs) = run(&action(
            "archive2disk",
            &[
                ("DEST_DISK", dev),
                ("FS_TYPE", "ext4"),
                ("ARCHIVE_URL", &server.url("rootfs.tar.gz")),
                ("ARCHIVE_TYPE", "targz"),
                ("TARFILE_CHECKSUM", &sum),
                ("DEST_PATH", at),
                ("HTTP_CLIENT_TIMEOUT_MINUTES", "1"),
            ],
        ));
        assert_eq!(wf["state"], "SUCCESS", "{sum}: {wf:#}\n{logs}");
        let algorithm = sum.split(':').next().unwrap();
        let verified = format!("[archive2disk] archive2disk: {algorithm} of the decompressed tar stream verified");
        assert!(kiln_tests::has_line(&logs, &verified), "{logs}");
        assert_eq!(debugfs(&disk, &format!("cat {at}/etc/motd")), "from a hub template\n");
    }
}

#[test]
fn kexec_finds_the_grub_default_entry_and_calls_kexec_file_load() {
    let grub = "set default=\"1\"\nmenuentry 'old' {\n linux /boot/vmlinuz-old root=/dev/sda2\n}\nmenuentry 'new' {\n linux (hd0,gpt2)/boot/vmlinuz-new root=/dev/vda2 ro quiet\n initrd /boot/initrd.img-new\n}\n";
    let disk = ext4_with(&[
        ("/boot/grub/grub.cfg", grub.as_bytes(), 0o644),
        ("/boot/vmlinuz-new", b"not really a kernel", 0o644),
        ("/boot/initrd.img-new", b"initrd", 0o644),
    ]);
    let (wf, logs) = run(&action("kexec", &[("BLOCK_DEVICE", disk.path.to_str().unwrap()), ("FS_TYPE", "ext4")]));
    // This host's kernel has no kexec (or refuses a fake kernel): the action
    // got as far as the system call, with the entry grub would boot.
    let a = attempt(&wf);
    assert_eq!(wf["state"], "FAILED", "{wf:#}");
    assert!(a["reason"].as_str().unwrap().starts_with("Kexec"), "{a:#}\n{logs}");
    assert!(a["message"].as_str().unwrap().starts_with("kexec_file_load:"), "{a:#}");
    assert!(kiln_tests::has_line(&logs, "[kexec] kexec: boot/grub/grub.cfg: default entry \"new\""), "{logs}");
    assert!(
        kiln_tests::has_line(
            &logs,
            "[kexec] kexec: kernel /boot/vmlinuz-new initrd /boot/initrd.img-new cmdline \"root=/dev/vda2 ro quiet\""
        ),
        "{logs}"
    );
    // INITRD_PATH without KERNEL_PATH: accepted, grub.cfg decides (as the hub).
    let (wf, logs) = run(&action(
        "kexec",
        &[("BLOCK_DEVICE", disk.path.to_str().unwrap()), ("FS_TYPE", "ext4"), ("INITRD_PATH", "/boot/other.img")],
    ));
    assert!(attempt(&wf)["reason"].as_str().unwrap().starts_with("Kexec"), "{wf:#}\n{logs}");
    assert!(
        kiln_tests::has_line(
            &logs,
            "[kexec] kexec: kernel /boot/vmlinuz-new initrd /boot/initrd.img-new cmdline \"root=/dev/vda2 ro quiet\""
        ),
        "{logs}"
    );
}
