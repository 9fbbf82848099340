//! The `hnsw` index access method.
//!
//! `graph` is the pure HNSW algorithm over a storage trait; `page` the on-disk format;
//! `storage` the only code touching buffers and WAL; `diskgraph` the graph traits over
//! pages; `am` the IndexAmRoutine; `options` the settings and reloptions; then one file
//! per phase as in pgvector: `build`, `insert`, `scan`, `vacuum`; `check` verifies a
//! graph. The phases' decisions live in pure modules beside them: `buildplan`,
//! `scanplan`, `cost`, `tenant` (and `keys` for key columns).

pub mod am;
pub mod build;
pub(crate) mod buildplan;
pub mod check;
pub(crate) mod cost;
pub mod diskgraph;
pub mod graph;
pub mod insert;
pub mod keys;
pub(crate) mod options;
pub mod page;
pub mod scan;
pub mod scankeys;
pub(crate) mod scanplan;
pub mod storage;
pub(crate) mod tenant;
pub mod vacuum;
