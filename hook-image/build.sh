#!/bin/bash
# Build the kiln hook image (the in-memory OS the kiln agent runs in) from
# Debian 12 packages only.
#
#   hook-image/build.sh [OUTDIR]            (default OUTDIR: hook-image/out)
#
# Writes OUTDIR/vmlinuz, OUTDIR/initramfs.img, OUTDIR/manifest.txt and
# OUTDIR/coverage.md (the drivers and firmware table of docs/hook-image.md).
#
# initramfs.img is two cpio archives back to back, which the kernel unpacks
# in turn: a zstd-compressed one with everything but the Docker engine and
# the drivers, then an uncompressed one holding two squashfs files (zstd
# inside), which /init mounts: /usr/lib/kiln/docker.squashfs with dockerd,
# containerd, its shim, runc and docker-proxy, and
# /usr/lib/kiln/drivers.squashfs with the kernel modules and firmware. Why:
# the kernel unpacks a compressed initramfs before /init runs (the whole
# 190 MB tree took 5 s under QEMU/TCG, 3 s of it zstd); a squashfs is only
# copied, is decompressed page by page as it is read, and stays compressed
# in RAM. A machine loads 20-40 of the image's 150 modules: the rest of the
# drivers (41 MB) and firmware are never decompressed at all.
#
# Environment:
#   KILN_AGENT_BIN=path     use this (static) kiln-agent instead of building it
#   KILN_HOOK_DEBS=dir      .deb cache, reused across runs (default /var/cache/kiln-hook-debs)
#   KILN_HOOK_APT_UPDATE=1  run `apt-get update` first (it also runs when apt has no lists)
#   KVER=6.1.0-NN-amd64     kernel ABI (default: what linux-image-amd64 depends on)
#   ZSTD_LEVEL=N            zstd level of the cpio (default 9; see README.md for the sizes)
#   SQUASHFS_LEVEL=N        zstd level of the engine's and the drivers' squashfs (default 19)
#   KEEP_WORK=1             keep the unpacked tree (path is printed)
#
# Needs root only for apt-get (installing missing host tools, downloading
# into a root-owned cache). Host tools: apt-get, apt-cache, dpkg, zstd,
# squashfs-tools, binutils (readelf, strip, objcopy), cargo when KILN_AGENT_BIN is
# not given.
# busybox (depmod, cpio) is taken from the unpacked busybox-static.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
OUT=${1:-$HERE/out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
DEBS=${KILN_HOOK_DEBS:-/var/cache/kiln-hook-debs}
ZSTD_LEVEL=${ZSTD_LEVEL:-9}
SQUASHFS_LEVEL=${SQUASHFS_LEVEL:-19}
T0=$(date +%s.%N)
say() { printf '[build %6.1fs] %s\n' "$(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN{print b-a}')" "$*"; }
die() { echo "build.sh: error: $*" >&2; exit 1; }

# ---------------------------------------------------------------- host tools
need=()
command -v zstd >/dev/null || need+=(zstd)
command -v mksquashfs >/dev/null || need+=(squashfs-tools)
command -v readelf >/dev/null && command -v strip >/dev/null || need+=(binutils)
command -v dpkg-deb >/dev/null || die "dpkg is required (this script targets Debian 12)"
POLICY=$(apt-cache policy linux-image-amd64 2>/dev/null || true)
if [ -n "${KILN_HOOK_APT_UPDATE:-}" ] || ! grep -q 'Candidate: [0-9]' <<<"$POLICY"; then
    say "apt-get update"
    apt-get update -qq
fi
if [ ${#need[@]} -gt 0 ]; then
    say "installing host tools: ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# ---------------------------------------------------------------- packages
KVER=${KVER:-$(apt-cache depends linux-image-amd64 | sed -n 's/.*Depends: linux-image-\([0-9].*\)/\1/p' | head -1)}
[ -n "$KVER" ] || die "cannot find the kernel linux-image-amd64 depends on"
PKG_KERNEL="linux-image-$KVER"
# Userland: Docker engine (no CLI), its runtime and iptables (nft), plus the
# shared libraries their ELF files need (checked below with readelf).
PKGS_USER="busybox-static docker.io containerd runc tini ca-certificates
 iptables libxtables12 libnftnl11 libmnl0 libip4tc2 libip6tc2 libnetfilter-conntrack3 libnfnetlink0
 libc6 libseccomp2 libsystemd0 libdevmapper1.02.1 libcap2 libgcrypt20 libgpg-error0 liblzma5
 libzstd1 liblz4-1 libselinux1 libudev1 libpcre2-8-0"

mkdir -p "$DEBS"
declare -A DEB   # package -> its .deb's file name in $DEBS
# fetch_debs LABEL HINT PKG...: the candidate versions of PKG... into $DEBS
# (only the files missing there), their file names into DEB. apt-get runs
# with the options of the array APT_OPTS (empty: the host's apt state).
# HINT ends the error for a package apt does not know.
fetch_debs() {
    local label=$1 hint=$2 empty uris file pkg p missing=()
    shift 2
    # Exact file names of the candidate versions (the cache may hold older
    # ones). (In an empty dir: apt-get download prints nothing for files
    # already in the cwd.)
    empty=$(mktemp -d /tmp/kiln-hook-uris.XXXXXX)
    uris=$(cd "$empty" && apt-get "${APT_OPTS[@]}" download --print-uris "$@" 2>/dev/null)
    rmdir "$empty"
    while read -r _url file _size _hash; do
        [ -n "$file" ] || continue
        pkg=${file%%_*}
        DEB[$pkg]=$file
        [ -s "$DEBS/$file" ] || missing+=("$pkg")
    done <<<"$uris"
    for p in "$@"; do [ -n "${DEB[$p]:-}" ] || die "apt knows no package $p$hint"; done
    if [ ${#missing[@]} -gt 0 ]; then
        say "downloading ${#missing[@]} $label into $DEBS"
        (cd "$DEBS" && apt-get "${APT_OPTS[@]}" download -q "${missing[@]}" 2>&1 | grep -v -e unsandboxed -e '^Get:' || true)
        for p in "${missing[@]}"; do [ -s "$DEBS/${DEB[$p]}" ] || die "download of $p failed"; done
    fi
}
APT_OPTS=()
# shellcheck disable=SC2086
fetch_debs packages "" $PKG_KERNEL $PKGS_USER
say "packages ready (kernel $KVER)"

# ---------------------------------------------------------------- firmware packages
# The firmware the carried drivers load lives in Debian's `non-free-firmware`
# component, which a plain Debian 12 sources.list often lacks. A private apt
# state (sources, lists, cache under $DEBS/nonfree-apt) reaches it without
# touching the host's apt configuration; only the files the image's modules
# name (`firmware=` in their .modinfo) are taken from these packages.
FW_PKGS="firmware-misc-nonfree firmware-bnx2 firmware-bnx2x firmware-qlogic firmware-realtek"
FWAPT=$DEBS/nonfree-apt
mkdir -p "$FWAPT/sources.d" "$FWAPT/lists/partial" "$FWAPT/cache/archives/partial"
cat > "$FWAPT/sources.d/non-free-firmware.sources" <<'EOF2'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: non-free-firmware
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF2
FWAPT_OPTS=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$FWAPT/sources.d"
    -o "Dir::State::Lists=$FWAPT/lists" -o "Dir::Cache=$FWAPT/cache")
if [ -n "${KILN_HOOK_APT_UPDATE:-}" ] || ! grep -q 'Candidate: [0-9]' <<<"$(apt-cache "${FWAPT_OPTS[@]}" policy firmware-bnx2 2>/dev/null)"; then
    say "apt-get update (non-free-firmware)"
    apt-get "${FWAPT_OPTS[@]}" update -qq
fi
APT_OPTS=("${FWAPT_OPTS[@]}")
# shellcheck disable=SC2086
fetch_debs "firmware packages" " (non-free-firmware component at deb.debian.org)" $FW_PKGS

# ---------------------------------------------------------------- agent
if [ -n "${KILN_AGENT_BIN:-}" ]; then
    AGENT=$KILN_AGENT_BIN
else
    say "building the static kiln-agent"
    (cd "$REPO" && RUSTFLAGS='-C target-feature=+crt-static' \
        cargo build -q --release --target x86_64-unknown-linux-gnu -p kiln-agent)
    AGENT=$REPO/target/x86_64-unknown-linux-gnu/release/kiln-agent
fi
[ -x "$AGENT" ] || die "agent binary $AGENT missing"
if readelf -l "$AGENT" | grep -q 'Requesting program interpreter'; then
    die "$AGENT is dynamically linked; build it with RUSTFLAGS='-C target-feature=+crt-static' --target x86_64-unknown-linux-gnu"
fi

# ---------------------------------------------------------------- unpack
WORK=$(mktemp -d /tmp/kiln-hook-build.XXXXXX)
[ -n "${KEEP_WORK:-}" ] || trap 'rm -rf "$WORK"' EXIT
R=$WORK/root
K=$WORK/kernel
mkdir -p "$R" "$K"
dpkg -x "$DEBS/${DEB[$PKG_KERNEL]}" "$K"
FW=$WORK/firmware   # the firmware packages, unpacked; the image takes what its modules name
mkdir -p "$FW"
for p in $FW_PKGS; do dpkg -x "$DEBS/${DEB[$p]}" "$FW"; done
cp "$K/boot/vmlinuz-$KVER" "$OUT/vmlinuz"
for p in $PKGS_USER; do dpkg -x "$DEBS/${DEB[$p]}" "$R"; done
BB=$R/bin/busybox   # static: used on the build host for depmod and cpio

# prune: docs, init-system glue, the docker CLI, debugging tools
rm -rf "$R"/usr/share/{doc,man,info,locale,lintian,bash-completion,zsh,fish,vim,initramfs-tools,bug,docker.io,bash-completion} \
       "$R"/usr/lib/systemd "$R"/lib/systemd "$R"/etc/init.d "$R"/etc/init "$R"/etc/default "$R"/etc/logrotate.d \
       "$R"/usr/lib/x86_64-linux-gnu/gconv "$R"/usr/share/pkgconfig
rm -f "$R"/usr/bin/docker "$R"/usr/sbin/docker \
      "$R"/usr/bin/{dnet,containerd-shim,containerd-shim-runc-v1,containerd-stress,ctr,tini} "$R"/usr/sbin/ovrouter
[ ! -e "$R/usr/bin/docker" ] || die "docker CLI still present"

# ---------------------------------------------------------------- layout
mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,run,tmp,root,mnt,newroot,var/lib/docker,var/lib/kiln,var/log,etc/kiln,etc/ssl/certs}
chmod 1777 "$R/tmp"
ln -sfn /run "$R/var/run"
for a in $("$BB" --list); do [ -e "$R/bin/$a" ] || ln -s busybox "$R/bin/$a"; done
# /sbin/modprobe is what the kernel's request_module helper runs
for a in modprobe insmod rmmod lsmod depmod modinfo; do ln -sf /bin/busybox "$R/sbin/$a"; done
# alternatives that iptables' postinst would create
for t in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
    ln -sf xtables-nft-multi "$R/usr/sbin/$t"
done
ln -sf tini-static "$R/usr/bin/docker-init"
# what ca-certificates' postinst (update-ca-certificates) would generate
find "$R/usr/share/ca-certificates" -name '*.crt' | sort | xargs cat > "$R/etc/ssl/certs/ca-certificates.crt"
install -m 0755 "$AGENT" "$R/usr/bin/kiln-agent"
strip "$R/usr/bin/kiln-agent" 2>/dev/null || true
install -m 0755 "$HERE/init" "$R/init"

cat > "$R/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat > "$R/etc/group" <<'EOF'
root:x:0:
tty:x:5:
disk:x:6:
docker:x:999:
nogroup:x:65534:
EOF
echo kiln-hook > "$R/etc/hostname"
printf 'PRETTY_NAME="kiln hook image (Debian 12 packages)"\nNAME="kiln hook"\nID=kiln-hook\nID_LIKE=debian\nVERSION_ID="%s"\n' "$KVER" > "$R/usr/lib/os-release"
ln -sf ../usr/lib/os-release "$R/etc/os-release"
printf '127.0.0.1 localhost\n::1 localhost ip6-localhost\n' > "$R/etc/hosts"
printf 'hosts: files dns\nnetworks: files\n' > "$R/etc/nsswitch.conf"
: > "$R/etc/resolv.conf"
# containerd, started by /init (dockerd --containerd=...): no CRI (Kubernetes)
# plugin and none of the snapshotters Docker 20.10 does not use, whose
# probes (modprobe aufs, btrfs and zfs checks) cost start-up time.
mkdir -p "$R/etc/containerd"
cat > "$R/etc/containerd/config.toml" <<'EOF'
# written by hook-image/build.sh; containerd is started by /init
version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs"]
[grpc]
  address = "/run/containerd/containerd.sock"
EOF
cat > "$R/etc/udhcpc.script" <<'EOF'
#!/bin/sh
# busybox udhcpc hook: configure $interface from the lease, write /etc/resolv.conf
case "$1" in
  deconfig)
    ip -4 addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew)
    old=$(cat /run/udhcpc.$interface.ip 2>/dev/null)
    if [ "$1" = bound ] || [ "$old" != "$ip" ]; then
      ip -4 addr flush dev "$interface"
      ip addr add "$ip/${mask:-24}" ${broadcast:+broadcast $broadcast} dev "$interface"
      [ -n "$mtu" ] && ip link set "$interface" mtu "$mtu"
      for r in $router; do ip route add default via "$r" dev "$interface" 2>/dev/null && break; done
      echo "$ip" > /run/udhcpc.$interface.ip
    fi
    { [ -n "$domain" ] && echo "search $domain"; for d in $dns; do echo "nameserver $d"; done; } > /etc/resolv.conf.new
    mv /etc/resolv.conf.new /etc/resolv.conf ;;
esac
exit 0
EOF
chmod 0755 "$R/etc/udhcpc.script"

# ---------------------------------------------------------------- inventory
# The agent's in-band inventory (kiln-inventory) needs no extra files: it
# reads sysfs, /proc, /sys/firmware/dmi/tables (root only: the agent runs as
# root), efivarfs (mounted by /init) and the disks' first sectors itself.
# No udev: the agent computes the /dev/disk/by-id and by-path names from
# sysfs and makes the links itself (disk_links in its config). TPMs (tpm_tis, tpm_crb: built into Debian's kernel), UEFI variables
# (efivarfs) and the BMC (ipmi_si, ipmi_devintf) are covered: see below.

# ---------------------------------------------------------------- modules
# Hardware drivers, one a line: module|class|hardware. They are the image's
# /etc/modules.hw (loaded with kiln.modules=all), the modules the coldplug
# (`kiln-agent coldplug`, run by /init) may load for the devices present on
# any bus, and the rows of the coverage table (OUT/coverage.md, copied into
# docs/hook-image.md; tests/tests/hook_image.rs checks the page against the
# image). Each driver's firmware is what its module and the modules it
# depends on name in `firmware=` (.modinfo), taken from Debian's firmware
# packages.
HW_DRIVERS='
virtio_pci|bus|virtio PCI transport (QEMU/KVM, clouds)
virtio_net|nic|virtio NIC (QEMU/KVM, clouds)
e1000|nic|Intel PRO/1000 (QEMU default NIC, older servers)
e1000e|nic|Intel 8257x/I217-I219 gigabit (desktops, small servers)
igb|nic|Intel 82575/82576/I350/I210/I211 gigabit (server LOMs)
igc|nic|Intel I225/I226 2.5 GbE
ixgbe|nic|Intel 82598/82599/X520/X540/X550 10 GbE
ixgbevf|nic|Intel 82599/X540/X550 virtual function (SR-IOV, AWS older types)
i40e|nic|Intel X710/XL710/XXV710 10/25/40 GbE
iavf|nic|Intel adaptive virtual function (X710/E810 SR-IOV)
ice|nic|Intel E810 25/100 GbE (DDP package loaded at probe)
mlx4_core|nic|Mellanox ConnectX-3 (core; loads mlx4_en itself)
mlx4_en|nic|Mellanox ConnectX-3 Ethernet
mlx5_core|nic|Mellanox/NVIDIA ConnectX-4/5/6/7, BlueField (Ethernet built in)
bnx2|nic|Broadcom NetXtreme II 1 GbE (BCM5706/5708/5709)
bnx2x|nic|Broadcom/QLogic NetXtreme II 10 GbE (BCM57710/57711/57712/578xx)
bnxt_en|nic|Broadcom NetXtreme-C/E 10-200 GbE (BCM573xx/574xx/575xx)
tg3|nic|Broadcom Tigon3 gigabit (BCM57xx server LOMs)
qede|nic|QLogic/Marvell FastLinQ 41000/45000 10-100 GbE
be2net|nic|Emulex OneConnect/HPE FlexFabric 10 GbE
ena|nic|Amazon Elastic Network Adapter (AWS)
vmxnet3|nic|VMware vmxnet3 virtual NIC
hv_netvsc|nic|Hyper-V/Azure synthetic NIC
sfc|nic|Solarflare/AMD SFC9xxx, X2 10-100 GbE
atlantic|nic|Aquantia/Marvell AQtion 2.5-10 GbE
r8169|nic|Realtek RTL8111/8168/8125 (desktops, small servers)
cdc_ether|nic|USB CDC Ethernet (BMC host interfaces, USB dongles)
r8152|nic|Realtek RTL8152/8153/8156 USB Ethernet
ax88179_178a|nic|ASIX AX88179/178A USB Ethernet
virtio_blk|storage|virtio disk
virtio_scsi|storage|virtio SCSI
nvme|storage|NVMe SSDs
ahci|storage|SATA AHCI controllers
ata_piix|storage|Intel PIIX/ICH IDE/SATA (legacy mode, QEMU pc)
sr_mod|storage|SCSI/SATA CD-ROM
megaraid_sas|storage|Broadcom/LSI MegaRAID SAS (Dell PERC, Lenovo, Fujitsu RAID)
mpt3sas|storage|Broadcom/LSI SAS2/SAS3 HBAs (SAS2008-SAS3916, Dell HBA330)
mptsas|storage|LSI SAS1064/1068 (older servers, VMware LSI Logic SAS)
smartpqi|storage|Microchip/Adaptec SmartRAID/SmartHBA (HPE Gen10+ SR/HBA)
hpsa|storage|HPE Smart Array P4xx/P8xx (Gen8/Gen9)
aacraid|storage|Adaptec/Microsemi RAID (series 6/7/8)
vmw_pvscsi|storage|VMware paravirtual SCSI
hv_storvsc|storage|Hyper-V/Azure synthetic storage
xhci_pci|usb|USB 3 host controllers
ehci_pci|usb|USB 2 host controllers
ohci_pci|usb|USB 1.1 OHCI host controllers
uhci_hcd|usb|USB 1.1 UHCI host controllers (QEMU pc)
usb_storage|usb|USB mass storage (sticks, virtual media of BMCs)
uas|usb|USB attached SCSI
usbhid|usb|USB keyboards and mice (BMC virtual keyboard)
hid_generic|usb|generic HID devices
efivarfs|platform|UEFI variables (/sys/firmware/efi/efivars: boot order, inventory)
ipmi_si|platform|IPMI system interface (KCS/SMIC/BT) to the BMC
ipmi_devintf|platform|/dev/ipmi0 (inventory, ipmitool in actions)
8250|console|serial consoles (8250/16550 UARTs, SOL)
8250_pci|console|PCI serial cards and BMC virtual UARTs
8250_exar|console|Exar/MaxLinear PCI(e) UART cards
tpm_tis|platform|TPM 1.2/2.0 TIS (LPC/SPI)
tpm_crb|platform|TPM 2.0 CRB (firmware TPMs: Intel PTT, AMD fTPM)
'
# (the built-in ones, listed for the table, are skipped by take)
MODS_HW=$(awk -F'|' 'NF == 3 {print $1}' <<<"$HW_DRIVERS")
# Always loaded before the agent starts (/etc/modules).
MODS="crc32c_generic overlay loop sd_mod squashfs"
# Loaded right after the agent starts (/etc/modules.late); mounts with an
# explicit type load them on demand anyway. dm-mod is device-mapper, for
# LVM's logical volumes (rootio).
MODS_LATE="ext4 vfat nls_cp437 nls_ascii nls_iso8859-1 nls_utf8 xfs isofs dm-mod"
# Loaded only with kiln.docker_bridge=1 (/etc/modules.bridge): Docker's bridge network + NAT.
MODS_BRIDGE="bridge br_netfilter veth nf_tables nft_compat nft_chain_nat nft_masq nft_ct nf_nat nf_conntrack
 nf_conntrack_netlink xt_MASQUERADE xt_addrtype xt_conntrack xt_nat xt_tcpudp xt_mark xt_comment xt_multiport
 ip_tables iptable_nat iptable_filter ip6_tables ip6table_nat ip6table_filter"
KM=$K/lib/modules/$KVER
[ -f "$KM/modules.dep" ] || "$BB" depmod -b "$K" "$KVER"   # Debian ships no modules.dep
mkdir -p "$R/lib/modules/$KVER"
cp "$KM/modules.builtin" "$KM/modules.order" "$R/lib/modules/$KVER/"
[ -f "$KM/modules.builtin.modinfo" ] && cp "$KM/modules.builtin.modinfo" "$R/lib/modules/$KVER/"
# modules.dep line of module $1 (file names use - or _ as the source tree has them)
dep_line() { grep -E "/${1//[-_]/[-_]}\.ko(\.[a-z]+)?:" "$KM/modules.dep" || true; }
builtin() { grep -qE "/${1//[-_]/[-_]}\.ko" "$KM/modules.builtin"; }
take() { # $1: output list file; rest: module names
    local list=$1; shift
    : > "$list"
    for m in "$@"; do
        local line
        line=$(dep_line "$m")
        if [ -z "$line" ]; then
            if builtin "$m"; then echo "  $m: built in"; else die "module $m is not in kernel $KVER (fix the module lists)"; fi
            continue
        fi
        echo "$m" >> "$list"
        for f in ${line%%:*} ${line#*:}; do
            mkdir -p "$R/lib/modules/$KVER/$(dirname "$f")"
            cp -n "$KM/$f" "$R/lib/modules/$KVER/$f"
        done
    done
}
take "$R/etc/modules.hw" $MODS_HW
take "$R/etc/modules" $MODS
take "$R/etc/modules.late" $MODS_LATE
take "$R/etc/modules.bridge" $MODS_BRIDGE
"$BB" depmod -b "$R" "$KVER"
NMODS=$(find "$R/lib/modules" -name '*.ko*' | wc -l)
say "kernel modules: $NMODS files ($(du -sh "$R/lib/modules" | cut -f1))"

# ---------------------------------------------------------------- firmware
# Every firmware file a module in the image names, from the firmware
# packages, at the path the kernel's direct loader reads (/lib/firmware/NAME;
# symlinks resolved). Debian's kernel has CONFIG_FW_LOADER_USER_HELPER=y but
# not the _FALLBACK, so a driver that does not find its file in /lib/firmware
# gets an error at once (no 60 s wait for a helper the image does not have).
# A name no package has (older or newer versions a driver tries in turn) is
# listed as absent in the coverage table.
modinfo_firmware() { objcopy -O binary --only-section=.modinfo "$1" /dev/stdout 2>/dev/null | tr '\0' '\n' | sed -n 's/^firmware=//p'; }
FWLIST=$WORK/firmware.tsv   # module <TAB> firmware name <TAB> bytes in the image, or "absent"
: > "$FWLIST"
while IFS= read -r -d '' ko; do
    mod=$(basename "${ko%%.ko*}")
    for name in $(modinfo_firmware "$ko"); do
        src=$FW/lib/firmware/$name
        if [ -f "$src" ]; then
            mkdir -p "$R/lib/firmware/$(dirname "$name")"
            cp -L "$src" "$R/lib/firmware/$name"
            printf '%s\t%s\t%s\n' "${mod//-/_}" "$name" "$(stat -L -c %s "$src")" >> "$FWLIST"
        else
            printf '%s\t%s\tabsent\n' "${mod//-/_}" "$name" >> "$FWLIST"
        fi
    done
done < <(find "$R/lib/modules" -name '*.ko' -print0 | sort -z)
NFW=$(awk -F'\t' '$3 != "absent"' "$FWLIST" | wc -l)
FWBYTES=$( (du -sb "$R/lib/firmware" 2>/dev/null || echo 0) | cut -f1)
say "firmware: $NFW files ($FWBYTES bytes), $(awk -F'\t' '$3 == "absent"' "$FWLIST" | wc -l) names absent from Debian's packages"

# ---------------------------------------------------------------- coverage table
# OUT/coverage.md: one row per driver of HW_DRIVERS with its firmware (its
# own and its dependencies'), as this build put them in the image.
{
    echo "| driver | hardware | firmware in the image | where |"
    echo "|---|---|---|---|"
    while IFS='|' read -r m class hw; do
        [ -n "$m" ] || continue
        line=$(dep_line "$m")
        if [ -z "$line" ]; then
            builtin "$m" || die "driver $m is neither a module nor built into $KVER"
            printf '| %s | %s | %s | built into the kernel |\n' "$m" "$hw" "none"
            continue
        fi
        mods=""
        for f in ${line%%:*} ${line#*:}; do b=$(basename "${f%%.ko*}"); mods="$mods ${b//-/_}"; done
        fws=$(for x in $mods; do awk -F'\t' -v m="$x" '$1 == m && $3 != "absent" {print $2}' "$FWLIST"; done | sort -u | paste -sd, - | sed 's/,/, /g')
        absent=$(for x in $mods; do awk -F'\t' -v m="$x" '$1 == m && $3 == "absent" {print $2}' "$FWLIST"; done | sort -u | paste -sd, - | sed 's/,/, /g')
        cell=${fws:-none}
        [ -n "$absent" ] && cell="$cell (not in Debian's packages, the driver tries another: $absent)"
        deps=$(echo $mods | cut -d' ' -f2-)
        where="drivers squashfs ($class)"
        [ "$deps" != "$(echo $mods)" ] && [ -n "$deps" ] && where="$where, with $(echo "$deps" | sed 's/ /, /g')"
        printf '| %s | %s | %s | %s |\n' "$m" "$hw" "$cell" "$where"
    done <<<"$HW_DRIVERS"
} > "$OUT/coverage.md"

# ---------------------------------------------------------------- check ELF dependencies
bad=0
libdirs="lib/x86_64-linux-gnu usr/lib/x86_64-linux-gnu lib64 usr/lib64"
while IFS= read -r -d '' f; do
    [ "$(head -c4 "$f" | od -An -c | tr -d ' ')" = '177ELF' ] || continue
    interp=$(readelf -l "$f" 2>/dev/null | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')
    if [ -n "$interp" ] && [ ! -e "$R$interp" ]; then echo "MISSING interpreter $interp for ${f#$R}"; bad=1; fi
    for n in $(readelf -d "$f" 2>/dev/null | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p'); do
        ok=0
        for d in $libdirs; do [ -e "$R/$d/$n" ] && ok=1 && break; done
        [ $ok = 1 ] || { echo "MISSING $n for ${f#$R}"; bad=1; }
    done
done < <(find "$R" -path "$R/lib/modules" -prune -o -type f -print0)
[ $bad = 0 ] || die "shared libraries missing (add their packages to PKGS_USER)"
say "ELF check passed"

# ---------------------------------------------------------------- the engine's squashfs
# The Docker engine's binaries move into a squashfs; symlinks stay in their
# place, pointing into the mount /init makes of it (before it starts them).
ENGINE_BINS="usr/sbin/dockerd usr/sbin/docker-proxy usr/bin/containerd usr/bin/containerd-shim-runc-v2 usr/sbin/runc"
ENGINE_MNT=/usr/lib/kiln/docker
ENGINE_SQFS=usr/lib/kiln/docker.squashfs
UNCOMP=$(du -sb "$R" | cut -f1)
S=$WORK/engine
mkdir -p "$S" "$R$ENGINE_MNT"
for f in $ENGINE_BINS; do
    [ -f "$R/$f" ] || die "$f is not in the tree (did a Debian package move it?)"
    mv "$R/$f" "$S/"
    ln -s "$ENGINE_MNT/${f##*/}" "$R/$f"
done
say "engine squashfs ($(du -sh "$S" | cut -f1)) with zstd -$SQUASHFS_LEVEL"
mksquashfs "$S" "$WORK/docker.squashfs" -noappend -quiet -no-progress -all-root -no-xattrs \
    -comp zstd -Xcompression-level "$SQUASHFS_LEVEL" -b 1M -mkfs-time 0 -all-time 0 >/dev/null

# ---------------------------------------------------------------- the drivers' squashfs
# /lib/modules and /lib/firmware move into a squashfs that /init mounts on
# DRIVERS_MNT and binds back onto those two paths, before anything loads a
# module. Only the two modules that mount it stay unpacked, in
# /usr/lib/kiln/early (they have no dependencies; the squashfs has them
# too, so modules.dep stays whole). 128 KiB blocks: a module or firmware
# file read decompresses little beyond itself (1 MiB blocks would
# decompress up to 1 MiB of neighbours per file).
DRIVERS_MNT=/usr/lib/kiln/drivers
DRIVERS_SQFS=usr/lib/kiln/drivers.squashfs
D=$WORK/drivers
mkdir -p "$D" "$R/usr/lib/kiln/early" "$R$DRIVERS_MNT"
for m in loop squashfs; do
    f=$(dep_line "$m"); f=${f%%:*}
    [ -n "$f" ] && [ "$(dep_line "$m" | cut -d: -f2 | tr -d ' ')" = "" ] || die "$m must be a module without dependencies (it mounts the drivers' squashfs)"
    cp "$R/lib/modules/$KVER/$f" "$R/usr/lib/kiln/early/$m.ko"
done
mv "$R/lib/modules" "$D/modules"
if [ -d "$R/lib/firmware" ]; then mv "$R/lib/firmware" "$D/firmware"; else mkdir "$D/firmware"; fi
mkdir -p "$R/lib/modules" "$R/lib/firmware"
say "drivers squashfs ($(du -sh "$D" | cut -f1)) with zstd -$SQUASHFS_LEVEL"
mksquashfs "$D" "$WORK/drivers.squashfs" -noappend -quiet -no-progress -all-root -no-xattrs \
    -comp zstd -Xcompression-level "$SQUASHFS_LEVEL" -b 128K -mkfs-time 0 -all-time 0 >/dev/null

# ---------------------------------------------------------------- pack + manifest
# cpio (newc, root-owned, sorted) of the tree under $1, to stdout
pack_cpio() { (cd "$1" && find . -print0 | LC_ALL=C sort -z | "$BB" cpio -o -H newc -0 -R 0:0 2>/dev/null); }
say "packing the rest ($(du -sh "$R" | cut -f1)) with zstd -$ZSTD_LEVEL"
IMG=$OUT/initramfs.img
pack_cpio "$R" \
    | zstd -q -f -T0 "-$ZSTD_LEVEL" -o "$WORK/seg1.cpio.zst"
SEG1=$(stat -c %s "$WORK/seg1.cpio.zst")
# The kernel looks for the next archive at a 4-byte boundary and skips
# zero bytes; 512 is what other initramfs builders use.
PAD=$(( (512 - SEG1 % 512) % 512 ))
mkdir -p "$WORK/seg2/${ENGINE_SQFS%/*}" "$WORK/seg2/${DRIVERS_SQFS%/*}"
mv "$WORK/docker.squashfs" "$WORK/seg2/$ENGINE_SQFS"
mv "$WORK/drivers.squashfs" "$WORK/seg2/$DRIVERS_SQFS"
{
    cat "$WORK/seg1.cpio.zst"
    head -c "$PAD" /dev/zero
    pack_cpio "$WORK/seg2"
} > "$IMG.tmp"
mv "$IMG.tmp" "$IMG"
SZ=$(stat -c %s "$IMG")
SQ=$(stat -c %s "$WORK/seg2/$ENGINE_SQFS")
DQ=$(stat -c %s "$WORK/seg2/$DRIVERS_SQFS")
{
    echo "kiln hook image, built $(date -u +%Y-%m-%dT%H:%M:%SZ) by hook-image/build.sh"
    echo "kernel: $KVER ($(dpkg-deb -f "$DEBS/${DEB[$PKG_KERNEL]}" Version))"
    echo "vmlinuz: $(stat -c %s "$OUT/vmlinuz") bytes"
    echo "initramfs.img: $SZ bytes (uncompressed tree $UNCOMP bytes)"
    # tests/vm/build-test-os.sh reads this line to find the first archive
    echo "  archive 1: the first $SEG1 bytes, zstd -$ZSTD_LEVEL cpio, everything but the engine and the drivers"
    # tests/vm/build-test-os.sh and tests/tests/hook_image.rs read this
    # line to find the second archive
    echo "  archive 2: from byte $((SEG1 + PAD)), plain cpio of two squashfs files (zstd -$SQUASHFS_LEVEL):"
    echo "    /$ENGINE_SQFS: $SQ bytes, mounted on $ENGINE_MNT"
    echo "    /$DRIVERS_SQFS: $DQ bytes, mounted on $DRIVERS_MNT (modules/ on /lib/modules, firmware/ on /lib/firmware)"
    echo "engine binaries: $ENGINE_BINS"
    echo "kiln-agent: $(stat -c %s "$R/usr/bin/kiln-agent") bytes, sha256 $(sha256sum "$R/usr/bin/kiln-agent" | cut -d' ' -f1)"
    echo "init: sha256 $(sha256sum "$R/init" | cut -d' ' -f1)"
    echo "kernel modules: $NMODS files"
    echo "firmware: $NFW files, $FWBYTES bytes (coverage table: coverage.md)"
    for l in modules.hw modules modules.late modules.bridge; do echo "  /etc/$l: $(tr '\n' ' ' < "$R/etc/$l")"; done
    echo "packages:"
    for p in $PKG_KERNEL $PKGS_USER $FW_PKGS; do
        printf '  %-28s %s\n' "$p" "$(dpkg-deb -f "$DEBS/${DEB[$p]}" Version)"
    done
} > "$OUT/manifest.txt"
rm -f "$OUT/hook.cpio.zst"   # the single-archive format of earlier builds
[ -n "${KEEP_WORK:-}" ] && echo "work tree kept: $WORK"
say "done: $OUT/vmlinuz $(numfmt --to=iec "$(stat -c %s "$OUT/vmlinuz")"), $IMG $(numfmt --to=iec "$SZ") ($SZ bytes)"
# issue 17's goal: full network and storage coverage under 80 MB
[ "$SZ" -lt 80000000 ] || echo "WARNING: initramfs.img is over 80 MB" >&2
