//! The `hnsw` IndexAmRoutine and its cost estimate glue (the model is in `cost`; settings
//! and reloptions in `options`).

use super::cost::{self, CostInputs};
use super::options::{amoptions, DEFAULT_M, EF_SEARCH};
use crate::fmgr::pg_v1_fn;
use pgrx::pg_sys;

/// Cost estimate (the model is in `cost`): never chosen without ORDER BY; with one, the
/// planner's numbers go to `cost::estimate`.
#[pgrx::pg_guard]
#[allow(clippy::too_many_arguments)] // Postgres's amcostestimate signature
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
    // SAFETY: the planner passes valid pointers for the path, its index and relation.
    let (inputs, has_order) = unsafe {
        let info = (*path).indexinfo;
        let rel = (*info).rel;
        let inputs = CostInputs {
            tuples: (*info).tuples,
            index_pages: (*info).pages as f64,
            heap_pages: (*rel).pages as f64,
            rel_rows: (*rel).rows,
            rel_tuples: (*rel).tuples,
            index_clauses: !(*path).indexclauses.is_null(),
            m: DEFAULT_M as f64,
            ef_search: EF_SEARCH.get() as f64,
            seq_page_cost: pg_sys::seq_page_cost,
            cpu_per_visit: pg_sys::cpu_operator_cost + pg_sys::cpu_index_tuple_cost,
        };
        (inputs, !(*path).indexorderbys.is_null())
    };
    if !has_order {
        // SAFETY: output pointers from the planner.
        unsafe {
            *startup = f64::INFINITY;
            *total = f64::INFINITY;
            *selectivity = 0.0;
            *correlation = 0.0;
            *pages = 0.0;
            crate::compat::disable_index_path(path);
        }
        return;
    }
    // SAFETY: genericcostestimate fills zeroed GenericCosts for the planner's path; what a
    // scan that never stops costs is its estimate over every element.
    let (costs, full) = unsafe {
        let mut costs: pg_sys::GenericCosts = std::mem::zeroed();
        costs.numIndexTuples = cost::search_visits(&inputs);
        pg_sys::genericcostestimate(root, path, loop_count, &mut costs);
        let mut full: pg_sys::GenericCosts = std::mem::zeroed();
        full.numIndexTuples = inputs.tuples.max(1.0);
        pg_sys::genericcostestimate(root, path, loop_count, &mut full);
        (costs, full)
    };
    // SAFETY: the planner's root and path, as passed to us.
    let tenant_sel = unsafe { tenant_clause_selectivity(root, path) };
    let c = cost::estimate(&inputs, full.indexTotalCost, tenant_sel);
    // SAFETY: output pointers from the planner.
    unsafe {
        *startup = c.startup;
        *total = c.total;
        *selectivity = costs.indexSelectivity;
        *correlation = 0.0;
        *pages = c.pages;
    }
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
