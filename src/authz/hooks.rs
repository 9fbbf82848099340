//! The executor, utility and log hooks of the authorization half.
//!
//! * **ExecutorStart**: a statement that reads a table with row level security settles the
//!   caller's identity before its first row is read (`identity::precheck`), so no error can
//!   depend on rows the caller may not see; statement text holding a token is masked in
//!   pg_stat_activity and for the hooks and extensions that run after us.
//! * **ProcessUtility**: `SET vecguard.jwt` without LOCAL is refused under
//!   `vecguard.token_scope = transaction`; the token in a SET's text is masked before the
//!   statement is shown or passed on (pg_stat_statements keeps utility text); changes of the
//!   audited settings are recorded after the statement.
//! * **emit_log_hook**: tokens are masked in server log messages (log_statement, bind
//!   parameters), and an error's STATEMENT line is left out when that statement holds one.
//!
//! The hooks see statements only in backends that have loaded the library: with
//! `shared_preload_libraries = 'vecguard'` that is every backend from its first statement.

use std::ffi::{c_char, c_int, CStr};
use std::sync::OnceLock;

use pgrx::pg_sys;
use pgrx::prelude::*;

use super::{events, guc, identity, redact};

static PREV_PROCESS_UTILITY: OnceLock<pg_sys::ProcessUtility_hook_type> = OnceLock::new();
static PREV_EXECUTOR_START: OnceLock<pg_sys::ExecutorStart_hook_type> = OnceLock::new();
static PREV_EMIT_LOG: OnceLock<pg_sys::emit_log_hook_type> = OnceLock::new();

/// Called from `_PG_init`: settings and hooks.
pub fn init() {
    guc::define();
    // SAFETY: _PG_init runs once per process, single-threaded, before any query of ours;
    // each hook remembers the one installed before it and calls it.
    unsafe {
        let _ = PREV_PROCESS_UTILITY.set(pg_sys::ProcessUtility_hook);
        pg_sys::ProcessUtility_hook = Some(vecguard_process_utility);
        let _ = PREV_EXECUTOR_START.set(pg_sys::ExecutorStart_hook);
        pg_sys::ExecutorStart_hook = Some(vecguard_executor_start);
        let _ = PREV_EMIT_LOG.set(pg_sys::emit_log_hook);
        pg_sys::emit_log_hook = Some(vecguard_emit_log);
    }
}

// A palloc'd copy of `text` with its tokens masked, or None when it holds none.
fn masked_copy(text: *const c_char) -> Option<*const c_char> {
    if text.is_null() {
        return None;
    }
    // SAFETY: statement texts are NUL-terminated strings that outlive the hook call.
    let s = unsafe { CStr::from_ptr(text) }.to_str().ok()?;
    let masked = redact::mask_tokens(s)?;
    let c = std::ffi::CString::new(masked).ok()?;
    // SAFETY: pstrdup copies the NUL-terminated string into the current memory context,
    // which lives at least as long as the statement.
    Some(unsafe { pg_sys::pstrdup(c.as_ptr()) })
}

// Shows the masked text in pg_stat_activity instead of what the client sent.
fn report_masked_activity(masked: *const c_char) {
    // SAFETY: pgstat_report_activity copies the string into shared memory.
    unsafe { pg_sys::pgstat_report_activity(pg_sys::BackendState::STATE_RUNNING, masked) };
}

#[pg_guard]
unsafe extern "C-unwind" fn vecguard_executor_start(
    query_desc: *mut pg_sys::QueryDesc,
    eflags: c_int,
) {
    // SAFETY: the executor passes a valid QueryDesc whose plannedstmt and sourceText live
    // for the whole execution; replacing sourceText by a same-length masked copy keeps
    // every statement location that other code derives from it.
    unsafe {
        if let Some(masked) = masked_copy((*query_desc).sourceText) {
            (*query_desc).sourceText = masked;
            report_masked_activity(masked);
        }
        let explain_only = eflags & pg_sys::EXEC_FLAG_EXPLAIN_ONLY as c_int != 0;
        if !explain_only
            && !crate::backend::is_parallel_worker()
            && reads_rls_table((*query_desc).plannedstmt)
        {
            identity::precheck();
        }
        match PREV_EXECUTOR_START.get().copied().flatten() {
            Some(prev) => prev(query_desc, eflags),
            None => pg_sys::standard_ExecutorStart(query_desc, eflags),
        }
    }
}

/// Whether the plan reads a table that has row level security enabled.
///
/// # Safety
/// `pstmt` is null or a valid PlannedStmt.
unsafe fn reads_rls_table(pstmt: *mut pg_sys::PlannedStmt) -> bool {
    // SAFETY: the range table is a List of RangeTblEntry nodes; pg_class tuples from the
    // syscache are read only before ReleaseSysCache.
    unsafe {
        if pstmt.is_null() || (*pstmt).rtable.is_null() {
            return false;
        }
        let list = (*pstmt).rtable;
        (0..usize::try_from((*list).length).unwrap_or(0)).any(|i| {
            let rte = (*(*list).elements.add(i)).ptr_value as *mut pg_sys::RangeTblEntry;
            if rte.is_null() || (*rte).rtekind != pg_sys::RTEKind::RTE_RELATION {
                return false;
            }
            let tup = pg_sys::SearchSysCache1(
                pg_sys::SysCacheIdentifier::RELOID as c_int,
                pg_sys::Datum::from((*rte).relid),
            );
            if tup.is_null() {
                return false;
            }
            let form = pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_class>(tup);
            let rls = (*form).relrowsecurity;
            pg_sys::ReleaseSysCache(tup);
            rls
        })
    }
}

// Setting changes arrive through utility statements (SET, RESET, ALTER SYSTEM/ROLE/DATABASE
// ... SET). After the statement has run we compare the live settings with what we saw
// before; persistent ALTERs do not change the live value, so they are recorded by name.
#[pg_guard]
#[allow(clippy::too_many_arguments)]
unsafe extern "C-unwind" fn vecguard_process_utility(
    pstmt: *mut pg_sys::PlannedStmt,
    query_string: *const c_char,
    read_only_tree: bool,
    context: pg_sys::ProcessUtilityContext::Type,
    params: pg_sys::ParamListInfo,
    query_env: *mut pg_sys::QueryEnvironment,
    dest: *mut pg_sys::DestReceiver,
    qc: *mut pg_sys::QueryCompletion,
) {
    // SAFETY: pstmt is the PlannedStmt of the utility statement about to run.
    if unsafe { session_token_set(pstmt) } && guc::TOKEN_SCOPE.get() == guc::TokenScope::Transaction
    {
        identity::raise_session_token();
    }
    // SET's text is only shown and kept, never parsed again, so the masked copy can replace
    // it for everyone after us; other utility statements keep theirs.
    // SAFETY: pstmt is the PlannedStmt of the utility statement about to run.
    let query_string =
        match unsafe { is_variable_set(pstmt) }.then(|| masked_copy(query_string)).flatten() {
            Some(masked) => {
                report_masked_activity(masked);
                masked
            }
            None => query_string,
        };
    // SAFETY: arguments are passed on unchanged (the text masked at the same length), as
    // the hook contract requires.
    unsafe {
        match PREV_PROCESS_UTILITY.get().copied().flatten() {
            Some(prev) => {
                prev(pstmt, query_string, read_only_tree, context, params, query_env, dest, qc)
            }
            None => pg_sys::standard_ProcessUtility(
                pstmt,
                query_string,
                read_only_tree,
                context,
                params,
                query_env,
                dest,
                qc,
            ),
        }
    }
    // SAFETY: pstmt is a valid PlannedStmt for the statement that just ran.
    let persistent = unsafe { persistent_setting(pstmt) }
        // SAFETY: reads the transaction state (records need catalog access).
        .filter(|_| unsafe { pg_sys::IsTransactionState() });
    if let Some((how, name)) = persistent {
        let detail = serde_json::json!({"statement": how, "setting": name}).to_string();
        events::change("setting_changed", None, None, Some(detail));
    }
    events::check_settings();
}

/// Whether the statement is a SET, SET LOCAL or RESET.
///
/// # Safety
/// `pstmt` is null or a valid PlannedStmt.
unsafe fn is_variable_set(pstmt: *mut pg_sys::PlannedStmt) -> bool {
    // SAFETY: reads the node tag of the parser's utility statement.
    unsafe {
        !pstmt.is_null()
            && !(*pstmt).utilityStmt.is_null()
            && (*(*pstmt).utilityStmt).type_ == pg_sys::NodeTag::T_VariableSetStmt
    }
}

/// Whether the statement is `SET vecguard.jwt = <non-empty value>` without LOCAL.
///
/// # Safety
/// `pstmt` is null or a valid PlannedStmt.
unsafe fn session_token_set(pstmt: *mut pg_sys::PlannedStmt) -> bool {
    // SAFETY: the node tag is checked before the cast; the parser builds VariableSetStmt
    // with a name and a List of A_Const arguments.
    unsafe {
        if pstmt.is_null() || (*pstmt).utilityStmt.is_null() {
            return false;
        }
        let node = (*pstmt).utilityStmt;
        if (*node).type_ != pg_sys::NodeTag::T_VariableSetStmt {
            return false;
        }
        let set = node as *mut pg_sys::VariableSetStmt;
        if (*set).is_local
            || (*set).kind != pg_sys::VariableSetKind::VAR_SET_VALUE
            || (*set).name.is_null()
            || CStr::from_ptr((*set).name) != c"vecguard.jwt"
        {
            return false;
        }
        // `SET vecguard.jwt = ''` clears the token: always allowed.
        let args = (*set).args;
        if args.is_null() || (*args).length == 0 {
            return false;
        }
        let first = (*(*args).elements).ptr_value as *mut pg_sys::Node;
        if !first.is_null() && (*first).type_ == pg_sys::NodeTag::T_A_Const {
            let c = first as *mut pg_sys::A_Const;
            if !(*c).isnull && (*c).val.node.type_ == pg_sys::NodeTag::T_String {
                let sval = (*c).val.sval.sval;
                return !sval.is_null() && *sval != 0;
            }
        }
        true
    }
}

// For ALTER SYSTEM / ALTER ROLE ... SET / ALTER DATABASE ... SET of a vecguard.* setting,
// (statement kind, setting name).
unsafe fn persistent_setting(pstmt: *mut pg_sys::PlannedStmt) -> Option<(&'static str, String)> {
    // SAFETY: the caller passes the PlannedStmt of a utility statement; node tags are
    // checked before each cast, and the VariableSetStmt pointers come from the parser.
    unsafe {
        if pstmt.is_null() || (*pstmt).utilityStmt.is_null() {
            return None;
        }
        let node = (*pstmt).utilityStmt;
        let (how, set): (&'static str, *mut pg_sys::VariableSetStmt) = match (*node).type_ {
            pg_sys::NodeTag::T_AlterSystemStmt => {
                ("ALTER SYSTEM", (*(node as *mut pg_sys::AlterSystemStmt)).setstmt)
            }
            pg_sys::NodeTag::T_AlterRoleSetStmt => {
                ("ALTER ROLE", (*(node as *mut pg_sys::AlterRoleSetStmt)).setstmt)
            }
            pg_sys::NodeTag::T_AlterDatabaseSetStmt => {
                ("ALTER DATABASE", (*(node as *mut pg_sys::AlterDatabaseSetStmt)).setstmt)
            }
            _ => return None,
        };
        if set.is_null() || (*set).name.is_null() {
            return None;
        }
        let name = CStr::from_ptr((*set).name).to_string_lossy().into_owned();
        name.starts_with("vecguard.").then_some((how, name))
    }
}

// Masks tokens in a log message before it is written. Runs inside error reporting, so it
// does no more than replace strings with palloc'd copies.
#[pg_guard]
unsafe extern "C-unwind" fn vecguard_emit_log(edata: *mut pg_sys::ErrorData) {
    // SAFETY: edata is the ErrorData being reported; its strings are palloc'd in the error
    // context and may be replaced by other palloc'd strings; debug_query_string is the
    // current statement's text or null.
    unsafe {
        if !edata.is_null() {
            for field in [&mut (*edata).message, &mut (*edata).detail, &mut (*edata).detail_log] {
                if let Some(masked) = masked_copy(*field) {
                    *field = masked as *mut c_char;
                }
            }
            if masked_copy(pg_sys::debug_query_string).is_some() {
                (*edata).hide_stmt = true;
            }
        }
        if let Some(prev) = PREV_EMIT_LOG.get().copied().flatten() {
            prev(edata);
        }
    }
}
