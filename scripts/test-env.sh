#!/usr/bin/env bash
# Starts (up) or stops (down) the services kiln's tests and demo need, all
# private to this checkout's state directory:
#   - a Docker engine on its own socket and data root (no bridge, no iptables)
#   - an open registry on 127.0.0.1:$KILN_REGISTRY_PORT
#   - a registry with htpasswd (bcrypt) auth on 127.0.0.1:$KILN_AUTH_REGISTRY_PORT
# `up` writes $STATE/env, a file of exports the tests read; every process is
# stopped by its pid file in `down`.
set -euo pipefail

STATE=${KILN_TEST_STATE:-/tmp/kiln-test-env}
REG_PORT=${KILN_REGISTRY_PORT:-5030}
AUTH_PORT=${KILN_AUTH_REGISTRY_PORT:-5031}
REG_USER=kiln-test
REG_PASS=${KILN_TEST_REGISTRY_PASSWORD:-s3cret-$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')}

install_packages() {
    local missing=() pkg
    # fdisk, dosfstools, xfsprogs, e2fsprogs: tools the partition and format
    # action images carry (copied from this host); zstd, xz-utils, bzip2:
    # the tests compress images with them; gcc: the static test helper;
    # qemu-system-x86 + ipxe-qemu: the VM test; binutils: the hook build;
    # postgresql-15: initdb/pg_ctl for the PostgreSQL store tests (each test
    # process starts its own server, tests/src/postgres.rs); prometheus
    # (with promtool): the metrics test scrapes a server with a real one and
    # checks docs/monitoring/alerts.yml; golang-go and the Go packages: the
    # Go + Sprig renderer that documents/tests/go_differential.rs compares
    # kiln's templates with (built offline in GOPATH mode). The hub-compatible
    # actions' images carry more host tools: qemu-utils + qemu-block-extra
    # (qemu-img and its curl module, qemuimg2disk; the test makes qcow2
    # files with it), lvm2 (rootio), syslinux + syslinux-common + mtools
    # (syslinux), grub2-common + grub-common + grub-pc-bin +
    # grub-efi-amd64-bin + gettext-base (grub2disk), ca-certificates; iproute2: the writefile test's network
    # namespaces (busybox udhcpd answers DHCP there); chromium +
    # chromium-driver: the web console test drives a headless browser
    # (tests/tests/console.rs); ipxe (the iPXE binaries kiln serves), tftp-hpa
    # and dnsmasq-base: the boot services test (tests/tests/boot_services.rs)
    # fetches over TFTP and runs a site DHCP server beside kiln's ProxyDHCP;
    # ovmf: the UEFI firmware whose own PXE client tests/tests/vm_pxe.rs boots;
    # libvirt-daemon + libvirt-daemon-driver-qemu
    # + libvirt-clients + python3-libvirt + python3-venv (and ovmf): the BMC
    # tests' private libvirtd and the emulators' venv (tests/src/bmc_lab.rs;
    # never libvirt-daemon-system, which brings a NAT network and services);
    # xorriso (with the grub packages and mtools above): the server's hook
    # ISO (server/src/app/hook_iso.rs, grub-mkrescue).
    for pkg in docker.io docker-registry apache2-utils busybox-static util-linux curl iproute2 \
        fdisk dosfstools xfsprogs e2fsprogs zstd xz-utils bzip2 gcc libc6-dev binutils \
        qemu-system-x86 ipxe-qemu ipxe tftp-hpa dnsmasq-base ovmf postgresql-15 prometheus chromium chromium-driver \
        golang-go golang-github-masterminds-sprig-dev golang-k8s-sigs-yaml-dev \
        qemu-utils qemu-block-extra lvm2 syslinux syslinux-common mtools \
        grub2-common grub-common grub-pc-bin grub-efi-amd64-bin gettext-base ca-certificates \
        libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients python3-libvirt python3-venv xorriso; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "installing: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

# The BMC tests (tests/tests/bmc.rs) drive libvirt domains through the
# emulators Ironic and Metal3 test against: sushy-tools (Redfish) and
# virtualbmc (IPMI), from PyPI (not in Debian) into a venv that sees
# Debian's python3-libvirt. Each test starts its own libvirtd as the
# unprivileged kiln-libvirt user (a session daemon: private sockets and
# domains, nothing under /etc or /var/lib/libvirt).
install_bmc_emulators() {
    getent passwd kiln-libvirt >/dev/null || useradd -r -d /nonexistent -M -s /usr/sbin/nologin kiln-libvirt
    # The BMC VM tests give a domain a tap the test made for kiln-libvirt;
    # QEMU opens it through /dev/net/tun, which udev makes 0666 on a normal
    # system (50-udev-default.rules) and this udev-less machine leaves 0600.
    chmod 0666 /dev/net/tun
    if [ ! -x "$STATE/bmc-venv/bin/sushy-emulator" ] || [ ! -x "$STATE/bmc-venv/bin/vbmcd" ]; then
        rm -rf "$STATE/bmc-venv"
        /usr/bin/python3 -m venv --system-site-packages "$STATE/bmc-venv"
        "$STATE/bmc-venv/bin/pip" install -q 'sushy-tools==2.2.0' 'virtualbmc==3.3.0' 'pyghmi==1.6.19'
    fi
}

wait_for() { # description, command...
    local what=$1; shift
    for _ in $(seq 1 100); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    echo "timed out waiting for $what" >&2
    return 1
}

up() {
    install_packages
    down quiet
    mkdir -p "$STATE"/{docker,registry-open,registry-auth}
    install_bmc_emulators
    dockerd --data-root "$STATE/docker/root" --exec-root "$STATE/docker/exec" \
        -H "unix://$STATE/docker.sock" --pidfile "$STATE/docker.pid" \
        --bridge=none --iptables=false --ip6tables=false >"$STATE/dockerd.log" 2>&1 &
    htpasswd -Bbn "$REG_USER" "$REG_PASS" >"$STATE/htpasswd"
    cat >"$STATE/registry-open.yml" <<YML
version: 0.1
log: { level: warn }
storage: { filesystem: { rootdirectory: $STATE/registry-open }, delete: { enabled: true } }
http: { addr: 127.0.0.1:$REG_PORT }
YML
    cat >"$STATE/registry-auth.yml" <<YML
version: 0.1
log: { level: warn }
storage: { filesystem: { rootdirectory: $STATE/registry-auth }, delete: { enabled: true } }
http: { addr: 127.0.0.1:$AUTH_PORT }
auth: { htpasswd: { realm: kiln-test, path: $STATE/htpasswd } }
YML
    docker-registry serve "$STATE/registry-open.yml" >"$STATE/registry-open.log" 2>&1 &
    echo $! >"$STATE/registry-open.pid"
    docker-registry serve "$STATE/registry-auth.yml" >"$STATE/registry-auth.log" 2>&1 &
    echo $! >"$STATE/registry-auth.pid"

    export DOCKER_HOST="unix://$STATE/docker.sock"
    wait_for dockerd docker version || { tail -20 "$STATE/dockerd.log" >&2; exit 1; }
    wait_for "open registry" curl -sf "http://127.0.0.1:$REG_PORT/v2/"
    wait_for "auth registry" curl -sf -u "$REG_USER:$REG_PASS" "http://127.0.0.1:$AUTH_PORT/v2/"
    # Registry logins for pushing live in a private docker config, never ~/.docker.
    mkdir -p "$STATE/docker-config"
    DOCKER_CONFIG="$STATE/docker-config" docker login -u "$REG_USER" --password-stdin "127.0.0.1:$AUTH_PORT" \
        <<<"$REG_PASS" >/dev/null 2>&1
    cat >"$STATE/env" <<ENV
export DOCKER_HOST=unix://$STATE/docker.sock
export DOCKER_CONFIG=$STATE/docker-config
export KILN_TEST_DOCKER_HOST=unix://$STATE/docker.sock
export KILN_TEST_REGISTRY=127.0.0.1:$REG_PORT
export KILN_TEST_AUTH_REGISTRY=127.0.0.1:$AUTH_PORT
export KILN_TEST_REGISTRY_USER=$REG_USER
export KILN_TEST_REGISTRY_PASSWORD=$REG_PASS
export KILN_TEST_BMC_VENV=$STATE/bmc-venv
ENV
    echo "test services up; source $STATE/env"
}

stop_pidfile() {
    local f=$1
    [ -f "$f" ] || return 0
    local pid
    pid=$(cat "$f")
    if kill "$pid" 2>/dev/null; then
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
}

down() {
    if [ -S "$STATE/docker.sock" ] && [ "${1:-}" != quiet ]; then
        # Leave no action containers behind.
        ids=$(DOCKER_HOST="unix://$STATE/docker.sock" docker ps -aq 2>/dev/null || true)
        [ -z "$ids" ] || DOCKER_HOST="unix://$STATE/docker.sock" docker rm -f $ids >/dev/null 2>&1 || true
    fi
    stop_pidfile "$STATE/registry-open.pid"
    stop_pidfile "$STATE/registry-auth.pid"
    stop_pidfile "$STATE/docker.pid"
    # dockerd leaves its containerd behind when killed hard.
    pkill -f "containerd.*$STATE/docker/exec" 2>/dev/null || true
    if [ "${1:-}" != quiet ]; then echo "test services down"; fi
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
