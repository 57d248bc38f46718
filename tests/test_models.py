"""Model loading (hierdraft.models) and cache paths (hierdraft.paths).

Fast tests use a tiny tokenizer / model saved to a temp folder; the slow test converts the real
default model (Gemma 3 270M from its GGUF package) into a fresh cache and loads it again.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from hierdraft import models, paths


def _tiny_tokenizer(words=("a", "b", "c", "the", "cat"), name="tiny"):
    from tokenizers import Tokenizer, models as tok_models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "[BOS]": 1, "[EOS]": 2}
    for w in words:
        vocab.setdefault(w, len(vocab))
    raw = Tokenizer(tok_models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]", bos_token="[BOS]", eos_token="[EOS]")
    tok.name_or_path = name
    return tok


def _save_tiny_model(folder: Path) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = _tiny_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


# --------------------------------------------------------------------------- paths


def test_cache_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("HIERDRAFT_HOME", str(tmp_path / "hd"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert paths.cache_dir() == tmp_path / "hd" and (tmp_path / "hd").is_dir()
    monkeypatch.delenv("HIERDRAFT_HOME")
    assert paths.cache_dir() == tmp_path / "xdg" / "hierdraft"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert paths.cache_dir(create=False) == tmp_path / "home" / ".cache" / "hierdraft"
    monkeypatch.setenv("HIERDRAFT_HOME", str(tmp_path / "hd"))
    assert paths.models_dir().parent == paths.stores_dir().parent == tmp_path / "hd"


def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / "sub" / "f.txt"
    paths.atomic_write_text(target, "one")
    assert target.read_text() == "one"
    with pytest.raises(RuntimeError):
        with paths.atomic_write(target, "w") as fh:
            fh.write("two")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "one"
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.txt"]
    paths.atomic_write_bytes(target, b"three")
    assert target.read_bytes() == b"three"


def test_atomic_dir_swaps_whole_folders(tmp_path):
    target = tmp_path / "model"
    with paths.atomic_dir(target) as tmp:
        (tmp / "a").write_text("1")
    assert (target / "a").read_text() == "1"
    with pytest.raises(ValueError):
        with paths.atomic_dir(target) as tmp:
            (tmp / "b").write_text("2")
            raise ValueError("conversion failed")
    assert sorted(p.name for p in target.iterdir()) == ["a"]
    with paths.atomic_dir(target) as tmp:
        (tmp / "c").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["c"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


# --------------------------------------------------------------------------- dtype, keys, fingerprints


def test_resolve_dtype_and_cache_key(monkeypatch):
    monkeypatch.delenv("HIERDRAFT_DTYPE", raising=False)
    assert models.resolve_dtype(None) == torch.float32
    assert models.resolve_dtype("bf16") == torch.bfloat16
    assert models.resolve_dtype(torch.float16) == torch.float16
    monkeypatch.setenv("HIERDRAFT_DTYPE", "bfloat16")
    assert models.resolve_dtype(None) == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype"):
        models.resolve_dtype("int3")
    import transformers

    key = models.default_cache_key("bfloat16")
    assert key.endswith("-bfloat16") and f"tf{transformers.__version__}" in key and "pkg" in key
    assert models.default_cache_key("float32") != key


def test_tokenizer_fingerprint():
    a = models.tokenizer_fingerprint(_tiny_tokenizer())
    assert a == models.tokenizer_fingerprint(_tiny_tokenizer())
    assert a.startswith("tiny|vocab=8|sha256=")
    renamed = models.tokenizer_fingerprint(_tiny_tokenizer(name="/some/path/other-name"))
    assert renamed.startswith("other-name|") and models.fingerprint_vocab_hash(renamed) == models.fingerprint_vocab_hash(a)
    different = _tiny_tokenizer(words=("a", "b", "c", "the", "dog"))
    assert models.fingerprint_vocab_hash(models.tokenizer_fingerprint(different)) != models.fingerprint_vocab_hash(a)
    models.check_tokenizer_fingerprint(a, _tiny_tokenizer(name="x"))
    models.check_tokenizer_fingerprint("", different)  # stores without a fingerprint are accepted
    with pytest.raises(models.TokenizerMismatchError, match="was built with tokenizer"):
        models.check_tokenizer_fingerprint(a, different)
    # a raw tokenizers.Tokenizer works too
    assert models.fingerprint_vocab_hash(models.tokenizer_fingerprint(_tiny_tokenizer().backend_tokenizer)) == (
        models.fingerprint_vocab_hash(a)
    )


def test_tokenizer_fingerprint_hashes_the_documented_pairs_and_follows_added_tokens():
    """The hash is sha256 over (id as 4 little-endian bytes, token, NUL) in id order, the format
    stores already record; it is remembered per tokenizer but redone once tokens are added."""
    import hashlib

    tok = _tiny_tokenizer()
    digest = hashlib.sha256()
    for token, idx in sorted(tok.get_vocab().items(), key=lambda kv: (kv[1], kv[0])):
        digest.update(idx.to_bytes(4, "little") + token.encode() + b"\0")
    first = models.tokenizer_fingerprint(tok)
    assert first == f"tiny|vocab=8|sha256={digest.hexdigest()[:16]}"
    assert models.tokenizer_fingerprint(tok) == first
    tok.add_tokens(["zebra"])
    grown = models.tokenizer_fingerprint(tok)
    assert grown.startswith("tiny|vocab=9|") and models.fingerprint_vocab_hash(grown) != models.fingerprint_vocab_hash(first)
    assert grown == models.tokenizer_fingerprint(_tiny_tokenizer_with("zebra"))


def _tiny_tokenizer_with(extra: str):
    tok = _tiny_tokenizer()
    tok.add_tokens([extra])
    return tok


# --------------------------------------------------------------------------- other local models


def test_load_model_from_a_local_folder_and_env_override(tmp_path, monkeypatch):
    folder = _save_tiny_model(tmp_path / "tiny-llama")
    model, tok = models.load_model(folder, dtype="float32")
    assert model.dtype == torch.float32 and not model.training
    assert tok.name_or_path == "tiny-llama" and len(tok) == 8
    monkeypatch.setenv("HIERDRAFT_MODEL", str(folder))
    model2, tok2 = models.load_default(dtype="bfloat16")
    assert model2.dtype == torch.bfloat16 and type(model2) is type(model)
    assert models.load_tokenizer(None).get_vocab() == tok.get_vocab()
    with pytest.raises(FileNotFoundError):
        models.load_model(tmp_path / "missing-model")
    with pytest.raises(FileNotFoundError, match="GGUF"):
        models.load_model(tmp_path / "missing.gguf")


# --------------------------------------------------------------------------- the real default model


@pytest.mark.slow
def test_default_model_loads_its_gguf_as_it_is(tmp_path, monkeypatch):
    """Gemma 3 270M computes on the GGUF's own blocks; only its tokenizer is converted and cached."""
    from hierdraft import gguf_metadata
    from hierdraft.quant_modules import QuantEmbedding, QuantLinear

    monkeypatch.setenv("HIERDRAFT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("HIERDRAFT_MODEL", raising=False)
    monkeypatch.delenv("HIERDRAFT_DTYPE", raising=False)
    model, tok = models.load_default()
    assert not [m for m in model.modules() if type(m) is torch.nn.Linear]
    assert isinstance(model.get_input_embeddings(), QuantEmbedding)
    assert model.get_output_embeddings().qweight is model.get_input_embeddings().qweight  # tied, one table
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    assert params < 1_000_000, params  # norms only: no float copy of the weights
    cached = sorted(p.name for p in paths.models_dir().iterdir())
    assert not list(paths.cache_dir().rglob("*.safetensors"))
    assert any(name.startswith("tokenizer-") for name in cached), cached
    assert model.dtype == torch.float32 and tok.is_fast and len(tok) == 262144
    assert models.tokenizer_fingerprint(tok).startswith("gemma-3-270m|vocab=262144|")
    ids = tok("Question: What is the capital of France?\n\nAnswer:", return_tensors="pt").input_ids
    assert ids[0, 0].item() == tok.bos_token_id
    with torch.inference_mode():
        out = model.generate(ids, max_new_tokens=4, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids.shape[1]:])
    # the second load reads the cached tokenizer instead of converting again
    monkeypatch.setattr(gguf_metadata, "gguf_tokenizer", lambda *a: pytest.fail("tokenizer converted twice"))
    model2, tok2 = models.load_default()
    assert tok2.get_vocab() == tok.get_vocab() and isinstance(model2.get_output_embeddings(), QuantLinear)
    folder = models._tokenizer_dir(models.default_gguf_path(), models._default_tokenizer_key())
    _check_recorded_added_tokens(folder, tmp_path / "without", tok)


def _check_recorded_added_tokens(folder: Path, copy: Path, tok) -> None:
    """The added tokens recorded in the cached tokenizer's config (which spares transformers a
    second parse of tokenizer.json) give the tokenizer transformers builds without them."""
    import json
    import shutil

    from transformers import PreTrainedTokenizerFast

    config = json.loads((folder / "tokenizer_config.json").read_text())
    assert len(config["added_tokens_decoder"]) == len(tok.added_tokens_decoder) > 100
    shutil.copytree(folder, copy)
    del config["added_tokens_decoder"]
    (copy / "tokenizer_config.json").write_text(json.dumps(config))
    legacy = PreTrainedTokenizerFast.from_pretrained(copy)
    assert legacy.get_vocab() == tok.get_vocab()
    assert legacy.added_tokens_decoder == tok.added_tokens_decoder
    assert legacy.special_tokens_map == tok.special_tokens_map and legacy.all_special_ids == tok.all_special_ids
    text = "<bos>Question: <start_of_turn>user\nhi <mask>  there<end_of_turn>\n\n<eos><pad> done"
    assert legacy(text).input_ids == tok(text).input_ids
    assert legacy.decode(tok(text).input_ids) == tok.decode(tok(text).input_ids)


@pytest.mark.slow
def test_gguf_config_equals_transformers_own(tmp_path):
    """hierdraft's fast config reader gives the config transformers builds from the same file."""
    from transformers import AutoConfig

    from hierdraft.gguf_metadata import gguf_config
    from hierdraft.gguf_model import open_gguf

    path = models.default_gguf_path()
    ours = gguf_config(open_gguf(path), path).to_dict()
    theirs = AutoConfig.from_pretrained(path.parent, gguf_file=path.name).to_dict()
    for config in (ours, theirs):
        config.pop("_name_or_path")  # where it was read from, not what it says
    assert ours == theirs


@pytest.mark.slow
def test_default_float_model_converts_once_then_loads_from_cache(tmp_path, monkeypatch):
    """quantized=False: transformers dequantizes the GGUF once into a cached float32 checkpoint."""
    monkeypatch.setenv("HIERDRAFT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("HIERDRAFT_MODEL", raising=False)
    monkeypatch.delenv("HIERDRAFT_DTYPE", raising=False)
    model, tok = models.load_default(quantized=False)
    folder = models.default_model_dir()
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    assert str(folder).startswith(str(tmp_path / "home"))
    del model
    # the second load reads the cached checkpoint instead of converting again
    monkeypatch.setattr(models, "_convert_default", lambda *a: pytest.fail("converted twice"))
    model, tok = models.load_default(quantized=False)
    assert model.dtype == torch.float32 and tok.is_fast and len(tok) == 262144
    assert isinstance(model.get_output_embeddings(), torch.nn.Linear)
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.inference_mode():
        out = model.generate(ids, max_new_tokens=4, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids.shape[1]:]) or out.shape[1] == ids.shape[1] + 4
    # nothing half-written is left in the cache
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]
