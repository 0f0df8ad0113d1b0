"""The memory planner: its arithmetic against small real indexes, the build check, the CLI.

Sizes are measured, never hand-written: faiss's serialized index, numpy ``nbytes``,
files on disk and ``tracemalloc`` for Python objects. A prediction more than
:data:`TOLERANCE` off fails.
"""

from __future__ import annotations

import gc
import json
import os
import tracemalloc
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from relevo import Document, Engine, hookimpl
from relevo.engine import planner
from relevo.engine.components import Index
from relevo.engine.corpus import read_corpus
from relevo.engine.docstore import DocStore
from relevo.engine.errors import ConfigError, UnknownComponentError
from relevo.testing import FakePlugin, HashingEmbedder, tiny_corpus

TOLERANCE = 0.20  # Python objects, corpus statistics
EXACT = 0.03  # arithmetic of array and file layouts
SCIFACT = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "scifact"


def close(predicted: float, measured: float, tolerance: float = TOLERANCE) -> bool:
    return abs(predicted - measured) <= tolerance * measured


def write_corpus(path: Path, docs: list[Document]) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        for d in docs:
            fh.write(json.dumps({"_id": d.id, "title": d.title, "text": d.text}) + "\n")
    return path


@pytest.fixture
def big_corpus(tmp_path) -> Path:
    """3,000 documents: the tiny corpus repeated with fresh ids and a running number."""
    base = tiny_corpus()
    docs = [
        Document(id=f"d{i}", title=b.title, text=f"{b.text} (copy {i})")
        for i, b in ((i, base[i % len(base)]) for i in range(3000))
    ]
    return write_corpus(tmp_path / "corpus.jsonl", docs)


# -- sizes ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8G", 8 << 30),
        ("512M", 512 << 20),
        ("1.5GiB", 3 << 29),
        ("2GB", 2_000_000_000),
        ("64k", 64 << 10),
        ("1048576", 1 << 20),
        (" 3 t ", 3 << 40),
        (4096, 4096),
    ],
)
def test_parse_size(text, expected):
    assert planner.parse_size(text) == expected


@pytest.mark.parametrize("bad", ["", "eight", "-1G", "0", "1.5.2G", "12 parsecs", "0M"])
def test_parse_size_refuses(bad):
    with pytest.raises(ConfigError, match="size"):
        planner.parse_size(bad)


def test_format_size():
    assert planner.format_size(512) == "512 B"
    assert planner.format_size(3 << 29) == "1.5 GiB"
    assert planner.format_size(None) == "-"


# -- faiss: the planner's copy of relevo's rules, and sizes against faiss ----------------------
def test_faiss_rules_agree_with_the_index_module():
    from relevo.indexes import faiss_index

    for n in (50, 2_500, 20_000, 1_000_000):
        assert planner.default_nlist(n) == faiss_index.default_nlist(n)
        for dim in (64, 100, 384, 768):
            assert planner.default_pq_m(dim) == faiss_index.default_pq_m(dim)
            for factory in ("Flat", "IVF{nlist},Flat", "IVF{nlist},PQ{m}", "PQ16x6", "HNSW32"):
                assert planner.resolve_faiss_factory(factory, n, dim) == (
                    faiss_index.resolve_factory(factory, n, dim)
                )


def test_bundled_table_matches_the_registry(engine):
    for name, (_, defaults) in planner.BUNDLED.items():
        reg, _ = engine.registry.get("index", name)
        assert dict(reg.options) == defaults, name


@pytest.mark.parametrize(
    ("fmt", "factory", "metric"),
    [
        ("faiss-flat", None, "ip"),
        ("faiss-ivf", None, "ip"),
        ("faiss-hnsw", None, "ip"),
        ("faiss-pq", None, "ip"),
        ("faiss-pq", None, "l2"),
        ("faiss", "SQfp16", "ip"),
        ("faiss", "IVF{nlist},SQ8", "ip"),
        ("faiss", "HNSW16,SQfp16", "ip"),
        ("faiss", "PQ16x4", "ip"),
    ],
)
def test_faiss_index_bytes_match_faiss(engine, tmp_path, fmt, factory, metric):
    faiss = pytest.importorskip("faiss")
    n, dim = 5000, 64
    options = {"device": "cpu", "metric": metric} | ({"factory": factory} if factory else {})
    index = engine.create("index", fmt, **options)
    vecs = np.random.default_rng(0).standard_normal((n, dim)).astype(np.float32)
    index.add(vecs)
    p = planner.plan(
        planner.Workload(docs=n),
        [fmt],
        dim=dim,
        options={fmt: options},
        registry=engine.registry,
    )
    stage = p.stages[0]
    assert stage.options["resolved_factory"] == index.resolved_factory
    measured = faiss.serialize_index(index._index).size
    predicted = p.parts[f"{fmt}: index"].serving
    assert close(predicted, measured, EXACT), (predicted, measured)
    if metric == "l2":  # IVF-PQ's precomputed table lives in memory only
        ivf = faiss.downcast_index(faiss.extract_index_ivf(index._index))
        assert p.parts[f"{fmt}: precomputed table"].serving == 4 * ivf.precomputed_table.size()
    index.save(tmp_path)
    on_disk = sum(f.stat().st_size for f in tmp_path.iterdir())
    assert close(stage.disk, on_disk, EXACT), (stage.disk, on_disk)


def test_unmodelled_factory_is_an_error_naming_the_grammar():
    with pytest.raises(ConfigError, match="IVFn,PQm"):
        planner.plan(
            planner.Workload(docs=100),
            ["faiss"],
            dim=64,
            options={"faiss": {"factory": "LSH"}},
        )


def test_torch_flat_bytes(engine, tmp_path):
    pytest.importorskip("torch")
    n, dim = 3000, 48
    index = engine.create("index", "torch-flat", device="cpu")
    index.add(np.random.default_rng(1).standard_normal((n, dim)).astype(np.float32))
    p = planner.plan(planner.Workload(docs=n), ["torch-flat"], dim=dim, registry=engine.registry)
    assert p.parts["torch-flat: vectors"].serving == index._vectors_np().nbytes
    index.save(tmp_path)
    on_disk = sum(f.stat().st_size for f in tmp_path.iterdir())
    assert close(p.stages[0].disk, on_disk, EXACT)


# -- bm25 and the docstore -------------------------------------------------------------------------
def test_bm25_arrays_are_exact(engine, big_corpus):
    docs, _ = read_corpus(big_corpus)
    index = engine.create("index", "bm25")
    index.add([d.content for d in docs])
    index._fresh()
    arrays = (index._tf_data, index._tf_indices, index._tf_indptr, index._doc_lengths)
    scores = index._scores
    measured = sum(a.nbytes for a in arrays) + sum(
        a.nbytes for a in (scores.data, scores.indices, scores.indptr)
    )
    assert planner.bm25_arrays(len(docs), len(index._tf_data), len(index._terms)) == measured


@pytest.mark.skipif(not SCIFACT.is_dir(), reason="needs shared/datasets/scifact")
def test_bm25_counts_and_memory_on_real_text(engine, tmp_path):
    """Postings, vocabulary and the Python memory of adding, on 2,000 SciFact abstracts."""
    w = planner.Workload.from_corpus(SCIFACT, limit=2000)
    docs, _ = read_corpus(SCIFACT, limit=2000)
    texts = [d.content for d in docs]
    engine.create("index", "bm25").add(["warm up the stemmer and scipy imports"])
    index = engine.create("index", "bm25")
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        index.add(texts)
        added, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    tokens, nnz, vocab = planner.bm25_counts(w)
    assert close(tokens, int(index._doc_lengths.sum()))
    assert close(nnz, len(index._tf_data))
    assert close(vocab, len(index._terms))
    p = planner.plan(w, ["bm25"], registry=engine.registry)
    kept = p.stages[0].kept + p.stages[0].kept_heap
    assert close(kept, added - start), (kept, added - start)
    add_peak = p.parts["bm25: tokenize"].build + p.stages[0].kept_heap
    assert close(add_peak, peak - start), (add_peak, peak - start)
    index.save(tmp_path)
    on_disk = sum(f.stat().st_size for f in tmp_path.iterdir())
    assert close(p.stages[0].disk, on_disk), (p.stages[0].disk, on_disk)


def test_workload_and_docstore_memory(big_corpus, tmp_path):
    w = planner.Workload.from_corpus(big_corpus)
    assert w.docs == 3000 and w.titled == 1.0
    gc.collect()
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        docs, _ = read_corpus(big_corpus)
        store = DocStore(docs)
        held = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
    assert close(w.avg_bytes, sum(len(d.content.encode()) for d in docs) / len(docs), 0.05)
    per_doc, disk_per_doc = planner.docstore_bytes(w)
    assert close(per_doc * w.docs, held), (per_doc * w.docs, held)
    store.save(tmp_path)
    assert close(disk_per_doc * w.docs, (tmp_path / "docstore.sqlite").stat().st_size)
    assert planner.Workload.from_corpus(big_corpus, limit=120).docs == 120


def test_collection_on_disk(engine, big_corpus, tmp_path):
    stages = ["bm25", "faiss-flat"]
    col = engine.index(big_corpus, stages=stages, embedder=HashingEmbedder(dim=32))
    engine.save(col, tmp_path / "idx")
    measured = sum(f.stat().st_size for f in (tmp_path / "idx").rglob("*") if f.is_file())
    p = planner.plan(
        planner.Workload.from_corpus(big_corpus), stages, dim=32, registry=engine.registry
    )
    assert close(p.disk, measured), (p.disk, measured)


# -- phases and alternatives --------------------------------------------------------------------------
def test_peak_is_the_matrix_beside_the_index_and_two_dense_stages_overlap():
    w = planner.Workload(docs=1_000_000, avg_words=50, avg_bytes=300, titled=0.0)
    one = planner.plan(w, ["faiss-flat"], dim=768, runtime=0)
    vectors = 4 * 1_000_000 * 768
    assert one.build_phase == "faiss-flat: add"
    assert one.build_peak >= 2 * vectors  # the embedding matrix and the index's copy
    two = planner.plan(w, ["faiss-flat", "torch-flat"], dim=768, runtime=0)
    assert two.build_peak >= 3 * vectors  # the first stage's index and matrix while embedding
    assert two.serving > one.serving + vectors * 0.99


def test_refusal_offers_alternatives_that_fit():
    w = planner.Workload(docs=2_000_000, avg_words=60, avg_bytes=380, titled=0.0)
    kw = {"dim": 768, "alternatives": False}
    flat = planner.plan(w, ["faiss-flat"], **kw)
    pq = planner.plan(w, ["faiss"], options={"faiss": {"factory": "IVF{nlist},PQ96"}}, **kw)
    limit = (flat.build_peak + pq.build_peak) // 2
    p = planner.plan(w, ["faiss-flat"], dim=768, host_mem=limit)
    assert not p.fits and p.build_peak > limit
    fitting = [a for a in p.alternatives if a["fits"]]
    factories = [a["options"].get("faiss", {}).get("factory", "") for a in fitting]
    assert any(f.startswith("IVF{nlist},PQ") for f in factories)
    for a in fitting:
        assert max(a["build_peak"], a["serving"]) <= limit
    shards = next(a for a in fitting if a["shards"])
    fewer = replace(w, docs=-(-w.docs // (shards["shards"] - 1)))
    assert not planner.plan(fewer, ["faiss-flat"], host_mem=limit, **kw).fits  # the fewest
    message = planner.refusal(p)
    assert planner.format_size(limit) in message and planner.format_size(p.build_peak) in message
    assert "IVF{nlist},PQ" in message and "shards" in message


def test_gpu_placement_and_its_alternative():
    p = planner.plan(
        planner.Workload(docs=5_000_000),
        ["faiss-flat"],
        dim=768,
        options={"faiss-flat": {"device": "cuda"}},
        host_mem=1 << 40,
        gpu_mem=8 << 30,
    )
    assert p.gpu_build is not None and p.gpu_peak > 4 * 5_000_000 * 768
    assert not p.fits
    assert any(a["fits"] and "CPU" in a["what"] for a in p.alternatives)
    assert planner.plan(planner.Workload(docs=10), ["faiss-hnsw"], dim=8).gpu_build is None
    with pytest.raises(ConfigError, match="GPU"):
        planner.plan(
            planner.Workload(docs=10),
            ["faiss-hnsw"],
            dim=8,
            options={"faiss-hnsw": {"device": "cuda"}},
        )


# -- third-party formats ---------------------------------------------------------------------------
class _Stub(Index):
    input = "vectors"

    def _add(self, items):
        pass

    def _search(self, queries, k):
        return np.zeros((len(queries), k)), np.zeros((len(queries), k), np.int64)

    def _count(self):
        return 0

    def save_payload(self, directory):
        return {}

    @classmethod
    def load_payload(cls, directory, params):
        return cls()


class Planned(_Stub):
    name = "planned"

    @classmethod
    def plan_bytes(cls, n, dim, *, bits=8, **options):
        return {"index": n * dim * bits // 8, "build_extra": 1000, "disk": 7}


class Unplanned(_Stub):
    name = "unplanned"


class Formats:
    __name__ = "test-formats"

    @hookimpl
    def register_indexes(self, register):
        register(Planned)
        register(Unplanned)


def test_plan_bytes_hook_and_unplanned_formats():
    engine = Engine(plugins=[FakePlugin(), Formats()], load_entrypoints=False)
    w = planner.Workload(docs=1000)
    p = planner.plan(
        w, ["planned"], dim=16, options={"planned": {"bits": 4}}, registry=engine.registry
    )
    assert p.parts["planned: index"].serving == 1000 * 16 * 4 // 8 and p.stages[0].disk == 7
    q = planner.plan(w, ["unplanned"], dim=16, registry=engine.registry)
    assert not q.stages[0].planned and any("plan_bytes" in note for note in q.notes)
    with pytest.raises(UnknownComponentError, match="faiss-hnsw"):
        planner.plan(w, ["annoy"], dim=16, registry=engine.registry)
    with pytest.raises(ConfigError, match="faiss-hnsw"):
        planner.plan(w, ["annoy"], dim=16)


# -- the command line --------------------------------------------------------------------------------
PLAN_KEYS = {"docs", "dim", "index", "options", "host", "gpu", "fits", "limit", "alternatives"}


def test_plan_json_shape(run):
    res = run(
        "plan",
        "--docs",
        "20000",
        "--dim",
        "64",
        "--index",
        "faiss-ivf",
        "--option",
        "nprobe=32",
        "--host-mem",
        "8G",
        "--json",
    )
    out = json.loads(res.stdout)
    assert set(out) >= PLAN_KEYS
    assert {"build_peak", "serving", "parts"} <= set(out["host"])
    assert out["docs"] == 20000 and out["dim"] == 64 and out["index"] == "faiss-ivf"
    assert out["options"]["nprobe"] == 32 and out["options"]["resolved_factory"] == "IVF512,Flat"
    assert out["fits"] is True and out["gpu"] is None and out["alternatives"] == []
    assert out["limit"]["host"] == 8 << 30
    assert out["host"]["build_peak"] >= out["host"]["parts"]["faiss-ivf: index"]["build"]
    table = run(
        "plan", "--docs", "20000", "--dim", "64", "--index", "faiss-ivf", "--host-mem", "8G"
    )
    assert "OK: fits" in table.stdout and "faiss-ivf: index" in table.stdout


def test_plan_refuses_with_numbers_and_exit_1(run):
    res = run("plan", "--docs", "30000000", "--index", "faiss-flat", "--host-mem", "32G", ok=False)
    assert res.exit_code == 1
    assert "REFUSED" in res.stdout and "32.0 GiB" in res.stdout and "(fits)" in res.stdout
    res = run(
        "plan",
        "--docs",
        "30000000",
        "--index",
        "faiss-flat",
        "--host-mem",
        "32G",
        "--json",
        ok=False,
    )
    out = json.loads(res.stdout)
    assert out["fits"] is False and out["dim"] == 384  # minilm's, known without loading it
    assert any(a["fits"] for a in out["alternatives"])


def test_plan_cli_errors(run):
    res = run("plan", "--docs", "10", "--index", "annoy", ok=False)
    assert res.exit_code == 1 and "faiss-hnsw" in res.output
    res = run("plan", "--docs", "10", "--host-mem", "lots", ok=False)
    assert res.exit_code == 1 and "not a size" in res.output
    res = run(
        "plan",
        "--docs",
        "10",
        "--index",
        "faiss-flat",
        "--embedder",
        "sentence-transformers:x",
        ok=False,
    )
    assert res.exit_code == 1 and "--dim" in res.output


def test_index_build_refuses_before_any_work(run, engine, big_corpus, tmp_path):
    w = planner.Workload.from_corpus(big_corpus)
    kw = {"dim": 64, "registry": engine.registry, "alternatives": False}
    flat = planner.plan(w, ["faiss-flat"], **kw)
    fp16 = planner.plan(w, ["faiss"], options={"faiss": {"factory": "SQfp16"}}, **kw)
    limit = (flat.build_peak + fp16.build_peak) // 2
    out = tmp_path / "idx"
    res = run(
        "index",
        "build",
        str(big_corpus),
        "--out",
        str(out),
        "--index",
        "faiss-flat",
        "--embedder",
        "hashing",
        "--host-mem",
        str(limit),
        ok=False,
    )
    assert res.exit_code == 1 and "do not fit" in res.output
    assert planner.format_size(flat.build_peak) in res.output and "SQfp16" in res.output
    assert "Traceback" not in res.output
    assert not out.exists()
    cache = Path(os.environ["RELEVO_CACHE_DIR"])
    assert not (cache / "embeddings").exists()  # nothing was embedded
    res = run(
        "index",
        "build",
        str(big_corpus),
        "--out",
        str(out),
        "--index",
        "faiss-flat",
        "--embedder",
        "hashing",
        "--host-mem",
        str(limit),
        "--no-plan",
    )
    assert out.is_dir()
    res = run(
        "index",
        "build",
        str(big_corpus),
        "--out",
        str(tmp_path / "ok"),
        "--index",
        "faiss",
        "--option",
        "faiss.factory=SQfp16",
        "--embedder",
        "hashing",
        "--host-mem",
        str(limit),
    )
    assert (tmp_path / "ok").is_dir()
