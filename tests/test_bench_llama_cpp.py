"""The bench's llama.cpp peers (`llama.cpp`, `llama.cpp-pld`).

Fast tests: which GGUF file the peers decode for a given `--model`, the skip notes when they
cannot run, and the comparison rule with stand-in methods. Slow tests (the real default GGUF and model, a few tokens): the peers' records and
report fields, `speedup_vs_llama.cpp`, and the rule that a peer's difference from `ar` is no
mismatch while a hierdraft/transformers method's difference still is.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from hierdraft.bench import cli_bench, llama_cpp_methods  # noqa: E402
from hierdraft.bench.llama_cpp_methods import PeerModel, build_peer_methods, resolve_peer_model  # noqa: E402
from hierdraft.bench.methods import DecodeSettings, PromptRecord  # noqa: E402
from hierdraft.bench.report import summarize  # noqa: E402
from hierdraft.bench.runner import BenchPrompt, run_bench  # noqa: E402

QUESTIONS = [
    {"question_id": 11, "category": "qa", "turns": ["What is the capital of France?"]},
    {"question_id": 12, "category": "summarization",
     "turns": ["Summarize: the cat sat on the mat, and then the cat sat on the mat again."]},
]
NEW_TOKENS = 6


# --- which file, and when not -------------------------------------------------------------


def test_resolve_peer_model(tmp_path, monkeypatch):
    from hierdraft.models import default_gguf_path

    monkeypatch.delenv("HIERDRAFT_MODEL", raising=False)
    assert resolve_peer_model(None) == PeerModel(default_gguf_path())
    assert resolve_peer_model("default").path == default_gguf_path()
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve_peer_model(str(gguf)) == PeerModel(gguf)

    missing = resolve_peer_model(str(tmp_path / "nope.gguf"))
    assert missing.path is None and "not found" in missing.skip_reason
    folder = resolve_peer_model(str(tmp_path))
    assert folder.path is None and "is not a GGUF file" in folder.skip_reason

    monkeypatch.setenv("HIERDRAFT_MODEL", str(tmp_path))  # what load_model(None) would load
    assert "is not a GGUF file" in resolve_peer_model(None).skip_reason


def test_peers_skipped_with_a_reason(tmp_path, monkeypatch):
    settings = DecodeSettings(max_new_tokens=4)
    kw = dict(threads=1, n_ctx=64, pld_tokens=4)
    no_file = build_peer_methods(["llama.cpp"], PeerModel(None, "because"), settings, **kw)
    assert no_file.methods == {} and no_file.skip_reason == "because"

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import llama_cpp now fails
    missing = build_peer_methods(["llama.cpp", "llama.cpp-pld"], PeerModel(gguf), settings, **kw)
    assert missing.methods == {} and "llama-cpp-python is not installed" in missing.skip_reason

    assert build_peer_methods([], PeerModel(gguf), settings, **kw).methods == {}
    with pytest.raises(ValueError, match="not a llama.cpp peer: hd"):
        build_peer_methods(["hd"], PeerModel(gguf), settings, **kw)


# --- the comparison rule, with stand-in methods (no model) ----------------------------------


class _Fixed:
    """A stand-in method that answers every prompt with fixed tokens in a fixed time."""

    def __init__(self, name: str, tokens: list[int], elapsed: float, peer: bool = False):
        self.name, self.tokens, self.elapsed, self.peer = name, tokens, elapsed, peer

    def run(self, prompt_ids):
        return PromptRecord(tokens=list(self.tokens), elapsed=self.elapsed, forwards=len(self.tokens),
                            prefill_time=self.elapsed / 4, prefill_tokens=1)


def test_peers_are_compared_with_llama_cpp_not_held_to_ar():
    methods = {
        "ar": _Fixed("ar", [1, 2, 3, 4], 4.0),
        "hf-ar": _Fixed("hf-ar", [1, 2, 9, 4], 4.0),  # held to ar: a mismatch
        "llama.cpp": _Fixed("llama.cpp", [1, 2, 3, 5], 1.0, peer=True),  # differs from ar: no mismatch
        "llama.cpp-pld": _Fixed("llama.cpp-pld", [1, 2, 3, 5], 0.5, peer=True),
    }
    prompts = [BenchPrompt(q["question_id"], q["category"], [7, 8]) for q in QUESTIONS]
    run = run_bench(methods, prompts, progress=False)
    assert [(m.method, m.reference, m.first_difference) for m in run.mismatches] == [("hf-ar", "ar", 2)] * 2
    assert run.peers == ["llama.cpp", "llama.cpp-pld"]
    assert run.peer_agreement == {
        "llama.cpp": {"ar": [3, 3]},
        "llama.cpp-pld": {"llama.cpp": [None, None], "ar": [3, 3]},
    }

    summary = summarize(run)
    ov = summary["overall"]
    assert ov["llama.cpp"]["speedup"] == pytest.approx(4.0)
    assert ov["llama.cpp-pld"]["speedup_vs_llama.cpp"] == pytest.approx(2.0)
    assert ov["ar"]["speedup_vs_llama.cpp"] == pytest.approx(0.25)
    assert ov["ar"]["decode_tokens_per_second"] == pytest.approx(3 / 3.0)  # 3 tokens after the prefill, in 3 s
    assert summary["peer_agreement"]["llama.cpp-pld"] == {
        "llama.cpp": {"identical": 2, "prompts": 2}, "ar": {"identical": 0, "prompts": 2}}
    entry = summary["prompts"][0]["methods"]
    assert entry["llama.cpp"]["identical_to"] == {"ar": False}
    assert entry["llama.cpp-pld"]["first_difference_from"] == {"llama.cpp": None, "ar": 3}
    assert "identical_to" not in entry["hf-ar"]


# --- on the real default model --------------------------------------------------------------


def _args(tmp_path: Path, methods: list[str], out: str) -> argparse.Namespace:
    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps(r) + "\n" for r in QUESTIONS), encoding="utf-8")
    parser = argparse.ArgumentParser()
    cli_bench.add_bench_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(
        ["bench", "--questions", str(questions), "--max-new-tokens", str(NEW_TOKENS),
         "--threads", "1", "--out", str(tmp_path / out), "--no-progress", "--pld-tokens", "3",
         "--methods", ",".join(methods)]
    )


@pytest.fixture(scope="module")
def default_model():
    import hierdraft

    return hierdraft.load_default()


@pytest.fixture(scope="module")
def peer_model():
    from hierdraft.models import default_gguf_path

    return PeerModel(default_gguf_path())


def _execute(args, default_model, peer_model, generate_fn=None) -> tuple[int, dict]:
    model, tokenizer = default_model
    code = cli_bench.execute(args, model, tokenizer, None, generate_fn=generate_fn, peer_model=peer_model)
    return code, json.loads((Path(args.out) / "results.json").read_text())


@pytest.mark.slow
def test_peers_on_the_default_gguf(tmp_path, default_model, peer_model):
    args = _args(tmp_path, ["llama.cpp", "llama.cpp-pld"], "out")
    code, result = _execute(args, default_model, peer_model)
    assert code == 0  # whatever llama.cpp's outputs are, they never fail the run
    summary = result["summary"]
    assert summary["methods"] == ["ar", "llama.cpp", "llama.cpp-pld"]
    assert summary["peers"] == ["llama.cpp", "llama.cpp-pld"]
    assert summary["mismatches"] == []

    info = result["settings"]["llama_cpp"]
    assert info["n_threads"] == info["n_threads_batch"] == 1
    assert info["pld"] == {"num_pred_tokens": 3, "max_ngram_size": 2}
    assert info["model"] == str(peer_model.path)
    # the bench's ids (HF tokenizer, <bos> included) are what llama.cpp's own tokenizer gives
    assert info["tokenizer_agrees_on_warmup_prompt"] is True
    assert "AVX2 = 1" in info["system_info"]

    for group in [summary["overall"], *summary["categories"].values()]:
        base = group["llama.cpp"]["tokens_per_second"]
        for m, s in group.items():
            assert s["speedup_vs_llama.cpp"] == pytest.approx(s["tokens_per_second"] / base), m
            assert s["speedup"] == pytest.approx(s["tokens_per_second"] / group["ar"]["tokens_per_second"])
        assert group["llama.cpp"]["speedup_vs_llama.cpp"] == pytest.approx(1.0)
    ov = summary["overall"]
    assert ov["llama.cpp"]["tokens_per_step"] == pytest.approx(1.0)  # one decode per token
    for m in ("ar", "llama.cpp", "llama.cpp-pld"):
        assert ov[m]["decode_tokens_per_second"] is not None, m
        assert ov[m]["verify_ms_mean"] > 0, m
    assert ov["llama.cpp-pld"]["draft_us_p50"] is not None and ov["llama.cpp"]["draft_us_p50"] is None

    agreement = summary["peer_agreement"]
    assert set(agreement["llama.cpp"]) == {"ar"}
    assert set(agreement["llama.cpp-pld"]) == {"llama.cpp", "ar"}
    assert all(c["prompts"] == 2 for refs in agreement.values() for c in refs.values())
    for p in summary["prompts"]:
        for m in ("llama.cpp", "llama.cpp-pld"):
            entry = p["methods"][m]
            assert 1 <= entry["new_tokens"] <= NEW_TOKENS
            assert set(entry["identical_to"]) == set(agreement[m])
        assert p["methods"]["llama.cpp"]["forwards"] == p["methods"]["llama.cpp"]["new_tokens"]
        assert p["methods"]["llama.cpp-pld"]["forwards"] <= p["methods"]["llama.cpp-pld"]["new_tokens"]

    report = (tmp_path / "out" / "report.md").read_text()
    assert "speedup vs llama.cpp |" in report and "## Speedup vs llama.cpp per category" in report
    assert "## Peers: llama.cpp" in report and "| llama.cpp-pld = llama.cpp |" in report


@pytest.mark.slow
def test_peer_differences_are_no_mismatch_but_hierdraft_ones_are(
    tmp_path, default_model, peer_model, monkeypatch, capsys
):
    """ar's output is corrupted (so every other method differs from it) and llama.cpp-pld's too:
    only hf-ar, a method held to ar, counts as a mismatch."""
    from hierdraft.decoding import generate

    def corrupted_ar(model, input_ids, drafter=None, **kw):
        res = generate(model, input_ids, drafter=drafter, **kw)
        res.tokens = [*res.tokens[:-1], (res.tokens[-1] + 1) % 1000]
        return res

    real_run = llama_cpp_methods.LlamaCppMethod.run

    def corrupted_pld(self, prompt_ids):
        rec = real_run(self, prompt_ids)
        if self.name == "llama.cpp-pld":
            rec.tokens = [*rec.tokens[:-1], (rec.tokens[-1] + 1) % 1000]
        return rec

    monkeypatch.setattr(llama_cpp_methods.LlamaCppMethod, "run", corrupted_pld)
    args = _args(tmp_path, ["hf-ar", "llama.cpp", "llama.cpp-pld"], "bad")
    code, result = _execute(args, default_model, peer_model, generate_fn=corrupted_ar)
    assert code == cli_bench.EXIT_MISMATCH
    summary = result["summary"]
    assert {m["method"] for m in summary["mismatches"]} == {"hf-ar"}
    assert sorted(m["question_id"] for m in summary["mismatches"]) == [11, 12]
    agreement = summary["peer_agreement"]
    assert agreement["llama.cpp-pld"]["llama.cpp"]["identical"] == 0
    assert agreement["llama.cpp"]["ar"]["identical"] == 0
    for p in summary["prompts"]:
        pld = p["methods"]["llama.cpp-pld"]
        first = pld["first_difference_from"]["llama.cpp"]
        assert first is not None and first <= pld["new_tokens"] - 1
    listed = [line for line in capsys.readouterr().err.splitlines() if "differs from" in line]
    assert len(listed) == 2 and all("hf-ar differs from ar" in line for line in listed)


@pytest.mark.slow
def test_peers_take_prompts_longer_than_a_batch(peer_model):
    """llama.cpp decodes a prompt in batches of 512 rows; with a draft model llama-cpp-python
    keeps every row's logits, which must fit a prompt longer than one batch."""
    from hierdraft.bench.llama_cpp_methods import context_size

    settings = DecodeSettings(max_new_tokens=2)
    prompt = [2] + [(i * 7919) % 200 + 1000 for i in range(530)]  # <bos> and 530 ordinary ids
    n_ctx = context_size(len(prompt), settings.max_new_tokens)
    assert n_ctx % 256 == 0 and n_ctx >= len(prompt) + 2
    build = build_peer_methods(["llama.cpp", "llama.cpp-pld"], peer_model, settings,
                               threads=1, n_ctx=n_ctx, pld_tokens=4)
    assert build.skip_reason is None
    for name, method in build.methods.items():
        rec = method.run(prompt)
        assert len(rec.tokens) == 2 and rec.forwards <= 2, name
        assert rec.prefill_time is not None and rec.prefill_tokens == 1, name
    with pytest.raises(ValueError, match="exceeds its context"):
        build.methods["llama.cpp"].run(prompt + [1000] * (n_ctx - len(prompt)))

