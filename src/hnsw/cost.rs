//! The hnsw cost model, free of Postgres: `am::amcostestimate` reads the planner's
//! numbers into [`CostInputs`] and writes back what [`estimate`] returns.
//!
//! An index scan is never chosen without ORDER BY (the index answers nothing else). With
//! one, a search visits about [`expected_visits`] elements before the first row (the
//! startup cost); the total is what walking every reachable element would cost. Each
//! visited node costs a distance and a tuple (cpu_operator_cost + cpu_index_tuple_cost);
//! its page is almost always in shared buffers after the first queries, so visited pages
//! are charged at seq_page_cost rather than random_page_cost (genericcostestimate's
//! choice, which made small indexes look dearer than a sequential scan and a sort of the
//! whole table).

/// The planner's numbers for one index path.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct CostInputs {
    /// Index tuples and pages (the planner's estimates).
    pub(crate) tuples: f64,
    pub(crate) index_pages: f64,
    /// The heap's pages, rows after all restrictions, and tuples.
    pub(crate) heap_pages: f64,
    pub(crate) rel_rows: f64,
    pub(crate) rel_tuples: f64,
    /// The path has index conditions (key columns: an authorized scan).
    pub(crate) index_clauses: bool,
    pub(crate) m: f64,
    pub(crate) ef_search: f64,
    pub(crate) seq_page_cost: f64,
    /// cpu_operator_cost + cpu_index_tuple_cost.
    pub(crate) cpu_per_visit: f64,
}

/// What the planner gets back.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Cost {
    pub(crate) startup: f64,
    pub(crate) total: f64,
    /// Index pages a search touches.
    pub(crate) pages: f64,
}

/// Elements a search of `n` elements visits (computes a distance for): the descent's m per
/// upper level, then at level 0 the share of ef_search · 2m neighbour checks that find a
/// node not seen before. pgvector's estimate, whose 0.55 was fitted to measured searches.
pub(crate) fn expected_visits(n: f64, m: f64, ef: f64) -> f64 {
    let n = n.max(1.0);
    let entry_level = (n.ln() / m.ln()).floor().max(0.0);
    let layer0_checks = 2.0 * m * ef;
    let layer0_share = 0.55 * n.ln() / (m.ln() * (1.0 + ef.ln()));
    (entry_level * m + layer0_checks * layer0_share).clamp(1.0, n)
}

/// Elements a search of the whole index visits: the `numIndexTuples` to hand
/// genericcostestimate for the path's selectivity.
pub(crate) fn search_visits(i: &CostInputs) -> f64 {
    expected_visits(i.tuples.max(1.0), i.m, i.ef_search.max(1.0))
}

/// Work multiplier of a traversal that looks through failing neighbours, at the share
/// `sel` of elements passing: measured on 100k GloVe rows, work grows roughly as
/// 1/sqrt(selectivity) (about 7x at 10%, 20x at 1%), where btree + sort on the key column
/// is cheaper.
pub(crate) fn acorn_factor(sel: f64) -> f64 {
    1.0 + 2.0 * (1.0 - sel) / sel.sqrt()
}

/// The cost of the path. `reachable_cost` is genericcostestimate's total over every
/// element (what a scan that never stops costs, random page reads); `tenant_sel` the
/// selectivity of an `=` / `= ANY` condition on the first key column, if there is one.
pub(crate) fn estimate(i: &CostInputs, reachable_cost: f64, tenant_sel: Option<f64>) -> Cost {
    let tuples = i.tuples.max(1.0);
    let index_pages = i.index_pages.max(1.0);
    // A sequential scan's cost counts heap pages only, not the TOAST pages that hold
    // large vectors out of line; charging the index more pages than the heap has for the
    // same vectors would make a 1,536-dim table look cheaper to scan whole.
    let heap_pages = i.heap_pages.max(1.0);
    let ef = i.ef_search.max(1.0);
    let visited = expected_visits(tuples, i.m, ef);
    let visited_pages = (index_pages * visited / tuples).ceil().min(heap_pages);
    let cpu = visited * i.cpu_per_visit;
    // The selectivity is the relation's (all restrictions), not this path's: the same
    // multiplier for every candidate path, so a path that moves more of the policy into
    // index conditions is never costed above one that leaves them to a Filter.
    let rel_sel =
        if i.rel_tuples > 0.0 { (i.rel_rows / i.rel_tuples).clamp(1e-6, 1.0) } else { 1.0 };
    let filtered = if i.index_clauses { acorn_factor(rel_sel) } else { 1.0 };
    let mut cost = (visited_pages * i.seq_page_cost + cpu) * filtered;
    // LIMIT interpolates between the startup cost and the total by the fraction of the
    // path's rows it needs, so a selective Filter the index cannot test (`WHERE c = 44`)
    // makes the index path dear and the planner takes a scan that returns the LIMIT's
    // rows, as pgvector's cost model does.
    let mut reachable_cost = reachable_cost;
    // An `=` / `= ANY` condition on the first key column walks the tenant groups' own
    // graphs: an unfiltered search over the group's rows, with only the remaining
    // conditions (clearance, validity) looked through ACORN-style.
    if let Some(tenant_sel) = tenant_sel {
        reachable_cost *= tenant_sel;
        let n = (tuples * tenant_sel).max(1.0);
        let visited = expected_visits(n, i.m, ef);
        let pages = (index_pages * visited / tuples).ceil().min(heap_pages);
        let cpu = visited * i.cpu_per_visit;
        let inner = (rel_sel / tenant_sel).clamp(1e-6, 1.0);
        cost = cost.min((pages * i.seq_page_cost + cpu) * acorn_factor(inner));
    }
    Cost { startup: cost, total: reachable_cost.max(cost), pages: visited_pages }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: CostInputs = CostInputs {
        tuples: 100_000.0,
        index_pages: 20_000.0,
        heap_pages: 15_000.0,
        rel_rows: 100_000.0,
        rel_tuples: 100_000.0,
        index_clauses: false,
        m: 16.0,
        ef_search: 40.0,
        seq_page_cost: 1.0,
        cpu_per_visit: 0.0075,
    };

    // pgvector's visit estimate: bounded by the element count, growing with ef.
    #[test]
    fn visits() {
        assert_eq!(expected_visits(0.0, 16.0, 40.0), 1.0);
        assert_eq!(expected_visits(10.0, 16.0, 40.0), 10.0, "capped at n");
        let (a, b) = (expected_visits(1e6, 16.0, 40.0), expected_visits(1e6, 16.0, 200.0));
        assert!(a > 100.0 && a < b && b < 1e6, "{a} {b}");
        assert_eq!(search_visits(&BASE), expected_visits(1e5, 16.0, 40.0));
    }

    // The startup cost charges visited pages at seq_page_cost, capped by the heap's pages;
    // the total is the reachable cost unless the startup is higher.
    #[test]
    fn plain_search() {
        let c = estimate(&BASE, 50_000.0, None);
        let v = expected_visits(1e5, 16.0, 40.0);
        let pages = (20_000.0 * v / 1e5f64).ceil();
        assert_eq!(c.pages, pages);
        assert!((c.startup - (pages + v * 0.0075)).abs() < 1e-9);
        assert_eq!(c.total, 50_000.0);
        assert_eq!(estimate(&BASE, 1.0, None).total, c.startup);
        let toast = CostInputs { heap_pages: 10.0, ..BASE };
        assert_eq!(estimate(&toast, 1.0, None).pages, 10.0);
    }

    // Key conditions multiply the work by the ACORN factor of the relation's selectivity;
    // a tenant condition caps it at a search over the tenant's share.
    #[test]
    fn filtered_and_tenant_searches() {
        assert_eq!(acorn_factor(1.0), 1.0);
        assert!((acorn_factor(0.01) - 20.8).abs() < 1e-9);
        let plain = estimate(&BASE, 50_000.0, None).startup;
        let f = CostInputs { index_clauses: true, rel_rows: 1_000.0, ..BASE };
        let filtered = estimate(&f, 50_000.0, None);
        assert!((filtered.startup - plain * acorn_factor(0.01)).abs() < 1e-6);
        let tenant = estimate(&f, 50_000.0, Some(0.01));
        assert!(tenant.startup < filtered.startup / 5.0, "{} {}", tenant.startup, filtered.startup);
        assert_eq!(tenant.total, 500.0, "reachable cost scaled by the tenant's share");
        // no rows counted: selectivity 1
        let empty = CostInputs { index_clauses: true, rel_tuples: 0.0, ..BASE };
        assert_eq!(estimate(&empty, 0.0, None).startup, plain);
    }
}
