"""Fuzz suite: generated input against every parser a client can reach.

Surfaces: vector text input, binary input and array casts; the aggregate state functions
vector_accum/vector_combine/vector_avg; JWTs through vecguard.jwt; JWK sets through
vecguard.add_jwks; identifiers through vecguard.protect(). Each test counts crashes,
hangs and wrong acceptances (see fuzzlib) and fails on any.

Time: VECGUARD_FUZZ_SECONDS (default 120) is shared out by WEIGHTS; set e.g. 1800 to fuzz
by hand for half an hour. Fixed corpus cases run first, whatever the budget. The seed is
printed with every report; VECGUARD_FUZZ_SEED and VECGUARD_FUZZ_CASE replay a failure.
"""

import base64
import hashlib
import hmac
import json
import math
import secrets
import struct
import time
import uuid
from dataclasses import dataclass

import jwt as pyjwt
import psycopg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa, x25519
from psycopg import sql

from fuzzlib import (NUMBER, TOTAL_SECONDS, VECTOR_MAX_DIM, VECTOR_SPACE, Fuzzer, Rejection, b64url,
                     b64url_decode, decode_vector_binary, jwk_expected_alg, jwk_is_encryption, jwt_verdict,
                     parse_vector_text, ref_claims, strtof_value, vector_binary, vector_problems)

WEIGHTS = {"vector_text": 0.14, "vector_binary": 0.10, "vector_array": 0.10, "agg_state": 0.14,
           "jwt": 0.24, "jwks": 0.12, "protect": 0.16}
APP_ROLE = "fuzz_app"


def budget(surface: str) -> float:
    return TOTAL_SECONDS * WEIGHTS[surface]


# ---------------------------------------------------------------------------------------
# shared fixtures: keys, an ordinary role, binary vector parameters
# ---------------------------------------------------------------------------------------

class VectorBytes(bytes):
    """A vector in binary send format, passed to the server unchanged (via %b)."""


def binary_vectors(conn: psycopg.Connection) -> None:
    """Lets `conn` send VectorBytes as binary parameters of type vector (vector_recv)."""
    class Dumper(psycopg.adapt.Dumper):
        format = psycopg.pq.Format.BINARY
        oid = conn.execute("SELECT 'vector'::regtype::oid").fetchone()[0]

        def dump(self, obj):
            return bytes(obj)

    conn.adapters.register_dumper(VectorBytes, Dumper)


def pem(key) -> str:
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo).decode()


_PYJWT_ALGS = pyjwt.algorithms.get_default_algorithms()
_HMAC_HASH = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


def sign(alg: str, key, msg: bytes) -> bytes:
    """A JWS signature; HMAC by hand so that any bytes (a PEM, too) can be the secret."""
    if alg in _HMAC_HASH:
        return hmac.new(key, msg, _HMAC_HASH[alg]).digest()
    return _PYJWT_ALGS[alg].sign(msg, key)


def verifier(alg: str, key):
    """verify(msg, sig) -> bool for the public half of a registered key."""
    if alg in _HMAC_HASH:
        return lambda msg, sig: hmac.compare_digest(sign(alg, key, msg), sig)

    def verify(msg, sig):
        try:
            return _PYJWT_ALGS[alg].verify(msg, key, sig)
        except Exception:  # any failure to verify is a bad signature
            return False
    return verify


class Keys:
    """The registered verification keys: kid -> (alg, private/secret key)."""

    def __init__(self):
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.ed = ed25519.Ed25519PrivateKey.generate()
        self.secret = ("fuzz-secret-" + secrets.token_hex(20)).encode()
        self.signing = {"fz-hs": ("HS256", self.secret), "fz-rs": ("RS256", self.rsa),
                        "fz-es": ("ES256", self.ec), "fz-ed": ("EdDSA", self.ed)}
        self.revoked = {"fz-revoked"}
        self.verify = {kid: (alg, verifier(alg, key if alg in _HMAC_HASH else key.public_key()))
                       for kid, (alg, key) in self.signing.items()}
        # Public keys as bytes: HMAC secrets in the algorithm-confusion attack.
        self.public_pems = [pem(k.public_key()).encode() for k in (self.rsa, self.ec, self.ed)]

    def register(self, conn) -> None:
        conn.execute("SELECT vecguard.add_key('fz-hs', 'HS256', %s, replace => true)", [self.secret.decode()])
        for kid, key in (("fz-rs", self.rsa), ("fz-es", self.ec), ("fz-ed", self.ed)):
            conn.execute("SELECT vecguard.add_key(%s, %s, %s, replace => true)",
                         [kid, self.signing[kid][0], pem(key.public_key())])
        conn.execute("SELECT vecguard.add_key('fz-revoked', 'HS256', %s, replace => true)",
                     ["revoked-secret-" + secrets.token_hex(20)])
        conn.execute("SELECT vecguard.revoke_key('fz-revoked')")

    def token(self, claims: dict, kid: str = "fz-hs") -> str:
        alg, key = self.signing[kid]
        return pyjwt.encode(claims, key, algorithm=alg, headers={"kid": kid})


@pytest.fixture(scope="module")
def keys(cluster, dbname):
    k = Keys()
    with cluster.connect(dbname) as su:
        su.execute(f"""DO $$ BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
              CREATE ROLE {APP_ROLE} LOGIN;
            END IF; END $$""")
        k.register(su)
    return k


def check_vector(fz: Fuzzer, case: str, value, send: bytes, text: str, size: int) -> list[str]:
    """Problems of a vector the server produced: invariants, then the text and binary round
    trips, which must reproduce it bit for bit."""
    problems = vector_problems(send, size)
    back = fz.attempt(case, value, lambda c: c.execute("SELECT vector_send(%s::vector)", [text]).fetchone()[0],
                      counted=False)
    if isinstance(back, Rejection):
        problems.append(f"v::text ({text[:60]!r}) does not parse back: {back.sqlstate} {back.message}")
    elif back is not None and back != send:
        problems.append("v::text::vector differs from v")
    back = fz.attempt(case, value, lambda c: c.execute("SELECT vector_send(%b)", [VectorBytes(send)]).fetchone()[0],
                      counted=False)
    if isinstance(back, Rejection):
        problems.append(f"vector_send(v) is refused by vector_recv: {back.sqlstate} {back.message}")
    elif back is not None and back != send:
        problems.append("binary send/recv does not round-trip")
    return problems


def judge_vector(fz: Fuzzer, case: str, value, res, expected: bytes | None) -> None:
    """Common verdict for the vector input surfaces. `res` is (vector_send(v), v::text,
    pg_column_size(v)) or the attempt's failure; `expected` is the reference's send bytes,
    None when the input must be refused."""
    if res is None:
        return
    if isinstance(res, Rejection):
        if expected is not None:
            fz.note("valid input rejected", case, (value, res.sqlstate, res.message))
        return
    fz.stats["accepted"] += 1
    send, text, size = res
    problems = check_vector(fz, case, value, send, text, size)
    if expected is None:
        problems.append(f"the reference refuses it, the server stored {text[:80]}")
    elif send != expected:
        problems.append(f"stored {text[:80]}, the reference reads {vector_text(expected)[:80]}")
    if problems:
        fz.fail("wrong acceptance", case, value, "; ".join(problems))


def vector_text(send: bytes) -> str:
    dim = (len(send) - 4) // 4
    return "[" + ",".join(repr(v) for v in struct.unpack(f">{dim}f", send[4:])) + "]"


def literal(s: str) -> str:
    """A standard-conforming SQL string literal (no backslash escapes, quotes doubled)."""
    return "'" + s.replace("'", "''") + "'"


# ---------------------------------------------------------------------------------------
# vector text input
# ---------------------------------------------------------------------------------------

FLOAT_SPECIALS = [
    "NaN", "nan", "-nan", "nan(123)", "inf", "-inf", "+Infinity", "INFINITY", "infinit",
    "1e39", "-1e39", "3.4028235e38", "3.40282356e38", "3.4028236e38", "-3.4028235677973366e38",
    "1e-45", "1.4e-45", "7.006e-46", "7e-46", "1e-46", "-1e-50", "-0", "+0", ".5", "5.", "-.5e-3",
    "0x", "0x.", "0x.p1", "0x1p", "0x1p-149", "0x1p-150", "0x1.8p-150", "0x1.fffffep127",
    "0x1.ffffffp127", "0x1.0000010000000001p0", "0X1P+3", "0x0p99999", "0x1p99999999999",
    "0x.0000000000000000000001p100", "1e", "1e+", "1e-", "+", "-", ".", "e5", "1..2", "1e5.5",
    "00001", "1_000", "\u0661", "\uff11", "1,5", "'1'", '"1"', "null", "true", "1" * 60,
    "0." + "0" * 60 + "1", "9" * 45, "1e-99999", "1e99999", "-0e0", "0e99999999", "1e0000000000039",
]
SPACES = list(VECTOR_SPACE) + ["\u00a0", "\u2003", "\ufeff", "\u3000"]


def float_token(rng) -> str:
    """One element as text: mostly ordinary numbers, some edge forms of strtof's syntax."""
    r = rng.random()
    if r < 0.3:
        return str(rng.randint(-10 ** rng.randint(1, 9), 10 ** rng.randint(1, 9)))
    if r < 0.55:
        return repr(struct.unpack(">f", struct.pack(">f", rng.uniform(-1e4, 1e4)))[0])
    if r < 0.65:
        return repr(struct.unpack(">f", rng.randbytes(4))[0])  # any bits: nan, inf, subnormals
    if r < 0.75:
        return f"{rng.choice(['', '-', '+'])}{rng.randint(0, 999)}.{rng.randint(0, 99999)}e{rng.randint(-60, 60)}"
    if r < 0.85:
        digits = "".join(rng.choice("0123456789abcdefABCDEF") for _ in range(rng.randint(0, 20)))
        frac = "." + "".join(rng.choice("0123456789abcdef") for _ in range(rng.randint(0, 16))) if rng.random() < 0.5 else ""
        exp = f"p{rng.randint(-160, 140)}" if rng.random() < 0.6 else ""
        return f"{rng.choice(['', '-'])}0x{digits}{frac}{exp}"
    return rng.choice(FLOAT_SPECIALS)


def mutate(rng, s: str, alphabet: str) -> str:
    """1-4 random edits: insert, delete, replace, duplicate a slice, truncate."""
    for _ in range(rng.randint(1, 4)):
        i = rng.randint(0, len(s))
        op = rng.randrange(5)
        if op == 0:
            s = s[:i] + rng.choice(alphabet) + s[i:]
        elif op == 1:
            s = s[:i] + s[i + 1:]
        elif op == 2:
            s = s[:i] + rng.choice(alphabet) + s[i + 1:]
        elif op == 3:
            j = rng.randint(i, min(len(s), i + 20))
            s = s[:j] + s[i:j] * rng.randint(1, 3) + s[j:]
        else:
            s = s[:i]
    return s


def vector_literal(rng) -> tuple[str, int]:
    """(text, dims) of a vector literal, mostly well-formed."""
    dim = rng.choice([1, 2, 3, 4, 5, 8, rng.randint(1, 64), rng.randint(1, 400)])
    if rng.random() < 0.02:
        dim = rng.choice([VECTOR_MAX_DIM - 1, VECTOR_MAX_DIM, VECTOR_MAX_DIM + 1, 20000])
        return "[" + ",".join(str(rng.randint(-9, 9)) for _ in range(dim)) + "]", dim
    odd = rng.random() < 0.4

    def sp():
        return "".join(rng.choice(SPACES if odd else VECTOR_SPACE) for _ in range(rng.choice([0, 0, 0, 1, 2])))
    elems = [sp() + (float_token(rng) if odd and rng.random() < 0.3 else
                     repr(struct.unpack(">f", struct.pack(">f", rng.gauss(0, 10 ** rng.randint(-5, 5))))[0])) + sp()
             for _ in range(dim)]
    return sp() + "[" + ",".join(elems) + "]" + sp(), dim


def typmod(rng, dim: int) -> tuple[str, int | None]:
    """(SQL typmod suffix, the typmod it means): None for a modifier typmod_in refuses."""
    if rng.random() < 0.6:
        return "", -1
    n = rng.choice([dim, dim, dim + 1, max(dim - 1, 0), 1, 0, -1, VECTOR_MAX_DIM, VECTOR_MAX_DIM + 1, 2 ** 31])
    if rng.random() < 0.05:
        spec = rng.choice(["(1,2)", "('3')", "(3.5)", "(x)"])
        return spec, 3 if spec == "('3')" else None
    return f"({n})", n if 1 <= n <= VECTOR_MAX_DIM else None


TEXT_CORPUS = [
    ("[1,2,3]", ""), ("[]", ""), ("[ ]", ""), ("[1e39]", ""), ("[NaN]", ""), ("[-inf]", ""),
    ("[1,2]", "(3)"), ("[1,2,3]", "(3)"), ("[1]", "(0)"), ("[1]", "(16001)"), ("[0x10,0x.8p1]", ""),
    ("[0x1.0000010000000001p0]", ""), ("[0x0p2000]", ""), ("[1e-46,-1e-46]", ""), ("[1,2]x", ""),
    ("[" + ",".join(["1"] * VECTOR_MAX_DIM) + "]", ""), ("[" + ",".join(["1"] * (VECTOR_MAX_DIM + 1)) + "]", ""),
    ("\u00a0[1]", ""), ("[1\u00a0]", ""), ("[1,\n2\t]\r\n", ""), ("[[1]]", ""), ("[1,,2]", ""),
]

VECTOR_QUERY = "SELECT vector_send(v), v::text, pg_column_size(v) FROM (SELECT {}::vector{} AS v) s"


def test_vector_text(cluster, dbname):
    alphabet = "[],.-+eEx0123456789pP \t\n\x0b\x0c\r" + "".join(SPACES) + "éa\u0661"
    with Fuzzer(cluster, dbname, "vector_text", budget("vector_text"), on_connect=binary_vectors) as fz:
        def one(case, lit, mod_sql, mod):
            res = fz.attempt(case, (lit, mod_sql), lambda c: c.execute(VECTOR_QUERY.format(literal(lit), mod_sql)).fetchone())
            ref = parse_vector_text(lit, mod) if mod is not None else None
            judge_vector(fz, case, (lit, mod_sql), res, None if ref is None else vector_binary(ref))

        for i, (lit, mod_sql) in enumerate(TEXT_CORPUS):
            mod = -1 if not mod_sql else int(mod_sql[1:-1])
            one(f"vector_text:corpus{i}", lit, mod_sql, mod if mod == -1 or 1 <= mod <= VECTOR_MAX_DIM else None)
        for case, rng in fz.cases():
            lit, dim = vector_literal(rng)
            if rng.random() < 0.4:
                lit = mutate(rng, lit, alphabet)
            one(case, lit, *typmod(rng, dim))
    fz.assert_clean()


# ---------------------------------------------------------------------------------------
# vector binary input
# ---------------------------------------------------------------------------------------

SPECIAL_BITS = [0x7fc00000, 0x7f800001, 0xffc00001, 0x7fffffff, 0x7f800000, 0xff800000,
                0x00000001, 0x80000001, 0x80000000, 0x7f7fffff, 0x00800000, 0x007fffff]


def binary_input(rng) -> bytes:
    """A vector in send format, then 0-3 corruptions of its header or payload."""
    dim = rng.choice([1, 2, 3, 4, 8, 16, rng.randint(1, 64), rng.randint(1, 300)])
    if rng.random() < 0.02:
        dim = rng.choice([VECTOR_MAX_DIM, VECTOR_MAX_DIM + 1])
    vals = [rng.choice(SPECIAL_BITS) if rng.random() < 0.05 else struct.unpack(">I", struct.pack(">f", rng.gauss(0, 100)))[0]
            for _ in range(dim)]
    b = bytearray(struct.pack(f">hh{dim}I", min(dim, 32767), 0, *vals))
    for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
        op = rng.randrange(6)
        if op == 0:
            b[0:2] = struct.pack(">h", rng.choice([0, -1, -32768, 32767, VECTOR_MAX_DIM + 1, dim + 1, dim - 1]))
        elif op == 1:
            b[2:4] = struct.pack(">h", rng.choice([1, -1, 256, 32767]))
        elif op == 2:
            del b[rng.randint(0, len(b)):]
        elif op == 3:
            b += rng.randbytes(rng.choice([1, 3, 4, 8]))
        elif op == 4 and len(b) > 4:
            b[rng.randrange(4, len(b))] ^= 1 << rng.randrange(8)
        elif op == 5 and len(b) >= 8:
            at = 4 + 4 * rng.randrange((len(b) - 4) // 4)
            b[at:at + 4] = struct.pack(">I", rng.choice(SPECIAL_BITS))
    return bytes(b)


def copy_binary(data: bytes, mod: int):
    """COPY ... FROM STDIN (FORMAT binary) into a vector(mod) column: vector_recv with a typmod."""
    stream = (b"PGCOPY\n\xff\r\n\x00" + struct.pack(">iihi", 0, 0, 1, len(data)) + data + struct.pack(">h", -1))

    def run(conn):
        with conn.transaction(force_rollback=True):
            conn.execute(f"CREATE TEMP TABLE fz_copy (v vector({mod}))")
            with conn.cursor().copy("COPY fz_copy FROM STDIN (FORMAT binary)") as cp:
                cp.write(stream)
            return conn.execute("SELECT vector_send(v), v::text, pg_column_size(v) FROM fz_copy").fetchone()
    return run


BINARY_CORPUS = [struct.pack(">hh", 1, 0), struct.pack(">hhf", 1, 0, 1.0), struct.pack(">hhI", 1, 0, 0x7f800001),
                 struct.pack(">hh", -32768, 0), struct.pack(">hhf", 1, 1, 1.0), struct.pack(">hhff", 1, 0, 1.0, 2.0),
                 b"", b"\x00", struct.pack(">hh", VECTOR_MAX_DIM + 1, 0) + bytes(4 * (VECTOR_MAX_DIM + 1))]


def test_vector_binary(cluster, dbname):
    with Fuzzer(cluster, dbname, "vector_binary", budget("vector_binary"), on_connect=binary_vectors) as fz:
        def one(case, data, mod):
            if mod == -1:
                run = lambda c: c.execute(VECTOR_QUERY.format("%b", ""), [VectorBytes(data)]).fetchone()  # noqa: E731
            else:
                run = copy_binary(data, mod)
            judge_vector(fz, case, (data, mod), fz.attempt(case, (data, mod), run), decode_vector_binary(data, mod))

        for i, data in enumerate(BINARY_CORPUS):
            one(f"vector_binary:corpus{i}", data, -1)
        for case, rng in fz.cases():
            data = binary_input(rng)
            dim = struct.unpack(">h", data[:2])[0] if len(data) >= 2 else 1
            mod = -1 if rng.random() < 0.8 else rng.choice([max(dim, 1), max(dim + 1, 1), 1, VECTOR_MAX_DIM])
            one(case, data, min(mod, VECTOR_MAX_DIM))
    fz.assert_clean()


# ---------------------------------------------------------------------------------------
# casts from arrays
# ---------------------------------------------------------------------------------------

ELEM_TYPES = ["real", "double precision", "integer", "numeric"]
ARRAY_SPECIALS = ["NaN", "Infinity", "-Infinity", "inf", "NULL", "1e400", "-1e39", "3.4028236e38",
                  "3.4028235e38", "1e-50", "1e-400", "1e-45", "0", "-0", "2147483647", "-2147483648",
                  "2147483648", "1.5", "16777217", "0.1", "-9999999999999999999999"]


def array_element(rng) -> str:
    r = rng.random()
    if r < 0.4:
        return str(rng.randint(-1000, 1000))
    if r < 0.85:
        return repr(rng.gauss(0, 10 ** rng.randint(-8, 8)))
    return rng.choice(ARRAY_SPECIALS)


def element_value(etype: str, tok: str) -> float | None:
    """The float4 array_to_vector must make of one element, None when it must refuse it
    (float4in and float8in already refuse non-zero literals that underflow to zero)."""
    nonzero = any(c in "123456789" for c in tok.lower().split("e")[0])
    if etype == "integer":
        if not tok.lstrip("+-").isascii() or not tok.lstrip("+-").isdigit() or not -2**31 <= int(tok) < 2**31:
            return None
        return struct.unpack(">f", struct.pack(">f", float(int(tok))))[0]
    if etype == "double precision":
        try:
            d = float(tok)
            v = struct.unpack(">f", struct.pack(">f", d))[0]
        except (ValueError, OverflowError):
            return None
        return v if math.isfinite(v) and (d != 0 or not nonzero) else None
    m = NUMBER.fullmatch(tok)  # real and numeric are both read as float4in reads the decimal
    v = strtof_value(m) if m else None
    if v == 0 and nonzero:
        return None
    return 0.0 if etype == "numeric" and v == 0 else v  # numeric has no negative zero


def array_case(rng) -> tuple[str, str, list | None]:
    """(element type, array literal, expected values or None when the cast must fail)."""
    etype = rng.choice(ELEM_TYPES)
    n = rng.choice([1, 2, 3, 4, rng.randint(1, 50), 0] + ([VECTOR_MAX_DIM, VECTOR_MAX_DIM + 1] if rng.random() < 0.03 else []))
    elems = [array_element(rng) for _ in range(n)]
    values = [element_value(etype, e) for e in elems]
    valid = 1 <= n <= VECTOR_MAX_DIM and None not in values
    shape = rng.random()
    if shape < 0.08 and n >= 2 and n % 2 == 0:
        half = n // 2
        return etype, "{{" + ",".join(elems[:half]) + "},{" + ",".join(elems[half:]) + "}}", None
    if shape < 0.14:
        lo = rng.randint(-5, 5)
        body = f"[{lo}:{lo + n - 1}]={{" + ",".join(elems) + "}" if n else "{}"
    else:
        body = "{" + ",".join(f" {e} " if rng.random() < 0.1 else e for e in elems) + "}"
    return etype, body, values if valid else None


def test_vector_array_casts(cluster, dbname):
    with Fuzzer(cluster, dbname, "vector_array", budget("vector_array"), on_connect=binary_vectors) as fz:
        for case, rng in fz.cases():
            etype, body, values = array_case(rng)
            dim = len(values) if values else 1
            mod_sql, mod = typmod(rng, dim)
            if values is not None and (mod is None or mod not in (-1, len(values))):
                values = None
            query = VECTOR_QUERY.format("%s::" + etype + "[]", mod_sql)
            res = fz.attempt(case, (etype, body, mod_sql), lambda c: c.execute(query, [body]).fetchone())
            judge_vector(fz, case, (etype, body, mod_sql), res, None if values is None else vector_binary(values))
    fz.assert_clean()


# ---------------------------------------------------------------------------------------
# aggregate state functions
# ---------------------------------------------------------------------------------------

STATE_LENGTHS = [0, 1, 2, 3, 4, 9, 17, VECTOR_MAX_DIM, VECTOR_MAX_DIM + 1, VECTOR_MAX_DIM + 2,
                 32768, 32769, 32770, 65536, 65537, 70001]
COUNTS = [1.0, 2.0, 3.0, 0.0, -1.0, 0.5, 1e-300, 1e300, float("nan"), float("inf"), float("-inf"), 5e-324]


def state_array(rng, length: int | None = None) -> list[float]:
    """A float8[] aggregate state: count, then per-dimension sums."""
    if length is None:
        length = rng.choice(STATE_LENGTHS) if rng.random() < 0.03 else rng.randint(0, 12)
    special = [float("nan"), float("inf"), float("-inf"), 1e300, -1e300, 1e-310, 0.0, -0.0, 3.5e38]
    sums = [rng.choice(special) if rng.random() < 0.03 else rng.gauss(0, 10 ** rng.randint(0, 6))
            for _ in range(max(length - 1, 0))]
    return ([rng.choice(COUNTS) if rng.random() < 0.4 else float(rng.randint(1, 1000))] + sums)[:length]


def array_text(values, rng=None) -> str:
    """float8[] literal; with `rng`, sometimes two-dimensional or with a NULL."""
    items = ["NaN" if v != v else "Infinity" if v == math.inf else "-Infinity" if v == -math.inf else repr(v)
             for v in values]
    if rng and rng.random() < 0.05 and items:
        items[rng.randrange(len(items))] = "NULL"
    if rng and rng.random() < 0.08 and len(items) >= 2 and len(items) % 2 == 0:
        half = len(items) // 2
        return "{{" + ",".join(items[:half]) + "},{" + ",".join(items[half:]) + "}}"
    return "{" + ",".join(items) + "}"


def expected_avg(state: list[float]) -> bytes | None:
    """What vector_avg(state) must store: sums / count as float4, within the vector limits;
    None when the only acceptable outcomes are NULL or an ERROR."""
    if len(state) <= 1 or state[0] == 0 or not 1 <= len(state) - 1 <= VECTOR_MAX_DIM:
        return None
    out = []
    for s in state[1:]:
        try:
            v = struct.unpack(">f", struct.pack(">f", s / state[0]))[0]
        except (OverflowError, ZeroDivisionError):
            return None
        if not math.isfinite(v):
            return None
        out.append(v)
    return vector_binary(out)


AVG_QUERY = ("SELECT v IS NULL, vector_send(v), v::text, pg_column_size(v) "
             "FROM (SELECT vector_avg({}) AS v) s")
AGG_CORPUS = [  # (state, why)
    ([1.0] + [1.0] * VECTOR_MAX_DIM, "16000 dims: the largest vector"),
    ([1.0] + [1.0] * (VECTOR_MAX_DIM + 1), "16001 dims: one too many"),
    ([1.0] + [1.0] * 32768, "32769 elements: dims wraps to -32768 in int16"),
    ([1.0] + [1.0] * 70000, "70001 elements: dims wraps to 4464"),
    ([1.0, float("nan")], "NaN sum"), ([float("nan"), 1.0], "NaN count"), ([float("inf"), 1.0], "infinite count"),
    ([1e-310, 1.0], "sum / tiny count overflows"), ([1.0, 1e300], "float4 overflow"), ([], "empty"),
    ([0.0], "count only"), ([0.0, 1.0], "zero count"), ([-1.0, 2.0], "negative count"),
]


def test_aggregate_state_functions(cluster, dbname):
    with Fuzzer(cluster, dbname, "agg_state", budget("agg_state"), on_connect=binary_vectors) as fz:
        def judge(case, value, res, expected):
            """`res` = (is null, send, text, size) of a vector the state functions produced."""
            if res is None or isinstance(res, Rejection):
                return
            fz.stats["accepted"] += 1
            isnull, send, text, size = res
            if isnull:
                return
            problems = check_vector(fz, case, value, send, text, size)
            if expected is not None and send != expected:
                problems.append(f"stored {text[:60]}, expected {vector_text(expected)[:60]}")
            if problems:
                fz.fail("wrong acceptance", case, value, "; ".join(problems))

        def avg(case, state, text, flat):
            res = fz.attempt(case, text, lambda c: c.execute(AVG_QUERY.format("%s::float8[]"), [text]).fetchone())
            judge(case, text, res, expected_avg(flat))

        for i, (state, why) in enumerate(AGG_CORPUS):
            avg(f"agg_state:corpus{i} ({why})", state, array_text(state), state)
        for case, rng in fz.cases():
            op = rng.randrange(3)
            if op == 0:  # vector_avg(state)
                state = state_array(rng)
                text = array_text(state, rng)
                avg(case, state, text, state if "NULL" not in text else [])
            elif op == 1:  # vector_avg(vector_accum(state, v))
                state = state_array(rng)
                dim = len(state) - 1 if len(state) > 1 and rng.random() < 0.7 else rng.randint(1, 8)
                vec = "[" + ",".join(repr(rng.gauss(0, 100)) for _ in range(min(max(dim, 1), VECTOR_MAX_DIM))) + "]"
                text = array_text(state, rng)
                q = AVG_QUERY.format("vector_accum(%s::float8[], %s::vector)")
                judge(case, (text, vec), fz.attempt(case, (text, vec), lambda c: c.execute(q, [text, vec]).fetchone()), None)
            else:  # vector_avg(vector_combine(a, b))
                a = state_array(rng)
                b = state_array(rng, len(a) if rng.random() < 0.6 else None)
                ta, tb = array_text(a, rng), array_text(b, rng)
                q = AVG_QUERY.format("vector_combine(%s::float8[], %s::float8[])")
                judge(case, (ta, tb), fz.attempt(case, (ta, tb), lambda c: c.execute(q, [ta, tb]).fetchone()), None)
    fz.assert_clean()


# ---------------------------------------------------------------------------------------
# JWT
# ---------------------------------------------------------------------------------------

CLAIMS_SQL = ("SELECT vecguard.token_status(), vecguard.tenant(), vecguard.tenants(), "
              "vecguard.clearance(), vecguard.subject()")
B64_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
ATTACKER_JWK = {"kty": "oct", "k": b64url(b"attacker-chosen-secret-0123456789"), "kid": "fz-hs"}


def header_values(rng) -> dict:
    kids = ["fz-hs", "fz-rs", "fz-es", "fz-ed"]
    return {
        "alg": ["none", "None", "NONE", "HS256", "HS384", "HS512", "RS256", "PS256", "ES256", "ES384",
                "EdDSA", "hs256", " HS256", "HS256\u0000", "", None, 256, ["HS256"], {"alg": "HS256"}],
        "kid": kids + ["fz-revoked", "", "k" * 256, "k" * 257, "fz-hs\u0000", "FZ-HS", " fz-hs", "fz-hs ",
                       5, None, ["fz-hs"], {"kid": "fz-hs"}, "../../etc/passwd", "' OR '1'='1", "fz-hs\n",
                       "\u65e5\u672c", "fz-\u0125s"],
        "typ": ["JWT", "jwt", "JOSE", "at+jwt", "", 1, None, ["JWT"]],
        "crit": [["exp"], [], "exp", None, ["b64"]],
        "b64": [False, True, "false"],
        "jku": ["https://attacker.example/jwks.json", 5],
        "x5u": ["https://attacker.example/cert.pem"],
        "jwk": [ATTACKER_JWK, "garbage", 1],
        "x5c": [["MIIB"], "MIIB", []],
        "cty": ["JWT", 7],
        "zip": ["DEF"],
        "enc": ["A128GCM"],
        "nested": [{"a": [{"b": None}] * 3}, "x" * rng.choice([10, 5000, 20000])],
    }


def payload_values(rng, now: int) -> dict:
    # exp/nbf keep clear of "now" so the statement's clock cannot tip a verdict.
    return {
        "exp": [now + 3600, now - 3600, now + 3600.5, now - 0.5 - 3600, str(now + 3600), None, True, 1e300,
                2**63, 2**63 - 1, 2**64, -2**63, 9.1e18, 9.3e18, [now + 3600], {"v": now + 3600}, 0, -1, 1e10,
                float(now + 7200)],
        "nbf": [now + 3600, now - 3600, "0", None, 1e300, now - 3600.5, -2**63, now + 3600.25, [0]],
        "iat": [now, "now", None, 1e300, -1, now + 10**6],
        "tenant_id": ["acme", "globex", 42, 42.0, 4.2, 1e20, 2**53, 2**53 + 1, 2**64, -7, "", [], ["acme"],
                      ["acme", "acme"], ["acme", "globex"], ["acme", 1], ["acme", None], {"$ne": 0}, True,
                      None, "\uff41\uff43\uff4d\uff45", "acme ", "a\u0000b", "42\u0000x", "\U0001f600",
                      "a" * 3000, "acme'; DROP TABLE x; --"],
        "clearance": [0, 2, -1, 2**31 - 1, 2**31, -2**31, -2**31 - 1, 3.0, "3", True, None, [1], 1e2, 2**63],
        "sub": ["alice", "", 42, 4.2, None, ["x"], True, "\u0000"],
        "jti": ["j1", 5, None, ""],
        "iss": ["https://idp.example", 7, None],
        "aud": ["vecguard", ["a", 5], 5],
        "app_metadata": [{"tenant_id": "evil"}, {"tenant_id": ["evil"]}],
        "tenant_id.x": ["evil"],
    }


def json_text(rng, obj, values: dict) -> str:
    """JSON of `obj`, sometimes with a duplicated member (first or last, as parsers disagree
    about which wins), an escaped member name or deep nesting."""
    text = json.dumps(obj, ensure_ascii=rng.random() < 0.5,
                      separators=rng.choice([(",", ":"), (", ", ": "), (" ,", " :\n")]))
    if not isinstance(obj, dict) or not text.startswith("{"):
        return text
    r = rng.random()
    if r < 0.15:
        name = rng.choice(list(values))
        member = json.dumps(name) + ":" + json.dumps(rng.choice(values[name])) + ","
        text = "{" + member + text[1:] if rng.random() < 0.5 or text == "{}" else text[:-1] + "," + member[:-1] + "}"
    elif r < 0.2:
        name = rng.choice(list(obj) or ["exp"])
        escaped = '"' + "".join(f"\\u{ord(c):04x}" if rng.random() < 0.5 else c for c in name) + '"'
        text = text.replace(json.dumps(name), escaped, 1)
    elif r < 0.22:
        depth = rng.choice([50, 127, 129, 300])
        text = text[:-1] + (", " if obj else "") + '"deep":' + "[" * depth + "]" * depth + "}"
    return text


def encode_segment(rng, text: str) -> str:
    data = text.encode()
    if rng.random() < 0.04:  # standard alphabet and padding: not base64url
        return base64.b64encode(data).decode()
    return b64url(data)


def crafted_token(rng, keys: Keys) -> str:
    """A token built from (mutated) header and claims and signed in one of several ways,
    right and wrong: the resigned half of the JWT fuzzing."""
    now = int(time.time())
    kid = rng.choice(list(keys.signing))
    header = {"alg": keys.signing[kid][0], "typ": "JWT", "kid": kid}
    claims = {"sub": "alice", "tenant_id": "acme", "clearance": 2, "exp": now + 3600, "iat": now,
              "jti": f"j{rng.getrandbits(32)}"}
    hv, pv = header_values(rng), payload_values(rng, now)
    for target, values in ((header, hv), (claims, pv)):
        for _ in range(rng.choice([0, 1, 1, 2, 3])):
            name = rng.choice(list(values))
            if rng.random() < 0.15:
                target.pop(name, None)
            else:
                target[name] = rng.choice(values[name])
    if rng.random() < 0.03:
        claims = rng.choice([[], "x", 1, None, [claims]])
    signing_input = (encode_segment(rng, json_text(rng, header, hv)) + "." +
                     encode_segment(rng, json_text(rng, claims, pv))).encode()
    how = rng.choices(["right", "hs-family", "confusion", "wrong-secret", "other-key", "empty", "random"],
                      weights=[55, 7, 9, 7, 7, 7, 8])[0]
    named = header.get("kid") if isinstance(header.get("kid"), str) else None
    alg = header.get("alg") if isinstance(header.get("alg"), str) else "HS256"
    if how == "right":
        sig = sign(*keys.signing.get(named, keys.signing["fz-hs"]), signing_input)
    elif how == "hs-family":
        sig = sign(alg if alg in _HMAC_HASH else "HS256", keys.secret, signing_input)
    elif how == "confusion":  # a public key used as an HMAC secret
        sig = sign(rng.choice(list(_HMAC_HASH)), rng.choice(keys.public_pems), signing_input)
    elif how == "wrong-secret":
        sig = sign("HS256", keys.secret[:-1] + b"!", signing_input)
    elif how == "other-key":
        other = rng.choice([k for k in keys.signing if k != named])
        sig = sign(*keys.signing[other], signing_input)
    elif how == "empty":
        sig = b""
    else:
        sig = rng.randbytes(rng.choice([1, 32, 64, 256]))
    return signing_input.decode() + "." + b64url(sig)


def valid_token(rng, keys: Keys, tenant: str = "acme") -> str:
    now = int(time.time())
    return keys.token({"sub": "alice", "tenant_id": tenant, "clearance": rng.randint(0, 5),
                       "exp": now + 3600, "iat": now}, rng.choice(list(keys.signing)))


def mutated_token(rng, keys: Keys) -> str:
    """A valid token with 1-3 edits to its text: the tampering half of the JWT fuzzing."""
    tok = valid_token(rng, keys)
    extra = B64_CHARS + "=+/.. \t\n\u00a0\u2003\u3000\u200b\u00e9\ufeff"
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(12)
        i = rng.randrange(len(tok) or 1)
        if op == 11:  # flip one bit of a segment's bytes
            parts = tok.split(".")
            j = rng.randrange(len(parts))
            data = bytearray(b64url_decode(parts[j]) or b"")
            if data:
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
                parts[j] = b64url(bytes(data))
            tok = ".".join(parts)
        elif op == 0:  # change one character
            tok = tok[:i] + rng.choice(B64_CHARS.replace(tok[i:i + 1], "")) + tok[i + 1:]
        elif op == 1:
            tok = tok[:i] + tok[i + 1:]
        elif op == 2:
            tok = tok[:i] + rng.choice(extra) + tok[i:]
        elif op == 3:
            tok = tok[:i]
        elif op == 4:  # cut and paste a segment from another tenant's valid token
            other = valid_token(rng, keys, tenant="globex").split(".")
            parts = tok.split(".")
            j = rng.randrange(min(len(parts), 3))
            parts[j] = other[j]
            tok = ".".join(parts)
        elif op == 5:
            parts = tok.split(".")
            j = rng.randrange(len(parts))
            parts[j] += rng.choice(["=", "==", "==="])
            tok = ".".join(parts)
        elif op == 6:
            tok = tok.replace("-", "+").replace("_", "/")
        elif op == 7:
            tok = rng.choice(["", " ", "\t", "\n", "\u00a0", "\u3000", "\x1c"]) + tok + rng.choice(["", " ", "\r\n", "\u2028", "\x1f"])
        elif op == 8:
            tok = rng.choice([tok + "." + tok, tok.rsplit(".", 1)[0], tok.rsplit(".", 1)[0] + ".", tok + ".", "." + tok])
        elif op == 9:  # the unused low bits of the signature's last character
            last = B64_CHARS.index(tok[-1]) if tok[-1:] and tok[-1] in B64_CHARS else 0
            tok = tok[:-1] + B64_CHARS[last ^ rng.randint(1, 3)]
        else:
            tok += rng.choice(["A" * 17000, "." * 3, "%00", "\\"])
    return tok


def jwt_corpus(keys: Keys) -> list[str]:
    now = int(time.time())
    claims = {"tenant_id": "acme", "exp": now + 3600}
    h = lambda d: b64url(json.dumps(d).encode())  # noqa: E731
    p = h(claims)
    none_tok = f"{h({'alg': 'none', 'kid': 'fz-hs'})}.{p}."
    confused = f"{h({'alg': 'HS256', 'kid': 'fz-rs'})}.{p}"
    return [
        keys.token(claims), keys.token(claims, "fz-rs"), keys.token(claims, "fz-es"), keys.token(claims, "fz-ed"),
        none_tok, none_tok + "AAAA",
        confused + "." + b64url(sign("HS256", keys.public_pems[0], confused.encode())),
        keys.token({**claims, "exp": now - 3600}), keys.token({"tenant_id": "acme"}),
        pyjwt.encode(claims, "revoked-but-who-knows-the-secret-0123456789", algorithm="HS256", headers={"kid": "fz-revoked"}),
        # Claims with NUL characters must come back whole, or be refused.
        keys.token({"tenant_id": "42\u0000x", "sub": "\u0000", "exp": now + 3600}),
        "a.b", "a.b.c", "..", "", " ", "x" * 20000,
    ]


def probe(token: str, strict: bool):
    """Claims as the ordinary role sees them with `token` set for one transaction."""
    def run(conn):
        with conn.transaction(force_rollback=True):
            if strict:
                conn.execute("SET LOCAL vecguard.strict = on")
            conn.execute("SELECT set_config('vecguard.jwt', %s, true)", [token])
            return conn.execute(CLAIMS_SQL).fetchone()
    return run


def test_jwt(cluster, dbname, keys):
    with Fuzzer(cluster, dbname, "jwt", budget("jwt"), user=APP_ROLE) as fz:
        def one(case, token, strict=False):
            res = fz.attempt(case, token, probe(token, strict))
            ok, claims, why = jwt_verdict(token, keys.verify, keys.revoked, time.time())
            if res is None:
                return
            if isinstance(res, Rejection):  # only strict mode raises for a bad token
                if not (strict and res.sqlstate == "28000"):
                    fz.note("claim functions raised", case, (token, res.sqlstate, res.message))
                elif ok:
                    fz.note("validly signed token rejected", case, (token, res.message))
                return
            status, *got = res
            accepted = status == "valid"
            fz.stats["accepted" if accepted else "rejected"] += 1
            if accepted and not ok:
                fz.fail("wrong acceptance", case, token, f"token_status() = valid, but {why}")
            elif not accepted and any(v is not None for v in got):
                fz.fail("wrong acceptance", case, token, f"token_status() = {status}, yet claims {got}")
            elif accepted and tuple(got) != ref_claims(claims):
                fz.fail("wrong acceptance", case, token,
                        f"(tenant, tenants, clearance, subject) = {got}, the signed claims say {ref_claims(claims)}")
            elif ok and not accepted:
                fz.note("validly signed token rejected", case, (token, status))

        for i, token in enumerate(jwt_corpus(keys)):
            one(f"jwt:corpus{i}", token)
        for case, rng in fz.cases():
            token = crafted_token(rng, keys) if rng.random() < 0.45 else mutated_token(rng, keys)
            one(case, token, strict=rng.random() < 0.1)
        # Hostile kids and claims end up in audit records: the hash chain must still verify.
        ok, reason = cluster.sql("SELECT ok, reason FROM vecguard.audit_verify()", dbname)[0]
        if not ok:
            fz.fail("invariant", "jwt:audit", "", f"audit_verify() fails after fuzzing: {reason}")
    fz.assert_clean()


# ---------------------------------------------------------------------------------------
# JWK sets
# ---------------------------------------------------------------------------------------

def _int_b64(n: int) -> str:
    return b64url(n.to_bytes(max(1, (n.bit_length() + 7) // 8), "big"))


def _raw_public(key) -> str:
    return b64url(key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


class JwkPool:
    """Clean JWKs of many kinds (some unsupported or weak) with their private halves."""

    def __init__(self, keys: Keys):
        weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        curves = {"P-256": ec.generate_private_key(ec.SECP256R1()), "P-384": ec.generate_private_key(ec.SECP384R1()),
                  "P-521": ec.generate_private_key(ec.SECP521R1()), "secp256k1": ec.generate_private_key(ec.SECP256K1())}
        self.entries = []  # (jwk without kid, alg, signing key or None)
        for k, alg in ((keys.rsa, "RS256"), (weak, None)):
            pub = k.public_key().public_numbers()
            self.entries.append(({"kty": "RSA", "n": _int_b64(pub.n), "e": _int_b64(pub.e)}, alg, k))
        n = keys.rsa.public_key().public_numbers().n
        self.entries.append(({"kty": "RSA", "n": _int_b64(n), "e": "AQ"}, None, None))  # e = 1
        for crv, k in curves.items():
            nums, size = k.public_key().public_numbers(), (k.curve.key_size + 7) // 8
            jwk = {"kty": "EC", "crv": crv, "x": b64url(nums.x.to_bytes(size, "big")),
                   "y": b64url(nums.y.to_bytes(size, "big"))}
            self.entries.append((jwk, {"P-256": "ES256", "P-384": "ES384"}.get(crv), k))
            if crv == "P-256":  # a point off the curve
                self.entries.append((dict(jwk, y=b64url((nums.y ^ 1).to_bytes(size, "big"))), None, None))
        self.entries.append(({"kty": "OKP", "crv": "Ed25519", "x": _raw_public(keys.ed)}, "EdDSA", keys.ed))
        self.entries.append(({"kty": "OKP", "crv": "Ed448", "x": _raw_public(ed448.Ed448PrivateKey.generate())}, None, None))
        self.entries.append(({"kty": "OKP", "crv": "X25519", "x": _raw_public(x25519.X25519PrivateKey.generate())}, None, None))
        secret = secrets.token_bytes(32)
        self.entries.append(({"kty": "oct", "k": b64url(secret)}, "HS256", secret))
        self.entries.append(({"kty": "oct", "k": b64url(secret[:16])}, None, None))


JWK_MEMBERS = ["kty", "crv", "alg", "use", "kid", "n", "e", "x", "y", "k", "d", "p", "key_ops", "x5c", "oth"]


def jwk_member_value(rng, jwk: dict, member: str):
    """A replacement value: other valid names, wrong types, weak or malformed base64url."""
    good = jwk.get(member)
    good = good if isinstance(good, str) else "AQAB"
    return rng.choice([
        "", "RSA", "EC", "OKP", "oct", "rsa", "P-256", "P-384", "Ed25519", "sig", "enc", "SIG",
        "RS256", "PS512", "ES256", "ES384", "EdDSA", "HS256", "none", "RSA-OAEP", "A128KW", "dir",
        None, True, 0, -1, 2**70, 1.5, [good], {"v": good}, "AQ", "Aw", "AAEAAQ", "!!!!", "A" * rng.choice([1, 5, 4097]),
        "A" * 100000, good + "=", good + "==", good.replace("-", "+").replace("_", "/"), good[:-1],
        b64url(rng.randbytes(rng.choice([31, 32, 48, 64, 256]))), f"kid\u0007{rng.randrange(99)}", "k" * 257,
        "\u65e5" * 90,
    ])


def jwks_document(rng, pool: JwkPool) -> tuple[object, list]:
    """(document, [(kid, alg, signing key)] of its untouched keys) with 1-4 keys, most of them mutated."""
    keys, clean = [], []
    for j in range(rng.choice([1, 1, 2, 3, 4])):
        base, alg, priv = rng.choice(pool.entries)
        jwk = dict(base, kid=f"jwks-{rng.getrandbits(40):x}-{j}")
        if rng.random() < 0.5 and alg:
            jwk["alg"] = alg
        if rng.random() < 0.3:
            jwk["use"] = "sig"
        mutations = rng.choice([0, 1, 1, 2, 3])
        for _ in range(mutations):
            member = rng.choice(JWK_MEMBERS)
            if rng.random() < 0.2:
                jwk.pop(member, None)
            else:
                jwk[member] = jwk_member_value(rng, jwk, member)
        if mutations == 0 and alg:
            clean.append((jwk, alg, priv))
        keys.append(jwk)
    if len(keys) > 1 and rng.random() < 0.1:
        keys[-1]["kid"] = keys[0].get("kid")  # duplicate kid
    clean = [(jwk["kid"], jwk.get("alg", alg), priv) for jwk, alg, priv in clean]
    r = rng.random()
    doc = {"keys": keys}
    if r < 0.05:
        doc = rng.choice([{"keys": {}}, {"keys": "x"}, [keys], {"Keys": keys}, {"keys": []}, {"keys": keys, "extra": [[[]]] * 5},
                          {"keys": [None, 1, "x", []]}, {"keys": keys * 30}])
    return doc, clean


def test_jwks(cluster, dbname, keys):
    pool = JwkPool(keys)
    with Fuzzer(cluster, dbname, "jwks", budget("jwks")) as fz:
        def check_token(case, kid, alg, priv):
            """A clean key must verify a token signed with its private half."""
            tok = pyjwt.encode({"tenant_id": "acme", "exp": int(time.time()) + 3600}, priv, algorithm=alg,
                               headers={"kid": kid})

            def run(conn):
                with conn.transaction(force_rollback=True):
                    conn.execute(f"SET LOCAL ROLE {APP_ROLE}")
                    conn.execute("SELECT set_config('vecguard.jwt', %s, true)", [tok])
                    return conn.execute("SELECT vecguard.token_status()").fetchone()[0]
            status = fz.attempt(case, tok, run, counted=False)
            if status != "valid":
                fz.fail("invariant", case, tok, f"a token signed by registered JWK {kid} ({alg}) gets {status}")

        def one(case, text, clean):
            res = fz.attempt(case, text, lambda c: c.execute("SELECT vecguard.add_jwks(%s::jsonb)", [text]).fetchone()[0])
            if res is None or isinstance(res, Rejection):
                return
            fz.stats["accepted"] += 1
            doc = json.loads(text)
            entries = doc.get("keys") if isinstance(doc, dict) else None
            sig_keys = [k for k in entries if not jwk_is_encryption(k)] if isinstance(entries, list) else []
            problems, expected = [], {}  # expected: kid -> alg
            for k in sig_keys:
                alg = jwk_expected_alg(k)
                if alg is None:
                    problems.append(f"accepted a JWK it must refuse: {json.dumps(k)[:200]}")
                elif k["kid"] in expected:
                    problems.append(f"accepted duplicate kid {k['kid']!r}")
                else:
                    expected[k["kid"]] = alg
            if res != len(sig_keys):
                problems.append(f"add_jwks returned {res} for {len(sig_keys)} signature keys")
            kids = [k["kid"] for k in sig_keys if isinstance(k, dict) and isinstance(k.get("kid"), str)]
            stored = dict(fz.conn.execute("SELECT kid, alg FROM vecguard.keys WHERE kid = ANY(%s) AND format = 'jwk'",
                                          [kids]).fetchall())
            if not problems and stored != expected:
                problems.append(f"stored {stored}, expected {expected}")
            if problems:
                fz.fail("wrong acceptance", case, text, "; ".join(problems))
            for kid, alg, priv in clean:
                check_token(case, kid, alg, priv)
            fz.conn.execute("DELETE FROM vecguard.keys WHERE kid = ANY(%s)", [kids])

        clean_doc = {"keys": [dict(jwk, kid=f"jwks-clean-{i}") for i, (jwk, alg, _) in enumerate(pool.entries) if alg]}
        one("jwks:corpus0", json.dumps(clean_doc), [(f"jwks-clean-{i}", alg, priv) for i, (_, alg, priv) in enumerate(pool.entries) if alg])
        for i, doc in enumerate([{"keys": [dict(e[0], kid="jwks-weak")]} for e in pool.entries if not e[1]]):
            one(f"jwks:corpus{i + 1}", json.dumps(doc), [])
        for case, rng in fz.cases():
            doc, clean = jwks_document(rng, pool)
            if rng.random() < 0.05:  # raw JSON edits: mostly jsonb's own errors
                one(case, mutate(rng, json.dumps(doc), '{}[]":,\\u0 '), [])
            else:
                one(case, json.dumps(doc), clean)
    fz.assert_clean()


# ---------------------------------------------------------------------------------------
# protect() identifiers
# ---------------------------------------------------------------------------------------

IDENT_PIECES = ["t", "docs", "Tenant", 'x"y', '"', '""', "a;b", "; DROP TABLE public.fz_victim; --",
                'x"); DROP TABLE public.fz_victim; --', ") ); DROP TABLE public.fz_victim; --", "/*", "*/",
                "--", "$$", "'", "\\", " ", "\u00e9", "\u65e5\u672c\u8a9e", "\U0001f642", "\t", "\n", "\x01",
                "\x1f", "\x7f", "\u200b", "\u202e", "select", "user", "vecguard_base", "pg_catalog", ".", "a.b",
                "(", ")", "[]", "[])) WITH CHECK (", "%s", "{}", "%%", "ANY", "::text", "E'\\x'"]
OBJECT_SNAPSHOT = """
    SELECT 'class', oid::int8, relname::text FROM pg_class
    UNION ALL SELECT 'proc', oid::int8, proname::text FROM pg_proc
    UNION ALL SELECT 'namespace', oid::int8, nspname::text FROM pg_namespace
    UNION ALL SELECT 'type', oid::int8, typname::text FROM pg_type
    UNION ALL SELECT 'trigger', oid::int8, tgname::text FROM pg_trigger
    UNION ALL SELECT 'rewrite', oid::int8, rulename::text FROM pg_rewrite
    UNION ALL SELECT 'event trigger', oid::int8, evtname::text FROM pg_event_trigger
    UNION ALL SELECT 'role', oid::int8, rolname || rolsuper FROM pg_roles
    UNION ALL SELECT 'policy on ' || polrelid, oid::int8, polname::text FROM pg_policy
    UNION ALL SELECT 'rls of ' || oid, oid::int8, relrowsecurity || '/' || relforcerowsecurity
      FROM pg_class WHERE relkind IN ('r', 'p')"""


def identifier(rng) -> str:
    r = rng.random()
    if r < 0.06:
        return "i" * 63
    if r < 0.1:
        return "j" * 64
    if r < 0.14:
        return "k" * 62 + "\u00e9"  # 64 bytes: truncation must not split the character
    return "".join(rng.choice(IDENT_PIECES) for _ in range(rng.randint(1, 4)))


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


TENANT_TYPES = {"text": ("acme", "other"), "character varying(64)": ("acme", "other"), "integer": (42, 43),
                "bigint": (42, 43), "uuid": (str(uuid.UUID(int=1)), str(uuid.UUID(int=2))), "domain": ("acme", "other")}


# A bystander table: the payloads in IDENT_PIECES try to drop it.
VICTIM = "CREATE TABLE IF NOT EXISTS public.fz_victim (id int, tenant_id text)"


@dataclass
class ProtectCase:
    """A table to create and protect. `domain` names the tenant column's type when ttype is
    "domain"; `decoys` are further text[] domains in the same schema."""
    schema: str
    table: str
    tcol: str
    ccol: str
    ttype: str
    domain: str
    decoys: tuple = ()


# The tenant column's type name is spliced into the policy and cut at its first "(": with
# this domain and column name the cut unbalances the quotes, and the column name ends up
# as SQL run by protect()'s caller. Any syntax error from protect() is a variant of this.
PROTECT_CORPUS = [
    ProtectCase("public", "fz_inject", ") ); DROP TABLE public.fz_victim; --", "c", "domain", "x(",
                ("x[])) WITH CHECK (",)),
    ProtectCase("public", "fz_paren", "t", "c", "domain", "x(1)"),
]


def protect_setup(conn, pc: ProtectCase, values):
    """Creates the table to protect (with three rows) and returns (oid, column names as
    stored); raises psycopg.Error for names PostgreSQL itself refuses."""
    schema = sql.Identifier(pc.schema)
    qualified = sql.SQL("{}.{}").format(schema, sql.Identifier(pc.table))
    with conn.transaction():
        if pc.schema != "public":
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(schema))
        for decoy in pc.decoys:
            conn.execute(sql.SQL("CREATE DOMAIN {}.{} AS text[]").format(schema, sql.Identifier(decoy)))
        type_sql = sql.SQL(pc.ttype)
        if pc.ttype == "domain":
            type_sql = sql.SQL("{}.{}").format(schema, sql.Identifier(pc.domain))
            conn.execute(sql.SQL("CREATE DOMAIN {} AS text").format(type_sql))
        conn.execute(sql.SQL("CREATE TABLE {} (id int, {} {}, {} integer)").format(
            qualified, sql.Identifier(pc.tcol), type_sql, sql.Identifier(pc.ccol)))
        conn.execute(sql.SQL("INSERT INTO {} VALUES (1, %s, 0), (2, %s, 0), (3, %s, 9)").format(qualified),
                     [values[0], values[1], values[0]])
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, sql.Identifier(APP_ROLE)))
        conn.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(qualified, sql.Identifier(APP_ROLE)))
        oid = conn.execute("SELECT %s::regclass::oid", [qualified.as_string(conn)]).fetchone()[0]
        names = [r[0] for r in conn.execute(
            "SELECT attname::text FROM pg_attribute WHERE attrelid = %s AND attnum > 0 ORDER BY attnum", [oid])]
    return oid, names


def protect_teardown(conn, pc: ProtectCase):
    schema = sql.Identifier(pc.schema)
    with conn.transaction():
        if pc.schema != "public":
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(schema))
            return
        conn.execute(sql.SQL("DROP TABLE {}.{}").format(schema, sql.Identifier(pc.table)))
        for name in pc.decoys + ((pc.domain,) if pc.ttype == "domain" else ()):
            conn.execute(sql.SQL("DROP DOMAIN {}.{}").format(schema, sql.Identifier(name)))


def visible_ids(keys: Keys, oid, tenant):
    """Ids the ordinary role sees in table `oid` with a token for `tenant`, clearance 5."""
    tok = keys.token({"tenant_id": tenant, "clearance": 5, "exp": int(time.time()) + 3600})

    def run(conn):
        with conn.transaction(force_rollback=True):
            name = conn.execute("SELECT %s::regclass::text", [oid]).fetchone()[0]
            conn.execute(f"SET LOCAL ROLE {APP_ROLE}")
            conn.execute("SELECT set_config('vecguard.jwt', %s, true)", [tok])
            return [r[0] for r in conn.execute(sql.SQL("SELECT id FROM {} ORDER BY id").format(sql.SQL(name)))]
    return run


def column_arg(rng, actual: str, given: str):
    """What to pass for a column: its stored name mostly, else the name as written (maybe
    truncated by PostgreSQL), a near miss, or NULL."""
    r = rng.random()
    if r < 0.6:
        return actual
    if r < 0.7:
        return given
    if r < 0.85:
        return rng.choice([actual.upper(), actual + '"', '"' + actual + '"', actual[:-1] or "x", actual + " "])
    return None


def random_protect_case(rng) -> ProtectCase:
    schema = "public" if rng.random() < 0.5 else identifier(rng)
    decoys = (identifier(rng),) if rng.random() < 0.2 else ()
    return ProtectCase(schema, identifier(rng), identifier(rng), identifier(rng), rng.choice(list(TENANT_TYPES)),
                       identifier(rng), decoys)


def test_protect_identifiers(cluster, dbname, keys):
    with Fuzzer(cluster, dbname, "protect", budget("protect")) as fz:
        fz.conn.execute(VICTIM)

        def catalog():
            return set(fz.conn.execute(OBJECT_SNAPSHOT).fetchall())

        def one(case, pc: ProtectCase, rng):
            """Protects a fresh table and checks what changed; `rng` None means: tenant
            column only, table by oid, no unprotect."""
            values = TENANT_TYPES[pc.ttype]
            try:
                oid, names = protect_setup(fz.conn, pc, values)
            except psycopg.Error:
                return  # names PostgreSQL itself refuses are not protect()'s concern
            t_arg, c_arg, by_oid, unprotect = names[1], None, True, False
            if rng:
                t_arg, c_arg = column_arg(rng, names[1], pc.tcol), column_arg(rng, names[2], pc.ccol)
                if rng.random() < 0.1:
                    t_arg, c_arg = c_arg, t_arg
                # The table by oid or by its quoted name: protect() reads the names from the catalog.
                by_oid, unprotect = rng.random() < 0.7, rng.random() < 0.3
            table_arg = str(oid) if by_oid else quote(pc.schema) + "." + quote(pc.table)
            shown = (pc, t_arg, c_arg)
            before = catalog()
            res = fz.attempt(case, shown, lambda c: c.execute(
                "SELECT vecguard.protect(%s::regclass, tenant => %s, clearance => %s)", [table_arg, t_arg, c_arg]))
            # Only the target's policies and its row-security flags may change.
            changed = before ^ catalog()
            stray = sorted(x for x in changed if x[0] not in (f"policy on {oid}", f"rls of {oid}"))
            problems = [f"unexpected catalog changes: {stray[:5]}"] if stray else []
            if isinstance(res, Rejection):
                if changed:
                    problems.append(f"refused ({res.sqlstate}) but changed the catalog: {sorted(changed)[:5]}")
                if res.sqlstate == "42601":
                    problems.append(f"built SQL that does not parse ({res.message}): a name escaped its quoting")
            elif res is not None:
                fz.stats["accepted"] += 1
                wrong = [a for a in (t_arg, c_arg) if a is not None and a not in names]
                if wrong:
                    fz.fail("wrong acceptance", case, shown, f"protected columns {wrong}; the table has {names}")
                want = {"vecguard_base"} | ({"vecguard_tenant"} if t_arg else set()) | ({"vecguard_clearance"} if c_arg else set())
                got = {r[0] for r in fz.conn.execute("SELECT polname::text FROM pg_policy WHERE polrelid = %s", [oid])}
                if got != want:
                    problems.append(f"policies {sorted(got)}, expected {sorted(want)}")
                flags = fz.conn.execute("SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = %s",
                                        [oid]).fetchone()
                if flags != (True, True):
                    problems.append(f"row level security (enabled, forced) = {flags}")
                if not wrong and t_arg in (names[1], None) and c_arg in (names[2], None):
                    rows = {1: (values[0], 0), 2: (values[1], 0), 3: (values[0], 9)}
                    want_ids = [i for i, (t, c) in rows.items() if (not t_arg or t == values[0]) and (not c_arg or c <= 5)]
                    ids = fz.attempt(case, shown, visible_ids(keys, oid, values[0]), counted=False)
                    if ids != want_ids:
                        problems.append(f"a caller of tenant {values[0]!r}, clearance 5 sees rows {ids}, not {want_ids}")
                if unprotect:
                    fz.attempt(case, shown, lambda c: c.execute("SELECT vecguard.unprotect(%s::regclass)", [str(oid)]),
                               counted=False)
                    left = fz.conn.execute("SELECT count(*) FROM pg_policy WHERE polrelid = %s", [oid]).fetchone()[0]
                    if left:
                        problems.append(f"unprotect() left {left} policies behind")
            if problems:
                fz.fail("invariant", case, shown, "; ".join(problems))
            protect_teardown(fz.conn, pc)
            fz.conn.execute(VICTIM)  # again, should an injection have dropped it

        for i, pc in enumerate(PROTECT_CORPUS):
            one(f"protect:corpus{i}", pc, None)
        for case, rng in fz.cases():
            one(case, random_protect_case(rng), rng)
    fz.assert_clean()
