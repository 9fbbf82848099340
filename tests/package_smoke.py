"""Smoke test of an installed vecguard package (run by scripts/test-package.sh, not pytest):
a fresh cluster, CREATE EXTENSION, the type, an HNSW index, and an authorized query with a
valid and a forged token."""

import sys
import time
from pathlib import Path

import jwt as pyjwt
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pgcluster import Cluster  # noqa: E402

SECRET = "package-smoke-secret-0123456789abcdef"


def main() -> None:
    c = Cluster(conf={"shared_preload_libraries": "'vecguard'"}).init().start()
    try:
        with c.connect() as conn:
            conn.execute("CREATE EXTENSION vecguard")
            assert conn.execute("SELECT '[1,1]'::vector <-> '[4,5]'").fetchone()[0] == 5.0
            conn.execute("CREATE ROLE smoke_app")
            conn.execute("CREATE TABLE docs (id int PRIMARY KEY, tenant_id int, embedding vector(2))")
            conn.execute("INSERT INTO docs SELECT i, i % 2, ARRAY[i, i % 7]::real[]::vector "
                         "FROM generate_series(1, 2000) i")
            conn.execute("GRANT SELECT ON docs TO smoke_app")
            conn.execute("SELECT vecguard.add_key('k', 'HS256', %s)", [SECRET])
            conn.execute("SELECT vecguard.protect('docs', tenant => 'tenant_id')")
            conn.execute("CREATE INDEX ON docs USING hnsw (tenant_id, embedding vector_l2_ops)")
            conn.execute("SET enable_seqscan = off")
            query = "SELECT tenant_id FROM docs ORDER BY embedding <-> '[10,3]' LIMIT 10"
            for key, want in ((SECRET, [1] * 10), ("a-forged-key-that-is-long-enough-000", [])):
                tok = pyjwt.encode({"tenant_id": 1, "exp": int(time.time()) + 600}, key,
                                   algorithm="HS256", headers={"kid": "k"})
                conn.execute("BEGIN")
                conn.execute("SET LOCAL ROLE smoke_app")
                conn.execute("SELECT set_config('vecguard.jwt', %s, true)", [tok])
                got = [r[0] for r in conn.execute(query).fetchall()]
                conn.execute("COMMIT")
                assert got == want, (key, got)
            version = conn.execute(
                "SELECT extversion FROM pg_extension WHERE extname = 'vecguard'").fetchone()[0]
        print(f"package smoke test: vecguard {version} works in a fresh cluster")
    except psycopg.Error as e:
        raise SystemExit(f"package smoke test failed: {e.sqlstate} {e}")
    finally:
        c.stop()


if __name__ == "__main__":
    main()
