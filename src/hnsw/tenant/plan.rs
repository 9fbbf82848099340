//! Tenant groups (pure: no pgrx). An index with key columns keeps, beside the global
//! graph, one flat graph per tenant group: the rows whose first key column hashes alike
//! (`keys::group_hash`). A directory after the metapage maps each group's hash to its
//! entry element, element count and pivots (`page::DirEntry`). This file holds the
//! build's grouping and the directory's page layout.

use super::keys::{self, KeyType};
use super::page;

/// The groups of `keys` (one encoded key row per element, in element order): each group's
/// hash, in order of first appearance, and its members' element numbers.
pub(crate) fn group_members(keys: &[Vec<u8>], types: &[KeyType]) -> (Vec<u64>, Vec<Vec<u32>>) {
    let mut index: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
    let (mut hashes, mut members): (Vec<u64>, Vec<Vec<u32>>) = (Vec::new(), Vec::new());
    for (i, k) in keys.iter().enumerate() {
        let h = keys::group_hash(k, types);
        let g = *index.entry(h).or_insert_with(|| {
            hashes.push(h);
            members.push(Vec::new());
            members.len() - 1
        });
        members[g].push(i as u32);
    }
    (hashes, members)
}

/// Per group: whether every member carries the same first key bytes (no hash collision),
/// so a scan may trust the group's entry to speak for all of them.
pub(crate) fn group_purity(members: &[Vec<u32>], keys: &[Vec<u8>], types: &[KeyType]) -> Vec<bool> {
    let first = |i: u32| keys::first_key(&keys[i as usize], types);
    members.iter().map(|m| m.iter().all(|&i| first(i) == first(m[0]))).collect()
}

/// Spreads directory tuples (group hash, encoded entry or pivot) over `buckets` bucket
/// pages; tuples a bucket page cannot hold go to overflow pages, numbered from
/// `first_overflow`. Returns the pages in block order: buckets first, then overflow pages,
/// each with its next-page link.
pub(crate) type DirTuple = (u64, [u8; page::DIR_ENTRY_BYTES]);
pub(crate) fn directory_pages(
    tuples: &[DirTuple],
    buckets: u32,
    first_overflow: u32,
) -> Vec<(u32, Vec<DirTuple>)> {
    let per = page::dir_entries_per_page();
    let mut by_bucket: Vec<Vec<DirTuple>> = vec![Vec::new(); buckets as usize];
    for t in tuples {
        by_bucket[page::dir_bucket(t.0, buckets) as usize].push(*t);
    }
    let mut heads = Vec::new();
    let mut overflow: Vec<(u32, Vec<DirTuple>)> = Vec::new();
    for list in by_bucket {
        let mut chunks = list.chunks(per).map(|c| c.to_vec());
        let head = chunks.next().unwrap_or_default();
        let rest: Vec<Vec<DirTuple>> = chunks.collect();
        let next = if rest.is_empty() {
            page::INVALID_BLOCK
        } else {
            first_overflow + overflow.len() as u32
        };
        heads.push((next, head));
        let n = rest.len();
        for (i, c) in rest.into_iter().enumerate() {
            let blk = first_overflow + overflow.len() as u32;
            overflow.push((if i + 1 < n { blk + 1 } else { page::INVALID_BLOCK }, c));
        }
    }
    heads.extend(overflow);
    heads
}

/// Every element of a tenant group and its encoded keys, as a walk of the whole group
/// found them when the directory counted `count` elements. The count is of the group's
/// elements not freed (deleted members stay until VACUUM frees them, with their keys), and
/// every insert raises it in the WAL record that writes the element; VACUUM lowers it only
/// when it frees slots, and that raises the metapage's generation, which empties the
/// backend's cache (so does an insert that reuses a slot). So at an equal count and
/// generation the list is still the group's exact membership; at a higher count,
/// `tenant::extend_members` finds the elements that joined from `tail` on. REINDEX and
/// TRUNCATE give the index a new relfilenode, which empties the cache too.
pub(crate) struct GroupMembers {
    pub(crate) count: u32,
    /// The insert page when `count` was read: the elements that join the group later lie
    /// from there on (see `extend_members`); `page::INVALID_BLOCK` when unknown.
    pub(crate) tail: u32,
    pub(crate) ids: Vec<u64>,
    /// The members' encoded keys, one after another; member i's end at `ends[i]`.
    keys: Vec<u8>,
    ends: Vec<u32>,
    /// Per key column, decoded by `decode_ints` for integer columns at a fixed offset:
    /// each member's value and whether it is NULL.
    ints: Vec<Option<(Vec<i64>, Vec<bool>)>>,
}

impl GroupMembers {
    pub(crate) fn new(count: u32, tail: u32) -> GroupMembers {
        GroupMembers {
            count,
            tail,
            ids: Vec::new(),
            keys: Vec::new(),
            ends: Vec::new(),
            ints: Vec::new(),
        }
    }

    /// Member i's encoded keys.
    fn key(&self, i: usize) -> &[u8] {
        let a = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.keys[a..self.ends[i] as usize]
    }

    /// Decodes every integer column at a fixed offset into a column of its own, so a
    /// condition on it reads one array (a column some member's keys are too short for
    /// stays encoded only).
    pub(crate) fn decode_ints(&mut self, types: &[KeyType]) {
        self.ints = vec![Some((Vec::new(), Vec::new())); types.len()];
        self.decode_ints_from(types, 0);
    }

    /// `decode_ints` for the members from `from` on, the ones before decoded already (the
    /// members `tenant::extend_members` added).
    pub(crate) fn decode_ints_from(&mut self, types: &[KeyType], from: usize) {
        if self.ints.len() != types.len() {
            return self.decode_ints(types);
        }
        for col in 0..types.len() {
            let off = keys::fixed_offset(types, col).filter(|_| types[col] == KeyType::Int);
            let mut column = self.ints[col].take();
            if let (Some(off), Some((vals, nulls))) = (off, column.as_mut()) {
                for i in from..self.ids.len() {
                    let Some(b) = self.key(i).get(off..off + 9) else {
                        column = None;
                        break;
                    };
                    nulls.push(b[0] != 0);
                    let mut v = [0u8; 8];
                    v.copy_from_slice(&b[1..9]);
                    vals.push(i64::from_ne_bytes(v));
                }
            } else {
                column = None;
            }
            self.ints[col] = column;
        }
    }

    /// The members whose keys meet every condition of `m`, in the members' order: tested
    /// one condition at a time over the members still in the running, from the decoded
    /// column where there is one.
    pub(crate) fn filter(&self, m: &keys::Matcher) -> Vec<u64> {
        let mut idx: Vec<u32> = (0..self.ids.len() as u32).collect();
        for i in 0..m.len() {
            let decoded =
                m.int_cond(i).and_then(|(col, op, v)| Some((self.ints.get(col)?.as_ref()?, op, v)));
            match decoded {
                Some(((vals, nulls), op, v)) => {
                    let null = op.null_passes();
                    idx.retain(|&j| {
                        let j = j as usize;
                        if nulls[j] {
                            null
                        } else {
                            keys::int_holds(op, vals[j], v)
                        }
                    });
                }
                None => idx.retain(|&j| m.holds(i, self.key(j as usize))),
            }
        }
        idx.into_iter().map(|j| self.ids[j as usize]).collect()
    }

    pub(crate) fn push(&mut self, id: u64, keys: &[u8]) {
        self.ids.push(id);
        self.keys.extend_from_slice(keys);
        self.ends.push(self.keys.len() as u32);
    }

    /// Each member with its keys.
    #[cfg(test)]
    fn iter(&self) -> impl Iterator<Item = (u64, &[u8])> + '_ {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        self.ids
            .iter()
            .zip(starts.zip(self.ends.iter()))
            .map(|(&id, (a, &b))| (id, &self.keys[a as usize..b as usize]))
    }

    pub(crate) fn bytes(&self) -> usize {
        self.ids.len() * (12 + 9 * self.ints.iter().flatten().count()) + self.keys.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int_row(v: i64) -> Vec<u8> {
        let mut out = Vec::new();
        keys::encode(&mut out, KeyType::Int, Some(&keys::KeyValue::Int(v)));
        out
    }

    // Rows group by their first key, groups in order of first appearance.
    #[test]
    fn grouping_by_first_key() {
        let rows: Vec<Vec<u8>> = [5, 7, 5, 9, 7, 5].iter().map(|&v| int_row(v)).collect();
        let (hashes, members) = group_members(&rows, &[KeyType::Int]);
        assert_eq!(members, vec![vec![0, 2, 5], vec![1, 4], vec![3]]);
        assert_eq!(hashes.len(), 3);
        assert_eq!(hashes[0], keys::group_hash(&rows[0], &[KeyType::Int]));
        assert_eq!(group_purity(&members, &rows, &[KeyType::Int]), vec![true; 3]);
        // a group holding two different first keys (a collision) is impure
        let mixed = vec![vec![0, 1], vec![3]];
        assert_eq!(group_purity(&mixed, &rows, &[KeyType::Int]), vec![false, true]);
        assert_eq!(group_members(&[], &[KeyType::Int]), (vec![], vec![]));
    }

    // Each bucket page holds its tuples up to a page's worth; the rest chain through
    // overflow pages numbered from `first_overflow`, in block order after the buckets.
    #[test]
    fn directory_layout() {
        let per = page::dir_entries_per_page();
        let buckets = 2u32;
        // enough tuples of one bucket to need two overflow pages
        let b0: Vec<u64> =
            (0u64..).filter(|&h| page::dir_bucket(h, buckets) == 0).take(2 * per + 1).collect();
        let b1: u64 = (0u64..).find(|&h| page::dir_bucket(h, buckets) == 1).unwrap();
        let mut tuples: Vec<DirTuple> =
            b0.iter().map(|&h| (h, [0u8; page::DIR_ENTRY_BYTES])).collect();
        tuples.push((b1, [1u8; page::DIR_ENTRY_BYTES]));
        let pages = directory_pages(&tuples, buckets, 100);
        assert_eq!(pages.len(), 2 + 2);
        assert_eq!(pages[0].0, 100, "bucket 0 continues on the first overflow page");
        assert_eq!(pages[0].1.len(), per);
        assert_eq!((pages[1].0, pages[1].1.len()), (page::INVALID_BLOCK, 1));
        assert_eq!(pages[2].0, 101);
        assert_eq!(pages[3].0, page::INVALID_BLOCK);
        let total: usize = pages.iter().map(|p| p.1.len()).sum();
        assert_eq!(total, tuples.len(), "every tuple placed once");
        assert!(pages.iter().all(|p| p.1.len() <= per));
        // no tuples: one empty page per bucket
        let empty = directory_pages(&[], 3, 7);
        assert_eq!(empty.len(), 3);
        assert!(empty.iter().all(|p| p.0 == page::INVALID_BLOCK && p.1.is_empty()));
    }

    #[test]
    fn group_members_keep_each_members_keys() {
        let mut m = GroupMembers::new(3, u32::MAX);
        m.push(7, &[1, 2, 3]);
        m.push(9, &[]);
        m.push(4, &[5]);
        let got: Vec<(u64, Vec<u8>)> = m.iter().map(|(id, k)| (id, k.to_vec())).collect();
        assert_eq!(got, vec![(7, vec![1, 2, 3]), (9, vec![]), (4, vec![5])]);
        assert_eq!(m.count, 3);
        assert_eq!(m.bytes(), 3 * 12 + 4);
    }

    #[test]
    fn group_members_filter_as_matches_does() {
        let mut rnd = keys::RandomKeys::new(0x2545_f491_4f6c_dd1d);
        for types in keys::RandomKeys::LAYOUTS {
            for round in 0..200 {
                // Odd rounds decode the first 25 members, then the rest as extend_members
                // adds them (decode_ints_from).
                let mut m = GroupMembers::new(40, u32::MAX);
                let mut rows = Vec::new();
                for id in 0..40u64 {
                    let mut row = rnd.row(types);
                    if (round % 50 == 0 && id == 7) || (round % 50 == 25 && id == 30) {
                        row.truncate(row.len() / 2); // an unreadable row
                    }
                    m.push(id * 3, &row);
                    rows.push(row);
                    if round % 2 == 1 && id == 24 {
                        m.decode_ints(types);
                    }
                }
                if round % 2 == 1 {
                    m.decode_ints_from(types, 25);
                } else {
                    m.decode_ints(types);
                }
                let conds = rnd.conds(types);
                let want: Vec<u64> = (0..40u64)
                    .filter(|&i| keys::matches(&rows[i as usize], types, &conds))
                    .map(|i| i * 3)
                    .collect();
                assert_eq!(
                    m.filter(&keys::Matcher::new(types, &conds)),
                    want,
                    "{types:?} {conds:?}"
                );
            }
        }
    }
}
