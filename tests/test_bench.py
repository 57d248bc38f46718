"""Tests of `hierdraft bench` on a tiny randomly initialised Llama (no downloads).

The bench runs end to end on a 3-question temporary JSONL with a byte-level tokenizer and a
pure-Python context drafter: every output file is written, every method is present, a method
whose output differs from `ar` is caught (exit status 3), and bad question files are reported
with file and line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

try:
    import hierdraft  # noqa: F401
except ImportError:  # running from a checkout without the extension installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from hierdraft.bench import cli_bench, methods as bench_methods  # noqa: E402
from hierdraft.questions import (  # noqa: E402
    QuestionFileError,
    default_questions_path,
    interleave_categories,
    load_questions,
    select_per_category,
)
from hierdraft.bench.runner import first_difference, rotation  # noqa: E402

VOCAB = 260
BOS, EOS = 256, 257

QUESTIONS = [
    {"question_id": 1, "category": "writing", "turns": ["Write a poem about the sea, the sea, the sea.", "again"]},
    {"question_id": 2, "category": "qa", "turns": ["What is the capital of France?"], "reference": ["Paris"]},
    {"question_id": 3, "category": "summarization", "turns": ["Summarize: the cat sat on the mat; the cat sat."]},
]


class ByteTokenizer:
    """Bytes as tokens (0..255) after a BOS; prompts are cut to keep the test fast."""

    eos_token_id = EOS

    def encode(self, text: str) -> list[int]:
        return [BOS, *text.encode("utf-8")[:48]]


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=BOS, eos_token_id=EOS, pad_token_id=EOS,
    )
    model = transformers.LlamaForCausalLM(config).eval()
    model.generation_config.eos_token_id = EOS
    model.generation_config.pad_token_id = EOS
    return model


# --- a stand-in drafter (the drafter protocol of docs/architecture.md) --------------------


class _Tree:
    def __init__(self, tokens: list[int]):
        n = len(tokens)
        self.tokens = np.asarray(tokens, dtype=np.uint32)
        self.parents = np.arange(-1, n - 1, dtype=np.int32)
        self.depths = np.arange(1, n + 1, dtype=np.int32)
        self.sources = np.zeros(n, dtype=np.uint8)

    def __len__(self) -> int:
        return len(self.tokens)


class _Session:
    def __init__(self, prompt, max_len: int):
        self.seq = [int(t) for t in prompt]
        self.max_len = max_len

    def propose(self) -> _Tree:
        # prompt lookup: the tokens that followed the last earlier occurrence of the last token
        last = self.seq[-1]
        for i in range(len(self.seq) - 2, -1, -1):
            if self.seq[i] == last:
                return _Tree(self.seq[i + 1 : i + 1 + self.max_len])
        return _Tree([])

    def accept(self, tokens) -> None:
        self.seq.extend(int(t) for t in tokens)

    def finish(self, learn: bool = True) -> None:
        pass


class ContextDrafter:
    def __init__(self, order, max_len: int = 4):
        self.order = order
        self.max_len = max_len

    def start(self, prompt_ids) -> _Session:
        ids = prompt_ids.reshape(-1).tolist() if hasattr(prompt_ids, "reshape") else list(prompt_ids)
        return _Session(ids, self.max_len)


def _standin_generate(model, input_ids, drafter=None, max_new_tokens=16, temperature=0.0,
                      eos_token_id=None, seed=None):
    """Plain greedy decoding that also exercises the drafter protocol (used only when
    hierdraft.generate is not importable)."""
    t0 = time.perf_counter()
    session = drafter.start(input_ids[0].tolist()) if drafter is not None else None
    out = model(input_ids, use_cache=True)
    cache, tokens = out.cache, [int(out.logits[0, -1].argmax())]
    prefill = time.perf_counter() - t0
    draft_times, verify_times = [], []
    while len(tokens) < max_new_tokens and tokens[-1] != eos_token_id:
        if session is not None:
            session.accept(tokens[-1:])
            d0 = time.perf_counter()
            session.propose()
            draft_times.append(time.perf_counter() - d0)
        v0 = time.perf_counter()
        out = model(torch.tensor([[tokens[-1]]]), cache=cache, use_cache=True)
        cache = out.cache
        tokens.append(int(out.logits[0, -1].argmax()))
        verify_times.append(time.perf_counter() - v0)
    if session is not None:
        session.finish()
    elapsed = time.perf_counter() - t0
    return SimpleNamespace(
        tokens=tokens, steps=len(verify_times), accepted_per_step=[0] * len(verify_times),
        mean_accepted_tokens=1.0, draft_times=draft_times, verify_times=verify_times,
        prefill_time=prefill, elapsed=elapsed, tokens_per_second=len(tokens) / elapsed,
    )


def _generate_fn():
    try:
        from hierdraft.decoding import generate
    except ImportError:
        return _standin_generate
    return generate


# --- helpers --------------------------------------------------------------------------------


def _write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _args(tmp_path: Path, questions: Path, **overrides) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    cli_bench.add_bench_parser(sub)
    args = parser.parse_args(
        ["bench", "--questions", str(questions), "--max-new-tokens", "24", "--threads", "1",
         "--out", str(tmp_path / "out"), "--no-progress", "--pld-tokens", "3"]
    )
    for k, v in overrides.items():
        setattr(args, k, v)
    return args


def _run(tmp_path, tiny_model, generate_fn, **overrides) -> tuple[int, dict]:
    questions = _write_jsonl(tmp_path / "q.jsonl", QUESTIONS)
    args = _args(tmp_path, questions, **overrides)
    code = cli_bench.execute(args, tiny_model, ByteTokenizer(), ContextDrafter,
                             model_name="tiny-llama", generate_fn=generate_fn)
    result = json.loads((tmp_path / "out" / "results.json").read_text())
    return code, result


# --- end to end -----------------------------------------------------------------------------


def test_bench_int8_mode_compares_with_fp32(tmp_path):
    """--numerics int8 on a quantized model: drafting stays exact within the mode, and ar-fp32
    (the fp32 mode's plain output) is compared like a peer, never counted as a mismatch."""
    from conftest import make_tiny_llama
    from gguf_tiny import write_tiny_gguf

    from hierdraft.gguf_model import load_gguf_model
    from hierdraft.quant_modules import set_numerics

    source = make_tiny_llama(dtype=torch.float32, vocab_size=VOCAB, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=EOS)
    model = set_numerics(load_gguf_model(write_tiny_gguf(source, tmp_path / "tiny.gguf", "Q8_0")), "int8")
    model.generation_config.eos_token_id = EOS
    code, result = _run(tmp_path, model, _generate_fn(), numerics="int8", methods=["ar", "context", "ar-fp32"])
    assert code == 0, result["summary"]["mismatches"]
    summary = result["summary"]
    assert summary["methods"] == ["ar", "context", "ar-fp32"] and summary["mismatches"] == []
    # 2 layers x 7 linear layers, the embedding and the (untied) head, all kept in Q8_0 blocks
    assert result["model"]["numerics"] == "int8" and result["model"]["weights"] == {"Q8_0": 16}
    counts = summary["peer_agreement"]["ar-fp32"]["ar"]
    assert counts["prompts"] == 3 and 0 <= counts["identical"] <= 3
    report = (tmp_path / "out" / "report.md").read_text()
    assert "numerics: int8" in report and "`ar-fp32` identical to `ar`" in report
    with pytest.raises(ValueError, match="--numerics int8"):
        cli_bench._plan(_args(tmp_path, tmp_path / "q.jsonl", numerics="fp32", methods=["ar", "ar-fp32"]))


def test_bench_end_to_end(tmp_path, tiny_model):
    code, result = _run(tmp_path, tiny_model, _generate_fn())
    out = tmp_path / "out"
    assert code == 0, result["summary"]["mismatches"]
    assert (out / "report.md").is_file()
    png = (out / "speedup.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000

    summary = result["summary"]
    # the tiny model is no GGUF file: every method but the llama.cpp peers runs
    assert summary["methods"] == list(bench_methods.TORCH_METHODS)
    # ar-fp32 only runs beside the int8 numeric mode (test_bench_int8_mode_compares_with_fp32)
    assert result["settings"]["methods_requested"] == [
        m for m in bench_methods.ALL_METHODS if m != bench_methods.FP32_METHOD
    ]
    assert "no GGUF file" in result["settings"]["llama_cpp"]["skipped"]
    assert summary["mismatches"] == [] and summary["outputs_compared"]
    assert set(summary["categories"]) == {"writing", "qa", "summarization"}
    for group in [summary["overall"], *summary["categories"].values()]:
        assert set(group) == set(bench_methods.TORCH_METHODS)
        for m, s in group.items():
            assert s["tokens_per_second"] > 0 and s["speedup"] > 0, m
    ov = summary["overall"]
    assert ov["ar"]["speedup"] == pytest.approx(1.0)
    assert ov["ar"]["tokens_per_step"] == pytest.approx(1.0)
    assert ov["hf-ar"]["tokens_per_step"] == pytest.approx(1.0)
    assert ov["hd"]["draft_us_p50"] is not None and ov["hd"]["draft_us_p99"] >= ov["hd"]["draft_us_p50"]
    assert ov["hd"]["verify_ms_mean"] > 0
    assert ov["hf-ar"]["draft_us_p50"] is None and ov["ar"]["draft_us_p50"] is None
    # decode-only throughput needs a timed prefill (hierdraft's loop has one, model.generate not)
    assert ov["ar"]["decode_tokens_per_second"] > 0 and ov["hd"]["decode_tokens_per_second"] > 0
    assert ov["hf-ar"]["decode_tokens_per_second"] is None
    assert all(s["speedup_vs_llama.cpp"] is None for s in ov.values())  # llama.cpp did not run
    # the tiny model falls into a loop within 24 tokens: drafts are accepted (steps verified)
    assert ov["hd"]["tokens_per_step"] > 1.0 and ov["hf-pld"]["tokens_per_step"] > 1.0
    assert len(summary["prompts"]) == 3
    for p in summary["prompts"]:  # the forward hook sees every forward of hierdraft's loop
        for m in ("ar", "context", "hd"):
            assert p["methods"][m]["forwards"] == p["methods"][m]["loop_steps"], (m, p)

    assert result["settings"]["pld_tokens"] == 3 and result["settings"]["max_new_tokens"] == 24
    assert result["model"]["name"] == "tiny-llama"
    assert result["machine"]["torch_threads"] == 1 and result["machine"]["cpu"]
    assert set(result["versions"]) >= {"hierdraft", "torch", "transformers"}

    report = (out / "report.md").read_text()
    for m in bench_methods.TORCH_METHODS:
        assert f"| {m} |" in report
    assert "identical to `ar` on all 3 prompts" in report
    assert "The llama.cpp peers did not run: no GGUF file" in report


def test_bench_detects_a_wrong_method(tmp_path, tiny_model, capsys):
    real = _generate_fn()

    def corrupting(model, input_ids, drafter=None, **kw):
        res = real(model, input_ids, drafter=drafter, **kw)
        if drafter is not None and drafter.order == ("corpus",):
            res.tokens = list(res.tokens)
            res.tokens[-1] = (res.tokens[-1] + 1) % 256
        return res

    code, result = _run(tmp_path, tiny_model, corrupting)
    assert code == cli_bench.EXIT_MISMATCH
    mismatches = result["summary"]["mismatches"]
    assert {m["method"] for m in mismatches} == {"corpus"}
    assert sorted(m["question_id"] for m in mismatches) == [1, 2, 3]
    assert all(m["first_difference"] == m["reference_length"] - 1 for m in mismatches)
    assert "differ from ar" in capsys.readouterr().err
    assert "mismatch" in (tmp_path / "out" / "report.md").read_text()


def test_bench_sampling_holds_hierdrafts_methods_to_ars_samples(tmp_path, tiny_model):
    """Sampled, hierdraft's methods must reproduce ar's tokens (keyed draws); transformers'
    sampler draws otherwise and is only reported, like a peer."""
    code, result = _run(tmp_path, tiny_model, _generate_fn(), temperature=0.8,
                        methods=["hf-ar", "hd", "context"], limit_per_category=1)
    summary = result["summary"]
    assert code == 0
    assert summary["methods"] == ["ar", "hf-ar", "hd", "context"]
    assert summary["outputs_compared"] and summary["mismatches"] == []
    assert summary["peers"] == ["hf-ar"]
    assert "Sampled outputs" in (tmp_path / "out" / "report.md").read_text()


def test_bench_sampling_reports_a_sample_that_differs(tmp_path, tiny_model):
    real = _generate_fn()

    def corrupting(model, input_ids, drafter=None, **kw):
        res = real(model, input_ids, drafter=drafter, **kw)
        if drafter is not None:
            res.tokens = list(res.tokens)
            res.tokens[0] = (res.tokens[0] + 1) % 256
        return res

    code, result = _run(tmp_path, tiny_model, corrupting, temperature=0.8, methods=["hd"], limit_per_category=1)
    assert code == cli_bench.EXIT_MISMATCH
    assert {m["method"] for m in result["summary"]["mismatches"]} == {"hd"}


def test_bench_time_limit_reports_the_prompts_done(tmp_path, tiny_model):
    code, result = _run(tmp_path, tiny_model, _generate_fn(), time_limit=0.0, methods=["hd"])
    assert code == 0
    assert result["settings"]["interrupted"] and result["settings"]["prompts"] == 1
    assert result["settings"]["prompts_selected"] == 3
    assert len(result["summary"]["prompts"]) == 1
    assert "Stopped early: 1 of 3" in (tmp_path / "out" / "report.md").read_text()


# --- questions --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"question_id": 9, "category": "qa"}', "missing key(s) turns"),
        ('{"question_id": 9, "category": "", "turns": ["x"]}', "category must be"),
        ('{"question_id": 9, "category": "qa", "turns": []}', "turns must be"),
        ('{"question_id": 9, "category": "qa", "turns": [3]}', "turns must be"),
        ('{"question_id": 1, "category": "qa", "turns": ["dup"]}', "duplicate question_id 1 (first on line 1)"),
    ],
)
def test_question_file_errors_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(QUESTIONS[0]) + "\n\n" + line + "\n", encoding="utf-8")
    with pytest.raises(QuestionFileError) as info:
        load_questions(path)
    assert str(info.value).startswith(f"{path}:3: ")
    assert message in str(info.value)


def test_question_file_missing_or_empty(tmp_path):
    with pytest.raises(QuestionFileError, match="not found"):
        load_questions(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(QuestionFileError, match="no questions"):
        load_questions(tmp_path / "empty.jsonl")


def test_bench_command_reports_bad_question_file(tmp_path, tiny_model):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question_id": 1}\n', encoding="utf-8")
    with pytest.raises(QuestionFileError, match=r"bad.jsonl:1: missing key"):
        cli_bench.execute(_args(tmp_path, bad), tiny_model, ByteTokenizer(), ContextDrafter)


def test_selection_and_order(tmp_path):
    rows = [{"question_id": i, "category": c, "turns": [f"q{i}"]}
            for i, c in enumerate(["a", "a", "a", "b", "b", "c"])]
    qs = load_questions(_write_jsonl(tmp_path / "q.jsonl", rows))
    picked = select_per_category(qs, 2)
    assert [q.question_id for q in picked] == [0, 1, 3, 4, 5]
    assert [q.question_id for q in interleave_categories(picked)] == [0, 3, 5, 1, 4]
    assert select_per_category(qs, None) == qs
    assert qs[2].line == 3


def test_default_questions_path(tmp_path):
    assert default_questions_path(tmp_path / "a" / "b") in (None, default_questions_path())
    (tmp_path / "shared" / "specbench").mkdir(parents=True)
    target = tmp_path / "shared" / "specbench" / "question.jsonl"
    _write_jsonl(target, QUESTIONS)
    assert default_questions_path(tmp_path / "repo") == target.resolve()


def test_runner_helpers():
    assert rotation(["a", "b", "c"], 1) == ["b", "c", "a"]
    assert rotation(["a", "b", "c"], 3) == ["a", "b", "c"]
    assert first_difference([1, 2, 3], [1, 2, 3]) is None
    assert first_difference([1, 2, 3], [1, 5, 3]) == 1
    assert first_difference([1, 2], [1, 2, 3]) == 2


def test_cli_parser_does_not_import_torch():
    """`hierdraft --help` builds every sub-command's parser; torch must stay unloaded (seconds)."""
    import subprocess

    code = "import sys, hierdraft.cli as c; c.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
