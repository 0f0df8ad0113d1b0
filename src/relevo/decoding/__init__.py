"""Constrained decoding: keep a language model's output inside a set of valid strings.

- :class:`PrefixTrieDecoder` — one of a fixed set of token sequences (generative
  retrieval over document identifiers / titles).
- :class:`CompactTrie` / :class:`CompactTrieDecoder` — the same for 100k–1M document
  identifiers: a trie in flat numpy arrays, with removals and additions without a rebuild.
- :class:`PermutationDecoder` — a ranking of ``n`` identifiers, each exactly once
  (``[3] > [1] > [2]``), for listwise reranking.
- :class:`ConstrainedLogitsProcessor` — any of these decoders as a ``transformers`` logits
  processor; ``decoder.prefix_allowed_tokens_fn(prompt_length)`` gives the
  ``prefix_allowed_tokens_fn`` form.
- :func:`diverse_beam_search` and :func:`awrs_generate` — small generation loops over a
  Hugging Face causal LM (Diverse Beam Search; adaptive weighted rejection sampling).

Importing this package does not import torch; the generation routines do on first use.
"""

from __future__ import annotations

from .compact_decoder import CompactTrieDecoder
from .compact_trie import CompactTrie
from .constraints import PermutationDecoder, PrefixDecoder, PrefixTrieDecoder, suffix_tokens
from .generate import (
    AWRSResult,
    ConstrainedLogitsProcessor,
    Hypothesis,
    awrs_generate,
    beam_search_batch,
    diverse_beam_search,
)
from .trie import TokenTrie, TrieNode

__all__ = [
    "AWRSResult",
    "CompactTrie",
    "CompactTrieDecoder",
    "ConstrainedLogitsProcessor",
    "Hypothesis",
    "PermutationDecoder",
    "PrefixDecoder",
    "PrefixTrieDecoder",
    "TokenTrie",
    "TrieNode",
    "awrs_generate",
    "beam_search_batch",
    "diverse_beam_search",
    "suffix_tokens",
]
