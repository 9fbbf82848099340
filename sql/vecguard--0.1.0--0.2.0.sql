-- vecguard 0.1.0 -> 0.2.0 (ALTER EXTENSION vecguard UPDATE). tests/test_upgrade.py checks
-- that an upgraded database has exactly the objects of a fresh CREATE EXTENSION.
\echo Use "ALTER EXTENSION vecguard UPDATE" to load this file. \quit

-- hnsw opclasses for halfvec, bit and sparsevec (sql/hnsw_types.sql)
CREATE OPERATOR CLASS halfvec_l2_ops
	FOR TYPE halfvec USING hnsw AS
	OPERATOR 1 <-> (halfvec, halfvec) FOR ORDER BY float_ops,
	FUNCTION 1 halfvec_l2_squared_distance(halfvec, halfvec);

CREATE OPERATOR CLASS halfvec_ip_ops
	FOR TYPE halfvec USING hnsw AS
	OPERATOR 1 <#> (halfvec, halfvec) FOR ORDER BY float_ops,
	FUNCTION 1 halfvec_negative_inner_product(halfvec, halfvec);

CREATE OPERATOR CLASS halfvec_cosine_ops
	FOR TYPE halfvec USING hnsw AS
	OPERATOR 1 <=> (halfvec, halfvec) FOR ORDER BY float_ops,
	FUNCTION 1 halfvec_negative_inner_product(halfvec, halfvec),
	FUNCTION 2 l2_norm(halfvec);

CREATE OPERATOR CLASS halfvec_l1_ops
	FOR TYPE halfvec USING hnsw AS
	OPERATOR 1 <+> (halfvec, halfvec) FOR ORDER BY float_ops,
	FUNCTION 1 l1_distance(halfvec, halfvec);

CREATE OPERATOR CLASS bit_hamming_ops
	FOR TYPE bit USING hnsw AS
	OPERATOR 1 <~> (bit, bit) FOR ORDER BY float_ops,
	FUNCTION 1 hamming_distance(bit, bit);

CREATE OPERATOR CLASS bit_jaccard_ops
	FOR TYPE bit USING hnsw AS
	OPERATOR 1 <%> (bit, bit) FOR ORDER BY float_ops,
	FUNCTION 1 jaccard_distance(bit, bit);

CREATE OPERATOR CLASS sparsevec_l2_ops
	FOR TYPE sparsevec USING hnsw AS
	OPERATOR 1 <-> (sparsevec, sparsevec) FOR ORDER BY float_ops,
	FUNCTION 1 sparsevec_l2_squared_distance(sparsevec, sparsevec);

CREATE OPERATOR CLASS sparsevec_ip_ops
	FOR TYPE sparsevec USING hnsw AS
	OPERATOR 1 <#> (sparsevec, sparsevec) FOR ORDER BY float_ops,
	FUNCTION 1 sparsevec_negative_inner_product(sparsevec, sparsevec);

CREATE OPERATOR CLASS sparsevec_cosine_ops
	FOR TYPE sparsevec USING hnsw AS
	OPERATOR 1 <=> (sparsevec, sparsevec) FOR ORDER BY float_ops,
	FUNCTION 1 sparsevec_negative_inner_product(sparsevec, sparsevec),
	FUNCTION 2 l2_norm(sparsevec);

CREATE OPERATOR CLASS sparsevec_l1_ops
	FOR TYPE sparsevec USING hnsw AS
	OPERATOR 1 <+> (sparsevec, sparsevec) FOR ORDER BY float_ops,
	FUNCTION 1 l1_distance(sparsevec, sparsevec);

-- the window operators of the key opclasses (sql/hnsw.sql)
-- Validity windows with open ends, as index conditions. `x <=* y` is `x IS NULL OR x <= y`
-- and `x >* y` is `x IS NULL OR x > y`; vecguard.protect writes its validity policy with
-- them (`valid_from <=* (SELECT now())`), so an hnsw index with the window columns among its
-- keys tests the window inside the traversal, where the OR form stays a filter above it.
-- LEAKPROOF: they compare two values and raise nothing, so the planner may push them into
-- a scan below the other policies' conditions.
CREATE FUNCTION vecguard.null_or_le(date, date) RETURNS boolean
	AS 'MODULE_PATHNAME', 'hnsw_window_started_date' LANGUAGE C IMMUTABLE LEAKPROOF PARALLEL SAFE;
CREATE FUNCTION vecguard.null_or_gt(date, date) RETURNS boolean
	AS 'MODULE_PATHNAME', 'hnsw_window_open_date' LANGUAGE C IMMUTABLE LEAKPROOF PARALLEL SAFE;
CREATE OPERATOR vecguard.<=* (LEFTARG = date, RIGHTARG = date, FUNCTION = vecguard.null_or_le,
	RESTRICT = scalarlesel, JOIN = scalarlejoinsel);
CREATE OPERATOR vecguard.>* (LEFTARG = date, RIGHTARG = date, FUNCTION = vecguard.null_or_gt,
	RESTRICT = scalargtsel, JOIN = scalargtjoinsel);
ALTER OPERATOR FAMILY date_hnsw_ops USING hnsw ADD
	OPERATOR 6 vecguard.<=* (date, date), OPERATOR 7 vecguard.>* (date, date);
CREATE FUNCTION vecguard.null_or_le(timestamp, timestamp) RETURNS boolean
	AS 'MODULE_PATHNAME', 'hnsw_window_started_ts' LANGUAGE C IMMUTABLE LEAKPROOF PARALLEL SAFE;
CREATE FUNCTION vecguard.null_or_gt(timestamp, timestamp) RETURNS boolean
	AS 'MODULE_PATHNAME', 'hnsw_window_open_ts' LANGUAGE C IMMUTABLE LEAKPROOF PARALLEL SAFE;
CREATE OPERATOR vecguard.<=* (LEFTARG = timestamp, RIGHTARG = timestamp, FUNCTION = vecguard.null_or_le,
	RESTRICT = scalarlesel, JOIN = scalarlejoinsel);
CREATE OPERATOR vecguard.>* (LEFTARG = timestamp, RIGHTARG = timestamp, FUNCTION = vecguard.null_or_gt,
	RESTRICT = scalargtsel, JOIN = scalargtjoinsel);
ALTER OPERATOR FAMILY timestamp_hnsw_ops USING hnsw ADD
	OPERATOR 6 vecguard.<=* (timestamp, timestamp), OPERATOR 7 vecguard.>* (timestamp, timestamp);
CREATE FUNCTION vecguard.null_or_le(timestamptz, timestamptz) RETURNS boolean
	AS 'MODULE_PATHNAME', 'hnsw_window_started_ts' LANGUAGE C IMMUTABLE LEAKPROOF PARALLEL SAFE;
CREATE FUNCTION vecguard.null_or_gt(timestamptz, timestamptz) RETURNS boolean
	AS 'MODULE_PATHNAME', 'hnsw_window_open_ts' LANGUAGE C IMMUTABLE LEAKPROOF PARALLEL SAFE;
CREATE OPERATOR vecguard.<=* (LEFTARG = timestamptz, RIGHTARG = timestamptz, FUNCTION = vecguard.null_or_le,
	RESTRICT = scalarlesel, JOIN = scalarlejoinsel);
CREATE OPERATOR vecguard.>* (LEFTARG = timestamptz, RIGHTARG = timestamptz, FUNCTION = vecguard.null_or_gt,
	RESTRICT = scalargtsel, JOIN = scalargtjoinsel);
ALTER OPERATOR FAMILY timestamptz_hnsw_ops USING hnsw ADD
	OPERATOR 6 vecguard.<=* (timestamptz, timestamptz), OPERATOR 7 vecguard.>* (timestamptz, timestamptz);
