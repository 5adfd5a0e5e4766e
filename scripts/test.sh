#!/usr/bin/env bash
# geolb's checks, as CI runs them: formatting, clippy with -D warnings, then every test,
# including the end-to-end tests against real PowerDNS (run scripts/setup.sh first).
set -euo pipefail
cd "$(dirname "$0")/.."
export GEOLB_DBIP_DIR="${GEOLB_DBIP_DIR:-$PWD/data/dbip}"
# A CI run builds once from a clean clone: incremental state would only double target/ on disk.
if [ "${CI:-}" = true ]; then export CARGO_INCREMENTAL=0; fi
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The end-to-end tests start the real binaries: build them first.
cargo build --workspace --bins --locked
cargo test --workspace --locked
