// In-database tests of the SQL surface (`cargo pgrx test`): each runs inside a backend of
// the test cluster. Cluster-level behaviour (COPY, parallel query, clients, roles) is tested
// from Python in tests/.

use pgrx::prelude::*;

fn one<T: pgrx::IntoDatum + pgrx::FromDatum>(q: &str) -> Option<T> {
    Spi::get_one::<T>(q).expect("query failed")
}

#[pg_test]
fn text_round_trip_uses_shortest_float4_form() {
    assert_eq!(one::<String>("SELECT '[1, 2.5 ,3]'::vector::text").as_deref(), Some("[1,2.5,3]"));
    assert_eq!(one::<String>("SELECT '[1e20,1e-7,0.1]'::vector::text").as_deref(), Some("[1e+20,1e-07,0.1]"));
}

#[pg_test]
fn distances_match_pgvector() {
    assert_eq!(one::<f64>("SELECT '[1,2]'::vector <-> '[4,6]'"), Some(5.0));
    assert_eq!(one::<f64>("SELECT '[1,2]'::vector <#> '[3,4]'"), Some(-11.0));
    assert_eq!(one::<f64>("SELECT '[1,0]'::vector <=> '[0,1]'"), Some(1.0));
    assert_eq!(one::<f64>("SELECT '[1,2]'::vector <+> '[4,6]'"), Some(7.0));
    assert_eq!(one::<f64>("SELECT inner_product('[1,2]', '[3,4]')"), Some(11.0));
    assert!(one::<f64>("SELECT cosine_distance('[0,0]', '[1,2]')").unwrap().is_nan());
}

#[pg_test]
fn functions_and_arithmetic() {
    assert_eq!(one::<i32>("SELECT vector_dims('[1,2,3]')"), Some(3));
    assert_eq!(one::<f64>("SELECT vector_norm('[3,4]')"), Some(5.0));
    assert_eq!(one::<String>("SELECT l2_normalize('[3,4]')::text").as_deref(), Some("[0.6,0.8]"));
    assert_eq!(one::<String>("SELECT subvector('[1,2,3,4]', 2, 2)::text").as_deref(), Some("[2,3]"));
    assert_eq!(one::<String>("SELECT ('[1,2]'::vector + '[3,4]')::text").as_deref(), Some("[4,6]"));
    assert_eq!(one::<String>("SELECT ('[1,2]'::vector || '[3]')::text").as_deref(), Some("[1,2,3]"));
}

#[pg_test]
fn casts_both_ways() {
    assert_eq!(one::<String>("SELECT ARRAY[1,2,3]::vector::text").as_deref(), Some("[1,2,3]"));
    assert_eq!(one::<String>("SELECT ARRAY[1.5,2]::numeric[]::vector::text").as_deref(), Some("[1.5,2]"));
    assert_eq!(one::<Vec<f32>>("SELECT '[1,2]'::vector::real[]"), Some(vec![1.0, 2.0]));
}

#[pg_test]
fn btree_ordering_and_aggregates() {
    assert_eq!(one::<bool>("SELECT '[1,2]'::vector < '[1,3]'"), Some(true));
    assert_eq!(one::<bool>("SELECT '[1,2]'::vector < '[1,2,0]'"), Some(true));
    assert_eq!(one::<i64>("SELECT count(DISTINCT v) FROM (VALUES ('[1]'::vector), ('[1]'), ('[2]')) t(v)"), Some(2));
    assert_eq!(
        one::<String>("SELECT avg(v)::text FROM (VALUES ('[1,2]'::vector), ('[3,4]')) t(v)").as_deref(),
        Some("[2,3]")
    );
    assert_eq!(
        one::<String>("SELECT sum(v)::text FROM (VALUES ('[1,2]'::vector), ('[3,4]')) t(v)").as_deref(),
        Some("[4,6]")
    );
}

#[pg_test(error = "different vector dimensions 2 and 3")]
fn dimension_mismatch_is_an_error() {
    one::<f64>("SELECT '[1,2]'::vector <-> '[1,2,3]'");
}

#[pg_test(error = "expected 3 dimensions, not 2")]
fn typmod_is_enforced() {
    one::<String>("SELECT '[1,2]'::vector(3)::text");
}

#[pg_test(error = "NaN not allowed in vector")]
fn nan_is_rejected() {
    one::<String>("SELECT '[NaN]'::vector::text");
}

#[pg_test(error = "vector must have at least 1 dimension")]
fn empty_vector_is_rejected() {
    one::<String>("SELECT '[]'::vector::text");
}
