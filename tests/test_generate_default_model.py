"""Exactness on the real default model (Gemma 3 270M): greedy speculative output equals plain decoding.

Slow (loads the converted model from the cache, converting it on a fresh machine) but part of the
CI suite. The drafter reads all three levels: the request's context, a model store built from the
model's own greedy outputs on *other* prompts, and a corpus index over ShareGPT conversations.
"""

from __future__ import annotations

import pytest
import torch

import hierdraft
from hierdraft.stores import build_corpus_index

pytestmark = pytest.mark.slow

PROMPTS = [
    "Question: Summarize the plot of Romeo and Juliet in three sentences.\n\nAnswer:",
    "Question: Write a Python function that returns the n-th Fibonacci number.\n\nAnswer:",
    "Question: Translate to English: Der Hund spielt im Garten mit dem Ball.\n\nAnswer:",
    "Question: List the planets of the solar system in order.\n\nAnswer:",
]
STORE_PROMPTS = [
    "Question: What is the capital of France?\n\nAnswer:",
    "Question: Explain what a hash table is.\n\nAnswer:",
]
NEW_TOKENS = 32


@pytest.fixture(scope="module")
def default_model():
    torch.manual_seed(0)
    return hierdraft.load_default()


@pytest.fixture(scope="module")
def drafter(default_model, tmp_path_factory):
    model, tokenizer = default_model
    out = tmp_path_factory.mktemp("stores") / "corpus.hdci"
    corpus = build_corpus_index(tokenizer, "sharegpt", out, max_documents=2000, progress=False).store
    outputs = []
    for text in STORE_PROMPTS:
        ids = tokenizer(text, return_tensors="pt").input_ids
        outputs.append(hierdraft.generate(model, ids, max_new_tokens=NEW_TOKENS).tokens)
    store = hierdraft.ModelStore.build(outputs)
    return hierdraft.HierarchicalDrafter(model_store=store, corpus_index=corpus, budget=16)


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_identical_to_plain_decoding(default_model, drafter, prompt):
    model, tokenizer = default_model
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    expected = model.generate(ids, do_sample=False, max_new_tokens=NEW_TOKENS)[0, ids.shape[1] :].tolist()
    plain = hierdraft.generate(model, ids, max_new_tokens=NEW_TOKENS)
    drafted = hierdraft.generate(model, ids, drafter=drafter, max_new_tokens=NEW_TOKENS)
    assert plain.tokens == expected
    assert drafted.tokens == expected
    assert max(drafted.tree_sizes) > 0  # drafts were really proposed and verified
