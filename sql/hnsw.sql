-- The `hnsw` index access method with pgvector's opclass names (src/hnsw/).

CREATE FUNCTION hnsw_handler(internal) RETURNS index_am_handler
	AS 'MODULE_PATHNAME' LANGUAGE C;

CREATE ACCESS METHOD hnsw TYPE INDEX HANDLER hnsw_handler;

COMMENT ON ACCESS METHOD hnsw IS 'hnsw index access method';

-- No default opclass for vector, as in pgvector: an index definition always names its
-- distance, so pg_dump output restores into either extension.
CREATE OPERATOR CLASS vector_l2_ops
	FOR TYPE vector USING hnsw AS
	OPERATOR 1 <-> (vector, vector) FOR ORDER BY float_ops,
	FUNCTION 1 vector_l2_squared_distance(vector, vector);

CREATE OPERATOR CLASS vector_ip_ops
	FOR TYPE vector USING hnsw AS
	OPERATOR 1 <#> (vector, vector) FOR ORDER BY float_ops,
	FUNCTION 1 vector_negative_inner_product(vector, vector);

CREATE OPERATOR CLASS vector_cosine_ops
	FOR TYPE vector USING hnsw AS
	OPERATOR 1 <=> (vector, vector) FOR ORDER BY float_ops,
	FUNCTION 1 vector_negative_inner_product(vector, vector),
	FUNCTION 2 vector_norm(vector);

CREATE OPERATOR CLASS vector_l1_ops
	FOR TYPE vector USING hnsw AS
	OPERATOR 1 <+> (vector, vector) FOR ORDER BY float_ops,
	FUNCTION 1 l1_distance(vector, vector);

CREATE SCHEMA IF NOT EXISTS vecguard;

-- Verifies an hnsw index's graph invariants (like amcheck for btree); ERROR when broken.
CREATE FUNCTION vecguard.hnsw_check(index regclass) RETURNS text
	AS 'MODULE_PATHNAME', 'hnsw_check' LANGUAGE C STRICT VOLATILE;
REVOKE ALL ON FUNCTION vecguard.hnsw_check(regclass) FROM PUBLIC;

-- Key columns of authorized indexes: `USING hnsw (tenant_id, embedding vector_cosine_ops,
-- clearance, ...)` (the vector may be any column; put a column filtered with `= ANY` first,
-- because PostgreSQL 15 gives up index ordering for `= ANY` on later columns). Their operators become scan keys evaluated inside the graph traversal
-- (src/hnsw/keys.rs); `= ANY(array)` works through amsearcharray. Strategy numbers follow
-- btree's (1 <, 2 <=, 3 =, 4 >=, 5 >); date and timestamps add the window operators below
-- (6 <=*, 7 >*). Text keys support equality only.

CREATE OPERATOR FAMILY integer_hnsw_ops USING hnsw;
CREATE OPERATOR CLASS int2_hnsw_ops DEFAULT FOR TYPE int2 USING hnsw FAMILY integer_hnsw_ops AS
	OPERATOR 1 <, OPERATOR 2 <=, OPERATOR 3 =, OPERATOR 4 >=, OPERATOR 5 >,
	FUNCTION 1 btint2cmp(int2, int2);
CREATE OPERATOR CLASS int4_hnsw_ops DEFAULT FOR TYPE int4 USING hnsw FAMILY integer_hnsw_ops AS
	OPERATOR 1 <, OPERATOR 2 <=, OPERATOR 3 =, OPERATOR 4 >=, OPERATOR 5 >,
	FUNCTION 1 btint4cmp(int4, int4);
CREATE OPERATOR CLASS int8_hnsw_ops DEFAULT FOR TYPE int8 USING hnsw FAMILY integer_hnsw_ops AS
	OPERATOR 1 <, OPERATOR 2 <=, OPERATOR 3 =, OPERATOR 4 >=, OPERATOR 5 >,
	FUNCTION 1 btint8cmp(int8, int8);
-- cross-type comparisons, so `int4_column = $1::int8` (what drivers send) is a scan key too
ALTER OPERATOR FAMILY integer_hnsw_ops USING hnsw ADD
	OPERATOR 1 < (int2, int4),
	OPERATOR 2 <= (int2, int4),
	OPERATOR 3 = (int2, int4),
	OPERATOR 4 >= (int2, int4),
	OPERATOR 5 > (int2, int4),
	OPERATOR 1 < (int2, int8),
	OPERATOR 2 <= (int2, int8),
	OPERATOR 3 = (int2, int8),
	OPERATOR 4 >= (int2, int8),
	OPERATOR 5 > (int2, int8),
	OPERATOR 1 < (int4, int2),
	OPERATOR 2 <= (int4, int2),
	OPERATOR 3 = (int4, int2),
	OPERATOR 4 >= (int4, int2),
	OPERATOR 5 > (int4, int2),
	OPERATOR 1 < (int4, int8),
	OPERATOR 2 <= (int4, int8),
	OPERATOR 3 = (int4, int8),
	OPERATOR 4 >= (int4, int8),
	OPERATOR 5 > (int4, int8),
	OPERATOR 1 < (int8, int2),
	OPERATOR 2 <= (int8, int2),
	OPERATOR 3 = (int8, int2),
	OPERATOR 4 >= (int8, int2),
	OPERATOR 5 > (int8, int2),
	OPERATOR 1 < (int8, int4),
	OPERATOR 2 <= (int8, int4),
	OPERATOR 3 = (int8, int4),
	OPERATOR 4 >= (int8, int4),
	OPERATOR 5 > (int8, int4);
CREATE OPERATOR CLASS date_hnsw_ops DEFAULT FOR TYPE date USING hnsw AS
	OPERATOR 1 <, OPERATOR 2 <=, OPERATOR 3 =, OPERATOR 4 >=, OPERATOR 5 >,
	FUNCTION 1 date_cmp(date, date);
CREATE OPERATOR CLASS timestamp_hnsw_ops DEFAULT FOR TYPE timestamp USING hnsw AS
	OPERATOR 1 <, OPERATOR 2 <=, OPERATOR 3 =, OPERATOR 4 >=, OPERATOR 5 >,
	FUNCTION 1 timestamp_cmp(timestamp, timestamp);
CREATE OPERATOR CLASS timestamptz_hnsw_ops DEFAULT FOR TYPE timestamptz USING hnsw AS
	OPERATOR 1 <, OPERATOR 2 <=, OPERATOR 3 =, OPERATOR 4 >=, OPERATOR 5 >,
	FUNCTION 1 timestamptz_cmp(timestamptz, timestamptz);
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

CREATE OPERATOR CLASS uuid_hnsw_ops DEFAULT FOR TYPE uuid USING hnsw AS
	OPERATOR 1 <, OPERATOR 2 <=, OPERATOR 3 =, OPERATOR 4 >=, OPERATOR 5 >,
	FUNCTION 1 uuid_cmp(uuid, uuid);
CREATE OPERATOR CLASS text_hnsw_ops DEFAULT FOR TYPE text USING hnsw AS
	OPERATOR 3 =,
	FUNCTION 1 bttextcmp(text, text);
