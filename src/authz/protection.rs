//! Which tables vecguard.protect() protects, and keeping them protected.
//!
//! `protect()` writes row level security on a table (SQL from the pure `policy` module)
//! and on each of its partitions and inheritance children, and records in
//! `vecguard.protected` the arguments it was given and the state it left
//! (`vecguard.protection_state(table)`: RLS on, forced, and the text of each vecguard
//! policy). The event trigger `vecguard_ddl_guard` calls `enforce()` after every DDL
//! command:
//! * a partition or child created or attached later is protected like its parent, in the
//!   same statement;
//! * a change of a protected table's row level security (ALTER/DROP POLICY on a vecguard
//!   policy, DISABLE or NO FORCE ROW LEVEL SECURITY) by a role that is not a superuser is
//!   refused, and recorded in the audit log; a superuser's is recorded, and
//!   `vecguard.check_roles()` reports the table until protect() or unprotect() is run
//!   again. A table's owner is often the application's own role: without this, one SQL
//!   injection could switch tenancy off unseen.
//!
//! The registry is written as its owner (the role that created the extension), so the
//! roles that own protected tables cannot edit it.

use std::cell::Cell;

use pgrx::prelude::*;
use pgrx::{pg_sys, PgRelation};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::policy::{self, Column, ProtectSpec, QualifiedName};
use super::{events, identity};
use crate::error::{fail, fail_with_hint};

/// The arguments of one protect() call, kept to protect later children the same way.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct ProtectArgs {
    pub tenant: Option<String>,
    pub clearance: Option<String>,
    pub valid_from: Option<String>,
    pub valid_until: Option<String>,
    pub hours_days: Option<String>,
    pub hours_start: Option<String>,
    pub hours_end: Option<String>,
    pub hours_tz: Option<String>,
}

thread_local! {
    /// True while this backend runs protect()/unprotect() DDL itself: the event trigger
    /// then has nothing to check (the state is recorded when the call finishes).
    static BUSY: Cell<bool> = const { Cell::new(false) };
}

/// Sets BUSY for its lifetime, including while an ERROR unwinds through it.
struct Busy(bool);

impl Busy {
    fn enter() -> Busy {
        Busy(BUSY.with(|b| b.replace(true)))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        BUSY.with(|b| b.set(self.0));
    }
}

fn spi_err(e: pgrx::spi::Error) -> ! {
    ereport!(ERROR, PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, format!("vecguard: SPI failure: {e}"));
}

const INT_TYPES: [&str; 3] = ["smallint", "integer", "bigint"];
const TIME_TYPES: [&str; 3] = ["timestamp with time zone", "timestamp without time zone", "date"];

// Column with its type as format_type() prints it; 42703 when absent.
fn column(rel: &TableInfo, name: Option<&str>, allowed: &[&str], what: &str) -> Option<Column> {
    let name = name?;
    let ty: Option<String> = Spi::get_one_with_args(
        "SELECT pg_catalog.format_type(atttypid, atttypmod) FROM pg_catalog.pg_attribute \
         WHERE attrelid OPERATOR(pg_catalog.=) $1 AND attname OPERATOR(pg_catalog.=) $2::pg_catalog.name \
         AND attnum OPERATOR(pg_catalog.>) 0 AND NOT attisdropped",
        &[rel.oid.into(), name.into()],
    )
    .unwrap_or(None);
    let Some(ty) = ty else {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
            format!(
                "vecguard: column {} of relation {} does not exist",
                policy::quote_ident(name),
                policy::quote_ident(&rel.name.name)
            )
        );
    };
    if !allowed.is_empty() && !allowed.contains(&ty.as_str()) {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
            format!(
                "vecguard: {what} column {} has type {ty}; expected one of {}",
                policy::quote_ident(name),
                allowed.join(", ")
            )
        );
    }
    let deterministic: Option<bool> = Spi::get_one_with_args(
        "SELECT c.collisdeterministic FROM pg_catalog.pg_attribute a \
         JOIN pg_catalog.pg_collation c ON c.oid OPERATOR(pg_catalog.=) a.attcollation \
         WHERE a.attrelid OPERATOR(pg_catalog.=) $1 AND a.attname OPERATOR(pg_catalog.=) $2::pg_catalog.name",
        &[rel.oid.into(), name.into()],
    )
    .unwrap_or(None);
    if deterministic == Some(false) {
        // Such a collation makes distinct strings equal ('A' = 'a'), so two tenant names
        // would share rows, and an index that compares bytes would disagree with a
        // sequential scan about which rows those are.
        fail_with_hint(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!(
                "vecguard: {what} column {} uses a nondeterministic collation",
                policy::quote_ident(name)
            ),
            "Give the column a deterministic collation, e.g. ALTER TABLE ... ALTER COLUMN ... TYPE text COLLATE \"C\".",
        );
    }
    Some(Column { name: name.to_string(), type_name: ty })
}

struct TableInfo {
    oid: pg_sys::Oid,
    name: QualifiedName,
}

// What we need from the relation, taken before running DDL on it: holding the
// PgRelation open would make ALTER TABLE fail with "being used by active queries".
fn table_info(rel: PgRelation) -> TableInfo {
    if !(rel.is_table() || rel.is_partitioned_table()) {
        fail(
            PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
            format!("vecguard: {} is not a table", policy::quote_ident(rel.name())),
        );
    }
    TableInfo {
        oid: rel.oid(),
        name: QualifiedName { schema: rel.namespace().to_string(), name: rel.name().to_string() },
    }
}

fn run_all(stmts: &[String]) {
    Spi::connect_mut(|c| {
        for s in stmts {
            c.update(s.as_str(), None, &[]).unwrap_or_else(|e| spi_err(e));
        }
    });
}

/// Runs `f` with `search_path = pg_catalog, pg_temp`, so SQL we generate and run cannot be
/// redirected to objects the caller planted. Restored on success; an ERROR restores it
/// through transaction/subtransaction abort.
fn with_safe_search_path<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: the standard GUC nesting protocol (as used by PostgreSQL's own
    // RestrictSearchPath callers): new nest level, SET LOCAL-like save, pop with AtEOXact_GUC.
    let nest = unsafe {
        let nest = pg_sys::NewGUCNestLevel();
        pg_sys::set_config_option(
            c"search_path".as_ptr(),
            c"pg_catalog, pg_temp".as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
            true,
            0,
            false,
        );
        nest
    };
    let r = f();
    // SAFETY: pops exactly the level pushed above.
    unsafe { pg_sys::AtEOXact_GUC(true, nest) };
    r
}

fn spec_for(tbl: &TableInfo, args: &ProtectArgs) -> ProtectSpec {
    let access_hours = match (&args.hours_days, &args.hours_start, &args.hours_end) {
        (None, None, None) => None,
        (Some(d), Some(s), Some(e)) => Some(
            policy::parse_access_hours(d, s, e, args.hours_tz.as_deref().unwrap_or("UTC"))
                .unwrap_or_else(|e| {
                    fail(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, format!("vecguard: {e}"))
                }),
        ),
        _ => fail(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "vecguard: access hours need hours_days, hours_start and hours_end together".into(),
        ),
    };
    let tenant = column(tbl, args.tenant.as_deref(), &[], "tenant");
    if let Some(c) = &tenant {
        if policy::tenant_key_type(&c.type_name).is_none() {
            fail(
                PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
                format!(
                    "vecguard: tenant column {} has type {}; expected one of {}",
                    policy::quote_ident(&c.name),
                    c.type_name,
                    policy::TENANT_TYPES
                ),
            );
        }
    }
    ProtectSpec {
        table: tbl.name.clone(),
        tenant,
        clearance: column(tbl, args.clearance.as_deref(), &INT_TYPES, "clearance"),
        valid_from: column(tbl, args.valid_from.as_deref(), &TIME_TYPES, "valid_from"),
        valid_until: column(tbl, args.valid_until.as_deref(), &TIME_TYPES, "valid_until"),
        access_hours,
    }
}

// Protects one table (not its children) and records it; `parent` is the protected table it
// inherits the protection from.
fn protect_one(tbl: &TableInfo, args: &ProtectArgs, parent: Option<pg_sys::Oid>) {
    let spec = spec_for(tbl, args);
    let stmts = policy::protect_sql(&spec).unwrap_or_else(|e| {
        fail(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, format!("vecguard: {e}"))
    });
    run_all(&stmts);
    let args_json = serde_json::to_value(args).unwrap_or(Value::Null);
    identity::as_keys_owner(|| {
        Spi::connect_mut(|c| {
            c.update(
                "INSERT INTO vecguard.protected (relid, args, parent, state) \
                 VALUES ($1::pg_catalog.oid::pg_catalog.regclass, $2, $3::pg_catalog.oid::pg_catalog.regclass, \
                         vecguard.protection_state($1::pg_catalog.oid::pg_catalog.regclass)) \
                 ON CONFLICT (relid) DO UPDATE SET args = excluded.args, parent = excluded.parent, \
                         state = excluded.state, seen = NULL",
                None,
                &[tbl.oid.into(), pgrx::JsonB(args_json).into(), parent.into()],
            )
            .unwrap_or_else(|e| spi_err(e));
        })
    });
    let detail = serde_json::json!({
        "tenant": spec.tenant.as_ref().map(|c| &c.name),
        "clearance": spec.clearance.as_ref().map(|c| &c.name),
        "valid_from": spec.valid_from.as_ref().map(|c| &c.name),
        "valid_until": spec.valid_until.as_ref().map(|c| &c.name),
        "access_hours": spec.access_hours.as_ref().map(|h| format!(
            "{} {}-{} {}", h.days_spec(), h.start_str(), h.end_str(), h.time_zone.name())),
        "inherited_from": parent.map(u32::from),
    })
    .to_string();
    let name = format!("{}.{}", spec.table.schema, spec.table.name);
    events::change("protect", None, Some(&name), Some(detail));
}

// Direct children (partitions and inheritance children) of `relid`.
fn children(relid: pg_sys::Oid) -> Vec<pg_sys::Oid> {
    Spi::connect(|c| {
        c.select(
            "SELECT inhrelid FROM pg_catalog.pg_inherits WHERE inhparent OPERATOR(pg_catalog.=) $1 ORDER BY 1",
            None,
            &[relid.into()],
        )
        .unwrap_or_else(|e| spi_err(e))
        .filter_map(|row| row.get::<pg_sys::Oid>(1).ok().flatten())
        .collect()
    })
}

fn info_of(relid: pg_sys::Oid) -> TableInfo {
    // SAFETY: the relation is opened with AccessShareLock for its name only and closed by
    // PgRelation's Drop before any DDL runs on it.
    let rel = unsafe { PgRelation::with_lock(relid, pg_sys::AccessShareLock as pg_sys::LOCKMODE) };
    table_info(rel)
}

// Protects `relid` and, recursively, every table that inherits from it.
fn protect_tree(tbl: &TableInfo, args: &ProtectArgs, parent: Option<pg_sys::Oid>) {
    protect_one(tbl, args, parent);
    for child in children(tbl.oid) {
        protect_tree(&info_of(child), args, Some(tbl.oid));
    }
}

/// protect(): the table, its partitions and inheritance children.
pub fn protect(tbl: PgRelation, args: &ProtectArgs) {
    let tbl = table_info(tbl);
    let _busy = Busy::enter();
    with_safe_search_path(|| {
        protect_tree(&tbl, args, None);
        refuse_post_filtering_indexes();
    });
}

/// Refuses an hnsw index on a protected table whose tenant column is a key column after the
/// first. The tenant policy is `tenant = ANY (...)`, and PostgreSQL 15 keeps an index's
/// ORDER BY only when such a condition is on its first column: elsewhere it plans the
/// ordered scan with the condition as a Filter above it, and a top-10 query returns the
/// few of the 10 nearest rows that happen to be the caller's.
fn refuse_post_filtering_indexes() {
    let bad: Option<(String, String)> = Spi::connect(|c| {
        c.select(
            "SELECT i.indexrelid::pg_catalog.regclass::pg_catalog.text, a.attname::pg_catalog.text \
             FROM vecguard.protected p \
             JOIN pg_catalog.pg_index i ON i.indrelid OPERATOR(pg_catalog.=) p.relid::pg_catalog.oid \
             JOIN pg_catalog.pg_class ic ON ic.oid OPERATOR(pg_catalog.=) i.indexrelid \
             JOIN pg_catalog.pg_am am ON am.oid OPERATOR(pg_catalog.=) ic.relam \
             JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) i.indrelid \
                  AND a.attname OPERATOR(pg_catalog.=) (p.args OPERATOR(pg_catalog.->>) 'tenant')::pg_catalog.name \
             WHERE am.amname OPERATOR(pg_catalog.=) 'hnsw' \
               AND pg_catalog.array_position(i.indkey::pg_catalog.int2[], a.attnum) OPERATOR(pg_catalog.>) 0 \
             LIMIT 1",
            None,
            &[],
        )
        .unwrap_or_else(|e| spi_err(e))
        .next()
        .and_then(|row| Some((row.get::<String>(1).ok()??, row.get::<String>(2).ok()??)))
    });
    if let Some((index, column)) = bad {
        fail_with_hint(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!(
                "vecguard: hnsw index {index} has the tenant column {column} after its first column, \
                 so the tenant policy would filter its results instead of guiding the search"
            ),
            &format!("Put the tenant column first: USING hnsw ({column}, <vector column> ..., <other key columns>)."),
        );
    }
}

// Unprotects `relid` and the children that took their protection from it.
fn unprotect_tree(tbl: &TableInfo) {
    let inherited: Vec<pg_sys::Oid> = Spi::connect(|c| {
        c.select(
            "SELECT relid::pg_catalog.oid FROM vecguard.protected WHERE parent OPERATOR(pg_catalog.=) $1::pg_catalog.oid::pg_catalog.regclass",
            None,
            &[tbl.oid.into()],
        )
        .unwrap_or_else(|e| spi_err(e))
        .filter_map(|row| row.get::<pg_sys::Oid>(1).ok().flatten())
        .collect()
    });
    for child in inherited {
        unprotect_tree(&info_of(child));
    }
    run_all(&policy::unprotect_sql(&tbl.name));
    forget(tbl.oid);
    let name = format!("{}.{}", tbl.name.schema, tbl.name.name);
    events::change("unprotect", None, Some(&name), None);
}

fn forget(relid: pg_sys::Oid) {
    identity::as_keys_owner(|| {
        Spi::connect_mut(|c| {
            c.update(
                "DELETE FROM vecguard.protected WHERE relid::pg_catalog.oid OPERATOR(pg_catalog.=) $1",
                None,
                &[relid.into()],
            )
            .unwrap_or_else(|e| spi_err(e));
        })
    });
}

/// unprotect(): the table and the children protected with it.
pub fn unprotect(tbl: PgRelation) {
    let tbl = table_info(tbl);
    let _busy = Busy::enter();
    with_safe_search_path(|| unprotect_tree(&tbl));
}

/// A registered table as the event trigger sees it.
struct Registered {
    relid: pg_sys::Oid,
    exists: bool,
    args: Option<Value>,
    expected: Option<Value>,
    seen: Option<Value>,
    now: Option<Value>,
}

fn registered() -> Vec<Registered> {
    Spi::connect(|c| {
        c.select(
            "SELECT p.relid::pg_catalog.oid, c.oid IS NOT NULL, p.args, p.state, p.seen, \
                    CASE WHEN c.oid IS NOT NULL THEN vecguard.protection_state(p.relid) END \
             FROM vecguard.protected p LEFT JOIN pg_catalog.pg_class c \
               ON c.oid OPERATOR(pg_catalog.=) p.relid::pg_catalog.oid",
            None,
            &[],
        )
        .unwrap_or_else(|e| spi_err(e))
        .filter_map(|row| {
            let json = |i: usize| row.get::<pgrx::JsonB>(i).ok().flatten().map(|j| j.0);
            Some(Registered {
                relid: row.get::<pg_sys::Oid>(1).ok().flatten()?,
                exists: row.get::<bool>(2).ok().flatten().unwrap_or(false),
                args: json(3),
                expected: json(4),
                seen: json(5),
                now: json(6),
            })
        })
        .collect()
    })
}

// Children of registered tables that are not registered themselves, with their parent.
fn unprotected_children() -> Vec<(pg_sys::Oid, pg_sys::Oid)> {
    Spi::connect(|c| {
        c.select(
            "SELECT i.inhrelid, i.inhparent FROM pg_catalog.pg_inherits i \
             JOIN vecguard.protected p ON p.relid::pg_catalog.oid OPERATOR(pg_catalog.=) i.inhparent \
             WHERE NOT EXISTS (SELECT 1 FROM vecguard.protected q \
                               WHERE q.relid::pg_catalog.oid OPERATOR(pg_catalog.=) i.inhrelid) \
             ORDER BY 1",
            None,
            &[],
        )
        .unwrap_or_else(|e| spi_err(e))
        .filter_map(|row| Some((row.get::<pg_sys::Oid>(1).ok().flatten()?, row.get::<pg_sys::Oid>(2).ok().flatten()?)))
        .collect()
    })
}

fn registry_exists() -> bool {
    // SAFETY: catalog name lookups that return InvalidOid instead of raising.
    unsafe {
        let nsp = pg_sys::get_namespace_oid(c"vecguard".as_ptr(), true);
        nsp != pg_sys::InvalidOid
            && pg_sys::get_relname_relid(c"protected".as_ptr(), nsp) != pg_sys::InvalidOid
    }
}

/// The event trigger's work after a DDL command (see the module comment).
pub fn enforce() {
    if BUSY.with(Cell::get) || !registry_exists() {
        return;
    }
    let _busy = Busy::enter();
    with_safe_search_path(|| {
        for r in registered() {
            if !r.exists {
                forget(r.relid);
                continue;
            }
            if r.now == r.expected || r.now == r.seen {
                continue;
            }
            // This command changed the protection of a protected table.
            let name = relation_name(r.relid);
            let detail = serde_json::json!({"expected": r.expected, "found": r.now}).to_string();
            // SAFETY: superuser() reads the current user's catalog entry.
            if !unsafe { pg_sys::superuser() } {
                events::change("protection_change_refused", None, Some(&name), Some(detail));
                fail_with_hint(
                    PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                    format!(
                        "vecguard: cannot change the row level security of protected table {name}"
                    ),
                    "Only a superuser can, with vecguard.protect() or vecguard.unprotect().",
                );
            }
            events::change("protection_changed", None, Some(&name), Some(detail));
            identity::as_keys_owner(|| {
                Spi::connect_mut(|c| {
                    c.update(
                        "UPDATE vecguard.protected SET seen = $2 WHERE relid::pg_catalog.oid OPERATOR(pg_catalog.=) $1",
                        None,
                        &[r.relid.into(), r.now.clone().map(pgrx::JsonB).into()],
                    )
                    .unwrap_or_else(|e| spi_err(e));
                })
            });
        }
        refuse_post_filtering_indexes();
        // New partitions and children, level by level (a child protected here may have
        // children of its own).
        loop {
            let todo = unprotected_children();
            if todo.is_empty() {
                break;
            }
            for (child, parent) in todo {
                let args: ProtectArgs = registered()
                    .into_iter()
                    .find(|r| r.relid == parent)
                    .and_then(|r| r.args)
                    .and_then(|a| serde_json::from_value(a).ok())
                    .unwrap_or_default();
                let info = info_of(child);
                identity::as_keys_owner(|| protect_one(&info, &args, Some(parent)));
            }
        }
    });
}

fn relation_name(relid: pg_sys::Oid) -> String {
    let q = info_of(relid).name;
    format!("{}.{}", q.schema, q.name)
}
