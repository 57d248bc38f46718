"""The completion prompt template shared by the bench and the model-store builder.

The default model (Gemma 3 270M, pre-trained) is a *base* model: it has no chat template and
was not tuned to follow one. The bench therefore uses one plain, documented completion
template on the first turn of every question::

    Question: <first turn>

    Answer:

The model continues after ``Answer:``. The model store is built from generations in the same
format (:mod:`hierdraft.stores.model_store`), so that it learns what the model writes where it is
benchmarked and used. Only the first turn is used (Spec-Bench's MT-bench rows
have a second turn that refers to the model's first answer; a base model is not run as a
chat). The text is encoded with the model's tokenizer, special tokens included (Gemma adds
its ``<bos>``), exactly as ``hierdraft generate`` encodes a prompt.

When ``--model`` names an instruction-tuned model whose tokenizer has a chat template, the
same template is still used, so that every model sees the same text; pass
``chat_template=True`` to :func:`encode_prompt` to use the tokenizer's template instead.
"""

from __future__ import annotations

from typing import Any

from .questions import Question

PROMPT_TEMPLATE = "Question: {question}\n\nAnswer:"


def format_prompt(question: Question | str) -> str:
    """The prompt text for a question (its first turn) or for a raw question string."""
    text = question.first_turn if isinstance(question, Question) else question
    return PROMPT_TEMPLATE.format(question=text.strip())


def token_ids(tokenizer: Any, text: str, *, chat_template: bool = False) -> list[int]:
    """Token ids of ``text`` for ``tokenizer`` (possibly none).

    ``tokenizer`` is a Hugging Face tokenizer (anything with ``encode(text)``, which adds the
    model's special tokens) or a plain callable ``text -> list[int]``. With ``chat_template``
    the text is the user turn of the tokenizer's chat template, followed by the generation
    prompt.
    """
    if chat_template:
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True
        )
        if isinstance(ids, dict) or hasattr(ids, "keys"):  # a BatchEncoding
            ids = ids["input_ids"]
    elif hasattr(tokenizer, "encode"):
        ids = tokenizer.encode(text)
    else:
        ids = tokenizer(text)
    if hasattr(ids, "ids"):  # a tokenizers.Encoding
        ids = ids.ids
    return [int(t) for t in ids]


def encode_prompt(tokenizer: Any, text: str, *, chat_template: bool = False) -> list[int]:
    """:func:`token_ids` of a prompt, which must encode to at least one token."""
    ids = token_ids(tokenizer, text, chat_template=chat_template)
    if not ids:
        raise ValueError("the prompt encodes to no tokens")
    return ids
