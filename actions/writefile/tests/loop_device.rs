//! writefile against an ext4 filesystem on a loop device (needs root).

#[path = "../../kit/testsupport/ext4_loop.rs"]
mod disk;

use disk::{LoopDisk, action, text};

const BIN: &str = env!("CARGO_BIN_EXE_writefile");

#[test]
fn writes_nested_file_with_modes_and_owner_then_overwrites() {
    let disk = LoopDisk::new();
    disk.with_mounted(|m| {
        std::fs::create_dir(m.join("etc")).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
        std::fs::set_permissions(m.join("etc"), mode).unwrap();
    });
    let contents = "network:\n  version: 2\n  ethernets: {eth0: {dhcp4: true}}\n";
    let vars = [
        ("DEST_DISK", disk.device.as_str()),
        ("FS_TYPE", "ext4"),
        ("DEST_PATH", "/etc/netplan/kiln/01-kiln.yaml"),
        ("CONTENTS", contents),
        ("UID", "1000"),
        ("GID", "1001"),
        ("MODE", "0600"),
        ("DIRMODE", "0750"),
    ];
    let out = action(BIN, &vars);
    assert!(out.status.success(), "{}", text(&out));
    let summary =
        format!("wrote /etc/netplan/kiln/01-kiln.yaml ({} bytes, mode 0600, owner 1000:1001)", contents.len());
    assert!(text(&out).contains(&summary), "{}", text(&out));
    assert!(!disk.is_mounted(), "left mounted");
    assert_eq!(disk.read("/etc/netplan/kiln/01-kiln.yaml").unwrap(), contents.as_bytes());
    assert_eq!(disk.stat("/etc/netplan/kiln/01-kiln.yaml").unwrap(), ("regular".into(), 0o600, 1000, 1001));
    for dir in ["/etc/netplan", "/etc/netplan/kiln"] {
        assert_eq!(disk.stat(dir).unwrap(), ("directory".into(), 0o750, 1000, 1001), "{dir}");
    }
    assert_eq!(disk.stat("/etc").unwrap(), ("directory".into(), 0o755, 0, 0), "existing directory untouched");

    // Overwrite with binary contents and defaults: the old mode/owner go too.
    let mut vars2: Vec<(&str, &str)> = vars[..3].to_vec();
    vars2.push(("CONTENTS_BASE64", "AP8Kc2Vjb25k"));
    let out = action(BIN, &vars2);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(disk.read("/etc/netplan/kiln/01-kiln.yaml").unwrap(), b"\x00\xff\nsecond");
    assert_eq!(disk.stat("/etc/netplan/kiln/01-kiln.yaml").unwrap(), ("regular".into(), 0o644, 0, 0));
    assert_eq!(disk.list("/etc/netplan/kiln"), ["01-kiln.yaml"], "no temporary file left");

    // Empty is a file, not a missing variable.
    let out = action(BIN, &[("DEST_DISK", &disk.device), ("DEST_PATH", "/etc/empty"), ("CONTENTS", "")]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(disk.read("/etc/empty").unwrap(), b"");
    assert!(!disk.is_mounted());
}

#[test]
fn bad_configuration_touches_nothing_and_names_every_variable() {
    let disk = LoopDisk::new();
    let out = action(BIN, &[("DEST_DISK", &disk.device), ("DEST_PATH", "/etc/../../escape"), ("MODE", "0899")]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let t = text(&out);
    for needle in ["DEST_PATH: \"/etc/../../escape\" must not contain '..'", "CONTENTS: is required", "MODE:"] {
        assert!(t.contains(needle), "{needle} not in {t}");
    }
    assert_eq!(disk.list("/"), ["lost+found"]);
    assert!(!disk.is_mounted());
}

#[test]
fn a_failed_write_still_unmounts() {
    let disk = LoopDisk::new();
    disk.with_mounted(|m| {
        assert!(disk.is_mounted(), "the leftover check sees mounts");
        std::fs::create_dir(m.join("taken")).unwrap()
    });
    let out = action(BIN, &[("DEST_DISK", &disk.device), ("DEST_PATH", "/taken"), ("CONTENTS", "x")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("/taken is a directory"), "{}", text(&out));
    assert!(!disk.is_mounted(), "left mounted after a failure");
}

/// The helper's own teardown: a process still working in the mount (as a
/// child forked by a parallel test holds copies of the descriptors until
/// it execs) is waited for, not an error, and the writes reach the image.
#[test]
fn the_helper_waits_for_a_holder_of_the_mount() {
    let disk = LoopDisk::new();
    let started = std::time::Instant::now();
    disk.with_mounted(|m| {
        std::fs::write(m.join("kept"), "yes\n").unwrap();
        // The sleep is the scenario: a holder that lets go by itself, 1 s
        // after the unmount is first tried.
        let mut holder = std::process::Command::new("sleep").arg("1").current_dir(m).spawn().unwrap();
        std::thread::spawn(move || holder.wait());
    });
    assert!(started.elapsed() >= std::time::Duration::from_millis(900), "unmounted while held?");
    assert!(!disk.is_mounted());
    assert_eq!(disk.read("/kept").unwrap(), b"yes\n");
}
