//! [`KernelError`]: the shape and index problems the kernels report instead of panicking.

/// A shape or index problem in the arguments of a kernel ([`crate::linear_rows`],
/// [`crate::qlinear`], the dequantizers).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KernelError {
    #[error("the inner dimension k must be at least 1")]
    EmptyInner,
    #[error("x has {len} values, not a multiple of k = {k}")]
    InputShape { len: usize, k: usize },
    #[error("the weight has {len} values, not a multiple of k = {k}")]
    WeightShape { len: usize, k: usize },
    #[error("out has {len} values; {rows} input rows x {n} weight rows need {expected}")]
    OutputShape {
        len: usize,
        rows: usize,
        n: usize,
        expected: usize,
    },
    #[error("{ty} data of {len} bytes is not a whole number of {block_bytes}-byte blocks")]
    PartialBlock {
        ty: &'static str,
        len: usize,
        block_bytes: usize,
    },
    #[error("{blocks} {ty} blocks hold {values} values, but out has room for {len}")]
    DequantizedShape {
        ty: &'static str,
        blocks: usize,
        values: usize,
        len: usize,
    },
    #[error("row {row} is out of range for a matrix of {rows} rows")]
    RowOutOfRange { row: usize, rows: usize },
    #[error("out has {len} values; a norm writes as many as x has ({expected})")]
    NormOutput { len: usize, expected: usize },
    #[error("attention: {0}")]
    Attention(String),
    #[error("rotary embedding: {0}")]
    Rotary(String),
}
