//! The int8 mode's activation quantizer: the default (AVX2 where available) path gives the
//! portable path's bytes, scales and half sums on adversarial blocks (ties, values next to
//! ties, signed zeros, subnormal and huge magnitudes, infinities and NaNs), the rule's known
//! values hold, and bad shapes are errors.

mod quant_blocks;

use hierdraft_kernels::{
    quantize_activations, quantize_activations_portable, KernelError, QuantizedRows,
};
use proptest::prelude::*;
use quant_blocks::Rng;

fn assert_same(a: &QuantizedRows, b: &QuantizedRows) {
    assert_eq!((a.rows(), a.k()), (b.rows(), b.k()));
    for r in 0..a.rows() {
        for (t, (x, y)) in a.row(r).iter().zip(b.row(r)).enumerate() {
            assert_eq!(x.values(), y.values(), "row {r} block {t}");
            assert_eq!(
                x.scale().to_bits(),
                y.scale().to_bits(),
                "row {r} block {t}"
            );
            assert_eq!(
                (x.halves(), x.sum()),
                (y.halves(), y.sum()),
                "row {r} block {t}"
            );
            let (lo, hi) = x.halves();
            assert_eq!(x.sum(), lo + hi);
            let scaled = x.scale() * x.sum() as f32;
            assert_eq!(
                x.scaled_sum().to_bits(),
                scaled.to_bits(),
                "row {r} block {t}"
            );
            assert_eq!(x.scaled_sum().to_bits(), y.scaled_sum().to_bits());
        }
    }
}

/// A block whose scale is exactly `s` (a power of two: the largest value is 127 s) and whose
/// other values land on, or one ulp beside, halves of the quantization step.
fn tie_block(rng: &mut Rng, s: f32) -> Vec<f32> {
    let mut b = vec![127.0 * s; 32];
    for v in b.iter_mut().skip(1) {
        let j = (rng.next() % 254) as f32 - 127.0;
        let half = (j + 0.5) * s;
        *v = match rng.next() % 4 {
            0 => half,
            1 => f32::from_bits(half.to_bits() + 1),
            2 => f32::from_bits(half.to_bits().saturating_sub(1)),
            _ => -half,
        };
    }
    if rng.next().is_multiple_of(2) {
        b[0] = -b[0];
    }
    b
}

fn adversarial(rng: &mut Rng, blocks: usize) -> Vec<f32> {
    let mut x = Vec::with_capacity(blocks * 32);
    for _ in 0..blocks {
        let block: Vec<f32> = match rng.next() % 7 {
            0 => {
                let s = 2f32.powi((rng.next() % 60) as i32 - 30);
                tie_block(rng, s)
            }
            1 => (0..32).map(|_| f32::from_bits(rng.next() as u32)).collect(), // any bits
            2 => (0..32)
                .map(|_| f32::from_bits(rng.next() as u32 & 0x807f_ffff))
                .collect(), // subnormal
            3 => vec![-0.0; 32],
            4 => (0..32)
                .map(|i| if i == 7 { f32::INFINITY } else { 1.0 })
                .collect(),
            _ => (0..32)
                .map(|_| ((rng.next() >> 40) as f32 - 8388608.0) * 1e-3)
                .collect(),
        };
        x.extend(block);
    }
    x
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn simd_and_portable_quantizers_agree(blocks in 1usize..40, rows in 1usize..5, seed in any::<u64>()) {
        let x = adversarial(&mut Rng::new(seed), blocks * rows);
        let k = blocks * 32;
        assert_same(&quantize_activations(&x, k).unwrap(), &quantize_activations_portable(&x, k).unwrap());
    }
}

#[test]
fn large_inputs_quantized_in_parallel_agree() {
    let x = adversarial(&mut Rng::new(9), 20_000);
    let a = quantize_activations(&x, 640).unwrap();
    assert_same(&a, &quantize_activations_portable(&x, 640).unwrap());
    assert_eq!(a.rows(), 1000);
    // row 999 alone quantizes the same
    let alone = quantize_activations(&x[999 * 640..], 640).unwrap();
    for (x, y) in alone.row(0).iter().zip(a.row(999)) {
        assert_eq!(x.values(), y.values());
    }
}

#[test]
fn the_rule_on_known_blocks() {
    let mut x = vec![0f32; 64];
    x[0] = -254.0; // d = 2
    x[1] = 3.0; // 1.5: a tie, away from zero
    x[2] = -5.0; // -2.5 -> -3
    x[3] = 0.999; // 0.4995 -> 0
    x[20] = 254.0;
    x[32..].fill(f32::from_bits(3)); // subnormal block: d flushed to 0
    let q = quantize_activations_portable(&x, 64).unwrap();
    let (first, second) = (&q.row(0)[0], &q.row(0)[1]);
    assert_eq!((first.scale(), second.scale()), (2.0, 0.0));
    assert_eq!(&first.values()[..4], &[-127, 2, -3, 0]);
    assert_eq!(first.values()[20], 127);
    assert!(second.values().iter().all(|&v| v == 0));
    assert_eq!(first.halves(), (-127 + 2 - 3, 127));
    assert_eq!((first.sum(), first.scaled_sum()), (-1, -2.0));
    assert_same(&q, &quantize_activations(&x, 64).unwrap());
}

#[test]
fn shape_errors_are_reported() {
    assert_eq!(
        quantize_activations(&[0.0; 64], 0).err(),
        Some(KernelError::EmptyInner)
    );
    assert!(matches!(
        quantize_activations(&[0.0; 48], 48),
        Err(KernelError::PartialBlock { .. })
    ));
    assert_eq!(
        quantize_activations(&[0.0; 100], 64).err(),
        Some(KernelError::InputShape { len: 100, k: 64 })
    );
}
