"""CREATE INDEX ... USING hnsw: build parallelism follows the server's settings, the
low-memory path reports pgvector's NOTICE, and inner-product recall holds on random data
(pgvector's TAP 012 distribution) and on GloVe.

Build threads are the leader plus the workers PostgreSQL would give a parallel index build
(pgvector's rule: plan_create_index_workers, the table's parallel_workers reloption,
max_parallel_maintenance_workers), capped by cores; DEBUG1 says "using N parallel workers"
when N > 0, exactly as pgvector does.
"""

import os
import re

import numpy as np
import pytest

from test_hnsw import GLOVE, OPS, check, load, recall


def cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def build_messages(conn, sql, settings):
    """Runs a CREATE INDEX with `settings` (SET ... statements) and debug1 messages on;
    returns the notices (severity, primary, detail, hint)."""
    msgs = []

    def handler(diag):
        msgs.append((diag.severity_nonlocalized, diag.message_primary, diag.message_detail, diag.message_hint))

    conn.add_notice_handler(handler)
    try:
        conn.execute("SET client_min_messages = debug1")
        for s in settings:
            conn.execute(s)
        conn.execute(sql)
    finally:
        conn.execute("RESET client_min_messages")
        conn.remove_notice_handler(handler)
    return msgs


def workers_reported(msgs):
    found = [int(m.group(1)) for _, p, _, _ in msgs if (m := re.fullmatch(r"using (\d+) parallel workers", p))]
    assert len(found) <= 1, msgs
    return found[0] if found else 0


@pytest.fixture
def db(cluster, dbname):
    with cluster.connect(dbname) as conn:
        conn.autocommit = True
        yield conn


def random_table(db, table, n, dim, seed):
    rng = np.random.default_rng(seed)
    data = (rng.random((n, dim)) * rng.random((n, dim))).astype(np.float32)
    load(db, table, data)
    return data


def test_threads_follow_max_parallel_maintenance_workers(db):
    random_table(db, "par", 3000, 8, 1)
    # Our own reloption so the planner does not turn a small table down; the GUC caps it.
    db.execute("ALTER TABLE par SET (parallel_workers = 8)")
    for w in [0, 1, 2, 3]:
        msgs = build_messages(db, "CREATE INDEX par_idx ON par USING hnsw (embedding vector_l2_ops)",
                              [f"SET max_parallel_maintenance_workers = {w}"])
        expected = min(w, cores() - 1)
        assert workers_reported(msgs) == expected, (w, msgs)
        check(db, "par_idx")
        db.execute("DROP INDEX par_idx")
    # The table's reloption caps the GUC.
    db.execute("ALTER TABLE par SET (parallel_workers = 1)")
    msgs = build_messages(db, "CREATE INDEX par_idx ON par USING hnsw (embedding vector_l2_ops)",
                          ["SET max_parallel_maintenance_workers = 4"])
    assert workers_reported(msgs) == min(1, cores() - 1), msgs
    db.execute("DROP INDEX par_idx")
    # Without the reloption a small table is built serially, as the planner decides for
    # any index (min_parallel_table_scan_size) ...
    db.execute("ALTER TABLE par RESET (parallel_workers)")
    msgs = build_messages(db, "CREATE INDEX par_idx ON par USING hnsw (embedding vector_l2_ops)",
                          ["SET max_parallel_maintenance_workers = 2"])
    assert workers_reported(msgs) == 0, msgs
    db.execute("DROP INDEX par_idx")
    # ... unless that threshold is lowered (what pgvector's TAP 012 does).
    msgs = build_messages(db, "CREATE INDEX par_idx ON par USING hnsw (embedding vector_l2_ops)",
                          ["SET max_parallel_maintenance_workers = 1", "SET min_parallel_table_scan_size = 1"])
    assert workers_reported(msgs) == min(1, cores() - 1), msgs
    db.execute("DROP INDEX par_idx")
    db.execute("RESET max_parallel_maintenance_workers")
    db.execute("RESET min_parallel_table_scan_size")


def low_memory_notice(msgs):
    hits = [m for m in msgs if m[1].startswith("hnsw graph no longer fits into maintenance_work_mem")]
    assert len(hits) <= 1, msgs
    return hits[0] if hits else None


def test_low_memory_build_notice(db):
    data = random_table(db, "lowmem", 4000, 3, 2)
    # Serial build: the graph gets all of maintenance_work_mem (1MB holds well under 4000
    # elements), the rest is inserted on disk.
    msgs = build_messages(db, "CREATE INDEX lowmem_idx ON lowmem USING hnsw (embedding vector_l2_ops)",
                          ["SET max_parallel_maintenance_workers = 0", "SET maintenance_work_mem = '1MB'"])
    n = low_memory_notice(msgs)
    assert n is not None, msgs
    sev, primary, detail, hint = n
    assert sev == "NOTICE"
    after = int(re.fullmatch(r"hnsw graph no longer fits into maintenance_work_mem after (\d+) tuples", primary).group(1))
    assert 0 < after < len(data), primary
    assert detail == "Building will take significantly more time."
    assert hint == "Increase maintenance_work_mem to speed up builds."
    check(db, "lowmem_idx")
    db.execute("SET hnsw.ef_search = 100")
    queries = np.random.default_rng(3).random((30, 3)).astype(np.float32)
    assert recall(db, "lowmem", data, np.arange(len(data)), queries, "l2") >= 0.95
    db.execute("DROP INDEX lowmem_idx")
    # Enough memory: no notice.
    msgs = build_messages(db, "CREATE INDEX lowmem_idx ON lowmem USING hnsw (embedding vector_l2_ops)",
                          ["SET max_parallel_maintenance_workers = 0", "SET maintenance_work_mem = '64MB'"])
    assert low_memory_notice(msgs) is None, msgs
    db.execute("DROP INDEX lowmem_idx")
    # A parallel build keeps pgvector's 3MB + 1MB reserve: 3073kB holds no tuple (TAP 045).
    if cores() > 1:
        db.execute("ALTER TABLE lowmem SET (parallel_workers = 1)")
        msgs = build_messages(db, "CREATE INDEX lowmem_idx ON lowmem USING hnsw (embedding vector_l2_ops)",
                              ["SET max_parallel_maintenance_workers = 2", "SET maintenance_work_mem = '3073kB'"])
        assert workers_reported(msgs) == 1, msgs
        n = low_memory_notice(msgs)
        assert n is not None and n[1].endswith("after 0 tuples"), msgs
        check(db, "lowmem_idx")
        db.execute("DROP INDEX lowmem_idx")
        db.execute("ALTER TABLE lowmem RESET (parallel_workers)")
    db.execute("RESET maintenance_work_mem")
    db.execute("RESET max_parallel_maintenance_workers")


def scan_recall(db, table, data, queries, metric, k, ef):
    db.execute(f"SET hnsw.ef_search = {ef}")
    return recall(db, table, data, np.arange(len(data)), queries, metric, k)


# Floors: pgvector's own 0.97 for TAP 012's data (0.86-0.89 before link_orphans spread
# orphans over hosts); GloVe ip recall@10 at ef 100 measured 0.97 (the old floor was 0.85).
TAP012_IP_FLOOR = 0.97
GLOVE_IP_FLOOR = 0.95


@pytest.mark.parametrize("workers", [0, 1])
def test_ip_recall_tap012_data(db, workers):
    """pgvector's TAP 012: 10000 3-d vectors of random() * random(), 20 uniform queries,
    LIMIT 20 at the default ef_search = 40; pgvector requires 0.97 for vector_ip_ops."""
    table = f"tap_ip_{workers}"
    data = random_table(db, table, 10000, 3, 12 + workers)
    queries = np.random.default_rng(40 + workers).random((100, 3)).astype(np.float32)
    build_messages(db, f"CREATE INDEX {table}_idx ON {table} USING hnsw (embedding vector_ip_ops)",
                   [f"SET max_parallel_maintenance_workers = {workers}", "SET min_parallel_table_scan_size = 1"])
    r = scan_recall(db, table, data, queries, "ip", 20, 40)
    assert r >= TAP012_IP_FLOOR, f"ip recall {r}"
    # Most nodes of this data share the same few large-norm nearest neighbours, and many
    # end with no incoming edge; the build used to leave about 15% of them unreachable
    # (1,554 and 1,589 of 10,000 with 1 and 2 threads), now about 5% (439-566).
    assert check(db, f"{table}_idx", reachable=False)["unreachable"] <= len(data) * 0.08
    # l2 and cosine on the same data keep pgvector's 0.99.
    for metric in ["l2", "cosine"]:
        db.execute(f"CREATE INDEX {table}_{metric} ON {table} USING hnsw (embedding {OPS[metric][0]})")
        r = scan_recall(db, table, data, queries, metric, 20, 40)
        assert r >= 0.99, f"{metric} recall {r}"
        db.execute(f"DROP INDEX {table}_{metric}")
    db.execute("RESET max_parallel_maintenance_workers")
    db.execute("RESET min_parallel_table_scan_size")


def test_ip_recall_glove(db):
    data = np.asarray(GLOVE[:10000], dtype=np.float32)
    queries = np.asarray(GLOVE[200000:200050], dtype=np.float32)
    load(db, "glove_ip", data)
    db.execute("CREATE INDEX glove_ip_idx ON glove_ip USING hnsw (embedding vector_ip_ops)")
    r = scan_recall(db, "glove_ip", data, queries, "ip", 10, 100)
    assert r >= GLOVE_IP_FLOOR, f"ip recall {r}"
    check(db, "glove_ip_idx", reachable=False)
