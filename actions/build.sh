#!/usr/bin/env bash
# Builds kiln's action images and pushes them to a registry.
#
#   actions/build.sh REGISTRY[,REGISTRY...]
#
# Images have no base image: each is a root filesystem assembled here from
# static binaries and imported with `docker import`, so building needs no
# registry on the internet. Uses the Docker engine of $DOCKER_HOST; pushes to
# registries that need a login use the credentials in $DOCKER_CONFIG.
set -euo pipefail

[ $# -ge 1 ] || { echo "usage: $0 REGISTRY[,REGISTRY...]" >&2; exit 2; }
IFS=, read -r -a REGISTRIES <<<"$1"
HERE=$(cd "$(dirname "$0")" && pwd)
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

push() { # name, tag, import-args...
    local name=$1 tag=$2; shift 2
    local first="${REGISTRIES[0]}/kiln/$name:$tag"
    "$@" | docker import -c 'ENV PATH=/bin' -c 'CMD ["/bin/sh"]' - "$first" >/dev/null
    for reg in "${REGISTRIES[@]}"; do
        local ref="$reg/kiln/$name:$tag"
        [ "$ref" = "$first" ] || docker tag "$first" "$ref"
        docker push -q "$ref" >/dev/null
        echo "pushed $ref"
    done
}

push busybox v1 busybox_rootfs
