//! Each way a GGUF file can be malformed gives its own error, naming the file and the problem.

mod gguf_support;

use gguf_support::{full_file, parse, pattern, put_u32, put_u64, Builder, TensorSpec};
use hierdraft_kernels::gguf::{MetaArray, MetaValue, MAX_ARRAY_NESTING};
use hierdraft_kernels::{GgmlType, GgufError};

fn poke_u32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn poke_u64(bytes: &mut [u8], at: usize, v: u64) {
    bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// The error of parsing `bytes`, whose message must name the file.
fn error_of(bytes: Vec<u8>) -> GgufError {
    let err = parse(bytes).expect_err("a corrupt file must not open");
    assert!(err.to_string().contains("test.gguf"), "{err}");
    assert!(err.is_format_error(), "{err}");
    err
}

/// A file whose metadata is the one entry `key = value`.
fn one_entry(key: &str, value: MetaValue) -> gguf_support::Built {
    Builder::new().kv(key, value).build()
}

#[test]
fn bad_magic() {
    let mut bytes = full_file().build().bytes;
    bytes[..4].copy_from_slice(b"GGML");
    let err = error_of(bytes);
    assert!(matches!(err, GgufError::BadMagic { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("not a GGUF file: it starts with \"GGML\""),
        "{err}"
    );
    assert!(matches!(
        error_of(b"PK\x03".to_vec()),
        GgufError::BadMagic { .. }
    ));
}

#[test]
fn short_files_that_start_like_gguf_are_truncated() {
    for bytes in [&b""[..], b"G", b"GGU", b"GGUF", b"GGUF\x03\0\0\0\0"] {
        let err = error_of(bytes.to_vec());
        assert!(matches!(err, GgufError::Truncated { .. }), "{err}");
    }
}

#[test]
fn unsupported_versions() {
    for (version, hint) in [
        (1, "version 1"),
        (4, ""),
        (0x0300_0000, "big-endian"),
        (0, ""),
    ] {
        let mut bytes = full_file().build().bytes;
        poke_u32(&mut bytes, 4, version);
        let err = error_of(bytes);
        assert!(
            matches!(err, GgufError::UnsupportedVersion { found, .. } if found == version),
            "{err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("version {version}")) && msg.contains(hint),
            "{msg}"
        );
    }
}

/// A file whose last tensor has a supported type, so cutting its data is detectable.
fn file_ending_in_supported_tensor() -> Builder {
    let mut b = full_file();
    b.tensors.retain(|t| GgmlType::from_id(t.type_id).is_ok());
    b
}

#[test]
fn truncation_anywhere_is_an_error_naming_what_is_cut() {
    let built = file_ending_in_supported_tensor().build();
    let full = built.bytes.len();
    let table_end = built.table.last().unwrap().offset + 8;
    for len in 0..full {
        let err = error_of(built.bytes[..len].to_vec());
        let msg = err.to_string();
        match err {
            GgufError::Truncated { end, file_len, .. } => {
                assert_eq!(file_len, len as u64);
                assert!(end > file_len, "{msg}");
            }
            GgufError::CountTooLarge { .. } => assert!(msg.contains("only"), "{msg}"),
            GgufError::TensorPastEnd { ref name, end, .. } => {
                // Only padding and data can be cut past the table.
                assert!(len >= table_end, "{msg}");
                assert!(
                    end > len as u64 && msg.contains(&format!("'{name}'")),
                    "{msg}"
                );
            }
            other => panic!("cut at {len}: unexpected {other}"),
        }
    }
}

#[test]
fn tensor_data_past_the_end_names_the_tensor_and_the_bytes() {
    let built = full_file().build();
    let mut bytes = built.bytes.clone();
    let file_len = bytes.len() as u64;
    // token_embd.weight: 3 x 64 Q8_0 = 204 bytes, moved to an aligned offset near the end.
    let offset = (file_len - built.data_start as u64) / 32 * 32;
    poke_u64(&mut bytes, built.table[1].offset, offset);
    let start = built.data_start as u64 + offset;
    let err = error_of(bytes);
    assert!(matches!(err, GgufError::TensorPastEnd { .. }), "{err}");
    let want = format!(
        "tensor 'token_embd.weight' needs bytes {start}..{} but the file has {file_len}",
        start + 204
    );
    assert!(err.to_string().contains(&want), "{err}");
    // An offset so large that start + size overflows.
    let mut bytes = built.bytes.clone();
    poke_u64(&mut bytes, built.table[1].offset, u64::MAX - 31);
    assert!(matches!(error_of(bytes), GgufError::TensorPastEnd { .. }));
}

#[test]
fn tensors_of_unknown_size_must_still_start_inside_the_file() {
    let built = full_file().build();
    let last = built.table.len() - 1;
    let mut bytes = built.bytes.clone();
    poke_u64(&mut bytes, built.table[last].offset, 1 << 40);
    let err = error_of(bytes);
    assert!(
        matches!(err, GgufError::TensorStartsPastEnd { .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("'blk.0.mystery' (unknown) starts at byte"),
        "{err}"
    );
}

#[test]
fn counts_that_cannot_fit_are_refused_before_allocating() {
    let built = full_file().build();
    for (at, what) in [(16, "metadata entry count"), (8, "tensor count")] {
        for count in [u64::MAX, 1 << 40, 10_000] {
            let mut bytes = built.bytes.clone();
            poke_u64(&mut bytes, at, count);
            let err = error_of(bytes);
            assert!(matches!(err, GgufError::CountTooLarge { .. }), "{err}");
            assert!(err.to_string().contains(what), "{err}");
        }
    }
    // An array whose count is far beyond the file.
    let mut out = Vec::new();
    put_u32(&mut out, 6); // f32 elements
    put_u64(&mut out, u64::MAX / 2);
    let mut bytes = one_entry("big", MetaValue::Array(MetaArray::F32(vec![1.0]))).bytes;
    let value_at = 24 + 8 + 3 + 4;
    bytes[value_at..value_at + 12].copy_from_slice(&out);
    let err = error_of(bytes);
    assert!(matches!(err, GgufError::CountTooLarge { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("float32 elements of metadata key 'big'"),
        "{err}"
    );
}

#[test]
fn string_lengths_past_the_end_are_truncation() {
    let mut bytes = one_entry("k", MetaValue::String("value".into())).bytes;
    poke_u64(&mut bytes, 24 + 8 + 1 + 4, u64::MAX);
    let err = error_of(bytes);
    assert!(
        matches!(err, GgufError::Truncated { end: u64::MAX, .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("the value of metadata key 'k'"),
        "{err}"
    );
}

#[test]
fn invalid_utf8_in_keys_names_and_strings() {
    let built = full_file().build();
    // The first key, "general.architecture".
    let mut bytes = built.bytes.clone();
    bytes[built.metadata_entries[0] + 8] = 0xff;
    let err = error_of(bytes);
    assert!(matches!(err, GgufError::InvalidUtf8 { .. }), "{err}");
    assert!(
        err.to_string().contains("the key of metadata entry 0"),
        "{err}"
    );
    // A tensor name.
    let mut bytes = built.bytes.clone();
    bytes[built.table[2].name + 8] = 0xc3;
    let err = error_of(bytes);
    assert!(err.to_string().contains("the name of tensor 2"), "{err}");
    // A string value.
    let mut bytes = one_entry("k", MetaValue::String("abc".into())).bytes;
    let value_at = 24 + 8 + 1 + 4 + 8;
    bytes[value_at + 1] = 0x80;
    let err = error_of(bytes);
    assert!(
        matches!(err, GgufError::InvalidUtf8 { at, .. } if at == value_at as u64),
        "{err}"
    );
}

#[test]
fn duplicate_keys_and_tensor_names() {
    let b = Builder::new()
        .kv("a", MetaValue::U8(1))
        .kv("b", MetaValue::U8(2))
        .kv("a", MetaValue::U8(3));
    let err = error_of(b.build().bytes);
    assert!(matches!(err, GgufError::DuplicateKey { .. }), "{err}");
    assert!(err.to_string().contains("key 'a' appears twice"), "{err}");
    let mut b = full_file();
    let mut again = b.tensors[3].clone();
    again.data = pattern(again.data.len(), 0);
    b.tensors.push(again);
    let err = error_of(b.build().bytes);
    assert!(matches!(err, GgufError::DuplicateTensor { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("'blk.0.attn_k.weight' appears twice"),
        "{err}"
    );
}

#[test]
fn bad_alignments() {
    for (value, shown) in [
        (MetaValue::U32(0), "is 0"),
        (MetaValue::U32(48), "is 48"),
        (MetaValue::I32(-32), "is -32"),
        (MetaValue::U64(1 << 40), "is 1099511627776"),
        (MetaValue::String("32".into()), "a string value"),
    ] {
        let err = error_of(one_entry("general.alignment", value).bytes);
        assert!(matches!(err, GgufError::BadAlignment { .. }), "{err}");
        assert!(err.to_string().contains(shown), "{err}");
    }
}

#[test]
fn too_many_dims_and_overflowing_dims() {
    let built = full_file().build();
    let mut bytes = built.bytes.clone();
    poke_u32(&mut bytes, built.table[0].n_dims, 5);
    let err = error_of(bytes);
    assert!(
        matches!(err, GgufError::TooManyDims { n_dims: 5, .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("'output_norm.weight' has 5 dimensions"),
        "{err}"
    );

    for dims in [[1u64 << 32, 1 << 32], [u64::MAX, 1], [1 << 63, 1]] {
        let b = Builder::new().tensor(TensorSpec::raw("big", &dims, 0, vec![]));
        let err = error_of(b.build().bytes);
        assert!(
            matches!(err, GgufError::DimsOverflow { .. }),
            "{dims:?}: {err}"
        );
    }
}

#[test]
fn misaligned_tensor_offsets() {
    let built = full_file().build();
    let mut bytes = built.bytes.clone();
    poke_u64(&mut bytes, built.table[1].offset, built.offsets[1] + 4);
    let err = error_of(bytes);
    assert!(
        matches!(err, GgufError::MisalignedTensor { alignment: 32, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("'token_embd.weight'"), "{err}");
}

#[test]
fn partial_blocks_of_a_supported_type() {
    let b = Builder::new().tensor(TensorSpec::raw("q", &[33, 1], 8, pattern(68, 0)));
    let err = error_of(b.build().bytes);
    assert!(
        matches!(
            err,
            GgufError::PartialBlock {
                ne0: 33,
                block: 32,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("Q8_0"), "{err}");
}

#[test]
fn value_types_outside_gguf() {
    let mut bytes = one_entry("k", MetaValue::U8(1)).bytes;
    poke_u32(&mut bytes, 24 + 8 + 1, 13);
    let err = error_of(bytes);
    assert!(
        matches!(err, GgufError::BadValueType { type_id: 13, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("metadata key 'k'"), "{err}");

    let mut bytes = one_entry("k", MetaValue::Array(MetaArray::U8(vec![1]))).bytes;
    poke_u32(&mut bytes, 24 + 8 + 1 + 4, 77);
    let err = error_of(bytes);
    assert!(
        matches!(err, GgufError::BadValueType { type_id: 77, .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("an array element of metadata key 'k'"),
        "{err}"
    );
}

#[test]
fn bools_must_be_zero_or_one() {
    // Past the header, the key "k" and the value type.
    let value_at = 24 + 8 + 1 + 4;
    let mut bytes = one_entry("k", MetaValue::Bool(true)).bytes;
    bytes[value_at] = 2;
    let err = error_of(bytes);
    assert!(matches!(err, GgufError::BadBool { byte: 2, .. }), "{err}");
    let mut bytes = one_entry("k", MetaValue::Array(MetaArray::Bool(vec![false, true]))).bytes;
    // Past the array's element type and count, and its first element.
    bytes[value_at + 12 + 1] = 7;
    let err = error_of(bytes);
    assert!(
        err.to_string().contains("element 1 of metadata key 'k'"),
        "{err}"
    );
}

fn nested(levels: usize) -> MetaArray {
    let mut a = MetaArray::U8(vec![5]);
    for _ in 1..levels {
        a = MetaArray::Array(vec![a]);
    }
    a
}

#[test]
fn arrays_nest_up_to_the_limit() {
    let ok = one_entry("deep", MetaValue::Array(nested(MAX_ARRAY_NESTING)));
    let f = ok.open().unwrap();
    assert_eq!(
        f.get("deep"),
        Some(&MetaValue::Array(nested(MAX_ARRAY_NESTING)))
    );
    let err = error_of(one_entry("deep", MetaValue::Array(nested(MAX_ARRAY_NESTING + 1))).bytes);
    assert!(matches!(err, GgufError::NestingTooDeep { .. }), "{err}");
    assert!(err.to_string().contains("'deep'"), "{err}");
    // A crafted chain of a million nested array headers is refused, not followed.
    let mut bytes = one_entry("deep", MetaValue::Array(MetaArray::U8(vec![]))).bytes;
    bytes.truncate(24 + 8 + 4 + 4);
    for _ in 0..1_000_000 {
        put_u32(&mut bytes, 9);
        put_u64(&mut bytes, 1);
    }
    assert!(matches!(error_of(bytes), GgufError::NestingTooDeep { .. }));
}
