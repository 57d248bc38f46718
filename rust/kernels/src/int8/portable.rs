//! The portable path of the int8 mode: each output element computed as the module docs of
//! [`crate::int8`] write it, from the weight row's [`IntBlock`]s and the input row's quantized
//! blocks. It is the reference the AVX2 path matches bit for bit.

use super::activations::{QuantizedRows, ACTIVATION_BLOCK};
use super::weights::IntBlock;

/// The exact integer `Σ v_i q_i`.
fn dot(v: &[i8], q: &[i8]) -> i32 {
    v.iter()
        .zip(q)
        .map(|(&a, &b)| i32::from(a) * i32::from(b))
        .sum()
}

/// One output element: weight row `w` (its blocks, in order) times input row `r` of `x`.
/// `min_term` says whether the format has the min term (Q4_K / Q5_K).
pub(crate) fn output(w: &[IntBlock], x: &QuantizedRows, r: usize, min_term: bool) -> f32 {
    let mut acc = 0f32;
    for (b, xb) in w.iter().zip(x.row(r)) {
        let (q, half) = (xb.values(), ACTIVATION_BLOCK / 2);
        let i =
            b.scale_lo * dot(&b.v[..half], &q[..half]) + b.scale_hi * dot(&b.v[half..], &q[half..]);
        // |i| < 2^24 (module docs): the conversion is exact.
        acc = (b.d * xb.scale()).mul_add(i as f32, acc);
        if min_term {
            acc = (-(b.dmin * b.min as f32)).mul_add(xb.scaled_sum(), acc);
        }
    }
    acc
}
