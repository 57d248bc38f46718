//! The estimate pass of [`super::GreedyHead`] in plain Rust: the reference of the AVX2 pass and
//! the path of CPUs without it. Its estimates may differ from the AVX2 pass's in the last bits
//! (the sums run in another order); the bound covers both.

use super::{proxy_value, Layout, Prepared, BLOCK, PASS_ROWS, VALUE_BYTES};
use crate::dequant::f16_at;

/// Estimates (`e[0][r]`) and bounds (`e[1][r]`) of one proxy row for each input row of `group`
/// (at most [`PASS_ROWS`]).
pub(super) fn estimate_row(
    row: &[u8],
    layout: Layout,
    group: &[&Prepared],
    factor: f32,
    e: &mut [[f32; PASS_ROWS]; 2],
) {
    let mut dot = [0.0f32; PASS_ROWS];
    let mut centre = [0.0f32; PASS_ROWS];
    let mut bound = [0.0f32; PASS_ROWS];
    let values = &row[layout.values_at()..];
    for (b, block) in values
        .chunks_exact(VALUE_BYTES)
        .take(layout.blocks)
        .enumerate()
    {
        let d = f16_at(row, 2 * b);
        let v: [i32; BLOCK] = std::array::from_fn(|t| i32::from(proxy_value(block, t)));
        for (r, p) in group.iter().enumerate() {
            let xq = &p.xq[b * BLOCK..(b + 1) * BLOCK];
            let s: i32 = v.iter().zip(xq).map(|(&v, &x)| v * i32::from(x)).sum();
            dot[r] += s as f32 * (d * p.scale8[b]);
            centre[r] += d * p.centre[b];
            bound[r] += d.abs() * p.l1[b];
        }
    }
    for r in 0..group.len() {
        e[0][r] = dot[r] + centre[r];
        e[1][r] = factor * bound[r];
    }
}
