//! The decisions of an index scan, free of Postgres: whether it can find anything, which
//! graph it walks (the global one, or the caller's tenant groups), with which search
//! options, and whether an exact sweep must follow the graph search. `scan` reads the
//! settings, conditions and tenant directory, asks [`plan_scan`], and does what it says.

use super::graph::SearchOptions;
use super::keys::{Cond, Op};

/// Up to this many values in `tenant = ANY(...)` search the tenant graphs (one seed per
/// value); longer lists use the global graph with the filter.
pub(crate) const MAX_TENANT_SEEDS: usize = 16;

/// The scan settings in force (`hnsw.*`), as the glue read them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ScanSettings {
    /// `hnsw.ef_search`.
    pub(crate) ef_search: i32,
    /// `hnsw.iterative_scan` is not `off`.
    pub(crate) iterative_scan: bool,
    /// `hnsw.two_hop_limit`.
    pub(crate) two_hop_limit: i32,
    /// `hnsw.max_scan_tuples`.
    pub(crate) max_scan_tuples: i32,
}

/// What the tenant directory holds for the caller's groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct GroupsFound {
    /// The groups' element counts summed.
    pub(crate) count: u64,
    /// Every group is pure and its first key satisfies the first key conditions.
    pub(crate) proven: bool,
}

/// What a scan does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ScanPlan {
    /// A condition has no value (`tenant = ANY(NULL)`): no row, no work.
    pub(crate) nothing: bool,
    /// The scan has key conditions: nodes are tested, and an exact sweep may follow.
    pub(crate) filtered: bool,
    /// Every element the walk can reach passes the first key conditions, so they need no
    /// per-node test (rows are still tested before they leave the index).
    pub(crate) first_key_proven: bool,
    /// Walk the caller's tenant groups from their seeds instead of the global graph.
    pub(crate) tenant_walk: bool,
    /// Tenant walk: the groups' element counts summed.
    pub(crate) tenant_count: Option<u64>,
    /// Batches continue past the first one.
    pub(crate) iterative: bool,
    /// Beam width.
    pub(crate) ef: usize,
    pub(crate) opts: SearchOptions,
}

/// Whether the glue should set the node filter and look the caller's groups up: the scan
/// has key conditions and none of them is unsatisfiable.
pub(crate) fn wants_groups(conds: &[Cond]) -> bool {
    !conds.is_empty() && !conds.iter().any(Cond::unsatisfiable)
}

/// The condition naming the caller's tenant groups: of the `=` / `= ANY` conditions on the
/// first key column, the one with the fewest values, if it has at most
/// [`MAX_TENANT_SEEDS`].
pub(crate) fn tenant_condition(conds: &[Cond]) -> Option<&Cond> {
    let c = conds.iter().filter(|c| c.col == 0 && c.op == Op::Eq).min_by_key(|c| c.values.len())?;
    (c.values.len() <= MAX_TENANT_SEEDS).then_some(c)
}

/// Plans a scan over an index of `elements` elements (counted exactly when it has tenant
/// groups), given its key conditions, the caller's groups (None: no tenant path) and the
/// settings.
pub(crate) fn plan_scan(
    conds: &[Cond],
    elements: u64,
    groups: Option<GroupsFound>,
    s: &ScanSettings,
) -> ScanPlan {
    let filtered = !conds.is_empty();
    let nothing = conds.iter().any(Cond::unsatisfiable);
    let groups = if filtered && !nothing { groups } else { None };
    // The caller's groups hold every element: no other tenant's data exists to leak, and
    // the hierarchical global graph is faster than walking each group (an admin token, a
    // single-tenant table).
    let covers_all = groups.is_some_and(|t| t.count > 0 && t.count >= elements);
    let tenant = if covers_all { None } else { groups };
    // Authorized scans always continue past ef_search: the filter lives inside the index,
    // so "exactly k rows" is the index's job, not the user's.
    let iterative = filtered || s.iterative_scan;
    // In a tenant walk every node is in the caller's groups: with no other condition there
    // is nothing to look through, and the unfiltered expansion (page-batched scoring) is
    // used; the key check still runs on each node (impure groups) or on each returned row
    // (pure groups).
    let only_tenant = (tenant.is_some() || covers_all) && conds.iter().all(|c| c.col == 0);
    ScanPlan {
        nothing,
        filtered,
        first_key_proven: groups.is_some_and(|t| t.proven),
        tenant_walk: tenant.is_some(),
        tenant_count: tenant.map(|t| t.count),
        iterative,
        ef: s.ef_search.max(1) as usize,
        opts: SearchOptions {
            filtered: filtered && !only_tenant,
            two_hop_limit: s.two_hop_limit.max(0) as usize,
            max_visited: if iterative && !filtered { s.max_scan_tuples.max(1) as usize } else { 0 },
            one_batch: !iterative,
        },
    }
}

/// Whether a scan whose graph search is done must sweep every element to be exact: it has
/// key conditions, has not swept yet, and is not a tenant walk that visited every element
/// of its groups (`visited`: the search's visited count, None without a search).
pub(crate) fn needs_sweep(
    filtered: bool,
    swept: bool,
    tenant_count: Option<u64>,
    visited: Option<usize>,
) -> bool {
    let complete = match (tenant_count, visited) {
        (Some(n), Some(v)) => v as u64 >= n,
        (Some(n), None) => n == 0,
        _ => false,
    };
    filtered && !swept && !complete
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hnsw::keys::KeyValue;

    const SETTINGS: ScanSettings = ScanSettings {
        ef_search: 40,
        iterative_scan: false,
        two_hop_limit: 0,
        max_scan_tuples: 20_000,
    };

    fn cond(col: usize, op: Op, n: usize) -> Cond {
        Cond { col, op, values: (0..n as i64).map(KeyValue::Int).collect() }
    }

    // No conditions: the plain global search, one batch unless iterative scans are on.
    #[test]
    fn unfiltered_scan() {
        let p = plan_scan(&[], 100, None, &SETTINGS);
        assert!(!p.nothing && !p.filtered && !p.tenant_walk && !p.iterative);
        assert_eq!(p.ef, 40);
        assert!(p.opts.one_batch && !p.opts.filtered && p.opts.max_visited == 0);
        let it = ScanSettings { iterative_scan: true, ..SETTINGS };
        let p = plan_scan(&[], 100, None, &it);
        assert!(p.iterative && !p.opts.one_batch && p.opts.max_visited == 20_000);
        let zero = ScanSettings { ef_search: 0, max_scan_tuples: 0, ..it };
        let p = plan_scan(&[], 100, None, &zero);
        assert_eq!((p.ef, p.opts.max_visited), (1, 1));
    }

    // An empty `= ANY` list finds nothing and looks nothing up.
    #[test]
    fn empty_condition_finds_nothing() {
        let conds = [cond(0, Op::Eq, 0)];
        assert!(!wants_groups(&conds));
        let p = plan_scan(&conds, 100, Some(GroupsFound { count: 5, proven: true }), &SETTINGS);
        assert!(p.nothing && !p.tenant_walk && !p.first_key_proven);
    }

    // A tenant condition walks the groups; other columns' conditions keep ACORN filtering.
    #[test]
    fn tenant_walk_and_filtering() {
        let conds = [cond(0, Op::Eq, 2)];
        assert!(wants_groups(&conds));
        let g = GroupsFound { count: 10, proven: true };
        let p = plan_scan(&conds, 100, Some(g), &SETTINGS);
        assert!(p.filtered && p.iterative && p.tenant_walk && p.first_key_proven);
        assert_eq!(p.tenant_count, Some(10));
        assert!(!p.opts.filtered, "only the tenant condition: unfiltered expansion");
        assert_eq!(p.opts.max_visited, 0, "authorized scans are not capped");
        let conds = [cond(0, Op::Eq, 2), cond(1, Op::Lt, 1)];
        let p = plan_scan(&conds, 100, Some(GroupsFound { proven: false, ..g }), &SETTINGS);
        assert!(p.tenant_walk && p.opts.filtered && !p.first_key_proven);
        // no groups found: the global graph with the filter
        let p = plan_scan(&conds, 100, None, &SETTINGS);
        assert!(!p.tenant_walk && p.opts.filtered && p.tenant_count.is_none());
    }

    // Groups holding every element use the global graph, still proven.
    #[test]
    fn groups_covering_everything_use_the_global_graph() {
        let conds = [cond(0, Op::Eq, 1)];
        let p = plan_scan(&conds, 10, Some(GroupsFound { count: 10, proven: true }), &SETTINGS);
        assert!(!p.tenant_walk && p.first_key_proven && !p.opts.filtered);
        assert_eq!(p.tenant_count, None);
        // an empty index is not covered by empty groups
        let p = plan_scan(&conds, 0, Some(GroupsFound { count: 0, proven: true }), &SETTINGS);
        assert!(p.tenant_walk && p.tenant_count == Some(0));
    }

    // The tenant condition is the smallest `=` list on the first column, if short enough.
    #[test]
    fn tenant_condition_choice() {
        let conds =
            [cond(0, Op::Eq, 3), cond(0, Op::Eq, 2), cond(1, Op::Eq, 1), cond(0, Op::Lt, 1)];
        assert_eq!(tenant_condition(&conds).map(|c| c.values.len()), Some(2));
        assert!(tenant_condition(&[cond(0, Op::Eq, MAX_TENANT_SEEDS + 1)]).is_none());
        assert!(tenant_condition(&[cond(0, Op::Eq, MAX_TENANT_SEEDS)]).is_some());
        assert!(tenant_condition(&[cond(1, Op::Eq, 1), cond(0, Op::Ge, 1)]).is_none());
    }

    // A sweep follows a filtered search unless a tenant walk saw all of its groups.
    #[test]
    fn sweep_rule() {
        assert!(!needs_sweep(false, false, None, Some(3)), "unfiltered: never");
        assert!(needs_sweep(true, false, None, Some(3)));
        assert!(!needs_sweep(true, true, None, Some(3)), "swept already");
        assert!(!needs_sweep(true, false, Some(3), Some(3)), "walked every member");
        assert!(needs_sweep(true, false, Some(4), Some(3)), "a member was not reached");
        assert!(!needs_sweep(true, false, Some(0), None));
        assert!(needs_sweep(true, false, Some(1), None));
    }
}
