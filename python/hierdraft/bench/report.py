"""Aggregating a bench run and writing ``results.json``, ``report.md`` and ``speedup.png``.

Definitions (the same for every method):

- tokens/s: generated tokens / wall time of the whole call, prefill included, summed over
  the prompts of a group (overall or one category);
- decode tokens/s: the same after the prefill step (its tokens and its time left out), for the
  methods that time their prefill (hierdraft's and llama.cpp's; not transformers');
- speedup: a method's tokens/s over ``ar``'s on the same prompts; speedup_vs_llama.cpp: over
  the llama.cpp peer's (plain decoding of the same GGUF file), when it ran;
- tokens per step (Spec-Bench's "mean accepted tokens"): generated tokens per forward pass of
  the target model, the bonus token included, counted by a forward hook. The prefill forward
  counts as a step: it yields a first token, and with drafting (hierdraft's loop and
  transformers' prompt lookup alike) it already verifies a first draft. 1.0 for plain decoding
  (``GenerationResult.mean_accepted_tokens`` uses the same definition);
- draft time per step: the drafter's ``propose()`` time (``GenerationResult.draft_times``), p50
  and p99 over the decoding steps of the group, in microseconds; verify time per step: forward +
  acceptance + cache pruning (``verify_times``), mean and p50 in milliseconds. Both leave out
  the first step, whose forward is the prefill of the whole prompt (it would swamp the
  per-step numbers); its time is reported as ``prefill_ms_mean``. transformers' methods do not
  report these times. For the llama.cpp peers a step is one llama.cpp decode.

Peers (llama.cpp) have their own numerics: the report says per prompt whether their output equals
llama.cpp's plain output and ``ar``'s, and never counts a difference as a mismatch.
"""

from __future__ import annotations

import json
import math
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

from .methods import PEER_REFERENCE, PromptRecord
from .runner import REFERENCE, BenchRun

SPEEDUP_VS_PEER = f"speedup_vs_{PEER_REFERENCE}"


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in [0, 100]); None for no values."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _stats(records: Sequence[PromptRecord]) -> dict[str, Any]:
    new_tokens = sum(r.new_tokens for r in records)
    elapsed = sum(r.elapsed for r in records)
    forwards = sum(r.forwards for r in records)
    # step 0 is the prefill: left out of the per-step times
    draft = [t for r in records for t in r.draft_times[1:]]
    verify = [t for r in records for t in r.verify_times[1:]]
    prefill = [r.prefill_time for r in records if r.prefill_time is not None]
    timed = [r for r in records if r.prefill_time is not None and r.prefill_tokens is not None]
    decode_tokens = sum(r.new_tokens - (r.prefill_tokens or 0) for r in timed)
    decode_time = sum(r.elapsed - (r.prefill_time or 0.0) for r in timed)
    p50 = percentile(draft, 50)
    p99 = percentile(draft, 99)
    v50 = percentile(verify, 50)
    return {
        "prompts": len(records),
        "new_tokens": new_tokens,
        "time_s": elapsed,
        "tokens_per_second": new_tokens / elapsed if elapsed > 0 else None,
        "decode_tokens_per_second": decode_tokens / decode_time
        if timed and decode_time > 0 and decode_tokens > 0 else None,
        "speedup": None,
        SPEEDUP_VS_PEER: None,
        "forwards": forwards,
        "tokens_per_step": new_tokens / forwards if forwards > 0 else None,
        "draft_us_p50": p50 * 1e6 if p50 is not None else None,
        "draft_us_p99": p99 * 1e6 if p99 is not None else None,
        "verify_ms_mean": sum(verify) / len(verify) * 1e3 if verify else None,
        "verify_ms_p50": v50 * 1e3 if v50 is not None else None,
        "draft_share_of_verify": sum(draft) / sum(verify) if draft and sum(verify) > 0 else None,
        "prefill_ms_mean": sum(prefill) / len(prefill) * 1e3 if prefill else None,
    }


def _ratio(tps: float | None, base: dict[str, Any] | None) -> float | None:
    base_tps = base["tokens_per_second"] if base else None
    return tps / base_tps if base_tps and tps else None


def _with_speedups(group: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    for stats in group.values():
        stats["speedup"] = _ratio(stats["tokens_per_second"], group.get(REFERENCE))
        stats[SPEEDUP_VS_PEER] = _ratio(stats["tokens_per_second"], group.get(PEER_REFERENCE))
    return group


def _peer_summary(run: BenchRun) -> dict[str, Any]:
    """Per peer and reference: on how many prompts the outputs are identical."""
    return {
        peer: {
            ref: {"identical": sum(d is None for d in diffs), "prompts": len(diffs)}
            for ref, diffs in refs.items()
        }
        for peer, refs in run.peer_agreement.items()
    }


def _prompt_entry(run: BenchRun, i: int, m: str) -> dict[str, Any]:
    r = run.records[m][i]
    entry: dict[str, Any] = {
        "new_tokens": r.new_tokens,
        "elapsed_s": r.elapsed,
        "forwards": r.forwards,
        "loop_steps": len(r.verify_times) or None,
    }
    if m in run.peers:
        refs = run.peer_agreement.get(m, {})
        entry["first_difference_from"] = {ref: diffs[i] for ref, diffs in refs.items()}
        entry["identical_to"] = {ref: diffs[i] is None for ref, diffs in refs.items()}
    return entry


def summarize(run: BenchRun) -> dict[str, Any]:
    """Per-method statistics, overall and per category (categories in first-seen order)."""
    cats = list(dict.fromkeys(p.category for p in run.prompts))
    overall = _with_speedups({m: _stats(run.records[m]) for m in run.methods})
    per_cat: dict[str, dict[str, Any]] = {}
    for cat in cats:
        idx = [i for i, p in enumerate(run.prompts) if p.category == cat]
        per_cat[cat] = _with_speedups(
            {m: _stats([run.records[m][i] for i in idx]) for m in run.methods}
        )
    prompts = []
    for i, p in enumerate(run.prompts):
        prompts.append(
            {
                "question_id": p.question_id,
                "category": p.category,
                "prompt_tokens": len(p.ids),
                "methods": {m: _prompt_entry(run, i, m) for m in run.methods},
            }
        )
    return {
        "methods": list(run.methods),
        "overall": overall,
        "categories": per_cat,
        "outputs_compared": run.compared,
        "mismatches": [vars(m) | {"description": m.describe()} for m in run.mismatches],
        "peers": run.peers,
        "peer_agreement": _peer_summary(run),
        "prompts": prompts,
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(threads: int | None = None) -> dict[str, Any]:
    import torch

    return {
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": threads if threads is not None else torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def versions() -> dict[str, str]:
    names = ("hierdraft", "torch", "transformers", "numpy", "llama-cpp-python")
    return {name: _version(name) for name in names}


# ---------------------------------------------------------------------------------------
# report.md


def _fmt(x: Any, spec: str, suffix: str = "") -> str:
    if x is None:
        return "–"
    return f"{x:{spec}}{suffix}"


def _peer_ran(summary: dict[str, Any]) -> bool:
    return PEER_REFERENCE in summary["methods"]


def _overall_table(summary: dict[str, Any]) -> list[str]:
    vs_peer = _peer_ran(summary)
    peer_head = f" speedup vs {PEER_REFERENCE} |" if vs_peer else ""
    lines = [
        "| method | tokens/s | decode tokens/s | speedup vs ar |" + peer_head + " tokens/step "
        "| draft/step p50 (us) | draft/step p99 (us) | verify/step mean (ms) | draft / verify |",
        "|---|---:|---:|---:|" + ("---:|" if vs_peer else "") + "---:|---:|---:|---:|---:|",
    ]
    for m in summary["methods"]:
        s = summary["overall"][m]
        share = s["draft_share_of_verify"]
        peer_cell = f" {_fmt(s[SPEEDUP_VS_PEER], '.2f', 'x')} |" if vs_peer else ""
        lines.append(
            f"| {m} | {_fmt(s['tokens_per_second'], '.1f')} | {_fmt(s['decode_tokens_per_second'], '.1f')} "
            f"| {_fmt(s['speedup'], '.2f', 'x')} |{peer_cell} "
            f"{_fmt(s['tokens_per_step'], '.2f')} | {_fmt(s['draft_us_p50'], '.1f')} "
            f"| {_fmt(s['draft_us_p99'], '.1f')} | {_fmt(s['verify_ms_mean'], '.1f')} "
            f"| {_fmt(share * 100 if share is not None else None, '.2f', '%')} |"
        )
    return lines


def _category_table(
    summary: dict[str, Any], key: str, spec: str, suffix: str, baseline: str | None = None
) -> list[str]:
    """Methods as columns, categories as rows; with a ``baseline`` (a speedup table) the best
    method other than the baseline is in bold."""
    methods = summary["methods"]
    lines = [
        "| category | n | " + " | ".join(methods) + " |",
        "|---|---:|" + "---:|" * len(methods),
    ]
    rows = list(summary["categories"].items()) + [("**overall**", summary["overall"])]
    for cat, group in rows:
        n = next(iter(group.values()))["prompts"] if group else 0
        cells = []
        values = {m: group[m][key] for m in methods}
        best = None
        if baseline is not None:
            best = max((v for m, v in values.items() if v is not None and m != baseline), default=None)
        for m in methods:
            cell = _fmt(values[m], spec, suffix)
            if best is not None and values[m] == best:
                cell = f"**{cell}**"
            cells.append(cell)
        lines.append(f"| {cat} | {n} | " + " | ".join(cells) + " |")
    return lines


def _exactness(summary: dict[str, Any], prompts: int, temperature: float) -> list[str]:
    if not summary["outputs_compared"]:
        return ["Outputs not compared."]
    judged = [m for m in summary["methods"] if m not in summary.get("peers", [])]
    if temperature > 0:
        what = (f"Sampled outputs (temperature {temperature}) of every method of hierdraft's loop "
                f"({', '.join(judged)})")
        why = (" Each position's draw depends only on the prompt's seed and the position, so drafting "
               "must reproduce `ar`'s samples token for token; transformers' samplers draw otherwise "
               "and are reported with the peers.")
    else:
        what, why = f"Greedy outputs of every hierdraft and transformers method ({', '.join(judged)})", ""
    if not summary["mismatches"]:
        return [f"{what} identical to `ar` on all {prompts} prompts.{why}"]
    out = [f"**{len(summary['mismatches'])} mismatch(es) against `ar`:**", ""]
    return out + [f"- {m['description']}" for m in summary["mismatches"]]


def _peers_section(summary: dict[str, Any], llama: dict[str, Any] | None) -> list[str]:
    """The llama.cpp peers: what ran (or why not) and how their outputs compare."""
    out = ["", f"## Peers: {PEER_REFERENCE}", ""]
    if llama and llama.get("skipped"):
        return out + [f"The llama.cpp peers did not run: {llama['skipped']}."]
    peers = summary.get("peers", [])
    if not peers:
        return []
    if llama:
        pld = llama.get("pld")
        out.append(
            f"{llama.get('package', 'llama-cpp-python')} on `{llama.get('model')}`, "
            f"n_threads = n_threads_batch = {llama.get('n_threads')}, n_ctx {llama.get('n_ctx')}"
            + (f", prompt lookup num_pred_tokens={pld['num_pred_tokens']} "
               f"max_ngram_size={pld['max_ngram_size']}" if pld else "")
            + ". Fed the same prompt token ids as every other method"
            + {True: " (llama.cpp's own tokenizer agrees on the warm-up prompt)",
               False: " (llama.cpp's own tokenizer gives other ids for the warm-up prompt)",
               None: ""}[llama.get("tokenizer_agrees_on_warmup_prompt")]
            + "."
        )
        out.append("")
    out.append(
        "llama.cpp has its own numerics (its kernels, 8-bit activations in the quantized products, "
        "results that depend on the batch), so a peer's output may differ from `ar`'s: that is "
        "not a hierdraft mismatch and does not fail the run."
    )
    if not summary["outputs_compared"]:
        return out
    agreement = summary.get("peer_agreement", {})
    out.append("")
    for peer in peers:
        for ref, counts in agreement.get(peer, {}).items():
            out.append(f"- `{peer}` identical to `{ref}` on {counts['identical']} of {counts['prompts']} prompts")
    refs = list(dict.fromkeys(ref for peer in peers for ref in agreement.get(peer, {})))
    columns = [(peer, ref) for peer in peers for ref in refs if ref in agreement.get(peer, {})]
    if not columns:
        return out
    out += ["", "| question | category | " + " | ".join(f"{p} = {r}" for p, r in columns) + " |",
            "|---|---|" + "---|" * len(columns)]
    for entry in summary["prompts"]:
        cells = []
        for peer, ref in columns:
            diff = entry["methods"][peer]["first_difference_from"].get(ref)
            cells.append("yes" if diff is None else f"no (token {diff})")
        out.append(f"| {entry['question_id']} | {entry['category']} | " + " | ".join(cells) + " |")
    return out


def _model_text(model: dict[str, Any]) -> str:
    """The model's name, weight formats and numeric mode, for the report's first line."""
    weights = model.get("weights")
    if isinstance(weights, dict):
        kept = "GGUF blocks " + ", ".join(f"{fmt} x{count}" for fmt, count in weights.items())
    else:
        kept = str(weights or model.get("dtype") or "?")
    return f"`{model.get('name', '?')}` (weights: {kept}; numerics: {model.get('numerics', '?')})"


def render_markdown(result: dict[str, Any]) -> str:
    """The human-readable report of a ``results.json`` object."""
    summary = result["summary"]
    st = result["settings"]
    mc = result["machine"]
    ver = result["versions"]
    out = ["# hierdraft bench", ""]
    out.append(
        f"Model {_model_text(result['model'])}, {st['prompts']} prompts "
        f"({st['limit_per_category'] if st['limit_per_category'] is not None else 'all'} per category) "
        f"from `{st['questions']}`, max {st['max_new_tokens']} new tokens, temperature "
        f"{st['temperature']}, budget {st['budget']}"
        f"{' (trees trimmed by AdaptiveDrafter)' if st.get('adaptive_trees') else ' (every node verified)'}, "
        "hf-pld with prompt_lookup_num_tokens="
        f"{st['pld_tokens']}. {mc['cpu']}, {mc['torch_threads']} torch threads. hierdraft "
        f"{ver['hierdraft']}, torch {ver['torch']}, transformers {ver['transformers']}."
    )
    if st.get("stores"):
        out += ["", "Stores: " + ", ".join(f"{k} `{v}`" for k, v in st["stores"].items())]
    if st.get("interrupted"):
        out += ["", f"**Stopped early: {st['prompts']} of {st['prompts_selected']} selected prompts done.**"]
    if st.get("command"):
        out += ["", f"Command: `{st['command']}`"]
    out += ["", "## Overall", ""] + _overall_table(summary)
    out += ["", "## Speedup vs ar per category (best non-ar method in bold)", ""]
    out += _category_table(summary, "speedup", ".2f", "x", baseline=REFERENCE)
    if _peer_ran(summary):
        out += ["", f"## Speedup vs {PEER_REFERENCE} per category (best other method in bold)", ""]
        out += _category_table(summary, SPEEDUP_VS_PEER, ".2f", "x", baseline=PEER_REFERENCE)
    out += ["", "## Tokens per step per category", ""]
    out += _category_table(summary, "tokens_per_step", ".2f", "")
    out += ["", "## Exactness", ""] + _exactness(summary, st["prompts"], float(st["temperature"]))
    out += _peers_section(summary, st.get("llama_cpp"))
    out += [
        "",
        "tokens/s counts the whole call, prefill included; decode tokens/s leaves the prefill step "
        "out; tokens/step is generated tokens per forward pass of the model (the prefill counts as "
        "one; for llama.cpp, per decode), bonus token included; draft and verify times are per "
        "decoding step, the prefill step left out.",
        "",
    ]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------
# speedup.png

_COLORS = {
    "llama.cpp": "#3a0ca3",
    "llama.cpp-pld": "#7209b7",
    "hf-ar": "#9e9e9e",
    "hf-pld": "#6d6d6d",
    "context": "#8ecae6",
    "model": "#219ebc",
    "corpus": "#90be6d",
    "hd": "#d62828",
}


def plot_speedup(summary: dict[str, Any], path: str | os.PathLike[str], title: str = "") -> None:
    """Grouped bars: speedup over ``ar`` per category (and overall) for each method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [m for m in summary["methods"] if m != REFERENCE]
    groups = list(summary["categories"].items()) + [("overall", summary["overall"])]
    n_groups, n_methods = len(groups), max(len(methods), 1)
    width = 0.8 / n_methods
    fig, ax = plt.subplots(figsize=(max(8.0, 1.0 + 0.95 * n_groups), 5.2), dpi=120)
    for j, m in enumerate(methods):
        xs = [i + (j - (n_methods - 1) / 2) * width for i in range(n_groups)]
        ys = [g[m]["speedup"] or 0.0 for _, g in groups]
        bars = ax.bar(
            xs, ys, width=width * 0.92, label=m, color=_COLORS.get(m, None),
            edgecolor="black" if m == "hd" else "none", linewidth=0.6,
        )
        if m == "hd":
            for b, y in zip(bars, ys):
                ax.annotate(f"{y:.2f}", (b.get_x() + b.get_width() / 2, y), xytext=(0, 2),
                            textcoords="offset points", ha="center", va="bottom", fontsize=7)
    ax.axhline(1.0, color="black", linewidth=1.0, linestyle="--", label="ar = 1.0")
    ax.axvspan(n_groups - 1.5, n_groups - 0.5, color="#f1f1f1", zorder=0)
    ax.set_xticks(range(n_groups))
    ax.set_xticklabels([name for name, _ in groups], rotation=30, ha="right")
    ax.set_xlim(-0.6, n_groups - 0.4)
    ax.set_ylabel("speedup over autoregressive (x)")
    ax.set_title(title or "hierdraft bench", pad=26)
    ax.legend(ncol=n_methods + 1, fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0),
              frameon=False)
    top = max([g[m]["speedup"] or 0.0 for _, g in groups for m in methods] + [1.0])
    ax.set_ylim(0, top * 1.1)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(
    out_dir: str | os.PathLike[str],
    run: BenchRun,
    *,
    settings: dict[str, Any],
    model: dict[str, Any],
    threads: int | None = None,
) -> dict[str, Any]:
    """Write ``results.json``, ``report.md`` and ``speedup.png`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "settings": settings,
        "model": model,
        "machine": machine_info(threads),
        "versions": versions(),
        "summary": summarize(run),
    }
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(out / "results.json")
    (out / "report.md").write_text(render_markdown(result), encoding="utf-8")
    plot_speedup(result["summary"], out / "speedup.png", title=(
        f"hierdraft bench: speedup over ar, {model.get('name', '')}, "
        f"{settings.get('prompts', '?')} prompts (higher is better)"
    ))
    return result
