"""Exact top-10 over GloVe vectors via SQL, vecguard vs pgvector, in one run.

`SELECT id FROM items ORDER BY embedding <=> $1 LIMIT 10` without an index: a sequential
scan computing one distance per row plus a top-N sort. Both servers get the same data,
queries and settings; queries alternate between them so machine noise hits both alike.
Prints median latency per engine and metric, and the pgvector/vecguard ratio.
"""

import argparse

import numpy as np

from common import glove, load, median, pgvector_cluster, timed, vec_literal, vecguard_cluster, machine

OPS = {"cosine": "<=>", "l2": "<->", "ip": "<#>", "l1": "<+>"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=30)
    ap.add_argument("--workers", type=int, default=0, help="max_parallel_workers_per_gather")
    args = ap.parse_args()

    data = glove(args.rows + args.queries)
    base, queries = data[: args.rows], data[args.rows:]
    engines = {"vecguard": vecguard_cluster(), "pgvector": pgvector_cluster()}
    try:
        conns = {}
        for name, c in engines.items():
            conn = c.connect()
            load(conn, "items", base)
            conn.execute(f"SET max_parallel_workers_per_gather = {args.workers}")
            conns[name] = conn
        print(f"exact top-10 over {args.rows} GloVe 50-d rows, {args.queries} queries, "
              f"parallel workers {args.workers}, {machine()}; pgvector {engines['pgvector'].version} on PG18, "
              f"vecguard on PG15")
        print(f"{'query':<16} {'vecguard ms':>12} {'pgvector ms':>12} {'pgvector/vecguard':>18} {'same ids':>9}")
        # The same scan ordered by a builtin function of the column: what the two server
        # versions (PG15 vs PG18) cost per row before any vector code runs.
        baseline = "SELECT id FROM items ORDER BY pg_column_size(embedding) + length(%s) LIMIT 10"
        for metric, op in [("engine baseline", None)] + list(OPS.items()):
            sql = baseline if op is None else f"SELECT id FROM items ORDER BY embedding {op} %s::vector LIMIT 10"
            times = {n: [] for n in conns}
            same = 0
            for q in queries:
                lit = vec_literal(q)
                for conn in conns.values():  # warm-up / plan
                    conn.execute(sql, [lit]).fetchall()
                res = {}
                for n, conn in conns.items():
                    rows, t = timed(lambda: conn.execute(sql, [lit]).fetchall())
                    times[n].append(t * 1000)
                    res[n] = [r[0] for r in rows]
                same += res["vecguard"] == res["pgvector"]
            v, p = median(times["vecguard"]), median(times["pgvector"])
            print(f"{metric:<16} {v:>12.2f} {p:>12.2f} {p / v:>17.2f}x {same:>5}/{len(queries)}")
    finally:
        for c in engines.values():
            c.destroy()


if __name__ == "__main__":
    main()
