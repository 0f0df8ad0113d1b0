"""Bundled plugin: the constrained decoders (prefix trie, permutation).

The decoders themselves live in :mod:`relevo.decoding`; this plugin only names them,
so ``RELEVO_DISABLE_PLUGINS=llm`` (the LLM rerankers) leaves them registered and
``RELEVO_DISABLE_PLUGINS=decoders`` removes them without touching the rerankers.
"""

from __future__ import annotations

from ..decoding import PermutationDecoder, PrefixTrieDecoder
from ..engine.hookspecs import Register, hookimpl


@hookimpl
def register_decoders(register: Register) -> None:
    register(
        PrefixTrieDecoder,
        "prefix-trie",
        description="generation restricted to a set of token sequences",
    )
    register(
        PermutationDecoder,
        "permutation",
        description="generation restricted to a ranking of n identifiers",
    )
