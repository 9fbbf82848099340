//! vecguard: authorized vector search for PostgreSQL.
//!
//! Module map (see docs/DESIGN.md): `vector` and `halfvec` (the types), `distance` (kernels
//! and operators), `sparsevec` (the sparse type), `bitvec` (distances on `bit`), `fmgr`
//! (shared V1-function glue). Pure modules never import pgrx; glue files are named `sql.rs`.

mod authz;
mod backend;
mod bitvec;
mod compat;
mod distance;
mod error;
mod fmgr;
mod halfvec;
mod hnsw;
mod sparsevec;
mod vector;

::pgrx::pg_module_magic!(name, version);

pgrx::extension_sql_file!("../sql/vector.sql", name = "vector_type", bootstrap);
pgrx::extension_sql_file!("../sql/hnsw.sql", name = "hnsw_am", requires = ["vector_type"]);
pgrx::extension_sql_file!(
    "../sql/sparsevec.sql",
    name = "sparsevec_type",
    requires = ["vector_type"]
);
pgrx::extension_sql_file!("../sql/bit.sql", name = "bit_distances", requires = ["vector_type"]);
pgrx::extension_sql_file!("../sql/halfvec.sql", name = "halfvec_type", requires = ["vector_type"]);
pgrx::extension_sql_file!(
    "../sql/sparsevec_halfvec.sql",
    name = "sparsevec_halfvec_casts",
    requires = ["sparsevec_type", "halfvec_type"]
);
pgrx::extension_sql_file!(
    "../sql/hnsw_types.sql",
    name = "hnsw_type_opclasses",
    requires = ["hnsw_am", "halfvec_type", "bit_distances", "sparsevec_type"]
);

/// Library load: registers the index settings and reloptions, the authorization settings
/// and hooks, and reserves both setting prefixes.
#[pgrx::pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // pgrx attaches a Rust backtrace to the DETAIL of every error that crosses one of our
    // hooks when the server runs with RUST_BACKTRACE set: code addresses and internals sent
    // to any client. Backtraces stay off in this process and the ones it forks.
    // Process-global, and set before this backend starts any thread.
    std::env::set_var("RUST_LIB_BACKTRACE", "0");
    hnsw::options::init();
    authz::hooks::init();
    // Every setting of ours is defined now: a misspelt one (`SET vecguard.jtw`) is an error
    // instead of a placeholder nobody reads.
    for prefix in [c"vecguard", c"hnsw"] {
        // SAFETY: called once from _PG_init with a static NUL-terminated prefix.
        unsafe { pgrx::pg_sys::MarkGUCPrefixReserved(prefix.as_ptr()) };
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    include!("tests.rs");
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    /// postgresql.conf lines for the test cluster, kept in the repository's pg_test_config.
    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        include_str!("../pg_test_config")
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect()
    }
}
