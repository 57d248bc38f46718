"""hierdraft._core.rms_norm and FusedRMSNorm: transformers' RMS norms in one kernel call."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hierdraft import _core
from hierdraft.fused_norm import FusedRMSNorm, fuse_norms, unfuse_norms


def _norms():
    from transformers.models.gemma3.modeling_gemma3 import Gemma3RMSNorm
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    torch.manual_seed(0)
    gemma, llama = Gemma3RMSNorm(96, eps=1e-6), LlamaRMSNorm(96, eps=1e-5)
    with torch.no_grad():
        gemma.weight.normal_(0, 0.3)
        llama.weight.normal_(1, 0.3)
    return gemma, llama


@pytest.mark.parametrize("which", [0, 1])
def test_fused_norm_matches_transformers(which):
    original = _norms()[which]
    fused = FusedRMSNorm(original)
    x = torch.randn(3, 5, 96) * 4
    with torch.inference_mode():
        want, got = original(x), fused(x)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=2e-6, atol=2e-6)
    with torch.inference_mode():  # a row's result does not depend on its batch
        assert torch.equal(fused(x[1:2, 3:4]), got[1:2, 3:4])
        # other dtypes go to the original module
        assert torch.equal(fused(x.double()), original(x.double()))


def test_fuse_and_unfuse_swap_modules():
    gemma, llama = _norms()
    model = torch.nn.Sequential(gemma, torch.nn.Sequential(llama, torch.nn.Linear(96, 4)))
    assert fuse_norms(model) == 2
    assert isinstance(model[0], FusedRMSNorm) and isinstance(model[1][0], FusedRMSNorm)
    assert model[0].weight is gemma.weight
    assert unfuse_norms(model) == 2
    assert model[0] is gemma and model[1][0] is llama


def test_rms_norm_checks_its_arguments():
    x = np.ones((2, 4), np.float32)
    with pytest.raises(ValueError, match="columns"):
        _core.rms_norm(x, np.ones(3, np.float32), 1e-6, np.empty_like(x))
    with pytest.raises(ValueError, match="out has shape"):
        _core.rms_norm(x, np.ones(4, np.float32), 1e-6, np.empty((4, 2), np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        _core.rms_norm(np.ones((2, 8), np.float32)[:, ::2], np.ones(4, np.float32), 1e-6, np.empty_like(x))
    with pytest.raises(TypeError):
        _core.rms_norm(x.astype(np.float64), np.ones(4, np.float32), 1e-6, np.empty_like(x))
