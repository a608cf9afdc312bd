#!/usr/bin/env bash
# Brick-count sweep: the same load against local clusters of 1..N bricks
# (2 replicas, or 1 with a single brick; 8 partitions), one table of ops/s
# and p99 per brick count. On a machine with more cores than bricks the
# throughput should grow with the bricks; on a small one it shows where the
# cores run out.
#
#   bench/sweep.sh                       # 1..4 bricks, mixes read and write
#   bench/sweep.sh --max-bricks 8 --duration-s 10
#
# Every brick listens on 127.0.0.1 on a port from 7401 up; every step has a
# time bound.
set -euo pipefail

MAX_BRICKS=4
WARMUP_S=1
DURATION_S=5
MIXES=(read write)
BASE_PORT=${BASE_PORT:-7401}

while [ $# -gt 0 ]; do
    case "$1" in
        --max-bricks) MAX_BRICKS=$2; shift ;;
        --warmup-s) WARMUP_S=$2; shift ;;
        --duration-s) DURATION_S=$2; shift ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "sweep.sh: unknown argument $1; see --help" >&2; exit 64 ;;
    esac
    shift
done
if ! [[ "$MAX_BRICKS" =~ ^[0-9]+$ ]] || [ "$MAX_BRICKS" -lt 1 ] || [ "$MAX_BRICKS" -gt 64 ]; then
    echo "sweep.sh: --max-bricks must be 1..64" >&2
    exit 64
fi

cd "$(dirname "$0")/.."
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

echo "== building"
timeout 1800 cargo build --release -p bench -p brick
BENCH=target/release/bench
RUN_TIMEOUT_S=$(awk -v w="$WARMUP_S" -v d="$DURATION_S" 'BEGIN { printf "%d", w + d + 120 }')

field() {
    grep -o "\"$2\":[-0-9.eE+]*" "$1" | head -n 1 | cut -d: -f2
}

ROWS=()
for bricks in $(seq 1 "$MAX_BRICKS"); do
    replicas=$(( bricks < 2 ? 1 : 2 ))
    config="$WORK/cluster-$bricks.toml"
    {
        printf '[cluster]\nreplicas = %d\npartitions = 8\npartition_capacity_mb = 100\ndata_dir = "%s/data"\n\n' \
            "$replicas" "$WORK"
        for id in $(seq 1 "$bricks"); do
            printf '[[brick]]\nid = %d\naddress = "127.0.0.1:%d"\n\n' "$id" $(( BASE_PORT + id - 1 ))
        done
    } >"$config"
    for mix in "${MIXES[@]}"; do
        echo "== $bricks bricks, mix $mix"
        rm -rf "$WORK/data"
        timeout "$RUN_TIMEOUT_S" "$BENCH" --target dds --spawn --config "$config" --mix "$mix" \
            --warmup-s "$WARMUP_S" --duration-s "$DURATION_S" --json >"$WORK/run.json"
        ROWS+=("$(printf '%6d %8d %-6s %12.0f %9s' "$bricks" "$replicas" "$mix" \
            "$(field "$WORK/run.json" ops_per_s)" "$(field "$WORK/run.json" p99)")")
    done
done

echo
echo "cores: $(nproc)"
printf '%6s %8s %-6s %12s %9s\n' bricks replicas mix ops/s p99_us
for r in "${ROWS[@]}"; do
    echo "$r"
done
