//! The `hnsw` IndexAmRoutine, its reloptions (`m`, `ef_construction`), settings
//! (`hnsw.ef_search`, `hnsw.iterative_scan`, `hnsw.max_scan_tuples`,
//! `hnsw.scan_mem_multiplier`) and cost estimate — pgvector's names and meanings.

use super::page::Metric;
use super::storage::IndexRel;
use crate::fmgr::pg_v1_fn;
use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::pg_sys;
use pgrx::PostgresGucEnum;
use std::ffi::CStr;

pub const DEFAULT_M: i32 = 16;
pub const DEFAULT_EF_CONSTRUCTION: i32 = 64;

#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum IterativeScan {
    #[name = c"off"]
    Off,
    #[name = c"relaxed_order"]
    RelaxedOrder,
    #[name = c"strict_order"]
    StrictOrder,
}

pub static EF_SEARCH: GucSetting<i32> = GucSetting::<i32>::new(40);
pub static ITERATIVE_SCAN: GucSetting<IterativeScan> =
    GucSetting::<IterativeScan>::new(IterativeScan::Off);
pub static MAX_SCAN_TUPLES: GucSetting<i32> = GucSetting::<i32>::new(20000);
pub static SCAN_MEM_MULTIPLIER: GucSetting<f64> = GucSetting::<f64>::new(1.0);
/// ACORN second-hop budget of authorized scans: stop looking through a node's failing
/// neighbours once this many passing nodes were found around it (0 = the list length).
pub static TWO_HOP_LIMIT: GucSetting<i32> = GucSetting::<i32>::new(0);
/// Reports each hnsw scan's work (distances, key checks, batches, exact sweep) as a NOTICE.
pub static SCAN_STATS: GucSetting<bool> = GucSetting::<bool>::new(false);

static mut RELOPT_KIND: pg_sys::relopt_kind::Type = 0;

/// Registers settings and reloptions; called once from _PG_init.
pub fn init() {
    GucRegistry::define_int_guc(
        c"hnsw.ef_search",
        c"Sets the size of the dynamic candidate list for search",
        c"Valid range is 1..1000.",
        &EF_SEARCH,
        1,
        1000,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_enum_guc(
        c"hnsw.iterative_scan",
        c"Sets the mode for iterative scans",
        c"off, relaxed_order or strict_order",
        &ITERATIVE_SCAN,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"hnsw.max_scan_tuples",
        c"Sets the max number of tuples to visit for iterative scans",
        c"",
        &MAX_SCAN_TUPLES,
        1,
        i32::MAX,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_float_guc(
        c"hnsw.scan_mem_multiplier",
        c"Sets the multiple of work_mem to use for iterative scans",
        c"",
        &SCAN_MEM_MULTIPLIER,
        1.0,
        1000.0,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"vecguard.hnsw_two_hop_limit",
        c"Passing nodes an authorized hnsw scan looks for around each node before it stops expanding failing neighbours",
        c"0 means the node's neighbour-list length.",
        &TWO_HOP_LIMIT,
        0,
        1000,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"vecguard.hnsw_scan_stats",
        c"Reports the work of each hnsw index scan as a NOTICE",
        c"Distance computations, key-column checks, result batches, whether the exact sweep ran and the tenant graph was walked, and page pins taken.",
        &SCAN_STATS,
        GucContext::Userset,
        GucFlags::default(),
    );
    // SAFETY: _PG_init runs once per backend before any index use; the option names are
    // static C strings, as add_int_reloption requires.
    unsafe {
        RELOPT_KIND = pg_sys::add_reloption_kind();
        pg_sys::add_int_reloption(
            RELOPT_KIND,
            c"m".as_ptr(),
            c"Max number of connections".as_ptr(),
            DEFAULT_M,
            2,
            100,
            pg_sys::AccessExclusiveLock as pg_sys::LOCKMODE,
        );
        pg_sys::add_int_reloption(
            RELOPT_KIND,
            c"ef_construction".as_ptr(),
            c"Size of the dynamic candidate list for construction".as_ptr(),
            DEFAULT_EF_CONSTRUCTION,
            4,
            1000,
            pg_sys::AccessExclusiveLock as pg_sys::LOCKMODE,
        );
    }
}

/// The parsed reloptions, laid out as build_reloptions fills them.
#[repr(C)]
pub struct HnswOptions {
    vl_len_: i32,
    pub m: i32,
    pub ef_construction: i32,
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn amoptions(
    reloptions: pg_sys::Datum,
    validate: bool,
) -> *mut pg_sys::bytea {
    let tab = [
        crate::compat::relopt_int(c"m", std::mem::offset_of!(HnswOptions, m)),
        crate::compat::relopt_int(
            c"ef_construction",
            std::mem::offset_of!(HnswOptions, ef_construction),
        ),
    ];
    // SAFETY: build_reloptions parses into a palloc'd HnswOptions-sized struct.
    unsafe {
        pg_sys::build_reloptions(
            reloptions,
            validate,
            RELOPT_KIND,
            std::mem::size_of::<HnswOptions>(),
            tab.as_ptr(),
            tab.len() as i32,
        ) as *mut pg_sys::bytea
    }
}

/// (m, ef_construction) of an index, defaults when unset.
pub fn index_options(rel: IndexRel) -> (i32, i32) {
    // SAFETY: rd_options is NULL or the HnswOptions built by amoptions.
    unsafe {
        let opts = (*rel.raw()).rd_options as *const HnswOptions;
        if opts.is_null() {
            (DEFAULT_M, DEFAULT_EF_CONSTRUCTION)
        } else {
            ((*opts).m, (*opts).ef_construction)
        }
    }
}

/// The opclass's metric: support function 2 (a norm) means cosine; otherwise support
/// function 1 names the distance.
pub fn index_metric(rel: IndexRel) -> Metric {
    // SAFETY: index_getprocid returns InvalidOid for a missing support function;
    // get_func_name returns a palloc'd name or NULL.
    unsafe {
        let att = (super::scankeys::columns(rel).vector + 1) as i16;
        if pg_sys::index_getprocid(rel.raw(), att, 2) != pg_sys::InvalidOid {
            return Metric::Cosine;
        }
        let proc_ = pg_sys::index_getprocid(rel.raw(), att, 1);
        let name = pg_sys::get_func_name(proc_);
        let name = if name.is_null() {
            String::new()
        } else {
            CStr::from_ptr(name).to_string_lossy().into_owned()
        };
        match name.as_str() {
            "vector_negative_inner_product" => Metric::InnerProduct,
            "l1_distance" => Metric::L1,
            _ => Metric::L2,
        }
    }
}

/// Dimensions of the indexed column from its typmod; pgvector's errors when unknown or
/// too large.
pub fn index_dimensions(rel: IndexRel) -> usize {
    // SAFETY: an index relation has a tuple descriptor with at least one attribute.
    let vector = super::scankeys::columns(rel).vector;
    let typmod = unsafe { crate::compat::attr_type((*rel.raw()).rd_att, vector).1 };
    if typmod < 0 {
        pgrx::ereport!(
            ERROR,
            pgrx::PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "column does not have dimensions"
        );
    }
    if typmod as usize > super::page::MAX_DIM {
        pgrx::ereport!(
            ERROR,
            pgrx::PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!(
                "column cannot have more than {} dimensions for hnsw index",
                super::page::MAX_DIM
            )
        );
    }
    typmod as usize
}

/// Cost model: never chosen without ORDER BY (the index answers nothing else). With one,
/// a search computes about (levels + 2) · m · ef_search distances before the first row
/// (the startup cost); the total is what walking every reachable element would cost. Each visited node costs a distance and a tuple
/// (cpu_operator_cost + cpu_index_tuple_cost); its page is almost always in shared
/// buffers after the first queries, so visited pages are charged at seq_page_cost rather
/// than random_page_cost (genericcostestimate's choice, which made small indexes look
/// dearer than a sequential scan and a sort of the whole table).
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn amcostestimate(
    root: *mut pg_sys::PlannerInfo,
    path: *mut pg_sys::IndexPath,
    loop_count: f64,
    startup: *mut pg_sys::Cost,
    total: *mut pg_sys::Cost,
    selectivity: *mut pg_sys::Selectivity,
    correlation: *mut f64,
    pages: *mut f64,
) {
    // SAFETY: the planner passes valid pointers; genericcostestimate fills `costs`.
    unsafe {
        if (*path).indexorderbys.is_null() {
            *startup = f64::INFINITY;
            *total = f64::INFINITY;
            *selectivity = 0.0;
            *correlation = 0.0;
            *pages = 0.0;
            crate::compat::disable_index_path(path);
            return;
        }
        let info = (*path).indexinfo;
        let tuples = (*info).tuples.max(1.0);
        let index_pages = ((*info).pages as f64).max(1.0);
        let m = DEFAULT_M as f64;
        let ef = EF_SEARCH.get().max(1) as f64;
        let visited = expected_visits(tuples, m, ef);
        let mut costs: pg_sys::GenericCosts = std::mem::zeroed();
        costs.numIndexTuples = visited;
        pg_sys::genericcostestimate(root, path, loop_count, &mut costs);
        let rel = (*info).rel;
        // A sequential scan's cost counts heap pages only, not the TOAST pages that hold
        // large vectors out of line; charging the index more pages than the heap has for the
        // same vectors would make a 1,536-dim table look cheaper to scan whole.
        let heap_pages = ((*rel).pages as f64).max(1.0);
        let visited_pages = (index_pages * visited / tuples).ceil().min(heap_pages.max(1.0));
        let cpu = visited * (pg_sys::cpu_operator_cost + pg_sys::cpu_index_tuple_cost);
        // Key-column conditions (authorized scans) make the traversal look through failing
        // neighbours: measured on 100k GloVe rows, work grows roughly as 1/sqrt(selectivity)
        // (about 7x at 10%, 20x at 1%), where btree + sort on the key column is cheaper.
        // The selectivity is the relation's (all restrictions), not this path's: the same
        // multiplier for every candidate path, so a path that moves more of the policy into
        // index conditions is never costed above one that leaves them to a Filter.
        let rel_sel =
            if (*rel).tuples > 0.0 { ((*rel).rows / (*rel).tuples).clamp(1e-6, 1.0) } else { 1.0 };
        let acorn = |sel: f64| 1.0 + 2.0 * (1.0 - sel) / sel.sqrt();
        let filtered = if (*path).indexclauses.is_null() { 1.0 } else { acorn(rel_sel) };
        let mut cost = (visited_pages * pg_sys::seq_page_cost + cpu) * filtered;
        // What a scan costs if it never stops: every element it can reach, as a
        // genericcostestimate over all of them prices it (random page reads). LIMIT interpolates between the startup cost and this total by the
        // fraction of the path's rows it needs, so a selective Filter the index cannot test
        // (`WHERE c = 44`) makes the index path dear and the planner takes a scan that
        // returns the LIMIT's rows, as pgvector's cost model does.
        let mut full: pg_sys::GenericCosts = std::mem::zeroed();
        full.numIndexTuples = tuples;
        pg_sys::genericcostestimate(root, path, loop_count, &mut full);
        let mut reachable_cost = full.indexTotalCost;
        // An `=` / `= ANY` condition on the first key column walks the tenant groups' own
        // graphs: an unfiltered search over the group's rows, with only the remaining
        // conditions (clearance, validity) looked through ACORN-style.
        if let Some(tenant_sel) = tenant_clause_selectivity(root, path) {
            reachable_cost *= tenant_sel;
            let n = (tuples * tenant_sel).max(1.0);
            let visited = expected_visits(n, m, ef);
            let pages = (index_pages * visited / tuples).ceil().min(heap_pages);
            let cpu = visited * (pg_sys::cpu_operator_cost + pg_sys::cpu_index_tuple_cost);
            let inner = (rel_sel / tenant_sel).clamp(1e-6, 1.0);
            cost = cost.min((pages * pg_sys::seq_page_cost + cpu) * acorn(inner));
        }
        *startup = cost;
        *total = reachable_cost.max(cost);
        *selectivity = costs.indexSelectivity;
        *correlation = 0.0;
        *pages = visited_pages;
    }
}

/// Elements a search of `n` elements visits (computes a distance for): the descent's m per
/// upper level, then at level 0 the share of ef_search · 2m neighbour checks that find a
/// node not seen before. pgvector's estimate, whose 0.55 was fitted to measured searches.
fn expected_visits(n: f64, m: f64, ef: f64) -> f64 {
    let n = n.max(1.0);
    let entry_level = (n.ln() / m.ln()).floor().max(0.0);
    let layer0_checks = 2.0 * m * ef;
    let layer0_share = 0.55 * n.ln() / (m.ln() * (1.0 + ef.ln()));
    (entry_level * m + layer0_checks * layer0_share).clamp(1.0, n)
}

/// Selectivity of the path's `=` / `= ANY` index condition on the first key column (the
/// tenant), if it has one.
///
/// # Safety
/// `root` and `path` are the planner's, as passed to amcostestimate.
unsafe fn tenant_clause_selectivity(
    root: *mut pg_sys::PlannerInfo,
    path: *mut pg_sys::IndexPath,
) -> Option<f64> {
    // SAFETY: IndexOptInfo arrays have ncolumns entries; indexclauses is a List of
    // IndexClause nodes whose rinfo clauses are the planner's expressions.
    unsafe {
        let info = (*path).indexinfo;
        let ncols = (*info).ncolumns.max(0) as usize;
        let col = (0..ncols)
            .find(|&i| super::scankeys::key_type_of(*(*info).opcintype.add(i)).is_some())?;
        let family = *(*info).opfamily.add(col);
        let clauses = pgrx::PgList::<pg_sys::IndexClause>::from_pg((*path).indexclauses);
        for ic in clauses.iter_ptr() {
            if (*ic).indexcol as usize != col {
                continue;
            }
            let rinfo = (*ic).rinfo;
            let node = (*rinfo).clause as *mut pg_sys::Node;
            let opno = match (*node).type_ {
                pg_sys::NodeTag::T_OpExpr => (*(node as *mut pg_sys::OpExpr)).opno,
                pg_sys::NodeTag::T_ScalarArrayOpExpr
                    if (*(node as *mut pg_sys::ScalarArrayOpExpr)).useOr =>
                {
                    (*(node as *mut pg_sys::ScalarArrayOpExpr)).opno
                }
                _ => continue,
            };
            if pg_sys::get_op_opfamily_strategy(opno, family)
                != pg_sys::BTEqualStrategyNumber as i32
            {
                continue;
            }
            let list = pg_sys::lappend(std::ptr::null_mut(), rinfo as *mut std::ffi::c_void);
            let relid = (*(*info).rel).relid as i32;
            let sel = pg_sys::clauselist_selectivity(
                root,
                list,
                relid,
                pg_sys::JoinType::JOIN_INNER,
                std::ptr::null_mut(),
            );
            return Some(sel.clamp(1e-9, 1.0));
        }
        None
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn amvalidate(_opclassoid: pg_sys::Oid) -> bool {
    true
}

pg_v1_fn!(hnsw_handler, pg_finfo_hnsw_handler, |_fcinfo| {
    // SAFETY: makeNode-equivalent: a zeroed, palloc'd IndexAmRoutine with its node tag.
    unsafe {
        let am = pg_sys::palloc0(std::mem::size_of::<pg_sys::IndexAmRoutine>())
            as *mut pg_sys::IndexAmRoutine;
        let a = &mut *am;
        a.type_ = pg_sys::NodeTag::T_IndexAmRoutine;
        a.amstrategies = 0;
        a.amsupport = 3;
        a.amoptsprocnum = 0;
        a.amcanorder = false;
        a.amcanorderbyop = true;
        a.amcanbackward = false;
        a.amcanunique = false;
        a.amcanmulticol = true;
        a.amoptionalkey = true;
        a.amsearcharray = true;
        a.amsearchnulls = false;
        a.amstorage = false;
        a.amclusterable = false;
        a.ampredlocks = false;
        a.amcanparallel = false;
        a.amcaninclude = false;
        a.amusemaintenanceworkmem = false;
        a.amparallelvacuumoptions = pg_sys::VACUUM_OPTION_PARALLEL_BULKDEL as u8;
        a.amkeytype = pg_sys::InvalidOid;
        a.ambuild = Some(super::build::ambuild);
        a.ambuildempty = Some(super::build::ambuildempty);
        a.aminsert = Some(super::insert::aminsert);
        a.ambulkdelete = Some(super::vacuum::ambulkdelete);
        a.amvacuumcleanup = Some(super::vacuum::amvacuumcleanup);
        a.amcanreturn = None;
        a.amcostestimate = Some(amcostestimate);
        a.amoptions = Some(amoptions);
        a.amproperty = None;
        a.ambuildphasename = None;
        a.amvalidate = Some(amvalidate);
        a.amadjustmembers = None;
        a.ambeginscan = Some(super::scan::ambeginscan);
        a.amrescan = Some(super::scan::amrescan);
        a.amgettuple = Some(super::scan::amgettuple);
        a.amgetbitmap = None;
        a.amendscan = Some(super::scan::amendscan);
        a.ammarkpos = None;
        a.amrestrpos = None;
        a.amestimateparallelscan = None;
        a.aminitparallelscan = None;
        a.amparallelrescan = None;
        pg_sys::Datum::from(am as usize)
    }
});
