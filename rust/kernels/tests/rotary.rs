//! The rotary embedding kernel: the rotation of each (row, head) pair of halves, and clear errors
//! for bad shapes. (Its equality with transformers' PyTorch expression, bit for bit, is checked
//! from Python: tests/test_kernels.py.)

use hierdraft_kernels::{rotary, KernelError};

#[test]
fn zero_angles_keep_the_values_and_a_quarter_turn_swaps_the_halves() {
    let (rows, heads, dim) = (3, 2, 6);
    let x: Vec<f32> = (0..rows * heads * dim).map(|i| i as f32 - 7.5).collect();
    let mut out = vec![f32::NAN; x.len()];
    let (ones, zeros) = (vec![1.0; rows * dim], vec![0.0; rows * dim]);
    rotary(&x, &ones, &zeros, heads, dim, &mut out).unwrap();
    assert_eq!(out, x);
    rotary(&x, &zeros, &ones, heads, dim, &mut out).unwrap();
    for (xh, yh) in x.chunks(dim).zip(out.chunks(dim)) {
        let half = dim / 2;
        for d in 0..half {
            assert_eq!(yh[d], -xh[half + d]);
            assert_eq!(yh[half + d], xh[d]);
        }
    }
}

#[test]
fn each_row_takes_its_own_angles() {
    let (heads, dim) = (1, 2);
    let x = [1.0f32, 0.0, 1.0, 0.0];
    let (cos, sin) = ([1.0f32, 1.0, 0.0, 0.0], [0.0f32, 0.0, 1.0, 1.0]);
    let mut out = [0.0; 4];
    rotary(&x, &cos, &sin, heads, dim, &mut out).unwrap();
    assert_eq!(out, [1.0, 0.0, 0.0, 1.0]);
}

#[test]
fn bad_shapes_are_errors() {
    let x = vec![0.0f32; 12];
    let mut out = vec![0.0f32; 12];
    let angles = vec![0.0f32; 6];
    let is_rotary = |r: Result<(), KernelError>| matches!(r, Err(KernelError::Rotary(_)));
    assert!(is_rotary(rotary(&x, &angles, &angles, 2, 3, &mut out))); // odd dim
    assert!(is_rotary(rotary(&x, &angles, &angles, 0, 6, &mut out))); // no heads
    assert!(is_rotary(rotary(&x, &angles, &angles[..5], 2, 3, &mut out))); // sin short
    assert!(is_rotary(rotary(&x, &angles, &angles, 1, 6, &mut out))); // x is 2 rows' worth
    assert!(is_rotary(rotary(
        &x,
        &angles,
        &angles,
        2,
        6,
        &mut out[..11]
    ))); // out short
    assert!(rotary(&x, &angles, &angles, 2, 6, &mut out).is_ok());
}
