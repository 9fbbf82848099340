//! Facts about the current backend process that several modules ask about.

use pgrx::pg_sys;

/// True in a parallel worker (these must not write audit records: the leader does).
pub(crate) fn is_parallel_worker() -> bool {
    // SAFETY: ParallelWorkerNumber is a backend-local int, -1 outside parallel workers.
    unsafe { pg_sys::ParallelWorkerNumber >= 0 }
}
