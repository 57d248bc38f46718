"""Stop rules (EOS, max_new_tokens) exactly like model.generate, streaming, and result statistics."""

from __future__ import annotations

import pytest
import torch
from _generate_helpers import PROMPTS, DeepWideDrafter, OracleDrafter, RandomDrafter, greedy_reference
from conftest import TINY_VOCAB

from hierdraft.decoding import GenerationResult, generate, iter_generate

NEW = 40


def _drafters(ref, seed=0):
    return [None, OracleDrafter(ref, depth=12), DeepWideDrafter(ref, depth=16, fanout=3, seed=seed)]


def test_eos_stops_like_generate(tiny_lm):
    for prompt in PROMPTS[:6]:
        ref = greedy_reference(tiny_lm, prompt, NEW)
        for pick in (0, 3, 17):
            eos = ref[pick]  # a token of the true continuation becomes EOS
            want = greedy_reference(tiny_lm, prompt, NEW, eos_token_id=eos)
            assert want == ref[: ref.index(eos) + 1]
            for drafter in _drafters(ref, seed=pick):
                res = generate(tiny_lm, prompt, drafter=drafter, max_new_tokens=NEW, eos_token_id=eos)
                assert res.tokens == want
                assert res.stop_reason == "eos"


def test_eos_list_and_default_from_generation_config(tiny_llama):
    prompt = PROMPTS[4]
    ref = greedy_reference(tiny_llama, prompt, NEW)
    eos_list = [ref[9], ref[5]]
    want = greedy_reference(tiny_llama, prompt, NEW, eos_token_id=eos_list)
    assert generate(tiny_llama, prompt, OracleDrafter(ref), NEW, eos_token_id=eos_list).tokens == want
    config = tiny_llama.generation_config
    saved = config.eos_token_id
    try:
        config.eos_token_id = ref[7]
        with torch.inference_mode():
            out = tiny_llama.generate(
                torch.tensor([prompt]), max_new_tokens=NEW, do_sample=False, attention_mask=torch.ones(1, len(prompt), dtype=torch.long)
            )
        want = out[0, len(prompt) :].tolist()
        assert want[-1] == ref[7] and len(want) < NEW
        assert generate(tiny_llama, prompt, OracleDrafter(ref), NEW).tokens == want
    finally:
        config.eos_token_id = saved


@pytest.mark.parametrize("max_new", [1, 2, 3, 7, 13])
def test_max_new_tokens_never_exceeded(tiny_lm, max_new):
    for prompt in PROMPTS[::3]:
        ref = greedy_reference(tiny_lm, prompt, NEW)
        want = greedy_reference(tiny_lm, prompt, max_new)
        assert want == ref[:max_new]
        for drafter in _drafters(ref, seed=max_new):
            res = generate(tiny_lm, prompt, drafter=drafter, max_new_tokens=max_new)
            assert res.tokens == want
            assert max(res.tree_sizes) == 0 or max_new > 1  # no tree is verified when one token is left


def test_max_new_tokens_zero(tiny_llama):
    drafter = RandomDrafter(TINY_VOCAB)
    res = generate(tiny_llama, [5, 6, 7], drafter=drafter, max_new_tokens=0)
    assert res.tokens == [] and res.steps == 0 and res.mean_accepted_tokens == 0.0


def test_stream_and_iter_generate(tiny_gemma3):
    prompt = PROMPTS[6]
    ref = greedy_reference(tiny_gemma3, prompt, NEW)
    seen: list[list[int]] = []
    res = generate(tiny_gemma3, prompt, OracleDrafter(ref, depth=5), NEW, stream=seen.append)
    assert sum(seen, []) == res.tokens == ref
    assert all(seen) and len(seen) == res.steps
    assert [len(s) for s in seen] == [a + 1 for a in res.accepted_per_step]
    chunks = list(iter_generate(tiny_gemma3, prompt, OracleDrafter(ref, depth=5), NEW))
    assert chunks == seen
    streamed: list[list[int]] = []
    chunks = list(iter_generate(tiny_gemma3, prompt, None, 9, stream=streamed.append))
    assert chunks == streamed == [[t] for t in ref[:9]]


def test_early_close_finishes_session(tiny_llama):
    ref = greedy_reference(tiny_llama, PROMPTS[2], NEW)
    drafter = OracleDrafter(ref, depth=3)
    it = iter_generate(tiny_llama, PROMPTS[2], drafter, NEW)
    next(it)
    it.close()
    assert drafter.sessions[0].finished


def test_result_statistics(tiny_llama):
    prompt = PROMPTS[5]
    ref = greedy_reference(tiny_llama, prompt, NEW)
    res = generate(tiny_llama, prompt, OracleDrafter(ref, depth=4), 38)
    assert isinstance(res, GenerationResult)
    assert res.tokens == ref[:38] and res.num_tokens == 38
    # 4 drafts + bonus per step; the last tree is cut to depth 2 (3 tokens left)
    assert res.steps == 8 and res.accepted_per_step == [4] * 7 + [2]
    assert res.tree_sizes == [4] * 7 + [2]
    assert res.emitted_per_step == [5] * 7 + [3]
    assert res.mean_accepted_tokens == pytest.approx(38 / 8)
    assert res.prefill_time == res.verify_times[0] > 0
    assert res.elapsed >= sum(res.verify_times) + sum(res.draft_times) - 1e-6
    assert res.tokens_per_second > 0 and res.decode_tokens_per_second > 0
    assert res.prompt_length == len(prompt) and res.stop_reason == "length"
    assert "tokens/step" in res.summary() and res.as_dict()["steps"] == 8
