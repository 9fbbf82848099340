//! The only code in vecguard that touches Postgres buffers, pages and WAL.
//!
//! Reads take a share lock per tuple access and release it at once (`SharedPage` drops
//! unlock); a scan pins through a `PinCache`, which holds a few pins at a time and pins
//! through the buffer that last held a block (`ReadRecentBuffer`) before falling back to a
//! buffer-table lookup. Every change after the build goes through `WalWrite`, the one WAL
//! idiom of this index: GenericXLogStart -> register each buffer (full image for new pages)
//! -> modify the returned copies -> GenericXLogFinish. A `WalWrite` dropped without
//! `commit()`, including while a Rust panic or a Postgres ERROR unwinds through it, calls
//! GenericXLogAbort, so half a change is never logged or applied. The build writes pages
//! without WAL (`BulkWriter`) and logs them all once at the end with log_newpage_range.
//!
//! All-zero pages (PageIsNew) are free space, never corruption: a crash between extending
//! the relation and logging the record that initialises the new page leaves one (the file
//! grew, the record was lost), and so does an ERROR in between. Readers skip them; a writer
//! that needs a new page takes one of them before extending the relation
//! (`IndexRel::free_blocks`, `WalWrite::fresh_page`), and VACUUM lists them in the free
//! space map.

use super::page::{self, Meta, MetaError};
use pgrx::pg_sys;
use std::cell::RefCell;
use std::collections::HashMap;
use std::marker::PhantomData;

pub(crate) type BlockNumber = u32;
/// Pages one GenericXLog record may change (MAX_GENERIC_XLOG_PAGES).
pub(crate) const PAGES_PER_RECORD: usize = pg_sys::MAX_GENERIC_XLOG_PAGES as usize;
pub(crate) const P_NEW: BlockNumber = pg_sys::InvalidBlockNumber;

/// Share-locks or unlocks the content lock of a pinned buffer without pgrx's ERROR guard.
///
/// Every `pg_sys` call runs behind a sigsetjmp guard so that a Postgres ERROR becomes a
/// Rust panic. A scan takes and drops a content lock for every page it reads, two calls
/// per node visited, and the guard then costs as much as the lock. These two modes of
/// LockBuffer cannot raise an ERROR: LWLockAcquire errors only when a backend already
/// holds MAX_SIMUL_LWLOCKS (200) locks, and this module holds a handful at most (a share
/// lock while reading a page, or the at most four pages of one GenericXLog record);
/// LWLockRelease errors only for a lock not held, and every unlock here pairs with its
/// own lock. (A FATAL or PANIC ends the process without
/// unwinding, so no Rust frame is skipped either way.)
mod unguarded {
    use pgrx::pg_sys;
    unsafe extern "C" {
        #[link_name = "LockBuffer"]
        pub(crate) fn lock_buffer(buffer: pg_sys::Buffer, mode: std::ffi::c_int);
    }
}

/// Takes the share content lock of a buffer this backend has pinned.
///
/// # Safety
/// `buf` must be pinned by this backend and not locked by it.
unsafe fn share_lock(buf: pg_sys::Buffer) {
    // SAFETY: see `unguarded`: a share lock on a pinned buffer raises no ERROR.
    unsafe { unguarded::lock_buffer(buf, pg_sys::BUFFER_LOCK_SHARE as i32) }
}

/// Releases the content lock taken by `share_lock`.
///
/// # Safety
/// `buf` must be share-locked by this backend.
unsafe fn unlock(buf: pg_sys::Buffer) {
    // SAFETY: see `unguarded`: releasing a lock this backend holds raises no ERROR.
    unsafe { unguarded::lock_buffer(buf, pg_sys::BUFFER_LOCK_UNLOCK as i32) }
}

/// The TID a Postgres ItemPointer holds.
///
/// # Safety
/// `p` must point to a valid ItemPointerData.
pub(crate) unsafe fn tid_from_ptr(p: pg_sys::ItemPointer) -> page::Tid {
    // SAFETY: the caller passes a valid ItemPointer.
    let t = unsafe { &*p };
    page::Tid {
        block: ((t.ip_blkid.bi_hi as u32) << 16) | t.ip_blkid.bi_lo as u32,
        offset: t.ip_posid,
    }
}

/// Writes a TID into a Postgres ItemPointer.
pub(crate) fn tid_to_item_pointer(t: page::Tid, out: &mut pg_sys::ItemPointerData) {
    out.ip_blkid.bi_hi = (t.block >> 16) as u16;
    out.ip_blkid.bi_lo = (t.block & 0xffff) as u16;
    out.ip_posid = t.offset;
}

/// Writes the opaque trailer (next block, page id) of a freshly initialised page.
///
/// # Safety
/// `p` must be a page initialised with `page::OPAQUE_SIZE` bytes of special space.
unsafe fn init_special(p: pg_sys::Page) {
    // SAFETY: the special area is OPAQUE_SIZE bytes at PageGetSpecialPointer, per PageInit.
    unsafe {
        let sp = pg_sys::PageGetSpecialPointer(p) as *mut u8;
        std::ptr::write_unaligned(sp as *mut u32, page::INVALID_BLOCK);
        std::ptr::write_unaligned(sp.add(4) as *mut u16, 0);
        std::ptr::write_unaligned(sp.add(6) as *mut u16, page::PAGE_ID);
    }
}

/// Checks the page id in the special area: refuses pages this AM did not write.
///
/// # Safety
/// `p` must point to a BLCKSZ page.
unsafe fn page_is_ours(p: pg_sys::Page) -> bool {
    // SAFETY: header fields are read within the page; pd_special is checked before use.
    unsafe {
        let hdr = p as *const pg_sys::PageHeaderData;
        let special = (*hdr).pd_special as usize;
        if special + page::OPAQUE_SIZE != page::BLCKSZ {
            return false;
        }
        std::ptr::read_unaligned((p as *const u8).add(special + 6) as *const u16) == page::PAGE_ID
    }
}

/// Returns item `off` of page `p` as bytes, or None when absent or unused.
///
/// # Safety
/// `p` must be a valid, locked page; the slice lives only while the lock is held.
unsafe fn page_item<'a>(p: pg_sys::Page, off: u16) -> Option<&'a [u8]> {
    // SAFETY: offsets are checked against PageGetMaxOffsetNumber; the item id's offset and
    // length come from the page itself, which Postgres validated when it was read.
    unsafe {
        if off == 0 || off > pg_sys::PageGetMaxOffsetNumber(p) {
            return None;
        }
        let id = pg_sys::PageGetItemId(p, off);
        let word = std::ptr::read_unaligned(id as *const u32);
        let (lp_off, lp_flags, lp_len) = (word & 0x7fff, (word >> 15) & 3, (word >> 17) & 0x7fff);
        if lp_flags != pg_sys::LP_NORMAL || lp_off as usize + lp_len as usize > page::BLCKSZ {
            return None;
        }
        Some(std::slice::from_raw_parts((p as *const u8).add(lp_off as usize), lp_len as usize))
    }
}

/// An index relation handle (borrowed from the executor; never closed here).
#[derive(Clone, Copy)]
pub(crate) struct IndexRel {
    rel: pg_sys::Relation,
}

impl IndexRel {
    /// # Safety
    /// `rel` must be an open index relation for the lifetime of the handle.
    pub(crate) unsafe fn new(rel: pg_sys::Relation) -> IndexRel {
        IndexRel { rel }
    }

    pub(crate) fn raw(&self) -> pg_sys::Relation {
        self.rel
    }

    pub(crate) fn nblocks(&self) -> BlockNumber {
        // SAFETY: rel is open (constructor contract).
        unsafe {
            pg_sys::RelationGetNumberOfBlocksInFork(self.rel, pg_sys::ForkNumber::MAIN_FORKNUM)
        }
    }

    /// Whether changes must be WAL-logged (permanent relations; not unlogged/temp).
    pub(crate) fn needs_wal(&self) -> bool {
        // SAFETY: rd_rel is valid for an open relation.
        unsafe {
            (*(*self.rel).rd_rel).relpersistence
                == pg_sys::RELPERSISTENCE_PERMANENT as std::ffi::c_char
        }
    }

    /// Reads and validates the metapage.
    pub(crate) fn meta(&self) -> Result<Meta, MetaError> {
        let p = self.read_shared(page::METAPAGE_BLKNO);
        p.meta()
    }

    /// Pins and share-locks one block for reading (released on drop).
    pub(crate) fn read_shared(&self, blk: BlockNumber) -> SharedPage {
        // SAFETY: ReadBufferExtended ERRORs on a bad block; the buffer is pinned, then
        // share-locked; SharedPage's Drop unlocks and unpins exactly once.
        unsafe {
            let buf = pg_sys::ReadBufferExtended(
                self.rel,
                pg_sys::ForkNumber::MAIN_FORKNUM,
                blk,
                pg_sys::ReadBufferMode::RBM_NORMAL,
                std::ptr::null_mut(),
            );
            share_lock(buf);
            SharedPage { buf, page: pg_sys::BufferGetPage(buf), unpin: true }
        }
    }

    /// `n` blocks for new pages, to initialise with `WalWrite::fresh_page` in this order, for
    /// a caller holding the update lock (so nobody else initialises or extends meanwhile):
    /// all-zero pages the free space map lists (VACUUM records them), then the run of
    /// all-zero pages that ends the relation (what a crash leaves), then blocks past the end,
    /// which `fresh_page` extends the relation by. A block taken from the map and then left
    /// unused (the row joined an existing element) is listed again by the next VACUUM.
    pub(crate) fn free_blocks(&self, n: usize) -> Vec<BlockNumber> {
        let nblocks = self.nblocks();
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            // SAFETY: the relation is open; GetFreeIndexPage returns InvalidBlockNumber when
            // the map lists nothing (or there is no map) and marks what it returns as used,
            // so this loop ends.
            let b = unsafe { pg_sys::GetFreeIndexPage(self.rel) };
            if b == pg_sys::InvalidBlockNumber {
                break;
            }
            // The map is only a hint: use a block only if it is still all zeros.
            if b != page::METAPAGE_BLKNO
                && b < nblocks
                && !out.contains(&b)
                && self.read_shared(b).is_new()
            {
                out.push(b);
            }
        }
        if out.len() < n {
            let mut tail = nblocks;
            while tail > page::METAPAGE_BLKNO + 1 && self.read_shared(tail - 1).is_new() {
                tail -= 1;
            }
            let mut b = tail;
            while out.len() < n {
                if !out.contains(&b) {
                    out.push(b);
                }
                b += 1;
            }
        }
        out
    }

    /// Lists all-zero blocks in the free space map (VACUUM), for `free_blocks`.
    pub(crate) fn record_free_pages(&self, blocks: &[BlockNumber]) {
        if blocks.is_empty() {
            return;
        }
        // SAFETY: the relation is open; the free space map of an index takes any block
        // number (the map is extended as needed) and its upper levels are then updated so
        // searches find the new entries.
        unsafe {
            for &b in blocks {
                pg_sys::RecordFreeIndexPage(self.rel, b);
            }
            pg_sys::IndexFreeSpaceMapVacuum(self.rel);
        }
    }

    /// Serialises graph changes (insert, vacuum repair) against each other: a heavyweight
    /// lock on the metapage's block number, released at transaction end or by the guard.
    pub(crate) fn lock_for_update(&self) -> UpdateLock {
        // SAFETY: LockPage on an open relation; UpdateLock::drop releases it.
        unsafe { pg_sys::LockPage(self.rel, page::METAPAGE_BLKNO, pg_sys::ExclusiveLock as i32) };
        UpdateLock { rel: self.rel }
    }
}

/// Holds the index's update lock (see `IndexRel::lock_for_update`).
pub(crate) struct UpdateLock {
    rel: pg_sys::Relation,
}

impl Drop for UpdateLock {
    fn drop(&mut self) {
        // SAFETY: releases the lock taken in lock_for_update on the same relation.
        unsafe { pg_sys::UnlockPage(self.rel, page::METAPAGE_BLKNO, pg_sys::ExclusiveLock as i32) };
    }
}

/// A share-locked page; tuple slices borrowed from it die with it.
pub(crate) struct SharedPage {
    buf: pg_sys::Buffer,
    page: pg_sys::Page,
    unpin: bool,
}

impl SharedPage {
    /// Tuple `off` (1-based), if present.
    pub(crate) fn item(&self, off: u16) -> Option<&[u8]> {
        // SAFETY: the page is share-locked while self lives, and the slice borrows self.
        unsafe { page_item(self.page, off) }
    }

    pub(crate) fn max_offset(&self) -> u16 {
        // SAFETY: locked page.
        unsafe { pg_sys::PageGetMaxOffsetNumber(self.page) }
    }

    pub(crate) fn is_ours(&self) -> bool {
        // SAFETY: locked page.
        unsafe { page_is_ours(self.page) }
    }

    /// Whether the page was never initialised (all zeros: free space, see the module
    /// comment). Postgres verified when reading it that a page with pd_upper 0 is all zeros.
    pub(crate) fn is_new(&self) -> bool {
        // SAFETY: locked page.
        unsafe { pg_sys::PageIsNew(self.page) }
    }

    /// Whether the page may hold elements: not all-zero free space and not a tenant
    /// directory page (its first item is the directory header).
    pub(crate) fn holds_elements(&self) -> bool {
        !self.is_new() && self.item(1).and_then(page::decode_dir_header).is_none()
    }

    /// Free bytes for one more tuple (line pointer accounted for).
    pub(crate) fn free_space(&self) -> usize {
        // SAFETY: locked page.
        unsafe { pg_sys::PageGetFreeSpace(self.page) }
    }

    /// pd_upper - pd_lower: the `room` of `page::fits` (0 for an all-zero page).
    pub(crate) fn room(&self) -> usize {
        // SAFETY: locked page.
        unsafe { pg_sys::PageGetExactFreeSpace(self.page) }
    }

    /// Decodes the metapage stored in this page's contents.
    pub(crate) fn meta(&self) -> Result<Meta, MetaError> {
        // SAFETY: the contents start inside the locked page; pd_lower ends what `set_meta`
        // wrote (an older metapage is shorter), and the read stays below it and within
        // META_BYTES, which the page holds (asserted in `page`).
        let bytes = unsafe {
            let start = pg_sys::PageGetContents(self.page) as *const u8;
            let lower = (*(self.page as *const pg_sys::PageHeaderData)).pd_lower as usize;
            let written = (self.page as *const u8).add(lower).offset_from(start);
            let len = usize::try_from(written).unwrap_or(0).min(page::META_BYTES);
            std::slice::from_raw_parts(start, len)
        };
        Meta::decode(bytes)
    }
}

impl Drop for SharedPage {
    fn drop(&mut self) {
        // SAFETY: unlocks the share lock taken at creation; unpins only pins we own.
        unsafe {
            unlock(self.buf);
            if self.unpin {
                pg_sys::ReleaseBuffer(self.buf);
            }
        }
    }
}

/// The pins of one scan: at most `HELD_MAX` at a time, the oldest released first.
pub(crate) struct PinCache {
    rel: IndexRel,
    /// The buffer this scan holds pinned for each block (0: none), indexed by block number:
    /// a page revisited while still pinned costs an array read and a lock.
    slots: Vec<pg_sys::Buffer>,
    /// The blocks pinned, oldest first.
    held: std::collections::VecDeque<BlockNumber>,
    /// Pins taken since the last `release_all` (for `hnsw.scan_stats`).
    taken: usize,
    /// The buffers that last held this relation's blocks (taken from the backend's
    /// `RECENT` for the cache's lifetime).
    recent: Vec<pg_sys::Buffer>,
    node: crate::compat::RelFileLocator,
    temp: bool,
}

/// Pins a scan holds at once. Postgres keeps a backend's pins in an array of 8 entries
/// and moves the rest to a hash table (its resource owner does the same past 64): when a
/// scan kept every page it touched pinned, about 600 per query, each new pin and each
/// release cost several hash operations. A handful keeps both in their arrays; a page
/// visited again after its pin was dropped is pinned again through `ReadRecentBuffer`.
const HELD_MAX: usize = 4;

/// Blocks past this are not remembered (4 bytes per block of the relation).
const RECENT_MAX_BLOCKS: u32 = 1 << 22;
/// Relations remembered per backend before the memory is dropped and rebuilt.
const RECENT_MAX_RELATIONS: usize = 64;

thread_local! {
    /// Per backend and index relfilenode: the shared buffer that held each block when
    /// this backend last read it. The next scan pins it with ReadRecentBuffer, which checks
    /// the buffer's tag under its header lock: a hit skips the lookup in the shared buffer
    /// mapping table, which was about a fifth of an index scan's time; a miss (the page was
    /// evicted since) falls back to the normal read. Only a hint, never trusted.
    static RECENT: std::cell::RefCell<HashMap<(u32, u32, u32), Vec<pg_sys::Buffer>>> = std::cell::RefCell::new(HashMap::new());
}

impl PinCache {
    pub(crate) fn new(rel: IndexRel) -> PinCache {
        // SAFETY: the storage identity and rd_rel of an open relation.
        let (node, temp) = unsafe {
            let r = rel.raw();
            (
                crate::compat::rel_locator(r),
                (*(*r).rd_rel).relpersistence == pg_sys::RELPERSISTENCE_TEMP as std::ffi::c_char,
            )
        };
        // A temporary relation lives in local buffers, and its relfilenode number may equal
        // a permanent relation's (only the backend id, which is not part of a buffer tag,
        // tells them apart): it neither uses nor feeds the map.
        let recent = if temp {
            Vec::new()
        } else {
            RECENT
                .with(|r| r.borrow_mut().remove(&crate::compat::locator_key(&node)))
                .unwrap_or_default()
        };
        PinCache {
            rel,
            slots: Vec::new(),
            held: std::collections::VecDeque::with_capacity(HELD_MAX + 1),
            taken: 0,
            recent,
            node,
            temp,
        }
    }

    /// Pins `blk`: through the buffer that last held it when it still does, else by a
    /// normal read (remembering the buffer for next time).
    fn pin(&mut self, blk: BlockNumber) -> pg_sys::Buffer {
        let rel = self.rel.raw();
        if let Some(&b) = self.recent.get(blk as usize) {
            if b > 0
                // SAFETY: b came from ReadBufferExtended in this backend, so it is a valid
                // shared buffer id (1..=NBuffers); ReadRecentBuffer pins it only if it still
                // holds this relation's block, checked under the buffer header lock.
                && unsafe {
                    pg_sys::ReadRecentBuffer(self.node, pg_sys::ForkNumber::MAIN_FORKNUM, blk, b)
                }
            {
                // ReadRecentBuffer does not count the access in the relation's statistics
                // the way ReadBufferExtended does; count it as a hit here.
                // SAFETY: pgstat_info is null or the relation's live stats entry.
                unsafe {
                    let info = (*rel).pgstat_info;
                    if (*rel).pgstat_enabled && !info.is_null() {
                        crate::compat::count_stat(info, crate::compat::StatCounter::BlockHit);
                    }
                }
                return b;
            }
        }
        // SAFETY: pins the block (ERROR on a block past the end); released by the caller.
        let buf = unsafe {
            pg_sys::ReadBufferExtended(
                rel,
                pg_sys::ForkNumber::MAIN_FORKNUM,
                blk,
                pg_sys::ReadBufferMode::RBM_NORMAL,
                std::ptr::null_mut(),
            )
        };
        // Local buffers (temporary indexes) are negative and not remembered.
        if !self.temp && buf > 0 && blk < RECENT_MAX_BLOCKS {
            if self.recent.len() <= blk as usize {
                self.recent.resize(blk as usize + 1, 0);
            }
            self.recent[blk as usize] = buf;
        }
        buf
    }

    /// The buffer this cache holds pinned for `blk`, if any.
    fn held(&self, blk: BlockNumber) -> Option<pg_sys::Buffer> {
        self.slots.get(blk as usize).copied().filter(|&b| b != 0)
    }

    /// The buffer of `blk`, pinned. Dropping the oldest pin is safe because no page of
    /// this cache is still locked when the next one is pinned: every `SharedPage` of a
    /// `DiskGraph` is dropped before its next page read.
    fn pinned(&mut self, blk: BlockNumber) -> pg_sys::Buffer {
        if let Some(b) = self.held(blk) {
            return b;
        }
        if self.held.len() >= HELD_MAX {
            if let Some(old) = self.held.pop_front() {
                let b = std::mem::take(&mut self.slots[old as usize]);
                // SAFETY: b was pinned once by this cache and is not locked (see above).
                unsafe { pg_sys::ReleaseBuffer(b) };
            }
        }
        let b = self.pin(blk);
        if self.slots.len() <= blk as usize {
            // Sized to the relation at once (blocks past the end ERROR in `pin`).
            self.slots.resize((blk as usize + 1).max(self.rel.nblocks() as usize), 0);
        }
        self.slots[blk as usize] = b;
        self.held.push_back(blk);
        self.taken += 1;
        b
    }

    /// Asks the CPU for the header of the buffer that last held `blk`, when `blk` is not
    /// pinned yet: `pin` reads it next (ReadRecentBuffer locks that header).
    pub(crate) fn prefetch_descriptor(&self, blk: BlockNumber) {
        if self.held(blk).is_some() {
            return;
        }
        if let Some(&b) = self.recent.get(blk as usize) {
            if b > 0 {
                // SAFETY: b is a shared buffer id this backend obtained (1..=NBuffers), so the
                // address lies in the descriptor array; prefetching reads nothing.
                unsafe { prefetch(pg_sys::BufferDescriptors.add(b as usize - 1) as *const u8) };
            }
        }
    }

    /// Asks the CPU for the header and line pointers of `blk`'s page, without pinning it:
    /// the first half of `prefetch_items`. The page is the one this scan holds pinned, or
    /// else the buffer that last held the block (None when there is none: no hint).
    pub(crate) fn prefetch_page(&self, blk: BlockNumber) -> Option<PagePrefetch> {
        let buf =
            self.held(blk).unwrap_or_else(|| self.recent.get(blk as usize).copied().unwrap_or(0));
        if buf <= 0 {
            return None;
        }
        // SAFETY: buf is a shared buffer id this backend obtained (1..=NBuffers), so its
        // page address lies in the buffer pool, which stays mapped for the backend's life
        // whatever the buffer holds now; prefetching reads nothing.
        unsafe {
            let page = pg_sys::BufferGetPage(buf) as *const u8;
            prefetch(page);
            prefetch(page.add(64));
            Some(PagePrefetch { page })
        }
    }

    /// Share-locks `blk`, pinning it first if this cache does not hold it.
    pub(crate) fn read_shared(&mut self, blk: BlockNumber) -> SharedPage {
        let buf = self.pinned(blk);
        // SAFETY: buf is pinned by us; the SharedPage unlocks but does not unpin.
        unsafe {
            share_lock(buf);
            SharedPage { buf, page: pg_sys::BufferGetPage(buf), unpin: false }
        }
    }

    /// Pins taken since the last `release_all`.
    pub(crate) fn pins_taken(&self) -> usize {
        self.taken
    }

    /// Drops every pin (rescans and end of scan).
    pub(crate) fn release_all(&mut self) {
        self.taken = 0;
        for blk in self.held.drain(..) {
            let buf = std::mem::take(&mut self.slots[blk as usize]);
            // SAFETY: each held block's buffer was pinned once by `pinned`.
            unsafe { pg_sys::ReleaseBuffer(buf) };
        }
    }
}

impl Drop for PinCache {
    fn drop(&mut self) {
        self.release_all();
        let recent = std::mem::take(&mut self.recent);
        if !recent.is_empty() {
            RECENT.with(|r| {
                let mut r = r.borrow_mut();
                if r.len() >= RECENT_MAX_RELATIONS {
                    r.clear();
                }
                r.insert(crate::compat::locator_key(&self.node), recent);
            });
        }
    }
}

/// A page whose cache lines are being fetched (see `PinCache::prefetch_page`).
pub(crate) struct PagePrefetch {
    page: *const u8,
}

impl PagePrefetch {
    /// Asks the CPU to fetch the first `len` bytes of tuple `off`. The line pointer is read
    /// without pin or lock: the address stays inside the buffer pool, and a buffer being
    /// rewritten or reused under us only makes the hint useless: prefetches never fault
    /// and nothing read here is used otherwise.
    pub(crate) fn items(&self, off: u16, len: usize) {
        if off == 0 || off as usize > (page::BLCKSZ - 24) / 4 {
            return;
        }
        // SAFETY: the line pointer lies inside the page (offset bounded above), in the
        // mapped buffer pool; a volatile read of a word another backend may be writing
        // yields some u32 and no other effect; the prefetched addresses stay inside the page.
        unsafe {
            let lp =
                std::ptr::read_volatile(self.page.add(24 + 4 * (off as usize - 1)) as *const u32);
            let at = (lp & 0x7fff) as usize;
            let mut o = 0;
            while o < len && at + o < page::BLCKSZ {
                prefetch(self.page.add(at + o));
                o += 64;
            }
        }
    }
}

/// A hint to load the cache line at `p` (no effect on other architectures).
#[inline(always)]
unsafe fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch(p as *const i8, std::arch::x86_64::_MM_HINT_T0)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

// The page geometry `page` computes with (pure, so it cannot ask) is the server's.
const _: () = assert!(page::BLCKSZ == pg_sys::BLCKSZ as usize);
const _: () = assert!(page::PAGE_HEADER == std::mem::offset_of!(pg_sys::PageHeaderData, pd_linp));
const _: () = assert!(page::ITEM_ID == std::mem::size_of::<pg_sys::ItemIdData>());
const _: () = assert!(page::MAXALIGN == pg_sys::MAXIMUM_ALIGNOF as usize);

/// A page registered in a GenericXLog record: `page` is the copy to modify. It borrows
/// the [`WalWrite`] that owns the copy, so it cannot outlive the record: using it after
/// `commit` (which consumes the `WalWrite`) or after the record is dropped (aborted) does
/// not compile. Several pages of one record may be held at once.
pub(crate) struct PageMut<'w> {
    page: pg_sys::Page,
    pub(crate) block: BlockNumber,
    _record: PhantomData<&'w WalWrite>,
}

impl<'w> PageMut<'w> {
    /// Wraps a page copy (or, for `BulkWriter`, a locked buffer's page) valid for `'w`.
    fn new(page: pg_sys::Page, block: BlockNumber) -> PageMut<'w> {
        PageMut { page, block, _record: PhantomData }
    }

    /// Mutable bytes of tuple `off`.
    pub(crate) fn item_mut(&mut self, off: u16) -> Option<&mut [u8]> {
        // SAFETY: the GenericXLog copy is private to this backend until commit; the item
        // range was validated by page_item.
        unsafe {
            page_item(self.page, off)
                .map(|s| std::slice::from_raw_parts_mut(s.as_ptr() as *mut u8, s.len()))
        }
    }

    pub(crate) fn item(&self, off: u16) -> Option<&[u8]> {
        // SAFETY: as item_mut, read-only.
        unsafe { page_item(self.page, off) }
    }

    pub(crate) fn max_offset(&self) -> u16 {
        // SAFETY: valid page copy.
        unsafe { pg_sys::PageGetMaxOffsetNumber(self.page) }
    }

    /// Appends a tuple; returns its offset, or None when it does not fit.
    pub(crate) fn add_item(&mut self, bytes: &[u8]) -> Option<u16> {
        // SAFETY: PageAddItemExtended copies `len` bytes into the page or returns
        // InvalidOffsetNumber (0) when there is no room.
        let off = unsafe {
            pg_sys::PageAddItemExtended(
                self.page,
                bytes.as_ptr() as pg_sys::Item,
                bytes.len(),
                pg_sys::InvalidOffsetNumber,
                0,
            )
        };
        (off != pg_sys::InvalidOffsetNumber).then_some(off)
    }

    /// Replaces tuple `off` with `bytes` in place (same offset, the page compacted around
    /// it); false when the new tuple does not fit in the old one's space plus the page's
    /// free space. Inserts use it to reuse a vacuumed element's slots.
    pub(crate) fn overwrite_item(&mut self, off: u16, bytes: &[u8]) -> bool {
        if off == 0 || off > self.max_offset() || self.item(off).is_none() {
            return false;
        }
        // SAFETY: the GenericXLog copy is private to this backend until commit; `off` names
        // a normal item (checked above); PageIndexTupleOverwrite copies `len` bytes and
        // returns false, changing nothing, when they do not fit.
        unsafe {
            pg_sys::PageIndexTupleOverwrite(
                self.page,
                off,
                bytes.as_ptr() as pg_sys::Item,
                bytes.len(),
            )
        }
    }

    /// Stores `meta` in the page contents and extends pd_lower over it, so full-page
    /// images do not treat it as the hole between pd_lower and pd_upper.
    pub(crate) fn set_meta(&mut self, meta: &Meta) {
        let bytes = meta.encode();
        // SAFETY: the metapage contents area is larger than META_BYTES.
        unsafe {
            let dst = pg_sys::PageGetContents(self.page) as *mut u8;
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, bytes.len());
            let hdr = self.page as *mut pg_sys::PageHeaderData;
            (*hdr).pd_lower = (dst.add(bytes.len()) as usize - self.page as usize) as u16;
        }
    }
}

/// One atomic, WAL-logged change to a few pages (see the module comment).
pub(crate) struct WalWrite {
    rel: IndexRel,
    fork: pg_sys::ForkNumber::Type,
    state: *mut pg_sys::GenericXLogState,
    /// Buffers locked for this record; a `RefCell` so that pages are handed out through
    /// `&self`, and each [`PageMut`] borrows the record for as long as it lives.
    bufs: RefCell<Vec<pg_sys::Buffer>>,
    committed: bool,
}

impl WalWrite {
    pub(crate) fn begin(rel: IndexRel) -> WalWrite {
        WalWrite::begin_fork(rel, pg_sys::ForkNumber::MAIN_FORKNUM)
    }

    pub(crate) fn begin_fork(rel: IndexRel, fork: pg_sys::ForkNumber::Type) -> WalWrite {
        // SAFETY: GenericXLogStart allocates the record state for an open relation.
        let state = unsafe { pg_sys::GenericXLogStart(rel.raw()) };
        WalWrite { rel, fork, state, bufs: RefCell::new(Vec::new()), committed: false }
    }

    fn register(&self, buf: pg_sys::Buffer, full_image: bool) -> pg_sys::Page {
        self.bufs.borrow_mut().push(buf);
        self.register_held(buf, full_image)
    }

    /// `register` for a buffer already in `bufs`.
    fn register_held(&self, buf: pg_sys::Buffer, full_image: bool) -> pg_sys::Page {
        let flags = if full_image { pg_sys::GENERIC_XLOG_FULL_IMAGE as i32 } else { 0 };
        // SAFETY: buf is pinned and exclusively locked by us; at most MAX_GENERIC_XLOG_PAGES
        // (4) pages are registered per record by the callers in this crate.
        unsafe { pg_sys::GenericXLogRegisterBuffer(self.state, buf, flags) }
    }

    // Pins an existing block of this record's fork and locks it exclusively; the caller
    // hands the buffer to `bufs` (through register or directly) before anything can raise.
    fn lock_exclusive(&self, blk: BlockNumber) -> pg_sys::Buffer {
        // SAFETY: pin + exclusive lock of a block of an open relation, released in
        // commit/drop once the caller has recorded the buffer.
        unsafe {
            let b = pg_sys::ReadBufferExtended(
                self.rel.raw(),
                self.fork,
                blk,
                pg_sys::ReadBufferMode::RBM_NORMAL,
                std::ptr::null_mut(),
            );
            pg_sys::LockBuffer(b, pg_sys::BUFFER_LOCK_EXCLUSIVE as i32);
            b
        }
    }

    /// Exclusively locks an existing block and registers it for modification. A block this
    /// record already holds is an ERROR (a second exclusive lock would wait for ourselves).
    pub(crate) fn page(&self, blk: BlockNumber) -> PageMut<'_> {
        // SAFETY: every buffer in `bufs` is pinned by this record.
        if self.bufs.borrow().iter().any(|&b| unsafe { pg_sys::BufferGetBlockNumber(b) } == blk) {
            pgrx::error!("hnsw: block {blk} registered twice in one WAL record");
        }
        let buf = self.lock_exclusive(blk);
        let page = self.register(buf, false);
        PageMut::new(page, blk)
    }

    /// Extends the relation by one initialised page, registered with a full image.
    pub(crate) fn new_page(&self) -> PageMut<'_> {
        // SAFETY: the relation extension lock serialises P_NEW; the new buffer is
        // exclusively locked before the extension lock is released, as in pgvector.
        let (buf, blk) = unsafe {
            pg_sys::LockRelationForExtension(self.rel.raw(), pg_sys::ExclusiveLock as i32);
            let b = pg_sys::ReadBufferExtended(
                self.rel.raw(),
                self.fork,
                P_NEW,
                pg_sys::ReadBufferMode::RBM_NORMAL,
                std::ptr::null_mut(),
            );
            pg_sys::LockBuffer(b, pg_sys::BUFFER_LOCK_EXCLUSIVE as i32);
            pg_sys::UnlockRelationForExtension(self.rel.raw(), pg_sys::ExclusiveLock as i32);
            (b, pg_sys::BufferGetBlockNumber(b))
        };
        let page = self.register(buf, true);
        // SAFETY: page is the registered copy of a new buffer.
        unsafe {
            pg_sys::PageInit(page, page::BLCKSZ, page::OPAQUE_SIZE);
            init_special(page);
        }
        PageMut::new(page, blk)
    }

    /// Initialises block `blk` of the main fork, one `IndexRel::free_blocks` returned, and
    /// registers it with a full image: an all-zero page of the relation (checked under the
    /// exclusive lock) or, for the block just past the end, a page the relation is extended
    /// by. ERROR when the block is neither (the caller must hold the update lock).
    pub(crate) fn fresh_page(&self, blk: BlockNumber) -> PageMut<'_> {
        if self.fork != pg_sys::ForkNumber::MAIN_FORKNUM {
            pgrx::error!("hnsw: fresh_page on fork {}", self.fork);
        }
        let nblocks = self.rel.nblocks();
        if blk >= nblocks {
            let p = self.new_page();
            if p.block != blk {
                pgrx::error!("hnsw: expected new block {blk}, got {}", p.block);
            }
            return p;
        }
        let buf = self.lock_exclusive(blk);
        // The buffer is recorded in `bufs` before anything can raise an ERROR, so Drop
        // releases it exactly once.
        self.bufs.borrow_mut().push(buf);
        // SAFETY: buf is pinned and locked by us.
        let is_new = unsafe { pg_sys::PageIsNew(pg_sys::BufferGetPage(buf)) };
        if !is_new {
            pgrx::error!("hnsw: block {blk} is not a free page");
        }
        let page = self.register_held(buf, true);
        // SAFETY: page is the registered copy of an all-zero page, logged as a full image.
        unsafe {
            pg_sys::PageInit(page, page::BLCKSZ, page::OPAQUE_SIZE);
            init_special(page);
        }
        PageMut::new(page, blk)
    }

    /// Logs and applies the change atomically.
    pub(crate) fn commit(mut self) {
        // SAFETY: finishes the record started in begin; buffers are still locked.
        unsafe { pg_sys::GenericXLogFinish(self.state) };
        self.committed = true;
    }
}

impl Drop for WalWrite {
    fn drop(&mut self) {
        // SAFETY: abort frees the record without touching the buffers (also during unwind);
        // then every buffer we locked and pinned is released exactly once.
        unsafe {
            if !self.committed {
                pg_sys::GenericXLogAbort(self.state);
            }
            for &b in self.bufs.borrow().iter() {
                pg_sys::UnlockReleaseBuffer(b);
            }
        }
    }
}

/// Writes the pages of a fresh build without WAL; `finish` logs them all once.
pub(crate) struct BulkWriter {
    rel: IndexRel,
}

impl BulkWriter {
    pub(crate) fn new(rel: IndexRel) -> BulkWriter {
        BulkWriter { rel }
    }

    /// Appends one page; `fill` adds its tuples (or metapage contents).
    pub(crate) fn append(&mut self, fill: impl FnOnce(&mut PageMut<'_>)) -> BlockNumber {
        // SAFETY: during ambuild nobody else can see the index; the new buffer is locked,
        // initialised, filled, marked dirty and released here.
        unsafe {
            let buf = pg_sys::ReadBufferExtended(
                self.rel.raw(),
                pg_sys::ForkNumber::MAIN_FORKNUM,
                P_NEW,
                pg_sys::ReadBufferMode::RBM_NORMAL,
                std::ptr::null_mut(),
            );
            pg_sys::LockBuffer(buf, pg_sys::BUFFER_LOCK_EXCLUSIVE as i32);
            let page = pg_sys::BufferGetPage(buf);
            pg_sys::PageInit(page, page::BLCKSZ, page::OPAQUE_SIZE);
            init_special(page);
            let blk = pg_sys::BufferGetBlockNumber(buf);
            let mut pm = PageMut::new(page, blk);
            fill(&mut pm);
            pg_sys::MarkBufferDirty(buf);
            pg_sys::UnlockReleaseBuffer(buf);
            blk
        }
    }

    /// WAL-logs every page written, once (permanent relations only).
    pub(crate) fn finish(self) {
        if self.rel.needs_wal() {
            let n = self.rel.nblocks();
            // SAFETY: logs full images of blocks [0, n) of the main fork.
            unsafe {
                pg_sys::log_newpage_range(
                    self.rel.raw(),
                    pg_sys::ForkNumber::MAIN_FORKNUM,
                    0,
                    n,
                    true,
                )
            };
        }
    }
}
