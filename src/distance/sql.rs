//! SQL distance functions and operator support: `l2_distance`, `inner_product`,
//! `cosine_distance`, `l1_distance` and the internal forms the operators and opclasses use.

use crate::fmgr::{float8_datum, pg_v1_fn};
use crate::vector::sql::{same_dims, vector_arg};

macro_rules! binary_distance {
    ($name:ident, $finfo:ident, $kernel:expr) => {
        pg_v1_fn!($name, $finfo, |fcinfo| {
            // SAFETY: declared STRICT (vector, vector).
            let (a, b) = unsafe { (vector_arg(fcinfo, 0), vector_arg(fcinfo, 1)) };
            same_dims(a, b);
            float8_datum($kernel(a, b))
        });
    };
}

binary_distance!(l2_distance, pg_finfo_l2_distance, super::l2);
binary_distance!(
    vector_l2_squared_distance,
    pg_finfo_vector_l2_squared_distance,
    super::l2_squared
);
binary_distance!(inner_product, pg_finfo_inner_product, super::dot);
binary_distance!(vector_negative_inner_product, pg_finfo_vector_negative_inner_product, |a, b| {
    -super::dot(a, b)
});
binary_distance!(cosine_distance, pg_finfo_cosine_distance, super::cosine);
binary_distance!(l1_distance, pg_finfo_l1_distance, super::l1);
