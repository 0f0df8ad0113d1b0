"""The AWRS part of ``bench_decode.py``: constraint checks per token, and a distribution check.

Two measurements of :func:`relevo.decoding.awrs_generate` over a
:class:`~relevo.decoding.CompactTrieDecoder`, each with a toy language model that behaves
like a Hugging Face causal LM (``model(input_ids=..., past_key_values=...)`` returning
``.logits`` and ``.past_key_values``) but costs no forward pass:

- :func:`check_ratio`: how many constraint evaluations AWRS makes per generated token,
  against full-vocabulary masking (which evaluates the constraint on all ``V`` tokens
  at every step), under a *random* LM (the constraint is unrelated to the model: almost
  no mass on allowed tokens) and *aligned* LMs (one allowed token along a live
  identifier is lifted above the model's top logit, as a model trained to emit those
  identifiers would do).
- :func:`distribution_check`: on a tiny trie, the exact locally and globally constrained
  distributions over identifiers (enumerated) against AWRS's unweighted samples and its
  importance-weighted estimate; total variation distances.

torch is imported inside the functions, like ``relevo.decoding.generate`` does.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

import _common as common
import numpy as np

#: Zipf exponent of the toy LM's next-token distribution (natural text is close to 1).
LM_ZIPF_S = 1.1
#: Aligned LMs: the favoured allowed token's logit is set to the top logit plus delta.
DELTAS = (0.0, 2.0, 4.0, 6.0)
#: The aligned LM whose ratio is the headline ``awrs_check_ratio``.
HEADLINE_DELTA = 6.0


class BigramLM:
    """A stand-in causal LM whose next-token logits depend on the last token only.

    ``row_logits(t)`` gives the logits after token ``t``. ``past_key_values`` carries
    the whole history, so ``favour(row, generated)`` (optional) can lift one token per
    row: its logit becomes ``max + delta``. ``allowed_mass`` (optional) records, per call
    and row, the probability the constraint allows (a diagnostic, not used by AWRS).
    """

    device = "cpu"

    def __init__(
        self,
        row_logits: Callable[[int], Any],
        *,
        prompt_length: int,
        favour: Callable[[int, list[int]], int | None] | None = None,
        delta: float = 0.0,
        allowed: Callable[[list[int]], list[int] | None] | None = None,
    ) -> None:
        self.row_logits = row_logits
        self.prompt_length = prompt_length
        self.favour = favour
        self.delta = delta
        self.allowed = allowed
        self.allowed_mass: list[float] = []

    def __call__(self, input_ids: Any, past_key_values: Any = None, **_: Any) -> Any:
        import torch

        hist = input_ids if past_key_values is None else torch.cat([past_key_values, input_ids], 1)
        rows = hist.tolist()
        logits = torch.stack([self.row_logits(r[-1]) for r in rows])
        for i, r in enumerate(rows):
            gen = r[self.prompt_length :]
            if self.favour is not None:
                tok = self.favour(i, gen)
                if tok is not None:
                    logits[i, tok] = logits[i].max() + self.delta
            if self.allowed is not None:
                ok = self.allowed(gen)
                if ok:
                    p = torch.softmax(logits[i], dim=-1)
                    self.allowed_mass.append(float(p[ok].sum()))
        return SimpleNamespace(logits=logits[:, None, :], past_key_values=hist)


def zipf_row_logits(vocab: int, seed: int, s: float = LM_ZIPF_S) -> Callable[[int], Any]:
    """Logits after token ``t``: Zipf(s) log-probabilities over a permutation seeded by ``t``.

    Every context has its own popular next tokens, unrelated to the identifiers (whose
    generator uses a different, hash-based mapping).
    """
    import torch

    logp = -s * torch.log(torch.arange(1, vocab + 1, dtype=torch.float32))

    def row(t: int) -> Any:
        g = torch.Generator().manual_seed(seed * 1_000_003 + int(t))
        return logp[torch.randperm(vocab, generator=g)]

    return row


def _live_state(decoder: Any, gen: list[int]) -> bool:
    from relevo.decoding.constraints import FINISHED

    st = decoder.state(gen)
    return st is not None and st is not FINISHED


def check_ratio(
    seqs: list[list[int]],
    vocab: int,
    *,
    end: int,
    samples: int = 64,
    prompts: int = 4,
    seed: int = 0,
    deltas: Sequence[float] = DELTAS,
    log: Callable[[str], None] = lambda _m: None,
) -> dict[str, Any]:
    """AWRS checks per token over a CompactTrie of ``seqs`` (each ends with ``end``).

    Runs ``prompts`` batches of ``samples`` particles (default ``max_rejections=8``,
    ``weight_draws=4``) for the random LM and for each aligned LM in ``deltas``.
    """
    import torch

    from relevo.decoding import CompactTrie, CompactTrieDecoder, awrs_generate

    trie = CompactTrie.build(seqs)
    decoder = CompactTrieDecoder(trie, eos_token_id=end)
    rng = np.random.default_rng(seed)
    row_logits = zipf_row_logits(vocab, seed)

    def allowed(gen: list[int]) -> list[int] | None:
        return decoder.allowed_next(gen) if _live_state(decoder, gen) else None

    out: dict[str, Any] = {
        "identifiers": len(seqs),
        "vocab": vocab,
        "samples": samples * prompts,
        "max_rejections": 8,
        "weight_draws": 4,
        "lm_zipf_s": LM_ZIPF_S,
        "runs": {},
    }
    configs: list[tuple[str, float | None]] = [("random", None)]
    configs += [(f"aligned_delta_{d:g}", d) for d in deltas]
    for name, delta in configs:
        totals = {"tokens": 0, "checks": 0, "rejections": 0, "fallbacks": 0, "finished": 0}
        masses: list[float] = []
        log_w: list[float] = []
        t0 = time.perf_counter()
        for p in range(prompts):
            targets = [seqs[i] for i in rng.integers(0, len(seqs), size=samples)]

            def favour(row: int, gen: list[int], targets: list[list[int]] = targets) -> int | None:
                target = targets[row]
                if len(gen) < len(target) and gen == target[: len(gen)]:
                    return target[len(gen)]
                ok = allowed(gen)  # off its target: some live identifier under this prefix
                return ok[hash(tuple(gen)) % len(ok)] if ok else None

            lm = BigramLM(
                row_logits,
                prompt_length=1,
                favour=None if delta is None else favour,
                delta=delta or 0.0,
                allowed=allowed,
            )
            res = awrs_generate(
                lm,
                [1 + p],
                decoder,
                num_samples=samples,
                generator=torch.Generator().manual_seed(seed * 100 + p),
            )
            totals["tokens"] += sum(len(s) for s in res.sequences)
            totals["checks"] += sum(res.checks)
            totals["rejections"] += sum(res.rejections)
            totals["fallbacks"] += sum(res.fallbacks)
            totals["finished"] += sum(res.finished)
            masses += lm.allowed_mass
            log_w += res.log_weights
        secs = time.perf_counter() - t0
        tok = totals["tokens"]
        run = {
            "delta": delta,
            **totals,
            "checks_per_token": totals["checks"] / tok,
            "fallbacks_per_token": totals["fallbacks"] / tok,
            "mean_allowed_mass": float(np.mean(masses)),
            "zero_weight_fraction": weight_stats(log_w)["zero_weight_fraction"],
            # full masking: V evaluations per token
            "ratio": vocab * tok / totals["checks"],
            # the same, with every fallback step charged the V evaluations of its mask
            "ratio_fallbacks_charged": (
                vocab * tok / (totals["checks"] + vocab * totals["fallbacks"])
            ),
            "seconds": secs,
        }
        out["runs"][name] = run
        log(
            f"awrs {name}: {run['checks_per_token']:.2f} checks/token, "
            f"{run['fallbacks_per_token']:.3f} fallbacks/token, allowed mass "
            f"{run['mean_allowed_mass']:.3f}, ratio {run['ratio']:.0f}x "
            f"({run['ratio_fallbacks_charged']:.1f}x with fallbacks charged), {secs:.1f}s"
        )
    return out


# -- exact distributions on a tiny case ----------------------------------------------------------
# equal lengths: otherwise the global target piles onto the shortest identifier
TINY_IDS = ([3, 4, 5], [3, 4, 6], [3, 7, 8], [9, 10, 11], [9, 12, 13], [14, 15, 16])
TINY_VOCAB = 20
TINY_END = 0
#: seed of the tiny bigram table: targets far apart (TV 0.37) and neither degenerate
TINY_LM_SEED = 2


def table_row_logits(vocab: int, seed: int, scale: float = 1.0) -> Callable[[int], Any]:
    """Logits after token ``t``: row ``t`` of a seeded Gaussian table (a bigram LM)."""
    import torch

    table = torch.randn(vocab, vocab, generator=torch.Generator().manual_seed(seed)) * scale

    def row(t: int) -> Any:
        return table[int(t)].clone()

    return row


def exact_distributions(
    row_logits: Callable[[int], Any], prompt: Sequence[int], decoder: Any, seqs: list[list[int]]
) -> tuple[dict[tuple[int, ...], float], dict[tuple[int, ...], float]]:
    """``(local, global)`` probabilities of each allowed sequence (EOS included).

    Local: the product of the LM's probabilities renormalised over the allowed tokens at
    every step (what unweighted AWRS samples). Global: the LM's sequence probability
    renormalised over the allowed sequences, ``p(s) / Z`` (the weighted target).
    """
    import torch

    local: dict[tuple[int, ...], float] = {}
    joint: dict[tuple[int, ...], float] = {}
    for s in seqs:
        lp_local = lp_joint = 0.0
        last = prompt[-1]
        for t in range(len(s)):
            logp = torch.log_softmax(row_logits(last), dim=-1)
            ok = decoder.allowed_next(s[:t])
            lp_joint += float(logp[s[t]])
            lp_local += float(logp[s[t]] - torch.logsumexp(logp[ok], dim=0))
            last = s[t]
        local[tuple(s)] = math.exp(lp_local)
        joint[tuple(s)] = math.exp(lp_joint)
    z = sum(joint.values())
    return local, {k: v / z for k, v in joint.items()}


def tv_distance(p: dict[Any, float], q: dict[Any, float]) -> float:
    """Total variation distance between two distributions given as dicts."""
    return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in set(p) | set(q))


def awrs_estimates(
    sequences: list[list[int]], log_weights: list[float]
) -> tuple[dict[tuple[int, ...], float], dict[tuple[int, ...], float]]:
    """``(sample frequencies, self-normalised weighted frequencies)`` of AWRS outputs.

    The weighted frequencies are the distribution that resampling by ``exp(log_weights)``
    draws from.
    """
    lw = np.asarray(log_weights, dtype=np.float64)
    w = np.exp(lw - lw.max())
    freq: dict[tuple[int, ...], float] = {}
    weighted: dict[tuple[int, ...], float] = {}
    for s, wi in zip(sequences, w, strict=True):
        key = tuple(s)
        freq[key] = freq.get(key, 0.0) + 1.0 / len(sequences)
        weighted[key] = weighted.get(key, 0.0) + float(wi / w.sum())
    return freq, weighted


def distribution_check(
    *, samples: int = 4000, max_rejections: int = 8, seed: int = 0
) -> dict[str, Any]:
    """TV distances of AWRS on :data:`TINY_IDS` (vocab :data:`TINY_VOCAB`), exact vs sampled.

    A small ``max_rejections`` sends most steps to the mask fallback (exact ``Z_t``);
    the default 8 leaves more steps to the sampled estimate ``Ẑ_t`` (noisier weights).
    """
    import torch

    from relevo.decoding import CompactTrie, CompactTrieDecoder, awrs_generate

    seqs = [[*s, TINY_END] for s in TINY_IDS]
    decoder = CompactTrieDecoder(CompactTrie.build(seqs), eos_token_id=TINY_END)
    row_logits = table_row_logits(TINY_VOCAB, TINY_LM_SEED)
    prompt = [1]
    local, target = exact_distributions(row_logits, prompt, decoder, seqs)
    t0 = time.perf_counter()
    res = awrs_generate(
        BigramLM(row_logits, prompt_length=len(prompt)),
        prompt,
        decoder,
        num_samples=samples,
        max_rejections=max_rejections,
        generator=torch.Generator().manual_seed(seed),
    )
    secs = time.perf_counter() - t0
    freq, weighted = awrs_estimates(res.sequences, res.log_weights)
    tokens = sum(len(s) for s in res.sequences)
    return {
        "identifiers": len(seqs),
        "vocab": TINY_VOCAB,
        "samples": samples,
        "max_rejections": max_rejections,
        "weight_draws": 4,
        "tv_unweighted_vs_local": tv_distance(freq, local),
        "tv_weighted_vs_global": tv_distance(weighted, target),
        # how far apart the two targets are: the check is only meaningful when this is large
        "tv_local_vs_global": tv_distance(local, target),
        "tv_unweighted_vs_global": tv_distance(freq, target),
        "fallbacks_per_token": sum(res.fallbacks) / tokens,
        "checks_per_token": sum(res.checks) / tokens,
        **weight_stats(res.log_weights),
        "seconds": secs,
    }


def weight_stats(log_weights: list[float]) -> dict[str, float]:
    """Effective sample size ``(sum w)^2 / sum w^2`` (as a fraction) and the zero weights."""
    lw = np.asarray(log_weights, dtype=np.float64)
    zero = float(np.mean(np.isneginf(lw)))
    if zero == 1.0:
        return {"ess_fraction": 0.0, "zero_weight_fraction": zero}
    w = np.exp(lw - lw.max())
    return {
        "ess_fraction": float(w.sum() ** 2 / (w**2).sum() / len(w)),
        "zero_weight_fraction": zero,
    }


def markdown(results: dict[str, Any], genlm_lines: list[str]) -> list[str]:
    """The AWRS sections of ``decode.md``; ``genlm_lines`` go after relevo's table."""
    a = results.get("awrs")
    if not a:
        return []
    head = results["headline"]
    lines = [
        "## Adaptive weighted rejection sampling: constraint checks per token",
        "",
        f"`awrs_generate` over a CompactTrie of {a['identifiers']:,} of the identifiers "
        f"(`CompactTrieDecoder`, `max_rejections={a['max_rejections']}`, "
        f"`weight_draws={a['weight_draws']}`), {a['samples']} samples per LM. Full masking "
        f"evaluates the constraint on all {a['vocab']:,} tokens per generated token; AWRS "
        "evaluates it on the sampled tokens (`checks`, weight draws included), and after "
        f"{a['max_rejections']} rejections falls back to one full mask. The toy LMs are bigram "
        f"models (next-token logits depend on the last token) with a Zipf({a['lm_zipf_s']}) "
        "distribution over a per-context random permutation of the vocabulary. *Random LM*: "
        "nothing else, so the constraint is unrelated to the model, as for an untrained "
        "model. *Aligned LM (delta)*: one allowed token along a live identifier (the "
        "sample's target, or some live identifier once it left it) gets the top logit + "
        "delta, as for a model trained to emit the identifiers. Allowed mass: the "
        "probability the constraint allows per step, mean over steps.",
        "",
        f"**Headline `awrs_check_ratio` = {head['awrs_check_ratio']}x: aligned LM, delta "
        f"{HEADLINE_DELTA:g}, fallbacks charged {a['vocab']:,} checks. Random LM: "
        f"{head['awrs_check_ratio_random_lm']}x.**",
        "",
    ]
    headers = [
        "LM",
        "allowed mass",
        "checks/token",
        "rejections/token",
        "fallbacks/token",
        "ratio (checks only)",
        "ratio (fallbacks charged V)",
        "zero-weight samples",
        "s",
        "ms/check",
    ]
    rows = []
    for r in a["runs"].values():
        label = "random" if r["delta"] is None else f"aligned, delta {r['delta']:g}"
        if r["delta"] == HEADLINE_DELTA:
            label += " (headline)"
        rows.append(
            [
                label,
                f"{r['mean_allowed_mass']:.3f}",
                f"{r['checks_per_token']:.2f}",
                f"{r['rejections'] / r['tokens']:.2f}",
                f"{r['fallbacks_per_token']:.3f}",
                f"{r['ratio']:,.0f}x",
                f"{r['ratio_fallbacks_charged']:,.1f}x",
                f"{r['zero_weight_fraction']:.1%}",
                f"{r['seconds']:.1f}",
                f"{1e3 * r['seconds'] / r['checks']:.2f}",
            ]
        )
    lines += common.md_table(headers, rows, right=range(1, len(headers)))
    lines += [
        "",
        '"Checks only" is the ratio as `checks` count it; it flatters the random LM, whose '
        "steps nearly all end in a full mask after 8 rejected draws. Charging each fallback "
        "the V evaluations of its mask gives the cost a grammar constraint would pay. An "
        "accepted step costs 1 check + the 4 weight draws (+ rejections), so the ratio "
        "tops out near V / 5. Zero-weight samples: a step's weight draws all missed the "
        "allowed set, so its estimate of Z_t, and the sample's weight, is 0 (common when "
        "the allowed mass is moderate). Wall seconds include the toy LM; ms/check is "
        "seconds / checks.",
        "",
    ]
    lines += genlm_lines
    tv = results.get("awrs_distribution", [])
    if tv:
        d0 = tv[0]
        lines += [
            "## AWRS distribution check",
            "",
            f"{d0['identifiers']} identifiers of 3 tokens + EOS over a {d0['vocab']}-token "
            "vocabulary, a bigram LM from a seeded Gaussian table; exact distributions by "
            "enumeration: *local* = the LM renormalised over the allowed tokens at every "
            "step (what unweighted AWRS samples), *global* = p(sequence) renormalised over "
            "the allowed sequences (AWRS's weighted target). The weighted estimate is the "
            "self-normalised `exp(log_weights)` frequencies (what resampling draws from). "
            f"{d0['samples']:,} samples, `weight_draws={d0['weight_draws']}`. "
            "`tests/decoding/test_awrs_distribution.py` asserts TV < 0.05 (unweighted vs "
            "local) and < 0.08 (weighted vs global) with `max_rejections=2`.",
            "",
        ]
        headers = [
            "max_rejections",
            "TV unweighted vs local",
            "TV weighted vs global",
            "TV unweighted vs global",
            "TV local vs global (exact)",
            "fallbacks/token",
            "checks/token",
            "ESS",
            "zero-weight samples",
            "s",
        ]
        rows = [
            [
                d["max_rejections"],
                f"{d['tv_unweighted_vs_local']:.4f}",
                f"{d['tv_weighted_vs_global']:.4f}",
                f"{d['tv_unweighted_vs_global']:.4f}",
                f"{d['tv_local_vs_global']:.4f}",
                f"{d['fallbacks_per_token']:.3f}",
                f"{d['checks_per_token']:.2f}",
                f"{d['ess_fraction']:.1%}",
                f"{d['zero_weight_fraction']:.1%}",
                f"{d['seconds']:.1f}",
            ]
            for d in tv
        ]
        lines += common.md_table(headers, rows, right=range(1, len(headers)))
        lines += [
            "",
            "The exact local-vs-global column shows the check can tell the two targets "
            "apart. With more rejections allowed, more steps use the sampled estimate of Z_t "
            "(`weight_draws` draws) instead of the exact mask sum: a step whose draws all miss "
            "the allowed set gets Z_t = 0, so the sample's weight is 0, and the weighted "
            "estimate rests on fewer samples. ESS: the effective sample size of the weights, "
            "(sum w)^2 / sum w^2, as a fraction of the samples.",
            "",
        ]
    return lines
