#!/usr/bin/env bash
# Mutation testing of the hot, security-relevant core (not run in CI: it takes hours on a
# small machine). cargo-mutants changes one thing at a time in these files (a comparison, a
# returned value, a deleted statement) and runs rgap-core's own tests (unit, property and
# boundary tests) against each change; a change that no test notices is a "missed" mutant.
# Every missed mutant should be killed by a new test, or be shown to be equivalent (the
# change cannot alter behaviour) in the notes of the change that adds this run's results.
#
# Survivors known to be equivalent (they change cost, never an outcome a test may assert):
#   table.rs AddressHasher::hash -> 0 / 1        a constant hash: lookups by equality still
#                                                find every member, only slower (the keyed hash
#                                                is there against chosen-address collisions)
#   table.rs GroupTable::expire  && -> ||        sweeps ignore the cost pacer (or sweep with
#                                                nothing due): members still leave at deadline
#   table.rs GroupTable::apply   < -> <= (GROUP_FULL_WARN_INTERVAL)   differs only at exactly
#                                                60 s; "at most once a minute" holds either way
#   table.rs run_table           + -> - (cycle_started + MIN_CYCLE)   skips the gathering pause
#   position_index.rs tag -> 0 / 1, home -> 0 / 1   a constant tag or home slot: every entry
#                                                probes from one slot, still found by its tag and
#                                                position check, only slower
#   position_index.rs prefetch -> ()             the prefetch is a hint: cost only
#   position_index.rs remove  + -> * (hole + 1)  starts the shift at the hole itself, a no-op
#                                                step before the same walk
#   position_index.rs shrink_to  < -> <=         rebuilds at the same size: cost only
#   position_index.rs slot  | -> ^               tag and position bits do not overlap: the same
#                                                value
# (Mutants that make the index loop forever, e.g. a mask of 0, show as timeouts: caught.)
#
# Usage: bench/mutants.sh [extra cargo-mutants arguments, e.g. --iterate or -F REGEX]
# Needs: cargo install --locked cargo-mutants
# Results: target/mutants/mutants.out/{caught,missed,timeout,unviable}.txt
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo mutants --version >/dev/null 2>&1; then
    echo "bench/mutants.sh: cargo-mutants is not installed (cargo install --locked cargo-mutants)" >&2
    exit 1
fi
mkdir -p target/mutants
# -j 1: one build at a time; the baseline's test time sets each mutant's timeout (at least
# 120 s, so a loaded machine does not turn slow tests into "timeouts").
exec cargo mutants -p rgap-core \
    --file rgap-core/src/protocol.rs \
    --file rgap-core/src/listener/check.rs \
    --file rgap-core/src/listener/table.rs \
    --file rgap-core/src/listener/position_index.rs \
    -j "${MUTANTS_JOBS:-1}" --build-timeout 1500 --minimum-test-timeout 120 \
    -o target/mutants "$@"
