#!/usr/bin/env python3
"""Check HierdraftProposer against a real vLLM install, on CPU: vLLM's own configs, its own
``create_custom_proposer`` and its own ``InputBatch`` (the arrays the V1 GPU model runner passes).

Run it with the Python of an environment that has vLLM (vLLM pins other torch/transformers
versions than this project, so it has its own venv; never the project's .venv), with hierdraft
importable from this checkout (the extension is abi3, built by ``maturin develop``):

    python3 -m venv /work/vllm-venv && /work/vllm-venv/bin/pip install vllm==0.33.0
    /work/vllm-venv/bin/python scripts/check_vllm_proposer.py [--model DIR] [--steps 200]

``--model`` is a local Hugging Face checkpoint folder (default: hierdraft's converted default
model, written by ``hierdraft.load_default()``). It is only read for its config: no weights are
loaded and no GPU is needed.

What it checks, for both spellings of the config (``method="custom_class"``, and the dotted path
in ``model`` alone):

1. ``SpeculativeConfig`` resolves to ``custom_class``, ``VllmConfig`` builds with it, and
   ``create_custom_proposer(vllm_config)`` returns a ``HierdraftProposer`` with a callable
   ``propose``;
2. under continuous batching simulated on vLLM's ``InputBatch`` (requests added, finished,
   removed and condensed, with the bookkeeping of ``GPUModelRunner._bookkeeping_sync``), every
   draft equals a fresh session's best chain on the same tokens, none is longer than K or runs
   past ``max_model_len``, and each request's session is started once.

Exit status 0 when every check passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))


def _default_model_dir() -> Path | None:
    """A converted default model in hierdraft's cache. Its folder name holds the versions of the
    environment that converted it (the project's), not this one's, so any complete one will do."""
    from hierdraft import paths
    from hierdraft.models import _COMPLETE_MARKER, DEFAULT_MODEL_ID

    found = sorted(paths.models_dir().glob(f"{DEFAULT_MODEL_ID}-*/{_COMPLETE_MARKER}"))
    return found[0].parent if found else None


def build_vllm_config(model_dir: Path, k: int, max_model_len: int, max_num_seqs: int, explicit_method: bool):
    from vllm.config import DeviceConfig, ModelConfig, ParallelConfig, SchedulerConfig, SpeculativeConfig, VllmConfig

    model_config = ModelConfig(model=str(model_dir), max_model_len=max_model_len, dtype="bfloat16")
    parallel = ParallelConfig()
    spec_args = {"model": "hierdraft.vllm.HierdraftProposer", "num_speculative_tokens": k}
    if explicit_method:
        spec_args["method"] = "custom_class"
    spec = SpeculativeConfig(**spec_args, target_model_config=model_config, target_parallel_config=parallel)
    if spec.method != "custom_class":
        raise AssertionError(f"SpeculativeConfig resolved method {spec.method!r}, expected 'custom_class'")
    scheduler = SchedulerConfig(
        max_num_seqs=max_num_seqs, max_model_len=max_model_len, max_num_batched_tokens=max(2048, max_model_len),
        is_encoder_decoder=False,
    )
    return VllmConfig(
        model_config=model_config, speculative_config=spec, parallel_config=parallel, scheduler_config=scheduler,
        device_config=DeviceConfig(device="cpu"),
        # the default corpus index takes minutes to build on first use: keep this check quick
        additional_config={"hierdraft": {"corpus_index": "none"}},
    )


class Simulation:
    """Continuous batching on vLLM's InputBatch, with a deterministic stand-in for the model: each
    request's output is a fixed token text; a step accepts the longest correct draft prefix plus
    one token, as greedy verification would."""

    def __init__(self, vllm_config, seed: int = 0):
        import torch
        import vllm.v1.worker.gpu_input_batch as gpu_input_batch
        from vllm.v1.worker.gpu_input_batch import InputBatch

        # vLLM pins some of these CPU buffers when it believes a GPU is there; this check has none
        gpu_input_batch.PIN_MEMORY = False

        mc = vllm_config.model_config
        self.k = vllm_config.speculative_config.num_speculative_tokens
        self.max_model_len = mc.max_model_len
        self.batch = InputBatch(
            max_num_reqs=vllm_config.scheduler_config.max_num_seqs, max_model_len=self.max_model_len,
            max_num_batched_tokens=vllm_config.scheduler_config.max_num_batched_tokens,
            device=torch.device("cpu"), vocab_size=mc.get_vocab_size(), block_sizes=[16],
            max_num_blocks_per_req=[(self.max_model_len + 15) // 16], num_spec_tokens=self.k,
        )
        self.rng = np.random.default_rng(seed)
        self.phrases = self.rng.integers(10, 5000, size=(40, 7))
        self.truth: dict[str, np.ndarray] = {}
        self.next_id = 0

    def text(self, n: int) -> list[int]:
        out: list[int] = []
        while len(out) < n:
            out.extend(self.phrases[self.rng.integers(len(self.phrases))].tolist() if self.rng.random() < 0.8
                       else [int(self.rng.integers(10, 5000))])
        return out[:n]

    def add_request(self) -> None:
        from vllm.sampling_params import SamplingParams
        from vllm.v1.worker.gpu_input_batch import CachedRequestState

        req_id = f"req-{self.next_id}"
        self.next_id += 1
        prompt_len = int(self.rng.integers(8, 60))
        total = int(self.rng.integers(prompt_len + 20, self.max_model_len + 40))
        full = np.array(self.text(total))
        self.truth[req_id] = full
        self.batch.add_request(CachedRequestState(
            req_id=req_id, prompt_token_ids=full[:prompt_len].tolist(), mm_features=[],
            sampling_params=SamplingParams(temperature=0.0), generator=None, block_ids=([],),
            num_computed_tokens=0, output_token_ids=[],
        ))

    def sample(self, drafts: dict[str, list[int]]) -> list[list[int]]:
        """What ``_bookkeeping_sync`` does after verification: append each row's accepted tokens
        (``drafts``: the scheduled draft of each request, by request id)."""
        b = self.batch
        sampled = []
        for i, req_id in enumerate(b.req_ids):
            n = int(b.num_tokens_no_spec[i])
            truth = self.truth[req_id]
            draft = drafts.get(req_id, [])
            ok = 0
            while ok < len(draft) and n + ok < len(truth) and draft[ok] == truth[n + ok]:
                ok += 1
            take = max(0, min(ok + 1, len(truth) - n, self.max_model_len - n))
            new = truth[n : n + take].tolist()
            b.token_ids_cpu[i, n : n + take] = new
            b.num_tokens_no_spec[i] = n + take
            sampled.append(new)
        return sampled

    def update_states(self, max_num_seqs: int, max_requests: int) -> None:
        """What ``GPUModelRunner._update_states`` does between steps: remove the finished requests,
        add new ones (they fill the freed rows first), condense, refresh the metadata."""
        b = self.batch
        done = [r for i, r in enumerate(b.req_ids)
                if int(b.num_tokens_no_spec[i]) >= min(len(self.truth[r]), self.max_model_len)]
        for r in done:
            b.remove_request(r)
        while len(b.req_id_to_index) < max_num_seqs and self.next_id < max_requests:
            self.add_request()
        b.condense()
        b.refresh_metadata()


def run_checks(model_dir: Path, steps: int, k: int, max_model_len: int, max_num_seqs: int) -> list[str]:
    from vllm.v1.spec_decode.custom_class_proposer import create_custom_proposer

    from hierdraft.vllm import HierdraftProposer

    failures: list[str] = []
    for explicit in (True, False):
        label = "method='custom_class'" if explicit else "dotted path in model"
        cfg = build_vllm_config(model_dir, k, max_model_len, max_num_seqs, explicit)
        proposer = create_custom_proposer(cfg)
        if not isinstance(proposer, HierdraftProposer) or not callable(proposer.propose):
            failures.append(f"{label}: create_custom_proposer returned {type(proposer).__name__}")
            continue
        sim = Simulation(cfg, seed=int(explicit))
        scheduled: dict[str, list[int]] = {}
        drafted = accepted = 0
        for step in range(steps):
            sim.update_states(max_num_seqs, max_requests=steps // 4)
            if sim.batch.num_reqs == 0:
                break
            sampled = sim.sample(scheduled)
            drafts = proposer.propose(sampled, sim.batch.num_tokens_no_spec, sim.batch.token_ids_cpu)
            if len(drafts) != sim.batch.num_reqs:
                failures.append(f"{label} step {step}: {len(drafts)} drafts for {sim.batch.num_reqs} rows")
                break
            for i, draft in enumerate(drafts):
                n = int(sim.batch.num_tokens_no_spec[i])
                room = min(k, max_model_len - n)
                fresh = proposer.drafter.start(np.ascontiguousarray(sim.batch.token_ids_cpu[i, :n]))
                want = fresh.propose().best_chain(room).tolist() if room > 0 and sampled[i] else []
                if draft != want or len(draft) > k or n + len(draft) > max_model_len:
                    failures.append(f"{label} step {step} row {i}: drafted {draft}, a fresh session drafts {want}")
                drafted += len(draft)
            accepted += sum(len(s) for s in sampled)
            scheduled = dict(zip(sim.batch.req_ids, drafts))
        requests, started = sim.next_id, proposer.sessions.started
        if started != requests:
            failures.append(f"{label}: {started} sessions started for {requests} requests")
        print(f"{label}: {step + 1} steps, {requests} requests, {started} sessions started, "
              f"{drafted} draft tokens proposed, {accepted} tokens emitted")
    return failures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None, help="local HF checkpoint folder (config only)")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--k", type=int, default=5, help="num_speculative_tokens")
    ap.add_argument("--max-model-len", type=int, default=256)
    ap.add_argument("--max-num-seqs", type=int, default=8)
    args = ap.parse_args(argv)
    try:
        import vllm
    except ImportError:
        print("vLLM is not importable here: run this script with the Python of vLLM's own venv", file=sys.stderr)
        return 1
    model_dir = args.model or _default_model_dir()
    if model_dir is None or not (model_dir / "config.json").is_file():
        print(f"no HF checkpoint at {model_dir} (pass --model DIR, or run hierdraft.load_default() once)",
              file=sys.stderr)
        return 1
    print(f"vllm {vllm.__version__}, model config from {model_dir}")
    failures = run_checks(model_dir, args.steps, args.k, args.max_model_len, args.max_num_seqs)
    for f in failures[:20]:
        print("FAIL:", f)
    print("all checks passed" if not failures else f"{len(failures)} check(s) failed")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
