//! The GGUF tensor types hierdraft can compute with: their ggml type ids, block sizes and the
//! bytes one row of `cols` values takes. Everything else that reads GGUF blocks (dequantization,
//! the quantized kernels, the file parser) asks this table.

/// A ggml tensor type hierdraft supports. The discriminant is the id a GGUF file stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum GgmlType {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q5_0 = 6,
    Q8_0 = 8,
    Q4K = 12,
    Q5K = 13,
    Q6K = 14,
    BF16 = 30,
}

/// A ggml type id that hierdraft cannot compute with (known to ggml or not).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ggml tensor type {id} ({name}) is not supported; supported: {supported}")]
pub struct UnsupportedType {
    pub id: u32,
    pub name: &'static str,
    pub supported: &'static str,
}

impl GgmlType {
    /// Every supported type, in id order.
    pub const ALL: [GgmlType; 9] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q4_0,
        GgmlType::Q5_0,
        GgmlType::Q8_0,
        GgmlType::Q4K,
        GgmlType::Q5K,
        GgmlType::Q6K,
        GgmlType::BF16,
    ];

    const SUPPORTED: &'static str = "F32, F16, BF16, Q4_0, Q5_0, Q8_0, Q4_K, Q5_K, Q6_K";

    /// The type with this GGUF id, or an error naming it.
    pub fn from_id(id: u32) -> Result<GgmlType, UnsupportedType> {
        Self::ALL
            .into_iter()
            .find(|t| *t as u32 == id)
            .ok_or(UnsupportedType {
                id,
                name: ggml_type_name(id),
                supported: Self::SUPPORTED,
            })
    }

    /// The type with this name (`"Q4_K"`, `"q8_0"`, `"bf16"`; case-insensitive).
    pub fn from_name(name: &str) -> Option<GgmlType> {
        Self::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(name))
    }

    /// The GGUF id.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// ggml's name of the type.
    pub fn name(self) -> &'static str {
        ggml_type_name(self as u32)
    }

    /// Values per block.
    pub fn block_len(self) -> usize {
        match self {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => 1,
            GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => 32,
            GgmlType::Q4K | GgmlType::Q5K | GgmlType::Q6K => 256,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            GgmlType::F32 => 4,
            GgmlType::F16 | GgmlType::BF16 => 2,
            GgmlType::Q4_0 => 2 + 16,
            GgmlType::Q5_0 => 2 + 4 + 16,
            GgmlType::Q8_0 => 2 + 32,
            GgmlType::Q4K => 2 + 2 + 12 + 128,
            GgmlType::Q5K => 2 + 2 + 12 + 32 + 128,
            GgmlType::Q6K => 128 + 64 + 16 + 2,
        }
    }

    /// Bytes of one row of `cols` values, or `None` when `cols` is not a whole number of blocks.
    pub fn row_bytes(self, cols: usize) -> Option<usize> {
        if cols.is_multiple_of(self.block_len()) {
            (cols / self.block_len()).checked_mul(self.block_bytes())
        } else {
            None
        }
    }
}

/// ggml's name of a type id, for messages (`"unknown"` for ids ggml does not define).
pub fn ggml_type_name(id: u32) -> &'static str {
    match id {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        6 => "Q5_0",
        7 => "Q5_1",
        8 => "Q8_0",
        9 => "Q8_1",
        10 => "Q2_K",
        11 => "Q3_K",
        12 => "Q4_K",
        13 => "Q5_K",
        14 => "Q6_K",
        15 => "Q8_K",
        16 => "IQ2_XXS",
        17 => "IQ2_XS",
        18 => "IQ3_XXS",
        19 => "IQ1_S",
        20 => "IQ4_NL",
        21 => "IQ3_S",
        22 => "IQ2_S",
        23 => "IQ4_XS",
        24 => "I8",
        25 => "I16",
        26 => "I32",
        27 => "I64",
        28 => "F64",
        29 => "IQ1_M",
        30 => "BF16",
        34 => "TQ1_0",
        35 => "TQ2_0",
        39 => "MXFP4",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_names_and_sizes_round_trip() {
        for t in GgmlType::ALL {
            assert_eq!(GgmlType::from_id(t.id()), Ok(t));
            assert_eq!(GgmlType::from_name(t.name()), Some(t));
            assert_eq!(t.row_bytes(t.block_len() * 3), Some(3 * t.block_bytes()));
        }
        assert_eq!(GgmlType::Q4K.row_bytes(255), None);
        let err = GgmlType::from_id(3).unwrap_err();
        assert!(err.to_string().contains("Q4_1"), "{err}");
    }
}
