//! A few input rows (up to four on AVX2, three of a K-quant; up to eight where AVX-512VL gives 32
//! vector registers) times a block-quantized matrix, without the scratch round trip: each group
//! of 32 weight values is dequantized into registers (by the same decoder the dequantizer uses,
//! so the values are identical) and multiplied into the accumulators at once. With so few input rows the product
//! is bound by dequantization, and storing the values to read them back would cost about as much
//! again. The AVX-512 path runs the same 256-bit instructions; its extra registers let one call
//! cover more weight and input rows.
//!
//! The accumulation order is the crate's (see [`crate::tile_kernel`]): lane `j` of an output
//! element accumulates columns `j, j + 8, ...` with fused multiply-adds from 0, then the lanes
//! are reduced pairwise; block-quantized rows have no tail columns (whole blocks of 32 or 256).
//! The result is therefore bit for bit the one of the scratch path, and of
//! `linear_rows(x, dequantize(W))`.

use std::marker::PhantomData;

use crate::cpu::Isa;
use crate::ggml_type::GgmlType;
use crate::product::{chunk_rows, Part, SharedOut};
use crate::quant_matrix::QuantMatrix;

/// Weight rows one kernel call takes on the AVX2 path, by input rows (index: rows - 1): 4 for one
/// or two, 2 for three or four (8 accumulators at most, of the 16 vector registers). One input
/// row could feed 8 accumulators, but then the dequantized values of 8 weight rows compete with
/// them for the registers, and 4 rows ran faster (see the README's cost-curve notes).
const AVX2_WEIGHT_ROWS: [usize; 4] = [4, 4, 2, 2];
/// Most input rows the AVX-512 kernels take.
const AVX512_MAX_ROWS: usize = 8;

/// What a kernel call keeps in registers over a group of 32 columns (see `simd::kernel`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Order {
    /// One weight row's values at a time, each input vector loaded where it is used.
    Stream = 0,
    /// Every weight row's values, each input vector loaded once.
    HoldValues = 1,
    /// Every input row's vectors, each weight row's values decoded once and used at once.
    HoldInputs = 2,
}

/// One AVX-512 kernel call's shape: weight rows and loop order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct WideShape {
    weight_rows: usize,
    order: Order,
}

/// The AVX-512 kernel shape for `rows` input rows of type `ty`, where one beat the AVX2 kernels
/// (`cargo bench -p hierdraft-kernels --bench qlinear_isa`, paired on the default model's shapes,
/// the three orders tried for 1-6 rows); `None`: the AVX2 kernels. With 32 registers one input
/// row feeds 8 weight rows' accumulators (4 on AVX2). Q8_0, whose values decode in few
/// instructions, streams its inputs past 8 weight rows for 3 input rows and 4 for 4-6; two of its
/// rows, and of Q4_0, hold their 8 input vectors and feed 8 weight rows. The other formats hold
/// the values of all of a call's weight rows from 3 rows on (Q5_0 and Q5_K at 3 rows: the input
/// vectors, which their decoders' temporaries leave room for). Q5_0 at one row, the other
/// K-quants at two, Q5_K from 4 rows and Q6_K everywhere were as fast or faster on the AVX2
/// kernels.
fn wide_shape(ty: GgmlType, rows: usize) -> Option<WideShape> {
    use GgmlType::{Q4_0, Q5K, Q5_0, Q6K, Q8_0};
    let shape = |weight_rows, order| Some(WideShape { weight_rows, order });
    match (rows, ty) {
        (_, Q6K) | (1, Q5_0) => None,
        (1, Q4_0) => shape(8, Order::HoldInputs),
        (1, _) => shape(8, Order::Stream),
        (2, Q8_0 | Q4_0) => shape(8, Order::HoldInputs),
        (2, Q5_0) => shape(6, Order::Stream),
        (2, _) => None,
        (3, Q8_0) => shape(8, Order::Stream),
        (4..=6, Q8_0) => shape(4, Order::Stream),
        (3, Q5_0 | Q5K) => shape(4, Order::HoldInputs),
        (_, Q5K) => None,
        (3 | 4, _) => shape(3, Order::HoldValues),
        (5..=AVX512_MAX_ROWS, _) => shape(2, Order::HoldValues),
        _ => None,
    }
}

/// The kernels' path for `rows` input rows of type `ty` on a CPU whose best path is `isa`: the
/// AVX-512 kernels where [`wide_shape`] has one (on the VNNI path too: these products have no
/// integer sums), else the AVX2 ones.
fn kernel_isa(isa: Isa, ty: GgmlType, rows: usize) -> Isa {
    match isa {
        _ if isa.wide() && wide_shape(ty, rows).is_some() => Isa::Avx512,
        Isa::Portable => Isa::Portable,
        _ => Isa::Avx2,
    }
}

/// Input rows the fused path takes at most for type `ty` on `isa` (more take the tiled path).
fn max_rows(isa: Isa, ty: GgmlType) -> usize {
    match isa {
        _ if isa.wide() && wide_shape(ty, AVX512_MAX_ROWS).is_some() => AVX512_MAX_ROWS,
        // Four rows of a K-quant ran faster tiled (three did not).
        _ if matches!(ty, GgmlType::Q4K | GgmlType::Q5K | GgmlType::Q6K) => 3,
        _ => AVX2_WEIGHT_ROWS.len(),
    }
}

/// Weight rows of a task: a multiple of every weight-row count of a kernel call.
const TASK_ROW_MULTIPLE: usize = 24;
/// Tasks per thread. Fewer and longer than a tiled product's: each task starts a new stream of
/// weight rows whose first reads the prefetches do not cover, and with few input rows the reads
/// are what a task waits for (see the README's cost-curve notes).
const TASKS_PER_THREAD: usize = 4;

/// Whether [`Fused`] computes `x · Wᵀ` for `rows` input rows of this matrix on `isa`.
pub(crate) fn applies(w: &QuantMatrix, rows: usize, isa: Isa) -> bool {
    cfg!(target_arch = "x86_64")
        && isa.simd()
        && (1..=max_rows(isa, w.ty())).contains(&rows)
        && w.ty().block_len() > 1
}

/// The fused product of one matrix: task `c` computes the output columns of weight-row chunk
/// `c` for every input row.
pub(crate) struct Fused<'a> {
    x: &'a [f32],
    w: &'a QuantMatrix,
    out: SharedOut,
    chunk: usize,
    tasks: usize,
    /// The kernels' path ([`kernel_isa`]).
    isa: Isa,
    /// The part writes into `out` for as long as it lives.
    _out: PhantomData<&'a mut [f32]>,
}

impl<'a> Fused<'a> {
    /// The part writing `x · Wᵀ` into `out` on `isa`. The shapes are checked by the caller
    /// ([`crate::product::check_shapes`]; a mismatch makes the part empty) and [`applies`] is
    /// true on this CPU (otherwise the part is empty too).
    pub(crate) fn new(x: &'a [f32], w: &'a QuantMatrix, out: &'a mut [f32], isa: Isa) -> Self {
        let (n, k) = (w.rows(), w.cols());
        let rows = x.len() / k;
        let fits = x.len() == rows * k
            && out.len() == rows * n
            && isa <= Isa::detect()
            && applies(w, rows, isa);
        let chunk = chunk_rows(n, TASK_ROW_MULTIPLE, TASKS_PER_THREAD);
        Fused {
            x,
            w,
            out: SharedOut(out.as_mut_ptr()),
            chunk,
            tasks: if fits { n.div_ceil(chunk) } else { 0 },
            isa: kernel_isa(isa, w.ty(), rows),
            _out: PhantomData,
        }
    }
}

impl Part for Fused<'_> {
    fn tasks(&self) -> usize {
        self.tasks
    }

    fn work(&self) -> usize {
        self.w.rows() * self.w.row_bytes() * (self.x.len() / self.w.cols())
    }

    unsafe fn run(&self, task: usize) {
        let rows = task * self.chunk..((task + 1) * self.chunk).min(self.w.rows());
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the chunks partition 0..n and each task runs once (caller's contract), so
        // this one alone writes columns `rows` of every output row (`new` checked that `out`
        // holds x.len() / k rows of n values); the CPU has AVX2, FMA and F16C, and AVX-512F and
        // VL for the AVX-512 path (`new` checked `applies` and the path, or made the part empty).
        unsafe {
            match self.isa {
                Isa::Avx512 => simd::chunk_avx512(self.x, self.w, rows, self.out),
                _ => simd::chunk_avx2(self.x, self.w, rows, self.out),
            }
        };
        #[cfg(not(target_arch = "x86_64"))]
        let _ = rows;
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;
    use std::array::from_fn;
    use std::ops::Range;

    use super::{wide_shape, Order, WideShape, AVX2_WEIGHT_ROWS as N2};
    use crate::dequant::avx2::{factors, group, groups, ids, Factors};
    use crate::ggml_type::GgmlType;
    use crate::product::SharedOut;
    use crate::quant_matrix::QuantMatrix;
    use crate::tile_kernel::avx2::hsum;

    /// Computes output columns `rows` (see [`super::Fused`]) on the AVX2 path.
    ///
    /// # Safety
    /// As [`super::Fused::run`]; no other thread writes columns `rows` meanwhile; AVX2, FMA and
    /// F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn chunk_avx2(
        x: &[f32],
        w: &QuantMatrix,
        rows: Range<usize>,
        out: SharedOut,
    ) {
        // SAFETY: forwarded.
        unsafe { chunk::<false>(x, w, rows, out) }
    }

    /// [`chunk_avx2`]'s arithmetic, compiled for 32 vector registers.
    ///
    /// # Safety
    /// As [`chunk_avx2`], and the CPU has AVX-512F and AVX-512VL.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl")]
    pub(super) unsafe fn chunk_avx512(
        x: &[f32],
        w: &QuantMatrix,
        rows: Range<usize>,
        out: SharedOut,
    ) {
        // SAFETY: forwarded.
        unsafe { chunk::<true>(x, w, rows, out) }
    }

    /// The body of both entry points, inlined into each, so that it is compiled with the entry
    /// point's instruction set (`WIDE`: the 32 registers of AVX-512VL).
    #[inline(always)]
    unsafe fn chunk<const WIDE: bool>(
        x: &[f32],
        w: &QuantMatrix,
        rows: Range<usize>,
        out: SharedOut,
    ) {
        // SAFETY: forwarded.
        unsafe {
            match w.ty() {
                GgmlType::Q4_0 => rows_of::<{ ids::Q4_0 }, WIDE>(x, w, rows, out),
                GgmlType::Q5_0 => rows_of::<{ ids::Q5_0 }, WIDE>(x, w, rows, out),
                GgmlType::Q8_0 => rows_of::<{ ids::Q8_0 }, WIDE>(x, w, rows, out),
                GgmlType::Q4K => rows_of::<{ ids::Q4K }, WIDE>(x, w, rows, out),
                GgmlType::Q5K => rows_of::<{ ids::Q5K }, WIDE>(x, w, rows, out),
                GgmlType::Q6K => rows_of::<{ ids::Q6K }, WIDE>(x, w, rows, out),
                // `applies` only lets block-quantized types through.
                GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {}
            }
        }
    }

    /// Output columns `rows` for weights of type `T`, in groups of the path's weight rows per
    /// call; a last, partial group repeats its last row and writes only the rows it has.
    #[inline(always)]
    unsafe fn rows_of<const T: u32, const WIDE: bool>(
        x: &[f32],
        w: &QuantMatrix,
        rows: Range<usize>,
        out: SharedOut,
    ) {
        let (n, k) = (w.rows(), w.cols());
        let inputs = x.len() / k;
        let wide = if WIDE {
            wide_shape(w.ty(), inputs)
        } else {
            None
        };
        let shape = Shape::pick(wide, inputs);
        let group_rows = shape.weight_rows();
        let data = w.data().as_ptr();
        let row_bytes = w.row_bytes();
        let mut start = rows.start;
        while start < rows.end {
            let valid = group_rows.min(rows.end - start);
            let row = |a: usize| data.wrapping_add((start + a.min(valid - 1)) * row_bytes);
            let call = Call {
                k,
                block_bytes: w.ty().block_bytes(),
                ahead: group_rows * row_bytes,
                valid,
                out: out.0.wrapping_add(start),
                out_stride: n,
            };
            // SAFETY: the rows exist (a.min(valid - 1) < valid), x holds `inputs` rows of k
            // values (`Shape::pick` gives a shape of `inputs` input rows: tested), outputs (b, start + a)
            // for a < valid are ours to write, and `group_rows` is the shape's weight rows.
            let xs = |b: usize| x.as_ptr().wrapping_add(b * k);
            unsafe { shape.run::<T>(row, xs, call) };
            start += valid;
        }
    }

    /// Declares the kernel instantiations once: the `Shape` enum, each shape's weight rows, and
    /// the call of its kernel, so that a shape's rows and its kernel cannot disagree.
    macro_rules! shapes {
        ($($name:ident = ($nw:expr, $nx:literal, $order:ident)),* $(,)?) => {
            /// The kernel instantiations, `weight rows x input rows`: the AVX2 table's
            /// (`Narrow`), and the AVX-512 ones that stream values (`Wide`), hold all values of a
            /// call (`Held`) or hold all its input vectors (`Inputs`).
            #[derive(Clone, Copy, Debug, PartialEq, Eq)]
            pub(super) enum Shape {
                $($name),*
            }

            impl Shape {
                /// Weight rows, input rows and loop order of one call.
                pub(super) fn dims(self) -> (usize, usize, Order) {
                    match self {
                        $(Shape::$name => ($nw, $nx, Order::$order)),*
                    }
                }

                /// Runs the shape's kernel on the weight rows `row(0..)` and the input rows
                /// `x(0..)`.
                ///
                /// # Safety
                /// As [`kernel`], for the shape's weight and input rows.
                #[inline(always)]
                unsafe fn run<const T: u32>(
                    self,
                    row: impl Fn(usize) -> *const u8,
                    x: impl Fn(usize) -> *const f32,
                    call: Call,
                ) {
                    match self {
                        // SAFETY: forwarded.
                        $(Shape::$name => unsafe {
                            kernel::<T, { $nw }, $nx, { Order::$order as u8 }>(
                                from_fn(&row),
                                from_fn(&x),
                                call,
                            )
                        }),*
                    }
                }

                /// Weight rows of one call.
                pub(super) fn weight_rows(self) -> usize {
                    self.dims().0
                }
            }
        };
    }

    shapes! {
        Narrow4x1 = (N2[0], 1, Stream),
        Narrow4x2 = (N2[1], 2, Stream),
        Narrow2x3 = (N2[2], 3, Stream),
        Narrow2x4 = (N2[3], 4, Stream),
        Wide8x1 = (8, 1, Stream),
        Wide6x2 = (6, 2, Stream),
        Wide8x3 = (8, 3, Stream),
        Wide4x4 = (4, 4, Stream),
        Wide4x5 = (4, 5, Stream),
        Wide4x6 = (4, 6, Stream),
        Held3x3 = (3, 3, HoldValues),
        Held3x4 = (3, 4, HoldValues),
        Held2x5 = (2, 5, HoldValues),
        Held2x6 = (2, 6, HoldValues),
        Held2x7 = (2, 7, HoldValues),
        Held2x8 = (2, 8, HoldValues),
        Inputs8x1 = (8, 1, HoldInputs),
        Inputs8x2 = (8, 2, HoldInputs),
        Inputs4x3 = (4, 3, HoldInputs),
    }

    /// `Order`s as the kernel's const parameter (any other value: `Order::Stream`).
    const HOLD_VALUES: u8 = Order::HoldValues as u8;
    const HOLD_INPUTS: u8 = Order::HoldInputs as u8;

    impl Shape {
        /// The instantiation of `wide` for `inputs` input rows, or (`None`, or a shape without
        /// an instantiation) the AVX2 table's; beyond 4 input rows, the held shapes.
        pub(super) fn pick(wide: Option<WideShape>, inputs: usize) -> Shape {
            let wide = wide.map(|s| (s.weight_rows, s.order));
            match (wide, inputs) {
                (Some((8, Order::Stream)), 1) => Shape::Wide8x1,
                (Some((6, Order::Stream)), 2) => Shape::Wide6x2,
                (Some((8, Order::Stream)), 3) => Shape::Wide8x3,
                (Some((4, Order::Stream)), 4) => Shape::Wide4x4,
                (Some((4, Order::Stream)), 5) => Shape::Wide4x5,
                (Some((4, Order::Stream)), 6) => Shape::Wide4x6,
                (Some((3, Order::HoldValues)), 3) => Shape::Held3x3,
                (Some((3, Order::HoldValues)), 4) => Shape::Held3x4,
                (Some((8, Order::HoldInputs)), 1) => Shape::Inputs8x1,
                (Some((8, Order::HoldInputs)), 2) => Shape::Inputs8x2,
                (Some((4, Order::HoldInputs)), 3) => Shape::Inputs4x3,
                (_, ..=1) => Shape::Narrow4x1,
                (_, 2) => Shape::Narrow4x2,
                (_, 3) => Shape::Narrow2x3,
                (_, 4) => Shape::Narrow2x4,
                (_, 5) => Shape::Held2x5,
                (_, 6) => Shape::Held2x6,
                (_, 7) => Shape::Held2x7,
                _ => Shape::Held2x8,
            }
        }
    }

    /// What a kernel call needs besides its row pointers.
    #[derive(Clone, Copy)]
    struct Call {
        k: usize,
        block_bytes: usize,
        /// Distance in bytes to the rows to prefetch (the next group's; 0: none).
        ahead: usize,
        /// Outputs written: weight rows `0..valid`.
        valid: usize,
        out: *mut f32,
        out_stride: usize,
    }

    /// `NW` weight rows (block data at `rows[a]`) times `NX` input rows (`k` values at `x[b]`),
    /// written to `out + b * out_stride + a` for `a < valid`.
    ///
    /// Per group of 32 columns (`ORDER`, see [`Order`]): `HOLD_VALUES` dequantizes every weight
    /// row's values first and then streams each input vector past all of them (`4 * NW`
    /// registers for the values, which only the AVX-512 path has); `HOLD_INPUTS` loads every
    /// input row's vectors first (`4 * NX` registers) and decodes one weight row at a time into
    /// them; `STREAM` decodes one weight row at a time and loads each input vector where it is
    /// used. Every order gives accumulator (b, a) the same fused multiply-adds in the same order
    /// (columns ascending), so the bits are the same.
    ///
    /// # Safety
    /// AVX2, FMA and F16C; whole rows of type `T` at `rows`, `k` values at each `x[b]`, and the
    /// outputs writable.
    #[inline(always)]
    unsafe fn kernel<const T: u32, const NW: usize, const NX: usize, const ORDER: u8>(
        rows: [*const u8; NW],
        x: [*const f32; NX],
        c: Call,
    ) {
        let blocks = c.k / (32 * groups(T));
        let mut acc = [[_mm256_setzero_ps(); NW]; NX];
        for blk in 0..blocks {
            let at = blk * c.block_bytes;
            if c.ahead != 0 {
                for row in rows {
                    let p = row.wrapping_add(at + c.ahead);
                    // A prefetch never faults, wherever it points; the block's last byte covers
                    // a line a short block may start in the middle of.
                    for off in (0..c.block_bytes).step_by(64) {
                        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(off).cast::<i8>());
                    }
                    _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(c.block_bytes - 1).cast::<i8>());
                }
            }
            let mut f = [Factors::ZERO; NW];
            for (fa, row) in f.iter_mut().zip(rows) {
                // SAFETY: block `blk` of each row exists (contract).
                *fa = unsafe { factors::<T>(row.add(at)) };
            }
            for g in 0..groups(T) {
                let col = (blk * groups(T) + g) * 32;
                // SAFETY (loads): column col + 8q + 8 <= k of input row b; block `blk` of each
                // weight row exists and g < groups(T) (contract).
                if ORDER == HOLD_INPUTS {
                    let xv: [[__m256; 4]; NX] =
                        from_fn(|b| from_fn(|q| unsafe { _mm256_loadu_ps(x[b].add(col + 8 * q)) }));
                    for (a, row) in rows.into_iter().enumerate() {
                        let v = unsafe { group::<T>(row.add(at), g, &f[a]) };
                        for (q, &vq) in v.iter().enumerate() {
                            for (acc_b, xb) in acc.iter_mut().zip(&xv) {
                                acc_b[a] = _mm256_fmadd_ps(vq, xb[q], acc_b[a]);
                            }
                        }
                    }
                } else if ORDER == HOLD_VALUES {
                    let v: [[__m256; 4]; NW] =
                        from_fn(|a| unsafe { group::<T>(rows[a].add(at), g, &f[a]) });
                    for q in 0..4 {
                        for (acc_b, &xb) in acc.iter_mut().zip(&x) {
                            let xv = unsafe { _mm256_loadu_ps(xb.add(col + 8 * q)) };
                            for (acc_ba, va) in acc_b.iter_mut().zip(&v) {
                                *acc_ba = _mm256_fmadd_ps(va[q], xv, *acc_ba);
                            }
                        }
                    }
                } else {
                    for (a, row) in rows.into_iter().enumerate() {
                        let v = unsafe { group::<T>(row.add(at), g, &f[a]) };
                        for (q, &vq) in v.iter().enumerate() {
                            for (acc_b, &xb) in acc.iter_mut().zip(&x) {
                                let xv = unsafe { _mm256_loadu_ps(xb.add(col + 8 * q)) };
                                acc_b[a] = _mm256_fmadd_ps(vq, xv, acc_b[a]);
                            }
                        }
                    }
                }
            }
        }
        for (b, acc_b) in acc.iter().enumerate() {
            for (a, &v) in acc_b.iter().enumerate().take(c.valid) {
                // SAFETY: output (b, a) with a < valid (contract).
                unsafe { *c.out.add(b * c.out_stride + a) = hsum(v) };
            }
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::simd::Shape;
    use super::*;

    #[test]
    fn every_shape_picked_has_its_input_rows_and_the_tables_kernel() {
        for ty in GgmlType::ALL {
            for rows in 1..=AVX512_MAX_ROWS {
                // The AVX2 kernels (no wide shape) take up to 4 rows; the AVX-512 ones up to 8,
                // where the table has a shape (elsewhere the rows take the AVX2 kernels or the
                // tiled path).
                let wide = wide_shape(ty, rows);
                let mut paths = Vec::new();
                if rows <= AVX2_WEIGHT_ROWS.len() {
                    paths.push(None);
                }
                if wide.is_some() {
                    paths.push(wide);
                }
                for want in paths {
                    let (weight_rows, input_rows, order) = Shape::pick(want, rows).dims();
                    assert_eq!(input_rows, rows, "{ty:?} {rows} rows, {want:?}");
                    match want {
                        Some(w) => assert_eq!((weight_rows, order), (w.weight_rows, w.order)),
                        None => assert_eq!(weight_rows, AVX2_WEIGHT_ROWS[rows - 1]),
                    }
                }
            }
        }
    }
}
