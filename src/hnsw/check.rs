//! `vecguard.hnsw_check(index regclass)`: verifies the graph's invariants, as amcheck does
//! for btree, raising ERROR (XX002 index_corrupted) at the first violation:
//! - the metapage has our magic and version, and every data page our page id (all-zero
//!   pages, which a crash can leave, are free space: counted as unused pages);
//! - every element and neighbour tuple decodes; each element's neighbour TID points at a
//!   neighbour tuple of the element's level;
//! - every neighbour points at an element tuple whose level is at least the list's level,
//!   and no list holds more than its capacity (the format guarantees it) or itself;
//! - the entry point is a live element of the highest live level;
//! - indexes with key columns: every tenant list links only elements of the same tenant
//!   group, each group has exactly one directory entry, naming an element of the group and
//!   the group's element count (deleted elements included, freed slots not), and the
//!   metapage counts every element; directory pivots are members of their group;
//! - a slot VACUUM freed (`page::element_freed`) has empty lists and nothing links to it
//!   (it is not an element: a link to it reads as a link to a non-element);
//!
//! Returns a one-line summary with the counts of live elements, heap pointers and live
//! elements not reachable from the entry point on level 0 (where every search ends).
//! Unreachable elements are not corruption: HNSW pruning can cut a node's last in-link
//! on insert (pgvector shares this); VACUUM's last pass links them back in.

use super::diskgraph::{element_parts, index_corrupted, read_meta};
use super::keys;
use super::page::{self, Tid};
use super::scankeys::key_types;
use super::storage::IndexRel;
use super::values;
use crate::fmgr::pg_v1_fn;
use pgrx::pg_sys;
use std::collections::{HashMap, VecDeque};

pub(crate) fn check(rel: IndexRel) -> String {
    let meta = read_meta(rel);
    let nblocks = rel.nblocks();
    // element id -> (level, deleted, neighbour tid)
    let mut elements: HashMap<u64, (u8, bool, Tid)> = HashMap::new();
    let mut heap_pointers = 0usize;
    let mut neighbor_levels: HashMap<Tid, u8> = HashMap::new();
    let types = key_types(rel);
    let tenant = meta.tenant_links();
    // group hash per element, and the directory's entries by hash
    let mut group_of: HashMap<u64, u64> = HashMap::new();
    let mut first_of: HashMap<u64, Vec<u8>> = HashMap::new();
    let mut directory: HashMap<u64, page::DirEntry> = HashMap::new();
    let mut pivots: Vec<(u64, Tid)> = Vec::new();
    let mut unused_pages = 0usize;
    let mut freed: Vec<(Tid, u8, Tid)> = Vec::new();
    for blk in 1..nblocks {
        let p = rel.read_shared(blk);
        if p.is_new() {
            // Never initialised: free space a crash or an error left, not corruption. A
            // tuple pointing into one is caught below, as a pointer to a missing tuple.
            unused_pages += 1;
            continue;
        }
        if !p.is_ours() {
            index_corrupted(rel, format!("block {blk} is not an hnsw page"));
        }
        for off in 1..=p.max_offset() {
            let Some(bytes) = p.item(off) else { continue };
            let tid = Tid { block: blk, offset: off };
            match page::tuple_kind(bytes) {
                Some(page::KIND_ELEMENT) => {
                    let el = page::decode_element(bytes).unwrap_or_else(|| {
                        index_corrupted(rel, format!("element {blk},{off} does not decode"))
                    });
                    // (sparsevec elements differ in length)
                    let words = meta.metric.kind().words(meta.dimensions as usize);
                    if words.is_some_and(|w| el.dim != w) {
                        index_corrupted(
                            rel,
                            format!(
                                "element {blk},{off} has {} words, index has {}",
                                el.dim,
                                words.unwrap_or(0)
                            ),
                        );
                    }
                    if words.is_none() {
                        let v = element_parts(bytes).map(|(_, v)| v).unwrap_or_default();
                        if let Some(why) = values::sparse_problem(v, meta.dimensions as usize) {
                            index_corrupted(rel, format!("element {blk},{off}: {why}"));
                        }
                    }
                    if page::element_freed(bytes) {
                        // A slot VACUUM freed: no longer an element; nothing may link to it.
                        freed.push((tid, el.level, el.neighbor_tid));
                        continue;
                    }
                    if !el.deleted && el.heap_tids.is_empty() {
                        index_corrupted(
                            rel,
                            format!("live element {blk},{off} has no heap pointer"),
                        );
                    }
                    heap_pointers += el.heap_tids.len();
                    elements.insert(tid.pack(), (el.level, el.deleted, el.neighbor_tid));
                    if tenant {
                        let k = page::element_keys(bytes, el.dim);
                        group_of.insert(tid.pack(), keys::group_hash(k, &types));
                        first_of.insert(tid.pack(), keys::first_key(k, &types).to_vec());
                    }
                }
                Some(page::KIND_DIR_HEADER) if tenant && off == 1 => {}
                Some(page::KIND_DIR_PIVOT) if tenant => {
                    let pv = page::decode_dir_pivot(bytes).unwrap_or_else(|| {
                        index_corrupted(rel, format!("directory pivot {blk},{off} does not decode"))
                    });
                    pivots.push(pv);
                }
                Some(page::KIND_DIR_ENTRY) if tenant => {
                    let e = page::decode_dir_entry(bytes).unwrap_or_else(|| {
                        index_corrupted(rel, format!("directory entry {blk},{off} does not decode"))
                    });
                    if directory.insert(e.hash, e).is_some() {
                        index_corrupted(
                            rel,
                            format!("tenant group {:#x} has two directory entries", e.hash),
                        );
                    }
                }
                Some(page::KIND_NEIGHBORS) => {
                    let level = page::neighbors_level(bytes).unwrap_or(0);
                    neighbor_levels.insert(tid, level);
                }
                k => index_corrupted(rel, format!("tuple {blk},{off} has unknown kind {k:?}")),
            }
        }
    }
    let mut list = Vec::new();
    for &(id, level, nb) in &freed {
        let p = rel.read_shared(nb.block);
        let empty = p.item(nb.offset).is_some_and(|b| {
            (0..=level)
                .chain(tenant.then_some(page::TENANT_LIST))
                .all(|l| page::read_neighbors(b, l, &mut list) && list.is_empty())
        });
        if !empty {
            index_corrupted(rel, format!("freed element {id:?} still has neighbours"));
        }
    }
    // Adjacency of live elements, checked tuple by tuple.
    let mut adj: HashMap<u64, Vec<u64>> = HashMap::new();
    let mut edges = 0usize;
    for (&id, &(level, deleted, nb)) in &elements {
        if deleted {
            continue;
        }
        match neighbor_levels.get(&nb) {
            Some(&l) if l == level => {}
            _ => index_corrupted(
                rel,
                format!("element {:?} points at a bad neighbour tuple {nb:?}", Tid::unpack(id)),
            ),
        }
        let p = rel.read_shared(nb.block);
        let bytes = p
            .item(nb.offset)
            .unwrap_or_else(|| index_corrupted(rel, format!("neighbour tuple {nb:?} missing")));
        let out = adj.entry(id).or_default();
        for l in 0..=level {
            page::read_neighbors(bytes, l, &mut list);
            for n in &list {
                let Some(&(nl, _, _)) = elements.get(&n.pack()) else {
                    index_corrupted(
                        rel,
                        format!(
                            "element {:?} level {l} links to non-element {n:?}",
                            Tid::unpack(id)
                        ),
                    )
                };
                if nl < l {
                    index_corrupted(
                        rel,
                        format!(
                            "element {:?} level {l} links to {n:?} of level {nl}",
                            Tid::unpack(id)
                        ),
                    );
                }
                if n.pack() == id {
                    index_corrupted(rel, format!("element {:?} links to itself", Tid::unpack(id)));
                }
                if l == 0 {
                    out.push(n.pack());
                }
                edges += 1;
            }
        }
    }
    for (h, t) in &pivots {
        if group_of.get(&t.pack()) != Some(h) {
            index_corrupted(rel, format!("tenant group {h:#x}: pivot {t:?} is not a member"));
        }
    }
    let tenant_unreachable = if tenant {
        super::tenant::check_groups(rel, &elements, &group_of, &first_of, &directory, meta.elements)
    } else {
        0
    };
    let live: Vec<u64> = elements.iter().filter(|(_, e)| !e.1).map(|(&id, _)| id).collect();
    let top = live.iter().map(|id| elements[id].0).max();
    let reached = match (meta.entry, top) {
        (None, None) => 0,
        (None, Some(_)) => index_corrupted(rel, "live elements but no entry point"),
        (Some((ep, lvl)), _) => {
            let Some(&(el_level, deleted, _)) = elements.get(&ep.pack()) else {
                index_corrupted(rel, format!("entry point {ep:?} is not an element"))
            };
            if deleted || el_level != lvl || Some(lvl) != top {
                index_corrupted(
                    rel,
                    format!(
                    "entry point {ep:?} (level {lvl}) is deleted or not on the top level {top:?}"
                ),
                );
            }
            let mut seen = std::collections::HashSet::from([ep.pack()]);
            let mut q = VecDeque::from([ep.pack()]);
            while let Some(x) = q.pop_front() {
                for &y in adj.get(&x).map(|v| v.as_slice()).unwrap_or(&[]) {
                    if !elements[&y].1 && seen.insert(y) {
                        q.push_back(y);
                    }
                }
            }
            seen.len()
        }
    };
    format!(
        "ok: {} live elements, {} heap pointers, {} deleted, {} free slots, {} unreachable, {} edges, {} pages, {} unused pages, top level {}{}",
        live.len(),
        heap_pointers,
        elements.len() - live.len(),
        freed.len(),
        live.len() - reached,
        edges,
        nblocks,
        unused_pages,
        top.map(|t| t as i32).unwrap_or(-1),
        if tenant {
            let pure = directory.values().filter(|e| e.pure).count();
            format!(", {} tenant groups, {} unreachable in their group, {pure} pure", directory.len(), tenant_unreachable)
        } else {
            String::new()
        }
    )
}

pg_v1_fn!(hnsw_check, pg_finfo_hnsw_check, |fcinfo| {
    // SAFETY: hnsw_check(regclass) is STRICT; ownership is checked before the index is
    // opened (with AccessShareLock, closed before returning); its access method is verified
    // first.
    unsafe {
        let oid = pg_sys::Oid::from(crate::fmgr::arg(fcinfo, 0).value() as u32);
        // The counts it reports (live, deleted, tenant groups) are facts about rows, and it
        // reads the whole index: only the table's owner (or a superuser) may ask.
        if !crate::compat::owns_relation(oid, pg_sys::GetUserId()) {
            pgrx::ereport!(
                ERROR,
                pgrx::PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                "vecguard: must be owner of the index's table to check it"
            );
        }
        let rel = pg_sys::index_open(oid, pg_sys::AccessShareLock as i32);
        let am = (*rel).rd_amhandler;
        let ours = pg_sys::get_func_name(am);
        let is_hnsw =
            !ours.is_null() && std::ffi::CStr::from_ptr(ours).to_bytes() == b"hnsw_handler";
        if !is_hnsw {
            pg_sys::index_close(rel, pg_sys::AccessShareLock as i32);
            pgrx::ereport!(
                ERROR,
                pgrx::PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
                "index is not an hnsw index"
            );
        }
        let summary = check(IndexRel::new(rel));
        pg_sys::index_close(rel, pg_sys::AccessShareLock as i32);
        pg_sys::Datum::from(pgrx::varlena::rust_str_to_text_p(&summary).into_pg() as usize)
    }
});
