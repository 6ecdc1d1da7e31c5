#!/usr/bin/env bash
# Compares two hook images' boot to "agent started", interleaved, under
# QEMU/TCG: the way docs/hook-image.md's "Boot to agent started, before and
# after" was measured. No kiln server: the agent is pointed at a closed
# port, and the boot is timed to the console's `kiln-hook: agent started`.
#
#   scripts/hook-boot-ab.sh BEFORE_DIR AFTER_DIR [RUNS]     (default 5 runs each)
#
# Each DIR is a hook-image/build.sh output (vmlinuz, initramfs.img). Two
# kinds of boot per run: QEMU loads kernel and initramfs itself
# (-kernel/-initrd), and QEMU's iPXE ROM downloads them over HTTP from a
# server on 127.0.0.1 (QEMU's user network reaches it as 10.0.2.2), which
# adds the download of each image's size. Prints every run and the medians.
# An old image to compare with: `git archive REV hook-image | tar -x -C
# /tmp/old && KILN_AGENT_BIN=... bash /tmp/old/hook-image/build.sh /tmp/oldhook`.
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,16p' "$0" >&2; exit 2; }
A=$(cd "$1" && pwd)
B=$(cd "$2" && pwd)
RUNS=${3:-5}
WORK=$(mktemp -d /tmp/kiln-hook-ab.XXXXXX)
PORT=$((20000 + RANDOM % 10000))
HTTP_PID=
cleanup() { [ -n "$HTTP_PID" ] && kill "$HTTP_PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
CMDLINE="console=ttyS0 panic=-1 kiln.server=http://10.0.2.2:9 kiln.agent_id=52:54:00:12:34:56 kiln.token=unused"
mkdir -p "$WORK/www"
ln -s "$A" "$WORK/www/before"
ln -s "$B" "$WORK/www/after"
for l in before after; do
    printf '#!ipxe\nkernel http://10.0.2.2:%s/%s/vmlinuz initrd=initramfs %s\ninitrd --name initramfs http://10.0.2.2:%s/%s/initramfs.img\nboot\n' \
        "$PORT" "$l" "$CMDLINE" "$PORT" "$l" > "$WORK/www/$l.ipxe"
done
python3 -m http.server "$PORT" --bind 127.0.0.1 --directory "$WORK/www" >/dev/null 2>&1 &
HTTP_PID=$!

# boot LABEL KIND: seconds from QEMU start to "agent started" (or "-")
boot() {
    local label=$1 kind=$2 dir log t0
    dir=$WORK/www/$label
    log=$WORK/$label.$kind.log
    local qemu=(qemu-system-x86_64 -nodefaults -machine q35 -accel tcg,thread=multi -cpu max -m 2048 -smp 2
        -display none -serial stdio -name "kiln-hook-ab-$label-$kind-$$")
    if [ "$kind" = kernel ]; then
        qemu+=(-nic user,model=virtio-net-pci -kernel "$dir/vmlinuz" -initrd "$dir/initramfs.img" -append "$CMDLINE")
    else
        qemu+=(-nic "user,model=virtio-net-pci,bootfile=http://10.0.2.2:$PORT/$label.ipxe" -boot n)
    fi
    t0=$(date +%s.%N)
    timeout 180 "${qemu[@]}" 2>&1 | while IFS= read -r line; do
        case "$line" in
            *"kiln-hook: agent started"*)
                awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f\n", b-a}'
                pkill -f "kiln-hook-ab-$label-$kind-$$" || true ;;
        esac
    done > "$log.t"
    if [ -s "$log.t" ]; then cat "$log.t"; else echo -; fi
}

median() { sort -n | awk '{a[NR]=$1} END {if (NR==0) print "-"; else if (NR%2) print a[(NR+1)/2]; else printf "%.2f\n", (a[NR/2]+a[NR/2+1])/2}'; }

echo "before: $A ($(stat -c %s "$A/initramfs.img") bytes)"
echo "after:  $B ($(stat -c %s "$B/initramfs.img") bytes)"
for i in $(seq "$RUNS"); do
    for kind in kernel ipxe; do
        for l in before after; do
            t=$(boot "$l" "$kind")
            echo "run $i $kind $l $t"
            [ "$t" = - ] || echo "$t" >> "$WORK/$l.$kind.times"
        done
    done
done
for kind in kernel ipxe; do
    echo "median, QEMU start to agent started, $kind boot: before $(median < "$WORK/before.$kind.times" 2>/dev/null || echo -) s, after $(median < "$WORK/after.$kind.times" 2>/dev/null || echo -) s"
done
