//! The parallel driver of `out = x · Wᵀ` shared by [`crate::linear_rows`] (f32 weights) and
//! [`crate::qlinear`] (GGUF blocks).
//!
//! The weight rows are split into chunks (rayon tasks), each chunk into tiles of a few rows, and
//! each tile's columns into passes. For every pass, the f32 values of the tile's columns are
//! obtained once (borrowed, or dequantized into a thread-local scratch buffer small enough to
//! stay in L2) and multiplied with every input row of the current input tile by
//! [`crate::tile_kernel::pass_product`]. Every weight byte is therefore read from memory once per
//! call (once per input tile of `INPUT_TILE` rows for prefill-sized inputs), and an output
//! element is computed in the kernel's fixed order: the result does not depend on the other rows
//! of the call, on the tiling, or on the threads.

use std::cell::RefCell;
use std::ops::Range;

use rayon::prelude::*;

use crate::error::KernelError;
use crate::tile_kernel::{pack_inputs, pass_product, Lanes, OutTile, Pass, INPUT_TILE, LANES};

/// Weight rows per tile: a multiple of every kernel group height (8, 6, 4, 3), so tiles split
/// into whole groups.
const TILE_ROWS: usize = 24;
/// Weight rows per tile for one or two input rows (float weights; block-quantized ones take
/// [`crate::fused`]): 8 rows fill the one-row kernel.
const FEW_INPUTS_TILE_ROWS: usize = 8;
/// Columns per pass at most (a multiple of 256, the longest block).
const PASS_COLS: usize = 1024;
/// Rayon tasks per thread: a few dozen keep the threads balanced.
const TASKS_PER_THREAD: usize = 16;
/// Weight rows per task at most.
const MAX_CHUNK_ROWS: usize = 1024;

/// A weight matrix as the driver sees it: `n` rows of `k` values, handed out pass by pass.
pub(crate) trait WeightRows: Sync {
    /// Rows (`n`).
    fn rows(&self) -> usize;
    /// Values per row (`k`).
    fn cols(&self) -> usize;
    /// Passes start at multiples of this many columns (the block length).
    fn col_align(&self) -> usize;
    /// Where the f32 values of weight rows `rows`, columns `cols` are: a pointer to the first
    /// one and the distance between rows. Borrowed from the matrix, or converted into `scratch`
    /// (resized as needed) while the same columns of the `ahead` rows are prefetched.
    fn values(
        &self,
        rows: Range<usize>,
        cols: Range<usize>,
        ahead: Range<usize>,
        scratch: &mut Vec<f32>,
        simd: bool,
    ) -> (*const f32, usize);
    /// Whether the kernel should prefetch the next tile's values while it computes one (tiles
    /// are borrowed, consecutive rows of a row-major f32 matrix).
    fn prefetch_in_kernel(&self) -> bool;
}

/// A task's working buffers, reused across tasks and calls.
struct Scratch {
    /// The f32 values of the current pass (when they are not borrowed).
    values: Vec<f32>,
    /// Accumulators between passes.
    lanes: Vec<Lanes>,
}

thread_local! {
    /// The calling thread's packed copy of the inputs of a call (read by every task).
    static PACKED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static SCRATCH: RefCell<Scratch> = const {
        RefCell::new(Scratch { values: Vec::new(), lanes: Vec::new() })
    };
}

/// The output buffer, shared by tasks that write disjoint elements.
#[derive(Clone, Copy)]
pub(crate) struct SharedOut(pub(crate) *mut f32);
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

/// How the weight rows and columns of one call are cut.
#[derive(Clone, Copy)]
struct Plan {
    tile_rows: usize,
    pass_cols: usize,
}

impl Plan {
    fn new<W: WeightRows>(w: &W, input_rows: usize) -> Self {
        let k = w.cols();
        let align = w.col_align().next_multiple_of(LANES);
        let passes = k.div_ceil(PASS_COLS);
        Plan {
            tile_rows: if input_rows <= 2 {
                FEW_INPUTS_TILE_ROWS
            } else {
                TILE_ROWS
            },
            pass_cols: k.div_ceil(passes).next_multiple_of(align),
        }
    }
}

/// Writes `x · Wᵀ` into `out` (shapes checked by [`check_shapes`]). Runs on rayon's pool.
pub(crate) fn multiply<W: WeightRows>(x: &[f32], w: &W, out: &mut [f32], simd: bool) {
    let (n, k) = (w.rows(), w.cols());
    if x.is_empty() || n == 0 {
        return;
    }
    let plan = Plan::new(w, x.len() / k);
    let chunk = chunk_rows(n, plan.tile_rows);
    let shared = SharedOut(out.as_mut_ptr());
    // Taken out of the thread-local for the call, so that a nested call on this thread (a rayon
    // worker running another call's task while it waits) finds its own buffer.
    let mut packed = PACKED.take();
    if simd {
        pack_inputs(x, k, &mut packed);
    }
    let inputs = Inputs { x, packed: &packed };
    // Prefill-sized inputs also split over input tiles, so that a matrix of few rows still
    // makes enough tasks to balance the threads.
    let (chunks, x_tiles) = (n.div_ceil(chunk), (x.len() / k).div_ceil(INPUT_TILE));
    (0..chunks * x_tiles).into_par_iter().for_each(|task| {
        let (c, t) = (task / x_tiles, task % x_tiles);
        let rows = c * chunk..((c + 1) * chunk).min(n);
        SCRATCH.with_borrow_mut(|scratch| {
            // SAFETY: the (chunk, input tile) pairs partition the output: each task writes only
            // columns `rows` of the output rows of input tile `t`, no two tasks touch the same
            // element, and all indices stay inside `out` (rows x n values, checked by the
            // caller), which outlives the loop.
            unsafe { chunk_product(inputs, w, rows, t, plan, shared, scratch, simd) }
        });
    });
    PACKED.set(packed);
}

/// The input rows, as given and (on the AVX2 path) packed by [`pack_inputs`].
#[derive(Clone, Copy)]
struct Inputs<'a> {
    x: &'a [f32],
    packed: &'a [f32],
}

/// Output columns `rows` of the output rows of input tile `t`.
///
/// # Safety
/// `out` must point to `x.len() / k * n` writable values; no other thread may write those
/// elements meanwhile.
#[allow(clippy::too_many_arguments)]
unsafe fn chunk_product<W: WeightRows>(
    inputs: Inputs<'_>,
    w: &W,
    rows: Range<usize>,
    t: usize,
    plan: Plan,
    out: SharedOut,
    scratch: &mut Scratch,
    simd: bool,
) {
    let (n, k) = (w.rows(), w.cols());
    let (x, body) = (inputs.x, k / LANES * LANES);
    let in_kernel_prefetch = w.prefetch_in_kernel();
    let x_tile = &x[t * INPUT_TILE * k..((t + 1) * INPUT_TILE * k).min(x.len())];
    let mut start = rows.start;
    while start < rows.end {
        let end = (start + plan.tile_rows).min(rows.end);
        // The next tile, prefetched while this one is computed.
        let ahead = end..(end + plan.tile_rows).min(n);
        let mut col = 0;
        while col < k {
            let cols = col..(col + plan.pass_cols).min(k);
            let (values, w_stride) = w.values(
                start..end,
                cols.clone(),
                ahead.clone(),
                &mut scratch.values,
                simd,
            );
            let pass = Pass {
                w: values,
                w_stride,
                rows: end - start,
                x: x_tile,
                x_packed: inputs.packed.get(t * INPUT_TILE * body..).unwrap_or(&[]),
                k,
                start: cols.start,
                end: cols.end,
                out: OutTile {
                    ptr: out.0.wrapping_add(t * INPUT_TILE * n + start),
                    stride: n,
                },
                ahead: if in_kernel_prefetch {
                    (end - start) * w_stride
                } else {
                    0
                },
            };
            // SAFETY: the pass covers columns start..end of the output rows of this input
            // tile, ours to write; `values` holds the pass's weight values.
            unsafe { pass_product(pass, &mut scratch.lanes, simd) };
            col = cols.end;
        }
        start = end;
    }
}

/// Runs `task` on rayon's pool for consecutive ranges of `chunk` rows covering `0..n`.
pub(crate) fn for_each_chunk(n: usize, chunk: usize, task: impl Fn(Range<usize>) + Sync + Send) {
    (0..n.div_ceil(chunk))
        .into_par_iter()
        .for_each(|c| task(c * chunk..((c + 1) * chunk).min(n)));
}

/// Weight rows per rayon task: a whole number of tiles.
pub(crate) fn chunk_rows(n: usize, tile_rows: usize) -> usize {
    let tasks = rayon::current_num_threads().max(1) * TASKS_PER_THREAD;
    n.div_ceil(tasks)
        .next_multiple_of(tile_rows)
        .min(MAX_CHUNK_ROWS.next_multiple_of(tile_rows))
}
