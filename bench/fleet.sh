#!/usr/bin/env bash
# The fleet configuration's speed: a change made over the admin API until every PowerDNS
# answers with it (embedded store and PostgreSQL, a small and a 10,000-name document), and 100
# members converging on a new version. Builds the release binaries, then runs
# tests/benches/fleet.rs against them. Needs pdns_server and PostgreSQL 15 (scripts/setup.sh);
# everything listens on 127.0.0.0/8. CARGO_BUILD_JOBS (default 1) sets build parallelism;
# GEOLB_BENCH_ONLY=answers or =converge runs one part.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs="${CARGO_BUILD_JOBS:-1}"
cargo build --release --workspace --bins -j"$jobs"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
export GEOLB_QUIET_LOGS="${GEOLB_QUIET_LOGS:-1}"
echo "+ cargo bench -p geolb-tests --bench fleet -j$jobs" >&2
exec cargo bench -p geolb-tests --bench fleet -j"$jobs"
