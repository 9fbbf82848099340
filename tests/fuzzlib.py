"""Machinery for tests/test_fuzz.py: budget and seeds, failure accounting, and the reference
models the fuzz oracles compare the server against.

A `Fuzzer` owns one connection and classifies every attempt:
  - crash: the connection breaks (a backend died) or the server log reports a terminated
    process; the fuzzer reconnects once the server has recovered;
  - hang: SQLSTATE 57014 (statement_timeout), or a statement the watchdog had to kill
    because it ignored the timeout;
  - no SQLSTATE: an error that is not a server ERROR with a SQLSTATE;
  - wrong acceptance / invariant: reported by the surface's own oracle through `fail()`.
A server ERROR with a SQLSTATE is an ordinary rejection.

Reproducing: every case draws from `random.Random(f"{seed}:{surface}:{i}")`, so
VECGUARD_FUZZ_SEED=<seed> VECGUARD_FUZZ_CASE=<surface>:<i> replays exactly one case.
"""

from __future__ import annotations

import base64
import json
import math
import os
import random
import re
import secrets
import signal
import struct
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from fractions import Fraction

import psycopg
from cryptography.hazmat.primitives.asymmetric import ec

# Whole-file budget in seconds, shared out between surfaces by test_fuzz.py.
TOTAL_SECONDS = float(os.environ.get("VECGUARD_FUZZ_SECONDS", "120"))
SEED = os.environ.get("VECGUARD_FUZZ_SEED") or secrets.token_hex(4)
REPLAY = os.environ.get("VECGUARD_FUZZ_CASE")  # "<surface>:<i>"

STATEMENT_TIMEOUT_S = 5
# An attempt runs a few statements; beyond this the backend ignores cancellation.
WATCHDOG_S = 30

VECTOR_MAX_DIM = 16000
# Lines the postmaster writes when a backend dies abnormally.
_CRASH_LINE = re.compile(r"\(PID (\d+)\) was terminated by|PANIC:")


def case_rng(surface: str, i) -> random.Random:
    return random.Random(f"{SEED}:{surface}:{i}")


def shown(value, limit: int = 300) -> str:
    """A bounded repr of a fuzz input for failure messages."""
    r = repr(value)
    return r if len(r) <= limit else f"{r[:limit]}... ({len(r)} chars)"


@dataclass
class Failure:
    kind: str
    case: str
    input: str
    detail: str


@dataclass
class Rejection:
    """A server ERROR: the normal way to refuse an input."""
    sqlstate: str
    message: str


class Watchdog:
    """Kills a backend whose attempt outlives WATCHDOG_S. statement_timeout catches slow
    statements; this catches code that never checks for interrupts, which would otherwise
    stall the whole run. os.kill works because the tests run as root or as the server's
    own user (see pgcluster.py)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._armed: tuple[int, float] | None = None
        self._stop = threading.Event()
        self.killed: set[int] = set()
        threading.Thread(target=self._run, daemon=True).start()

    def arm(self, pid: int) -> None:
        with self._lock:
            self._armed = (pid, time.monotonic() + WATCHDOG_S)

    def disarm(self) -> None:
        with self._lock:
            self._armed = None

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            with self._lock:
                if self._armed and time.monotonic() > self._armed[1]:
                    pid, self._armed = self._armed[0], None
                    self.killed.add(pid)
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass


class Fuzzer:
    """One surface's connection, time budget, counters and failures (see module doc)."""

    def __init__(self, cluster, dbname: str, surface: str, seconds: float, user: str = "postgres",
                 on_connect=None):
        self.cluster, self.dbname, self.surface, self.user = cluster, dbname, surface, user
        self.on_connect = on_connect
        self.deadline = time.monotonic() + seconds
        self.started = time.monotonic()
        self.stats = Counter(tried=0, rejected=0, accepted=0)
        self.sqlstates: Counter = Counter()
        self.internal: Counter = Counter()  # XX000 messages: Rust panics and SPI failures
        self.notes: dict[str, list[str]] = defaultdict(list)  # odd but not failing
        self.failures: list[Failure] = []
        self._log_offset = cluster.log.stat().st_size
        self._lost_pids: set[int] = set()
        self.watchdog = Watchdog()
        self.conn = self._connect()

    # -- connection -----------------------------------------------------------------------
    def _connect(self, wait_s: float = 90) -> psycopg.Connection:
        end = time.monotonic() + wait_s
        while True:
            try:
                conn = self.cluster.connect(self.dbname, self.user)
                break
            except psycopg.OperationalError:  # crash recovery still running
                if time.monotonic() > end:
                    raise
                time.sleep(0.5)
        conn.execute(f"SET statement_timeout = '{STATEMENT_TIMEOUT_S}s'")
        conn.execute("SET client_min_messages = error")
        if conn.info.parameter_status("is_superuser") == "on":
            # Thousands of expected ERRORs (some with megabyte statements) would flood the
            # server log we scan for crashes.
            conn.execute("SET log_min_messages = fatal")
            conn.execute("SET log_min_error_statement = panic")
        if self.on_connect:
            self.on_connect(conn)
        self.pid = conn.info.backend_pid
        return conn

    def __enter__(self) -> "Fuzzer":
        return self

    def __exit__(self, *exc) -> None:
        self.watchdog.stop()
        self._scan_log()
        self.conn.close()
        print(self.report())

    # -- cases ----------------------------------------------------------------------------
    def cases(self):
        """(case id, rng) pairs until the budget is spent; only the replayed case if
        VECGUARD_FUZZ_CASE names one."""
        if REPLAY:
            surface, _, i = REPLAY.rpartition(":")
            if surface == self.surface:
                yield f"{self.surface}:{i}", case_rng(self.surface, int(i))
            return
        i = 0
        while time.monotonic() < self.deadline:
            yield f"{self.surface}:{i}", case_rng(self.surface, i)
            i += 1

    def attempt(self, case: str, value, fn, counted: bool = True):
        """Runs fn(conn). Returns its result, a Rejection for a server ERROR, or None after
        a crash, hang or error without SQLSTATE (recorded as failures). Follow-up checks on an
        input already counted pass counted=False."""
        self.stats["tried"] += counted
        self.watchdog.arm(self.pid)
        try:
            return fn(self.conn)
        except psycopg.Error as e:
            return self._error(case, value, e, counted)
        finally:
            self.watchdog.disarm()

    def _error(self, case: str, value, e: psycopg.Error, counted: bool):
        if self.conn.broken or self.conn.closed:
            hung = self.pid in self.watchdog.killed
            self._lost_pids.add(self.pid)
            self.fail("hang" if hung else "crash", case, value,
                      f"connection lost (backend {self.pid}): {e}")
            self.conn = self._connect()
            return None
        if self.conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            self.conn.execute("ROLLBACK")
        if e.sqlstate == "57014":
            self.fail("hang", case, value, f"statement_timeout ({STATEMENT_TIMEOUT_S}s) expired")
            return None
        if not e.sqlstate:
            self.fail("no SQLSTATE", case, value, f"{type(e).__name__}: {e}")
            return None
        self.stats["rejected"] += counted
        self.sqlstates[e.sqlstate] += 1
        message = e.diag.message_primary or str(e)
        if e.sqlstate == "XX000":
            self.internal[message[:160]] += 1
        return Rejection(e.sqlstate, message)

    # -- results --------------------------------------------------------------------------
    def fail(self, kind: str, case: str, value, detail: str) -> None:
        self.failures.append(Failure(kind, case, shown(value), detail))

    def note(self, what: str, case: str, value) -> None:
        self.notes[what].append(f"[{case}] {shown(value, 160)}")

    def _scan_log(self) -> None:
        """Crashes the connection did not see (e.g. of a parallel worker)."""
        with open(self.cluster.log, errors="replace") as f:
            f.seek(self._log_offset)
            for line in f:
                m = _CRASH_LINE.search(line)
                if not m:
                    continue
                pid = int(m.group(1)) if m.group(1) else None
                if pid in self._lost_pids:
                    continue
                self.fail("crash", f"{self.surface}:log", "", line.strip())

    def counts(self) -> Counter:
        kinds = Counter(f.kind for f in self.failures)
        return Counter(crashes=kinds["crash"], hangs=kinds["hang"],
                       wrong=kinds["wrong acceptance"],
                       other=sum(kinds.values()) - kinds["crash"] - kinds["hang"] - kinds["wrong acceptance"])

    def report(self) -> str:
        c, s = self.counts(), self.stats
        lines = [f"[fuzz] {self.surface} (seed {SEED}, {time.monotonic() - self.started:.0f}s): "
                 f"tried {s['tried']}, rejected {s['rejected']}, accepted {s['accepted']}, "
                 f"crashes {c['crashes']}, hangs {c['hangs']}, wrong acceptances {c['wrong']}, "
                 f"other failures {c['other']}"]
        if self.sqlstates:
            lines.append("    SQLSTATEs: " + ", ".join(f"{k} x{v}" for k, v in self.sqlstates.most_common()))
        for msg, n in self.internal.most_common(5):
            lines.append(f"    XX000 x{n}: {msg}")
        for what, examples in self.notes.items():
            lines.append(f"    note: {what}: {len(examples)}, e.g. {examples[0]}")
        return "\n".join(lines)

    def assert_clean(self) -> None:
        if not self.failures:
            return
        lines = [self.report(), f"{len(self.failures)} failure(s); replay one with "
                 f"VECGUARD_FUZZ_SEED={SEED} VECGUARD_FUZZ_CASE=<case>:"]
        for f in self.failures[:25]:
            lines.append(f"  {f.kind} [{f.case}] {f.detail}\n      input: {f.input}")
        raise AssertionError("\n".join(lines))


# ---------------------------------------------------------------------------------------
# float4 and the vector formats
# ---------------------------------------------------------------------------------------

_F32_MAX_EXCL = Fraction(2) ** 128  # smallest power of two that rounds to infinity


def round_f32(q: Fraction) -> float | None:
    """|q| rounded to the nearest float4 (ties to even) as strtof does, sign kept by the
    caller; None when it rounds to infinity."""
    q = abs(q)
    if q == 0:
        return 0.0
    e = q.numerator.bit_length() - q.denominator.bit_length()
    if q < Fraction(2) ** e:
        e -= 1  # now 2^e <= q < 2^(e+1)
    ulp = Fraction(2) ** (max(e, -126) - 23)  # subnormals share the exponent of 2^-126
    r = round(q / ulp) * ulp  # round() on a Fraction rounds half to even
    return None if r >= _F32_MAX_EXCL else float(r)


# strtof's number forms, longest match first as strtof consumes them; at least one digit.
NUMBER = re.compile(r"""[+-]?(?:
      (?i:inf(?:inity)?|nan)
    | 0[xX](?=\.?[0-9a-fA-F])(?P<hint>[0-9a-fA-F]*)(?:\.(?P<hfrac>[0-9a-fA-F]*))?(?:[pP](?P<hexp>[+-]?[0-9]+))?
    | (?=\.?[0-9])(?P<int>[0-9]*)(?:\.(?P<frac>[0-9]*))?(?:[eE](?P<exp>[+-]?[0-9]+))?
)""", re.X)
VECTOR_SPACE = " \t\n\r\x0b\x0c"


def strtof_value(m: re.Match) -> float | None:
    """The float4 strtof yields for a NUMBER match; None for NaN, infinities and overflow
    (all of which pgvector refuses)."""
    tok = m.group()
    negative = tok.startswith("-")
    if m.group("hint") is not None:
        digits, frac = m.group("hint"), m.group("hfrac") or ""
        mant, exp2 = int(digits + frac or "0", 16), int(m.group("hexp") or 0) - 4 * len(frac)
        magnitude = mant.bit_length() + exp2  # value < 2^magnitude
        bounds = (mant == 0 or magnitude < -151, magnitude > 129)
        exact = lambda: Fraction(mant) * Fraction(2) ** exp2  # noqa: E731
    elif m.group("int") is not None:
        digits, frac = m.group("int"), m.group("frac") or ""
        mant, exp10 = int(digits + frac or "0"), int(m.group("exp") or 0) - len(frac)
        magnitude = len(str(mant)) + exp10  # value < 10^magnitude
        bounds = (mant == 0 or magnitude < -46, magnitude > 40)
        exact = lambda: Fraction(mant) * Fraction(10) ** exp10  # noqa: E731
    else:
        return None  # inf, infinity, nan
    # Exponents can have thousands of digits: decide tiny and huge values without Fractions.
    if bounds[0]:
        v = 0.0
    elif bounds[1]:
        return None
    else:
        body = tok.lstrip("+-")
        v = _via_double(float.fromhex(body) if m.group("hint") is not None else float(body))
        if v is False:
            v = round_f32(exact())
        if v is None:
            return None
    return -v if negative else v


def _via_double(d: float):
    """float4 rounding of a value whose nearest double is d (correctly rounded, e.g. by
    float()). Exact unless d sits on a float4 midpoint, where rounding twice can differ
    from rounding once: then False, and the caller rounds the exact value."""
    try:
        f = struct.unpack(">f", struct.pack(">f", d))[0]
    except OverflowError:
        return False
    if f == d:
        return f
    bits = struct.unpack(">I", struct.pack(">f", f))[0]
    other = struct.unpack(">f", struct.pack(">I", bits + 1 if abs(d) > abs(f) else bits - 1))[0]
    return False if d == (f + other) / 2 else f


def parse_vector_text(s: str, typmod: int = -1) -> list[float] | None:
    """pgvector's vector_in as a reference: the values, or None when it must be rejected."""
    def skip(i):
        while i < len(s) and s[i] in VECTOR_SPACE:
            i += 1
        return i

    i = skip(0)
    if not s.startswith("[", i):
        return None
    i += 1
    out = []
    while True:
        m = NUMBER.match(s, skip(i))
        if not m:
            return None
        v = strtof_value(m)
        if v is None:
            return None
        out.append(v)
        i = skip(m.end())
        if s.startswith(",", i):
            i += 1
        elif s.startswith("]", i):
            i += 1
            break
        else:
            return None
    if skip(i) != len(s) or not 1 <= len(out) <= VECTOR_MAX_DIM:
        return None
    if typmod != -1 and typmod != len(out):
        return None
    return out


def vector_binary(values) -> bytes:
    """The binary send format: int16 dim, int16 unused, big-endian float4s."""
    return struct.pack(f">hh{len(values)}f", len(values), 0, *values)


def decode_vector_binary(b: bytes, typmod: int = -1) -> bytes | None:
    """The canonical value vector_recv must accept `b` as (b itself), or None."""
    if len(b) < 4:
        return None
    dim, unused = struct.unpack(">hh", b[:4])
    if not 1 <= dim <= VECTOR_MAX_DIM or unused != 0 or (typmod != -1 and typmod != dim):
        return None
    if len(b) != 4 + 4 * dim:  # fewer is a short message, more is unconsumed data
        return None
    if not all(math.isfinite(v) for v in struct.unpack(f">{dim}f", b[4:])):
        return None
    return b


def vector_problems(send: bytes, column_size: int) -> list[str]:
    """What is wrong with a stored vector, from vector_send(v) and pg_column_size(v)."""
    dim = struct.unpack(">h", send[:2])[0]
    problems = []
    if not 1 <= dim <= VECTOR_MAX_DIM:
        problems.append(f"dims {dim} outside 1..{VECTOR_MAX_DIM}")
    # pg_column_size counts a 4-byte varlena header in memory, a 1-byte one for short values
    # read from a table, none for values TOASTed out of line (STORAGE external).
    if column_size - 4 * max(dim, 0) not in (8, 5, 4):
        problems.append(f"datum is {column_size} bytes but its header says {dim} dims")
    values = struct.unpack(f">{(len(send) - 4) // 4}f", send[4:])
    if not all(math.isfinite(v) for v in values):
        problems.append("holds NaN or infinity")
    return problems


# ---------------------------------------------------------------------------------------
# JWT reference: what vecguard may accept
# ---------------------------------------------------------------------------------------

# Rust's str::trim strips Unicode White_Space.
RUST_WHITESPACE = ("\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200b)))
                   + "\u2028\u2029\u202f\u205f\u3000")
MAX_TOKEN_BYTES = 16 * 1024
_B64URL = re.compile(r"[A-Za-z0-9_-]*\Z")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(seg: str) -> bytes | None:
    """Lenient on the unused bits of the last character: two spellings of the same bytes
    carry the same signature, so accepting either is not a forgery."""
    if not _B64URL.match(seg) or len(seg) % 4 == 1:
        return None
    return base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4))


def _json(data: bytes):
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None


def _numeric_date(v, round_up: bool):
    """A NumericDate as vecguard reads it (integers within i64, finite floats below 9.2e18)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    if isinstance(v, int):
        return v if -2**63 <= v < 2**63 else None
    if math.isfinite(v) and abs(v) < 9.2e18:
        return math.ceil(v) if round_up else math.floor(v)
    return None


def jwt_verdict(token: str, keys: dict, revoked: set, now: float) -> tuple[bool, dict | None, str]:
    """(may vecguard accept it, its claims, why not). `keys` maps kid -> (alg, verify) where
    verify(signing_input, signature) -> bool. Deliberately permissive where rejecting is
    harmless (JSON strictness, header members jsonwebtoken dislikes) and exact where
    accepting would be a hole: structure, alg pinning, kid, signature, exp/nbf."""
    if len(token.encode()) > MAX_TOKEN_BYTES:
        return False, None, "too large"
    parts = token.strip(RUST_WHITESPACE).split(".")
    if len(parts) != 3 or not parts[0] or not parts[1] or not parts[2]:
        return False, None, "not three non-empty segments"
    raw = [b64url_decode(p) for p in parts]
    if any(r is None for r in raw):
        return False, None, "not base64url"
    header = _json(raw[0])
    if not isinstance(header, dict):
        return False, None, "header not an object"
    kid = header.get("kid")
    if "crit" in header or "b64" in header:
        return False, None, "crit/b64 header"
    if not isinstance(kid, str) or not kid or kid in revoked or kid not in keys:
        return False, None, "kid not registered"
    alg, verify = keys[kid]
    if header.get("alg") != alg:
        return False, None, "alg differs from the key's"
    if not verify(f"{parts[0]}.{parts[1]}".encode(), raw[2]):
        return False, None, "signature does not verify"
    claims = _json(raw[1])
    if not isinstance(claims, dict):
        return False, None, "payload not an object"
    exp = _numeric_date(claims.get("exp"), round_up=False)
    nbf = _numeric_date(claims["nbf"], round_up=True) if "nbf" in claims else None
    if exp is None or ("nbf" in claims and nbf is None):
        return False, None, "exp/nbf missing or not a number"
    if "iat" in claims and _numeric_date(claims["iat"], round_up=False) is None:
        return False, None, "iat not a number"
    if any(claims.get(k) is not None and not isinstance(claims[k], str) for k in ("sub", "jti", "iss")):
        return False, None, "sub/jti/iss not a string"
    # The server's clock is the statement's start: give 5 s either way.
    if exp + 5 <= now or (nbf is not None and nbf - 5 > now):
        return False, None, "outside exp/nbf"
    return True, claims, ""


def _scalar_tenant(v) -> str | None:
    if isinstance(v, str):
        # a text value cannot hold NUL: such a claim is void, never cut short
        return v if v and "\x00" not in v else None
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return str(v) if -2**63 <= v < 2**64 else None
    if isinstance(v, float) and math.isfinite(v) and v == int(v) and abs(v) <= 2**53:
        return str(int(v))
    return None


def ref_claims(claims: dict) -> tuple:
    """(tenant, tenants, clearance, subject) as vecguard's claim functions must report them
    for these verified claims (default claim names)."""
    t = claims.get("tenant_id")
    if isinstance(t, list):
        items = [_scalar_tenant(x) for x in t]
        tenants = None if not t or None in items else list(dict.fromkeys(items))
    else:
        one = _scalar_tenant(t)
        tenants = None if one is None else [one]
    tenant = tenants[0] if tenants and len(tenants) == 1 else None
    c = claims.get("clearance")
    clearance = c if isinstance(c, int) and not isinstance(c, bool) and -2**31 <= c < 2**31 else None
    return tenant, tenants, clearance, _scalar_tenant(claims.get("sub"))


# ---------------------------------------------------------------------------------------
# JWK reference: what add_jwks must refuse
# ---------------------------------------------------------------------------------------

_ENC_ALG_PREFIXES = ("RSA-OAEP", "RSA1_5", "ECDH-ES", "A128", "A192", "A256", "PBES2", "dir")
_FAMILY_ALGS = {
    "RSA": {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"},
    "EC": {"ES256", "ES384"},
    "OKP": {"EdDSA"},
    "oct": {"HS256", "HS384", "HS512"},
}
_EC_SIZE = {("ES256", "P-256"): 32, ("ES384", "P-384"): 48}
_PRIVATE = ("d", "p", "q", "dp", "dq", "qi", "oth")


def jwk_is_encryption(k) -> bool:
    """Entries add_jwks skips: "use":"enc" or a JWE key-management alg."""
    if not isinstance(k, dict):
        return False
    alg = k.get("alg")
    return k.get("use") == "enc" or (isinstance(alg, str) and alg.startswith(_ENC_ALG_PREFIXES))


def _jwk_bytes(k: dict, name: str) -> bytes | None:
    v = k.get(name)
    return b64url_decode(v.rstrip("=")) if isinstance(v, str) else None


def jwk_expected_alg(k) -> str | None:
    """The alg a signature JWK is registered under, or None if add_jwks must refuse it.
    Only properties whose violation would weaken verification are checked exactly."""
    if not isinstance(k, dict):
        return None
    kid, kty, crv, alg = k.get("kid"), k.get("kty"), k.get("crv"), k.get("alg")
    if not isinstance(kid, str) or not kid or len(kid.encode()) > 256:
        return None
    if any(ord(ch) < 0x20 or 0x7f <= ord(ch) <= 0x9f for ch in kid):
        return None
    if not all(isinstance(v, str) for v in (kty, crv or "", alg or "")):
        return None
    if kty not in _FAMILY_ALGS or ("use" in k and k["use"] != "sig"):
        return None
    if kty != "oct" and any(p in k for p in _PRIVATE):
        return None
    if alg is None:
        alg = {"RSA": "RS256", "oct": "HS256"}.get(kty) or {
            ("EC", "P-256"): "ES256", ("EC", "P-384"): "ES384", ("OKP", "Ed25519"): "EdDSA"}.get((kty, crv))
    if alg not in _FAMILY_ALGS[kty]:
        return None
    if kty == "RSA":
        n, e = _jwk_bytes(k, "n"), _jwk_bytes(k, "e")
        if n is None or e is None:
            return None
        n, e = int.from_bytes(n, "big"), int.from_bytes(e, "big")
        # e = 1 makes the padded hash its own signature: anyone could sign.
        if n.bit_length() < 2048 or n % 2 == 0 or e < 3 or e % 2 == 0:
            return None
    elif kty == "EC":
        size = _EC_SIZE.get((alg, crv))
        x, y = _jwk_bytes(k, "x"), _jwk_bytes(k, "y")
        if size is None or x is None or y is None or len(x) != size or len(y) != size:
            return None
        try:
            curve = ec.SECP256R1() if crv == "P-256" else ec.SECP384R1()
            ec.EllipticCurvePublicNumbers(int.from_bytes(x, "big"), int.from_bytes(y, "big"), curve).public_key()
        except ValueError:  # not a point on the curve
            return None
    elif kty == "OKP":
        x = _jwk_bytes(k, "x")
        if crv != "Ed25519" or x is None or len(x) != 32:
            return None
    else:
        key = _jwk_bytes(k, "k")
        if key is None or len(key) < 32:
            return None
    return alg
