"""Building and loading hierdraft's offline stores from real data.

* :func:`build_corpus_index`: tokenize a text source (ShareGPT, .txt/.jsonl/.json files or
  folders) with the target model's tokenizer and index it (hierarchy level 3).
* :func:`build_model_store`: run the target model greedily on a prompt set (resumable,
  checkpointed) and count the n-grams of its outputs (hierarchy level 2).
* :func:`default_drafter` / :func:`default_stores`: the cached default stores of a tokenizer,
  built on first use.
* :func:`load_corpus_index` / :func:`load_model_store`: load a store and check that it was
  built with the tokenizer it is used with.
"""

from .corpus import build_corpus_index
from .defaults import build_default_stores, default_drafter, default_store_paths, default_stores
from .errors import CheckpointError, EmptyCorpusError, InvalidRecordError, SourceError, TokenizerMismatchError
from .metadata import decode_metadata, load_corpus_index, load_model_store
from .model_store import build_model_store
from .progress import BuildSummary
from .sources import iter_documents, load_prompts

__all__ = [
    "BuildSummary",
    "CheckpointError",
    "EmptyCorpusError",
    "InvalidRecordError",
    "SourceError",
    "TokenizerMismatchError",
    "build_corpus_index",
    "build_default_stores",
    "build_model_store",
    "decode_metadata",
    "default_drafter",
    "default_store_paths",
    "default_stores",
    "iter_documents",
    "load_corpus_index",
    "load_model_store",
    "load_prompts",
]
