"""Tiny randomly initialised Llama / Gemma 3 / Qwen 2 / Qwen 3 models written as GGUF files, for fast exactness tests of
the quantized path.

`write_tiny_gguf` takes a transformers model, names its tensors the way llama.cpp's converter does
(gguf-py's tensor name map), stores them as the converter would (llama's q/k rows interleaved per
head, Gemma's norms as `w + 1`) and in the requested block format: Q8_0 / Q5_0 / Q4_0 / F16 / BF16
are quantized by the gguf package; the K-quants, which the gguf package cannot quantize, get random
blocks with small scales (a random model either way). Linear weights and the embedding take
`qtype`; 1-D tensors stay F32, as in real files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

K_QUANTS = ("Q4_K", "Q5_K", "Q6_K")


def _interleave_heads(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's storage order of a q/k projection: within each head, the two rotary halves
    interleaved row by row."""
    rows = w.shape[0]
    return w.reshape(heads, 2, rows // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _random_k_blocks(qtype, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """Random K-quant blocks whose values are small (f16 super-block scales around 1e-3)."""
    from gguf import GGML_QUANT_SIZES

    block_len, block_bytes = GGML_QUANT_SIZES[qtype]
    n_blocks = rows * cols // block_len
    raw = rng.integers(0, 256, size=(n_blocks, block_bytes), dtype=np.uint8)
    scale = rng.uniform(2e-4, 2e-3, size=n_blocks).astype(np.float16).view(np.uint8).reshape(n_blocks, 2)
    if qtype.name == "Q6_K":
        raw[:, -2:] = scale  # d is the last field
    else:
        raw[:, 0:2] = scale  # d, then dmin
        raw[:, 2:4] = (rng.uniform(1e-4, 1e-3, size=n_blocks).astype(np.float16).view(np.uint8).reshape(n_blocks, 2))
    return raw.reshape(rows, cols // block_len * block_bytes)


def _metadata(writer, config, arch: str) -> None:
    writer.add_uint32(f"{arch}.context_length", int(config.max_position_embeddings))
    writer.add_uint32(f"{arch}.embedding_length", int(config.hidden_size))
    writer.add_uint32(f"{arch}.block_count", int(config.num_hidden_layers))
    writer.add_uint32(f"{arch}.feed_forward_length", int(config.intermediate_size))
    writer.add_uint32(f"{arch}.attention.head_count", int(config.num_attention_heads))
    writer.add_uint32(f"{arch}.attention.head_count_kv", int(config.num_key_value_heads))
    writer.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", float(config.rms_norm_eps))
    writer.add_uint32(f"{arch}.vocab_size", int(config.vocab_size))
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)
    if arch == "gemma3":
        writer.add_uint32(f"{arch}.attention.key_length", head_dim)
        writer.add_uint32(f"{arch}.attention.value_length", head_dim)
        writer.add_uint32(f"{arch}.attention.sliding_window", int(config.sliding_window))
        writer.add_float32(f"{arch}.rope.freq_base", 1_000_000.0)
    else:
        writer.add_uint32(f"{arch}.rope.dimension_count", head_dim)
        writer.add_float32(f"{arch}.rope.freq_base", 10_000.0)
    for key, value in (("bos_token_id", config.bos_token_id), ("eos_token_id", config.eos_token_id),
                       ("padding_token_id", config.pad_token_id)):
        if value is not None:
            writer.add_uint32(f"tokenizer.ggml.{key}", int(value))


def write_tiny_gguf(model: torch.nn.Module, path: str | Path, qtype: str = "Q8_0", seed: int = 0) -> Path:
    """Write `model` (a transformers Llama, Gemma 3 text, Qwen 2 or Qwen 3 model) as a GGUF file at `path`."""
    import gguf

    config = model.config
    arch = {"llama": "llama", "gemma3_text": "gemma3", "qwen2": "qwen2", "qwen3": "qwen3"}[config.model_type]
    arch_id = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch)
    names = gguf.get_tensor_name_map(arch_id, config.num_hidden_layers)
    quant = gguf.GGMLQuantizationType[qtype]
    rng = np.random.default_rng(seed)
    path = Path(path)
    writer = gguf.GGUFWriter(str(path), arch)
    _metadata(writer, config, arch)
    linear_like = {n for n, m in model.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Embedding))}
    for hf_name, tensor in model.state_dict().items():
        module, _, suffix = hf_name.rpartition(".")
        if arch == "gemma3" and module == "lm_head":
            continue  # tied to the embedding: llama.cpp writes no output tensor
        gguf_name = names.get_name(module)
        if gguf_name is None:
            raise KeyError(f"no GGUF name for {hf_name}")
        gguf_name = f"{gguf_name}.{suffix}"
        w = tensor.detach().to(torch.float32).numpy().copy()
        if arch == "llama" and gguf_name.endswith(("attn_q.weight", "attn_k.weight")):
            heads = config.num_attention_heads if "attn_q" in gguf_name else config.num_key_value_heads
            w = _interleave_heads(w, heads)
        if arch == "gemma3" and suffix == "weight" and "norm" in gguf_name:
            w = w + 1.0  # Gemma's norms are stored shifted, as llama.cpp's converter does
        if module not in linear_like or w.ndim != 2 or qtype == "F32":
            writer.add_tensor(gguf_name, w.astype(np.float32))
        elif qtype in K_QUANTS:
            blocks = _random_k_blocks(quant, w.shape[0], w.shape[1], rng)
            writer.add_tensor(gguf_name, blocks, raw_shape=blocks.shape, raw_dtype=quant)
        else:
            data = gguf.quants.quantize(w, quant)
            writer.add_tensor(gguf_name, data, raw_shape=data.shape, raw_dtype=quant)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def tiny_gguf_models(tmp_dir: Path) -> dict[str, Path]:
    """The tiny GGUF files the quantized tests use, keyed by a short name."""
    from conftest import make_tiny_gemma3, make_tiny_llama, make_tiny_qwen

    llama = make_tiny_llama(dtype=torch.float32)
    gemma = make_tiny_gemma3(
        dtype=torch.float32, hidden_size=256, intermediate_size=512, num_hidden_layers=6, head_dim=64,
        layer_types=None, final_logit_softcapping=None,
    )
    return {
        "llama-q8_0": write_tiny_gguf(llama, tmp_dir / "llama-q8_0.gguf", "Q8_0"),
        "llama-q4_0": write_tiny_gguf(llama, tmp_dir / "llama-q4_0.gguf", "Q4_0"),
        "gemma3-q4_k": write_tiny_gguf(gemma, tmp_dir / "gemma3-q4_k.gguf", "Q4_K", seed=1),
        "gemma3-q6_k": write_tiny_gguf(gemma, tmp_dir / "gemma3-q6_k.gguf", "Q6_K", seed=2),
        "qwen2-q8_0": write_tiny_gguf(make_tiny_qwen(2), tmp_dir / "qwen2-q8_0.gguf", "Q8_0"),
        "qwen3-q5_0": write_tiny_gguf(make_tiny_qwen(3), tmp_dir / "qwen3-q5_0.gguf", "Q5_0"),
    }
