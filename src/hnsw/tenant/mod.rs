//! Tenant groups. An index with key columns keeps, beside the global graph, one flat graph
//! per tenant group: the rows whose first key column hashes alike (`keys::group_hash`),
//! linked through each element's tenant list (`page::TENANT_LIST`). A directory after the
//! metapage maps each group's hash to its entry element, element count and pivots
//! (`page::DirEntry`). `plan` holds the pure part (the build's grouping, purity and the
//! directory's page layout); this file the glue of each phase: the groups a scan walks,
//! where an insert joins its group, VACUUM's relinking and `hnsw_check`'s verification.
//! Buffer reads and writes stay in `storage` and `diskgraph`.

mod plan;
pub(crate) use plan::{directory_pages, group_members, group_purity, DirTuple, GroupMembers};

use super::diskgraph::{index_corrupted, DirTupleAt, DiskGraph, GraphView};
use super::graph::GraphStore;
use super::graph::{
    ensure_reachable, plan_insert, updates_with_in_link, InsertPlan, NodeUpdate, Params,
};
use super::keys::{self, Cond};
use super::page::{self, Tid};
use super::scankeys::{key_types, Columns};
use super::scanplan::tenant_condition;
use super::storage::{IndexRel, WalWrite, PAGES_PER_RECORD};
use std::collections::{HashMap, HashSet, VecDeque};

/// The caller's tenant groups, from an `=` / `= ANY` condition on the first key column of
/// an index with tenant graphs.
pub(crate) struct TenantGroups {
    /// Each group's starting elements (entry, then pivots).
    pub(crate) seeds: Vec<Vec<u64>>,
    /// (hash, directory count) of each group.
    pub(crate) walked: Vec<(u64, u32)>,
    /// The groups' element counts summed.
    pub(crate) count: u64,
    /// Every group is pure and its one first key satisfies every condition on the first
    /// key column: each element the groups hold passes those conditions.
    pub(crate) proven: bool,
}

/// The tenant path of an authorized scan: looks the condition's values up in the tenant
/// directory (no groups: no authorized element). A pure group whose key fails the first
/// key conditions (a hash collision with another value) holds nothing for the caller and
/// is left out.
pub(crate) fn scan_groups(
    graph: &mut DiskGraph,
    cols: &Columns,
    conds: &[Cond],
) -> Option<TenantGroups> {
    if !graph.meta.tenant_links() {
        return None;
    }
    let ty = cols.keys.first()?.1;
    let c = tenant_condition(conds)?;
    let mut hashes: Vec<u64> = c.values.iter().map(|v| keys::value_group_hash(ty, v)).collect();
    hashes.sort_unstable();
    hashes.dedup();
    let types = cols.key_types();
    let first: Vec<Cond> = conds.iter().filter(|c| c.col == 0).cloned().collect();
    let mut out = TenantGroups { seeds: Vec::new(), walked: Vec::new(), count: 0, proven: true };
    for h in hashes {
        let Some((entry, starts)) = graph.dir_group(h) else { continue };
        if entry.pure {
            let Some(k) = graph.keys_of(entry.entry.pack()) else { continue };
            if !keys::matches(&k, &types, &first) {
                continue;
            }
        } else {
            out.proven = false;
        }
        out.seeds.push(starts);
        out.walked.push((h, entry.count));
        out.count += entry.count as u64;
    }
    Some(out)
}

/// A group's members with their keys: `ids` when they are every element the directory
/// counts (`count`), None otherwise (pruning left one unlinked, or one cannot be read).
pub(crate) fn members_of(
    graph: &mut DiskGraph,
    types: &[keys::KeyType],
    count: u32,
    ids: impl Iterator<Item = u64>,
) -> Option<GroupMembers> {
    let mut ids: Vec<u64> = ids.collect();
    if ids.len() != count as usize {
        return None;
    }
    // In element order, so the members that pass are read page by page.
    ids.sort_unstable();
    let mut m = GroupMembers::new(count, graph.meta.insert_page);
    for id in ids {
        m.push(id, &graph.keys_of(id)?);
    }
    m.decode_ints(types);
    Some(m)
}

/// Most index pages `extend_members` reads for a group of `count` elements: past this a
/// walk of the group is the cheaper way to learn its members again.
fn tail_pages_limit(count: u32) -> u32 {
    8 + count / 8
}

/// Brings members recorded at a smaller directory count (`m.count`) up to `count` without
/// walking the group: within a metapage generation no slot changes hands and inserts place
/// their elements from the insert page on (`m.tail`, read before the members' count), so
/// the elements that joined since lie on the pages from there to the end. Reads those
/// pages, adds the group's elements not yet known, and succeeds only when the members then
/// number exactly `count`, the directory still counts `count` and the generation has not
/// moved (an element placed elsewhere, on an all-zero page left by a crash, makes the
/// count differ: the caller then walks). Every member a scan returns is still tested
/// against the whole filter on its page.
pub(crate) fn extend_members(
    graph: &mut DiskGraph,
    types: &[keys::KeyType],
    hash: u64,
    count: u32,
    m: &mut GroupMembers,
) -> bool {
    if m.count >= count || m.tail == page::INVALID_BLOCK {
        return false;
    }
    let rel = graph.rel;
    let Ok(meta) = rel.meta() else { return false };
    if meta.generation != graph.cache_generation() {
        return false;
    }
    let nblocks = rel.nblocks();
    if m.tail >= nblocks || nblocks - m.tail > tail_pages_limit(count) {
        return false;
    }
    // Members recorded on the tail pages (inserted between the metapage's and the count's
    // reads at recording) are found there again.
    let known: HashSet<u64> =
        m.ids.iter().copied().filter(|&id| Tid::unpack(id).block >= m.tail).collect();
    let before = m.ids.len();
    for blk in m.tail..nblocks {
        let p = rel.read_shared(blk);
        if !p.holds_elements() {
            continue;
        }
        for off in 1..=p.max_offset() {
            let Some(bytes) = p.item(off) else { continue };
            let Some((_, _, _, dim, _)) = page::element_header(bytes) else { continue };
            let id = Tid { block: blk, offset: off }.pack();
            let k = page::element_keys(bytes, dim);
            if !page::element_freed(bytes)
                && keys::group_hash(k, types) == hash
                && !known.contains(&id)
            {
                if m.ids.len() >= count as usize {
                    return false;
                }
                m.push(id, k);
            }
        }
    }
    let now = graph.dir_group(hash).map(|(e, _)| e.count);
    if m.ids.len() != count as usize
        || now != Some(count)
        || rel.meta().map(|x| x.generation).ok() != Some(meta.generation)
    {
        return false;
    }
    m.count = count;
    m.tail = meta.insert_page;
    m.decode_ints_from(types, before);
    true
}

/// Every element of a group, found by walking its tenant lists from `seeds` (the entry
/// and pivots), deleted members included.
pub(crate) fn enumerate(graph: &mut DiskGraph, seeds: &[u64]) -> Vec<u64> {
    graph.set_view(GraphView::Tenant { entry: None });
    let mut seen: std::collections::HashSet<u64> = seeds.iter().copied().collect();
    let mut todo: Vec<u64> = seen.iter().copied().collect();
    let mut list = Vec::new();
    while let Some(id) = todo.pop() {
        list.clear();
        graph.neighbors(id, 0, &mut list);
        for &n in &list {
            if seen.insert(n) {
                todo.push(n);
            }
        }
    }
    graph.set_view(GraphView::Global);
    seen.into_iter().collect()
}

/// The members whose keys meet every condition, in the members' order (`members_of`
/// keeps them in element order, so they are read page by page).
pub(crate) fn passing(m: &GroupMembers, types: &[keys::KeyType], conds: &[Cond]) -> Vec<u64> {
    m.filter(&keys::Matcher::new(types, conds))
}

/// Plans the new node's place in its tenant group's flat graph (entered at `entry`): its
/// tenant list, and the group members whose tenant lists gain it (with the same in-link
/// rule as the global graph, so the group stays connected).
pub(crate) fn plan_insert_into_group(
    g: &mut DiskGraph,
    entry: u64,
    new_id: u64,
    v: &[f32],
    params: Params,
) -> (InsertPlan<u64>, Vec<NodeUpdate<u64>>) {
    g.set_view(GraphView::Tenant { entry: Some(entry) });
    let dist = g.dist;
    let plan = plan_insert(g, new_id, v, 0, params, dist);
    let updates = updates_with_in_link(g, &plan, params.max_neighbors(0));
    g.set_view(GraphView::Global);
    (plan, updates)
}

/// VACUUM's tenant part, for every group with live members (`live`, the index's live
/// elements; the caller holds the update lock):
/// - the directory's entry and pivots move off deleted members onto live ones (a deleted
///   one is replaced by a live tenant-list neighbour of it not already a start, else by
///   another live member, else, for a pivot, by the entry);
/// - with `repair_lists` (pass 2, after the global graph's repair and before
///   `free_deleted`), every live member whose tenant list names a deleted element is
///   repaired as the global lists are (`vacuum::relink` in the group's view);
/// - the group's live members are made reachable from its entry (`ensure_reachable`).
///
/// After pass 2 no live element and no directory tuple of such a group names a deleted
/// element, so `free_deleted` can free them. A group without live members keeps its
/// directory tuples and the deleted elements they name. Returns how many members were
/// linked back.
pub(crate) fn repair_groups(
    rel: IndexRel,
    g: &mut DiskGraph,
    live: &[(u64, u8)],
    repair_lists: bool,
    params: Params,
) -> usize {
    if !g.meta.tenant_links() {
        return 0;
    }
    let types = key_types(rel);
    let is_live: HashSet<u64> = live.iter().map(|l| l.0).collect();
    let mut groups: HashMap<u64, Vec<(u64, u8)>> = HashMap::new();
    for &(id, _) in live {
        if let Some(k) = g.keys_of(id) {
            groups.entry(keys::group_hash(&k, &types)).or_default().push((id, 0));
        }
    }
    let mut tuples: HashMap<u64, Vec<DirTupleAt>> = HashMap::new();
    for t in g.dir_tuples() {
        tuples.entry(t.hash).or_default().push(t);
    }
    g.reset();
    let mut edits: Vec<DirEdit> = Vec::new();
    let mut list = Vec::new();
    let mut linked = 0;
    for (hash, members) in &groups {
        pgrx::check_for_interrupts!();
        let Some(dir) = tuples.get(hash) else { continue };
        let Some(entry) = dir.iter().find_map(|t| t.entry.map(|e| (t.at, e))) else { continue };
        let mut used: HashSet<u64> = dir.iter().map(|t| t.element.pack()).collect();
        let mut spare = members.iter().map(|m| m.0);
        let mut replace = |g: &mut DiskGraph, old: u64, used: &mut HashSet<u64>| {
            g.set_view(GraphView::Tenant { entry: None });
            list.clear();
            g.neighbors(old, 0, &mut list);
            g.set_view(GraphView::Global);
            let near = list.iter().copied().find(|n| is_live.contains(n) && !used.contains(n));
            let new = near.or_else(|| spare.by_ref().find(|id| !used.contains(id)))?;
            used.insert(new);
            Some(new)
        };
        let new_entry = if is_live.contains(&entry.1.entry.pack()) {
            entry.1.entry.pack()
        } else {
            let Some(e) = replace(g, entry.1.entry.pack(), &mut used) else { continue };
            let moved = page::DirEntry { entry: Tid::unpack(e), ..entry.1 };
            edits.push((entry.0, page::encode_dir_entry(&moved)));
            e
        };
        for t in dir.iter().filter(|t| t.entry.is_none() && !is_live.contains(&t.element.pack())) {
            let p = replace(g, t.element.pack(), &mut used).unwrap_or(new_entry);
            edits.push((t.at, page::encode_dir_pivot(*hash, Tid::unpack(p))));
        }
        g.set_view(GraphView::Tenant { entry: Some(new_entry) });
        if repair_lists {
            for &(id, _) in members {
                list.clear();
                g.neighbors(id, 0, &mut list);
                if list.iter().any(|n| !is_live.contains(n)) {
                    super::vacuum::relink(g, id, 0, params);
                }
            }
            g.reset();
        }
        linked += ensure_reachable(g, members, params);
        g.set_view(GraphView::Global);
        g.reset();
    }
    write_dir_tuples(rel, edits);
    linked
}

/// A directory tuple's new bytes, where it lies.
pub(crate) type DirEdit = (Tid, [u8; page::DIR_ENTRY_BYTES]);

/// Rewrites directory tuples in place (same size), up to four pages per WAL record.
pub(crate) fn write_dir_tuples(rel: IndexRel, mut edits: Vec<DirEdit>) {
    edits.sort_by_key(|e| (e.0.block, e.0.offset));
    type Tuple = (u16, [u8; page::DIR_ENTRY_BYTES]);
    let mut by_block: Vec<(u32, Vec<Tuple>)> = Vec::new();
    for (at, b) in edits {
        match by_block.last_mut() {
            Some((blk, v)) if *blk == at.block => v.push((at.offset, b)),
            _ => by_block.push((at.block, vec![(at.offset, b)])),
        }
    }
    for chunk in by_block.chunks(PAGES_PER_RECORD) {
        let w = WalWrite::begin(rel);
        for (blk, tuples) in chunk {
            let mut p = w.page(*blk);
            for (off, b) in tuples {
                match p.item_mut(*off) {
                    Some(dst) if dst.len() == b.len() => dst.copy_from_slice(b),
                    _ => index_corrupted(rel, format!("directory tuple {blk},{off} moved")),
                }
            }
        }
        w.commit();
    }
}

/// Tenant lists and directory: lists stay inside their group, the directory names each
/// group once with an element of the group and the group's size, and a group marked pure
/// has one first key (scans skip the tenant check in pure groups). Returns how many live
/// elements their group's traversal (from the directory entry, through deleted members
/// too) does not reach: like the global count, not corruption (scans then sweep).
pub(crate) fn check_groups(
    rel: IndexRel,
    elements: &HashMap<u64, (u8, bool, Tid)>,
    group_of: &HashMap<u64, u64>,
    first_of: &HashMap<u64, Vec<u8>>,
    directory: &HashMap<u64, page::DirEntry>,
    meta_elements: u64,
) -> usize {
    let mut sizes: HashMap<u64, u32> = HashMap::new();
    let mut tadj: HashMap<u64, Vec<u64>> = HashMap::new();
    let mut list = Vec::new();
    for (&id, &(_, _, nb)) in elements {
        let g = group_of[&id];
        *sizes.entry(g).or_default() += 1;
        let p = rel.read_shared(nb.block);
        let Some(bytes) = p.item(nb.offset) else {
            index_corrupted(rel, format!("neighbour tuple {nb:?} missing"))
        };
        if !page::read_neighbors(bytes, page::TENANT_LIST, &mut list) {
            index_corrupted(rel, format!("element {:?} has no tenant list", Tid::unpack(id)));
        }
        for n in &list {
            if group_of.get(&n.pack()) != Some(&g) {
                index_corrupted(
                    rel,
                    format!(
                        "element {:?} has {n:?} of another tenant group in its tenant list",
                        Tid::unpack(id)
                    ),
                );
            }
        }
        tadj.insert(id, list.iter().map(|t| t.pack()).collect());
    }
    for (&g, &n) in &sizes {
        let Some(e) = directory.get(&g) else {
            index_corrupted(rel, format!("tenant group {g:#x} has no directory entry"))
        };
        if e.count != n {
            index_corrupted(
                rel,
                format!(
                    "tenant group {g:#x}: directory counts {} elements, index has {n}",
                    e.count
                ),
            );
        }
        if group_of.get(&e.entry.pack()) != Some(&g) {
            index_corrupted(
                rel,
                format!("tenant group {g:#x}: directory entry {:?} is not a member", e.entry),
            );
        }
    }
    if meta_elements != elements.len() as u64 {
        index_corrupted(
            rel,
            format!("metapage counts {meta_elements} elements, index has {}", elements.len()),
        );
    }
    if let Some(g) = directory.keys().find(|g| !sizes.contains_key(g)) {
        index_corrupted(rel, format!("directory entry for tenant group {g:#x} without elements"));
    }
    for (&id, &g) in group_of {
        let e = &directory[&g];
        if e.pure && first_of.get(&id) != first_of.get(&e.entry.pack()) {
            index_corrupted(
                rel,
                format!(
                    "tenant group {g:#x} is marked pure but element {:?} has another first key",
                    Tid::unpack(id)
                ),
            );
        }
    }
    let mut live_by_group: HashMap<u64, Vec<u64>> = HashMap::new();
    for (&id, el) in elements {
        if !el.1 {
            live_by_group.entry(group_of[&id]).or_default().push(id);
        }
    }
    let mut unreachable = 0;
    for e in directory.values() {
        let mut seen = std::collections::HashSet::from([e.entry.pack()]);
        let mut q = VecDeque::from([e.entry.pack()]);
        while let Some(x) = q.pop_front() {
            for &y in tadj.get(&x).map(|v| v.as_slice()).unwrap_or(&[]) {
                if seen.insert(y) {
                    q.push_back(y);
                }
            }
        }
        unreachable += live_by_group
            .get(&e.hash)
            .map_or(0, |ids| ids.iter().filter(|id| !seen.contains(id)).count());
    }
    unreachable
}
