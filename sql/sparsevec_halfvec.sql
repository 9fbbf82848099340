-- Casts between sparsevec and halfvec, as pgvector 0.8 declares them. Not loaded yet: it
-- needs the halfvec type. To load it, add to src/lib.rs
--   pgrx::extension_sql_file!("../sql/sparsevec_halfvec.sql", name = "sparsevec_halfvec_casts",
--       requires = ["sparsevec_type", <the halfvec file's name>]);
-- Both C functions live in src/sparsevec/sql.rs.

CREATE FUNCTION halfvec_to_sparsevec(halfvec, integer, boolean) RETURNS sparsevec
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION sparsevec_to_halfvec(sparsevec, integer, boolean) RETURNS halfvec
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE CAST (sparsevec AS halfvec)
	WITH FUNCTION sparsevec_to_halfvec(sparsevec, integer, boolean) AS ASSIGNMENT;
CREATE CAST (halfvec AS sparsevec)
	WITH FUNCTION halfvec_to_sparsevec(halfvec, integer, boolean) AS IMPLICIT;
