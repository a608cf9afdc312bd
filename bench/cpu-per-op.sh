#!/usr/bin/env bash
# Measures the bricks' CPU time per operation under the bench's load (and
# the load generator's, which is ddslib's work plus the bench's own): a
# figure that moves much less than ops/s on a shared machine, so a change
# to the bricks shows in it where throughput is lost in the noise.
#
#   bench/cpu-per-op.sh                      # mix read, then mix write
#   bench/cpu-per-op.sh --mix write --duration-s 8
#   bench/cpu-per-op.sh --bin-dir /tmp/other/release   # another build
#
# Starts the bricks of cluster.toml (with a scratch data_dir) as processes
# of its own, runs `bench --target dds` against them, and reads the bricks'
# user and system time from /proc over the measured part of the run (after
# the preload and the warmup). Prints ops/s, the cores the bricks used,
# their CPU microseconds per operation, and the load generator's. Every
# step has a time bound.
set -euo pipefail

MIXES=(read write)
DURATION_S=8
WARMUP_S=2
BIN_DIR=""

while [ $# -gt 0 ]; do
    case "$1" in
        --mix) MIXES=("$2"); shift ;;
        --duration-s) DURATION_S=$2; shift ;;
        --bin-dir) BIN_DIR=$2; shift ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "cpu-per-op.sh: unknown argument $1; see --help" >&2; exit 64 ;;
    esac
    shift
done
case "$DURATION_S" in
    ''|*[!0-9]*|0|1|2) echo "cpu-per-op.sh: --duration-s takes whole seconds from 3 on" >&2; exit 64 ;;
esac

cd "$(dirname "$0")/.."
if [ -z "$BIN_DIR" ]; then
    timeout 1800 cargo build --release -p bench -p brick
    BIN_DIR=target/release
fi
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

sed "s|^data_dir = .*|data_dir = \"$WORK/data\"|" cluster.toml >"$WORK/cluster.toml"
IDS=$(awk '/^\[\[brick\]\]/ { b = 1 } b && /^id *=/ { print $3; b = 0 }' cluster.toml)

# User plus system time of the processes given, in clock ticks.
ticks() {
    local sum=0 fields pid
    for pid in "$@"; do
        read -r -a fields <"/proc/$pid/stat"
        # Fields 14 and 15 (utime, stime); the name in field 2 has no spaces.
        sum=$((sum + fields[13] + fields[14]))
    done
    echo "$sum"
}

printf '%-6s %10s %12s %16s %17s\n' mix ops/s brick_cores brick_us_per_op client_us_per_op
for mix in "${MIXES[@]}"; do
    rm -rf "$WORK/data"
    PIDS=()
    for id in $IDS; do
        "$BIN_DIR/brick" --config "$WORK/cluster.toml" --id "$id" 2>"$WORK/brick-$id.log" &
        PIDS+=($!)
    done
    sleep 1 # the bricks bind their ports
    timeout $((WARMUP_S + DURATION_S + 120)) "$BIN_DIR/bench" --target dds --config "$WORK/cluster.toml" \
        --mix "$mix" --warmup-s "$WARMUP_S" --duration-s "$DURATION_S" --json >"$WORK/out.json" &
    bench_pid=$!
    # The bench first waits for the bricks, preloads (about a second) and
    # warms up; the window starts after that and ends before the run does.
    sleep $((WARMUP_S + 2))
    # The load generator runs under `timeout`: its one child.
    client_pid=$(pgrep -P "$bench_pid" | head -n 1)
    a=$(ticks "${PIDS[@]}")
    ca=$(ticks "$client_pid")
    ta=$(date +%s.%N)
    sleep $((DURATION_S - 3))
    b=$(ticks "${PIDS[@]}")
    cb=$(ticks "$client_pid")
    tb=$(date +%s.%N)
    wait "$bench_pid"
    ops=$(grep -o '"ops_per_s":[0-9.eE+]*' "$WORK/out.json" | head -n 1 | cut -d: -f2)
    awk -v m="$mix" -v a="$a" -v b="$b" -v ca="$ca" -v cb="$cb" -v ta="$ta" -v tb="$tb" -v ops="$ops" \
        -v hz="$(getconf CLK_TCK)" 'BEGIN {
            cores = (b - a) / hz / (tb - ta); client = (cb - ca) / hz / (tb - ta)
            printf "%-6s %10.0f %12.2f %16.2f %17.2f\n", m, ops, cores, cores / ops * 1e6, client / ops * 1e6 }'
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    wait "${PIDS[@]}" 2>/dev/null || true
done
