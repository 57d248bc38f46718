"""A transformers causal LM computing directly on a GGUF file's own tensors.

`load_gguf_model(path)` builds the model transformers would build from the file (its config
from the file's metadata, see `gguf_metadata`), without allocating its weights, then fills it
from the memory-mapped file:

- every linear layer becomes a `QuantLinear` and the token embedding a `QuantEmbedding` over the
  file's own blocks (Q8_0, Q4_K, ..., or F16/BF16/F32 values): nothing is dequantized, converted
  or copied, so the process maps the file instead of holding a float copy four times its size;
- a tied LM head shares the embedding's blocks;
- the small tensors (norms, biases) are read as float32 and go through the same per-architecture
  processing transformers applies (e.g. Gemma's norms are stored as `w + 1`);
- the RMS norms run as one kernel call each (`fused_norm`);
- a quantized tensor that transformers would reorder (llama's q/k rows) has its rows reordered,
  which moves whole blocks and never touches a value; a tensor transformers would change in any
  other way cannot stay quantized, and loading says so.

The result equals transformers' own GGUF loading (which dequantizes with the gguf package)
numerically: `hierdraft._core.QuantTensor.dequantize` matches the gguf package bit for bit.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .fused_norm import fuse_norms
from .gguf_metadata import gguf_config
from .model_layout import UnsupportedModelError
from .quant_modules import QuantEmbedding, QuantLinear

__all__ = ["open_gguf", "load_gguf_model"]

log = logging.getLogger(__name__)


def open_gguf(path: str | Path) -> Any:
    """The parsed GGUF file (`hierdraft._core.GgufFile`; raises `GgufFormatError` if corrupt)."""
    from ._core import GgufFile

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {path}")
    return GgufFile(str(path))


def _processor(architecture: str, config: Any) -> Any:
    from transformers.modeling_gguf_pytorch_utils import TENSOR_PROCESSORS, TensorProcessor

    return TENSOR_PROCESSORS.get(architecture, TensorProcessor)(config=config.to_dict())


def _processed(processor: Any, weights: np.ndarray, name: str, names: dict[str, str]) -> np.ndarray:
    """`weights` after transformers' conversion step for the GGUF tensor `name`."""
    result = processor.process(weights=weights, name=name, tensor_key_mapping=names, parsed_parameters={"tensors": {}})
    return np.asarray(result.weights)


def _row_order(processor: Any, name: str, rows: int, names: dict[str, str]) -> np.ndarray | None:
    """The row reordering transformers' conversion applies to the GGUF tensor `name` (None: none).

    The conversion is run on a column of row indices: a pure row permutation comes back as a
    permuted column; anything else (values changed, shape changed) cannot be applied to blocks.
    """
    probe = np.arange(rows, dtype=np.float64).reshape(rows, 1)
    moved = _processed(processor, probe.copy(), name, names)
    if moved.shape != probe.shape or not np.array_equal(np.sort(moved[:, 0]), probe[:, 0]):
        raise UnsupportedModelError(
            f"transformers converts GGUF tensor {name!r} in a way that changes its values; "
            "it cannot stay quantized (load the model through transformers instead)"
        )
    order = moved[:, 0].astype(np.int64)
    return None if np.array_equal(order, np.arange(rows)) else order


def _tensor_names(model: nn.Module, architecture: str, processor: Any) -> dict[str, str]:
    """GGUF tensor name -> the model's parameter name, by gguf-py's name table for the file's
    architecture (one table for the whole model). A parameter name that the table does not know
    is retried without its leading components (a checkpoint converted from the base model)."""
    from gguf import MODEL_ARCH_NAMES, get_tensor_name_map

    arch = next((key for key, name in MODEL_ARCH_NAMES.items() if name == architecture), None)
    if arch is None:
        raise UnsupportedModelError(f"gguf-py has no tensor names for the GGUF architecture {architecture!r}")
    table = get_tensor_name_map(arch, model.config.num_hidden_layers)
    names: dict[str, str] = {}
    for hf_name in model.state_dict():
        module, dot, suffix = processor.preprocess_name(hf_name).rpartition(".")
        if suffix not in ("weight", "bias"):
            module, dot, suffix = processor.preprocess_name(hf_name), "", ""
        parts = module.split(".")
        for start in range(len(parts)):
            gguf_name = table.get_name(".".join(parts[start:]))
            if gguf_name is not None:
                names.setdefault(gguf_name + dot + suffix, hf_name)
                break
    return names


def _quant_embedding(module: nn.Module, weight: Any) -> QuantEmbedding:
    cls = type(module)
    if cls.forward is nn.Embedding.forward:
        return QuantEmbedding(weight, padding_idx=module.padding_idx, original_class=cls)
    scale = getattr(module, "embed_scale", None)
    if cls.__name__.endswith("ScaledWordEmbedding") and isinstance(scale, torch.Tensor):
        return QuantEmbedding(weight, padding_idx=module.padding_idx, embed_scale=scale, original_class=cls)
    raise UnsupportedModelError(f"{cls.__name__}: an embedding with its own forward cannot keep a quantized table")


def _set_parameter(model: nn.Module, hf_name: str, value: np.ndarray) -> None:
    module_name, _, attr = hf_name.rpartition(".")
    module = model.get_submodule(module_name)
    current = getattr(module, attr, None)
    tensor = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
    if isinstance(current, torch.Tensor) and tuple(current.shape) != tuple(tensor.shape):
        if tensor.numel() != current.numel():
            raise ValueError(
                f"the GGUF tensor for {hf_name} has shape {tuple(value.shape)}; the model needs {tuple(current.shape)}"
            )
        tensor = tensor.reshape(current.shape)  # e.g. a (n,) bias stored as (1, n)
    setattr(module, attr, nn.Parameter(tensor, requires_grad=False))


def _module_names(model: nn.Module) -> dict[int, str]:
    return {id(m): name for name, m in model.named_modules()}


def load_gguf_model(path: str | Path, gguf: Any = None) -> nn.Module:
    """The causal LM of the GGUF file `path`, computing on the file's own tensors (CPU, float32).

    `gguf`: the already opened `GgufFile`, if the caller has one.
    """
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    gguf = gguf if gguf is not None else open_gguf(path)
    config = gguf_config(gguf, path)
    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="sdpa")
    architecture = str(gguf.metadata["general.architecture"])
    processor = _processor(architecture, config)
    names = _tensor_names(model, architecture, processor)  # GGUF tensor name -> parameter name
    modules = _module_names(model)
    for info in gguf.tensors:
        hf_name = names.get(info.name)
        if hf_name is None:
            log.debug("GGUF tensor %s has no parameter in %s; skipped", info.name, type(model).__name__)
            continue
        module_name, _, attr = hf_name.rpartition(".")
        module = model.get_submodule(module_name)
        if attr == "weight" and type(module) is nn.Linear:
            weight = gguf.matrix(info.name)
            order = _row_order(processor, info.name, int(weight.shape[0]), names)
            if order is not None:
                weight = weight.select_rows(order)
            replacement: nn.Module = QuantLinear(weight)
        elif attr == "weight" and isinstance(module, nn.Embedding):
            weight = gguf.matrix(info.name)
            replacement = _quant_embedding(module, weight)
        else:
            _set_parameter(model, hf_name, _processed(processor, gguf.array(info.name), info.name, names))
            continue
        expected = (int(module.weight.shape[0]), int(module.weight.shape[1]))
        if tuple(int(d) for d in weight.shape) != expected:
            raise ValueError(f"GGUF tensor {info.name} is {tuple(weight.shape)}, {hf_name} needs {expected}")
        if isinstance(module, nn.Linear) and module.bias is not None:
            replacement.bias = module.bias  # still on meta: filled when the file's bias tensor comes
        model.set_submodule(module_name, replacement)
    _tie_head(model, config, modules)
    _check_complete(model, Path(path))
    fuse_norms(model)
    return model.eval()


def _tie_head(model: nn.Module, config: Any, modules: dict[int, str]) -> None:
    """Give a tied LM head the embedding's blocks."""
    head = model.get_output_embeddings()
    if head is None or isinstance(head, QuantLinear) or not getattr(config, "tie_word_embeddings", False):
        return
    embedding = model.get_input_embeddings()
    if not isinstance(embedding, QuantEmbedding):
        return
    name = modules.get(id(head))
    if name is None:
        raise UnsupportedModelError(f"cannot locate the LM head of {type(model).__name__}")
    model.set_submodule(name, QuantLinear(embedding.qweight))


def _check_complete(model: nn.Module, path: Path) -> None:
    missing = [n for n, p in model.named_parameters() if p.device.type == "meta"]
    missing += [n for n, b in model.named_buffers() if b.device.type == "meta"]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise ValueError(f"{path.name} has no tensor for {len(missing)} parameter(s) of the model: {shown}")
