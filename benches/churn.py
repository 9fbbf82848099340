"""Update-heavy HNSW workload: vecguard vs pgvector, index size and recall after each round.

A table of GloVe rows gets an HNSW index (cosine, m=16, ef_construction=64). Each round
deletes a random share of the live rows, inserts as many new rows (new GloVe vectors, new
ids) and runs VACUUM: the nightly re-embedding of a RAG corpus. After each round the bench
prints both engines' index size and recall@10 at the same ef_search against exact ground
truth over the rows live at that moment (numpy, float64). Both servers run side by side
and every round is applied to both, so the sizes compare like for like; no timing is
reported, since sizes and recall do not depend on machine noise.

With `--tenants N` the vecguard server also holds the table the way an authorized search
keeps it: a `tenant_id` column (rows spread over N tenants, each new row a random one) and
the index `USING hnsw (tenant_id, embedding vector_cosine_ops)`, with its tenant groups.
The same rows are replaced there each round; its recall is of `WHERE tenant_id = t` top-10
queries (query i asks tenant i mod N) against the exact answer over that tenant's live rows.
pgvector has no key columns, so this column has no peer.

    bash benches/run.sh churn --rows 100000 --share 0.1 --rounds 10 [--tenants 20]
"""

import argparse

import numpy as np

from common import exact_topk, glove, load, machine, pgvector_cluster, vec_literal, vecguard_cluster

QUERY = "SELECT id FROM items ORDER BY embedding <=> %s::vector LIMIT 10"
KEYED_QUERY = "SELECT id FROM items WHERE tenant_id = %s ORDER BY embedding <=> %s::vector LIMIT 10"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100000)
    ap.add_argument("--share", type=float, default=0.1, help="share of rows replaced per round")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--ef-search", type=int, default=40)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--tenants", type=int, default=0,
                    help="also churn a table with a tenant key column in its index (vecguard only)")
    a = ap.parse_args()

    per_round = int(a.rows * a.share)
    total = a.rows + per_round * a.rounds
    data = glove(total + a.queries)
    if len(data) < total + a.queries:
        raise SystemExit(f"GloVe has {len(data)} rows, the run needs {total + a.queries}")
    queries = data[total:total + a.queries]
    lits = [vec_literal(q) for q in queries]
    rng = np.random.default_rng(a.seed)

    tenant_of = rng.integers(0, max(a.tenants, 1), size=total)
    engines = []
    kinds = [("vecguard", vecguard_cluster, False), ("pgvector", pgvector_cluster, False)]
    if a.tenants:
        kinds.append(("keyed", None, True))
    for name, make, keyed in kinds:
        if make is None:
            # The keyed table lives in the vecguard server, in a database of its own.
            first = engines[0][2]
            first.execute("DROP DATABASE IF EXISTS keyed")
            first.execute("CREATE DATABASE keyed")
            cluster = engines[0][1]
            conn = cluster.connect("keyed")
            conn.execute("CREATE EXTENSION IF NOT EXISTS vecguard")
        else:
            cluster = make()
            conn = cluster.connect()
        extra = {"tenant_id": ("int", tenant_of[:a.rows].tolist())} if keyed else None
        load(conn, "items", data[:a.rows], extra)
        conn.execute("ALTER TABLE items SET (autovacuum_enabled = false)")
        conn.execute("SET maintenance_work_mem = '2GB'")
        cols = "tenant_id, embedding vector_cosine_ops" if keyed else "embedding vector_cosine_ops"
        conn.execute(f"CREATE INDEX items_idx ON items USING hnsw ({cols}) "
                     "WITH (m = 16, ef_construction = 64)")
        conn.execute(f"SET hnsw.ef_search = {a.ef_search}")
        conn.execute("SET enable_seqscan = off")
        engines.append((name, cluster if make else None, conn, keyed))

    live = np.arange(a.rows)
    next_id = a.rows
    print(f"# churn: {a.rows} GloVe rows, {per_round} replaced per round ({a.share:.0%}), "
          f"{a.rounds} rounds, VACUUM after each; recall@10 at ef_search={a.ef_search}, "
          f"{a.queries} queries; {machine()}")
    print(f"{'round':>5} {'live':>7} " + " ".join(
        f"{n + ' MB':>12} {n + ' recall':>16}" for n, _, _, _ in engines) + f" {'size ratio':>10}")

    def keyed_truth():
        out = []
        for i, q in enumerate(queries):
            t = i % a.tenants
            rows = live[tenant_of[live] == t]
            out.append((t, set(rows[exact_topk(data[rows], q[None, :], 10, "cosine")[0]].tolist())))
        return out

    def report(rnd):
        truth_rows = exact_topk(data[live], queries, 10, "cosine")
        truth = [set(live[r].tolist()) for r in truth_rows]
        ktruth = keyed_truth() if a.tenants else []
        cols, sizes = [], []
        for _, _, conn, keyed in engines:
            size = conn.execute("SELECT pg_relation_size('items_idx')").fetchone()[0]
            hits = 0
            for i, (q, t) in enumerate(zip(lits, truth)):
                if keyed:
                    tenant, t = ktruth[i]
                    rows = conn.execute(KEYED_QUERY, [int(tenant), q], prepare=True).fetchall()
                else:
                    rows = conn.execute(QUERY, [q], prepare=True).fetchall()
                got = {r[0] for r in rows}
                hits += len(got & t)
            sizes.append(size)
            cols.append(f"{size / 2**20:>12.1f} {hits / (10 * len(lits)):>16.4f}")
        print(f"{rnd:>5} {len(live):>7} " + " ".join(cols) + f" {sizes[0] / sizes[1]:>10.2f}",
              flush=True)

    report(0)
    for rnd in range(1, a.rounds + 1):
        gone = rng.choice(len(live), size=per_round, replace=False)
        gone_ids = live[gone]
        new_ids = np.arange(next_id, next_id + per_round)
        next_id += per_round
        for _, _, conn, keyed in engines:
            conn.execute("DELETE FROM items WHERE id = ANY(%s)", [gone_ids.tolist()])
            cols = "id, embedding, tenant_id" if keyed else "id, embedding"
            with conn.cursor().copy(f"COPY items ({cols}) FROM STDIN") as cp:
                for i in new_ids:
                    row = (int(i), vec_literal(data[i]))
                    cp.write_row(row + (int(tenant_of[i]),) if keyed else row)
            conn.execute("VACUUM items")
        live = np.concatenate([np.delete(live, gone), new_ids])
        report(rnd)

    for _, cluster, conn, _ in reversed(engines):
        conn.close()
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    main()
