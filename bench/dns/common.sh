# Sourced by run.sh and group-size.sh (from the repository root): what both DNS benchmarks set
# up the same way. Installs dnsperf if missing (unless LOADGEN names another load), checks the
# tools, builds the release (unless SKIP_BUILD=1, which measures the build already there, as
# rgap-bench all does), and makes a work directory that is removed, with the listener stopped,
# on exit.
# Sets: RGAP, LISTENER, STARTED, PSK, WORK, LISTENER_PID (the caller sets it once the listener
# runs).
#
# LISTENER (environment): the listener under test, ours by default. Another build, such as the
# Go rgap's binary, is measured the same way side by side (the config is compatible with both,
# and the agents are always ours: the wire format is the same).

PSK=8f1302643b0809279794c5cc47f236561d7442b85d748bd7d1a58adfbe9ff431

if [ "${LOADGEN:-dnsperf}" = dnsperf ] && ! command -v dnsperf >/dev/null; then
    echo "installing dnsperf" >&2
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq dnsperf >/dev/null
fi
command -v taskset >/dev/null || { echo "taskset (util-linux) is needed" >&2; exit 1; }

[ -n "${SKIP_BUILD:-}" ] || cargo build --release --workspace --quiet
RGAP=target/release/rgap
LISTENER=${LISTENER:-$RGAP}
# The line each listener logs once it serves (ours, the Go rgap's).
STARTED='listener started\|Listener is now operational'

WORK=$(mktemp -d)
LISTENER_PID=""
cleanup() {
    if [ -n "$LISTENER_PID" ]; then
        kill "$LISTENER_PID" 2>/dev/null || true
        wait "$LISTENER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

cpu_ticks() { # user + system CPU time of the listener, in clock ticks
    awk '{print $14 + $15}' "/proc/$LISTENER_PID/stat"
}
