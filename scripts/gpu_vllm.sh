#!/usr/bin/env bash
# Issue 10's GPU checks in one command, on a Linux machine with a CUDA GPU:
#
#     bash scripts/gpu_vllm.sh [OUT_DIR]          # default OUT_DIR: $OUT, else gpu-out
#
# 1. the project's environment (scripts/setup-env.sh: .venv and the Rust extension), unless
#    HIERDRAFT_PYTHON names a Python where hierdraft and its dependencies are installed;
# 2. the default model's Hugging Face checkpoint, written once from the GGUF
#    (scripts/gpu_write_checkpoint.py, bfloat16, cached in hierdraft's cache);
# 3. the default stores of its tokenizer (`hierdraft build defaults`; cached too);
# 4. vLLM 0.33.0 and arctic-inference (vLLM's suffix method needs it) in a venv of their own
#    ($VLLM_VENV, default /tmp/hierdraft-vllm-venv: vLLM pins other torch and transformers
#    versions than the project), and hierdraft's wheel into it without dependencies;
# 5. scripts/check_vllm_proposer.py there (vLLM's own configs and create_custom_proposer);
# 6. scripts/gpu_vllm_bench.py: vLLM with hierdraft, ngram, suffix and no speculation on the
#    Spec-Bench prompts, greedy outputs checked against no speculation, output tokens/s at
#    concurrency 1 and 32 ($OUT_DIR/vllm/report.md);
# 7. scripts/gpu_hierdraft_cuda.py: hierdraft's own transformers path on CUDA, the exactness tests
#    and `hierdraft bench` at budgets 32 and 64 ($OUT_DIR/hierdraft).
#
# Spec-Bench prompts: ../shared/specbench/question.jsonl beside the checkout, or
# HIERDRAFT_QUESTIONS=PATH. Without PyPI, point pip at a wheel folder (PIP_NO_INDEX=1
# PIP_FIND_LINKS=DIR); HIERDRAFT_WHEEL=FILE installs a prebuilt hierdraft wheel instead of building
# one (building needs cargo). Exit status: 0 when every step passed, else the first failure's.
set -uo pipefail
cd "$(dirname "$0")/.."

OUT_DIR="${1:-${OUT:-gpu-out}}"
VLLM_VENV="${VLLM_VENV:-/tmp/hierdraft-vllm-venv}"
VLLM_VERSION="0.33.0"
ARCTIC_VERSION="0.1.1"
mkdir -p "$OUT_DIR"
status=0
step() { echo "==> $*"; }
fail() { echo "FAILED: $*" >&2; [ "$status" -ne 0 ] || status="${2:-1}"; }
questions=()
if [ -n "${HIERDRAFT_QUESTIONS:-}" ]; then questions=(--questions "$HIERDRAFT_QUESTIONS"); fi

set -e
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
if [ -n "${HIERDRAFT_PYTHON:-}" ]; then
    PY="$HIERDRAFT_PYTHON"
else
    step "project environment"
    bash scripts/setup-env.sh
    PY="$PWD/.venv/bin/python"
fi
step "HF checkpoint of the default model (written once from the GGUF)"
CKPT="$("$PY" scripts/gpu_write_checkpoint.py --dtype bfloat16)"
echo "checkpoint: $CKPT"
step "default stores of its tokenizer"
"$PY" -m hierdraft build defaults --quiet
step "vLLM $VLLM_VERSION in $VLLM_VENV"
[ -x "$VLLM_VENV/bin/python" ] || python3 -m venv "$VLLM_VENV"
"$VLLM_VENV/bin/pip" install --quiet "vllm==$VLLM_VERSION" "arctic-inference==$ARCTIC_VERSION"
WHEEL="${HIERDRAFT_WHEEL:-}"
if [ -z "$WHEEL" ]; then
    rm -rf "$OUT_DIR/wheel"
    "$PY" -m maturin build --release --quiet --out "$OUT_DIR/wheel"
    WHEEL="$(ls "$OUT_DIR"/wheel/hierdraft-*.whl | head -n 1)"
fi
"$VLLM_VENV/bin/pip" install --quiet --no-deps --force-reinstall "$WHEEL"
set +e

step "HierdraftProposer through vLLM's own configs and create_custom_proposer"
"$VLLM_VENV/bin/python" scripts/check_vllm_proposer.py --model "$CKPT" || fail "check_vllm_proposer.py" $?
step "vLLM on Spec-Bench: hierdraft, ngram, suffix, no speculation"
"$VLLM_VENV/bin/python" scripts/gpu_vllm_bench.py run --model "$CKPT" --out "$OUT_DIR/vllm" "${questions[@]}" \
    || fail "gpu_vllm_bench.py" $?
step "hierdraft's transformers path on CUDA"
"$PY" scripts/gpu_hierdraft_cuda.py --out "$OUT_DIR/hierdraft" "${questions[@]}" || fail "gpu_hierdraft_cuda.py" $?
exit "$status"
