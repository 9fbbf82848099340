"""Seeded property test of every SQL function that builds a `sparsevec` (and of the `vector`
and `bit` values the sparse and bit functions build): for random valid and invalid inputs,
each call either raises an ERROR with a SQLSTATE (never an internal error, never a dead
backend) or returns a value v that

  - keeps the stored-value invariants (1 <= dim <= 1e9, nnz <= min(dim, 16000), indices
    strictly ascending in 0..dim, values finite and non-zero),
  - survives text: v::text::sparsevec is v bit for bit,
  - survives binary: sparsevec_send(v) received back (sparsevec_recv, as a binary parameter
    and through COPY BINARY into a typmod column) is v bit for bit,
  - and, for generated valid input, is the value a reference model expects.

VECGUARD_PROP_SEED (default 14) and VECGUARD_PROP_CASES (default 300 per surface) choose the
run; a failure message names the surface and case number, and the seed replays it.
"""

import math
import os
import random
import struct

import psycopg
import pytest

SEED = int(os.environ.get("VECGUARD_PROP_SEED", "14"))
CASES = int(os.environ.get("VECGUARD_PROP_CASES", "300"))
MAX_DIM = 1_000_000_000
MAX_NNZ = 16_000
SPACE = " \t\n\r\x0b\x0c"


def f32(x: float) -> float:
    return struct.unpack(">f", struct.pack(">f", x))[0]


def encode_sparse(dim: int, items: dict) -> bytes:
    idx = sorted(items)
    return struct.pack(f">iii{len(idx)}i{len(idx)}f", dim, len(idx), 0, *idx, *(items[i] for i in idx))


def sparse_problems(send: bytes) -> list[str]:
    """Invariant violations of a sparsevec in send format."""
    if len(send) < 12:
        return ["send format shorter than its header"]
    dim, nnz, unused = struct.unpack(">iii", send[:12])
    problems = []
    if not 1 <= dim <= MAX_DIM:
        problems.append(f"dim {dim}")
    if not 0 <= nnz <= min(dim, MAX_NNZ) or len(send) != 12 + 8 * nnz:
        return problems + [f"nnz {nnz} with {len(send)} bytes"]
    if unused:
        problems.append(f"unused {unused}")
    idx = struct.unpack(f">{nnz}i", send[12:12 + 4 * nnz])
    vals = struct.unpack(f">{nnz}f", send[12 + 4 * nnz:])
    if any(not 0 <= i < dim for i in idx) or any(a >= b for a, b in zip(idx, idx[1:])):
        problems.append(f"indices {idx[:10]}")
    if any(v == 0 or not math.isfinite(v) for v in vals):
        problems.append("zero or non-finite value stored")
    return problems


class Server:
    """Raw libpq calls with binary results, classifying every outcome."""

    def __init__(self, conn):
        self.conn = conn
        self.oid = {t: conn.execute(f"SELECT '{t}'::regtype::oid").fetchone()[0]
                    for t in ["sparsevec", "vector", "bit"]}
        self.failures: list[str] = []
        self.counts = {"ok": 0, "error": 0}

    def run(self, case: str, sql: str, params=(), types=(), formats=()):
        """Row tuple of bytes, or None after an ERROR (recorded as a failure if it is not an
        ordinary one)."""
        res = self.conn.pgconn.exec_params(sql.encode(), [p if isinstance(p, bytes) else p.encode() for p in params],
                                           list(types) or None, list(formats) or None, 1)
        if res.status == psycopg.pq.ExecStatus.TUPLES_OK:
            self.counts["ok"] += 1
            return tuple(res.get_value(0, i) for i in range(res.nfields))
        if self.conn.pgconn.status != psycopg.pq.ConnStatus.OK:
            pytest.fail(f"{case}: the backend died on {sql!r} {params!r:.300}")
        state = res.error_field(psycopg.pq.DiagnosticField.SQLSTATE)
        message = res.error_field(psycopg.pq.DiagnosticField.MESSAGE_PRIMARY)
        if state is None or state.startswith(b"XX"):
            self.failures.append(f"{case}: {state} {message} for {sql} {params!r:.300}")
        self.counts["error"] += 1
        return None

    def check_sparse(self, case: str, row, expected: bytes | None = None, accept_required=False):
        """The properties of a produced sparsevec; row is (sparsevec_send(v), v::text)."""
        if row is None:
            if accept_required:
                self.failures.append(f"{case}: valid input refused")
            return
        send, text = row
        problems = sparse_problems(send)
        back = self.run(case, "SELECT sparsevec_send($1::sparsevec)", [text])
        if back is None or back[0] != send:
            problems.append(f"v::text ({text[:80]!r}) does not read back as v")
        back = self.run(case, "SELECT sparsevec_send($1)", [send], [self.oid["sparsevec"]], [1])
        if back is None or back[0] != send:
            problems.append("binary send/recv does not round-trip")
        if expected is not None and send != expected:
            problems.append(f"stored {text[:80]!r}, expected {expected[:40]!r}")
        if problems:
            self.failures.append(f"{case}: " + "; ".join(problems))

    def check_vector(self, case: str, row):
        if row is None:
            return
        send, text = row
        back = self.run(case, "SELECT vector_send($1::vector)", [text])
        bin_back = self.run(case, "SELECT vector_send($1)", [send], [self.oid["vector"]], [1])
        if back is None or back[0] != send or bin_back is None or bin_back[0] != send:
            self.failures.append(f"{case}: vector {text[:60]!r} does not round-trip")

    def check_bit(self, case: str, row, expected_text: bytes):
        if row is None:
            self.failures.append(f"{case}: binary_quantize refused a valid vector")
            return
        send, text = row
        back = self.run(case, "SELECT bit_send($1::text::varbit::bit(%d))" % len(text), [text])
        bin_back = self.run(case, "SELECT bit_send($1)", [send], [self.oid["bit"]], [1])
        if text != expected_text or back is None or back[0] != send or bin_back is None or bin_back[0] != send:
            self.failures.append(f"{case}: bit {text[:60]!r} is wrong or does not round-trip")


@pytest.fixture
def server(conn):
    s = Server(conn)
    yield s
    print(f"seed {SEED}: {s.counts}")
    assert not s.failures, f"seed {SEED}: {len(s.failures)} failures:\n" + "\n".join(s.failures[:20])


def cases(surface: str):
    for i in range(CASES):
        yield f"{surface}:{i}", random.Random(f"{SEED}:{surface}:{i}")


# ---- generators ------------------------------------------------------------------------

SPECIAL_TOKENS = ["NaN", "-inf", "Infinity", "1e39", "-4e38", "1e-46", "7e-46", "8e-46", "1e-45", "-0", "0", "0x1p-150",
                  "0x1.8p1", "3.4028235e38", "3.4028236e38", ".5", "5.", "1e", "+", "nan(12)", "0e-999"]
INT_TOKENS = ["0", "-1", "2147483647", "2147483648", "-2147483648", "99999999999999999999", "+3", "1e2", "0x10", ""]


def value(rng) -> float:
    r = rng.random()
    if r < 0.7:
        return f32(rng.gauss(0, 10 ** rng.randint(-4, 4)))
    if r < 0.85:
        return float(rng.randint(-9, 9))
    return struct.unpack(">f", rng.randbytes(4))[0]


def dimension(rng) -> int:
    return rng.choice([1, 2, 3, 5, 8, rng.randint(1, 100), rng.randint(1, 20000), MAX_DIM, rng.randint(1, MAX_DIM)])


def sparse_items(rng, dim: int) -> dict:
    nnz = min(dim, rng.choice([0, 1, 2, 3, rng.randint(0, 50), rng.randint(0, 400)]))
    if rng.random() < 0.01:
        nnz = min(dim, rng.choice([MAX_NNZ, MAX_NNZ + 1]))
    idx = rng.sample(range(dim), nnz) if dim < 10 ** 6 else list({rng.randrange(dim) for _ in range(nnz)})
    return {i: value(rng) for i in idx}


def sparse_literal(rng, dim: int, items: dict) -> str:
    odd = rng.random() < 0.3

    def sp():
        return "".join(rng.choice(SPACE) for _ in range(rng.choice([0, 0, 0, 1, 2]))) if odd else ""
    elems = [f"{sp()}{i + 1}{sp()}:{sp()}{v!r}{sp()}" for i, v in items.items()]
    if odd and rng.random() < 0.3:
        elems += [f"{rng.randint(-5, dim + 5)}:0"]  # zeros are dropped whatever the index
    rng.shuffle(elems)
    return f"{sp()}{{{','.join(elems)}}}{sp()}/{sp()}{dim}{sp()}"


def mutate(rng, s: str) -> str:
    alphabet = "{}:/,.-+eE0123456789x " + SPACE + "é"
    for _ in range(rng.randint(1, 4)):
        i = rng.randint(0, len(s))
        op = rng.randrange(6)
        if op == 0:
            s = s[:i] + rng.choice(alphabet) + s[i:]
        elif op == 1:
            s = s[:i] + s[i + 1:]
        elif op == 2:
            s = s[:i] + rng.choice(alphabet) + s[i + 1:]
        elif op == 3:
            s = s[:i] + rng.choice(SPECIAL_TOKENS + INT_TOKENS) + s[i:]
        elif op == 4:
            j = rng.randint(i, min(len(s), i + 20))
            s = s[:j] + s[i:j] * rng.randint(1, 3) + s[j:]
        else:
            s = s[:i]
    return s


def typmod(rng, dim: int) -> tuple[str, int | None]:
    """(SQL typmod suffix, the typmod, None when typmod_in refuses it)."""
    if rng.random() < 0.6:
        return "", -1
    n = rng.choice([dim, dim, dim + 1, dim - 1, 1, 0, -1, MAX_DIM, MAX_DIM + 1])
    return f"({n})", n if 1 <= n <= MAX_DIM else None


# ---- surfaces --------------------------------------------------------------------------

SPARSE_OUT = "SELECT sparsevec_send(v), v::text FROM (SELECT {} AS v) s"


def test_text_input(server):
    for case, rng in cases("text"):
        dim = dimension(rng)
        items = {i: v for i, v in sparse_items(rng, dim).items() if v != 0 and math.isfinite(v)}
        lit = sparse_literal(rng, dim, items)
        mod_sql, mod = typmod(rng, dim)
        mutated = rng.random() < 0.5
        if mutated:
            lit = mutate(rng, lit)
        row = server.run(case, SPARSE_OUT.format(f"$1::sparsevec{mod_sql}"), [lit])
        valid = not mutated and mod is not None and mod in (-1, dim) and len(items) <= MAX_NNZ
        if valid and lit.count(",") + 1 > MAX_NNZ:
            valid = False  # pgvector sizes its buffer by commas, zeros included
        server.check_sparse(case, row, encode_sparse(dim, items) if valid else None, accept_required=valid)


def test_binary_input(server):
    for case, rng in cases("binary"):
        dim = dimension(rng)
        items = {i: v for i, v in sparse_items(rng, dim).items() if v != 0}
        data = bytearray(encode_sparse(dim, items))
        corrupt = rng.choice([0, 0, 1, 1, 2, 3])
        for _ in range(corrupt):
            op = rng.randrange(6)
            if op == 0:
                data[0:4] = struct.pack(">i", rng.choice([0, -1, MAX_DIM + 1, dim - 1, 2 ** 31 - 1]))
            elif op == 1:
                data[4:8] = struct.pack(">i", rng.choice([-1, len(items) + 1, max(len(items) - 1, 0), MAX_NNZ + 1]))
            elif op == 2:
                data[8:12] = struct.pack(">i", rng.choice([1, -1]))
            elif op == 3:
                del data[rng.randint(0, len(data)):]
            elif op == 4:
                data += rng.randbytes(rng.choice([1, 4, 8]))
            elif len(data) > 12:
                data[rng.randrange(12, len(data))] ^= 1 << rng.randrange(8)
        data = bytes(data)
        valid = corrupt == 0 and all(math.isfinite(v) for v in items.values())
        if rng.random() < 0.8:
            row = server.run(case, SPARSE_OUT.format("$1"), [data], [server.oid["sparsevec"]], [1])
        else:
            row = copy_binary(server, case, data, rng.choice([dim, dim + 1, 1]))
            valid = False  # the typmod may differ: judged by the properties only
        server.check_sparse(case, row, data if valid else None, accept_required=valid)


def copy_binary(server, case, data: bytes, mod: int):
    """COPY ... FROM STDIN (FORMAT binary) into a sparsevec(mod) column: recv with a typmod."""
    stream = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">iihi", 0, 0, 1, len(data)) + data + struct.pack(">h", -1)
    conn = server.conn
    try:
        with conn.transaction(force_rollback=True):
            conn.execute(f"CREATE TEMP TABLE prop_copy (v sparsevec({min(mod, MAX_DIM)}))")
            with conn.cursor().copy("COPY prop_copy FROM STDIN (FORMAT binary)") as cp:
                cp.write(stream)
            return conn.execute("SELECT sparsevec_send(v), v::text::bytea FROM prop_copy").fetchone()
    except psycopg.Error as e:
        if e.sqlstate is None or e.sqlstate.startswith("XX"):
            server.failures.append(f"{case}: COPY raised {e.sqlstate} {e}")
        return None


def test_vector_and_array_casts(server):
    for case, rng in cases("casts"):
        dim = rng.choice([1, 2, 3, 9, rng.randint(1, 300), rng.choice([16000, 16001, 20000])])
        density = rng.random()
        vals = [value(rng) if rng.random() < density else 0.0 for _ in range(dim)]
        mod_sql, mod = typmod(rng, dim)
        finite = [v if math.isfinite(v) else 1.0 for v in vals]
        vec = "[" + ",".join(repr(v) for v in finite) + "]"
        # vector -> sparsevec, sparsevec -> vector -> sparsevec
        row = server.run(case, SPARSE_OUT.format(f"$1::vector::sparsevec{mod_sql}"), [vec])
        valid = dim <= 16000 and mod in (-1, dim)
        expected = encode_sparse(dim, {i: v for i, v in enumerate(finite) if v != 0})
        server.check_sparse(case, row, expected if valid else None, accept_required=valid)
        if row is not None:
            server.check_vector(case, server.run(case, "SELECT vector_send(v), v::text FROM "
                                                       "(SELECT $1::sparsevec::vector AS v) s", [row[1]]))
        # arrays of every element type, with NULLs, specials and bad shapes now and then
        etype = rng.choice(["real", "double precision", "integer", "numeric"])
        elems = [repr(v) if etype != "integer" else str(int(v) if math.isfinite(v) and abs(v) < 2 ** 31 else 7)
                 for v in vals]
        if rng.random() < 0.2:
            elems[rng.randrange(dim)] = rng.choice(["NULL", "NaN", "Infinity", "-Infinity", "1e39", "1e-46", "1e400"])
        arr = "{" + ",".join(elems) + "}"
        if rng.random() < 0.05:
            arr = "{" + arr + "," + arr + "}"
        if rng.random() < 0.03:
            arr = "{}"
        server.check_sparse(case, server.run(case, SPARSE_OUT.format(f"$1::{etype}[]::sparsevec{mod_sql}"), [arr]))


def test_functions_of_valid_values(server):
    for case, rng in cases("functions"):
        dim = dimension(rng)
        items = {i: v for i, v in sparse_items(rng, dim).items() if v != 0 and math.isfinite(v)}
        if rng.random() < 0.2:
            items = {i: rng.choice([3e38, -3e38, 1e-45, 1e-38]) for i in items}
        lit = sparse_literal(rng, dim, items)
        server.check_sparse(case, server.run(case, SPARSE_OUT.format("l2_normalize($1::sparsevec)"), [lit]))
        mod_sql, mod = typmod(rng, dim)
        row = server.run(case, SPARSE_OUT.format(f"$1::sparsevec::sparsevec{mod_sql}"), [lit])
        server.check_sparse(case, row, encode_sparse(dim, items) if mod in (-1, dim) else None,
                            accept_required=mod in (-1, dim) and len(items) <= MAX_NNZ)
        # every distance of a valid pair is a float8 or a dimension error, never anything else
        other = sparse_literal(rng, dim if rng.random() < 0.9 else dim + 1, sparse_items(rng, dim))
        server.run(case, "SELECT $1::sparsevec <-> $2::sparsevec, $1::sparsevec <#> $2::sparsevec, "
                         "$1::sparsevec <=> $2::sparsevec, $1::sparsevec <+> $2::sparsevec, "
                         "sparsevec_cmp($1, $2), l2_norm($1::sparsevec)", [lit, other])
        # binary_quantize of a dense vector is a bit string that round-trips
        n = rng.randint(1, 200)
        vec = [value(rng) for _ in range(n)]
        vec = [v if math.isfinite(v) else 0.5 for v in vec]
        expected = "".join("1" if v > 0 else "0" for v in vec).encode()
        server.check_bit(case, server.run(case, "SELECT bit_send(b), b::text::bytea FROM "
                                                "(SELECT binary_quantize($1::vector) AS b) s",
                                          ["[" + ",".join(map(repr, vec)) + "]"]), expected)
