#!/usr/bin/env bash
# The shape checks CI enforces before any test runs: formatting, clippy with warnings as
# errors, and that the pure modules import neither pgrx nor the glue around it.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
features="${1:-pg15}"

cargo fmt --check
cargo clippy --all-targets --no-default-features --features "$features" -- -D warnings

# Pure modules: the algorithms and formats, testable without a server. Each entry is a file
# or a directory; comments and strings are not parsed, so a pure file must not even name
# pgrx outside `//` comments.
pure=(
  src/distance/mod.rs src/distance/half.rs
  src/vector/codec.rs src/halfvec/codec.rs src/sparsevec/codec.rs src/bitvec/mod.rs
  src/authz/audit.rs src/authz/claims.rs src/authz/policy.rs src/authz/redact.rs src/authz/jwt
  src/hnsw/graph src/hnsw/page.rs src/hnsw/keys.rs src/hnsw/values.rs src/hnsw/scanplan.rs
  src/hnsw/cost.rs src/hnsw/buildplan.rs src/hnsw/tenant/plan.rs
)
bad=0
for p in "${pure[@]}"; do
  [ -e "$p" ] || { echo "check: pure module $p does not exist (moved? update this list)"; bad=1; continue; }
  if hits=$(grep -rnE '^[^/]*(\bpgrx\b|\bpg_sys\b|crate::(fmgr|backend|error)\b|::sql\b)' "$p"); then
    echo "check: pure module $p reaches Postgres:"; echo "$hits"; bad=1
  fi
done
exit "$bad"
