"""Store-building pipelines (hierdraft.stores + cli_build) on tiny data.

A word-level tokenizer and a tiny random Llama stand in for the real model, so everything
runs in seconds; one test reads a few documents from the real ShareGPT package.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tiny_llama

from hierdraft import _core as hd_core
from hierdraft import stores
from hierdraft.stores import (
    CheckpointError,
    EmptyCorpusError,
    InvalidRecordError,
    SourceError,
    TokenizerMismatchError,
    build_corpus_index,
    build_model_store,
    iter_documents,
    load_corpus_index,
    load_model_store,
    load_prompts,
)
from hierdraft.stores.checkpoint import checkpoint_path_for
from hierdraft.stores.jsonstream import JsonArrayStream

WORDS = (
    "the a cat dog sat on mat rug and ran to house garden quick brown fox jumps over lazy "
    "question answer is what why how when where who python code function returns value list "
    "hello world good bad red blue green one two three four five six seven eight nine ten"
).split()


def make_tokenizer(words=WORDS, name="tiny-words"):
    """A word-level fast tokenizer (ids: 0 [UNK], 1 [BOS], 2 [EOS], then words)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "[BOS]": 1, "[EOS]": 2, ":": 3}
    for w in words:
        vocab.setdefault(w, len(vocab))
    raw = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]", bos_token="[BOS]", eos_token="[EOS]")
    tok.name_or_path = name
    return tok


def make_model(vocab_size: int, seed: int = 0):
    """A tiny random Llama over the word vocabulary (float64: exact greedy ties)."""
    return make_tiny_llama(
        seed=seed,
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=2,
        num_key_value_heads=1,
        initializer_range=0.2,
    )


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    return make_model(len(tok))


@pytest.fixture
def prompts_file(tmp_path):
    lines = [
        "what is the quick brown fox",
        "why the cat sat on the mat",
        "how to code a python function",
        "who ran to the house",
        "where is the red garden",
        "when one two three",
        "hello world",
    ]
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def _lookup_table(store, contexts):
    return [[(list(map(int, t)), round(float(s), 6)) for t, s in store.lookup(c, k=8, max_len=8)] for c in contexts]


# --------------------------------------------------------------------------- sources


def test_json_array_stream_keeps_complete_records_of_a_truncated_file(tmp_path):
    path = tmp_path / "cut.json"
    path.write_text('[{"a": "é日本"}, {"b": [1, 2]},\n {"c": "unfinished')
    stream = JsonArrayStream(path, chunk_size=5)
    assert list(stream) == [{"a": "é日本"}, {"b": [1, 2]}]
    assert stream.truncated


def test_json_array_stream_names_the_line_of_a_syntax_error(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[\n{"a": 1},\n{"a": oops}\n]\n')
    with pytest.raises(InvalidRecordError, match=r"bad\.json:3: invalid JSON"):
        list(JsonArrayStream(path, chunk_size=4))


def test_text_jsonl_and_folder_sources(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("the cat sat\non the mat\n\n\nthe dog ran\n")
    (tmp_path / "d" / "b.jsonl").write_text('{"text": "hello world"}\n\n"a bare string"\n{"text": "  "}\n')
    (tmp_path / "d" / "ignored.csv").write_text("x,y\n")
    docs = list(iter_documents(tmp_path / "d"))
    assert docs == ["the cat sat\non the mat", "the dog ran", "hello world", "a bare string"]
    assert list(iter_documents(tmp_path / "d" / "a.txt", txt_split="line")) == ["the cat sat", "on the mat", "the dog ran"]
    jl = tmp_path / "c.jsonl"
    jl.write_text('{"body": "x y"}\n')
    assert list(iter_documents(jl, text_field="body")) == ["x y"]


def test_bad_sources_give_clear_errors(tmp_path):
    with pytest.raises(SourceError, match="unknown source 'nonsense'"):
        iter_documents("nonsense")
    with pytest.raises(FileNotFoundError, match="not found"):
        iter_documents(tmp_path / "missing.jsonl")
    (tmp_path / "x.csv").write_text("a")
    with pytest.raises(SourceError, match="unsupported file type"):
        iter_documents(tmp_path / "x.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EmptyCorpusError, match="contains no"):
        iter_documents(tmp_path / "empty")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": "broken\n')
    with pytest.raises(InvalidRecordError, match=r"bad\.jsonl:2: invalid JSON"):
        list(iter_documents(bad))
    nofield = tmp_path / "nofield.jsonl"
    nofield.write_text('{"text": "ok"}\n{"content": "x"}\n')
    with pytest.raises(InvalidRecordError, match=r"nofield\.jsonl:2: object has no 'text' field"):
        list(iter_documents(nofield))


def test_sharegpt_documents_and_prompts():
    docs = []
    for doc in iter_documents("sharegpt"):
        docs.append(doc)
        if len(docs) == 5:
            break
    assert len(docs) == 5 and all(d.strip() for d in docs)
    prompts = list(load_prompts("sharegpt", limit=3))
    assert len(prompts) == 3 and len(set(prompts)) == 3
    assert prompts[0] == docs[0].strip()  # the first turn of the first conversation is a human turn


# --------------------------------------------------------------------------- corpus index


def test_build_corpus_index_from_text_and_reload(tmp_path, tok):
    src = tmp_path / "corpus.txt"
    src.write_text("the quick brown fox jumps over the lazy dog\n\nthe cat sat on the mat\n\nthe quick brown cat\n")
    out = tmp_path / "idx" / "corpus.hdci"
    summary = build_corpus_index(tok, src, out, progress=False)
    assert summary.documents == 3
    assert summary.tokens == 9 + 6 + 4
    assert summary.file_bytes == out.stat().st_size > 0
    assert "documents" in str(summary) and "bytes per token" in str(summary)
    index = load_corpus_index(out, tok)
    assert index.num_tokens == summary.tokens
    ids = tok.encode("the quick", add_special_tokens=False)
    conts = index.lookup(ids, k=4, max_len=2)
    firsts = {int(t[0]) for t, _ in conts}
    assert tok.convert_tokens_to_ids("brown") in firsts
    meta = stores.decode_metadata(index.metadata)
    assert meta["kind"] == "corpus" and meta["tokenizer"].startswith("tiny-words|vocab=")


def test_max_documents_caps_the_corpus(tmp_path, tok):
    src = tmp_path / "c.jsonl"
    src.write_text("".join(json.dumps({"text": f"one two {w}"}) + "\n" for w in WORDS[:20]))
    summary = build_corpus_index(tok, src, tmp_path / "c.hdci", max_documents=7, progress=False)
    assert summary.documents == 7


def test_store_used_with_another_tokenizer_is_rejected(tmp_path, tok):
    src = tmp_path / "c.txt"
    src.write_text("the cat sat on the mat\n")
    out = tmp_path / "c.hdci"
    build_corpus_index(tok, src, out, progress=False)
    other = make_tokenizer(WORDS[::-1], name="other-words")
    with pytest.raises(TokenizerMismatchError, match="other-words"):
        load_corpus_index(out, other)
    # the same vocabulary under another name is accepted
    load_corpus_index(out, make_tokenizer(name="renamed"))


def test_failed_builds_keep_the_existing_index(tmp_path, tok):
    good = tmp_path / "good.txt"
    good.write_text("the cat sat on the mat\n")
    out = tmp_path / "c.hdci"
    build_corpus_index(tok, good, out, progress=False)
    before = out.read_bytes()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "the dog"}\nnot json\n')
    with pytest.raises(InvalidRecordError, match=r"bad\.jsonl:2"):
        build_corpus_index(tok, bad, out, progress=False)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n   \n")
    with pytest.raises(EmptyCorpusError):
        build_corpus_index(tok, empty, out, progress=False)
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp files left


def test_corpus_from_sharegpt_package(tmp_path, tok):
    summary = build_corpus_index(tok, "sharegpt", tmp_path / "s.hdci", max_documents=40, progress=False)
    assert summary.documents == 40 and summary.tokens > 40


# --------------------------------------------------------------------------- model store


def _build(model, tok, prompts, out, **kw):
    kw.setdefault("num_prompts", 5)
    kw.setdefault("max_new_tokens", 12)
    kw.setdefault("progress", False)
    return build_model_store(model, tok, prompts, out=out, **kw)


def test_build_model_store_counts_the_models_greedy_outputs(tmp_path, tok, model, prompts_file):
    out = tmp_path / "m.hdms"
    summary = _build(model, tok, prompts_file, out)
    assert summary.documents == 5
    store = load_model_store(out, tok)
    meta = stores.decode_metadata(store.metadata)
    assert meta["kind"] == "model" and meta["prompts"] == 5 and meta["max_new_tokens"] == 12
    assert store.num_keys == summary.extra["n-gram keys kept"] > 0
    # the store reproduces a generation: its first generated token follows the prompt's last tokens
    records = [json.loads(line) for line in checkpoint_path_for(out).read_text().splitlines()[1:]]
    assert len(records) == 5 and summary.tokens == sum(len(r["tokens"]) for r in records)
    with torch.inference_mode():
        ids = tok.encode("Question: what is the quick brown fox\n\nAnswer:")
        mask = torch.ones(1, len(ids), dtype=torch.long)  # id 0 ([UNK]) is also the pad id
        out_ids = model.generate(torch.tensor([ids]), attention_mask=mask, max_new_tokens=12, do_sample=False)
        ref = out_ids[0, len(ids):].tolist()
    assert records[0]["tokens"] == ref
    conts = store.lookup(ids[-3:], k=8, max_len=4)
    assert any(int(t[0]) == ref[0] for t, _ in conts)


def test_interrupted_model_store_build_resumes_to_the_same_store(tmp_path, tok, model, prompts_file):
    full = tmp_path / "full" / "m.hdms"
    _build(model, tok, prompts_file, full)

    part = tmp_path / "part" / "m.hdms"

    class Stop(Exception):
        pass

    def stop_after_two(i, tokens):
        if i == 1:
            raise Stop

    with pytest.raises(Stop):
        _build(model, tok, prompts_file, part, on_generation=stop_after_two)
    assert not part.exists()
    ckpt = checkpoint_path_for(part)
    assert len(ckpt.read_text().splitlines()) == 1 + 2
    with open(ckpt, "ab") as fh:  # a torn write from a crash is dropped on resume
        fh.write(b'{"key": "abc", "tok')
    done = []
    summary = _build(model, tok, prompts_file, part, on_generation=lambda i, t: done.append(i))
    assert done == [2, 3, 4]
    assert summary.extra["resumed"] == 2 and summary.extra["new generations"] == 3
    a, b = load_model_store(full, tok), load_model_store(part, tok)
    assert a.num_keys == b.num_keys
    contexts = [[i] for i in range(len(tok))] + [[5, 6], [3, 7, 9]]
    assert _lookup_table(a, contexts) == _lookup_table(b, contexts)
    assert a.metadata == b.metadata


def test_model_store_merge_and_overwrite_rules(tmp_path, tok, model, prompts_file):
    out = tmp_path / "m.hdms"
    _build(model, tok, prompts_file, out, num_prompts=3)
    with pytest.raises(FileExistsError, match="--merge"):
        _build(model, tok, prompts_file, out, num_prompts=3)
    first = load_model_store(out, tok)
    summary = _build(model, tok, prompts_file, out, num_prompts=2, merge=True)
    assert summary.extra["new generations"] == 2
    merged = load_model_store(out, tok)
    assert stores.decode_metadata(merged.metadata)["prompts"] == 5
    assert merged.num_keys >= first.num_keys
    # merging equals building the 5 prompts at once
    direct = tmp_path / "direct.hdms"
    _build(model, tok, prompts_file, direct, num_prompts=5)
    contexts = [[i] for i in range(len(tok))]
    assert _lookup_table(merged, contexts) == _lookup_table(load_model_store(direct, tok), contexts)


def test_merge_into_a_store_without_checkpoint_adds_online(tmp_path, tok, model, prompts_file):
    out = tmp_path / "m.hdms"
    _build(model, tok, prompts_file, out, num_prompts=2)
    checkpoint_path_for(out).unlink()
    before = load_model_store(out, tok).num_keys
    summary = _build(model, tok, prompts_file, out, num_prompts=2, merge=True)
    assert any("online" in n for n in summary.notes)
    assert load_model_store(out, tok).num_keys >= before


def _checkpoint_records(out):
    return [json.loads(line) for line in checkpoint_path_for(out).read_text().splitlines()[1:]]


def test_merging_twice_online_keeps_every_generation(tmp_path, tok, model, prompts_file):
    """A store without its checkpoint, merged into twice: the second merge must not mistake the
    checkpoint of the first merge for the store's own generations (stale metadata did)."""
    out = tmp_path / "m.hdms"
    generations: list[list[int]] = []
    record = lambda i, tokens: generations.append(list(tokens))  # noqa: E731
    _build(model, tok, prompts_file, out, num_prompts=2, on_generation=record)
    original = _checkpoint_records(out)
    checkpoint_path_for(out).unlink()  # the store now comes "from elsewhere"
    first = _build(model, tok, prompts_file, out, num_prompts=2, merge=True, on_generation=record)
    assert any("online" in n for n in first.notes)
    merged_once = stores.decode_metadata(load_model_store(out, tok).metadata)
    assert merged_once["prompts"] == 4 and len(merged_once["prompt_keys"]) == 4
    second = _build(model, tok, prompts_file, out, num_prompts=2, merge=True, on_generation=record)
    assert any("online" in n for n in second.notes)
    assert len(generations) == 6

    merged = load_model_store(out, tok)
    meta = stores.decode_metadata(merged.metadata)
    assert meta["prompts"] == 6 and len(set(meta["prompt_keys"])) == 6
    assert meta["generated_tokens"] == sum(len(g) for g in generations) == second.tokens
    assert second.documents == 6
    # The same store, made by hand: the first two generations frozen, then each merge's two
    # added online to the loaded store and saved.
    sequences = [list(s) for s in stores.model_store.iter_sequences(original + _checkpoint_records(out), 3)]
    reference = hd_core.ModelStore.build(sequences[:2], vocab_size=merged.vocab_size)
    for merge_sequences in (sequences[2:4], sequences[4:]):
        for seq in merge_sequences:
            reference.add(seq)
        reference.save(tmp_path / "reference.hdms")
        reference = hd_core.ModelStore.load(tmp_path / "reference.hdms")
    assert merged.num_keys == reference.num_keys
    contexts = [[i] for i in range(len(tok))] + [s[:n] for s in sequences for n in (2, 3)]
    assert _lookup_table(merged, contexts) == _lookup_table(reference, contexts)


def test_long_keys_see_as_much_prompt_as_max_ngram(tmp_path, tok, model, prompts_file):
    """With max_ngram above 8 the store still counts max_ngram prompt tokens before each
    generation (the checkpoint used to keep only 8)."""
    out = tmp_path / "m.hdms"
    max_ngram = 12
    _build(model, tok, prompts_file, out, num_prompts=3, max_ngram=max_ngram)
    records = _checkpoint_records(out)
    lines = prompts_file.read_text().splitlines()[:3]
    prompt_ids = [tok.encode(f"Question: {line}\n\nAnswer:") for line in lines]
    assert all(len(ids) > 8 for ids in prompt_ids)  # so the old cap would cut them
    for record, ids in zip(records, prompt_ids):
        assert record["context"] == ids[-hd_core.ModelStore.MAX_NGRAM:]
    store = load_model_store(out, tok)
    assert store.max_ngram == max_ngram
    reference = hd_core.ModelStore.build(
        [ids[-max_ngram:] + r["tokens"] for ids, r in zip(prompt_ids, records)],
        max_ngram=max_ngram,
        vocab_size=store.vocab_size,
    )
    assert store.num_keys == reference.num_keys
    contexts = [ids[-n:] for ids in prompt_ids for n in range(1, max_ngram + 1)]
    assert _lookup_table(store, contexts) == _lookup_table(reference, contexts)


def test_checkpoint_of_another_build_is_not_mixed_in(tmp_path, tok, model, prompts_file):
    out = tmp_path / "m.hdms"
    _build(model, tok, prompts_file, out, num_prompts=2, max_new_tokens=8)
    out.unlink()
    with pytest.raises(CheckpointError, match="max_new_tokens"):
        _build(model, tok, prompts_file, out, num_prompts=2, max_new_tokens=9)
    _build(model, tok, prompts_file, out, num_prompts=2, max_new_tokens=9, overwrite=True)
    assert checkpoint_path_for(out).with_name(checkpoint_path_for(out).name + ".old").exists()


def test_model_store_prompt_errors(tmp_path, tok, model):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    with pytest.raises(EmptyCorpusError):
        _build(model, tok, empty, tmp_path / "m.hdms")
    with pytest.raises(FileNotFoundError):
        _build(model, tok, tmp_path / "nope.txt", tmp_path / "m.hdms")
    with pytest.raises(EmptyCorpusError, match="max_prompt_tokens"):
        _build(model, tok, ["one two three four five six"], tmp_path / "m.hdms", max_prompt_tokens=3)


# --------------------------------------------------------------------------- defaults + CLI


def test_default_drafter_builds_once_then_loads(tmp_path, monkeypatch, tok, model):
    from hierdraft.stores import defaults

    monkeypatch.setenv("HIERDRAFT_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(defaults, "SMALL_CORPUS_DOCUMENTS", 30)
    monkeypatch.setattr(defaults, "SMALL_MODEL_PROMPTS", 2)
    monkeypatch.setattr(defaults, "SMALL_MODEL_TOKENS", 6)
    drafter = stores.default_drafter(tok, model=model, progress=False, budget=8)
    assert drafter.model_store is not None and drafter.corpus_index is not None
    assert drafter.budget == 8
    model_path, corpus_path = stores.default_store_paths(tok)
    assert model_path.is_file() and corpus_path.is_file()
    assert str(model_path).startswith(str(tmp_path / "home"))

    def no_build(*a, **k):
        raise AssertionError("must not rebuild")

    monkeypatch.setattr(defaults, "build_default_stores", no_build)
    again = stores.default_drafter(tok, model=model, progress=False)
    assert again.corpus_index.num_tokens == drafter.corpus_index.num_tokens
    # The loaded drafter drafts: its context level, read first, continues a repeated phrase.
    tree = again.start(tok.encode("the cat sat on the mat and the cat")).propose()
    assert len(tree) > 0
    assert int(tree.tokens[0]) == tok.convert_tokens_to_ids("sat") and int(tree.sources[0]) == 0
    # another tokenizer gets its own folder: nothing is built without permission
    bare = stores.default_drafter(make_tokenizer(WORDS[:10], name="other"), build_if_missing=False, progress=False)
    assert bare.model_store is None and bare.corpus_index is None


def _parser():
    from hierdraft.cli_build import add_build_parser

    parser = argparse.ArgumentParser(prog="hierdraft")
    sub = parser.add_subparsers(dest="command")
    add_build_parser(sub)
    return parser


def test_cli_build_corpus_and_model(tmp_path, tok, model, prompts_file):
    tok_dir = tmp_path / "tiny"
    tok.save_pretrained(tok_dir)
    model.save_pretrained(tok_dir)
    src = tmp_path / "c.txt"
    src.write_text("the cat sat on the mat\n\nthe dog ran\n")
    out = tmp_path / "c.hdci"
    args = _parser().parse_args(
        ["build", "corpus", "--tokenizer", str(tok_dir), "--source", str(src), "--out", str(out), "--quiet"]
    )
    assert args.func(args) == 0
    assert load_corpus_index(out, tok).num_documents == 2
    mout = tmp_path / "m.hdms"
    argv = ["build", "model", "--model", str(tok_dir), "--prompts", str(prompts_file), "--num-prompts", "2",
            "--max-new-tokens", "5", "--out", str(mout), "--dtype", "float32", "--quiet"]
    args = _parser().parse_args(argv)
    assert args.func(args) == 0
    args = _parser().parse_args(argv + ["--merge"])
    assert args.func(args) == 0
    assert stores.decode_metadata(load_model_store(mout, tok).metadata)["prompts"] == 4
    with pytest.raises(SystemExit):
        _parser().parse_args(["build", "corpus", "--source", "x"])  # --out is required
