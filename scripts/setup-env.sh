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

stamp=.venv/.requirements.sha256
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "==> installing Python dependencies (torch is large: the first install takes a few minutes)"
    python -m pip install --quiet --upgrade pip
    python -m pip install --quiet --progress-bar off -r requirements.txt
    echo "$want" > "$stamp"
fi

echo "==> building the Rust extension (release)"
maturin develop --release --quiet
