//! CREATE INDEX: collect the heap's vectors, build the graph in memory on as many threads
//! as PostgreSQL would give a parallel index build workers, plus the leader (pgvector's
//! rule: `plan_create_index_workers`, the table's parallel_workers, capped by cores; rayon
//! in the pure graph code; this backend thread alone talks to Postgres), lay nodes
//! out on pages by `MemGraph::page_layout` (each page a node and the nodes most linked to
//! it, pages started in breadth-first order from the entry point) so neighbours tend to
//! share pages, write every page without WAL and log them all once at the end.
//!
//! Rows with an identical vector share one element (up to `page::HEAP_TIDS` heap TIDs),
//! which keeps duplicates reachable. When the graph would not fit in
//! maintenance_work_mem, the part that fits is built in memory and the rest is inserted
//! on disk one by one, with a NOTICE (pgvector does the same).

use super::buildplan::{build_threads, graph_budget, in_memory_count, row_hash};
use super::graph::{
    build_tenant_links, ensure_reachable, joins_element, Element, MemGraph, Params, TenantLinks,
};
use super::options::{index_dimensions, index_metric, index_options};
use super::page::{self, Meta, Tid};
use super::scankeys::{columns, encode_row, Columns};
use super::storage::{tid_from_ptr, BulkWriter, IndexRel, WalWrite};
use super::tenant::{directory_pages, group_members, group_purity, DirTuple};
use super::values::{encode, graph_distance, stored, Value};
use pgrx::pg_sys;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

struct BuildState {
    rel: IndexRel,
    /// The column's dimensions (bits for `bit`).
    dims: usize,
    /// Stored words per element (see `values`); for sparsevec, set once every row is read
    /// (the longest, which the others are padded to).
    dim: usize,
    metric: page::Metric,
    cols: Columns,
    vectors: Vec<f32>,
    /// sparsevec rows as read (they differ in length), flattened into `vectors` after the
    /// heap scan; None for the other types.
    sparse_rows: Option<Vec<Vec<f32>>>,
    heap_tids: Vec<Vec<Tid>>,
    /// encoded key columns per element (empty for a plain vector index)
    keys: Vec<Vec<u8>>,
    /// hash of vector bits -> element indexes with that hash (duplicate detection)
    by_hash: HashMap<u64, Vec<u32>>,
    heap_tuples: f64,
    indexed: f64,
}

impl BuildState {
    fn add(&mut self, heap_tid: Tid, value: Value, keys: Vec<u8>) {
        if value.dims() != self.dims {
            pgrx::ereport!(
                ERROR,
                pgrx::PgSqlErrorCode::ERRCODE_DATA_EXCEPTION,
                format!("expected {} dimensions, not {}", self.dims, value.dims())
            );
        }
        super::datum::check_indexable(&value);
        let Some(v) = encode(self.metric, value, true) else { return };
        super::insert::check_row_size(self.rel, page::element_size(v.len()) + keys.len());
        self.indexed += 1.0;
        // Rows share an element only when vector AND key columns are equal: an element's
        // keys decide who may see all of its rows.
        let h = row_hash(&v, &keys);
        if let Some(list) = self.by_hash.get(&h) {
            for &i in list {
                let s = i as usize * self.dim;
                let vector = match &self.sparse_rows {
                    Some(rows) => &rows[i as usize][..],
                    None => &self.vectors[s..s + self.dim],
                };
                let existing = Element {
                    deleted: false,
                    heap_tids: self.heap_tids[i as usize].len(),
                    vector,
                    keys: Some(&self.keys[i as usize]),
                };
                if joins_element(&existing, &v, &keys, page::HEAP_TIDS) {
                    self.heap_tids[i as usize].push(heap_tid);
                    return;
                }
            }
        }
        let idx = self.heap_tids.len() as u32;
        match &mut self.sparse_rows {
            Some(rows) => rows.push(v),
            None => self.vectors.extend_from_slice(&v),
        }
        self.heap_tids.push(vec![heap_tid]);
        self.keys.push(keys);
        self.by_hash.entry(h).or_default().push(idx);
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn build_callback(
    _index: pg_sys::Relation,
    tid: pg_sys::ItemPointer,
    values: *mut pg_sys::Datum,
    isnull: *mut bool,
    _alive: bool,
    state: *mut std::ffi::c_void,
) {
    // SAFETY: state is the BuildState passed to table_index_build_scan; values/isnull hold
    // one entry per index column.
    unsafe {
        let st = &mut *(state as *mut BuildState);
        let vc = st.cols.vector;
        if *isnull.add(vc) {
            return;
        }
        let v = super::datum::datum_value(st.metric.kind(), *values.add(vc));
        let keys = if st.cols.keys.is_empty() {
            Vec::new()
        } else {
            encode_row(st.rel, &st.cols, values, isnull)
        };
        st.add(tid_from_ptr(tid), v, keys);
    }
}

/// Validates m / ef_construction like pgvector.
pub(crate) fn params_of(rel: IndexRel) -> Params {
    let (m, efc) = index_options(rel);
    if efc < 2 * m {
        pgrx::ereport!(
            ERROR,
            pgrx::PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "ef_construction must be greater than or equal to 2 * m"
        );
    }
    Params::new(m as usize, efc as usize)
}

#[pgrx::pg_guard]
pub unsafe extern "C-unwind" fn ambuild(
    heap: pg_sys::Relation,
    index: pg_sys::Relation,
    index_info: *mut pg_sys::IndexInfo,
) -> *mut pg_sys::IndexBuildResult {
    // SAFETY: called by Postgres for a new, empty index relation.
    let rel = unsafe { IndexRel::new(index) };
    if rel.nblocks() != 0 {
        pgrx::error!("index \"{}\" already contains data", super::diskgraph::relation_name(rel));
    }
    let dims = index_dimensions(rel);
    let metric = index_metric(rel);
    let words = metric.kind().words(dims);
    let params = params_of(rel);
    let mut st = BuildState {
        rel,
        dims,
        dim: words.unwrap_or(0),
        metric,
        cols: columns(rel),
        vectors: Vec::new(),
        sparse_rows: words.is_none().then(Vec::new),
        heap_tids: Vec::new(),
        keys: Vec::new(),
        by_hash: HashMap::new(),
        heap_tuples: 0.0,
        indexed: 0.0,
    };
    // SAFETY: standard heap scan feeding build_callback with &mut st. It returns the number
    // of live heap rows it saw, which becomes the table's reltuples; the callback sees only
    // the rows a partial index's predicate keeps.
    st.heap_tuples = unsafe {
        pg_sys::table_index_build_scan(
            heap,
            index,
            index_info,
            true,
            true,
            Some(build_callback),
            &mut st as *mut BuildState as *mut std::ffi::c_void,
            std::ptr::null_mut(),
        )
    };
    if let Some(rows) = st.sparse_rows.take() {
        // The in-memory graph holds equal-length rows: pad with zero words, which the
        // sparse distances ignore and `values::stored` drops before a page.
        st.dim = rows.iter().map(Vec::len).max().unwrap_or(1).max(1);
        st.vectors = Vec::with_capacity(rows.len() * st.dim);
        for r in rows {
            let end = st.vectors.len() + st.dim;
            st.vectors.extend_from_slice(&r);
            st.vectors.resize(end, 0.0);
        }
    }
    let dim = st.dim;
    let n = st.heap_tids.len();
    // SAFETY: heap and index are the open relations Postgres passed to ambuild.
    let workers = unsafe { parallel_workers(heap, index) };
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let threads = build_threads(workers, cores);
    if threads > 1 {
        pgrx::debug1!("using {} parallel workers", threads - 1);
    }
    // How many elements fit in maintenance_work_mem; the rest go through on-disk inserts.
    // SAFETY: reading a GUC variable.
    let mwm = unsafe { pg_sys::maintenance_work_mem }.max(0) as usize * 1024;
    let budget = graph_budget(mwm, threads > 1);
    let fit = in_memory_count(n, MemGraph::estimated_memory_bytes(1, dim, params), budget);
    if fit < n {
        let tuples: usize = st.heap_tids[..fit].iter().map(Vec::len).sum();
        pgrx::pg_sys::panic::ErrorReport::new(
            pgrx::PgSqlErrorCode::ERRCODE_SUCCESSFUL_COMPLETION,
            format!("hnsw graph no longer fits into maintenance_work_mem after {tuples} tuples"),
            "vecguard",
        )
        .set_detail("Building will take significantly more time.")
        .set_hint("Increase maintenance_work_mem to speed up builds.")
        .report(pgrx::PgLogLevel::NOTICE);
    }
    // SAFETY: progress reporting for pg_stat_progress_create_index.
    unsafe {
        pg_sys::pgstat_progress_update_param(
            pg_sys::PROGRESS_CREATEIDX_TUPLES_TOTAL as i32,
            n as i64,
        )
    };
    let mem_vectors = st.vectors[..fit * dim].to_vec();
    let done = AtomicUsize::new(0);
    let graph = std::thread::scope(|s| {
        let worker = s.spawn(|| {
            MemGraph::build(
                dim,
                mem_vectors,
                params,
                graph_distance(metric),
                0x5eed,
                threads,
                &|d| done.store(d, Ordering::Relaxed),
            )
        });
        while !worker.is_finished() {
            std::thread::sleep(std::time::Duration::from_millis(50));
            // SAFETY: this is the backend's own thread.
            unsafe {
                pg_sys::pgstat_progress_update_param(
                    pg_sys::PROGRESS_CREATEIDX_TUPLES_DONE as i32,
                    done.load(Ordering::Relaxed) as i64,
                )
            };
        }
        worker.join()
    });
    let mut graph = match graph {
        Ok(g) => g,
        Err(_) => pgrx::error!("hnsw graph build failed"),
    };
    let nodes: Vec<(u32, u8)> = (0..graph.len() as u32).map(|i| (i, graph.level(i))).collect();
    ensure_reachable(&mut graph, &nodes, params);
    // An index with key columns also gets one flat graph per tenant group (first key).
    let tenants = (!st.cols.keys.is_empty()).then(|| {
        let types = st.cols.key_types();
        let (hashes, members) = group_members(&st.keys[..fit], &types);
        let links = build_tenant_links(
            dim,
            graph.vectors_flat(),
            &members,
            params,
            graph_distance(metric),
            0x7e4a,
            threads,
        );
        let pure = group_purity(&members, &st.keys[..fit], &types);
        Tenants { hashes, sizes: members.iter().map(|m| m.len() as u32).collect(), pure, links }
    });
    write_graph(
        rel,
        &graph,
        &st.heap_tids[..fit],
        &st.keys[..fit],
        metric,
        params,
        tenants.as_ref(),
    );
    // SAFETY: progress reporting.
    unsafe {
        pg_sys::pgstat_progress_update_param(
            pg_sys::PROGRESS_CREATEIDX_TUPLES_DONE as i32,
            fit as i64,
        )
    };
    for i in fit..n {
        let v = stored(metric, &st.vectors[i * dim..(i + 1) * dim]);
        for &t in &st.heap_tids[i] {
            super::insert::insert_prepared(rel, v, t, &st.keys[i]);
        }
        pgrx::check_for_interrupts!();
    }
    // SAFETY: palloc0'd result for the executor.
    unsafe {
        let res = pg_sys::palloc0(std::mem::size_of::<pg_sys::IndexBuildResult>())
            as *mut pg_sys::IndexBuildResult;
        (*res).heap_tuples = st.heap_tuples;
        (*res).index_tuples = st.indexed;
        res
    }
}

/// Parallel workers PostgreSQL would give this index build, as pgvector computes them
/// (ComputeParallelWorkers): none when the planner says the build should not be parallel
/// (max_parallel_maintenance_workers = 0, a small table, parallel-unsafe expressions,
/// a temporary table, ...); otherwise the table's parallel_workers reloption or
/// max_parallel_maintenance_workers, whichever is smaller. Our workers are threads of
/// this backend, not background workers, but they still draw on the server's parallel
/// budget, so max_parallel_workers caps them too.
///
/// # Safety
/// `heap` and `index` must be the open relations passed to ambuild.
unsafe fn parallel_workers(heap: pg_sys::Relation, index: pg_sys::Relation) -> usize {
    // SAFETY: both relations are open and valid for the duration of ambuild (caller).
    unsafe {
        if pg_sys::plan_create_index_workers((*heap).rd_id, (*index).rd_id) <= 0 {
            return 0;
        }
        let max = pg_sys::max_parallel_maintenance_workers.max(0) as usize;
        let kind = (*(*heap).rd_rel).relkind as u8;
        let std_options = kind == pg_sys::RELKIND_RELATION || kind == pg_sys::RELKIND_MATVIEW;
        let opts = (*heap).rd_options as *const pg_sys::StdRdOptions;
        // RelationGetParallelWorkers: only tables and materialized views carry StdRdOptions.
        let reloption = if std_options && !opts.is_null() { (*opts).parallel_workers } else { -1 };
        let workers = if reloption >= 0 { (reloption as usize).min(max) } else { max };
        workers.min(pg_sys::max_parallel_workers.max(0) as usize)
    }
}

/// The tenant groups of a build: per group its hash, size and (in `links`) entry node,
/// per node its tenant list.
struct Tenants {
    hashes: Vec<u64>,
    sizes: Vec<u32>,
    /// Whether every member carries the same first key bytes (no hash collision).
    pure: Vec<bool>,
    links: TenantLinks,
}

/// Writes metapage, tenant directory and nodes without WAL, then logs all pages once.
fn write_graph(
    rel: IndexRel,
    g: &MemGraph,
    heap_tids: &[Vec<Tid>],
    keys: &[Vec<u8>],
    metric: page::Metric,
    params: Params,
    tenants: Option<&Tenants>,
) {
    let m = params.m;
    // nodes per page at level 0 (most nodes): runs of that many share a page
    let key_len = keys.first().map_or(0, |k| k.len());
    let node_fp = page::footprint(page::element_size(g.dim()) + key_len)
        + page::footprint(page::neighbor_size(m, 0, tenants.is_some()));
    let order = g.page_layout(page::page_capacity() / node_fp);
    let dir_pages = tenants.map_or(0, |t| page::dir_pages_for(t.hashes.len()));
    let tenant = tenants.is_some();
    let el_len =
        |i: u32| page::element_size(stored(metric, g.vector(i)).len()) + keys[i as usize].len();
    let nb_len = |i: u32| page::neighbor_size(m, g.level(i), tenant);
    // The same rule decides here where each tuple goes and, in the writer below, whether
    // PageAddItem takes it (`page::fits`); elements too long for a page were refused as
    // their rows were read.
    let plan = match page::plan_pages(
        g.len(),
        order.iter().map(|&i| (i, el_len(i), nb_len(i))),
        1 + dir_pages,
    ) {
        Ok(plan) => plan,
        Err(i) => super::insert::refuse_row_size(rel, el_len(i)),
    };
    let (pos, pages) = (&plan.pos, &plan.pages);
    let mut meta =
        Meta::new(index_dimensions(rel) as u32, m as u16, params.ef_construction as u16, metric);
    meta.entry = g.entry().map(|(e, l)| (pos[e as usize].0, l));
    meta.insert_page = plan.fill.unwrap_or(page::INVALID_BLOCK);
    meta.elements = g.len() as u64;
    let mut directory = Vec::new();
    if let Some(t) = tenants {
        meta.flags |= page::FLAG_TENANT_LINKS;
        meta.dir_start = 1;
        meta.dir_pages = dir_pages;
        let mut tuples: Vec<DirTuple> = Vec::new();
        for gi in (0..t.hashes.len()).filter(|&gi| (t.links.entries[gi] as usize) < pos.len()) {
            let h = t.hashes[gi];
            let e = page::DirEntry {
                hash: h,
                entry: pos[t.links.entries[gi] as usize].0,
                count: t.sizes[gi],
                pure: t.pure[gi],
            };
            tuples.push((h, page::encode_dir_entry(&e)));
            tuples.extend(
                t.links.pivots[gi]
                    .iter()
                    .map(|&p| (h, page::encode_dir_pivot(h, pos[p as usize].0))),
            );
        }
        directory = directory_pages(&tuples, dir_pages, 1 + dir_pages + pages.len() as u32);
    }
    let mut w = BulkWriter::new(rel);
    w.append(|p| p.set_meta(&meta));
    let write_dir = |w: &mut BulkWriter, next: u32, list: &[DirTuple]| {
        w.append(|p| {
            let ok = p.add_item(&page::encode_dir_header(next)) == Some(1)
                && list.iter().all(|t| p.add_item(&t.1).is_some());
            if !ok {
                pgrx::error!("hnsw build: tenant directory page overflow");
            }
        });
    };
    for (next, list) in directory.iter().take(dir_pages as usize) {
        write_dir(&mut w, *next, list);
    }
    let mut buf = Vec::new();
    let mut list = Vec::new();
    for (pi, tuples) in pages.iter().enumerate() {
        w.append(|p| {
            for &t in tuples {
                let (i, at) = match t {
                    page::Planned::Element(i) => (i, pos[i as usize].0),
                    page::Planned::Neighbors(i) => (i, pos[i as usize].1),
                };
                let level = g.level(i);
                match t {
                    page::Planned::Element(_) => {
                        buf.resize(el_len(i), 0);
                        page::encode_element(
                            &mut buf,
                            level,
                            &heap_tids[i as usize],
                            pos[i as usize].1,
                            stored(metric, g.vector(i)),
                            &keys[i as usize],
                        );
                    }
                    page::Planned::Neighbors(_) => {
                        buf.resize(nb_len(i), 0);
                        page::encode_neighbors_empty(&mut buf, m, level, tenant);
                        for l in 0..=level {
                            list.clear();
                            list.extend(g.neighbors(i, l).iter().map(|&j| pos[j as usize].0));
                            page::write_neighbors(&mut buf, l, &list);
                        }
                        if let Some(t) = tenants {
                            list.clear();
                            list.extend(
                                t.links.lists[i as usize].iter().map(|&j| pos[j as usize].0),
                            );
                            page::write_neighbors(&mut buf, page::TENANT_LIST, &list);
                        }
                    }
                }
                if p.add_item(&buf) != Some(at.offset) {
                    pgrx::error!(
                        "hnsw build: page layout mismatch on page {}",
                        pi as u32 + 1 + dir_pages
                    );
                }
            }
        });
    }
    for (next, list) in directory.iter().skip(dir_pages as usize) {
        write_dir(&mut w, *next, list);
    }
    w.finish();
}

/// Writes the metapage of an empty index into the init fork (UNLOGGED tables).
#[pgrx::pg_guard]
pub unsafe extern "C-unwind" fn ambuildempty(index: pg_sys::Relation) {
    // SAFETY: Postgres calls this with the new index relation.
    let rel = unsafe { IndexRel::new(index) };
    let dim = index_dimensions(rel);
    let params = params_of(rel);
    let mut meta =
        Meta::new(dim as u32, params.m as u16, params.ef_construction as u16, index_metric(rel));
    if !columns(rel).keys.is_empty() {
        // The directory is created by the first insert.
        meta.flags |= page::FLAG_TENANT_LINKS;
    }
    let w = WalWrite::begin_fork(rel, pg_sys::ForkNumber::INIT_FORKNUM);
    let mut p = w.new_page();
    p.set_meta(&meta);
    w.commit();
}
