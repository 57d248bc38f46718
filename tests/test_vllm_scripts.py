"""The CPU-testable parts of issue 10's scripts: argument parsing, the vLLM configs they build,
report building, the checkpoint check, the CUDA-device pytest plugin, and the proposer benchmark's
simulation (no timings asserted). The GPU runs themselves need a GPU machine (scripts/gpu_vllm.sh)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"


def load_script(name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def vbench():
    return load_script("gpu_vllm_bench")


def test_speculative_configs(vbench):
    assert vbench.speculative_config("none", 5) is None
    assert vbench.speculative_config("hierdraft", 5) == {
        "method": "custom_class", "model": "hierdraft.vllm.HierdraftProposer", "num_speculative_tokens": 5,
    }
    assert vbench.speculative_config("ngram", 4)["num_speculative_tokens"] == 4
    assert vbench.speculative_config("suffix", 5, suffix_k=16) == {"method": "suffix", "num_speculative_tokens": 16}
    with pytest.raises(ValueError, match="unknown method"):
        vbench.speculative_config("eagle", 5)


def test_bench_arguments(vbench):
    args = vbench.parse_args(["run", "--model", "/m", "--out", "/o", "--methods", "none,hierdraft"])
    assert args.method_list == ["none", "hierdraft"] and args.concurrency_list == [1, 32]
    one = vbench.parse_args(["one", "--model", "/m", "--method", "suffix", "--result", "/r", "--concurrency", "4"])
    assert one.method == "suffix" and one.concurrency_list == [4]
    for bad in (["run", "--model", "/m", "--out", "/o", "--methods", "hierdraft"],  # no reference
                ["run", "--model", "/m", "--out", "/o", "--methods", "none,eagle"],
                ["run", "--model", "/m", "--out", "/o", "--concurrency", "0"],
                []):
        with pytest.raises(SystemExit):
            vbench.parse_args(bad)


def _result(method, outputs_by_c, seconds_by_c, spec=None):
    return {
        "method": method, "prompts": ["q1", "q2"], "categories": ["math", "qa"],
        "runs": {c: {"seconds": seconds_by_c[c], "outputs": o, "output_tokens": sum(map(len, o)), "spec": spec or {}}
                 for c, o in outputs_by_c.items()},
    }


def test_report_counts_speed_and_mismatches(vbench):
    ref = _result("none", {"1": [[1, 2, 3], [4, 5]], "32": [[1, 2, 3], [4, 6]]}, {"1": 1.0, "32": 0.5})
    hd = _result("hierdraft", {"1": [[1, 2, 3], [4, 5]], "32": [[1, 2, 9], [4, 6]]}, {"1": 0.5, "32": 0.5},
                 spec={"spec_decode_num_drafts": 4.0, "spec_decode_num_draft_tokens": 20.0,
                       "spec_decode_num_accepted_tokens": 6.0})
    summary, report = vbench.build_report({"none": ref, "hierdraft": hd}, {"model": "m", "k": 5})
    rows = {(r["method"], r["concurrency"]): r for r in summary["rows"]}
    assert rows[("hierdraft", 1)]["speedup"] == pytest.approx(2.0)
    assert rows[("hierdraft", 1)]["output_tokens_per_s"] == pytest.approx(10.0)
    assert rows[("hierdraft", 1)]["mismatches"] == 0 and rows[("hierdraft", 32)]["mismatches"] == 1
    assert rows[("hierdraft", 1)]["accepted_per_draft"] == pytest.approx(1.5)
    assert summary["mismatches"] == [{"method": "hierdraft", "concurrency": 32, "prompt": "q1",
                                      "category": "math", "position": 2}]
    assert summary["reference_differs_across_concurrency"] == 1
    assert "| hierdraft | 1 | 10.0 | 2.00x | 1.50 | 0 / 2 |" in report
    assert "prompt q1 (math) differs from token 2" in report


def test_first_difference(vbench):
    assert vbench.first_difference([1, 2], [1, 2]) is None
    assert vbench.first_difference([1, 2], [1, 3]) == 1
    assert vbench.first_difference([1, 2], [1, 2, 3]) == 2


def test_prompts_come_from_the_question_file(vbench, tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text("\n".join(json.dumps({"question_id": i, "category": c, "turns": [f"question {i}?"]})
                              for i, c in enumerate(["a", "a", "b", "b", "b"])))
    prompts = vbench.select_prompts(path, 2)
    assert [p[:2] for p in prompts] == [("0", "a"), ("2", "b"), ("1", "a"), ("3", "b")]
    assert prompts[0][2] == "Question: question 0?\n\nAnswer:"


def test_cuda_script_arguments_are_what_the_hierdraft_cli_takes(tmp_path):
    cuda = load_script("gpu_hierdraft_cuda")
    from hierdraft.cli import build_parser

    args = cuda.parse_args(["--out", str(tmp_path), "--budgets", "32,64", "--questions", "/q.jsonl"])
    assert args.budget_list == [32, 64]
    parsed = build_parser().parse_args(cuda.bench_argv(args, 64))
    assert parsed.budget == 64 and parsed.out == tmp_path / "bench-budget64" and str(parsed.questions) == "/q.jsonl"
    cmd, env = cuda.test_command("cuda")
    assert cmd[-len(cuda.EXACTNESS_TESTS):] == list(cuda.EXACTNESS_TESTS)
    assert all((ROOT / t).is_file() for t in cuda.EXACTNESS_TESTS)
    assert str(SCRIPTS) in env["PYTHONPATH"].split(os.pathsep) and env["HIERDRAFT_TEST_DEVICE"] == "cuda"
    with pytest.raises(SystemExit):
        cuda.parse_args(["--out", str(tmp_path), "--budgets", "0"])


def test_device_plugin_sets_the_default_device(tmp_path):
    test = tmp_path / "test_device.py"
    test.write_text("import torch\n\ndef test_default():\n    assert torch.empty(1).device.type == 'cpu'\n")
    env = dict(os.environ, HIERDRAFT_TEST_DEVICE="cpu", PYTHONPATH=str(SCRIPTS))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "cuda_default_device", str(test)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "cuda_default_device", str(test)],
                          cwd=tmp_path, env=dict(env, HIERDRAFT_TEST_DEVICE="meta"), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode != 0  # tensors land on the meta device, so the assertion fails


def test_checkpoint_problems(tmp_path):
    ckpt = load_script("gpu_write_checkpoint")
    problems = ckpt.checkpoint_problems(tmp_path)
    assert "missing config.json" in problems and "no *.safetensors weights" in problems
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "hierdraft-model.json"):
        (tmp_path / name).write_text(json.dumps({"architectures": ["Gemma3ForCausalLM"]}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert ckpt.checkpoint_problems(tmp_path) == []


@pytest.mark.slow
def test_default_checkpoint_is_complete():
    ckpt = load_script("gpu_write_checkpoint")
    folder = ckpt.write_checkpoint("float32")
    assert ckpt.checkpoint_problems(folder) == []


def test_check_script_says_when_vllm_is_missing(capsys):
    check = load_script("check_vllm_proposer")
    try:
        import vllm  # noqa: F401
    except ImportError:
        assert check.main(["--steps", "1"]) == 1
        assert "vLLM is not importable" in capsys.readouterr().err
    else:  # pragma: no cover - the project's venv has no vLLM
        pytest.skip("vLLM is installed here")


# Two requests whose answers repeat their prompts, so the context level alone drafts.
TINY_REQUESTS = [([5, 6, 7, 8], [9, 5, 6, 7, 8, 9, 5, 6]), ([1, 2, 3], [1, 2, 3, 1, 2, 3, 4])]


def context_only_proposers(bench):
    """A factory of proposers (K = 4, max_model_len 64) without model store or corpus index."""
    from hierdraft.vllm import HierdraftProposer

    def factory(rows):
        return HierdraftProposer(bench.stand_in_config(4, 64, rows, {"model_store": "none", "corpus_index": "none"}))

    return factory


def test_proposer_benchmark_simulation_runs():
    bench = load_script("bench_vllm_proposer")
    factory, requests = context_only_proposers(bench), TINY_REQUESTS
    result = bench.bench(factory, requests, rows=3, steps=12, warmup=2, max_model_len=64, seed=0)
    assert result["rows"] == 3 and result["steps"] == 12
    assert result["p50_us"] > 0 and result["p99_us"] >= result["p50_us"]
    assert result["requests_started"] > 3  # finished requests were replaced
    assert result["draft_tokens_per_row"] > 0 and result["accepted_per_row_step"] > 0
    table = bench.format_table([result, {**result, "rows": 32, "p50_us": 50.0}])
    assert "| 3 |" in table and "<= 100 (met)" in table


def test_proposer_benchmark_compares_threads_on_one_batch():
    bench = load_script("bench_vllm_proposer")
    factory = context_only_proposers(bench)
    result = bench.bench_threads(factory, TINY_REQUESTS, rows=30, steps=10, warmup=2, max_model_len=64, seed=0)
    assert result["rows"] == 30
    assert result["parallel_min_rows"] == factory(1).sessions.parallel_min_rows
    assert result["default_p50_us"] > 0 and result["serial_p50_us"] > 0 and result["paired_ratio"] > 0
    table = bench.format_threads([result])
    assert table.splitlines()[2].startswith("| 30 |")
