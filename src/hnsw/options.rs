//! The `hnsw` settings (`hnsw.ef_search`, `hnsw.iterative_scan`, `hnsw.max_scan_tuples`,
//! and vecguard's own `vecguard.hnsw_two_hop_limit`, `vecguard.hnsw_scan_stats`) and
//! reloptions (`m`, `ef_construction`), with pgvector's names and meanings, and the readers
//! of an index's options, metric and dimensions. The phases read them here; `am` only
//! hands `amoptions` to Postgres.

use super::page::Metric;
use super::storage::IndexRel;
use super::values::Kind;
use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::pg_sys;
use pgrx::PostgresGucEnum;
use std::ffi::CStr;
use std::sync::atomic::{AtomicU32, Ordering};

pub(crate) const DEFAULT_M: i32 = 16;
pub(crate) const DEFAULT_EF_CONSTRUCTION: i32 = 64;

#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum IterativeScan {
    #[name = c"off"]
    Off,
    #[name = c"relaxed_order"]
    RelaxedOrder,
    #[name = c"strict_order"]
    StrictOrder,
}

pub(crate) static EF_SEARCH: GucSetting<i32> = GucSetting::<i32>::new(40);
pub(crate) static ITERATIVE_SCAN: GucSetting<IterativeScan> =
    GucSetting::<IterativeScan>::new(IterativeScan::Off);
pub(crate) static MAX_SCAN_TUPLES: GucSetting<i32> = GucSetting::<i32>::new(20000);
/// pgvector's `hnsw.scan_mem_multiplier`, defined so that applications which set it keep
/// working (the `hnsw` prefix is reserved); vecguard's scans do not read it.
static SCAN_MEM_MULTIPLIER: GucSetting<f64> = GucSetting::<f64>::new(1.0);
/// ACORN second-hop budget of authorized scans: stop looking through a node's failing
/// neighbours once this many passing nodes were found around it (0 = the list length).
pub(crate) static TWO_HOP_LIMIT: GucSetting<i32> = GucSetting::<i32>::new(0);
/// Reports each hnsw scan's work (distances, key checks, batches, exact sweep) as a NOTICE.
pub(crate) static SCAN_STATS: GucSetting<bool> = GucSetting::<bool>::new(false);

/// The reloption kind `init` registers `m` and `ef_construction` under.
static RELOPT_KIND: AtomicU32 = AtomicU32::new(0);

/// Registers settings and reloptions; called once from _PG_init.
pub(crate) fn init() {
    GucRegistry::define_int_guc(
        c"hnsw.ef_search",
        c"Sets the size of the dynamic candidate list for search",
        c"Valid range is 1..1000.",
        &EF_SEARCH,
        1,
        1000,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_enum_guc(
        c"hnsw.iterative_scan",
        c"Sets the mode for iterative scans",
        c"off, relaxed_order or strict_order",
        &ITERATIVE_SCAN,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"hnsw.max_scan_tuples",
        c"Sets the max number of tuples to visit for iterative scans",
        c"",
        &MAX_SCAN_TUPLES,
        1,
        i32::MAX,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_float_guc(
        c"hnsw.scan_mem_multiplier",
        c"Sets the multiple of work_mem to use for iterative scans",
        c"Accepted for pgvector compatibility; vecguard's scans do not read it.",
        &SCAN_MEM_MULTIPLIER,
        1.0,
        1000.0,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"vecguard.hnsw_two_hop_limit",
        c"Passing nodes an authorized hnsw scan looks for around each node before it stops expanding failing neighbours",
        c"0 means the node's neighbour-list length.",
        &TWO_HOP_LIMIT,
        0,
        1000,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"vecguard.hnsw_scan_stats",
        c"Reports the work of each hnsw index scan as a NOTICE",
        c"Distance computations, key-column checks, result batches, whether the exact sweep ran and the tenant graph was walked, and page pins taken.",
        &SCAN_STATS,
        GucContext::Userset,
        GucFlags::default(),
    );
    // SAFETY: _PG_init runs once per backend before any index use; the option names are
    // static C strings, as add_int_reloption requires.
    unsafe {
        let kind = pg_sys::add_reloption_kind();
        RELOPT_KIND.store(kind, Ordering::Relaxed);
        pg_sys::add_int_reloption(
            kind,
            c"m".as_ptr(),
            c"Max number of connections".as_ptr(),
            DEFAULT_M,
            2,
            100,
            pg_sys::AccessExclusiveLock as pg_sys::LOCKMODE,
        );
        pg_sys::add_int_reloption(
            kind,
            c"ef_construction".as_ptr(),
            c"Size of the dynamic candidate list for construction".as_ptr(),
            DEFAULT_EF_CONSTRUCTION,
            4,
            1000,
            pg_sys::AccessExclusiveLock as pg_sys::LOCKMODE,
        );
    }
}

/// The parsed reloptions, laid out as build_reloptions fills them.
#[repr(C)]
pub(crate) struct HnswOptions {
    vl_len_: i32,
    pub(crate) m: i32,
    pub(crate) ef_construction: i32,
}

// build_reloptions writes the two ints after the varlena header, at the offsets amoptions
// names.
const _: () = assert!(std::mem::offset_of!(HnswOptions, m) == 4);
const _: () = assert!(std::mem::offset_of!(HnswOptions, ef_construction) == 8);
const _: () = assert!(std::mem::size_of::<HnswOptions>() == 12);

#[pgrx::pg_guard]
pub(crate) unsafe extern "C-unwind" fn amoptions(
    reloptions: pg_sys::Datum,
    validate: bool,
) -> *mut pg_sys::bytea {
    let tab = [
        crate::compat::relopt_int(c"m", std::mem::offset_of!(HnswOptions, m)),
        crate::compat::relopt_int(
            c"ef_construction",
            std::mem::offset_of!(HnswOptions, ef_construction),
        ),
    ];
    // SAFETY: build_reloptions parses into a palloc'd HnswOptions-sized struct.
    unsafe {
        pg_sys::build_reloptions(
            reloptions,
            validate,
            RELOPT_KIND.load(Ordering::Relaxed),
            std::mem::size_of::<HnswOptions>(),
            tab.as_ptr(),
            tab.len() as i32,
        ) as *mut pg_sys::bytea
    }
}

/// (m, ef_construction) of an index, defaults when unset.
pub(crate) fn index_options(rel: IndexRel) -> (i32, i32) {
    // SAFETY: rd_options is NULL or the HnswOptions built by amoptions.
    unsafe {
        let opts = (*rel.raw()).rd_options as *const HnswOptions;
        if opts.is_null() {
            (DEFAULT_M, DEFAULT_EF_CONSTRUCTION)
        } else {
            ((*opts).m, (*opts).ef_construction)
        }
    }
}

/// The opclass's metric. Its input type (by the type's input function, which a domain
/// shares with its base type) gives the kind; support function 2 (a norm) means cosine;
/// otherwise support function 1 names the distance.
pub(crate) fn index_metric(rel: IndexRel) -> Metric {
    let att = super::scankeys::columns(rel).vector;
    // SAFETY: rd_opcintype has one entry per index column; index_getprocid returns
    // InvalidOid for a missing support function; getTypeInputInfo ERRORs for a shell
    // type; get_func_name returns a palloc'd name or NULL.
    unsafe {
        let name = |proc_: pg_sys::Oid| -> String {
            let n = pg_sys::get_func_name(proc_);
            if n.is_null() {
                String::new()
            } else {
                CStr::from_ptr(n).to_string_lossy().into_owned()
            }
        };
        let intype = *(*rel.raw()).rd_opcintype.add(att);
        let (mut input, mut ioparam) = (pg_sys::InvalidOid, pg_sys::InvalidOid);
        pg_sys::getTypeInputInfo(intype, &mut input, &mut ioparam);
        let kind = match name(input).as_str() {
            "halfvec_in" => Kind::Halfvec,
            "bit_in" | "varbit_in" => Kind::Bit,
            "sparsevec_in" => Kind::Sparse,
            _ => Kind::Vector,
        };
        let attno = (att + 1) as i16;
        let cosine = pg_sys::index_getprocid(rel.raw(), attno, 2) != pg_sys::InvalidOid;
        let f1 = name(pg_sys::index_getprocid(rel.raw(), attno, 1));
        let ip = f1.ends_with("negative_inner_product");
        let l1 = f1 == "l1_distance";
        match kind {
            Kind::Vector if cosine => Metric::Cosine,
            Kind::Vector if ip => Metric::InnerProduct,
            Kind::Vector if l1 => Metric::L1,
            Kind::Vector => Metric::L2,
            Kind::Halfvec if cosine => Metric::HalfCosine,
            Kind::Halfvec if ip => Metric::HalfInnerProduct,
            Kind::Halfvec if l1 => Metric::HalfL1,
            Kind::Halfvec => Metric::HalfL2,
            Kind::Bit if f1 == "jaccard_distance" => Metric::BitJaccard,
            Kind::Bit => Metric::BitHamming,
            Kind::Sparse if cosine => Metric::SparseCosine,
            Kind::Sparse if ip => Metric::SparseInnerProduct,
            Kind::Sparse if l1 => Metric::SparseL1,
            Kind::Sparse => Metric::SparseL2,
        }
    }
}

/// Dimensions of the indexed column from its typmod (bits for `bit`); pgvector's errors
/// when unknown or too large, or when a `bit` opclass indexes a `varbit` column.
pub(crate) fn index_dimensions(rel: IndexRel) -> usize {
    let vector = super::scankeys::columns(rel).vector;
    let kind = index_metric(rel).kind();
    // SAFETY: an index relation has a tuple descriptor with at least one attribute, and
    // `vector` is one of its columns.
    let (typid, typmod) = unsafe { crate::compat::attr_type((*rel.raw()).rd_att, vector) };
    if kind == Kind::Bit && typid == pg_sys::VARBITOID {
        pgrx::ereport!(
            ERROR,
            pgrx::PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            "type not supported for hnsw index"
        );
    }
    if typmod < 0 {
        pgrx::ereport!(
            ERROR,
            pgrx::PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "column does not have dimensions"
        );
    }
    if typmod as usize > kind.max_dims() {
        pgrx::ereport!(
            ERROR,
            pgrx::PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!("column cannot have more than {} dimensions for hnsw index", kind.max_dims())
        );
    }
    typmod as usize
}
