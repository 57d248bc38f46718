//! Saving and loading both persistent stores: round trips, atomic writes and every corruption
//! case the loader must name.

mod stores_reference;

use std::fs;
use std::path::{Path, PathBuf};

use hierdraft_core::persist::HEADER_LEN;
use hierdraft_core::{CorpusIndex, Error, ModelStore, ModelStoreBuilder, ModelStoreConfig};
use stores_reference::{realistic_corpus, Rng};

fn corpus() -> CorpusIndex {
    let mut index =
        CorpusIndex::from_documents(realistic_corpus(5, 20_000, 500), Some(500)).unwrap();
    index.set_metadata("tokenizer=test vocab_hash=abc");
    index
}

fn model() -> ModelStore {
    let c = ModelStoreConfig {
        vocab_size: Some(500),
        ..Default::default()
    };
    let mut b = ModelStoreBuilder::new(c).unwrap();
    for d in realistic_corpus(6, 5_000, 500) {
        b.add_sequence(&d).unwrap();
    }
    b.set_metadata("gemma-3-270m");
    b.build()
}

fn contexts() -> Vec<Vec<u32>> {
    let mut rng = Rng(1);
    let docs = realistic_corpus(5, 3_000, 500);
    (0..100)
        .map(|_| {
            let d = &docs[rng.below(docs.len() as u64) as usize];
            let end = 1 + rng.below(d.len() as u64) as usize;
            d[end.saturating_sub(8)..end].to_vec()
        })
        .collect()
}

fn only_file(dir: &Path) -> PathBuf {
    let entries: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 1, "leftover files: {entries:?}");
    entries.into_iter().next().unwrap()
}

#[test]
fn corpus_round_trip_is_mapped_and_identical() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corpus.hdc");
    let index = corpus();
    index.save(&path).unwrap();
    assert_eq!(only_file(dir.path()), path);
    let size = fs::metadata(&path).unwrap().len() as f64;
    assert!(size / (index.num_tokens() as f64) < 8.01, "{size} bytes");
    let loaded = CorpusIndex::load(&path).unwrap();
    assert!(loaded.is_mapped() || cfg!(target_endian = "big"));
    assert_eq!(loaded.num_tokens(), index.num_tokens());
    assert_eq!(loaded.num_documents(), index.num_documents());
    assert_eq!(loaded.vocab_size(), Some(500));
    assert_eq!(loaded.metadata(), index.metadata());
    for ctx in contexts() {
        assert_eq!(loaded.lookup(&ctx, 8, 8), index.lookup(&ctx, 8, 8));
    }
    assert!(CorpusIndex::load_expecting_vocab(&path, 500).is_ok());
}

#[test]
fn model_round_trip_includes_online_additions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.hdm");
    let store = model();
    store.save(&path).unwrap();
    let loaded = ModelStore::load(&path).unwrap();
    assert!(loaded.is_mapped() || cfg!(target_endian = "big"));
    assert_eq!(loaded.config(), store.config());
    assert_eq!(loaded.metadata(), "gemma-3-270m");
    assert_eq!(loaded.num_keys(), store.num_keys());
    for ctx in contexts() {
        assert_eq!(loaded.lookup(&ctx, 8, 6), store.lookup(&ctx, 8, 6));
    }
    // Learn online, save again over the same path, reload: the additions persist.
    loaded.add(&[499, 498, 497, 496]).unwrap();
    loaded.save(&path).unwrap();
    assert_eq!(only_file(dir.path()), path);
    let again = ModelStore::load(&path).unwrap();
    assert_eq!(again.num_keys(), loaded.num_keys());
    assert_eq!(again.lookup(&[499, 498, 497], 1, 1)[0].tokens, vec![496]);
    // An empty store round-trips too.
    let empty = ModelStore::empty(ModelStoreConfig::default()).unwrap();
    empty.save(&path).unwrap();
    assert_eq!(ModelStore::load(&path).unwrap().num_keys(), 0);
}

/// Saves both stores and returns their paths.
fn saved(dir: &Path) -> (PathBuf, PathBuf) {
    let (c, m) = (dir.join("c.bin"), dir.join("m.bin"));
    corpus().save(&c).unwrap();
    model().save(&m).unwrap();
    (c, m)
}

fn edit(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = fs::read(path).unwrap();
    f(&mut bytes);
    fs::write(path, bytes).unwrap();
}

fn load_both(c: &Path, m: &Path) -> (Error, Error) {
    (
        CorpusIndex::load(c).unwrap_err(),
        ModelStore::load(m).unwrap_err(),
    )
}

#[test]
fn missing_file_is_an_io_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("nope.bin");
    let e = CorpusIndex::load(&p).unwrap_err();
    assert!(matches!(&e, Error::Io { path, .. } if *path == p), "{e}");
    assert!(e.to_string().contains("nope.bin"));
    assert!(matches!(ModelStore::load(&p), Err(Error::Io { .. })));
}

#[test]
fn bad_magic_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let (c, m) = saved(dir.path());
    // Each kind refuses the other's file.
    assert!(matches!(CorpusIndex::load(&m), Err(Error::BadMagic { .. })));
    assert!(matches!(ModelStore::load(&c), Err(Error::BadMagic { .. })));
    let junk = dir.path().join("junk");
    fs::write(
        &junk,
        b"definitely not a store file, but long enough for a header......",
    )
    .unwrap();
    assert!(matches!(
        CorpusIndex::load(&junk),
        Err(Error::BadMagic { .. })
    ));
    fs::write(&junk, b"abc").unwrap();
    assert!(matches!(
        ModelStore::load(&junk),
        Err(Error::BadMagic { .. })
    ));
}

#[test]
fn truncation_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let (c, m) = saved(dir.path());
    for p in [&c, &m] {
        let len = fs::metadata(p).unwrap().len() as usize;
        edit(p, |b| b.truncate(len - 1));
    }
    let (ec, em) = load_both(&c, &m);
    assert!(matches!(ec, Error::Truncated { .. }), "{ec}");
    assert!(matches!(em, Error::Truncated { .. }), "{em}");
    for cut in [HEADER_LEN - 1, 8, 5] {
        edit(&c, |b| b.truncate(cut));
        assert!(
            matches!(CorpusIndex::load(&c), Err(Error::Truncated { .. })),
            "cut {cut}"
        );
    }
    edit(&m, |b| b.clear());
    assert!(matches!(
        ModelStore::load(&m),
        Err(Error::BadMagic { .. } | Error::Truncated { .. })
    ));
}

#[test]
fn flipped_bytes_fail_the_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let (c, m) = saved(dir.path());
    let mut rng = Rng(9);
    for p in [&c, &m] {
        let len = fs::metadata(p).unwrap().len();
        let i = HEADER_LEN as u64 + rng.below(len - HEADER_LEN as u64);
        edit(p, |b| b[i as usize] ^= 0x10);
    }
    let (ec, em) = load_both(&c, &m);
    assert!(matches!(ec, Error::ChecksumMismatch { .. }), "{ec}");
    assert!(matches!(em, Error::ChecksumMismatch { .. }), "{em}");
    // A flipped header field (the vocabulary size) is caught by the header checksum.
    let (c, m) = saved(dir.path());
    edit(&c, |b| b[16] ^= 1);
    edit(&m, |b| b[16] ^= 1);
    let (ec, em) = load_both(&c, &m);
    assert!(matches!(ec, Error::ChecksumMismatch { .. }), "{ec}");
    assert!(matches!(em, Error::ChecksumMismatch { .. }), "{em}");
}

#[test]
fn other_versions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (c, m) = saved(dir.path());
    edit(&c, |b| b[8..12].copy_from_slice(&2u32.to_le_bytes()));
    edit(&m, |b| b[8..12].copy_from_slice(&99u32.to_le_bytes()));
    let (ec, em) = load_both(&c, &m);
    assert!(
        matches!(
            ec,
            Error::UnsupportedVersion {
                found: 2,
                expected: 1,
                ..
            }
        ),
        "{ec}"
    );
    assert!(
        matches!(
            em,
            Error::UnsupportedVersion {
                found: 99,
                expected: 1,
                ..
            }
        ),
        "{em}"
    );
}

#[test]
fn wrong_vocabulary_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (c, m) = saved(dir.path());
    assert!(matches!(
        CorpusIndex::load_expecting_vocab(&c, 262_144),
        Err(Error::VocabMismatch {
            expected: 262_144,
            found: Some(500)
        })
    ));
    assert!(matches!(
        ModelStore::load_expecting_vocab(&m, 32_000),
        Err(Error::VocabMismatch {
            expected: 32_000,
            found: Some(500)
        })
    ));
    let none = dir.path().join("none.bin");
    CorpusIndex::from_documents(vec![vec![1, 2]], None)
        .unwrap()
        .save(&none)
        .unwrap();
    assert!(matches!(
        CorpusIndex::load_expecting_vocab(&none, 10),
        Err(Error::VocabMismatch {
            expected: 10,
            found: None
        })
    ));
}

#[test]
fn trailing_bytes_are_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _) = saved(dir.path());
    edit(&c, |b| b.extend_from_slice(&[0; 8]));
    assert!(matches!(CorpusIndex::load(&c), Err(Error::Corrupt { .. })));
}

/// Rewrites a payload u32 and fixes both checksums, so only structural validation can notice.
fn forge(path: &Path, byte_offset: usize, value: u32) {
    edit(path, |b| {
        b[byte_offset..byte_offset + 4].copy_from_slice(&value.to_le_bytes());
        let payload = crc32fast::hash(&b[HEADER_LEN..]);
        b[40..44].copy_from_slice(&payload.to_le_bytes());
        let header = crc32fast::hash(&b[..44]);
        b[44..48].copy_from_slice(&header.to_le_bytes());
    });
}

#[test]
fn structurally_invalid_content_with_valid_checksums_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (c, m) = saved(dir.path());
    // The first suffix-array entry points far outside the text. Layout: header, 2 params,
    // 2 section lengths, metadata (padded), text (padded), suffix array.
    let bytes = fs::read(&c).unwrap();
    let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap()) as usize;
    let text_len = u64_at(HEADER_LEN + 16);
    let meta = "tokenizer=test vocab_hash=abc".len().div_ceil(8) * 8;
    let sa_start = HEADER_LEN + 32 + meta + (4 * text_len).div_ceil(8) * 8;
    forge(&c, sa_start, u32::MAX - 5);
    assert!(matches!(CorpusIndex::load(&c), Err(Error::Corrupt { .. })));
    // The model store's first section (the hash table) gets an out-of-range entry.
    let table_start = HEADER_LEN + 8 * (4 + 8);
    let meta_len = "gemma-3-270m".len().div_ceil(8) * 8;
    forge(&m, table_start + meta_len, u32::MAX - 1);
    assert!(matches!(ModelStore::load(&m), Err(Error::Corrupt { .. })));
}

#[test]
fn failed_save_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("missing-dir").join("x.bin");
    assert!(matches!(corpus().save(&target), Err(Error::Io { .. })));
    assert!(fs::read_dir(dir.path()).unwrap().next().is_none());
}
