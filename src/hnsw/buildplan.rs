//! The decisions of `CREATE INDEX`, free of Postgres: how many threads build the graph,
//! how much memory it may take and so how many elements it holds, and which heap rows
//! share an element. `build` reads the server's settings and the table, and writes pages.

/// Threads of the in-memory build: the leader (this backend) plus `workers`, capped by
/// the cores there are.
pub(crate) fn build_threads(workers: usize, cores: usize) -> usize {
    workers.saturating_add(1).min(cores.max(1))
}

/// Shared memory pgvector keeps out of a parallel build's graph area for other objects,
/// and the margin it reports less than the area it allocates.
const PARALLEL_RESERVE: usize = 3 << 20;
const PARALLEL_MARGIN: usize = 1 << 20;

/// Bytes of maintenance_work_mem (`mwm` bytes) the graph may use. A serial build gets all
/// of it; a parallel one, like pgvector's, leaves 3 MB for other objects (when there is
/// more than that) and keeps a 1 MB margin, so the same settings take the low-memory
/// path here as there (pgvector's TAP 045: 3073kB with one worker holds no tuple).
pub(crate) fn graph_budget(mwm: usize, parallel: bool) -> usize {
    if !parallel {
        return mwm;
    }
    let area = if mwm > PARALLEL_RESERVE { mwm - PARALLEL_RESERVE } else { mwm };
    area.saturating_sub(PARALLEL_MARGIN)
}

/// How many of `n` elements of `per_element` bytes the in-memory graph holds within
/// `budget` bytes.
pub(crate) fn in_memory_count(n: usize, per_element: usize, budget: usize) -> usize {
    n.min(budget.checked_div(per_element).unwrap_or(n))
}

/// Hash of a row's element identity (vector bits and encoded key columns): rows with equal
/// hashes are compared in full by `graph::joins_element` before they share an element.
pub(crate) fn row_hash(v: &[f32], keys: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for x in v {
        h ^= x.to_bits() as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h ^ keys.iter().fold(0u64, |a, &b| a.rotate_left(5) ^ b as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_follow_workers_and_cores() {
        assert_eq!(build_threads(0, 8), 1);
        assert_eq!(build_threads(1, 8), 2);
        assert_eq!(build_threads(2, 8), 3);
        assert_eq!(build_threads(7, 2), 2);
        assert_eq!(build_threads(3, 0), 1);
        assert_eq!(build_threads(usize::MAX, 4), 4);
    }

    #[test]
    fn graph_budget_like_pgvector() {
        let mb = 1 << 20;
        assert_eq!(graph_budget(64 * mb, false), 64 * mb);
        assert_eq!(graph_budget(64 * mb, true), 60 * mb);
        // TAP 045: 3073kB with one worker leaves no room for a single tuple.
        assert_eq!(graph_budget(3073 * 1024, true), 0);
        // TAP 012: 4MB with workers
        assert_eq!(graph_budget(4 * mb, true), 0);
        assert_eq!(graph_budget(2 * mb, true), mb);
        assert_eq!(graph_budget(0, true), 0);
    }

    #[test]
    fn in_memory_count_cases() {
        assert_eq!(in_memory_count(1000, 600, 0), 0);
        assert_eq!(in_memory_count(1000, 600, 599), 0);
        assert_eq!(in_memory_count(1000, 600, 600), 1);
        assert_eq!(in_memory_count(1000, 600, 6_000_000), 1000);
        assert_eq!(in_memory_count(10, 0, 0), 10);
    }

    // Equal rows hash equally; the vector's bits and the keys both count.
    #[test]
    fn row_hash_separates_vectors_and_keys() {
        let h = row_hash(&[1.0, 2.0], &[1, 2]);
        assert_eq!(h, row_hash(&[1.0, 2.0], &[1, 2]));
        assert_ne!(h, row_hash(&[1.0, 2.5], &[1, 2]));
        assert_ne!(h, row_hash(&[1.0, 2.0], &[1, 3]));
        assert_ne!(row_hash(&[0.0], &[]), row_hash(&[-0.0], &[]), "bits, not values");
    }
}
