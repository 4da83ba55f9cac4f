#!/usr/bin/env bash
# `kapell fleet plan` on a fleet far larger than this machine can boot (see docs/benchmarks.md).
# Not a test: it prints figures and asserts only that every host got a line in the report.
#
#     sudo bench/fleet-plan.sh [HOSTS] [PARALLEL] [KAPELL]   (defaults: 10000, 256, target/release/kapell)
#
# Makes a bridge of its own (a free 10.231.N.0/24 of the test rig, taken under the rig's lock so
# no rig test uses it at the same time) with no hosts on it, writes a fleet.toml of HOSTS hosts
# whose addresses are that subnet's .2–.254 in turn (nothing answers: every connection fails
# once the neighbour lookup gives up, about 3 s) and one stack placed on every host, then runs
# `kapell fleet plan` under /usr/bin/time with `parallel = PARALLEL`. Printed: wall time, the
# controller's CPU time and peak RSS (kapell alone: ssh processes are its children and GNU time
# reports the largest single process), the most ssh processes and open fds at once, and the
# report's shape (one UNREACHABLE line per host). The bridge and the files go on exit.
set -euo pipefail

HOSTS=${1:-10000}
PARALLEL=${2:-256}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
KAPELL=${3:-$ROOT/target/release/kapell}
LOCKS=/var/tmp/kapell-test/nets
WORK=$(mktemp -d /var/tmp/kapell-fleet-plan.XXXXXX)
[ "$(id -u)" = 0 ] || { echo "needs root (it makes a bridge)"; exit 1; }
[ -x "$KAPELL" ] || { echo "no kapell at $KAPELL: cargo build --release"; exit 1; }
mkdir -p "$LOCKS"

BRIDGE=
for n in $(seq 254 -1 1); do
    exec {lockfd}>"$LOCKS/$n.lock"
    if flock -n "$lockfd" && ! ip link show "kapell$n" >/dev/null 2>&1 \
        && ! ip -o addr show | grep -q " 10\.231\.$n\."; then
        BRIDGE=kapell$n
        NET=$n
        break
    fi
    exec {lockfd}>&-
done
[ -n "$BRIDGE" ] || { echo "no free 10.231.N.0/24"; exit 1; }
cleanup() {
    ip link del "$BRIDGE" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
ip link add "$BRIDGE" type bridge
ip addr add "10.231.$NET.1/24" dev "$BRIDGE"
ip link set "$BRIDGE" up

mkdir -p "$WORK/config" "$WORK/runtime"
{
    printf '[defaults]\nparallel = %s\n\n' "$PARALLEL"
    for i in $(seq 0 $((HOSTS - 1))); do
        printf '[hosts.h%05d]\naddress = "10.231.%s.%s"\n\n' "$i" "$NET" $((i % 253 + 2))
    done
} > "$WORK/config/fleet.toml"
for i in $(seq 0 9); do
    printf '[services.svc%s]\nexec = ["/bin/sleep", "%s"]\nplacement = { global = true }\n\n' "$i" $((100000 + i))
done > "$WORK/config/shop.toml"

# Peaks of ssh children and open fds, sampled while the plan runs.
watch_peaks() {
    local pid=$1 procs=0 fds=0 p f
    while kill -0 "$pid" 2>/dev/null; do
        p=$(pgrep -c -P "$pid" ssh || true)
        f=$(ls "/proc/$pid/fd" 2>/dev/null | wc -l || true)
        [ "$p" -gt "$procs" ] && procs=$p
        [ "$f" -gt "$fds" ] && fds=$f
        sleep 0.2
    done
    echo "$procs $fds" > "$WORK/peaks"
}
echo "kapell fleet plan: $HOSTS hosts on $BRIDGE (10.231.$NET.0/24, nothing answers), parallel = $PARALLEL"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
start=$(date +%s.%N)
KAPELL_CONFIG_DIR=$WORK/config KAPELL_RUNTIME_DIR=$WORK/runtime KAPELL_STATE_DIR=$WORK/runtime/state \
    /usr/bin/time -f '%e %U %S %M' -o "$WORK/time" "$KAPELL" fleet plan > "$WORK/report" 2> "$WORK/stderr" &
timepid=$!
kpid=
for _ in $(seq 50); do
    kpid=$(pgrep -P "$timepid" || true)
    [ -n "$kpid" ] && break
    sleep 0.1
done
[ -n "$kpid" ] && watch_peaks "$kpid" &
wait "$timepid" || true
wait
end=$(date +%s.%N)
# GNU time puts "Command exited with non-zero status 3" first: plan exits 3 when a host is unreachable.
read -r wall user sys rss < <(tail -1 "$WORK/time")
read -r procs fds < "$WORK/peaks" 2>/dev/null || { procs=?; fds=?; }
lines=$(grep -c ': UNREACHABLE: ' "$WORK/report" || true)
echo "load average after:  $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| hosts | parallel | wall | controller CPU (user + sys) | kapell peak RSS | ssh processes at once | kapell's fds | UNREACHABLE lines |"
echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
printf '| %s | %s | %.1f s | %.1f s | %.1f MiB | %s | %s | %s |\n' "$HOSTS" "$PARALLEL" "$wall" \
    "$(echo "$user + $sys" | bc)" "$(echo "$rss / 1024" | bc -l)" "$procs" "$fds" "$lines"
echo
echo "The report's first and last lines:"
head -2 "$WORK/report"
echo "…"
tail -2 "$WORK/report"
[ "$lines" = "$HOSTS" ] || { echo "expected one UNREACHABLE line per host"; exit 1; }
