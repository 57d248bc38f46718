"""hierdraft._core.linear_rows (the few-rows CPU kernel) and its use in cpu_matmul / TreeLogits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hierdraft import _core, cpu_matmul
from hierdraft.tree_forward import TreeLogits


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


@pytest.mark.skipif(not cpu_matmul.FAST_KERNEL, reason="the AVX2/FMA kernel is not available on this CPU")
def test_few_rows_linear_matches_torch_with_bias() -> None:
    torch.manual_seed(0)
    layer = torch.nn.Linear(48, 300)
    x = torch.randn(2, 5, 48)
    with torch.inference_mode():
        got = cpu_matmul.few_rows_linear(layer, x)
        want = layer(x)
    assert got.shape == want.shape == (2, 5, 300)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_small_batch_linears_restores_layers_and_threads(dtype: torch.dtype) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 3)).to(dtype)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    x = torch.randn(4, 8, dtype=dtype)
    try:
        with torch.inference_mode():
            want = model(x)
            with cpu_matmul.small_batch_linears(model, 4):
                assert all("forward" in vars(m) for m in model)
                # torch runs single-threaded only while the kernel does the linear layers
                kernel = cpu_matmul.FAST_KERNEL and dtype == torch.float32
                assert torch.get_num_threads() == (1 if kernel else 2)
                got = model(x)
        assert all("forward" not in vars(m) for m in model)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(got, want, rtol=tol, atol=tol)


def test_tree_logits_all_at_once_gives_the_rows_of_the_walk() -> None:
    torch.manual_seed(1)
    hidden = torch.randn(6, 16)
    head = torch.nn.Linear(16, 50, bias=False)
    calls: list[int] = []

    def apply(h: torch.Tensor) -> torch.Tensor:
        calls.append(h.shape[0])
        return head(h)

    with torch.inference_mode():
        walk = TreeLogits(hidden=hidden, head=apply)
        at_once = TreeLogits(hidden=hidden, head=apply, all_at_once=True)
        for index in ([0], [2, 4], [5]):
            torch.testing.assert_close(walk.rows(index), at_once.rows(index))
    assert calls == [1, 6, 2, 1]  # the walk computes what it is asked; all_at_once every row, once
