//! Key columns of an authorized `hnsw` index (pure: no pgrx).
//!
//! `USING hnsw (tenant_id, embedding vector_cosine_ops, clearance, valid_from)` stores the
//! values of its key columns (every column but the vector, in index order, before or after
//! it; the first key column is the tenant, see `tenant`) in each element tuple, so the scan
//! can test the policy's conditions (`tenant_id = ANY (...)`, `clearance <= ...`) on a
//! node before scoring it: the graph traversal only ever returns rows the caller may see.
//!
//! Encoding, per column in index order: one null byte, then an integer class value
//! (int2/int4/int8/date/timestamp/timestamptz widened to i64, 8 bytes native order), a
//! 16-byte uuid, or a u16 length and the bytes of a text value. NULL satisfies no
//! condition, as in SQL, except the two window conditions: `valid_from <=* t` (NULL or
//! at most t) and `valid_until >* t` (NULL or after t), which date, timestamp and
//! timestamptz keys support so that a validity window with open ends is an index
//! condition. Text supports equality only (byte equality is only right for deterministic
//! collations, which the glue checks); uuid and integers support all of `=`, `<`, `<=`,
//! `>`, `>=` and `= ANY(array)`.

/// Longest text key stored (longer values are refused with an error by the glue).
pub(crate) const MAX_TEXT_KEY: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyType {
    Int,
    Uuid,
    Text,
}

/// A key value ready to encode or compare.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum KeyValue {
    Int(i64),
    Bytes(Vec<u8>),
}

/// Strategy numbers of our key opclasses: btree's 1 to 5, then the window operators
/// `<=*` (6) and `>*` (7) of sql/hnsw.sql, which a NULL key satisfies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Lt = 1,
    Le = 2,
    Eq = 3,
    Ge = 4,
    Gt = 5,
    /// `key IS NULL OR key <= value` (a window that has opened, or has no start).
    NullOrLe = 6,
    /// `key IS NULL OR key > value` (a window that has not closed, or has no end).
    NullOrGt = 7,
}

impl Op {
    pub(crate) fn from_strategy(s: u16) -> Option<Op> {
        match s {
            1 => Some(Op::Lt),
            2 => Some(Op::Le),
            3 => Some(Op::Eq),
            4 => Some(Op::Ge),
            5 => Some(Op::Gt),
            6 => Some(Op::NullOrLe),
            7 => Some(Op::NullOrGt),
            _ => None,
        }
    }

    /// Whether a NULL key satisfies this operator, whatever the value.
    pub(crate) fn null_passes(self) -> bool {
        matches!(self, Op::NullOrLe | Op::NullOrGt)
    }
}

impl Cond {
    /// No key can satisfy it: an empty value list (`= ANY('{}')`, a NULL argument) on an
    /// operator NULL keys do not pass.
    pub(crate) fn unsatisfiable(&self) -> bool {
        self.values.is_empty() && !self.op.null_passes()
    }
}

/// One scan key: column `col` (0 = first key column) `op` any of `values`
/// (several values only for `= ANY(array)`; an empty list matches nothing).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Cond {
    pub(crate) col: usize,
    pub(crate) op: Op,
    pub(crate) values: Vec<KeyValue>,
}

/// Appends one encoded key (None = NULL).
pub(crate) fn encode(out: &mut Vec<u8>, ty: KeyType, v: Option<&KeyValue>) {
    match v {
        None => {
            out.push(1);
            match ty {
                KeyType::Int => out.extend_from_slice(&[0; 8]),
                KeyType::Uuid => out.extend_from_slice(&[0; 16]),
                KeyType::Text => out.extend_from_slice(&0u16.to_ne_bytes()),
            }
        }
        Some(v) => {
            out.push(0);
            match (ty, v) {
                (KeyType::Int, KeyValue::Int(i)) => out.extend_from_slice(&i.to_ne_bytes()),
                (KeyType::Uuid, KeyValue::Bytes(b)) => {
                    let mut u = [0u8; 16];
                    let n = b.len().min(16);
                    u[..n].copy_from_slice(&b[..n]);
                    out.extend_from_slice(&u);
                }
                (KeyType::Text, KeyValue::Bytes(b)) => {
                    let n = b.len().min(MAX_TEXT_KEY);
                    out.extend_from_slice(&(n as u16).to_ne_bytes());
                    out.extend_from_slice(&b[..n]);
                }
                // A value of the wrong class never matches: store it as NULL.
                _ => {
                    out.pop();
                    encode(out, ty, None);
                }
            }
        }
    }
}

/// A decoded key borrowed from tuple bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Key<'a> {
    Null,
    Int(i64),
    Bytes(&'a [u8]),
}

/// Decodes the key of column `col`, walking the columns before it.
fn key_at<'a>(keys: &'a [u8], types: &[KeyType], col: usize) -> Option<Key<'a>> {
    let mut p = 0usize;
    for (i, ty) in types.iter().enumerate() {
        let null = *keys.get(p)? != 0;
        p += 1;
        let (len, hdr) = match ty {
            KeyType::Int => (8, 0),
            KeyType::Uuid => (16, 0),
            KeyType::Text => (u16::from_ne_bytes([*keys.get(p)?, *keys.get(p + 1)?]) as usize, 2),
        };
        let body = keys.get(p + hdr..p + hdr + len)?;
        if i == col {
            return Some(if null {
                Key::Null
            } else {
                match ty {
                    KeyType::Int => {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(body);
                        Key::Int(i64::from_ne_bytes(b))
                    }
                    _ => Key::Bytes(body),
                }
            });
        }
        p += hdr + len;
    }
    None
}

fn compare(k: Key<'_>, v: &KeyValue) -> Option<std::cmp::Ordering> {
    match (k, v) {
        (Key::Int(a), KeyValue::Int(b)) => Some(a.cmp(b)),
        (Key::Bytes(a), KeyValue::Bytes(b)) => Some(a.cmp(b.as_slice())),
        _ => None,
    }
}

/// Whether encoded `keys` satisfy every condition.
pub(crate) fn matches(keys: &[u8], types: &[KeyType], conds: &[Cond]) -> bool {
    conds.iter().all(|c| holds(key_at(keys, types, c.col), c))
}

/// Whether key `k` (None: unreadable) satisfies `c`.
fn holds(k: Option<Key<'_>>, c: &Cond) -> bool {
    use std::cmp::Ordering::*;
    let Some(k) = k else { return false };
    if k == Key::Null {
        return c.op.null_passes();
    }
    c.values.iter().any(|v| match (c.op, compare(k, v)) {
        (_, None) => false,
        (Op::Eq, Some(o)) => o == Equal,
        (Op::Lt, Some(o)) => o == Less,
        (Op::Le | Op::NullOrLe, Some(o)) => o != Greater,
        (Op::Gt | Op::NullOrGt, Some(o)) => o == Greater,
        (Op::Ge, Some(o)) => o != Less,
    })
}

/// [`matches`] for many rows of one layout: each condition's column is located once, at
/// a fixed byte offset when every column before it has a fixed width (integers, uuids),
/// so a row's values are read in place instead of walking the row per condition.
pub(crate) struct Matcher<'a> {
    types: &'a [KeyType],
    conds: &'a [Cond],
    /// Per condition: where its column starts in every row, if that is fixed.
    at: Vec<Option<usize>>,
    /// Per condition: the one integer value of a condition on a fixed-offset integer
    /// column, compared without going through `KeyValue`.
    int: Vec<Option<i64>>,
}

impl<'a> Matcher<'a> {
    pub(crate) fn new(types: &'a [KeyType], conds: &'a [Cond]) -> Matcher<'a> {
        let at = conds.iter().map(|c| fixed_offset(types, c.col)).collect::<Vec<_>>();
        let int = conds
            .iter()
            .zip(&at)
            .map(|(c, at)| match (at, types.get(c.col), c.values.as_slice()) {
                (Some(_), Some(KeyType::Int), [KeyValue::Int(v)]) => Some(*v),
                _ => None,
            })
            .collect();
        Matcher { types, conds, at, int }
    }

    pub(crate) fn matches(&self, keys: &[u8]) -> bool {
        (0..self.conds.len()).all(|i| self.holds(i, keys))
    }

    /// How many conditions there are.
    pub(crate) fn len(&self) -> usize {
        self.conds.len()
    }

    /// Condition `i` as (column, operator, value) when it compares a fixed-offset integer
    /// column with one value, the case a column of decoded integers can answer.
    pub(crate) fn int_cond(&self, i: usize) -> Option<(usize, Op, i64)> {
        self.at[i]?;
        Some((self.conds[i].col, self.conds[i].op, self.int[i]?))
    }

    /// Whether `keys` meet condition `i`.
    pub(crate) fn holds(&self, i: usize, keys: &[u8]) -> bool {
        let (c, at, int) = (&self.conds[i], &self.at[i], &self.int[i]);
        {
            if let (Some(off), Some(v)) = (at, int) {
                let Some(b) = keys.get(*off..off + 9) else { return false };
                if b[0] != 0 {
                    return c.op.null_passes();
                }
                let k = i64::from_ne_bytes([b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8]]);
                return int_holds(c.op, k, *v);
            }
            let k = match at {
                Some(off) => fixed_key_at(keys, self.types[c.col], *off),
                None => key_at(keys, self.types, c.col),
            };
            holds(k, c)
        }
    }
}

/// Where column `col` starts in every encoded row, when the columns before it have fixed
/// widths (integers, uuids) and it is not text; None otherwise.
pub(crate) fn fixed_offset(types: &[KeyType], col: usize) -> Option<usize> {
    if *types.get(col)? == KeyType::Text {
        return None;
    }
    types[..col].iter().try_fold(0usize, |off, t| match t {
        KeyType::Int => Some(off + 9),
        KeyType::Uuid => Some(off + 17),
        KeyType::Text => None,
    })
}

/// Whether a non-null integer key `k` meets `op v`.
#[inline]
pub(crate) fn int_holds(op: Op, k: i64, v: i64) -> bool {
    match op {
        Op::Lt => k < v,
        Op::Le | Op::NullOrLe => k <= v,
        Op::Eq => k == v,
        Op::Ge => k >= v,
        Op::Gt | Op::NullOrGt => k > v,
    }
}

/// The key of a fixed-width column whose encoding starts at `off`.
fn fixed_key_at(keys: &[u8], ty: KeyType, off: usize) -> Option<Key<'_>> {
    let len = if ty == KeyType::Int { 8 } else { 16 };
    let body = keys.get(off + 1..off + 1 + len)?;
    if keys[off] != 0 {
        return Some(Key::Null);
    }
    Some(match ty {
        KeyType::Int => Key::Int(i64::from_ne_bytes(body.try_into().ok()?)),
        _ => Key::Bytes(body),
    })
}

/// FNV-1a, fixed forever: group hashes are stored in the index's tenant directory.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Length of the first key column's encoding at the start of `keys`.
fn first_len(keys: &[u8], ty: KeyType) -> Option<usize> {
    let n = match ty {
        KeyType::Int => 1 + 8,
        KeyType::Uuid => 1 + 16,
        KeyType::Text => 1 + 2 + u16::from_ne_bytes([*keys.get(1)?, *keys.get(2)?]) as usize,
    };
    (keys.len() >= n).then_some(n)
}

/// The encoding of the first key column at the start of `keys` (empty when unreadable).
pub(crate) fn first_key<'a>(keys: &'a [u8], types: &[KeyType]) -> &'a [u8] {
    match types.first().and_then(|&ty| first_len(keys, ty)) {
        Some(n) => &keys[..n],
        None => &[],
    }
}

/// Tenant group of an element: the hash of its first key column's encoding. Elements
/// with equal first keys (the tenant) share a group and are linked into one flat graph.
/// The hash is not collision-proof; a group whose members all share one first key is
/// marked pure in the directory (`page::DirEntry::pure`).
pub(crate) fn group_hash(keys: &[u8], types: &[KeyType]) -> u64 {
    fold(fnv1a(first_key(keys, types)))
}

/// Test builds only: when set, every group hash folds to one value, so tests can make
/// different tenants collide the way two values with equal 64-bit hashes would.
#[cfg(any(test, feature = "pg_test"))]
pub(crate) static COLLIDE_GROUPS: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

#[inline]
fn fold(h: u64) -> u64 {
    #[cfg(any(test, feature = "pg_test"))]
    if COLLIDE_GROUPS.load(std::sync::atomic::Ordering::Relaxed) {
        return 0x5a5a;
    }
    h
}

/// The group hash elements whose first key equals `v` carry (scans look groups up by it).
pub(crate) fn value_group_hash(ty: KeyType, v: &KeyValue) -> u64 {
    let mut b = Vec::with_capacity(24);
    encode(&mut b, ty, Some(v));
    fold(fnv1a(&b))
}

/// Random key rows and conditions over a few layouts, for tests that hold a faster path
/// against [`matches`].
#[cfg(test)]
pub(crate) struct RandomKeys {
    seed: u64,
}

#[cfg(test)]
impl RandomKeys {
    pub(crate) const LAYOUTS: [&'static [KeyType]; 3] = [
        &[KeyType::Int, KeyType::Int, KeyType::Int, KeyType::Int],
        &[KeyType::Int, KeyType::Text, KeyType::Uuid, KeyType::Int],
        &[KeyType::Uuid, KeyType::Int, KeyType::Text],
    ];

    pub(crate) fn new(seed: u64) -> RandomKeys {
        RandomKeys { seed }
    }

    /// Xorshift, below `n`.
    fn next(&mut self, n: u64) -> u64 {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        self.seed % n
    }

    fn value(ty: KeyType, r: u64) -> KeyValue {
        match ty {
            KeyType::Int => KeyValue::Int(r as i64 - 2),
            KeyType::Uuid => KeyValue::Bytes(vec![r as u8; 16]),
            KeyType::Text => KeyValue::Bytes(vec![b'a' + r as u8; r as usize]),
        }
    }

    /// An encoded row, each column NULL one time in five.
    pub(crate) fn row(&mut self, types: &[KeyType]) -> Vec<u8> {
        let mut row = Vec::new();
        for &ty in types {
            let r = self.next(5);
            encode(&mut row, ty, (r != 4).then(|| Self::value(ty, r)).as_ref());
        }
        row
    }

    /// One to three conditions, now and then on a column the layout lacks.
    pub(crate) fn conds(&mut self, types: &[KeyType]) -> Vec<Cond> {
        let ops = [Op::Lt, Op::Le, Op::Eq, Op::Ge, Op::Gt, Op::NullOrLe, Op::NullOrGt];
        (0..1 + self.next(3))
            .map(|_| {
                let col = self.next(types.len() as u64 + 1) as usize;
                let ty = types.get(col).copied().unwrap_or(KeyType::Int);
                let values = (0..self.next(3)).map(|_| Self::value(ty, self.next(4))).collect();
                Cond { col, op: ops[self.next(7) as usize], values }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(
        tenant: Option<i64>,
        org: Option<&str>,
        id: Option<[u8; 16]>,
        level: Option<i64>,
    ) -> Vec<u8> {
        let mut b = Vec::new();
        encode(&mut b, KeyType::Int, tenant.map(KeyValue::Int).as_ref());
        encode(&mut b, KeyType::Text, org.map(|s| KeyValue::Bytes(s.as_bytes().to_vec())).as_ref());
        encode(&mut b, KeyType::Uuid, id.map(|u| KeyValue::Bytes(u.to_vec())).as_ref());
        encode(&mut b, KeyType::Int, level.map(KeyValue::Int).as_ref());
        b
    }

    const TYPES: [KeyType; 4] = [KeyType::Int, KeyType::Text, KeyType::Uuid, KeyType::Int];

    fn cond(col: usize, op: Op, values: Vec<KeyValue>) -> Cond {
        Cond { col, op, values }
    }

    #[test]
    fn window_conditions_let_null_keys_through() {
        let int = |v| KeyValue::Int(v);
        let open = row(Some(1), None, None, None);
        let dated = row(Some(1), None, None, Some(100));
        // valid_from <=* 100: started at 100, not at 99; NULL (no start) always started
        assert!(matches(&dated, &TYPES, &[cond(3, Op::NullOrLe, vec![int(100)])]));
        assert!(!matches(&dated, &TYPES, &[cond(3, Op::NullOrLe, vec![int(99)])]));
        assert!(matches(&open, &TYPES, &[cond(3, Op::NullOrLe, vec![int(i64::MIN)])]));
        // valid_until >* 99: open at 99, closed at 100; NULL (no end) never closes
        assert!(matches(&dated, &TYPES, &[cond(3, Op::NullOrGt, vec![int(99)])]));
        assert!(!matches(&dated, &TYPES, &[cond(3, Op::NullOrGt, vec![int(100)])]));
        assert!(matches(&open, &TYPES, &[cond(3, Op::NullOrGt, vec![int(i64::MAX)])]));
        // as `x IS NULL OR x <= NULL`: a NULL argument leaves only NULL keys
        assert!(matches(&open, &TYPES, &[cond(3, Op::NullOrLe, vec![])]));
        assert!(!matches(&dated, &TYPES, &[cond(3, Op::NullOrGt, vec![])]));
        // the plain operators still refuse NULL keys, and the window does not widen them
        assert!(!matches(&open, &TYPES, &[cond(3, Op::Le, vec![int(i64::MAX)])]));
        assert!(!matches(
            &open,
            &TYPES,
            &[cond(3, Op::NullOrLe, vec![int(0)]), cond(0, Op::Eq, vec![int(2)])]
        ));
        assert!(!cond(3, Op::NullOrGt, vec![]).unsatisfiable());
        assert!(cond(3, Op::Le, vec![]).unsatisfiable());
        assert_eq!(Op::from_strategy(6), Some(Op::NullOrLe));
        assert_eq!(Op::from_strategy(7), Some(Op::NullOrGt));
        assert_eq!(Op::from_strategy(8), None);
    }

    #[test]
    fn equality_any_and_ranges() {
        let r = row(Some(7), Some("acme"), Some([3; 16]), Some(2));
        let int = |v| KeyValue::Int(v);
        assert!(matches(&r, &TYPES, &[]));
        assert!(matches(&r, &TYPES, &[cond(0, Op::Eq, vec![int(7)])]));
        assert!(!matches(&r, &TYPES, &[cond(0, Op::Eq, vec![int(8)])]), "another tenant");
        assert!(matches(&r, &TYPES, &[cond(0, Op::Eq, vec![int(1), int(7), int(9)])]), "= ANY");
        assert!(!matches(&r, &TYPES, &[cond(0, Op::Eq, vec![])]), "empty ANY matches nothing");
        assert!(matches(&r, &TYPES, &[cond(3, Op::Le, vec![int(2)])]), "clearance 2 <= 2");
        assert!(!matches(&r, &TYPES, &[cond(3, Op::Le, vec![int(1)])]), "clearance 2 > 1");
        assert!(matches(
            &r,
            &TYPES,
            &[
                cond(3, Op::Lt, vec![int(3)]),
                cond(3, Op::Gt, vec![int(1)]),
                cond(3, Op::Ge, vec![int(2)])
            ]
        ));
        assert!(matches(&r, &TYPES, &[cond(1, Op::Eq, vec![KeyValue::Bytes(b"acme".to_vec())])]));
        assert!(!matches(&r, &TYPES, &[cond(1, Op::Eq, vec![KeyValue::Bytes(b"acm".to_vec())])]));
        assert!(matches(&r, &TYPES, &[cond(2, Op::Eq, vec![KeyValue::Bytes(vec![3; 16])])]));
        assert!(
            !matches(&r, &TYPES, &[cond(0, Op::Eq, vec![int(7)]), cond(3, Op::Le, vec![int(1)])]),
            "all conditions"
        );
    }

    #[test]
    fn null_keys_and_type_mismatches_never_match() {
        let r = row(None, None, None, None);
        assert!(!matches(&r, &TYPES, &[cond(0, Op::Eq, vec![KeyValue::Int(0)])]));
        assert!(!matches(&r, &TYPES, &[cond(1, Op::Eq, vec![KeyValue::Bytes(vec![])])]));
        assert!(!matches(&r, &TYPES, &[cond(3, Op::Ge, vec![KeyValue::Int(i64::MIN)])]));
        let r = row(Some(1), Some(""), Some([0; 16]), Some(0));
        assert!(!matches(&r, &TYPES, &[cond(0, Op::Eq, vec![KeyValue::Bytes(vec![1])])]));
        assert!(
            matches(&r, &TYPES, &[cond(1, Op::Eq, vec![KeyValue::Bytes(vec![])])]),
            "empty string is not NULL"
        );
        assert!(!matches(&r, &TYPES, &[cond(9, Op::Eq, vec![KeyValue::Int(1)])]), "no such column");
        assert!(
            !matches(&r[..3], &TYPES, &[cond(3, Op::Eq, vec![KeyValue::Int(0)])]),
            "truncated keys"
        );
    }

    #[test]
    fn group_hash_is_the_first_keys_hash() {
        let a = row(Some(7), Some("acme"), Some([3; 16]), Some(2));
        let b = row(Some(7), Some("other"), None, Some(9));
        let c = row(Some(8), Some("acme"), Some([3; 16]), Some(2));
        assert_eq!(
            group_hash(&a, &TYPES),
            group_hash(&b, &TYPES),
            "same tenant, other columns differ"
        );
        assert_ne!(group_hash(&a, &TYPES), group_hash(&c, &TYPES), "another tenant");
        assert_eq!(group_hash(&a, &TYPES), value_group_hash(KeyType::Int, &KeyValue::Int(7)));
        assert_ne!(
            group_hash(&row(None, None, None, None), &TYPES),
            value_group_hash(KeyType::Int, &KeyValue::Int(0)),
            "NULL is its own group"
        );
        let t = [KeyType::Text, KeyType::Int];
        let mut k = Vec::new();
        encode(&mut k, KeyType::Text, Some(&KeyValue::Bytes(b"acme".to_vec())));
        encode(&mut k, KeyType::Int, Some(&KeyValue::Int(1)));
        assert_eq!(
            group_hash(&k, &t),
            value_group_hash(KeyType::Text, &KeyValue::Bytes(b"acme".to_vec()))
        );
        assert_ne!(
            group_hash(&k, &t),
            value_group_hash(KeyType::Text, &KeyValue::Bytes(b"acm".to_vec()))
        );
        assert_eq!(
            group_hash(&k[..3], &t),
            group_hash(&[], &t),
            "truncated keys fall in one group"
        );
    }

    #[test]
    fn first_key_is_the_first_columns_encoding() {
        let a = row(Some(7), Some("acme"), None, Some(2));
        let mut seven = Vec::new();
        encode(&mut seven, KeyType::Int, Some(&KeyValue::Int(7)));
        assert_eq!(first_key(&a, &TYPES), &seven[..]);
        assert_eq!(
            first_key(&a, &TYPES),
            first_key(&row(Some(7), None, Some([1; 16]), None), &TYPES)
        );
        assert_ne!(
            first_key(&a, &TYPES),
            first_key(&row(Some(8), Some("acme"), None, Some(2)), &TYPES)
        );
        let t = [KeyType::Text];
        let mut k = Vec::new();
        encode(&mut k, KeyType::Text, Some(&KeyValue::Bytes(b"acme".to_vec())));
        assert_eq!(first_key(&k, &t), &k[..]);
        assert_eq!(first_key(&k[..4], &t), b"", "truncated keys have no first key");
    }

    #[test]
    fn long_text_is_truncated_consistently() {
        let long = vec![b'x'; 1000];
        let mut b = Vec::new();
        encode(&mut b, KeyType::Text, Some(&KeyValue::Bytes(long.clone())));
        assert_eq!(b.len(), 1 + 2 + MAX_TEXT_KEY);
    }

    #[test]
    fn the_matcher_agrees_with_matches() {
        let mut rnd = RandomKeys::new(0x9e37_79b9_7f4a_7c15);
        for types in RandomKeys::LAYOUTS {
            for _ in 0..2000 {
                let row = rnd.row(types);
                let conds = rnd.conds(types);
                let m = Matcher::new(types, &conds);
                for cut in [row.len(), row.len() / 2] {
                    let r = &row[..cut];
                    assert_eq!(
                        m.matches(r),
                        matches(r, types, &conds),
                        "{types:?} {conds:?} {r:?}"
                    );
                }
            }
        }
    }
}
