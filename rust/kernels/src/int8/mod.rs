//! The "int8" numeric mode of the quantized linear layer: `out = x · Wᵀ` with the input rows
//! quantized to 8-bit integers per block of 32 values and exact integer dot products against the
//! weight's own integer values, as llama.cpp computes on CPU. It is a different numeric mode from
//! [`crate::qlinear`] (float32 accumulation over the dequantized weights): results are close to
//! it, not equal. It is selected explicitly by calling [`qlinear_int8`].
//!
//! # Numerics (the contract every path follows bit for bit)
//!
//! **Activations.** Each input row is cut into blocks of 32 values (`k` is a multiple of 32 for
//! every block format). For one block `x_0..x_31`:
//! - `a = max |x_i|`; if `a` is not finite (an infinity or a NaN in the block), the block gets
//!   `d = NaN` and `q_i = 0`, so every output of the row is NaN;
//! - otherwise `d = a / 127` (f32 division); if `d` is zero or subnormal, `d = 0` and `q_i = 0`;
//! - otherwise `q_i = clamp(round(x_i * (1 / d)), -127, 127)`, where `1 / d` and the product are
//!   f32 operations and `round` rounds half away from zero.
//!
//! This is llama.cpp's reference `quantize_row_q8_0` rule (and gguf-py's Q8_0 quantizer) except
//! that `d` stays an f32 (not rounded to f16), subnormal scales are flushed to zero (so `1 / d`
//! is always finite), and non-finite blocks are defined. A row's quantization depends on that
//! row only. Per block we also keep the sums `X_lo = Σ_{i<16} q_i`, `X_hi = Σ_{i≥16} q_i`,
//! `X = X_lo + X_hi`, and the f32 product `d * X`.
//!
//! **Weights, per activation block.** Each format is read as integers for the 32 columns of one
//! activation block `t` of a weight row, exactly as ggml / gguf-py decode them:
//! - Q8_0 (block of 32): `v_i = q_i` (i8), `D = d` (f16 scale);
//! - Q4_0: `v_i = nibble - 8`; Q5_0: `v_i = (nibble | high bit << 4) - 16`; `D = d`;
//! - Q6_K (super-block of 256, 16-value sub-blocks with i8 scales `s`): activation block `t`
//!   covers sub-blocks `2t'` and `2t'+1` (`t'` = `t` within its super-block), `v_i = q6 - 32`,
//!   `D = d`;
//! - Q4_K / Q5_K (super-block of 256, 32-value sub-blocks with 6-bit scale `sc` and min `m`
//!   decoded from the 12 packed bytes as ggml does): `v_i` = the 4 / 5-bit value, `D = d`,
//!   `Dmin = dmin`.
//!
//! The exact integer dot products are
//! - Q8_0, Q4_0, Q5_0: `I = Σ_i v_i q_i`;
//! - Q6_K: `I = s_{2t'} · Σ_{i<16} v_i q_i + s_{2t'+1} · Σ_{i≥16} v_i q_i`;
//! - Q4_K, Q5_K: `S = sc · Σ_i v_i q_i`.
//!
//! All of them stay below 2^24 in magnitude, so their conversion to f32 is exact; any way of
//! computing them gives the same integer.
//!
//! **Output element.** With `acc = +0.0` and `d_x` the block's activation scale, for the blocks
//! `t = 0, 1, ...` of the row in order:
//! - Q8_0, Q4_0, Q5_0, Q6_K: `acc = fma(D * d_x, I, acc)`;
//! - Q4_K, Q5_K: `acc = fma(D * d_x, S, acc)`, then `acc = fma(-(Dmin * m), d_x * X, acc)`;
//!
//! where `D * d_x`, `Dmin * m` (exact: an f16 value times a 6-bit integer) and `d_x * X` are f32
//! products, and `fma` is a fused multiply-add (one rounding). The output is the final `acc`.
//!
//! Consequences: an output depends only on its input row and its weight row, never on the other
//! rows of the call, the tiling or the threads; the AVX2 path and the portable path give the
//! same bits (NaN payloads aside). F32, F16 and BF16 weights have no integer form: in this mode
//! they use the float32 kernel [`crate::qlinear`] unchanged.

mod activations;
mod driver;
mod portable;
mod weights;

#[cfg(target_arch = "x86_64")]
mod activations_avx2;
#[cfg(target_arch = "x86_64")]
mod direct_simd;
#[cfg(target_arch = "x86_64")]
mod kernel_avx2;
#[cfg(target_arch = "x86_64")]
mod panel_avx2;
#[cfg(target_arch = "x86_64")]
mod simd_avx2;

use crate::cpu::Isa;
use crate::error::KernelError;
use crate::ggml_type::GgmlType;
use crate::product::check_shapes;
use crate::qlinear::qlinear_on;
use crate::quant_matrix::QuantMatrix;

pub use activations::{
    quantize_activations, quantize_activations_portable, ActivationBlock, QuantizedRows,
    ACTIVATION_BLOCK,
};

/// Writes `x · Wᵀ` into `out` in the int8 numeric mode (see the module docs): `x` holds `r` rows
/// of `w.cols()` values, `out` receives `r` rows of `w.rows()` values (row-major). F32, F16 and
/// BF16 weights go through [`crate::qlinear`]. Runs on the kernels' pool ([`crate::pool`]; a
/// prompt's rows are quantized on rayon's).
pub fn qlinear_int8(x: &[f32], w: &QuantMatrix, out: &mut [f32]) -> Result<(), KernelError> {
    qlinear_int8_on(Isa::detect(), x, w, out)
}

/// The portable path of [`qlinear_int8`], whatever the CPU (the reference of the tests; slower).
pub fn qlinear_int8_portable(
    x: &[f32],
    w: &QuantMatrix,
    out: &mut [f32],
) -> Result<(), KernelError> {
    qlinear_int8_on(Isa::Portable, x, w, out)
}

/// [`qlinear_int8`] on the path `isa`, or on the best one this CPU has if `isa` is beyond it (so
/// that tests on an AVX-512 machine also run the AVX2 path). Every path gives the same bits.
pub fn qlinear_int8_on(
    isa: Isa,
    x: &[f32],
    w: &QuantMatrix,
    out: &mut [f32],
) -> Result<(), KernelError> {
    let isa = isa.supported();
    if !has_int8_form(w.ty()) {
        return qlinear_on(isa, x, w, out);
    }
    let rows = check_shapes(x, w.cols(), w.rows(), out)?;
    if rows == 0 {
        return Ok(());
    }
    let xq = activations::quantize(x, w.cols(), isa.simd())?;
    driver::multiply(&xq, w, out, isa);
    Ok(())
}

/// Whether weights of type `ty` are computed with integer dot products in this mode (the others
/// use the float32 kernel).
pub fn has_int8_form(ty: GgmlType) -> bool {
    !matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)
}
