"""Constrained decoders: every decoding path they steer ends in a valid output.

Random logits stand in for a model in the property tests; a tiny random Llama built at
test time (no download) drives the Hugging Face paths, the diverse beam search and AWRS.
"""

from __future__ import annotations

import random
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relevo.decoding import (
    ConstrainedLogitsProcessor,
    PermutationDecoder,
    PrefixTrieDecoder,
    TokenTrie,
    awrs_generate,
    diverse_beam_search,
)
from relevo.engine.errors import ConfigError, RelevoError
from relevo.testing import tiny_llama

VOCAB = 48
EOS = 0


# -- helpers ------------------------------------------------------------------------------------
def decode(decoder, rng: random.Random, *, greedy: bool, limit: int) -> list[int]:
    """Drive ``decoder`` with random 'logits': greedy takes the best allowed, sampling draws one."""
    out: list[int] = []
    for _ in range(limit):
        logits = [rng.gauss(0.0, 3.0) for _ in range(VOCAB)]
        allowed = decoder.allowed_tokens(0, out)
        assert allowed, f"decoder allowed nothing after {out}"
        if greedy:
            tok = max(allowed, key=lambda t: logits[t])
        else:
            tok = rng.choices(allowed, weights=[2.0 ** logits[t] for t in allowed])[0]
        out.append(tok)
        if tok == EOS:
            break
    return out


def id_sets(min_n: int = 1, max_n: int = 30):
    """``n`` distinct multi-token identifiers over tokens 1..VOCAB-1 (no separator token)."""
    return st.lists(
        st.lists(st.integers(1, 9), min_size=1, max_size=4).map(tuple),
        min_size=min_n,
        max_size=max_n,
        unique=True,
    )


@pytest.fixture(scope="module")
def llama():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    return tiny_llama(vocab=VOCAB, eos_token_id=EOS, seed=0)


# -- the trie ---------------------------------------------------------------------------------------
def test_trie_masks_and_membership():
    trie = TokenTrie([[1, 2], [1, 3, 4], [5]])
    assert len(trie) == 3 and [1, 3, 4] in trie and [1, 3] not in trie
    node = trie.walk([1])
    assert sorted(TokenTrie.next_tokens(node)) == [2, 3]
    assert TokenTrie.next_tokens(node, subset=0b010) == [3]  # only sequence #1 left
    assert trie.add([1, 2]) == 0  # duplicates keep their first index
    with pytest.raises(ConfigError, match="at least one token"):
        TokenTrie([[]])
    with pytest.raises(ConfigError, match=">= 0"):
        TokenTrie([[1, -2]])
    with pytest.raises(ConfigError, match="must be integers"):
        TokenTrie([["a"]])
    with pytest.raises(ConfigError, match="must be integers"):
        TokenTrie([[True]])


def test_errors_are_relevo_errors_and_still_value_errors():
    with pytest.raises(ConfigError) as info:
        PrefixTrieDecoder([[1]], prompt_length=-1)
    assert isinstance(info.value, RelevoError) and isinstance(info.value, ValueError)
    assert "prompt_length" in str(info.value) and "pass" in str(info.value)
    with pytest.raises(ValueError):  # callers written against the builtin type keep working
        PrefixTrieDecoder([[]])


def test_import_does_not_pull_torch():
    code = "import sys, relevo.decoding; print('torch' in sys.modules)"
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- prefix trie decoder ------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(
    seqs=st.lists(
        st.lists(st.integers(1, VOCAB - 1), min_size=1, max_size=6), min_size=1, max_size=25
    ),
    seed=st.integers(0, 2**16),
    greedy=st.booleans(),
)
def test_trie_decoder_only_yields_allowed_sequences(seqs, seed, greedy):
    dec = PrefixTrieDecoder(seqs, eos_token_id=EOS)
    out = decode(dec, random.Random(seed), greedy=greedy, limit=dec.max_tokens())
    assert out[-1] == EOS
    assert out[:-1] in [list(s) for s in seqs]
    assert dec.match(out[:-1]) is not None and dec.is_finished(out)


def test_trie_decoder_prompt_offset_and_finished_rows():
    dec = PrefixTrieDecoder([[5, 6], [5, 7, 8], [5]], eos_token_id=2, prompt_length=3)
    prompt = [9, 9, 9]
    assert dec.allowed_tokens(0, prompt) == [5]
    assert sorted(dec.allowed_tokens(0, [*prompt, 5])) == [2, 6, 7]  # [5] complete: EOS allowed
    assert dec.allowed_tokens(0, [*prompt, 5, 7]) == [8]
    # padding after EOS stays finished
    assert dec.allowed_tokens(0, [*prompt, 5, 7, 8, 2, 2, 2]) == [2]
    assert dec.allowed_tokens(0, [*prompt, 4]) == [2]  # a broken prefix may only end
    fn = dec.prefix_allowed_tokens_fn(prompt_length=1)
    assert fn(0, [9, 5, 7]) == [8]


def test_trie_decoder_accepts_tensors():
    torch = pytest.importorskip("torch")
    dec = PrefixTrieDecoder([[5, 6]], eos_token_id=2, prompt_length=2)
    assert dec.allowed_tokens(0, torch.tensor([1, 1, 5])) == [6]


# -- permutation decoder ------------------------------------------------------------------------------
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ids=id_sets(),
    seed=st.integers(0, 2**16),
    greedy=st.booleans(),
    sep=st.sampled_from([(), (40,), (40, 41)]),
)
def test_permutation_decoding_always_yields_a_full_valid_permutation(ids, seed, greedy, sep):
    n = len(ids)
    if not sep:
        # with an empty separator identifiers must not be prefixes of one another, or
        # "[1][2]" and "[12]" read alike; the decoder stays valid either way, parse needs it
        ids = [(*s, 30 + (i % 8), 38) for i, s in enumerate(ids)]
    cont = [(42, *s) for s in ids] if sep else None
    dec = PermutationDecoder(ids, separator=sep, continued=cont, eos_token_id=EOS)
    out = decode(dec, random.Random(seed), greedy=greedy, limit=dec.max_tokens())
    assert out[-1] == EOS, "must close within max_tokens()"
    ranking = dec.parse(out)
    assert sorted(ranking) == list(range(n))
    # the output spells exactly those identifiers with the separator between them
    spelled: list[int] = []
    for k, i in enumerate(ranking):
        if k:
            spelled += [*sep, *cont[i]] if cont else list(ids[i])
        else:
            spelled += list(ids[i])
    assert out[:-1] == spelled


@settings(max_examples=40, deadline=None)
@given(ids=id_sets(2, 12), seed=st.integers(0, 2**16))
def test_permutation_never_allows_eos_early_nor_repeats(ids, seed):
    dec = PermutationDecoder(ids, separator=[40], eos_token_id=EOS)
    rng = random.Random(seed)
    out: list[int] = []
    while True:
        allowed = dec.allowed_tokens(0, out)
        if EOS in allowed:
            assert sorted(dec.parse(out)) == list(range(len(ids)))
        if allowed == [EOS]:
            break
        out.append(rng.choice([t for t in allowed if t != EOS]))
        assert len(set(dec.parse(out))) == len(dec.parse(out))


def test_permutation_with_shared_prefixes_and_parse_of_partial_output():
    # "[1]" and "[12]" share "[1"; tokens: [=10, ]=11, digits 1..9 as themselves
    ids = [[10, 1, 11], [10, 2, 11], [10, 1, 2, 11]]
    cont = [[21, *s[1:]] for s in ids]
    dec = PermutationDecoder(ids, separator=[20], continued=cont, eos_token_id=EOS)
    assert dec.allowed_next([10, 1]) == [2, 11]
    out = [10, 1, 2, 11, 20, 21, 1, 11, 20, 21, 2, 11]
    assert dec.allowed_next(out) == [EOS]
    assert dec.parse([*out, EOS]) == [2, 0, 1]
    assert dec.allowed_next([10, 1, 2, 11, 20, 21, 1]) == [11]  # [12] is used up
    assert dec.parse(out[:7]) == [2]  # cut inside an identifier: only the complete ones


def test_permutation_edge_cases():
    assert PermutationDecoder([], eos_token_id=EOS).allowed_next([]) == [EOS]
    one = PermutationDecoder([[5]], separator=[40], eos_token_id=EOS)
    assert one.allowed_next([]) == [5] and one.allowed_next([5]) == [EOS]
    with pytest.raises(ConfigError, match="same tokens as an earlier one"):
        PermutationDecoder([[1], [1]])
    with pytest.raises(ConfigError, match="continued has 1 identifiers"):
        PermutationDecoder([[1], [2]], continued=[[3]])
    with pytest.raises(ConfigError, match="EOS"):
        PermutationDecoder([[1, EOS], [2]], eos_token_id=EOS)  # generation would stop inside an id
    with pytest.raises(ConfigError, match="EOS"):
        PermutationDecoder([[1], [2]], separator=[EOS], eos_token_id=EOS)
    with pytest.raises(ConfigError, match="has no tokens"):
        PermutationDecoder([[1], []])
    with pytest.raises(ConfigError, match="n must be >= 0"):
        PermutationDecoder.for_tokenizer(None, -1)  # refused before the tokenizer is used
    with pytest.raises(ConfigError, match="prompt_length"):
        PermutationDecoder([[1]], prompt_length=1.5)
    PermutationDecoder()  # registered decoders are built with options only: cheap, no args needed


# -- Hugging Face integration ----------------------------------------------------------------------------
def test_logits_processor_masks_to_minus_inf():
    torch = pytest.importorskip("torch")
    dec = PrefixTrieDecoder([[5, 6], [5, 7]], eos_token_id=EOS)
    proc = ConstrainedLogitsProcessor(dec, prompt_length=2, num_beams=2)
    input_ids = torch.tensor([[9, 9, 5], [9, 9, 3], [9, 9, 5], [9, 9, 5]])
    scores = torch.randn(4, 10)
    out = proc(input_ids, scores)
    allowed = {0: {6, 7}, 1: {EOS}, 2: {6, 7}, 3: {6, 7}}
    for r in range(4):
        for t in range(10):
            if t in allowed[r]:
                assert out[r, t] == scores[r, t]
            else:
                assert out[r, t] == float("-inf")


def test_generation_options_are_checked_before_any_model_call():
    pytest.importorskip("torch")
    dec = PrefixTrieDecoder([[3, 4]], eos_token_id=EOS)
    with pytest.raises(ConfigError, match="num_beams must be >= 1"):
        ConstrainedLogitsProcessor(dec, num_beams=0)
    for beams, groups in ((3, 2), (2, 0), (1, 2)):
        with pytest.raises(ConfigError, match="positive multiple of num_groups"):
            diverse_beam_search(None, [1], dec, num_beams=beams, num_groups=groups)
    for temperature in (0.0, -1.0):
        with pytest.raises(ConfigError, match="temperature must be > 0"):
            awrs_generate(None, [1], dec, temperature=temperature)


def test_generate_with_processor_and_prefix_fn_gives_valid_permutations(llama):
    torch = pytest.importorskip("torch")
    ids = [[10, d, 11] for d in range(1, 10)] + [[10, 1, d, 11] for d in range(2, 5)]
    dec = PermutationDecoder(ids, separator=[20], eos_token_id=EOS)
    prompt = torch.tensor([[1, 7, 8, 9, 3]])
    dec.prompt_length = prompt.shape[1]
    for kwargs in (
        {"prefix_allowed_tokens_fn": dec.prefix_allowed_tokens_fn()},
        {"logits_processor": [ConstrainedLogitsProcessor(dec, prompt_length=prompt.shape[1])]},
    ):
        out = llama.generate(
            input_ids=prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=dec.max_tokens(),
            do_sample=False,
            eos_token_id=EOS,
            pad_token_id=EOS,
            **kwargs,
        )
        new = out[0, prompt.shape[1] :].tolist()
        assert new[-1] == EOS and sorted(dec.parse(new)) == list(range(len(ids)))


def test_diverse_beam_search_returns_distinct_allowed_sequences(llama):
    seqs = [[3, 4], [3, 5, 6], [7], [8, 9, 10], [8, 9, 11], [12, 13]]
    dec = PrefixTrieDecoder(seqs, eos_token_id=EOS)
    hyps = diverse_beam_search(
        llama, [1, 2, 3], dec, num_beams=4, num_groups=2, diversity_penalty=1.0
    )
    assert 1 <= len(hyps) <= 4
    outs = [tuple(h.tokens) for h in hyps]
    assert len(set(outs)) == len(outs)
    for h in hyps:
        assert h.finished and h.tokens[-1] == EOS and h.tokens[:-1] in seqs
    assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
    plain = diverse_beam_search(llama, [1, 2, 3], dec, num_beams=6, num_groups=1)
    assert {tuple(h.tokens[:-1]) for h in plain} == {tuple(s) for s in seqs}  # 6 beams find all 6


def test_awrs_returns_only_valid_sequences_with_weights(llama):
    torch = pytest.importorskip("torch")
    ids = [[10, d, 11] for d in range(1, 8)]
    dec = PermutationDecoder(ids, separator=[20], eos_token_id=EOS)
    res = awrs_generate(
        llama,
        [1, 5, 6],
        dec,
        num_samples=6,
        generator=torch.Generator().manual_seed(0),
        max_rejections=3,
    )
    assert len(res.sequences) == 6
    for seq, lw in zip(res.sequences, res.log_weights, strict=True):
        assert seq[-1] == EOS and sorted(dec.parse(seq)) == list(range(7))
        assert lw <= 1e-9  # each step's allowed mass is at most 1
    assert all(res.finished)
    assert sum(res.checks) > 0 and sum(res.fallbacks) > 0  # a random model mostly needs the mask
    trie = PrefixTrieDecoder([[3, 4], [7]], eos_token_id=EOS)
    res2 = awrs_generate(
        llama,
        [1],
        trie,
        num_samples=4,
        max_rejections=0,
        generator=torch.Generator().manual_seed(1),
    )
    assert all(s[:-1] in ([3, 4], [7]) for s in res2.sequences)
    assert all(f == 3 or f == 2 for f in res2.fallbacks)  # max_rejections=0: every step is masked


def test_awrs_weight_estimate_is_unbiased_for_one_step():
    torch = pytest.importorskip("torch")

    class Fixed(torch.nn.Module):
        """Always the same next-token distribution."""

        def __init__(self, logits):
            super().__init__()
            self.logits = logits
            self.dummy = torch.nn.Parameter(torch.zeros(1))

        def forward(self, input_ids, past_key_values=None, use_cache=True, **_):
            from types import SimpleNamespace

            b, L = input_ids.shape
            return SimpleNamespace(logits=self.logits.expand(b, L, -1), past_key_values=None)

    logits = torch.log(torch.tensor([0.05, 0.5, 0.2, 0.15, 0.1]))
    dec = PrefixTrieDecoder([[2], [4]], eos_token_id=[])  # allowed mass at step 1: 0.2 + 0.1
    res = awrs_generate(
        Fixed(logits),
        [1],
        dec,
        num_samples=4000,
        max_new_tokens=1,
        max_rejections=2,
        weight_draws=2,
        generator=torch.Generator().manual_seed(0),
    )
    assert all(s[0] in (2, 4) for s in res.sequences)
    est = torch.tensor(res.log_weights).exp().mean().item()
    assert abs(est - 0.3) < 0.02
    frac4 = sum(s[0] == 4 for s in res.sequences) / 4000
    assert abs(frac4 - 1 / 3) < 0.03  # exact constrained distribution: 0.1 / 0.3
