"""Typed stubs of the Rust extension ``hierdraft._core`` (checked by ``mypy.stubtest``).

Token inputs (``_TokenInput``) are 1-D C-contiguous numpy arrays of dtype uint32, int32 or int64,
or lists / tuples of non-negative ints. Lookups return ``(uint32 token array, score)`` tuples,
best first. Settings typed ``int | None = None`` take the core's default when left out (see
``default_settings()``).
"""

import os
import pathlib
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, Union, final

import numpy as np
import numpy.typing as npt

_TokenInput = Union[
    npt.NDArray[np.uint32],
    npt.NDArray[np.int32],
    npt.NDArray[np.int64],
    Sequence[int],
]
_Continuations = list[tuple[npt.NDArray[np.uint32], float]]
_StrPath = Union[str, os.PathLike[str]]
# A GGUF metadata value: integers -> int, floats -> float, bool, str; numeric and bool arrays ->
# 1-D numpy arrays of their own dtype; string arrays -> list[str]; arrays of arrays -> list.
_GgufValue = Union[int, float, bool, str, npt.NDArray[Any], list[Any]]

__version__: str
__all__ = [
    "ContextStore",
    "ModelStore",
    "CorpusIndex",
    "HierarchicalDrafter",
    "DraftSession",
    "DraftTree",
    "SessionTable",
    "StoreFormatError",
    "__version__",
    "default_settings",
    "linear_rows",
    "kernels_use_simd",
    "kernels_path",
    "rms_norm",
    "rotary",
    "attention",
    "QuantTensor",
    "qlinear_group",
    "GreedyHead",
    "GgufFile",
    "GgufTensorInfo",
    "GgufFormatError",
]

class StoreFormatError(ValueError):
    """A store file has bad magic bytes, an unsupported version, is truncated or corrupted."""

@final
class ContextStore:
    """Per-request n-gram index over a growing token sequence (hierarchy level 1)."""

    def __new__(cls, min_ngram: int | None = None, max_ngram: int | None = None) -> ContextStore: ...
    def extend(self, tokens: _TokenInput) -> None: ...
    def lookup(self, k: int = 8, max_len: int = 8) -> _Continuations: ...
    @property
    def tokens(self) -> npt.NDArray[np.uint32]: ...
    @property
    def min_ngram(self) -> int: ...
    @property
    def max_ngram(self) -> int: ...
    def __len__(self) -> int: ...

@final
class ModelStore:
    """n-gram -> continuation statistics of the target model's outputs (hierarchy level 2)."""

    MAX_NGRAM: ClassVar[int]
    def __new__(
        cls,
        min_ngram: int | None = None,
        max_ngram: int | None = None,
        continuation_len: int | None = None,
        top_k: int | None = None,
        vocab_size: int | None = None,
        metadata: str = "",
    ) -> ModelStore: ...
    @staticmethod
    def build(
        sequences: Iterable[_TokenInput],
        min_ngram: int | None = None,
        max_ngram: int | None = None,
        continuation_len: int | None = None,
        top_k: int | None = None,
        vocab_size: int | None = None,
        metadata: str = "",
    ) -> ModelStore: ...
    def add(self, sequence: _TokenInput) -> None: ...
    def lookup(self, context: _TokenInput, k: int = 8, max_len: int = 8) -> _Continuations: ...
    def save(self, path: _StrPath) -> None: ...
    @staticmethod
    def load(path: _StrPath, expected_vocab_size: int | None = None) -> ModelStore: ...
    @property
    def num_keys(self) -> int: ...
    @property
    def min_ngram(self) -> int: ...
    @property
    def max_ngram(self) -> int: ...
    @property
    def continuation_len(self) -> int: ...
    @property
    def top_k(self) -> int: ...
    @property
    def vocab_size(self) -> int | None: ...
    @property
    def metadata(self) -> str: ...
    def set_metadata(self, metadata: str) -> None: ...

@final
class CorpusIndex:
    """Suffix array over a tokenized corpus (hierarchy level 3)."""

    @staticmethod
    def build(
        documents: Iterable[_TokenInput], vocab_size: int | None = None, metadata: str = ""
    ) -> CorpusIndex: ...
    def lookup(self, context: _TokenInput, k: int = 8, max_len: int = 8) -> _Continuations: ...
    def save(self, path: _StrPath) -> None: ...
    @staticmethod
    def load(path: _StrPath, expected_vocab_size: int | None = None) -> CorpusIndex: ...
    @property
    def num_tokens(self) -> int: ...
    @property
    def num_documents(self) -> int: ...
    @property
    def bytes_per_token(self) -> float: ...
    @property
    def vocab_size(self) -> int | None: ...
    @property
    def metadata(self) -> str: ...

@final
class DraftTree:
    """Flattened prefix tree of draft tokens; parents precede their children."""

    @property
    def tokens(self) -> npt.NDArray[np.uint32]: ...
    @property
    def parents(self) -> npt.NDArray[np.int32]: ...
    @property
    def depths(self) -> npt.NDArray[np.int32]: ...
    @property
    def sources(self) -> npt.NDArray[np.uint8]: ...
    @property
    def scores(self) -> npt.NDArray[np.float32]: ...
    def best_chain(self, max_len: int) -> npt.NDArray[np.uint32]: ...
    def ancestor_mask(self) -> npt.NDArray[np.bool_]: ...
    def __len__(self) -> int: ...

@final
class DraftSession:
    """Drafting state of one request."""

    def propose(self) -> DraftTree: ...
    def accept(self, tokens: _TokenInput) -> None: ...
    def finish(self, learn: bool = True) -> None: ...
    @property
    def tokens(self) -> npt.NDArray[np.uint32]: ...
    @property
    def generated(self) -> npt.NDArray[np.uint32]: ...
    @property
    def prompt_len(self) -> int: ...
    @property
    def finished(self) -> bool: ...

@final
class HierarchicalDrafter:
    """Reads the levels in order and merges their candidates into one draft tree."""

    def __new__(
        cls,
        model_store: ModelStore | None = None,
        corpus_index: CorpusIndex | None = None,
        order: Sequence[str] | None = None,
        budget: int | None = None,
        max_depth: int | None = None,
        context_candidates: int | None = None,
        model_candidates: int | None = None,
        corpus_candidates: int | None = None,
        context_min_ngram: int | None = None,
        context_max_ngram: int | None = None,
        corpus_max_occurrences: int | None = None,
    ) -> HierarchicalDrafter: ...
    def start(self, prompt: _TokenInput) -> DraftSession: ...
    def propose_batch(self, sessions: Sequence[DraftSession]) -> list[DraftTree]: ...
    def propose_chains(self, sessions: Sequence[DraftSession], max_lens: Sequence[int]) -> list[list[int]]: ...
    def accept_batch(self, sessions: Sequence[DraftSession], tokens: Sequence[_TokenInput]) -> None: ...
    @property
    def order(self) -> tuple[str, ...]: ...
    @property
    def budget(self) -> int: ...
    @property
    def max_depth(self) -> int: ...
    @property
    def context_candidates(self) -> int: ...
    @property
    def model_candidates(self) -> int: ...
    @property
    def corpus_candidates(self) -> int: ...
    @property
    def context_min_ngram(self) -> int: ...
    @property
    def context_max_ngram(self) -> int: ...
    @property
    def corpus_max_occurrences(self) -> int | None: ...
    @property
    def vocab_size(self) -> int | None: ...
    @property
    def model_store(self) -> ModelStore | None: ...
    @property
    def corpus_index(self) -> CorpusIndex | None: ...

_IntArray = Union[npt.NDArray[np.int32], npt.NDArray[np.int64], npt.NDArray[np.uint32]]

@final
class SessionTable:
    """The draft sessions of an engine's batch rows, found by content; one chain per row a step."""

    def __new__(
        cls,
        drafter: HierarchicalDrafter,
        max_chain: int,
        max_model_len: int,
        max_idle: int,
        learn: bool = True,
        parallel_min_rows: int | None = None,
    ) -> SessionTable: ...
    def step(
        self, new_tokens: Sequence[Sequence[int]], lengths: _IntArray, tokens: _IntArray
    ) -> list[list[int]]:
        """Extends, finds or starts every row's session; returns each row's chain."""
    def row_tokens(self, row: int) -> npt.NDArray[np.uint32] | None: ...
    def wait_for_learning(self) -> None: ...
    def close(self) -> None: ...
    @property
    def sessions(self) -> int: ...
    @property
    def live(self) -> int: ...
    @property
    def idle(self) -> int: ...
    @property
    def started(self) -> int: ...
    @property
    def drafter(self) -> HierarchicalDrafter: ...
    @property
    def max_chain(self) -> int: ...
    @property
    def max_model_len(self) -> int: ...
    @property
    def max_idle(self) -> int: ...
    @property
    def learn(self) -> bool: ...
    @property
    def parallel_min_rows(self) -> int: ...

def default_settings() -> dict[str, dict[str, int | tuple[str, ...] | None]]:
    """The core's defaults, ``{class name: {setting: value}}``, of every setting that
    ``ContextStore``, ``ModelStore`` and ``HierarchicalDrafter`` take as ``None`` (left out)."""

def linear_rows(
    x: npt.NDArray[np.float32], weight: npt.NDArray[np.float32], out: npt.NDArray[np.float32]
) -> None:
    """Writes ``x @ weight.T`` into ``out`` ((rows, k) x (n, k) -> (rows, n), float32, C-contiguous)."""

def kernels_use_simd() -> bool:
    """True when ``linear_rows`` runs its AVX2/FMA kernel on this CPU."""

def kernels_path() -> str:
    """The quantized products' instruction-set path on this CPU: "avx512-vnni", "avx512", "avx2"
    or "portable" (all give the same bits)."""

def rms_norm(
    x: npt.NDArray[np.float32], scale: npt.NDArray[np.float32], eps: float, out: npt.NDArray[np.float32]
) -> None:
    """Writes ``(x * r) * scale`` into ``out``, ``r = 1 / sqrt(mean(x**2) + eps)`` per row of ``x``."""

def rotary(
    x: npt.NDArray[np.float32],
    cos: npt.NDArray[np.float32],
    sin: npt.NDArray[np.float32],
    out: npt.NDArray[np.float32],
) -> None:
    """Writes ``x * cos + rotate_half(x) * sin`` into ``out`` (x, out: (rows, heads, dim); cos,
    sin: (rows, dim); float32, C-contiguous; dim even), as transformers computes it, bit for bit."""

def attention(
    q: npt.NDArray[np.float32],
    k: npt.NDArray[np.float32],
    v: npt.NDArray[np.float32],
    out: npt.NDArray[np.float32],
    scaling: float,
    mask: npt.NDArray[np.bool_] | None = None,
    window: int | None = None,
    softcap: float | None = None,
) -> None:
    """Writes softmax(q k^T scaling) v into ``out`` (queries, heads, dim) for q (heads, queries, dim)
    and k, v (kv_heads, keys, dim), each (head, query) row depending on its own visible keys alone.
    ``mask`` (queries, keys) says which keys each query sees; without it the queries are the last
    positions of a causal sequence, within ``window`` positions if given."""

@final
class QuantTensor:
    """A weight matrix kept in its GGUF blocks (F32, F16, BF16, Q4_0, Q5_0, Q8_0, Q4_K, Q5_K, Q6_K).

    ``linear(x, out)`` equals ``linear_rows(x, self.dequantize(), out)`` bit for bit, and
    ``dequantize()`` equals ``gguf.quants.dequantize`` bit for bit."""

    @staticmethod
    def from_bytes(
        qtype: str, data: bytes | npt.NDArray[np.uint8], rows: int, cols: int
    ) -> QuantTensor:
        """A tensor over a copy of ``data``: exactly ``rows`` rows of ``cols`` values of ``qtype``."""
    @property
    def qtype(self) -> str: ...
    @property
    def type_id(self) -> int: ...
    @property
    def shape(self) -> tuple[int, int]: ...
    @property
    def nbytes(self) -> int: ...
    def linear(self, x: npt.NDArray[np.float32], out: npt.NDArray[np.float32]) -> None:
        """Writes ``x @ W.T`` into ``out`` ((r, cols) -> (r, rows), float32, C-contiguous)."""
    def dequantize(self) -> npt.NDArray[np.float32]:
        """The whole matrix as float32 (rows, cols)."""
    def dequantize_rows(self, ids: npt.NDArray[np.int64], out: npt.NDArray[np.float32]) -> None:
        """Writes row ``ids[j]``, dequantized, into row ``j`` of ``out`` (float32 (len(ids), cols))."""
    def select_rows(self, order: npt.NDArray[np.int64]) -> QuantTensor:
        """A new tensor whose row ``j`` is row ``order[j]`` of this one."""
    def linear_int8(self, x: npt.NDArray[np.float32], out: npt.NDArray[np.float32]) -> None:
        """``linear`` in the int8 numeric mode: inputs quantized to int8 per block of 32, integer
        dot products, block scales applied in one fixed order (close to ``linear``, not equal)."""

def qlinear_group(
    x: npt.NDArray[np.float32], weights: list[QuantTensor], outs: list[npt.NDArray[np.float32]]
) -> None:
    """Writes ``x @ weights[i].T`` into ``outs[i]`` for every tensor in one dispatch of the kernels'
    threads; bit for bit ``weights[i].linear(x, outs[i])``."""

class GgufFormatError(ValueError):
    """A file is not a valid GGUF file: bad magic, unsupported version, truncated or corrupt."""

@final
class GgufTensorInfo:
    """One entry of a GGUF file's tensor table."""

    @property
    def name(self) -> str: ...
    @property
    def qtype(self) -> str:
        """ggml's name of the type ("Q4_K", "F32"; "unknown" for ids ggml does not define)."""
    @property
    def type_id(self) -> int: ...
    @property
    def shape(self) -> tuple[int, ...]:
        """Dimensions in torch order (the reverse of ggml's)."""
    @property
    def offset(self) -> int:
        """Offset of the data from the start of the data section."""
    @property
    def nbytes(self) -> int | None:
        """Bytes of data; ``None`` for types hierdraft does not support."""

@final
class GreedyHead:
    """A Q8_0 ``QuantTensor`` with the 5-bit proxy that ranks its rows: ``argmax(x)`` is, for every
    row of ``x``, the first maximal index of ``x[row] @ W.T`` as ``QuantTensor.linear`` computes it
    (NaN counts as maximal, as in ``torch.argmax``), with only the rows the proxy's bound cannot
    rule out computed exactly. ``ValueError`` for another type or a non-finite block scale."""

    def __new__(cls, tensor: QuantTensor) -> GreedyHead: ...
    @property
    def proxy_bytes(self) -> int: ...
    @property
    def shape(self) -> tuple[int, int]: ...
    def argmax(self, x: npt.NDArray[np.float32], report: bool = False, portable: bool = False) -> Any:
        """int64 (r,) indices; with ``report``, also the rows computed exactly per input row."""

@final
class GgufFile:
    """A GGUF file, memory-mapped and checked when opened (``GgufFormatError`` if malformed).

    Missing tensors raise ``KeyError``; tensors of unsupported types (or of the wrong kind for
    the call) raise ``ValueError`` when asked for."""

    def __new__(cls, path: _StrPath) -> GgufFile: ...
    @property
    def path(self) -> pathlib.Path: ...
    @property
    def version(self) -> int: ...
    @property
    def alignment(self) -> int: ...
    @property
    def data_start(self) -> int:
        """Where the data section starts in the file (tensor offsets count from here)."""
    @property
    def metadata(self) -> dict[str, _GgufValue]:
        """Every metadata entry in file order, as a new dict (see ``_GgufValue``)."""
    def get(self, key: str, default: Any = None) -> Any:
        """The value under ``key`` (as in ``metadata``), or ``default``."""
    @property
    def tensors(self) -> list[GgufTensorInfo]: ...
    def tensor(self, name: str) -> GgufTensorInfo: ...
    def matrix(self, name: str) -> QuantTensor:
        """The 1-D or 2-D tensor ``name`` as a (ne1, ne0) QuantTensor over the mapped file."""
    def array(self, name: str) -> npt.NDArray[np.float32]:
        """The values of an F32, F16 or BF16 tensor, exactly, as float32 in torch shape."""
    def __contains__(self, key: str, /) -> bool: ...
    def __len__(self) -> int: ...
