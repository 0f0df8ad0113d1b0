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
- :func:`awrs_generate`: adaptive weighted rejection sampling (Lipkin et al., 2025):
  sample from the unconstrained distribution, check the constraint on the sampled token
  only, on rejection remove it and resample, and fall back to the full mask after a few
  rejections; each sequence carries an unbiased estimate of its importance weight.

torch is imported inside the functions: ``relevo.decoding`` itself stays torch-free.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

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
    """

    def __init__(
        self, decoder: Any, *, prompt_length: int | None = None, num_beams: int = 1
    ) -> None:
        if num_beams < 1:
            raise ValueError(f"num_beams must be >= 1, got {num_beams}")
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
) -> list[Hypothesis]:
    """Constrained Diverse Beam Search for one prompt.

    The ``num_beams`` beams are split into ``num_groups`` groups of equal size. Groups
    advance one after another at each step; a group's candidate scores are its
    log-probabilities minus ``diversity_penalty`` times the number of earlier groups
    that picked the same token at this step (Hamming diversity). Every group applies the
    decoder's mask, so every hypothesis is an allowed sequence.

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

    Returns:
        Up to ``num_beams`` hypotheses, best score first, distinct token sequences.
    """
    import torch

    if num_groups < 1 or num_beams < num_groups or num_beams % num_groups:
        raise ValueError(
            f"num_beams ({num_beams}) must be a positive multiple of num_groups ({num_groups})"
        )
    if max_new_tokens is None:
        max_new_tokens = int(getattr(decoder, "max_tokens", lambda: 64)())
    group_size = num_beams // num_groups
    device = _model_device(model)
    ids = torch.as_tensor(
        as_token_list(input_ids) if not hasattr(input_ids, "shape") else input_ids
    )
    ids = ids.reshape(1, -1).to(device)
    mask = (
        torch.ones_like(ids)
        if attention_mask is None
        else torch.as_tensor(attention_mask).reshape(1, -1).to(device)
    )
    eos = set(decoder.eos_token_ids)

    # beams[g] = list of (tokens, logprob); row of each beam in the model batch = its position in `flat`
    beams: list[list[tuple[tuple[int, ...], float]]] = [[((), 0.0)] for _ in range(num_groups)]
    finished: dict[tuple[int, ...], Hypothesis] = {}

    def norm(lp: float, n: int) -> float:
        return lp / (max(n, 1) ** length_penalty)

    with torch.inference_mode():
        out = model(input_ids=ids, attention_mask=mask, use_cache=True)
        past = out.past_key_values
        logits = out.logits[:, -1, :].float()
        rows_of = [[0] for _ in range(num_groups)]  # every group starts from the prompt row
        for _step in range(max_new_tokens):
            logp = torch.log_softmax(logits, dim=-1)
            vocab = logp.shape[-1]
            picked = torch.zeros(vocab, device=logp.device)
            new_beams: list[list[tuple[tuple[int, ...], float]]] = []
            src_rows: list[int] = []
            for g in range(num_groups):
                cands: list[tuple[float, float, tuple[int, ...], int]] = []
                for (toks, lp), row in zip(beams[g], rows_of[g], strict=True):
                    masked = logp[row] + _mask_row(decoder, toks, vocab, logp.device)
                    pen = masked - diversity_penalty * picked
                    k = min(2 * group_size, int(torch.isfinite(masked).sum().item()))
                    if k == 0:
                        continue
                    top = torch.topk(pen, k)
                    for sel, tok in zip(top.values.tolist(), top.indices.tolist(), strict=True):
                        cands.append((lp + sel, lp + float(logp[row, tok]), (*toks, tok), row))
                cands.sort(key=lambda c: -c[0])
                group_new: list[tuple[tuple[int, ...], float]] = []
                chosen: list[int] = []
                for _sel, lp_new, toks_new, row in cands:
                    if len(group_new) >= group_size:
                        break
                    if toks_new in finished or any(toks_new == b[0] for b in group_new):
                        continue
                    chosen.append(toks_new[-1])
                    if toks_new[-1] in eos or decoder.is_finished(toks_new):
                        finished[toks_new] = Hypothesis(
                            list(toks_new), lp_new, norm(lp_new, len(toks_new)), g
                        )
                        continue
                    group_new.append((toks_new, lp_new))
                    src_rows.append(row)
                new_beams.append(group_new)
                for tok in chosen:  # later groups are penalised for this group's tokens
                    picked[tok] += 1
            beams = new_beams
            if not src_rows:
                break
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
            positions = (mask.sum(dim=1, keepdim=True) - 1).long()
            out = model(
                input_ids=step_ids,
                attention_mask=mask,
                past_key_values=past,
                position_ids=positions,
                use_cache=True,
            )
            past = out.past_key_values
            logits = out.logits[:, -1, :].float()
            offset = 0
            rows_of = []
            for grp in beams:
                rows_of.append(list(range(offset, offset + len(grp))))
                offset += len(grp)
    for g, grp in enumerate(beams):  # cut off by the step limit
        for toks, lp in grp:
            if toks not in finished:
                finished[toks] = Hypothesis(list(toks), lp, norm(lp, len(toks)), g, finished=False)
    ranked = sorted(finished.values(), key=lambda h: (not h.finished, -h.score))
    return ranked[:num_beams]


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
    """
    import torch

    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if max_new_tokens is None:
        max_new_tokens = int(getattr(decoder, "max_tokens", lambda: 64)())
    device = _model_device(model)
    ids = torch.as_tensor(
        as_token_list(input_ids) if not hasattr(input_ids, "shape") else input_ids
    )
    ids = ids.reshape(1, -1).to(device).expand(num_samples, -1).contiguous()
    eos = decoder.eos_token_ids
    pad = eos[0] if eos else 0
    seqs: list[list[int]] = [[] for _ in range(num_samples)]
    log_w = [0.0] * num_samples
    rej = [0] * num_samples
    checks = [0] * num_samples
    falls = [0] * num_samples
    done = [False] * num_samples

    def draw(p: Any) -> int:
        return int(torch.multinomial(p, 1, generator=generator).item())

    with torch.inference_mode():
        out = model(input_ids=ids, use_cache=True)
        past = out.past_key_values
        for _step in range(max_new_tokens):
            probs = torch.softmax(out.logits[:, -1, :].float() / temperature, dim=-1).cpu()
            next_toks: list[int] = []
            for s in range(num_samples):
                if done[s]:
                    next_toks.append(pad)
                    continue
                p = probs[s].clone()
                gen = seqs[s]
                tok: int | None = None
                rejected = 0.0
                for _ in range(max_rejections):
                    if float(p.sum()) <= 0:
                        break
                    cand = draw(p)
                    checks[s] += 1
                    if decoder.accepts(gen, cand):
                        tok = cand
                        break
                    rej[s] += 1
                    rejected += float(probs[s, cand])
                    p[cand] = 0.0
                if tok is not None:
                    if weight_draws:
                        m = max(0.0, 1.0 - rejected)
                        hits = 0
                        if m > 0:
                            for _ in range(weight_draws):
                                y = draw(p)
                                checks[s] += 1
                                hits += decoder.accepts(gen, y)
                        z = m * hits / weight_draws
                        log_w[s] += math.log(z) if z > 0 else -math.inf
                else:
                    falls[s] += 1
                    allowed = [t for t in decoder.allowed_next(gen) if 0 <= t < probs.shape[1]]
                    if not allowed:
                        done[s] = True
                        next_toks.append(pad)
                        continue
                    sub = probs[s, allowed]
                    z = float(sub.sum())
                    if z <= 0:  # allowed tokens underflowed: pick among them uniformly
                        sub = torch.ones(len(allowed))
                    tok = allowed[draw(sub / sub.sum())]
                    if weight_draws:
                        log_w[s] += math.log(z) if z > 0 else -math.inf
                gen.append(tok)
                if tok in eos or decoder.is_finished(gen):
                    done[s] = True
                next_toks.append(tok)
            if all(done):
                break
            step = torch.tensor(next_toks, device=device).reshape(-1, 1)
            out = model(input_ids=step, past_key_values=past, use_cache=True)
            past = out.past_key_values
    return AWRSResult(seqs, log_w, rej, checks, falls, [decoder.is_finished(s) for s in seqs])


__all__ = [
    "AWRSResult",
    "ConstrainedLogitsProcessor",
    "Hypothesis",
    "awrs_generate",
    "diverse_beam_search",
]
