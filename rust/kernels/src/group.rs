//! [`qlinear_group`]: the same input rows times several weight matrices in one call, e.g. the
//! query, key and value projections of an attention layer, or the gate and up projections of a
//! gated MLP. The weight rows of all the matrices are split over the threads in one dispatch
//! (one wake-up of the pool instead of one per matrix, and no thread idles at the end of a small
//! matrix), and the inputs are packed once. Each output element is computed exactly as
//! [`crate::qlinear`] computes it for its matrix alone: a group's outputs equal separate calls bit
//! for bit.

use crate::cpu::Isa;
use crate::error::KernelError;
use crate::product::check_shapes;
use crate::qlinear::multiply_each;
use crate::quant_matrix::QuantMatrix;

/// Why a group's arguments do not fit together.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    #[error("a group needs at least one matrix")]
    Empty,
    #[error("{matrices} matrices need as many outputs, got {outputs}")]
    Outputs { matrices: usize, outputs: usize },
    #[error(
        "matrix {index} has {k} columns but matrix 0 has {expected}: the matrices of a group \
         multiply the same input rows"
    )]
    Inner {
        index: usize,
        k: usize,
        expected: usize,
    },
    #[error("matrix {index}: {source}")]
    Shape {
        index: usize,
        #[source]
        source: KernelError,
    },
}

/// Writes `x · W[i]ᵀ` into `outs[i]` for every matrix of `ws`: `x` holds `r` rows of `k` values
/// (every matrix has `k` columns), `outs[i]` receives `r` rows of `ws[i].rows()` values
/// (row-major). Bit for bit [`crate::qlinear`] of each matrix. Runs on [`crate::pool`].
pub fn qlinear_group(
    x: &[f32],
    ws: &[&QuantMatrix],
    outs: &mut [&mut [f32]],
) -> Result<(), GroupError> {
    qlinear_group_on(Isa::detect(), x, ws, outs)
}

/// The portable path of [`qlinear_group`], whatever the CPU (the reference of the tests).
pub fn qlinear_group_portable(
    x: &[f32],
    ws: &[&QuantMatrix],
    outs: &mut [&mut [f32]],
) -> Result<(), GroupError> {
    qlinear_group_on(Isa::Portable, x, ws, outs)
}

/// Checks that the matrices share `x`'s columns and that each output has its matrix's shape;
/// returns the number of input rows.
fn check_group(x: &[f32], ws: &[&QuantMatrix], outs: &[&mut [f32]]) -> Result<usize, GroupError> {
    let first = ws.first().ok_or(GroupError::Empty)?;
    if outs.len() != ws.len() {
        return Err(GroupError::Outputs {
            matrices: ws.len(),
            outputs: outs.len(),
        });
    }
    let k = first.cols();
    let mut rows = 0;
    for (index, (w, out)) in ws.iter().zip(outs).enumerate() {
        if w.cols() != k {
            return Err(GroupError::Inner {
                index,
                k: w.cols(),
                expected: k,
            });
        }
        rows = check_shapes(x, k, w.rows(), out)
            .map_err(|source| GroupError::Shape { index, source })?;
    }
    Ok(rows)
}

/// [`qlinear_group`] on the path `isa`, or on the best one this CPU has if `isa` is beyond it
/// (see [`crate::qlinear_on`]).
pub fn qlinear_group_on(
    isa: Isa,
    x: &[f32],
    ws: &[&QuantMatrix],
    outs: &mut [&mut [f32]],
) -> Result<(), GroupError> {
    let rows = check_group(x, ws, outs)?;
    let mut products: Vec<(&QuantMatrix, &mut [f32])> = ws
        .iter()
        .copied()
        .zip(outs.iter_mut().map(|out| &mut **out))
        .collect();
    multiply_each(x, rows, &mut products, isa.supported());
    Ok(())
}
