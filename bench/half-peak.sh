#!/usr/bin/env bash
# Latency at half of peak throughput: runs the bench's default shape
# (4 services, 100 operations outstanding each) for the peak, then tries
# outstanding counts from small up until the throughput reaches half that
# peak, and prints the latency percentiles there: once with 4 services,
# and once with 1 service driving the same total load from one thread.
#
#   bench/half-peak.sh                  # writes
#   bench/half-peak.sh --mix read --duration-s 8
#   bench/half-peak.sh --bin-dir /tmp/other/release
#
# Why two shapes: on a machine of few cores the load generator's threads
# compete with the bricks for the same cores, and a service thread waiting
# for a core adds to every latency it measures. One service thread keeps
# that share small. Every run is `bench --spawn` (its own cluster from
# cluster.toml, with a scratch data_dir) under a time bound.
set -euo pipefail

MIX=write
DURATION_S=5
BIN_DIR=""

while [ $# -gt 0 ]; do
    case "$1" in
        --mix) MIX=$2; shift ;;
        --duration-s) DURATION_S=$2; shift ;;
        --bin-dir) BIN_DIR=$2; shift ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "half-peak.sh: unknown argument $1; see --help" >&2; exit 64 ;;
    esac
    shift
done
case "$DURATION_S" in
    ''|*[!0-9]*|0) echo "half-peak.sh: --duration-s takes whole seconds from 1 on" >&2; exit 64 ;;
esac

cd "$(dirname "$0")/.."
if [ -z "$BIN_DIR" ]; then
    timeout 1800 cargo build --release -p bench -p brick
    BIN_DIR=target/release
fi
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT

# One run; sets OPS, P50, P99 and P999 (microseconds).
run() {
    timeout $((DURATION_S + 120)) "$BIN_DIR/bench" --spawn --mix "$MIX" --warmup-s 1 \
        --duration-s "$DURATION_S" --services "$1" --outstanding "$2" --json >"$OUT"
    OPS=$(grep -o '"ops_per_s":[0-9.eE+]*' "$OUT" | head -n 1 | cut -d: -f2)
    OPS=${OPS%.*}
    P50=$(grep -o '"p50":[0-9]*' "$OUT" | head -n 1 | cut -d: -f2)
    P99=$(grep -o '"p99":[0-9]*' "$OUT" | head -n 1 | cut -d: -f2)
    P999=$(grep -o '"p999":[0-9]*' "$OUT" | head -n 1 | cut -d: -f2)
}

row() {
    awk -v what="$1" -v s="$2" -v k="$3" -v ops="$OPS" -v peak="$PEAK" \
        -v p50="$P50" -v p99="$P99" -v p999="$P999" 'BEGIN {
            printf "%-10s %8d %11d %10d %8.2f %9.2f %9.2f %9.2f\n", what, s, k, ops, ops / peak,
                p50 / 1000, p99 / 1000, p999 / 1000 }'
}

printf '%-10s %8s %11s %10s %8s %9s %9s %9s\n' run services outstanding ops/s x_peak \
    p50_ms p99_ms p999_ms
PEAK=1
run 4 100
PEAK=$OPS
row peak 4 100
# The outstanding counts tried for each shape, smallest first; the first
# run at half the peak or more is the one reported.
for shape in "4:4 6 8 10 12 14 16 20 24 32 48" "1:8 16 24 32 40 48 56 64 80 100 140 200"; do
    services=${shape%%:*}
    reached=""
    for k in ${shape#*:}; do
        run "$services" "$k"
        if [ "$((OPS * 2))" -ge "$PEAK" ]; then
            row half-peak "$services" "$k"
            reached=1
            break
        fi
    done
    if [ -z "$reached" ]; then
        row "below" "$services" "$k"
        echo "half-peak.sh: $services service(s) did not reach half the peak" >&2
    fi
done
