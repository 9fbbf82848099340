//! The `hnsw` index access method.
//!
//! `graph` is the pure HNSW algorithm over a storage trait; `page` the on-disk format;
//! `storage` the only code touching buffers and WAL; `diskgraph` the graph traits over
//! pages; `am` the IndexAmRoutine, options, settings and cost model; then one file per
//! phase as in pgvector: `build`, `insert`, `scan`, `vacuum`; `check` verifies a graph.

pub mod am;
pub mod build;
pub mod check;
pub mod diskgraph;
pub mod graph;
pub mod insert;
pub mod keys;
pub mod page;
pub mod scan;
pub mod scankeys;
pub mod storage;
pub mod vacuum;
