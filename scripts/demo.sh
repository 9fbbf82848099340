#!/usr/bin/env bash
# The vecguard demo: builds and installs the extension into the local PostgreSQL 15, starts
# a throwaway cluster of its own (own port and socket directory, no system service), loads
# GloVe word vectors and runs nearest-neighbour queries. Leaves the cluster running.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
if [ "$(id -u)" -eq 0 ]; then
  cargo pgrx install --release --pg-config /usr/bin/pg_config
else
  cargo pgrx install --release --sudo --pg-config /usr/bin/pg_config
fi
exec .venv/bin/python scripts/demo.py "$@"
