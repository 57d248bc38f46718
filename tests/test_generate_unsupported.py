"""Models that cannot take a tree-verification forward raise UnsupportedModelError; bad inputs raise ValueError."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_VOCAB, make_tiny_llama

from hierdraft.drafting import PyDraftTree
from hierdraft.decoding import generate
from hierdraft.model_layout import UnsupportedModelError


def test_attention_without_custom_masks_is_rejected():
    model = make_tiny_llama()
    model.config._attn_implementation = "flex_attention"
    with pytest.raises(UnsupportedModelError, match="sdpa"):
        generate(model, [1, 2, 3], max_new_tokens=3)


def test_non_attention_layers_are_rejected():
    from transformers import MambaConfig, MambaForCausalLM

    model = MambaForCausalLM(MambaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, state_size=4))
    with pytest.raises(UnsupportedModelError, match="layer types"):
        generate(model, [1, 2, 3], max_new_tokens=3)


def test_model_ignoring_the_tree_mask_is_caught_by_the_probe():
    from transformers import LlamaForCausalLM

    class MaskIgnoringLlama(LlamaForCausalLM):
        def forward(self, input_ids=None, attention_mask=None, position_ids=None, cache=None, use_cache=None, logits_to_keep=0, **kwargs):
            return super().forward(
                input_ids=input_ids, position_ids=position_ids, cache=cache, use_cache=use_cache, logits_to_keep=logits_to_keep, **kwargs
            )

    model = MaskIgnoringLlama(make_tiny_llama().config).eval().to(torch.float64)
    with pytest.raises(UnsupportedModelError, match="does not honour"):
        generate(model, [1, 2, 3], max_new_tokens=3)


class _FixedDrafter:
    def __init__(self, tree):
        self.tree = tree

    def start(self, prompt_ids):
        return self

    def propose(self):
        return self.tree

    def accept(self, tokens):
        pass

    def finish(self):
        pass


class _RawTree:
    def __init__(self, tokens, parents, depths):
        import numpy as np

        self.tokens, self.parents, self.depths = (np.asarray(a) for a in (tokens, parents, depths))

    def __len__(self):
        return len(self.tokens)


def test_bad_inputs(tiny_llama):
    with pytest.raises(ValueError, match="batch"):
        generate(tiny_llama, torch.ones(2, 3, dtype=torch.long), max_new_tokens=2)
    with pytest.raises(ValueError, match="empty"):
        generate(tiny_llama, [], max_new_tokens=2)
    with pytest.raises(ValueError, match="vocabulary"):
        generate(tiny_llama, [TINY_VOCAB], max_new_tokens=2)
    with pytest.raises(ValueError, match="vocabulary"):
        generate(tiny_llama, [1, 2], _FixedDrafter(PyDraftTree([TINY_VOCAB + 5], [-1])), max_new_tokens=4)
    with pytest.raises(ValueError, match="parents"):
        generate(tiny_llama, [1, 2], _FixedDrafter(_RawTree([3, 4], [-1, 1], [1, 2])), max_new_tokens=4)
    with pytest.raises(ValueError, match="depths"):
        generate(tiny_llama, [1, 2], _FixedDrafter(_RawTree([3, 4], [-1, 0], [1, 3])), max_new_tokens=4)
    with pytest.raises(ValueError, match="temperature"):
        generate(tiny_llama, [1, 2], temperature=-1.0, max_new_tokens=4)
    with pytest.raises(ValueError, match="top_p"):
        generate(tiny_llama, [1, 2], temperature=1.0, top_p=1.5, max_new_tokens=4)
