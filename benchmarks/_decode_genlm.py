"""genlm-control's AWRS (the paper authors' implementation) on ``bench_decode``'s AWRS toy case.

The same trie, toy LMs and prompts as :func:`_decode_awrs.check_ratio`, as genlm
``Potential`` objects: the LM potential gives the toy LM's next-token log-probabilities
(the benchmark's end token 0 is genlm's ``EOS``), the condition is Boolean: 0 on a prefix
of a live identifier (``complete``: a whole one), ``-inf`` elsewhere. Every call of the
condition is one constraint check. genlm's ``AWRS`` has no mask fallback: with the default
``max_rejects=inf`` it keeps drawing (without replacement) until ``max_accepts=2`` tokens
were accepted or the vocabulary is exhausted.

Not in relevo's dependencies: genlm-control 0.4.1 brings 47 packages (bitsandbytes,
numba, ipython, genlm-backend, ...). This part runs only where ``genlm.control`` imports.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import _common as common
import _decode_awrs as awrs
import numpy as np


def version() -> str | None:
    try:
        from importlib.metadata import version as dist_version

        import genlm.control  # noqa: F401
    except ImportError:
        return None
    return dist_version("genlm-control")


def location() -> str:
    """Where ``genlm.control`` is imported from."""
    import genlm.control

    return str(Path(genlm.control.__file__).parents[2])


def check_ratio(
    seqs: list[list[int]],
    vocab: int,
    *,
    end: int,
    samples: int = 8,
    random_samples: int = 2,
    prompts: int = 1,
    seed: int = 0,
    deltas: Sequence[float] = (6.0,),
    log: Callable[[str], None] = lambda _m: None,
) -> dict[str, Any]:
    """Checks per generated token of genlm's AWRS, one sequence at a time.

    ``samples`` sequences per prompt for each aligned LM, ``random_samples`` for the
    random LM (each of its tokens can take tens of thousands of checks).
    """
    import torch
    from genlm.control import AWRS, Potential

    from relevo.decoding import CompactTrie, CompactTrieDecoder
    from relevo.decoding.constraints import FINISHED

    trie = CompactTrie.build(seqs)
    decoder = CompactTrieDecoder(trie, eos_token_id=end)
    row_logits = awrs.zipf_row_logits(vocab, seed)
    ids = [t for t in range(vocab) if t != end]
    tables = Potential.build_tables(ids)

    def gen_ids(context: list[Any]) -> list[int]:
        return [end if t is tables.eos else int(t) for t in context]

    class Condition(Potential):
        def __init__(self) -> None:
            super().__init__(ids, tables=tables)
            self.calls = 0

        async def prefix(self, context: list[Any]) -> float:
            self.calls += 1
            st = decoder.state(gen_ids(context))
            return 0.0 if st is not None else float("-inf")

        async def complete(self, context: list[Any]) -> float:
            self.calls += 1
            return 0.0 if decoder.state([*gen_ids(context), end]) is FINISHED else float("-inf")

    class ToyLM(Potential):
        def __init__(
            self, prompt: int, favour: Callable[[list[int]], int | None] | None, delta: float
        ):
            super().__init__(ids, tables=tables)
            self.prompt, self.favour, self.delta = prompt, favour, delta
            # genlm orders vocab_eos as ids then EOS; the toy LM's row is in token-id order
            self.order = torch.tensor([*ids, end])

        async def logw_next(self, context: list[Any]) -> Any:
            gen = gen_ids(context)
            logits = row_logits(gen[-1] if gen else self.prompt)
            if self.favour is not None:
                tok = self.favour(gen)
                if tok is not None:
                    logits[tok] = logits.max() + self.delta
            logp = torch.log_softmax(logits, dim=-1)[self.order].numpy().astype(np.float64)
            return self.make_lazy_weights(logp)

        async def prefix(self, context: list[Any]) -> float:
            raise NotImplementedError  # AWRS only asks logw_next

        async def complete(self, context: list[Any]) -> float:
            raise NotImplementedError

    rng = np.random.default_rng(seed)
    configs: list[tuple[str, float | None]] = [("random", None)]
    configs += [(f"aligned_delta_{d:g}", d) for d in deltas]
    out: dict[str, Any] = {"version": version(), "max_accepts": 2, "runs": {}}
    for name, delta in configs:
        tokens = checks = finished = 0
        n = random_samples if delta is None else samples
        t0 = time.perf_counter()
        for p in range(prompts):
            for s in range(n):
                target = seqs[int(rng.integers(0, len(seqs)))]

                def favour(gen: list[int], target: list[int] = target) -> int | None:
                    if len(gen) < len(target) and gen == target[: len(gen)]:
                        return target[len(gen)]
                    ok = decoder.allowed_next(gen)
                    return ok[hash(tuple(gen)) % len(ok)] if ok else None

                cond = Condition()
                lm = ToyLM(1 + p, None if delta is None else favour, delta or 0.0)
                sampler = AWRS(lm, cond, seed=seed * 1000 + p * 100 + s, autobatch=False)
                ctx: list[Any] = []
                for _ in range(trie.max_depth + 1):
                    tok, logw, _ = asyncio.run(sampler.sample(ctx))
                    ctx.append(tok)
                    tokens += 1
                    if tok is tables.eos or logw == float("-inf"):
                        finished += tok is tables.eos
                        break
                checks += cond.calls
        secs = time.perf_counter() - t0
        run = {
            "delta": delta,
            "samples": n * prompts,
            "tokens": tokens,
            "checks": checks,
            "finished": finished,
            "checks_per_token": checks / tokens,
            "ratio": vocab * tokens / checks,
            "seconds": secs,
        }
        out["runs"][name] = run
        log(
            f"genlm AWRS {name}: {run['checks_per_token']:.1f} checks/token, "
            f"ratio {run['ratio']:.0f}x, {secs:.1f}s"
        )
    return out


def markdown(results: dict[str, Any]) -> list[str]:
    """The genlm subsection of ``decode.md`` (nothing when it did not run)."""
    g = results.get("genlm")
    if not g:
        return []
    vocab = results["awrs"]["vocab"]
    lines = [
        f"### genlm-control {g['version']} AWRS on the same toy case",
        "",
        "The same trie and toy LMs as genlm `Potential`s (LM: the toy LM's log-probabilities; "
        "condition: 0 on a live identifier prefix, -inf elsewhere; a check = one call of "
        f"the condition), `AWRS(lm, condition)` with its defaults (`max_accepts="
        f"{g['max_accepts']}`, `max_rejects=inf`: no mask fallback, it draws without "
        "replacement until two tokens are accepted or the vocabulary runs out; accepted "
        "tokens are cached, so drawing one again is no new check), one sequence at a time. "
        "Few samples: its random-LM tokens are slow.",
        "",
    ]
    headers = ["LM", "samples", "tokens", "checks/token", f"ratio (V={vocab:,})", "s"]
    rows = []
    for r in g["runs"].values():
        rows.append(
            [
                "random" if r["delta"] is None else f"aligned, delta {r['delta']:g}",
                r["samples"],
                r["tokens"],
                f"{r['checks_per_token']:,.2f}",
                f"{r['ratio']:,.1f}x",
                f"{r['seconds']:.1f}",
            ]
        )
    lines += common.md_table(headers, rows, right=range(1, len(headers)))
    lines += [
        "",
        "relevo's `checks` count every draw, the weight draws included, even of a token "
        "already accepted at that step; genlm evaluates each accepted token once.",
        "",
    ]
    return lines
