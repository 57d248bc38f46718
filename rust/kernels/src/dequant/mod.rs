//! GGUF blocks -> f32 values, bit for bit the values gguf-py's numpy `dequantize` gives (see
//! [`portable`] for the rules), with an AVX2 path that matches the portable one exactly.
//!
//! [`dequantize_row`] converts any whole number of blocks; [`QuantMatrix::dequantize_into`] a
//! whole matrix; [`dequantize_rows`] selected rows (embedding lookups).

mod portable;

pub(crate) use portable::f16_at;

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;

use rayon::prelude::*;

use crate::cpu::simd_available;
use crate::error::KernelError;
use crate::ggml_type::GgmlType;
use crate::quant_matrix::QuantMatrix;

/// Dequantizes `bytes` (a whole number of `ty` blocks) into `out`, which must hold exactly
/// their values.
pub fn dequantize_row(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<(), KernelError> {
    check(ty, bytes, out)?;
    dequantize_unchecked(ty, bytes, out, simd_available());
    Ok(())
}

/// [`dequantize_row`] on the portable path, whatever the CPU (the reference of the tests).
pub fn dequantize_row_portable(
    ty: GgmlType,
    bytes: &[u8],
    out: &mut [f32],
) -> Result<(), KernelError> {
    check(ty, bytes, out)?;
    dequantize_unchecked(ty, bytes, out, false);
    Ok(())
}

fn check(ty: GgmlType, bytes: &[u8], out: &[f32]) -> Result<(), KernelError> {
    if !bytes.len().is_multiple_of(ty.block_bytes()) {
        return Err(KernelError::PartialBlock {
            ty: ty.name(),
            len: bytes.len(),
            block_bytes: ty.block_bytes(),
        });
    }
    let blocks = bytes.len() / ty.block_bytes();
    let values = blocks * ty.block_len();
    if out.len() != values {
        return Err(KernelError::DequantizedShape {
            ty: ty.name(),
            blocks,
            values,
            len: out.len(),
        });
    }
    Ok(())
}

/// Dequantizes whole blocks into `out` of exactly their length (the caller has checked both);
/// `simd` only when [`simd_available`] says so.
pub(crate) fn dequantize_unchecked(ty: GgmlType, bytes: &[u8], out: &mut [f32], simd: bool) {
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: `simd` is only true when the CPU has AVX2, FMA and F16C; the shapes match.
        unsafe { avx2::dequantize(ty, bytes, out) };
        return;
    }
    let _ = simd;
    portable::dequantize(ty, bytes, out);
}

/// Asks the CPU to bring `bytes` into its caches (a hint; nothing on other architectures).
pub(crate) fn prefetch(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for line in bytes.chunks(64) {
        // SAFETY: prefetching is a hint that never faults; the address is inside `bytes`.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                line.as_ptr().cast(),
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

impl QuantMatrix {
    /// Dequantizes the whole matrix into `out` (`rows * cols` values, row-major). Runs on
    /// rayon's pool.
    pub fn dequantize_into(&self, out: &mut [f32]) -> Result<(), KernelError> {
        let expected = self.rows() * self.cols();
        if out.len() != expected {
            return Err(KernelError::OutputShape {
                len: out.len(),
                rows: self.rows(),
                n: self.cols(),
                expected,
            });
        }
        let simd = simd_available();
        let (ty, row_bytes) = (self.ty(), self.row_bytes());
        out.par_chunks_mut(self.cols())
            .zip(self.data().par_chunks(row_bytes))
            .with_min_len(16)
            .for_each(|(o, b)| dequantize_unchecked(ty, b, o, simd));
        Ok(())
    }
}

/// Writes row `row_ids[j]` of `m`, dequantized, into row `j` of `out` (`row_ids.len() * cols`
/// values): an embedding lookup.
pub fn dequantize_rows(
    m: &QuantMatrix,
    row_ids: &[usize],
    out: &mut [f32],
) -> Result<(), KernelError> {
    let expected = row_ids.len() * m.cols();
    if out.len() != expected {
        return Err(KernelError::OutputShape {
            len: out.len(),
            rows: row_ids.len(),
            n: m.cols(),
            expected,
        });
    }
    if let Some(&row) = row_ids.iter().find(|&&r| r >= m.rows()) {
        return Err(KernelError::RowOutOfRange {
            row,
            rows: m.rows(),
        });
    }
    let simd = simd_available();
    for (&r, o) in row_ids.iter().zip(out.chunks_exact_mut(m.cols())) {
        dequantize_unchecked(m.ty(), m.row(r), o, simd);
    }
    Ok(())
}
