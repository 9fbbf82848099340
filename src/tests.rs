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
    assert_eq!(one::<f64>("SELECT inner_product('[1,2]'::vector, '[3,4]')"), Some(11.0));
    assert!(one::<f64>("SELECT cosine_distance('[0,0]'::vector, '[1,2]')").unwrap().is_nan());
}

#[pg_test]
fn functions_and_arithmetic() {
    assert_eq!(one::<i32>("SELECT vector_dims('[1,2,3]'::vector)"), Some(3));
    assert_eq!(one::<f64>("SELECT vector_norm('[3,4]')"), Some(5.0));
    assert_eq!(one::<String>("SELECT l2_normalize('[3,4]'::vector)::text").as_deref(), Some("[0.6,0.8]"));
    assert_eq!(one::<String>("SELECT subvector('[1,2,3,4]'::vector, 2, 2)::text").as_deref(), Some("[2,3]"));
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

/// Resets the test-only hash folding even when an assertion fails.
struct Collide;
impl Collide {
    fn on() -> Collide {
        crate::hnsw::keys::COLLIDE_GROUPS.store(true, std::sync::atomic::Ordering::Relaxed);
        Collide
    }
}
impl Drop for Collide {
    fn drop(&mut self) {
        crate::hnsw::keys::COLLIDE_GROUPS.store(false, std::sync::atomic::Ordering::Relaxed);
    }
}

fn ids(q: &str) -> Vec<i32> {
    Spi::connect(|c| c.select(q, None, &[]).expect("query").map(|r| r.get::<i32>(1).expect("id").expect("not null")).collect())
}

/// Two tenants whose group hashes collide share one tenant graph. The directory must mark
/// that group impure (at build, and when an insert brings the second tenant), so scans
/// test every node's key again: each tenant gets exactly its own nearest rows although the
/// other tenant's rows lie nearer the query.
#[pg_test]
fn colliding_tenant_groups_are_impure_and_still_exact() {
    let _c = Collide::on();
    Spi::run(
        "SET LOCAL enable_seqscan = off;
         CREATE TABLE coll (id int, tenant_id int, embedding vector(3));
         -- tenant 1 far from the query [0,0,1]; tenant 2 (inserted later) right at it
         INSERT INTO coll SELECT i, 1, ARRAY[cos(i), sin(i), -1]::real[]::vector FROM generate_series(1, 200) i;
         CREATE INDEX coll_hnsw ON coll USING hnsw (tenant_id, embedding vector_l2_ops);",
    )
    .expect("setup");
    let check = || one::<String>("SELECT vecguard.hnsw_check('coll_hnsw')").unwrap_or_default();
    assert!(check().ends_with(", 1 tenant groups, 0 unreachable in their group, 1 pure"), "{}", check());
    Spi::run("INSERT INTO coll SELECT i, 1, ARRAY[cos(i), sin(i), -1.1]::real[]::vector FROM generate_series(201, 220) i")
        .expect("same tenant");
    assert!(check().ends_with(", 1 pure"), "same first key keeps the group pure: {}", check());
    Spi::run("INSERT INTO coll SELECT i, 2, ARRAY[cos(i) / 10, sin(i) / 10, 1]::real[]::vector FROM generate_series(1001, 1100) i")
        .expect("colliding tenant");
    assert!(check().ends_with(", 1 tenant groups, 0 unreachable in their group, 0 pure"), "{}", check());
    let q = |t: i32| format!("SELECT id FROM coll WHERE tenant_id = {t} ORDER BY embedding <-> '[0,0,1]' LIMIT 10");
    let plan: Vec<String> = Spi::connect(|c| {
        let rows = c.select(&format!("EXPLAIN (COSTS OFF) {}", q(1)), None, &[]).expect("explain");
        rows.map(|r| r.get::<String>(1).expect("line").unwrap_or_default()).collect()
    });
    assert!(plan.iter().any(|l| l.contains("Index Scan using coll_hnsw")), "{plan:?}");
    let one_rows = ids(&q(1));
    assert_eq!(one_rows.len(), 10);
    assert!(one_rows.iter().all(|&i| (1..=220).contains(&i)), "tenant 1 got another tenant's rows: {one_rows:?}");
    let two_rows = ids(&q(2));
    assert_eq!(two_rows.len(), 10);
    assert!(two_rows.iter().all(|&i| (1001..=1100).contains(&i)), "{two_rows:?}");
    // built with both tenants present: impure from the start
    Spi::run("REINDEX INDEX coll_hnsw").expect("reindex");
    assert!(check().ends_with(", 0 pure"), "{}", check());
    let again = ids(&q(1));
    assert_eq!(again.len(), 10);
    assert!(again.iter().all(|&i| (1..=220).contains(&i)), "{again:?}");
    // folding off: the same rows are two pure groups
    drop(_c);
    Spi::run("REINDEX INDEX coll_hnsw").expect("reindex");
    assert!(check().ends_with(", 2 tenant groups, 0 unreachable in their group, 2 pure"), "{}", check());
    assert_eq!(ids(&q(1)).len(), 10);
    assert!(ids(&q(1)).iter().all(|&i| (1..=220).contains(&i)));
}
