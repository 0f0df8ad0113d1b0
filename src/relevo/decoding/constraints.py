"""Constrained decoders: which token may come next so that the output stays valid.

- :class:`PrefixTrieDecoder`: the output is one of a fixed set of token sequences
  (generative retrieval over document identifiers or titles).
- :class:`PermutationDecoder`: the output is a ranking of ``n`` identifiers, each exactly
  once, with separators between them, e.g. ``[3] > [1] > [2]`` (listwise reranking).

Both are pure Python (no torch) and answer ``allowed_tokens(batch_id, prefix)``, the
signature of a Hugging Face ``prefix_allowed_tokens_fn``. Hugging Face passes the
*whole* row (prompt + generated tokens), so a decoder is told where generation starts
(``prompt_length``); with the default ``0`` the prefix is the generated part only.
Left padding keeps every row's prompt the same length, so one offset serves a batch.

States are memoised per generated prefix: each generation step extends a cached
prefix by one token, so a step costs O(1) trie work (plus hashing the prefix).

Conventions shared by the decoders:

- after an end-of-sequence token the sequence is finished: every later token (Hugging
  Face appends the pad token to finished rows) keeps it finished, and only EOS is
  allowed;
- a prefix that already broke the constraint (it did not come from this decoder)
  allows only EOS, so the row ends instead of generating garbage; without an EOS id
  it allows nothing (``[]``), which Hugging Face turns into an all ``-inf`` row.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Hashable, Iterable, Sequence
from typing import Any, ClassVar

from ..engine.components import ConstrainedDecoder
from ..engine.errors import ConfigError
from .trie import TokenTrie, TrieNode

_MEMO_LIMIT = 200_000  # cached prefix states before the memo is reset


class _Finished:
    """Marker state: EOS was emitted."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "FINISHED"


FINISHED: Any = _Finished()


def as_token_list(prefix: Any) -> list[int]:
    """Token ids from a list, tuple, numpy array or (CPU/GPU) torch tensor."""
    tolist = getattr(prefix, "tolist", None)
    if tolist is not None:
        out = tolist()
        return [int(t) for t in (out if isinstance(out, list) else [out])]
    return [int(t) for t in prefix]


def _eos_tuple(eos_token_id: int | Sequence[int] | None) -> tuple[int, ...]:
    if eos_token_id is None:
        return ()
    if isinstance(eos_token_id, int):
        return (eos_token_id,)
    return tuple(int(t) for t in eos_token_id)


def suffix_tokens(tokenizer: Any, context: str, text: str) -> list[int]:
    """Token ids of ``text`` as the tokenizer splits it right after ``context``.

    BPE and SentencePiece tokenizers split a string differently at the start of a text
    and after other text (leading-space tokens, ``▁`` prefixes), so constrained ids must
    be tokenized in the context where the model will emit them. Falls back to tokenizing
    ``text`` alone when the context's own tokens change at the boundary.
    """

    def enc(s: str) -> list[int]:
        return list(tokenizer(s, add_special_tokens=False)["input_ids"]) if s else []

    if not context:
        return enc(text)
    ctx = enc(context)
    full = enc(context + text)
    if full[: len(ctx)] == ctx and len(full) > len(ctx):
        return full[len(ctx) :]
    return enc(text)


class PrefixDecoder(ConstrainedDecoder):
    """Shared machinery: prompt offset, EOS handling and memoised prefix states.

    Subclasses write :meth:`_start`, :meth:`_step` (``None`` = constraint broken) and
    :meth:`_next` (the allowed ids in a live, unfinished state).

    Args:
        eos_token_id: the end-of-sequence id(s) allowed once an output is complete.
        prompt_length: how many leading tokens of a ``prefix`` are prompt, not output.

    Raises:
        ConfigError: ``prompt_length`` is not a non-negative int.
    """

    def __init__(
        self, *, eos_token_id: int | Sequence[int] | None = None, prompt_length: int = 0
    ) -> None:
        if not isinstance(prompt_length, int) or prompt_length < 0:
            raise ConfigError(
                f"prompt_length must be a non-negative int, got {prompt_length!r}; pass the "
                "number of prompt tokens at the start of each row (0 when rows hold only output)"
            )
        self.eos_token_ids: tuple[int, ...] = _eos_tuple(eos_token_id)
        self.prompt_length = prompt_length
        self._memo: dict[tuple[int, ...], Any] = {}

    # -- what subclasses write ----------------------------------------------------------
    @abstractmethod
    def _start(self) -> Hashable: ...

    @abstractmethod
    def _step(self, state: Any, token: int) -> Any:
        """Next state after ``token``: a live state, ``FINISHED`` or ``None`` (broken)."""

    @abstractmethod
    def _next(self, state: Any) -> list[int]:
        """Allowed ids in a live, unfinished state (EOS included when complete)."""

    # -- state bookkeeping ----------------------------------------------------------------
    def _advance(self, state: Any, token: int) -> Any:
        if state is None:
            return None
        if state is FINISHED:
            return FINISHED
        return self._step(state, token)

    def state(self, generated: Sequence[int]) -> Any:
        """The decoder state after the generated tokens (``None`` when the constraint broke)."""
        gen = tuple(generated)
        memo = self._memo
        if gen in memo:
            return memo[gen]
        if gen and gen[:-1] in memo:
            st = self._advance(memo[gen[:-1]], gen[-1])
        else:
            st = self._start()
            for tok in gen:
                st = self._advance(st, tok)
                if st is None:
                    break
        if len(memo) >= _MEMO_LIMIT:
            memo.clear()
        memo[gen] = st
        return st

    def generated(self, prefix: Any) -> list[int]:
        """The output part of a ``prefix`` (drops the first ``prompt_length`` ids)."""
        toks = as_token_list(prefix)
        return toks[self.prompt_length :] if self.prompt_length else toks

    # -- public API -------------------------------------------------------------------------
    def allowed_tokens(self, batch_id: int, prefix: Sequence[int]) -> list[int]:
        """Token ids allowed after ``prefix`` (a Hugging Face ``prefix_allowed_tokens_fn``)."""
        return self.allowed_next(self.generated(prefix))

    def allowed_next(self, generated: Sequence[int]) -> list[int]:
        """Token ids allowed after the generated tokens (no prompt offset applied)."""
        st = self.state(generated)
        if st is None or st is FINISHED:
            return list(self.eos_token_ids)
        out = self._next(st)
        return out if out else list(self.eos_token_ids)

    def accepts(self, generated: Sequence[int], token: int) -> bool:
        """Whether ``token`` may follow the generated tokens: one cheap check, no mask.

        This is what adaptive rejection sampling calls on each sampled token.
        """
        st = self.state(generated)
        if st is None or st is FINISHED:
            return int(token) in self.eos_token_ids
        return self._step(st, int(token)) is not None

    def is_finished(self, generated: Sequence[int]) -> bool:
        """True once a complete output was closed by EOS."""
        return self.state(generated) is FINISHED

    def prefix_allowed_tokens_fn(self, prompt_length: int | None = None) -> Any:
        """A ``(batch_id, input_ids) -> list[int]`` callable for ``model.generate``.

        Args:
            prompt_length: offset of the generated part in each row; defaults to
                ``self.prompt_length``. Pass ``input_ids.shape[1]`` of the (left-padded)
                prompt batch.
        """
        offset = self.prompt_length if prompt_length is None else int(prompt_length)

        def fn(batch_id: int, input_ids: Any) -> list[int]:
            return self.allowed_next(as_token_list(input_ids)[offset:])

        return fn

    def reset(self) -> None:
        """Forget memoised states (they are only a cache)."""
        self._memo.clear()


class PrefixTrieDecoder(PrefixDecoder):
    """Only sequences from a fixed set may be generated (generative retrieval).

    Each step allows the tokens that continue at least one stored sequence; once a
    stored sequence is complete, EOS is allowed too (and a longer stored sequence may
    still continue it).

    Args:
        sequences: the allowed token-id sequences (e.g. tokenized document titles).
        eos_token_id: id(s) that close a complete sequence.
        prompt_length: number of prompt tokens at the start of each ``prefix``.

    Example::

        dec = PrefixTrieDecoder([[5, 6], [5, 7, 8]], eos_token_id=2)
        dec.allowed_tokens(0, [5])     # [6, 7]
        dec.allowed_tokens(0, [5, 6])  # [2]
    """

    name: ClassVar[str] = "prefix-trie"

    def __init__(
        self,
        sequences: Iterable[Sequence[int]] = (),
        *,
        eos_token_id: int | Sequence[int] | None = None,
        prompt_length: int = 0,
    ) -> None:
        super().__init__(eos_token_id=eos_token_id, prompt_length=prompt_length)
        self.trie = sequences if isinstance(sequences, TokenTrie) else TokenTrie(sequences)

    @classmethod
    def from_texts(
        cls,
        texts: Iterable[str],
        tokenizer: Any,
        *,
        context: str = "",
        eos_token_id: int | Sequence[int] | None = None,
        prompt_length: int = 0,
    ) -> PrefixTrieDecoder:
        """Build from strings, tokenized as they would be generated after ``context``.

        ``eos_token_id`` defaults to the tokenizer's.
        """
        seqs = [suffix_tokens(tokenizer, context, t) for t in texts]
        eos = tokenizer.eos_token_id if eos_token_id is None else eos_token_id
        return cls(seqs, eos_token_id=eos, prompt_length=prompt_length)

    def _start(self) -> TrieNode:
        return self.trie.root

    def _step(self, state: TrieNode, token: int) -> Any:
        child = state.children.get(token)
        if child is not None:
            return child
        if state.ends is not None and token in self.eos_token_ids:
            return FINISHED
        return None

    def _next(self, state: TrieNode) -> list[int]:
        out = list(state.children)
        if state.ends is not None:
            out.extend(t for t in self.eos_token_ids if t not in state.children)
        return out

    def match(self, generated: Sequence[int]) -> int | None:
        """Index of the stored sequence the output spells (EOS and padding ignored), or None."""
        node = self.trie.root
        for tok in generated:
            child = node.children.get(int(tok))
            if child is None:
                break
            node = child
        return node.ends

    def max_tokens(self) -> int:
        """Longest possible output in tokens, EOS included (a ``max_new_tokens`` bound)."""
        return self.trie.max_depth + (1 if self.eos_token_ids else 0)


# Permutation NFA configurations: (phase, used_mask, order, node, sep_pos)
_ID, _AFTER, _SEP = 0, 1, 2


class PermutationDecoder(PrefixDecoder):
    """Generation can only spell a ranking of all ``n`` identifiers, each exactly once.

    The output is ``id_a SEP id_b SEP ... id_z EOS``. The first identifier is matched
    against ``identifiers``; each one after a separator against ``continued`` (its
    tokenization after the separator, e.g. ``" [2]"`` rather than ``"[2]"`` for BPE
    tokenizers), defaulting to ``identifiers``. Identifiers may span several tokens and
    share prefixes (``[1]`` / ``[12]``): a trie restricted to the identifiers not yet
    emitted decides each token. EOS is allowed exactly when all ``n`` are out.

    The decoder tracks every parse of the prefix (a small NFA), so ambiguous inputs
    (identifiers that are prefixes of one another with an empty separator) stay correct;
    every state it allows can still be completed, so constrained decoding never gets
    stuck and always ends in a valid permutation given ``max_tokens()`` new tokens.

    Args:
        identifiers: one token-id sequence per item, in item order (distinct).
        separator: token ids between identifiers (may be empty).
        continued: identifiers as tokenized after a separator (same order), or None.
        eos_token_id: id(s) that end the output; needed to stop generation cleanly.
        prompt_length: number of prompt tokens at the start of each ``prefix``.

    Raises:
        ConfigError: an identifier is empty or repeated, ``continued`` has another
            length than ``identifiers``, or an EOS id occurs inside an identifier or
            the separator.

    Example::

        dec = PermutationDecoder.for_tokenizer(tokenizer, 3)  # "[i] > [j] > [k]"
        out = model.generate(ids, prefix_allowed_tokens_fn=dec.prefix_allowed_tokens_fn(ids.shape[1]),
                             max_new_tokens=dec.max_tokens())
        ranking = dec.parse(out[0, ids.shape[1]:])  # e.g. [2, 0, 1]
    """

    name: ClassVar[str] = "permutation"

    def __init__(
        self,
        identifiers: Sequence[Sequence[int]] = (),
        *,
        separator: Sequence[int] = (),
        continued: Sequence[Sequence[int]] | None = None,
        eos_token_id: int | Sequence[int] | None = None,
        prompt_length: int = 0,
    ) -> None:
        super().__init__(eos_token_id=eos_token_id, prompt_length=prompt_length)
        ids = [tuple(int(t) for t in seq) for seq in identifiers]
        self.n = len(ids)
        self.first = _distinct_trie(ids, "identifiers")
        if continued is None:
            self.continued = self.first
        else:
            cont = [tuple(int(t) for t in seq) for seq in continued]
            if len(cont) != self.n:
                raise ConfigError(
                    f"continued has {len(cont)} identifiers, identifiers has {self.n}; pass one "
                    "continued tokenization per identifier, in the same order (or None)"
                )
            self.continued = _distinct_trie(cont, "continued identifiers")
        self.separator: tuple[int, ...] = tuple(int(t) for t in separator)
        self.full_mask = (1 << self.n) - 1
        clash = set(self.eos_token_ids) & {
            t for trie in (self.first, self.continued) for s in trie for t in s
        }
        clash |= set(self.eos_token_ids) & set(self.separator)
        if clash:
            raise ConfigError(
                f"EOS id(s) {sorted(clash)} appear inside an identifier or the separator; "
                "generation would stop there. Use other identifier or separator tokens, "
                "or another eos_token_id."
            )

    @classmethod
    def for_tokenizer(
        cls,
        tokenizer: Any,
        n: int,
        *,
        template: str = "[{}]",
        separator: str = " > ",
        start: int = 1,
        context: str = "",
        eos_token_id: int | Sequence[int] | None = None,
        prompt_length: int = 0,
    ) -> PermutationDecoder:
        """Identifiers ``template.format(start + i)`` joined by ``separator``, tokenized in context.

        Trailing whitespace of ``separator`` is tokenized with the next identifier (how
        BPE tokenizers split ``"[1] > [2]"``: ``[`` ``1`` ``]`` `` >`` `` [`` ``2`` ``]``).

        Args:
            tokenizer: a Hugging Face tokenizer.
            n: number of items.
            template: identifier format; ``{}`` receives the 1-based (``start``) number.
            separator: text between identifiers.
            start: number of the first item.
            context: text right before the output (the prompt), so the first identifier
                is tokenized as the model will emit it.
            eos_token_id: defaults to the tokenizer's EOS id.
            prompt_length: number of prompt tokens at the start of each ``prefix``.

        Raises:
            ConfigError: ``n`` is negative, or the identifiers clash (see the class).
        """
        if n < 0:
            raise ConfigError(f"n must be >= 0, got {n}; pass the number of items to rank")
        head = separator.rstrip()
        tail = separator[len(head) :]
        labels = [template.format(start + i) for i in range(n)]
        first = [suffix_tokens(tokenizer, context, s) for s in labels]
        anchor = context + (labels[0] if labels else "") + head
        sep = (
            suffix_tokens(tokenizer, context + (labels[0] if labels else ""), head) if head else []
        )
        cont = [suffix_tokens(tokenizer, anchor, tail + s) for s in labels]
        eos = tokenizer.eos_token_id if eos_token_id is None else eos_token_id
        return cls(
            first, separator=sep, continued=cont, eos_token_id=eos, prompt_length=prompt_length
        )

    # -- NFA -----------------------------------------------------------------------------------
    def _start(self) -> frozenset[tuple[Any, ...]]:
        if self.n == 0:
            return frozenset({(_AFTER, 0, (), None, 0)})
        return frozenset({(_ID, 0, (), self.first.root, 0)})

    def _cfg_step(self, cfg: tuple[Any, ...], tok: int, out: set[Any]) -> bool:
        """Add the successors of one configuration on ``tok`` to ``out``; True if EOS closed it."""
        phase, used, order, node, pos = cfg
        remaining = self.full_mask & ~used
        if phase == _ID:
            child = node.children.get(tok)
            if child is not None and child.mask & remaining:
                out.add((_ID, used, order, child, 0))
            i = node.ends
            if i is not None and (remaining >> i) & 1:
                return self._cfg_step((_AFTER, used | (1 << i), (*order, i), None, 0), tok, out)
            return False
        if phase == _AFTER:
            if used == self.full_mask:
                return tok in self.eos_token_ids
            if self.separator:
                if tok == self.separator[0]:
                    if len(self.separator) == 1:
                        out.add((_ID, used, order, self.continued.root, 0))
                    else:
                        out.add((_SEP, used, order, None, 1))
                return False
            return self._cfg_step((_ID, used, order, self.continued.root, 0), tok, out)
        # _SEP
        if tok == self.separator[pos]:
            if pos + 1 == len(self.separator):
                out.add((_ID, used, order, self.continued.root, 0))
            else:
                out.add((_SEP, used, order, None, pos + 1))
        return False

    def _cfg_next(self, cfg: tuple[Any, ...], out: set[int]) -> None:
        phase, used, order, node, pos = cfg
        remaining = self.full_mask & ~used
        if phase == _ID:
            out.update(TokenTrie.next_tokens(node, remaining))
            i = node.ends
            if i is not None and (remaining >> i) & 1:
                self._cfg_next((_AFTER, used | (1 << i), (*order, i), None, 0), out)
        elif phase == _AFTER:
            if used == self.full_mask:
                out.update(self.eos_token_ids)
            elif self.separator:
                out.add(self.separator[0])
            else:
                out.update(TokenTrie.next_tokens(self.continued.root, remaining))
        else:
            out.add(self.separator[pos])

    def _step(self, state: frozenset[tuple[Any, ...]], token: int) -> Any:
        out: set[tuple[Any, ...]] = set()
        closed = False
        for cfg in state:
            closed = self._cfg_step(cfg, token, out) or closed
        if closed:
            # EOS wins over any parse that could go on (only possible if EOS doubles as an id token)
            return FINISHED
        return frozenset(out) if out else None

    def _next(self, state: frozenset[tuple[Any, ...]]) -> list[int]:
        out: set[int] = set()
        for cfg in state:
            self._cfg_next(cfg, out)
        return sorted(out)

    # -- results --------------------------------------------------------------------------------
    def parse(self, generated: Sequence[int] | Any) -> list[int]:
        """Item indices (0-based) in the order the output names them.

        Reads as far as the output stays valid; an identifier cut off by the token limit
        is left out, so the result may be partial (the host's validation appends the
        rest). EOS and anything after it are ignored.
        """
        toks = as_token_list(generated)
        st = self._start()
        best: tuple[int, ...] = ()
        for tok in toks:
            nxt = self._step(st, tok) if st is not FINISHED else FINISHED
            if nxt is FINISHED:
                return list(self._complete_order(st))
            if nxt is None:
                break
            st = nxt
        if st is not FINISHED:
            best = self._longest_order(st)
        return list(best)

    def _complete_order(self, state: Any) -> tuple[int, ...]:
        """Order of a parse that may be closed now (all ``n`` ids emitted)."""
        for cfg in sorted(state, key=lambda c: c[2]):
            phase, used, order, node, _ = cfg
            if phase == _AFTER and used == self.full_mask:
                return tuple(order)
            if (
                phase == _ID
                and node.ends is not None
                and (used | (1 << node.ends)) == self.full_mask
            ):
                return (*order, node.ends)
        return self._longest_order(state)

    def _longest_order(self, state: Any) -> tuple[int, ...]:
        best: tuple[int, ...] = ()
        for cfg in sorted(state, key=lambda c: c[2]):
            phase, used, order, node, _ = cfg
            cand = tuple(order)
            complete = phase == _ID and node is not None and node.ends is not None
            if complete and not (used >> node.ends) & 1:
                # a complete identifier that the token limit cut off before its separator
                cand = (*cand, node.ends)
            if len(cand) > len(best):
                best = cand
        return best

    def max_tokens(self) -> int:
        """Longest possible output in tokens, EOS included (a ``max_new_tokens`` bound)."""
        if self.n == 0:
            return 1
        lens = sorted((len(s) for s in self.continued), reverse=True)
        return (
            self.first.max_depth + sum(lens[: self.n - 1]) + len(self.separator) * (self.n - 1) + 1
        )


def _distinct_trie(seqs: list[tuple[int, ...]], what: str) -> TokenTrie:
    trie = TokenTrie()
    for i, s in enumerate(seqs):
        if not s:
            raise ConfigError(
                f"{what}: identifier #{i} has no tokens; give every item a non-empty identifier "
                "(an empty one cannot be told apart from the separator)"
            )
        if trie.add(s) != i:
            raise ConfigError(
                f"{what}: identifier #{i} has the same tokens as an earlier one ({list(s)}); "
                "use distinct identifiers (e.g. a different template or numbering)"
            )
    return trie


__all__ = [
    "FINISHED",
    "PermutationDecoder",
    "PrefixDecoder",
    "PrefixTrieDecoder",
    "as_token_list",
    "suffix_tokens",
]
