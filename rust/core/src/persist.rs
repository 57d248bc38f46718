//! The one binary file format shared by the persistent stores (model store, corpus index):
//! a checksummed header, a few `u64` parameters, a free-form metadata string and a list of `u32`
//! arrays ("sections"), written atomically and loaded zero-copy through a memory map.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! 0   magic        [u8; 8]   one per store kind
//! 8   version      u32       format version of that kind
//! 12  flags        u32       bit 0: vocab_size is present
//! 16  vocab_size   u32
//! 20  num_params   u32
//! 24  num_sections u32
//! 28  metadata_len u32       bytes of UTF-8
//! 32  total_len    u64       length of the whole file
//! 40  payload_crc  u32       CRC32 of bytes [64, total_len)
//! 44  header_crc   u32       CRC32 of bytes [0, 44)
//! 48  reserved     [u8; 16]  zero (a loader refuses anything else)
//! 64  params       [u64; num_params]
//!     section_lens [u64; num_sections]   element counts
//!     metadata     [u8; metadata_len], zero-padded to a multiple of 8
//!     sections     each [u32; len], zero-padded to a multiple of 8 bytes
//! ```
//!
//! One table of [`Field`]s (`MAGIC` .. `RESERVED`) is this layout in code: the writer
//! ([`Header::encode`]) and the loader ([`Header::decode`]) both go through it.
//!
//! The reserved bytes are not covered by the header checksum (files written before they were
//! checked have the same checksum), so the loader requires them to be zero instead: a flip there
//! is refused as corruption, and a later format that uses them must raise the version.
//!
//! Every section starts 8-byte aligned, so on little-endian machines it is used in place from the
//! mapping ([`U32Array`]). Files are written to `<path>.tmp-<pid>-<n>` in the same directory,
//! fsynced and renamed over `path`, so a crash never leaves a partial file under `path`.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use memmap2::Mmap;

use crate::error::{Error, Result};

/// Size of the fixed header in bytes.
pub const HEADER_LEN: usize = 64;
const FLAG_HAS_VOCAB: u32 = 1;

/// One fixed-width, little-endian field of the header: `len` bytes at byte `at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Field {
    at: usize,
    len: usize,
}

impl Field {
    /// The field of `len` bytes right after `self`.
    const fn then(self, len: usize) -> Field {
        Field {
            at: self.at + self.len,
            len,
        }
    }

    const fn end(self) -> usize {
        self.at + self.len
    }

    fn bytes(self, header: &[u8; HEADER_LEN]) -> &[u8] {
        &header[self.at..self.end()]
    }

    fn put(self, header: &mut [u8; HEADER_LEN], value: &[u8]) {
        header[self.at..self.end()].copy_from_slice(value);
    }

    fn u32(self, header: &[u8; HEADER_LEN]) -> u32 {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.bytes(header));
        u32::from_le_bytes(b)
    }

    fn u64(self, header: &[u8; HEADER_LEN]) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.bytes(header));
        u64::from_le_bytes(b)
    }
}

// The header layout, in file order: each field starts where the previous one ends.
const MAGIC: Field = Field { at: 0, len: 8 };
const VERSION: Field = MAGIC.then(4);
const FLAGS: Field = VERSION.then(4);
const VOCAB_SIZE: Field = FLAGS.then(4);
const NUM_PARAMS: Field = VOCAB_SIZE.then(4);
const NUM_SECTIONS: Field = NUM_PARAMS.then(4);
const METADATA_LEN: Field = NUM_SECTIONS.then(4);
const TOTAL_LEN: Field = METADATA_LEN.then(8);
const PAYLOAD_CRC: Field = TOTAL_LEN.then(4);
/// Covers every byte before it.
const HEADER_CRC: Field = PAYLOAD_CRC.then(4);
const RESERVED: Field = HEADER_CRC.then(16);
const _: () = assert!(RESERVED.end() == HEADER_LEN);

/// The fixed header, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Header {
    magic: [u8; 8],
    version: u32,
    flags: u32,
    vocab_size: u32,
    num_params: u32,
    num_sections: u32,
    metadata_len: u32,
    total_len: u64,
    payload_crc: u32,
}

impl Header {
    /// The header's bytes: the fields, their checksum, zero reserved bytes.
    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        MAGIC.put(&mut h, &self.magic);
        VERSION.put(&mut h, &self.version.to_le_bytes());
        FLAGS.put(&mut h, &self.flags.to_le_bytes());
        VOCAB_SIZE.put(&mut h, &self.vocab_size.to_le_bytes());
        NUM_PARAMS.put(&mut h, &self.num_params.to_le_bytes());
        NUM_SECTIONS.put(&mut h, &self.num_sections.to_le_bytes());
        METADATA_LEN.put(&mut h, &self.metadata_len.to_le_bytes());
        TOTAL_LEN.put(&mut h, &self.total_len.to_le_bytes());
        PAYLOAD_CRC.put(&mut h, &self.payload_crc.to_le_bytes());
        let crc = checksum(&h);
        HEADER_CRC.put(&mut h, &crc.to_le_bytes());
        h
    }

    fn decode(h: &[u8; HEADER_LEN]) -> Header {
        let mut magic = [0u8; 8];
        magic.copy_from_slice(MAGIC.bytes(h));
        Header {
            magic,
            version: VERSION.u32(h),
            flags: FLAGS.u32(h),
            vocab_size: VOCAB_SIZE.u32(h),
            num_params: NUM_PARAMS.u32(h),
            num_sections: NUM_SECTIONS.u32(h),
            metadata_len: METADATA_LEN.u32(h),
            total_len: TOTAL_LEN.u64(h),
            payload_crc: PAYLOAD_CRC.u32(h),
        }
    }
}

/// The checksum that header bytes `h` must carry in [`HEADER_CRC`]: of every byte before it.
fn checksum(h: &[u8; HEADER_LEN]) -> u32 {
    crc32fast::hash(&h[..HEADER_CRC.at])
}

/// Identifies one kind of file: its magic bytes, current version and a human-readable name.
#[derive(Clone, Copy, Debug)]
pub struct FileKind {
    pub magic: [u8; 8],
    pub version: u32,
    pub name: &'static str,
}

/// A read-only `u32` array that is either owned or borrowed from a memory-mapped file.
#[derive(Clone, Debug)]
pub struct U32Array(Repr);

#[derive(Clone, Debug)]
enum Repr {
    Owned(Vec<u32>),
    Mapped {
        map: Arc<Mmap>,
        offset: usize,
        len: usize,
    },
}

impl U32Array {
    /// The elements.
    pub fn as_slice(&self) -> &[u32] {
        match &self.0 {
            Repr::Owned(v) => v,
            Repr::Mapped { map, offset, len } => {
                let bytes = &map[*offset..*offset + *len * 4];
                // SAFETY: `mapped` only creates this variant for little-endian targets after
                // checking that the byte range lies inside the map and starts 4-byte aligned;
                // every bit pattern is a valid u32, and the map lives as long as `self`.
                unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<u32>(), *len) }
            }
        }
    }

    /// True when the data lives in a memory-mapped file.
    pub fn is_mapped(&self) -> bool {
        matches!(self.0, Repr::Mapped { .. })
    }

    /// Views `len` u32s at byte `offset` of `map` in place when possible, else copies them.
    fn mapped(map: &Arc<Mmap>, offset: usize, len: usize) -> Option<Self> {
        let end = len.checked_mul(4)?.checked_add(offset)?;
        let bytes = map.get(offset..end)?;
        let aligned = bytes.as_ptr().cast::<u32>().is_aligned();
        if cfg!(target_endian = "little") && aligned {
            return Some(U32Array(Repr::Mapped {
                map: Arc::clone(map),
                offset,
                len,
            }));
        }
        let owned = bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Some(U32Array(Repr::Owned(owned)))
    }
}

impl From<Vec<u32>> for U32Array {
    fn from(v: Vec<u32>) -> Self {
        U32Array(Repr::Owned(v))
    }
}

impl Default for U32Array {
    fn default() -> Self {
        Vec::new().into()
    }
}

impl Deref for U32Array {
    type Target = [u32];
    fn deref(&self) -> &[u32] {
        self.as_slice()
    }
}

/// The content of one store file, as handed to [`write_file`].
#[derive(Clone, Copy, Debug)]
pub struct FileContent<'a> {
    pub vocab_size: Option<u32>,
    pub params: &'a [u64],
    pub metadata: &'a str,
    pub sections: &'a [&'a [u32]],
}

/// A validated, loaded store file.
#[derive(Debug)]
pub struct LoadedFile {
    pub path: PathBuf,
    pub vocab_size: Option<u32>,
    pub params: Vec<u64>,
    pub metadata: String,
    pub sections: Vec<U32Array>,
}

impl LoadedFile {
    /// An error saying the (checksum-valid) content of this file is inconsistent.
    pub fn corrupt(&self, reason: impl Into<String>) -> Error {
        Error::Corrupt {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }
}

fn pad8(n: u64) -> u64 {
    (8 - n % 8) % 8
}

/// Writes bytes to the file while feeding the payload checksum.
struct PayloadWriter<W: Write> {
    out: W,
    crc: crc32fast::Hasher,
    written: u64,
}

impl<W: Write> PayloadWriter<W> {
    fn bytes(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.crc.update(b);
        self.written += b.len() as u64;
        self.out.write_all(b)
    }

    fn pad(&mut self) -> std::io::Result<()> {
        let zeros = [0u8; 8];
        self.bytes(&zeros[..pad8(self.written) as usize])
    }

    fn u64s(&mut self, values: &[u64]) -> std::io::Result<()> {
        values.iter().try_for_each(|v| self.bytes(&v.to_le_bytes()))
    }

    fn u32s(&mut self, values: &[u32]) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(64 * 1024);
        for chunk in values.chunks(16 * 1024) {
            buf.clear();
            buf.extend(chunk.iter().flat_map(|v| v.to_le_bytes()));
            self.bytes(&buf)?;
        }
        Ok(())
    }
}

fn encode_header(
    kind: &FileKind,
    content: &FileContent<'_>,
    total: u64,
    crc: u32,
) -> [u8; HEADER_LEN] {
    let flags = if content.vocab_size.is_some() {
        FLAG_HAS_VOCAB
    } else {
        0
    };
    // write_file checked that the counts fit in u32.
    Header {
        magic: kind.magic,
        version: kind.version,
        flags,
        vocab_size: content.vocab_size.unwrap_or(0),
        num_params: content.params.len() as u32,
        num_sections: content.sections.len() as u32,
        metadata_len: content.metadata.len() as u32,
        total_len: total,
        payload_crc: crc,
    }
    .encode()
}

fn temp_path(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}-{n}", std::process::id()));
    path.with_file_name(name)
}

/// Writes `content` to `path` atomically: to a temporary file in the same directory, fsynced,
/// then renamed over `path`.
pub fn write_file(path: &Path, kind: &FileKind, content: &FileContent<'_>) -> Result<()> {
    if path.file_name().is_none() {
        return Err(Error::InvalidArgument(format!(
            "{} is not a file path",
            path.display()
        )));
    }
    let too_big = |what: &str| Error::InvalidArgument(format!("{what} too large for the format"));
    u32::try_from(content.metadata.len()).map_err(|_| too_big("metadata"))?;
    u32::try_from(content.sections.len()).map_err(|_| too_big("section list"))?;
    u32::try_from(content.params.len()).map_err(|_| too_big("parameter list"))?;
    let tmp = temp_path(path);
    let result = write_to(&tmp, kind, content).and_then(|()| {
        fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
        sync_parent_dir(path);
        Ok(())
    });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn write_to(tmp: &Path, kind: &FileKind, content: &FileContent<'_>) -> Result<()> {
    let io = |e| Error::io(tmp, e);
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(tmp)
        .map_err(io)?;
    let mut w = PayloadWriter {
        out: BufWriter::with_capacity(1 << 20, file),
        crc: crc32fast::Hasher::new(),
        written: 0,
    };
    // Placeholder header, rewritten once the checksum is known.
    w.out.write_all(&[0u8; HEADER_LEN]).map_err(io)?;
    w.u64s(content.params).map_err(io)?;
    let lens: Vec<u64> = content.sections.iter().map(|s| s.len() as u64).collect();
    w.u64s(&lens).map_err(io)?;
    w.bytes(content.metadata.as_bytes()).map_err(io)?;
    w.pad().map_err(io)?;
    for section in content.sections {
        w.u32s(section).map_err(io)?;
        w.pad().map_err(io)?;
    }
    let total = HEADER_LEN as u64 + w.written;
    let header = encode_header(kind, content, total, w.crc.finalize());
    let mut file = w.out.into_inner().map_err(|e| io(e.into_error()))?;
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    file.write_all(&header).map_err(io)?;
    file.sync_all().map_err(io)
}

fn sync_parent_dir(path: &Path) {
    // Best effort: makes the rename durable on filesystems that need it; not all platforms
    // allow opening a directory.
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Ok(dir) = File::open(parent) {
        let _ = dir.sync_all();
    }
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Opens, maps and validates a file of `kind`: magic, version, length, checksums and layout.
pub fn read_file(path: &Path, kind: &FileKind) -> Result<LoadedFile> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let truncated = |expected: u64| Error::Truncated {
        path: path.to_path_buf(),
        expected,
        found: file_len,
    };
    if file_len < HEADER_LEN as u64 {
        // Check the magic of whatever is there first: a short file of another kind is "bad
        // magic", a short file of this kind is "truncated".
        let mut head = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(&file, 8), &mut head)
            .map_err(|e| Error::io(path, e))?;
        if !kind.magic.starts_with(&head) || head.is_empty() {
            return Err(bad_magic(path, kind));
        }
        return Err(truncated(HEADER_LEN as u64));
    }
    // SAFETY: the map is read-only. Like every mmap-based reader we rely on the file not being
    // modified in place while mapped; our own writer never does that (it renames a new file).
    let map = Arc::new(unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?);
    let mut raw = [0u8; HEADER_LEN];
    raw.copy_from_slice(&map[..HEADER_LEN]);
    let h = Header::decode(&raw);
    if h.magic != kind.magic {
        return Err(bad_magic(path, kind));
    }
    if h.version != kind.version {
        return Err(Error::UnsupportedVersion {
            path: path.to_path_buf(),
            found: h.version,
            expected: kind.version,
        });
    }
    if checksum(&raw) != HEADER_CRC.u32(&raw) {
        return Err(Error::ChecksumMismatch {
            path: path.to_path_buf(),
        });
    }
    let corrupt = |reason: &str| Error::Corrupt {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    if RESERVED.bytes(&raw).iter().any(|&b| b != 0) {
        return Err(corrupt(&format!(
            "reserved header bytes [{}, {}) are not zero",
            RESERVED.at,
            RESERVED.end()
        )));
    }
    let num_params = u64::from(h.num_params);
    let num_sections = u64::from(h.num_sections);
    let metadata_len = u64::from(h.metadata_len);
    let total = h.total_len;
    if file_len < total {
        return Err(truncated(total));
    }
    if file_len > total {
        return Err(corrupt("trailing bytes after the end given in the header"));
    }
    let total = usize::try_from(total).map_err(|_| corrupt("file too large"))?;
    if crc32fast::hash(&map[HEADER_LEN..total]) != h.payload_crc {
        return Err(Error::ChecksumMismatch {
            path: path.to_path_buf(),
        });
    }
    // The checksum matched; still check the layout so no crafted file can cause a panic.
    let table_end = HEADER_LEN as u64 + 8 * (num_params + num_sections);
    if table_end > total as u64 {
        return Err(corrupt("parameter/section table exceeds the file"));
    }
    let params: Vec<u64> = (0..num_params as usize)
        .map(|i| le_u64(&map, HEADER_LEN + 8 * i))
        .collect();
    let lens: Vec<u64> = (0..num_sections as usize)
        .map(|i| le_u64(&map, HEADER_LEN + 8 * (num_params as usize + i)))
        .collect();
    let mut pos = table_end;
    let meta_end = pos + metadata_len;
    if meta_end > total as u64 {
        return Err(corrupt("metadata exceeds the file"));
    }
    let metadata = std::str::from_utf8(&map[pos as usize..meta_end as usize])
        .map_err(|_| corrupt("metadata is not UTF-8"))?
        .to_string();
    pos = meta_end + pad8(meta_end);
    let mut sections = Vec::with_capacity(lens.len());
    for len in lens {
        let bytes = len
            .checked_mul(4)
            .filter(|&b| pos.checked_add(b).is_some_and(|end| end <= total as u64))
            .ok_or_else(|| corrupt("section exceeds the file"))?;
        let array = U32Array::mapped(&map, pos as usize, len as usize)
            .ok_or_else(|| corrupt("section exceeds the file"))?;
        sections.push(array);
        pos += bytes;
        pos += pad8(pos);
    }
    if pos != total as u64 {
        return Err(corrupt("sections do not end where the header says"));
    }
    Ok(LoadedFile {
        path: path.to_path_buf(),
        vocab_size: (h.flags & FLAG_HAS_VOCAB != 0).then_some(h.vocab_size),
        params,
        metadata,
        sections,
    })
}

fn bad_magic(path: &Path, kind: &FileKind) -> Error {
    Error::BadMagic {
        path: path.to_path_buf(),
        expected: kind.name.to_string(),
    }
}

/// Fails with [`Error::VocabMismatch`] unless the loaded vocabulary size is `expected`.
pub fn expect_vocab(found: Option<u32>, expected: u32) -> Result<()> {
    if found == Some(expected) {
        Ok(())
    } else {
        Err(Error::VocabMismatch { expected, found })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIND: FileKind = FileKind {
        magic: *b"HDTEST\0\x01",
        version: 3,
        name: "test",
    };

    #[test]
    fn header_layout_is_the_documented_one() {
        // These offsets are the file format: files already written depend on them.
        let fields = [
            (MAGIC, 0, 8),
            (VERSION, 8, 4),
            (FLAGS, 12, 4),
            (VOCAB_SIZE, 16, 4),
            (NUM_PARAMS, 20, 4),
            (NUM_SECTIONS, 24, 4),
            (METADATA_LEN, 28, 4),
            (TOTAL_LEN, 32, 8),
            (PAYLOAD_CRC, 40, 4),
            (HEADER_CRC, 44, 4),
            (RESERVED, 48, 16),
        ];
        for (field, at, len) in fields {
            assert_eq!(field, Field { at, len });
        }
        let header = Header {
            magic: KIND.magic,
            version: 7,
            flags: FLAG_HAS_VOCAB,
            vocab_size: 262_144,
            num_params: 3,
            num_sections: 2,
            metadata_len: 11,
            total_len: 1 << 40,
            payload_crc: 0xDEAD_BEEF,
        };
        let bytes = header.encode();
        assert_eq!(Header::decode(&bytes), header);
        assert_eq!(checksum(&bytes), HEADER_CRC.u32(&bytes));
        assert!(RESERVED.bytes(&bytes).iter().all(|&b| b == 0));
    }

    #[test]
    fn round_trip_and_alignment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        let a = [1u32, 2, 3];
        let b: Vec<u32> = (0..1000).collect();
        let content = FileContent {
            vocab_size: Some(77),
            params: &[5, u64::MAX],
            metadata: "tok=x",
            sections: &[&a, &[], &b],
        };
        write_file(&path, &KIND, &content).unwrap();
        let f = read_file(&path, &KIND).unwrap();
        assert_eq!(f.vocab_size, Some(77));
        assert_eq!(f.params, vec![5, u64::MAX]);
        assert_eq!(f.metadata, "tok=x");
        assert_eq!(&*f.sections[0], &a);
        assert!(f.sections[1].is_empty());
        assert_eq!(&*f.sections[2], &b[..]);
        if cfg!(target_endian = "little") {
            assert!(f.sections[2].is_mapped());
        }
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
