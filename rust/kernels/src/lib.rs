//! hierdraft-kernels: CPU kernels for the target model's verification forward.
//!
//! A tree-verification step runs the model's linear layers (and its LM head, a 262k x 640 matrix
//! for Gemma 3) over a handful of rows: the tokens of one draft tree. General-purpose BLAS
//! kernels are tuned for large batches; with 2 to a few dozen rows they read the weights several
//! times over, and the step costs 2-4x a one-token step. [`linear_rows`] streams each weight row
//! once, multiplies it with every input row while it sits in cache, and prefetches ahead, so a
//! 17-row product costs little more than a one-row one. [`qlinear`] does the same over a weight
//! matrix kept in its GGUF blocks ([`QuantMatrix`]), dequantizing each tile once per call; its
//! result is bit for bit `linear_rows` over the [`dequantize_row`] values, which are bit for bit
//! gguf-py's. Pure Rust, no Python.

mod attention;
mod cpu;
mod dequant;
mod error;
mod fused;
mod ggml_type;
pub mod gguf;
mod greedy_head;
mod group;
mod int8;
mod linear_rows;
mod pool;
mod product;
mod qlinear;
mod quant_matrix;
mod rms_norm;
mod rotary;
mod tile_kernel;

pub use attention::{
    attention, attention_portable, exp_nonpositive, AttentionDims, KvView, Scoring, Visibility,
};
pub use cpu::{simd_available, Isa};
pub use dequant::{dequantize_row, dequantize_row_portable, dequantize_rows};
pub use error::KernelError;
pub use ggml_type::{ggml_type_name, GgmlType, UnsupportedType};
pub use gguf::{GgufError, GgufFile, MetaArray, MetaValue, TensorInfo};
pub use greedy_head::{ArgmaxReport, GreedyHead, GreedyHeadError};
pub use group::{qlinear_group, qlinear_group_on, qlinear_group_portable, GroupError};
pub use int8::{
    has_int8_form, qlinear_int8, qlinear_int8_on, qlinear_int8_portable, quantize_activations,
    quantize_activations_portable, ActivationBlock, QuantizedRows, ACTIVATION_BLOCK,
};
pub use linear_rows::{linear_rows, linear_rows_portable};
pub use qlinear::{qlinear, qlinear_on, qlinear_portable};
pub use quant_matrix::{MatrixError, QuantMatrix, SharedBytes};
pub use rms_norm::{rms_norm, rms_norm_portable};
pub use rotary::rotary;
