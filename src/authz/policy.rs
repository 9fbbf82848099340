//! SQL text for `vecguard.protect()` / `vecguard.unprotect()`, built as
//! plain strings so it can be reviewed and tested without a database.
//!
//! Why the SQL looks the way it does
//! ---------------------------------
//! * **Row-level security, forced.** `ENABLE` turns RLS on; `FORCE` makes
//!   it apply to the table owner too, which is usually the role the
//!   application connects as. Superusers and BYPASSRLS roles are still
//!   exempt; that is PostgreSQL's rule, not ours.
//! * **One permissive base policy plus restrictive dimensions.** With RLS
//!   on, rows are visible only if at least one PERMISSIVE policy passes, and
//!   then every RESTRICTIVE policy must pass as well. `vecguard_base` is the
//!   `USING (true)` permissive policy; each dimension (tenant, clearance,
//!   validity, access hours) is a RESTRICTIVE policy, so they combine with
//!   AND and adding a dimension can only narrow access. (A side effect: any
//!   pre-existing permissive policy on the table becomes moot, while
//!   pre-existing restrictive ones keep applying.) All are `FOR ALL`, so
//!   SELECT, INSERT, UPDATE and DELETE are covered by one policy each.
//! * **Index-friendly predicates.** Session facts are wrapped in scalar
//!   subqueries, `(SELECT vecguard.tenant_keys('integer')::integer[])`, so the planner evaluates
//!   them once per query as an InitPlan parameter. That makes
//!   `tenant = ANY ($param)` usable as an index condition (btree, and
//!   vecguard's hnsw filter), and the `::<column type>[]` cast makes the
//!   array's element type equal to the column type so the column's own
//!   btree operator class applies instead of a cross-type comparison. The
//!   cast sits *inside* the subquery: each restrictive policy is its own
//!   row-security level, and only leakproof quals above the lowest level may
//!   become index conditions; `col = ANY ($param)` is leakproof, a text-to-
//!   integer cast outside the subquery (an I/O call that can fail) is not.
//!   `tenant_keys(type)` passes on only the claim values written exactly as
//!   PostgreSQL prints a value of the column's type (`is_canonical_tenant_key`),
//!   so the cast can neither fail nor turn one tenant's name into another's.
//!   `now()` is written `pg_catalog.now()` so the function chosen when the
//!   policy is created cannot be redirected through `search_path`.
//! * **Windows as index conditions.** A validity window's open ends are NULL,
//!   and `col IS NULL OR col <= now()` is an OR no index takes as a
//!   condition. The policy writes `col OPERATOR(vecguard.<=*) (SELECT now())`
//!   instead (and `>*` for the end): the same test as one leakproof operator
//!   of the hnsw key opclasses (sql/hnsw.sql), so an authorized index with the
//!   window columns as keys tests it inside the traversal.
//! * **Validity is read-side only.** The validity policy's WITH CHECK is
//!   `true`: applying the window to writes would forbid inserting a document
//!   that becomes valid tomorrow, and, worse, forbid retiring one by setting
//!   `valid_until = now()` (the new row would fail its own check). Tenant,
//!   clearance and access-hour checks do apply to writes.
//! * **Injection.** Every identifier is double-quoted with embedded quotes
//!   doubled, every literal single-quoted with quotes doubled (and the `E''`
//!   form when backslashes are present, so the result is safe whatever
//!   `standard_conforming_strings` says). Type names cannot be quoted as a
//!   whole (`character varying(64)` is syntax, not an identifier), so they
//!   are checked against an allow-list of characters *and* a small grammar:
//!   words, quoted identifiers, dots, and numeric type modifiers only, with
//!   SQL operator keywords refused. A column called `x"); DROP TABLE t; --`
//!   therefore ends up as one harmless quoted identifier.
//!
//! The statements are returned without trailing semicolons, one per
//! element, meant to be run one by one (e.g. through SPI) in a single
//! transaction. `protect_sql` first drops any vecguard policies so that
//! calling `protect()` again with different columns replaces them.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Timelike, Utc, Weekday};
use chrono_tz::Tz;

/// Every policy name vecguard creates; `unprotect` drops exactly these.
pub const POLICY_NAMES: [&str; 5] = [
    "vecguard_base",
    "vecguard_tenant",
    "vecguard_clearance",
    "vecguard_validity",
    "vecguard_hours",
];

/// PostgreSQL truncates identifiers longer than this (NAMEDATALEN - 1).
pub const MAX_IDENT_BYTES: usize = 63;

/// `schema.name` of the protected table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QualifiedName {
    pub schema: String,
    pub name: String,
}

/// A column and its type as `format_type()` prints it ("integer", "uuid",
/// "character varying(64)", "timestamp with time zone").
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Column {
    pub name: String,
    pub type_name: String,
}

/// Weekly access window in a named time zone. `days[0]` is Monday.
/// `start`/`end` are minutes after local midnight; `end` may be 1440
/// ("24:00"). If `end < start` the window runs overnight into the next day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessHours {
    pub days: [bool; 7],
    pub start: u16,
    pub end: u16,
    pub time_zone: Tz,
}

/// What `vecguard.protect()` was asked to enforce on one table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProtectSpec {
    pub table: QualifiedName,
    pub tenant: Option<Column>,
    pub clearance: Option<Column>,
    pub valid_from: Option<Column>,
    pub valid_until: Option<Column>,
    pub access_hours: Option<AccessHours>,
}

/// Why a spec was refused; the message is meant for a SQL ERROR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    message: String,
}

impl PolicyError {
    fn new(message: impl Into<String>) -> PolicyError {
        PolicyError { message: message.into() }
    }

    /// The human-readable reason.
    #[cfg(test)]
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for PolicyError {
    // Display is the bare message so the glue can pass it to ereport as is.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PolicyError {}

// ---------------------------------------------------------------------------
// Quoting
// ---------------------------------------------------------------------------

/// Quote an identifier the way PostgreSQL's quote_ident does for the
/// unsafe case: always wrap in double quotes and double embedded quotes.
/// Quoting unconditionally also keeps upper case and keywords intact.
pub fn quote_ident(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        if ch == '"' {
            out.push('"');
        }
        out.push(ch);
    }
    out.push('"');
    out
}

/// Quote a string literal like PostgreSQL's quote_literal: single quotes
/// doubled, and if a backslash is present the `E'...'` form with doubled
/// backslashes, which reads the same with standard_conforming_strings on
/// or off.
pub fn quote_literal(s: &str) -> String {
    let has_backslash = s.contains('\\');
    let mut out = String::with_capacity(s.len() + 3);
    if has_backslash {
        out.push('E');
    }
    out.push('\'');
    for ch in s.chars() {
        if ch == '\'' || (ch == '\\' && has_backslash) {
            out.push(ch);
        }
        out.push(ch);
    }
    out.push('\'');
    out
}

// ---------------------------------------------------------------------------
// protect / unprotect
// ---------------------------------------------------------------------------

/// Build the statements that protect a table, in execution order:
/// ENABLE RLS, FORCE RLS, DROP POLICY IF EXISTS for every vecguard policy,
/// the permissive `vecguard_base`, then the restrictive `vecguard_tenant`,
/// `vecguard_clearance`, `vecguard_validity`, `vecguard_hours` for the
/// dimensions given. At least one column dimension is required.
pub fn protect_sql(spec: &ProtectSpec) -> Result<Vec<String>, PolicyError> {
    let table = qualified(&spec.table)?;
    for c in
        [&spec.tenant, &spec.clearance, &spec.valid_from, &spec.valid_until].into_iter().flatten()
    {
        check_ident(&c.name, "column name")?;
        validate_type_name(&c.type_name)?;
    }
    if spec.tenant.is_none()
        && spec.clearance.is_none()
        && spec.valid_from.is_none()
        && spec.valid_until.is_none()
    {
        return Err(PolicyError::new(
            "protect needs at least one of tenant, clearance, valid_from or valid_until columns",
        ));
    }

    let mut out = vec![
        format!("ALTER TABLE {table} ENABLE ROW LEVEL SECURITY"),
        format!("ALTER TABLE {table} FORCE ROW LEVEL SECURITY"),
    ];
    for p in POLICY_NAMES {
        out.push(drop_policy(p, &table));
    }
    out.push(format!(
        "CREATE POLICY {} ON {table} AS PERMISSIVE FOR ALL TO PUBLIC USING (true) WITH CHECK (true)",
        quote_ident("vecguard_base")
    ));

    if let Some(c) = &spec.tenant {
        // The converting cast runs inside the subquery; the outer cast to the same array
        // type (typmod dropped) is elided by the parser, and only makes `ANY` read an array
        // expression rather than the subquery form `ANY (SELECT ...)`.
        let ty = c.type_name.trim();
        if tenant_key_type(ty).is_none() {
            return Err(PolicyError::new(format!(
                "tenant column {} has type {ty}; expected one of {TENANT_TYPES}",
                quote_ident(&c.name)
            )));
        }
        let base = ty.split('(').next().unwrap_or(ty).trim();
        let expr = format!(
            "{} = ANY ((SELECT vecguard.tenant_keys({})::{}[])::{}[])",
            quote_ident(&c.name),
            quote_literal(ty),
            ty,
            base
        );
        out.push(restrictive("vecguard_tenant", &table, &expr, &expr));
    }
    if let Some(c) = &spec.clearance {
        let expr = format!("{} <= (SELECT vecguard.clearance())", quote_ident(&c.name));
        out.push(restrictive("vecguard_clearance", &table, &expr, &expr));
    }
    let mut validity = Vec::new();
    for (c, op) in [(&spec.valid_from, "<=*"), (&spec.valid_until, ">*")] {
        let Some(c) = c else { continue };
        let now = window_now(&c.type_name).ok_or_else(|| {
            PolicyError::new(format!(
                "validity column {} has type {}; expected one of {WINDOW_TYPES}",
                quote_ident(&c.name),
                c.type_name
            ))
        })?;
        validity.push(format!("{} OPERATOR(vecguard.{op}) (SELECT {now})", quote_ident(&c.name)));
    }
    if !validity.is_empty() {
        out.push(restrictive("vecguard_validity", &table, &validity.join(" AND "), "true"));
    }
    if let Some(h) = &spec.access_hours {
        let expr = format!(
            "(SELECT vecguard.access_hours_ok({}, {}, {}, {}))",
            quote_literal(&h.days_spec()),
            quote_literal(&h.start_str()),
            quote_literal(&h.end_str()),
            quote_literal(h.time_zone.name())
        );
        out.push(restrictive("vecguard_hours", &table, &expr, &expr));
    }
    Ok(out)
}

/// The validity column types protect() accepts, as format_type() prints them.
pub const WINDOW_TYPES: &str = "timestamp with time zone, timestamp without time zone, date";

/// The transaction time as a value of a validity column's type, for the window operators
/// (`x <=* y`: `x IS NULL OR x <= y`), which take two values of one type. `date <=
/// now()` and `date <= CURRENT_DATE` agree (a date lies at or before a moment exactly when
/// it lies at or before that moment's local date), as do `timestamp <= now()` and
/// `timestamp <= LOCALTIMESTAMP` (both read the session time zone) except within the hour
/// a daylight-saving change repeats. Keywords, not functions: nothing here goes through
/// `search_path`.
fn window_now(type_name: &str) -> Option<&'static str> {
    match type_name.trim() {
        "timestamp with time zone" => Some("pg_catalog.now()"),
        "timestamp without time zone" => Some("LOCALTIMESTAMP"),
        "date" => Some("CURRENT_DATE"),
        _ => None,
    }
}

/// The tenant column types protect() accepts, as format_type() prints them.
pub const TENANT_TYPES: &str = "smallint, integer, bigint, text, character varying, uuid";

/// A tenant column's type, as far as matching claim values against it is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantKeyType {
    Int {
        min: i64,
        max: i64,
    },
    /// `text`, or `character varying(n)` with its length limit.
    Text {
        max_chars: Option<usize>,
    },
    Uuid,
}

/// The key type of a tenant column, None for types protect() does not accept.
pub fn tenant_key_type(type_name: &str) -> Option<TenantKeyType> {
    let t = type_name.trim();
    Some(match t {
        "smallint" => TenantKeyType::Int { min: i16::MIN.into(), max: i16::MAX.into() },
        "integer" => TenantKeyType::Int { min: i32::MIN.into(), max: i32::MAX.into() },
        "bigint" => TenantKeyType::Int { min: i64::MIN, max: i64::MAX },
        "text" | "character varying" => TenantKeyType::Text { max_chars: None },
        "uuid" => TenantKeyType::Uuid,
        _ => {
            let n = t.strip_prefix("character varying(")?.strip_suffix(')')?;
            TenantKeyType::Text { max_chars: Some(n.trim().parse().ok()?) }
        }
    })
}

/// Whether a tenant claim value names a key of this type exactly as PostgreSQL prints it.
///
/// Claim values are strings; the policy casts them to the column's type. A cast that
/// loses information would let one claim match a tenant it does not name: `varchar(5)`
/// cuts `victim-corp` to `victi`, and `02` or ` 2` read as the integer 2. So a value is
/// used only when casting it and printing it back would give the same string; any other
/// value matches nothing (and cannot make the cast fail, which would be an error raised
/// only when some row reaches the policy).
pub fn is_canonical_tenant_key(ty: TenantKeyType, value: &str) -> bool {
    match ty {
        TenantKeyType::Int { min, max } => {
            let digits = value.strip_prefix('-').unwrap_or(value);
            let plain = !digits.is_empty()
                && digits.bytes().all(|b| b.is_ascii_digit())
                && (digits == "0" || !digits.starts_with('0'))
                && value != "-0";
            plain && value.parse::<i64>().is_ok_and(|n| (min..=max).contains(&n))
        }
        TenantKeyType::Text { max_chars } => {
            !value.contains('\0') && max_chars.is_none_or(|n| value.chars().count() <= n)
        }
        TenantKeyType::Uuid => {
            value.len() == 36
                && value.bytes().enumerate().all(|(i, b)| match i {
                    8 | 13 | 18 | 23 => b == b'-',
                    _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
                })
        }
    }
}

/// Statements that undo `protect_sql`: drop every vecguard policy (IF
/// EXISTS, so it is safe on a partly protected table), then NO FORCE and
/// DISABLE row level security. Note that DISABLE also switches off any
/// policies the table had that vecguard did not create.
pub fn unprotect_sql(table: &QualifiedName) -> Vec<String> {
    let t = format!("{}.{}", quote_ident(&table.schema), quote_ident(&table.name));
    let mut out: Vec<String> = POLICY_NAMES.iter().map(|p| drop_policy(p, &t)).collect();
    out.push(format!("ALTER TABLE {t} NO FORCE ROW LEVEL SECURITY"));
    out.push(format!("ALTER TABLE {t} DISABLE ROW LEVEL SECURITY"));
    out
}

fn drop_policy(name: &str, table: &str) -> String {
    format!("DROP POLICY IF EXISTS {} ON {table}", quote_ident(name))
}

fn restrictive(name: &str, table: &str, using: &str, check: &str) -> String {
    format!(
        "CREATE POLICY {} ON {table} AS RESTRICTIVE FOR ALL TO PUBLIC USING ({using}) WITH CHECK ({check})",
        quote_ident(name)
    )
}

// "schema"."name", after validating both parts.
fn qualified(q: &QualifiedName) -> Result<String, PolicyError> {
    check_ident(&q.schema, "schema name")?;
    check_ident(&q.name, "table name")?;
    Ok(format!("{}.{}", quote_ident(&q.schema), quote_ident(&q.name)))
}

// Identifiers are quoted, so any character is fine except NUL (which
// PostgreSQL cannot store); over-long names are refused rather than letting
// the server truncate them into possibly a different column.
fn check_ident(s: &str, what: &str) -> Result<(), PolicyError> {
    if s.is_empty() {
        return Err(PolicyError::new(format!("{what} must not be empty")));
    }
    if s.contains('\0') {
        return Err(PolicyError::new(format!("{what} must not contain NUL")));
    }
    if s.len() > MAX_IDENT_BYTES {
        return Err(PolicyError::new(format!("{what} is longer than {MAX_IDENT_BYTES} bytes")));
    }
    Ok(())
}

// Words that would let a "type name" turn into an expression.
const TYPE_DENY_WORDS: &[&str] = &[
    "all",
    "and",
    "any",
    "array",
    "as",
    "at",
    "between",
    "case",
    "cast",
    "collate",
    "create",
    "delete",
    "distinct",
    "drop",
    "else",
    "end",
    "escape",
    "except",
    "exists",
    "false",
    "from",
    "grant",
    "ilike",
    "in",
    "insert",
    "intersect",
    "is",
    "isnull",
    "like",
    "not",
    "notnull",
    "null",
    "on",
    "operator",
    "or",
    "overlaps",
    "returning",
    "select",
    "similar",
    "some",
    "table",
    "then",
    "true",
    "union",
    "update",
    "using",
    "values",
    "when",
    "where",
];

/// Check a type name as printed by `format_type()` before it is spliced
/// into a cast. Allowed characters: ASCII letters, digits, space, `_`, `.`,
/// `(`, `)`, `,`, `"`. Allowed shape: words or quoted identifiers joined by
/// spaces or dots, each optionally followed by a numeric modifier such as
/// `(64)` or `(10,2)`; SQL operator keywords are refused.
pub fn validate_type_name(t: &str) -> Result<(), PolicyError> {
    let t = t.trim();
    let bad = || {
        PolicyError::new("invalid column type name; expected a plain type such as integer, text, uuid or character varying(64)")
    };
    if t.is_empty() || t.len() > 200 {
        return Err(bad());
    }
    if !t.bytes().all(|b| {
        b.is_ascii_alphanumeric() || matches!(b, b' ' | b'_' | b'.' | b'(' | b')' | b',' | b'"')
    }) {
        return Err(bad());
    }
    #[derive(PartialEq, Clone, Copy)]
    enum Prev {
        Start,
        Name,
        Dot,
        Modifier,
    }
    let b = t.as_bytes();
    let mut i = 0usize;
    let mut prev = Prev::Start;
    while let Some(&c) = b.get(i) {
        match c {
            b' ' => i += 1,
            b'"' => {
                // quoted identifier: runs to the next lone quote; "" is an escaped quote
                let mut j = i + 1;
                let mut len = 0usize;
                loop {
                    match b.get(j) {
                        None => return Err(bad()),
                        Some(b'"') if b.get(j + 1) == Some(&b'"') => {
                            j += 2;
                            len += 1;
                        }
                        Some(b'"') => break,
                        Some(_) => {
                            j += 1;
                            len += 1;
                        }
                    }
                }
                if len == 0 {
                    return Err(bad());
                }
                i = j + 1;
                prev = Prev::Name;
            }
            b'.' => {
                if prev != Prev::Name {
                    return Err(bad());
                }
                i += 1;
                prev = Prev::Dot;
            }
            b'(' => {
                if prev != Prev::Name {
                    return Err(bad());
                }
                // numeric modifier list: ( int [, int]* )
                let mut j = i + 1;
                let mut expect_digit = true;
                loop {
                    match b.get(j) {
                        Some(b' ') => j += 1,
                        Some(d) if d.is_ascii_digit() && expect_digit => {
                            while b.get(j).is_some_and(|d| d.is_ascii_digit()) {
                                j += 1;
                            }
                            expect_digit = false;
                        }
                        Some(b',') if !expect_digit => {
                            j += 1;
                            expect_digit = true;
                        }
                        Some(b')') if !expect_digit => break,
                        _ => return Err(bad()),
                    }
                }
                i = j + 1;
                prev = Prev::Modifier;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let s = i;
                while b.get(i).is_some_and(|d| d.is_ascii_alphanumeric() || *d == b'_') {
                    i += 1;
                }
                let word = t.get(s..i).unwrap_or("");
                let lower = word.to_ascii_lowercase();
                if TYPE_DENY_WORDS.contains(&lower.as_str()) {
                    return Err(bad());
                }
                prev = Prev::Name;
            }
            _ => return Err(bad()),
        }
    }
    if prev == Prev::Dot || prev == Prev::Start {
        return Err(bad());
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Access hours
// ---------------------------------------------------------------------------

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

impl AccessHours {
    /// Canonical day list, e.g. "mon,tue,wed,thu,fri"; parses back to the same set.
    pub fn days_spec(&self) -> String {
        DAY_NAMES
            .iter()
            .zip(self.days.iter())
            .filter(|(_, on)| **on)
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Start as "HH:MM".
    pub fn start_str(&self) -> String {
        hhmm(self.start)
    }

    /// End as "HH:MM" ("24:00" for end of day).
    pub fn end_str(&self) -> String {
        hhmm(self.end)
    }
}

fn hhmm(m: u16) -> String {
    format!("{:02}:{:02}", m / 60, m % 60)
}

/// Parse the four text arguments of `vecguard.access_hours_ok` / protect():
/// days like "mon-fri", "mon,wed,sat", "sat-mon" (ranges wrap), full names
/// or "*"/"daily"; times "HH:MM" (end may be "24:00"; end before start
/// means an overnight window; equal start and end is refused); an IANA
/// time-zone name checked against chrono-tz's database.
pub fn parse_access_hours(
    days: &str,
    start: &str,
    end: &str,
    tz: &str,
) -> Result<AccessHours, PolicyError> {
    let days = parse_days(days)?;
    let start_m = parse_hhmm(start, false).ok_or_else(|| {
        PolicyError::new("access hours start must be HH:MM between 00:00 and 23:59")
    })?;
    let end_m = parse_hhmm(end, true).ok_or_else(|| {
        PolicyError::new("access hours end must be HH:MM between 00:00 and 24:00")
    })?;
    if start_m == end_m {
        return Err(PolicyError::new(
            "access hours start and end must differ; use 00:00-24:00 for the whole day",
        ));
    }
    let time_zone = Tz::from_str(tz.trim()).map_err(|_| {
        PolicyError::new(format!(
            "unknown time zone {}; use an IANA name such as Europe/Berlin or UTC",
            quote_literal(&tz.chars().take(64).collect::<String>())
        ))
    })?;
    Ok(AccessHours { days, start: start_m, end: end_m, time_zone })
}

/// True when `now_utc`, seen in the window's time zone, falls inside the
/// window. Overnight windows belong to the day they start on, so
/// "fri 22:00-06:00" admits Saturday 03:00 but not Friday 03:00.
pub fn within_hours(h: &AccessHours, now_utc: DateTime<Utc>) -> bool {
    let local = now_utc.with_timezone(&h.time_zone);
    // hour() < 24 and minute() < 60, so this fits in u16.
    let minute = (local.hour() * 60 + local.minute()) as u16;
    let today = local.weekday().num_days_from_monday() as usize;
    let yesterday = (today + 6) % 7;
    let on = |d: usize| h.days.get(d).copied().unwrap_or(false);
    if h.start < h.end {
        on(today) && minute >= h.start && minute < h.end
    } else {
        (on(today) && minute >= h.start) || (on(yesterday) && minute < h.end)
    }
}

fn parse_days(spec: &str) -> Result<[bool; 7], PolicyError> {
    let bad = || {
        PolicyError::new(
            "access hours days must be day names or ranges such as mon-fri or mon,wed,sat",
        )
    };
    let mut days = [false; 7];
    let spec = spec.trim();
    if spec == "*" || spec.eq_ignore_ascii_case("daily") {
        return Ok([true; 7]);
    }
    if spec.is_empty() {
        return Err(bad());
    }
    for item in spec.split(',') {
        let item = item.trim();
        let (a, b) = match item.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (item, item),
        };
        let a = Weekday::from_str(a).map_err(|_| bad())?;
        let b = Weekday::from_str(b).map_err(|_| bad())?;
        let mut d = a;
        // A range visits at most 7 days; the bound makes the loop obviously finite.
        for _ in 0..7 {
            if let Some(slot) = days.get_mut(d.num_days_from_monday() as usize) {
                *slot = true;
            }
            if d == b {
                break;
            }
            d = d.succ();
        }
    }
    Ok(days)
}

// "H:MM" or "HH:MM"; "24:00" only when allowed (window end).
fn parse_hhmm(s: &str, allow_24: bool) -> Option<u16> {
    let (h, m) = s.trim().split_once(':')?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return None;
    }
    if !h.bytes().all(|b| b.is_ascii_digit()) || !m.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let h: u16 = h.parse().ok()?;
    let m: u16 = m.parse().ok()?;
    if m > 59 {
        return None;
    }
    match h {
        0..=23 => Some(h * 60 + m),
        24 if allow_24 && m == 0 => Some(1440),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn col(name: &str, ty: &str) -> Option<Column> {
        Some(Column { name: name.into(), type_name: ty.into() })
    }

    fn table() -> QualifiedName {
        QualifiedName { schema: "public".into(), name: "docs".into() }
    }

    #[test]
    fn quoting_helpers() {
        assert_eq!(quote_ident("docs"), "\"docs\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_ident("x\"); DROP TABLE t; --"), "\"x\"\"); DROP TABLE t; --\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal("a\\'b"), "E'a\\\\''b'");
        assert_eq!(quote_literal(""), "''");
        assert_eq!(quote_literal("'; DROP TABLE x; --"), "'''; DROP TABLE x; --'");
    }

    #[test]
    fn full_spec_exact_sql() {
        let spec = ProtectSpec {
            table: table(),
            tenant: col("tenant_id", "uuid"),
            clearance: col("clearance", "integer"),
            valid_from: col("valid_from", "timestamp with time zone"),
            valid_until: col("valid_until", "timestamp with time zone"),
            access_hours: Some(
                parse_access_hours("mon-fri", "08:00", "18:00", "Europe/Berlin").unwrap(),
            ),
        };
        let got = protect_sql(&spec).unwrap();
        let want = vec![
            r#"ALTER TABLE "public"."docs" ENABLE ROW LEVEL SECURITY"#,
            r#"ALTER TABLE "public"."docs" FORCE ROW LEVEL SECURITY"#,
            r#"DROP POLICY IF EXISTS "vecguard_base" ON "public"."docs""#,
            r#"DROP POLICY IF EXISTS "vecguard_tenant" ON "public"."docs""#,
            r#"DROP POLICY IF EXISTS "vecguard_clearance" ON "public"."docs""#,
            r#"DROP POLICY IF EXISTS "vecguard_validity" ON "public"."docs""#,
            r#"DROP POLICY IF EXISTS "vecguard_hours" ON "public"."docs""#,
            r#"CREATE POLICY "vecguard_base" ON "public"."docs" AS PERMISSIVE FOR ALL TO PUBLIC USING (true) WITH CHECK (true)"#,
            r#"CREATE POLICY "vecguard_tenant" ON "public"."docs" AS RESTRICTIVE FOR ALL TO PUBLIC USING ("tenant_id" = ANY ((SELECT vecguard.tenant_keys('uuid')::uuid[])::uuid[])) WITH CHECK ("tenant_id" = ANY ((SELECT vecguard.tenant_keys('uuid')::uuid[])::uuid[]))"#,
            r#"CREATE POLICY "vecguard_clearance" ON "public"."docs" AS RESTRICTIVE FOR ALL TO PUBLIC USING ("clearance" <= (SELECT vecguard.clearance())) WITH CHECK ("clearance" <= (SELECT vecguard.clearance()))"#,
            r#"CREATE POLICY "vecguard_validity" ON "public"."docs" AS RESTRICTIVE FOR ALL TO PUBLIC USING ("valid_from" OPERATOR(vecguard.<=*) (SELECT pg_catalog.now()) AND "valid_until" OPERATOR(vecguard.>*) (SELECT pg_catalog.now())) WITH CHECK (true)"#,
            r#"CREATE POLICY "vecguard_hours" ON "public"."docs" AS RESTRICTIVE FOR ALL TO PUBLIC USING ((SELECT vecguard.access_hours_ok('mon,tue,wed,thu,fri', '08:00', '18:00', 'Europe/Berlin'))) WITH CHECK ((SELECT vecguard.access_hours_ok('mon,tue,wed,thu,fri', '08:00', '18:00', 'Europe/Berlin')))"#,
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn tenant_keys_must_be_written_as_postgres_prints_them() {
        let int4 = tenant_key_type("integer").unwrap();
        for ok in ["0", "2", "-7", "2147483647", "-2147483648"] {
            assert!(is_canonical_tenant_key(int4, ok), "{ok}");
        }
        for bad in ["02", " 2", "2 ", "+2", "-0", "", "-", "2147483648", "1e3", "2.0", "0x10"] {
            assert!(!is_canonical_tenant_key(int4, bad), "{bad}");
        }
        let int2 = tenant_key_type("smallint").unwrap();
        assert!(is_canonical_tenant_key(int2, "32767"));
        assert!(!is_canonical_tenant_key(int2, "32768"));
        let v5 = tenant_key_type("character varying(5)").unwrap();
        assert!(is_canonical_tenant_key(v5, "victi"));
        assert!(is_canonical_tenant_key(v5, "äöüßé"));
        assert!(!is_canonical_tenant_key(v5, "victim-corp"));
        let text = tenant_key_type("text").unwrap();
        assert!(is_canonical_tenant_key(text, " anything, 02 "));
        assert!(!is_canonical_tenant_key(text, "nul\0byte"));
        let uuid = tenant_key_type("uuid").unwrap();
        assert!(is_canonical_tenant_key(uuid, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"));
        for bad in [
            "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
            "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
            "a0eebc999c0b4ef8bb6d6bb9bd380a11",
        ] {
            assert!(!is_canonical_tenant_key(uuid, bad), "{bad}");
        }
        for refused in ["numeric", "character(4)", "date", "character varying(x)"] {
            assert_eq!(tenant_key_type(refused), None, "{refused}");
        }
        let spec =
            ProtectSpec { table: table(), tenant: col("t", "numeric"), ..Default::default() };
        assert!(protect_sql(&spec).unwrap_err().message().contains("expected one of"));
    }

    #[test]
    fn partial_specs() {
        let spec = ProtectSpec {
            table: table(),
            tenant: col("org", "character varying(64)"),
            ..Default::default()
        };
        let sql = protect_sql(&spec).unwrap();
        assert_eq!(sql.len(), 9);
        assert!(sql[8]
            .contains(r#""org" = ANY ((SELECT vecguard.tenant_keys('character varying(64)')::character varying(64)[])::character varying[])"#));
        let spec =
            ProtectSpec { table: table(), valid_until: col("until", "date"), ..Default::default() };
        let sql = protect_sql(&spec).unwrap();
        assert_eq!(
            sql.last().unwrap(),
            r#"CREATE POLICY "vecguard_validity" ON "public"."docs" AS RESTRICTIVE FOR ALL TO PUBLIC USING ("until" OPERATOR(vecguard.>*) (SELECT CURRENT_DATE)) WITH CHECK (true)"#
        );
        let spec = ProtectSpec {
            table: table(),
            valid_from: col("from", "timestamp without time zone"),
            ..Default::default()
        };
        assert!(protect_sql(&spec).unwrap().last().unwrap().contains(
            r#"USING ("from" OPERATOR(vecguard.<=*) (SELECT LOCALTIMESTAMP)) WITH CHECK (true)"#
        ));
        let spec =
            ProtectSpec { table: table(), valid_from: col("v", "interval"), ..Default::default() };
        assert!(protect_sql(&spec).unwrap_err().to_string().contains("expected one of"));
        let none = ProtectSpec {
            table: table(),
            access_hours: Some(parse_access_hours("*", "00:00", "24:00", "UTC").unwrap()),
            ..Default::default()
        };
        assert!(protect_sql(&none).is_err());
    }

    #[test]
    fn injection_in_identifiers_is_quoted() {
        let evil = "x\"); DROP TABLE t; --";
        let spec = ProtectSpec {
            table: QualifiedName {
                schema: "s\"; DROP SCHEMA public CASCADE; --".into(),
                name: evil.into(),
            },
            tenant: col(evil, "bigint"),
            clearance: col("c'l", "integer"),
            ..Default::default()
        };
        let sql = protect_sql(&spec).unwrap();
        assert_eq!(
            sql[0],
            r#"ALTER TABLE "s""; DROP SCHEMA public CASCADE; --"."x""); DROP TABLE t; --" ENABLE ROW LEVEL SECURITY"#
        );
        assert!(sql[8].contains(
            r#"USING ("x""); DROP TABLE t; --" = ANY ((SELECT vecguard.tenant_keys('bigint')::bigint[])::bigint[]))"#
        ));
        assert!(sql[9].contains(r#"USING ("c'l" <= (SELECT vecguard.clearance()))"#));
        // every double-quoted run is balanced: stripping identifiers leaves no stray quote
        for s in &sql {
            assert_eq!(s.matches('"').count() % 2, 0, "{s}");
        }
        let un = unprotect_sql(&spec.table);
        assert!(un[0].starts_with(r#"DROP POLICY IF EXISTS "vecguard_base" ON "s""; DROP SCHEMA"#));
    }

    #[test]
    fn type_name_allow_list_and_grammar() {
        for ok in [
            "integer",
            "text",
            "uuid",
            "bigint",
            "character varying(64)",
            "numeric(10,2)",
            "numeric(10, 2)",
            "timestamp(3) with time zone",
            "double precision",
            "public.\"MyType\"",
            "\"my type\"",
            "myschema.tenant_key",
            "bit varying(8)",
        ] {
            assert!(validate_type_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "integer; DROP TABLE t",
            "integer[]",
            "text' ",
            "int--",
            "int/*x*/",
            "integer) OR (true",
            "text)) OR ((true)::text",
            "integer OR true",
            "int collate \"C\"",
            "numeric(a)",
            "numeric(1,)",
            "numeric(1",
            "(1)",
            "\"unterminated",
            "\"\"",
            "a..b",
            ".a",
            "a.",
            "text::int",
            "int\nx",
            "double\tprecision",
            "int\0",
            "integer(1)(2) x",
            "é",
            "select",
            "NULL",
            "int,int",
            ")",
        ] {
            assert!(validate_type_name(bad).is_err(), "{bad:?}");
        }
        let spec = ProtectSpec {
            table: table(),
            tenant: col("t", "integer) OR (true"),
            ..Default::default()
        };
        assert!(protect_sql(&spec).is_err());
        let spec = ProtectSpec {
            table: table(),
            valid_from: col("v", "timestamp; DROP TABLE t"),
            ..Default::default()
        };
        assert!(protect_sql(&spec).is_err());
    }

    #[test]
    fn identifier_limits() {
        let long = "a".repeat(64);
        for spec in [
            ProtectSpec {
                table: QualifiedName { schema: "".into(), name: "t".into() },
                clearance: col("c", "int"),
                ..Default::default()
            },
            ProtectSpec {
                table: QualifiedName { schema: "s".into(), name: long.clone() },
                clearance: col("c", "int"),
                ..Default::default()
            },
            ProtectSpec { table: table(), clearance: col(&long, "int"), ..Default::default() },
            ProtectSpec { table: table(), clearance: col("a\0b", "int"), ..Default::default() },
            ProtectSpec { table: table(), clearance: col("", "int"), ..Default::default() },
        ] {
            assert!(protect_sql(&spec).is_err());
        }
        let ok = ProtectSpec {
            table: table(),
            clearance: col(&"a".repeat(63), "int"),
            ..Default::default()
        };
        assert!(protect_sql(&ok).is_ok());
    }

    #[test]
    fn unprotect_exact_sql() {
        assert_eq!(
            unprotect_sql(&table()),
            vec![
                r#"DROP POLICY IF EXISTS "vecguard_base" ON "public"."docs""#,
                r#"DROP POLICY IF EXISTS "vecguard_tenant" ON "public"."docs""#,
                r#"DROP POLICY IF EXISTS "vecguard_clearance" ON "public"."docs""#,
                r#"DROP POLICY IF EXISTS "vecguard_validity" ON "public"."docs""#,
                r#"DROP POLICY IF EXISTS "vecguard_hours" ON "public"."docs""#,
                r#"ALTER TABLE "public"."docs" NO FORCE ROW LEVEL SECURITY"#,
                r#"ALTER TABLE "public"."docs" DISABLE ROW LEVEL SECURITY"#,
            ]
        );
    }

    #[test]
    fn access_hours_parsing() {
        let h = parse_access_hours("mon-fri", "08:00", "18:00", "Europe/Berlin").unwrap();
        assert_eq!(h.days, [true, true, true, true, true, false, false]);
        assert_eq!((h.start, h.end), (480, 1080));
        assert_eq!(h.days_spec(), "mon,tue,wed,thu,fri");
        assert_eq!((h.start_str().as_str(), h.end_str().as_str()), ("08:00", "18:00"));
        let h = parse_access_hours(" Mon, wed ,SAT ", "8:30", "24:00", "UTC").unwrap();
        assert_eq!(h.days_spec(), "mon,wed,sat");
        assert_eq!(h.end_str(), "24:00");
        let h = parse_access_hours("sat-mon", "22:00", "06:00", "America/New_York").unwrap();
        assert_eq!(h.days_spec(), "mon,sat,sun");
        assert_eq!(parse_access_hours("daily", "00:00", "24:00", "UTC").unwrap().days, [true; 7]);
        assert_eq!(
            parse_access_hours("monday-tuesday", "00:00", "01:00", "UTC").unwrap().days_spec(),
            "mon,tue"
        );
        // round trip through the canonical strings
        let again =
            parse_access_hours(&h.days_spec(), &h.start_str(), &h.end_str(), h.time_zone.name())
                .unwrap();
        assert_eq!(again, h);
        for (d, s, e, tz) in [
            ("", "08:00", "18:00", "UTC"),
            ("funday", "08:00", "18:00", "UTC"),
            ("mon-", "08:00", "18:00", "UTC"),
            ("mon,,tue", "08:00", "18:00", "UTC"),
            ("mon", "8", "18:00", "UTC"),
            ("mon", "24:00", "18:00", "UTC"),
            ("mon", "08:60", "18:00", "UTC"),
            ("mon", "08:00", "24:01", "UTC"),
            ("mon", "-1:00", "18:00", "UTC"),
            ("mon", "08:00", "08:00", "UTC"),
            ("mon", "08:00", "18:00", "Mars/Olympus"),
            ("mon", "08:00", "18:00", "Europe/Berlin'; DROP TABLE x; --"),
            ("mon", "08:00", "18:00", ""),
        ] {
            assert!(parse_access_hours(d, s, e, tz).is_err(), "{d} {s} {e} {tz}");
        }
        let e = parse_access_hours("mon", "08:00", "18:00", "x'y").unwrap_err();
        assert!(e.message().contains("'x''y'"));
    }

    #[test]
    fn within_hours_timezones_and_overnight() {
        let h = parse_access_hours("mon-fri", "08:00", "18:00", "Europe/Berlin").unwrap();
        // 2024-01-15 is a Monday. Berlin is UTC+1 in January.
        let at = |y, mo, d, hh, mm| Utc.with_ymd_and_hms(y, mo, d, hh, mm, 0).unwrap();
        assert!(!within_hours(&h, at(2024, 1, 15, 6, 59))); // 07:59 local
        assert!(within_hours(&h, at(2024, 1, 15, 7, 0))); // 08:00 local
        assert!(within_hours(&h, at(2024, 1, 15, 16, 59))); // 17:59 local
        assert!(!within_hours(&h, at(2024, 1, 15, 17, 0))); // 18:00 local, end exclusive
        assert!(!within_hours(&h, at(2024, 1, 13, 10, 0))); // Saturday
                                                            // summer time: UTC+2
        assert!(within_hours(&h, at(2024, 7, 15, 6, 0))); // 08:00 local
                                                          // Sunday 23:30 UTC is Monday 00:30 in Berlin: day is judged locally
        let all_day = parse_access_hours("mon", "00:00", "24:00", "Europe/Berlin").unwrap();
        assert!(within_hours(&all_day, at(2024, 1, 14, 23, 30)));
        assert!(!within_hours(&all_day, at(2024, 1, 14, 22, 30)));
        // overnight window belongs to the starting day
        let night = parse_access_hours("fri", "22:00", "06:00", "UTC").unwrap();
        assert!(within_hours(&night, at(2024, 1, 19, 23, 0))); // Fri 23:00
        assert!(within_hours(&night, at(2024, 1, 20, 3, 0))); // Sat 03:00
        assert!(!within_hours(&night, at(2024, 1, 19, 3, 0))); // Fri 03:00
        assert!(!within_hours(&night, at(2024, 1, 20, 6, 0))); // Sat 06:00
        assert!(!within_hours(&night, at(2024, 1, 20, 23, 0))); // Sat 23:00
                                                                // sun -> mon wrap of "yesterday"
        let sun_night = parse_access_hours("sun", "23:00", "01:00", "UTC").unwrap();
        assert!(within_hours(&sun_night, at(2024, 1, 15, 0, 30))); // Mon 00:30
    }
}
