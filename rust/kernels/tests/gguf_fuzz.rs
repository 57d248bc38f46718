//! Mutation test of the GGUF reader: valid files of several kinds, each mutated 10,000 times
//! (bit flips, byte and field overwrites with boundary values, truncations, splices, insertions,
//! deletions, random headers). Opening never panics: it fails, or gives a file whose every
//! tensor access fails or returns data that lies inside the file, sized as the table says.

mod gguf_support;

use std::sync::Arc;

use gguf_support::{full_file, pattern, Builder, Built, TensorSpec};
use hierdraft_kernels::gguf::{MetaArray, MetaValue, StringList};
use hierdraft_kernels::{GgmlType, GgufFile};
use proptest::prelude::*;
use proptest::sample::Index;

const CASES: u32 = 10_000;

/// Values that sit on the boundaries the parser checks: counts, lengths, type ids, dims and
/// offsets that are zero, one off, at the alignment, or at the integer limits.
const BOUNDARY: [u64; 16] = [
    0,
    1,
    2,
    3,
    4,
    9,
    12,
    13,
    31,
    32,
    33,
    255,
    u32::MAX as u64,
    1 << 32,
    1 << 63,
    u64::MAX,
];

#[derive(Clone, Debug)]
enum Mutation {
    FlipBit(Index, u8),
    Overwrite(Index, Vec<u8>),
    /// Writes a boundary value (as 4 or 8 bytes) at the start of a known field.
    Field(Index, usize, bool),
    Truncate(Index),
    /// Copies `len` bytes from one place over another.
    Splice(Index, Index, usize),
    Insert(Index, Vec<u8>),
    Delete(Index, usize),
    /// Replaces the 24-byte header (keeping the magic, or not).
    Header([u8; 24], bool),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        2 => (any::<Index>(), prop::collection::vec(any::<u8>(), 1..9))
            .prop_map(|(i, v)| Mutation::Overwrite(i, v)),
        4 => (any::<Index>(), 0..BOUNDARY.len(), any::<bool>())
            .prop_map(|(i, v, wide)| Mutation::Field(i, v, wide)),
        2 => any::<Index>().prop_map(Mutation::Truncate),
        1 => (any::<Index>(), any::<Index>(), 1usize..64)
            .prop_map(|(a, b, n)| Mutation::Splice(a, b, n)),
        1 => (any::<Index>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
        1 => (any::<Index>(), 1usize..32).prop_map(|(i, n)| Mutation::Delete(i, n)),
        1 => (any::<[u8; 24]>(), any::<bool>()).prop_map(|(h, keep)| Mutation::Header(h, keep)),
    ]
}

/// Where the fields that counts, lengths, types, dims and offsets live in a built file.
fn field_starts(built: &Built) -> Vec<usize> {
    let mut at = vec![4, 8, 16];
    at.extend(&built.metadata_entries);
    for e in &built.table {
        at.extend([e.name, e.n_dims, e.dims, e.type_id, e.offset]);
    }
    at
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation, fields: &[usize]) {
    let len = bytes.len();
    match m {
        Mutation::FlipBit(i, bit) if len > 0 => bytes[i.index(len)] ^= 1 << bit,
        Mutation::Overwrite(i, v) if len > 0 => {
            let at = i.index(len);
            let n = v.len().min(len - at);
            bytes[at..at + n].copy_from_slice(&v[..n]);
        }
        Mutation::Field(i, v, wide) => {
            let at = fields[i.index(fields.len())];
            let value = BOUNDARY[*v].to_le_bytes();
            let n = if *wide { 8 } else { 4 };
            if at + n <= len {
                bytes[at..at + n].copy_from_slice(&value[..n]);
            }
        }
        Mutation::Truncate(i) => bytes.truncate(i.index(len + 1)),
        Mutation::Splice(a, b, n) if len > 0 => {
            let (src, dst) = (a.index(len), b.index(len));
            let n = (*n).min(len - src).min(len - dst);
            bytes.copy_within(src..src + n, dst);
        }
        Mutation::Insert(i, v) => {
            let at = i.index(len + 1);
            bytes.splice(at..at, v.iter().copied());
        }
        Mutation::Delete(i, n) if len > 0 => {
            let at = i.index(len);
            bytes.drain(at..(at + n).min(len));
        }
        Mutation::Header(h, keep_magic) => {
            let n = len.min(24);
            bytes[..n].copy_from_slice(&h[..n]);
            if *keep_magic && n >= 4 {
                bytes[..4].copy_from_slice(b"GGUF");
            }
        }
        _ => {}
    }
}

/// True when `inner` lies within `outer` in memory.
fn inside(inner: &[u8], outer: &[u8]) -> bool {
    let (o, i) = (outer.as_ptr() as usize, inner.as_ptr() as usize);
    inner.is_empty() || (i >= o && i + inner.len() <= o + outer.len())
}

/// Opens `bytes` and uses everything the file hands out, checking it stays inside the file.
fn exercise(bytes: Vec<u8>) -> Result<(), TestCaseError> {
    let shared = Arc::new(bytes);
    let Ok(f) = GgufFile::from_shared("fuzz.gguf", shared.clone()) else {
        return Ok(());
    };
    let all: &[u8] = &shared;
    prop_assert_eq!(f.file_len(), all.len() as u64);
    prop_assert!(f.alignment().is_power_of_two());
    prop_assert!(f.data_start() % f.alignment() == 0);
    for (key, value) in f.metadata() {
        // The very entry (values may be NaN, which compare unequal).
        prop_assert!(f.get(key).is_some_and(|v| std::ptr::eq(v, value)));
    }
    for info in f.tensors() {
        let name = info.name();
        prop_assert_eq!(f.tensor(name), Some(info));
        prop_assert!(info.offset() % f.alignment() == 0);
        if let Ok(data) = f.tensor_bytes(name) {
            prop_assert!(inside(data, all), "tensor '{}' outside the file", name);
            prop_assert_eq!(Some(data.len() as u64), info.nbytes());
        }
        if let Ok(m) = f.matrix(name) {
            prop_assert!(inside(m.data(), all), "matrix '{}' outside the file", name);
            prop_assert_eq!(Some(m.data().len() as u64), info.nbytes());
            prop_assert_eq!((m.rows() * m.cols()) as u64, info.n_elements());
        }
        if let Ok(values) = f.tensor_f32(name) {
            prop_assert_eq!(values.len() as u64, info.n_elements());
        }
    }
    Ok(())
}

/// A vocabulary-like file: a few hundred token strings, their scores and types, and a head.
fn tokenizer_file() -> Builder {
    let tokens: StringList = (0..300)
        .map(|i| format!("tok{i}▁"))
        .collect::<Vec<_>>()
        .iter()
        .map(String::as_str)
        .collect();
    Builder::new()
        .kv("general.architecture", MetaValue::String("gemma3".into()))
        .kv(
            "tokenizer.ggml.tokens",
            MetaValue::Array(MetaArray::String(tokens)),
        )
        .kv(
            "tokenizer.ggml.scores",
            MetaValue::Array(MetaArray::F32((0..300).map(|i| i as f32).collect())),
        )
        .kv(
            "tokenizer.ggml.token_type",
            MetaValue::Array(MetaArray::I32(vec![1; 300])),
        )
        .tensor(TensorSpec::supported(
            "token_embd.weight",
            &[64, 4],
            GgmlType::Q8_0,
        ))
        .tensor(TensorSpec::supported(
            "output_norm.weight",
            &[64],
            GgmlType::F32,
        ))
}

/// Version 2, alignment 64, one tensor of each family.
fn aligned_v2_file() -> Builder {
    let mut b = Builder::new()
        .kv("general.name", MetaValue::String("x".into()))
        .tensor(TensorSpec::supported("a", &[256, 2], GgmlType::Q4K))
        .tensor(TensorSpec::supported("b", &[8, 2], GgmlType::BF16))
        .tensor(TensorSpec::raw("c", &[32], 7, pattern(24, 3)));
    b.version = 2;
    b.alignment = Some(64);
    b
}

/// No metadata, one tensor.
fn minimal_file() -> Builder {
    Builder::new().tensor(TensorSpec::supported("w", &[32, 2], GgmlType::Q5_0))
}

fn mutated(base: &Built, mutations: &[Mutation]) -> Vec<u8> {
    let fields = field_starts(base);
    let mut bytes = base.bytes.clone();
    for m in mutations {
        apply(&mut bytes, m, &fields);
    }
    bytes
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

macro_rules! fuzz_kind {
    ($test:ident, $builder:expr) => {
        proptest! {
            #![proptest_config(config())]
            #[test]
            fn $test(mutations in prop::collection::vec(mutation(), 1..5)) {
                let base = $builder.build();
                exercise(mutated(&base, &mutations))?;
            }
        }
    };
}

fuzz_kind!(mutated_full_files_never_panic, full_file());
fuzz_kind!(mutated_tokenizer_files_never_panic, tokenizer_file());
fuzz_kind!(mutated_aligned_v2_files_never_panic, aligned_v2_file());
fuzz_kind!(mutated_minimal_files_never_panic, minimal_file());

#[test]
fn the_unmutated_files_open_and_hand_out_every_supported_tensor() {
    for b in [
        full_file(),
        tokenizer_file(),
        aligned_v2_file(),
        minimal_file(),
    ] {
        let built = b.build();
        let f = built.open().unwrap();
        for (spec, info) in b.tensors.iter().zip(f.tensors()) {
            if GgmlType::from_id(spec.type_id).is_ok() {
                assert_eq!(f.tensor_bytes(info.name()).unwrap(), &spec.data[..]);
            }
        }
        exercise(built.bytes).unwrap();
    }
}
