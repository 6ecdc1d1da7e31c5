#!/usr/bin/env bash
# Builds the "OS" the VM test installs: an ext4 root filesystem image that
# holds the hook's Debian kernel, a tiny initramfs and a grub.cfg naming
# them, and busybox as /bin/sh (for cexec). Booted (by the kexec action,
# which reads the grub.cfg), it prints a marker and the files the workflow
# wrote, then powers off.
#
# Two forms: os.img.zst, the root filesystem alone (for a partition), and
# disk.img.zst, a whole disk as OS vendors ship them (GPT: an EFI system
# partition and the root filesystem), which a Tinkerbell template writes
# to the disk with image2disk before it touches the root partition.
#
#   tests/vm/build-test-os.sh HOOK_OUT OUT_DIR [SIZE_MIB]
#
# HOOK_OUT is hook-image/build.sh's output (vmlinuz, initramfs.img,
# manifest.txt): the initramfs takes busybox from the hook's first (zstd
# cpio) archive and the kernel modules from the drivers' squashfs in its
# second, so both match the kernel.
set -euo pipefail
HOOK=$(cd "$1" && pwd)
OUT=$2
SIZE=${3:-256}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# The hook initramfs, unpacked, is the parts bin.
mkdir "$WORK/hook"
SEG1=$(sed -n 's/^  archive 1: the first \([0-9]*\) bytes, zstd.*/\1/p' "$HOOK/manifest.txt")
[ -n "$SEG1" ] || { echo "no 'archive 1' line in $HOOK/manifest.txt: rebuild the hook image" >&2; exit 1; }
head -c "$SEG1" "$HOOK/initramfs.img" | zstd -dc | (cd "$WORK/hook" && /bin/busybox cpio -i -d --quiet 2>/dev/null)
SEG2=$(sed -n 's/^  archive 2: from byte \([0-9]*\),.*/\1/p' "$HOOK/manifest.txt")
[ -n "$SEG2" ] || { echo "no 'archive 2' line in $HOOK/manifest.txt: rebuild the hook image" >&2; exit 1; }
mkdir "$WORK/seg2"
tail -c +"$((SEG2 + 1))" "$HOOK/initramfs.img" | (cd "$WORK/seg2" && /bin/busybox cpio -i -d --quiet 2>/dev/null)
unsquashfs -q -n -d "$WORK/drivers" "$WORK/seg2/usr/lib/kiln/drivers.squashfs" modules >/dev/null
rm -rf "$WORK/seg2"
KVER=$(ls "$WORK/drivers/modules" | head -1)

# The OS's initramfs: busybox, the modules to read its disk, an init.
I=$WORK/initrd
mkdir -p "$I"/{bin,sbin,proc,sys,dev,mnt,lib/modules}
cp "$WORK/hook/bin/busybox" "$I/bin/busybox"
for a in sh mount umount cat echo uname poweroff modprobe sleep; do ln -s busybox "$I/bin/$a"; done
ln -s ../bin/busybox "$I/sbin/modprobe"
cp -a "$WORK/drivers/modules/$KVER" "$I/lib/modules/"
cat >"$I/init" <<'INIT'
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in virtio_pci virtio_blk ext4; do modprobe "$m"; done
for _ in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/vda2 ] && break; sleep 0.5; done
mount -t ext4 -o ro /dev/vda2 /mnt
echo "KILN-TEST-OS: booted $(uname -r) by kexec"
echo "KILN-TEST-OS-CONFIG: $(cat /mnt/etc/kiln-test-os.conf)"
echo "KILN-TEST-OS-CEXEC: $(cat /mnt/etc/kiln-test-os.cexec 2>/dev/null)"
umount /mnt
poweroff -f
INIT
chmod +x "$I/init"
(cd "$I" && find . -print0 | sort -z | "$WORK/hook/bin/busybox" cpio -o -H newc -0 -R 0:0 2>/dev/null) | gzip -1 >"$WORK/initrd.img"

# The root filesystem, populated without mounting (mkfs -d).
R=$WORK/root
mkdir -p "$R"/{boot/grub,etc,bin,tmp}
# A shell, so that a template's cexec step can chroot into the OS.
cp "$WORK/hook/bin/busybox" "$R/bin/busybox"
for a in sh echo cat; do ln -s busybox "$R/bin/$a"; done
cp "$HOOK/vmlinuz" "$R/boot/vmlinuz-$KVER"
cp "$WORK/initrd.img" "$R/boot/initrd.img-$KVER"
cat >"$R/boot/grub/grub.cfg" <<GRUB
# Written like Debian's grub-mkconfig output, which the kexec action parses.
set default="0"
set timeout=5
menuentry 'kiln test OS' --class debian {
	insmod ext2
	search --no-floppy --fs-uuid --set=root 00000000-0000-0000-0000-000000000000
	echo 'Loading Linux $KVER ...'
	linux /boot/vmlinuz-$KVER root=/dev/vda2 ro console=ttyS0 panic=-1 quiet
	echo 'Loading initial ramdisk ...'
	initrd /boot/initrd.img-$KVER
}
GRUB
rm -f "$OUT/os.img"
mkfs.ext4 -q -F -L kiln-test-os -d "$R" "$OUT/os.img" "${SIZE}M"
zstd -q -f -T0 -3 "$OUT/os.img" -o "$OUT/os.img.zst"

# The whole disk: 1 MiB of GPT, a 64 MiB FAT EFI partition, the root
# filesystem, 1 MiB for the backup GPT. Built in a file; sfdisk and
# mkfs.fat --offset need no kernel partition support.
EFI_START=2048 EFI_SECTORS=$((64 * 2048)) ROOT_START=$((2048 + 64 * 2048)) ROOT_SECTORS=$((SIZE * 2048))
rm -f "$OUT/disk.img"
truncate -s $(((ROOT_START + ROOT_SECTORS + 2048) * 512)) "$OUT/disk.img"
sfdisk -q "$OUT/disk.img" <<SFDISK
label: gpt
start=$EFI_START, size=$EFI_SECTORS, type=uefi, name=efi
start=$ROOT_START, size=$ROOT_SECTORS, type=linux, name=root
SFDISK
mkfs.fat -F 32 -n EFI --offset "$EFI_START" "$OUT/disk.img" $((EFI_SECTORS / 2)) >/dev/null
dd if="$OUT/os.img" of="$OUT/disk.img" bs=1M seek=$((ROOT_START / 2048)) conv=notrunc,sparse status=none
zstd -q -f -T0 -3 "$OUT/disk.img" -o "$OUT/disk.img.zst"
rm -f "$OUT/disk.img"
ls -la "$OUT"
