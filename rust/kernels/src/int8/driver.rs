//! The parallel driver of the int8 mode: the weight rows are split into chunks (tasks of the
//! kernels' pool); each chunk is read from the GGUF blocks once per call, into the form its path
//! computes with (8-row panels for AVX2, [`IntBlock`]s for the portable path), and multiplied
//! with every input row, input tile by input tile. On AVX2 and AVX-512, up to four input rows
//! skip the panels: the direct kernel computes on the GGUF blocks as they are. An output element
//! is always computed whole, in one kernel call over all of its blocks, so nothing about the
//! split changes its bits.

use std::cell::RefCell;

use crate::cpu::Isa;
use crate::ggml_type::GgmlType;
use crate::pool;
use crate::quant_matrix::QuantMatrix;

use super::activations::QuantizedRows;
use super::portable;
use super::weights::{has_min_term, int_block, IntBlock};

/// Weight rows per panel of the AVX2 kernel (one per lane of its accumulators).
pub(crate) const PANEL_ROWS: usize = 8;
/// Tasks per thread for the panels: enough to keep the threads balanced.
const TASKS_PER_THREAD: usize = 16;
/// Weight rows per task at most for the panels: the task's panels stay in L2 while every input
/// tile passes.
const MAX_CHUNK_ROWS: usize = 64;
/// Tasks per thread for the direct kernel: fewer and longer, since each task starts a stream of
/// weight rows whose first reads its prefetches do not cover (as for the float32 few-row
/// products).
const DIRECT_TASKS_PER_THREAD: usize = 4;
/// Bytes of quantized input rows per input tile: a tile stays in L2 while it meets every panel
/// of the chunk.
const INPUT_TILE_BYTES: usize = 128 << 10;

/// A task's working buffers, reused across tasks and calls.
#[derive(Default)]
struct Scratch {
    /// The portable path's decoded weight row.
    decoded: Vec<IntBlock>,
    #[cfg(target_arch = "x86_64")]
    panels: super::panel_avx2::Panels,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// The output buffer, shared by tasks that write disjoint elements.
#[derive(Clone, Copy)]
pub(crate) struct SharedOut(pub(crate) *mut f32);
// SAFETY: see `multiply`: tasks write disjoint elements of a buffer that outlives them.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

/// Writes `x · Wᵀ` into `out` (`x.rows() * w.rows()` values; `x.k() == w.cols()`; `w` of an
/// integer type). Runs on the kernels' pool ([`crate::pool`]).
pub(crate) fn multiply(x: &QuantizedRows, w: &QuantMatrix, out: &mut [f32], isa: Isa) {
    let n = w.rows();
    assert_eq!(out.len(), x.rows() * n, "checked by the caller");
    assert_eq!(x.k(), w.cols(), "checked by the caller");
    let chunk = chunk_rows(n, direct(x, isa));
    let shared = SharedOut(out.as_mut_ptr());
    pool::for_each(n.div_ceil(chunk), &|c| {
        let rows = c * chunk..((c + 1) * chunk).min(n);
        SCRATCH.with_borrow_mut(|scratch| {
            // SAFETY: the chunks partition 0..n, so each task writes only the columns `rows` of
            // every output row: no two tasks touch the same element, all inside `out`, which
            // outlives the loop.
            unsafe { chunk_product(x, w, rows, shared, scratch, isa) }
        });
    });
}

/// # Safety
/// `out` must point to `x.rows() * w.rows()` writable values; no other thread may write the
/// columns `rows` meanwhile; this CPU supports `isa`.
unsafe fn chunk_product(
    x: &QuantizedRows,
    w: &QuantMatrix,
    rows: std::ops::Range<usize>,
    out: SharedOut,
    scratch: &mut Scratch,
    isa: Isa,
) {
    #[cfg(target_arch = "x86_64")]
    if direct(x, isa) {
        // SAFETY: forwarded from the caller (the CPU supports `isa`, a SIMD path).
        unsafe { super::direct_simd::chunk_product(x, w, rows, out, isa) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if isa.simd() {
        let tile = (INPUT_TILE_BYTES / x.k()).max(1);
        // SAFETY: forwarded from the caller (the CPU supports `isa`, a SIMD path).
        unsafe {
            super::kernel_avx2::chunk_product(x, w, rows, tile, out, &mut scratch.panels, isa)
        };
        return;
    }
    let n = w.rows();
    let min_term = has_min_term(w.ty());
    for row in rows {
        decode_row(w.ty(), w.row(row), x.blocks(), &mut scratch.decoded);
        for r in 0..x.rows() {
            let v = portable::output(&scratch.decoded, x, r, min_term);
            // SAFETY: element (r, row) is ours to write (caller's contract).
            unsafe { *out.0.add(r * n + row) = v };
        }
    }
}

/// The [`IntBlock`]s of one weight row, into `out`.
fn decode_row(ty: GgmlType, row: &[u8], blocks: usize, out: &mut Vec<IntBlock>) {
    out.clear();
    out.extend((0..blocks).map(|t| int_block(ty, row, t)));
}

/// Whether the product runs the direct kernel (up to four input rows) instead of panels.
fn direct(x: &QuantizedRows, isa: Isa) -> bool {
    #[cfg(target_arch = "x86_64")]
    return isa.simd() && x.rows() <= super::direct_simd::MAX_DIRECT_INPUTS;
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (x, isa);
        false
    }
}

/// Weight rows per task: whole groups of 8 rows.
fn chunk_rows(n: usize, direct: bool) -> usize {
    let threads = pool::threads().max(1);
    if direct {
        return n
            .div_ceil(threads * DIRECT_TASKS_PER_THREAD)
            .next_multiple_of(PANEL_ROWS);
    }
    n.div_ceil(threads * TASKS_PER_THREAD)
        .next_multiple_of(PANEL_ROWS)
        .min(MAX_CHUNK_ROWS)
}
