"""SQL-level tests of the pgvector-compatible `sparsevec` type against a live cluster."""

import io
import struct

import numpy as np
import psycopg
import pytest
from pgvector import SparseVector
from pgvector.psycopg import register_vector


def sqlstate_of(conn, query, params=None):
    """Runs a query that must fail; returns (sqlstate, message) and checks the backend lives."""
    with pytest.raises(psycopg.Error) as info:
        conn.execute(query, params)
    assert conn.execute("SELECT 1").fetchone() == (1,), "backend must survive a bad input"
    return info.value.sqlstate, info.value.diag.message_primary


def one(conn, query, params=None):
    return conn.execute(query, params).fetchone()[0]


@pytest.mark.parametrize(
    "literal,state,message",
    [
        ("{1:hello,2:1}/2", "22P02", 'invalid input syntax for type sparsevec: "{1:hello,2:1}/2"'),
        ("", "22P02", 'invalid input syntax for type sparsevec: ""'),
        ("{}", "22P02", 'invalid input syntax for type sparsevec: "{}"'),
        ("{}/1a", "22P02", 'invalid input syntax for type sparsevec: "{}/1a"'),
        ("{1:NaN}/2", "22000", "NaN not allowed in sparsevec"),
        ("{1:-Infinity}/2", "22000", "infinite value not allowed in sparsevec"),
        ("{1:4e38}/2", "22003", '"4e38" is out of range for type sparsevec'),
        ("{1:1e-46}/2", "22003", '"1e-46" is out of range for type sparsevec'),
        ("{}/0", "22000", "sparsevec must have at least 1 dimension"),
        ("{}/1000000001", "54000", "sparsevec cannot have more than 1000000000 dimensions"),
        ("{0:1}/1", "22000", "sparsevec index out of bounds"),
        ("{2:1}/1", "22000", "sparsevec index out of bounds"),
        ("{1:1,1:2}/2", "22000", "sparsevec indices must not contain duplicates"),
    ],
)
def test_bad_text_input(conn, literal, state, message):
    assert sqlstate_of(conn, "SELECT %s::sparsevec", [literal]) == (state, message)


def test_text_forms_and_limits(conn):
    row = conn.execute(
        "SELECT ' { 3 : 3.5 , 1 : 1.5 } / 5 '::sparsevec::text, '{1:0,2:-0,3:1}/3'::sparsevec::text, "
        "'{}/1000000000'::sparsevec::text, '{1:1e-7,2:1e20}/2'::sparsevec::text").fetchone()
    assert row == ("{1:1.5,3:3.5}/5", "{3:1}/3", "{}/1000000000", "{1:1e-07,2:1e+20}/2")
    full = "{" + ",".join(f"{i + 1}:{i % 7 + 1}" for i in range(16000)) + "}/1000000000"
    assert one(conn, "SELECT %s::sparsevec::text", [full]) == full
    over = "{" + ",".join(f"{i + 1}:1" for i in range(16001)) + "}/1000000000"
    assert sqlstate_of(conn, "SELECT %s::sparsevec", [over]) == (
        "54000", "sparsevec cannot have more than 16000 non-zero elements")


def test_typmod(conn):
    conn.execute("CREATE TABLE sv_typmod (v sparsevec(3))")
    conn.execute("INSERT INTO sv_typmod VALUES ('{1:1}/3')")
    assert sqlstate_of(conn, "INSERT INTO sv_typmod VALUES ('{1:1}/4')") == ("22000", "expected 3 dimensions, not 4")
    assert sqlstate_of(conn, "INSERT INTO sv_typmod VALUES ('[1,2]'::vector)") == ("22000", "expected 3 dimensions, not 2")
    assert sqlstate_of(conn, "INSERT INTO sv_typmod VALUES (ARRAY[1,2])") == ("22000", "expected 3 dimensions, not 2")
    assert one(conn, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                     "WHERE attrelid = 'sv_typmod'::regclass AND attname = 'v'") == "sparsevec(3)"
    assert sqlstate_of(conn, "SELECT '{}/3'::sparsevec(3, 2)") == ("22023", "invalid type modifier")
    assert sqlstate_of(conn, "SELECT '{}/3'::sparsevec(0)") == ("22023", "dimensions for type sparsevec must be at least 1")
    assert sqlstate_of(conn, "SELECT '{}/3'::sparsevec(1000000001)") == (
        "22023", "dimensions for type sparsevec cannot exceed 1000000000")


def test_casts(conn):
    row = conn.execute(
        "SELECT '[0,1.5,0,-2]'::vector::sparsevec::text, '{2:1.5,4:-2}/4'::sparsevec::vector::text, "
        "ARRAY[0,2,0,3]::sparsevec::text, ARRAY[0,1.5]::real[]::sparsevec::text, "
        "ARRAY[0,1.5]::float8[]::sparsevec::text, ARRAY[0,1.25]::numeric[]::sparsevec::text, "
        "'{1:1}/3'::sparsevec(3)::text").fetchone()
    assert row == ("{2:1.5,4:-2}/4", "[0,1.5,0,-2]", "{2:2,4:3}/4", "{2:1.5}/2", "{2:1.5}/2", "{2:1.25}/2", "{1:1}/3")
    assert sqlstate_of(conn, "SELECT '{1:1}/16001'::sparsevec::vector") == (
        "54000", "vector cannot have more than 16000 dimensions")
    assert sqlstate_of(conn, "SELECT ARRAY[1,NULL]::sparsevec") == ("22004", "array must not contain nulls")
    assert sqlstate_of(conn, "SELECT ARRAY[[1,2]]::sparsevec") == ("22000", "array must be 1-D")
    assert sqlstate_of(conn, "SELECT ARRAY[]::int[]::sparsevec") == ("22000", "sparsevec must have at least 1 dimension")
    assert sqlstate_of(conn, "SELECT ARRAY[1e300]::float8[]::sparsevec") == (
        "22000", "infinite value not allowed in sparsevec")
    assert sqlstate_of(conn, "SELECT ARRAY['NaN']::float8[]::sparsevec") == ("22000", "NaN not allowed in sparsevec")
    assert sqlstate_of(conn, "SELECT array_fill(1, ARRAY[16001])::sparsevec") == (
        "54000", "sparsevec cannot have more than 16000 non-zero elements")
    # implicit vector -> sparsevec, assignment sparsevec -> vector
    conn.execute("CREATE TABLE sv_cast (s sparsevec, v vector)")
    conn.execute("INSERT INTO sv_cast VALUES ('[1,0,2]'::vector, '{1:1}/2'::sparsevec)")
    assert conn.execute("SELECT s::text, v::text FROM sv_cast").fetchone() == ("{1:1,3:2}/3", "[1,0]")


def test_distances_and_functions(conn):
    row = conn.execute(
        "SELECT '{}/2'::sparsevec <-> '{1:3,2:4}/2', '{1:1,2:2}/2'::sparsevec <#> '{1:3,2:4}/2', "
        "'{1:1,2:2}/2'::sparsevec <=> '{1:2,2:4}/2', '{}/2'::sparsevec <+> '{1:3,2:4}/2', "
        "inner_product('{1:1,3:3,5:5}/5'::sparsevec, '{2:4,3:6,4:8}/5'), "
        "cosine_distance('{1:1}/2'::sparsevec, '{2:2}/2'), l1_distance('{1:1,3:3}/4'::sparsevec, '{2:2,4:4}/4'), "
        "l2_distance('{1:3}/2'::sparsevec, '{2:4}/2'), l2_norm('{1:3,2:4}/2'::sparsevec), "
        "l2_normalize('{1:3,2:4}/2'::sparsevec)::text, sparsevec_l2_squared_distance('{1:3}/2', '{2:4}/2'), "
        "sparsevec_negative_inner_product('{1:2}/2', '{1:3}/2')").fetchone()
    assert row == (5.0, -11.0, 0.0, 7.0, 18.0, 1.0, 10.0, 5.0, 5.0, "{1:0.6,2:0.8}/2", 25.0, -6.0)
    assert np.isnan(one(conn, "SELECT '{1:1}/2'::sparsevec <=> '{}/2'"))
    assert one(conn, "SELECT inner_product('{1:3e38}/1'::sparsevec, '{1:3e38}/1')") == float("inf")
    assert one(conn, "SELECT l2_norm('{}/2'::sparsevec)::text") == "0"
    for op in ["<->", "<#>", "<=>", "<+>"]:
        assert sqlstate_of(conn, f"SELECT '{{}}/2'::sparsevec {op} '{{}}/1'") == (
            "22000", "different sparsevec dimensions 2 and 1")


def test_distances_match_dense_vector(conn):
    """On random vectors the sparse kernels agree with the dense ones (float4 accumulation
    against float8, so closely rather than exactly)."""
    rng = np.random.default_rng(5)
    for dim in [1, 3, 17, 100]:
        a = rng.standard_normal(dim).astype(np.float32) * (rng.random(dim) < 0.5)
        b = rng.standard_normal(dim).astype(np.float32) * (rng.random(dim) < 0.5)
        va, vb = ("[" + ",".join(repr(float(x)) for x in v) + "]" for v in (a, b))
        for op in ["<->", "<#>", "<+>"]:
            dense = one(conn, f"SELECT %s::vector {op} %s::vector", [va, vb])
            sparse = one(conn, f"SELECT %s::vector::sparsevec {op} %s::vector::sparsevec", [va, vb])
            assert sparse == pytest.approx(dense, rel=1e-5, abs=1e-5), (dim, op)


def test_btree_order_distinct_unique(conn):
    conn.execute("CREATE TABLE sv_bt (v sparsevec)")
    conn.execute("INSERT INTO sv_bt VALUES ('{1:1,2:2}/2'), ('{1:1,2:2,3:3}/3'), ('{}/3'), ('{1:1,2:2}/2'), "
                 "('{1:-1}/3'), ('{1:2}/2')")
    got = [r[0] for r in conn.execute("SELECT v::text AS t FROM sv_bt ORDER BY sv_bt.v")]
    assert got == ["{1:-1}/3", "{}/3", "{1:1,2:2}/2", "{1:1,2:2}/2", "{1:1,2:2,3:3}/3", "{1:2}/2"]
    assert one(conn, "SELECT count(DISTINCT v) FROM sv_bt") == 5
    assert sqlstate_of(conn, "CREATE UNIQUE INDEX ON sv_bt (v)")[0] == "23505"
    conn.execute("DELETE FROM sv_bt WHERE ctid IN (SELECT ctid FROM sv_bt WHERE v = '{1:1,2:2}/2' LIMIT 1)")
    conn.execute("CREATE UNIQUE INDEX sv_bt_v ON sv_bt (v)")
    conn.execute("SET enable_seqscan = off")
    assert one(conn, "SELECT v::text FROM sv_bt WHERE v = '{1:2}/2'") == "{1:2}/2"
    conn.execute("RESET enable_seqscan")
    assert one(conn, "SELECT sparsevec_cmp('{1:1,2:2}/2', '{1:1,2:2,3:3}/3')") == -1


def _binary_param(conn, payload: bytes, typname="sparsevec"):
    oid = one(conn, f"SELECT '{typname}'::regtype::oid")
    return conn.pgconn.exec_params(b"SELECT $1::text", [payload], [oid], [1])


def test_binary_recv_rejects_bad_messages(conn):
    def msg(dim, nnz, unused, idx, vals):
        return struct.pack(f">iii{len(idx)}i{len(vals)}f", dim, nnz, unused, *idx, *vals)
    res = _binary_param(conn, msg(5, 2, 0, [0, 2], [1.5, -2.0]))
    assert res.status == psycopg.pq.ExecStatus.TUPLES_OK
    assert res.get_value(0, 0) == b"{1:1.5,3:-2}/5"
    cases = [
        (msg(5, 2, 1, [0, 2], [1.0, 2.0]), "22000", b"expected unused to be 0, not 1"),
        (msg(5, 2, 0, [0, 2], [1.0]), "08P01", b"insufficient data left in message"),
        (msg(5, 2, 0, [2, 0], [1.0, 2.0]), "22000", b"sparsevec indices must be in ascending order"),
        (msg(5, 2, 0, [2, 2], [1.0, 2.0]), "22000", b"sparsevec indices must not contain duplicates"),
        (msg(5, 1, 0, [5], [1.0]), "22000", b"sparsevec index out of bounds"),
        (msg(5, 1, 0, [0], [0.0]), "22000", b"binary representation of sparsevec cannot contain zero values"),
        (msg(5, 1, 0, [0], [float("nan")]), "22000", b"NaN not allowed in sparsevec"),
        (msg(0, 0, 0, [], []), "22000", b"sparsevec must have at least 1 dimension"),
        (msg(5, -1, 0, [], []), "22000", b"sparsevec cannot have negative number of elements"),
        (msg(2, 3, 0, [], []), "54000", b"sparsevec cannot have more elements than dimensions"),
        (msg(10 ** 9, 16001, 0, [], []), "54000", b"sparsevec cannot have more than 16000 non-zero elements"),
        (msg(10 ** 9 + 1, 0, 0, [], []), "54000", b"sparsevec cannot have more than 1000000000 dimensions"),
        (msg(5, 1, 0, [0], [1.0]) + b"\x00", "22P03", b"incorrect binary data format in bind parameter 1"),
    ]
    for payload, state, message in cases:
        res = _binary_param(conn, payload)
        assert res.status == psycopg.pq.ExecStatus.FATAL_ERROR, payload
        assert res.error_field(psycopg.pq.DiagnosticField.SQLSTATE).decode() == state, payload
        assert res.error_field(psycopg.pq.DiagnosticField.MESSAGE_PRIMARY) == message
        assert one(conn, "SELECT 1") == 1


def test_copy_binary_round_trip_and_typmod(conn):
    rng = np.random.default_rng(11)
    conn.execute("CREATE TABLE sv_src (id int, v sparsevec(1000))")
    with conn.cursor().copy("COPY sv_src FROM STDIN") as cp:
        for i in range(300):
            idx = sorted(rng.choice(1000, size=int(rng.integers(0, 40)), replace=False))
            vals = rng.standard_normal(len(idx)).astype(np.float32)
            cp.write_row((i, "{" + ",".join(f"{j + 1}:{float(v)!r}" for j, v in zip(idx, vals)) + "}/1000"))
    buf = io.BytesIO()
    with conn.cursor().copy("COPY sv_src TO STDOUT (FORMAT binary)") as cp:
        for chunk in cp:
            buf.write(chunk)
    conn.execute("CREATE TABLE sv_dst (id int, v sparsevec(1000))")
    with conn.cursor().copy("COPY sv_dst FROM STDIN (FORMAT binary)") as cp:
        cp.write(buf.getvalue())
    assert one(conn, "SELECT count(*) FROM sv_src s JOIN sv_dst d USING (id) "
                     "WHERE sparsevec_send(s.v) = sparsevec_send(d.v) AND s.v::text = d.v::text") == 300
    conn.execute("CREATE TABLE sv_narrow (id int, v sparsevec(999))")
    with pytest.raises(psycopg.Error) as info:
        with conn.cursor().copy("COPY sv_narrow FROM STDIN (FORMAT binary)") as cp:
            cp.write(buf.getvalue())
    assert (info.value.sqlstate, info.value.diag.message_primary) == ("22000", "expected 999 dimensions, not 1000")


def test_pgvector_python_client(conn):
    register_vector(conn)
    conn.execute("CREATE TABLE sv_client (id int, v sparsevec(6))")
    values = [SparseVector({0: 1.5, 5: -2.0}, 6), SparseVector([0, 0, 3, 0, 0, 0]), SparseVector({}, 6)]
    conn.execute("INSERT INTO sv_client VALUES (0, %s)", (values[0],))
    with conn.cursor(binary=True) as cur:
        cur.execute("INSERT INTO sv_client VALUES (1, %b), (2, %b)", (values[1], values[2]))
        cur.execute("SELECT v FROM sv_client ORDER BY id")
        got_binary = [r[0] for r in cur.fetchall()]
    got_text = [r[0] for r in conn.execute("SELECT v FROM sv_client ORDER BY id")]
    for got in (got_binary, got_text):
        assert [(g.dimensions(), g.indices(), g.values()) for g in got] == [
            (6, [0, 5], [1.5, -2.0]), (6, [2], [3.0]), (6, [], [])]
    nearest = one(conn, "SELECT id FROM sv_client ORDER BY v <-> %s LIMIT 1", (SparseVector({2: 2.9}, 6),))
    assert nearest == 1


def test_halfvec_casts(conn):
    """sparsevec <-> halfvec, with pgvector's dimension, size and range errors."""
    assert one(conn, "SELECT '[0,1.5,0,3.5,-0]'::halfvec::sparsevec::text") == "{2:1.5,4:3.5}/5"
    assert one(conn, "SELECT halfvec_to_sparsevec('[0,1.5,0,3.5,0]'::halfvec, 5, false)::text") == "{2:1.5,4:3.5}/5"
    assert sqlstate_of(conn, "SELECT halfvec_to_sparsevec('[0,1.5,0,3.5,0]'::halfvec, 4, false)") == (
        "22000", "expected 4 dimensions, not 5")
    assert one(conn, "SELECT '{2:1.5,4:3.5}/5'::sparsevec::halfvec::text") == "[0,1.5,0,3.5,0]"
    assert one(conn, "SELECT '{1:1e-8,2:-65504}/2'::sparsevec::halfvec::text") == "[0,-65504]"
    assert sqlstate_of(conn, "SELECT sparsevec_to_halfvec('{}/5', 4, false)") == (
        "22000", "expected 4 dimensions, not 5")
    assert sqlstate_of(conn, "SELECT '{}/16001'::sparsevec::halfvec") == (
        "54000", "halfvec cannot have more than 16000 dimensions")
    assert sqlstate_of(conn, "SELECT '{1:65520}/1'::sparsevec::halfvec") == (
        "22003", '"65520" is out of range for type halfvec')
