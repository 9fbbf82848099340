//! The graph traits (`GraphStore`, `GraphWrite`) over index pages, shared by scan, insert
//! and vacuum. Node ids are packed element-tuple TIDs. Reading a node's vector also caches
//! its header (level, neighbour-tuple TID, heap TIDs), so expanding it later costs one read
//! of its neighbour tuple, usually on the same page.

use super::graph::{Distance, FxHasher, GraphStore, GraphWrite};
use super::keys::{self, Cond, KeyType};
use super::page::{self, Meta, MetaError, Tid};
use super::storage::{IndexRel, PagePrefetch, PinCache, SharedPage, WalWrite};
pub(crate) use super::tenant::GroupMembers;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;

type IdHashMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// What a scan needs to remember about a node it has read (heap TIDs are read again only
/// for the few nodes returned).
#[derive(Clone, Copy)]
pub(crate) struct NodeInfo {
    pub(crate) level: u8,
    pub(crate) deleted: bool,
    pub(crate) neighbor_tid: Tid,
}

/// Reads element bytes as (header, vector slice) without allocating.
pub(crate) fn element_parts(bytes: &[u8]) -> Option<(NodeInfo, &[f32])> {
    let (level, deleted, neighbor_tid, dim, _) = page::element_header(bytes)?;
    let raw = bytes.get(page::element_vector_range(dim))?;
    // SAFETY: PageAddItem places tuples at MAXALIGN'd offsets and the vector starts at a
    // multiple of 4 inside the tuple, so the pointer is f32-aligned; length is checked.
    let v = unsafe { std::slice::from_raw_parts(raw.as_ptr() as *const f32, dim) };
    Some((NodeInfo { level, deleted, neighbor_tid }, v))
}

/// Facts about an element, cached per backend: its level, the TID of its neighbour tuple
/// and its encoded key columns. The TID never changes at a TID: updates create new
/// elements, REINDEX or TRUNCATE give the index a new relfilenode (which keys the cache),
/// and an insert that reuses a slot VACUUM freed keeps the old neighbour tuple's TID. The
/// keys change only when a slot changes hands, and in an index with key columns that raises
/// the metapage's generation, which empties the cache at the next scan's start. So an
/// authorized scan can test a node's keys and find its neighbours without touching its
/// page. (A slot reused during a scan can leave that scan's cached keys stale: it then only
/// walks differently, since every element it returns is tested against the whole filter on
/// its page, `result_tids`.) The level can change with a reuse: it only bounds prefetches,
/// and `neighbors` reads the level of the neighbour tuple itself. The deleted flag and heap
/// TIDs, which VACUUM changes, are always read from the page.
struct Fixed {
    level: u8,
    neighbor_tid: Tid,
    keys: smallvec::SmallVec<[u8; 24]>,
}

#[derive(Default)]
struct FixedCache {
    relfilenode: (u32, u32),
    /// The metapage generation the cache was filled at.
    generation: u64,
    nodes: IdHashMap<u64, Fixed>,
    bytes: usize,
    /// Per tenant group hash, what this backend knows of the group at a directory count.
    groups: IdHashMap<u64, GroupCache>,
}

enum GroupCache {
    /// Scans walked the group (without visiting all of it) this many times at `count`.
    Walked {
        count: u32,
        walks: u32,
    },
    Members(GroupMembers),
}

/// Upper bound of the per-backend cache; past it, new elements are simply not cached.
const FIXED_CACHE_BYTES: usize = 64 << 20;

thread_local! {
    /// The backend's cache between scans; a DiskGraph takes it for its lifetime (one
    /// thread-local access per scan, not per node) and gives it back on drop.
    static FIXED: std::cell::RefCell<FixedCache> = std::cell::RefCell::new(FixedCache::default());
}

fn relfilenode(rel: IndexRel) -> (u32, u32) {
    // SAFETY: the storage identity of an open relation.
    let (_, db, relfile) =
        crate::compat::locator_key(unsafe { &crate::compat::rel_locator(rel.raw()) });
    (db, relfile)
}

pub(crate) struct DiskGraph {
    pub(crate) rel: IndexRel,
    pub(crate) meta: Meta,
    pub(crate) dist: Distance,
    /// Every element and query has the same number of words (all types but sparsevec), so
    /// a length mismatch means an unreadable element.
    pub(crate) fixed_len: bool,
    pins: PinCache,
    nodes: IdHashMap<u64, NodeInfo>,
    tids: Vec<Tid>,
    /// `score_batch`'s ids with their positions, sorted by page.
    order: Vec<(u64, u32)>,
    prefetched: Vec<(u32, Option<PagePrefetch>)>,
    /// Distances computed ahead by a batch, consumed by `distance`.
    batch: IdHashMap<u64, f32>,
    /// Key-column filter of an authorized scan and its query. Every returned element and
    /// every element of the exact sweep is tested against all of it.
    filter: Option<(Vec<KeyType>, Vec<Cond>)>,
    /// The part of the filter the traversal tests on each node: all of it, unless the
    /// scan's tenant groups already prove some conditions for every member they hold.
    walk: Vec<Cond>,
    query: Vec<f32>,
    /// Elements whose keys were checked (work counter for EXPLAIN-free tests).
    pub(crate) filter_checks: u64,
    fixed: FixedCache,
    /// Distance computations done (EXPLAIN ANALYZE / leak-resistance counters).
    pub(crate) distance_computations: u64,
    /// Which graph the `GraphStore` view shows.
    view: GraphView,
}

/// The graph a [`DiskGraph`] shows through the graph traits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GraphView {
    /// The global HNSW graph, every level, entered at the metapage's entry point.
    Global,
    /// One tenant group's flat graph: layer 0 is the tenant lists, there are no upper
    /// layers, and searches enter at `entry` (None: they are seeded explicitly, or the
    /// group is empty).
    Tenant { entry: Option<u64> },
}

/// A directory tuple where it lies (`DiskGraph::dir_tuples`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct DirTupleAt {
    pub(crate) at: Tid,
    pub(crate) hash: u64,
    pub(crate) element: Tid,
    /// The group's entry tuple; None for a pivot.
    pub(crate) entry: Option<page::DirEntry>,
}

/// Where a directory entry lives (to update its count) or where a new one can go.
#[derive(Debug, Clone, Copy)]
pub(crate) enum DirSlot {
    Found {
        at: Tid,
        entry: page::DirEntry,
    },
    /// Not found; `room` is a chain page with space for one more entry, if any.
    Missing {
        room: Option<u32>,
        last: u32,
    },
}

impl DiskGraph {
    pub(crate) fn open(rel: IndexRel) -> DiskGraph {
        let meta = read_meta(rel);
        DiskGraph {
            rel,
            meta,
            dist: super::values::graph_distance(meta.metric),
            fixed_len: meta.metric.kind().words(0).is_some(),
            pins: PinCache::new(rel),
            nodes: IdHashMap::with_capacity_and_hasher(2048, Default::default()),
            tids: Vec::new(),
            order: Vec::new(),
            prefetched: Vec::new(),
            batch: IdHashMap::with_capacity_and_hasher(64, Default::default()),
            filter: None,
            walk: Vec::new(),
            query: Vec::new(),
            filter_checks: 0,
            fixed: {
                let node = relfilenode(rel);
                let c = FIXED.with(|c| std::mem::take(&mut *c.borrow_mut()));
                if c.relfilenode != node || c.generation != meta.generation {
                    FixedCache::fresh(node, meta.generation)
                } else {
                    c
                }
            },
            distance_computations: 0,
            view: GraphView::Global,
        }
    }

    /// Switches the trait view between the global graph and a tenant group's.
    pub(crate) fn set_view(&mut self, view: GraphView) {
        self.view = view;
    }

    /// Whether the trait view is a tenant group's.
    pub(crate) fn view_is_tenant(&self) -> bool {
        matches!(self.view, GraphView::Tenant { .. })
    }

    /// Walks the directory chain of `hash`'s bucket, calling `visit(block, page)` on each
    /// page until it returns false. Returns the last block visited, or None when there is
    /// no directory or a page of the chain is not a directory page.
    fn dir_walk(
        &mut self,
        hash: u64,
        mut visit: impl FnMut(u32, &SharedPage) -> bool,
    ) -> Option<u32> {
        let meta = self.meta;
        if !meta.tenant_links() || meta.dir_pages == 0 || meta.dir_start == page::INVALID_BLOCK {
            return None;
        }
        let mut blk = meta.dir_start + page::dir_bucket(hash, meta.dir_pages);
        // A chain never loops in a sound index; the bound protects against a corrupt one.
        for _ in 0..self.rel.nblocks() {
            let p = self.pins.read_shared(blk);
            let next = p.item(1).and_then(page::decode_dir_header)?;
            if !visit(blk, &p) || next == page::INVALID_BLOCK {
                return Some(blk);
            }
            blk = next;
        }
        None
    }

    /// The neighbour-tuple list that `level` of the current view reads and writes: the level
    /// itself, or in tenant view the tenant list for layer 0 (None: no such layer there).
    fn view_list(&self, level: u8) -> Option<u8> {
        match self.view {
            GraphView::Tenant { .. } if level == 0 => Some(page::TENANT_LIST),
            GraphView::Tenant { .. } => None,
            GraphView::Global => Some(level),
        }
    }

    /// Looks a tenant group up in the directory.
    pub(crate) fn dir_find(&mut self, hash: u64) -> Option<DirSlot> {
        let need = page::footprint(page::DIR_ENTRY_BYTES);
        let (mut found, mut room) = (None, None);
        let last = self.dir_walk(hash, |blk, p| {
            for off in 2..=p.max_offset() {
                if let Some(e) = p.item(off).and_then(page::decode_dir_entry) {
                    if e.hash == hash {
                        found =
                            Some(DirSlot::Found { at: Tid { block: blk, offset: off }, entry: e });
                        return false;
                    }
                }
            }
            if room.is_none() && p.free_space() >= need {
                room = Some(blk);
            }
            true
        })?;
        Some(found.unwrap_or(DirSlot::Missing { room, last }))
    }

    /// The group's members as this backend recorded them in the current generation (at
    /// `m.count`, which may be older than the directory's count: see
    /// `tenant::extend_members`), taken out of the cache (give them back with
    /// `remember_group_members`).
    pub(crate) fn take_group_members(&mut self, hash: u64) -> Option<GroupMembers> {
        if !matches!(self.fixed.groups.get(&hash), Some(GroupCache::Members(_))) {
            return None;
        }
        match self.fixed.groups.remove(&hash) {
            Some(GroupCache::Members(m)) => {
                self.fixed.bytes = self.fixed.bytes.saturating_sub(m.bytes());
                Some(m)
            }
            _ => None,
        }
    }

    /// Keeps a group's members for later scans of this backend (within the cache's budget).
    pub(crate) fn remember_group_members(&mut self, hash: u64, m: GroupMembers) {
        let size = m.bytes();
        let old = match self.fixed.groups.get(&hash) {
            Some(GroupCache::Members(o)) => o.bytes(),
            _ => 0,
        };
        if self.fixed.bytes + size <= FIXED_CACHE_BYTES + old {
            self.fixed.bytes = self.fixed.bytes + size - old;
            self.fixed.groups.insert(hash, GroupCache::Members(m));
        }
    }

    /// The metapage generation the backend's caches hold.
    pub(crate) fn cache_generation(&self) -> u64 {
        self.fixed.generation
    }

    /// Whether the members of a group of `count` elements would fit the cache's budget.
    pub(crate) fn members_fit(&self, count: u32) -> bool {
        self.fixed.bytes + count as usize * 64 <= FIXED_CACHE_BYTES
    }

    /// Counts a scan that walked part of a group at `count`; returns how many have at this
    /// count, this one included.
    pub(crate) fn note_group_walk(&mut self, hash: u64, count: u32) -> u32 {
        let e = self.fixed.groups.entry(hash).or_insert(GroupCache::Walked { count, walks: 0 });
        match e {
            GroupCache::Walked { count: c, walks } if *c == count => {
                *walks += 1;
                *walks
            }
            _ => {
                *e = GroupCache::Walked { count, walks: 1 };
                1
            }
        }
    }

    /// A group's directory entry and its starting elements (entry first, then pivots), read
    /// in one walk of the bucket's chain.
    pub(crate) fn dir_group(&mut self, hash: u64) -> Option<(page::DirEntry, Vec<u64>)> {
        let (mut entry, mut pivots) = (None, Vec::new());
        self.dir_walk(hash, |_, p| {
            for off in 2..=p.max_offset() {
                let Some(bytes) = p.item(off) else { continue };
                if let Some(e) = page::decode_dir_entry(bytes).filter(|e| e.hash == hash) {
                    entry = Some(e);
                } else if let Some((_, t)) = page::decode_dir_pivot(bytes).filter(|pv| pv.0 == hash)
                {
                    pivots.push(t.pack());
                }
            }
            true
        })?;
        let e = entry?;
        Some((e, std::iter::once(e.entry.pack()).chain(pivots).collect()))
    }

    /// Every directory tuple, entries and pivots: (where it is, its group's hash, whether it
    /// is the group's entry, the element it names, and for an entry the entry itself).
    pub(crate) fn dir_tuples(&mut self) -> Vec<DirTupleAt> {
        let mut out = Vec::new();
        for bucket in 0..self.meta.dir_pages {
            // dir_walk starts at the bucket of its hash: `bucket` itself is such a hash.
            self.dir_walk(bucket as u64, |blk, p| {
                for off in 2..=p.max_offset() {
                    let Some(bytes) = p.item(off) else { continue };
                    let at = Tid { block: blk, offset: off };
                    if let Some(e) = page::decode_dir_entry(bytes) {
                        out.push(DirTupleAt { at, hash: e.hash, element: e.entry, entry: Some(e) });
                    } else if let Some((hash, element)) = page::decode_dir_pivot(bytes) {
                        out.push(DirTupleAt { at, hash, element, entry: None });
                    }
                }
                true
            });
        }
        out
    }

    /// Block `blk`, share-locked, through the scan's pin cache.
    pub(crate) fn read(&mut self, blk: u32) -> SharedPage {
        self.pins.read_shared(blk)
    }

    /// Header of node `id`, reading its element tuple on first use.
    pub(crate) fn info(&mut self, id: u64) -> Option<NodeInfo> {
        if let Some(i) = self.nodes.get(&id) {
            return Some(*i);
        }
        let tid = Tid::unpack(id);
        let p = self.read(tid.block);
        let (info, _) = element_parts(p.item(tid.offset)?)?;
        drop(p);
        self.nodes.insert(id, info);
        Some(info)
    }

    /// Heap TIDs of element `id` (empty when deleted or unreadable), appended to `out`.
    pub(crate) fn heap_tids(&mut self, id: u64, out: &mut Vec<Tid>) {
        let tid = Tid::unpack(id);
        let p = self.read(tid.block);
        if let Some(bytes) = p.item(tid.offset) {
            if let Some((_, deleted, _, _, n)) = page::element_header(bytes) {
                if !deleted {
                    out.extend((0..n).map(|i| page::element_heap_tid(bytes, i)));
                }
            }
        }
    }

    /// Encoded key columns of element `id`.
    pub(crate) fn keys_of(&mut self, id: u64) -> Option<Vec<u8>> {
        let tid = Tid::unpack(id);
        let p = self.read(tid.block);
        let bytes = p.item(tid.offset)?;
        let (_, _, _, dim, _) = page::element_header(bytes)?;
        Some(page::element_keys(bytes, dim).to_vec())
    }

    /// Restricts the traversal to elements whose keys satisfy `conds`, and scores passing
    /// elements against `query` while their page is locked for the key check.
    pub(crate) fn set_filter(&mut self, types: Vec<KeyType>, conds: Vec<Cond>, query: &[f32]) {
        self.walk = conds.clone();
        self.filter = Some((types, conds));
        self.query = query.to_vec();
    }

    /// Stops testing conditions on the first key column node by node: the caller has
    /// proven them for every element the traversal can reach (pure tenant groups whose key
    /// satisfies them). Returned elements are still tested against the whole filter.
    pub(crate) fn first_key_proven(&mut self) {
        self.walk.retain(|c| c.col != 0);
    }

    /// Heap TIDs of element `id` if it is live and satisfies the whole filter (the check
    /// before a row leaves the index, whatever the traversal tested), appended to `out`.
    pub(crate) fn result_tids(&mut self, id: u64, out: &mut Vec<Tid>) {
        let tid = Tid::unpack(id);
        let p = self.pins.read_shared(tid.block);
        let Some(bytes) = p.item(tid.offset) else { return };
        let Some((_, deleted, _, dim, n)) = page::element_header(bytes) else { return };
        if deleted {
            return;
        }
        if self.filter.is_some() {
            self.filter_checks += 1;
            if !self.bytes_pass(bytes, dim) {
                return;
            }
        }
        out.extend((0..n).map(|i| page::element_heap_tid(bytes, i)));
    }

    /// Whether element bytes satisfy the filter (true without one).
    pub(crate) fn bytes_pass(&self, bytes: &[u8], dim: usize) -> bool {
        match &self.filter {
            None => true,
            Some((types, conds)) => keys::matches(page::element_keys(bytes, dim), types, conds),
        }
    }

    /// Page pins taken since the last reset.
    pub(crate) fn pins_taken(&self) -> usize {
        self.pins.pins_taken()
    }

    /// Forgets cached headers and pins (between scans, or after writing).
    pub(crate) fn reset(&mut self) {
        self.nodes.clear();
        self.batch.clear();
        self.pins.release_all();
    }

    /// Re-reads the metapage (after a write changed it).
    pub(crate) fn reload_meta(&mut self) {
        if let Ok(m) = self.rel.meta() {
            if m.generation != self.fixed.generation {
                self.fixed = FixedCache::fresh(self.fixed.relfilenode, m.generation);
            }
            self.meta = m;
        }
    }
}

impl FixedCache {
    /// An empty cache for the index file `relfilenode` at metapage `generation`.
    fn fresh(relfilenode: (u32, u32), generation: u64) -> FixedCache {
        FixedCache { relfilenode, generation, ..FixedCache::default() }
    }

    /// Records an element's immutable facts (bounded by FIXED_CACHE_BYTES).
    fn remember(&mut self, id: u64, info: NodeInfo, keys: &[u8]) {
        if self.bytes > FIXED_CACHE_BYTES || self.nodes.contains_key(&id) {
            return;
        }
        self.bytes += keys.len().max(24) + 48;
        self.nodes.insert(
            id,
            Fixed { level: info.level, neighbor_tid: info.neighbor_tid, keys: keys.into() },
        );
    }
}

impl Drop for DiskGraph {
    /// Hands the per-backend cache back for the next scan.
    fn drop(&mut self) {
        let c = std::mem::take(&mut self.fixed);
        FIXED.with(|f| *f.borrow_mut() = c);
    }
}

pub(crate) fn relation_name(rel: IndexRel) -> String {
    // SAFETY: rd_rel of an open relation; relname is a NUL-terminated NameData.
    unsafe {
        let name = &(*(*rel.raw()).rd_rel).relname;
        std::ffi::CStr::from_ptr(name.data.as_ptr()).to_string_lossy().into_owned()
    }
}

/// The index's schema-qualified name, quoted where SQL needs it (for hints to type).
fn quoted_name(rel: IndexRel) -> String {
    // SAFETY: rd_rel of an open relation; get_namespace_name returns a palloc'd name of an
    // existing schema (or NULL), quote_qualified_identifier a palloc'd string.
    unsafe {
        let r = &*(*rel.raw()).rd_rel;
        let schema = pgrx::pg_sys::get_namespace_name(r.relnamespace);
        let q = pgrx::pg_sys::quote_qualified_identifier(schema, r.relname.data.as_ptr());
        std::ffi::CStr::from_ptr(q).to_string_lossy().into_owned()
    }
}

impl GraphStore for DiskGraph {
    type Id = u64;

    fn entry_point(&mut self) -> Option<(u64, u8)> {
        match self.view {
            GraphView::Tenant { entry } => entry.map(|e| (e, 0)),
            GraphView::Global => self.meta.entry.map(|(t, l)| (t.pack(), l)),
        }
    }

    /// Scores a neighbour list page by page, one share lock per page. Memory first:
    /// every page is pinned and its header requested, then every tuple (its line pointer
    /// has arrived meanwhile), so the cache misses of the whole list overlap instead of
    /// stalling one by one under each page's lock.
    fn score_batch(&mut self, ids: &[u64], query: &[f32], out: &mut Vec<Option<(f32, bool)>>) {
        out.clear();
        out.resize(ids.len(), None);
        let mut order = std::mem::take(&mut self.order);
        order.clear();
        order.extend(ids.iter().enumerate().map(|(i, &id)| (id, i as u32)));
        order.sort_unstable();
        // Distances a key check already computed (`passes`) are taken, not recomputed.
        if !self.batch.is_empty() {
            order.retain(|&(id, i)| match self.batch.remove(&id) {
                Some(d) => {
                    let deleted = self.nodes.get(&id).is_some_and(|n| n.deleted);
                    out[i as usize] = Some((d, deleted));
                    self.distance_computations += 1;
                    false
                }
                None => true,
            });
        }
        if order.len() > 1 {
            let len = page::element_size(query.len());
            let mut pages = std::mem::take(&mut self.prefetched);
            pages.clear();
            let mut last = page::INVALID_BLOCK;
            for &(id, _) in &order {
                let b = Tid::unpack(id).block;
                if b != last {
                    self.pins.prefetch_descriptor(b);
                    last = b;
                }
            }
            for &(id, _) in &order {
                let t = Tid::unpack(id);
                if pages.last().is_none_or(|(b, _)| *b != t.block) {
                    pages.push((t.block, self.pins.prefetch_page(t.block)));
                }
            }
            let mut j = 0;
            for &(id, _) in &order {
                let t = Tid::unpack(id);
                while pages[j].0 != t.block {
                    j += 1;
                }
                if let Some(pf) = &pages[j].1 {
                    pf.items(t.offset, len);
                }
            }
            self.prefetched = pages;
        }
        let dist = self.dist;
        let mut k = 0;
        while k < order.len() {
            let blk = Tid::unpack(order[k].0).block;
            let p = self.pins.read_shared(blk);
            while k < order.len() && Tid::unpack(order[k].0).block == blk {
                let (id, i) = order[k];
                k += 1;
                let Some((info, v)) = p.item(Tid::unpack(id).offset).and_then(element_parts) else {
                    continue;
                };
                if self.fixed_len && v.len() != query.len() {
                    continue;
                }
                out[i as usize] = Some((dist(v, query), info.deleted));
                self.distance_computations += 1;
                self.nodes.entry(id).or_insert(info);
            }
        }
        self.order = order;
    }

    /// Starts loading the neighbour tuple of a node whose header is known (the next
    /// candidate of a search), so its expansion does not wait for memory.
    fn prefetch_neighbors(&mut self, id: u64, _level: u8) {
        let (level, nb) = match self.nodes.get(&id) {
            Some(i) => (i.level, i.neighbor_tid),
            None => match self.fixed.nodes.get(&id) {
                Some(f) => (f.level, f.neighbor_tid),
                None => return,
            },
        };
        if nb.is_valid() {
            let len = page::neighbor_size(self.meta.m as usize, level, self.meta.tenant_links());
            if let Some(pf) = self.pins.prefetch_page(nb.block) {
                pf.items(nb.offset, len.min(512));
            }
        }
    }

    fn passes(&mut self, id: u64) -> bool {
        let Some((types, _)) = &self.filter else { return true };
        if self.walk.is_empty() {
            return true;
        }
        // Cached keys answer without a page read; the verdict is cheap to recompute, so it
        // is not memoised (the searcher asks once per node).
        if let Some(f) = self.fixed.nodes.get(&id) {
            self.filter_checks += 1;
            return keys::matches(&f.keys, types, &self.walk);
        }
        let tid = Tid::unpack(id);
        let dist = self.dist;
        let p = self.pins.read_shared(tid.block);
        let Some(bytes) = p.item(tid.offset) else { return false };
        let Some((info, v)) = element_parts(bytes) else { return false };
        let ok = keys::matches(page::element_keys(bytes, v.len()), types, &self.walk);
        self.filter_checks += 1;
        self.fixed.remember(id, info, page::element_keys(bytes, v.len()));
        if ok && (!self.fixed_len || v.len() == self.query.len()) {
            let d = dist(v, &self.query);
            self.batch.insert(id, d);
        }
        drop(p);
        self.nodes.entry(id).or_insert(info);
        ok
    }

    fn distance(&mut self, id: u64, query: &[f32]) -> Option<f32> {
        if let Some(d) = self.batch.remove(&id) {
            self.distance_computations += 1;
            return Some(d);
        }
        let tid = Tid::unpack(id);
        let dist = self.dist;
        let p = self.pins.read_shared(tid.block);
        let (info, v) = element_parts(p.item(tid.offset)?)?;
        if self.fixed_len && v.len() != query.len() {
            return None;
        }
        let d = dist(v, query);
        drop(p);
        self.distance_computations += 1;
        self.nodes.entry(id).or_insert(info);
        Some(d)
    }

    fn neighbors(&mut self, id: u64, level: u8, out: &mut Vec<u64>) {
        // (level, neighbour tuple, whether the level was read by this scan)
        let cached = match self.nodes.get(&id) {
            Some(i) => Some((i.level, i.neighbor_tid, true)),
            None => self.fixed.nodes.get(&id).map(|f| (f.level, f.neighbor_tid, false)),
        };
        let (node_level, nb, this_scan) = match cached {
            Some(f) => f,
            None => match self.info(id) {
                Some(i) => (i.level, i.neighbor_tid, true),
                None => return,
            },
        };
        let Some(list) = self.view_list(level) else { return };
        // A node's level only changes when an insert reuses its slot (see `Fixed`): a
        // level the tuple lacks reads as no list below, so the cached level only saves
        // the read when it comes from this scan's own page reads.
        if self.view == GraphView::Global && level > node_level && this_scan {
            return;
        }
        if !nb.is_valid() {
            return;
        }
        let mut tids = std::mem::take(&mut self.tids);
        {
            let p = self.pins.read_shared(nb.block);
            if let Some(bytes) = p.item(nb.offset) {
                page::read_neighbors(bytes, list, &mut tids);
            }
        }
        out.extend(tids.iter().map(|t| t.pack()));
        self.tids = tids;
    }

    fn is_deleted(&mut self, id: u64) -> bool {
        self.info(id).map(|i| i.deleted).unwrap_or(true)
    }
}

impl GraphWrite for DiskGraph {
    /// Rewrites one neighbour list under WAL (vacuum repair; inserts batch per page).
    fn set_neighbors(&mut self, id: u64, level: u8, neighbors: &[u64]) {
        let Some(info) = self.info(id) else { return };
        let nb = info.neighbor_tid;
        self.pins.release_all();
        let list: Vec<Tid> = neighbors.iter().map(|&n| Tid::unpack(n)).collect();
        let Some(level) = self.view_list(level) else { return };
        let w = WalWrite::begin(self.rel);
        let mut pm = w.page(nb.block);
        if let Some(bytes) = pm.item_mut(nb.offset) {
            page::write_neighbors(bytes, level, &list);
        }
        w.commit();
    }

    fn vector_of(&mut self, id: u64, out: &mut Vec<f32>) -> bool {
        let tid = Tid::unpack(id);
        let p = self.pins.read_shared(tid.block);
        match p.item(tid.offset).and_then(element_parts) {
            Some((_, v)) => {
                out.extend_from_slice(v);
                true
            }
            None => false,
        }
    }
}

/// The index's metapage. An index written in another on-disk format raises XX002 (as
/// PostgreSQL's btree does for a version mismatch) with a hint to REINDEX; a broken
/// metapage raises `index_corrupted`. Never a wrong answer from a format it cannot read.
pub(crate) fn read_meta(rel: IndexRel) -> Meta {
    match rel.meta() {
        Ok(m) => m,
        Err(MetaError::Version(v)) => {
            let name = relation_name(rel);
            crate::error::fail_with_hint(
                pgrx::PgSqlErrorCode::ERRCODE_INDEX_CORRUPTED,
                format!(
                    "version mismatch in index \"{name}\": on-disk format {v}, this vecguard reads format {}",
                    page::VERSION
                ),
                &format!("REINDEX INDEX {} rebuilds it in the current format.", quoted_name(rel)),
            )
        }
        Err(MetaError::Corrupt(e)) => index_corrupted(rel, format!("metapage: {e}")),
    }
}

/// Raises `index "<name>" is corrupted: <detail>` with SQLSTATE XX002
/// (ERRCODE_INDEX_CORRUPTED), as Postgres's own index access methods do. Scans, inserts,
/// the graph reader and `hnsw_check` all report corruption through it.
pub(crate) fn index_corrupted(rel: IndexRel, detail: impl std::fmt::Display) -> ! {
    pgrx::ereport!(
        ERROR,
        pgrx::PgSqlErrorCode::ERRCODE_INDEX_CORRUPTED,
        format!("index \"{}\" is corrupted: {detail}", relation_name(rel))
    );
}
