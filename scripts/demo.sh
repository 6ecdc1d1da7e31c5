#!/usr/bin/env bash
# The main job, on one machine: kiln installs Debian 12 on a (QEMU) machine
# that boots from the network as a real server does.
#
#   scripts/demo.sh            the whole job (below), ~10 min the first time
#   scripts/demo.sh --quick    the short demo without a VM (scripts/demo-quick.sh)
#
# - a site network in network namespaces this script makes (10.81.50.0/24):
#   a bridge, dnsmasq as the site's DHCP server (addresses only), kiln-server
#   (embedded SQLite store, dev TLS) with its ProxyDHCP and TFTP beside it;
# - a UEFI machine (OVMF, TCG) whose firmware PXE-boots: kiln's ProxyDHCP
#   and TFTP hand it ipxe.efi, iPXE fetches the boot script and the hook
#   image, the hook's agent enrols with the script's one-time credential;
# - the workflow: partition the disk (GPT: ESP + root), format both, unpack
#   Debian 12 built from Debian packages (scripts/build-debian-image.sh,
#   cached in /var/cache/kiln-demo), write the hostname and the network
#   configuration from the Hardware document, install GRUB (cexec, in a
#   chroot), kexec into the installed kernel;
# - it ends when the installed Debian's console shows `<hostname> login:`,
#   prints each phase's time and a summary, and stops everything it started.
#
# Needs root (namespaces), the packages scripts/test-env.sh installs, and the
# hook image (hook-image/out; built here when missing). KILN_DEMO_PROFILE
# (release, or debug) picks the cargo profile of kiln's binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = --quick ]; then exec bash scripts/demo-quick.sh; fi

STATE=${KILN_DEMO_STATE:-/tmp/kiln-demo-vm}
CACHE=${KILN_DEMO_CACHE:-/var/cache/kiln-demo}
PROFILE=${KILN_DEMO_PROFILE:-release}
export KILN_TEST_STATE=$STATE/services KILN_REGISTRY_PORT=43342 KILN_AUTH_REGISTRY_PORT=43343
NET=10.81.50
SITE_NS=kpdemo-site PROXY_NS=kpdemo-prx BRIDGE=kpdbr0 PROXY_IF=kpdp0 TAP=kpdtap0
SERVER=$NET.2:43340 NETBOOT=$NET.2:43341 GUEST_REGISTRY=$NET.1:43351 FILES=$NET.1:43352
MAC=02:6b:69:6c:6e:01
HOSTNAME_=kiln-demo-1
LIMIT=${KILN_DEMO_LIMIT:-1500}

t_start=$(date +%s.%N)
t_phase=$t_start
phases=()
phase() { # phase NAME: the time since the previous phase ended
    local now
    now=$(date +%s.%N)
    phases+=("$(awk -v a="$t_phase" -v b="$now" -v n="$1" 'BEGIN{printf "%-58s %6.1f s", n, b-a}')")
    echo "== $1: $(awk -v a="$t_phase" -v b="$now" 'BEGIN{printf "%.1f s", b-a}')"
    t_phase=$now
}

pids=()
cleanup() {
    local rc=$?
    local pid i alive
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    # kiln-server's graceful shutdown waits for its connections, and the
    # dead VM's agent never closes its own: 5 s, then KILL.
    for ((i = 0; i < 20; i++)); do
        alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ "$alive" = 1 ] || break
        sleep 0.25
    done
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    ip netns del "$SITE_NS" 2>/dev/null || true
    ip netns del "$PROXY_NS" 2>/dev/null || true
    bash scripts/test-env.sh down >/dev/null 2>&1 || true
    [ "$rc" = 0 ] || echo "demo failed (exit $rc); logs in $STATE (console.log, server.log, dnsmasq.log)" >&2
}
trap cleanup EXIT

# Waits until FILE has a line matching the regex, for at most SECONDS.
wait_for() {
    local file=$1 regex=$2 seconds=$3 what=$4 i
    for ((i = 0; i < seconds * 4; i++)); do
        grep -qaE "$regex" "$file" 2>/dev/null && return 0
        sleep 0.25
    done
    echo "timed out after $seconds s waiting for $what; last console lines:" >&2
    tail -30 "$STATE/console.log" >&2 || true
    exit 1
}

mkdir -p "$STATE" "$CACHE"
# Leftovers of an interrupted run.
ip netns del "$SITE_NS" 2>/dev/null || true
ip netns del "$PROXY_NS" 2>/dev/null || true

# --- services and kiln's binaries ---------------------------------------
bash scripts/test-env.sh up >/dev/null
# shellcheck disable=SC1091
source "$KILN_TEST_STATE/env"
KILN_ACTIONS="partition format archive2disk writefile cexec kexec" actions/build.sh "$KILN_TEST_REGISTRY" >"$STATE/actions-build.log" 2>&1 || { tail -20 "$STATE/actions-build.log"; exit 1; }
phase "services up, action images pushed"
if [ "$PROFILE" = release ]; then cargo build --quiet --release --bins -p kiln-server -p kiln-cli; else cargo build --quiet --bins -p kiln-server -p kiln-cli; fi
BIN=target/$PROFILE
if [ ! -s hook-image/out/initramfs.img ]; then
    RUSTFLAGS='-C target-feature=+crt-static' cargo build --quiet --release --target x86_64-unknown-linux-gnu -p kiln-agent
    KILN_AGENT_BIN=target/x86_64-unknown-linux-gnu/release/kiln-agent hook-image/build.sh hook-image/out >"$STATE/hook-build.log" 2>&1
fi
phase "kiln built (server, CLI, hook image)"

# --- the OS to install ----------------------------------------------------
ARCHIVE=$(scripts/build-debian-image.sh "$CACHE")
[ -s "$ARCHIVE.sha256" ] || sha256sum "$ARCHIVE" | cut -d' ' -f1 >"$ARCHIVE.sha256"
SHA=$(cat "$ARCHIVE.sha256")
phase "Debian 12 image ($(du -h "$ARCHIVE" | cut -f1), $(basename "$ARCHIVE"))"

# --- the site network -----------------------------------------------------
ip netns add "$SITE_NS"
ip netns add "$PROXY_NS"
ip -n "$SITE_NS" link set lo up
ip -n "$PROXY_NS" link set lo up
ip -n "$SITE_NS" link add "$BRIDGE" type bridge forward_delay 0 stp_state 0
ip -n "$SITE_NS" addr add "$NET.1/24" dev "$BRIDGE"
# IPv6 router advertisements: without them iPXE waits ~13 s for autoconfiguration.
ip -n "$SITE_NS" addr add fd00:6b64::1/64 dev "$BRIDGE" nodad
ip -n "$SITE_NS" link set "$BRIDGE" up
ip link add "$PROXY_IF" netns "$PROXY_NS" type veth peer name kpdpb0 netns "$SITE_NS"
ip -n "$SITE_NS" link set kpdpb0 master "$BRIDGE" up
ip -n "$PROXY_NS" addr add "$NET.2/24" dev "$PROXY_IF"
ip -n "$PROXY_NS" link set "$PROXY_IF" up
ip -n "$SITE_NS" tuntap add dev "$TAP" mode tap
ip -n "$SITE_NS" link set "$TAP" master "$BRIDGE" up
ip netns exec "$SITE_NS" dnsmasq --keep-in-foreground --conf-file=/dev/null --port=0 --interface="$BRIDGE" \
    --bind-interfaces --no-ping --dhcp-leasefile="$STATE/dnsmasq.leases" --log-dhcp --log-facility=- \
    --dhcp-range="$NET.100,$NET.150,255.255.255.0,1h" --dhcp-option=option:router,"$NET.1" \
    --enable-ra --dhcp-range=fd00:6b64::,ra-only,64 >"$STATE/dnsmasq.log" 2>&1 &
pids+=($!)
# The machine pulls the action images from the registry's storage, served
# on the site network by a second registry process, and downloads Debian
# from a file server there.
cat >"$STATE/registry-site.yml" <<YML
version: 0.1
log: { level: warn }
storage: { filesystem: { rootdirectory: $KILN_TEST_STATE/registry-open } }
http: { addr: $GUEST_REGISTRY }
YML
ip netns exec "$SITE_NS" docker-registry serve "$STATE/registry-site.yml" >"$STATE/registry-site.log" 2>&1 &
pids+=($!)
ip netns exec "$SITE_NS" python3 -m http.server --bind "$NET.1" "${FILES#*:}" -d "$CACHE" >"$STATE/files.log" 2>&1 &
pids+=($!)

rm -rf "$STATE/data"
ip netns exec "$PROXY_NS" "$BIN/kiln-server" --data-dir "$STATE/data" --dev-tls \
    --listen "$SERVER" --public-url "https://$SERVER" --netboot-listen "$NETBOOT" \
    --proxy-dhcp-listen "$PROXY_IF" --tftp-listen "$NET.2:69" --hook-dir hook-image/out \
    --hook-cmdline "console=ttyS0 quiet panic=-1 kiln.console_log=1 kiln.insecure_registries=$GUEST_REGISTRY" \
    2>"$STATE/server.log" &
pids+=($!)
kiln() { ip netns exec "$PROXY_NS" "$BIN/kiln" --server "https://$SERVER" --ca "$STATE/data/tls/ca.pem" "$@"; }
export KILN_TOKEN_FILE=$STATE/data/admin-token
for _ in $(seq 1 100); do kiln get workflows >/dev/null 2>&1 && break; sleep 0.2; done
for _ in $(seq 1 40); do ip netns exec "$SITE_NS" curl -sf "http://$GUEST_REGISTRY/v2/" >/dev/null && break; sleep 0.25; done

VERSION=$(awk -F'"' '/^version *=/{print $2; exit}' Cargo.toml)
A=$GUEST_REGISTRY/kiln/actions
kiln apply -f - >/dev/null <<YAML
kind: Hardware
name: demo-vm
disks: ["/dev/vda"]
interfaces:
- dhcp:
    mac: "$MAC"
    hostname: $HOSTNAME_
    ip: {address: $NET.60, netmask: 255.255.255.0, gateway: $NET.1}
    name_servers: [$NET.1]
---
kind: Template
name: debian-12
data: |
  version: "0.1"
  name: debian-12
  global_timeout: 1800
  tasks:
    - name: install
      worker: "{{.device_1}}"
      actions:
        - name: partition
          image: $A/partition:$VERSION
          timeout: 120
          environment:
            DEST_DISK: "{{ index .Hardware.Disks 0 }}"
            LAYOUT: '{"partitions":[{"name":"efi","size":"256MiB","type":"efi"},{"name":"root","size":"rest","type":"linux"}]}'
        - name: format-esp
          image: $A/format:$VERSION
          timeout: 120
          environment: {DEST_DISK: "{{ formatPartition ( index .Hardware.Disks 0 ) 1 }}", FS_TYPE: vfat, LABEL: KILN-ESP}
        - name: format-root
          image: $A/format:$VERSION
          timeout: 120
          environment: {DEST_DISK: "{{ formatPartition ( index .Hardware.Disks 0 ) 2 }}", FS_TYPE: ext4, LABEL: kiln-root}
        - name: debian
          image: $A/archive2disk:$VERSION
          timeout: 1200
          environment:
            DEST_DISK: "{{ formatPartition ( index .Hardware.Disks 0 ) 2 }}"
            FS_TYPE: ext4
            ARCHIVE_URL: http://$FILES/$(basename "$ARCHIVE")
            ARCHIVE_TYPE: tarzst
            TARFILE_CHECKSUM: sha256:$SHA
            HTTP_CLIENT_TIMEOUT_MINUTES: 15
        - name: hostname
          image: $A/writefile:$VERSION
          timeout: 90
          environment:
            DEST_DISK: "{{ formatPartition ( index .Hardware.Disks 0 ) 2 }}"
            FS_TYPE: ext4
            DEST_PATH: /etc/hostname
            CONTENTS: "{{ (index .Hardware.Interfaces 0).DHCP.Hostname }}\n"
        - name: network
          image: $A/writefile:$VERSION
          timeout: 90
          environment:
            DEST_DISK: "{{ formatPartition ( index .Hardware.Disks 0 ) 2 }}"
            FS_TYPE: ext4
            DEST_PATH: /etc/systemd/network/10-kiln.network
            CONTENTS: "{{ with (index .Hardware.Interfaces 0).DHCP }}[Match]\nMACAddress={{ .MAC }}\n\n[Network]\nAddress={{ .IP.Address }}/{{ netmaskToPrefixLength .IP.Netmask }}\nGateway={{ .IP.Gateway }}\n{{ range .NameServers }}DNS={{ . }}\n{{ end }}{{ end }}"
        - name: bootloader
          image: $A/cexec:$VERSION
          timeout: 600
          environment:
            BLOCK_DEVICE: "{{ formatPartition ( index .Hardware.Disks 0 ) 2 }}"
            FS_TYPE: ext4
            CHROOT: y
            DEFAULT_INTERPRETER: "/bin/sh -c"
            CMD_LINE: "mount {{ formatPartition ( index .Hardware.Disks 0 ) 1 }} /boot/efi && grub-install --target=x86_64-efi --efi-directory=/boot/efi --removable --no-nvram && update-grub && umount /boot/efi"
        - name: boot-debian
          image: $A/kexec:$VERSION
          timeout: 120
          pid: host
          environment:
            BLOCK_DEVICE: "{{ formatPartition ( index .Hardware.Disks 0 ) 2 }}"
            FS_TYPE: ext4
            KERNEL_PATH: /vmlinuz
            INITRD_PATH: /initrd.img
            CMD_LINE: "root=LABEL=kiln-root ro console=ttyS0"
---
kind: Workflow
name: install-debian
template: debian-12
hardware: demo-vm
hardware_map: {device_1: "$MAC"}
YAML
phase "site network, dnsmasq, kiln-server (ProxyDHCP, TFTP), workflow applied"

# --- the machine ------------------------------------------------------------
rm -f "$STATE/disk.img" "$STATE/console.log"
truncate -s 4G "$STATE/disk.img"
cp /usr/share/OVMF/OVMF_VARS_4M.fd "$STATE/vars.fd"
: >"$STATE/console.log"
ip netns exec "$SITE_NS" qemu-system-x86_64 -nodefaults -machine q35 -accel tcg,thread=multi -smp 2 -m 2048 \
    -display none -no-reboot \
    -drive if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd \
    -drive if=pflash,format=raw,file="$STATE/vars.fd" \
    -drive file="$STATE/disk.img",if=virtio,format=raw \
    -netdev tap,id=n0,ifname="$TAP",script=no,downscript=no \
    -device virtio-net-pci,netdev=n0,mac="$MAC",romfile= \
    -fw_cfg name=opt/org.tianocore/IPv4HTTPSupport,string=n -fw_cfg name=opt/org.tianocore/IPv6PXESupport,string=n \
    -boot n -serial file:"$STATE/console.log" >"$STATE/qemu.log" 2>&1 &
pids+=($!)
wait_for "$STATE/console.log" "iPXE initialising devices" 120 "the firmware to load ipxe.efi over kiln's TFTP"
phase "firmware PXE: ProxyDHCP + TFTP, ipxe.efi running"
wait_for "$STATE/console.log" "kiln-hook: agent started" 300 "the hook image to boot"
phase "boot script, hook image downloaded and booted"
wait_for "$STATE/console.log" "kiln_agent::enrol: enrolled" 120 "the agent to enrol"
phase "agent enrolled (boot script's one-time credential)"
timeout "$LIMIT" ip netns exec "$PROXY_NS" "$BIN/kiln" --server "https://$SERVER" --ca "$STATE/data/tls/ca.pem" \
    watch install-debian || true
kiln logs install-debian >"$STATE/workflow.log" 2>&1 || true
state=$(kiln get workflows install-debian -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')
if [ "$state" != SUCCESS ]; then
    echo "workflow ended $state; its logs:" >&2
    tail -40 "$STATE/workflow.log" >&2
    exit 1
fi
phase "workflow SUCCESS (partition, format, Debian, hostname, network, GRUB, kexec)"
wait_for "$STATE/console.log" "$HOSTNAME_ login:" 600 "the installed Debian's login prompt"
phase "installed Debian booted to its login prompt"

echo
grep -a -B2 "$HOSTNAME_ login:" "$STATE/console.log" | tr -d '\r'
echo
for p in "${phases[@]}"; do echo "  $p"; done
total=$(awk -v a="$t_start" -v b="$(date +%s.%N)" 'BEGIN{printf "%.0f", b-a}')
echo "kiln installed Debian 12 on $HOSTNAME_ ($MAC) over UEFI PXE + ProxyDHCP in ${total} s; console: $STATE/console.log"
