"""docs/reference.md against a live cluster: every object of the extension and every
`vecguard.*` / `hnsw.*` setting is written there, with the settings' real type, default,
context and range, and every SQLSTATE the source raises has a row.

What counts as "written there" (the doc's conventions, stated once at its top):
- functions and aggregates: a code span `name(identity arguments)` as `\\df` prints them,
  schema-qualified outside the extension's own schema; `DEFAULT ...` clauses are ignored;
- operators: a code span `lefttype op righttype` (`vector <-> vector`; `\\|` for a pipe);
- types, access methods, operator families, schemas, tables (`vecguard.keys`) and event
  triggers: a code span with the name;
- operator classes: a row of a table with an "Operator class" column, whose "Access
  method", "Type" and "Default" (yes/no) cells match the catalog;
- casts: a row of a table with "From", "To" and "Context" columns;
- settings: a row of the table with a "Setting" column, whose Type, Default (first code
  span; `''` for empty), "Who may set it" (pg_settings.context) and Range (`min..max`, or
  the enum values joined by ", ") cells match pg_settings.
Rows of those tables that name nothing in the catalog fail too, so the doc cannot keep
describing something that is gone. Objects of a kind the test does not know fail, naming
their catalog, so a new kind of object cannot slip through.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from pgcluster import Cluster  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "reference.md"

# Settings defined with GUC_NO_SHOW_ALL: absent from pg_settings, so listed here.
HIDDEN_SETTINGS = ["vecguard.jwt"]
# `cargo pgrx test` builds add their #[pg_test] functions in this schema; release builds
# have no such schema.
PG_TEST_SCHEMA = "tests"

CAST_CONTEXT = {"i": "implicit", "a": "assignment", "e": "explicit"}


# --------------------------------------------------------------------------- the document

def _split_row(line: str) -> list[str]:
    """Cells of a markdown table row; `\\|` is a pipe inside a cell."""
    cells = re.split(r"(?<!\\)\|", line.strip())
    return [c.strip().replace("\\|", "|") for c in cells[1:-1]]


def tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """Every markdown table as (header cells, body rows)."""
    out = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].lstrip().startswith("|") and i + 1 < len(lines) \
                and re.fullmatch(r"\s*\|[\s:|-]+\|\s*", lines[i + 1]):
            header = _split_row(lines[i])
            body = []
            i += 2
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                body.append(_split_row(lines[i]))
                i += 1
            out.append((header, body))
        else:
            i += 1
    return out


def spans(text: str) -> list[str]:
    """Contents of code spans, with `\\|` read as a pipe."""
    return [s.replace("\\|", "|") for s in re.findall(r"`([^`\n]+)`", text)]


def first_span(cell: str) -> str | None:
    found = spans(cell)
    return found[0] if found else None


def _split_args(args: str) -> list[str]:
    parts, depth, quote, cur = [], 0, False, ""
    for ch in args:
        if ch == "'":
            quote = not quote
        elif not quote and ch == "(":
            depth += 1
        elif not quote and ch == ")":
            depth -= 1
        if ch == "," and depth == 0 and not quote:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def signature(text: str) -> str | None:
    """`name(arg, ...)` with whitespace normalised and DEFAULT clauses dropped."""
    m = re.fullmatch(r"\s*([\w.]+)\s*\((.*)\)\s*", text)
    if not m:
        return None
    args = [re.sub(r"\s+DEFAULT\s+.*$", "", a, flags=re.I | re.S) for a in _split_args(m[2])]
    return f"{m[1]}(" + ", ".join(" ".join(a.split()) for a in args) + ")"


def table_rows(doc: str, column: str) -> list[dict[str, str]]:
    """Rows (as header -> cell) of every table that has `column`."""
    rows = []
    for header, body in tables(doc):
        if column in header:
            rows += [dict(zip(header, r)) for r in body]
    return rows


# --------------------------------------------------------------------------- the catalog

def catalog(conn) -> dict:
    """The extension's objects and settings, as the checks below compare them."""
    q = lambda sql, *a: conn.execute(sql, a or None).fetchall()  # noqa: E731
    ext_oid, ext_schema = q("SELECT e.oid, n.nspname FROM pg_extension e "
                            "JOIN pg_namespace n ON n.oid = e.extnamespace "
                            "WHERE e.extname = 'vecguard'")[0]
    members = q("SELECT classid::regclass::text, objid FROM pg_depend "
                "WHERE refclassid = 'pg_extension'::regclass AND refobjid = %s "
                "AND deptype = 'e'", ext_oid)
    by_class: dict[str, list] = {}
    for cls, oid in members:
        by_class.setdefault(cls, []).append(oid)

    def rows(sql, cls):
        oids = by_class.pop(cls, [])
        return q(sql, oids) if oids else []

    def qualify(schema, name):
        return name if schema == ext_schema else f"{schema}.{name}"

    test_schema = [n for (n,) in q("SELECT nspname FROM pg_namespace WHERE nspname = %s",
                                   PG_TEST_SCHEMA)]
    cat = {
        "functions": [
            (qualify(s, n), signature(f"{qualify(s, n)}({a})"), kind)
            for s, n, a, kind in rows(
                "SELECT n.nspname, p.proname, pg_get_function_identity_arguments(p.oid), "
                "p.prokind FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                "WHERE p.oid = ANY(%s::oid[])", "pg_proc")
            if s not in test_schema
        ],
        "operators": [
            f"{l} {n} {r}" if l else f"{n} {r}"
            for n, l, r in rows(
                "SELECT oprname, CASE WHEN oprleft <> 0 THEN format_type(oprleft, NULL) END, "
                "format_type(oprright, NULL) FROM pg_operator WHERE oid = ANY(%s::oid[])",
                "pg_operator")
        ],
        "opclasses": rows(
            "SELECT c.opcname, a.amname, format_type(c.opcintype, NULL), c.opcdefault "
            "FROM pg_opclass c JOIN pg_am a ON a.oid = c.opcmethod WHERE c.oid = ANY(%s::oid[])",
            "pg_opclass"),
        "opfamilies": [n for (n,) in rows(
            "SELECT opfname FROM pg_opfamily WHERE oid = ANY(%s::oid[])", "pg_opfamily")],
        "access methods": [n for (n,) in rows(
            "SELECT amname FROM pg_am WHERE oid = ANY(%s::oid[])", "pg_am")],
        "casts": rows(
            "SELECT format_type(castsource, NULL), format_type(casttarget, NULL), castcontext "
            "FROM pg_cast WHERE oid = ANY(%s::oid[])", "pg_cast"),
        "types": [n for (n,) in rows(
            # PostgreSQL 17+ also records the array types (vector[], ...) as members of the
            # extension; they come with their element types and are not documented apart.
            "SELECT format_type(oid, NULL) FROM pg_type WHERE oid = ANY(%s::oid[]) "
            "AND NOT (typcategory = 'A' AND typelem <> 0)", "pg_type")],
        "schemas": [n for (n,) in rows(
            "SELECT nspname FROM pg_namespace WHERE oid = ANY(%s::oid[])", "pg_namespace")
            if n != PG_TEST_SCHEMA],
        "tables": [qualify(s, n) for s, n in rows(
            "SELECT n.nspname, c.relname FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = ANY(%s::oid[])", "pg_class")],
        "event triggers": [n for (n,) in rows(
            "SELECT evtname FROM pg_event_trigger WHERE oid = ANY(%s::oid[])", "pg_event_trigger")],
        "settings": q(
            "SELECT name, vartype, boot_val, context, min_val, max_val, enumvals "
            "FROM pg_settings WHERE name LIKE 'vecguard.%' OR name LIKE 'hnsw.%' "
            "ORDER BY name"),
        "hidden settings": [(n, q("SELECT current_setting(%s)", n)[0][0])
                            for n in HIDDEN_SETTINGS],
    }
    # Catalogs the checks do not know: every object must be compared with the doc.
    cat["unknown"] = sorted(by_class.items())
    return cat


# --------------------------------------------------------------------------- the checks

def problems(doc: str, cat: dict) -> list[str]:
    """Everything the document misses or gets wrong about the catalog."""
    out = []
    all_spans = spans(doc)
    span_set = {" ".join(s.split()) for s in all_spans}
    signatures = {signature(s) for s in all_spans} - {None}

    for cls, oids in cat["unknown"]:
        out.append(f"{len(oids)} extension object(s) in {cls}: teach tests/test_reference.py "
                   "and docs/reference.md about them")
    for name, sig, kind in cat["functions"]:
        if sig not in signatures:
            what = "aggregate" if kind == "a" else "function"
            out.append(f"{what} `{sig}` is not in docs/reference.md")
    for op in cat["operators"]:
        if op not in span_set:
            out.append(f"operator `{op}` is not in docs/reference.md")
    for kind in ("types", "access methods", "opfamilies", "schemas", "tables",
                 "event triggers"):
        for name in cat[kind]:
            if name not in span_set:
                out.append(f"{kind[:-1] if kind != 'opfamilies' else 'operator family'} "
                           f"`{name}` is not in docs/reference.md")

    documented = {first_span(r.get("Operator class", "")): r
                  for r in table_rows(doc, "Operator class")}
    for name, am, typ, default in cat["opclasses"]:
        row = documented.pop(name, None)
        if row is None:
            out.append(f"operator class `{name}` ({am}) has no row in docs/reference.md")
            continue
        want = {"Access method": am, "Type": typ}
        for col, value in want.items():
            if first_span(row.get(col, "")) != value:
                out.append(f"operator class `{name}`: {col} should be `{value}`")
        if row.get("Default", "").split(" ")[0] != ("yes" if default else "no"):
            out.append(f"operator class `{name}`: Default should be "
                       f"{'yes' if default else 'no'}")
    out += [f"operator class `{n}` is documented but does not exist" for n in documented]

    casts = {(first_span(r.get("From", "")), first_span(r.get("To", ""))): r
             for r in table_rows(doc, "From") if "To" in r}
    for src, dst, ctx in cat["casts"]:
        row = casts.pop((src, dst), None)
        if row is None:
            out.append(f"cast from `{src}` to `{dst}` has no row in docs/reference.md")
        elif row.get("Context", "").split(" ")[0] != CAST_CONTEXT[ctx]:
            out.append(f"cast from `{src}` to `{dst}`: Context should be {CAST_CONTEXT[ctx]}")
    out += [f"cast from `{s}` to `{d}` is documented but does not exist" for s, d in casts]

    settings = {first_span(r.get("Setting", "")): r for r in table_rows(doc, "Setting")}
    for name, vartype, boot, context, lo, hi, enumvals in cat["settings"]:
        row = settings.pop(name, None)
        if row is None:
            out.append(f"setting `{name}` has no row in docs/reference.md")
            continue
        default = first_span(row.get("Default", ""))
        if default != (boot or "''"):
            out.append(f"setting `{name}`: Default is {default!r} in the doc, "
                       f"boot_val {boot!r} in pg_settings")
        if row.get("Type", "") != vartype:
            out.append(f"setting `{name}`: Type should be {vartype}")
        if first_span(row.get("Who may set it", "")) != context:
            out.append(f"setting `{name}`: who may set it should be `{context}`")
        if vartype in ("integer", "real"):
            want = f"{lo}..{hi}"
        elif vartype == "enum":
            want = ", ".join(enumvals)
        else:
            want = None
        got = first_span(row.get("Range", ""))
        if want is not None and (got or "").replace(" ", "") != want.replace(" ", ""):
            out.append(f"setting `{name}`: Range is {got!r} in the doc, `{want}` in pg_settings")
    for name, value in cat["hidden settings"]:
        row = settings.pop(name, None)
        if row is None:
            out.append(f"setting `{name}` has no row in docs/reference.md")
        elif first_span(row.get("Default", "")) != (value if value != "" else "''"):
            out.append(f"setting `{name}`: Default should be `{value or chr(39) * 2}`")
    out += [f"setting `{n}` is documented but does not exist" for n in settings]
    return out


def raised_sqlstates() -> dict[str, str]:
    """SQLSTATE -> ERRCODE name of every errcode named in src/ (pgrx's error! is XX000)."""
    pg_config = os.environ.get("PG_CONFIG", "/usr/bin/pg_config")
    inc = subprocess.run([pg_config, "--includedir-server"], check=True, capture_output=True,
                         text=True).stdout.strip()
    header = Path(inc) / "utils" / "errcodes.h"
    if not header.exists():
        pytest.skip(f"{header} is missing (server headers not installed)")
    codes = {
        m[1]: "".join(m[2].replace("'", "").split(","))
        for m in re.finditer(r"#define\s+(ERRCODE_\w+)\s+MAKE_SQLSTATE\(([^)]*)\)",
                             header.read_text())
    }
    used = {}
    for path in (ROOT / "src").rglob("*.rs"):
        text = path.read_text()
        for name in re.findall(r"\b(ERRCODE_[A-Z0-9_]+)", text):
            used[codes[name]] = name
        if re.search(r"\berror!\(", text):
            used.setdefault("XX000", "ERRCODE_INTERNAL_ERROR")
    return used


# --------------------------------------------------------------------------- the tests

@pytest.fixture(scope="module")
def fresh_cluster():
    c = Cluster(conf={"shared_preload_libraries": "'vecguard'"}).init().start()
    try:
        c.sql("CREATE EXTENSION vecguard")
        yield c
    finally:
        c.destroy()


@pytest.fixture(scope="module")
def cat(fresh_cluster):
    with fresh_cluster.connect() as conn:
        return catalog(conn)


def test_reference_covers_every_object_and_setting(cat):
    found = problems(REFERENCE.read_text(), cat)
    assert not found, "docs/reference.md is out of date:\n  " + "\n  ".join(found)


def test_catalog_is_what_the_checks_expect(cat):
    # Guards the test itself: a query that silently found nothing would pass any doc.
    assert len(cat["functions"]) >= 60
    assert "vector <-> vector" in cat["operators"]
    assert any(n == "vector_l2_ops" for n, *_ in cat["opclasses"])
    assert ("real[]", "vector", "a") in [tuple(c) for c in cat["casts"]]
    assert "hnsw" in cat["access methods"] and "vector" in cat["types"]
    names = [s[0] for s in cat["settings"]]
    assert "hnsw.ef_search" in names and "vecguard.audit" in names


def test_checks_catch_a_missing_or_stale_entry(cat):
    doc = REFERENCE.read_text()
    # Each edit removes (every mention of) or falsifies one entry; the checks must name it.
    edits = [
        ("| `vector <-> vector` |", "| `vector <?> vector` |", "operator `vector <-> vector`"),
        ("`subvector(vector, integer, integer)`", "`subvector(vector, integer)`",
         "function `subvector(vector, integer, integer)`"),
        ("`avg(vector)`", "`average(vector)`", "aggregate `avg(vector)`"),
        ("| `hnsw.ef_search` | integer | `40` |", "| `hnsw.ef_search` | integer | `41` |",
         "setting `hnsw.ef_search`: Default"),
        ("| `vecguard.audit_max_size` | integer | `65536` (kB, 64 MB) | `sighup` |",
         "| `vecguard.audit_max_size` | integer | `65536` (kB, 64 MB) | `superuser` |",
         "setting `vecguard.audit_max_size`: who may set it"),
        ("| `vector_ip_ops` | `hnsw` | `vector` | no |", "| `vector_ip_ops` | `hnsw` | `vector` | yes |",
         "operator class `vector_ip_ops`: Default"),
        ("| `numeric[]` | `vector` | assignment |", "| `numeric[]` | `vector` | implicit |",
         "cast from `numeric[]` to `vector`"),
    ]
    for old, new, expected in edits:
        assert old in doc, old
        found = problems(doc.replace(old, new), cat)
        assert any(p.startswith(expected) for p in found), (expected, found)
    # An object the doc has never heard of, and a doc row for a setting that is gone.
    extra = dict(cat, settings=list(cat["settings"]) + [
        ("hnsw.new_knob", "bool", "off", "user", None, None, None)])
    assert "setting `hnsw.new_knob` has no row in docs/reference.md" in problems(doc, extra)
    fewer = dict(cat, settings=[s for s in cat["settings"] if s[0] != "hnsw.max_scan_tuples"])
    assert "setting `hnsw.max_scan_tuples` is documented but does not exist" in problems(doc, fewer)
    unknown = dict(cat, unknown=[("pg_ts_config", [1])])
    assert any("pg_ts_config" in p for p in problems(doc, unknown))


def test_reference_lists_every_sqlstate_the_source_raises():
    rows = table_rows(REFERENCE.read_text(), "SQLSTATE")
    documented = {first_span(r["SQLSTATE"]) for r in rows}
    missing = {code: name for code, name in raised_sqlstates().items()
               if code not in documented}
    assert not missing, f"SQLSTATEs raised in src/ but not in docs/reference.md: {missing}"
