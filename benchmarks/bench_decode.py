"""Constrained decoding over document identifiers: CompactTrie build time, memory and step cost.

    .venv/bin/python benchmarks/bench_decode.py [--sizes 1000 10000 100000 1000000]
        [--dict-sizes 1000 10000] [--beam 10] [--beams-timed 2000] [--json]
        [--no-awrs] [--awrs-size 10000] [--awrs-samples 32] [--awrs-prompts 2]
        [--no-llguidance] [--llguidance-sizes 1000 ... 1000000] [--llguidance-beams 200]
        [--no-genlm] [--genlm-samples 8] [--genlm-random-samples 2]

Synthetic identifiers: 6-12 tokens over SmolLM2's 49,152-token vocabulary plus a final
end token (id 0, SmolLM2's ``<|endoftext|>``). Each token is drawn from a Zipf(1.1)
distribution over ranks, and the rank is mapped to a token by a permutation that depends
on the identifier's prefix so far (a hash of it): every node of the tree has its own
popular continuations, as titles or semantic ids do ("List of ...", shared clusters), so
identifiers share prefixes at every depth rather than only at the first token.
Duplicates are dropped, so a size may hold a handful fewer identifiers than asked.

For each size:

- **build seconds**: ``CompactTrie.build`` from Python lists (the API a caller uses), and
  ``CompactTrie.from_padded`` from one padded matrix (no per-identifier objects);
- **bytes per identifier**: ``CompactTrie.nbytes / len``, against the dict
  ``TokenTrie`` measured with tracemalloc (only at ``--dict-sizes``: its per-node bitmask
  is a Python int with one bit per identifier *index*, so its memory per identifier
  grows linearly with the set size: ~10 KB at 10k, extrapolated ~70 KB at 100k, i.e.
  ~7 GB, which is why 100k and 1M are not run for it by default);
- **µs per decoding step** for a beam of ``--beam`` states: one step is
  ``allowed_nodes(handles)`` (the allowed next tokens of every state) plus
  ``step(handles, tokens)`` (advance each by one allowed token), timed one step at a
  time while walking ``--beams-timed`` beams of random live identifiers from the root
  through their first 7 tokens (every identifier has at least 7), median reported; the
  same with a ``(beam, 49152)`` boolean numpy mask instead of token lists; and the plain
  step after 1% of the identifiers were removed and 1% new ones added (so the delta
  layer is consulted and live counts filtered);
- remove / add / compact / save / load seconds;
- **llguidance** (``_decode_llguidance.py``; skipped with a note when it is not
  installed): the same beam steps with llguidance computing the masks from a Lark
  grammar of the identifiers over a fixed-width 3-byte tokenizer (the benchmark's ids +
  256 byte tokens), at ``--llguidance-sizes``, against the CompactTrie mask column.

Then, once (``_decode_awrs.py``, ``--no-awrs`` skips it):

- **AWRS check ratio** over ``--awrs-size`` identifiers: constraint evaluations of
  ``awrs_generate`` per generated token against full-vocabulary masking (``V`` per
  token), with toy bigram LMs over the 49,152-token vocabulary (Zipf(1.1) next-token
  distributions on a per-context permutation): a *random* LM, unrelated to the
  identifiers, and *aligned* LMs that lift one allowed token along a live identifier to
  the top logit + delta (delta 0, 2, 4, 6), as a model trained on the identifiers does.
  ``awrs_check_ratio`` is the aligned delta-6 LM's ratio with every mask fallback
  charged ``V`` evaluations;
- **AWRS distribution check**: on 6 identifiers over a 20-token vocabulary, the total
  variation distance of the unweighted samples to the exact locally constrained
  distribution and of the importance-weighted estimate to the exact globally
  constrained one (``tests/decoding/test_awrs_distribution.py`` asserts the same);
- **genlm-control** (``_decode_genlm.py``; only where ``genlm.control`` imports, it is
  no relevo dependency): its ``AWRS`` sampler's checks per token on the same toy case.

Results go to ``benchmarks/results/decode.{json,md,png}``. ``--json`` prints the headline
numbers on stdout.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import _common as common
import _decode_awrs as awrs
import _decode_genlm as genlm
import _decode_llguidance as llg
import numpy as np

VOCAB = 49_152
END = 0
ZIPF_S = 1.1
MIN_LEN, MAX_LEN = 6, 12
WALK = MIN_LEN + 1  # tokens every identifier has (content + end)
SIZES = (1_000, 10_000, 100_000, 1_000_000)
DICT_SIZES = (1_000, 10_000)
LLG_SIZES = SIZES
NOTE = (
    "awrs_check_ratio: V x tokens generated / AWRS constraint checks, mask fallbacks "
    "charged V checks each, for a toy LM aligned with the identifiers (an allowed token "
    "lifted to the top logit + 6); a random LM's ratio is awrs_check_ratio_random_lm."
)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def command_line() -> str:
    script = Path(sys.argv[0])
    try:
        script_s = str(script.resolve().relative_to(common.REPO))
    except ValueError:
        script_s = str(script)
    exe = Path(sys.executable)  # .venv/bin/python, unless run from another environment
    try:
        exe_s = str(exe.relative_to(common.REPO))
    except ValueError:
        exe_s = str(exe)
    return shlex.join([exe_s, script_s, *sys.argv[1:]])


# -- identifiers --------------------------------------------------------------------------------
def identifiers(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(matrix (k, MAX_LEN + 1) padded with -1, lengths)`` of ``k <= n`` distinct identifiers."""
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, VOCAB, dtype=np.float64) ** -ZIPF_S
    cdf = np.cumsum(ranks / ranks.sum())
    lengths = rng.integers(MIN_LEN, MAX_LEN + 1, size=n)
    mat = np.full((n, MAX_LEN + 1), -1, dtype=np.int64)
    prefix_hash = np.zeros(n, dtype=np.int64)
    for j in range(MAX_LEN):
        rank = np.minimum(np.searchsorted(cdf, rng.random(n)), VOCAB - 2)
        # a prefix-dependent bijection of ranks onto tokens 1 .. VOCAB - 1
        tok = 1 + (rank * 7919 + prefix_hash) % (VOCAB - 1)
        mat[:, j] = np.where(j < lengths, tok, -1)
        prefix_hash = (prefix_hash * 1_000_003 + tok) % (2**31 - 1)
    mat[np.arange(n), lengths] = END
    lengths = lengths + 1
    order = np.lexsort(mat.T[::-1])
    srt = mat[order]
    keep = np.ones(n, dtype=bool)
    keep[1:] = (srt[1:] != srt[:-1]).any(axis=1)
    picked = np.sort(order[keep])  # original (random) order, duplicates dropped
    return mat[picked], lengths[picked]


def as_lists(mat: np.ndarray, lengths: np.ndarray) -> list[list[int]]:
    rows = mat.tolist()
    return [r[:n] for r, n in zip(rows, lengths.tolist(), strict=True)]


# -- measurements ----------------------------------------------------------------------------------
def step_times(
    trie: Any, walks: np.ndarray, beam: int, *, mask: bool = False, cpu: list[float] | None = None
) -> list[float]:
    """Seconds of each step: allowed tokens (or a mask) of ``beam`` states, then advance them.

    With ``cpu``, the CPU seconds of each step (this process) are appended to it too: on
    a shared machine wall-clock steps include time spent waiting for a core.
    """
    times: list[float] = []
    clock = time.perf_counter
    cpu_clock = time.process_time
    for b in range(0, len(walks) - beam + 1, beam):
        toks = walks[b : b + beam]
        handles = np.full(beam, trie.root(), dtype=np.int64)
        for d in range(WALK):
            col = toks[:, d]
            c0 = cpu_clock()
            t0 = clock()
            if mask:
                trie.mask(handles, VOCAB)
            else:
                trie.allowed_nodes(handles)
            handles = trie.step(handles, col)
            times.append(clock() - t0)
            if cpu is not None:
                cpu.append(cpu_clock() - c0)
        if bool(np.any(handles < 0)):
            raise RuntimeError("a live identifier fell off the trie while stepping")
    return times


def dict_step_times(trie: Any, walks: list[list[int]], beam: int) -> list[float]:
    """The same walk over the dict ``TokenTrie`` (list of children, then dict lookups)."""
    times: list[float] = []
    clock = time.perf_counter
    for b in range(0, len(walks) - beam + 1, beam):
        toks = walks[b : b + beam]
        nodes = [trie.root] * beam
        for d in range(WALK):
            t0 = clock()
            for node in nodes:
                list(node.children)
            nodes = [node.children[t[d]] for node, t in zip(nodes, toks, strict=True)]
            times.append(clock() - t0)
    return times


def dict_trie_bytes(seqs: list[list[int]]) -> tuple[float, float]:
    """(bytes per identifier held by a dict TokenTrie, build seconds), by tracemalloc."""
    from relevo.decoding import TokenTrie

    tracemalloc.start()
    t0 = time.perf_counter()
    trie = TokenTrie(seqs)
    secs = time.perf_counter() - t0
    held, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del trie
    return held / len(seqs), secs


def run_size(n: int, args: argparse.Namespace) -> dict[str, Any]:
    from relevo.decoding import CompactTrie, TokenTrie

    (mat, lengths), gen_s = common.timed(identifiers, n, args.seed)
    seqs = as_lists(mat, lengths)
    k = len(seqs)
    log(f"{n:,}: {k:,} distinct identifiers generated in {gen_s:.1f}s")
    trie, build_s = common.timed(CompactTrie.build, seqs)
    _, padded_s = common.timed(CompactTrie.from_padded, mat, lengths)
    out: dict[str, Any] = {
        "requested": n,
        "identifiers": k,
        "mean_tokens": float(lengths.mean()),
        "nodes": trie.nodes,
        "nodes_per_id": trie.nodes / k,
        "build_seconds": build_s,
        "from_padded_seconds": padded_s,
        "bytes_per_id": trie.bytes_per_id,
        "mib": trie.nbytes / 2**20,
    }
    rng = np.random.default_rng(args.seed + 1)
    walks = mat[rng.integers(0, k, size=args.beams_timed * args.beam), :WALK]
    cpu: list[float] = []
    times = step_times(trie, walks, args.beam, cpu=cpu)
    out["us_per_step"] = statistics.median(times) * 1e6
    out["us_per_step_cpu"] = statistics.median(cpu) * 1e6
    out["us_per_step_p90"] = float(np.percentile(times, 90)) * 1e6
    out["us_per_root_step"] = statistics.median(times[::WALK]) * 1e6
    mask_walks = walks[: max(args.beam, len(walks) // 4)]
    out["us_per_step_mask"] = (
        statistics.median(step_times(trie, mask_walks, args.beam, mask=True)) * 1e6
    )
    if args.llguidance and n in args.llguidance_sizes and llg.version() is not None:
        out["llguidance"] = llg.measure(
            seqs,
            trie,
            walks[: args.llguidance_beams * args.beam],
            vocab=VOCAB,
            end=END,
            beam=args.beam,
        )
        r = out["llguidance"]
        log(
            f"{n:,}: llguidance {r['us_per_step_mask']:.1f} us/step with mask "
            f"({r['us_per_mask']:.1f} per mask), grammar compiled in "
            f"{r['compile_seconds']:.2f}s, masks agree: {r['masks_agree_on_vocab']}"
        )

    if n in args.dict_sizes:
        out["dict_bytes_per_id"], out["dict_build_seconds"] = dict_trie_bytes(seqs)
        dtrie = TokenTrie(seqs)
        dict_walks = [seqs[i][:WALK] for i in rng.integers(0, k, size=args.beams_timed * args.beam)]
        out["dict_us_per_step"] = (
            statistics.median(dict_step_times(dtrie, dict_walks, args.beam)) * 1e6
        )
        del dtrie

    # updates: remove 1%, add 1% new identifiers (the delta), step again, then compact
    churn = max(1, k // 100)
    gone = rng.choice(k, size=churn, replace=False)
    _, out["remove_seconds"] = common.timed(trie.remove, gone)
    new_mat, new_len = identifiers(churn, args.seed + 7)
    new_seqs = [s for s in as_lists(new_mat, new_len) if s not in trie]
    _, out["add_seconds"] = common.timed(trie.add, new_seqs, range(k, k + len(new_seqs)))
    keep = np.setdiff1d(np.arange(k), gone)
    live_walks = mat[rng.choice(keep, size=args.beams_timed * args.beam), :WALK]
    out["us_per_step_after_updates"] = (
        statistics.median(step_times(trie, live_walks, args.beam)) * 1e6
    )
    _, out["compact_seconds"] = common.timed(trie.compact)
    with tempfile.TemporaryDirectory(prefix="bench-decode-") as tmp:
        _, out["save_seconds"] = common.timed(trie.save, Path(tmp) / "trie")
        back, out["load_seconds"] = common.timed(CompactTrie.load, Path(tmp) / "trie")
        if len(back) != len(trie):
            raise RuntimeError("the trie changed size in a save/load round trip")
    log(
        f"{n:,}: build {build_s:.2f}s (padded {padded_s:.2f}s), {out['bytes_per_id']:.0f} B/id, "
        f"{out['us_per_step']:.1f} us/step (CPU {out['us_per_step_cpu']:.1f}, "
        f"mask {out['us_per_step_mask']:.1f}, after updates "
        f"{out['us_per_step_after_updates']:.1f})"
        + (
            f"; dict TokenTrie {out['dict_bytes_per_id']:.0f} B/id, "
            f"{out['dict_us_per_step']:.1f} us/step"
            if "dict_bytes_per_id" in out
            else ""
        )
    )
    return out


def peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_awrs(args: argparse.Namespace, results: dict[str, Any]) -> None:
    import torch

    # torch's thread pool only fights the other process for the 2 cores here
    torch.set_num_threads(1)
    results["meta"]["torch"] = torch.__version__
    results["meta"]["torch_threads"] = torch.get_num_threads()
    mat, lengths = identifiers(args.awrs_size, args.seed)
    results["awrs"] = awrs.check_ratio(
        as_lists(mat, lengths),
        VOCAB,
        end=END,
        samples=args.awrs_samples,
        prompts=args.awrs_prompts,
        seed=args.seed,
        log=log,
    )
    results["awrs_distribution"] = []
    for max_rej in (2, 8):
        d = awrs.distribution_check(samples=args.tv_samples, max_rejections=max_rej, seed=args.seed)
        log(
            f"awrs TV (max_rejections={max_rej}): unweighted vs local "
            f"{d['tv_unweighted_vs_local']:.4f}, weighted vs global "
            f"{d['tv_weighted_vs_global']:.4f} (local vs global {d['tv_local_vs_global']:.4f})"
        )
        results["awrs_distribution"].append(d)
    if args.genlm and results["meta"]["genlm_control"] is not None:
        results["genlm"] = genlm.check_ratio(
            as_lists(mat, lengths),
            VOCAB,
            end=END,
            samples=args.genlm_samples,
            random_samples=args.genlm_random_samples,
            seed=args.seed,
            deltas=(awrs.HEADLINE_DELTA,),
            log=log,
        )


def notes(args: argparse.Namespace, results: dict[str, Any]) -> list[str]:
    """What was skipped and why, and the caveats a reader needs (also in the JSON)."""
    out: list[str] = []
    ran = [n for n in args.sizes if "llguidance" in results["sizes"][str(n)]]
    if not args.llguidance:
        out.append("llguidance: skipped (--no-llguidance).")
    elif results["meta"]["llguidance"] is None:
        out.append(
            "llguidance: not installed, its part was skipped; "
            "pip install 'relevo[bench]' (or llguidance) to run it."
        )
    else:
        skipped = [n for n in args.sizes if n not in ran]
        if skipped:
            out.append(
                "llguidance: not run at "
                + ", ".join(f"{n:,}" for n in skipped)
                + " identifiers (not in --llguidance-sizes)."
            )
        out.append(
            "llguidance needs single-byte tokens in the vocabulary: without them 1.9.1 "
            "returned an empty mask (NoExtensionBias) where the next byte was forced but no "
            "token spelled it alone; the 256 byte tokens fix that and add those byte "
            "tokens to its masks."
        )
    if not args.awrs:
        out.append("AWRS: skipped (--no-awrs); awrs_check_ratio is null.")
    else:
        out.append(
            "AWRS: toy LMs, not a trained model; the aligned LMs stand in for one. How much "
            "mass a real model puts on allowed tokens decides where between the random and "
            "the aligned rows it lands."
        )
    if results["meta"]["genlm_control"] is None:
        out.append(
            "genlm-control (the AWRS authors' implementation): not installed, so not "
            "compared. pip install --dry-run genlm-control (0.4.1) would add 47 packages "
            "(bitsandbytes 43 MB, numba + llvmlite, ipython, jsonschema, genlm-backend, "
            "genlm-bytes, genlm-grammar) but keep torch; it is not a relevo dependency. "
            "With it importable, this script compares it (_decode_genlm.py)."
        )
    elif "genlm" in results:
        out.append(
            f"genlm-control {results['meta']['genlm_control']}: imported from "
            f"{genlm.location()}, a virtual environment of its own on top of .venv's "
            "packages; it is not a relevo dependency (it adds 47 packages: bitsandbytes, "
            "numba + llvmlite, ipython, jsonschema, genlm-backend, genlm-bytes, "
            "genlm-grammar)."
        )
    return out


# -- reports ---------------------------------------------------------------------------------------
def headline(results: dict[str, Any]) -> dict[str, Any]:
    sizes = results["sizes"]
    largest = sizes[max(sizes, key=int)]
    runs = results.get("awrs", {}).get("runs", {})
    aligned = runs.get(f"aligned_delta_{awrs.HEADLINE_DELTA:g}")
    random_lm = runs.get("random")
    tv = results.get("awrs_distribution", [])
    llg_sizes = {n: r["llguidance"] for n, r in sizes.items() if "llguidance" in r}
    return {
        "us_per_step": {n: round(r["us_per_step"], 2) for n, r in sizes.items()},
        "bytes_per_id": round(largest["bytes_per_id"], 1),
        "build_seconds": round(largest["build_seconds"], 3),
        "awrs_check_ratio": round(aligned["ratio_fallbacks_charged"], 1) if aligned else None,
        "note": NOTE,
        "largest_size": int(max(sizes, key=int)),
        "dict_trie_bytes_per_id": {
            n: round(r["dict_bytes_per_id"], 1)
            for n, r in sizes.items()
            if "dict_bytes_per_id" in r
        },
        "awrs_check_ratio_random_lm": (
            round(random_lm["ratio_fallbacks_charged"], 2) if random_lm else None
        ),
        "awrs_check_ratio_fallbacks_not_charged": {
            name: round(r["ratio"], 1) for name, r in runs.items()
        },
        "awrs_checks_per_token": {
            name: round(r["checks_per_token"], 2) for name, r in runs.items()
        },
        "awrs_fallbacks_per_token": {
            name: round(r["fallbacks_per_token"], 4) for name, r in runs.items()
        },
        "awrs_tv": {
            f"max_rejections_{d['max_rejections']}": {
                "unweighted_vs_local": round(d["tv_unweighted_vs_local"], 4),
                "weighted_vs_global": round(d["tv_weighted_vs_global"], 4),
                "local_vs_global": round(d["tv_local_vs_global"], 4),
            }
            for d in tv
        },
        "llguidance_us_per_step_mask": {
            n: round(r["us_per_step_mask"], 1) for n, r in llg_sizes.items()
        },
        "compact_trie_us_per_step_mask": {
            n: round(sizes[n]["us_per_step_mask"], 1) for n in llg_sizes
        },
        "genlm_awrs_checks_per_token": {
            name: round(r["checks_per_token"], 2)
            for name, r in results.get("genlm", {}).get("runs", {}).items()
        },
        "notes": results["notes"],
    }


def write_markdown(results: dict[str, Any], path: Path) -> None:
    m = results["meta"]
    lines = [
        "# Constrained decoding over document identifiers: CompactTrie",
        "",
        f"Synthetic identifiers: {MIN_LEN}-{MAX_LEN} tokens over a {VOCAB:,}-token vocabulary "
        f"(prefix-dependent Zipf({ZIPF_S}) draws) plus an end token. A step = allowed next "
        f"tokens of a beam of {m['beam']} states + advancing each by one allowed token; median "
        f"over {m['beams_timed']} beams x {WALK} steps walking random live identifiers from the "
        f"root. `{m['command']}` on {m['machine']} (shared: 1-min load average "
        f"{m['load_average_before'][0]} before, {m['load_average_after'][0]} after), numpy "
        f"{m['numpy']}; peak RSS of the run {m['peak_rss_mib']:,.0f} MiB.",
        "",
    ]
    headers = [
        "identifiers",
        "nodes/id",
        "build s (lists / padded)",
        "B/id",
        "dict TokenTrie B/id",
        "µs/step",
        "µs/step CPU",
        "µs/step p90",
        "µs root step",
        "µs/step with mask",
        "µs/step after 1% remove + 1% add",
        "dict TokenTrie µs/step",
        "remove / add / compact s",
        "save / load s",
    ]
    rows = []
    for r in results["sizes"].values():
        rows.append(
            [
                f"{r['identifiers']:,}",
                f"{r['nodes_per_id']:.2f}",
                f"{r['build_seconds']:.2f} / {r['from_padded_seconds']:.2f}",
                f"{r['bytes_per_id']:.0f}",
                f"{r['dict_bytes_per_id']:,.0f}" if "dict_bytes_per_id" in r else "not run",
                f"{r['us_per_step']:.1f}",
                f"{r['us_per_step_cpu']:.1f}",
                f"{r['us_per_step_p90']:.1f}",
                f"{r['us_per_root_step']:.1f}",
                f"{r['us_per_step_mask']:.1f}",
                f"{r['us_per_step_after_updates']:.1f}",
                f"{r['dict_us_per_step']:.1f}" if "dict_us_per_step" in r else "not run",
                f"{r['remove_seconds']:.3f} / {r['add_seconds']:.3f} / {r['compact_seconds']:.2f}",
                f"{r['save_seconds']:.2f} / {r['load_seconds']:.2f}",
            ]
        )
    lines += common.md_table(headers, rows, right=range(1, len(headers)))
    lines += [
        "",
        "The dict `TokenTrie` keeps a Python-int bitmask of identifier indices per node, so its "
        "memory per identifier grows with the set size (quadratic in total); it is measured "
        "(tracemalloc) only at the sizes in `--dict-sizes`. The mask column also fills a "
        f"`(beam, {VOCAB})` numpy bool array per step. After updates, states are pairs of "
        "main and delta nodes and removed children are filtered out, hence the slower steps.",
        "",
    ]
    lines += llg.markdown(results, walk=WALK)
    lines += awrs.markdown(results, genlm.markdown(results))
    lines += ["## Notes", ""] + [f"- {n}" for n in results["notes"]] + [""]
    path.write_text("\n".join(lines), "utf-8")


def write_plot(results: dict[str, Any], path: Path) -> None:
    plt = common.pyplot()
    sizes = results["sizes"]
    ns = [r["identifiers"] for r in sizes.values()]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    ax = axes[0]
    for key, label in (
        ("us_per_step", "allowed tokens + step"),
        ("us_per_step_mask", "bool mask + step"),
        ("us_per_step_after_updates", "after 1% remove + 1% add"),
    ):
        ax.plot(ns, [r[key] for r in sizes.values()], marker="o", label=label)
    dict_n = [r["identifiers"] for r in sizes.values() if "dict_us_per_step" in r]
    if dict_n:
        ax.plot(
            dict_n,
            [r["dict_us_per_step"] for r in sizes.values() if "dict_us_per_step" in r],
            marker="s",
            linestyle="--",
            label="dict TokenTrie",
        )
    llg_n = [r["identifiers"] for r in sizes.values() if "llguidance" in r]
    if llg_n:
        ax.plot(
            llg_n,
            [r["llguidance"]["us_per_step_mask"] for r in sizes.values() if "llguidance" in r],
            marker="^",
            linestyle=":",
            label="llguidance mask + consume",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("identifiers")
    ax.set_ylabel(f"µs per step (beam {results['meta']['beam']}, median)")
    ax.set_title("decoding step", fontsize=10)
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.plot(ns, [r["bytes_per_id"] for r in sizes.values()], marker="o", label="CompactTrie")
    if dict_n:
        ax.plot(
            dict_n,
            [r["dict_bytes_per_id"] for r in sizes.values() if "dict_bytes_per_id" in r],
            marker="s",
            linestyle="--",
            label="dict TokenTrie (tracemalloc)",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("identifiers")
    ax.set_ylabel("bytes per identifier")
    ax.set_title("memory", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    common.save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = common.parser(__doc__, summary_only=True)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument(
        "--dict-sizes",
        type=int,
        nargs="*",
        default=list(DICT_SIZES),
        help="sizes at which the dict TokenTrie is also measured (its memory grows quadratically)",
    )
    parser.add_argument("--beam", type=int, default=10)
    parser.add_argument("--beams-timed", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-awrs", dest="awrs", action="store_false", help="skip the AWRS check ratio and TV"
    )
    parser.add_argument("--awrs-size", type=int, default=10_000, help="identifiers for AWRS")
    parser.add_argument("--awrs-samples", type=int, default=32, help="AWRS samples per prompt")
    parser.add_argument("--awrs-prompts", type=int, default=2, help="AWRS prompts per LM")
    parser.add_argument("--tv-samples", type=int, default=4000)
    parser.add_argument(
        "--no-genlm", dest="genlm", action="store_false", help="skip genlm-control's AWRS"
    )
    parser.add_argument(
        "--genlm-samples", type=int, default=8, help="genlm sequences per aligned LM"
    )
    parser.add_argument(
        "--genlm-random-samples", type=int, default=2, help="genlm sequences, random LM"
    )
    parser.add_argument(
        "--no-llguidance", dest="llguidance", action="store_false", help="skip llguidance"
    )
    parser.add_argument("--llguidance-sizes", type=int, nargs="*", default=list(LLG_SIZES))
    parser.add_argument(
        "--llguidance-beams", type=int, default=200, help="beams timed for llguidance"
    )
    parser.add_argument("--json", action="store_true", help="print the headline numbers on stdout")
    common.add_out(parser)
    args = parser.parse_args(argv)

    info = common.machine_info()
    results: dict[str, Any] = {
        "meta": {
            "command": command_line(),
            "machine": common.machine_line(),
            "python": info["python"],
            "numpy": np.__version__,
            "beam": args.beam,
            "beams_timed": args.beams_timed,
            "load_average_before": common.load_average(),
        },
        "sizes": {},
    }
    results["meta"]["llguidance"] = llg.version()
    results["meta"]["genlm_control"] = genlm.version()
    for n in sorted(args.sizes):
        results["sizes"][str(n)] = run_size(n, args)
    if args.awrs:
        run_awrs(args, results)
    results["meta"]["load_average_after"] = common.load_average()
    results["meta"]["peak_rss_mib"] = peak_rss_mib()
    results["notes"] = notes(args, results)
    results["headline"] = headline(results)
    common.write_results(args.out, "decode", results, markdown=write_markdown, plot=write_plot)
    log(f"wrote {args.out / 'decode.json'}, decode.md, decode.png")
    if args.json:
        print(json.dumps(results["headline"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
