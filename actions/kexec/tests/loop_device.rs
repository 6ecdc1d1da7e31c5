//! kexec against an ext4 filesystem on a loop device holding a grub.cfg and
//! fake kernel and initrd files (needs root). The images are not kernels,
//! so the load fails whatever the host kernel supports: the test checks
//! what was chosen, that the failure is reported as a load failure and that
//! the disk is unmounted. The machine never reboots.

#[path = "../../kit/testsupport/ext4_loop.rs"]
mod disk;

use std::path::Path;

use disk::{LoopDisk, action, text};

const BIN: &str = env!("CARGO_BIN_EXE_kexec");

const GRUB_CFG: &str = r#"
if [ "${next_entry}" ] ; then
   set default="${next_entry}"
else
   set default="1>1"
fi
function load_video {
  if [ x$feature_all_video_module = xy ]; then
    insmod all_video
  fi
}
menuentry 'Debian GNU/Linux' --class debian $menuentry_id_option 'gnulinux-simple-7f3c' {
	load_video
	linux	/boot/vmlinuz-6.1.0-26-amd64 root=UUID=7f3c ro quiet
	initrd	/boot/initrd.img-6.1.0-26-amd64
}
submenu 'Advanced options for Debian GNU/Linux' $menuentry_id_option 'gnulinux-advanced-7f3c' {
	menuentry 'Debian GNU/Linux, with Linux 6.1.0-26-amd64' $menuentry_id_option 'a' {
		linux	/boot/vmlinuz-6.1.0-26-amd64 root=UUID=7f3c ro quiet
		initrd	/boot/initrd.img-6.1.0-26-amd64
	}
	menuentry 'Debian GNU/Linux, with Linux 6.1.0-25-amd64' $menuentry_id_option 'b' {
		linux	($root)/boot/vmlinuz-6.1.0-25-amd64 root=UUID=7f3c ro console=ttyS0 $vt_handoff
		initrd	/boot/intel-ucode.img (hd0,gpt2)/boot/initrd.img-6.1.0-25-amd64
	}
}
"#;

/// The outcomes a fake kernel can have, by host: no kexec_file_load in the
/// kernel (this CI host), not allowed (a container without CAP_SYS_BOOT),
/// or refused as not a kernel.
fn assert_load_refused(out: &std::process::Output) {
    assert_eq!(out.status.code(), Some(1), "{}", text(out));
    let t = text(out);
    assert!(
        [
            "kexec_file_load: this kernel has no kexec_file_load",
            "kexec_file_load: kexec is not permitted",
            "kexec_file_load: not a kernel this kernel can load",
        ]
        .iter()
        .any(|m| t.contains(m)),
        "{t}"
    );
}

fn write(root: &Path, path: &str, contents: &str) {
    let p = root.join(path);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, contents).unwrap();
}

#[test]
fn grub_default_entry_is_found_and_loaded() {
    let disk = LoopDisk::new();
    disk.with_mounted(|m| {
        write(m, "boot/grub/grub.cfg", GRUB_CFG);
        for f in ["vmlinuz-6.1.0-26-amd64", "initrd.img-6.1.0-26-amd64", "vmlinuz-6.1.0-25-amd64"] {
            write(m, &format!("boot/{f}"), "not a kernel");
        }
        write(m, "boot/intel-ucode.img", "ucode");
        write(m, "boot/initrd.img-6.1.0-25-amd64", "initramfs");
    });
    let out = action(BIN, &[("BLOCK_DEVICE", &disk.device), ("FS_TYPE", "ext4")]);
    assert_load_refused(&out);
    let t = text(&out);
    assert!(t.contains("default entry \"Debian GNU/Linux, with Linux 6.1.0-25-amd64\""), "{t}");
    assert!(
        t.contains(
            "kernel /boot/vmlinuz-6.1.0-25-amd64 initrd /boot/intel-ucode.img+/boot/initrd.img-6.1.0-25-amd64 \
             cmdline \"root=UUID=7f3c ro console=ttyS0\""
        ),
        "{t}"
    );
    assert!(!disk.is_mounted(), "left mounted");

    // CMD_LINE replaces grub's arguments.
    let out = action(BIN, &[("BLOCK_DEVICE", &disk.device), ("CMD_LINE", "console=ttyS1 quiet")]);
    assert_load_refused(&out);
    assert!(text(&out).contains("cmdline \"console=ttyS1 quiet\""), "{}", text(&out));
}

#[test]
fn separate_boot_partition_and_explicit_kernel() {
    // A /boot partition: grub.cfg at /grub, kernels at the root.
    let disk = LoopDisk::new();
    disk.with_mounted(|m| {
        write(m, "grub/grub.cfg", &GRUB_CFG.replace("/boot/", "/").replace("1>1", "0"));
        write(m, "vmlinuz-6.1.0-26-amd64", "not a kernel");
        write(m, "initrd.img-6.1.0-26-amd64", "initramfs");
        write(m, "other/vmlinuz", "not a kernel");
    });
    let out = action(BIN, &[("BLOCK_DEVICE", &disk.device)]);
    assert_load_refused(&out);
    assert!(text(&out).contains("grub/grub.cfg: default entry \"Debian GNU/Linux\""), "{}", text(&out));
    assert!(
        text(&out).contains(
            "kernel /vmlinuz-6.1.0-26-amd64 initrd /initrd.img-6.1.0-26-amd64 cmdline \"root=UUID=7f3c ro quiet\""
        ),
        "{}",
        text(&out)
    );

    // INITRD_PATH without KERNEL_PATH: accepted, and grub.cfg decides, as
    // in Tinkerbell's kexec.
    let out = action(BIN, &[("BLOCK_DEVICE", &disk.device), ("INITRD_PATH", "/other/initrd")]);
    assert_load_refused(&out);
    assert!(text(&out).contains("kernel /vmlinuz-6.1.0-26-amd64 initrd /initrd.img-6.1.0-26-amd64"), "{}", text(&out));

    let out = action(BIN, &[("BLOCK_DEVICE", &disk.device), ("KERNEL_PATH", "/other/vmlinuz"), ("CMD_LINE", "ro")]);
    assert_load_refused(&out);
    assert!(text(&out).contains("kernel /other/vmlinuz initrd (none) cmdline \"ro\""), "{}", text(&out));

    let out = action(BIN, &[("BLOCK_DEVICE", &disk.device), ("KERNEL_PATH", "/vmlinuz-9")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("/vmlinuz-9 is not on the disk"), "{}", text(&out));
    assert!(!disk.is_mounted());
}

#[test]
fn missing_grub_cfg_and_bad_configuration() {
    let disk = LoopDisk::new();
    let out = action(BIN, &[("BLOCK_DEVICE", &disk.device)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("no grub.cfg at boot/grub/grub.cfg or grub/grub.cfg"), "{}", text(&out));
    assert!(!disk.is_mounted());
    let out = action(BIN, &[("INITRD_PATH", "/../initrd"), ("GRUBCFG_PATH", "../x")]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    for needle in ["BLOCK_DEVICE: is required", "INITRD_PATH: ", "GRUBCFG_PATH:"] {
        assert!(text(&out).contains(needle), "{needle} not in {}", text(&out));
    }
}
