#!/usr/bin/env bash
# The main job on a fresh machine: environment + release build, then generation with the
# embedded default model (Gemma 3 270M) and hierarchical drafting, with the measured speedup.
# The default stores are built on first use. Extra arguments go to `hierdraft generate`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh
export PATH="$PWD/.venv/bin:$PATH"
if [ "$#" -eq 0 ]; then
    set -- "The three most important things to know about the Python programming language are"
fi
exec hierdraft generate "$@"
