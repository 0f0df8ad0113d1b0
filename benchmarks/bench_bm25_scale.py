"""BM25 at scale: relevo's BM25Index against bm25s, tantivy and PISA on synthetic corpora of 20k to 1M documents.

Corpora: a Zipfian vocabulary (50,000 terms, exponent 1.07, term ``w<rank>``), no
stopwords, document lengths like MS MARCO passages (lognormal, mean ~56 words, 5..250),
fixed seed; 1,000 queries of 3-8 words drawn from the same distribution; top-10.
Every system gets the same tokens: relevo (``add_tokenized`` / ``search_tokenized``)
and bm25s take the token lists, tantivy indexes the pre-joined tokens with its
``whitespace`` tokenizer (its scores differ slightly: it stores document lengths in
one byte), PISA indexes the same pre-joined tokens (no stemming, no stopwords) and
gets the queries joined with spaces.

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
b=0.75, lucene idf; block-max WAND), ``pisa`` (below). Top-10 overlap is against ``relevo-scipy``.

``pisa``: PISA through ``pyterrier-pisa`` (``pip install relevo[pisa]``), at its fastest
settings here: ``PisaIndex(path, stemmer="none", stops="none", threads=1)`` (the build
runs PISA's forward-index builder, which needs two threads: ``threads + 1``), then
``index.bm25(k1=1.2, b=0.75, num_results=10, query_algorithm="maxscore",
query_weighted=True, precompute_impact=True)``: BM25 impacts precomputed and quantised
into the index (PISA's ``quantized`` scorer; with float scores the best was ~1.8-2.4x
slower at 20k and 100k), and per size the fastest of ``maxscore``, ``block_max_maxscore``
and ``block_max_wand`` over that index: the query worker times each (``qps_by_algorithm``
in the JSON) and reports the fastest (``pisa_algorithm``) as ``qps``. ``query_weighted`` counts a
repeated query term twice, as the others do. Its build time includes making that
retriever (the block-max data and the compressed index); the build intermediates the
queries never read (the forward index and the uncompressed inverted index) are then
deleted, and ``disk_build_total_mb`` in the JSON is the size before that. Its queries
run through ``pyterrier_pisa._pisathon.retrieve``, the call ``PisaRetrieve.transform``
makes, over ``(i, "w1 w2 ...")`` tuples built before the timing: the timed batch includes
PISA's own query tokenising and the docno strings and result arrays it fills, but not the
pandas frames of the transformer API (``qps_transformer`` in the JSON times
``retriever(DataFrame)``, frame built beforehand). Docnos are the relevo positions as
strings, mapped back to ints for the overlap. PISA's BM25 is its own variant: idf
``ln((N - df + 0.5) / (df + 0.5))`` floored at 1e-6 (no ``1 +`` inside: the commonest
terms of a Zipfian corpus score ~0) times ``k1 + 1``, and quantised scores, so its top-10
overlap with the lucene-idf ``relevo-scipy`` is well below 100% (~86%) by definition
(against relevo with ``method="okapi", epsilon=1e-7``, PISA's idf, it was ~99.6% at 20k).
Where ``pyterrier_pisa`` is not importable the row is skipped (``skipped`` and the reason
in the JSON). ``RELEVO_PISA_SITE``: a directory put in front of ``PYTHONPATH`` for the
pisa workers only, e.g. one made with ``pip install --no-deps --target DIR`` (pip drops
the ``tbb`` wheel's ``libtbb.so.2``, a data file, there: copy it next to
``pyterrier_pisa/_pisathon*.so``, whose RUNPATH has ``$ORIGIN``).

Usage::

    .venv/bin/python benchmarks/bench_bm25_scale.py [--sizes 20000 100000 200000 1000000]
        [--systems relevo-scipy pisa ...] [--out DIR (default benchmarks/results)] [--merge]
    RELEVO_PISA_SITE=/path/to/pisa-site .venv/bin/python benchmarks/bench_bm25_scale.py ...
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
    "relevo-okapi",
    "bm25s-numba",
    "bm25s-numba-mmap",
    "bm25s-numpy",
    "tantivy",
    "pisa",
)
BUILDS = {
    "relevo": "relevo",
    "relevo-okapi": "relevo-okapi",
    "bm25s": "bm25s",
    "tantivy": "tantivy",
    "pisa": "pisa",
}
# PISA's query algorithm and retriever settings (see the module docstring). The query
# worker times each of PISA_ALGORITHMS and reports the fastest as ``qps``.
PISA_ALGORITHM = "maxscore"
PISA_ALGORITHMS = ("maxscore", "block_max_maxscore", "block_max_wand")
PISA_RETRIEVER = {
    "k1": 1.2,
    "b": 0.75,
    "num_results": K,
    "threads": 1,
    "query_algorithm": PISA_ALGORITHM,
    "query_weighted": True,
    "precompute_impact": True,
}
# Build intermediates of pyterrier-pisa that retrieval over a prepared index never reads.
PISA_INTERMEDIATES = (
    "fwd",
    "fwd.terms",
    "fwd.documents",
    "fwd.urls",
    "inv.docs",
    "inv.freqs",
    "inv.sizes",
)


def family(system: str) -> str:
    """The build a system queries: ``relevo-okapi`` has its own (another BM25 variant)."""
    return system if system == "relevo-okapi" else system.split("-")[0]


#: relevo's BM25 variant per build: lucene (as bm25s and tantivy), and okapi with a
#: near-zero idf floor, the variant PISA scores (``ln((N - df + .5) / (df + .5))``,
#: floored), so that PISA is compared with relevo at the same scoring function.
RELEVO_METHODS = {
    "relevo": {"method": "lucene"},
    "relevo-okapi": {"method": "okapi", "epsilon": 1e-7},
}

#: Queries of at most this many words are "short": their mean latency is reported
#: per size for relevo (``short_ms_per_query``), the sub-linear growth the issue asks for.
SHORT_WORDS = 4


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


def pisa_missing() -> str | None:
    """Why ``pyterrier_pisa`` cannot be imported here, or None when it can."""
    try:
        import pyterrier_pisa  # noqa: F401
    except Exception as exc:  # ImportError, or its native library failing to load
        return f"pyterrier_pisa not importable: {type(exc).__name__}: {exc}"
    return None


def pisa_retriever(where: Path) -> Any:
    """The BM25 retriever over the PISA index at ``where`` (makes its scored index once)."""
    from pyterrier_pisa import PisaIndex

    index = PisaIndex(str(where), text_field="text", stemmer="none", stops="none", threads=1)
    return index.bm25(**PISA_RETRIEVER)


def build_worker(system: str, n_docs: int, where: Path) -> dict[str, Any]:
    if system == "pisa" and (why := pisa_missing()):
        return {"skipped": why}
    docs = make_corpus(n_docs)
    base = rss_mb()["rss"]
    # Making the corpus peaks above what it keeps (its id arrays); measure the build
    # from here on.
    was_reset = reset_peak()
    start = time.perf_counter()
    if system in RELEVO_METHODS:
        from relevo.indexes.bm25 import BM25Index

        index = BM25Index(k1=1.2, b=0.75, **RELEVO_METHODS[system])
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
    elif system == "pisa":
        from pyterrier_pisa import PisaIndex

        index = PisaIndex(str(where), text_field="text", stemmer="none", stops="none", threads=1)
        index.index({"docno": str(i), "text": " ".join(d)} for i, d in enumerate(docs))
        pisa_retriever(where)  # the block-max data and the quantised, compressed index
        build_s = time.perf_counter() - start
        total = sum(f.stat().st_size for f in where.rglob("*") if f.is_file())
        for name in PISA_INTERMEDIATES:
            (where / name).unlink(missing_ok=True)
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
    extra = {"disk_build_total_mb": round(total / 2**20, 1)} if system == "pisa" else {}
    return {
        **extra,
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
    if family(system) in RELEVO_METHODS:
        from relevo.indexes.bm25 import BM25Index

        backend = {
            "relevo": "auto",
            "relevo-okapi": "auto",
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

        short = [q for q in queries if len(q) <= SHORT_WORDS]
        short_best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            index.search_tokenized(short, K)
            short_best = min(short_best, time.perf_counter() - t0)
        short_ms = {
            "short_queries": len(short),
            "short_ms_per_query": 1e3 * short_best / len(short),
        }

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

    elif system == "pisa":
        from pyterrier_pisa import _pisathon

        retriever = pisa_retriever(where)
        load_s = time.perf_counter() - start
        after_load = rss_mb()
        batch = [(i, " ".join(q)) for i, q in enumerate(queries)]

        def search(items: list[tuple[int, str]], algorithm: str = PISA_ALGORITHM) -> Any:
            # What PisaRetrieve.transform does, without its pandas frames in and out.
            n = len(items) * K
            qidxs = np.empty(n, np.int32)
            docnos = np.empty(n, object)
            ranks = np.empty(n, np.int32)
            scores = np.empty(n, np.float32)
            size = _pisathon.retrieve(
                retriever._ctxt,
                algorithm,
                items,
                k=K,
                threads=1,
                query_weighted=1 if retriever.query_weighted else 0,
                pretokenised=False,
                result_qidxs=qidxs,
                result_docnos=docnos,
                result_ranks=ranks,
                result_scores=scores,
            )
            return qidxs[:size], docnos[:size], ranks[:size]

        t0 = time.perf_counter()
        search(batch[:1])
        first_s = time.perf_counter() - t0
        # Its own best settings at this size: each top-k algorithm over the same index.
        by_algorithm = {}
        for algorithm in PISA_ALGORITHMS:
            fastest = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                search(batch, algorithm)
                fastest = min(fastest, time.perf_counter() - t0)
            by_algorithm[algorithm] = round(len(queries) / fastest, 1)
        chosen = max(by_algorithm, key=by_algorithm.__getitem__)

        def run() -> Any:
            return search(batch, chosen)

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
    extra: dict[str, Any] = {}
    if system == "tantivy":
        top = np.full((len(queries), K), -1, np.int64)
        for i, hits in enumerate(out):
            for j, (_, addr) in enumerate(hits):
                top[i, j] = searcher.doc(addr)["id"][0]
    elif system == "pisa":
        qidxs, docnos, ranks = out
        top = np.full((len(queries), K), -1, np.int64)
        top[qidxs, ranks] = np.asarray(docnos, dtype=np.int64)  # docno = relevo position
        import pandas as pd

        frame = pd.DataFrame({"qid": [str(i) for i, _ in batch], "query": [q for _, q in batch]})
        slow = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            retriever(frame)
            slow = min(slow, time.perf_counter() - t0)
        extra = {
            "pisa_algorithm": chosen,
            "qps_by_algorithm": by_algorithm,
            "qps_transformer": round(len(queries) / slow, 1),
            "pisa_settings": {**PISA_RETRIEVER, "index": "stemmer=none stops=none threads=1"},
            "java_started": _java_started(),
            "pyterrier_pisa_version": common.dist_version("pyterrier-pisa"),
        }
    else:
        top = np.asarray(out, dtype=np.int64)
    if family(system) in RELEVO_METHODS:
        extra = {**extra, **short_ms}
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
        **extra,
    }


def _java_started() -> bool | None:
    """Whether pyterrier started a JVM in this process (PISA itself needs none)."""
    try:
        import pyterrier as pt

        return bool(pt.java.started())
    except Exception:
        return None


# -- driver --------------------------------------------------------------------------------


def _worker(args: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    site = os.environ.get("RELEVO_PISA_SITE")
    if site and family(args[1]) == "pisa":
        env["PYTHONPATH"] = os.pathsep.join(p for p in (site, env.get("PYTHONPATH")) if p)
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
        try:
            builds[fam] = _worker(["build", fam, str(n_docs), str(where)])
        except RuntimeError as exc:
            if fam != "pisa":  # an optional system: its failure must not end the run
                raise
            builds[fam] = {"skipped": f"build failed: {str(exc)[-1500:]}"}
        if "skipped" in builds[fam]:
            print(f"[{n_docs}] skip {fam}: {builds[fam]['skipped']}", file=sys.stderr, flush=True)
            continue
        out.setdefault("postings", builds[fam].get("postings"))
    tops = {}
    for system in systems:
        fam = family(system)
        if "skipped" in builds[fam]:
            out["systems"][system] = {"skipped": True, "reason": builds[fam]["skipped"]}
            continue
        where = tmp / f"{fam}-{n_docs}"
        top_path = tmp / f"top-{system}-{n_docs}.npy"
        print(f"[{n_docs}] query {system}", file=sys.stderr, flush=True)
        try:
            res = _worker(["query", system, str(where), str(repeats), str(top_path)])
        except RuntimeError as exc:
            if fam != "pisa":
                raise
            reason = f"query failed: {str(exc)[-1500:]}"
            print(f"[{n_docs}] skip {system}: {reason}", file=sys.stderr, flush=True)
            out["systems"][system] = {"skipped": True, "reason": reason}
            continue
        build = {k: v for k, v in builds[fam].items() if k != "postings"}
        out["systems"][system] = {**build, **res}
        tops[system] = np.load(top_path)
    if not tops:
        return out
    ref = tops.get("relevo-scipy", next(iter(tops.values())))
    for system in tops:
        out["systems"][system]["top10_overlap_vs_relevo_scipy"] = overlap(tops[system], ref)
        out["systems"][system]["top10_identical_to_relevo_scipy"] = bool(
            np.array_equal(tops[system], ref)
        )
    if "pisa" in tops and "relevo-okapi" in tops:  # the same BM25 variant
        out["systems"]["pisa"]["top10_overlap_vs_relevo_okapi"] = overlap(
            tops["pisa"], tops["relevo-okapi"]
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
        "# BM25 at scale: relevo vs bm25s vs tantivy vs PISA",
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
    skipped = []
    for size in payload["sizes"]:
        ref = size["systems"].get("bm25s-numba") or {}
        if ref.get("skipped"):
            ref = {}
        for name, r in size["systems"].items():
            if r.get("skipped"):
                skipped.append(f"{size['n_docs']:,} {name}: {r.get('reason', 'skipped')}")
                continue
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
        "- `relevo-okapi`: relevo's default backend over an okapi-idf build (epsilon 1e-7: "
        "idf floored at ~0, PISA's variant), the row to compare PISA with.",
        "- `relevo`: the default backend (numba; per query MaxScore, with a threshold pre-pass "
        "over its rarest terms, at most 8,192 postings, or term-at-a-time where that is cheaper; up to "
        "262,144 documents the frequent terms (in >= 1/8 of the documents) also have dense "
        "columns, and a query with one runs term-at-a-time: split, scoring only the documents "
        "its other terms list while the frequent terms' bounds cannot reach the k-th score, "
        "else adding each column in one vector pass); `relevo-maxscore` / `relevo-taat`: one numba kernel always; `relevo-scipy`: the "
        "scipy sparse product (the fallback without numba). All four return identical ids, scores "
        "and tie order (`top10_identical_to_relevo_scipy` in the JSON).",
        "- `--merge` runs replace single systems of a size (rows measured at another time: "
        "compare the load averages). On this shared 2-CPU machine one system's QPS varies by "
        "up to ~30% between runs, so ratios between rows of different runs carry that noise.",
        "- top-10 overlap: share of `relevo-scipy`'s top-10 found by the system (tantivy quantises "
        "document lengths, so its scores differ slightly; PISA's BM25 differs by definition, below).",
        "- `pisa`: PISA via pyterrier-pisa, at its fastest settings here: `PisaIndex(stemmer='none', "
        "stops='none', threads=1)` (its forward-index builder runs two threads), "
        "`bm25(k1=1.2, b=0.75, num_results=10, query_algorithm='maxscore', query_weighted=True, "
        "precompute_impact=True)`: quantised BM25 impacts (faster than float scores), and per size "
        "the fastest of maxscore / block_max_maxscore / block_max_wand (timed each: "
        "`qps_by_algorithm`, chosen: `pisa_algorithm` in the JSON). `index s` includes making the scored, compressed "
        "index; `disk` is what the queries read (the forward and uncompressed inverted indexes "
        "are deleted after the build; `disk_build_total_mb` in the JSON is the size before). QPS "
        "times `_pisathon.retrieve` (what `PisaRetrieve.transform` calls) over query strings built "
        "beforehand: it includes PISA's query tokenising and its docno strings, not pandas "
        "(`qps_transformer` in the JSON: `retriever(DataFrame)`). PISA's idf is "
        "`ln((N - df + 0.5) / (df + 0.5))` floored at ~0, not lucene's `ln(1 + ...)`, and its "
        "scores are quantised, so its overlap with `relevo-scipy` is well below 100% by definition.",
        "- `1st query ms`: the first search after load in a fresh process (numba loads its on-disk "
        "cache; bm25s compiles or loads its numba functions; PISA starts no JVM).",
        "",
    ]
    lines += growth_lines(payload)
    if skipped:
        lines += ["Skipped:", "", *[f"- {s}" for s in skipped], ""]
    path.write_text("\n".join(lines), "utf-8")


def growth_lines(payload: dict[str, Any]) -> list[str]:
    """Short-query latency per size and its growth exponent; relevo-okapi vs PISA."""
    import math

    out: list[str] = []
    sizes = sorted(payload["sizes"], key=lambda s: s["n_docs"])
    short = [
        (s["n_docs"], s["systems"]["relevo"]["short_ms_per_query"])
        for s in sizes
        if "short_ms_per_query" in s["systems"].get("relevo", {})
    ]
    if len(short) >= 2:
        out += [
            f"Short queries (at most {SHORT_WORDS} words), `relevo` default, mean ms per query; "
            "growth exponent = log(ms ratio) / log(size ratio) between neighbouring sizes "
            "(1 = linear in the corpus):",
            "",
            "| docs | short queries ms | exponent vs previous size |",
            "|---|---:|---:|",
        ]
        prev = None
        for n, ms in short:
            exp = f"{math.log(ms / prev[1]) / math.log(n / prev[0]):.2f}" if prev else ""
            out.append(f"| {n:,} | {ms:.3f} | {exp} |")
            prev = (n, ms)
        n0, ms0 = short[0]
        n1, ms1 = short[-1]
        out += [
            "",
            f"From {n0:,} to {n1:,} documents ({n1 / n0:.0f}x) short queries got "
            f"{ms1 / ms0:.1f}x slower (exponent {math.log(ms1 / ms0) / math.log(n1 / n0):.2f}).",
            "",
        ]
    pairs = []
    for s in sizes:
        okapi, pisa = s["systems"].get("relevo-okapi", {}), s["systems"].get("pisa", {})
        if "qps" in okapi and "qps" in pisa:
            pairs.append(
                f"| {s['n_docs']:,} | {okapi['qps']:,.0f} | {pisa['qps']:,.0f} | "
                f"{okapi['qps'] / pisa['qps']:.2f} | "
                f"{100 * pisa.get('top10_overlap_vs_relevo_okapi', float('nan')):.1f}% |"
            )
    if pairs:
        out += [
            "relevo at PISA's BM25 variant (`relevo-okapi`: okapi idf floored at ~0) vs PISA:",
            "",
            "| docs | relevo-okapi QPS | pisa QPS | ratio | pisa top-10 overlap with relevo-okapi |",
            "|---|---:|---:|---:|---:|",
            *pairs,
            "",
        ]
    return out


def plot(payload: dict[str, Any], path: Path) -> None:
    plt = common.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    sizes = [s["n_docs"] for s in payload["sizes"]]
    names = common.unique(n for s in payload["sizes"] for n in s["systems"])
    for name in names:
        runs = [
            s
            for s in payload["sizes"]
            if not s["systems"].get(name, {"skipped": True}).get("skipped")
        ]
        if not runs:
            continue
        qps = [s["systems"][name]["qps"] for s in runs]
        mem = [s["systems"][name]["query_peak_mb"] for s in runs]
        xs = [s["n_docs"] for s in runs]
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
    ap.add_argument(
        "--render-only", action="store_true", help="redraw the .md / .png from bm25-scale.json"
    )
    args = ap.parse_args()
    if args.render_only:
        saved = json.loads((args.out / "bm25-scale.json").read_text("utf-8"))
        print(common.write_results(args.out, "bm25-scale", saved, markdown=markdown, plot=plot))
        return
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
                if r.get("pyterrier_pisa_version"):  # importable in the pisa workers only, maybe
                    payload["versions"]["pyterrier-pisa"] = r["pyterrier_pisa_version"]
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
