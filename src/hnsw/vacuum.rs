//! VACUUM, as numbered passes (the orchestrator `ambulkdelete` reads like its own docs):
//! 1. `remove_heap_pointers`: drop heap TIDs of dead rows from elements; an element left
//!    with none is marked deleted (still traversable, never returned).
//! 2. `repair_graph`: a deleted entry point is replaced by a live node of the top level;
//!    every live node whose lists point at deleted elements is repaired as pgvector does
//!    (`graph::plan_repair`: each affected list re-selected over its live neighbours, the
//!    live neighbours of its deleted ones and a search from the node that walks deleted
//!    elements but keeps only live ones, then the node offered to its new neighbours'
//!    lists), and any node a reachability pass finds cut off is linked back.
//! 3. `relink_unreachable` (in amvacuumcleanup, so every VACUUM runs it): links back any
//!    live node that inserts' pruning left without in-links, in the global graph and in
//!    its tenant group's graph (indexes with key columns). All-zero pages (never
//!    initialised, see storage) go to the free space map.
//!
//! In an index with key columns, pass 2 also repairs the tenant lists and moves the
//! directory's entries and pivots off deleted members (`tenant::repair_groups`). After
//! pass 2 no live node links to a deleted element, so deleted elements are unreachable:
//! `free_deleted` empties their lists and marks their slots freed, and inserts overwrite
//! them in place (`insert::find_reusable`), as pgvector's do.

use super::diskgraph::{DiskGraph, GraphView};
use super::graph::{ensure_reachable, plan_repair, replacement_entry, GraphStore, Params};
use super::insert::{queue_updates, write_lists, ListEdits};
use super::keys;
use super::page::{self, Tid};
use super::storage::tid_to_item_pointer;
use super::storage::{IndexRel, WalWrite, PAGES_PER_RECORD};
use pgrx::pg_sys;
use std::collections::{HashMap, HashSet};

type DeadCheck<'a> = dyn FnMut(Tid) -> bool + 'a;

/// Pass 1. Returns (all deleted element ids, heap TIDs removed, live heap TIDs left).
fn remove_heap_pointers(rel: IndexRel, is_dead: &mut DeadCheck) -> (HashSet<u64>, f64, f64) {
    let mut deleted = HashSet::new();
    let (mut removed, mut live) = (0f64, 0f64);
    for blk in 1..rel.nblocks() {
        pgrx::check_for_interrupts!();
        // Look first under a share lock: a page without dead rows is accounted for from
        // it, and only pages with dead rows are locked exclusively and get a WAL record.
        let needs_change = {
            let p = rel.read_shared(blk);
            if p.is_new() {
                continue; // free space (see storage), listed in the free space map by pass 3
            }
            let (mut dead_here, mut live_here) = (Vec::new(), 0usize);
            let mut change = false;
            for off in 1..=p.max_offset() {
                let Some(el) = p.item(off).and_then(page::decode_element) else { continue };
                if el.deleted {
                    dead_here.push(Tid { block: blk, offset: off }.pack());
                } else if el.heap_tids.iter().any(|&t| is_dead(t)) {
                    change = true;
                    break;
                } else {
                    live_here += el.heap_tids.len();
                }
            }
            if !change {
                deleted.extend(dead_here);
                live += live_here as f64;
            }
            change
        };
        if !needs_change {
            continue;
        }
        let w = WalWrite::begin(rel);
        let mut p = w.page(blk);
        for off in 1..=p.max_offset() {
            let Some(bytes) = p.item_mut(off) else { continue };
            let Some(el) = page::decode_element(bytes) else { continue };
            let id = Tid { block: blk, offset: off }.pack();
            if el.deleted {
                deleted.insert(id);
                continue;
            }
            let keep: Vec<Tid> = el.heap_tids.iter().copied().filter(|&t| !is_dead(t)).collect();
            removed += (el.heap_tids.len() - keep.len()) as f64;
            live += keep.len() as f64;
            if keep.len() != el.heap_tids.len() {
                page::set_element_heap_tids(bytes, &keep);
                if keep.is_empty() {
                    deleted.insert(id);
                }
            }
        }
        w.commit();
    }
    (deleted, removed, live)
}

/// Repairs live node `id`, whose lists point at deleted elements, with
/// `graph::plan_repair`: each affected list is re-selected over its live neighbours, the
/// live neighbours of its deleted ones and a live-only search from the node (deleted
/// elements are walked through, never linked), and the node is offered to its new
/// neighbours' lists so it keeps in-links.
/// In a tenant group's view (`GraphView::Tenant`) the node's tenant list is repaired.
pub(crate) fn relink(g: &mut DiskGraph, id: u64, level: u8, params: Params) {
    let dist = g.dist;
    let updates = plan_repair(g, id, level, params, dist);
    let mut by_block = ListEdits::new();
    if g.view_is_tenant() {
        queue_updates(g, &updates, |_| page::TENANT_LIST, &mut by_block);
    } else {
        queue_updates(g, &updates, |l| l, &mut by_block);
    }
    g.reset();
    write_lists(g.rel, by_block);
}

/// Live elements (id, level), their adjacency over all levels, and the all-zero pages.
type LiveGraph = (Vec<(u64, u8)>, HashMap<u64, Vec<u64>>, Vec<u32>);
fn live_graph(g: &mut DiskGraph, rel: IndexRel) -> LiveGraph {
    let mut live = Vec::new();
    let mut free = Vec::new();
    for blk in 1..rel.nblocks() {
        let p = rel.read_shared(blk);
        if p.is_new() {
            free.push(blk);
            continue;
        }
        for off in 1..=p.max_offset() {
            if let Some(el) = p.item(off).and_then(page::decode_element) {
                if !el.deleted {
                    live.push((Tid { block: blk, offset: off }.pack(), el.level));
                }
            }
        }
    }
    let mut adj = HashMap::with_capacity(live.len());
    let mut list = Vec::new();
    for &(id, level) in &live {
        let mut all = Vec::new();
        for l in 0..=level {
            list.clear();
            g.neighbors(id, l, &mut list);
            all.extend_from_slice(&list);
        }
        adj.insert(id, all);
    }
    g.reset();
    (live, adj, free)
}

/// Pass 2. Moves a deleted entry point to a live node of the top level, re-links every
/// live node that pointed at a deleted element, then links in any node that is still
/// unreachable (its in-links all came from deleted nodes): `graph::ensure_reachable`.
fn repair_graph(rel: IndexRel, deleted: &HashSet<u64>) {
    if deleted.is_empty() {
        return;
    }
    let _lock = rel.lock_for_update();
    let mut g = DiskGraph::open(rel);
    let params = Params::new(g.meta.m as usize, g.meta.ef_construction as usize);
    let (live, adj, _) = live_graph(&mut g, rel);
    let entry = g.meta.entry.map(|(ep, l)| (ep.pack(), l));
    if let Some(top) = replacement_entry(entry, |id| deleted.contains(&id), &live) {
        let mut meta = g.meta;
        meta.entry = top.map(|(id, l)| (Tid::unpack(id), l));
        let w = WalWrite::begin(rel);
        let mut p = w.page(page::METAPAGE_BLKNO);
        p.set_meta(&meta);
        w.commit();
        g.meta = meta;
    }
    for &(id, level) in &live {
        pgrx::check_for_interrupts!();
        if adj.get(&id).is_some_and(|ns| ns.iter().any(|n| deleted.contains(n))) {
            relink(&mut g, id, level, params);
        }
    }
    ensure_reachable(&mut g, &live, params);
    super::tenant::repair_groups(rel, &mut g, &live, true, params);
    free_deleted(rel, &mut g);
}

/// Pass 2, last step: makes the space of every deleted element that no live node links to
/// and no directory tuple names reusable, as pgvector's vacuum does. Its neighbour lists
/// (its tenant list too) are emptied, then it is marked freed (`page::mark_element_freed`,
/// what `insert::find_reusable` looks for; pass 1 never empties lists, so an element
/// deleted but not yet repaired around is never taken), and the metapage's insert page
/// moves back to the first freed element's page, where inserts start looking. The entry
/// point is never freed. Lists of the deleted elements kept lose their links to freed
/// ones, so no list anywhere names a slot that may change hands. In an index with key
/// columns the directory's group counts and the metapage's element count are recounted
/// over the elements not freed, and the generation rises when a slot was freed.
fn free_deleted(rel: IndexRel, g: &mut DiskGraph) {
    let tenant = g.meta.tenant_links();
    let types = if tenant { super::scankeys::key_types(rel) } else { Vec::new() };
    let entry = g.meta.entry.map(|(t, _)| t.pack());
    let mut linked: HashSet<u64> = HashSet::new();
    // The directory's tuples: under the update lock nothing moves them while we work.
    let dir = if tenant { g.dir_tuples() } else { Vec::new() };
    linked.extend(dir.iter().map(|t| t.element.pack()));
    // Deleted elements not yet freed (id, level), the ones freed before, and per group hash
    // the elements not freed (indexes with key columns).
    let (mut dead, mut freed_before): (Vec<(u64, u8)>, HashSet<u64>) = (Vec::new(), HashSet::new());
    let mut group_of: HashMap<u64, u64> = HashMap::new();
    let mut list = Vec::new();
    for blk in 1..rel.nblocks() {
        pgrx::check_for_interrupts!();
        let mut here = Vec::new();
        {
            let p = rel.read_shared(blk);
            if p.is_new() {
                continue;
            }
            for off in 1..=p.max_offset() {
                let Some(bytes) = p.item(off) else { continue };
                if let Some(el) = page::decode_element(bytes) {
                    let id = Tid { block: blk, offset: off }.pack();
                    let freed = page::element_freed(bytes);
                    if tenant && !freed {
                        let k = page::element_keys(bytes, el.dim);
                        group_of.insert(id, keys::group_hash(k, &types));
                    }
                    here.push((id, el.level, el.deleted, freed));
                }
            }
        }
        for (id, level, deleted, freed) in here {
            if freed {
                freed_before.insert(id);
            } else if deleted {
                dead.push((id, level));
            } else {
                each_list(g, id, level, &mut list, &mut |_, l| linked.extend(l.iter().copied()));
            }
        }
        g.reset();
    }
    let (free, kept): (Vec<_>, Vec<_>) =
        dead.into_iter().partition(|(id, _)| !linked.contains(id) && entry != Some(*id));
    let gone: HashSet<u64> = free.iter().map(|f| f.0).chain(freed_before).collect();
    // Emptied lists of the freed, and lists of the kept that named a freed element.
    let mut by_block = ListEdits::new();
    let mut first = page::INVALID_BLOCK;
    let freeing = free.iter().map(|&(id, l)| (id, l, true));
    for (id, level, is_free) in freeing.chain(kept.iter().map(|&(id, l)| (id, l, false))) {
        if is_free {
            first = first.min(Tid::unpack(id).block);
        }
        let Some(info) = g.info(id) else { continue };
        let mut edits = Vec::new();
        each_list(g, id, level, &mut list, &mut |l, ns| {
            if is_free && !ns.is_empty() {
                edits.push((info.neighbor_tid.offset, l, Vec::new()));
            } else if !is_free && ns.iter().any(|n| gone.contains(n)) {
                let keep = ns.iter().filter(|n| !gone.contains(n)).map(|&n| Tid::unpack(n));
                edits.push((info.neighbor_tid.offset, l, keep.collect()));
            }
        });
        if !edits.is_empty() {
            by_block.entry(info.neighbor_tid.block).or_default().extend(edits);
        }
    }
    g.reset();
    write_lists(rel, by_block);
    mark_freed(rel, free.iter().map(|f| f.0));
    let mut meta = g.meta;
    if first != page::INVALID_BLOCK
        && (meta.insert_page == page::INVALID_BLOCK || first < meta.insert_page)
    {
        meta.insert_page = first;
    }
    if tenant {
        for (id, _) in &free {
            group_of.remove(id);
        }
        let mut counts: HashMap<u64, u32> = HashMap::new();
        for h in group_of.values() {
            *counts.entry(*h).or_default() += 1;
        }
        let mut edits = Vec::new();
        for t in &dir {
            let Some(e) = t.entry else { continue };
            let n = counts.get(&t.hash).copied().unwrap_or(0);
            if n != e.count {
                edits.push((t.at, page::encode_dir_entry(&page::DirEntry { count: n, ..e })));
            }
        }
        g.reset();
        super::tenant::write_dir_tuples(rel, edits);
        meta.elements = group_of.len() as u64;
        if !free.is_empty() {
            meta.generation += 1;
        }
    }
    if meta != g.meta {
        let w = WalWrite::begin(rel);
        let mut p = w.page(page::METAPAGE_BLKNO);
        p.set_meta(&meta);
        w.commit();
        g.meta = meta;
    }
}

/// Calls `out` with each neighbour list of element `id` (of `level`): its levels, then its
/// tenant list in an index with key columns.
fn each_list(
    g: &mut DiskGraph,
    id: u64,
    level: u8,
    list: &mut Vec<u64>,
    out: &mut dyn FnMut(u8, &[u64]),
) {
    let tenant = g.meta.tenant_links().then_some(page::TENANT_LIST);
    for l in (0..=level).chain(tenant) {
        list.clear();
        if l == page::TENANT_LIST {
            g.set_view(GraphView::Tenant { entry: None });
            g.neighbors(id, 0, list);
            g.set_view(GraphView::Global);
        } else {
            g.neighbors(id, l, list);
        }
        out(l, list);
    }
}

/// Marks elements freed, up to four pages per WAL record.
fn mark_freed(rel: IndexRel, ids: impl Iterator<Item = u64>) {
    let mut tids: Vec<Tid> = ids.map(Tid::unpack).collect();
    tids.sort_unstable_by_key(|t| (t.block, t.offset));
    let mut blocks: Vec<(u32, Vec<u16>)> = Vec::new();
    for t in tids {
        match blocks.last_mut() {
            Some((b, offs)) if *b == t.block => offs.push(t.offset),
            _ => blocks.push((t.block, vec![t.offset])),
        }
    }
    for chunk in blocks.chunks(PAGES_PER_RECORD) {
        let w = WalWrite::begin(rel);
        for (blk, offs) in chunk {
            let mut p = w.page(*blk);
            for &off in offs {
                if let Some(bytes) = p.item_mut(off) {
                    page::mark_element_freed(bytes);
                }
            }
        }
        w.commit();
    }
}

/// Pass 3. Makes every live element reachable from the entry point again, and lists the
/// all-zero pages (a crash's or an error's leftovers) in the free space map, where inserts
/// needing a new page find them. Returns how many pages are free.
fn relink_unreachable(rel: IndexRel) -> usize {
    if rel.nblocks() <= 1 {
        return 0;
    }
    let _lock = rel.lock_for_update();
    let mut g = DiskGraph::open(rel);
    let params = Params::new(g.meta.m as usize, g.meta.ef_construction as usize);
    let (live, _, free) = live_graph(&mut g, rel);
    ensure_reachable(&mut g, &live, params);
    super::tenant::repair_groups(rel, &mut g, &live, false, params);
    rel.record_free_pages(&free);
    free.len()
}

fn stats_or_new(stats: *mut pg_sys::IndexBulkDeleteResult) -> *mut pg_sys::IndexBulkDeleteResult {
    if stats.is_null() {
        // SAFETY: palloc0 of the result struct, as every AM does.
        unsafe { pg_sys::palloc0(std::mem::size_of::<pg_sys::IndexBulkDeleteResult>()) as *mut _ }
    } else {
        stats
    }
}

#[pgrx::pg_guard]
pub unsafe extern "C-unwind" fn ambulkdelete(
    info: *mut pg_sys::IndexVacuumInfo,
    stats: *mut pg_sys::IndexBulkDeleteResult,
    callback: pg_sys::IndexBulkDeleteCallback,
    callback_state: *mut std::ffi::c_void,
) -> *mut pg_sys::IndexBulkDeleteResult {
    // SAFETY: Postgres passes a valid info and callback for the duration of the call.
    unsafe {
        let rel = IndexRel::new((*info).index);
        let stats = stats_or_new(stats);
        let Some(cb) = callback else { return stats };
        let mut is_dead = |t: Tid| {
            let mut ip = pg_sys::ItemPointerData::default();
            tid_to_item_pointer(t, &mut ip);
            cb(&mut ip, callback_state)
        };
        let (deleted, removed, live) = remove_heap_pointers(rel, &mut is_dead);
        repair_graph(rel, &deleted);
        (*stats).tuples_removed += removed;
        (*stats).num_index_tuples = live;
        (*stats).num_pages = rel.nblocks();
        stats
    }
}

#[pgrx::pg_guard]
pub unsafe extern "C-unwind" fn amvacuumcleanup(
    info: *mut pg_sys::IndexVacuumInfo,
    stats: *mut pg_sys::IndexBulkDeleteResult,
) -> *mut pg_sys::IndexBulkDeleteResult {
    // SAFETY: valid info from Postgres.
    unsafe {
        if (*info).analyze_only {
            return stats;
        }
        let stats = stats_or_new(stats);
        let rel = IndexRel::new((*info).index);
        (*stats).pages_free = relink_unreachable(rel) as pg_sys::BlockNumber;
        (*stats).num_pages = rel.nblocks();
        stats
    }
}
