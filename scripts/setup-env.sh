#!/usr/bin/env bash
# Creates (or refreshes) the project's virtual environment in .venv and builds the
# Rust extension into it in release mode. Shared by scripts/test.sh and scripts/demo.sh;
# safe to run again (pip and cargo skip what is already up to date).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "==> creating .venv"
    "$PYTHON" -m venv .venv
fi
export VIRTUAL_ENV="$PWD/.venv"
export PATH="$VIRTUAL_ENV/bin:$PATH"

# llama-cpp-python (the bench's llama.cpp peer) compiles llama.cpp from source. On x86-64 it is
# built for one fixed instruction level, AVX2 + FMA + F16C + BMI2, not -march=native: pip caches
# the wheel by its source, not by the CPU, and machines of this kind differ (some have AVX-512,
# some do not), so a native wheel built on one could die of an illegal instruction on another.
# AVX2 is also the level of hierdraft's own kernels: both engines run the same instructions.
# LLAVA_BUILD=OFF leaves out the multimodal library, which the bench does not use. A CMAKE_ARGS
# already set in the environment wins.
if [ "$(uname -m)" = "x86_64" ]; then
    export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF -DLLAVA_BUILD=OFF}"
fi

stamp=.venv/.requirements.sha256
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "==> installing Python dependencies (torch is large, and llama-cpp-python compiles llama.cpp:"
    echo "    the first install takes 10-15 minutes on 2 cores; pip caches the wheels)"
    python -m pip install --quiet --upgrade pip
    python -m pip install --quiet --progress-bar off -r requirements.txt
    echo "$want" > "$stamp"
fi

echo "==> building the Rust extension (release)"
maturin develop --release --quiet
