//! Index scans: `ORDER BY embedding <op> $1 LIMIT k`.
//!
//! The first amgettuple runs the HNSW search with `hnsw.ef_search` candidates and returns
//! their heap rows nearest-first. With `hnsw.iterative_scan` on, running out of rows resumes
//! the search (`graph::Searcher::next_batch`) until `hnsw.max_scan_tuples` nodes have been
//! visited, as in pgvector 0.8 — so filters applied above the scan still get enough rows.
//! Results are approximate in order, so `xs_recheckorderby` is false, like pgvector.

use super::diskgraph::{element_parts, DiskGraph, GraphView};
use super::graph::{visited_for, IdHashSet, Searcher};
use super::keys::{self, Cond};
use super::options::{
    IterativeScan, EF_SEARCH, ITERATIVE_SCAN, MAX_SCAN_TUPLES, SCAN_STATS, TWO_HOP_LIMIT,
};
use super::page::{self, Tid};
use super::scankeys::{columns, conds, Columns};
use super::scanplan::{needs_sweep, plan_scan, wants_groups, GroupsFound, ScanSettings};
use super::storage::tid_to_item_pointer;
use super::storage::IndexRel;
use super::values::{encode, Kind, Value};
use pgrx::pg_sys;
use std::collections::VecDeque;

struct ScanState {
    graph: DiskGraph,
    searcher: Option<Searcher<u64>>,
    pending: VecDeque<Tid>,
    started: bool,
    done: bool,
    iterative: bool,
    /// Key columns of the index and the scan's conditions on them.
    cols: Columns,
    conds: Vec<Cond>,
    /// Elements already returned (a filtered scan may end with an exact sweep).
    returned: IdHashSet<u64>,
    /// The metapage was read by ambeginscan and no rescan has run since.
    meta_fresh: bool,
    swept: bool,
    query: Vec<f32>,
    batches: u32,
    /// Tenant path: the groups' element counts summed (None: global graph).
    tenant_count: Option<u64>,
    /// A walk of one tenant group whose members this backend does not know yet: the
    /// group's hash, directory count and seeds, to record its members (see `members`).
    one_group: Option<(u64, u32, Vec<u64>)>,
    /// The scan answered from the group's known members instead of walking it.
    member_scan: bool,
    /// Elements a member scan returned (it needs no `returned` set: no sweep follows).
    member_rows: usize,
}

/// Most members that pass a scan's conditions for the scan to score them all instead of
/// walking the group's graph.
const EXACT_MEMBERS: usize = 2048;

impl ScanState {
    /// Moves the next batch of results into `pending`; false when the search is exhausted.
    fn fill(&mut self) -> bool {
        let Some(s) = self.searcher.as_mut() else { return false };
        let batch = s.next_batch(&mut self.graph);
        self.batches += 1;
        if batch.is_empty() {
            return false;
        }
        let mut tids = Vec::new();
        for c in batch {
            if !self.returned.insert(c.id) {
                continue;
            }
            tids.clear();
            self.graph.result_tids(c.id, &mut tids);
            self.pending.extend(tids.iter().copied());
        }
        true
    }

    /// Exact fallback of a filtered scan whose graph search is exhausted (few authorized
    /// rows, or an authorized region the graph does not connect): every element is read
    /// once, elements passing the key conditions are scored, and those not yet returned
    /// are emitted nearest-first. This is what makes an authorized scan return exactly
    /// min(k, authorized rows).
    fn sweep(&mut self, query: &[f32]) {
        self.swept = true;
        let rel = self.graph.rel;
        let dist = self.graph.dist;
        let mut found: Vec<(f32, Vec<Tid>)> = Vec::new();
        for blk in 1..rel.nblocks() {
            let p = rel.read_shared(blk);
            if p.is_new() {
                continue; // free space (see storage)
            }
            for off in 1..=p.max_offset() {
                let Some(bytes) = p.item(off) else { continue };
                let Some((info, v)) = element_parts(bytes) else { continue };
                let Some((_, _, _, _, n)) = page::element_header(bytes) else { continue };
                let id = Tid { block: blk, offset: off }.pack();
                if info.deleted
                    || (self.graph.fixed_len && v.len() != query.len())
                    || self.returned.contains(&id)
                    || !self.graph.bytes_pass(bytes, v.len())
                {
                    continue;
                }
                self.returned.insert(id);
                found.push((
                    dist(v, query),
                    (0..n).map(|i| page::element_heap_tid(bytes, i)).collect(),
                ));
            }
            drop(p);
            pgrx::check_for_interrupts!();
        }
        found.sort_by(|a, b| a.0.total_cmp(&b.0));
        for (_, tids) in found {
            self.pending.extend(tids);
        }
    }
}

impl ScanState {
    /// Answers the scan from a tenant group's members whose cached keys pass (`ids`, in
    /// element order): reads each one's element, leaves out deleted ones and any whose
    /// keys on the page do not pass (the page has the last word), and queues every heap
    /// row nearest first. Exact, like the sweep, but over the passing members only.
    fn score_members(&mut self, ids: &[u64], query: &[f32]) {
        self.member_scan = true;
        self.swept = true;
        self.done = true;
        let dist = self.graph.dist;
        let types = self.cols.key_types();
        let on_page = keys::Matcher::new(&types, &self.conds);
        // (distance, first of its heap TIDs in `tids`, how many)
        let mut found: Vec<(f32, u32, u32)> = Vec::with_capacity(ids.len());
        let mut tids: Vec<Tid> = Vec::with_capacity(ids.len());
        let mut at = 0;
        while at < ids.len() {
            let blk = Tid::unpack(ids[at]).block;
            let p = self.graph.read(blk);
            while at < ids.len() && Tid::unpack(ids[at]).block == blk {
                let id = ids[at];
                at += 1;
                let Some(bytes) = p.item(Tid::unpack(id).offset) else { continue };
                let Some((info, v)) = element_parts(bytes) else { continue };
                let Some((_, _, _, _, n)) = page::element_header(bytes) else { continue };
                if info.deleted
                    || (self.graph.fixed_len && v.len() != query.len())
                    || !on_page.matches(page::element_keys(bytes, v.len()))
                {
                    continue;
                }
                self.graph.distance_computations += 1;
                self.member_rows += 1;
                found.push((dist(v, query), tids.len() as u32, n as u32));
                tids.extend((0..n).map(|i| page::element_heap_tid(bytes, i)));
            }
            drop(p);
            pgrx::check_for_interrupts!();
        }
        found.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        for (_, first, n) in found {
            self.pending.extend(&tids[first as usize..(first + n) as usize]);
        }
    }

    /// Records the members of the one group this scan walked, when this backend should
    /// know them: after a walk that visited the whole group, or after a second walk at
    /// the same directory count that checked the keys of a quarter of it or more (then the
    /// group is enumerated from its seeds). A later scan of the group at that count
    /// scores its passing members directly when there are few enough.
    fn record_members(&mut self, exhausted: bool) {
        let Some((hash, count, seeds)) = self.one_group.take() else { return };
        if !self.graph.members_fit(count) {
            return;
        }
        let types = self.cols.key_types();
        let members = if exhausted {
            let Some(s) = self.searcher.as_ref() else { return };
            super::tenant::members_of(&mut self.graph, &types, count, s.visited_ids())
        } else {
            if self.graph.filter_checks < count as u64 / 4
                || self.graph.note_group_walk(hash, count) < 2
            {
                return;
            }
            let ids = super::tenant::enumerate(&mut self.graph, &seeds);
            super::tenant::members_of(&mut self.graph, &types, count, ids.into_iter())
        };
        if let Some(m) = members {
            self.graph.remember_group_members(hash, m);
        }
    }

    /// The next heap row to return, None when the scan is done: pending rows first, then
    /// the next batch of the search, then, when the search is over and the scan must be
    /// exact, the sweep.
    fn next_tid(&mut self) -> Option<Tid> {
        loop {
            if let Some(t) = self.pending.pop_front() {
                return Some(t);
            }
            if self.done {
                // A tenant search that walked every element of its groups has seen all
                // there is; otherwise (pruning left a member unlinked) sweep to be exact.
                let visited = self.searcher.as_ref().map(|s| s.visited_count());
                if self
                    .one_group
                    .as_ref()
                    .is_some_and(|g| visited.is_some_and(|v| v as u64 >= g.1 as u64))
                {
                    self.record_members(true);
                }
                if needs_sweep(!self.conds.is_empty(), self.swept, self.tenant_count, visited) {
                    let q = std::mem::take(&mut self.query);
                    self.sweep(&q);
                    continue;
                }
                return None;
            }
            pgrx::check_for_interrupts!();
            if !self.fill() {
                self.done = true;
            }
        }
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
        let rel = IndexRel::new(index);
        let st = Box::new(ScanState {
            graph: DiskGraph::open(rel),
            searcher: None,
            pending: VecDeque::new(),
            started: false,
            done: false,
            iterative: false,
            cols: columns(rel),
            conds: Vec::new(),
            returned: IdHashSet::default(),
            meta_fresh: true,
            swept: false,
            query: Vec::new(),
            batches: 0,
            tenant_count: None,
            one_group: None,
            member_scan: false,
            member_rows: 0,
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
        if st.started {
            st.record_members(false);
        }
        st.graph.reset();
        // The first rescan follows ambeginscan, which has just read the metapage; later
        // rescans (a nested loop's inner side) read it again, as inserts may move it.
        if !std::mem::take(&mut st.meta_fresh) {
            st.graph.reload_meta();
        }
        st.graph.distance_computations = 0;
        st.graph.filter_checks = 0;
        st.batches = 0;
        st.searcher = None;
        st.pending.clear();
        st.returned.clear();
        st.swept = false;
        st.tenant_count = None;
        st.one_group = None;
        st.member_scan = false;
        st.member_rows = 0;
        st.started = false;
        st.done = false;
        st.conds = if (*scan).numberOfKeys > 0 {
            conds(st.graph.rel, &st.cols, (*scan).keyData, (*scan).numberOfKeys as usize)
        } else {
            Vec::new()
        };
    }
}

/// The query vector from the ORDER BY key; a NULL query orders by the zero vector.
///
/// # Safety
/// `scan` must have at least one order-by key.
unsafe fn query_vector(scan: pg_sys::IndexScanDesc, st: &ScanState) -> Vec<f32> {
    let meta = st.graph.meta;
    let dims = meta.dimensions as usize;
    let kind = meta.metric.kind();
    // SAFETY: orderByData has numberOfOrderBys >= 1 entries here.
    let key = unsafe { &*(*scan).orderByData };
    if key.sk_flags & pg_sys::SK_ISNULL as i32 != 0 {
        // the zero value of the index's type
        let (f, h, b) = (vec![0.0f32; dims], vec![0u16; dims], vec![0u8; dims.div_ceil(8)]);
        let zero = match kind {
            Kind::Vector => Value::Vector(&f),
            Kind::Halfvec => Value::Halfvec(&h),
            Kind::Bit => Value::Bit(dims, &b),
            Kind::Sparse => Value::Sparse(crate::sparsevec::codec::SparseRef {
                dim: dims as i32,
                indices: &[],
                values: &[],
            }),
        };
        return encode(meta.metric, zero, false).unwrap_or_default();
    }
    // SAFETY: the order-by argument of the opclass's operators is of the index's type.
    let v = unsafe { super::datum::datum_value(kind, key.sk_argument) };
    if v.dims() != dims {
        let what = match kind {
            Kind::Vector => "vector dimensions",
            Kind::Halfvec => "halfvec dimensions",
            Kind::Bit => "bit lengths",
            Kind::Sparse => "sparsevec dimensions",
        };
        pgrx::ereport!(
            ERROR,
            pgrx::PgSqlErrorCode::ERRCODE_DATA_EXCEPTION,
            format!("different {what} {} and {}", dims, v.dims())
        );
    }
    // A zero query of a cosine index stays zero (every distance NaN), as in pgvector.
    encode(meta.metric, v, true).or_else(|| encode(meta.metric, v, false)).unwrap_or_default()
}

/// Adds to the index's activity counters, as PostgreSQL's pgstat_count_index_scan and
/// pgstat_count_index_tuples macros do: scans are what pg_stat_user_indexes.idx_scan shows
/// (DBAs drop indexes whose count stays 0), tuples its idx_tup_read.
///
/// # Safety
/// `rel` is an open relation.
unsafe fn count_stats(rel: pg_sys::Relation, what: crate::compat::StatCounter) {
    // SAFETY: the relation is open for the scan; pgstat_assoc_relation attaches its stats
    // entry (once) when statistics are being collected for it.
    unsafe {
        if (*rel).pgstat_info.is_null() && (*rel).pgstat_enabled {
            pg_sys::pgstat_assoc_relation(rel);
        }
        if !(*rel).pgstat_info.is_null() {
            crate::compat::count_stat((*rel).pgstat_info, what);
        }
    }
}

/// Starts the search for `q` as [`plan_scan`] decides: the node filter, the caller's
/// tenant groups, the searcher, and the first batch.
fn start(st: &mut ScanState, q: &[f32]) {
    let wants = wants_groups(&st.conds);
    if wants {
        st.graph.set_filter(st.cols.key_types(), st.conds.clone(), q);
    }
    let groups =
        if wants { super::tenant::scan_groups(&mut st.graph, &st.cols, &st.conds) } else { None };
    let settings = ScanSettings {
        ef_search: EF_SEARCH.get(),
        iterative_scan: ITERATIVE_SCAN.get() != IterativeScan::Off,
        two_hop_limit: TWO_HOP_LIMIT.get(),
        max_scan_tuples: MAX_SCAN_TUPLES.get(),
    };
    let found = groups.as_ref().map(|t| GroupsFound { count: t.count, proven: t.proven });
    let plan = plan_scan(&st.conds, st.graph.meta.elements, found, &settings);
    if plan.nothing {
        // e.g. `tenant = ANY(NULL)`: no token, no rows, no work.
        st.done = true;
        st.swept = true;
        return;
    }
    if plan.first_key_proven {
        st.graph.first_key_proven();
    }
    st.tenant_count = plan.tenant_count;
    // One group, walked with conditions beyond the tenant: its members, when this backend
    // knows them, answer without a walk if few pass.
    if let Some(t) =
        groups.as_ref().filter(|t| plan.tenant_walk && plan.opts.filtered && t.walked.len() == 1)
    {
        let (hash, count) = t.walked[0];
        let types = st.cols.key_types();
        // Members recorded at an older count learn the elements that joined since.
        let known = st.graph.take_group_members(hash).and_then(|mut m| {
            let now = count != u32::MAX
                && (m.count == count
                    || super::tenant::extend_members(&mut st.graph, &types, hash, count, &mut m));
            now.then_some(m)
        });
        match known {
            Some(m) => {
                st.graph.filter_checks += m.ids.len() as u64;
                // Conditions on the first key hold for every member of a proven group.
                let conds: Vec<Cond> = if plan.first_key_proven {
                    st.conds.iter().filter(|c| c.col != 0).cloned().collect()
                } else {
                    st.conds.clone()
                };
                let ids = super::tenant::passing(&m, &types, &conds);
                st.graph.remember_group_members(hash, m);
                if ids.len() <= EXACT_MEMBERS {
                    st.score_members(&ids, q);
                    return;
                }
            }
            None => st.one_group = Some((hash, count, t.seeds[0].clone())),
        }
    }
    st.graph.set_view(if plan.tenant_walk {
        // Seeded from the groups' entries and pivots, not from one entry.
        GraphView::Tenant { entry: None }
    } else {
        GraphView::Global
    });
    st.iterative = plan.iterative;
    let visited = visited_for(plan.ef);
    st.searcher = Some(match groups.filter(|_| plan.tenant_walk) {
        Some(t) => Searcher::with_seeds(&mut st.graph, q, plan.ef, plan.opts, visited, &t.seeds),
        None => Searcher::with_options(&mut st.graph, q, plan.ef, plan.opts, visited),
    });
    if !st.fill() {
        st.done = !plan.filtered;
    }
    if !plan.iterative {
        st.done = true;
    }
}

#[pgrx::pg_guard]
pub unsafe extern "C-unwind" fn amgettuple(
    scan: pg_sys::IndexScanDesc,
    _dir: pg_sys::ScanDirection::Type,
) -> bool {
    // SAFETY: scan is the descriptor ambeginscan made; its opaque holds our state.
    let st = unsafe { state(scan) };
    // SAFETY: as above.
    let (index, order_bys) = unsafe { ((*scan).indexRelation, (*scan).numberOfOrderBys) };
    if !st.started {
        st.started = true;
        // SAFETY: the scan's index relation is open; the scan descriptor is valid.
        unsafe {
            count_stats(index, crate::compat::StatCounter::Scan);
            crate::compat::count_index_search(scan);
        }
        if order_bys == 0 {
            pgrx::error!("cannot scan hnsw index without order");
        }
        // SAFETY: the scan has an ORDER BY argument (checked above).
        let q = unsafe { query_vector(scan, st) };
        st.query = q.clone();
        start(st, &q);
    }
    let Some(t) = st.next_tid() else { return false };
    // SAFETY: the scan descriptor is valid; the executor reads xs_heaptid and the recheck
    // flags after we return.
    unsafe {
        count_stats(index, crate::compat::StatCounter::TupleReturned);
        tid_to_item_pointer(t, &mut (*scan).xs_heaptid);
        (*scan).xs_recheck = false;
        (*scan).xs_recheckorderby = false;
    }
    true
}

#[pgrx::pg_guard]
pub unsafe extern "C-unwind" fn amendscan(scan: pg_sys::IndexScanDesc) {
    // SAFETY: reclaims the Box leaked in ambeginscan exactly once.
    unsafe {
        let p = (*scan).opaque as *mut ScanState;
        if !p.is_null() {
            let st = &mut *p;
            if SCAN_STATS.get() && st.started {
                pgrx::notice!(
                    "hnsw scan: {} distance computations, {} key checks, {} elements returned, {} batches, exact sweep {}, tenant graph {}, {} page pins, member scan {}",
                    st.graph.distance_computations,
                    st.graph.filter_checks,
                    st.returned.len() + st.member_rows,
                    st.batches,
                    if st.swept && !st.conds.iter().any(Cond::unsatisfiable) { "yes" } else { "no" },
                    if st.tenant_count.is_some() { "yes" } else { "no" },
                    st.graph.pins_taken(),
                    if st.member_scan { "yes" } else { "no" }
                );
            }
            if st.started {
                st.record_members(false);
            }
            drop(Box::from_raw(p));
            (*scan).opaque = std::ptr::null_mut();
        }
    }
}
