"""hierdraft._core.linear_rows (the few-rows CPU kernel); its use in the model: tests/test_cpu_matmul.py."""

from __future__ import annotations

import numpy as np
import pytest

from hierdraft import _core


def _arrays(rows: int, n: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((rows, k), dtype=np.float32), rng.standard_normal((n, k), dtype=np.float32)


@pytest.mark.parametrize(("rows", "n", "k"), [(1, 1, 1), (3, 100, 7), (17, 4099, 64), (5, 33, 640)])
def test_matches_numpy(rows: int, n: int, k: int) -> None:
    x, w = _arrays(rows, n, k)
    out = np.full((rows, n), np.nan, dtype=np.float32)
    _core.linear_rows(x, w, out)
    want = x.astype(np.float64) @ w.astype(np.float64).T
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-4 * np.sqrt(k))


def test_each_row_is_independent_of_the_batch() -> None:
    x, w = _arrays(9, 2000, 96, seed=3)
    batch = np.empty((9, 2000), dtype=np.float32)
    _core.linear_rows(x, w, batch)
    for r in range(9):
        alone = np.empty((1, 2000), dtype=np.float32)
        _core.linear_rows(x[r : r + 1], w, alone)
        assert np.array_equal(batch[r], alone[0])


def test_bad_arguments_raise() -> None:
    x, w = _arrays(2, 5, 4)
    with pytest.raises(ValueError, match="columns"):
        _core.linear_rows(x, w[:, :3].copy(), np.empty((2, 5), np.float32))
    with pytest.raises(ValueError, match="out has shape"):
        _core.linear_rows(x, w, np.empty((5, 2), np.float32))
    strided = np.hstack([x, x])[:, ::2]  # (2, 4) view, not C-contiguous
    with pytest.raises(ValueError, match="C-contiguous"):
        _core.linear_rows(strided, w, np.empty((2, 5), np.float32))
    with pytest.raises(TypeError):
        _core.linear_rows(x.astype(np.float64), w, np.empty((2, 5), np.float32))
    with pytest.raises(ValueError, match="0 columns"):
        _core.linear_rows(np.empty((2, 0), np.float32), np.empty((5, 0), np.float32), np.empty((2, 5), np.float32))


def test_fortran_ordered_arrays_are_refused_not_misread() -> None:
    """numpy calls a Fortran-ordered array contiguous too; read as rows it would give wrong numbers."""
    rng = np.random.default_rng(1)
    x = np.asfortranarray(rng.standard_normal((3, 64), dtype=np.float32))
    w = rng.standard_normal((8, 64), dtype=np.float32)
    quant = _core.QuantTensor.from_bytes("F32", w.tobytes(), 8, 64)
    calls = {
        "linear_rows x": lambda: _core.linear_rows(x, w, np.empty((3, 8), np.float32)),
        "linear_rows weight": lambda: _core.linear_rows(np.ascontiguousarray(x), np.asfortranarray(w), np.empty((3, 8), np.float32)),
        "linear_rows out": lambda: _core.linear_rows(np.ascontiguousarray(x), w, np.empty((3, 8), np.float32, order="F")),
        "QuantTensor.linear": lambda: quant.linear(x, np.empty((3, 8), np.float32)),
        "QuantTensor.linear_int8": lambda: quant.linear_int8(x, np.empty((3, 8), np.float32)),
        "qlinear_group": lambda: _core.qlinear_group(x, [quant], [np.empty((3, 8), np.float32)]),
        "rms_norm": lambda: _core.rms_norm(x, np.ones(64, np.float32), 1e-6, np.empty((3, 64), np.float32)),
        "attention mask": lambda: _core.attention(
            np.zeros((1, 3, 8), np.float32), np.zeros((1, 5, 8), np.float32), np.zeros((1, 5, 8), np.float32),
            np.empty((3, 1, 8), np.float32), 1.0, np.asfortranarray(np.ones((3, 5), bool)),
        ),
    }
    for call in calls.values():
        with pytest.raises(ValueError, match="C-contiguous"):
            call()


@pytest.mark.parametrize("rows,heads,dim", [(1, 4, 256), (7, 1, 256), (5, 3, 10)])
def test_rotary_equals_transformers_bit_for_bit(rows: int, heads: int, dim: int) -> None:
    import torch
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    rng = np.random.default_rng(rows * heads)
    x = rng.standard_normal((rows, heads, dim), dtype=np.float32) * 30
    angles = rng.uniform(-500, 500, size=(rows, dim)).astype(np.float32)
    cos, sin = np.cos(angles), np.sin(angles)
    out = np.full_like(x, np.nan)
    _core.rotary(x, cos, sin, out)
    # transformers' layout: (1, heads, rows, dim) and angles (1, rows, dim)
    t = torch.from_numpy(x).transpose(0, 1).unsqueeze(0)
    want, _ = apply_rotary_pos_emb(t, t, torch.from_numpy(cos)[None], torch.from_numpy(sin)[None])
    assert np.array_equal(out.view(np.uint32), want[0].transpose(0, 1).contiguous().numpy().view(np.uint32))


def test_rotary_bad_shapes_raise() -> None:
    x = np.zeros((2, 1, 8), np.float32)
    with pytest.raises(ValueError, match="must both have shape"):
        _core.rotary(x, np.zeros((2, 6), np.float32), np.zeros((2, 8), np.float32), np.empty_like(x))
    with pytest.raises(ValueError, match="out has shape"):
        _core.rotary(x, np.zeros((2, 8), np.float32), np.zeros((2, 8), np.float32), np.empty((2, 2, 8), np.float32))
    odd = np.zeros((2, 1, 7), np.float32)
    with pytest.raises(ValueError, match="even"):
        _core.rotary(odd, np.zeros((2, 7), np.float32), np.zeros((2, 7), np.float32), np.empty_like(odd))
