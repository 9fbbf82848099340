//! aminsert: add one heap row to a built graph.
//!
//! Inserts are serialised by the index's update lock (a heavyweight lock, so scans are
//! never blocked). Under it, the new element's TID is known before any write, so the graph
//! code plans the whole change with reads only (`graph::plan_insert`), then this file
//! writes it: one WAL record for the new element, its neighbour tuple and the metapage,
//! then one per four pages of existing neighbour lists that change. A row whose vector equals
//! its nearest element's joins that element (duplicates stay reachable).

use super::diskgraph::{index_corrupted, read_meta, DirSlot, DiskGraph};
use super::graph::{
    joins_element, plan_insert, updates_with_in_link, Element, GraphWrite, NodeUpdate, Params,
};
use super::keys::{self, KeyType};
use super::page::{self, DirEntry, Tid};
use super::scankeys::{columns, encode_row, key_types};
use super::storage::{tid_from_ptr, IndexRel, WalWrite, PAGES_PER_RECORD};
use pgrx::pg_sys;
use std::collections::BTreeMap;

#[pgrx::pg_guard]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C-unwind" fn aminsert(
    index: pg_sys::Relation,
    values: *mut pg_sys::Datum,
    isnull: *mut bool,
    heap_tid: pg_sys::ItemPointer,
    _heap: pg_sys::Relation,
    _check_unique: pg_sys::IndexUniqueCheck::Type,
    _index_unchanged: bool,
    _index_info: *mut pg_sys::IndexInfo,
) -> bool {
    // SAFETY: Postgres passes one value/null flag per index column and a valid heap TID.
    unsafe {
        let rel = IndexRel::new(index);
        let cols = columns(rel);
        if *isnull.add(cols.vector) {
            return false;
        }
        let meta = read_meta(rel);
        let value = super::datum::datum_value(meta.metric.kind(), *values.add(cols.vector));
        if value.dims() != meta.dimensions as usize {
            pgrx::ereport!(
                ERROR,
                pgrx::PgSqlErrorCode::ERRCODE_DATA_EXCEPTION,
                format!("expected {} dimensions, not {}", meta.dimensions, value.dims())
            );
        }
        super::datum::check_indexable(&value);
        let Some(v) = super::values::encode(meta.metric, value, true) else {
            return false;
        };
        let keys =
            if cols.keys.is_empty() { Vec::new() } else { encode_row(rel, &cols, values, isnull) };
        check_row_size(rel, page::element_size(v.len()) + keys.len());
        insert_prepared(rel, &v, tid_from_ptr(heap_tid), &keys);
    }
    false
}

/// Where the new element and its neighbour tuple go, which of their blocks are new pages,
/// and the page the next insert fills first.
struct Placement {
    el: Tid,
    nb: Tid,
    fresh: Vec<u32>,
    fill: u32,
    /// The TIDs are a vacuumed element's slots, overwritten in place.
    reuse: bool,
}

/// A vacuumed element's slots the new node can take, or room on a page, looking from the
/// insert page (which VACUUM moves back to the first page it freed space on) towards the
/// end, as pgvector's inserts do. A slot is reusable when VACUUM's `free_deleted` freed it:
/// its element is marked freed (`page::element_freed`), its neighbour lists (the tenant
/// list too) are empty and it is not the entry point. In an index without key columns a
/// deleted element with empty lists also qualifies (slots freed before the mark existed);
/// an index with key columns needs the mark, since a deleted group entry keeps empty lists
/// without being free. The new element must have the old one's length and the new
/// neighbour tuple must fit where the old one was. None when no page from the insert page
/// on has either: `place` then takes fresh pages. The caller holds the update lock. The new
/// node keeps the old neighbour tuple's TID; in an index with key columns the caller raises
/// the metapage's generation, since the slot's keys change (see diskgraph's cache).
fn find_reusable(
    rel: IndexRel,
    meta: &page::Meta,
    el_len: usize,
    nb_len: usize,
) -> (Option<Placement>, Option<u32>) {
    let start = meta.insert_page;
    let nblocks = rel.nblocks();
    if start == page::INVALID_BLOCK || start >= nblocks {
        return (None, None);
    }
    // The first page still holding a freed slot this node could not take: the insert page
    // stays there, so a node that goes elsewhere does not strand the slots after it.
    let mut first_free = None;
    let entry = meta.entry.map(|(t, _)| t);
    for blk in start..nblocks {
        let (cands, room) = {
            let p = rel.read_shared(blk);
            // All-zero pages are free space for `place`; directory pages hold no elements.
            if !p.holds_elements() {
                continue;
            }
            let mut cands = Vec::new();
            for off in 1..=p.max_offset() {
                let Some(bytes) = p.item(off) else { continue };
                let Some((_, deleted, nb, _, _)) = page::element_header(bytes) else { continue };
                let el = Tid { block: blk, offset: off };
                let free = page::element_freed(bytes) || (deleted && !meta.tenant_links());
                if free && bytes.len() == el_len && Some(el) != entry && nb.is_valid() {
                    cands.push((el, nb));
                }
            }
            (cands, p.room())
        };
        for (el, nb) in cands {
            let p = rel.read_shared(nb.block);
            let Some(old) = p.item(nb.offset) else { continue };
            let Some(level) = page::neighbors_level(old) else { continue };
            let mut list = Vec::new();
            let tenant = meta.tenant_links().then_some(page::TENANT_LIST);
            let empty = (0..=level)
                .chain(tenant)
                .all(|l| page::read_neighbors(old, l, &mut list) && list.is_empty());
            if empty && page::maxalign(nb_len) <= page::maxalign(old.len()) + p.room() {
                let fill = first_free.unwrap_or(blk);
                return (
                    Some(Placement { el, nb, fresh: Vec::new(), fill, reuse: true }),
                    first_free,
                );
            }
            if empty {
                first_free.get_or_insert(blk);
            }
        }
        if page::fits(room, &[el_len, nb_len]) {
            let mut at = place(rel, blk, el_len, nb_len);
            if let Some(f) = first_free {
                at.fill = f;
            }
            return (Some(at), first_free);
        }
    }
    (None, first_free)
}

/// Places the node by `page::place_node` against the room left on the insert page, new
/// pages coming from `IndexRel::free_blocks` (all-zero pages first). The caller holds the
/// update lock, so the TIDs stay valid until it writes them.
fn place(rel: IndexRel, insert_page: u32, el_len: usize, nb_len: usize) -> Placement {
    let (mut room, mut max_off) = (0usize, 0u16);
    if insert_page != page::INVALID_BLOCK && insert_page < rel.nblocks() {
        let p = rel.read_shared(insert_page);
        room = p.room();
        max_off = p.max_offset();
    }
    let Some(layout) = page::place_node(room, el_len, nb_len) else {
        refuse_row_size(rel, el_len.max(nb_len))
    };
    let slots = [layout.element, layout.neighbors];
    let need = slots
        .iter()
        .filter_map(|s| if let page::Slot::Fresh(k) = s { Some(k + 1) } else { None })
        .max()
        .unwrap_or(0);
    let fresh = if need > 0 { rel.free_blocks(need) } else { Vec::new() };
    let block_of = |s: page::Slot| match s {
        page::Slot::Current => insert_page,
        page::Slot::Fresh(k) => fresh[k],
    };
    // next offset per block touched: after the insert page's last item, 1 on a new page
    let mut last: Vec<(u32, u16)> = vec![(insert_page, max_off)];
    let mut tid_in = |blk: u32| {
        let i = last.iter().position(|&(b, _)| b == blk).unwrap_or_else(|| {
            last.push((blk, 0));
            last.len() - 1
        });
        last[i].1 += 1;
        Tid { block: blk, offset: last[i].1 }
    };
    let el = tid_in(block_of(layout.element));
    let nb = tid_in(block_of(layout.neighbors));
    let fill = block_of(layout.fill_next(room, el_len, nb_len));
    Placement { el, nb, fresh, fill, reuse: false }
}

/// ERROR for an element tuple of `len` bytes when no page holds it (key columns too long
/// for the vector's dimensions), like Postgres's own index row size errors.
pub(crate) fn check_row_size(rel: IndexRel, len: usize) {
    if !page::fits(page::page_capacity(), &[len]) {
        refuse_row_size(rel, len);
    }
}

pub(crate) fn refuse_row_size(rel: IndexRel, len: usize) -> ! {
    pgrx::ereport!(
        ERROR,
        pgrx::PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
        format!(
            "index row size {len} exceeds hnsw maximum {} for index \"{}\"",
            page::max_tuple_len(),
            super::diskgraph::relation_name(rel)
        )
    );
}

/// The new element's tenant group in the directory: its entry to update, or the page a
/// new entry goes to.
#[derive(Clone, Copy)]
enum GroupSlot {
    Existing { at: Tid, entry: DirEntry },
    New { block: u32, hash: u64 },
}

/// Finds the group of `hash` in the tenant directory, first creating the directory (an
/// index built empty through `ambuildempty`) or a bucket's overflow page when needed, each
/// in its own WAL record: an empty directory page is harmless if we crash after it.
fn group_slot(rel: IndexRel, g: &mut DiskGraph, keys: &[u8], types: &[KeyType]) -> GroupSlot {
    let hash = keys::group_hash(keys, types);
    if g.meta.dir_start == page::INVALID_BLOCK || g.meta.dir_pages == 0 {
        g.reset();
        let blk = rel.free_blocks(1)[0];
        let w = WalWrite::begin(rel);
        let mut mp = w.page(page::METAPAGE_BLKNO);
        let mut p = w.fresh_page(blk);
        p.add_item(&page::encode_dir_header(page::INVALID_BLOCK));
        let mut meta = g.meta;
        meta.dir_start = p.block;
        meta.dir_pages = 1;
        mp.set_meta(&meta);
        w.commit();
        g.meta = meta;
    }
    match g.dir_find(hash) {
        Some(DirSlot::Found { at, entry }) => {
            // A member whose first key differs from the entry's (a hash collision) makes the
            // group impure for good: scans then check every member's keys again.
            let same = entry.pure
                && g.keys_of(entry.entry.pack())
                    .is_some_and(|k| keys::first_key(&k, types) == keys::first_key(keys, types));
            GroupSlot::Existing { at, entry: DirEntry { pure: same, ..entry } }
        }
        Some(DirSlot::Missing { room: Some(block), .. }) => GroupSlot::New { block, hash },
        Some(DirSlot::Missing { room: None, last }) => {
            g.reset();
            let blk = rel.free_blocks(1)[0];
            let w = WalWrite::begin(rel);
            let mut lp = w.page(last);
            let mut p = w.fresh_page(blk);
            p.add_item(&page::encode_dir_header(page::INVALID_BLOCK));
            let block = p.block;
            if let Some(h) = lp.item_mut(1) {
                h.copy_from_slice(&page::encode_dir_header(block));
            }
            w.commit();
            GroupSlot::New { block, hash }
        }
        None => index_corrupted(rel, "unreadable tenant directory"),
    }
}

/// Inserts a prepared (normalised for cosine, dimension-checked) vector for `heap_tid`,
/// with its encoded key columns.
pub(crate) fn insert_prepared(rel: IndexRel, v: &[f32], heap_tid: Tid, keys: &[u8]) {
    let _lock = rel.lock_for_update();
    let mut g = DiskGraph::open(rel);
    let tenant = g.meta.tenant_links();
    let group = tenant.then(|| group_slot(rel, &mut g, keys, &key_types(rel)));
    let meta = g.meta;
    let m = meta.m as usize;
    let params = Params::new(m, meta.ef_construction as usize);
    let level = params.random_level(rand::random::<u64>()).min(page::max_level(m, tenant));
    let (el_len, nb_len) =
        (page::element_size(v.len()) + keys.len(), page::neighbor_size(m, level, tenant));
    let (found, first_free) = find_reusable(rel, &meta, el_len, nb_len);
    let at = found.unwrap_or_else(|| {
        let mut at = place(rel, meta.insert_page, el_len, nb_len);
        // Nothing from the insert page on fits this node (a higher level's neighbour tuple
        // than any freed slot takes): it goes to a fresh page, but the insert page stays,
        // so the slots VACUUM freed still serve the next inserts.
        if let Some(f) = first_free {
            at.fill = f;
        }
        at
    });
    let dist = g.dist;
    let plan = plan_insert(&mut g, at.el.pack(), v, level, params, dist);

    // A row equal to its nearest element joins it instead of adding a node.
    if let Some(&nearest) = plan.neighbors.first().and_then(|l| l.first()) {
        let (mut nv, mut heap) = (Vec::new(), Vec::new());
        g.heap_tids(nearest, &mut heap);
        if let Some(info) = g.info(nearest) {
            // An unreadable vector stays empty and so equals no row's.
            g.vector_of(nearest, &mut nv);
            let nkeys = g.keys_of(nearest);
            let existing = Element {
                deleted: info.deleted,
                heap_tids: heap.len(),
                vector: &nv,
                keys: nkeys.as_deref(),
            };
            if joins_element(&existing, v, keys, page::HEAP_TIDS) {
                g.reset();
                let t = Tid::unpack(nearest);
                let w = WalWrite::begin(rel);
                let mut p = w.page(t.block);
                if let Some(bytes) = p.item_mut(t.offset) {
                    if page::add_element_heap_tid(bytes, heap_tid) {
                        w.commit();
                        return;
                    }
                }
                drop(w);
            }
        }
    }

    // Updated lists of existing nodes, resolved to their neighbour tuples before writing:
    // the global graph's, then the same for the tenant group's flat graph.
    let mut by_block = ListEdits::new();
    let new_id = at.el.pack();
    let updates = updates_with_in_link(&mut g, &plan, params.max_neighbors(0));
    queue_updates(&mut g, &updates, |l| l, &mut by_block);
    let entry_deleted = match group {
        Some(GroupSlot::Existing { entry, .. }) => {
            g.info(entry.entry.pack()).is_some_and(|i| i.deleted)
        }
        _ => false,
    };
    let tenant_plan = match group {
        Some(GroupSlot::Existing { entry, .. }) => Some(super::tenant::plan_insert_into_group(
            &mut g,
            entry.entry.pack(),
            new_id,
            v,
            params,
        )),
        _ => None,
    };
    if let Some((_, tupdates)) = &tenant_plan {
        queue_updates(&mut g, tupdates, |_| page::TENANT_LIST, &mut by_block);
    }
    g.reset();

    // 1. The new node and the metapage, atomically.
    let mut el = vec![0u8; page::element_size(v.len()) + keys.len()];
    page::encode_element(&mut el, level, &[heap_tid], at.nb, v, keys);
    let mut nb = vec![0u8; page::neighbor_size(m, level, tenant)];
    page::encode_neighbors_empty(&mut nb, m, level, tenant);
    for (l, list) in plan.neighbors.iter().enumerate() {
        let tids: Vec<Tid> = list.iter().map(|&x| Tid::unpack(x)).collect();
        page::write_neighbors(&mut nb, l as u8, &tids);
    }
    if let Some((tplan, _)) = &tenant_plan {
        let tids: Vec<Tid> =
            tplan.neighbors.first().into_iter().flatten().map(|&x| Tid::unpack(x)).collect();
        page::write_neighbors(&mut nb, page::TENANT_LIST, &tids);
    }
    // Without key columns the element counter is statistics, refreshed by builds, and
    // inserts rewrite the metapage only when the entry point or the insert page moves (as
    // pgvector does).
    let mut new_meta = meta;
    if tenant {
        // Indexes with tenant groups count their elements exactly: a scan whose groups
        // hold every element has no other tenant to protect and may use the global graph.
        new_meta.elements += 1;
        // A reused slot changes its keys: backends' caches of element keys must go.
        if at.reuse {
            new_meta.generation += 1;
        }
    }
    if let Some((id, lvl)) = plan.new_entry {
        new_meta.entry = Some((Tid::unpack(id), lvl));
    }
    {
        let w = WalWrite::begin(rel);
        new_meta.insert_page = at.fill;
        let meta_changes = new_meta != meta;
        let mut meta_page = meta_changes.then(|| w.page(page::METAPAGE_BLKNO));
        // The group's directory entry: one more element, or a new group entered here.
        if let Some(slot) = group {
            let (block, done) = match slot {
                GroupSlot::Existing { at: d, entry } => {
                    let mut dp = w.page(d.block);
                    let mut e = DirEntry { count: entry.count.saturating_add(1), ..entry };
                    // A group whose entry was deleted (all its rows went) is entered at the
                    // new element from now on; VACUUM can then free the old entry.
                    if entry_deleted {
                        e.entry = at.el;
                    }
                    let ok = dp
                        .item_mut(d.offset)
                        .map(|b| b.copy_from_slice(&page::encode_dir_entry(&e)))
                        .is_some();
                    (d.block, ok)
                }
                GroupSlot::New { block, hash } => {
                    let mut dp = w.page(block);
                    let e = DirEntry { hash, entry: at.el, count: 1, pure: true };
                    (block, dp.add_item(&page::encode_dir_entry(&e)).is_some())
                }
            };
            if !done {
                pgrx::error!(
                    "hnsw insert: tenant directory page {block} changed under the update lock"
                );
            }
        }
        let mut pages: Vec<super::storage::PageMut<'_>> = Vec::new();
        for (tid, bytes) in [(at.el, &el), (at.nb, &nb)] {
            let idx = match pages.iter().position(|p| p.block == tid.block) {
                Some(i) => i,
                None => {
                    let p = if at.fresh.contains(&tid.block) {
                        w.fresh_page(tid.block)
                    } else {
                        w.page(tid.block)
                    };
                    pages.push(p);
                    pages.len() - 1
                }
            };
            if at.reuse {
                if !pages[idx].overwrite_item(tid.offset, bytes) {
                    pgrx::error!(
                        "hnsw insert: reused slot {:?} changed under the update lock",
                        tid
                    );
                }
                continue;
            }
            let got = pages[idx].add_item(bytes);
            if got != Some(tid.offset) {
                pgrx::error!(
                    "hnsw insert: tuple landed at {:?}, expected offset {}",
                    got,
                    tid.offset
                );
            }
        }
        if let Some(mp) = meta_page.as_mut() {
            mp.set_meta(&new_meta);
        }
        w.commit();
    }

    // 2. Existing neighbour lists that now include the new node.
    write_lists(rel, by_block);
}

/// Neighbour-list edits grouped by page: block -> (tuple offset, list, new members).
pub(crate) type ListEdits = BTreeMap<u32, Vec<(u16, u8, Vec<Tid>)>>;

/// Writes neighbour-list edits, up to four pages (a GenericXLog record's limit) per
/// record, locked in block order. The caller holds the update lock, so no other writer
/// locks pages meanwhile, and scans hold one share lock at a time: this cannot deadlock.
pub(crate) fn write_lists(rel: IndexRel, by_block: ListEdits) {
    let by_block: Vec<_> = by_block.into_iter().collect();
    for chunk in by_block.chunks(PAGES_PER_RECORD) {
        let w = WalWrite::begin(rel);
        for (blk, edits) in chunk {
            let mut p = w.page(*blk);
            for (off, level, tids) in edits {
                if let Some(bytes) = p.item_mut(*off) {
                    page::write_neighbors(bytes, *level, tids);
                }
            }
        }
        w.commit();
    }
}

/// Resolves each update to its node's neighbour tuple, grouped by page; `list` names the
/// tuple list a plan level is written to (itself, or the tenant list).
pub(crate) fn queue_updates(
    g: &mut DiskGraph,
    updates: &[NodeUpdate<u64>],
    list: impl Fn(u8) -> u8,
    by_block: &mut ListEdits,
) {
    for u in updates {
        let Some(info) = g.info(u.id) else { continue };
        for (l, ids) in &u.lists {
            let tids = ids.iter().map(|&x| Tid::unpack(x)).collect();
            by_block.entry(info.neighbor_tid.block).or_default().push((
                info.neighbor_tid.offset,
                list(*l),
                tids,
            ));
        }
    }
}
