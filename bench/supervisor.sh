#!/usr/bin/env bash
# Supervisor benchmark (docs/benchmarks.md: < 5 MiB RSS per running container service, < 50 ms added to a
# container's start). Not a test: it prints a table and asserts nothing.
#
#     sudo bench/supervisor.sh [RUNS] [REPLICAS]        (defaults: 21 runs, 10 replicas)
#
# Starts a private dockerd (own data root, socket and containerd namespace; no bridge, no
# iptables; user-defined networks from 10.233.0.0/24), imports a busybox image, renders a stack
# with `kapell generate`, then compares what sits in a container service's unit:
#   kapell run           the supervisor, as the generated unit's ExecStart= runs it (network "none")
#   docker run           the docker CLI in the foreground (`docker run --rm --name …`)
#   rm -f + docker run   what a hand-written unit does: ExecStartPre=-docker rm -f, ExecStart=docker run
#   kapell run, stack network   the default: the supervisor makes sure `kapell-bench` exists (it
#                        creates it on the warm-up start) and gives the container its DNS names
#   docker run, same network    the CLI on that network, for comparison
# Start: from the exec of the unit's command(s) to the container's process running (Docker's
# State.StartedAt), median of RUNS (the variants take turns); "to created" is the part until Docker
# has created the container (mostly the client's own work: exec, parsing, connecting), the rest
# is attach + start, mostly Docker's (runc). Memory: VmRSS (which counts every page of the executable
# and its libraries it has mapped, shared with every other process that maps them), PSS (each shared
# page divided among the processes that map it) and private memory (Private_Clean + Private_Dirty,
# what one more service costs) of the process while the container runs, median
# over REPLICAS supervisors running at once. Needs root, docker.io and busybox-static; builds
# kapell in release mode. Everything it starts is stopped by PID and removed on exit.
set -euo pipefail

RUNS=${1:-21}
REPLICAS=${2:-10}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=/var/tmp/kapell-bench-$$
SOCK=$WORK/docker.sock
CGROUP=kapell-bench-$$
IMAGE=kapell-test/busybox:bench
export DOCKER_HOST=unix://$SOCK

[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
for tool in /usr/sbin/dockerd /usr/bin/docker /bin/busybox; do
    [ -x "$tool" ] || { echo "missing $tool (apt-get install docker.io busybox-static)" >&2; exit 1; }
done

DOCKERD_PID=
SUPERVISOR_PIDS=()
cleanup() {
    set +e
    for pid in "${SUPERVISOR_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for pid in "${SUPERVISOR_PIDS[@]}"; do wait "$pid" 2>/dev/null; done
    if [ -n "$DOCKERD_PID" ]; then
        ids=$(docker ps -aq 2>/dev/null)
        [ -n "$ids" ] && docker rm -f $ids >/dev/null 2>&1
        # Docker keeps a network's bridge when it stops: remove the network first.
        docker network rm kapell-bench >/dev/null 2>&1
        kill -TERM "$DOCKERD_PID" 2>/dev/null
        for _ in $(seq 300); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$DOCKERD_PID" 2>/dev/null
        wait "$DOCKERD_PID" 2>/dev/null
    fi
    rm -f /run/kapell/network-kapell-bench.lock; rmdir /run/kapell 2>/dev/null
    grep -o " $WORK[^ ]*" /proc/self/mountinfo | sort -r | while read -r m; do umount "$m"; done
    rm -rf "$WORK"
    for d in /sys/fs/cgroup/*/"$CGROUP" /sys/fs/cgroup/"$CGROUP"; do [ -d "$d" ] && rmdir "$d"; done
    return 0
}
trap cleanup EXIT

echo "building kapell (release)…" >&2
cargo build --release --manifest-path "$ROOT/Cargo.toml" --bin kapell >&2
KAPELL=$ROOT/target/release/kapell

mkdir -p "$WORK"/{stacks,units,rootfs/bin,rootfs/etc,rootfs/tmp}
echo '{"default-address-pools": [{"base": "10.233.0.0/24", "size": 28}]}' > "$WORK/daemon.json"
/usr/sbin/dockerd --config-file="$WORK/daemon.json" --data-root="$WORK/data" --exec-root="$WORK/exec" \
    --pidfile="$WORK/docker.pid" --host="$DOCKER_HOST" --bridge=none --iptables=false --ip-forward=false \
    --ip-masq=false --cgroup-parent="/$CGROUP" --containerd-namespace="kb-$$" \
    --containerd-plugins-namespace="kb-$$-p" >"$WORK/dockerd.log" 2>&1 &
DOCKERD_PID=$!
for _ in $(seq 300); do docker version >/dev/null 2>&1 && break; sleep 0.1; done
docker version >/dev/null || { tail "$WORK/dockerd.log" >&2; exit 1; }

cp /bin/busybox "$WORK/rootfs/bin/"
for applet in $(/bin/busybox --list); do [ "$applet" = busybox ] || ln -s busybox "$WORK/rootfs/bin/$applet"; done
echo 'root:x:0:0:root:/root:/bin/sh' > "$WORK/rootfs/etc/passwd"
tar -C "$WORK/rootfs" -c . | docker import -c 'CMD ["/bin/sh"]' - "$IMAGE" >/dev/null

COMMAND='echo ready; exec sleep 100000'
cat > "$WORK/stacks/bench.toml" <<EOF
enable = false

[services.one]
image = "$IMAGE"
command = ["sh", "-c", "$COMMAND"]
network = "none"
stop_timeout = "1s"

[services.net]
image = "$IMAGE"
command = ["sh", "-c", "$COMMAND"]
stop_timeout = "1s"

[services.many]
image = "$IMAGE"
command = ["sh", "-c", "$COMMAND"]
network = "none"
stop_timeout = "1s"
replicas = $REPLICAS
EOF
"$KAPELL" --config-dir "$WORK/stacks" generate --out "$WORK/units" >/dev/null

now_ns() { date +%s%N; }
ts_ns() { date -d "$1" +%s%N; }
# Waits until file $1 holds "ready" (the container's first line).
wait_ready() { for _ in $(seq 2000); do grep -q '^ready' "$1" 2>/dev/null && return 0; sleep 0.005; done; cat "$1" >&2; return 1; }
median() { sort -n | awk '{a[NR]=$1} END {if (NR == 0) print "-"; else if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
kib() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/status"; }
private_kib() { awk '/^Private_(Clean|Dirty):/ {s += $2} END {print s}' "/proc/$1/smaps_rollup"; }
pss_kib() { awk '$1 == "Pss:" {print $2}' "/proc/$1/smaps_rollup"; }

# One start of container NAME by COMMAND… in the background; prints "total_ms before_create_ms rss_kib private_kib pss_kib".
measure() {
    local name=$1; shift
    local out=$WORK/out.$RANDOM t0 pid created started rss private pss
    t0=$(now_ns)
    "$@" >"$out" 2>&1 &
    pid=$!
    wait_ready "$out"
    created=$(ts_ns "$(docker inspect -f '{{.Created}}' "$name")")
    started=$(ts_ns "$(docker inspect -f '{{.State.StartedAt}}' "$name")")
    # (The hand-written variant's shell has exec'd the CLI by now.)
    rss=$(kib "$pid" VmRSS)
    private=$(private_kib "$pid")
    pss=$(pss_kib "$pid")
    # systemctl stop: SIGTERM. The supervisor stops and removes its container; the CLI only
    # forwards the signal (sleep as PID 1 ignores it), so its container is removed as ExecStop would.
    kill -TERM "$pid" 2>/dev/null || true
    case $name in kapell-*) ;; *) docker rm -f "$name" >/dev/null 2>&1 || true ;; esac
    wait "$pid" 2>/dev/null || true
    rm -f "$out"
    echo "$(( (started - t0) / 1000000 )) $(( (created - t0) / 1000000 )) $rss $private $pss"
}

# The variants take turns within each round, so load from elsewhere on the machine hits all alike.
VARIANTS=(kapell cli unit kapell-net cli-net)
start_of() {
    case $1 in
        kapell) measure kapell-bench-one "$KAPELL" run bench.one --unit-file "$WORK/units/bench-one.service" ;;
        cli) measure cli-bench /usr/bin/docker run --rm --name cli-bench --network none "$IMAGE" sh -c "$COMMAND" ;;
        kapell-net) measure kapell-bench-net "$KAPELL" run bench.net --unit-file "$WORK/units/bench-net.service" ;;
        cli-net) measure cli-net-bench /usr/bin/docker run --rm --name cli-net-bench --network kapell-bench "$IMAGE" sh -c "$COMMAND" ;;
        unit) measure unit-bench bash -c "/usr/bin/docker rm -f unit-bench >/dev/null 2>&1; exec /usr/bin/docker run --rm --name unit-bench --network none $IMAGE sh -c '$COMMAND'" ;;
    esac
}
echo "measuring $RUNS starts of each…" >&2
# warm-up: page cache, image layers; kapell-net's creates the stack network
for v in "${VARIANTS[@]}"; do echo "$v $(start_of "$v")" >>"$WORK/warmup"; done
for _ in $(seq "$RUNS"); do
    for v in "${VARIANTS[@]}"; do echo "$v $(start_of "$v")" >>"$WORK/starts"; done
done
# column N of variant V's results, median
stat_of() { awk -v v="$1" -v n="$2" '$1 == v {print $n}' "$WORK/starts" | median; }
declare -A total before after rss private pss
for v in "${VARIANTS[@]}"; do
    total[$v]=$(stat_of "$v" 2)
    before[$v]=$(stat_of "$v" 3)
    after[$v]=$(awk -v v="$v" '$1 == v {print $2 - $3}' "$WORK/starts" | median)
    rss[$v]=$(stat_of "$v" 4)
    private[$v]=$(stat_of "$v" 5)
    pss[$v]=$(stat_of "$v" 6)
done

echo "measuring $REPLICAS services running at once…" >&2
many_rss=() many_private=() many_pss=()
for i in $(seq "$REPLICAS"); do
    "$KAPELL" run bench.many --instance "$i" --unit-file "$WORK/units/bench-many@.service" >"$WORK/many.$i" 2>&1 &
    SUPERVISOR_PIDS+=($!)
done
for i in $(seq "$REPLICAS"); do wait_ready "$WORK/many.$i"; done
sleep 2 # steady state: output streaming, health and wait requests parked
for pid in "${SUPERVISOR_PIDS[@]}"; do many_rss+=("$(kib "$pid" VmRSS)"); many_private+=("$(private_kib "$pid")"); many_pss+=("$(pss_kib "$pid")"); done
for pid in "${SUPERVISOR_PIDS[@]}"; do kill -TERM "$pid"; done
for pid in "${SUPERVISOR_PIDS[@]}"; do wait "$pid" || true; done
SUPERVISOR_PIDS=()
cli_many=()
for i in $(seq "$REPLICAS"); do
    /usr/bin/docker run --rm --name "cli-many-$i" --network none "$IMAGE" sh -c "$COMMAND" >"$WORK/cli.$i" 2>&1 &
    SUPERVISOR_PIDS+=($!)
done
for i in $(seq "$REPLICAS"); do wait_ready "$WORK/cli.$i"; done
sleep 2
cli_many_rss=() cli_many_private=() cli_many_pss=()
for pid in "${SUPERVISOR_PIDS[@]}"; do cli_many_rss+=("$(kib "$pid" VmRSS)"); cli_many_private+=("$(private_kib "$pid")"); cli_many_pss+=("$(pss_kib "$pid")"); done
for i in $(seq "$REPLICAS"); do docker rm -f "cli-many-$i" >/dev/null 2>&1 || true; done
for pid in "${SUPERVISOR_PIDS[@]}"; do wait "$pid" || true; done
SUPERVISOR_PIDS=()

mib() { awk -v k="$1" 'BEGIN {printf "%.1f MiB", k / 1024}'; }
med() { printf '%s\n' "$@" | median; }
echo
echo "container start (median of $RUNS; from the exec of the unit's command)"
printf '  %-22s %12s %15s %17s\n' "" "to running" "to created" "after create"
for v in "${VARIANTS[@]}"; do
    case $v in
        kapell) label="kapell run" ;; cli) label="docker run (CLI)" ;; unit) label="rm -f + docker run" ;;
        kapell-net) label="kapell run, stack net" ;; cli-net) label="docker run, same net" ;;
    esac
    printf '  %-22s %9s ms %12s ms %14s ms\n' "$label" "${total[$v]}" "${before[$v]}" "${after[$v]}"
done
printf '  %-22s %9s ms\n' "kapell − docker run" "$(awk -v a="${total[kapell]}" -v b="${total[cli]}" 'BEGIN {print a - b}')"
printf '  %-22s %9s ms\n' "  on the stack network" "$(awk -v a="${total[kapell-net]}" -v b="${total[cli-net]}" 'BEGIN {print a - b}')"
printf '  %-22s %9s ms   (network step: stack network vs none)\n' "kapell net − none" "$(awk -v a="${total[kapell-net]}" -v b="${total[kapell]}" 'BEGIN {print a - b}')"
printf '  %-22s %9s ms   (first start, which creates the network; one sample)\n' "kapell, cold network" "$(awk '$1 == "kapell-net" {print $2}' "$WORK/warmup")"
echo
echo "memory of the process in the unit while its container runs (median)"
printf '  %-34s %12s %12s %14s\n' "" "VmRSS" "PSS" "private"
printf '  %-34s %12s %12s %14s\n' "kapell run (one service)" "$(mib "${rss[kapell]}")" "$(mib "${pss[kapell]}")" "$(mib "${private[kapell]}")"
printf '  %-34s %12s %12s %14s\n' "kapell run ($REPLICAS services at once)" "$(mib "$(med "${many_rss[@]}")")" "$(mib "$(med "${many_pss[@]}")")" "$(mib "$(med "${many_private[@]}")")"
printf '  %-34s %12s %12s %14s\n' "docker run CLI (one service)" "$(mib "${rss[cli]}")" "$(mib "${pss[cli]}")" "$(mib "${private[cli]}")"
printf '  %-34s %12s %12s %14s\n' "docker run CLI ($REPLICAS services at once)" "$(mib "$(med "${cli_many_rss[@]}")")" "$(mib "$(med "${cli_many_pss[@]}")")" "$(mib "$(med "${cli_many_private[@]}")")"
echo
echo "Targets (docs/benchmarks.md): < 5 MiB RSS per running container service; < 50 ms added to a container's start"
