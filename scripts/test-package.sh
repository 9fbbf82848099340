#!/usr/bin/env bash
# Package test: builds the PostgreSQL 15 .deb, installs it with apt-get into the system
# PostgreSQL 15 as an ordinary user with sudo rights, runs a smoke test in a fresh cluster,
# removes the package and checks that nothing of it is left and that no directory of
# PostgreSQL's became writable by others. It replaces whatever vecguard build was installed
# there, so scripts/test.sh runs it last and then installs the tested build again.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=""   # for the steps that are not the install itself
if [ "$(id -u)" -ne 0 ]; then
  ROOT="sudo"
  SUDO="sudo"
  installer="$(id -un) with sudo"
else
  # Run as root (CI): install and remove as an ordinary user whose only privilege is
  # `sudo apt-get`, as a DBA without a root shell would.
  user=vecguard-pkgtest
  id -u "$user" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$user"
  printf '%s\n' "Defaults:$user env_keep += \"DEBIAN_FRONTEND\"" "$user ALL=(root) NOPASSWD: /usr/bin/apt-get" \
    > /etc/sudoers.d/vecguard-pkgtest
  chmod 0440 /etc/sudoers.d/vecguard-pkgtest
  SUDO="runuser -u $user -- sudo -n"
  installer="$user with sudo apt-get only"
fi
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
chmod a+rx "$out"
deb="$(bash scripts/package.sh pg15 "$out" | tail -1)"
echo "package: $(basename "$deb") ($(du -k "$deb" | cut -f1) KiB)"

pkg=postgresql-15-vecguard
files=(/usr/lib/postgresql/15/lib/vecguard.so /usr/share/postgresql/15/extension/vecguard.control)
# Start from a system without any vecguard files, as on a clean machine.
$ROOT rm -f /usr/lib/postgresql/15/lib/vecguard.so /usr/share/postgresql/15/extension/vecguard*
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "$deb" >/dev/null
dpkg-query -W -f='${Status}\n' "$pkg" | grep -q "install ok installed"
# The package carries the upgrade scripts (ALTER EXTENSION vecguard UPDATE) beside the base one.
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
for f in "vecguard--$version.sql" "vecguard--0.1.0--0.2.0.sql"; do
  dpkg -L "$pkg" | grep -q "/extension/$f\$" || { echo "package test: $f is not in the package" >&2; exit 1; }
done
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
writable=$(find /usr/lib/postgresql/15 /usr/share/postgresql/15 -type d -perm -o+w 2>/dev/null || true)
if [ -n "$writable" ]; then
  echo "package test: directories writable by others: $writable" >&2
  exit 1
fi
echo "package test: installed and removed by $installer; smoke test passed; no leftovers (${files[*]} gone); no directory writable by others"
