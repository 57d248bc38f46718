//! GGUF metadata: the value types ([`MetaType`]), values ([`MetaValue`], [`MetaArray`],
//! [`StringList`]) and the parser of the key/value section.
//!
//! An entry is a string key, a `u32` value type and the value. Scalars are little-endian; a
//! string is a `u64` byte length and UTF-8 bytes; an array is an element type, a `u64` count and
//! the elements (for arrays of arrays, each element carries its own type and count). Arrays are
//! kept typed (a 262144-entry score array is one `Vec<f32>`), and string arrays keep all their
//! text in one buffer, so a tokenizer vocabulary costs two allocations, not one per token.

use super::error::GgufError;
use super::reader::Reader;

/// How deep arrays of arrays may nest. Real files nest at most once; the limit keeps a crafted
/// file from exhausting the stack.
pub const MAX_ARRAY_NESTING: usize = 8;

/// A GGUF metadata value type; the discriminant is the id the file stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum MetaType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl MetaType {
    /// The type with this id, if GGUF defines one.
    pub fn from_id(id: u32) -> Option<MetaType> {
        use MetaType::*;
        [
            U8, I8, U16, I16, U32, I32, F32, Bool, String, Array, U64, I64, F64,
        ]
        .get(usize::try_from(id).ok()?)
        .copied()
    }

    /// GGUF's name of the type.
    pub fn name(self) -> &'static str {
        match self {
            MetaType::U8 => "uint8",
            MetaType::I8 => "int8",
            MetaType::U16 => "uint16",
            MetaType::I16 => "int16",
            MetaType::U32 => "uint32",
            MetaType::I32 => "int32",
            MetaType::F32 => "float32",
            MetaType::Bool => "bool",
            MetaType::String => "string",
            MetaType::Array => "array",
            MetaType::U64 => "uint64",
            MetaType::I64 => "int64",
            MetaType::F64 => "float64",
        }
    }

    /// The fewest bytes one value of this type takes in a file: its size for fixed-size types,
    /// the length field of a string, the type and count fields of an array.
    pub fn min_bytes(self) -> u64 {
        match self {
            MetaType::U8 | MetaType::I8 | MetaType::Bool => 1,
            MetaType::U16 | MetaType::I16 => 2,
            MetaType::U32 | MetaType::I32 | MetaType::F32 => 4,
            MetaType::U64 | MetaType::I64 | MetaType::F64 | MetaType::String => 8,
            MetaType::Array => 12,
        }
    }
}

/// A list of strings kept in one text buffer (a tokenizer vocabulary).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StringList {
    text: String,
    /// End of string `i` in `text`; string `i` starts where `i - 1` ends.
    ends: Vec<usize>,
}

impl StringList {
    fn with_capacity(strings: usize) -> Self {
        Self {
            text: String::new(),
            ends: Vec::with_capacity(strings),
        }
    }

    pub fn push(&mut self, s: &str) {
        self.text.push_str(s);
        self.ends.push(self.text.len());
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// String `i`, if there is one.
    pub fn get(&self, i: usize) -> Option<&str> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        self.text.get(start..end)
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        (0..self.len()).map(|i| self.get(i).unwrap_or_default())
    }
}

impl<'a> FromIterator<&'a str> for StringList {
    fn from_iter<I: IntoIterator<Item = &'a str>>(iter: I) -> Self {
        let mut list = StringList::default();
        iter.into_iter().for_each(|s| list.push(s));
        list
    }
}

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(MetaArray),
}

/// A metadata array: all elements of one type.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaArray {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bool(Vec<bool>),
    String(StringList),
    Array(Vec<MetaArray>),
}

impl MetaValue {
    pub fn value_type(&self) -> MetaType {
        match self {
            MetaValue::U8(_) => MetaType::U8,
            MetaValue::I8(_) => MetaType::I8,
            MetaValue::U16(_) => MetaType::U16,
            MetaValue::I16(_) => MetaType::I16,
            MetaValue::U32(_) => MetaType::U32,
            MetaValue::I32(_) => MetaType::I32,
            MetaValue::U64(_) => MetaType::U64,
            MetaValue::I64(_) => MetaType::I64,
            MetaValue::F32(_) => MetaType::F32,
            MetaValue::F64(_) => MetaType::F64,
            MetaValue::Bool(_) => MetaType::Bool,
            MetaValue::String(_) => MetaType::String,
            MetaValue::Array(_) => MetaType::Array,
        }
    }

    /// The value of an integer of any width, when it is non-negative.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::U8(v) => Some(v.into()),
            MetaValue::U16(v) => Some(v.into()),
            MetaValue::U32(v) => Some(v.into()),
            MetaValue::U64(v) => Some(v),
            _ => self.as_i64().and_then(|v| u64::try_from(v).ok()),
        }
    }

    /// The value of an integer of any width, when it fits in an `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            MetaValue::I8(v) => Some(v.into()),
            MetaValue::I16(v) => Some(v.into()),
            MetaValue::I32(v) => Some(v.into()),
            MetaValue::I64(v) => Some(v),
            MetaValue::U8(v) => Some(v.into()),
            MetaValue::U16(v) => Some(v.into()),
            MetaValue::U32(v) => Some(v.into()),
            MetaValue::U64(v) => i64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value of a float (f32 values widen exactly).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => Some(v.into()),
            MetaValue::F64(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetaValue::Bool(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&MetaArray> {
        match self {
            MetaValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

impl MetaArray {
    /// The type of the elements.
    pub fn element_type(&self) -> MetaType {
        match self {
            MetaArray::U8(_) => MetaType::U8,
            MetaArray::I8(_) => MetaType::I8,
            MetaArray::U16(_) => MetaType::U16,
            MetaArray::I16(_) => MetaType::I16,
            MetaArray::U32(_) => MetaType::U32,
            MetaArray::I32(_) => MetaType::I32,
            MetaArray::U64(_) => MetaType::U64,
            MetaArray::I64(_) => MetaType::I64,
            MetaArray::F32(_) => MetaType::F32,
            MetaArray::F64(_) => MetaType::F64,
            MetaArray::Bool(_) => MetaType::Bool,
            MetaArray::String(_) => MetaType::String,
            MetaArray::Array(_) => MetaType::Array,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            MetaArray::U8(v) => v.len(),
            MetaArray::I8(v) => v.len(),
            MetaArray::U16(v) => v.len(),
            MetaArray::I16(v) => v.len(),
            MetaArray::U32(v) => v.len(),
            MetaArray::I32(v) => v.len(),
            MetaArray::U64(v) => v.len(),
            MetaArray::I64(v) => v.len(),
            MetaArray::F32(v) => v.len(),
            MetaArray::F64(v) => v.len(),
            MetaArray::Bool(v) => v.len(),
            MetaArray::String(v) => v.len(),
            MetaArray::Array(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Decodes `N`-byte little-endian values.
fn decode<const N: usize, T>(bytes: &[u8], from_le: fn([u8; N]) -> T) -> Vec<T> {
    bytes
        .chunks_exact(N)
        .map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            from_le(a)
        })
        .collect()
}

/// Reads the metadata section: `count` entries, in file order. Duplicate keys are checked by
/// the caller, which indexes them.
pub(crate) fn read_metadata(
    r: &mut Reader<'_>,
    count: u64,
) -> Result<Vec<(String, MetaValue)>, GgufError> {
    // A key length, a value type and a one-byte value at the least.
    let min_entry = 8 + 4 + 1;
    let n = r.check_count(count, min_entry, || "the metadata entry count".into())?;
    let mut entries = Vec::with_capacity(n);
    for i in 0..n {
        let key = r
            .string(|| format!("the key of metadata entry {i}"))?
            .to_owned();
        let type_id = r.u32(|| format!("the value type of metadata key '{key}'"))?;
        let ty = value_type(r, type_id, || format!("metadata key '{key}'"))?;
        let value = read_value(r, ty, &key)?;
        entries.push((key, value));
    }
    Ok(entries)
}

fn value_type(
    r: &Reader<'_>,
    type_id: u32,
    what: impl FnOnce() -> String,
) -> Result<MetaType, GgufError> {
    MetaType::from_id(type_id).ok_or_else(|| GgufError::BadValueType {
        path: r.path().to_path_buf(),
        what: what(),
        type_id,
    })
}

fn bad_bool(r: &Reader<'_>, what: String, byte: u8) -> GgufError {
    GgufError::BadBool {
        path: r.path().to_path_buf(),
        what,
        byte,
    }
}

fn read_value(r: &mut Reader<'_>, ty: MetaType, key: &str) -> Result<MetaValue, GgufError> {
    let what = || format!("the value of metadata key '{key}'");
    Ok(match ty {
        MetaType::U8 => MetaValue::U8(r.u8(what)?),
        MetaType::I8 => MetaValue::I8(i8::from_le_bytes(r.array(what)?)),
        MetaType::U16 => MetaValue::U16(u16::from_le_bytes(r.array(what)?)),
        MetaType::I16 => MetaValue::I16(i16::from_le_bytes(r.array(what)?)),
        MetaType::U32 => MetaValue::U32(u32::from_le_bytes(r.array(what)?)),
        MetaType::I32 => MetaValue::I32(i32::from_le_bytes(r.array(what)?)),
        MetaType::U64 => MetaValue::U64(u64::from_le_bytes(r.array(what)?)),
        MetaType::I64 => MetaValue::I64(i64::from_le_bytes(r.array(what)?)),
        MetaType::F32 => MetaValue::F32(f32::from_le_bytes(r.array(what)?)),
        MetaType::F64 => MetaValue::F64(f64::from_le_bytes(r.array(what)?)),
        MetaType::Bool => match r.u8(what)? {
            b @ (0 | 1) => MetaValue::Bool(b == 1),
            b => return Err(bad_bool(r, what(), b)),
        },
        MetaType::String => MetaValue::String(r.string(what)?.to_owned()),
        MetaType::Array => MetaValue::Array(read_array(r, key, 1)?),
    })
}

/// Reads an array (its element type, count and elements) at nesting level `depth` (1 for an
/// array that is itself the value).
fn read_array(r: &mut Reader<'_>, key: &str, depth: usize) -> Result<MetaArray, GgufError> {
    if depth > MAX_ARRAY_NESTING {
        return Err(GgufError::NestingTooDeep {
            path: r.path().to_path_buf(),
            key: key.to_owned(),
            limit: MAX_ARRAY_NESTING,
        });
    }
    let header = || format!("the array header of metadata key '{key}'");
    let type_id = r.u32(header)?;
    let ty = value_type(r, type_id, || {
        format!("an array element of metadata key '{key}'")
    })?;
    let count = r.u64(header)?;
    let what = || format!("the {} elements of metadata key '{key}'", ty.name());
    let n = r.check_count(count, ty.min_bytes(), what)?;
    // `n * min_bytes` fits in the file, checked just above.
    let fixed = match ty {
        MetaType::String | MetaType::Array => &[][..],
        _ => r.take(n as u64 * ty.min_bytes(), what)?,
    };
    Ok(match ty {
        MetaType::U8 => MetaArray::U8(fixed.to_vec()),
        MetaType::I8 => MetaArray::I8(decode(fixed, i8::from_le_bytes)),
        MetaType::U16 => MetaArray::U16(decode(fixed, u16::from_le_bytes)),
        MetaType::I16 => MetaArray::I16(decode(fixed, i16::from_le_bytes)),
        MetaType::U32 => MetaArray::U32(decode(fixed, u32::from_le_bytes)),
        MetaType::I32 => MetaArray::I32(decode(fixed, i32::from_le_bytes)),
        MetaType::U64 => MetaArray::U64(decode(fixed, u64::from_le_bytes)),
        MetaType::I64 => MetaArray::I64(decode(fixed, i64::from_le_bytes)),
        MetaType::F32 => MetaArray::F32(decode(fixed, f32::from_le_bytes)),
        MetaType::F64 => MetaArray::F64(decode(fixed, f64::from_le_bytes)),
        MetaType::Bool => {
            if let Some((i, &b)) = fixed.iter().enumerate().find(|(_, &b)| b > 1) {
                return Err(bad_bool(
                    r,
                    format!("element {i} of metadata key '{key}'"),
                    b,
                ));
            }
            MetaArray::Bool(fixed.iter().map(|&b| b == 1).collect())
        }
        MetaType::String => {
            let mut list = StringList::with_capacity(n);
            for i in 0..n {
                list.push(r.string(|| format!("string {i} of metadata key '{key}'"))?);
            }
            MetaArray::String(list)
        }
        MetaType::Array => {
            let mut arrays = Vec::with_capacity(n);
            for _ in 0..n {
                arrays.push(read_array(r, key, depth + 1)?);
            }
            MetaArray::Array(arrays)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_ids_round_trip() {
        for id in 0..=12 {
            assert_eq!(MetaType::from_id(id).map(|t| t as u32), Some(id));
        }
        assert_eq!(MetaType::from_id(13), None);
        assert_eq!(MetaType::from_id(u32::MAX), None);
    }

    #[test]
    fn string_list_keeps_each_string() {
        let list: StringList = ["a", "", "héllo", "<eos>"].into_iter().collect();
        assert_eq!(list.len(), 4);
        assert_eq!(list.get(1), Some(""));
        assert_eq!(list.get(2), Some("héllo"));
        assert_eq!(list.get(4), None);
        assert_eq!(
            list.iter().collect::<Vec<_>>(),
            vec!["a", "", "héllo", "<eos>"]
        );
    }

    #[test]
    fn integer_accessors_widen_and_refuse_what_does_not_fit() {
        assert_eq!(MetaValue::U8(7).as_u64(), Some(7));
        assert_eq!(MetaValue::I32(-1).as_u64(), None);
        assert_eq!(MetaValue::I32(-1).as_i64(), Some(-1));
        assert_eq!(MetaValue::U64(u64::MAX).as_i64(), None);
        assert_eq!(MetaValue::U64(u64::MAX).as_u64(), Some(u64::MAX));
        assert_eq!(MetaValue::F32(0.5).as_f64(), Some(0.5));
        assert_eq!(MetaValue::String("x".into()).as_u64(), None);
    }
}
