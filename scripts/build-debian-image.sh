#!/usr/bin/env bash
# Builds the Debian 12 (bookworm) root filesystem scripts/demo.sh installs:
# a tar.zst from Debian packages (mmdebstrap), with a kernel, systemd and
# GRUB for UEFI. Cached: a second run with the same package list reuses it.
#   scripts/build-debian-image.sh [OUT_DIR]   (default /var/cache/kiln-demo)
# Prints the archive's path on its last line.
set -euo pipefail
OUT=${1:-/var/cache/kiln-demo}
MIRROR=${KILN_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# What the installed machine needs to boot from its disk (UEFI) and bring
# its network up from the files the workflow writes (systemd-networkd).
PACKAGES=linux-image-amd64,systemd-sysv,udev,grub-efi-amd64,initramfs-tools,e2fsprogs,dosfstools,iproute2,iputils-ping,less
KEY=$(echo "bookworm $MIRROR $PACKAGES v1" | sha256sum | cut -c1-12)
ARCHIVE=$OUT/debian-12-$KEY.tar.zst
mkdir -p "$OUT"
# One build at a time (two demos started at once share the cache).
exec 9>"$OUT/.lock"
flock 9
if [ -s "$ARCHIVE" ]; then
    echo "cached: $ARCHIVE ($(du -h "$ARCHIVE" | cut -f1))" >&2
    echo "$ARCHIVE"
    exit 0
fi
command -v mmdebstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends mmdebstrap >&2
start=$(date +%s)
tmp=$ARCHIVE.tmp
# No documentation or locales (smaller); the machine-specific files
# (hostname, network) are the workflow's to write, so none here; a root
# file system found by its label (the workflow's format action sets it).
mmdebstrap --variant=apt --include="$PACKAGES" \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --customize-hook='echo "LABEL=kiln-root / ext4 errors=remount-ro 0 1" > "$1/etc/fstab"' \
    --customize-hook='echo "LABEL=KILN-ESP /boot/efi vfat umask=0077 0 1" >> "$1/etc/fstab"; mkdir -p "$1/boot/efi"' \
    --customize-hook='chroot "$1" systemctl enable systemd-networkd' \
    --customize-hook='rm -f "$1/etc/hostname" "$1/etc/machine-id"; touch "$1/etc/machine-id"' \
    --customize-hook='sed -i "s/^GRUB_CMDLINE_LINUX_DEFAULT=.*/GRUB_CMDLINE_LINUX_DEFAULT=\"console=ttyS0\"/; s/^#\?GRUB_TERMINAL=.*/GRUB_TERMINAL=\"serial console\"/; s/^GRUB_TIMEOUT=.*/GRUB_TIMEOUT=1/" "$1/etc/default/grub"' \
    bookworm - "$MIRROR" | zstd -q -T0 -9 -o "$tmp" >&2
mv "$tmp" "$ARCHIVE"
echo "built $ARCHIVE ($(du -h "$ARCHIVE" | cut -f1)) in $(($(date +%s) - start)) s" >&2
echo "$ARCHIVE"
