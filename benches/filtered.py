"""Authorized search: the selectivity sweep of issue 5, in one run.

100k GloVe vectors; tenant 1 holds 10% of the rows, tenant 2 1%, tenant 3 0.1%, tenant 4
0.01% (10 rows); the rest belong to tenant 0. Top-10 by cosine for `WHERE tenant_id = t`
(the same index condition vecguard.protect's policy produces) on:
- vecguard, planner's choice between the filtered HNSW `USING hnsw (tenant_id, embedding vector_cosine_ops)` and btree + sort (recall 1.000 means it chose btree);
- vecguard unfiltered HNSW (no WHERE), the speed to match;
- vecguard filtered HNSW forced (enable_sort = off rules out btree + sort): the tenant
  graph path, taken for `=` / `= ANY` on the first key column;
- vecguard exact btree path (btree on tenant_id + sort; hnsw disabled);
- pgvector 0.8 default (post-filter) and hnsw.iterative_scan = relaxed_order.
Reports rows returned per query, recall@10 against the exact authorized answer, and QPS.

    bash benches/run.sh filtered --rows 100000 --queries 100
    bash benches/run.sh filtered --rows 100000 --queries 1000 --vecguard-only
    bash benches/run.sh filtered --rows 100000 --queries 200 --ef-search 60

Ratios are to the unfiltered QPS measured right before each selectivity's rows.

`--cpu-rounds N` then measures the server's CPU time per query (/proc/PID/schedstat of the
backend) for the unfiltered search and each selectivity's tenant HNSW path, all queries of a
path run by one statement (`LATERAL`, no client round trip), the paths interleaved over N
rounds; it prints medians and the median of each round's ratio. Wall-clock QPS on this shared
machine moves by 2x between adjacent runs of the same query; CPU time moves far less.

    bash benches/run.sh filtered --rows 100000 --queries 200 --ef-search 60 --cpu-rounds 7

`--baseline PG_CONFIG` runs only the CPU rounds, this build (`PG_CONFIG`, default
/usr/bin/pg_config) against another vecguard build installed into that PostgreSQL, the two
taking turns at every path, and ends with the ratio per path.
"""

import argparse
import time

import numpy as np

from common import backend_cpu_seconds, glove, machine, median, pgvector_cluster, vec_literal, vecguard_cluster

SHARES = {1: 0.10, 2: 0.01, 3: 0.001, 4: 0.0001}
# tenant 0 holds the rest (88.9%); "all" is a token naming every tenant (= ANY of 5)
SWEEP = [("all", None), ("88.9%", 0)] + [(f"{s * 100:g}%", t) for t, s in SHARES.items()]


def tenants_for(n, seed=7):
    rng = np.random.default_rng(seed)
    t = np.zeros(n, dtype=np.int32)
    perm = rng.permutation(n)
    start = 0
    for tenant, share in SHARES.items():
        k = max(1, int(round(n * share)))
        t[perm[start:start + k]] = tenant
        start += k
    return t


def load(conn, data, tenants):
    conn.execute("DROP TABLE IF EXISTS docs")
    conn.execute(f"CREATE TABLE docs (id int PRIMARY KEY, tenant_id int NOT NULL, embedding vector({data.shape[1]}))")
    with conn.cursor().copy("COPY docs FROM STDIN") as cp:
        for i, v in enumerate(data):
            cp.write_row((i, int(tenants[i]), vec_literal(v)))
    conn.execute("CREATE INDEX docs_tenant ON docs (tenant_id)")
    conn.execute("VACUUM ANALYZE docs")


def run(conn, sql_for, queries, truth_for, settings=()):
    for s in settings:
        conn.execute(s)
    cur = conn.cursor()
    rows, hits, n = 0, 0, 0
    lits = [vec_literal(q) for q in queries]
    truths = [truth_for(qi) for qi in range(len(queries))]  # outside the timed loop
    for q in lits[:5]:
        cur.execute(sql_for, [q], prepare=True).fetchall()
    t = time.perf_counter()
    for qi, q in enumerate(lits):
        got = [r[0] for r in cur.execute(sql_for, [q], prepare=True)]
        truth = truths[qi]
        rows += len(got)
        hits += len(set(got) & set(truth))
        n += min(10, len(truth))
    elapsed = time.perf_counter() - t
    for s in settings:
        conn.execute("RESET " + s.split()[1])
    return rows / len(queries), hits / max(n, 1), len(queries) / elapsed


def cpu_sweep(conns, queries, rounds):
    """Server CPU time per query of each path, interleaved over rounds (see the docstring).
    `conns`: (label, connection) per vecguard build; with two (an A/B, `--baseline`) the
    builds take turns at every path and the last table compares them."""
    inner = "SELECT id FROM docs {} ORDER BY embedding <=> q.v LIMIT 10"
    paths = [("unfiltered", "")] + [
        (sel, "WHERE tenant_id = ANY('{0,1,2,3,4}')" if t is None else f"WHERE tenant_id = {t}") for sel, t in SWEEP]
    per_query = {(label, name): [] for label, _ in conns for name, _ in paths}
    for _, conn in conns:
        conn.execute("DROP TABLE IF EXISTS queries")
        conn.execute(f"CREATE TABLE queries (qid int, v vector({queries.shape[1]}))")
        with conn.cursor().copy("COPY queries FROM STDIN") as cp:
            for i, v in enumerate(queries):
                cp.write_row((i, vec_literal(v)))
        conn.execute("ANALYZE queries")
        conn.execute("SET enable_sort = off")  # the tenant HNSW path, not btree + sort
    for rnd in range(rounds):
        for name, where in paths:
            for j in range(len(conns)):
                label, conn = conns[(j + rnd) % len(conns)]
                sql = f"SELECT count(*) FROM queries q, LATERAL ({inner.format(where)}) s"
                conn.execute(sql).fetchone()  # warm
                before = backend_cpu_seconds(conn)
                conn.execute(sql).fetchone()
                per_query[(label, name)].append((backend_cpu_seconds(conn) - before) / len(queries) * 1e6)
    for _, conn in conns:
        conn.execute("RESET enable_sort")
    for label, _ in conns:
        print(f"\n{label}: server CPU per query, tenant HNSW path (enable_sort = off), {rounds} interleaved rounds")
        base = per_query[(label, "unfiltered")]
        print(f"{'selectivity':>11} {'median us':>10} {'QPS-equiv.':>11} {'ratio of medians':>17} {'median of ratios':>17}  rounds (us)")
        for name, _ in paths:
            xs = per_query[(label, name)]
            us = median(xs)
            ratios = [b / x for b, x in zip(base, xs)]
            rounds_us = " ".join(f"{x:.0f}" for x in xs)
            print(f"{name:>11} {us:>10.0f} {1e6 / us:>11.0f} {median(base) / us:>16.2f}x {median(ratios):>16.2f}x  {rounds_us}")
    if len(conns) == 2:
        (a, _), (b, _) = conns
        print(f"\nA/B: {b} CPU per query / {a} CPU per query (above 1: {a} is faster)")
        for name, _ in paths:
            xa, xb = per_query[(a, name)], per_query[(b, name)]
            print(f"{name:>11} {median(xb) / median(xa):>6.2f}x  median of rounds {median([y / x for x, y in zip(xa, xb)]):.2f}x")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--ef-search", type=int, default=40, help="hnsw.ef_search on both servers")
    ap.add_argument("--vecguard-only", action="store_true", help="skip the pgvector peer (more queries in the same time)")
    ap.add_argument("--cpu-rounds", type=int, default=0, help="then measure server CPU per query over this many rounds")
    ap.add_argument("--baseline", metavar="PG_CONFIG",
                    help="A/B: only the CPU rounds, against a vecguard build installed in this PostgreSQL")
    args = ap.parse_args()
    data = glove(args.rows + args.queries)
    base, queries = data[: args.rows], data[args.rows:]
    tenants = tenants_for(args.rows)
    norm = base / np.linalg.norm(base, axis=1, keepdims=True)
    qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    sims = qn.astype(np.float64) @ norm.T.astype(np.float64)

    def truth(tenant):
        def f(qi):
            idx = np.arange(args.rows) if tenant is None else np.nonzero(tenants == tenant)[0]
            order = idx[np.argsort(-sims[qi, idx], kind="stable")]
            return order[:10].tolist()
        return f

    print(f"GloVe 50-d, {args.rows} rows, {args.queries} queries, top-10 cosine, ef_search {args.ef_search}; {machine()}")
    if args.baseline:
        ab(args, base, tenants, queries)
        return
    vg = vecguard_cluster()
    pv = None if args.vecguard_only else pgvector_cluster()
    try:
        vconn = vg.connect()
        pconn = pv.connect() if pv else None
        for conn in (vconn, pconn):
            if conn is not None:
                load(conn, base, tenants)
                conn.execute(f"SET hnsw.ef_search = {args.ef_search}")
        vconn.execute("CREATE INDEX docs_hnsw ON docs USING hnsw (tenant_id, embedding vector_cosine_ops)")
        if pconn is not None:
            pconn.execute("CREATE INDEX docs_hnsw ON docs USING hnsw (embedding vector_cosine_ops)")
        order = "ORDER BY embedding <=> %s::vector LIMIT 10"
        print(f"{'selectivity':>11} {'engine / path':<32} {'rows/q':>7} {'recall':>7} {'QPS':>7}")
        r = run(vconn, f"SELECT id FROM docs {order}", queries, truth(None))
        unfiltered = r[2]
        print(f"{'100%':>11} {'vecguard unfiltered HNSW':<32} {r[0]:>7.1f} {r[1]:>7.3f} {r[2]:>7.0f}")
        for sel, tenant in SWEEP:
            # The ratio's denominator is measured right before each row: this machine is
            # shared and its speed drifts within a run.
            r = run(vconn, f"SELECT id FROM docs {order} /* ref {sel.replace('%', ' pct')} */", queries, truth(None))
            unfiltered = r[2]
            print(f"{sel:>11} {'vecguard unfiltered (reference)':<32} {r[0]:>7.1f} {r[1]:>7.3f} {r[2]:>7.0f}")
            cond = "tenant_id = ANY('{0,1,2,3,4}')" if tenant is None else f"tenant_id = {tenant}"
            where = f"SELECT id FROM docs WHERE {cond} {order}"
            # Each path gets its own statement text: a prepared statement keeps the plan it
            # was made with, whatever SET runs later.
            paths = [
                ("vecguard, planner's choice", vconn, (), ""),
                ("vecguard tenant HNSW (forced)", vconn, ("SET enable_sort = off",), " /* hnsw */"),
                ("vecguard exact (btree + sort)", vconn, ("SET enable_indexscan = off",), " /* exact */"),
                ("pgvector HNSW default", pconn, (), ""),
                ("pgvector HNSW iterative relaxed", pconn, ("SET hnsw.iterative_scan = relaxed_order",), " /* iterative */"),
            ]
            for name, conn, settings, tag in paths:
                if conn is None:
                    continue
                r = run(conn, where + tag, queries, truth(tenant), settings)
                extra = f"  ({r[2] / unfiltered:.2f}x unfiltered)" if name.startswith(("vecguard, planner", "vecguard tenant")) else ""
                print(f"{sel:>11} {name:<32} {r[0]:>7.1f} {r[1]:>7.3f} {r[2]:>7.0f}{extra}")
        if args.cpu_rounds > 0:
            cpu_sweep([("vecguard", vconn)], queries, args.cpu_rounds)
    finally:
        vg.destroy()
        if pv:
            pv.destroy()


def ab(args, base, tenants, queries):
    """The CPU rounds only, this build against `--baseline`'s, on the same data and index."""
    clusters = [("vecguard", vecguard_cluster()), ("baseline", vecguard_cluster(args.baseline))]
    try:
        conns = []
        for label, c in clusters:
            conn = c.connect()
            load(conn, base, tenants)
            conn.execute(f"SET hnsw.ef_search = {args.ef_search}")
            conn.execute("CREATE INDEX docs_hnsw ON docs USING hnsw (tenant_id, embedding vector_cosine_ops)")
            conns.append((label, conn))
        cpu_sweep(conns, queries, max(args.cpu_rounds, 1))
    finally:
        for _, c in clusters:
            c.destroy()


if __name__ == "__main__":
    main()
