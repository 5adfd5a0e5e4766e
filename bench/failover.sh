#!/usr/bin/env bash
# Failover, prober cost and gossip volume of a whole geolb cluster on loopback (the "Measure and
# report" targets). Builds the release binaries, then runs tests/benches/failover.rs against them.
#
#   bench/failover.sh                                # defaults: 4 probers × 500 nodes, 1 s, fall 2
#   bench/failover.sh --probers 8 --nodes 1000       # larger; every flag is also GEOLB_BENCH_<NAME>
#
# Flags: --probers --nodes --pops --resolvers --interval-ms --timeout-ms --fall --rise
# --gossip-interval-ms --max-in-flight --connection-reuse --failures --window-s --settle-s --poll-ms --client-pop
# --budget-min. Needs pdns_server (PowerDNS 4.7) on PATH; everything listens on 127.0.0.0/8.
# CARGO_BUILD_JOBS (default 1) sets build parallelism.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs="${CARGO_BUILD_JOBS:-1}"
cargo build --release --workspace --bins -j"$jobs"
# The bench executable lands in target/release/deps; the harness's workspace_bin looks in its
# parent, target/release, where the build above put geolb-prober and geolb-resolver.
target_dir="${CARGO_TARGET_DIR:-target}"
for bin in geolb-prober geolb-resolver; do
    [ -x "$target_dir/release/$bin" ] || { echo "failover.sh: $target_dir/release/$bin missing" >&2; exit 1; }
done
# Every node stand-in listens in the bench process and keeps one connection per prober (checks
# reuse connections): nodes × (probers + 1) descriptors. Raise the soft limit to the hard one;
# beyond that, run with --connection-reuse 1.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
# Child logs are printed on exit only when something panics.
export GEOLB_QUIET_LOGS="${GEOLB_QUIET_LOGS:-1}"
echo "+ cargo bench -p geolb-tests --bench failover -j$jobs -- $*" >&2
exec cargo bench -p geolb-tests --bench failover -j"$jobs" -- "$@"
