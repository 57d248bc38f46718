"""hierdraft: lossless speculative decoding with Hierarchy Drafting.

Model-free drafts of the next tokens come from three n-gram stores read in order of temporal
locality (this request's context, the target model's own past outputs, a large corpus), merged
into one draft tree and verified by the LLM in a single forward pass. The stores, the drafter and
the draft tree live in the Rust extension ``hierdraft._core``; this package re-exports them.
"""

from hierdraft._core import ContextStore as ContextStore
from hierdraft._core import CorpusIndex as CorpusIndex
from hierdraft._core import DraftSession as DraftSession
from hierdraft._core import DraftTree as DraftTree
from hierdraft._core import HierarchicalDrafter as HierarchicalDrafter
from hierdraft._core import ModelStore as ModelStore
from hierdraft._core import StoreFormatError as StoreFormatError
from hierdraft._core import __version__ as __version__

__all__ = [
    "ContextStore",
    "CorpusIndex",
    "DraftSession",
    "DraftTree",
    "HierarchicalDrafter",
    "ModelStore",
    "StoreFormatError",
    "__version__",
]
