"""Exactness of the quantized path on the real default model (Gemma 3 270M, computing on its GGUF blocks).

For prompts across the Spec-Bench categories, 96 new tokens each, greedy:
- hierdraft's plain decoding and hierarchical drafting on the quantized model give exactly the
  tokens transformers' `model.generate(do_sample=False)` gives on the float32 model holding the
  dequantized weights (transformers' own kernels, PyTorch's BLAS);
- drafting and plain decoding agree with each other, which holds by construction (every row count
  goes through the same kernels);
- sampled at temperature 1 with a seed, drafting gives exactly plain sampling's tokens (each
  position's draw depends only on the seed and the position, and the rows are equal bit for bit).

Slow (two loads of the model, 2 x 13 x 96 tokens, the float model at PyTorch's speed) but part of
the CI suite.
"""

from __future__ import annotations

import pytest
import torch

import hierdraft
from hierdraft.prompts import format_prompt
from hierdraft.quant_modules import dequantized_model, is_quantized

pytestmark = pytest.mark.slow

NEW_TOKENS = 96
# One question per Spec-Bench category (written for this test, in the style of each category).
QUESTIONS = {
    "writing": "Write a short blog post about a weekend trip to the mountains, with two tips for hikers.",
    "roleplay": "Pretend you are a ship's captain greeting passengers on the first morning of a cruise.",
    "reasoning": "If every bird in a cage can fly and Tweety is in the cage, what can we say about Tweety? Explain.",
    "math": "What is the sum of the first twenty positive odd numbers? Show the steps.",
    "coding": "Write a Python function that checks whether a string is a palindrome, ignoring spaces.",
    "extraction": "From the sentence 'Alice moved to Berlin in 2019 and joined Siemens in 2021', list every "
    "person, city, company and year.",
    "stem": "Explain why the sky looks blue during the day and red at sunset.",
    "humanities": "What were the main causes of the French Revolution?",
    "translation": "Translate into English: 'Le chat dort sur le canapé pendant que la pluie tombe.'",
    "summarization": "Summarize: The city council met on Tuesday to discuss the new bus lanes. Supporters said "
    "the lanes would cut commute times and pollution; shop owners worried about deliveries and parking. "
    "After three hours of debate, the council approved a six-month trial on two main streets.",
    "qa": "Who wrote the novel Pride and Prejudice?",
    "math_reasoning": "A train travels 60 km in 45 minutes. At the same speed, how far does it travel in two hours?",
    "rag": "Context: The Amazon river is about 6,400 km long and flows through Peru, Colombia and Brazil. "
    "It carries more water than any other river.\nUsing the context, how long is the Amazon and which "
    "countries does it cross?",
}


@pytest.fixture(scope="module")
def quantized():
    model, tokenizer = hierdraft.load_default()
    assert is_quantized(model)
    return model, tokenizer


@pytest.fixture(scope="module")
def float_reference():
    model, _ = hierdraft.load_default()
    return dequantized_model(model)


@pytest.fixture(scope="module")
def drafter(quantized):
    model, tokenizer = quantized
    return hierdraft.AdaptiveDrafter(hierdraft.default_drafter(tokenizer, model=model))


@pytest.mark.parametrize("category", sorted(QUESTIONS))
def test_quantized_greedy_equals_transformers_on_dequantized_weights(quantized, float_reference, drafter, category):
    model, tokenizer = quantized
    ids = tokenizer(format_prompt(QUESTIONS[category]), return_tensors="pt").input_ids
    with torch.inference_mode():
        out = float_reference.generate(ids, do_sample=False, max_new_tokens=NEW_TOKENS)
    expected = out[0, ids.shape[1] :].tolist()
    plain = hierdraft.generate(model, ids, max_new_tokens=NEW_TOKENS)
    drafted = hierdraft.generate(model, ids, drafter=drafter, max_new_tokens=NEW_TOKENS)
    assert plain.tokens == expected, f"{category}: plain decoding differs from transformers"
    assert drafted.tokens == plain.tokens, f"{category}: drafting changed the output"
    assert max(drafted.tree_sizes) > 0  # drafts were really proposed and verified


@pytest.fixture(scope="module")
def int8_model():
    model, _ = hierdraft.load_default(numerics="int8")
    return model


@pytest.mark.parametrize("category", ["coding", "extraction", "summarization", "translation"])
def test_int8_mode_drafting_equals_plain_decoding(quantized, int8_model, drafter, category):
    """The int8 numeric mode is batch-invariant too: drafted output equals plain decoding."""
    _, tokenizer = quantized
    ids = tokenizer(format_prompt(QUESTIONS[category]), return_tensors="pt").input_ids
    plain = hierdraft.generate(int8_model, ids, max_new_tokens=NEW_TOKENS)
    drafted = hierdraft.generate(int8_model, ids, drafter=drafter, max_new_tokens=NEW_TOKENS)
    assert drafted.tokens == plain.tokens, f"{category}: drafting changed the int8 output"
    assert max(drafted.tree_sizes) > 0


@pytest.mark.parametrize("category", ["coding", "extraction", "summarization", "writing"])
def test_sampled_drafting_equals_plain_sampling_with_the_same_seed(quantized, drafter, category):
    model, tokenizer = quantized
    ids = tokenizer(format_prompt(QUESTIONS[category]), return_tensors="pt").input_ids
    plain = hierdraft.generate(model, ids, max_new_tokens=NEW_TOKENS, temperature=1.0, seed=3)
    drafted = hierdraft.generate(model, ids, drafter=drafter, max_new_tokens=NEW_TOKENS, temperature=1.0, seed=3)
    assert drafted.tokens == plain.tokens, f"{category}: drafting changed the sampled output"
    assert max(drafted.tree_sizes) > 0
