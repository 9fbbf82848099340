//! The `hnsw` index access method.
//!
//! `graph` is the pure HNSW algorithm over a storage trait; `page` the on-disk format;
//! `storage` the only code touching buffers and WAL; `diskgraph` the graph traits over
//! pages; `am` the IndexAmRoutine; `options` the settings and reloptions; then one file
//! per phase as in pgvector: `build`, `insert`, `scan`, `vacuum`; `check` verifies a
//! graph; `tenant` holds every phase's tenant-group code. The phases' decisions live in
//! pure modules beside them: `buildplan`, `scanplan`, `cost`, `tenant::plan` (and `keys`
//! for key columns, `values` for what an element stores of each indexed type and its
//! distances).

pub(crate) mod am;
pub(crate) mod build;
pub(crate) mod buildplan;
pub(crate) mod check;
pub(crate) mod cost;
pub(crate) mod datum;
pub(crate) mod diskgraph;
pub(crate) mod graph;
pub(crate) mod insert;
pub(crate) mod keys;
pub(crate) mod options;
pub(crate) mod page;
pub(crate) mod scan;
pub(crate) mod scankeys;
pub(crate) mod scanplan;
pub(crate) mod storage;
pub(crate) mod tenant;
pub(crate) mod vacuum;
pub(crate) mod values;
