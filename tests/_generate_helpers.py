"""Adversarial Python drafters and reference helpers for the generate tests.

Every drafter follows the drafter protocol (start / propose / accept / finish) and builds its trees
with `hierdraft.drafting.PyDraftTree`. Oracle-based drafters know the true greedy continuation
(computed with `model.generate` first) and hide it among random branches.
"""

from __future__ import annotations

import weakref

import numpy as np
import torch

from hierdraft.drafting import PyDraftTree

# Prompts: random, repetitive (n-gram drafts hit), single token, longer than the sliding window.
_rng = np.random.default_rng(1234)
PROMPTS: list[list[int]] = [
    [int(t) for t in _rng.integers(3, 256, size=n)] for n in (1, 3, 5, 9, 14, 23)
] + [
    [5, 6, 7, 8] * 5,
    [40, 41, 40, 41, 40, 41, 42, 43, 40, 41],
    [100] * 12,
    [9, 8, 7, 6, 5, 4, 3, 9, 8, 7, 6, 5, 4, 3, 9, 8],
]

# model -> {(prompt, max_new_tokens, eos): tokens}. Weakly keyed on the model itself: a key of
# id(model) outlives the model, and a later model allocated at the same address would be handed
# the first model's reference (a test failing only in the full suite).
_REFERENCE: "weakref.WeakKeyDictionary[torch.nn.Module, dict[tuple, list[int]]]" = weakref.WeakKeyDictionary()


def greedy_reference(model, prompt: list[int], max_new_tokens: int, eos_token_id=None) -> list[int]:
    """New tokens of model.generate(do_sample=False), memoised."""
    memo = _REFERENCE.setdefault(model, {})
    key = (tuple(prompt), max_new_tokens, str(eos_token_id))
    if key not in memo:
        kwargs = {}
        if eos_token_id is not None:
            kwargs["eos_token_id"] = eos_token_id
        with torch.inference_mode():
            out = model.generate(
                torch.tensor([prompt]),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                **kwargs,
            )
        memo[key] = out[0, len(prompt) :].tolist()
    return memo[key]


class _Session:
    def __init__(self, drafter, prompt):
        self.drafter = drafter
        self.context = [int(t) for t in prompt]
        self.prompt_len = len(self.context)
        self.accepted: list[list[int]] = []
        self.finished = False

    @property
    def produced(self) -> int:
        return len(self.context) - self.prompt_len

    def propose(self):
        assert not self.finished
        return self.drafter.tree_for(self)

    def accept(self, tokens):
        assert not self.finished
        tokens = [int(t) for t in tokens]
        assert tokens, "generate must accept at least one token per step"
        self.accepted.append(tokens)
        self.context.extend(tokens)

    def finish(self):
        self.finished = True


class _Drafter:
    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.sessions: list[_Session] = []

    def start(self, prompt_ids):
        s = _Session(self, prompt_ids)
        self.sessions.append(s)
        return s

    def tree_for(self, session: _Session) -> PyDraftTree:  # pragma: no cover - abstract
        raise NotImplementedError


class RandomDrafter(_Drafter):
    """Random tokens in a random tree shape (each node's parent drawn among earlier nodes and the root)."""

    def __init__(self, vocab: int, budget: int = 16, seed: int = 0):
        super().__init__(seed)
        self.vocab, self.budget = vocab, budget

    def tree_for(self, session):
        n = self.budget
        parents = [int(self.rng.integers(-1, i)) if i else -1 for i in range(n)]
        tokens = self.rng.integers(0, self.vocab, size=n)
        return PyDraftTree(tokens, parents)


class OracleDrafter(_Drafter):
    """Proposes the true continuation (a chain of `depth` tokens), optionally with random side branches."""

    def __init__(self, continuation: list[int], depth: int = 8, vocab: int = 256, noise: int = 0, seed: int = 0):
        super().__init__(seed)
        self.continuation, self.depth, self.vocab, self.noise = continuation, depth, vocab, noise

    def tree_for(self, session):
        truth = self.continuation[session.produced : session.produced + self.depth]
        chains = [truth]
        for _ in range(self.noise):
            cut = int(self.rng.integers(0, len(truth) + 1))
            tail = self.rng.integers(0, self.vocab, size=int(self.rng.integers(1, 4))).tolist()
            chains.append(truth[:cut] + tail)
        order = self.rng.permutation(len(chains))  # the true chain is not always first
        return PyDraftTree.from_chains([chains[i] for i in order]) if truth else PyDraftTree.empty()


class DeepWideDrafter(_Drafter):
    """Deep trees with wide fan-out: the true path (wrong from a random depth on) hidden among random siblings."""

    def __init__(self, continuation: list[int], vocab: int = 256, depth: int = 24, fanout: int = 4, seed: int = 0):
        super().__init__(seed)
        self.continuation, self.vocab, self.depth, self.fanout = continuation, vocab, depth, fanout

    def tree_for(self, session):
        truth = list(self.continuation[session.produced : session.produced + self.depth])
        if truth and self.rng.random() < 0.7:  # derail the true path somewhere
            at = int(self.rng.integers(0, len(truth)))
            truth[at] = (truth[at] + 1 + int(self.rng.integers(0, self.vocab - 1))) % self.vocab
        tokens: list[int] = []
        parents: list[int] = []
        parent = -1
        for tok in truth:
            siblings = [int(t) for t in self.rng.integers(0, self.vocab, size=self.fanout - 1)]
            slot = int(self.rng.integers(0, self.fanout))
            siblings.insert(slot, int(tok))
            ids = []
            for s in siblings:
                tokens.append(s)
                parents.append(parent)
                ids.append(len(tokens) - 1)
            # a random grandchild under one wrong sibling
            wrong = ids[(slot + 1) % self.fanout]
            tokens.append(int(self.rng.integers(0, self.vocab)))
            parents.append(wrong)
            parent = ids[slot]
        return PyDraftTree(tokens, parents)


class BudgetDrafter(_Drafter):
    """Exactly `budget` nodes: a (sometimes wrong) true chain plus random nodes anywhere in the tree."""

    def __init__(self, continuation: list[int], budget: int, vocab: int = 256, seed: int = 0):
        super().__init__(seed)
        self.continuation, self.budget, self.vocab = continuation, budget, vocab

    def tree_for(self, session):
        k = int(self.rng.integers(0, self.budget + 1))
        truth = list(self.continuation[session.produced : session.produced + k])
        if truth and self.rng.random() < 0.3:
            truth[-1] = (truth[-1] + 7) % self.vocab
        tokens = [int(t) for t in truth]
        parents = list(range(-1, len(truth) - 1))
        while len(tokens) < self.budget:
            parents.append(int(self.rng.integers(-1, len(tokens))))
            tokens.append(int(self.rng.integers(0, self.vocab)))
        perm_tree = PyDraftTree(tokens, parents)
        assert len(perm_tree) == self.budget
        return perm_tree


class NgramDrafter(_Drafter):
    """Prompt-lookup drafts: continuations of earlier occurrences of the context's last n-gram."""

    def __init__(self, max_ngram: int = 3, max_len: int = 6, max_chains: int = 4):
        super().__init__(0)
        self.max_ngram, self.max_len, self.max_chains = max_ngram, max_len, max_chains

    def tree_for(self, session):
        ctx = session.context
        for n in range(min(self.max_ngram, len(ctx) - 1), 0, -1):
            key = ctx[-n:]
            chains = []
            for start in range(len(ctx) - n - 1, -1, -1):
                if ctx[start : start + n] == key:
                    chains.append(ctx[start + n : start + n + self.max_len])
                    if len(chains) == self.max_chains:
                        break
            if chains:
                return PyDraftTree.from_chains(chains)
        return PyDraftTree.empty()
