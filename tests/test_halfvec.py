"""SQL-level tests of the pgvector-compatible `halfvec` type (and the vector functions that
came with it: exact cosine, binary_quantize) against a live cluster."""

import math
import struct

import numpy as np
import psycopg
import pytest


def sqlstate_of(conn, query, params=None):
    """Runs a query that must fail; returns (sqlstate, message) and checks the backend lives."""
    with pytest.raises(psycopg.Error) as info:
        conn.execute(query, params)
    assert conn.execute("SELECT 1").fetchone() == (1,), "backend must survive a bad input"
    return info.value.sqlstate, info.value.diag.message_primary


def one(conn, query, params=None):
    return conn.execute(query, params).fetchone()[0]


@pytest.mark.parametrize(
    "literal,text",
    [
        ("[1,2,3]", "[1,2,3]"),
        (" [ 1 ,  -2.5 , 3 ] ", "[1,-2.5,3]"),
        ("[1.23456]", "[1.234375]"),  # nearest half
        ("[65519,-65519]", "[65504,-65504]"),  # rounds down to the largest half
        ("[1e-8,-1e-8]", "[0,-0]"),  # below the smallest subnormal
        ("[6e-8]", "[5.9604645e-08]"),  # the smallest subnormal, 2^-24
        ("[0x1p-2]", "[0.25]"),
    ],
)
def test_text_input_rounds_to_half(conn, literal, text):
    assert one(conn, "SELECT %s::halfvec::text", [literal]) == text


@pytest.mark.parametrize(
    "literal,state,message",
    [
        ("[65520]", "22003", '"65520" is out of range for type halfvec'),
        ("[4e38,1]", "22003", '"4e38" is out of range for type halfvec'),
        ("[NaN,1]", "22000", "NaN not allowed in halfvec"),
        ("[-Infinity]", "22000", "infinite value not allowed in halfvec"),
        ("[]", "22000", "halfvec must have at least 1 dimension"),
        ("[1,2", "22P02", 'invalid input syntax for type halfvec: "[1,2"'),
        ("[1,2]x", "22P02", 'invalid input syntax for type halfvec: "[1,2]x"'),
        ("[hello]", "22P02", 'invalid input syntax for type halfvec: "[hello]"'),
        ("", "22P02", 'invalid input syntax for type halfvec: ""'),
    ],
)
def test_bad_text_input(conn, literal, state, message):
    assert sqlstate_of(conn, "SELECT %s::halfvec", [literal]) == (state, message)


def test_dimension_limits_and_typmod(conn):
    full = "[" + ",".join(["1"] * 16000) + "]"
    assert one(conn, "SELECT vector_dims(%s::halfvec)", [full]) == 16000
    assert sqlstate_of(conn, "SELECT %s::halfvec", ["[" + ",".join(["1"] * 16001) + "]"]) == (
        "54000", "halfvec cannot have more than 16000 dimensions")
    assert sqlstate_of(conn, "SELECT '[1]'::halfvec(16001)") == (
        "22023", "dimensions for type halfvec cannot exceed 16000")
    assert sqlstate_of(conn, "SELECT '[1]'::halfvec(0)") == (
        "22023", "dimensions for type halfvec must be at least 1")
    assert sqlstate_of(conn, "SELECT '[1]'::halfvec(1, 2)") == ("22023", "invalid type modifier")
    assert sqlstate_of(conn, "SELECT '[1,2]'::halfvec(3)") == ("22000", "expected 3 dimensions, not 2")
    conn.execute("CREATE TEMP TABLE hv3 (v halfvec(3))")
    conn.execute("INSERT INTO hv3 VALUES ('[1,2,3]'), (ARRAY[4,5,6]), ('[7,8,9]'::vector)")
    assert sqlstate_of(conn, "INSERT INTO hv3 VALUES ('[1,2]')") == ("22000", "expected 3 dimensions, not 2")
    assert sqlstate_of(conn, "INSERT INTO hv3 VALUES ('[1,2]'::vector)") == ("22000", "expected 3 dimensions, not 2")
    assert one(conn, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                     "WHERE attrelid = 'hv3'::regclass AND attname = 'v'") == "halfvec(3)"


def test_binary_format_is_pgvectors(conn):
    """int16 dim, int16 unused, big-endian halves, both ways (send and receive)."""
    sent = one(conn, "SELECT halfvec_send('[1,-2.5,65504]')")
    assert bytes(sent) == struct.pack(">hh3e", 3, 0, 1.0, -2.5, 65504.0)
    with conn.cursor(binary=True) as cur:
        cur.execute("SELECT '[1.5,-0,0.099975586]'::halfvec")
        raw = cur.fetchone()[0]
    assert raw == struct.pack(">hh3e", 3, 0, 1.5, -0.0, 0.099975586)
    # Receive through COPY BINARY: a good row and each kind of bad one.
    conn.execute("CREATE TEMP TABLE hvcopy (v halfvec)")

    def copy_in(payload: bytes):
        with conn.cursor().copy("COPY hvcopy FROM STDIN WITH (FORMAT binary)") as cp:
            cp.write(b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
                     + struct.pack(">hi", 1, len(payload)) + payload + struct.pack(">h", -1))

    copy_in(struct.pack(">hh2e", 2, 0, 0.5, -4.0))
    assert one(conn, "SELECT v::text FROM hvcopy") == "[0.5,-4]"
    for payload, state, message in [
        (struct.pack(">hhH", 1, 0, 0x7C00), "22000", "infinite value not allowed in halfvec"),
        (struct.pack(">hhH", 1, 0, 0x7E00), "22000", "NaN not allowed in halfvec"),
        (struct.pack(">hhe", 1, 1, 1.0), "22000", "expected unused to be 0, not 1"),
        (struct.pack(">hh", 0, 0), "22000", "halfvec must have at least 1 dimension"),
        (struct.pack(">hhe", 2, 0, 1.0), "08P01", "insufficient data left in message"),
    ]:
        with pytest.raises(psycopg.Error) as info:
            copy_in(payload)
        assert (info.value.sqlstate, info.value.diag.message_primary) == (state, message), payload
    assert one(conn, "SELECT count(*) FROM hvcopy") == 1


def test_casts(conn):
    assert one(conn, "SELECT '[1,2.5]'::vector::halfvec::text") == "[1,2.5]"
    assert one(conn, "SELECT '[0.1]'::halfvec::vector::text") == "[0.099975586]"
    assert one(conn, "SELECT '[1,2]'::halfvec::real[]") == [1.0, 2.0]
    for arr in ["ARRAY[1,2]", "ARRAY[1,2]::real[]", "ARRAY[1,2]::float8[]", "ARRAY[1,2]::numeric[]"]:
        assert one(conn, f"SELECT {arr}::halfvec::text") == "[1,2]", arr
    assert sqlstate_of(conn, "SELECT '[70000]'::vector::halfvec") == (
        "22003", '"70000" is out of range for type halfvec')
    assert sqlstate_of(conn, "SELECT ARRAY[1e300]::float8[]::halfvec") == (
        "22000", "infinite value not allowed in halfvec")
    assert sqlstate_of(conn, "SELECT ARRAY['NaN']::float8[]::halfvec") == ("22000", "NaN not allowed in halfvec")
    assert sqlstate_of(conn, "SELECT ARRAY[70000]::halfvec") == (
        "22003", '"70000" is out of range for type halfvec')
    assert sqlstate_of(conn, "SELECT ARRAY[[1,2]]::halfvec") == ("22000", "array must be 1-D")
    assert sqlstate_of(conn, "SELECT ARRAY[1,NULL]::halfvec") == ("22004", "array must not contain nulls")
    assert sqlstate_of(conn, "SELECT '{}'::int[]::halfvec") == ("22000", "halfvec must have at least 1 dimension")
    assert sqlstate_of(conn, "SELECT ARRAY[1,2]::halfvec(3)") == ("22000", "expected 3 dimensions, not 2")
    # The implicit vector -> halfvec cast lets a vector literal meet a halfvec column.
    assert one(conn, "SELECT '[1,2]'::halfvec <-> '[1,3]'::vector") == 1.0


def test_distances_follow_pgvector(conn):
    q = lambda s: one(conn, s)  # noqa: E731
    assert q("SELECT l2_distance('[0,0]'::halfvec, '[3,4]')") == 5.0
    assert q("SELECT '[0,0]'::halfvec <-> '[3,4]'") == 5.0
    assert q("SELECT inner_product('[1,2]'::halfvec, '[3,4]')") == 11.0
    assert q("SELECT '[1,2]'::halfvec <#> '[3,4]'") == -11.0
    assert q("SELECT inner_product('[65504]'::halfvec, '[65504]')") == 65504.0 ** 2
    assert q("SELECT l1_distance('[1,2,3,4,5,6,7,8,9]'::halfvec, '[0,3,2,5,4,7,6,9,8]')") == 9.0
    assert q("SELECT '[0,0]'::halfvec <+> '[3,4]'") == 7.0
    assert q("SELECT l2_norm('[3,4]'::halfvec)") == 5.0
    assert q("SELECT halfvec_l2_squared_distance('[0,0]', '[3,4]')") == 25.0
    assert q("SELECT halfvec_negative_inner_product('[1,2]', '[3,4]')") == -11.0
    # Cosine is exact where pgvector's is: parallel 0, opposite 2, orthogonal 1, zero NaN.
    for a, b, want in [("[1,2]", "[2,4]", 0.0), ("[1,1]", "[1,1]", 0.0), ("[1,1]", "[-1,-1]", 2.0),
                       ("[1,0]", "[0,2]", 1.0), ("[1,1]", "[1.1,1.1]", 0.0), ("[1,1]", "[-1.1,-1.1]", 2.0),
                       ("[1,2,3,4,5,6,7,8,9]", "[-1,-2,-3,-4,-5,-6,-7,-8,-9]", 2.0)]:
        assert q(f"SELECT '{a}'::halfvec <=> '{b}'") == want, (a, b)
        assert q(f"SELECT cosine_distance('{a}'::halfvec, '{b}')") == want, (a, b)
    assert math.isnan(q("SELECT cosine_distance('[1,2]'::halfvec, '[0,0]')"))
    for fn in ["l2_distance", "inner_product", "cosine_distance", "l1_distance"]:
        assert sqlstate_of(conn, f"SELECT {fn}('[1,2]'::halfvec, '[3]')") == (
            "22000", "different halfvec dimensions 2 and 1")


def test_distances_agree_with_numpy_on_embeddings(conn):
    rng = np.random.default_rng(14)
    for dim in [3, 8, 17, 1536, 3072]:
        a = rng.standard_normal(dim).astype(np.float16)
        b = rng.standard_normal(dim).astype(np.float16)
        la, lb = [str(a.astype(np.float32).tolist()), str(b.astype(np.float32).tolist())]
        fa, fb = a.astype(np.float64), b.astype(np.float64)
        row = conn.execute("SELECT %s::halfvec <-> %s::halfvec, %s::halfvec <#> %s::halfvec, "
                           "%s::halfvec <=> %s::halfvec, %s::halfvec <+> %s::halfvec",
                           [la, lb] * 4).fetchone()
        cos = 1 - fa @ fb / math.sqrt((fa @ fa) * (fb @ fb))
        want = [np.linalg.norm(fa - fb), -(fa @ fb), cos, np.abs(fa - fb).sum()]
        for got, exp in zip(row, want):
            assert got == pytest.approx(exp, rel=1e-4, abs=1e-4), dim
        # A vector against itself: exactly 0 under every metric but <#>.
        row = conn.execute("SELECT v <-> v, v <=> v, v <+> v FROM (SELECT %s::halfvec v) s", [la]).fetchone()
        assert row == (0.0, 0.0, 0.0)


def test_vector_cosine_is_exact(conn):
    q = lambda s: one(conn, s)  # noqa: E731
    assert q("SELECT '[1,1]'::vector <=> '[1,1]'") == 0.0
    assert q("SELECT '[1,1]'::vector <=> '[-1,-1]'") == 2.0
    assert q("SELECT '[1,2]'::vector <=> '[2,4]'") == 0.0
    assert q("SELECT cosine_distance('[1,1]'::vector, '[1.1,1.1]')") == 0.0
    assert math.isnan(q("SELECT cosine_distance('[3e38]'::vector, '[3e38]')"))
    rng = np.random.default_rng(5)
    for dim in [7, 16, 33, 384, 1536]:
        v = rng.standard_normal(dim).astype(np.float32)
        for k in [0.5, 2.0, 8.0, 1024.0]:
            lit, klit = str(v.tolist()), str((v * np.float32(k)).tolist())
            assert q(f"SELECT '{lit}'::vector <=> '{klit}'::vector") == 0.0, (dim, k)
            assert q(f"SELECT '{lit}'::vector <=> ('{klit}'::vector * '{[-1.0] * dim}')") == 2.0, (dim, k)


def test_arithmetic_and_errors(conn):
    q = lambda s: one(conn, s)  # noqa: E731
    assert q("SELECT ('[1,2,3]'::halfvec + '[4,5,6]')::text") == "[5,7,9]"
    assert q("SELECT ('[1,2,3]'::halfvec - '[4,5,6]')::text") == "[-3,-3,-3]"
    assert q("SELECT ('[1,2,3]'::halfvec * '[4,5,6]')::text") == "[4,10,18]"
    assert q("SELECT ('[1,2,3]'::halfvec || '[4,5]')::text") == "[1,2,3,4,5]"
    for expr, state, message in [
        ("'[65519]'::halfvec + '[65519]'", "22003", "value out of range: overflow"),
        ("'[-65519]'::halfvec - '[65519]'", "22003", "value out of range: overflow"),
        ("'[65519]'::halfvec * '[65519]'", "22003", "value out of range: overflow"),
        ("'[1e-7]'::halfvec * '[1e-7]'", "22003", "value out of range: underflow"),
        ("'[1,2]'::halfvec + '[3]'", "22000", "different halfvec dimensions 2 and 1"),
        ("array_fill(0, ARRAY[16000])::halfvec || '[1]'", "54000", "halfvec cannot have more than 16000 dimensions"),
    ]:
        assert sqlstate_of(conn, f"SELECT {expr}") == (state, message), expr
    assert q("SELECT l2_normalize('[3,4]'::halfvec)::text") == "[0.60009766,0.7998047]"
    assert q("SELECT l2_normalize('[0,0]'::halfvec)::text") == "[0,0]"
    assert q("SELECT l2_normalize('[65504]'::halfvec)::text") == "[1]"
    assert q("SELECT subvector('[1,2,3,4,5]'::halfvec, 2, 3)::text") == "[2,3,4]"
    assert q("SELECT subvector('[1,2,3,4,5]'::halfvec, -1, 3)::text") == "[1]"
    assert q("SELECT subvector('[1,2,3,4,5]'::halfvec, 3, 2147483647)::text") == "[3,4,5]"
    assert q("SELECT subvector('[1,2,3,4,5]'::halfvec, -2147483644, 2147483647)::text") == "[1,2]"
    for args in ["1, 0", "3, -1", "-1, 2", "2147483647, 10"]:
        assert sqlstate_of(conn, f"SELECT subvector('[1,2,3,4,5]'::halfvec, {args})") == (
            "22000", "halfvec must have at least 1 dimension"), args


def test_binary_quantize(conn):
    q = lambda s: one(conn, s)  # noqa: E731
    assert q("SELECT binary_quantize('[1,0,-1]'::halfvec)::text") == "100"
    assert q("SELECT binary_quantize('[1,0,-1]'::vector)::text") == "100"
    lit = "[1,2,3,-4,5,6,-7,8,1,-2,-3,4,5,-6,7,8,-1,2,3]"
    want = "".join("1" if float(x) > 0 else "0" for x in lit[1:-1].split(","))
    assert q(f"SELECT binary_quantize('{lit}'::halfvec)::text") == want
    assert q(f"SELECT binary_quantize('{lit}'::vector)::text") == want
    assert q(f"SELECT binary_quantize('{lit}'::vector) = binary_quantize('{lit}'::halfvec)") is True
    assert q(f"SELECT length(binary_quantize('{lit}'::vector))") == 19
    assert q("SELECT pg_typeof(binary_quantize('[1]'::vector))::text") == "bit"
    # The result is a well-formed bit(n): it survives bit operations, casts and output.
    assert q(f"SELECT bit_count(binary_quantize('{lit}'::vector) # binary_quantize('{lit}'::vector))") == 0
    assert q("SELECT binary_quantize(array_fill(1, ARRAY[1536])::vector)::bit(1536) = ~(0::bit(1536))") is True


def test_btree_order_index_and_unique(conn):
    conn.execute("CREATE TEMP TABLE hvb (v halfvec)")
    conn.execute("INSERT INTO hvb VALUES ('[1,2,3]'), ('[1,2]'), ('[0,5]'), ('[1,2,3]'), ('[-0,5]'), ('[2]')")
    order = [r[0] for r in conn.execute("SELECT v::text AS t FROM hvb ORDER BY hvb.v, t").fetchall()]
    assert order == ["[-0,5]", "[0,5]", "[1,2]", "[1,2,3]", "[1,2,3]", "[2]"]
    assert one(conn, "SELECT count(DISTINCT v) FROM hvb") == 4  # -0 equals 0
    assert one(conn, "SELECT halfvec_cmp('[1,2]', '[1,2,3]')") == -1
    assert one(conn, "SELECT '[1,2,3]'::halfvec > '[1,2]'") is True
    conn.execute("CREATE INDEX ON hvb (v)")
    conn.execute("SET enable_seqscan = off")
    plan = "\n".join(r[0] for r in conn.execute("EXPLAIN SELECT * FROM hvb WHERE v = '[1,2]'").fetchall())
    assert "Index" in plan
    assert one(conn, "SELECT count(*) FROM hvb WHERE v = '[1,2,3]'") == 2
    conn.execute("RESET enable_seqscan")
    conn.execute("CREATE TEMP TABLE hvu (v halfvec UNIQUE)")
    conn.execute("INSERT INTO hvu VALUES ('[1,2]')")
    assert sqlstate_of(conn, "INSERT INTO hvu VALUES ('[1,2.0001]')")[0] == "23505"  # same half


def test_aggregates(conn):
    q = lambda s: one(conn, s)  # noqa: E731
    assert q("SELECT avg(v)::text FROM unnest(ARRAY['[1,2,3]'::halfvec, '[3,5,7]', NULL]) v") == "[2,3.5,5]"
    assert q("SELECT avg(v) FROM unnest(ARRAY[]::halfvec[]) v") is None
    assert q("SELECT avg(v)::text FROM unnest(ARRAY['[65504]'::halfvec, '[65504]']) v") == "[65504]"
    assert q("SELECT sum(v)::text FROM unnest(ARRAY['[1,2,3]'::halfvec, '[3,5,7]']) v") == "[4,7,10]"
    assert sqlstate_of(conn, "SELECT avg(v) FROM unnest(ARRAY['[1,2]'::halfvec, '[3]']) v") == (
        "22000", "expected 2 dimensions, not 1")
    assert sqlstate_of(conn, "SELECT sum(v) FROM unnest(ARRAY['[65504]'::halfvec, '[65504]']) v") == (
        "22003", "value out of range: overflow")
    # Parallel aggregation goes through halfvec_combine.
    conn.execute("CREATE TEMP TABLE hvagg AS SELECT ARRAY[n % 7, n % 5]::halfvec v FROM generate_series(1, 20000) n")
    conn.execute("SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; SET min_parallel_table_scan_size = 0")
    assert q("SELECT avg(v)::text FROM hvagg") == q("SELECT avg(v::vector)::halfvec::text FROM hvagg")
    conn.execute("RESET parallel_setup_cost; RESET parallel_tuple_cost; RESET min_parallel_table_scan_size")


@pytest.mark.parametrize(
    "query,state,message",
    [
        ("SELECT halfvec_avg('{}')", "XX000", "halfvec_avg: expected state array"),
        ("SELECT halfvec_avg('{{2,2,4,6}}')", "XX000", "halfvec_avg: expected state array"),
        ("SELECT halfvec_avg('{NULL,2,4,6}')", "XX000", "halfvec_avg: expected state array"),
        ("SELECT halfvec_avg('{1}')", "22000", "halfvec must have at least 1 dimension"),
        ("SELECT halfvec_avg('{1,70000}')", "22003", '"70000" is out of range for type halfvec'),
        ("SELECT halfvec_avg('{1,1e300}')", "22000", "infinite value not allowed in halfvec"),
        ("SELECT halfvec_avg(array_agg(n)) FROM generate_series(1, 16002) n", "54000",
         "halfvec cannot have more than 16000 dimensions"),
        ("SELECT halfvec_accum('{}', '[1]')", "XX000", "halfvec_accum: expected state array"),
        ("SELECT halfvec_accum('{1,2,3}', '[1]')", "22000", "expected 2 dimensions, not 1"),
        ("SELECT halfvec_combine('{}', '{0}')", "XX000", "vector_combine: expected state array"),
        ("SELECT halfvec_combine('{1,1}', '{1,2,3}')", "22000", "expected 1 dimensions, not 2"),
        ("SELECT vector_avg(ARRAY[1]||array_agg(1::float8)) FROM generate_series(1,65536) n", "54000",
         "vector cannot have more than 16000 dimensions"),
        ("SELECT vector_avg('{}')", "XX000", "vector_avg: expected state array"),
        ("SELECT vector_accum('{1,2}', '[1,2]')", "22000", "expected 1 dimensions, not 2"),
    ],
)
def test_aggregate_internals_refuse_bad_states(conn, query, state, message):
    assert sqlstate_of(conn, query) == (state, message)


def test_aggregate_internals_accept_good_states(conn):
    assert one(conn, "SELECT halfvec_avg('{2,2,4,6}')::text") == "[1,2,3]"
    assert one(conn, "SELECT halfvec_avg('{0}')") is None
    assert one(conn, "SELECT halfvec_accum('{0}', '[1,2]')") == [1.0, 1.0, 2.0]
    assert one(conn, "SELECT halfvec_combine('{1,1,2}', '{2,3,4}')") == [3.0, 4.0, 6.0]


def test_dump_restore_round_trip(cluster, dbname, conn, tmp_path):
    """Every value the SQL surface produced must come back from COPY text and binary."""
    conn.execute("CREATE TABLE hvdump (id int, v halfvec(3), w halfvec)")
    conn.execute("INSERT INTO hvdump SELECT n, ARRAY[n, -n / 7.0, n * 0.001]::halfvec, "
                 "l2_normalize(ARRAY[n, 1]::halfvec) FROM generate_series(1, 500) n")
    conn.commit()
    for fmt in ["text", "binary"]:
        with conn.cursor().copy(f"COPY hvdump TO STDOUT WITH (FORMAT {fmt})") as cp:
            data = b"".join(bytes(b) for b in cp)
        conn.execute("CREATE TEMP TABLE hvback (LIKE hvdump)")
        with conn.cursor().copy(f"COPY hvback FROM STDIN WITH (FORMAT {fmt})") as cp:
            cp.write(data)
        assert one(conn, "SELECT count(*) FROM hvdump d JOIN hvback b USING (id) "
                         "WHERE halfvec_send(d.v) = halfvec_send(b.v) AND halfvec_send(d.w) = halfvec_send(b.w)") == 500
        conn.execute("DROP TABLE hvback")
