"""hierdraft's kernels inside a model (hierdraft.cpu_matmul) and the head rows of a tree (TreeLogits)."""

from __future__ import annotations

import pytest
import torch

from hierdraft import cpu_matmul
from hierdraft.tree_forward import TreeLogits

needs_kernel = pytest.mark.skipif(not cpu_matmul.FAST_KERNEL, reason="the AVX2/FMA kernel is not available on this CPU")


@needs_kernel
def test_kernel_linear_matches_torch_with_bias() -> None:
    torch.manual_seed(0)
    layer = torch.nn.Linear(48, 300)
    x = torch.randn(2, 5, 48)
    with torch.inference_mode():
        got = cpu_matmul.kernel_linear(layer, x)
        want = layer(x)
    assert got.shape == want.shape == (2, 5, 300)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@needs_kernel
@pytest.mark.parametrize("rows", [1, 2, 7, 64, 65, 200])
def test_kernel_linear_rows_do_not_depend_on_their_batch(rows: int) -> None:
    """The batch-invariance rule, at every row count (prefill sizes included)."""
    torch.manual_seed(rows)
    layer = torch.nn.Linear(96, 130, bias=False)
    x = torch.randn(rows, 96)
    with torch.inference_mode():
        batch = cpu_matmul.kernel_linear(layer, x)
        for r in {0, rows // 2, rows - 1}:
            assert torch.equal(batch[r], cpu_matmul.kernel_linear(layer, x[r : r + 1])[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernel_linears_and_threads_restore_the_model(dtype: torch.dtype) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 3)).to(dtype)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    x = torch.randn(4, 8, dtype=dtype)
    kernel = cpu_matmul.FAST_KERNEL and dtype == torch.float32
    try:
        with torch.inference_mode():
            want = model(x)
            with cpu_matmul.kernel_linears(model), cpu_matmul.kernel_threads(model):
                assert all(("forward" in vars(m)) == kernel for m in model)
                # torch runs single-threaded only while the kernel does the linear layers
                assert torch.get_num_threads() == (1 if kernel else 2)
                got = model(x)
        assert all("forward" not in vars(m) for m in model)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert cpu_matmul.uses_kernels(model) == kernel
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


def test_tree_logits_compute_each_row_once_and_take_likely_rows_along() -> None:
    torch.manual_seed(2)
    hidden = torch.randn(7, 16)
    head = torch.nn.Linear(16, 50, bias=False)
    calls: list[list[float]] = []

    def apply(h: torch.Tensor) -> torch.Tensor:
        calls.append(h[:, 0].tolist())
        return head(h)

    with torch.inference_mode():
        want = head(hidden)
        logits = TreeLogits(hidden=hidden, head=apply, likely=[0, 1, 3])
        torch.testing.assert_close(logits.rows([0]), want[[0]])
        assert len(calls) == 1 and len(calls[0]) == 3  # rows 0, 1, 3 in one call
        torch.testing.assert_close(logits.rows([1, 3]), want[[1, 3]])
        assert len(calls) == 1  # already computed
        torch.testing.assert_close(logits.rows([5, 5, 1]), want[[5, 5, 1]])
        assert len(calls) == 2 and len(calls[1]) == 1  # only row 5 was missing, once


def test_likely_rows_follow_the_first_child_chain() -> None:
    import numpy as np

    from hierdraft.tree_forward import likely_rows

    # root -> 0 -> 2 -> 4 is the first-child chain; 1 and 3 are later siblings
    parents = np.array([-1, -1, 0, 0, 2, 1])
    assert likely_rows(parents, 10) == [0, 1, 3, 5]
    assert likely_rows(parents, 2) == [0, 1]
    assert likely_rows(np.array([], dtype=np.int64), 4) == [0]
