"""A constrained decoder over a :class:`~relevo.decoding.compact_trie.CompactTrie`.

:class:`CompactTrieDecoder` is :class:`~relevo.decoding.constraints.PrefixTrieDecoder`
for large, updatable identifier sets: its state is a node handle of the compact trie
(an int) instead of a dict node, so a Hugging Face ``prefix_allowed_tokens_fn`` or
:class:`~relevo.decoding.generate.ConstrainedLogitsProcessor` works over 1M document
identifiers, and identifiers removed from the trie are never generated again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from .compact_trie import CompactTrie
from .constraints import FINISHED, PrefixDecoder, as_token_list


class CompactTrieDecoder(PrefixDecoder):
    """Only live identifiers of a :class:`CompactTrie` may be generated (generative retrieval).

    Each step allows the tokens that continue at least one live identifier. The usual
    setup appends the model's EOS id to every identifier before building the trie:
    emitting it completes the identifier and finishes the output. When identifiers are
    stored without an end token, EOS is allowed wherever a live identifier is complete
    (and a longer one may still continue it), as in ``PrefixTrieDecoder``.

    Memoised states are dropped whenever the trie's :attr:`~CompactTrie.generation`
    changes (``add`` / ``compact`` renumber nodes); ``remove`` needs no reset, since the
    allowed tokens are read from the trie's live counts at every step.

    Args:
        trie: the identifiers.
        eos_token_id: id(s) that close a complete identifier.
        prompt_length: number of prompt tokens at the start of each ``prefix``.

    Example::

        END = tokenizer.eos_token_id
        trie = CompactTrie.build([ids + [END] for ids in doc_ids])
        dec = CompactTrieDecoder(trie, eos_token_id=END)
        out = model.generate(x, prefix_allowed_tokens_fn=dec.prefix_allowed_tokens_fn(x.shape[1]),
                             num_beams=10, num_return_sequences=10, max_new_tokens=dec.max_tokens())
        rows = [dec.match(o[x.shape[1]:]) for o in out]
    """

    name: ClassVar[str] = "compact-trie"

    def __init__(
        self,
        trie: CompactTrie,
        *,
        eos_token_id: int | Sequence[int] | None = None,
        prompt_length: int = 0,
    ) -> None:
        super().__init__(eos_token_id=eos_token_id, prompt_length=prompt_length)
        self.trie = trie
        self._generation = trie.generation

    def state(self, generated: Sequence[int]) -> Any:
        """The decoder state after the generated tokens (``None`` when the constraint broke)."""
        if self._generation != self.trie.generation:
            self.reset()
            self._generation = self.trie.generation
        return super().state(generated)

    def _start(self) -> int:
        return self.trie.root()

    def _step(self, state: int, token: int) -> Any:
        child = self.trie.step_one(state, token)
        if child >= 0:
            if token in self.eos_token_ids and self.trie.row_at(child) is not None:
                return FINISHED  # the identifier's own end token is EOS
            return child
        if token in self.eos_token_ids and self.trie.row_at(state) is not None:
            return FINISHED
        return None

    def _next(self, state: int) -> list[int]:
        out: list[int] = self.trie.allowed_nodes([state])[0].tolist()
        if self.eos_token_ids and self.trie.row_at(state) is not None:
            out.extend(t for t in self.eos_token_ids if t not in out)
        return out

    def match(self, generated: Sequence[int] | Any) -> int | None:
        """Row of the live identifier the output spells (EOS and padding ignored), or None."""
        node = self.trie.root()
        for tok in as_token_list(generated):
            child = self.trie.step_one(node, tok)
            if child < 0:
                break
            node = child
        return self.trie.row_at(node)

    def max_tokens(self) -> int:
        """Longest possible output in tokens, EOS included (a ``max_new_tokens`` bound)."""
        return self.trie.max_depth + (1 if self.eos_token_ids else 0)


__all__ = ["CompactTrieDecoder"]
