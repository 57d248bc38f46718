"""pytest plugin: the tests' tensors and models are created on a CUDA device by default.

``pytest -p cuda_default_device ...`` (with this folder on ``PYTHONPATH``) calls
``torch.set_default_device`` before any test runs, so the generate tests, written for the CPU,
build their tiny models and inputs on the GPU and run hierdraft's transformers path there
unchanged. ``HIERDRAFT_TEST_DEVICE`` picks the device (default ``cuda``; ``cpu`` checks the plugin
itself on a machine without a GPU).
"""

from __future__ import annotations

import os

import pytest

_DEVICE = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    import torch

    device = os.environ.get("HIERDRAFT_TEST_DEVICE", "cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise pytest.UsageError("cuda_default_device: no CUDA device is available")
    torch.set_default_device(device)
    config.stash[_DEVICE] = device


def pytest_report_header(config: pytest.Config) -> str:
    return f"default torch device: {config.stash.get(_DEVICE, '?')}"
