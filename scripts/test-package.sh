#!/usr/bin/env bash
# Package test: builds the PostgreSQL 15 .deb, installs it with apt-get into the system
# PostgreSQL 15, runs a smoke test in a fresh cluster, removes the package and checks that
# nothing of it is left. It replaces whatever vecguard build was installed there, so
# scripts/test.sh runs it last and then installs the tested build again.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
chmod a+rx "$out"
deb="$(bash scripts/package.sh pg15 "$out" | tail -1)"
echo "package: $(basename "$deb") ($(du -k "$deb" | cut -f1) KiB)"

pkg=postgresql-15-vecguard
files=(/usr/lib/postgresql/15/lib/vecguard.so /usr/share/postgresql/15/extension/vecguard.control)
# Start from a system without any vecguard files, as on a clean machine.
$SUDO rm -f /usr/lib/postgresql/15/lib/vecguard.so /usr/share/postgresql/15/extension/vecguard*
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "$deb" >/dev/null
dpkg-query -W -f='${Status}\n' "$pkg" | grep -q "install ok installed"
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config .venv/bin/python tests/package_smoke.py

DEBIAN_FRONTEND=noninteractive $SUDO apt-get remove -y -q --purge "$pkg" >/dev/null
left=$(ls /usr/lib/postgresql/15/lib/vecguard* /usr/share/postgresql/15/extension/vecguard* 2>/dev/null || true)
if [ -n "$left" ]; then
  echo "package test: files left after removal: $left" >&2
  exit 1
fi
if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
  echo "package test: $pkg is still installed after removal" >&2
  exit 1
fi
echo "package test: installed, smoke test passed, removed without leftovers (${files[*]} gone)"
