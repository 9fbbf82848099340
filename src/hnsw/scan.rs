//! Index scans: `ORDER BY embedding <op> $1 LIMIT k`.
//!
//! The first amgettuple runs the HNSW search with `hnsw.ef_search` candidates and returns
//! their heap rows nearest-first. With `hnsw.iterative_scan` on, running out of rows resumes
//! the search (`graph::Searcher::next_batch`) until `hnsw.max_scan_tuples` nodes have been
//! visited, as in pgvector 0.8 — so filters applied above the scan still get enough rows.
//! Results are approximate in order, so `xs_recheckorderby` is false, like pgvector.

use super::am::{IterativeScan, EF_SEARCH, ITERATIVE_SCAN, MAX_SCAN_TUPLES};
use super::build::tid_to_item_pointer;
use super::diskgraph::{prepare_vector, DiskGraph};
use super::graph::{SearchOptions, Searcher};
use super::page::Tid;
use super::storage::IndexRel;
use crate::vector::sql::datum_to_slice;
use pgrx::pg_sys;
use std::collections::VecDeque;

struct ScanState {
    graph: DiskGraph,
    searcher: Option<Searcher<u64>>,
    pending: VecDeque<Tid>,
    started: bool,
    done: bool,
    iterative: bool,
}

impl ScanState {
    /// Moves the next batch of results into `pending`; false when the search is exhausted.
    fn fill(&mut self) -> bool {
        let Some(s) = self.searcher.as_mut() else { return false };
        let batch = s.next_batch(&mut self.graph);
        if batch.is_empty() {
            return false;
        }
        let mut tids = Vec::new();
        for c in batch {
            tids.clear();
            self.graph.heap_tids(c.id, &mut tids);
            self.pending.extend(tids.iter().copied());
        }
        true
    }
}

/// # Safety
/// `scan` must be a scan created by ambeginscan.
unsafe fn state<'a>(scan: pg_sys::IndexScanDesc) -> &'a mut ScanState {
    // SAFETY: opaque holds the Box<ScanState> leaked in ambeginscan until amendscan.
    unsafe { &mut *((*scan).opaque as *mut ScanState) }
}

#[pgrx::pg_guard]
pub unsafe extern "C-unwind" fn ambeginscan(
    index: pg_sys::Relation,
    nkeys: std::ffi::c_int,
    norderbys: std::ffi::c_int,
) -> pg_sys::IndexScanDesc {
    // SAFETY: RelationGetIndexScan allocates the descriptor; our state lives in opaque.
    unsafe {
        let scan = pg_sys::RelationGetIndexScan(index, nkeys, norderbys);
        let st = Box::new(ScanState {
            graph: DiskGraph::open(IndexRel::new(index)),
            searcher: None,
            pending: VecDeque::new(),
            started: false,
            done: false,
            iterative: false,
        });
        (*scan).opaque = Box::into_raw(st) as *mut std::ffi::c_void;
        scan
    }
}

#[pgrx::pg_guard]
pub unsafe extern "C-unwind" fn amrescan(
    scan: pg_sys::IndexScanDesc,
    keys: pg_sys::ScanKey,
    nkeys: std::ffi::c_int,
    orderbys: pg_sys::ScanKey,
    norderbys: std::ffi::c_int,
) {
    // SAFETY: the executor passes arrays of nkeys / norderbys scan keys sized as at beginscan.
    unsafe {
        if !keys.is_null() && nkeys > 0 && (*scan).numberOfKeys > 0 {
            std::ptr::copy(keys, (*scan).keyData, nkeys as usize);
        }
        if !orderbys.is_null() && norderbys > 0 && (*scan).numberOfOrderBys > 0 {
            std::ptr::copy(orderbys, (*scan).orderByData, norderbys as usize);
        }
        let st = state(scan);
        st.graph.reset();
        st.graph.reload_meta();
        st.searcher = None;
        st.pending.clear();
        st.started = false;
        st.done = false;
    }
}

/// The query vector from the ORDER BY key; a NULL query orders by the zero vector.
///
/// # Safety
/// `scan` must have at least one order-by key.
unsafe fn query_vector(scan: pg_sys::IndexScanDesc, st: &ScanState) -> Vec<f32> {
    let dims = st.graph.meta.dimensions as usize;
    // SAFETY: orderByData has numberOfOrderBys >= 1 entries here.
    let key = unsafe { &*(*scan).orderByData };
    if key.sk_flags & pg_sys::SK_ISNULL as i32 != 0 {
        return vec![0.0; dims];
    }
    // SAFETY: the order-by argument of our operators is a vector.
    let v = unsafe { datum_to_slice(key.sk_argument) };
    if v.len() != dims {
        pgrx::ereport!(
            ERROR,
            pgrx::PgSqlErrorCode::ERRCODE_DATA_EXCEPTION,
            format!("different vector dimensions {} and {}", dims, v.len())
        );
    }
    prepare_vector(st.graph.meta.metric, v).unwrap_or_else(|| v.to_vec())
}

#[pgrx::pg_guard]
pub unsafe extern "C-unwind" fn amgettuple(scan: pg_sys::IndexScanDesc, _dir: pg_sys::ScanDirection::Type) -> bool {
    // SAFETY: scan is ours; xs_heaptid is written for the executor.
    unsafe {
        let st = state(scan);
        if !st.started {
            st.started = true;
            if (*scan).numberOfOrderBys == 0 {
                pgrx::error!("cannot scan hnsw index without order");
            }
            let q = query_vector(scan, st);
            st.iterative = ITERATIVE_SCAN.get() != IterativeScan::Off;
            let opts = SearchOptions {
                max_visited: if st.iterative { MAX_SCAN_TUPLES.get().max(1) as usize } else { 0 },
                ..SearchOptions::default()
            };
            let ef = EF_SEARCH.get().max(1) as usize;
            st.searcher = Some(Searcher::with_options(&mut st.graph, &q, ef, opts, Default::default()));
            if !st.fill() {
                st.done = true;
            }
            if !st.iterative {
                st.done = true;
            }
        }
        loop {
            if let Some(t) = st.pending.pop_front() {
                tid_to_item_pointer(t, &mut (*scan).xs_heaptid);
                (*scan).xs_recheck = false;
                (*scan).xs_recheckorderby = false;
                return true;
            }
            if st.done {
                return false;
            }
            pgrx::check_for_interrupts!();
            if !st.fill() {
                st.done = true;
            }
        }
    }
}

#[pgrx::pg_guard]
pub unsafe extern "C-unwind" fn amendscan(scan: pg_sys::IndexScanDesc) {
    // SAFETY: reclaims the Box leaked in ambeginscan exactly once.
    unsafe {
        let p = (*scan).opaque as *mut ScanState;
        if !p.is_null() {
            drop(Box::from_raw(p));
            (*scan).opaque = std::ptr::null_mut();
        }
    }
}
