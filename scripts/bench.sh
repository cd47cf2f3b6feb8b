#!/usr/bin/env bash
# scripts/bench.sh — runs `hubsync bench` (release build) against a throwaway
# PostgreSQL server started here (see scripts/lib/pg.sh), then stops it.
# Arguments go to `hubsync bench`, e.g.
#   scripts/bench.sh --sites 20 --rows 100000 --json bench.json
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/pg.sh
cargo build --release --quiet
pg_start
echo "bench.sh: PostgreSQL running at $PG_URL" >&2
set +e
./target/release/hubsync bench --pg-url "$PG_URL" "$@"
status=$?
set -e
exit "$status"
