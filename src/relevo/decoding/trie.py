"""A token trie: the data structure behind every constrained decoder.

Pure Python, no torch: decoders are built from it at registration time, and the
library must import without the model stack.

Each node knows which sequences pass through it as a bitmask (``mask``), so a decoder
can restrict a walk to a *subset* of the stored sequences (the identifiers not yet
emitted in a permutation) without rebuilding the trie.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from ..engine.errors import ConfigError


class TrieNode:
    """One node: children by token id, the sequences ending here and passing through.

    Attributes:
        children: token id -> child node.
        ends: index of the stored sequence that ends exactly at this node, or ``None``.
        mask: bitmask (Python int) of the indices of all sequences through this node.
    """

    __slots__ = ("children", "ends", "mask")

    def __init__(self) -> None:
        self.children: dict[int, TrieNode] = {}
        self.ends: int | None = None
        self.mask: int = 0


class TokenTrie:
    """Token-id sequences stored in a prefix tree.

    Sequence ``i`` of the constructor's iterable gets index ``i``; duplicates keep the
    first index (so a duplicate identifier in a permutation is refused by the caller,
    see :class:`~relevo.decoding.constraints.PermutationDecoder`).

    Args:
        sequences: token-id sequences (lists, tuples, or anything iterable of ints).

    Raises:
        ConfigError: on an empty sequence or a negative / non-integer token id.
    """

    def __init__(self, sequences: Iterable[Sequence[int]] = ()) -> None:
        self.root = TrieNode()
        self._sequences: list[tuple[int, ...]] = []
        for seq in sequences:
            self.add(seq)

    def add(self, sequence: Sequence[int]) -> int:
        """Insert one sequence; returns its index (the first index if already stored)."""
        seq = tuple(_token(t) for t in sequence)
        if not seq:
            raise ConfigError(
                "a constrained sequence must have at least one token; drop empty sequences "
                "(e.g. texts that tokenize to nothing) before building the trie"
            )
        index = len(self._sequences)
        node = self.root
        path = [node]
        for tok in seq:
            node = node.children.setdefault(tok, TrieNode())
            path.append(node)
        if node.ends is not None:
            return node.ends
        node.ends = index
        bit = 1 << index
        for n in path:
            n.mask |= bit
        self._sequences.append(seq)
        return index

    # -- queries -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._sequences)

    def __iter__(self) -> Iterator[tuple[int, ...]]:
        return iter(self._sequences)

    def __contains__(self, sequence: object) -> bool:
        if not isinstance(sequence, Sequence):
            return False
        node = self.walk(sequence)
        return node is not None and node.ends is not None

    def sequence(self, index: int) -> tuple[int, ...]:
        """The stored sequence with this index."""
        return self._sequences[index]

    @property
    def max_depth(self) -> int:
        """Length of the longest stored sequence (0 when empty)."""
        return max((len(s) for s in self._sequences), default=0)

    def walk(self, prefix: Iterable[int], node: TrieNode | None = None) -> TrieNode | None:
        """The node reached by following ``prefix`` from ``node`` (root by default), or None."""
        cur: TrieNode | None = self.root if node is None else node
        for tok in prefix:
            if cur is None:
                return None
            cur = cur.children.get(int(tok))
        return cur

    @staticmethod
    def next_tokens(node: TrieNode, subset: int = -1) -> list[int]:
        """Children of ``node`` leading to at least one sequence in ``subset`` (a bitmask).

        ``-1`` (every bit set) means all sequences.
        """
        if subset == -1:
            return list(node.children)
        return [tok for tok, child in node.children.items() if child.mask & subset]


def _token(t: Any) -> int:
    if isinstance(t, bool) or not hasattr(t, "__index__"):
        raise ConfigError(
            f"token ids must be integers, got {t!r}; pass tokenizer ids, not token strings"
        )
    v = int(t)
    if v < 0:
        raise ConfigError(
            f"token ids must be >= 0, got {v}; pass ids from the tokenizer's vocabulary"
        )
    return v


__all__ = ["TokenTrie", "TrieNode"]
