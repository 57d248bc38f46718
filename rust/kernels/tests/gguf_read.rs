//! GgufFile reads what a GGUF writer wrote: every metadata type, tensors of every supported
//! type at aligned offsets, matrices and dense values over the file's bytes, from memory and
//! from a mapped file; unsupported and unknown tensor types fail only when asked for.

mod gguf_support;

use gguf_support::{full_file, pattern, Builder, TensorSpec};
use hierdraft_kernels::gguf::{MetaArray, MetaValue, DEFAULT_ALIGNMENT};
use hierdraft_kernels::{GgmlType, GgufError, GgufFile};

#[test]
fn metadata_of_every_type_round_trips_in_order() {
    let b = full_file();
    let f = b.build().open().unwrap();
    assert_eq!(f.metadata(), &b.metadata[..]);
    for (key, value) in &b.metadata {
        assert_eq!(f.get(key), Some(value), "{key}");
    }
    assert_eq!(f.get("no.such.key"), None);
    assert_eq!(f.get("t.u64").and_then(MetaValue::as_u64), Some(u64::MAX));
    let Some(MetaValue::Array(MetaArray::String(tokens))) = f.get("t.a_str") else {
        panic!("t.a_str is not a string array");
    };
    assert_eq!(tokens.get(4), Some("🦀"));
}

#[test]
fn tensor_table_and_data_round_trip() {
    let b = full_file();
    let built = b.build();
    let f = built.open().unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.alignment(), DEFAULT_ALIGNMENT);
    assert_eq!(f.data_start(), built.data_start as u64);
    assert_eq!(f.data_start() % 32, 0);
    assert_eq!(f.tensors().len(), b.tensors.len());
    for ((spec, info), &offset) in b.tensors.iter().zip(f.tensors()).zip(&built.offsets) {
        assert_eq!(info.name(), spec.name);
        assert_eq!(info.dims(), &spec.dims[..]);
        assert_eq!(
            info.shape(),
            spec.dims.iter().rev().copied().collect::<Vec<_>>()
        );
        assert_eq!(info.type_id(), spec.type_id);
        assert_eq!(info.offset(), offset);
        assert_eq!(info.file_offset(), built.data_start as u64 + offset);
        assert_eq!(info.n_elements(), spec.dims.iter().product::<u64>());
        assert_eq!(f.tensor(&spec.name), Some(info));
        match GgmlType::from_id(spec.type_id) {
            Ok(_) => {
                assert_eq!(info.nbytes(), Some(spec.data.len() as u64), "{}", spec.name);
                assert_eq!(f.tensor_bytes(&spec.name).unwrap(), &spec.data[..]);
            }
            Err(_) => assert_eq!(info.nbytes(), None, "{}", spec.name),
        }
    }
}

#[test]
fn matrices_view_the_file_bytes_rows_ne1_cols_ne0() {
    let b = full_file();
    let built = b.build();
    let f = built.open().unwrap();
    let m = f.matrix("token_embd.weight").unwrap();
    assert_eq!((m.rows(), m.cols(), m.ty()), (3, 64, GgmlType::Q8_0));
    assert_eq!(m.row_bytes(), 2 * 34);
    let spec = &b.tensors[1];
    assert_eq!(m.data(), &spec.data[..]);
    assert_eq!(m.row(2), &spec.data[2 * 68..]);
    // A 1-D tensor is one row.
    let norm = f.matrix("output_norm.weight").unwrap();
    assert_eq!((norm.rows(), norm.cols()), (1, 5));
    for name in [
        "blk.0.attn_q.weight",
        "blk.0.ffn_up.weight",
        "blk.0.ffn_down.weight",
    ] {
        let m = f.matrix(name).unwrap();
        let info = f.tensor(name).unwrap();
        assert_eq!(m.rows() as u64, info.dims()[1]);
        assert_eq!(m.cols() as u64, info.dims()[0]);
        assert_eq!(m.data(), f.tensor_bytes(name).unwrap());
    }
    assert!(matches!(
        f.matrix("blk.0.cube"),
        Err(GgufError::NotAMatrix { .. })
    ));
}

#[test]
fn a_matrix_keeps_the_file_bytes_alive() {
    let m = full_file()
        .build()
        .open()
        .unwrap()
        .matrix("blk.0.ffn_gate.weight")
        .unwrap();
    assert_eq!(m.data(), &full_file().tensors[5].data[..]);
}

#[test]
fn dense_tensors_convert_exactly_to_f32() {
    let values = [1.0f32, -2.5, 0.0, f32::MIN_POSITIVE, 65504.0, -0.0];
    let f32_data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    // Halves of the same values (0x0400 is the smallest normal half, 2^-14).
    let f16_bits = [0x3c00u16, 0xc100, 0x0000, 0x0400, 0x7bff, 0x8000];
    let f16_data: Vec<u8> = f16_bits.iter().flat_map(|v| v.to_le_bytes()).collect();
    let bf16_data: Vec<u8> = values
        .iter()
        .flat_map(|v| ((v.to_bits() >> 16) as u16).to_le_bytes())
        .collect();
    let f = Builder::new()
        .tensor(TensorSpec::raw("a", &[3, 2], 0, f32_data))
        .tensor(TensorSpec::raw("h", &[6], 1, f16_data))
        .tensor(TensorSpec::raw("b", &[2, 3], 30, bf16_data))
        .tensor(TensorSpec::supported("q", &[32], GgmlType::Q8_0))
        .build()
        .open()
        .unwrap();
    assert_eq!(f.tensor_f32("a").unwrap(), values);
    let halves = [1.0f32, -2.5, 0.0, 2f32.powi(-14), 65504.0, -0.0];
    let got = f.tensor_f32("h").unwrap();
    assert_eq!(got, halves);
    assert!(got[5].is_sign_negative());
    let bf = f.tensor_f32("b").unwrap();
    for (g, v) in bf.iter().zip(values) {
        assert_eq!(g.to_bits(), v.to_bits() & 0xffff_0000);
    }
    let err = f.tensor_f32("q").unwrap_err();
    assert!(matches!(err, GgufError::WrongType { .. }), "{err}");
    assert!(err.to_string().contains("'q' is Q8_0"), "{err}");
}

#[test]
fn unsupported_and_unknown_types_open_but_fail_when_asked_for() {
    let f = full_file().build().open().unwrap();
    let q41 = f.tensor("blk.0.q4_1").unwrap();
    assert_eq!(
        (q41.type_id(), q41.type_name(), q41.nbytes()),
        (3, "Q4_1", None)
    );
    for result in [
        f.matrix("blk.0.q4_1").map(|_| ()),
        f.tensor_bytes("blk.0.q4_1").map(|_| ()),
    ] {
        let err = result.unwrap_err();
        assert!(
            matches!(err, GgufError::UnsupportedTensorType { type_id: 3, .. }),
            "{err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("'blk.0.q4_1'") && msg.contains("Q4_1"),
            "{msg}"
        );
        assert!(!err.is_format_error());
    }
    let err = f.matrix("blk.0.mystery").unwrap_err();
    assert!(err.to_string().contains("999 (unknown)"), "{err}");
}

#[test]
fn missing_tensors_are_named() {
    let f = full_file().build().open().unwrap();
    let err = f.matrix("blk.9.attn_q.weight").unwrap_err();
    assert!(matches!(err, GgufError::MissingTensor { .. }));
    assert!(
        err.to_string()
            .contains("no tensor named 'blk.9.attn_q.weight'"),
        "{err}"
    );
    assert!(f.tensor("blk.9.attn_q.weight").is_none());
    assert!(f.tensor_bytes("nope").is_err());
}

#[test]
fn version_2_and_custom_alignments_are_read() {
    for (version, alignment) in [(2, None), (3, Some(1)), (2, Some(64)), (3, Some(4096))] {
        let mut b = full_file();
        b.version = version;
        b.alignment = alignment;
        let built = b.build();
        let f = built.open().unwrap();
        let align = u64::from(alignment.unwrap_or(32));
        assert_eq!((f.version(), f.alignment()), (version, align));
        assert_eq!(f.data_start() % align, 0);
        for (spec, info) in b.tensors.iter().zip(f.tensors()) {
            assert_eq!(info.offset() % align, 0);
            if info.nbytes().is_some() {
                assert_eq!(f.tensor_bytes(&spec.name).unwrap(), &spec.data[..]);
            }
        }
    }
}

#[test]
fn alignment_of_another_integer_type_is_accepted() {
    let b = Builder::new()
        .kv("general.alignment", MetaValue::U64(16))
        .tensor(TensorSpec::raw("x", &[4], 0, pattern(16, 0)));
    // The builder aligns to 32, a multiple of 16.
    assert_eq!(b.build().open().unwrap().alignment(), 16);
}

#[test]
fn empty_files_and_files_without_tensors() {
    let f = Builder::new().build().open().unwrap();
    assert!(f.metadata().is_empty() && f.tensors().is_empty());
    let f = Builder::new()
        .kv("general.architecture", MetaValue::String("x".into()))
        .build()
        .open()
        .unwrap();
    assert_eq!(f.metadata().len(), 1);
    // Zero-sized tensors are listed; a matrix needs values.
    let f = Builder::new()
        .tensor(TensorSpec::raw("empty", &[0, 4], 8, vec![]))
        .build()
        .open()
        .unwrap();
    assert_eq!(f.tensor("empty").unwrap().nbytes(), Some(0));
    assert_eq!(f.tensor_bytes("empty").unwrap(), &[] as &[u8]);
    assert!(matches!(f.matrix("empty"), Err(GgufError::Matrix { .. })));
}

#[test]
fn open_maps_a_file_and_reads_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.gguf");
    let b = full_file();
    let built = b.build();
    std::fs::write(&path, &built.bytes).unwrap();
    let f = GgufFile::open(&path).unwrap();
    let mem = built.open().unwrap();
    assert_eq!(f.path(), path);
    assert_eq!(f.metadata(), mem.metadata());
    assert_eq!(f.tensors(), mem.tensors());
    assert_eq!(f.file_len(), built.bytes.len() as u64);
    let m = f.matrix("blk.0.ffn_down.weight").unwrap();
    drop(f);
    assert_eq!(m.data(), &b.tensors[6].data[..]);
}

#[test]
fn open_reports_io_problems_with_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.gguf");
    let err = GgufFile::open(&missing).unwrap_err();
    match &err {
        GgufError::Io { source, .. } => {
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound)
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("missing.gguf"), "{err}");
    let err = GgufFile::open(dir.path()).unwrap_err();
    assert!(matches!(err, GgufError::NotAFile { .. }), "{err}");
    let empty = dir.path().join("empty.gguf");
    std::fs::write(&empty, b"").unwrap();
    let err = GgufFile::open(&empty).unwrap_err();
    assert!(matches!(err, GgufError::Truncated { .. }), "{err}");
    assert!(err.is_format_error());
}
