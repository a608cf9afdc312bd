#!/usr/bin/env bash
# Measures Redis (and, with --dds, a local DDS cluster) with the same load
# shape and prints one table: ops/s and p99 latency per mix.
#
#   bench/vs-redis.sh                  # DDS and Redis, mixes read and write
#   bench/vs-redis.sh --redis-only     # Redis alone
#   bench/vs-redis.sh --duration-s 3 --warmup-s 1 --rounds 5
#
# Each of --rounds rounds (default 3) runs every mix against Redis and then
# against DDS, so the two sides of a ratio are measured minutes apart at
# most; the ratios are given per round and as the median of the rounds.
# Installs redis-server if it is missing (needs root or sudo), starts it on
# 127.0.0.1:$REDIS_PORT (default 6399) without persistence, and stops it on
# exit. Every step has a time bound, so the script is safe to run in CI.
set -euo pipefail

REDIS_PORT=${REDIS_PORT:-6399}
WARMUP_S=2
DURATION_S=10
DDS=1
ROUNDS=3
MIXES=(read write)

while [ $# -gt 0 ]; do
    case "$1" in
        --dds) DDS=1 ;;
        --redis-only) DDS=0 ;;
        --warmup-s) WARMUP_S=$2; shift ;;
        --duration-s) DURATION_S=$2; shift ;;
        --rounds) ROUNDS=$2; shift ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "vs-redis.sh: unknown argument $1; see --help" >&2; exit 64 ;;
    esac
    shift
done
case "$ROUNDS" in
    ''|*[!0-9]*|0) echo "vs-redis.sh: --rounds takes a number from 1 on" >&2; exit 64 ;;
esac

cd "$(dirname "$0")/.."
WORK=$(mktemp -d)
REDIS_PID=""
cleanup() {
    if [ -n "$REDIS_PID" ]; then
        kill "$REDIS_PID" 2>/dev/null || true
        wait "$REDIS_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

if ! command -v redis-server >/dev/null; then
    echo "== installing redis-server"
    # The package lists may be stale; refresh them only if the install fails.
    if ! as_root timeout 600 apt-get install -y redis-server; then
        as_root timeout 600 apt-get update
        as_root timeout 600 apt-get install -y redis-server
    fi
fi

echo "== building"
if [ "$DDS" = 1 ]; then
    timeout 1800 cargo build --release -p bench -p brick
else
    timeout 1800 cargo build --release -p bench
fi
BENCH=target/release/bench

if timeout 2 redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then
    echo "vs-redis.sh: something already answers on port $REDIS_PORT; stop it or set REDIS_PORT" >&2
    exit 1
fi
echo "== starting redis-server on 127.0.0.1:$REDIS_PORT"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
    >"$WORK/redis.log" 2>&1 &
REDIS_PID=$!
ready=0
for _ in $(seq 1 100); do
    if [ "$(timeout 2 redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; then
        ready=1
        break
    fi
    sleep 0.1
done
if [ "$ready" != 1 ]; then
    echo "vs-redis.sh: redis-server did not answer within 10 s; its log:" >&2
    cat "$WORK/redis.log" >&2
    exit 1
fi

# A run may take the warmup, the measurement, a preload and a drain; more
# than this means it hangs.
RUN_TIMEOUT_S=$(awk -v w="$WARMUP_S" -v d="$DURATION_S" 'BEGIN { printf "%d", w + d + 120 }')

# One JSON number from a bench report: field "$2" of file "$1".
field() {
    grep -o "\"$2\":[-0-9.eE+]*" "$1" | head -n 1 | cut -d: -f2
}

ROWS=()
declare -A OPS PER_KEY P99
row() { # target mix round json-file
    local ops p99 per_key
    ops=$(field "$4" ops_per_s)
    p99=$(field "$4" p99)
    per_key=$(field "$4" bytes_per_key)
    OPS[$1-$2-$3]=$ops
    P99[$1-$2-$3]=$p99
    PER_KEY[$1-$2-$3]=$per_key
    ROWS+=("$(printf '%-5s %-6s %-6s %12.0f %9s %11s' "$3" "$1" "$2" "$ops" "$p99" "${per_key:+$(printf '%.0f' "$per_key")}")")
}

# bench --spawn starts the bricks of cluster.toml (brick binary next to
# bench), runs the same load through ddslib, and stops the bricks.
# The cluster keeps its data in the script's scratch folder, not the tree's.
sed "s|^data_dir = .*|data_dir = \"$WORK/data\"|" cluster.toml >"$WORK/cluster.toml"

for round in $(seq 1 "$ROUNDS"); do
    for mix in "${MIXES[@]}"; do
        echo "== round $round, redis, mix $mix"
        # Each run starts from an empty server, so its memory figure is its own.
        timeout 10 redis-cli -p "$REDIS_PORT" flushall >/dev/null
        timeout "$RUN_TIMEOUT_S" "$BENCH" --target redis --redis-addr "127.0.0.1:$REDIS_PORT" --mix "$mix" \
            --warmup-s "$WARMUP_S" --duration-s "$DURATION_S" --json >"$WORK/redis.json"
        row redis "$mix" "$round" "$WORK/redis.json"
        if [ "$DDS" = 1 ]; then
            echo "== round $round, dds, mix $mix"
            rm -rf "$WORK/data"
            timeout "$RUN_TIMEOUT_S" "$BENCH" --target dds --spawn --config "$WORK/cluster.toml" --mix "$mix" \
                --warmup-s "$WARMUP_S" --duration-s "$DURATION_S" --json >"$WORK/dds.json"
            row dds "$mix" "$round" "$WORK/dds.json"
        fi
    done
done

echo
printf '%-5s %-6s %-6s %12s %9s %11s\n' round target mix ops/s p99_us B/key
for r in "${ROWS[@]}"; do
    echo "$r"
done

# The middle value of the numbers given (the mean of the middle two for an
# even count).
median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

if [ "$DDS" = 1 ]; then
    echo
    echo "ratios, DDS / Redis, each from one round:"
    printf '%-5s %-6s %12s %12s %14s\n' round mix ops/s p99 memory/key
    declare -A RATIOS
    for mix in "${MIXES[@]}"; do
        for round in $(seq 1 "$ROUNDS"); do
            key=$mix-$round
            line=$(awk -v d="${OPS[dds-$key]}" -v r="${OPS[redis-$key]}" \
                -v dp="${P99[dds-$key]}" -v rp="${P99[redis-$key]}" \
                -v dk="${PER_KEY[dds-$key]:-0}" -v rk="${PER_KEY[redis-$key]:-0}" \
                'BEGIN { printf "%.4f %.4f %.4f", d / r, dp / rp, (rk > 0 && dk > 0) ? dk / rk : 0 }')
            read -r ops p99 mem <<<"$line"
            RATIOS[$mix-ops]+=" $ops"
            RATIOS[$mix-p99]+=" $p99"
            RATIOS[$mix-mem]+=" $mem"
            printf '%-5s %-6s %11.2fx %11.2fx %13s\n' "$round" "$mix" "$ops" "$p99" \
                "$(awk -v m="$mem" 'BEGIN { print (m > 0) ? sprintf("%.2fx", m) : "-" }')"
        done
    done
    echo
    echo "median of the $ROUNDS rounds:"
    printf '%-6s %12s %12s %14s\n' mix ops/s p99 memory/key
    for mix in "${MIXES[@]}"; do
        # shellcheck disable=SC2086 # the lists are space-separated numbers
        printf '%-6s %11.2fx %11.2fx %13s\n' "$mix" "$(median ${RATIOS[$mix-ops]})" \
            "$(median ${RATIOS[$mix-p99]})" \
            "$(awk -v m="$(median ${RATIOS[$mix-mem]})" 'BEGIN { print (m > 0) ? sprintf("%.2fx", m) : "-" }')"
    done
fi
