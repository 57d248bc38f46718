"""The greedy proxy head (`hierdraft._core.GreedyHead`, `QuantLinear.greedy_argmax`): for every
input row the first maximal index of the head's exact products, on heads quantized by the gguf
package with planted ties and strong rows, and on the default model's own 262144-row head with
the hidden states of real prompts; which layers have one; and how `TreeLogits.argmax` uses it."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from gguf_blocks import quant_tensor, quantize

from hierdraft import _core, tree_forward
from hierdraft.quant_modules import QuantLinear, set_numerics
from hierdraft.tree_forward import TreeLogits, argmax_rows, greedy_head


def _full_argmax(tensor, x: np.ndarray) -> list[int]:
    out = np.empty((x.shape[0], tensor.shape[0]), dtype=np.float32)
    tensor.linear(x, out)
    return argmax_rows(torch.from_numpy(out))


def _planted_head(rng: np.random.Generator, n: int, k: int, x: np.ndarray) -> np.ndarray:
    """Float rows: weak noise, a few rows aligned with `x`, exact copies of them (ties), and
    copies with one value nudged (near ties)."""
    w = rng.standard_normal((n, k)).astype(np.float32) * 0.1
    for _ in range(3):
        strong = (x / np.abs(x).max() * rng.uniform(0.6, 1.0)).astype(np.float32)
        a, b, c = rng.choice(n, 3, replace=False)
        w[a] = w[b] = strong
        w[c] = strong
        w[c, rng.integers(k)] += 0.01
    return w


@pytest.mark.parametrize("seed", range(6))
def test_argmax_equals_the_full_products_first_maximum(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, k = 4096, 32 * int(rng.integers(2, 24))
    base = rng.standard_normal(k).astype(np.float32)
    tensor = quant_tensor(quantize(_planted_head(rng, n, k, base), "Q8_0"), "Q8_0")
    head = _core.GreedyHead(tensor)
    assert head.shape == (n, k) and head.proxy_bytes < tensor.nbytes
    x = (base + 0.05 * rng.standard_normal((5, k))).astype(np.float32)
    x[4] = rng.standard_normal(k)  # an unrelated row: the bound rules out less
    want = _full_argmax(tensor, x)
    got, exact_rows = head.argmax(x, report=True)
    assert got.dtype == np.int64 and got.tolist() == want
    assert head.argmax(x, portable=True).tolist() == want
    assert min(exact_rows) < n // 16  # candidates only, at least for the aligned rows
    for i in range(5):  # one row at a time: the same answers
        assert head.argmax(np.ascontiguousarray(x[i : i + 1])).tolist() == [want[i]]


def test_rows_outside_the_bound_follow_torch_argmax() -> None:
    rng = np.random.default_rng(9)
    tensor = quant_tensor(quantize(rng.standard_normal((300, 64)).astype(np.float32), "Q8_0"), "Q8_0")
    x = rng.standard_normal((3, 64)).astype(np.float32)
    x[0, 3] = np.nan  # every product NaN: the first index, as torch.argmax
    x[1] = 0.0  # every product zero: a tie over all rows
    want = _full_argmax(tensor, x)
    assert want[:2] == [0, 0]
    got, exact_rows = _core.GreedyHead(tensor).argmax(x, report=True)
    assert got.tolist() == want and exact_rows[:2] == [300, 300]


def test_bad_heads_and_inputs_raise_clear_errors() -> None:
    rng = np.random.default_rng(1)
    q4 = quant_tensor(quantize(rng.standard_normal((8, 64)).astype(np.float32), "Q4_0"), "Q4_0")
    with pytest.raises(ValueError, match="Q8_0.*Q4_0"):
        _core.GreedyHead(q4)
    raw = quantize(rng.standard_normal((8, 64)).astype(np.float32), "Q8_0")
    raw[2, 34:36] = np.frombuffer(np.float16(np.inf).tobytes(), dtype=np.uint8)
    with pytest.raises(ValueError, match="row 2, block 1.*non-finite"):
        _core.GreedyHead(quant_tensor(raw, "Q8_0"))
    head = _core.GreedyHead(quant_tensor(quantize(rng.standard_normal((8, 64)).astype(np.float32), "Q8_0"), "Q8_0"))
    with pytest.raises(ValueError, match="x has 32 columns but the head has 64"):
        head.argmax(np.zeros((1, 32), dtype=np.float32))


def test_only_float32_q8_0_layers_without_bias_have_a_proxy() -> None:
    rng = np.random.default_rng(2)
    w = rng.standard_normal((64, 64)).astype(np.float32)
    q8 = QuantLinear(quant_tensor(quantize(w, "Q8_0"), "Q8_0"))
    assert q8.has_greedy_argmax()
    x = rng.standard_normal((2, 64)).astype(np.float32)
    out = np.empty((2, 64), dtype=np.float32)
    q8.project_array(x, out)
    assert q8.greedy_argmax(x).tolist() == out.argmax(axis=1).tolist()
    assert not QuantLinear(quant_tensor(quantize(w, "Q4_0"), "Q4_0")).has_greedy_argmax()
    assert not QuantLinear(quant_tensor(quantize(w, "Q8_0"), "Q8_0"), bias=torch.ones(64)).has_greedy_argmax()
    int8 = QuantLinear(quant_tensor(quantize(w, "Q8_0"), "Q8_0"))
    set_numerics(int8, "int8")
    assert not int8.has_greedy_argmax()
    with pytest.raises(RuntimeError, match="no greedy proxy"):
        int8.greedy_argmax(x)


def test_tree_logits_answer_single_rows_from_the_greedy_head() -> None:
    torch.manual_seed(0)
    hidden = torch.randn(5, 8)
    weight = torch.randn(50, 8)
    head_calls: list[int] = []
    greedy_calls: list[int] = []

    def head(h: torch.Tensor) -> torch.Tensor:
        head_calls.append(len(h))
        return h @ weight.T

    def greedy(h: torch.Tensor) -> list[int]:
        greedy_calls.append(len(h))
        return argmax_rows(h @ weight.T)

    want = argmax_rows(hidden @ weight.T)
    alone = TreeLogits(hidden=hidden, head=head, greedy=greedy)
    assert alone.argmax([0]) == [want[0]] and greedy_calls == [1] and head_calls == []
    assert alone.argmax([3]) == [want[3]] and greedy_calls == [1, 1]
    assert alone.argmax([1, 2]) == [want[1], want[2]] and head_calls == [2]  # two rows: the head
    assert alone.argmax([0, 1, 3]) == [want[0], want[1], want[3]] and head_calls == [2]  # all known
    greedy_calls.clear()
    riding = TreeLogits(hidden=hidden, head=head, greedy=greedy, likely=[0, 2, 4])
    assert riding.argmax([0]) == [want[0]] and greedy_calls == [] and head_calls[-1] == 3  # likely rows ride along
    assert riding.argmax([1]) == [want[1]] and greedy_calls == [1]


def test_a_greedy_walk_uses_the_proxy_only_on_the_kernel_paths_where_it_pays(monkeypatch) -> None:
    rng = np.random.default_rng(3)
    head = QuantLinear(quant_tensor(quantize(rng.standard_normal((64, 64)).astype(np.float32), "Q8_0"), "Q8_0"))
    model = types.SimpleNamespace(get_output_embeddings=lambda: head, config=types.SimpleNamespace())
    x = torch.from_numpy(rng.standard_normal((1, 64)).astype(np.float32))
    for path in ("portable", "avx2", "avx512", "avx512-vnni"):
        monkeypatch.setattr(tree_forward, "KERNELS_PATH", path)
        fast = greedy_head(model, torch.device("cpu"))
        assert (fast is not None) == (path in tree_forward.GREEDY_PROXY_PATHS), path
        if fast is not None:
            assert list(fast(x)) == head.greedy_argmax(x.numpy()).tolist()
    assert _core.kernels_path() in ("portable", "avx2", "avx512", "avx512-vnni")


QUESTIONS = [
    "What is a suffix array, and how is it built in linear time?",
    "Write a short poem about the sea at night.",
    "Summarize the causes of the French Revolution in three sentences.",
    "A train leaves at 3 pm at 80 km/h; another at 4 pm at 100 km/h. When does the second catch up?",
    "Translate 'the weather is lovely today' into French and German.",
    "Write a Python function that returns the n-th Fibonacci number.",
]


@pytest.mark.slow
def test_the_default_heads_argmax_on_real_hidden_states() -> None:
    import hierdraft

    model, tokenizer = hierdraft.load_default()
    head = model.get_output_embeddings()
    assert head.has_greedy_argmax()
    rows = []
    for question in QUESTIONS:
        ids = tokenizer(f"Question: {question}\n\nAnswer:", return_tensors="pt").input_ids
        with torch.inference_mode():
            rows.append(model.base_model(input_ids=ids).last_hidden_state[0, -12:])
    hidden = torch.cat(rows).contiguous().numpy()
    want = _full_argmax(head.qweight, hidden)
    got = [int(head.greedy_argmax(np.ascontiguousarray(hidden[i : i + 1]))[0]) for i in range(len(hidden))]
    assert got == want
    _, exact_rows = _core.GreedyHead(head.qweight).argmax(hidden, report=True)
    assert np.median(exact_rows) < 262144 // 64  # the bound rules out almost every row
