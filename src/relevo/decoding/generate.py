"""Generation routines over a Hugging Face causal LM that honour a constrained decoder.

- :class:`ConstrainedLogitsProcessor`: masks disallowed tokens to ``-inf``; pass it in
  ``model.generate(logits_processor=[...])`` (greedy, sampling or beam search).
- :func:`diverse_beam_search`: Diverse Beam Search (Vijayakumar et al., 2016) with the
  Hamming diversity penalty, constrained at every step. Transformers 5 moved
  ``num_beam_groups`` / ``diversity_penalty`` out of the library (into a Hub
  ``custom_generate`` repository that needs the network and ``trust_remote_code``), so
  relevo carries this small implementation. With transformers < 4.56 the built-in one
  also works: ``model.generate(..., num_beams=8, num_beam_groups=4,
  diversity_penalty=0.5, prefix_allowed_tokens_fn=decoder.prefix_allowed_tokens_fn(L))``.
  :func:`beam_search_batch` runs it for several prompts with one model call per step,
  and its ``top_k`` stops a search once the best ``top_k`` outputs are settled (exact).
- :func:`awrs_generate`: adaptive weighted rejection sampling (Lipkin et al., 2025):
  sample from the unconstrained distribution, check the constraint on the sampled token
  only, on rejection remove it and resample, and fall back to the full mask after a few
  rejections; each sequence carries an unbiased estimate of its importance weight.

torch is imported inside the functions: ``relevo.decoding`` itself stays torch-free.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..engine.errors import ConfigError
from .constraints import PrefixDecoder, as_token_list


class ConstrainedLogitsProcessor:
    """A ``transformers`` logits processor that keeps only the decoder's allowed tokens.

    Disallowed tokens get ``-inf``; allowed ones keep their score. Works with any
    :class:`~relevo.engine.components.ConstrainedDecoder` (only ``allowed_tokens`` is used)
    and with beam search (rows ``b * num_beams ... b * num_beams + num_beams - 1``
    belong to batch item ``b``, as in Hugging Face).

    Args:
        decoder: the constraint.
        prompt_length: length of the (left-padded) prompt in each row; the decoder sees
            only the generated tokens. ``None`` hands whole rows to ``allowed_tokens``
            (the decoder's own ``prompt_length`` then applies).
        num_beams: beams per batch item.

    Raises:
        ConfigError: ``num_beams`` is below 1.
    """

    def __init__(
        self, decoder: Any, *, prompt_length: int | None = None, num_beams: int = 1
    ) -> None:
        if num_beams < 1:
            raise ConfigError(
                f"ConstrainedLogitsProcessor: num_beams must be >= 1, got {num_beams}; "
                "pass the num_beams given to model.generate (1 without beam search)"
            )
        self.decoder = decoder
        self.prompt_length = prompt_length
        self.num_beams = num_beams

    def allowed(self, batch_id: int, row: Any) -> list[int]:
        if self.prompt_length is not None and isinstance(self.decoder, PrefixDecoder):
            return self.decoder.allowed_next(as_token_list(row)[self.prompt_length :])
        if self.prompt_length is not None:
            return list(
                self.decoder.allowed_tokens(batch_id, as_token_list(row)[self.prompt_length :])
            )
        return list(self.decoder.allowed_tokens(batch_id, row))

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        vocab = scores.shape[-1]
        rows: list[int] = []
        cols: list[int] = []
        ids_cpu = input_ids.detach().cpu()
        for r in range(ids_cpu.shape[0]):
            for t in self.allowed(r // self.num_beams, ids_cpu[r]):
                if 0 <= t < vocab:
                    rows.append(r)
                    cols.append(t)
        mask = torch.full_like(scores, -math.inf)
        if rows:
            mask[
                torch.tensor(rows, device=scores.device), torch.tensor(cols, device=scores.device)
            ] = 0.0
        return scores + mask


def _mask_row(decoder: PrefixDecoder, generated: Sequence[int], vocab: int, device: Any) -> Any:
    import torch

    allowed = [t for t in decoder.allowed_next(generated) if 0 <= t < vocab]
    mask = torch.full((vocab,), -math.inf, device=device)
    if allowed:
        mask[torch.tensor(allowed, device=device)] = 0.0
    return mask


def _reorder(past: Any, index: Any) -> Any:
    if past is None:
        return None
    if hasattr(past, "reorder_cache"):
        past.reorder_cache(index)
        return past
    # legacy tuple caches: ((k, v), ...) with batch first
    return tuple(tuple(t.index_select(0, index.to(t.device)) for t in layer) for layer in past)


def _model_device(model: Any) -> Any:
    dev = getattr(model, "device", None)
    if dev is not None:
        return dev
    return next(model.parameters()).device


def _step_limit(decoder: PrefixDecoder, max_new_tokens: int | None) -> int:
    if max_new_tokens is not None:
        return max_new_tokens
    # decoders without a length bound (custom ones) still need some limit
    return int(getattr(decoder, "max_tokens", lambda: 64)())


def _prompt_row(input_ids: Any, device: Any) -> Any:
    """The prompt as a ``(1, L)`` tensor on ``device``, from a tensor or a list of ids."""
    import torch

    ids = torch.as_tensor(
        as_token_list(input_ids) if not hasattr(input_ids, "shape") else input_ids
    )
    return ids.reshape(1, -1).to(device)


def _log(z: float) -> float:
    return math.log(z) if z > 0 else -math.inf


@dataclass
class Hypothesis:
    """One finished (or cut-off) output of :func:`diverse_beam_search`.

    Attributes:
        tokens: generated token ids (EOS included when the output was closed).
        logprob: sum of the model's log-probabilities of those tokens, after masking.
        score: ``logprob / len(tokens) ** length_penalty`` (what the beams are ranked by).
        group: the beam group that found it.
        finished: whether EOS closed it (False: cut off by ``max_new_tokens``).
    """

    tokens: list[int]
    logprob: float
    score: float
    group: int
    finished: bool = True


_Beam = tuple[tuple[int, ...], float]  # (generated tokens, log-probability)
# (diversity-penalised score, log-probability, tokens, model row it extends)
_Candidate = tuple[float, float, tuple[int, ...], int]


def _check_groups(num_beams: int, num_groups: int) -> None:
    if num_groups < 1 or num_beams < num_groups or num_beams % num_groups:
        raise ConfigError(
            f"diverse_beam_search: num_beams ({num_beams}) must be a positive multiple of "
            f"num_groups ({num_groups}); pass num_groups >= 1 and "
            "num_beams = num_groups * beams_per_group"
        )


def _prompt_batch(input_ids: Any, attention_mask: Any, device: Any) -> tuple[Any, Any]:
    import torch

    ids = _prompt_row(input_ids, device)
    if attention_mask is None:
        return ids, torch.ones_like(ids)
    return ids, torch.as_tensor(attention_mask).reshape(1, -1).to(device)


class _DiverseBeams:
    """Scoring and selection of :func:`diverse_beam_search`; collects closed outputs.

    ``finished`` maps token sequences to hypotheses; a sequence found twice (by two
    groups or two steps) is kept once, which keeps the returned outputs distinct.
    """

    def __init__(
        self,
        decoder: PrefixDecoder,
        group_size: int,
        diversity_penalty: float,
        length_penalty: float,
        *,
        top_k: int | None = None,
    ) -> None:
        self.decoder = decoder
        self.top_k = top_k
        self.bar = -math.inf  # log-probability a beam must keep to reach the top_k
        self.closed_lps: list[float] = []  # min-heap of the best top_k closed log-probs
        self.group_size = group_size
        self.diversity_penalty = diversity_penalty
        self.length_penalty = length_penalty
        self.eos = set(decoder.eos_token_ids)
        self.finished: dict[tuple[int, ...], Hypothesis] = {}

    def hypothesis(
        self, tokens: tuple[int, ...], lp: float, group: int, *, closed: bool
    ) -> Hypothesis:
        score = lp / (max(len(tokens), 1) ** self.length_penalty)
        return Hypothesis(list(tokens), lp, score, group, finished=closed)

    def candidates(
        self, logp: Any, beams: list[_Beam], rows: list[int], picked: Any
    ) -> list[_Candidate]:
        """A group's allowed extensions, best penalised score first."""
        import torch

        vocab = logp.shape[-1]
        cands: list[_Candidate] = []
        for (toks, lp), row in zip(beams, rows, strict=True):
            masked = logp[row] + _mask_row(self.decoder, toks, vocab, logp.device)
            pen = masked - self.diversity_penalty * picked
            # twice the group size leaves room for candidates dropped as duplicates or closed
            k = min(2 * self.group_size, int(torch.isfinite(masked).sum().item()))
            if k == 0:
                continue
            top = torch.topk(pen, k)
            for sel, tok in zip(top.values.tolist(), top.indices.tolist(), strict=True):
                cands.append((lp + sel, lp + float(logp[row, tok]), (*toks, tok), row))
        cands.sort(key=lambda c: -c[0])
        return cands

    def select(
        self, cands: list[_Candidate], group: int
    ) -> tuple[list[_Beam], list[int], list[int]]:
        """The group's next beams, the tokens it picked and the rows its beams extend.

        Closed candidates count against the group's size and go to ``finished``.
        """
        kept: list[_Beam] = []
        chosen: list[int] = []
        rows: list[int] = []
        for _sel, lp, toks, row in cands:
            if len(kept) >= self.group_size:
                break
            if toks in self.finished or any(toks == b[0] for b in kept):
                continue
            chosen.append(toks[-1])
            if lp < self.bar:  # cannot reach the top_k any more (exact: see top_k)
                continue
            if toks[-1] in self.eos or self.decoder.is_finished(toks):
                self.finished[toks] = self.hypothesis(toks, lp, group, closed=True)
                self._count_closed(lp)
                continue
            kept.append((toks, lp))
            rows.append(row)
        return kept, chosen, rows

    def _count_closed(self, lp: float) -> None:
        if self.top_k is None:
            return
        if len(self.closed_lps) < self.top_k:
            heapq.heappush(self.closed_lps, lp)
        elif lp > self.closed_lps[0]:
            heapq.heapreplace(self.closed_lps, lp)
        if len(self.closed_lps) == self.top_k:
            self.bar = self.closed_lps[0]

    def step(
        self, logp: Any, beams: list[list[_Beam]], rows_of: list[list[int]]
    ) -> tuple[list[list[_Beam]], list[int]]:
        """Advance every group by one token; returns the new beams and their source rows.

        ``logp`` holds the next-token log-probabilities of the whole model batch; this
        search reads only the rows in ``rows_of``.
        """
        import torch

        picked = torch.zeros(logp.shape[-1], device=logp.device)
        new_beams: list[list[_Beam]] = []
        src_rows: list[int] = []
        for g, (group_beams, rows) in enumerate(zip(beams, rows_of, strict=True)):
            kept, chosen, kept_rows = self.select(
                self.candidates(logp, group_beams, rows, picked), g
            )
            new_beams.append(kept)
            src_rows.extend(kept_rows)
            for tok in chosen:  # later groups are penalised for this group's tokens
                picked[tok] += 1
        return new_beams, src_rows

    def ranked(self, beams: list[list[_Beam]], limit: int) -> list[Hypothesis]:
        """Finished outputs, then the beams the step limit cut off, best score first."""
        for g, grp in enumerate(beams):
            for toks, lp in grp:
                if toks not in self.finished:
                    self.finished[toks] = self.hypothesis(toks, lp, g, closed=False)
        ranked = sorted(self.finished.values(), key=lambda h: (not h.finished, -h.score))
        return ranked[:limit]


def _feed_beams(
    model: Any, past: Any, mask: Any, beams: list[list[_Beam]], src_rows: list[int], device: Any
) -> tuple[Any, Any, Any]:
    """Run the beams' last tokens on the cache rows they extend.

    Returns the new cache, attention mask and next-token logits (one row per beam).
    """
    import torch

    index = torch.tensor(src_rows, device=device)
    past = _reorder(past, index)
    mask = torch.cat(
        [
            mask.index_select(0, index),
            torch.ones((len(src_rows), 1), dtype=mask.dtype, device=device),
        ],
        dim=1,
    )
    step_ids = torch.tensor([[b[0][-1]] for grp in beams for b in grp], device=device)
    # explicit positions: a padded prompt mask would otherwise shift them
    positions = (mask.sum(dim=1, keepdim=True) - 1).long()
    out = model(
        input_ids=step_ids,
        attention_mask=mask,
        past_key_values=past,
        position_ids=positions,
        use_cache=True,
    )
    return out.past_key_values, mask, out.logits[:, -1, :].float()


def diverse_beam_search(
    model: Any,
    input_ids: Any,
    decoder: PrefixDecoder,
    *,
    num_beams: int = 4,
    num_groups: int = 2,
    diversity_penalty: float = 0.5,
    max_new_tokens: int | None = None,
    length_penalty: float = 1.0,
    attention_mask: Any = None,
    top_k: int | None = None,
) -> list[Hypothesis]:
    """Constrained Diverse Beam Search for one prompt.

    The ``num_beams`` beams are split into ``num_groups`` groups of equal size. Groups
    advance one after another at each step; a group's candidate scores are its
    log-probabilities minus ``diversity_penalty`` times the number of earlier groups
    that picked the same token at this step (Hamming diversity). Every group applies the
    decoder's mask, so every hypothesis is an allowed sequence. :func:`beam_search_batch`
    runs the same search for several prompts at once.

    Args:
        model: a Hugging Face causal LM (``model(input_ids=..., past_key_values=...)``).
        input_ids: the prompt, shape ``(1, L)`` or a list of ids.
        decoder: the constraint; its ``prompt_length`` is ignored (the routine tracks
            the generated part itself).
        num_beams: total beams; must be divisible by ``num_groups``.
        num_groups: number of groups (1 = ordinary constrained beam search).
        diversity_penalty: strength of the Hamming penalty.
        max_new_tokens: step limit; defaults to ``decoder.max_tokens()`` when it has one.
        length_penalty: exponent of the length normalisation of finished scores.
        attention_mask: optional mask for the prompt.
        top_k: only the best ``top_k`` closed outputs are wanted (ordinary beam search
            ranked by log-probability: ``num_groups=1``, ``length_penalty=0``). Once
            ``top_k`` outputs are closed, a beam whose log-probability is already below
            the ``top_k``-th best closed one is dropped (more tokens only lower it), and
            the search ends when no beam is left. The closed outputs that beat that bar
            are exactly those of the full search, so the best ``top_k`` are the same,
            found in fewer steps on smaller batches.

    Returns:
        Up to ``num_beams`` hypotheses, best score first, distinct token sequences.

    Raises:
        ConfigError: ``num_beams`` is not a positive multiple of ``num_groups``, or
            ``top_k`` is given with ``num_groups > 1`` or ``length_penalty != 0``.
    """
    return beam_search_batch(
        model,
        [input_ids],
        [decoder],
        num_beams=num_beams,
        num_groups=num_groups,
        diversity_penalty=diversity_penalty,
        max_new_tokens=max_new_tokens,
        length_penalty=length_penalty,
        attention_masks=[attention_mask],
        top_k=top_k,
    )[0]


def _left_padded(
    prompts: Sequence[Any], masks: Sequence[Any], pad_token_id: int, device: Any
) -> tuple[Any, Any]:
    """The prompts as one left-padded ``(Q, L)`` batch and its attention mask."""
    import torch

    rows = [_prompt_batch(p, m, device) for p, m in zip(prompts, masks, strict=True)]
    width = max(ids.shape[1] for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_token_id, dtype=rows[0][0].dtype, device=device)
    mask = torch.zeros((len(rows), width), dtype=rows[0][1].dtype, device=device)
    for q, (row_ids, row_mask) in enumerate(rows):
        n = row_ids.shape[1]
        ids[q, width - n :], mask[q, width - n :] = row_ids[0], row_mask[0]
    return ids, mask


def beam_search_batch(
    model: Any,
    prompts: Sequence[Any],
    decoders: Sequence[PrefixDecoder],
    *,
    num_beams: int = 4,
    num_groups: int = 1,
    diversity_penalty: float = 0.0,
    max_new_tokens: int | None = None,
    length_penalty: float = 1.0,
    attention_masks: Sequence[Any] | None = None,
    top_k: int | None = None,
    pad_token_id: int = 0,
) -> list[list[Hypothesis]]:
    """:func:`diverse_beam_search` for several prompts at once, one model call per step.

    Each prompt keeps its own beams, decoder and step limit; the beams of every prompt
    still open go through the model together (prompts left-padded, positions from the
    attention mask), so a step costs one forward pass instead of one per prompt: a gain
    where a step's fixed cost dominates (a GPU, narrow beams), none where the forward
    pass is already compute-bound (SmolLM2 on a CPU at ~35 rows a step). The outputs
    are those of one :func:`diverse_beam_search` per prompt (up to float rounding of
    the batched forward pass).

    Args:
        model: a Hugging Face causal LM.
        prompts: one prompt per search, each ``(1, L)`` or a list of ids.
        decoders: the constraint of each prompt (the same object may repeat).
        attention_masks: optional mask per prompt (``None`` entries: all ones).
        pad_token_id: the token left padding uses (masked out; any id works).
        num_beams, num_groups, diversity_penalty, max_new_tokens, length_penalty, top_k:
            as in :func:`diverse_beam_search`, for every prompt.

    Returns:
        Per prompt, up to ``num_beams`` hypotheses, best score first.

    Raises:
        ConfigError: as :func:`diverse_beam_search`, or ``decoders`` / ``attention_masks``
            do not match ``prompts`` in length.
    """
    import torch

    _check_groups(num_beams, num_groups)
    if top_k is not None and (num_groups != 1 or length_penalty != 0 or top_k < 1):
        raise ConfigError(
            f"diverse_beam_search: top_k={top_k} prunes exactly only for ordinary beam "
            "search ranked by log-probability; pass top_k >= 1 with num_groups=1 and "
            "length_penalty=0, or leave top_k unset."
        )
    masks = list(attention_masks) if attention_masks is not None else [None] * len(prompts)
    if len(decoders) != len(prompts) or len(masks) != len(prompts):
        raise ConfigError(
            f"beam_search_batch: {len(prompts)} prompts need as many decoders (got "
            f"{len(decoders)}) and attention masks (got {len(masks)})."
        )
    if not prompts:
        return []
    limits = [_step_limit(d, max_new_tokens) for d in decoders]
    device = _model_device(model)
    ids, mask = _left_padded(prompts, masks, pad_token_id, device)
    searches = [
        _DiverseBeams(d, num_beams // num_groups, diversity_penalty, length_penalty, top_k=top_k)
        for d in decoders
    ]
    beams: list[list[list[_Beam]]] = [[[((), 0.0)] for _ in range(num_groups)] for _ in prompts]
    # every group of prompt q starts from the prompt's row q
    rows_of: list[list[list[int]]] = [[[q] for _ in range(num_groups)] for q in range(len(prompts))]
    open_ = [True] * len(prompts)
    with torch.inference_mode():
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0).long()
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
        past = out.past_key_values
        logits = out.logits[:, -1, :].float()
        for step in range(max(limits)):
            logp = torch.log_softmax(logits, dim=-1)
            fed: list[list[_Beam]] = []
            src_rows: list[int] = []
            stepped: list[int] = []
            for q, search in enumerate(searches):
                if not open_[q]:
                    continue
                if step >= limits[q]:  # this prompt's step limit: its beams stay as cut off
                    open_[q] = False
                    continue
                beams[q], rows = search.step(logp, beams[q], rows_of[q])
                if not rows:
                    open_[q] = False
                    continue
                fed.extend(beams[q])
                src_rows.extend(rows)
                stepped.append(q)
            if not src_rows:
                break
            past, mask, logits = _feed_beams(model, past, mask, fed, src_rows, device)
            offset = 0
            for q in stepped:  # the new batch lays prompts out in order, groups in order
                rows_of[q] = []
                for grp in beams[q]:
                    rows_of[q].append(list(range(offset, offset + len(grp))))
                    offset += len(grp)
    return [search.ranked(b, num_beams) for search, b in zip(searches, beams, strict=True)]


@dataclass
class AWRSResult:
    """Output of :func:`awrs_generate`, one entry per sample.

    Attributes:
        sequences: generated token ids per sample (EOS included when closed).
        log_weights: log of the importance weight estimate per sample: the sum over
            steps of ``log Ẑ_t``, where ``Ẑ_t`` is an unbiased estimate of the
            probability mass the constraint allows at step ``t`` (``-inf`` when an
            estimate was 0). Resample or reweight with them (sequential Monte Carlo)
            to target the globally constrained distribution.
        rejections: constraint checks that failed, per sample.
        checks: constraint checks made, per sample (the cost AWRS saves over masking).
        fallbacks: steps that fell back to the full mask, per sample.
        finished: whether each sample closed with EOS.
    """

    sequences: list[list[int]]
    log_weights: list[float]
    rejections: list[int] = field(default_factory=list)
    checks: list[int] = field(default_factory=list)
    fallbacks: list[int] = field(default_factory=list)
    finished: list[bool] = field(default_factory=list)


class _AWRSSampler:
    """The per-step token choice of :func:`awrs_generate`; its counters fill ``result``.

    Every draw goes through one ``generator`` in a fixed order (sample by sample, the
    rejection loop before the weight draws), so a seeded run is reproducible.
    """

    def __init__(
        self,
        decoder: PrefixDecoder,
        num_samples: int,
        *,
        max_rejections: int,
        weight_draws: int,
        generator: Any,
    ) -> None:
        self.decoder = decoder
        self.max_rejections = max_rejections
        self.weight_draws = weight_draws
        self.generator = generator
        self.eos = decoder.eos_token_ids
        # finished rows still need an input token for the batched forward pass
        self.pad = self.eos[0] if self.eos else 0
        n = num_samples
        self.result = AWRSResult([[] for _ in range(n)], [0.0] * n, [0] * n, [0] * n, [0] * n)
        self.done = [False] * n

    def draw(self, p: Any) -> int:
        import torch

        return int(torch.multinomial(p, 1, generator=self.generator).item())

    def step(self, probs: Any) -> list[int]:
        """Next token of every sample (the pad token for finished ones)."""
        return [
            self.pad if self.done[s] else self._next_token(s, probs[s])
            for s in range(len(self.done))
        ]

    def finish(self) -> AWRSResult:
        self.result.finished = [self.decoder.is_finished(s) for s in self.result.sequences]
        return self.result

    def _next_token(self, s: int, probs_row: Any) -> int:
        gen = self.result.sequences[s]
        p = probs_row.clone()
        tok, rejected = self._rejection_sample(s, gen, p, probs_row)
        if tok is not None:
            if self.weight_draws:
                self.result.log_weights[s] += self._estimate_log_z(s, gen, p, rejected)
        else:
            self.result.fallbacks[s] += 1
            tok, z = self._mask_fallback(gen, probs_row)
            if tok is None:  # nothing allowed: the sample stops where it is
                self.done[s] = True
                return self.pad
            if self.weight_draws:
                self.result.log_weights[s] += _log(z)
        gen.append(tok)
        if tok in self.eos or self.decoder.is_finished(gen):
            self.done[s] = True
        return tok

    def _rejection_sample(
        self, s: int, gen: list[int], p: Any, probs_row: Any
    ) -> tuple[int | None, float]:
        """Draw from ``p`` until the decoder accepts a token or ``max_rejections`` are spent.

        Rejected tokens are zeroed in ``p`` in place, so later draws (and the weight
        estimate) sample without them. Returns the accepted token (``None`` when none
        was) and the probability mass of the rejected ones.
        """
        rejected = 0.0
        for _ in range(self.max_rejections):
            if float(p.sum()) <= 0:
                break
            cand = self.draw(p)
            self.result.checks[s] += 1
            if self.decoder.accepts(gen, cand):
                return cand, rejected
            self.result.rejections[s] += 1
            rejected += float(probs_row[cand])
            p[cand] = 0.0
        return None, rejected

    def _estimate_log_z(self, s: int, gen: list[int], p: Any, rejected: float) -> float:
        """``log Ẑ_t`` with ``Ẑ_t = M * mean(1[y allowed])``, ``y ~ p`` without the rejected."""
        m = max(0.0, 1.0 - rejected)
        hits = 0
        if m > 0:
            for _ in range(self.weight_draws):
                y = self.draw(p)
                self.result.checks[s] += 1
                hits += self.decoder.accepts(gen, y)
        return _log(m * hits / self.weight_draws)

    def _mask_fallback(self, gen: list[int], probs_row: Any) -> tuple[int | None, float]:
        """Draw from the full mask; returns the token (``None``: nothing allowed) and ``Z_t``."""
        import torch

        allowed = [t for t in self.decoder.allowed_next(gen) if 0 <= t < probs_row.shape[0]]
        if not allowed:
            return None, 0.0
        sub = probs_row[allowed]
        z = float(sub.sum())
        if z <= 0:  # allowed tokens underflowed: pick among them uniformly
            sub = torch.ones(len(allowed))
        return allowed[self.draw(sub / sub.sum())], z


def awrs_generate(
    model: Any,
    input_ids: Any,
    decoder: PrefixDecoder,
    *,
    num_samples: int = 1,
    max_new_tokens: int | None = None,
    temperature: float = 1.0,
    max_rejections: int = 8,
    weight_draws: int = 4,
    generator: Any = None,
) -> AWRSResult:
    """Adaptive weighted rejection sampling under a constraint, ``num_samples`` particles.

    Each step, per sample: draw a token from the model's (tempered) distribution ``p``;
    ask the decoder about *that token only* (``decoder.accepts``); on rejection zero
    its probability and draw again (sampling without replacement). After
    ``max_rejections`` rejections the full mask is computed once and the token is drawn
    from ``p`` restricted to the allowed set. Both paths draw exactly from ``p``
    conditioned on the constraint, so every sequence is valid.

    Weight: the locally constrained proposal differs from the globally constrained
    target by ``Z_t = p(allowed)`` per step. When the mask was computed ``Z_t`` is exact;
    otherwise, with ``R`` the rejected tokens and ``M = 1 - p(R)``, ``weight_draws`` extra
    tokens ``y`` are drawn from ``p`` without ``R`` and ``Ẑ_t = M * mean(1[y allowed])``,
    which is unbiased because ``P(y allowed) = Z_t / M`` (``R`` holds no allowed token).

    Args:
        model: a Hugging Face causal LM.
        input_ids: the prompt, shape ``(1, L)`` or a list of ids.
        decoder: the constraint (its ``prompt_length`` is ignored).
        num_samples: particles sampled in one batch.
        max_new_tokens: step limit; defaults to ``decoder.max_tokens()`` when it has one.
        temperature: softmax temperature (> 0).
        max_rejections: rejections per step before falling back to the mask.
        weight_draws: extra checks per step for the weight estimate (0: no weights,
            ``log_weights`` are then 0).
        generator: optional ``torch.Generator`` for reproducible draws.

    Returns:
        One sequence, log-weight and set of counters per sample.

    Raises:
        ConfigError: ``temperature`` is not positive.
    """
    import torch

    if temperature <= 0:
        raise ConfigError(
            f"awrs_generate: temperature must be > 0, got {temperature}; "
            "pass a positive value (1.0 samples from the model's own distribution)"
        )
    steps = _step_limit(decoder, max_new_tokens)
    device = _model_device(model)
    ids = _prompt_row(input_ids, device).expand(num_samples, -1).contiguous()
    sampler = _AWRSSampler(
        decoder,
        num_samples,
        max_rejections=max_rejections,
        weight_draws=weight_draws,
        generator=generator,
    )
    with torch.inference_mode():
        out = model(input_ids=ids, use_cache=True)
        past = out.past_key_values
        for _step in range(steps):
            probs = torch.softmax(out.logits[:, -1, :].float() / temperature, dim=-1).cpu()
            next_toks = sampler.step(probs)
            if all(sampler.done):
                break
            step = torch.tensor(next_toks, device=device).reshape(-1, 1)
            out = model(input_ids=step, past_key_values=past, use_cache=True)
            past = out.past_key_values
    return sampler.finish()


__all__ = [
    "AWRSResult",
    "ConstrainedLogitsProcessor",
    "Hypothesis",
    "awrs_generate",
    "diverse_beam_search",
]
