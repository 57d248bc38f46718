//! RMS normalisation of rows, `y = (x * r) * scale` with `r = 1 / sqrt(mean(x²) + eps)`: the
//! norm of Llama and Gemma (whose stored weight `w` gives `scale = 1 + w`), one call per norm
//! instead of the eight tensor operations a PyTorch forward spends on it.
//!
//! Order of one row's sum of squares (fixed, so a row's result never depends on its batch, and the
//! AVX2 path equals the portable one bit for bit): 8 lanes, lane `j` accumulating `x[j]², x[j+8]²,
//! ...` with fused multiply-adds from 0; the lanes added pairwise, as the linear kernels reduce
//! them; then the `n % 8` tail squares added in order, each rounded before its sum. Then
//! `mean = sum / n`, `r = 1 / sqrt(mean + eps)` (each an IEEE-rounded float32 operation) and
//! `y[i] = (x[i] * r) * scale[i]`.

use crate::cpu::simd_available;
use crate::error::KernelError;

/// Lanes of the sum of squares.
const LANES: usize = 8;

/// Writes the RMS norm of each row of `x` (rows of `scale.len()` values) into `out`.
pub fn rms_norm(x: &[f32], scale: &[f32], eps: f32, out: &mut [f32]) -> Result<(), KernelError> {
    run(x, scale, eps, out, simd_available())
}

/// The portable path of [`rms_norm`], whatever the CPU (the reference of the tests).
pub fn rms_norm_portable(
    x: &[f32],
    scale: &[f32],
    eps: f32,
    out: &mut [f32],
) -> Result<(), KernelError> {
    run(x, scale, eps, out, false)
}

fn run(x: &[f32], scale: &[f32], eps: f32, out: &mut [f32], simd: bool) -> Result<(), KernelError> {
    let n = scale.len();
    if n == 0 {
        return Err(KernelError::EmptyInner);
    }
    if !x.len().is_multiple_of(n) {
        return Err(KernelError::InputShape { len: x.len(), k: n });
    }
    if out.len() != x.len() {
        return Err(KernelError::NormOutput {
            len: out.len(),
            expected: x.len(),
        });
    }
    for (row, dst) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        let sum = sum_of_squares(row, simd);
        let r = 1.0 / (sum / n as f32 + eps).sqrt();
        for ((y, &v), &s) in dst.iter_mut().zip(row).zip(scale) {
            *y = (v * r) * s;
        }
    }
    Ok(())
}

fn sum_of_squares(row: &[f32], simd: bool) -> f32 {
    let body = row.len() / LANES * LANES;
    #[cfg(target_arch = "x86_64")]
    let lanes_sum = if simd {
        // SAFETY: `simd` is only true when `simd_available()` found AVX2 and FMA.
        unsafe { avx2::lanes_sum(&row[..body]) }
    } else {
        portable_lanes_sum(&row[..body])
    };
    #[cfg(not(target_arch = "x86_64"))]
    let lanes_sum = {
        let _ = simd;
        portable_lanes_sum(&row[..body])
    };
    row[body..].iter().fold(lanes_sum, |s, &v| s + v * v)
}

/// The 8 lane sums of squares of `body` (a multiple of 8 values), added pairwise.
fn portable_lanes_sum(body: &[f32]) -> f32 {
    let mut l = [0f32; LANES];
    for chunk in body.chunks_exact(LANES) {
        for j in 0..LANES {
            l[j] = chunk[j].mul_add(chunk[j], l[j]);
        }
    }
    let q = [l[0] + l[4], l[1] + l[5], l[2] + l[6], l[3] + l[7]];
    (q[0] + q[2]) + (q[1] + q[3])
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::LANES;
    use crate::tile_kernel::avx2::hsum;
    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU must support AVX2 and FMA; `body.len()` is a multiple of 8.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn lanes_sum(body: &[f32]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        for chunk in body.chunks_exact(LANES) {
            // SAFETY: the chunk holds 8 values.
            let v = unsafe { _mm256_loadu_ps(chunk.as_ptr()) };
            acc = _mm256_fmadd_ps(v, v, acc);
        }
        hsum(acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize, r: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n * r)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32 - 0.5) * 8.0
            })
            .collect()
    }

    #[test]
    fn paths_agree_and_rows_are_independent() {
        for (n, r) in [(1, 1), (7, 3), (8, 2), (256, 4), (640, 5), (643, 2)] {
            let x = rows(n, r, n as u32);
            let scale = rows(n, 1, 7);
            let (mut a, mut b) = (vec![0f32; n * r], vec![0f32; n * r]);
            rms_norm(&x, &scale, 1e-6, &mut a).unwrap();
            rms_norm_portable(&x, &scale, 1e-6, &mut b).unwrap();
            assert_eq!(
                a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                b.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
            if r >= 2 {
                let mut one = vec![0f32; n];
                rms_norm(&x[n..2 * n], &scale, 1e-6, &mut one).unwrap();
                assert_eq!(one, &a[n..2 * n]);
            }
        }
    }

    #[test]
    fn matches_the_definition() {
        let x = [3.0f32, 4.0];
        let mut y = [0f32; 2];
        rms_norm(&x, &[1.0, 2.0], 0.0, &mut y).unwrap();
        let r = 1.0 / (12.5f32).sqrt();
        assert_eq!(y, [3.0 * r, (4.0 * r) * 2.0]);
    }

    #[test]
    fn bad_shapes_are_errors() {
        let mut out = [0f32; 4];
        assert_eq!(
            rms_norm(&[1.0; 4], &[], 1e-6, &mut out),
            Err(KernelError::EmptyInner)
        );
        assert!(matches!(
            rms_norm(&[1.0; 5], &[1.0; 2], 1e-6, &mut out),
            Err(KernelError::InputShape { .. })
        ));
        assert!(matches!(
            rms_norm(&[1.0; 6], &[1.0; 2], 1e-6, &mut out),
            Err(KernelError::NormOutput { .. })
        ));
    }
}
