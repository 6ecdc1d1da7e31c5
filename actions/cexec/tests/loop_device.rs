//! cexec against an ext4 filesystem on a loop device holding a static
//! busybox as its /bin/sh (needs root and /bin/busybox).

#[path = "../../kit/testsupport/ext4_loop.rs"]
mod disk;

use disk::{LoopDisk, action, text};

const BIN: &str = env!("CARGO_BIN_EXE_cexec");

/// A disk with /bin/busybox, /bin/sh -> busybox, and a resolv.conf symlink
/// like Ubuntu's.
fn busybox_disk() -> LoopDisk {
    let disk = LoopDisk::new();
    disk.with_mounted(|m| {
        std::fs::create_dir_all(m.join("bin")).unwrap();
        std::fs::create_dir_all(m.join("etc")).unwrap();
        std::fs::copy("/bin/busybox", m.join("bin/busybox")).unwrap();
        for applet in ["sh", "cat", "test", "echo"] {
            std::os::unix::fs::symlink("busybox", m.join("bin").join(applet)).unwrap();
        }
        std::os::unix::fs::symlink("../run/systemd/resolve/stub-resolv.conf", m.join("etc/resolv.conf")).unwrap();
    });
    disk
}

/// Runs the action; also returns what is still mounted under its mount
/// point afterwards (tests run in parallel, so only this run's are looked at).
fn run(vars: &[(&str, &str)]) -> (std::process::Output, Vec<String>) {
    let mut cmd = std::process::Command::new(BIN);
    cmd.env_clear().env("PATH", std::env::var_os("PATH").unwrap_or_default());
    cmd.envs(vars.iter().copied()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    let mount_point = format!(" /tmp/kiln-cexec-{} ", child.id());
    let out = child.wait_with_output().unwrap();
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let prefix = mount_point.trim_end();
    let left =
        info.lines().filter(|l| l.contains(&mount_point) || l.contains(&format!("{prefix}/"))).map(str::to_string);
    (out, left.collect())
}

#[test]
fn chrooted_command_exit_code_output_and_environment() {
    let disk = busybox_disk();
    let script = "echo hello > /marker; \
                  test -e /proc/self/status && echo proc >> /marker; \
                  test -c /dev/null && echo dev >> /marker; \
                  echo \"$DEBIAN_FRONTEND\" >> /marker; \
                  echo to-stdout; exit 3";
    let (out, left) = run(&[
        ("BLOCK_DEVICE", &disk.device),
        ("FS_TYPE", "ext4"),
        ("CHROOT", "y"),
        ("DEFAULT_INTERPRETER", "/bin/sh -c"),
        ("CMD_LINE", script),
        ("DEBIAN_FRONTEND", "noninteractive"),
    ]);
    // Tinkerbell's code for a failed command; its own code is in the message.
    assert_eq!(out.status.code(), Some(30), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("to-stdout\n"), "{}", text(&out));
    assert!(text(&out).contains("exited with 3"), "{}", text(&out));
    assert!(!disk.is_mounted(), "left mounted");
    assert_eq!(left, Vec::<String>::new());
    assert_eq!(disk.read("/marker").unwrap(), b"hello\nproc\ndev\nnoninteractive\n");
    // The bind mount points were made on the disk; nothing was mounted there.
    assert_eq!(disk.list("/proc"), Vec::<String>::new());
}

/// Tinkerbell's split: `;` between commands, spaces between words, quotes
/// passed on as written; the commands run in order and stop at a failure.
#[test]
fn command_line_splits_on_semicolons_and_spaces() {
    let disk = busybox_disk();
    let out = action(
        BIN,
        &[
            ("BLOCK_DEVICE", &disk.device),
            ("CHROOT", "y"),
            ("CMD_LINE", "/bin/busybox mkdir /one; /bin/busybox touch /one/two /one/'q';/bin/busybox touch /three"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(disk.list("/one"), ["'q'", "two"]);
    assert!(disk.stat("/three").is_some());
    let out = action(
        BIN,
        &[
            ("BLOCK_DEVICE", &disk.device),
            ("CHROOT", "y"),
            ("CMD_LINE", "/bin/busybox touch /four;/bin/busybox false;/bin/busybox touch /five"),
        ],
    );
    assert_eq!(out.status.code(), Some(30), "{}", text(&out));
    assert!(text(&out).contains("/bin/busybox false exited with 1"), "{}", text(&out));
    assert!(disk.stat("/four").is_some() && disk.stat("/five").is_none());
}

#[test]
fn a_missing_command_and_a_signal_are_failures_named_in_the_message() {
    let disk = busybox_disk();
    let out = action(BIN, &[("BLOCK_DEVICE", &disk.device), ("CHROOT", "y"), ("CMD_LINE", "/usr/bin/apt-get update")]);
    assert_eq!(out.status.code(), Some(30), "{}", text(&out));
    assert!(text(&out).contains("/usr/bin/apt-get: not found in the disk's root"), "{}", text(&out));
    assert!(!disk.is_mounted());
    let (out, left) = run(&[
        ("BLOCK_DEVICE", &disk.device),
        ("CHROOT", "y"),
        ("DEFAULT_INTERPRETER", "/bin/sh -c"),
        ("CMD_LINE", "kill -9 $$"),
    ]);
    assert_eq!(out.status.code(), Some(30), "{}", text(&out));
    assert!(text(&out).contains("exited with 137"), "{}", text(&out));
    assert!(!disk.is_mounted());
    assert_eq!(left, Vec::<String>::new());
}

#[test]
fn resolv_conf_is_lent_and_given_back() {
    let disk = busybox_disk();
    let out = action(
        BIN,
        &[
            ("BLOCK_DEVICE", &disk.device),
            ("CHROOT", "y"),
            ("UPDATE_RESOLV_CONF", "true"),
            ("DEFAULT_INTERPRETER", "/bin/sh -c"),
            ("CMD_LINE", "cat /etc/resolv.conf > /seen"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(disk.read("/seen").unwrap(), std::fs::read("/etc/resolv.conf").unwrap());
    let (kind, _, _, _) = disk.stat("/etc/resolv.conf").unwrap();
    assert_eq!(kind, "symlink", "the image's symlink is back");
    assert_eq!(disk.list("/etc"), ["resolv.conf"]);
}

#[test]
fn without_chroot_the_mount_is_in_kiln_mount() {
    let disk = busybox_disk();
    // CHROOT unset: the command runs in the action's container.
    let out = action(
        BIN,
        &[
            ("BLOCK_DEVICE", &disk.device),
            ("DEFAULT_INTERPRETER", "/bin/busybox sh -c"),
            (
                "CMD_LINE",
                "test -x \"$KILN_MOUNT/bin/busybox\" && test \"$PWD\" = \"$KILN_MOUNT\" && echo yes > from-container",
            ),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(disk.read("/from-container").unwrap(), b"yes\n");
    assert_eq!(disk.stat("/proc"), None, "nothing bound without chroot");
}

#[test]
fn bad_configuration_names_the_variables() {
    let out = action(BIN, &[("UPDATE_RESOLV_CONF", "sometimes")]);
    assert_eq!(out.status.code(), Some(10), "{}", text(&out));
    for needle in ["BLOCK_DEVICE: is required", "CMD_LINE: is required", "UPDATE_RESOLV_CONF: expected a boolean"] {
        assert!(text(&out).contains(needle), "{needle} not in {}", text(&out));
    }
    let out = action(BIN, &[("FS_TYPE", "ext4")]);
    assert_eq!(out.status.code(), Some(20), "missing only: {}", text(&out));
}
