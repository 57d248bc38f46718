"""`hierdraft generate` on the default model: the drafted output is checked against plain decoding.

Slow (a fresh process loads the default model and its stores) but part of the CI suite.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

PROMPT = "Question: Name three rivers of Europe and the seas they flow into.\n\nAnswer:"


def _generate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hierdraft", "generate", PROMPT, "--max-new-tokens", "32", "--threads", "2", *args],
        capture_output=True, text=True, timeout=600,
    )


def test_sampled_generate_equals_plain_sampling_and_repeats_with_its_seed():
    first = _generate("--temperature", "1", "--seed", "7")
    assert first.returncode == 0, first.stderr
    assert "outputs identical: yes" in first.stdout
    again = _generate("--temperature", "1", "--seed", "7", "--no-baseline")
    assert again.returncode == 0, again.stderr
    text = first.stdout.split("\n\nhierdraft:")[0]
    assert text and text == again.stdout.split("\n\nhierdraft:")[0]
