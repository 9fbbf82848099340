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
