"""Batched constrained beam search and its exact top-k pruning, on a tiny random Llama."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relevo.decoding import PrefixTrieDecoder, beam_search_batch, diverse_beam_search
from relevo.engine.errors import ConfigError
from relevo.testing import tiny_llama

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

VOCAB = 48
EOS = 0


@pytest.fixture(scope="module")
def llama():
    return tiny_llama(vocab=VOCAB, eos_token_id=EOS, seed=0)


class Counting:
    """Forwards to a model and counts its calls and the rows they carry."""

    def __init__(self, model) -> None:
        self.model, self.calls, self.rows = model, 0, 0
        self.device = model.device

    def __call__(self, **kwargs):
        self.calls += 1
        self.rows += int(kwargs["input_ids"].shape[0])
        return self.model(**kwargs)


def random_ids(rng: random.Random, n: int, depth: int = 5) -> list[list[int]]:
    seqs: set[tuple[int, ...]] = set()
    while len(seqs) < n:
        seqs.add(tuple(rng.randint(1, 9) for _ in range(rng.randint(1, depth))))
    return [list(s) for s in sorted(seqs)]


def closed(hyps) -> list[tuple[tuple[int, ...], float]]:
    return [(tuple(h.tokens), h.logprob) for h in hyps if h.finished]


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seed=st.integers(0, 10_000), n_prompts=st.integers(1, 4), groups=st.sampled_from([1, 2]))
def test_batch_equals_one_search_per_prompt(llama, seed, n_prompts, groups):
    rng = random.Random(seed)
    decoders = [
        PrefixTrieDecoder(random_ids(rng, rng.randint(2, 14)), eos_token_id=EOS)
        for _ in range(n_prompts)
    ]
    # prompts of different lengths: the batch is left-padded
    prompts = [[rng.randint(1, VOCAB - 1) for _ in range(rng.randint(1, 7))] for _ in decoders]
    kwargs = {"num_beams": 4, "num_groups": groups, "diversity_penalty": 0.7 if groups > 1 else 0.0}
    batch = beam_search_batch(llama, prompts, decoders, **kwargs)
    assert len(batch) == n_prompts
    for prompt, dec, got in zip(prompts, decoders, batch, strict=True):
        alone = diverse_beam_search(llama, prompt, dec, **kwargs)
        assert [h.tokens for h in got] == [h.tokens for h in alone]
        assert [h.logprob for h in got] == pytest.approx([h.logprob for h in alone], abs=1e-4)
        assert all(h.tokens[:-1] in dec.trie for h in got if h.finished)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seed=st.integers(0, 10_000), top_k=st.integers(1, 5))
def test_top_k_pruning_keeps_the_full_searchs_best_outputs(llama, seed, top_k):
    rng = random.Random(seed)
    dec = PrefixTrieDecoder(random_ids(rng, rng.randint(top_k, 40)), eos_token_id=EOS)
    prompt = [rng.randint(1, VOCAB - 1) for _ in range(rng.randint(1, 5))]
    full_model, pruned_model = Counting(llama), Counting(llama)
    full = diverse_beam_search(
        full_model, prompt, dec, num_beams=8, num_groups=1, length_penalty=0.0
    )
    pruned = diverse_beam_search(
        pruned_model, prompt, dec, num_beams=8, num_groups=1, length_penalty=0.0, top_k=top_k
    )
    want = sorted(closed(full), key=lambda t: -t[1])[:top_k]
    got = sorted(closed(pruned), key=lambda t: -t[1])[:top_k]
    assert [t for t, _ in got] == [t for t, _ in want]
    assert [lp for _, lp in got] == pytest.approx([lp for _, lp in want], abs=1e-6)
    assert pruned_model.calls <= full_model.calls and pruned_model.rows <= full_model.rows


def test_top_k_pruning_saves_steps_when_the_best_close_early(llama):
    # short identifiers close at step 2, long ones would run to step 8: with top_k=2 the
    # long beams that fall below the second best closed output are dropped
    short = [[t] for t in range(1, 7)]
    long = [[t, *range(20, 26)] for t in range(7, 10)]
    dec = PrefixTrieDecoder(short + long, eos_token_id=EOS)
    full_model, pruned_model = Counting(llama), Counting(llama)
    full = diverse_beam_search(
        full_model, [3, 4], dec, num_beams=9, num_groups=1, length_penalty=0.0
    )
    pruned = diverse_beam_search(
        pruned_model, [3, 4], dec, num_beams=9, num_groups=1, length_penalty=0.0, top_k=2
    )
    best = sorted(closed(full), key=lambda t: -t[1])[:2]
    got = sorted(closed(pruned), key=lambda t: -t[1])[:2]
    assert [t for t, _ in got] == [t for t, _ in best]
    assert all(len(t) == 2 for t, _ in best)  # the best two are short identifiers + EOS
    assert pruned_model.rows < full_model.rows


def test_bad_batch_arguments_are_config_errors(llama):
    dec = PrefixTrieDecoder([[1, 2]], eos_token_id=EOS)
    with pytest.raises(ConfigError, match="prunes exactly only"):
        diverse_beam_search(llama, [1], dec, num_beams=4, num_groups=2, top_k=2)
    with pytest.raises(ConfigError, match="prunes exactly only"):
        diverse_beam_search(llama, [1], dec, num_beams=4, num_groups=1, top_k=2)  # length penalty 1
    with pytest.raises(ConfigError, match="as many decoders"):
        beam_search_batch(llama, [[1], [2]], [dec], num_beams=2)
    assert beam_search_batch(llama, [], [], num_beams=2) == []
