//! The loaders under attack: valid store files of each kind (model store, corpus index) are
//! mutated at random — bit flips, truncations, splices, random header fields — 10,000 times per
//! kind. Every load must either fail with an `Error` or give a store that serves lookups (and,
//! for the model store, online additions and a save) without panicking.
//!
//! A random mutation almost always breaks a checksum, which only tests the first gate. So half of
//! the cases also *reseal* the file after mutating it (recompute both checksums as the writer
//! would), which sends the damage past the checksums to the structural validation behind them.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use hierdraft_core::persist::HEADER_LEN;
use hierdraft_core::{CorpusIndex, ModelStore, ModelStoreConfig, SharedStore};
use proptest::prelude::*;

const CASES_PER_KIND: u32 = 10_000;
const VOCAB: u32 = 40;
// Byte offsets of the checksums (see the layout in persist.rs).
const PAYLOAD_CRC_AT: usize = 40;
const HEADER_CRC_AT: usize = 44;

fn sequences() -> Vec<Vec<u32>> {
    // Small and repetitive, so the tables and tries are small and every part of the file is hit
    // often, yet lookups find matches.
    (0..6u32)
        .map(|d| {
            (0..30u32)
                .map(|i| (i * (d + 3) + d) % 17 + (i % 3) * 7)
                .collect()
        })
        .collect()
}

fn model_file() -> Vec<u8> {
    static FILE: OnceLock<Vec<u8>> = OnceLock::new();
    FILE.get_or_init(build_model_file).clone()
}

fn corpus_file() -> Vec<u8> {
    static FILE: OnceLock<Vec<u8>> = OnceLock::new();
    FILE.get_or_init(build_corpus_file).clone()
}

fn build_model_file() -> Vec<u8> {
    let config = ModelStoreConfig {
        max_ngram: 4,
        continuation_len: 5,
        top_k: 3,
        vocab_size: Some(VOCAB),
        ..Default::default()
    };
    let store = ModelStore::from_sequences(config, &sequences()).expect("model store");
    store.set_metadata("mutation test");
    saved_bytes(&store)
}

fn build_corpus_file() -> Vec<u8> {
    let mut index = CorpusIndex::from_documents(sequences(), Some(VOCAB)).expect("corpus index");
    index.set_metadata("mutation test");
    saved_bytes(&index)
}

fn saved_bytes<S: SharedStore>(store: &S) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.bin");
    store.save(&path).expect("save");
    fs::read(&path).expect("read")
}

/// One way of damaging a file.
#[derive(Clone, Debug)]
enum Mutation {
    /// Flip these bits (positions taken modulo the file's bit length).
    BitFlips(Vec<usize>),
    /// Keep only this many bytes (modulo the length + 1).
    Truncate(usize),
    /// Copy `len` bytes from `from` over (or, with `insert`, in front of) position `to`; the
    /// bytes come from this file or from the other kind's file.
    Splice {
        from: usize,
        len: usize,
        to: usize,
        insert: bool,
        other_kind: bool,
    },
    /// Overwrite one little-endian u32 or u64 header field at `at` with a random value.
    HeaderField { at: usize, wide: bool, value: u64 },
    /// Replace the whole header but the magic with random bytes.
    RandomHeader(Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    // Small values make plausible counts and lengths, random ones overflow everything.
    let value = prop_oneof![0u64..512, any::<u64>()];
    let header_field =
        (0usize..14, any::<bool>(), value).prop_map(|(slot, wide, value)| Mutation::HeaderField {
            at: 8 + 4 * slot,
            wide,
            value,
        });
    prop_oneof![
        proptest::collection::vec(any::<usize>(), 1..8).prop_map(Mutation::BitFlips),
        any::<usize>().prop_map(Mutation::Truncate),
        (
            any::<usize>(),
            1usize..256,
            any::<usize>(),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(from, len, to, insert, other_kind)| Mutation::Splice {
                from,
                len,
                to,
                insert,
                other_kind
            }),
        header_field,
        proptest::collection::vec(any::<u8>(), HEADER_LEN - 8).prop_map(Mutation::RandomHeader),
    ]
}

fn apply(mutation: &Mutation, bytes: &mut Vec<u8>, other: &[u8]) {
    match mutation {
        Mutation::BitFlips(bits) => {
            for &bit in bits {
                let bit = bit % (8 * bytes.len());
                bytes[bit / 8] ^= 1 << (bit % 8);
            }
        }
        Mutation::Truncate(keep) => bytes.truncate(keep % (bytes.len() + 1)),
        Mutation::Splice {
            from,
            len,
            to,
            insert,
            other_kind,
        } => {
            let source = if *other_kind { other } else { &bytes[..] };
            let from = from % source.len();
            let piece = source[from..(from + len).min(source.len())].to_vec();
            let to = to % (bytes.len() + 1);
            if *insert {
                bytes.splice(to..to, piece);
            } else {
                let end = (to + piece.len()).min(bytes.len());
                bytes.splice(to..end, piece);
            }
        }
        Mutation::HeaderField { at, wide, value } => {
            if *wide {
                bytes[*at..*at + 8].copy_from_slice(&value.to_le_bytes());
            } else {
                bytes[*at..*at + 4].copy_from_slice(&(*value as u32).to_le_bytes());
            }
        }
        Mutation::RandomHeader(random) => bytes[8..HEADER_LEN].copy_from_slice(random),
    }
}

/// Recomputes both checksums the way the writer does (a no-op on files shorter than a header).
fn reseal(bytes: &mut [u8]) {
    if bytes.len() < HEADER_LEN {
        return;
    }
    let payload = crc32fast::hash(&bytes[HEADER_LEN..]);
    bytes[PAYLOAD_CRC_AT..PAYLOAD_CRC_AT + 4].copy_from_slice(&payload.to_le_bytes());
    let header = crc32fast::hash(&bytes[..HEADER_CRC_AT]);
    bytes[HEADER_CRC_AT..HEADER_CRC_AT + 4].copy_from_slice(&header.to_le_bytes());
}

/// Contexts to look up: short and long, in and out of the vocabulary.
fn contexts() -> Vec<Vec<u32>> {
    let mut out: Vec<Vec<u32>> = sequences()
        .iter()
        .flat_map(|s| [s[..3].to_vec(), s[5..17].to_vec(), s[20..].to_vec()])
        .collect();
    out.extend([
        vec![],
        vec![VOCAB + 3],
        vec![0, u32::MAX, 1],
        vec![u32::MAX - 1; 20],
    ]);
    out
}

fn exercise_lookups<S: SharedStore>(store: &S) {
    for context in contexts() {
        for (k, max_len) in [(1, 1), (4, 3), (16, 64)] {
            let found = store.lookup(&context, k, max_len);
            assert!(found.len() <= k);
            assert!(found.iter().all(|c| c.tokens.len() <= max_len));
            let _ = store.checked_lookup(&context, k, max_len);
        }
    }
}

fn check_model(path: &Path, scratch: &Path) {
    let Ok(store) = ModelStore::load(path) else {
        return;
    };
    exercise_lookups(&store);
    let _ = store.num_keys();
    // Online additions merge the overlay; saving merges it into the loaded base.
    for s in sequences().iter().take(2) {
        let _ = store.add(&s[..12]);
    }
    exercise_lookups(&store);
    if store.save(scratch).is_ok() {
        let again = ModelStore::load(scratch).expect("a store the core saved loads again");
        exercise_lookups(&again);
    }
}

fn check_corpus(path: &Path) {
    let Ok(mut index) = CorpusIndex::load(path) else {
        return;
    };
    exercise_lookups(&index);
    let _ = index.longest_match(&sequences()[0]);
    index.set_max_occurrences(1);
    exercise_lookups(&index);
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: CASES_PER_KIND,
        // Every case is independent; a failure prints its mutation, which is all it takes to
        // reproduce it.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Writes `original` damaged by `m` (resealed or not) into a fresh folder; returns the folder
/// (removed when dropped) and the file's path.
fn damaged_file(
    original: Vec<u8>,
    other: &[u8],
    m: &Mutation,
    resealed: bool,
) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.bin");
    let mut bytes = original;
    apply(m, &mut bytes, other);
    if resealed {
        reseal(&mut bytes);
    }
    fs::write(&path, &bytes).expect("write");
    (dir, path)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn mutated_model_store_files_error_or_serve(m in mutation(), resealed in any::<bool>()) {
        let (dir, path) = damaged_file(model_file(), &corpus_file(), &m, resealed);
        check_model(&path, &dir.path().join("again.bin"));
    }

    #[test]
    fn mutated_corpus_index_files_error_or_serve(m in mutation(), resealed in any::<bool>()) {
        let (_dir, path) = damaged_file(corpus_file(), &model_file(), &m, resealed);
        check_corpus(&path);
    }
}

#[test]
fn the_pristine_files_load_and_serve() {
    // The mutations start from files that load; otherwise every case would only test errors.
    let dir = tempfile::tempdir().expect("tempdir");
    let (m, c) = (dir.path().join("m.bin"), dir.path().join("c.bin"));
    fs::write(&m, model_file()).expect("write");
    fs::write(&c, corpus_file()).expect("write");
    let model = ModelStore::load(&m).expect("model store loads");
    let corpus = CorpusIndex::load(&c).expect("corpus index loads");
    let context = &sequences()[1][..6];
    assert!(!model.lookup(context, 4, 4).is_empty());
    assert!(!corpus.lookup(context, 4, 4).is_empty());
    // Resealing an intact file changes nothing.
    let mut bytes = model_file();
    reseal(&mut bytes);
    assert_eq!(bytes, model_file());
}

#[test]
fn reserved_header_bytes_must_be_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, original) in [("m.bin", model_file()), ("c.bin", corpus_file())] {
        for at in 48..HEADER_LEN {
            let path = dir.path().join(name);
            let mut bytes = original.clone();
            bytes[at] ^= 0x40;
            fs::write(&path, &bytes).expect("write");
            let err = if name == "m.bin" {
                ModelStore::load(&path).err()
            } else {
                CorpusIndex::load(&path).err()
            };
            let err = err.unwrap_or_else(|| panic!("{name}: flipped reserved byte {at} loaded"));
            assert!(
                matches!(err, hierdraft_core::Error::Corrupt { .. }),
                "{name} byte {at}: {err}"
            );
            assert!(err.to_string().contains("reserved"), "{err}");
        }
    }
}
