"""HNSW behaviours pgvector's users rely on, beyond recall: statistics, plan choices, the
rows a filtered query returns."""

import random


def test_scans_are_counted_in_pg_stat_user_indexes(conn):
    """DBAs drop indexes whose idx_scan stays 0: every hnsw scan counts, and so does each
    tuple it returns (idx_tup_read)."""
    rng = random.Random(7)
    conn.execute("CREATE TABLE st_items (id int, embedding vector(4))")
    with conn.cursor().copy("COPY st_items FROM STDIN") as cp:
        for i in range(500):
            cp.write_row((i, "[" + ",".join(f"{rng.random():.4f}" for _ in range(4)) + "]"))
    conn.execute("CREATE INDEX st_hnsw ON st_items USING hnsw (embedding vector_l2_ops)")
    conn.execute("SET enable_seqscan = off")
    for _ in range(3):
        rows = conn.execute("SELECT id FROM st_items ORDER BY embedding <-> '[0.5,0.5,0.5,0.5]' LIMIT 5").fetchall()
        assert len(rows) == 5
    conn.execute("SELECT pg_stat_force_next_flush()")
    scans, tuples = conn.execute(
        "SELECT idx_scan, idx_tup_read FROM pg_stat_user_indexes WHERE indexrelname = 'st_hnsw'").fetchone()
    assert scans == 3
    assert tuples >= 15


def test_partial_index_keeps_table_statistics_and_is_chosen(conn):
    """A partial index's build saw every heap row: the table's reltuples must stay the row
    count (it became the number of rows the predicate kept, and the planner then
    misjudged every later query), and a query that matches the predicate uses it."""
    conn.execute("CREATE TABLE pt_items (id int, c int, embedding vector(3))")
    conn.execute("""INSERT INTO pt_items SELECT i, i % 50, ARRAY[random(), random(), random()]
                    FROM generate_series(1, 10000) i""")
    conn.execute("CREATE INDEX ON pt_items USING hnsw (embedding vector_l2_ops)")
    conn.execute("ANALYZE pt_items")
    conn.execute("CREATE INDEX ON pt_items (c)")
    conn.execute("CREATE INDEX pt_partial ON pt_items USING hnsw (embedding vector_l2_ops) WHERE (c = 7)")
    assert conn.execute("SELECT reltuples FROM pg_class WHERE relname = 'pt_items'").fetchone() == (10000,)
    q = "SELECT id FROM pt_items WHERE c = 7 ORDER BY embedding <-> '[0.5,0.5,0.5]' LIMIT 20"
    plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + q).fetchall())
    assert "Index Scan using pt_partial" in plan, plan
    rows = conn.execute(q).fetchall()
    assert len(rows) == 20 and all(i % 50 == 7 for (i,) in rows)
