#!/usr/bin/env bash
# Does a DNS query cost the same whatever the size of its group? One rgap listener with two
# names: one on a group of SMALL members, one on a group of LARGE members. dnsperf asks A and
# AAAA for one name, then for the other, alternating, RUNS times each (interleaved, so that
# the drift of a shared machine hits both alike). Server pinned to CPU 0, dnsperf to CPU 1.
#
#   bench/dns/group-size.sh                       # 5 runs of 10 s each, 20 vs 100 000 members
#   RUNS=3 EDNS=0 bench/dns/group-size.sh
#
# Environment: RUNS (5), SECONDS_TO_RUN (10), SMALL (20), LARGE (100000), EDNS (1: queries
# carry EDNS, so UDP answers go up to 1232 bytes; 0: classic 512-byte answers), CLIENTS (4),
# OUTSTANDING (256), DNS_PORT (18253), ANNOUNCE_PORT (18282), PLUGIN_DIR (a directory holding
# another build of librgap_output_dns.so to measure instead, e.g. an older one), LISTENER
# (another listener binary, e.g. the Go rgap's).
# Members are half IPv4, half IPv6. Prints each run, then min / median / max of both names
# and of the ratio large / small, for queries per second and for queries per CPU-second of
# the server (the fairer figure when dnsperf, not the server, sets the pace: server CPU
# below ~90%).
set -euo pipefail

cd "$(dirname "$0")/../.."
RUNS=${RUNS:-5}
SECONDS_TO_RUN=${SECONDS_TO_RUN:-10}
SMALL=${SMALL:-20}
LARGE=${LARGE:-100000}
EDNS=${EDNS:-1}
OUTSTANDING=${OUTSTANDING:-256}
CLIENTS=${CLIENTS:-4}
DNS_PORT=${DNS_PORT:-18253}
ANNOUNCE_PORT=${ANNOUNCE_PORT:-18282}
# shellcheck source=bench/dns/common.sh
source bench/dns/common.sh
command -v python3 >/dev/null || { echo "python3 is needed (bench/dns/announce.py)" >&2; exit 1; }

# Groups 2001 (small) and 2002 (large); a hosts file shows when every member has arrived.
cat >"$WORK/rgap.yaml" <<YAML
listen:
  - 127.0.0.1:$ANNOUNCE_PORT
groups:
  - id: 2001
    psk: $PSK
    expire: 1h
    readiness_delay: 0s
  - id: 2002
    psk: $PSK
    expire: 1h
    readiness_delay: 0s
outputs:
  - kind: hostsfile
    spec:
      interval: 1h
      filename: $WORK/hosts
      mappings:
        - group: 2001
          hostname: small
        - group: 2002
          hostname: large
  - kind: dns
    spec:
      bind_address: 127.0.0.1:$DNS_PORT
      mappings:
        small.bench.rgap.test:
          group: 2001
        large.bench.rgap.test:
          group: 2002
YAML

if [ -n "${PLUGIN_DIR:-}" ]; then
    export RGAP_PLUGIN_PATH=$PLUGIN_DIR
    echo "dns plugin from $PLUGIN_DIR"
fi
RUST_LOG=info taskset -c 0 "$LISTENER" listener -c "$WORK/rgap.yaml" 2>"$WORK/listener.log" &
LISTENER_PID=$!
for _ in $(seq 1 200); do
    grep -q "$STARTED" "$WORK/listener.log" && break
    sleep 0.05
done
grep -q "$STARTED" "$WORK/listener.log" || { cat "$WORK/listener.log" >&2; exit 1; }

members() { # hostname: its lines in the hosts file
    grep -c " $1\$" "$WORK/hosts" 2>/dev/null || true
}
# Announce until every member is in (a refresh of one already in is harmless).
for attempt in 1 2 3 4 5; do
    [ "$(members small)" -ge "$SMALL" ] ||
        python3 bench/dns/announce.py --port "$ANNOUNCE_PORT" --group 2001 --psk "$PSK" --count "$SMALL"
    [ "$(members large)" -ge "$LARGE" ] ||
        python3 bench/dns/announce.py --port "$ANNOUNCE_PORT" --group 2002 --psk "$PSK" --count "$LARGE"
    for _ in $(seq 1 100); do
        if [ "$(members small)" -ge "$SMALL" ] && [ "$(members large)" -ge "$LARGE" ]; then break 2; fi
        sleep 0.1
    done
    echo "attempt $attempt: $(members small) + $(members large) members so far; announcing again" >&2
done
if [ "$(members small)" -lt "$SMALL" ] || [ "$(members large)" -lt "$LARGE" ]; then
    echo "only $(members small) + $(members large) members arrived" >&2
    exit 1
fi

for name in small large; do
    printf '%s.bench.rgap.test A\n%s.bench.rgap.test AAAA\n' "$name" "$name" >"$WORK/$name.txt"
done
EDNS_FLAG=()
[ "$EDNS" = 1 ] && EDNS_FLAG=(-e)

run() { # name: prints "qps response-bytes lost cpu% queries-per-cpu-second"
    local before after time_before time_after
    before=$(cpu_ticks)
    time_before=$(date +%s.%N)
    taskset -c 1 dnsperf -m udp -s 127.0.0.1 -p "$DNS_PORT" -d "$WORK/$1.txt" "${EDNS_FLAG[@]}" \
        -l "$SECONDS_TO_RUN" -c "$CLIENTS" -T 1 -q "$OUTSTANDING" >"$WORK/dnsperf.txt" 2>&1 || {
        cat "$WORK/dnsperf.txt" >&2
        exit 1
    }
    after=$(cpu_ticks)
    time_after=$(date +%s.%N)
    # CPU over the wall time measured around dnsperf, not the nominal SECONDS_TO_RUN.
    awk -v ticks=$((after - before)) -v hz="$(getconf CLK_TCK)" \
        -v secs="$(awk -v a="$time_after" -v b="$time_before" 'BEGIN { print a - b }')" '
        /Queries per second/ { qps = $4 }
        /Queries lost/ { lost = $3 }
        /Average packet size/ { response = $NF }
        END { cpu = ticks / hz / secs
              printf "%.0f %s %s %.0f %.0f\n", qps, response, lost, cpu * 100, qps / (cpu > 0 ? cpu : 1) }' \
        "$WORK/dnsperf.txt"
}

echo "server: $LISTENER listener (dns output) on CPU 0; load: dnsperf on CPU 1, UDP, EDNS=$EDNS," \
    "${SECONDS_TO_RUN}s per run, $CLIENTS clients, $OUTSTANDING outstanding, A and AAAA"
FORMAT='%-4s | %-44s | %-44s | %s\n'
# shellcheck disable=SC2059
printf "$FORMAT" run "small: $SMALL members" "large: $LARGE members" "large/small"
# shellcheck disable=SC2059
printf "$FORMAT" "" "qps (bytes/answer, lost, server CPU, q/CPU-s)" \
    "qps (bytes/answer, lost, server CPU, q/CPU-s)" "qps, q/CPU-s"
: >"$WORK/results"
for i in $(seq 1 "$RUNS"); do
    read -r small_qps small_bytes small_lost small_cpu small_per_cpu < <(run small)
    read -r large_qps large_bytes large_lost large_cpu large_per_cpu < <(run large)
    ratio=$(awk -v a="$large_qps" -v b="$small_qps" 'BEGIN { printf "%.2f", a / b }')
    cpu_ratio=$(awk -v a="$large_per_cpu" -v b="$small_per_cpu" 'BEGIN { printf "%.2f", a / b }')
    # shellcheck disable=SC2059
    printf "$FORMAT" "$i" \
        "$small_qps ($small_bytes B, $small_lost, $small_cpu%, $small_per_cpu)" \
        "$large_qps ($large_bytes B, $large_lost, $large_cpu%, $large_per_cpu)" \
        "$ratio, $cpu_ratio"
    echo "$small_qps $large_qps $ratio $small_per_cpu $large_per_cpu $cpu_ratio" >>"$WORK/results"
done
summary() { # column label
    sort -g -k"$1" "$WORK/results" | awk -v c="$1" -v label="$2" '
        { v[NR] = $c }
        END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
              printf "%-14s min %s  median %s  max %s\n", label, v[1], m, v[NR] }'
}
summary 1 "small qps"
summary 2 "large qps"
summary 3 "large/small"
summary 4 "small q/CPU-s"
summary 5 "large q/CPU-s"
summary 6 "large/small"
