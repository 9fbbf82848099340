"""Validity windows inside the authorized HNSW traversal (issue 13, item 7), in one run.

GloVe rows (50k by default) in `wdocs (id, tenant_id, clearance, valid_from, valid_until,
embedding)`, protected by `vecguard.protect(tenant, clearance, valid_from, valid_until)`, one
index `USING hnsw (tenant_id, embedding vector_cosine_ops, clearance, valid_from, valid_until)`.
60% of the rows have expired, 10% are embargoed (their window opens tomorrow), 10% have no
window (both ends NULL), 20% lie inside an open window. Tenant 1 holds 13% of the rows; its
token with clearance 1 sees about 1,000 of them. Tenant 2 (5%) has nothing in window.

Paths, all at the same hnsw.ef_search on the same index, server CPU time per query
(/proc/PID/schedstat of the backend, every query of a path in one `LATERAL` statement),
interleaved over rounds:
- unfiltered: a superuser (no policy), no WHERE;
- window index cond: the token, with the policy protect() writes now
  (`valid_from <=* (SELECT now())`: the window is an Index Cond);
- window filter: the token, with the validity policy rewritten to the OR form protect()
  wrote before (`valid_from IS NULL OR valid_from <= now()`: a Filter above the index);
- nothing visible, index cond / filter: tenant 2's token under each policy form;
- window index cond, 10 per statement: as "window index cond", in statements of 10 queries;
- the same, inserts: another session inserts a row into tenant 1's group (visible to the
  token) before each statement: every statement's first scan meets a group that grew since
  this backend last saw it. Compare it with the line above (same statements, no inserts)
  and the next (the same inserts into another tenant's group: what any write costs the
  next reads, without the member list's update).
The policy is switched with ALTER POLICY between paths, so both forms search one graph.
Rows per query and recall@10 (against the exact answer over the visible rows) are measured
for each token path first.

    bash benches/run.sh windows --rows 50000 --queries 200 --ef-search 40 --rounds 7
"""

import argparse
import time

import jwt as pyjwt
import numpy as np

from common import backend_cpu_seconds, glove, machine, median, vec_literal, vecguard_cluster

SECRET = "window-bench-secret-0123456789abcdef0123"
NEW = 'valid_from OPERATOR(vecguard.<=*) (SELECT pg_catalog.now()) AND valid_until OPERATOR(vecguard.>*) (SELECT pg_catalog.now())'
OLD = ('(valid_from IS NULL OR valid_from <= (SELECT pg_catalog.now())) AND '
       '(valid_until IS NULL OR valid_until > (SELECT pg_catalog.now()))')


def token(tenant, clearance):
    return pyjwt.encode({"sub": "bench", "exp": int(time.time()) + 3600, "tenant_id": tenant,
                         "clearance": clearance}, SECRET, algorithm="HS256", headers={"kid": "wb"})


def build(su, data, rng):
    n = len(data)
    tenants = rng.choice([0, 1, 2], size=n, p=[0.82, 0.13, 0.05])
    clearance = rng.integers(0, 4, size=n)
    kind = rng.choice(["expired", "embargoed", "open", "inside"], size=n, p=[0.6, 0.1, 0.1, 0.2])
    kind[tenants == 2] = rng.choice(["expired", "embargoed"], size=int((tenants == 2).sum()))
    frm = {"expired": "2001-01-01", "embargoed": "tomorrow", "open": None, "inside": "2001-01-01"}
    until = {"expired": "2002-01-01", "embargoed": None, "open": None, "inside": "infinity"}
    su.execute("CREATE ROLE app LOGIN")
    su.execute("SELECT vecguard.add_key('wb', 'HS256', %s)", [SECRET])
    su.execute("""CREATE TABLE wdocs (id int PRIMARY KEY, tenant_id int NOT NULL, clearance int NOT NULL,
                  valid_from timestamptz, valid_until timestamptz, embedding vector(50))""")
    with su.cursor().copy("COPY wdocs FROM STDIN") as cp:
        for i in range(n):
            cp.write_row((i, int(tenants[i]), int(clearance[i]), frm[kind[i]], until[kind[i]], vec_literal(data[i])))
    t0 = time.perf_counter()
    su.execute("CREATE INDEX ON wdocs USING hnsw (tenant_id, embedding vector_cosine_ops, clearance, valid_from, valid_until)")
    print(f"index build: {time.perf_counter() - t0:.1f} s")
    su.execute("VACUUM ANALYZE wdocs")
    su.execute("GRANT SELECT ON wdocs TO app")
    su.execute("""SELECT vecguard.protect('wdocs', tenant => 'tenant_id', clearance => 'clearance',
                  valid_from => 'valid_from', valid_until => 'valid_until')""")
    visible = (tenants == 1) & (clearance <= 1) & np.isin(kind, ["open", "inside"])
    return np.nonzero(visible)[0]


def cpu_of(pid):
    """The server process's CPU time so far, as `backend_cpu_seconds` (no query per call)."""
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0]) / 1e9


def set_policy(su, form):
    su.execute(f"ALTER POLICY vecguard_validity ON wdocs USING ({form})")


def exact_top(data, allowed, q, k=10):
    d = data[allowed].astype(np.float64)
    qq = q.astype(np.float64)
    dist = 1 - d @ qq / (np.linalg.norm(d, axis=1) * np.linalg.norm(qq))
    return set(allowed[np.argsort(dist, kind="stable")[:k]].tolist())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--ef-search", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    data = glove(args.rows)
    queries = glove(None)[300000:300000 + args.queries]
    print(f"machine: {machine()}; {args.rows} rows, {args.queries} queries, ef_search {args.ef_search}")
    c = vecguard_cluster()
    try:
        with c.connect() as su:
            su.autocommit = True
            allowed = build(su, data, np.random.default_rng(17))
            print(f"rows tenant 1 with clearance 1 sees: {len(allowed)}")
            # one token per path for the whole session (the bench's connection is not shared)
            su.execute("ALTER DATABASE postgres SET vecguard.token_scope = 'session'")
            with c.connect() as app:
                app.autocommit = True
                run(su, app, data, queries, allowed, args)
    finally:
        c.destroy()


def run(su, app, data, queries, allowed, args):
    app.execute("SET ROLE app")
    for conn in (su, app):
        conn.execute(f"CREATE TEMP TABLE queries (qid int, v vector({queries.shape[1]}))")
        with conn.cursor().copy("COPY queries FROM STDIN") as cp:
            for i, v in enumerate(queries):
                cp.write_row((i, vec_literal(v)))
        conn.execute(f"SET hnsw.ef_search = {args.ef_search}")
    tokens = {1: token(1, 1), 2: token(2, 3)}

    def use(tenant):
        app.execute("SELECT set_config('vecguard.jwt', %s, false)", [tokens[tenant]])

    plan = {}
    for name, form in (("index cond", NEW), ("filter", OLD)):
        set_policy(su, form)
        use(1)
        plan[name] = "\n".join(r[0] for r in app.execute(
            "EXPLAIN (COSTS OFF) SELECT id FROM wdocs ORDER BY embedding <=> %s::vector LIMIT 10",
            [vec_literal(queries[0])]))
        rows = hits = 0
        for q in queries:
            got = [r[0] for r in app.execute(
                "SELECT id FROM wdocs ORDER BY embedding <=> %s::vector LIMIT 10", [vec_literal(q)])]
            rows += len(got)
            hits += len(exact_top(data, allowed, q) & set(got))
        print(f"window {name}: rows per query {rows / len(queries):.2f}, recall@10 {hits / (10 * len(queries)):.3f}")
        use(2)
        got = app.execute("SELECT count(*) FROM queries q, LATERAL (SELECT id FROM wdocs "
                          "ORDER BY embedding <=> q.v LIMIT 10) s").fetchone()[0]
        print(f"nothing visible, window {name}: {got} rows in all")
    assert "Filter" not in plan["index cond"] and "Filter" in plan["filter"], plan

    sql = "SELECT count(*) FROM queries q, LATERAL (SELECT id FROM wdocs ORDER BY embedding <=> q.v LIMIT 10) s"
    chunk = sql + " WHERE q.qid >= %s AND q.qid < %s"
    ingest = iter(glove(None)[350000:])
    next_id = len(data)
    paths = [("unfiltered", su, None, None), ("window index cond", app, 1, NEW), ("window filter", app, 1, OLD),
             ("nothing visible, index cond", app, 2, NEW), ("nothing visible, filter", app, 2, OLD),
             ("window index cond, 10 per statement", app, 1, NEW),
             ("the same, inserts", app, 1, NEW),
             ("the same, other tenant's inserts", app, 1, NEW)]
    us = {p[0]: [] for p in paths}
    for _ in range(args.rounds):
        for name, conn, tenant, form in paths:
            if form:
                set_policy(su, form)
                use(tenant)
            conn.execute(sql).fetchone()  # warm, and plan
            if "statement" in name or "inserts" in name:
                spent = 0.0
                pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
                for a in range(0, len(queries), 10):
                    if "inserts" in name:
                        into = 0 if "other tenant" in name else 1
                        su.execute("INSERT INTO wdocs VALUES (%s, %s, 0, NULL, NULL, %s)",
                                   [next_id, into, vec_literal(next(ingest))])
                        next_id += 1
                    before = cpu_of(pid)
                    conn.execute(chunk, [a, a + 10]).fetchone()
                    spent += cpu_of(pid) - before
                us[name].append(spent / len(queries) * 1e6)
                continue
            before = backend_cpu_seconds(conn)
            conn.execute(sql).fetchone()
            us[name].append((backend_cpu_seconds(conn) - before) / len(queries) * 1e6)
    base = median(us["unfiltered"])
    print(f"\nserver CPU per query, {args.rounds} interleaved rounds")
    print(f"{'path':>28} {'median us':>10} {'QPS-equiv.':>11} {'vs unfiltered':>14}  rounds (us)")
    for name, *_ in paths:
        m = median(us[name])
        print(f"{name:>28} {m:>10.0f} {1e6 / m:>11.0f} {base / m:>13.2f}x  " + " ".join(f"{x:.0f}" for x in us[name]))


if __name__ == "__main__":
    main()
