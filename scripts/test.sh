#!/usr/bin/env bash
# Runs every test of vecguard: the shape checks (scripts/check.sh), Rust unit tests
# and #[pg_test]s (cargo pgrx test), then the
# cluster-level SQL, authorization and client tests (pytest) against the release build.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"

# Formatting, clippy (warnings are errors) and the pure-module rule, before any test.
bash scripts/check.sh

if [ "$(id -u)" -eq 0 ]; then
  # Postgres refuses to run as root: run the pgrx test cluster as `postgres`.
  pgdata="${TMPDIR:-/tmp}/vecguard-pgrx-test"
  cargo pgrx test pg15 --runas postgres --pgdata "$pgdata"
  cargo pgrx install --release --pg-config /usr/bin/pg_config
else
  # The test build is installed into the system PostgreSQL, which only root may write: run
  # that step through sudo, with its own target directory so the user's stays theirs.
  sudo -E env "PATH=$PATH" CARGO_TARGET_DIR="$PWD/target/sudo" \
    cargo pgrx test pg15 --runas postgres --pgdata "${TMPDIR:-/tmp}/vecguard-pgrx-test-$(id -u)"
  cargo pgrx install --release --sudo --pg-config /usr/bin/pg_config
fi

.venv/bin/python -m pytest -q tests/ "$@"

# The Debian package: build, apt-get install into the system PostgreSQL 15, smoke test in a
# fresh cluster, remove, check nothing is left. Then the release build goes back in place.
bash scripts/test-package.sh
if [ "$(id -u)" -eq 0 ]; then
  cargo pgrx install --release --pg-config /usr/bin/pg_config >/dev/null
else
  cargo pgrx install --release --sudo --pg-config /usr/bin/pg_config >/dev/null
fi
