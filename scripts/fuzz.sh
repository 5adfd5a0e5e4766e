#!/usr/bin/env bash
# Fuzzes geolb's targets (fuzz/README.md), one after the other, for SECONDS each (default 600),
# and prints each one's executions, executions per second, coverage (cov, ft) and corpus.
#
#   scripts/fuzz.sh TARGET|all [SECONDS]
#
# Inputs libFuzzer finds go to fuzz/target/found/TARGET (the corpus in the repository is only
# read); FUZZ_MERGE=1 merges those that add coverage into fuzz/corpus/TARGET afterwards. A crash
# or a hang is saved in fuzz/artifacts/TARGET and stops the script with libFuzzer's report.
# cargo-fuzz needs nightly flags (-Zsanitizer=address): RUSTC_BOOTSTRAP=1 allows them on the
# stable toolchain, for this script only. NICE (default 10) is the runs' niceness.
set -euo pipefail
cd "$(dirname "$0")/.."

ALL=(remote_backend_unix remote_backend_http config_toml gossip_frame zone_file admin_bodies)
which="${1:?usage: scripts/fuzz.sh TARGET|all [SECONDS]}"
seconds="${2:-600}"
if [ "$which" = all ]; then
    targets=("${ALL[@]}")
elif [[ " ${ALL[*]} " == *" $which "* ]]; then
    targets=("$which")
else
    echo "unknown target $which; one of: all ${ALL[*]}" >&2
    exit 2
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
nice_level="${NICE:-10}"
cd fuzz
# -a: debug assertions and overflow checks on, so arithmetic slips are findings too.
nice -n "$nice_level" cargo fuzz build -a

summary=()
for t in "${targets[@]}"; do
    found="target/found/$t"
    log="target/fuzz-$t.log"
    mkdir -p "$found" "artifacts/$t"
    echo "== $t: ${seconds}s"
    status=0
    nice -n "$nice_level" cargo fuzz run -a "$t" "$found" "corpus/$t" -- \
        -max_total_time="$seconds" -print_final_stats=1 -timeout=30 </dev/null >"$log" 2>&1 || status=$?
    stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -1; }
    last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9]*[a-zA-Z]*\).*/\1/p' <<<"$last")
    line=$(printf '%-20s executions %-10s exec/s %-6s cov %-6s ft %-6s corpus %s' \
        "$t" "$(stat number_of_executed_units)" "$(stat average_exec_per_sec)" "$cov" "$ft" "$corp")
    if [ "$status" -ne 0 ]; then
        tail -60 "$log"
        echo "$line  FAILED (exit $status): the input is in fuzz/artifacts/$t, the log in fuzz/$log" >&2
        exit 1
    fi
    echo "$line"
    summary+=("$line")
    if [ "${FUZZ_MERGE:-0}" = 1 ]; then
        nice -n "$nice_level" cargo fuzz run -a "$t" "corpus/$t" "$found" -- -merge=1 </dev/null >"target/merge-$t.log" 2>&1
        echo "   merged: corpus/$t now $(find "corpus/$t" -type f | wc -l) files"
    fi
done
echo
echo "== summary (${seconds}s per target; coverage and corpus as libFuzzer's last status line)"
printf '%s\n' "${summary[@]}"
