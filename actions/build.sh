#!/usr/bin/env bash
# Builds kiln's action images and pushes them to a registry.
#
#   actions/build.sh REGISTRY[,REGISTRY...]
#
# Images have no base image: each is a root filesystem assembled here from
# static binaries (and, where an action needs one, a host tool with its
# shared libraries) and imported with `docker import`, so building needs no
# registry on the internet.
#
# The action library (actions/<name>/) becomes REGISTRY/kiln/actions/<name>
# tagged with the workspace version and `latest`; the test images busybox
# busybox-handshake (busybox labelled as speaking the terminal handshake) and
# waitdaemon become REGISTRY/kiln/<name>:v1.
# KILN_IMAGE_PREFIX replaces that `kiln` (e.g. a branch's own images beside
# main's in a shared registry; the tests read KILN_TEST_IMAGE_PREFIX).
# Uses the Docker engine of $DOCKER_HOST; pushes to
# registries that need a login use the credentials in $DOCKER_CONFIG.
#
# KILN_IMAGE_TAG=TAG pushes the actions as REGISTRY/kiln/actions/<name>:TAG
# only (no `latest`, no busybox), so a branch's images can be tested in a
# shared registry without replacing anyone's; the integration tests
# (tests/src/lib.rs) read the same variable to pick them.
set -euo pipefail

[ $# -ge 1 ] || { echo "usage: $0 REGISTRY[,REGISTRY...]" >&2; exit 2; }
IFS=, read -r -a REGISTRIES <<<"$1"
HERE=$(cd "$(dirname "$0")" && pwd)
PREFIX=${KILN_IMAGE_PREFIX:-kiln}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# busybox: a shell and the usual tools (sh, dd, ps, sleep, ...), for sample
# workflows and tests. Its version is the busybox-static package's.
busybox_rootfs() {
    local root=$WORK/busybox
    mkdir -p "$root"/{bin,etc,dev,proc,sys,tmp,root}
    cp /bin/busybox "$root/bin/busybox"
    for applet in $(/bin/busybox --list); do
        [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
    done
    cp "$HERE/busybox/passwd" "$root/etc/passwd"
    # Test helpers, static so they need nothing from the image.
    gcc -static -O0 -o "$root/bin/kiln-segfault" "$HERE/testbins/segfault.c"
    tar -C "$root" -c .
}

# waitdaemon: a stand-in for Tinkerbell's community waitdaemon (it starts a
# detached copy of itself through the Docker socket and exits 0), for the
# test that kiln runs that pattern unchanged.
waitdaemon_rootfs() {
    local root=$WORK/waitdaemon
    mkdir -p "$root"/{bin,etc,dev,proc,sys,tmp}
    gcc -static -O1 -o "$root/bin/waitdaemon" "$HERE/testbins/waitdaemon.c"
    cp "$HERE/busybox/passwd" "$root/etc/passwd"
    tar -C "$root" -c .
}

# Copies a host binary (or plain file) into a root filesystem at the same
# path, with every shared library it loads and the dynamic loader.
copy_with_libs() { # root, path
    local root=$1 path=$2 lib
    mkdir -p "$root$(dirname "$path")"
    cp -L "$path" "$root$path"
    # ldd prints "name => /path (addr)" and the loader as "/lib64/ld-... (addr)".
    for lib in $(ldd "$path" 2>/dev/null | awk '/=> \//{print $3} /^\t\//{print $1}'); do
        [ -e "$root$lib" ] && continue
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done
}

# KILN_ACTIONS="image2disk writefile" rebuilds just those (development).
read -r -a ACTIONS <<<"${KILN_ACTIONS:-image2disk partition format writefile cexec kexec archive2disk oci2disk qemuimg2disk slurp rootio syslinux grub2disk}"
TARGET=x86_64-unknown-linux-gnu
VERSION=$(awk -F'"' '/^version *=/{print $2; exit}' "$HERE/../Cargo.toml")

build_actions() {
    local packages=() a
    for a in "${ACTIONS[@]}"; do packages+=(-p "kiln-action-$a"); done
    # Static glibc binaries (no musl here); --target keeps RUSTFLAGS off
    # build scripts and proc macros.
    (cd "$HERE/.." && RUSTFLAGS='-C target-feature=+crt-static' \
        cargo build --quiet --release --target "$TARGET" "${packages[@]}")
}

action_rootfs() { # name
    local name=$1 root=$WORK/action-$1 tool
    mkdir -p "$root"/{bin,dev,proc,sys,tmp,etc}
    cp "$HERE/../target/$TARGET/release/$name" "$root/bin/$name"
    # image-tools: a host path (or glob) a line; `@busybox-applets` links
    # every busybox applet the image does not have otherwise into /bin.
    local applets=
    if [ -f "$HERE/$name/image-tools" ]; then
        while read -r tool; do
            case $tool in
                ''|'#'*) continue ;;
                @busybox-applets) applets=1; continue ;;
            esac
            for path in $tool; do copy_with_libs "$root" "$path"; done
        done <"$HERE/$name/image-tools"
    fi
    if [ -n "$applets" ]; then
        for tool in $("$root/bin/busybox" --list); do
            [ -e "$root/bin/$tool" ] || ln -s busybox "$root/bin/$tool"
        done
    fi
    tar -C "$root" -c .
}

push() { # name, tag, entrypoint, rootfs-command...
    local name=$1 tag=$2 entrypoint=$3; shift 3
    local first="${REGISTRIES[0]}/$PREFIX/$name:$tag"
    local changes=(-c 'ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin' -c "$entrypoint")
    # An action that speaks the terminal handshake says so by this label:
    # the agent offers the handshake to such images only
    # (docs/action-contract.md).
    case $name in
        actions/kexec | busybox-handshake) changes+=(-c 'LABEL kiln.terminal-handshake=v1') ;;
    esac
    "$@" | docker import "${changes[@]}" - "$first" >/dev/null
    for reg in "${REGISTRIES[@]}"; do
        local ref="$reg/$PREFIX/$name:$tag"
        [ "$ref" = "$first" ] || docker tag "$first" "$ref"
        docker push -q "$ref" >/dev/null
        echo "pushed $ref"
    done
}

TAG=${KILN_IMAGE_TAG:-$VERSION}
# KILN_NO_BUSYBOX=1 (or a KILN_IMAGE_TAG of one's own) leaves the
# registry's test images alone (rebuilding only some actions).
if [ -z "${KILN_NO_BUSYBOX:-}" ] && [ -z "${KILN_IMAGE_TAG:-}" ]; then
    push busybox v1 'CMD ["/bin/sh"]' busybox_rootfs
    # The same, labelled as speaking the terminal handshake: for tests of it.
    push busybox-handshake v1 'CMD ["/bin/sh"]' busybox_rootfs
    push waitdaemon v1 'ENTRYPOINT ["/bin/waitdaemon"]' waitdaemon_rootfs
fi

build_actions
for a in "${ACTIONS[@]}"; do
    push "actions/$a" "$TAG" "ENTRYPOINT [\"/bin/$a\"]" action_rootfs "$a"
    [ -z "${KILN_IMAGE_TAG:-}" ] || continue
    for reg in "${REGISTRIES[@]}"; do
        docker tag "$reg/$PREFIX/actions/$a:$VERSION" "$reg/$PREFIX/actions/$a:latest"
        docker push -q "$reg/$PREFIX/actions/$a:latest" >/dev/null
    done
done
