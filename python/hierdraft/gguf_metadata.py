"""The transformers configuration and tokenizer a GGUF file describes, built from its metadata.

transformers can read both from a GGUF file itself (`AutoConfig.from_pretrained(folder,
gguf_file=...)`), but for most architectures it parses the whole file with gguf-py's reader
first, which takes tens of seconds on a file with a 262k-token vocabulary. hierdraft reads the
metadata with its own reader (`hierdraft._core.GgufFile`, milliseconds) and applies transformers'
own GGUF key table (`GGUF_CONFIG_MAPPING`), so the result is the config transformers would build.
Architectures whose conversion transformers special-cases are handed to transformers unchanged
(correct, only slower). The tokenizer is converted by transformers' GGUF tokenizer converter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["gguf_config", "gguf_tokenizer"]

# Architectures whose config transformers' GGUF loader rewrites beyond its key table (renamed
# architectures, values derived from tensors, extra defaults): their config comes from transformers.
_SPECIAL_CASED = frozenset(
    {"t5", "t5encoder", "stablelm", "lfm2", "gpt_oss", "gpt-oss", "qwen2moe", "qwen3moe", "minimax-m2",
     "gemma4", "falcon", "bloom", "qwen35", "qwen35moe"}
)
# transformers' name for the text-only model of a multimodal architecture.
_TEXT_MODEL_TYPE = {"gemma3": "gemma3_text"}


def _config_dict(metadata: dict[str, Any], tensor_names: set[str]) -> dict[str, Any] | None:
    """transformers' config keys for this metadata, or None when transformers must build it."""
    from transformers.integrations.ggml import GGUF_CONFIG_DEFAULTS_MAPPING, GGUF_CONFIG_MAPPING

    architecture = str(metadata.get("general.architecture", ""))
    name = str(metadata.get("general.name", ""))
    if architecture in _SPECIAL_CASED or architecture not in GGUF_CONFIG_MAPPING:
        return None
    if "llama" in architecture and "mistral" in name.lower():
        return None  # transformers maps these to its mistral architecture
    config: dict[str, Any] = {}
    for key, value in metadata.items():
        prefix, _, rest = key.partition(".")
        renamed = GGUF_CONFIG_MAPPING.get(prefix, {}).get(rest)
        if renamed is None or renamed == -1:
            continue
        if hasattr(value, "tolist"):
            value = value.tolist()  # numeric arrays come as numpy arrays
        if isinstance(value, list) and len(value) == 1:
            value = value[0]  # transformers reads a one-element array as its element
        config[renamed] = value
    config["tie_word_embeddings"] = "output.weight" not in tensor_names
    for key, value in GGUF_CONFIG_DEFAULTS_MAPPING.get(architecture, {}).items():
        config.setdefault(key, value)
    config["model_type"] = _TEXT_MODEL_TYPE.get(architecture, architecture)
    if "vocab_size" not in config and "tokenizer.ggml.tokens" in metadata:
        config["vocab_size"] = len(metadata["tokenizer.ggml.tokens"])
    return config


def gguf_config(gguf: Any, path: str | Path) -> Any:
    """The transformers config of the model in the GGUF file `path` (`gguf`: its `GgufFile`)."""
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    names = {t.name for t in gguf.tensors}
    config = _config_dict(gguf.metadata, names)
    if config is None or config["model_type"] not in CONFIG_MAPPING:
        path = Path(path)
        return AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
    return CONFIG_MAPPING[config["model_type"]].from_dict(config)


def gguf_tokenizer(path: str | Path, model_type: str) -> Any:
    """The fast transformers tokenizer of the GGUF file `path`, converted by transformers."""
    from transformers.integrations.gguf import convert_gguf_tokenizer, get_gguf_tokenizer
    from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING_NAMES, tokenizer_class_from_name

    architecture, tokenizer_dict, tokenizer_config = get_gguf_tokenizer(str(path))
    backend, extra = convert_gguf_tokenizer(architecture, tokenizer_dict)
    names = TOKENIZER_MAPPING_NAMES.get(model_type)
    class_name = names if isinstance(names, str) else next((n for n in reversed(names or ()) if n), None)
    cls = tokenizer_class_from_name(class_name) if class_name else None
    if cls is None:
        from transformers import PreTrainedTokenizerFast as cls  # noqa: N813 - the generic fast class
    return cls(tokenizer_object=backend, **tokenizer_config, **extra)
