"""hierdraft: lossless speculative decoding with Hierarchy Drafting.

Model-free drafts of the next tokens come from three n-gram stores read in order of temporal
locality (this request's context, the target model's own past outputs, a large corpus), merged
into one draft tree and verified by the LLM in a single forward pass. The stores, the drafter and
the draft tree live in the Rust extension ``hierdraft._core``; this package re-exports them.
"""

import importlib
from typing import Any

from hierdraft._core import ContextStore as ContextStore
from hierdraft._core import CorpusIndex as CorpusIndex
from hierdraft._core import DraftSession as DraftSession
from hierdraft._core import DraftTree as DraftTree
from hierdraft._core import GgufFormatError as GgufFormatError
from hierdraft._core import HierarchicalDrafter as HierarchicalDrafter
from hierdraft._core import ModelStore as ModelStore
from hierdraft._core import StoreFormatError as StoreFormatError
from hierdraft._core import __version__ as __version__

# The verification loop needs torch; it is imported on first use so that the drafter alone
# (e.g. embedded in another inference loop) and `hierdraft --help` stay light.
_LAZY = {
    "GenerationResult": "hierdraft.decoding",
    "generate": "hierdraft.decoding",
    "iter_generate": "hierdraft.decoding",
    "UnsupportedModelError": "hierdraft.model_layout",
    "load_default": "hierdraft.models",
    "load_model": "hierdraft.models",
    "tokenizer_fingerprint": "hierdraft.models",
    "default_drafter": "hierdraft.stores",
    "AdaptiveDrafter": "hierdraft.adaptive",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hierdraft' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "AdaptiveDrafter",
    "ContextStore",
    "CorpusIndex",
    "DraftSession",
    "DraftTree",
    "GgufFormatError",
    "GenerationResult",
    "HierarchicalDrafter",
    "ModelStore",
    "StoreFormatError",
    "UnsupportedModelError",
    "__version__",
    "default_drafter",
    "generate",
    "iter_generate",
    "load_default",
    "load_model",
    "tokenizer_fingerprint",
]
