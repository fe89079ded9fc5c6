#!/usr/bin/env bash
# The project's one test command: brings up Redis and PostgreSQL (scripts/services.sh), then runs
# every test of the workspace. Extra arguments go to `cargo test`, e.g.
#   scripts/test.sh -- --nocapture      scripts/test.sh --test lifecycle
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/services.sh
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
echo "test: DATABASE_URL=$DATABASE_URL REDIS_URL=$REDIS_URL"
# --no-fail-fast: one failing test binary does not hide how the others fare.
exec cargo test --workspace --no-fail-fast "$@"
