"""AWRS samples the right distributions over a whole identifier, not only one step.

``test_constraints.py`` checks one step (the weight estimate is unbiased, the samples follow
the constrained next-token distribution). Here a tiny trie of 3-token identifiers and a
bigram LM give two different exact targets, enumerated: the *locally* constrained
distribution (the LM renormalised over the allowed tokens at every step), which unweighted
AWRS samples follow, and the *globally* constrained one (``p(sequence)`` renormalised over
the allowed sequences), which the importance weights target. Both are compared with 4,000
samples by total variation distance; the seed is fixed, so the run is deterministic.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from relevo.decoding import CompactTrie, CompactTrieDecoder, awrs_generate

torch = pytest.importorskip("torch")

VOCAB = 20
END = 0
# equal lengths: otherwise the global target piles onto the shortest identifier
IDS = ([3, 4, 5], [3, 4, 6], [3, 7, 8], [9, 10, 11], [9, 12, 13], [14, 15, 16])
PROMPT = [1]


class BigramLM:
    """A causal-LM stand-in: next-token logits are row ``last token`` of a fixed table."""

    device = "cpu"

    def __init__(self, table):
        self.table = table

    def __call__(self, input_ids, past_key_values=None, **_):
        return SimpleNamespace(logits=self.table[input_ids[:, -1:]], past_key_values=None)


def exact(table, decoder, seqs):
    """``(local, global)`` probability of every allowed sequence (EOS included)."""
    local, joint = {}, {}
    for s in seqs:
        lp_local = lp_joint = 0.0
        last = PROMPT[-1]
        for t, tok in enumerate(s):
            logp = torch.log_softmax(table[last], dim=-1)
            allowed = decoder.allowed_next(s[:t])
            lp_joint += float(logp[tok])
            lp_local += float(logp[tok] - torch.logsumexp(logp[allowed], dim=0))
            last = tok
        local[tuple(s)] = math.exp(lp_local)
        joint[tuple(s)] = math.exp(lp_joint)
    z = sum(joint.values())
    return local, {k: v / z for k, v in joint.items()}


def tv(p, q):
    return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in set(p) | set(q))


def test_awrs_matches_the_exact_local_and_global_distributions():
    seqs = [[*s, END] for s in IDS]
    decoder = CompactTrieDecoder(CompactTrie.build(seqs), eos_token_id=END)
    table = torch.randn(VOCAB, VOCAB, generator=torch.Generator().manual_seed(2))
    local, target = exact(table, decoder, seqs)
    assert tv(local, target) > 0.3  # the two targets are far apart: the check can fail

    n = 4000
    res = awrs_generate(
        BigramLM(table),
        PROMPT,
        decoder,
        num_samples=n,
        max_rejections=2,  # both paths run: accepted draws (estimated Z) and mask fallbacks
        generator=torch.Generator().manual_seed(0),
    )
    assert all(res.finished)
    assert 0 < sum(res.fallbacks) < sum(len(s) for s in res.sequences)
    freq: dict[tuple[int, ...], float] = {}
    for s in res.sequences:
        freq[tuple(s)] = freq.get(tuple(s), 0.0) + 1.0 / n
    assert set(freq) <= set(target)
    lw = torch.tensor(res.log_weights, dtype=torch.float64)
    w = (lw - lw.max()).exp()
    weighted: dict[tuple[int, ...], float] = {}
    for s, wi in zip(res.sequences, (w / w.sum()).tolist(), strict=True):
        weighted[tuple(s)] = weighted.get(tuple(s), 0.0) + wi

    assert tv(freq, local) < 0.05
    assert tv(weighted, target) < 0.08
