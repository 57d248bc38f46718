//! The parallel driver of `out = x · Wᵀ` shared by [`crate::linear_rows`] (f32 weights) and
//! [`crate::qlinear`] (GGUF blocks): it splits the weight rows into chunks (rayon tasks) and each
//! chunk into tiles; a tile's f32 values are obtained once (borrowed, or dequantized into a
//! thread-local scratch buffer) and multiplied with every input row by
//! [`crate::tile_kernel::tile_product`].
//!
//! Every weight byte is therefore read from memory once per call, whatever the number of input
//! rows, and an output element is computed by the tile kernel in its fixed order: the result does
//! not depend on the other rows of the call, on the tiling, or on the threads.

use std::cell::RefCell;
use std::ops::Range;

use rayon::prelude::*;

use crate::error::KernelError;
use crate::tile_kernel::{tile_product, OutTile};

/// Bytes of f32 weight values one tile holds: small enough to stay in L1/L2 while every input
/// row is multiplied with it.
const TILE_BYTES: usize = 32 * 1024;
/// Weight rows of one tile at least and at most.
const TILE_ROWS: Range<usize> = 4..64;
/// Rayon tasks per thread: a few dozen keep the threads balanced.
const TASKS_PER_THREAD: usize = 16;

/// A weight matrix as the driver sees it: `n` rows of `k` values, handed out tile by tile.
pub(crate) trait WeightRows: Sync {
    /// Rows (`n`).
    fn rows(&self) -> usize;
    /// Values per row (`k`).
    fn cols(&self) -> usize;
    /// The f32 values of weight rows `rows`, row-major: borrowed from the matrix, or converted
    /// into `scratch` (resized as needed).
    fn tile<'a>(&'a self, rows: Range<usize>, scratch: &'a mut Vec<f32>, simd: bool) -> &'a [f32];
    /// Values to prefetch while the tile before `rows` is computed, in the layout of a tile
    /// (empty when the rows are not plain f32 values).
    fn ahead(&self, rows: Range<usize>) -> &[f32];
}

thread_local! {
    /// Dequantized tile of the current task, reused across tasks and calls.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// The output buffer, shared by tasks that write disjoint elements.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: see `multiply`: tasks write disjoint elements of a buffer that outlives them.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

/// Checks that `x` holds whole rows of `k` values and `out` holds `rows x n` values; returns
/// the number of input rows.
pub(crate) fn check_shapes(
    x: &[f32],
    k: usize,
    n: usize,
    out: &[f32],
) -> Result<usize, KernelError> {
    if k == 0 {
        return Err(KernelError::EmptyInner);
    }
    if !x.len().is_multiple_of(k) {
        return Err(KernelError::InputShape { len: x.len(), k });
    }
    let rows = x.len() / k;
    let expected = rows * n;
    if out.len() != expected {
        return Err(KernelError::OutputShape {
            len: out.len(),
            rows,
            n,
            expected,
        });
    }
    Ok(rows)
}

/// Writes `x · Wᵀ` into `out` (shapes checked by [`check_shapes`]). Runs on rayon's pool.
pub(crate) fn multiply<W: WeightRows>(x: &[f32], w: &W, out: &mut [f32], simd: bool) {
    let (n, k) = (w.rows(), w.cols());
    if x.is_empty() || n == 0 {
        return;
    }
    let tile = tile_rows(k);
    let chunk = chunk_rows(n, tile);
    let shared = SharedOut(out.as_mut_ptr());
    (0..n.div_ceil(chunk)).into_par_iter().for_each(|c| {
        let rows = c * chunk..((c + 1) * chunk).min(n);
        SCRATCH.with_borrow_mut(|scratch| {
            // SAFETY: the chunks partition 0..n, so each task writes only columns `rows` of
            // every output row: no two tasks touch the same element, and all indices stay
            // inside `out` (rows x n values, checked by the caller), which outlives the loop.
            unsafe { chunk_product(x, w, rows, tile, shared, scratch, simd) }
        });
    });
}

/// # Safety
/// `out` must point to `x.len() / k * n` writable values; no other thread may write the columns
/// `rows` meanwhile.
unsafe fn chunk_product<W: WeightRows>(
    x: &[f32],
    w: &W,
    rows: Range<usize>,
    tile: usize,
    out: SharedOut,
    scratch: &mut Vec<f32>,
    simd: bool,
) {
    let (n, k) = (w.rows(), w.cols());
    let mut start = rows.start;
    while start < rows.end {
        let end = (start + tile).min(rows.end);
        let values = w.tile(start..end, scratch, simd);
        let ahead = w.ahead(end..(end + tile).min(n));
        let o = OutTile {
            // SAFETY: column `start` of output row 0 lies inside `out`.
            ptr: unsafe { out.0.add(start) },
            stride: n,
        };
        // SAFETY: the tile covers columns start..end of every output row, ours to write.
        unsafe { tile_product(values, x, k, o, ahead, simd) };
        start = end;
    }
}

/// Weight rows per tile for rows of `k` values.
fn tile_rows(k: usize) -> usize {
    (TILE_BYTES / (4 * k)).clamp(TILE_ROWS.start, TILE_ROWS.end)
}

/// Weight rows per rayon task: a whole number of tiles.
fn chunk_rows(n: usize, tile: usize) -> usize {
    let tasks = rayon::current_num_threads().max(1) * TASKS_PER_THREAD;
    n.div_ceil(tasks)
        .next_multiple_of(tile)
        .clamp(tile, 1024.max(tile))
}
