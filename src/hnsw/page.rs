//! On-disk format of the `hnsw` index, as bytes (pure: no pgrx).
//!
//! Block 0 is the metapage; every other block is a data page of ordinary Postgres layout
//! (line pointers, tuples) whose special area is a `PageOpaque` ending in `PAGE_ID`, so a
//! page of another access method is recognised and refused; an all-zero page (never
//! initialised, which a crash can leave) is free space. A graph node is two tuples, placed
//! on the same page whenever they fit, as pgvector does (`place_node`, which `fits` decides
//! for the build and inserts alike; near `MAX_DIM` the neighbour tuple goes elsewhere):
//! - the **element tuple**: level, deleted flag, up to `HEAP_TIDS` heap pointers (rows with
//!   an identical vector share one element, which keeps duplicates reachable), the TID of its
//!   neighbour tuple, and the vector itself (normalised for cosine);
//! - the **neighbour tuple**: fixed-capacity TID lists, `2m` slots on level 0 and `m` on each
//!   level above, so updating a node's neighbours rewrites bytes in place.
//!
//! The vector must fit on one page with its element header, which is why an element holds
//! at most `MAX_DIM` 32-bit words: 2000 `vector` dimensions, 4000 `halfvec` dimensions or
//! 64000 bits (pgvector's limits; `values` says how each type is packed). The element's
//! `dim` field counts words.
//!
//! Every multi-byte field is stored in the server's native byte order (`to_ne_bytes`) at an
//! explicit offset, as Postgres's own pages are: an index moves between machines only with
//! its cluster, whose files are native-order throughout. Offsets that other constants
//! derive from have compile-time checks (`const _: () = assert!(..)`).

/// "VGHN": vecguard HNSW.
pub(crate) const MAGIC: u32 = 0x5647_484E;
/// Bump on any incompatible layout change; scans refuse other versions.
pub(crate) const VERSION: u32 = 2;
pub(crate) const METAPAGE_BLKNO: u32 = 0;
/// Last two bytes of every page's special area.
pub(crate) const PAGE_ID: u16 = 0xFF95;
/// Rows with the same vector share an element; more than this start a new element.
pub(crate) const HEAP_TIDS: usize = 10;
/// Most 32-bit words an element stores: 2000 × 4 bytes plus the header fits an 8 KB page.
pub(crate) const MAX_DIM: usize = 2000;
/// Levels are capped so a neighbour tuple always fits on a page (level 16 has probability
/// m^-16: never seen in practice); large m lowers the cap further, see `max_level`.
pub(crate) const MAX_LEVEL: u8 = 15;
pub(crate) const INVALID_BLOCK: u32 = u32::MAX;

pub(crate) const KIND_ELEMENT: u8 = 1;
pub(crate) const KIND_NEIGHBORS: u8 = 2;
/// First tuple of a tenant-directory page: the next page of its bucket chain.
pub(crate) const KIND_DIR_HEADER: u8 = 3;
/// A tenant-directory entry: group hash, entry element, element count.
pub(crate) const KIND_DIR_ENTRY: u8 = 4;
/// A tenant-directory pivot: another starting element of a large group (same layout as an
/// entry, count unused): scans start from the pivot nearest the query.
pub(crate) const KIND_DIR_PIVOT: u8 = 5;
/// Pseudo-level naming the tenant list of a neighbour tuple in `read_neighbors` /
/// `write_neighbors` (levels themselves never exceed `MAX_LEVEL`).
pub(crate) const TENANT_LIST: u8 = 0xFF;
/// Meta flag: neighbour tuples carry a tenant list and a tenant directory exists.
pub(crate) const FLAG_TENANT_LINKS: u8 = 1;

/// Postgres page geometry for BLCKSZ = 8192 (checked against the server at run time).
pub(crate) const BLCKSZ: usize = 8192;
pub(crate) const PAGE_HEADER: usize = 24;
pub(crate) const ITEM_ID: usize = 4;
pub(crate) const MAXALIGN: usize = 8;
pub(crate) const OPAQUE_SIZE: usize = 8;

/// Usable bytes for line pointers + tuples on a fresh data page.
pub(crate) const fn page_capacity() -> usize {
    BLCKSZ - PAGE_HEADER - OPAQUE_SIZE
}

pub(crate) const fn maxalign(n: usize) -> usize {
    (n + MAXALIGN - 1) & !(MAXALIGN - 1)
}

/// Space a tuple of `len` bytes takes on a page, line pointer included.
pub(crate) const fn footprint(len: usize) -> usize {
    maxalign(len) + ITEM_ID
}

/// Whether tuples of `lens` bytes fit, each with its line pointer, in `room` bytes of a
/// page (pd_upper - pd_lower: `page_capacity()` on a fresh page, 0 on an all-zero one).
/// This is PageAddItem's own test (a tuple takes its MAXALIGNed length below pd_upper and a
/// line pointer above pd_lower), and the only fit rule of this index: the build's page
/// plan, inserts' placement and the tuple size limit all decide with it.
pub(crate) fn fits(room: usize, lens: &[usize]) -> bool {
    lens.iter().map(|&l| footprint(l)).sum::<usize>() <= room
}

/// Longest tuple an empty page holds.
pub(crate) const fn max_tuple_len() -> usize {
    (page_capacity() - ITEM_ID) & !(MAXALIGN - 1)
}

/// A tuple identifier: heap row or index tuple (block, 1-based offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Tid {
    pub(crate) block: u32,
    pub(crate) offset: u16,
}

impl Tid {
    pub(crate) const INVALID: Tid = Tid { block: INVALID_BLOCK, offset: 0 };
    pub(crate) fn is_valid(self) -> bool {
        self.block != INVALID_BLOCK && self.offset != 0
    }
    /// Packs into a u64 (graph node ids are index TIDs of element tuples).
    pub(crate) fn pack(self) -> u64 {
        ((self.block as u64) << 16) | self.offset as u64
    }
    pub(crate) fn unpack(v: u64) -> Tid {
        Tid { block: (v >> 16) as u32, offset: (v & 0xffff) as u16 }
    }
    /// ItemPointerData layout: bi_hi, bi_lo, offset (all u16, native endian).
    fn write(self, b: &mut [u8]) {
        b[0..2].copy_from_slice(&((self.block >> 16) as u16).to_ne_bytes());
        b[2..4].copy_from_slice(&((self.block & 0xffff) as u16).to_ne_bytes());
        b[4..6].copy_from_slice(&self.offset.to_ne_bytes());
    }
    fn read(b: &[u8]) -> Tid {
        let hi = u16::from_ne_bytes([b[0], b[1]]) as u32;
        let lo = u16::from_ne_bytes([b[2], b[3]]) as u32;
        Tid { block: (hi << 16) | lo, offset: u16::from_ne_bytes([b[4], b[5]]) }
    }
}

const TID_BYTES: usize = 6;

/// Distance family of an index, fixed at build time by the opclass; it also says which
/// type the elements hold and how (`values`). Codes 1..=4 are `vector`'s, which indexes
/// built before the other types existed keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Metric {
    L2 = 1,
    InnerProduct = 2,
    Cosine = 3,
    L1 = 4,
    HalfL2 = 5,
    HalfInnerProduct = 6,
    HalfCosine = 7,
    HalfL1 = 8,
    BitHamming = 9,
    BitJaccard = 10,
    SparseL2 = 11,
    SparseInnerProduct = 12,
    SparseCosine = 13,
    SparseL1 = 14,
}

impl Metric {
    pub(crate) fn from_u8(v: u8) -> Option<Metric> {
        match v {
            1 => Some(Metric::L2),
            2 => Some(Metric::InnerProduct),
            3 => Some(Metric::Cosine),
            4 => Some(Metric::L1),
            5 => Some(Metric::HalfL2),
            6 => Some(Metric::HalfInnerProduct),
            7 => Some(Metric::HalfCosine),
            8 => Some(Metric::HalfL1),
            9 => Some(Metric::BitHamming),
            10 => Some(Metric::BitJaccard),
            11 => Some(Metric::SparseL2),
            12 => Some(Metric::SparseInnerProduct),
            13 => Some(Metric::SparseCosine),
            14 => Some(Metric::SparseL1),
            _ => None,
        }
    }
}

/// The metapage contents (block 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Meta {
    pub(crate) magic: u32,
    pub(crate) version: u32,
    /// The column's dimensions (bits for `bit`); elements hold
    /// `metric.kind().words(dimensions)` 32-bit words (see `values`).
    pub(crate) dimensions: u32,
    pub(crate) m: u16,
    pub(crate) ef_construction: u16,
    pub(crate) metric: Metric,
    /// Entry point element, or None for an empty graph.
    pub(crate) entry: Option<(Tid, u8)>,
    /// Block new tuples go to first (the last page with room).
    pub(crate) insert_page: u32,
    /// Elements (statistics; exact in indexes with key columns: every element not freed).
    pub(crate) elements: u64,
    /// `FLAG_*` bits.
    pub(crate) flags: u8,
    /// First block of the tenant directory's bucket pages (INVALID_BLOCK until created)
    /// and how many buckets there are (consecutive blocks).
    pub(crate) dir_start: u32,
    pub(crate) dir_pages: u32,
    /// Raised whenever an element slot of an index with key columns changes hands (VACUUM
    /// frees slots, an insert reuses one): backends drop what they cached about elements
    /// and groups when it moves. Metapages written before it existed (48 bytes) read 0.
    pub(crate) generation: u64,
}

/// Why a metapage cannot be used.
#[derive(Debug, PartialEq)]
pub(crate) enum MetaError {
    /// Written by a vecguard with another on-disk format (`VERSION`): REINDEX rebuilds it.
    Version(u32),
    /// Not a vecguard hnsw metapage, or a broken one.
    Corrupt(String),
}

pub(crate) const META_BYTES: usize = 56;
/// The metapage of indexes written before `generation` existed.
pub(crate) const META_BYTES_OLD: usize = 48;
// The metapage layout `Meta::encode` writes: the entry TID at 18..24, dir_pages ending the
// old layout, the generation ending the struct, and all of it inside the metapage's contents.
const _: () = assert!(18 + TID_BYTES == 24 && 44 + 4 == META_BYTES_OLD && 48 + 8 == META_BYTES);
const _: () = assert!(PAGE_HEADER + META_BYTES <= BLCKSZ - OPAQUE_SIZE);

impl Meta {
    pub(crate) fn new(dimensions: u32, m: u16, ef_construction: u16, metric: Metric) -> Meta {
        Meta {
            magic: MAGIC,
            version: VERSION,
            dimensions,
            m,
            ef_construction,
            metric,
            entry: None,
            insert_page: INVALID_BLOCK,
            elements: 0,
            flags: 0,
            dir_start: INVALID_BLOCK,
            dir_pages: 0,
            generation: 0,
        }
    }

    /// Whether neighbour tuples hold a tenant list (indexes with key columns).
    pub(crate) fn tenant_links(&self) -> bool {
        self.flags & FLAG_TENANT_LINKS != 0
    }

    pub(crate) fn encode(&self) -> [u8; META_BYTES] {
        let mut b = [0u8; META_BYTES];
        b[0..4].copy_from_slice(&self.magic.to_ne_bytes());
        b[4..8].copy_from_slice(&self.version.to_ne_bytes());
        b[8..12].copy_from_slice(&self.dimensions.to_ne_bytes());
        b[12..14].copy_from_slice(&self.m.to_ne_bytes());
        b[14..16].copy_from_slice(&self.ef_construction.to_ne_bytes());
        b[16] = self.metric as u8;
        match self.entry {
            Some((tid, level)) => {
                b[17] = level;
                tid.write(&mut b[18..24]);
            }
            None => {
                b[17] = 0;
                Tid::INVALID.write(&mut b[18..24]);
            }
        }
        b[24..28].copy_from_slice(&self.insert_page.to_ne_bytes());
        b[28] = self.flags;
        b[32..40].copy_from_slice(&self.elements.to_ne_bytes());
        b[40..44].copy_from_slice(&self.dir_start.to_ne_bytes());
        b[44..48].copy_from_slice(&self.dir_pages.to_ne_bytes());
        b[48..56].copy_from_slice(&self.generation.to_ne_bytes());
        b
    }

    /// Decodes and validates a metapage (`META_BYTES`, or `META_BYTES_OLD` from before the
    /// generation existed); Err says what is wrong.
    pub(crate) fn decode(b: &[u8]) -> Result<Meta, MetaError> {
        if b.len() < META_BYTES_OLD {
            return Err(MetaError::Corrupt("metapage too short".into()));
        }
        let u32_at = |o: usize| u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u16_at = |o: usize| u16::from_ne_bytes([b[o], b[o + 1]]);
        let magic = u32_at(0);
        if magic != MAGIC {
            return Err(MetaError::Corrupt(format!(
                "bad magic {magic:#x}: not a vecguard hnsw index"
            )));
        }
        let version = u32_at(4);
        if version != VERSION {
            return Err(MetaError::Version(version));
        }
        let metric = Metric::from_u8(b[16])
            .ok_or_else(|| MetaError::Corrupt(format!("bad metric {}", b[16])))?;
        let tid = Tid::read(&b[18..24]);
        let mut e = [0u8; 8];
        e.copy_from_slice(&b[32..40]);
        Ok(Meta {
            magic,
            version,
            dimensions: u32_at(8),
            m: u16_at(12),
            ef_construction: u16_at(14),
            metric,
            entry: if tid.is_valid() { Some((tid, b[17])) } else { None },
            insert_page: u32_at(24),
            elements: u64::from_ne_bytes(e),
            flags: b[28],
            dir_start: u32_at(40),
            dir_pages: u32_at(44),
            generation: b
                .get(48..56)
                .map_or(0, |g| u64::from_ne_bytes(g.try_into().unwrap_or([0; 8]))),
        })
    }
}

// ---- element tuple -----------------------------------------------------------------------
//  0 kind u8 | 1 level u8 | 2 deleted u8 | 3 ntids u8 | 4..10 neighbour tuple TID |
//  10..12 dim u16 | 12..72 heap TIDs [10 × 6] | 72.. vector f32[dim]
const EL_NEIGHBOR_TID: usize = 4;
const EL_DIM: usize = 10;
const EL_HEAP_TIDS: usize = 12;
pub(crate) const EL_VECTOR: usize = EL_HEAP_TIDS + HEAP_TIDS * TID_BYTES;
const _: () = assert!(EL_VECTOR == 72 && EL_VECTOR.is_multiple_of(4));
const _: () = assert!(EL_NEIGHBOR_TID + TID_BYTES == EL_DIM && EL_DIM + 2 == EL_HEAP_TIDS);
// A vector of MAX_DIM dimensions and its element header fit on one page.
const _: () = assert!(footprint(EL_VECTOR + MAX_DIM * 4) <= page_capacity());

pub(crate) fn element_size(dim: usize) -> usize {
    EL_VECTOR + 4 * dim
}

/// A decoded element tuple header (the vector is read in place by the storage layer).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Element {
    pub(crate) level: u8,
    pub(crate) deleted: bool,
    pub(crate) heap_tids: Vec<Tid>,
    pub(crate) neighbor_tid: Tid,
    pub(crate) dim: usize,
}

/// Writes an element tuple into `out` (`element_size(vector.len()) + keys.len()` bytes):
/// header, vector, then the encoded key columns (see `keys`).
pub(crate) fn encode_element(
    out: &mut [u8],
    level: u8,
    heap_tids: &[Tid],
    neighbor_tid: Tid,
    vector: &[f32],
    keys: &[u8],
) {
    debug_assert_eq!(out.len(), element_size(vector.len()) + keys.len());
    out.fill(0);
    out[0] = KIND_ELEMENT;
    out[1] = level;
    out[2] = 0;
    out[3] = heap_tids.len().min(HEAP_TIDS) as u8;
    neighbor_tid.write(&mut out[EL_NEIGHBOR_TID..EL_NEIGHBOR_TID + 6]);
    out[EL_DIM..EL_DIM + 2].copy_from_slice(&(vector.len() as u16).to_ne_bytes());
    for i in 0..HEAP_TIDS {
        let t = heap_tids.get(i).copied().unwrap_or(Tid::INVALID);
        t.write(&mut out[EL_HEAP_TIDS + i * 6..EL_HEAP_TIDS + i * 6 + 6]);
    }
    for (i, v) in vector.iter().enumerate() {
        out[EL_VECTOR + 4 * i..EL_VECTOR + 4 * i + 4].copy_from_slice(&v.to_ne_bytes());
    }
    let k = element_size(vector.len());
    out[k..k + keys.len()].copy_from_slice(keys);
}

/// The encoded key columns stored after an element's vector.
pub(crate) fn element_keys(b: &[u8], dim: usize) -> &[u8] {
    b.get(element_size(dim)..).unwrap_or(&[])
}

/// Decodes an element header; None if the bytes are not a well-formed element tuple.
pub(crate) fn decode_element(b: &[u8]) -> Option<Element> {
    if b.len() < EL_VECTOR || b[0] != KIND_ELEMENT {
        return None;
    }
    let dim = u16::from_ne_bytes([b[EL_DIM], b[EL_DIM + 1]]) as usize;
    if b.len() < element_size(dim) {
        return None;
    }
    let n = (b[3] as usize).min(HEAP_TIDS);
    let heap_tids = (0..n).map(|i| Tid::read(&b[EL_HEAP_TIDS + i * 6..])).collect();
    Some(Element {
        level: b[1],
        deleted: b[2] != 0,
        heap_tids,
        neighbor_tid: Tid::read(&b[EL_NEIGHBOR_TID..]),
        dim,
    })
}

/// The fixed header fields of an element without allocating: (level, deleted, neighbour
/// tuple TID, dim, number of heap TIDs). The scan's hot path uses this.
pub(crate) fn element_header(b: &[u8]) -> Option<(u8, bool, Tid, usize, usize)> {
    if b.len() < EL_VECTOR || b[0] != KIND_ELEMENT {
        return None;
    }
    let dim = u16::from_ne_bytes([b[EL_DIM], b[EL_DIM + 1]]) as usize;
    if b.len() < element_size(dim) {
        return None;
    }
    Some((b[1], b[2] != 0, Tid::read(&b[EL_NEIGHBOR_TID..]), dim, (b[3] as usize).min(HEAP_TIDS)))
}

/// Heap TID `i` of an element (i < number of heap TIDs).
pub(crate) fn element_heap_tid(b: &[u8], i: usize) -> Tid {
    Tid::read(&b[EL_HEAP_TIDS + i * TID_BYTES..])
}

/// Byte range of the vector inside an element tuple.
pub(crate) fn element_vector_range(dim: usize) -> std::ops::Range<usize> {
    EL_VECTOR..EL_VECTOR + 4 * dim
}

/// The deleted byte of an element whose slot VACUUM freed: deleted, linked from nowhere,
/// its neighbour lists emptied; an insert may overwrite it (`element_freed`).
const EL_FREED: u8 = 2;

/// Whether VACUUM freed this element's slot (it is also `deleted`).
pub(crate) fn element_freed(b: &[u8]) -> bool {
    b.len() >= EL_VECTOR && b[0] == KIND_ELEMENT && b[2] == EL_FREED
}

/// Marks a deleted element's slot free (VACUUM, once nothing links to it).
pub(crate) fn mark_element_freed(b: &mut [u8]) {
    if b.len() >= EL_VECTOR && b[0] == KIND_ELEMENT && b[2] != 0 {
        b[2] = EL_FREED;
    }
}

/// Replaces an element's heap TIDs (vacuum) and sets its deleted flag when none remain.
pub(crate) fn set_element_heap_tids(b: &mut [u8], heap_tids: &[Tid]) {
    b[3] = heap_tids.len().min(HEAP_TIDS) as u8;
    for i in 0..HEAP_TIDS {
        let t = heap_tids.get(i).copied().unwrap_or(Tid::INVALID);
        t.write(&mut b[EL_HEAP_TIDS + i * 6..EL_HEAP_TIDS + i * 6 + 6]);
    }
    b[2] = heap_tids.is_empty() as u8;
}

/// Adds a heap TID to an element with room (duplicates); false when full.
pub(crate) fn add_element_heap_tid(b: &mut [u8], tid: Tid) -> bool {
    let n = b[3] as usize;
    if n >= HEAP_TIDS {
        return false;
    }
    tid.write(&mut b[EL_HEAP_TIDS + n * 6..EL_HEAP_TIDS + n * 6 + 6]);
    b[3] = (n + 1) as u8;
    b[2] = 0;
    true
}

// ---- neighbour tuple ---------------------------------------------------------------------
//  0 kind u8 | 1 level u8 (bit 7: has a tenant list) | 2..4 m u16 | then for level l in
//  0..=level: capacity(l) TIDs, then (indexes with key columns) the tenant list of 2m TIDs:
//  the node's nearest neighbours among elements of its own tenant group (same first key),
//  a flat graph per tenant that authorized scans walk without touching anyone else's
//  nodes. Unused slots are INVALID; each list is nearest-first.
const NB_LISTS: usize = 4;
const NB_TENANT_BIT: u8 = 0x80;

pub(crate) fn level_capacity(m: usize, level: u8) -> usize {
    if level == 0 || level == TENANT_LIST {
        2 * m
    } else {
        m
    }
}

pub(crate) fn neighbor_size(m: usize, level: u8, tenant: bool) -> usize {
    let tenant_slots = if tenant { level_capacity(m, TENANT_LIST) } else { 0 };
    NB_LISTS + ((0..=level).map(|l| level_capacity(m, l)).sum::<usize>() + tenant_slots) * TID_BYTES
}

/// (level, m, has tenant list) of a well-formed neighbour tuple.
fn nb_header(b: &[u8]) -> Option<(u8, usize, bool)> {
    if b.len() < NB_LISTS || b[0] != KIND_NEIGHBORS {
        return None;
    }
    let level = b[1] & !NB_TENANT_BIT;
    let tenant = b[1] & NB_TENANT_BIT != 0;
    let m = u16::from_ne_bytes([b[2], b[3]]) as usize;
    (b.len() >= neighbor_size(m, level, tenant)).then_some((level, m, tenant))
}

/// Byte offset of list `level` (or `TENANT_LIST`) in a tuple of `node_level`; None when
/// the tuple has no such list.
fn list_offset(m: usize, node_level: u8, tenant: bool, level: u8) -> Option<usize> {
    if level == TENANT_LIST {
        return tenant.then(|| {
            NB_LISTS + (0..=node_level).map(|l| level_capacity(m, l)).sum::<usize>() * TID_BYTES
        });
    }
    (level <= node_level)
        .then(|| NB_LISTS + (0..level).map(|l| level_capacity(m, l)).sum::<usize>() * TID_BYTES)
}

/// Writes an empty neighbour tuple for a node of `level`.
pub(crate) fn encode_neighbors_empty(out: &mut [u8], m: usize, level: u8, tenant: bool) {
    debug_assert_eq!(out.len(), neighbor_size(m, level, tenant));
    out.fill(0);
    out[0] = KIND_NEIGHBORS;
    out[1] = level | if tenant { NB_TENANT_BIT } else { 0 };
    out[2..4].copy_from_slice(&(m as u16).to_ne_bytes());
    for l in 0..=level {
        let _ = write_neighbors(out, l, &[]);
    }
    if tenant {
        let _ = write_neighbors(out, TENANT_LIST, &[]);
    }
}

/// Overwrites the list of `level` (or `TENANT_LIST`) in a neighbour tuple (truncating to
/// capacity). Returns false if the tuple is malformed or lacks that list.
pub(crate) fn write_neighbors(b: &mut [u8], level: u8, list: &[Tid]) -> bool {
    let Some((node_level, m, tenant)) = nb_header(b) else { return false };
    let Some(off) = list_offset(m, node_level, tenant, level) else { return false };
    for i in 0..level_capacity(m, level) {
        let t = list.get(i).copied().unwrap_or(Tid::INVALID);
        t.write(&mut b[off + i * 6..off + i * 6 + 6]);
    }
    true
}

/// Reads the list of `level` (or `TENANT_LIST`; valid TIDs only) into `out`; false if
/// malformed or absent.
pub(crate) fn read_neighbors(b: &[u8], level: u8, out: &mut Vec<Tid>) -> bool {
    out.clear();
    let Some((node_level, m, tenant)) = nb_header(b) else { return false };
    let Some(off) = list_offset(m, node_level, tenant, level) else { return false };
    for i in 0..level_capacity(m, level) {
        let t = Tid::read(&b[off + i * 6..]);
        if t.is_valid() {
            out.push(t);
        }
    }
    true
}

/// Level of a neighbour tuple, if well-formed.
pub(crate) fn neighbors_level(b: &[u8]) -> Option<u8> {
    nb_header(b).map(|h| h.0)
}

#[cfg(test)]
/// Whether a neighbour tuple has a tenant list.
pub(crate) fn neighbors_have_tenant_list(b: &[u8]) -> bool {
    nb_header(b).is_some_and(|h| h.2)
}

/// Highest level a node may have for this m: its neighbour tuple (with the tenant list,
/// when there is one) must fit on one page.
pub(crate) fn max_level(m: usize, tenant: bool) -> u8 {
    let slots = (page_capacity() - ITEM_ID - NB_LISTS) / TID_BYTES / m.max(1);
    (slots.saturating_sub(if tenant { 4 } else { 2 })).min(MAX_LEVEL as usize) as u8
}

// ---- page plan -----------------------------------------------------------------------------
/// A page a node's tuple goes to: the page being filled, or the `k`th fresh page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    Current,
    Fresh(usize),
}

/// Where a node's element tuple and neighbour tuple go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NodeLayout {
    pub(crate) element: Slot,
    pub(crate) neighbors: Slot,
}

/// Places a node's element tuple (`el_len` bytes) and neighbour tuple (`nb_len`), given the
/// `room` left on the page being filled (0 when there is none). Both go on that page when
/// they fit there, else on a fresh page when they fit one together (as pgvector keeps them).
/// Otherwise (vectors near `MAX_DIM`, or high levels and key columns a little below it)
/// each goes where it fits: the element on the current page or a fresh one, the neighbour
/// tuple on the current page when the element left it and it fits there, else on the next
/// fresh page. Fresh pages are used in order: `Fresh(1)` only after `Fresh(0)`. None when a
/// tuple alone is longer than `max_tuple_len()`.
pub(crate) fn place_node(room: usize, el_len: usize, nb_len: usize) -> Option<NodeLayout> {
    let cap = page_capacity();
    if !fits(cap, &[el_len]) || !fits(cap, &[nb_len]) {
        return None;
    }
    let (element, neighbors) = if fits(room, &[el_len, nb_len]) {
        (Slot::Current, Slot::Current)
    } else if fits(cap, &[el_len, nb_len]) {
        (Slot::Fresh(0), Slot::Fresh(0))
    } else if fits(room, &[el_len]) {
        (Slot::Current, Slot::Fresh(0))
    } else if fits(room, &[nb_len]) {
        (Slot::Fresh(0), Slot::Current)
    } else {
        (Slot::Fresh(0), Slot::Fresh(1))
    };
    Some(NodeLayout { element, neighbors })
}

impl NodeLayout {
    /// The page to fill next, after this node went in with `room` left on the current page:
    /// of the pages it touched, the one with the most room left (the latest on a tie). A
    /// 2000-d element leaves a page almost full, and the next nodes' neighbour tuples then
    /// share the page that took this one's, instead of two pages per node.
    pub(crate) fn fill_next(&self, room: usize, el_len: usize, nb_len: usize) -> Slot {
        let left = |slot: Slot| {
            let start = if slot == Slot::Current { room } else { page_capacity() };
            let el = if self.element == slot { footprint(el_len) } else { 0 };
            let nb = if self.neighbors == slot { footprint(nb_len) } else { 0 };
            start - el - nb
        };
        let mut best = Slot::Current;
        for slot in [self.element, self.neighbors] {
            if slot != best && left(slot) >= left(best) {
                best = slot;
            }
        }
        best
    }
}

/// A tuple of the build's page plan: the element or the neighbour tuple of node `i`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Planned {
    Element(u32),
    Neighbors(u32),
}

/// The build's page plan: per node its (element TID, neighbour TID), per page its tuples in
/// offset order, and the block inserts fill first (the page with the most room at the end).
#[derive(Debug, Default)]
pub(crate) struct PagePlan {
    pub(crate) pos: Vec<(Tid, Tid)>,
    pub(crate) pages: Vec<Vec<Planned>>,
    pub(crate) fill: Option<u32>,
}

/// Lays out nodes `0..n`, given in `order` as (node, element length, neighbour tuple
/// length), on pages numbered from `first_block`, each node placed by `place_node` on the
/// page `NodeLayout::fill_next` chose after the node before it. Err(node) when a tuple of
/// the node is longer than a page holds.
pub(crate) fn plan_pages(
    n: usize,
    order: impl IntoIterator<Item = (u32, usize, usize)>,
    first_block: u32,
) -> Result<PagePlan, u32> {
    let cap = page_capacity();
    let mut pos = vec![(Tid::INVALID, Tid::INVALID); n];
    let mut pages: Vec<Vec<Planned>> = Vec::new();
    // bytes (tuples and line pointers) used on each page, and the page being filled
    let mut used: Vec<usize> = Vec::new();
    let mut current: Option<usize> = None;
    for (i, el_len, nb_len) in order {
        let room = current.map_or(0, |c| cap - used[c]);
        let layout = place_node(room, el_len, nb_len).ok_or(i)?;
        // With no current page `room` is 0, which no tuple fits: `Current` is never chosen.
        let page_of = |slot: Slot, pages: &Vec<Vec<Planned>>| match slot {
            Slot::Current => current.unwrap_or(pages.len()),
            Slot::Fresh(k) => pages.len() + k,
        };
        let targets = [page_of(layout.element, &pages), page_of(layout.neighbors, &pages)];
        let next = page_of(layout.fill_next(room, el_len, nb_len), &pages);
        for (p, t, len) in
            [(targets[0], Planned::Element(i), el_len), (targets[1], Planned::Neighbors(i), nb_len)]
        {
            while pages.len() <= p {
                pages.push(Vec::new());
                used.push(0);
            }
            pages[p].push(t);
            used[p] += footprint(len);
            let tid = Tid { block: first_block + p as u32, offset: pages[p].len() as u16 };
            match t {
                Planned::Element(_) => pos[i as usize].0 = tid,
                Planned::Neighbors(_) => pos[i as usize].1 = tid,
            }
        }
        current = Some(next);
    }
    let fill = current.map(|c| first_block + c as u32);
    Ok(PagePlan { pos, pages, fill })
}

// ---- tenant directory ----------------------------------------------------------------------
// Bucket pages (`Meta::dir_start .. + dir_pages`) map a tenant group's hash (`hash % dir_pages`
// picks the bucket) to the group's entry element and element count. Item 1 of every
// directory page is a header tuple naming the next page of the bucket's chain (overflow
// pages are appended when a bucket page fills); entries follow.
//  header: 0 kind u8 | 4..8 next block u32
//  entry:  0 kind u8 | 1 flags u8 | 2..8 entry element TID | 8..16 group hash u64 | 16..20 count u32
// Flag DIR_PURE: every element the group has ever had carries the same first key bytes as
// its entry element (set when the group is created, cleared for good by the first insert
// whose first key differs, i.e. a hash collision). Entries written before the flag existed
// read as not pure, which only costs speed.
pub(crate) const DIR_HEADER_BYTES: usize = 8;
pub(crate) const DIR_ENTRY_BYTES: usize = 20;
pub(crate) const DIR_PURE: u8 = 1;

/// A directory entry: the group's hash, the element its traversal starts from, and how
/// many elements the group holds (deleted ones until VACUUM frees them, see `vacuum`),
/// and whether they all share the entry's first key (`pure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DirEntry {
    pub(crate) hash: u64,
    pub(crate) entry: Tid,
    pub(crate) count: u32,
    pub(crate) pure: bool,
}

pub(crate) fn encode_dir_header(next: u32) -> [u8; DIR_HEADER_BYTES] {
    let mut b = [0u8; DIR_HEADER_BYTES];
    b[0] = KIND_DIR_HEADER;
    b[4..8].copy_from_slice(&next.to_ne_bytes());
    b
}

/// The next block of a directory chain from a header tuple (INVALID_BLOCK = end).
pub(crate) fn decode_dir_header(b: &[u8]) -> Option<u32> {
    (b.len() >= DIR_HEADER_BYTES && b[0] == KIND_DIR_HEADER)
        .then(|| u32::from_ne_bytes([b[4], b[5], b[6], b[7]]))
}

pub(crate) fn encode_dir_entry(e: &DirEntry) -> [u8; DIR_ENTRY_BYTES] {
    let mut b = [0u8; DIR_ENTRY_BYTES];
    b[0] = KIND_DIR_ENTRY;
    b[1] = if e.pure { DIR_PURE } else { 0 };
    e.entry.write(&mut b[2..8]);
    b[8..16].copy_from_slice(&e.hash.to_ne_bytes());
    b[16..20].copy_from_slice(&e.count.to_ne_bytes());
    b
}

/// A pivot tuple of a group: `encode_dir_entry`'s layout with its own kind.
pub(crate) fn encode_dir_pivot(hash: u64, element: Tid) -> [u8; DIR_ENTRY_BYTES] {
    let mut b = encode_dir_entry(&DirEntry { hash, entry: element, count: 0, pure: false });
    b[0] = KIND_DIR_PIVOT;
    b
}

/// (group hash, element) of a pivot tuple.
pub(crate) fn decode_dir_pivot(b: &[u8]) -> Option<(u64, Tid)> {
    if b.len() < DIR_ENTRY_BYTES || b[0] != KIND_DIR_PIVOT {
        return None;
    }
    let mut c = [0u8; DIR_ENTRY_BYTES];
    c.copy_from_slice(&b[..DIR_ENTRY_BYTES]);
    c[0] = KIND_DIR_ENTRY;
    decode_dir_entry(&c).map(|e| (e.hash, e.entry))
}

pub(crate) fn decode_dir_entry(b: &[u8]) -> Option<DirEntry> {
    if b.len() < DIR_ENTRY_BYTES || b[0] != KIND_DIR_ENTRY {
        return None;
    }
    let mut h = [0u8; 8];
    h.copy_from_slice(&b[8..16]);
    Some(DirEntry {
        hash: u64::from_ne_bytes(h),
        entry: Tid::read(&b[2..8]),
        count: u32::from_ne_bytes([b[16], b[17], b[18], b[19]]),
        pure: b[1] & DIR_PURE != 0,
    })
}

/// Entries one directory page holds (after its header).
pub(crate) const fn dir_entries_per_page() -> usize {
    (page_capacity() - footprint(DIR_HEADER_BYTES)) / footprint(DIR_ENTRY_BYTES)
}

// Directory tuples: the entry's TID at 2..8, hash 8..16, count 16..20; a page holds enough
// entries that `dir_pages_for` (half-full pages) never divides by zero.
const _: () = assert!(2 + TID_BYTES == 8 && 16 + 4 == DIR_ENTRY_BYTES);
const _: () = assert!(dir_entries_per_page() >= 2);

/// Bucket pages for `groups` tenant groups at build: pages half full, so inserts of new
/// tenants rarely chain.
pub(crate) fn dir_pages_for(groups: usize) -> u32 {
    groups.div_ceil(dir_entries_per_page() / 2).max(1) as u32
}

/// Bucket of a hash.
pub(crate) fn dir_bucket(hash: u64, dir_pages: u32) -> u32 {
    (hash % dir_pages.max(1) as u64) as u32
}

/// The tuple kind byte of raw tuple bytes.
pub(crate) fn tuple_kind(b: &[u8]) -> Option<u8> {
    b.first().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trip_and_validation() {
        let mut m = Meta::new(50, 16, 64, Metric::Cosine);
        m.entry = Some((Tid { block: 7, offset: 3 }, 4));
        m.flags = FLAG_TENANT_LINKS;
        m.dir_start = 1;
        m.dir_pages = 3;
        m.insert_page = 9;
        m.elements = 123456789;
        m.generation = 0x0102_0304_0506_0708;
        let b = m.encode();
        assert_eq!(Meta::decode(&b).unwrap(), m);
        // A metapage from before the generation: 48 bytes, read as generation 0.
        let before = Meta::decode(&b[..META_BYTES_OLD]).unwrap();
        assert_eq!(before, Meta { generation: 0, ..m });
        assert!(matches!(Meta::decode(&b[..META_BYTES_OLD - 1]), Err(MetaError::Corrupt(_))));
        let mut bad = b;
        bad[0] ^= 1;
        assert!(
            matches!(Meta::decode(&bad), Err(MetaError::Corrupt(e)) if e.contains("bad magic"))
        );
        let mut old = b;
        old[4..8].copy_from_slice(&1u32.to_ne_bytes());
        assert_eq!(Meta::decode(&old), Err(MetaError::Version(1)));
        assert!(Meta::decode(&b).unwrap().tenant_links());
        let empty = Meta::new(3, 16, 64, Metric::L2);
        assert_eq!(Meta::decode(&empty.encode()).unwrap().entry, None);
        assert!(!empty.tenant_links());
    }

    #[test]
    fn element_round_trip() {
        let v = [1.0f32, -2.0, 3.5];
        let heap = [Tid { block: 1, offset: 2 }, Tid { block: 70000, offset: 5 }];
        let nb = Tid { block: 3, offset: 4 };
        let mut b = vec![0u8; element_size(3)];
        encode_element(&mut b, 2, &heap, nb, &v, &[]);
        let e = decode_element(&b).unwrap();
        assert_eq!(
            (e.level, e.deleted, e.heap_tids.as_slice(), e.neighbor_tid, e.dim),
            (2, false, &heap[..], nb, 3)
        );
        let r = element_vector_range(3);
        let back: Vec<f32> =
            b[r].chunks_exact(4).map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]])).collect();
        assert_eq!(back, v);
        assert!(add_element_heap_tid(&mut b, Tid { block: 9, offset: 9 }));
        assert_eq!(decode_element(&b).unwrap().heap_tids.len(), 3);
        assert!(!element_freed(&b));
        mark_element_freed(&mut b);
        assert!(!element_freed(&b), "only a deleted element is freed");
        set_element_heap_tids(&mut b, &[]);
        assert!(decode_element(&b).unwrap().deleted);
        assert!(!element_freed(&b));
        mark_element_freed(&mut b);
        assert!(element_freed(&b) && decode_element(&b).unwrap().deleted);
        assert!(element_header(&b).unwrap().1, "a freed element reads as deleted");
        assert!(decode_element(&b[..10]).is_none());
        let mut with_keys = vec![0u8; element_size(3) + 4];
        encode_element(&mut with_keys, 0, &heap, nb, &v, &[9, 8, 7, 6]);
        assert_eq!(element_keys(&with_keys, 3), &[9, 8, 7, 6]);
        assert_eq!(decode_element(&with_keys).unwrap().dim, 3);
        assert!(decode_element(&[KIND_NEIGHBORS; 100]).is_none());
    }

    #[test]
    fn neighbor_lists_round_trip_per_level() {
        let m = 4;
        let mut b = vec![0u8; neighbor_size(m, 2, false)];
        encode_neighbors_empty(&mut b, m, 2, false);
        let mut out = Vec::new();
        for l in 0..=2 {
            assert!(read_neighbors(&b, l, &mut out));
            assert!(out.is_empty());
        }
        let l0: Vec<Tid> = (1..=10).map(|i| Tid { block: i, offset: 1 }).collect();
        assert!(write_neighbors(&mut b, 0, &l0));
        read_neighbors(&b, 0, &mut out);
        assert_eq!(out, l0[..8].to_vec(), "level 0 holds 2m");
        assert!(write_neighbors(&mut b, 2, &l0[..2]));
        read_neighbors(&b, 2, &mut out);
        assert_eq!(out, l0[..2].to_vec());
        read_neighbors(&b, 1, &mut out);
        assert!(out.is_empty(), "other levels untouched");
        assert!(!write_neighbors(&mut b, 3, &l0), "no level 3 in a level-2 node");
        assert_eq!(neighbors_level(&b), Some(2));
        assert!(!read_neighbors(&b, TENANT_LIST, &mut out), "no tenant list in a plain index");
        assert!(!neighbors_have_tenant_list(&b));
    }

    #[test]
    fn tenant_list_is_separate_from_levels() {
        let m = 4;
        let mut b = vec![0u8; neighbor_size(m, 1, true)];
        assert_eq!(b.len(), neighbor_size(m, 1, false) + 2 * m * 6);
        encode_neighbors_empty(&mut b, m, 1, true);
        assert!(neighbors_have_tenant_list(&b));
        assert_eq!(neighbors_level(&b), Some(1));
        let t: Vec<Tid> = (1..=9).map(|i| Tid { block: 100 + i, offset: 2 }).collect();
        let l0: Vec<Tid> = (1..=3).map(|i| Tid { block: i, offset: 1 }).collect();
        assert!(write_neighbors(&mut b, TENANT_LIST, &t));
        assert!(write_neighbors(&mut b, 0, &l0));
        let mut out = Vec::new();
        assert!(read_neighbors(&b, TENANT_LIST, &mut out));
        assert_eq!(out, t[..8].to_vec(), "tenant list holds 2m");
        read_neighbors(&b, 0, &mut out);
        assert_eq!(out, l0);
        read_neighbors(&b, 1, &mut out);
        assert!(out.is_empty());
        assert!(!read_neighbors(&b[..b.len() - 1], 0, &mut out), "truncated tuple refused");
    }

    #[test]
    fn directory_tuples_round_trip() {
        let e = DirEntry {
            hash: 0xdead_beef_1234_5678,
            entry: Tid { block: 77, offset: 9 },
            count: 4242,
            pure: false,
        };
        assert_eq!(decode_dir_entry(&encode_dir_entry(&e)), Some(e));
        let pure = DirEntry { pure: true, ..e };
        assert_eq!(decode_dir_entry(&encode_dir_entry(&pure)), Some(pure));
        assert_eq!(encode_dir_entry(&pure)[1], DIR_PURE);
        assert_eq!(decode_dir_header(&encode_dir_header(31)), Some(31));
        assert_eq!(decode_dir_entry(&encode_dir_header(31)), None);
        assert_eq!(decode_dir_header(&encode_dir_entry(&e)), None);
        assert!(
            decode_element(&encode_dir_entry(&e)).is_none(),
            "directory tuples are not elements"
        );
        let pv = encode_dir_pivot(e.hash, Tid { block: 5, offset: 6 });
        assert_eq!(decode_dir_pivot(&pv), Some((e.hash, Tid { block: 5, offset: 6 })));
        assert_eq!(decode_dir_entry(&pv), None, "a pivot is not the group's entry");
        assert_eq!(decode_dir_pivot(&encode_dir_entry(&e)), None);
        assert!(dir_entries_per_page() > 250);
        assert_eq!(dir_pages_for(0), 1);
        assert_eq!(dir_pages_for(10_000), 10_000usize.div_ceil(dir_entries_per_page() / 2) as u32);
        assert!(dir_bucket(12345, 7) < 7);
    }

    /// Whether a node's two tuples fit one empty page.
    fn node_fits_one_page(dim: usize, keys_len: usize, m: usize, level: u8, tenant: bool) -> bool {
        fits(page_capacity(), &[element_size(dim) + keys_len, neighbor_size(m, level, tenant)])
    }

    #[test]
    fn page_limits_match_pgvector() {
        assert!(
            node_fits_one_page(50, 0, 16, max_level(16, false), false),
            "a 50-d node fits a page with its neighbours"
        );
        assert!(
            node_fits_one_page(50, 40, 16, max_level(16, true), true),
            "and with keys and a tenant list"
        );
        assert!(
            !node_fits_one_page(MAX_DIM, 0, 16, 0, false),
            "a 2000-d element needs its neighbour tuple elsewhere"
        );
        assert!(
            footprint(element_size(MAX_DIM)) <= page_capacity(),
            "a 2000-d element fits a page"
        );
        assert!(element_size(MAX_DIM) + 2 * 9 <= max_tuple_len(), "with two integer keys too");
        for m in [2, 16, 48, 100] {
            for t in [false, true] {
                assert!(
                    footprint(neighbor_size(m, max_level(m, t), t)) <= page_capacity(),
                    "m={m}: top neighbour tuple fits"
                );
            }
        }
        assert_eq!(max_level(16, false), MAX_LEVEL);
        assert_eq!(
            Tid::unpack(Tid { block: 123456, offset: 77 }.pack()),
            Tid { block: 123456, offset: 77 }
        );
    }

    /// PageAddItemExtended's arithmetic on a fresh page (PageInit with OPAQUE_SIZE of special
    /// space), written out independently of `fits`: Some(offset) or None when full.
    struct SimPage {
        lower: usize,
        upper: usize,
        items: u16,
    }

    impl SimPage {
        fn new() -> SimPage {
            SimPage { lower: PAGE_HEADER, upper: BLCKSZ - OPAQUE_SIZE, items: 0 }
        }
        fn add(&mut self, len: usize) -> Option<u16> {
            let upper = self.upper.checked_sub(maxalign(len))?;
            if self.lower + ITEM_ID > upper {
                return None;
            }
            self.lower += ITEM_ID;
            self.upper = upper;
            self.items += 1;
            Some(self.items)
        }
    }

    #[test]
    fn fits_is_page_add_item_arithmetic() {
        assert_eq!(page_capacity(), SimPage::new().upper - SimPage::new().lower);
        assert!(
            fits(page_capacity(), &[max_tuple_len()])
                && !fits(page_capacity(), &[max_tuple_len() + 1])
        );
        assert!(
            SimPage::new().add(max_tuple_len()).is_some()
                && SimPage::new().add(max_tuple_len() + 1).is_none()
        );
        assert!(!fits(0, &[1]), "an all-zero page (no room) takes nothing");
        assert!(fits(0, &[]));
        // sequences of tuple lengths: fits() says yes exactly when the page takes them all
        let mut x: u64 = 0x1234_5678;
        for _ in 0..2000 {
            let mut lens = Vec::new();
            for _ in 0..(x % 5) as usize + 1 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                lens.push(((x >> 33) % 8200) as usize);
            }
            let mut p = SimPage::new();
            let all = lens.iter().all(|&l| p.add(l).is_some());
            assert_eq!(fits(page_capacity(), &lens), all, "{lens:?}");
        }
    }

    #[test]
    fn place_node_keeps_tuples_together_when_they_fit() {
        use Slot::*;
        let (el, nb) = (element_size(50), neighbor_size(16, 0, false));
        let together = NodeLayout { element: Current, neighbors: Current };
        assert_eq!(place_node(page_capacity(), el, nb), Some(together));
        assert_eq!(place_node(footprint(el) + footprint(nb), el, nb), Some(together));
        assert_eq!(
            place_node(footprint(el) + footprint(nb) - 1, el, nb),
            Some(NodeLayout { element: Fresh(0), neighbors: Fresh(0) })
        );
        assert_eq!(
            place_node(0, el, nb),
            Some(NodeLayout { element: Fresh(0), neighbors: Fresh(0) })
        );
        // 2000 dims: never together; the neighbour tuple takes what room the current page has
        let (el, nb) = (element_size(MAX_DIM), neighbor_size(16, 0, false));
        assert_eq!(
            place_node(page_capacity(), el, nb),
            Some(NodeLayout { element: Current, neighbors: Fresh(0) })
        );
        assert_eq!(
            place_node(footprint(nb), el, nb),
            Some(NodeLayout { element: Fresh(0), neighbors: Current })
        );
        assert_eq!(
            place_node(footprint(nb) - 1, el, nb),
            Some(NodeLayout { element: Fresh(0), neighbors: Fresh(1) })
        );
        assert_eq!(
            place_node(0, el, nb),
            Some(NodeLayout { element: Fresh(0), neighbors: Fresh(1) })
        );
        // a tuple longer than a page is refused, not placed
        assert_eq!(place_node(page_capacity(), max_tuple_len() + 1, nb), None);
        assert_eq!(place_node(page_capacity(), el, max_tuple_len() + 1), None);
    }

    /// The failure of issue 11: 1,960 dims (and 1,900 with key columns) fit a page with a
    /// level-0 neighbour tuple but not with a higher level's, which the build placed on the
    /// element's page anyway.
    #[test]
    fn near_the_limit_a_node_may_not_fit_one_page() {
        assert!(node_fits_one_page(1960, 0, 16, 0, false));
        assert!(!node_fits_one_page(1960, 0, 16, 1, false));
        assert!(node_fits_one_page(1900, 9, 16, 0, true));
        assert!(!node_fits_one_page(1900, 9, 16, 1, true));
    }

    /// Writes a plan's pages with `SimPage` (as the build writes them with PageAddItem) and
    /// checks every tuple lands at its planned TID.
    fn assert_plan_writes(plan: &PagePlan, first_block: u32, len_of: impl Fn(Planned) -> usize) {
        for (pi, tuples) in plan.pages.iter().enumerate() {
            let mut p = SimPage::new();
            for &t in tuples {
                let off =
                    p.add(len_of(t)).unwrap_or_else(|| panic!("{t:?} does not fit page {pi}"));
                let at = Tid { block: first_block + pi as u32, offset: off };
                match t {
                    Planned::Element(i) => assert_eq!(plan.pos[i as usize].0, at),
                    Planned::Neighbors(i) => assert_eq!(plan.pos[i as usize].1, at),
                }
            }
        }
        let planned: usize = plan.pages.iter().map(|p| p.len()).sum();
        assert_eq!(planned, 2 * plan.pos.len(), "every node's two tuples are on some page");
    }

    #[test]
    fn page_plan_matches_the_writer_at_every_dimension_near_the_limit() {
        let m = 16;
        for dim in [50, 1000, 1900, 1950, 1960, 1990, MAX_DIM] {
            for (keys_len, tenant) in [(0, false), (9, true), (18, true)] {
                let n = 200;
                // levels as a build draws them, with a few high ones
                let level =
                    |i: u32| -> u8 { [0, 0, 0, 1, 0, 2, 0, 0, 3, 0, 1, 0][i as usize % 12] };
                let el_len = element_size(dim) + keys_len;
                let nb_len = |i: u32| neighbor_size(m, level(i), tenant);
                let order: Vec<u32> = (0..n as u32).rev().collect();
                let plan = plan_pages(n, order.iter().map(|&i| (i, el_len, nb_len(i))), 7).unwrap();
                assert_plan_writes(&plan, 7, |t| match t {
                    Planned::Element(_) => el_len,
                    Planned::Neighbors(i) => nb_len(i),
                });
                if dim <= 1000 {
                    assert!(
                        plan.pos.iter().all(|(e, b)| e.block == b.block),
                        "dim {dim}: tuples stay together"
                    );
                }
                if dim == MAX_DIM {
                    // an element per page, the neighbour tuples of 20 to 40 nodes sharing one
                    assert!(
                        plan.pages.len() <= n + n / 15 + 2,
                        "dim {dim}: {} pages for {n} nodes",
                        plan.pages.len()
                    );
                }
                let fill = plan.fill.unwrap();
                assert!(fill >= 7 && ((fill - 7) as usize) < plan.pages.len());
            }
        }
        assert_eq!(plan_pages(1, [(0, max_tuple_len() + 1, 10)], 1).unwrap_err(), 0);
        let empty = plan_pages(0, [], 1).unwrap();
        assert!(empty.pages.is_empty() && empty.pos.is_empty() && empty.fill.is_none());
    }

    #[test]
    fn fill_next_is_the_page_with_most_room() {
        use Slot::*;
        let cap = page_capacity();
        // small nodes: the fresh page that took both tuples (the current one had no room)
        let (el, nb) = (element_size(50), neighbor_size(16, 0, false));
        let l = place_node(10, el, nb).unwrap();
        assert_eq!(l.fill_next(10, el, nb), Fresh(0));
        assert_eq!(
            NodeLayout { element: Current, neighbors: Current }.fill_next(cap, el, nb),
            Current
        );
        // 2000 dims: the page of the neighbour tuple, not the element's nearly full one
        let (el, nb) = (element_size(MAX_DIM), neighbor_size(16, 0, false));
        let l = place_node(0, el, nb).unwrap();
        assert_eq!(l.fill_next(0, el, nb), Fresh(1));
        let l = place_node(cap - footprint(nb), el, nb).unwrap();
        assert_eq!(l, NodeLayout { element: Fresh(0), neighbors: Current });
        assert_eq!(l.fill_next(cap - footprint(nb), el, nb), Current);
        // an untouched current page with more room than the fresh one stays current
        let (el, nb1, nb0) =
            (element_size(1960), neighbor_size(16, 1, false), neighbor_size(16, 0, false));
        let room = cap - footprint(nb1);
        let l = place_node(room, el, nb0).unwrap();
        assert_eq!(l, NodeLayout { element: Fresh(0), neighbors: Fresh(0) });
        assert_eq!(l.fill_next(room, el, nb0), Current);
    }
}
