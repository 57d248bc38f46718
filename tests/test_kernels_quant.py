"""hierdraft._core.QuantTensor (GGUF-block weights and the quantized linear kernel) against the
gguf package's numpy (de)quantizers, bit for bit, and against linear_rows on the dequantized
weights, bit for bit."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as GT
from hypothesis import given, settings
from hypothesis import strategies as st

from gguf_blocks import K_SCALE_OFFSETS
from gguf_blocks import bits as _bits
from gguf_blocks import block as _block
from gguf_blocks import gguf_dequantize as _gguf_dequantize
from gguf_blocks import quant_tensor as _tensor
from gguf_blocks import quantize as _quantize
from hierdraft import _core

SIMPLE_TYPES = ["F32", "F16", "BF16", "Q4_0", "Q5_0", "Q8_0"]
K_TYPES = ["Q4_K", "Q5_K", "Q6_K"]
# byte offsets of the f16 scales inside one block of each K type


def _assert_linear_matches(t: _core.QuantTensor, want: np.ndarray, x: np.ndarray) -> None:
    got = np.full((x.shape[0], t.shape[0]), np.nan, dtype=np.float32)
    t.linear(x, got)
    ref = np.empty_like(got)
    _core.linear_rows(x, want, ref)
    assert np.array_equal(_bits(got), _bits(ref))


def _random_k_blocks(rng: np.random.Generator, qtype: str, rows: int, blocks: int) -> np.ndarray:
    """Random bytes for `rows` x `blocks` blocks, with finite f16 scales (normal and subnormal)."""
    size = _block(qtype)[1]
    raw = rng.integers(0, 256, size=(rows, blocks, size), dtype=np.uint8)
    for at in K_SCALE_OFFSETS[qtype]:
        bits = rng.integers(0, 1 << 16, size=(rows, blocks), dtype=np.uint16)
        bits = np.where((bits & 0x7C00) == 0x7C00, bits & 0xBFFF, bits)  # exponent != all ones
        bits = np.where(rng.random((rows, blocks)) < 0.5, bits & 0x83FF | 0x2C00, bits)  # moderate
        raw[:, :, at : at + 2] = bits.astype("<u2")[..., None].view(np.uint8).reshape(rows, blocks, 2)
    return raw.reshape(rows, blocks * size)


@settings(max_examples=60, deadline=None)
@given(
    qtype=st.sampled_from(SIMPLE_TYPES),
    rows=st.integers(1, 40),
    blocks=st.integers(1, 5),
    tail=st.integers(0, 31),
    nx=st.integers(1, 64),
    seed=st.integers(0, 2**32 - 1),
)
def test_quantized_by_gguf_dequantizes_and_multiplies_bit_for_bit(
    qtype: str, rows: int, blocks: int, tail: int, nx: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    block = _block(qtype)[0]
    cols = blocks * 32 + (tail if block == 1 else 0)  # float types: any width, tails included
    scale = rng.choice([1e-3, 1.0, 50.0], size=(rows, 1))
    data = (rng.standard_normal((rows, cols)) * scale).astype(np.float32)
    data[rng.random((rows, cols)) < 0.05] = 0.0
    raw = _quantize(data, qtype)
    want = _gguf_dequantize(raw, qtype)
    t = _tensor(raw, qtype)
    assert t.shape == (rows, cols) and t.qtype == qtype and t.nbytes == raw.size
    assert np.array_equal(_bits(t.dequantize()), _bits(want))
    _assert_linear_matches(t, want, rng.standard_normal((nx, cols), dtype=np.float32))


@settings(max_examples=40, deadline=None)
@given(
    qtype=st.sampled_from(K_TYPES),
    rows=st.integers(1, 24),
    blocks=st.integers(1, 3),
    nx=st.integers(1, 64),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_k_blocks_dequantize_and_multiply_bit_for_bit(
    qtype: str, rows: int, blocks: int, nx: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    raw = _random_k_blocks(rng, qtype, rows, blocks)
    want = _gguf_dequantize(raw, qtype)
    t = _tensor(raw, qtype)
    assert np.array_equal(_bits(t.dequantize()), _bits(want))
    _assert_linear_matches(t, want, rng.standard_normal((nx, t.shape[1]), dtype=np.float32))


@pytest.mark.parametrize("nx", [1, 2, 3])
@pytest.mark.parametrize("qtype", SIMPLE_TYPES + K_TYPES)
def test_one_to_three_rows_multiply_bit_for_bit(qtype: str, nx: int) -> None:
    """One and two rows take the kernel's register-only path, three the tiled one: same bits."""
    rng = np.random.default_rng(nx)
    rows, cols = 37, 512
    if qtype in K_TYPES:
        raw = _random_k_blocks(rng, qtype, rows, cols // 256)
    else:
        raw = _quantize(rng.standard_normal((rows, cols), dtype=np.float32), qtype)
    x = rng.standard_normal((nx, cols), dtype=np.float32)
    _assert_linear_matches(_tensor(raw, qtype), _gguf_dequantize(raw, qtype), x)


@pytest.mark.parametrize("nx", [100, 300])
@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_K", "F16"])
def test_prefill_sized_inputs_multiply_bit_for_bit(qtype: str, nx: int) -> None:
    rng = np.random.default_rng(nx)
    rows, cols = 70, 512
    if qtype in K_TYPES:
        raw = _random_k_blocks(rng, qtype, rows, cols // 256)
    else:
        raw = _quantize(rng.standard_normal((rows, cols), dtype=np.float32), qtype)
    _assert_linear_matches(_tensor(raw, qtype), _gguf_dequantize(raw, qtype), rng.standard_normal((nx, cols), dtype=np.float32))


@pytest.mark.parametrize("qtype", ["F16", "BF16"])
def test_every_16_bit_pattern_converts_as_numpy_does(qtype: str) -> None:
    """All 65536 patterns, NaNs (signalling ones too), infinities and subnormals included."""
    raw = np.arange(1 << 16, dtype=np.uint32).astype("<u2").view(np.uint8).reshape(256, 512)
    want = _gguf_dequantize(raw, qtype)
    assert np.array_equal(_bits(_tensor(raw, qtype).dequantize()), _bits(want))


def test_a_row_does_not_depend_on_its_batch() -> None:
    rng = np.random.default_rng(5)
    raw = _random_k_blocks(rng, "Q6_K", 50, 2)
    t = _tensor(raw, "Q6_K")
    x = rng.standard_normal((23, 512), dtype=np.float32)
    batch = np.empty((23, 50), np.float32)
    t.linear(x, batch)
    for r in (0, 7, 22):
        alone = np.empty((1, 50), np.float32)
        t.linear(x[r : r + 1], alone)
        assert np.array_equal(_bits(alone[0]), _bits(batch[r]))


@pytest.mark.parametrize("nx", [1, 2, 5, 40])
def test_a_group_equals_separate_products_bit_for_bit(nx: int) -> None:
    """`qlinear_group` (one dispatch for several matrices over the same rows) = each `linear`."""
    rng = np.random.default_rng(nx)
    cols = 512
    tensors = [
        _tensor(_quantize(rng.standard_normal((37, cols), dtype=np.float32), "Q8_0"), "Q8_0"),
        _tensor(_random_k_blocks(rng, "Q4_K", 9, cols // 256), "Q4_K"),
        _tensor(_quantize(rng.standard_normal((64, cols), dtype=np.float32), "Q5_0"), "Q5_0"),
    ]
    x = rng.standard_normal((nx, cols), dtype=np.float32)
    outs = [np.full((nx, t.shape[0]), np.nan, np.float32) for t in tensors]
    _core.qlinear_group(x, tensors, outs)
    for t, got in zip(tensors, outs):
        want = np.empty_like(got)
        t.linear(x, want)
        assert np.array_equal(_bits(got), _bits(want))


def test_a_bad_group_raises_clear_errors() -> None:
    rng = np.random.default_rng(3)
    a = _tensor(_quantize(rng.standard_normal((8, 64), dtype=np.float32), "Q8_0"), "Q8_0")
    b = _tensor(_quantize(rng.standard_normal((8, 96), dtype=np.float32), "Q8_0"), "Q8_0")
    x = np.zeros((2, 64), np.float32)
    with pytest.raises(ValueError, match="one output per tensor"):
        _core.qlinear_group(x, [a, a], [np.zeros((2, 8), np.float32)])
    with pytest.raises(ValueError, match="at least one tensor"):
        _core.qlinear_group(x, [], [])
    with pytest.raises(ValueError, match="tensor 1 has 96 columns"):
        _core.qlinear_group(x, [a, b], [np.zeros((2, 8), np.float32), np.zeros((2, 8), np.float32)])
    with pytest.raises(TypeError, match="already borrowed"):  # one array cannot take two products
        out = np.zeros((2, 8), np.float32)
        _core.qlinear_group(x, [a, a], [out, out])
    with pytest.raises(ValueError, match="output 0 has shape"):
        _core.qlinear_group(x, [a], [np.zeros((3, 8), np.float32)])
    with pytest.raises(ValueError, match="C-contiguous"):
        _core.qlinear_group(np.zeros((64, 2), np.float32).T, [a], [np.zeros((2, 8), np.float32)])


def test_dequantize_rows_and_select_rows_pick_whole_rows() -> None:
    rng = np.random.default_rng(9)
    raw = _quantize(rng.standard_normal((30, 64), dtype=np.float32), "Q5_0")
    t = _tensor(raw, "Q5_0")
    full = t.dequantize()
    ids = np.array([29, 0, 3, 3, 17], dtype=np.int64)
    out = np.empty((5, 64), np.float32)
    t.dequantize_rows(ids, out)
    assert np.array_equal(_bits(out), _bits(full[ids]))
    picked = t.select_rows(ids)
    assert picked.shape == (5, 64) and picked.qtype == "Q5_0" and picked.type_id == t.type_id
    assert np.array_equal(_bits(picked.dequantize()), _bits(full[ids]))
    strided = np.arange(10, dtype=np.int64)[::3]  # ids may be any 1-D view
    out = np.empty((4, 64), np.float32)
    t.dequantize_rows(strided, out)
    assert np.array_equal(_bits(out), _bits(full[strided]))


def test_from_bytes_accepts_bytes_and_reports_the_type() -> None:
    values = np.full((2, 32), 127.0, np.float32)  # scale 1 and quants 127: exact
    raw = _quantize(values, "Q8_0")
    t = _core.QuantTensor.from_bytes("q8_0", raw.tobytes(), 2, 32)
    assert (t.qtype, t.type_id, t.shape, t.nbytes) == ("Q8_0", 8, (2, 32), 68)
    assert np.array_equal(t.dequantize(), values)
    assert "Q8_0" in repr(t)


def test_bad_inputs_raise_clear_errors() -> None:
    raw = _quantize(np.ones((2, 32), np.float32), "Q8_0").reshape(-1)
    qt = _core.QuantTensor
    with pytest.raises(ValueError, match="unsupported tensor type"):
        qt.from_bytes("Q4_1", raw, 2, 32)
    with pytest.raises(ValueError, match="takes 68 bytes, data has 67"):
        qt.from_bytes("Q8_0", raw[:-1], 2, 32)
    with pytest.raises(ValueError, match="whole blocks of 32"):
        qt.from_bytes("Q8_0", raw, 2, 31)
    with pytest.raises(ValueError, match="rows must be non-negative"):
        qt.from_bytes("Q8_0", raw, -2, 32)
    with pytest.raises(ValueError, match="at least one row"):
        qt.from_bytes("Q8_0", b"", 0, 32)
    with pytest.raises(TypeError, match="uint8"):
        qt.from_bytes("Q8_0", raw.astype(np.float32), 2, 32)
    with pytest.raises(TypeError, match="bytes or a 1-D uint8"):
        qt.from_bytes("Q8_0", list(raw), 2, 32)
    with pytest.raises(ValueError, match="C-contiguous"):
        qt.from_bytes("Q8_0", np.repeat(raw, 2)[::2], 2, 32)

    t = qt.from_bytes("Q8_0", raw, 2, 32)
    x = np.ones((3, 32), np.float32)
    with pytest.raises(ValueError, match="x has 16 columns"):
        t.linear(np.ones((3, 16), np.float32), np.empty((3, 2), np.float32))
    with pytest.raises(ValueError, match="out has shape"):
        t.linear(x, np.empty((2, 3), np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        t.linear(np.ones((3, 64), np.float32)[:, ::2], np.empty((3, 2), np.float32))
    with pytest.raises(TypeError):
        t.linear(x.astype(np.float64), np.empty((3, 2), np.float32))
    with pytest.raises(ValueError, match=r"ids\[1\] = 2 is out of range"):
        t.dequantize_rows(np.array([0, 2]), np.empty((2, 32), np.float32))
    with pytest.raises(ValueError, match="out of range"):
        t.dequantize_rows(np.array([-1]), np.empty((1, 32), np.float32))
    with pytest.raises(ValueError, match="out has shape"):
        t.dequantize_rows(np.array([0]), np.empty((2, 32), np.float32))
    with pytest.raises(ValueError, match="out of range"):
        t.select_rows(np.array([5]))
    with pytest.raises(ValueError, match="at least one row"):
        t.select_rows(np.array([], dtype=np.int64))


# --- the default model's own tensors -------------------------------------------------------------

_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def _skip_value(blob: memoryview, pos: int, vtype: int) -> int:
    if vtype == 8:  # string
        (length,) = struct.unpack_from("<Q", blob, pos)
        return pos + 8 + length
    if vtype == 9:  # array
        etype, count = struct.unpack_from("<IQ", blob, pos)
        pos += 12
        if etype in _SCALAR_SIZES:
            return pos + count * _SCALAR_SIZES[etype]
        for _ in range(count):
            pos = _skip_value(blob, pos, etype)
        return pos
    return pos + _SCALAR_SIZES[vtype]


def _gguf_tensors(path: Path) -> tuple[np.memmap, dict[str, tuple[tuple[int, ...], int, int]]]:
    """The file as a uint8 memmap and `{name: (shape, ggml type, absolute offset)}` (a minimal
    reader of the GGUF v3 tensor table: gguf.GGUFReader takes many seconds on this file)."""
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    blob = memoryview(mm)
    assert bytes(blob[:4]) == b"GGUF"
    _, n_tensors, n_meta = struct.unpack_from("<IQQ", blob, 4)
    pos, alignment = 24, 32
    for _ in range(n_meta):
        (klen,) = struct.unpack_from("<Q", blob, pos)
        key = bytes(blob[pos + 8 : pos + 8 + klen]).decode()
        (vtype,) = struct.unpack_from("<I", blob, pos + 8 + klen)
        pos += 12 + klen
        if key == "general.alignment":
            (alignment,) = struct.unpack_from("<I", blob, pos)
        pos = _skip_value(blob, pos, vtype)
    entries = []
    for _ in range(n_tensors):
        (nlen,) = struct.unpack_from("<Q", blob, pos)
        name = bytes(blob[pos + 8 : pos + 8 + nlen]).decode()
        pos += 8 + nlen
        (ndim,) = struct.unpack_from("<I", blob, pos)
        dims = struct.unpack_from(f"<{ndim}Q", blob, pos + 4)
        pos += 4 + 8 * ndim
        ggml_type, offset = struct.unpack_from("<IQ", blob, pos)
        pos += 12
        entries.append((name, tuple(reversed(dims)), ggml_type, offset))
    start = (pos + alignment - 1) // alignment * alignment
    return mm, {name: (shape, t, start + off) for name, shape, t, off in entries}


@pytest.fixture(scope="module")
def model_tensors() -> tuple[np.memmap, dict[str, tuple[tuple[int, ...], int, int]]]:
    from hierdraft.models import default_gguf_path

    return _gguf_tensors(default_gguf_path())


def _model_rows(model_tensors, name: str, rows: slice) -> tuple[np.ndarray, str, int]:
    mm, table = model_tensors
    shape, type_id, offset = table[name]
    qtype = GT(type_id).name
    values, size = _block(qtype)
    row_bytes = shape[1] // values * size
    raw = np.asarray(mm[offset : offset + shape[0] * row_bytes]).reshape(shape[0], row_bytes)
    return np.ascontiguousarray(raw[rows]), qtype, shape[1]


@pytest.mark.parametrize(
    "name",
    [
        "token_embd.weight",  # Q8_0
        "blk.0.attn_q.weight",  # Q5_0
        "blk.0.attn_output.weight",  # Q4_K
        "blk.0.ffn_down.weight",  # Q6_K
        "blk.0.attn_v.weight",  # Q8_0
    ],
)
def test_model_tensors_dequantize_and_multiply_bit_for_bit(model_tensors, name: str) -> None:
    raw, qtype, cols = _model_rows(model_tensors, name, slice(0, 96))
    want = _gguf_dequantize(raw, qtype)
    t = _tensor(raw, qtype)
    assert t.shape == (96, cols)
    assert np.array_equal(_bits(t.dequantize()), _bits(want))
    rng = np.random.default_rng(len(name))
    for nx in (1, 5, 17, 64):
        _assert_linear_matches(t, want, rng.standard_normal((nx, cols), dtype=np.float32))


def test_model_embedding_lookup_matches_gguf(model_tensors) -> None:
    raw, qtype, cols = _model_rows(model_tensors, "token_embd.weight", slice(None))
    t = _tensor(raw, qtype)
    ids = np.array([0, 2, 106, 262143, 17, 2], dtype=np.int64)
    out = np.empty((len(ids), cols), np.float32)
    t.dequantize_rows(ids, out)
    assert np.array_equal(_bits(out), _bits(_gguf_dequantize(raw[ids], qtype)))
