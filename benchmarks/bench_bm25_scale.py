"""BM25 at scale: relevo's BM25Index against bm25s and tantivy on synthetic corpora of 20k to 1M documents.

Corpora: a Zipfian vocabulary (50,000 terms, exponent 1.07, term ``w<rank>``), no
stopwords, document lengths like MS MARCO passages (lognormal, mean ~56 words, 5..250),
fixed seed; 1,000 queries of 3-8 words drawn from the same distribution; top-10.
Every system gets the same tokens: relevo (``add_tokenized`` / ``search_tokenized``)
and bm25s take the token lists, tantivy indexes the pre-joined tokens with its
``whitespace`` tokenizer (its scores differ slightly: it stores document lengths in
one byte).

Each system builds, saves, and then loads and queries in separate subprocesses
(``OMP_NUM_THREADS=1``, ``NUMBA_NUM_THREADS=1``), so that peak RSS (``ru_maxrss``)
is each system's own. The build process holds the corpus (the same token lists for
all), so its peak includes them; ``build_peak_over_corpus_mb`` subtracts the RSS after
making the corpus. The peak (``VmHWM``) is reset once the corpus is made, whose own
generation peaks higher than what it keeps. The query process loads the saved index
(relevo memory-maps it, its default; bm25s is measured with ``mmap=False``, its default, and ``mmap=True``),
reports the RSS after load and after the queries, and times the 1,000 queries in one
call (a loop for tantivy), best of ``--repeats``, single-threaded.

Systems: ``relevo`` (its default where numba is installed: per query, the numba
MaxScore kernel or the term-at-a-time one, whichever the query's posting counts say is
cheaper), ``relevo-maxscore`` (MaxScore always), ``relevo-taat`` (term-at-a-time
always), ``relevo-scipy`` (the scipy product, the fallback without numba), ``bm25s-numba`` / ``bm25s-numpy`` (``method="lucene"``,
k1=1.2, b=0.75, its two backends), ``bm25s-numba-mmap``, ``tantivy`` (BM25 k1=1.2,
b=0.75, lucene idf; block-max WAND). Top-10 overlap is against ``relevo-scipy``.

Usage::

    .venv/bin/python benchmarks/bench_bm25_scale.py [--sizes 20000 100000 200000 1000000]
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as common

VOCAB = 50_000
EXPONENT = 1.07
N_QUERIES = 1000
K = 10
SEED = 13
SYSTEMS = (
    "relevo",
    "relevo-maxscore",
    "relevo-taat",
    "relevo-scipy",
    "bm25s-numba",
    "bm25s-numba-mmap",
    "bm25s-numpy",
    "tantivy",
)
BUILDS = {"relevo": "relevo", "bm25s": "bm25s", "tantivy": "tantivy"}


def family(system: str) -> str:
    return system.split("-")[0]


# -- data ----------------------------------------------------------------------------


def _probabilities() -> Any:
    import numpy as np

    p = np.arange(1, VOCAB + 1, dtype=np.float64) ** -EXPONENT
    return p / p.sum()


def make_corpus(n_docs: int) -> list[list[str]]:
    import numpy as np

    rng = np.random.default_rng(SEED)
    # MS MARCO passages: mean ~56 words, long right tail.
    lengths = np.clip(np.round(rng.lognormal(np.log(52.0), 0.4, n_docs)), 5, 250).astype(np.int64)
    ids = rng.choice(VOCAB, size=int(lengths.sum()), p=_probabilities())
    words = [f"w{i}" for i in range(VOCAB)]
    flat = list(map(words.__getitem__, ids.tolist()))
    bounds = np.concatenate([[0], np.cumsum(lengths)]).tolist()
    return [flat[bounds[i] : bounds[i + 1]] for i in range(n_docs)]


def make_queries() -> list[list[str]]:
    import numpy as np

    rng = np.random.default_rng(SEED + 1)
    p = _probabilities()
    return [
        [f"w{i}" for i in rng.choice(VOCAB, size=int(rng.integers(3, 9)), p=p)]
        for _ in range(N_QUERIES)
    ]


# -- memory ------------------------------------------------------------------------------


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def reset_peak() -> bool:
    """Reset the process's peak RSS (``VmHWM``) to its current RSS; False where Linux refuses."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


def hwm_mb() -> float:
    """Peak RSS since the last :func:`reset_peak` (``VmHWM``), else since the start, MB."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return peak_mb()


def rss_mb() -> dict[str, float]:
    """Resident set now: total, anonymous and file-backed (mapped payloads), MB."""
    out = {}
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = round(int(value.split()[0]) / 1024.0, 1)
    return {
        "rss": out.get("VmRSS", 0.0),
        "anon": out.get("RssAnon", 0.0),
        "file": out.get("RssFile", 0.0),
    }


# -- workers (one system, one step, one process) -------------------------------------------


def build_worker(system: str, n_docs: int, where: Path) -> dict[str, Any]:
    docs = make_corpus(n_docs)
    base = rss_mb()["rss"]
    # Making the corpus peaks above what it keeps (its id arrays); measure the build
    # from here on.
    was_reset = reset_peak()
    start = time.perf_counter()
    if system == "relevo":
        from relevo.indexes.bm25 import BM25Index

        index = BM25Index(method="lucene", k1=1.2, b=0.75)
        index.add_tokenized(docs)
        index._fresh()  # builds the contributions (otherwise done by the first search)
        build_s = time.perf_counter() - start
        params = index.save(where)
        (where / "params.json").write_text(json.dumps(params), "utf-8")
    elif system == "bm25s":
        import bm25s

        retriever = bm25s.BM25(method="lucene", k1=1.2, b=0.75)
        retriever.index(docs, show_progress=False)
        build_s = time.perf_counter() - start
        retriever.save(where)
    else:
        import tantivy

        schema_builder = tantivy.SchemaBuilder()
        schema_builder.add_integer_field("id", stored=True)
        schema_builder.add_text_field(
            "body", stored=False, tokenizer_name="whitespace", index_option="freq"
        )
        schema = schema_builder.build()
        index = tantivy.Index(schema, path=str(where))
        writer = index.writer(heap_size=512_000_000, num_threads=1)
        for i, d in enumerate(docs):
            writer.add_document(tantivy.Document(id=i, body=" ".join(d)))
        writer.commit()
        writer.wait_merging_threads()
        build_s = time.perf_counter() - start
    size = sum(f.stat().st_size for f in where.rglob("*") if f.is_file())
    return {
        "index_s": round(build_s, 3),
        "build_peak_mb": round(hwm_mb(), 1),
        "build_peak_since": "corpus made (VmHWM reset)" if was_reset else "process start",
        "corpus_rss_mb": base,
        "build_peak_over_corpus_mb": round(hwm_mb() - base, 1),
        "disk_mb": round(size / 2**20, 1),
        "postings": sum(len(set(d)) for d in docs),
    }


def query_worker(system: str, where: Path, repeats: int, top_out: Path) -> dict[str, Any]:
    import numpy as np

    queries = make_queries()
    before = rss_mb()
    start = time.perf_counter()
    first_s = None
    if family(system) == "relevo":
        from relevo.indexes.bm25 import BM25Index

        backend = {
            "relevo": "auto",
            "relevo-maxscore": "numba",
            "relevo-taat": "numba-taat",
            "relevo-scipy": "scipy",
        }[system]
        params = json.loads((where / "params.json").read_text("utf-8"))
        index = BM25Index.load(where, params)
        index.backend = backend
        load_s = time.perf_counter() - start
        after_load = rss_mb()
        t0 = time.perf_counter()
        index.search_tokenized(queries[:1], K)  # first call: JIT cache load / compile
        first_s = time.perf_counter() - t0

        def run() -> Any:
            return index.search_tokenized(queries, K)[1]

    elif family(system) == "bm25s":
        import bm25s

        backend = "numpy" if system == "bm25s-numpy" else "numba"
        retriever = bm25s.BM25.load(where, mmap=system.endswith("mmap"), backend=backend)
        vocab = retriever.vocab_dict
        qs = [[t for t in q if t in vocab] or [next(iter(vocab))] for q in queries]
        load_s = time.perf_counter() - start
        after_load = rss_mb()
        t0 = time.perf_counter()
        retriever.retrieve(qs[:1], k=K, show_progress=False)
        first_s = time.perf_counter() - t0

        def run() -> Any:
            return retriever.retrieve(qs, k=K, show_progress=False, n_threads=0)[0]

    else:
        import tantivy

        index = tantivy.Index.open(str(where))
        index.reload()
        searcher = index.searcher()
        load_s = time.perf_counter() - start
        after_load = rss_mb()
        parsed = [index.parse_query(" ".join(q), ["body"]) for q in queries]

        def run() -> Any:
            return [searcher.search(q, K).hits for q in parsed]

    best = float("inf")
    out = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = run()
        best = min(best, time.perf_counter() - t0)
    if system == "tantivy":
        top = np.full((len(queries), K), -1, np.int64)
        for i, hits in enumerate(out):
            for j, (_, addr) in enumerate(hits):
                top[i, j] = searcher.doc(addr)["id"][0]
    else:
        top = np.asarray(out, dtype=np.int64)
    np.save(top_out, top)
    return {
        "load_s": round(load_s, 3),
        "first_query_s": None if first_s is None else round(first_s, 4),
        "rss_before_load_mb": before["rss"],
        "rss_after_load_mb": after_load["rss"],
        "rss_after_load_over_start_mb": round(after_load["rss"] - before["rss"], 1),
        "rss_after_load_detail": after_load,
        "rss_after_queries_mb": rss_mb()["rss"],
        "query_peak_mb": round(peak_mb(), 1),
        "qps": round(len(queries) / best, 1),
    }


# -- driver --------------------------------------------------------------------------------


def _worker(args: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def overlap(a: Any, b: Any) -> float:
    hits = 0
    total = 0
    for x, y in zip(a, b, strict=True):
        ref = {int(v) for v in y if v >= 0}
        total += max(len(ref), 1)
        hits += len(ref & {int(v) for v in x if v >= 0})
    return round(hits / max(total, 1), 4)


def run_size(n_docs: int, systems: list[str], repeats: int, tmp: Path) -> dict[str, Any]:
    import numpy as np

    out: dict[str, Any] = {"n_docs": n_docs, "load_before": common.load_average(), "systems": {}}
    builds = {}
    for fam in common.unique(family(s) for s in systems):
        where = tmp / f"{fam}-{n_docs}"
        shutil.rmtree(where, ignore_errors=True)
        where.mkdir(parents=True)
        print(f"[{n_docs}] build {fam}", file=sys.stderr, flush=True)
        builds[fam] = _worker(["build", fam, str(n_docs), str(where)])
        out.setdefault("postings", builds[fam].get("postings"))
    tops = {}
    for system in systems:
        fam = family(system)
        where = tmp / f"{fam}-{n_docs}"
        top_path = tmp / f"top-{system}-{n_docs}.npy"
        print(f"[{n_docs}] query {system}", file=sys.stderr, flush=True)
        res = _worker(["query", system, str(where), str(repeats), str(top_path)])
        build = {k: v for k, v in builds[fam].items() if k != "postings"}
        out["systems"][system] = {**build, **res}
        tops[system] = np.load(top_path)
    ref = tops.get("relevo-scipy", tops[systems[0]])
    for system in systems:
        out["systems"][system]["top10_overlap_vs_relevo_scipy"] = overlap(tops[system], ref)
        out["systems"][system]["top10_identical_to_relevo_scipy"] = bool(
            np.array_equal(tops[system], ref)
        )
    for fam in builds:
        shutil.rmtree(tmp / f"{fam}-{n_docs}", ignore_errors=True)
    out["load_after"] = common.load_average()
    return out


def _repeats(payload: dict[str, Any]) -> str:
    counts = sorted(
        {
            r.get("repeats", payload["repeats"])
            for size in payload["sizes"]
            for r in size["systems"].values()
        }
    )
    return " or ".join(map(str, counts)) or str(payload["repeats"])


def markdown(payload: dict[str, Any], path: Path) -> None:
    lines = [
        "# BM25 at scale: relevo vs bm25s vs tantivy",
        "",
        f"Synthetic corpora: Zipfian vocabulary ({VOCAB:,} terms, exponent {EXPONENT}), no stopwords, "
        "MS MARCO-like lengths (mean ~56 words); 1,000 queries of 3-8 words; top-10; same tokens "
        "for every system. Single-threaded, each system in its own processes "
        f"({payload['machine']}, shared with other work; load averages per size below). "
        "QPS: best of "
        f"{_repeats(payload)} runs of the 1,000-query batch (`repeats` per row in the JSON). Memory in MB: `build peak` is the "
        "build process's peak RSS from the moment the corpus is made (`VmHWM` reset then; it "
        "includes the corpus token lists, the same for all; `over corpus` subtracts them), `after load` is the RSS of a fresh process after "
        "loading the saved index, `query peak` that process's ru_maxrss after the queries.",
        "",
    ]
    rows = []
    for size in payload["sizes"]:
        ref = size["systems"].get("bm25s-numba") or {}
        for name, r in size["systems"].items():
            ratio = f"{r['qps'] / ref['qps']:.2f}" if ref and name.startswith("relevo") else ""
            rows.append(
                [
                    f"{size['n_docs']:,}",
                    name,
                    f"{r['index_s']:.1f}",
                    f"{r['qps']:,.0f}",
                    ratio,
                    f"{r['build_peak_mb']:,.0f}",
                    f"{r['build_peak_over_corpus_mb']:,.0f}",
                    f"{r['rss_after_load_mb']:,.0f}",
                    f"{r['query_peak_mb']:,.0f}",
                    f"{r['disk_mb']:,.0f}",
                    "" if r["first_query_s"] is None else f"{r['first_query_s'] * 1000:.0f}",
                    f"{100 * r['top10_overlap_vs_relevo_scipy']:.1f}%",
                    "{} / {}".format(
                        *r.get("load_avg", [size["load_before"][0], size["load_after"][0]])
                    ),
                ]
            )
    lines += common.md_table(
        [
            "docs",
            "system",
            "index s",
            "QPS",
            "×bm25s-numba",
            "build peak",
            "over corpus",
            "after load",
            "query peak",
            "disk",
            "1st query ms",
            "top-10 overlap",
            "load avg",
        ],
        rows,
        right=range(2, 13),
    )
    lines += [
        "",
        "- `relevo`: the default backend (numba; per query MaxScore, with a threshold pre-pass "
        "over its rarest terms, or term-at-a-time where that is cheaper); `relevo-maxscore` / `relevo-taat`: one numba kernel always; `relevo-scipy`: the "
        "scipy sparse product (the fallback without numba). All four return identical ids, scores "
        "and tie order (`top10_identical_to_relevo_scipy` in the JSON).",
        "- `--merge` runs replace single systems of a size (rows measured at another time: "
        "compare the load averages). On this shared 2-CPU machine one system's QPS varies by "
        "up to ~30% between runs, so ratios between rows of different runs carry that noise.",
        "- top-10 overlap: share of `relevo-scipy`'s top-10 found by the system (tantivy quantises "
        "document lengths, so its scores differ slightly).",
        "- `1st query ms`: the first search after load in a fresh process (numba loads its on-disk "
        "cache; bm25s compiles or loads its numba functions).",
        "",
    ]
    path.write_text("\n".join(lines), "utf-8")


def plot(payload: dict[str, Any], path: Path) -> None:
    plt = common.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    sizes = [s["n_docs"] for s in payload["sizes"]]
    names = common.unique(n for s in payload["sizes"] for n in s["systems"])
    for name in names:
        qps = [s["systems"][name]["qps"] for s in payload["sizes"] if name in s["systems"]]
        mem = [
            s["systems"][name]["query_peak_mb"] for s in payload["sizes"] if name in s["systems"]
        ]
        xs = [s["n_docs"] for s in payload["sizes"] if name in s["systems"]]
        axes[0].plot(xs, qps, marker="o", label=name)
        axes[1].plot(xs, mem, marker="o", label=name)
    for ax, title in zip(
        axes,
        ("QPS (1,000 queries, top-10, 1 thread)", "peak RSS of the query process (MB)"),
        strict=True,
    ):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("documents")
        ax.set_title(title)
        ax.set_xticks(sizes)
        ax.set_xticklabels([f"{n:,}" for n in sizes])
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    common.save_figure(fig, path)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        step, system = sys.argv[2], sys.argv[3]
        if step == "build":
            res = build_worker(system, int(sys.argv[4]), Path(sys.argv[5]))
        else:
            res = query_worker(system, Path(sys.argv[4]), int(sys.argv[5]), Path(sys.argv[6]))
        print(json.dumps(res))
        return
    ap = common.parser(__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[20_000, 100_000, 200_000, 1_000_000])
    ap.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    common.add_repeats(ap, 3)
    common.add_out(ap)
    ap.add_argument(
        "--merge",
        action="store_true",
        help="update the systems run now in an existing bm25-scale.json instead of replacing it",
    )
    ap.add_argument(
        "--tmp", type=Path, default=None, help="where indexes are built (default: a temp dir)"
    )
    args = ap.parse_args()
    payload: dict[str, Any] = {
        "machine": common.machine_line(),
        "machine_info": common.machine_info(),
        "python": common.python_version(),
        "versions": {
            d: common.dist_version(d) for d in ("numpy", "scipy", "numba", "bm25s", "tantivy")
        },
        "repeats": args.repeats,
        "threads": "OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 in every worker",
        "sizes": [],
    }
    old = args.out / "bm25-scale.json"
    if args.merge and old.exists():
        payload["sizes"] = json.loads(old.read_text("utf-8"))["sizes"]
    tmp = Path(tempfile.mkdtemp(prefix="bm25-scale-", dir=args.tmp))
    try:
        for n in args.sizes:
            res = run_size(n, list(args.systems), args.repeats, tmp)
            prev = [s for s in payload["sizes"] if s["n_docs"] == n]
            for r in res["systems"].values():
                r["repeats"] = args.repeats
            if prev:
                for name, r in res["systems"].items():
                    r["load_avg"] = [res["load_before"][0], res["load_after"][0]]
                    prev[0]["systems"][name] = r
            else:
                payload["sizes"].append(res)
            payload["sizes"].sort(key=lambda s: s["n_docs"])
            # Write after every size: a long run leaves its results so far.
            common.write_results(args.out, "bm25-scale", payload, markdown=markdown, plot=plot)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(common.write_results(args.out, "bm25-scale", payload, markdown=markdown, plot=plot))


if __name__ == "__main__":
    main()
