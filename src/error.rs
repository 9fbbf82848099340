//! Raising SQL errors from Rust: every user-facing error carries an SQLSTATE.

use pgrx::prelude::*;

/// Raises an ERROR with a hint, the line that tells the user what to do instead.
pub(crate) fn fail_with_hint(code: PgSqlErrorCode, msg: String, hint: &str) -> ! {
    pgrx::pg_sys::panic::ErrorReport::new(code, msg, "vecguard")
        .set_hint(hint)
        .report(pgrx::PgLogLevel::ERROR);
    unreachable!("an ERROR report does not return")
}

/// Raises an ERROR with the given SQLSTATE (usable in expression position).
pub(crate) fn fail(code: PgSqlErrorCode, msg: String) -> ! {
    ereport!(ERROR, code, msg);
}
