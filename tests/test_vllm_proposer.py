"""hierdraft.vllm.HierdraftProposer driven exactly the way vLLM 0.33's V1 GPU model runner drives it,
without vLLM: a stand-in config with the attributes the proposer reads, and a simulated input
batch with vLLM's arrays (int32 ``token_ids_cpu`` of shape (capacity, max_model_len) with stale
tokens past each row, int32 ``num_tokens_no_spec`` sized to the capacity with stale entries past
the active rows, ``sampled_token_ids`` as a list of lists, rows condensed and swapped as requests
come and go)."""

from __future__ import annotations

import json
import logging
import types

import numpy as np
import pytest
import torch

import hierdraft
from hierdraft import _core
from hierdraft.models import TokenizerMismatchError, tokenizer_fingerprint
from hierdraft.stores.metadata import encode_metadata
from hierdraft.vllm import HierdraftProposer
from hierdraft.vllm import stores as vllm_stores
from hierdraft.vllm.options import (
    CHAIN_CANDIDATES,
    CHAIN_CORPUS_OCCURRENCES,
    StoreSource,
    options_from_vllm_config,
)

VOCAB = 100


def make_config(k=4, max_model_len=256, max_num_seqs=8, tokenizer=None, vocab=VOCAB, hierdraft_options=None):
    """The parts of a VllmConfig the proposer reads."""
    return types.SimpleNamespace(
        speculative_config=types.SimpleNamespace(
            method="custom_class", model="hierdraft.vllm.HierdraftProposer", num_speculative_tokens=k
        ),
        model_config=types.SimpleNamespace(
            max_model_len=max_model_len, tokenizer=tokenizer, tokenizer_revision=None,
            trust_remote_code=False, get_vocab_size=lambda: vocab,
        ),
        scheduler_config=types.SimpleNamespace(max_num_seqs=max_num_seqs),
        additional_config={} if hierdraft_options is None else {"hierdraft": hierdraft_options},
    )


def text(rng: np.random.Generator, n: int, phrases: np.ndarray) -> np.ndarray:
    """Token text made of repeated phrases and a few random tokens (n-gram levels find matches)."""
    out: list[int] = []
    while len(out) < n:
        if rng.random() < 0.75:
            out.extend(phrases[rng.integers(len(phrases))].tolist())
        else:
            out.append(int(rng.integers(VOCAB)))
    return np.array(out[:n], dtype=np.int64)


@pytest.fixture(scope="module")
def phrases():
    return np.random.default_rng(0).integers(0, VOCAB, size=(24, 6))


@pytest.fixture()
def store_paths(tmp_path, phrases):
    rng = np.random.default_rng(1)
    corpus = hierdraft.CorpusIndex.build([text(rng, 400, phrases) for _ in range(20)], vocab_size=VOCAB)
    model = hierdraft.ModelStore.build([text(rng, 200, phrases) for _ in range(10)], vocab_size=VOCAB)
    corpus.save(tmp_path / "c.hdci")
    model.save(tmp_path / "m.hdms")
    return tmp_path / "m.hdms", tmp_path / "c.hdci"


class FakeBatch:
    """vLLM's InputBatch arrays under continuous batching: active requests in rows [0, n),
    removed rows filled by moving the last row down (vLLM's condense)."""

    def __init__(self, capacity: int, max_model_len: int, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.max_model_len = max_model_len
        self.token_ids_cpu = self.rng.integers(0, VOCAB, size=(capacity, max_model_len)).astype(np.int32)
        self.num_tokens_no_spec = self.rng.integers(0, max_model_len, size=capacity).astype(np.int32)
        self.rows: list[dict] = []  # row i -> {"truth": full token text, "n": current length}

    def add(self, truth: np.ndarray, prompt_len: int) -> None:
        i = len(self.rows)
        # a new request lands on a row that still holds another request's stale tokens
        self.token_ids_cpu[i, :] = self.rng.integers(0, VOCAB, size=self.max_model_len)
        self.token_ids_cpu[i, :prompt_len] = truth[:prompt_len]
        self.rows.append({"truth": truth, "n": prompt_len})

    def remove(self, i: int) -> None:
        last = len(self.rows) - 1
        if i != last:
            n = self.rows[last]["n"]
            self.token_ids_cpu[i, :n] = self.token_ids_cpu[last, :n]
            self.num_tokens_no_spec[i] = self.num_tokens_no_spec[last]
            self.rows[i] = self.rows[last]
        self.rows.pop()

    def swap(self, a: int, b: int) -> None:
        self.token_ids_cpu[[a, b]] = self.token_ids_cpu[[b, a]]
        self.num_tokens_no_spec[[a, b]] = self.num_tokens_no_spec[[b, a]]
        self.rows[a], self.rows[b] = self.rows[b], self.rows[a]

    def advance(self, drafts: list[list[int]] | None, skip: set[int] = frozenset()) -> list[list[int]]:
        """One verification step: each row accepts the longest correct prefix of its draft plus
        the model's next token (its truth); rows in ``skip`` sample nothing (a prefill chunk)."""
        sampled = []
        for i, row in enumerate(self.rows):
            if i in skip:
                sampled.append([])
                continue
            truth, n = row["truth"], row["n"]
            draft = drafts[i] if drafts is not None else []
            ok = 0
            while ok < len(draft) and n + ok < len(truth) and draft[ok] == truth[n + ok]:
                ok += 1
            take = min(ok + 1, len(truth) - n, self.max_model_len - n)
            new = truth[n : n + take]
            self.token_ids_cpu[i, n : n + take] = new
            row["n"] = n + take
            self.num_tokens_no_spec[i] = row["n"]
            sampled.append([int(t) for t in new])
        return sampled

    def done(self, i: int) -> bool:
        row = self.rows[i]
        return row["n"] >= min(len(row["truth"]), self.max_model_len)


def reference_draft(drafter, batch: FakeBatch, i: int, k: int) -> list[int]:
    """What a fresh session of ``drafter`` (the proposer's own, set up for chains) on row i's
    sequence drafts, cut the way the proposer cuts it."""
    n = int(batch.num_tokens_no_spec[i])
    room = min(k, batch.max_model_len - n)
    if room <= 0:
        return []
    tree = drafter.start(batch.token_ids_cpu[i, :n]).propose()
    return tree.best_chain(room).tolist()


def proposer_with_stores(store_paths, **config):
    model_path, corpus_path = store_paths
    cfg = make_config(hierdraft_options={"model_store": str(model_path), "corpus_index": str(corpus_path),
                                         **config.pop("hierdraft_options", {})}, **config)
    return HierdraftProposer(cfg)


def test_continuous_batching_drafts_equal_fresh_sessions(store_paths, phrases):
    k, max_len = 5, 160
    proposer = proposer_with_stores(store_paths, k=k, max_model_len=max_len, max_num_seqs=6)
    drafter = proposer.drafter
    batch = FakeBatch(capacity=6, max_model_len=max_len)
    rng = np.random.default_rng(3)
    requests = 0
    drafts = None
    sampled = [[] for _ in batch.rows]
    nonempty = 0
    for step in range(120):
        while len(batch.rows) < 6 and requests < 24:
            length = int(rng.integers(30, 220))  # some run into max_model_len
            batch.add(text(rng, length, phrases), prompt_len=int(rng.integers(5, 25)))
            requests += 1
            drafts = None if drafts is None else [*drafts, []]
        if not batch.rows:
            break
        if step % 17 == 5 and len(batch.rows) >= 2:
            batch.swap(0, len(batch.rows) - 1)
            drafts = [drafts[-1], *drafts[1:-1], drafts[0]] if drafts else None
        skip = {1} if step % 11 == 0 else set()
        sampled = batch.advance(drafts, skip=skip)
        drafts = proposer.propose(sampled, batch.num_tokens_no_spec, batch.token_ids_cpu)
        assert len(drafts) == len(batch.rows)
        for i, draft in enumerate(drafts):
            n = int(batch.num_tokens_no_spec[i])
            assert len(draft) <= k and n + len(draft) <= max_len
            if not sampled[i]:
                assert draft == []
                continue
            assert draft == reference_draft(drafter, batch, i, k), f"step {step} row {i}"
            nonempty += bool(draft)
        for i in reversed(range(len(batch.rows))):
            if batch.done(i):
                batch.remove(i)
                last = drafts.pop()  # the drafts follow the rows: the last one moves into row i
                if i < len(drafts):
                    drafts[i] = last
    assert requests == 24 and nonempty > 100
    # every request's session was started once and then only extended, whatever row it moved to
    assert proposer.sessions.started == requests
    assert proposer.sessions.live + proposer.sessions.idle <= 6 + proposer.options.max_idle_sessions
    assert proposer.sessions.live + proposer.sessions.idle == proposer.sessions.sessions


def test_incremental_sessions_match_fresh_ones_token_for_token(phrases):
    proposer = HierdraftProposer(make_config(k=6, max_model_len=512))
    batch = FakeBatch(capacity=3, max_model_len=512, seed=5)
    rng = np.random.default_rng(5)
    for _ in range(3):
        batch.add(text(rng, 500, phrases), prompt_len=40)
    drafts = None
    for _ in range(80):
        sampled = batch.advance(drafts)
        drafts = proposer.propose(sampled, batch.num_tokens_no_spec, batch.token_ids_cpu)
        for i in range(3):
            n = int(batch.num_tokens_no_spec[i])
            assert np.array_equal(proposer.sessions.row_tokens(i), batch.token_ids_cpu[i, :n])
            assert drafts[i] == reference_draft(proposer.drafter, batch, i, 6)


def test_reordered_and_reused_rows_get_their_own_sessions(store_paths, phrases):
    proposer = proposer_with_stores(store_paths, k=4, max_model_len=300)
    batch = FakeBatch(capacity=4, max_model_len=300, seed=7)
    rng = np.random.default_rng(7)
    for _ in range(4):
        batch.add(text(rng, 280, phrases), prompt_len=20)
    drafts = None
    for step in range(30):
        if step % 3 == 2:
            batch.swap(0, 3)
            batch.swap(1, 2)
            drafts = [drafts[3], drafts[2], drafts[1], drafts[0]]
        sampled = batch.advance(drafts)
        drafts = proposer.propose(sampled, batch.num_tokens_no_spec, batch.token_ids_cpu)
        for i in range(4):
            assert drafts[i] == reference_draft(proposer.drafter, batch, i, 4)
    assert proposer.sessions.started == 4
    # a finished request's row is reused by a new one that shares its prompt prefix
    old = batch.rows[0]["truth"]
    batch.remove(0)
    batch.add(np.concatenate([old[:30], text(rng, 200, phrases)]), prompt_len=30)
    sampled = batch.advance(None)
    drafts = proposer.propose(sampled, batch.num_tokens_no_spec, batch.token_ids_cpu)
    for i in range(4):
        assert drafts[i] == reference_draft(proposer.drafter, batch, i, 4)
    assert proposer.sessions.started == 5


def test_preempted_request_and_skipped_steps_keep_their_session(phrases):
    proposer = HierdraftProposer(make_config(k=4, max_model_len=400))
    table = proposer.sessions
    batch = FakeBatch(capacity=3, max_model_len=400, seed=9)
    rng = np.random.default_rng(9)
    for _ in range(2):
        batch.add(text(rng, 380, phrases), prompt_len=30)
    drafts = None
    for _ in range(5):
        drafts = proposer.propose(batch.advance(drafts), batch.num_tokens_no_spec, batch.token_ids_cpu)
    # vLLM skips the proposer for two steps (the batch got too close to max_model_len)
    batch.advance(None)
    batch.advance(None)
    drafts = proposer.propose(batch.advance(None), batch.num_tokens_no_spec, batch.token_ids_cpu)
    assert table.started == 2
    assert drafts == [reference_draft(proposer.drafter, batch, i, 4) for i in range(2)]
    # request 0 is preempted (removed) for a few steps, then resumed in another row
    preempted = dict(batch.rows[0])
    batch.remove(0)
    for _ in range(3):
        drafts = proposer.propose(batch.advance(drafts), batch.num_tokens_no_spec, batch.token_ids_cpu)
    batch.add(preempted["truth"], prompt_len=preempted["n"])
    sampled = batch.advance([drafts[0], []])
    drafts = proposer.propose(sampled, batch.num_tokens_no_spec, batch.token_ids_cpu)
    assert table.started == 2
    assert drafts == [reference_draft(proposer.drafter, batch, i, 4) for i in range(2)]


def test_rows_without_new_tokens_keep_their_session_and_get_no_draft(phrases):
    drafter = hierdraft.HierarchicalDrafter(max_depth=4)
    proposer = HierdraftProposer(make_config(k=4), drafter=drafter)
    batch = FakeBatch(capacity=2, max_model_len=256)
    rng = np.random.default_rng(2)
    batch.add(text(rng, 200, phrases), prompt_len=20)
    batch.add(text(rng, 200, phrases), prompt_len=20)
    drafts = proposer.propose(batch.advance(None), batch.num_tokens_no_spec, batch.token_ids_cpu)
    for _ in range(4):
        sampled = batch.advance(drafts, skip={0})
        drafts = proposer.propose(sampled, batch.num_tokens_no_spec, batch.token_ids_cpu)
        assert drafts[0] == []
    drafts = proposer.propose(batch.advance(drafts), batch.num_tokens_no_spec, batch.token_ids_cpu)
    assert proposer.sessions.started == 2
    assert drafts[0] == reference_draft(drafter, batch, 0, 4)


def test_drafts_stop_at_k_and_at_max_model_len():
    seq = [1, 2, 3, 4, 5, 6, 7, 8, 9] * 6
    proposer = HierdraftProposer(make_config(k=6, max_model_len=len(seq) + 3))
    tokens = np.zeros((3, len(seq) + 3), dtype=np.int32)
    for i, cut in enumerate((len(seq) - 10, len(seq), len(seq) + 3)):
        tokens[i, :min(cut, len(seq))] = seq[:cut]
    tokens[2, len(seq):] = [1, 2, 3]
    num = np.array([len(seq) - 10, len(seq), len(seq) + 3], dtype=np.int32)
    drafts = proposer.propose([[8], [9], [3]], num, tokens)
    assert drafts[0] == (seq * 2)[44:50]  # K tokens of the period
    assert drafts[1] == [1, 2, 3]  # three positions left before max_model_len
    assert drafts[2] == []  # at max_model_len


def test_empty_batch_and_empty_rows():
    proposer = HierdraftProposer(make_config())
    tokens = np.zeros((4, 256), dtype=np.int32)
    assert proposer.propose([], np.zeros(4, dtype=np.int32), tokens) == []
    num = np.array([3, 2, 0, 0], dtype=np.int32)
    tokens[0, :3] = [5, 6, 5]
    out = proposer.propose([[], []], num, tokens)
    assert out == [[], []] and out[0] is not out[1]
    assert proposer.propose([[5], []], num, tokens) == [[6, 5], []]


def test_torch_tensors_are_accepted(phrases):
    rng = np.random.default_rng(4)
    seqs = [text(rng, 120, phrases) for _ in range(3)]
    tokens = np.zeros((5, 256), dtype=np.int32)
    num = np.zeros(5, dtype=np.int32)
    for i, s in enumerate(seqs):
        tokens[i, : len(s)] = s
        num[i] = len(s)
    sampled = [[int(s[-1])] for s in seqs]
    from_numpy = HierdraftProposer(make_config()).propose(sampled, num, tokens)
    from_torch = HierdraftProposer(make_config()).propose(sampled, torch.from_numpy(num), torch.from_numpy(tokens))
    assert from_numpy == from_torch and any(from_numpy)
    with pytest.raises(ValueError, match="CPU tensor without grad"):
        HierdraftProposer(make_config()).propose(sampled, num, torch.from_numpy(tokens).float().requires_grad_())


def test_bad_input_raises_clear_errors_and_leaves_the_proposer_usable():
    proposer = HierdraftProposer(make_config(max_model_len=64))
    tokens = np.zeros((2, 64), dtype=np.int32)
    tokens[0, :4] = [1, 2, 1, 2]
    num = np.array([4, 0], dtype=np.int32)
    cases = [
        (("nope", num, tokens), TypeError, "list of lists"),
        (([[2]], [4, 0], tokens), TypeError, "numpy array or a torch tensor"),
        (([[2]], num, tokens[0]), ValueError, "2 dimension"),
        (([[2]], num.astype(np.float32), tokens), TypeError, "integers"),
        (([[2]], num, tokens.astype(np.int16)), TypeError, "int32, int64 or uint32"),
        (([[2], [1], [3]], num, tokens), ValueError, "3 rows"),
        (([[1, 2, 1, 2, 1]], num, tokens), ValueError, "row 0"),
        (([[2]], np.array([65, 0], dtype=np.int32), tokens), ValueError, "max_model_len"),
    ]
    for args, exc, match in cases:
        with pytest.raises(exc, match=match):
            proposer.propose(*args)
    bad = tokens.copy()
    bad[1, :3] = [4, -7, 4]
    with pytest.raises(ValueError, match="row 1"):
        proposer.propose([[2], [4]], np.array([4, 3], dtype=np.int32), bad)
    assert proposer.propose([[2]], num, tokens) == [[1, 2]]
    with pytest.raises(TypeError, match="HierarchicalDrafter"):
        HierdraftProposer(make_config(), drafter=object())


def test_finished_sessions_are_bounded_and_feed_the_model_store(store_paths, phrases):
    proposer = proposer_with_stores(store_paths, k=4, hierdraft_options={"max_idle_sessions": 2})
    model_store = proposer.drafter.model_store
    marker = [97, 13, 71, 29, 83, 41]  # a continuation no store has seen
    assert all(c[0].tolist()[:3] != marker[3:] for c in model_store.lookup(marker[:3]))
    batch = FakeBatch(capacity=2, max_model_len=256, seed=11)
    rng = np.random.default_rng(11)
    batch.add(np.concatenate([text(rng, 20, phrases), marker, text(rng, 10, phrases)]), prompt_len=20)
    drafts = None
    while not batch.done(0):
        drafts = proposer.propose(batch.advance(drafts), batch.num_tokens_no_spec, batch.token_ids_cpu)
    batch.remove(0)
    for _ in range(4):  # four more requests come and finish; the pool keeps 2 idle sessions
        batch.add(text(rng, 30, phrases), prompt_len=25)
        drafts = None
        while not batch.done(0):
            drafts = proposer.propose(batch.advance(drafts), batch.num_tokens_no_spec, batch.token_ids_cpu)
        batch.remove(0)
        assert proposer.sessions.idle <= 2
    proposer.sessions.wait_for_learning()  # evicted sessions are learned in the background
    found = model_store.lookup(marker[:3], k=8, max_len=3)
    assert any(c[0].tolist() == marker[3:] for c in found)


def test_table_without_learning_leaves_the_model_store_alone(store_paths):
    model_path, _ = store_paths
    store = hierdraft.ModelStore.load(model_path)
    drafter = hierdraft.HierarchicalDrafter(model_store=store)
    table = _core.SessionTable(drafter, 4, 256, 0, learn=False)
    tokens = np.array([[1, 2, 3, 97, 13, 71, 29]], dtype=np.int32)
    table.step([[97, 13, 71, 29]], np.array([7]), tokens)
    table.step([], np.array([], dtype=np.int64), tokens)
    assert table.idle == 0 and table.live == 0
    assert not any(c[0].tolist() == [71, 29] for c in store.lookup([97, 13], k=8, max_len=2))


def test_stores_from_config_env_and_off(store_paths, monkeypatch):
    model_path, corpus_path = store_paths
    monkeypatch.setenv("HIERDRAFT_MODEL_STORE", str(model_path))
    monkeypatch.setenv("HIERDRAFT_CORPUS_INDEX", str(corpus_path))
    p = HierdraftProposer(make_config())
    assert p.drafter.model_store is not None and p.drafter.corpus_index is not None
    assert p.drafter.max_depth == 4
    # set up for chains: a budget of K nodes, CHAIN_CANDIDATES chains per level, a capped corpus
    assert p.drafter.budget == 4 and p.drafter.corpus_max_occurrences == CHAIN_CORPUS_OCCURRENCES
    assert p.drafter.context_candidates == p.drafter.model_candidates == p.drafter.corpus_candidates
    assert p.drafter.corpus_candidates == CHAIN_CANDIDATES
    p = HierdraftProposer(make_config(hierdraft_options={"corpus_index": "none", "budget": 7, "candidates": 3,
                                                         "corpus_max_occurrences": 100}))
    assert p.drafter.corpus_index is None and p.drafter.model_store is not None and p.drafter.budget == 7
    assert p.drafter.model_candidates == 3 and p.drafter.corpus_max_occurrences == 100
    monkeypatch.setenv("HIERDRAFT_CORPUS_INDEX", str(corpus_path.with_name("missing.hdci")))
    with pytest.raises(FileNotFoundError, match="HIERDRAFT_CORPUS_INDEX"):
        HierdraftProposer(make_config())
    with pytest.raises(ValueError, match="unknown hierdraft option"):
        HierdraftProposer(make_config(hierdraft_options={"budgte": 3}))
    with pytest.raises(ValueError, match="vocab size"):
        HierdraftProposer(make_config(vocab=50, hierdraft_options={"corpus_index": str(corpus_path)}))
    opts = options_from_vllm_config(make_config(max_num_seqs=256), environ={})
    assert opts.model_store == StoreSource("default") and opts.max_idle_sessions == 512
    with pytest.raises(ValueError, match="num_speculative_tokens"):
        HierdraftProposer(make_config(k=0))


def _tiny_tokenizer(folder, words: list[str], name_file: str | None = None):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(words)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token=words[0]))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tk, unk_token=words[0]).save_pretrained(folder)
    return str(folder)


def test_store_of_another_tokenizer_is_refused(tmp_path, phrases):
    words = ["<unk>"] + [f"w{i}" for i in range(VOCAB - 1)]
    tok_a = _tiny_tokenizer(tmp_path / "tok_a", words)
    tok_b = _tiny_tokenizer(tmp_path / "tok_b", ["<unk>"] + [f"v{i}" for i in range(VOCAB - 1)])
    from transformers import AutoTokenizer

    fingerprint_a = tokenizer_fingerprint(AutoTokenizer.from_pretrained(tok_a))
    rng = np.random.default_rng(0)
    corpus = hierdraft.CorpusIndex.build([text(rng, 300, phrases)], vocab_size=VOCAB,
                                         metadata=encode_metadata("corpus", AutoTokenizer.from_pretrained(tok_a)))
    corpus.save(tmp_path / "a.hdci")
    options = {"corpus_index": str(tmp_path / "a.hdci"), "model_store": "none"}
    ok = HierdraftProposer(make_config(tokenizer=tok_a, hierdraft_options=options))
    assert ok.drafter.corpus_index is not None
    with pytest.raises(TokenizerMismatchError) as err:
        HierdraftProposer(make_config(tokenizer=tok_b, hierdraft_options=options))
    assert fingerprint_a in str(err.value) and "tok_b" in str(err.value)


def test_default_stores_of_the_served_tokenizer(tmp_path, monkeypatch, phrases):
    from transformers import AutoTokenizer

    from hierdraft.stores.defaults import default_store_dir

    monkeypatch.setenv("HIERDRAFT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HIERDRAFT_NO_BUILD", "1")
    monkeypatch.delenv("HIERDRAFT_MODEL_STORE", raising=False)
    monkeypatch.delenv("HIERDRAFT_CORPUS_INDEX", raising=False)
    served = tmp_path / "served-model"
    _tiny_tokenizer(served, ["<unk>"] + [f"w{i}" for i in range(VOCAB - 1)])
    # hierdraft's converted default model carries its marker: its stores are filed under its id
    (served / "hierdraft-model.json").write_text(json.dumps({"model_id": "gemma-3-270m"}))
    tokenizer = AutoTokenizer.from_pretrained(served)
    tokenizer.name_or_path = "gemma-3-270m"
    folder = default_store_dir(tokenizer)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    hierdraft.CorpusIndex.build([text(rng, 300, phrases)], vocab_size=VOCAB,
                                metadata=encode_metadata("corpus", tokenizer)).save(folder / "corpus-sharegpt-5.hdci")
    p = HierdraftProposer(make_config(tokenizer=str(served)))
    assert p.drafter.corpus_index is not None and p.drafter.model_store is None


def test_context_level_alone_is_logged_once(caplog, monkeypatch):
    monkeypatch.delenv("HIERDRAFT_MODEL_STORE", raising=False)
    monkeypatch.delenv("HIERDRAFT_CORPUS_INDEX", raising=False)
    monkeypatch.setattr(vllm_stores, "_logged_once", set())
    with caplog.at_level(logging.WARNING, logger="vllm.hierdraft"):
        for _ in range(3):
            p = HierdraftProposer(make_config())
            assert p.drafter.model_store is None and p.drafter.corpus_index is None
    assert [r.getMessage() for r in caplog.records].count(
        "hierdraft: no tokenizer known (model_config.tokenizer is None), so no default store is used; "
        "drafting from the context level alone"
    ) == 1


def test_a_token_outside_the_stores_vocabulary_names_its_row(store_paths):
    proposer = proposer_with_stores(store_paths)
    tokens = np.zeros((3, 256), dtype=np.int32)
    tokens[:, :4] = [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]
    num = np.array([4, 4, 4], dtype=np.int32)
    proposer.propose([[4], [8], [12]], num, tokens)
    tokens[:, 4] = [1, 150, 2]
    num[:] = 5
    with pytest.raises(ValueError, match=r"row 1: tokens\[1, 4\] = 150 is out of the vocabulary"):
        proposer.propose([[1], [150], [2]], num, tokens)
    tokens[1, 4] = 3
    drafts = proposer.propose([[1], [3], [2]], num, tokens)
    batch = types.SimpleNamespace(num_tokens_no_spec=num, token_ids_cpu=tokens, max_model_len=256)
    assert drafts == [reference_draft(proposer.drafter, batch, i, 4) for i in range(3)]
