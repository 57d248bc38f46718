"""hierdraft._core.QuantTensor.linear_int8 (the int8 numeric mode) against a numpy implementation
of its documented rule (hierdraft_kernels' `int8` module docs), bit for bit: activations quantized
per block of 32 in float32, the weights' integer values read from the GGUF bytes (checked against
the gguf package's dequantization), exact integer block sums, and the per-block float32 sequence
with single-rounding fused multiply-adds. Also: closeness to the float32 mode within a derived
bound, row independence, the float-weight fallback and argument errors. Test data: blocks the
gguf package quantizes, random K-quant blocks, and slices of the default model's tensors."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gguf_blocks import K_SCALE_OFFSETS
from gguf_blocks import bits as _bits
from gguf_blocks import block as _block
from gguf_blocks import gguf_dequantize as _gguf_dequantize
from gguf_blocks import quant_tensor as _tensor
from gguf_blocks import quantize as _quantize
from hierdraft import _core

SIMPLE_TYPES = ["Q4_0", "Q5_0", "Q8_0"]
K_TYPES = ["Q4_K", "Q5_K", "Q6_K"]
BLOCK = 32
EPS32 = 2.0**-24


# --- float32 arithmetic with one rounding -------------------------------------------------------


def fma32(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """float32 `a * b + c` rounded once (to nearest, ties to even), elementwise.

    `a * b` is exact in float64; the float64 sum `s` and its exact error `e` (TwoSum) give the
    exact value `s + e`. Rounding `s` to float32 is then correct unless `s` sits exactly halfway
    between two float32 values while `e != 0`: the exact value then lies on `e`'s side."""
    a64, b64, c64 = (np.asarray(v, np.float32).astype(np.float64) for v in (a, b, c))
    p = a64 * b64
    s = p + c64
    z = s - p
    e = (p - (s - z)) + (c64 - z)
    r = s.astype(np.float32)
    r64 = r.astype(np.float64)
    other = np.nextafter(r, np.where(s > r64, np.float32(np.inf), np.float32(-np.inf)))
    tie = (s == (r64 + other.astype(np.float64)) / 2) & (e != 0)
    toward_other = np.sign(e) == np.sign(other.astype(np.float64) - r64)
    return np.where(tie & toward_other, other, r).astype(np.float32)


def _round_exact(value: Fraction) -> np.float32:
    """The float32 nearest to an exact rational (ties to even), by comparing neighbours."""
    guess = np.float32(float(value))
    candidates = [np.nextafter(guess, np.float32(-np.inf)), guess, np.nextafter(guess, np.float32(np.inf))]
    return min(candidates, key=lambda f: (abs(Fraction(float(f)) - value), int(f.view(np.uint32)) & 1))


def test_fma32_rounds_once() -> None:
    rng = np.random.default_rng(0)
    one_ulp = np.float32(2.0**-23)
    # exact values just below a float32 midpoint whose float64 sum lands on the midpoint itself
    a = [np.float32(1) + one_ulp, np.float32(1) + one_ulp, np.float32(3)]
    below_half_ulp = np.float32(2.0**-24) * (np.float32(1) - one_ulp)
    b = [below_half_ulp, -below_half_ulp, np.float32(0.1)]
    c = [np.float32(1) + one_ulp, np.float32(1) + one_ulp, np.float32(-0.3)]
    a += list(rng.standard_normal(3000).astype(np.float32))
    b += list((rng.standard_normal(3000) * 10.0 ** rng.integers(-6, 6, 3000)).astype(np.float32))
    c += list((rng.standard_normal(3000) * 10.0 ** rng.integers(-6, 6, 3000)).astype(np.float32))
    a, b, c = (np.array(v, np.float32) for v in (a, b, c))
    got = fma32(a, b, c)
    want = np.array(
        [_round_exact(Fraction(float(x)) * Fraction(float(y)) + Fraction(float(z))) for x, y, z in zip(a, b, c)],
        np.float32,
    )
    assert np.array_equal(_bits(got), _bits(want))
    # the constructed cases are ones where rounding the float64 sum again would be wrong
    naive = (a[:2].astype(np.float64) * b[:2] + c[:2]).astype(np.float32)
    assert not np.array_equal(_bits(naive), _bits(want[:2]))


# --- the rule in numpy ---------------------------------------------------------------------------


def quantize_activations(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(d (rows, blocks) float32, q (rows, blocks, 32) int64) by the documented rule."""
    blocks = x.astype(np.float32).reshape(x.shape[0], -1, BLOCK)
    finite = np.isfinite(blocks).all(axis=-1)
    amax = np.abs(np.where(np.isfinite(blocks), blocks, 0)).max(axis=-1)
    d = (amax / np.float32(127)).astype(np.float32)
    scaled = finite & (d >= np.finfo(np.float32).tiny)
    safe_d = np.where(scaled, d, np.float32(1))
    inv = (np.float32(1) / safe_d).astype(np.float32)
    p = (blocks * inv[..., None]).astype(np.float32)
    magnitude = np.abs(p)
    whole = np.floor(magnitude)
    rounded = np.sign(p) * (whole + np.floor(2 * (magnitude - whole)))  # half away from zero
    q = np.where(scaled[..., None], np.clip(rounded, -127, 127), 0).astype(np.int64)
    d = np.where(finite, np.where(scaled, d, np.float32(0)), np.float32(np.nan)).astype(np.float32)
    return d, q


def _f16(raw: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(raw).view("<f2")[..., 0].astype(np.float32)


class IntWeights:
    """A weight matrix's integer form, per value or per 32-column block: values `v` (rows, k),
    per-value integer `scale` (rows, k), and per block `mins` (int), `d` and `dmin` (float32)."""

    def __init__(self, raw: np.ndarray, qtype: str) -> None:
        rows = raw.shape[0]
        values, size = _block(qtype)
        b = raw.reshape(rows, -1, size).astype(np.int64)
        nb = b.shape[1]
        ones = np.ones((rows, nb, values), np.int64)
        self.min_term = qtype in ("Q4_K", "Q5_K")
        self.mins = np.zeros((rows, nb * values // BLOCK), np.int64)
        self.dmin = np.zeros((rows, nb * values // BLOCK), np.float32)
        if qtype == "Q8_0":
            v = b[..., 2:].astype(np.uint8).view(np.int8).astype(np.int64)
            scale, d = ones, _f16(raw.reshape(rows, nb, size)[..., 0:2])
        elif qtype == "Q4_0":
            qs = b[..., 2:18]
            v = np.concatenate([qs & 15, qs >> 4], axis=-1) - 8
            scale, d = ones, _f16(raw.reshape(rows, nb, size)[..., 0:2])
        elif qtype == "Q5_0":
            qh = b[..., 2] | b[..., 3] << 8 | b[..., 4] << 16 | b[..., 5] << 24
            high = (qh[..., None] >> np.arange(32)) & 1
            qs = b[..., 6:22]
            v = (np.concatenate([qs & 15, qs >> 4], axis=-1) | high << 4) - 16
            scale, d = ones, _f16(raw.reshape(rows, nb, size)[..., 0:2])
        elif qtype in ("Q4_K", "Q5_K"):
            s = b[..., 4:16]
            j = np.arange(8)
            low_j, top_j = j % 4, j >= 4
            sc = np.where(top_j, (s[..., 8 + low_j] & 15) | (s[..., low_j] >> 6) << 4, s[..., low_j] & 63)
            mn = np.where(top_j, (s[..., 8 + low_j] >> 4) | (s[..., 4 + low_j] >> 6) << 4, s[..., 4 + low_j] & 63)
            qs = b[..., 16:144] if qtype == "Q4_K" else b[..., 48:176]
            qs = qs.reshape(rows, nb, 4, 1, 32) >> np.array([0, 4]).reshape(1, 1, 1, 2, 1) & 15
            v = qs.reshape(rows, nb, 256)
            if qtype == "Q5_K":
                qh = b[..., 16:48]
                v = v | ((qh[..., None, :] >> j[:, None]) & 1).reshape(rows, nb, 256) << 4
            scale = np.repeat(sc, 32, axis=-1)
            self.mins = mn.reshape(rows, -1)
            self.dmin = np.repeat(_f16(raw.reshape(rows, nb, size)[..., 2:4]), 8, axis=-1)
            d = _f16(raw.reshape(rows, nb, size)[..., 0:2])
        elif qtype == "Q6_K":
            idx = np.arange(256)
            half, r = idx // 128, idx % 128
            low = (b[..., half * 64 + r % 64] >> (4 * (r // 64))) & 15
            high = (b[..., 128 + half * 32 + r % 32] >> (2 * (r // 32))) & 3
            v = (low | high << 4) - 32
            scale = np.repeat(b[..., 192:208].astype(np.uint8).view(np.int8).astype(np.int64), 16, axis=-1)
            d = _f16(raw.reshape(rows, nb, size)[..., 208:210])
        else:
            raise ValueError(qtype)
        self.v = v.reshape(rows, -1)
        self.scale = scale.reshape(rows, -1)
        self.d = np.repeat(d, values // BLOCK, axis=-1).astype(np.float32)
        self.qtype = qtype

    def dequantized_like_gguf(self) -> np.ndarray:
        """The float32 values gguf-py's dequantization computes from these integers."""
        if self.qtype in ("Q4_K", "Q5_K"):
            d = np.repeat(self.d, BLOCK, axis=-1)
            dmin_m = np.repeat(self.dmin * self.mins.astype(np.float32), BLOCK, axis=-1)
            return (d * self.scale.astype(np.float32)) * self.v.astype(np.float32) - dmin_m
        d = np.repeat(self.d, BLOCK, axis=-1)
        if self.qtype == "Q6_K":
            return (d * self.scale.astype(np.float32)) * self.v.astype(np.float32)
        if self.qtype == "Q8_0":
            return self.v.astype(np.float32) * d
        return d * self.v.astype(np.float32)


def linear_int8_reference(w: IntWeights, x: np.ndarray) -> np.ndarray:
    """The documented int8-mode product `x @ W.T`, in numpy."""
    dx, q = quantize_activations(x)
    n, blocks = w.d.shape
    sv = (w.scale * w.v).reshape(n, blocks, BLOCK)
    ints = np.einsum("rti,ati->rat", q, sv)  # exact int64 block sums
    qsum = q.sum(axis=-1)  # (rows, blocks)
    acc = np.zeros((x.shape[0], n), np.float32)
    for t in range(blocks):
        f = (w.d[None, :, t] * dx[:, t, None]).astype(np.float32)
        acc = fma32(f, ints[:, :, t].astype(np.float32), acc)
        if w.min_term:
            negative_min = -(w.dmin[:, t] * w.mins[:, t].astype(np.float32)).astype(np.float32)
            scaled_sum = (dx[:, t] * qsum[:, t].astype(np.float32)).astype(np.float32)
            acc = fma32(negative_min[None, :], scaled_sum[:, None], acc)
    return acc


def int8_bound(w: IntWeights, x: np.ndarray) -> np.ndarray:
    """How far the int8 mode may be from the exact product of the weights' values with the
    unquantized inputs: half a quantization step per input value (times the weight), plus one
    rounding per block factor and per accumulation."""
    dx, _ = quantize_activations(x)
    values = np.abs(np.repeat(w.d, BLOCK, axis=-1) * (w.scale * w.v)).astype(np.float64)
    values += np.abs(np.repeat(w.dmin * w.mins, BLOCK, axis=-1))
    step = np.repeat(dx.astype(np.float64), BLOCK, axis=-1)  # (rows, k)
    quant = step @ values.T * (0.5 + 1e-4)
    terms = (step * 128.0) @ values.T
    return quant + (w.d.shape[1] + 3) * EPS32 * terms


def exact_product(w: IntWeights, x: np.ndarray) -> np.ndarray:
    values = np.repeat(w.d.astype(np.float64), BLOCK, axis=-1) * (w.scale * w.v)
    values -= np.repeat(w.dmin.astype(np.float64) * w.mins, BLOCK, axis=-1)
    return x.astype(np.float64) @ values.T


# --- data ----------------------------------------------------------------------------------------


def _gguf_quantized(rng: np.random.Generator, qtype: str, rows: int, cols: int) -> np.ndarray:
    data = (rng.standard_normal((rows, cols)) * rng.choice([1e-3, 1.0, 50.0], size=(rows, 1))).astype(np.float32)
    data[rng.random((rows, cols)) < 0.05] = 0.0
    return _quantize(data, qtype)


def _random_k_blocks(rng: np.random.Generator, qtype: str, rows: int, blocks: int) -> np.ndarray:
    """Random bytes with moderate finite f16 scales (exponent field 7..14, either sign)."""
    size = _block(qtype)[1]
    raw = rng.integers(0, 256, size=(rows, blocks, size), dtype=np.uint8)
    for at in K_SCALE_OFFSETS[qtype]:
        exponent = (rng.integers(7, 15, (rows, blocks)) << 10).astype(np.uint16)
        bits = rng.integers(0, 1 << 16, size=(rows, blocks), dtype=np.uint16) & 0x83FF | exponent
        raw[:, :, at : at + 2] = bits.astype("<u2")[..., None].view(np.uint8).reshape(rows, blocks, 2)
    return raw.reshape(rows, blocks * size)


def _inputs(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    x = rng.standard_normal((rows, cols), dtype=np.float32) * np.float32(3.0)
    blocks = x.reshape(rows, -1, BLOCK)
    pick = rng.random(blocks.shape[:2])
    blocks[pick < 0.05] = 0.0
    # exact ties: the largest value 127 s sets d = s, and (j + 0.5) s lands halfway
    ties = pick > 0.9
    s = np.float32(2.0) ** rng.integers(-8, 4, size=blocks.shape[:2]).astype(np.float32)
    tied = (rng.integers(-127, 127, blocks.shape) + 0.5).astype(np.float32) * s[..., None]
    tied[..., 0] = 127 * s
    blocks[ties] = tied[ties]
    return np.ascontiguousarray(blocks.reshape(rows, cols))


def _linear_int8(t: _core.QuantTensor, x: np.ndarray) -> np.ndarray:
    out = np.full((x.shape[0], t.shape[0]), np.nan, np.float32)
    t.linear_int8(x, out)
    return out


def _check(raw: np.ndarray, qtype: str, x: np.ndarray) -> None:
    w = IntWeights(raw, qtype)
    got = _linear_int8(_tensor(raw, qtype), x)
    assert np.array_equal(_bits(got), _bits(linear_int8_reference(w, x)))
    assert np.all(np.abs(got - exact_product(w, x)) <= int8_bound(w, x))


# --- tests ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("qtype", SIMPLE_TYPES + K_TYPES)
def test_integer_form_dequantizes_like_gguf(qtype: str) -> None:
    """The reference's reading of the blocks gives back gguf-py's values (so its integers are
    the format's)."""
    rng = np.random.default_rng(1)
    raw = _random_k_blocks(rng, qtype, 9, 3) if qtype in K_TYPES else _gguf_quantized(rng, qtype, 9, 96)
    want = _gguf_dequantize(raw, qtype)
    assert np.array_equal(_bits(IntWeights(raw, qtype).dequantized_like_gguf()), _bits(want))


@settings(max_examples=50, deadline=None)
@given(
    qtype=st.sampled_from(SIMPLE_TYPES),
    rows=st.integers(1, 40),
    blocks=st.integers(1, 8),
    nx=st.integers(1, 64),
    seed=st.integers(0, 2**32 - 1),
)
def test_gguf_quantized_blocks_match_the_rule_bit_for_bit(
    qtype: str, rows: int, blocks: int, nx: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    _check(_gguf_quantized(rng, qtype, rows, blocks * BLOCK), qtype, _inputs(rng, nx, blocks * BLOCK))


@settings(max_examples=40, deadline=None)
@given(
    qtype=st.sampled_from(K_TYPES),
    rows=st.integers(1, 24),
    blocks=st.integers(1, 3),
    nx=st.integers(1, 64),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_k_blocks_match_the_rule_bit_for_bit(
    qtype: str, rows: int, blocks: int, nx: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    _check(_random_k_blocks(rng, qtype, rows, blocks), qtype, _inputs(rng, nx, blocks * 256))


def test_prefill_sized_inputs_match_the_rule() -> None:
    rng = np.random.default_rng(7)
    _check(_random_k_blocks(rng, "Q6_K", 21, 2), "Q6_K", _inputs(rng, 300, 512))
    _check(_gguf_quantized(rng, "Q5_0", 45, 640), "Q5_0", _inputs(rng, 200, 640))


@pytest.fixture(scope="module")
def default_model() -> _core.GgufFile:
    from hierdraft.models import default_gguf_path

    return _core.GgufFile(default_gguf_path())


def _model_rows(model: _core.GgufFile, name: str, rows: slice) -> tuple[np.ndarray, str]:
    info = model.tensor(name)
    assert info.nbytes is not None
    at = model.data_start + info.offset
    raw = np.memmap(model.path, dtype=np.uint8, mode="r", offset=at, shape=(info.nbytes,))
    return np.ascontiguousarray(raw.reshape(info.shape[0], -1)[rows]), info.qtype


@pytest.mark.parametrize(
    "name",
    [
        "token_embd.weight",  # Q8_0, the tied LM head
        "blk.0.attn_q.weight",  # Q5_0
        "blk.0.ffn_gate.weight",  # Q5_0
        "blk.0.attn_output.weight",  # Q4_K
        "blk.0.ffn_down.weight",  # Q6_K
        "blk.3.attn_v.weight",  # Q8_0
    ],
)
def test_default_model_slices_match_the_rule(default_model: _core.GgufFile, name: str) -> None:
    raw, qtype = _model_rows(default_model, name, slice(8, 61))
    w = IntWeights(raw, qtype)
    whole = default_model.matrix(name)
    rng = np.random.default_rng(len(name))
    for nx in (1, 5, 17, 64):
        x = _inputs(rng, nx, whole.shape[1])
        want = linear_int8_reference(w, x)
        assert np.array_equal(_bits(_linear_int8(_tensor(raw, qtype), x)), _bits(want))
        if whole.shape[0] <= 4096:  # the same rows inside the whole mapped tensor
            assert np.array_equal(_bits(_linear_int8(whole, x)[:, 8:61]), _bits(want))


def test_close_to_the_float32_mode(default_model: _core.GgufFile) -> None:
    """int8 and float32 modes differ by at most the int8 bound plus float32's own rounding."""
    for name in ("blk.1.ffn_up.weight", "blk.1.ffn_down.weight", "blk.1.attn_output.weight"):
        raw, qtype = _model_rows(default_model, name, slice(0, 128))
        w, t = IntWeights(raw, qtype), _tensor(raw, qtype)
        x = _inputs(np.random.default_rng(3), 9, t.shape[1])
        fp32 = np.empty((9, t.shape[0]), np.float32)
        t.linear(x, fp32)
        # |int8 - fp32| <= |int8 - exact| + |exact - exact over fp32's weights| + |that - fp32|
        fp32_values = t.dequantize().astype(np.float64)
        x64 = x.astype(np.float64)
        fp32_bound = (t.shape[1] + 2) * EPS32 * (np.abs(x64) @ np.abs(fp32_values).T)
        weights_gap = np.abs(exact_product(w, x) - x64 @ fp32_values.T)
        diff = np.abs(_linear_int8(t, x).astype(np.float64) - fp32)
        assert np.all(diff <= int8_bound(w, x) + weights_gap + fp32_bound)
        assert np.any(diff > 0)  # a different numeric mode, not a copy of the float32 one


def test_a_row_does_not_depend_on_its_batch() -> None:
    rng = np.random.default_rng(5)
    t = _tensor(_random_k_blocks(rng, "Q4_K", 50, 2), "Q4_K")
    x = _inputs(rng, 23, 512)
    batch = _linear_int8(t, x)
    for r in (0, 7, 22):
        assert np.array_equal(_bits(_linear_int8(t, x[r : r + 1])[0]), _bits(batch[r]))


@pytest.mark.parametrize("qtype", ["F32", "F16", "BF16"])
def test_float_tensors_compute_as_linear(qtype: str) -> None:
    rng = np.random.default_rng(2)
    data = rng.standard_normal((11, 45)).astype(np.float32)
    raw = _quantize(data, qtype)
    t = _tensor(raw, qtype)
    x = rng.standard_normal((3, 45), dtype=np.float32)
    want = np.empty((3, 11), np.float32)
    t.linear(x, want)
    assert np.array_equal(_bits(_linear_int8(t, x)), _bits(want))


def test_non_finite_inputs_make_their_row_nan() -> None:
    rng = np.random.default_rng(8)
    t = _tensor(_gguf_quantized(rng, "Q8_0", 6, 64), "Q8_0")
    x = rng.standard_normal((2, 64), dtype=np.float32)
    x[1, 40] = np.inf
    out = _linear_int8(t, x)
    assert np.isfinite(out[0]).all() and np.isnan(out[1]).all()


def test_bad_arguments_raise_clear_errors() -> None:
    t = _tensor(_gguf_quantized(np.random.default_rng(0), "Q8_0", 2, 32), "Q8_0")
    with pytest.raises(ValueError, match="x has 16 columns"):
        t.linear_int8(np.ones((3, 16), np.float32), np.empty((3, 2), np.float32))
    with pytest.raises(ValueError, match=r"out has shape \(3, 3\)"):
        t.linear_int8(np.ones((3, 32), np.float32), np.empty((3, 3), np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        t.linear_int8(np.ones((3, 64), np.float32)[:, ::2], np.empty((3, 2), np.float32))
    with pytest.raises(TypeError):
        t.linear_int8(np.ones((3, 32), np.float64), np.empty((3, 2), np.float32))
