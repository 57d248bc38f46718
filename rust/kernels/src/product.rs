//! The parallel driver of `out = x · Wᵀ` shared by [`crate::linear_rows`] (f32 weights),
//! [`crate::qlinear`] and [`crate::qlinear_group`] (GGUF blocks).
//!
//! A call is made of [`Part`]s, one per weight matrix (a group multiplies the same input rows by
//! several matrices), each split into independent tasks that write disjoint output elements;
//! [`run_parts`] runs every task of every part in one dispatch on [`crate::pool`], or on the
//! calling thread alone when the whole call is too small to share.
//!
//! In the tiled part ([`Tiled`]) the weight rows are split into chunks (tasks), each chunk into
//! tiles of a few rows, and each tile's columns into passes. For every pass, the f32 values of
//! the tile's columns are obtained once (borrowed, or dequantized into a thread-local scratch
//! buffer small enough to stay in L2) and multiplied with every input row of the current input
//! tile by [`crate::tile_kernel::pass_product`]. Every weight byte is therefore read from memory
//! once per call (once per input tile of `INPUT_TILE` rows for prefill-sized inputs), and an
//! output element is computed in the kernel's fixed order: the result does not depend on the
//! other rows of the call, on the tiling, on the other matrices of a group, or on the threads.

use std::cell::RefCell;
use std::marker::PhantomData;
use std::ops::Range;

use crate::error::KernelError;
use crate::pool;
use crate::tile_kernel::{pack_inputs, pass_product, Lanes, OutTile, Pass, INPUT_TILE, LANES};

/// Weight rows per tile: a multiple of every kernel group height (8, 6, 4, 3), so tiles split
/// into whole groups.
const TILE_ROWS: usize = 24;
/// Weight rows per tile for one or two input rows (float weights; block-quantized ones take
/// [`crate::fused`]): 8 rows fill the one-row kernel.
const FEW_INPUTS_TILE_ROWS: usize = 8;
/// Columns per pass at most (a multiple of 256, the longest block).
const PASS_COLS: usize = 1024;
/// Tasks per thread of a tiled product: a few dozen keep the threads balanced.
const TASKS_PER_THREAD: usize = 16;
/// Weight rows per task at most.
const MAX_CHUNK_ROWS: usize = 1024;
/// Work (weight bytes x input rows, summed over the parts) below which a call runs on the
/// calling thread alone: sharing it would cost more than it saves.
const INLINE_WORK: usize = 64 << 10;

/// One weight matrix's share of a call: tasks that each write their own output elements.
pub(crate) trait Part: Sync {
    /// Tasks of the part.
    fn tasks(&self) -> usize;
    /// Weight bytes read x input rows: the size of the work, for deciding whether to share it.
    fn work(&self) -> usize;
    /// Runs task `task` (< [`Part::tasks`]).
    ///
    /// # Safety
    /// Each task of a part runs at most once while the part lives (tasks write disjoint
    /// output elements, so distinct tasks may run at the same time).
    unsafe fn run(&self, task: usize);
}

/// Runs every task of `parts` (one dispatch for all of them) and returns when all are done.
pub(crate) fn run_parts(parts: &[&dyn Part]) {
    let work: usize = parts.iter().map(|p| p.work()).sum();
    let tasks: usize = parts.iter().map(|p| p.tasks()).sum();
    let task = |mut i: usize| {
        for part in parts {
            if i < part.tasks() {
                // SAFETY: the pool runs each index of 0..tasks once; index i maps to one task
                // of one part, and distinct indices to distinct tasks.
                unsafe { part.run(i) };
                return;
            }
            i -= part.tasks();
        }
    };
    if work < INLINE_WORK {
        (0..tasks).for_each(task);
    } else {
        pool::for_each(tasks, &task);
    }
}

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
    /// Bytes of one weight row as stored (how much memory a row's product reads).
    fn bytes_per_row(&self) -> usize;
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
// SAFETY: the parts' tasks write disjoint elements of a buffer the part borrows mutably.
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
        let passes = k.div_ceil(PASS_COLS).max(1);
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

/// Writes `x · Wᵀ` into `out` (shapes checked by [`check_shapes`]), as one tiled part.
pub(crate) fn multiply<W: WeightRows>(x: &[f32], w: &W, out: &mut [f32], simd: bool) {
    with_packed(x, w.cols(), simd, |packed| {
        run_parts(&[&Tiled::new(x, packed, w, out, simd)]);
    });
}

/// Runs `f` with the AVX2 layout of the inputs (`x`: rows of `k` values; empty unless `pack`),
/// packed once into the calling thread's buffer for every tiled part of a call.
pub(crate) fn with_packed<R>(x: &[f32], k: usize, pack: bool, f: impl FnOnce(&[f32]) -> R) -> R {
    // Taken out of the thread-local for the call, so that a nested call on this thread finds
    // its own buffer.
    let mut packed = PACKED.take();
    packed.clear();
    if pack {
        pack_inputs(x, k, &mut packed);
    }
    let result = f(&packed);
    PACKED.set(packed);
    result
}

/// The tiled product of one matrix (see the module docs): task `c * x_tiles + t` computes the
/// output columns of weight-row chunk `c` for the input rows of input tile `t`.
pub(crate) struct Tiled<'a, W> {
    inputs: Inputs<'a>,
    w: &'a W,
    out: SharedOut,
    plan: Plan,
    chunk: usize,
    chunks: usize,
    x_tiles: usize,
    simd: bool,
    /// The part writes into `out` for as long as it lives.
    _out: PhantomData<&'a mut [f32]>,
}

impl<'a, W: WeightRows> Tiled<'a, W> {
    /// The part writing `x · Wᵀ` into `out`; `packed` is [`with_packed`]'s layout of `x`. The
    /// shapes are checked by [`check_shapes`] (a mismatch makes the part empty).
    pub(crate) fn new(
        x: &'a [f32],
        packed: &'a [f32],
        w: &'a W,
        out: &'a mut [f32],
        simd: bool,
    ) -> Self {
        let (n, k) = (w.rows(), w.cols());
        let rows = x.len() / k.max(1);
        let plan = Plan::new(w, rows);
        let chunk = chunk_rows(n, plan.tile_rows, TASKS_PER_THREAD);
        // Prefill-sized inputs also split over input tiles, so that a matrix of few rows still
        // makes enough tasks to balance the threads.
        let fits = k > 0 && x.len() == rows * k && out.len() == rows * n;
        let (chunks, x_tiles) = if fits && rows > 0 && n > 0 {
            (n.div_ceil(chunk), rows.div_ceil(INPUT_TILE))
        } else {
            (0, 0)
        };
        Tiled {
            inputs: Inputs { x, packed },
            w,
            out: SharedOut(out.as_mut_ptr()),
            plan,
            chunk,
            chunks,
            x_tiles,
            simd,
            _out: PhantomData,
        }
    }
}

impl<W: WeightRows> Part for Tiled<'_, W> {
    fn tasks(&self) -> usize {
        self.chunks * self.x_tiles
    }

    fn work(&self) -> usize {
        self.w.rows() * self.w.bytes_per_row() * (self.inputs.x.len() / self.w.cols().max(1))
    }

    unsafe fn run(&self, task: usize) {
        let (c, t) = (task / self.x_tiles, task % self.x_tiles);
        let rows = c * self.chunk..((c + 1) * self.chunk).min(self.w.rows());
        SCRATCH.with_borrow_mut(|scratch| {
            // SAFETY: the (chunk, input tile) pairs partition the output: task (c, t) writes only
            // columns `rows` of the output rows of input tile `t`, no two tasks touch the same
            // element (each runs once: caller's contract), and all indices stay inside `out`
            // (rows x n values, checked in `new`), which the part borrows.
            unsafe {
                chunk_product(
                    self.inputs,
                    self.w,
                    rows,
                    t,
                    self.plan,
                    self.out,
                    scratch,
                    self.simd,
                )
            }
        });
    }
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

/// Weight rows per task, for about `tasks_per_thread` tasks per thread: a whole number of tiles.
pub(crate) fn chunk_rows(n: usize, tile_rows: usize, tasks_per_thread: usize) -> usize {
    let tasks = pool::threads() * tasks_per_thread;
    n.div_ceil(tasks)
        .next_multiple_of(tile_rows)
        .min(MAX_CHUNK_ROWS.next_multiple_of(tile_rows))
}
