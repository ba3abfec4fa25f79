#!/usr/bin/env bash
# Benchmark of the dns output: the real listener on loopback with members in several groups,
# pinned to CPU 0, and dnsperf pinned to CPU 1 asking A and AAAA for the mapped names.
#
#   bench/dns/run.sh                 # 15 s, UDP
#   SECONDS_TO_RUN=20 MODE=tcp bench/dns/run.sh
#
# Environment: SECONDS_TO_RUN (15), MODE (udp|tcp), GROUPS_N (4), MEMBERS (5 per family and
# group), OUTSTANDING (dnsperf -q, 256), CLIENTS (dnsperf -c, 4), DNS_PORT (18253),
# ANNOUNCE_PORT (18282), LISTENER (another build's binary to measure, e.g. the Go rgap's),
# PERF_OUT (a file: record a perf profile of the server), SKIP_BUILD (1:
# measure the release build already there), LOADGEN (dnsperf, or rgap-bench: its `dnsload`,
# UDP only, which batches its sends and reads and so fills the server's core where dnsperf,
# on the machine's other core, cannot). Prints dnsperf's summary: queries per second and
# latency, and the server's CPU over the time measured.
set -euo pipefail

cd "$(dirname "$0")/../.."
SECONDS_TO_RUN=${SECONDS_TO_RUN:-15}
MODE=${MODE:-udp}
GROUPS_N=${GROUPS_N:-4}
MEMBERS=${MEMBERS:-5}
OUTSTANDING=${OUTSTANDING:-256}
CLIENTS=${CLIENTS:-4}
DNS_PORT=${DNS_PORT:-18253}
ANNOUNCE_PORT=${ANNOUNCE_PORT:-18282}
# shellcheck source=bench/dns/common.sh
source bench/dns/common.sh
if [ "$(nproc)" -lt 2 ]; then
    echo "warning: fewer than 2 CPUs; server and dnsperf will share one" >&2
fi

# Config: GROUPS_N groups, one name each (gN.bench.rgap.test), plus one name on an empty
# group so the fallback path is exercised too.
{
    echo "listen:"
    echo "  - 127.0.0.1:$ANNOUNCE_PORT"
    echo "groups:"
    for g in $(seq 1 "$GROUPS_N") $((GROUPS_N + 1)); do
        echo "  - id: $((1000 + g))"
        echo "    psk: $PSK"
        echo "    expire: 1h"
        echo "    readiness_delay: 0s"
    done
    echo "outputs:"
    echo "  - kind: eventlog"
    echo "  - kind: dns"
    echo "    spec:"
    echo "      bind_address: 127.0.0.1:$DNS_PORT"
    echo "      mappings:"
    for g in $(seq 1 "$GROUPS_N"); do
        echo "        g$g.bench.rgap.test:"
        echo "          group: $((1000 + g))"
    done
    echo "        empty.bench.rgap.test:"
    echo "          group: $((1000 + GROUPS_N + 1))"
    echo "          fallback_addresses: [192.0.2.1, 192.0.2.2, '2001:db8::1']"
} >"$WORK/rgap.yaml"

RUST_LOG=info taskset -c 0 "$LISTENER" listener -c "$WORK/rgap.yaml" 2>"$WORK/listener.log" &
LISTENER_PID=$!

wait_for() { # pattern count
    for _ in $(seq 1 200); do
        if [ "$(grep -c -- "$1" "$WORK/listener.log" || true)" -ge "$2" ]; then return 0; fi
        sleep 0.05
    done
    echo "timed out waiting for '$1'; log:" >&2
    cat "$WORK/listener.log" >&2
    exit 1
}
wait_for "$STARTED" 1

# Members: MEMBERS IPv4 and MEMBERS IPv6 addresses per group, each announced once (expire 1h).
for g in $(seq 1 "$GROUPS_N"); do
    for m in $(seq 1 "$MEMBERS"); do
        "$RGAP" agent -g $((1000 + g)) -a "10.$g.0.$m" -k "$PSK" -d "127.0.0.1:$ANNOUNCE_PORT" 2>/dev/null
        "$RGAP" agent -g $((1000 + g)) -a "fd00:$g::$m" -k "$PSK" -d "127.0.0.1:$ANNOUNCE_PORT" 2>/dev/null
    done
done
wait_for "has joined group" $((GROUPS_N * MEMBERS * 2))

{
    for g in $(seq 1 "$GROUPS_N"); do
        echo "g$g.bench.rgap.test A"
        echo "g$g.bench.rgap.test AAAA"
    done
    echo "empty.bench.rgap.test A"
} >"$WORK/queries.txt"

LOADGEN=${LOADGEN:-dnsperf}
case "$LOADGEN" in
dnsperf) ;;
rgap-bench) [ "$MODE" = udp ] || { echo "LOADGEN=rgap-bench sends UDP only" >&2; exit 1; } ;;
*) echo "LOADGEN: dnsperf or rgap-bench, not '$LOADGEN'" >&2; exit 1 ;;
esac
echo "server: $LISTENER listener (dns output) on CPU 0; load: $LOADGEN on CPU 1, $MODE, ${SECONDS_TO_RUN}s," \
    "$GROUPS_N groups x $((MEMBERS * 2)) members, $CLIENTS clients, $OUTSTANDING outstanding"
# CPU is divided by the wall time measured around dnsperf (which takes a moment to start
# and stop), not by the nominal SECONDS_TO_RUN.
TICKS_BEFORE=$(cpu_ticks)
TIME_BEFORE=$(date +%s.%N)
PERF_PID=""
if [ -n "${PERF_OUT:-}" ]; then # profile the server while dnsperf runs
    perf record -F 999 -g -p "$LISTENER_PID" -o "$PERF_OUT" -- sleep "$SECONDS_TO_RUN" 2>/dev/null &
    PERF_PID=$!
fi
if [ "$LOADGEN" = dnsperf ]; then
    taskset -c 1 dnsperf -m "$MODE" -s 127.0.0.1 -p "$DNS_PORT" -d "$WORK/queries.txt" \
        -l "$SECONDS_TO_RUN" -c "$CLIENTS" -T 1 -q "$OUTSTANDING" >"$WORK/dnsperf.txt" 2>&1
else
    taskset -c 1 target/release/rgap-bench dnsload --server "127.0.0.1:$DNS_PORT" \
        --queries "$WORK/queries.txt" --seconds "$SECONDS_TO_RUN" --clients "$CLIENTS" \
        --outstanding "$OUTSTANDING" >"$WORK/dnsperf.txt" 2>&1
fi || {
    cat "$WORK/dnsperf.txt" >&2
    exit 1
}
TICKS_AFTER=$(cpu_ticks)
TIME_AFTER=$(date +%s.%N)
[ -z "$PERF_PID" ] || wait "$PERF_PID"
# The query statistics (TCP runs append connection statistics, left out here).
sed '/Connection Statistics/,$d' "$WORK/dnsperf.txt" |
    grep -E "Queries (sent|completed|lost)|Response codes|Average packet|Run time|Queries per second|Average Latency|Latency StdDev"
# How busy the server's core was: near 100% means the server, not dnsperf, set the pace.
awk -v ticks=$((TICKS_AFTER - TICKS_BEFORE)) -v hz="$(getconf CLK_TCK)" \
    -v before="$TIME_BEFORE" -v after="$TIME_AFTER" \
    -v qps="$(awk '/Queries per second/ {print $4}' "$WORK/dnsperf.txt")" \
    'BEGIN { secs = after - before; cpu = ticks / hz / secs
             printf "  Server CPU:           %.0f%% of one core over %.2f s measured (%.0f queries per CPU-second)\n", cpu * 100, secs, qps / (cpu > 0 ? cpu : 1) }'
