//! The PostgreSQL APIs vecguard uses that differ between the majors it builds for (15 and 18,
//! chosen by the `pg15` / `pg18` cargo features). Each item here has one body per major;
//! the rest of the crate calls these and has no `cfg(feature = "pg..")` of its own, except
//! where a callback's C signature itself differs (noted at that callback).

use pgrx::pg_sys;

/// The physical identity of a relation's storage: `RelFileNode` in 15, renamed
/// `RelFileLocator` in 16 (the same three numbers, with new field names).
#[cfg(feature = "pg15")]
pub type RelFileLocator = pg_sys::RelFileNode;
#[cfg(feature = "pg18")]
pub type RelFileLocator = pg_sys::RelFileLocator;

/// The storage identity of an open relation (`rd_node` in 15, `rd_locator` from 16).
///
/// # Safety
/// `rel` is an open relation.
pub unsafe fn rel_locator(rel: pg_sys::Relation) -> RelFileLocator {
    // SAFETY: the caller passes an open relation.
    #[cfg(feature = "pg15")]
    let l = unsafe { (*rel).rd_node };
    // SAFETY: as above.
    #[cfg(feature = "pg18")]
    let l = unsafe { (*rel).rd_locator };
    l
}

/// (tablespace, database, relfilenumber) of a storage identity.
pub fn locator_key(l: &RelFileLocator) -> (u32, u32, u32) {
    #[cfg(feature = "pg15")]
    let k = (l.spcNode.to_u32(), l.dbNode.to_u32(), l.relNode.to_u32());
    #[cfg(feature = "pg18")]
    let k = (l.spcOid.to_u32(), l.dbOid.to_u32(), l.relNumber.to_u32());
    k
}

/// The type oid and typmod of attribute `i` (0-based) of a tuple descriptor. PostgreSQL 18
/// put a `CompactAttribute` array before the `FormData_pg_attribute` one, so its
/// `TupleDescAttr` is a function rather than an index into `attrs`.
///
/// # Safety
/// `desc` is a valid tuple descriptor with more than `i` attributes.
pub unsafe fn attr_type(desc: pg_sys::TupleDesc, i: usize) -> (pg_sys::Oid, i32) {
    // SAFETY: the caller guarantees i < natts.
    #[cfg(feature = "pg15")]
    let a = unsafe { &(*desc).attrs.as_slice(i + 1)[i] };
    // SAFETY: as above; TupleDescAttr returns a pointer into the descriptor.
    #[cfg(feature = "pg18")]
    let a = unsafe { &*pg_sys::TupleDescAttr(desc, i as std::ffi::c_int) };
    (a.atttypid, a.atttypmod)
}

/// Whether `role` owns relation `oid` (or is a superuser): `pg_class_ownercheck` in 15,
/// the catalog-generic `object_ownercheck` from 16.
///
/// # Safety
/// Must run in a transaction (it reads the syscache).
pub unsafe fn owns_relation(oid: pg_sys::Oid, role: pg_sys::Oid) -> bool {
    // SAFETY: syscache lookup inside a transaction, as the caller guarantees.
    #[cfg(feature = "pg15")]
    let owns = unsafe { pg_sys::pg_class_ownercheck(oid, role) };
    // SAFETY: as above.
    #[cfg(feature = "pg18")]
    let owns = unsafe { pg_sys::object_ownercheck(pg_sys::RelationRelationId, oid, role) };
    owns
}

/// Every setting's record, from the server's array of them (15 counts it with
/// `GetNumConfigOptions`; 16 returns the count through `get_guc_variables`' argument).
///
/// # Safety
/// The slice is valid until the next setting is defined (the array may move then).
pub unsafe fn guc_variables() -> &'static [*mut pg_sys::config_generic] {
    // SAFETY: get_guc_variables returns an array of that many pointers.
    unsafe {
        #[cfg(feature = "pg15")]
        let (vars, n) = (pg_sys::get_guc_variables(), pg_sys::GetNumConfigOptions());
        #[cfg(feature = "pg18")]
        let (vars, n) = {
            let mut n: std::ffi::c_int = 0;
            (pg_sys::get_guc_variables(&mut n), n)
        };
        if vars.is_null() || n <= 0 {
            return &[];
        }
        std::slice::from_raw_parts(vars, n as usize)
    }
}

/// This backend's local transaction id (`lxid` in 15, `vxid.lxid` from 17).
///
/// # Safety
/// `proc` is null or this backend's PGPROC.
pub unsafe fn local_xid(proc: *const pg_sys::PGPROC) -> u32 {
    if proc.is_null() {
        return 0;
    }
    // SAFETY: a valid PGPROC, as the caller guarantees.
    #[cfg(feature = "pg15")]
    let lxid = unsafe { (*proc).lxid };
    // SAFETY: as above.
    #[cfg(feature = "pg18")]
    let lxid = unsafe { (*proc).vxid.lxid };
    lxid
}

/// A reloption parse entry for an int field at `offset` (18 added `isset_offset`, 0 when
/// the option does not record whether it was set).
pub fn relopt_int(name: &'static std::ffi::CStr, offset: usize) -> pg_sys::relopt_parse_elt {
    pg_sys::relopt_parse_elt {
        optname: name.as_ptr(),
        opttype: pg_sys::relopt_type::RELOPT_TYPE_INT,
        offset: offset as i32,
        #[cfg(feature = "pg18")]
        isset_offset: 0,
    }
}

/// Which of a relation's statistics counters an access adds to.
#[derive(Clone, Copy, Debug)]
pub enum StatCounter {
    /// `pg_stat_user_indexes.idx_scan`
    Scan,
    /// `idx_tup_read`
    TupleReturned,
    /// `pg_statio_user_indexes`: a block read that found the page in shared buffers
    BlockHit,
}

/// Adds one to a relation's pending statistics counter (the fields lost their `t_` prefix
/// and the struct its `t_counts` name in 16).
///
/// # Safety
/// `info` is a relation's live `pgstat_info` (not null).
pub unsafe fn count_stat(info: *mut pg_sys::PgStat_TableStatus, what: StatCounter) {
    // SAFETY: the caller passes a live stats entry.
    #[cfg(feature = "pg15")]
    unsafe {
        let c = &mut (*info).t_counts;
        match what {
            StatCounter::Scan => c.t_numscans += 1,
            StatCounter::TupleReturned => c.t_tuples_returned += 1,
            StatCounter::BlockHit => {
                c.t_blocks_fetched += 1;
                c.t_blocks_hit += 1;
            }
        }
    }
    // SAFETY: as above.
    #[cfg(feature = "pg18")]
    unsafe {
        let c = &mut (*info).counts;
        match what {
            StatCounter::Scan => c.numscans += 1,
            StatCounter::TupleReturned => c.tuples_returned += 1,
            StatCounter::BlockHit => {
                c.blocks_fetched += 1;
                c.blocks_hit += 1;
            }
        }
    }
}

/// Marks an index path the AM cannot run (no ORDER BY distance) as unusable. 15 compares
/// costs only, so the caller's infinite cost suffices; 18 compares a path's count of
/// disabled nodes before its cost, so an infinite-cost path with none would still beat a
/// sequential scan disabled by `enable_seqscan = off` (pgvector sets 2 for the same reason).
///
/// # Safety
/// `path` is the IndexPath being costed.
pub unsafe fn disable_index_path(path: *mut pg_sys::IndexPath) {
    // SAFETY: the planner's path, as the caller guarantees.
    #[cfg(feature = "pg18")]
    unsafe {
        (*path).path.disabled_nodes = 2;
    }
    #[cfg(feature = "pg15")]
    let _ = path;
}

/// Counts one index search for EXPLAIN ANALYZE's "Index Searches" line (18); 15 has no
/// such counter.
///
/// # Safety
/// `scan` is a live index scan.
pub unsafe fn count_index_search(scan: pg_sys::IndexScanDesc) {
    // SAFETY: instrument is null or the executor's counters for this scan.
    #[cfg(feature = "pg18")]
    unsafe {
        if !(*scan).instrument.is_null() {
            (*(*scan).instrument).nsearches += 1;
        }
    }
    #[cfg(feature = "pg15")]
    let _ = scan;
}
