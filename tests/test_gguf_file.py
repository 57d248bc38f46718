"""hierdraft._core.GgufFile reads what gguf-py writes exactly as gguf-py's own reader does, refuses
malformed files with GgufFormatError naming the problem, and reads the default model's file as
transformers' GGUF reader does."""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as QT
from gguf import GGUFValueType as VT

from hierdraft._core import GgufFile, GgufFormatError, QuantTensor

SCALARS: dict[str, tuple[Any, VT]] = {
    "t.u8": (250, VT.UINT8),
    "t.i8": (-120, VT.INT8),
    "t.u16": (65000, VT.UINT16),
    "t.i16": (-32000, VT.INT16),
    "t.u32": (4_000_000_000, VT.UINT32),
    "t.i32": (-2_000_000_000, VT.INT32),
    "t.u64": (2**64 - 1, VT.UINT64),
    "t.i64": (-(2**63), VT.INT64),
    "t.f32": (0.1, VT.FLOAT32),
    "t.f64": (0.1, VT.FLOAT64),
    "t.bool": (True, VT.BOOL),
    "t.str": ("héllo ▁wörld 🦀", VT.STRING),
}
ARRAYS: dict[str, tuple[list[Any], VT]] = {
    "t.a_i32": ([1, -2, 3], VT.INT32),
    "t.a_u64": ([0, 2**64 - 1], VT.UINT64),
    "t.a_f32": ([-1000.0, 0.5, 1e-7], VT.FLOAT32),
    "t.a_f64": ([1e300, -0.0], VT.FLOAT64),
    "t.a_u8": ([0, 255], VT.UINT8),
    "t.a_bool": ([True, False, True], VT.BOOL),
    "t.a_str": (["<pad>", "", "▁the", "日本"], VT.STRING),
}
NUMPY_DTYPE = {
    VT.INT32: np.int32,
    VT.UINT64: np.uint64,
    VT.FLOAT32: np.float32,
    VT.FLOAT64: np.float64,
    VT.UINT8: np.uint8,
    VT.BOOL: np.bool_,
}
# name -> (torch shape, type); quantized rows are whole blocks
TENSORS: dict[str, tuple[tuple[int, ...], QT]] = {
    "token_embd.weight": ((6, 64), QT.Q8_0),
    "blk.0.attn_q.weight": ((4, 32), QT.Q4_0),
    "blk.0.attn_k.weight": ((3, 64), QT.Q5_0),
    "blk.0.ffn_up.weight": ((5, 8), QT.F16),
    "blk.0.ffn_gate.weight": ((2, 16), QT.BF16),
    "output_norm.weight": ((7,), QT.F32),
    "blk.0.cube": ((2, 3, 4), QT.F32),
}


def _values(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _write(path: Path, *, alignment: int | None = None, nested: bool = True) -> Path:
    w = gguf.GGUFWriter(path, "gemma3")
    if alignment is not None:
        w.add_custom_alignment(alignment)
    for key, (value, vtype) in SCALARS.items():
        w.add_key_value(key, value, vtype)
    for key, (values, vtype) in ARRAYS.items():
        w.add_key_value(key, values, VT.ARRAY, sub_type=vtype)
    if nested:
        w.add_key_value("t.nested", [[1, 2], [3]], VT.ARRAY, sub_type=VT.ARRAY)
    for seed, (name, (shape, qtype)) in enumerate(TENSORS.items()):
        values = _values(shape, seed)
        if qtype == QT.F32:
            w.add_tensor(name, values)
        elif qtype == QT.F16:
            w.add_tensor(name, values.astype(np.float16))
        else:
            w.add_tensor(name, gguf.quants.quantize(values, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture
def written(tmp_path: Path) -> Path:
    return _write(tmp_path / "model.gguf")


def _python(value: Any) -> Any:
    """A metadata value with numpy arrays turned into lists, for comparing."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, list):
        return [_python(v) for v in value]
    return value


def test_metadata_matches_gguf_py_reader(written: Path) -> None:
    f = GgufFile(written)
    reader = gguf.GGUFReader(written)
    meta = f.metadata
    fields = {name: field for name, field in reader.fields.items() if not name.startswith("GGUF.")}
    flat = {k for k in fields if k != "t.nested"}  # gguf-py's reader flattens nested arrays
    assert list(meta) == list(fields)
    for key in flat:
        assert _python(meta[key]) == fields[key].contents(), key
    assert meta["general.architecture"] == "gemma3"
    assert meta["t.nested"][0].tolist() == [1, 2] and meta["t.nested"][1].tolist() == [3]
    # Types: ints are int, floats float (f32 widened exactly), numeric arrays numpy arrays.
    assert type(meta["t.u64"]) is int and meta["t.u64"] == 2**64 - 1
    assert meta["t.f32"] == float(np.float32(0.1)) and meta["t.f64"] == 0.1
    assert meta["t.bool"] is True
    for key, (values, vtype) in ARRAYS.items():
        if vtype == VT.STRING:
            assert meta[key] == values
        else:
            assert meta[key].dtype == NUMPY_DTYPE[vtype], key
            assert meta[key].tolist() == np.array(values, dtype=NUMPY_DTYPE[vtype]).tolist()
    assert f.get("t.str") == SCALARS["t.str"][0]
    assert f.get("no.such.key") is None and f.get("no.such.key", 7) == 7


def test_tensor_table_and_data_match_gguf_py_reader(written: Path) -> None:
    f = GgufFile(written)
    reader = gguf.GGUFReader(written)
    raw = written.read_bytes()
    assert (f.version, f.alignment) == (3, 32)
    assert f.data_start == reader.data_offset
    assert len(f) == len(TENSORS) == len(reader.tensors)
    for info, theirs in zip(f.tensors, reader.tensors):
        assert info.name == theirs.name
        assert info.type_id == int(theirs.tensor_type) and info.qtype == theirs.tensor_type.name
        assert info.shape == tuple(int(d) for d in reversed(theirs.shape)) == TENSORS[info.name][0]
        assert f.data_start + info.offset == theirs.data_offset
        assert info.nbytes == theirs.n_bytes
        start = f.data_start + info.offset
        assert raw[start : start + info.nbytes] == theirs.data.tobytes()
        assert info.name in f and f.tensor(info.name).offset == info.offset
    assert "nope" not in f


def test_matrices_dequantize_like_gguf_py(written: Path) -> None:
    f = GgufFile(written)
    reader = {t.name: t for t in gguf.GGUFReader(written).tensors}
    for name, (shape, qtype) in TENSORS.items():
        if len(shape) > 2:
            continue
        m = f.matrix(name)
        assert isinstance(m, QuantTensor)
        rows, cols = (1, shape[0]) if len(shape) == 1 else shape
        assert (m.shape, m.qtype, m.nbytes) == ((rows, cols), qtype.name, f.tensor(name).nbytes)
        want = gguf.quants.dequantize(reader[name].data, qtype).reshape(rows, cols)
        np.testing.assert_array_equal(m.dequantize(), want)
    with pytest.raises(ValueError, match="'blk.0.cube'.*1-D or 2-D"):
        f.matrix("blk.0.cube")


def test_dense_arrays_are_exact_in_torch_shape(written: Path) -> None:
    f = GgufFile(written)
    for seed, (name, (shape, qtype)) in enumerate(TENSORS.items()):
        if qtype not in (QT.F32, QT.F16, QT.BF16):
            continue
        a = f.array(name)
        assert a.dtype == np.float32 and a.shape == shape
        values = _values(shape, seed)
        if qtype == QT.F32:
            want = values
        elif qtype == QT.F16:
            want = values.astype(np.float16).astype(np.float32)
        else:
            want = gguf.quants.dequantize(gguf.quants.quantize(values, QT.BF16), QT.BF16)
        np.testing.assert_array_equal(a, want.reshape(shape))
    with pytest.raises(ValueError, match="'token_embd.weight' is Q8_0"):
        f.array("token_embd.weight")


def test_every_half_converts_exactly(tmp_path: Path) -> None:
    halves = np.arange(2**16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    w = gguf.GGUFWriter(tmp_path / "h.gguf", "gemma3")
    w.add_tensor("h", halves)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    got = GgufFile(tmp_path / "h.gguf").array("h")
    want = halves.astype(np.float32)
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan)
    assert np.array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32))


@pytest.mark.parametrize("alignment", [1, 64, 256])
def test_custom_alignment(tmp_path: Path, alignment: int) -> None:
    path = _write(tmp_path / "a.gguf", alignment=alignment)
    f = GgufFile(path)
    reader = gguf.GGUFReader(path)
    assert f.alignment == alignment and f.data_start == reader.data_offset
    assert f.data_start % alignment == 0
    assert [f.data_start + t.offset for t in f.tensors] == [t.data_offset for t in reader.tensors]


def test_properties_and_missing_things(written: Path, tmp_path: Path) -> None:
    f = GgufFile(str(written))
    assert f.path == written
    assert "model.gguf" in repr(f) and "tensors=7" in repr(f)
    assert "token_embd.weight" in repr(f.tensors[0]) and "Q8_0" in repr(f.tensors[0])
    with pytest.raises(KeyError, match="no tensor named 'blk.9.x'"):
        f.matrix("blk.9.x")
    with pytest.raises(KeyError):
        f.array("blk.9.x")
    with pytest.raises(KeyError):
        f.tensor("blk.9.x")
    with pytest.raises(FileNotFoundError) as info:
        GgufFile(tmp_path / "missing.gguf")
    assert info.value.filename == str(tmp_path / "missing.gguf")
    with pytest.raises(OSError, match="not a regular file"):
        GgufFile(tmp_path)


# --- malformed files -----------------------------------------------------------------------------


def _entry_field(raw: bytes, name: str, field: str) -> int:
    """Byte position of the type or offset field of tensor `name`'s table entry."""
    at = raw.index(struct.pack("<Q", len(name)) + name.encode())
    at += 8 + len(name)
    (n_dims,) = struct.unpack_from("<I", raw, at)
    type_at = at + 4 + 8 * n_dims
    return type_at if field == "type" else type_at + 4


def _rewritten(path: Path, at: int, fmt: str, value: int) -> Path:
    raw = bytearray(path.read_bytes())
    struct.pack_into(fmt, raw, at, value)
    out = path.with_name("changed.gguf")
    out.write_bytes(bytes(raw))
    return out


def test_bad_magic(written: Path) -> None:
    raw = written.read_bytes()
    bad = written.with_name("bad.gguf")
    bad.write_bytes(b"GGML" + raw[4:])
    with pytest.raises(GgufFormatError, match="not a GGUF file"):
        GgufFile(bad)
    assert issubclass(GgufFormatError, ValueError)


@pytest.mark.parametrize("version", [1, 4, 0x03000000])
def test_unsupported_versions(written: Path, version: int) -> None:
    with pytest.raises(GgufFormatError, match=f"version {version}; this reader reads versions 2 and 3"):
        GgufFile(_rewritten(written, 4, "<I", version))


def test_truncated_anywhere(tmp_path: Path) -> None:
    raw = _write(tmp_path / "t.gguf", nested=False).read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(raw)
    # Longest first, so each step only truncates the file further (cheap, unlike a rewrite).
    for length in reversed(range(len(raw))):
        os.truncate(cut, length)
        with pytest.raises(GgufFormatError) as info:
            GgufFile(cut)
        message = str(info.value)
        assert "cut.gguf" in message
        assert "truncated" in message or "only" in message, (length, message)


def test_tensor_running_past_the_end(written: Path) -> None:
    f = GgufFile(written)
    size = written.stat().st_size
    info = f.tensor("token_embd.weight")
    offset = (size - f.data_start) // 32 * 32
    bad = _rewritten(written, _entry_field(written.read_bytes(), info.name, "offset"), "<Q", offset)
    start = f.data_start + offset
    want = f"tensor 'token_embd.weight' needs bytes {start}..{start + info.nbytes} but the file has {size}"
    with pytest.raises(GgufFormatError, match=want):
        GgufFile(bad)


def test_misaligned_tensor(written: Path) -> None:
    info = GgufFile(written).tensor("blk.0.attn_k.weight")
    at = _entry_field(written.read_bytes(), info.name, "offset")
    want = "'blk.0.attn_k.weight' has offset .* not a multiple of the alignment 32"
    with pytest.raises(GgufFormatError, match=want):
        GgufFile(_rewritten(written, at, "<Q", info.offset + 8))


@pytest.mark.parametrize(("type_id", "type_name"), [(3, "Q4_1"), (200, "unknown")])
def test_unsupported_tensor_types_fail_when_asked_for(written: Path, type_id: int, type_name: str) -> None:
    at = _entry_field(written.read_bytes(), "blk.0.attn_q.weight", "type")
    f = GgufFile(_rewritten(written, at, "<I", type_id))
    info = f.tensor("blk.0.attn_q.weight")
    assert (info.type_id, info.qtype, info.nbytes) == (type_id, type_name, None)
    want = f"'blk.0.attn_q.weight' has ggml type {type_id} \\({type_name}\\)"
    for call in (f.matrix, f.array):
        with pytest.raises(ValueError, match=want) as err:
            call("blk.0.attn_q.weight")
        assert not isinstance(err.value, GgufFormatError)
    # The other tensors are unaffected.
    assert f.matrix("token_embd.weight").shape == (6, 64)


def test_counts_beyond_the_file(written: Path) -> None:
    with pytest.raises(GgufFormatError, match="metadata entry count says 1152921504606846976 follow"):
        GgufFile(_rewritten(written, 16, "<Q", 2**60))
    with pytest.raises(GgufFormatError, match="tensor count says"):
        GgufFile(_rewritten(written, 8, "<Q", 2**40))


# --- the default model ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def default_gguf() -> Path:
    from hierdraft.models import default_gguf_path

    return default_gguf_path()


@pytest.mark.slow
def test_default_model_table_matches_transformers(
    default_gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers.integrations.gguf import dequant
    from transformers.integrations.gguf.reader import GgufHeader

    # This transformers version sizes every block type it dequantizes except Q5_0, which the default
    # model uses; its layout (32 values in 22 bytes) is ggml's.
    monkeypatch.setitem(dequant.GGML_BLOCK, int(QT.Q5_0), (32, 22))
    theirs = GgufHeader.from_file(str(default_gguf))
    f = GgufFile(default_gguf)
    assert f.data_start == theirs.data_start
    ours = [(t.name, t.shape, t.type_id, t.offset, t.nbytes) for t in f.tensors]
    assert ours == [tuple(t) for t in theirs.tensors]
    assert {t.qtype for t in f.tensors} == {"F32", "Q5_0", "Q8_0", "Q4_K", "Q6_K"}
    embed = f.matrix("token_embd.weight")
    assert embed.shape == (262144, 640) and embed.qtype == "Q8_0"
    norm = f.array("output_norm.weight")
    start = f.data_start + f.tensor("output_norm.weight").offset
    np.testing.assert_array_equal(norm, np.fromfile(default_gguf, np.float32, 640, offset=start))


@pytest.mark.slow
def test_default_model_metadata_matches_transformers(default_gguf: Path) -> None:
    from transformers.integrations.gguf.reader import read_gguf_metadata

    theirs, names = read_gguf_metadata(str(default_gguf), ("tokenizer.ggml.tokens",))
    f = GgufFile(default_gguf)
    ours = f.metadata
    assert names == tuple(t.name for t in f.tensors)
    assert set(theirs) == set(ours)
    for key, value in theirs.items():
        mine = _python(ours[key])
        if isinstance(value, int) and isinstance(mine, list):
            assert len(mine) == value, key  # a string array transformers only counts
        else:
            assert mine == value, key
    assert len(ours["tokenizer.ggml.tokens"]) == 262144
    assert ours["tokenizer.ggml.scores"].dtype == np.float32
