#!/usr/bin/env bash
# The vecguard demo: builds and installs the extension into the local PostgreSQL 15, starts
# a throwaway cluster of its own (own port and socket directory, no system service), loads
# GloVe word vectors and runs nearest-neighbour queries. Leaves the cluster running.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo pgrx install --release --pg-config /usr/bin/pg_config
exec .venv/bin/python scripts/demo.py "$@"
