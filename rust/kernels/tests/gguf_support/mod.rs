//! Test-only GGUF writer: builds valid files in memory from metadata and tensors, and records
//! where each field landed so tests can corrupt exactly one of them.

#![allow(dead_code)] // each test file uses a different part

use std::sync::Arc;

use hierdraft_kernels::gguf::{MetaArray, MetaValue, StringList};
use hierdraft_kernels::{GgmlType, GgufError, GgufFile};

/// One tensor to write: its data is written as given (the caller sizes it for the type).
#[derive(Clone, Debug)]
pub struct TensorSpec {
    pub name: String,
    pub dims: Vec<u64>,
    pub type_id: u32,
    pub data: Vec<u8>,
}

impl TensorSpec {
    /// A tensor of a supported type with deterministic, fitting data.
    pub fn supported(name: &str, dims: &[u64], ty: GgmlType) -> Self {
        let n: u64 = dims.iter().product();
        let bytes = n / ty.block_len() as u64 * ty.block_bytes() as u64;
        Self::raw(
            name,
            dims,
            ty.id(),
            pattern(bytes as usize, name.len() as u8),
        )
    }

    pub fn raw(name: &str, dims: &[u64], type_id: u32, data: Vec<u8>) -> Self {
        Self {
            name: name.into(),
            dims: dims.to_vec(),
            type_id,
            data,
        }
    }
}

/// `len` bytes of a pattern that differs between seeds.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// A GGUF file to build.
#[derive(Clone, Debug)]
pub struct Builder {
    pub version: u32,
    /// Written as a `general.alignment` u32 entry (first) when set.
    pub alignment: Option<u32>,
    pub metadata: Vec<(String, MetaValue)>,
    pub tensors: Vec<TensorSpec>,
}

/// Where the fields of one tensor table entry are in the built file.
#[derive(Clone, Debug, Default)]
pub struct EntryAt {
    pub name: usize,
    pub n_dims: usize,
    pub dims: usize,
    pub type_id: usize,
    pub offset: usize,
}

/// A built file and where its parts are.
#[derive(Clone, Debug)]
pub struct Built {
    pub bytes: Vec<u8>,
    /// Start of each metadata entry (its key length).
    pub metadata_entries: Vec<usize>,
    pub table: Vec<EntryAt>,
    pub data_start: usize,
    /// Offset of each tensor's data from `data_start`.
    pub offsets: Vec<u64>,
}

impl Built {
    pub fn open(&self) -> Result<GgufFile, GgufError> {
        parse(self.bytes.clone())
    }
}

/// Parses bytes as a file named `test.gguf`.
pub fn parse(bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
    GgufFile::from_shared("test.gguf", Arc::new(bytes))
}

impl Builder {
    pub fn new() -> Self {
        Self {
            version: 3,
            alignment: None,
            metadata: Vec::new(),
            tensors: Vec::new(),
        }
    }

    pub fn kv(mut self, key: &str, value: MetaValue) -> Self {
        self.metadata.push((key.into(), value));
        self
    }

    pub fn tensor(mut self, t: TensorSpec) -> Self {
        self.tensors.push(t);
        self
    }

    pub fn align(&self) -> usize {
        self.alignment.unwrap_or(32) as usize
    }

    pub fn build(&self) -> Built {
        let mut out = Vec::new();
        out.extend_from_slice(b"GGUF");
        put_u32(&mut out, self.version);
        put_u64(&mut out, self.tensors.len() as u64);
        let n_kv = self.metadata.len() + usize::from(self.alignment.is_some());
        put_u64(&mut out, n_kv as u64);
        let mut metadata_entries = Vec::new();
        if let Some(a) = self.alignment {
            metadata_entries.push(out.len());
            put_str(&mut out, "general.alignment");
            put_value(&mut out, &MetaValue::U32(a));
        }
        for (key, value) in &self.metadata {
            metadata_entries.push(out.len());
            put_str(&mut out, key);
            put_value(&mut out, value);
        }
        let align = self.align();
        let mut offsets = Vec::new();
        let mut next = 0usize;
        let mut table = Vec::new();
        for t in &self.tensors {
            let mut at = EntryAt {
                name: out.len(),
                ..EntryAt::default()
            };
            put_str(&mut out, &t.name);
            at.n_dims = out.len();
            put_u32(&mut out, t.dims.len() as u32);
            at.dims = out.len();
            t.dims.iter().for_each(|&d| put_u64(&mut out, d));
            at.type_id = out.len();
            put_u32(&mut out, t.type_id);
            at.offset = out.len();
            put_u64(&mut out, next as u64);
            table.push(at);
            offsets.push(next as u64);
            next = (next + t.data.len()).next_multiple_of(align);
        }
        out.resize(out.len().next_multiple_of(align), 0);
        let data_start = out.len();
        for (t, &off) in self.tensors.iter().zip(&offsets) {
            out.resize(data_start + off as usize, 0);
            out.extend_from_slice(&t.data);
        }
        Built {
            bytes: out,
            metadata_entries,
            table,
            data_start,
            offsets,
        }
    }
}

pub fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u64(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// GGUF's id of a value's type.
fn value_type_id(v: &MetaValue) -> u32 {
    match v {
        MetaValue::U8(_) => 0,
        MetaValue::I8(_) => 1,
        MetaValue::U16(_) => 2,
        MetaValue::I16(_) => 3,
        MetaValue::U32(_) => 4,
        MetaValue::I32(_) => 5,
        MetaValue::F32(_) => 6,
        MetaValue::Bool(_) => 7,
        MetaValue::String(_) => 8,
        MetaValue::Array(_) => 9,
        MetaValue::U64(_) => 10,
        MetaValue::I64(_) => 11,
        MetaValue::F64(_) => 12,
    }
}

fn array_type_id(a: &MetaArray) -> u32 {
    match a {
        MetaArray::U8(_) => 0,
        MetaArray::I8(_) => 1,
        MetaArray::U16(_) => 2,
        MetaArray::I16(_) => 3,
        MetaArray::U32(_) => 4,
        MetaArray::I32(_) => 5,
        MetaArray::F32(_) => 6,
        MetaArray::Bool(_) => 7,
        MetaArray::String(_) => 8,
        MetaArray::Array(_) => 9,
        MetaArray::U64(_) => 10,
        MetaArray::I64(_) => 11,
        MetaArray::F64(_) => 12,
    }
}

/// A value with its type id.
pub fn put_value(out: &mut Vec<u8>, v: &MetaValue) {
    put_u32(out, value_type_id(v));
    match v {
        MetaValue::U8(x) => out.push(*x),
        MetaValue::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::Bool(x) => out.push(u8::from(*x)),
        MetaValue::String(s) => put_str(out, s),
        MetaValue::Array(a) => put_array(out, a),
    }
}

/// An array's element type, count and elements.
pub fn put_array(out: &mut Vec<u8>, a: &MetaArray) {
    put_u32(out, array_type_id(a));
    put_u64(out, a.len() as u64);
    macro_rules! each_le {
        ($v:expr) => {
            $v.iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes()))
        };
    }
    match a {
        MetaArray::U8(v) => out.extend_from_slice(v),
        MetaArray::I8(v) => each_le!(v),
        MetaArray::U16(v) => each_le!(v),
        MetaArray::I16(v) => each_le!(v),
        MetaArray::U32(v) => each_le!(v),
        MetaArray::I32(v) => each_le!(v),
        MetaArray::U64(v) => each_le!(v),
        MetaArray::I64(v) => each_le!(v),
        MetaArray::F32(v) => each_le!(v),
        MetaArray::F64(v) => each_le!(v),
        MetaArray::Bool(v) => v.iter().for_each(|&b| out.push(u8::from(b))),
        MetaArray::String(v) => v.iter().for_each(|s| put_str(out, s)),
        MetaArray::Array(v) => v.iter().for_each(|inner| put_array(out, inner)),
    }
}

/// Metadata with a value of every type, arrays of every element type and a nested array.
pub fn every_metadata_type() -> Vec<(String, MetaValue)> {
    let strings: StringList = ["<pad>", "", "héllo", "▁the", "🦀"].into_iter().collect();
    let values = vec![
        ("general.architecture", MetaValue::String("gemma3".into())),
        ("t.u8", MetaValue::U8(200)),
        ("t.i8", MetaValue::I8(-100)),
        ("t.u16", MetaValue::U16(60000)),
        ("t.i16", MetaValue::I16(-30000)),
        ("t.u32", MetaValue::U32(4_000_000_000)),
        ("t.i32", MetaValue::I32(-2_000_000_000)),
        ("t.u64", MetaValue::U64(u64::MAX)),
        ("t.i64", MetaValue::I64(i64::MIN)),
        ("t.f32", MetaValue::F32(-1.5e-7)),
        ("t.f64", MetaValue::F64(std::f64::consts::PI)),
        ("t.true", MetaValue::Bool(true)),
        ("t.false", MetaValue::Bool(false)),
        ("t.empty_string", MetaValue::String(String::new())),
        ("t.a_u8", MetaValue::Array(MetaArray::U8(vec![0, 1, 255]))),
        ("t.a_i8", MetaValue::Array(MetaArray::I8(vec![-128, 127]))),
        ("t.a_u16", MetaValue::Array(MetaArray::U16(vec![1, 65535]))),
        ("t.a_i16", MetaValue::Array(MetaArray::I16(vec![-1, 2]))),
        ("t.a_u32", MetaValue::Array(MetaArray::U32(vec![7; 5]))),
        ("t.a_i32", MetaValue::Array(MetaArray::I32(vec![-3, 3, 0]))),
        (
            "t.a_u64",
            MetaValue::Array(MetaArray::U64(vec![u64::MAX, 0])),
        ),
        (
            "t.a_i64",
            MetaValue::Array(MetaArray::I64(vec![i64::MIN, 5])),
        ),
        (
            "t.a_f32",
            MetaValue::Array(MetaArray::F32(vec![-1000.0, 0.25])),
        ),
        (
            "t.a_f64",
            MetaValue::Array(MetaArray::F64(vec![1e300, -0.0])),
        ),
        (
            "t.a_bool",
            MetaValue::Array(MetaArray::Bool(vec![true, false, true])),
        ),
        ("t.a_str", MetaValue::Array(MetaArray::String(strings))),
        ("t.a_empty", MetaValue::Array(MetaArray::U32(vec![]))),
        (
            "t.a_nested",
            MetaValue::Array(MetaArray::Array(vec![
                MetaArray::I32(vec![1, 2]),
                MetaArray::String(["x", "yz"].into_iter().collect()),
                MetaArray::Array(vec![MetaArray::Bool(vec![false])]),
            ])),
        ),
    ];
    values
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

/// Tensors of every supported type (and shapes 1-D to 3-D), then an unsupported and an unknown
/// type.
pub fn sample_tensors() -> Vec<TensorSpec> {
    vec![
        TensorSpec::supported("output_norm.weight", &[5], GgmlType::F32),
        TensorSpec::supported("token_embd.weight", &[64, 3], GgmlType::Q8_0),
        TensorSpec::supported("blk.0.attn_q.weight", &[32, 2], GgmlType::Q4_0),
        TensorSpec::supported("blk.0.attn_k.weight", &[64, 1], GgmlType::Q5_0),
        TensorSpec::supported("blk.0.ffn_up.weight", &[256, 2], GgmlType::Q4K),
        TensorSpec::supported("blk.0.ffn_gate.weight", &[256, 1], GgmlType::Q5K),
        TensorSpec::supported("blk.0.ffn_down.weight", &[512, 2], GgmlType::Q6K),
        TensorSpec::supported("blk.0.f16", &[3, 2], GgmlType::F16),
        TensorSpec::supported("blk.0.bf16", &[4], GgmlType::BF16),
        TensorSpec::supported("blk.0.cube", &[2, 2, 2], GgmlType::F32),
        TensorSpec::raw("blk.0.q4_1", &[32, 2], 3, pattern(40, 9)),
        TensorSpec::raw("blk.0.mystery", &[8], 999, pattern(8, 1)),
    ]
}

/// A valid file with every metadata type and the sample tensors.
pub fn full_file() -> Builder {
    let mut b = Builder::new();
    b.metadata = every_metadata_type();
    b.tensors = sample_tensors();
    b
}
