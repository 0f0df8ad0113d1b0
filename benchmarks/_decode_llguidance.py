"""The llguidance part of ``bench_decode.py``: its token-mask cost on the same identifier sets.

llguidance (the Rust grammar engine behind guidance, vLLM and SGLang structured output)
constrains bytes, not token ids, so the identifier set becomes a grammar over a
tokenizer built here:

- **vocabulary**: ids ``1 .. VOCAB - 1`` (the benchmark's token ids) are distinct 3-byte
  strings over ``[A-Za-z0-9]`` (62**3 > 49,151), id 0 is the special end-of-text token
  (EOS), and 256 single-byte tokens follow (ids ``VOCAB .. VOCAB + 255``). Fixed width
  makes every token boundary of an identifier a 3-byte boundary, so on the benchmark's
  ids the allowed sets are exactly the trie's. The byte tokens are needed: without them
  llguidance 1.9.1 returned an empty mask (``NoExtensionBias``) after a prefix whose
  next byte was forced (two identifiers sharing ``aCy`` + ``m``), since it could not
  tokenize the forced byte. With them, the mask also allows such a single byte (another
  tokenization of the same text), which the trie does not.
- **grammar**: Lark, ``start: ID`` with ``ID: "<id 1>" | "<id 2>" | ...`` (one lexeme,
  the identifiers' byte strings); EOS is allowed once an identifier is complete.
- **limits**: the default lexer fuel does not build the 100k grammar (``lexer
  precomputation failed``), so :data:`LIMITS` raises it (and the per-step fuel, so no
  mask is cut short).

A step is what ``step_times(mask=True)`` times for the CompactTrie: the masks of a beam of
states (``fill_next_token_bitmask``, one matcher after another, one thread), then one
token consumed by each. Masks are packed bitmasks (``(beam, ceil(V / 32))`` int32),
where the CompactTrie fills a ``(beam, V)`` bool array.
"""

from __future__ import annotations

import statistics
import string
import time
from typing import Any

import _common as common
import numpy as np

ALPHABET = string.ascii_letters + string.digits
#: single-byte tokens after the benchmark's ids (every byte-level vocabulary has them)
BYTE_TOKENS = 256
#: lexer limits wide enough for 100k identifiers (defaults: 1M initial, 200k per step)
LIMITS = {"initial_lexer_fuel": 10**8, "step_lexer_fuel": 10**9, "max_lexer_states": 10**7}


def version() -> str | None:
    """The installed llguidance version, or None."""
    try:
        import llguidance
    except ImportError:
        return None
    return str(llguidance.__version__)


def token_text(t: int) -> str:
    """The 3-byte text of benchmark token ``t >= 1``."""
    t -= 1
    return ALPHABET[t // 62**2] + ALPHABET[(t // 62) % 62] + ALPHABET[t % 62]


class _FixedWidthTokenizer:
    """What ``llguidance.TokenizerWrapper`` needs: token bytes, EOS/BOS, an encoder."""

    bos_token_id = None

    def __init__(self, vocab: int, eos: int) -> None:
        self.eos_token_id = eos
        self.tokens = [b"<|endoftext|>"] + [token_text(t).encode() for t in range(1, vocab)]
        self.tokens += [bytes([b]) for b in range(BYTE_TOKENS)]
        self.special_token_ids = [eos]
        self.index = {tok: i for i, tok in enumerate(self.tokens)}

    def __call__(self, text: str | bytes) -> list[int]:
        b = text if isinstance(text, bytes) else text.encode()
        whole = len(b) - len(b) % 3
        ids = [self.index[b[i : i + 3]] for i in range(0, whole, 3)]
        return ids + [self.index[b[i : i + 1]] for i in range(whole, len(b))]


def tokenizer(vocab: int, eos: int) -> Any:
    import llguidance

    return llguidance.LLTokenizer(llguidance.TokenizerWrapper(_FixedWidthTokenizer(vocab, eos)))


def grammar(seqs: list[list[int]], end: int) -> str:
    """The Lark grammar of the identifiers (their tokens without the final ``end``)."""
    alts = (
        '"' + "".join(token_text(t) for t in (s[:-1] if s[-1] == end else s)) + '"' for s in seqs
    )
    return "start: ID\nID: " + " | ".join(alts) + "\n"


def unpack(bitmask: np.ndarray, vocab: int) -> np.ndarray:
    """A ``(beam, words)`` int32 bitmask as a ``(beam, vocab)`` bool array."""
    bits = np.unpackbits(bitmask.view(np.uint8), axis=1, bitorder="little")
    return bits[:, :vocab].astype(bool)


def measure(
    seqs: list[list[int]],
    trie: Any,
    walks: np.ndarray,
    *,
    vocab: int,
    end: int,
    beam: int,
    checked_beams: int = 20,
) -> dict[str, Any]:
    """Per-step mask cost of llguidance walking ``walks`` (rows of tokens) in beams of ``beam``.

    The first ``checked_beams`` beams compare every mask, over the benchmark's ``vocab``
    ids, with ``trie.mask``; the byte tokens it also allows are counted.
    """
    import llguidance
    import llguidance.numpy as llnp

    tok, tok_s = common.timed(tokenizer, vocab, end)
    text = grammar(seqs, end)
    limits = llguidance.LLParserLimits(
        initial_lexer_fuel=LIMITS["initial_lexer_fuel"],
        step_lexer_fuel=LIMITS["step_lexer_fuel"],
        max_lexer_states=LIMITS["max_lexer_states"],
    )
    m0, compile_s = common.timed(llguidance.LLMatcher, tok, text, log_level=1, limits=limits)
    if m0.is_error():
        raise RuntimeError(f"llguidance rejected the grammar: {m0.get_error()[:500]}")
    full = vocab + BYTE_TOKENS
    mask = llnp.allocate_token_bitmask(beam, full)
    clock, cpu_clock = time.perf_counter, time.process_time
    times: list[float] = []
    cpu: list[float] = []
    copy_s: list[float] = []
    agree = True
    extra: list[int] = []
    steps = walks.shape[1]
    for b in range(0, len(walks) - beam + 1, beam):
        toks = walks[b : b + beam]
        t0 = clock()
        matchers = [m0.deep_copy() for _ in range(beam)]
        copy_s.append(clock() - t0)
        check = b // beam < checked_beams
        handles = np.full(beam, trie.root(), dtype=np.int64)
        for d in range(steps):
            col = toks[:, d].tolist()
            c0 = cpu_clock()
            t0 = clock()
            for i, m in enumerate(matchers):
                llnp.fill_next_token_bitmask(m, mask, i)
            for m, t in zip(matchers, col, strict=True):
                m.consume_token(t)
            times.append(clock() - t0)
            cpu.append(cpu_clock() - c0)
            if check:
                got = unpack(mask, full)
                agree = agree and bool((got[:, :vocab] == trie.mask(handles, vocab)).all())
                extra.append(int(got[:, vocab:].sum()))
                handles = trie.step(handles, toks[:, d])
        bad = [m.get_error()[:300] for m in matchers if m.is_error()]
        if bad:
            raise RuntimeError(f"llguidance refused a live identifier: {bad[0]}")
    return {
        "version": version(),
        "vocab": full,
        "tokenizer_seconds": tok_s,
        "grammar_bytes": len(text),
        "compile_seconds": compile_s,
        "beams_timed": len(walks) // beam,
        "us_per_step_mask": statistics.median(times) * 1e6,
        "us_per_step_mask_cpu": statistics.median(cpu) * 1e6,
        "us_per_root_step_mask": statistics.median(times[::steps]) * 1e6,
        "us_per_mask": statistics.median(times) * 1e6 / beam,
        "us_per_beam_copy": statistics.median(copy_s) * 1e6,
        "masks_agree_on_vocab": agree,
        "byte_tokens_allowed_per_step": float(np.mean(extra)) if extra else None,
        "limits": LIMITS,
    }


def markdown(results: dict[str, Any], *, walk: int) -> list[str]:
    """The llguidance section of ``decode.md`` (nothing when it did not run)."""
    sizes = [r for r in results["sizes"].values() if "llguidance" in r]
    if not sizes:
        return []
    g0 = sizes[0]["llguidance"]
    beam = results["meta"]["beam"]
    lines = [
        f"## Token masks: llguidance {g0['version']} against CompactTrie",
        "",
        f"The same beam-of-{beam} steps, each computing the {beam} masks and advancing every "
        f"state by one token; median over {g0['beams_timed']} beams x {walk} steps (CompactTrie: "
        "the mask column above). llguidance gets a Lark grammar `start: ID`, "
        '`ID: "<id 1>" | "<id 2>" | ...` over a fixed-width tokenizer built here: the '
        f"benchmark's {g0['vocab'] - BYTE_TOKENS:,} ids as distinct 3-byte strings plus "
        f"{BYTE_TOKENS} single-byte tokens ({g0['vocab']:,} tokens), so the allowed ids "
        "match the trie's; it writes packed "
        f"`(beam, {(g0['vocab'] + 31) // 32})` int32 bitmasks one matcher at a time (one "
        f"thread), the CompactTrie a `(beam, {g0['vocab'] - BYTE_TOKENS})` bool array.",
        "",
    ]
    headers = [
        "identifiers",
        "grammar MB",
        "compile s",
        "llguidance µs/step with mask",
        "llguidance µs/step CPU",
        "llguidance µs root step",
        "llguidance µs/mask",
        "CompactTrie µs/step with mask",
        "CompactTrie µs/mask",
        "llguidance / CompactTrie",
        "masks agree on the ids",
        "byte tokens allowed per step (all masks)",
    ]
    rows = []
    for r in sizes:
        g = r["llguidance"]
        rows.append(
            [
                f"{r['identifiers']:,}",
                f"{g['grammar_bytes'] / 2**20:.2f}",
                f"{g['compile_seconds']:.2f}",
                f"{g['us_per_step_mask']:.1f}",
                f"{g['us_per_step_mask_cpu']:.1f}",
                f"{g['us_per_root_step_mask']:.1f}",
                f"{g['us_per_mask']:.1f}",
                f"{r['us_per_step_mask']:.1f}",
                f"{r['us_per_step_mask'] / beam:.1f}",
                f"{g['us_per_step_mask'] / r['us_per_step_mask']:.1f}x",
                "yes" if g["masks_agree_on_vocab"] else "no",
                f"{g['byte_tokens_allowed_per_step']:.2f}",
            ]
        )
    lines += common.md_table(headers, rows, right=range(1, len(headers)))
    lines += [
        "",
        '"Masks agree" compares every mask of the first 20 beams, over the benchmark\'s ids, '
        "with `CompactTrie.mask`; the byte tokens llguidance also allows (the first byte of "
        "an allowed token: the same text, tokenized differently) have no trie counterpart. "
        "Lexer limits raised for 100k identifiers: "
        + ", ".join(f"`{k}={v:,}`" for k, v in g0["limits"].items())
        + ".",
        "",
    ]
    return lines
