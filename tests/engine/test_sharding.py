"""Sharded collections: exact merging, BM25 global statistics, the on-disk layout, Ray builds.

The reference is always the single collection over the same corpus: a sharded search
must return its top k (ids and scores), ties ordered as it orders them where the index
defines an order (BM25: score, then position), and a fused search its fused result.
"""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relevo import Document, Engine
from relevo.engine.collection import Fusion
from relevo.engine.errors import ConfigError, CorruptIndexError, IndexFormatError, RequestError
from relevo.engine.hookspecs import hookimpl
from relevo.engine.shard_build import build_sharded
from relevo.engine.sharding import FORMAT, ShardedCollection, merge_rankings, shard_bounds
from relevo.testing import FakePlugin, HashingEmbedder

WORDS = [f"w{i}" for i in range(40)]
ZIPF = 1.0 / np.arange(1, len(WORDS) + 1)
ZIPF /= ZIPF.sum()


class JitterEmbedder(HashingEmbedder):
    """Hashing plus a small text-seeded random part: dense scores without exact ties."""

    name = "jitter"

    def embed_batch(self, texts, *, kind):
        out = super().embed_batch(texts, kind=kind)
        for i, t in enumerate(texts):
            rng = np.random.default_rng(list(t.encode()) or [0])
            out[i] += 0.1 * rng.standard_normal(self.dim).astype(np.float32)
            out[i] /= np.linalg.norm(out[i])
        return out


class JitterPlugin:
    __name__ = "jitter-test-plugin"

    @hookimpl
    def register_embedders(self, register):
        register(JitterEmbedder, "jitter", description="hashing + seeded jitter (tests only)")


@pytest.fixture(scope="module")
def eng() -> Engine:
    return Engine(plugins=[FakePlugin(), JitterPlugin()], load_entrypoints=False)


def zipf_corpus(seed: int, n: int, *, unique: bool = False) -> list[Document]:
    rng = np.random.default_rng(seed)
    docs = []
    for i in range(n):
        words = rng.choice(WORDS, size=int(rng.integers(1, 12)), p=ZIPF).tolist()
        if unique:  # distinct texts: no two documents embed alike
            words.append(f"u{i}")
        docs.append(Document(id=f"d{i}", text=" ".join(words), metadata={"odd": i % 2}))
    return docs


def zipf_queries(seed: int, n: int = 6) -> list[str]:
    rng = np.random.default_rng(seed + 1)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 4)), p=ZIPF)) for _ in range(n)]


@st.composite
def splits(draw, *, min_docs: int = 3, max_docs: int = 40):
    """(seed, number of documents, shard sizes in corpus order, k)."""
    n = draw(st.integers(min_docs, max_docs))
    k_shards = draw(st.integers(1, min(6, n)))
    cuts = (
        sorted(draw(st.sets(st.integers(1, n - 1), min_size=k_shards - 1, max_size=k_shards - 1)))
        if k_shards > 1
        else []
    )
    bounds = [0, *cuts, n]
    sizes = [b - a for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    return draw(st.integers(0, 10_000)), n, sizes, draw(st.integers(1, 15))


def ranking(hits):
    return [(h.id, h.score) for h in hits]


def assert_same(a, b, tol=1e-6):
    """The same ids in the same order, scores within ``tol``."""
    assert [h.id for h in a] == [h.id for h in b]
    assert np.allclose([h.score for h in a], [h.score for h in b], rtol=0, atol=tol)


def assert_exact_topk(full, got, k, tol=1e-5):
    """``got`` is a top ``k`` of the reference ranking ``full`` (all documents): the same
    score profile, every document with the score the reference gives it, no repeats."""
    ref = full[:k]
    assert len(got) == len(ref)
    score_of = dict(ranking(full))
    for a, b in zip(ref, got, strict=True):
        assert abs(a.score - b.score) <= tol
        assert abs(score_of[b.id] - b.score) <= tol
    assert len({h.id for h in got}) == len(got)


SETTINGS = settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


# -- merging ----------------------------------------------------------------------------------
def test_shard_bounds_cover_the_corpus_evenly():
    assert shard_bounds(10, 3) == [(0, 3), (3, 6), (6, 10)]
    assert shard_bounds(2, 2) == [(0, 1), (1, 2)]
    with pytest.raises(ConfigError, match="empty"):
        shard_bounds(2, 3)
    with pytest.raises(ConfigError, match="positive"):
        shard_bounds(2, 0)


def test_merge_breaks_ties_by_shard_then_position():
    a = (["a1", "a2"], [2.0, 1.0])
    b = (["b1", "b2"], [2.0, 1.5])
    assert merge_rankings([a, b], 3) == [(0, "a1", 2.0), (1, "b1", 2.0), (1, "b2", 1.5)]


@SETTINGS
@given(splits())
def test_bm25_sharded_search_equals_the_single_index(eng, tmp_path_factory, case):
    seed, n, sizes, k = case
    docs = zipf_corpus(seed, n)
    single = eng.index(docs, stages=["bm25"])
    out = tmp_path_factory.mktemp("bm25")
    sharded = build_sharded(eng, docs, out / "ix", shards=len(sizes), sizes=sizes)
    queries = zipf_queries(seed)
    # identical ids in identical order, ties included, and the same scores
    for a, b in zip(single.search_batch(queries, k), sharded.search_batch(queries, k), strict=True):
        assert [h.id for h in a] == [h.id for h in b]
        assert np.allclose([h.score for h in a], [h.score for h in b], rtol=0, atol=1e-6)
        assert [h.rank for h in b] == list(range(1, len(b) + 1))
        assert [(h.title, h.text) for h in a] == [(h.title, h.text) for h in b]
    # a filter applies inside every shard
    flt = {"odd": 1}
    for a, b in zip(
        single.search_batch(queries, k, filter=flt),
        sharded.search_batch(queries, k, filter=flt),
        strict=True,
    ):
        assert_same(a, b)


@SETTINGS
@given(splits())
def test_dense_sharded_search_is_an_exact_top_k(eng, tmp_path_factory, case):
    seed, n, sizes, k = case
    docs = zipf_corpus(seed, n)
    stage = "faiss-flat@hashing"
    single = eng.index(docs, stages=[stage])
    out = tmp_path_factory.mktemp("dense")
    sharded = build_sharded(eng, docs, out / "ix", shards=len(sizes), stages=[stage], sizes=sizes)
    queries = zipf_queries(seed)
    # exact score ties (hashing makes many) are ordered arbitrarily by faiss itself
    for full, got in zip(
        single.search_batch(queries, n), sharded.search_batch(queries, k), strict=True
    ):
        assert_exact_topk(full, got, k)


@SETTINGS
@given(splits(min_docs=4), st.sampled_from(["rrf", "linear"]), st.integers(2, 25))
def test_fused_sharded_search_equals_the_single_collection(
    eng, tmp_path_factory, case, method, depth
):
    seed, n, sizes, k = case
    docs = zipf_corpus(seed, n, unique=True)
    stages = ["bm25", "faiss-flat@jitter"]
    fusion = Fusion(method=method, depth=depth)
    single = eng.index(docs, stages=stages, fusion=fusion)
    out = tmp_path_factory.mktemp("fused")
    sharded = build_sharded(
        eng, docs, out / "ix", shards=len(sizes), stages=stages, fusion=fusion, sizes=sizes
    )
    queries = zipf_queries(seed)
    for a, b in zip(single.search_batch(queries, k), sharded.search_batch(queries, k), strict=True):
        assert [h.id for h in a] == [h.id for h in b]
        assert np.allclose([h.score for h in a], [h.score for h in b], rtol=0, atol=1e-6)
        assert [dict(h.stages) for h in a] == [dict(h.stages) for h in b]
        assert [h.text for h in a] == [h.text for h in b]


# -- BM25 statistics --------------------------------------------------------------------------
def test_bm25_global_statistics_equal_the_single_index_statistics(eng, tmp_path):
    docs = zipf_corpus(7, 60)
    single = eng.index(docs, stages=["bm25"]).stages["bm25"].index
    sharded = build_sharded(eng, docs, tmp_path / "ix", shards=3, sizes=[10, 30, 20])
    want = single.local_statistics()
    for col in sharded.local_shards:
        index = col.stages["bm25"].index
        assert index.global_statistics == want
        assert index.local_statistics() != want  # a shard alone has other statistics
        np.testing.assert_allclose(index.avgdl, single.avgdl)
    parts = [c.stages["bm25"].index.local_statistics() for c in sharded.local_shards]
    assert parts[0].merge(*parts[1:]) == want
    man = sharded.manifest()["bm25_statistics"]["bm25"]
    assert man == {"n_docs": 60, "total_length": want.total_length, "terms": len(want.doc_freq)}


# -- the directory ----------------------------------------------------------------------------
def test_manifest_round_trip_and_load(eng, tmp_path, docs):
    out = tmp_path / "ix"
    built = build_sharded(eng, docs, out, shards=3, stages=["bm25", "faiss-flat@hashing"])
    loaded = eng.load(out)
    assert isinstance(loaded, ShardedCollection)
    man = loaded.manifest()
    assert man == built.manifest()
    assert man["format"] == FORMAT
    assert [s["count"] for s in man["shards"]] == [4, 4, 4]
    assert [s["name"] for s in man["stages"]] == ["bm25", "faiss-flat@hashing"]
    assert len(loaded) == 12 and loaded.n_shards == 3
    assert list(loaded.stages) == ["bm25", "faiss-flat@hashing"]
    q = ["cats purr", "interest rates"]
    assert [ranking(h) for h in loaded.search_batch(q, 5)] == [
        ranking(h) for h in built.search_batch(q, 5)
    ]
    assert eng.search(out, "cats purr", k=2)[0].id == "d1"
    from relevo.engine.runinfo import collection_facts

    models, index = collection_facts(loaded)  # what `relevo serve` and eval reports record
    assert index["documents"] == 12 and index["generation"] == "gen-000001"
    assert models["faiss-flat@hashing"]["embedder"] == "hashing"
    # rows are the whole collection's, not shard 0's
    assert [(s["rows"], s["shards"]) for s in index["stages"]] == [(12, 3), (12, 3)]
    # scores of given documents come from the shard holding each
    single = eng.index(docs, stages=["bm25"])
    one = build_sharded(eng, docs, tmp_path / "one", shards=2)
    ids = [["d1", "d12", "nope", "d7"]]
    got, want = (
        one.score_documents(["cats purr"], ids)[0],
        single.score_documents(["cats purr"], ids)[0],
    )
    assert [g is None for g in got] == [w is None for w in want] == [False, False, True, False]
    assert np.allclose([g for g in got if g is not None], [w for w in want if w is not None])


def test_queries_are_encoded_once_per_search_not_once_per_shard(eng, tmp_path, docs):
    build_sharded(eng, docs, tmp_path / "ix", shards=3, stages=["faiss-flat@hashing"])
    loaded = eng.load(tmp_path / "ix")
    embedder = eng.embedder("hashing")
    before = embedder.calls
    loaded.search_batch(["cats purr", "rust"], 3)
    assert embedder.calls == before + 1
    loaded.search_batch(["cats purr", "rust"], 3)  # the same queries again: encoded again
    assert embedder.calls == before + 2


def test_sharded_collections_are_read_only(eng, tmp_path, docs):
    col = build_sharded(eng, docs, tmp_path / "ix", shards=2)
    with pytest.raises(RequestError, match="read-only"):
        col.add([Document(id="new", text="x")])
    with pytest.raises(RequestError, match="read-only"):
        eng.delete(tmp_path / "ix", ["d1"])


def test_overwrite_replaces_only_with_the_flag(eng, tmp_path, docs):
    out = tmp_path / "ix"
    build_sharded(eng, docs, out, shards=2)
    with pytest.raises(Exception, match="overwrite"):
        build_sharded(eng, docs, out, shards=3)
    again = build_sharded(eng, docs, out, shards=3, overwrite=True)
    assert eng.load(out).n_shards == 3 == again.n_shards
    # an ordinary collection saved over a sharded one needs the flag too
    single = eng.index(docs, stages=["bm25"])
    with pytest.raises(IndexFormatError, match="already exists"):
        eng.save(single, out)
    assert eng.load(out).n_shards == 3  # nothing was replaced


def test_a_missing_or_altered_shard_is_refused(eng, tmp_path, docs):
    out = tmp_path / "ix"
    col = build_sharded(eng, docs, out, shards=3)
    gen = out / (out / "CURRENT").read_text().strip()
    shard1 = gen / col.manifest()["shards"][1]["path"]
    # an altered shard manifest (a shard swapped in from another build)
    live = shard1 / (shard1 / "CURRENT").read_text().strip() / "manifest.json"
    data = json.loads(live.read_text())
    data["relevo_version"] = "0.0.0"
    live.write_text(json.dumps(data))
    with pytest.raises(CorruptIndexError, match=r"shard 1 .*not the shard"):
        eng.load(out)
    shutil.rmtree(shard1)
    with pytest.raises(CorruptIndexError, match=r"shard 1 .*missing.*Rebuild"):
        eng.load(out)
    top = gen / "manifest.json"
    data = json.loads(top.read_text())
    data["count"] = 99
    top.write_text(json.dumps(data))
    with pytest.raises(CorruptIndexError, match="sum of the shards"):
        eng.load(out)


def test_cli_builds_shards_in_process(run, corpus_file, tmp_path):
    out = tmp_path / "ix"
    res = run("index", "build", str(corpus_file), "--out", str(out), "--shards", "2", "--json")
    man = json.loads(res.output)
    assert (
        man["format"] == FORMAT and len(man["shards"]) == 2 and man["build"]["backend"] == "local"
    )
    res = run("search", str(out), "cats purr", "--json")
    assert json.loads(res.output)["hits"][0]["id"] == "d1"
    info = json.loads(run("index", "info", str(out)).output)
    assert info["format"] == FORMAT and len(info["shard_manifests"]) == 2
    assert sum(m["count"] for m in info["shard_manifests"]) == info["count"]
    res = run("index", "build", str(corpus_file), "--out", str(out), "--ray", ok=False)
    assert res.exit_code == 2 and "--shards" in res.output


def test_a_local_ray_build_plans_each_shard_against_its_share(
    run, corpus_file, tmp_path, monkeypatch
):
    """Shards built at once on this machine share its memory: refused before Ray starts."""
    import os

    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    out = tmp_path / "ix"
    res = run(
        "index", "build", str(corpus_file), "--out", str(out),
        "--ray", "--shards", "3", "--host-mem", "150M", ok=False,
    )  # fmt: skip
    assert res.exit_code != 0
    assert "runs 3 shards at once" in res.output and "1/3 of the memory" in res.output
    assert not out.exists()  # nothing written
    # the same memory is enough for one shard at a time (the in-process build)
    run(
        "index", "build", str(corpus_file), "--out", str(out), "--shards", "3", "--host-mem", "150M"
    )
    assert out.exists()


def test_an_unreachable_ray_address_is_refused_quickly(run, corpus_file, tmp_path):
    import socket

    pytest.importorskip("ray")

    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = tmp_path / "ix"
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        res = run(
            "index", "build", str(corpus_file), "--out", str(out),
            "--shards", "2", "--ray", "--ray-address", address, "--no-plan", ok=False,
        )  # fmt: skip
        assert res.exit_code != 0 and "cannot reach the Ray cluster" in res.output
        assert not out.exists()
    res = run(
        "index", "build", str(corpus_file), "--out", str(out),
        "--shards", "2", "--ray", "--ray-address", "nonsense", "--no-plan", ok=False,
    )  # fmt: skip
    assert "expected HOST:PORT" in res.output and not out.exists()


def test_the_default_path_imports_no_ray(tmp_path, corpus_file):
    import subprocess

    code = (
        "import sys; from relevo import Engine; from relevo.testing import FakePlugin; "
        "e = Engine(plugins=[FakePlugin()], load_entrypoints=False); "
        f"c = e.index({str(corpus_file)!r}, stages=['faiss-flat@hashing']); "
        f"e.save(c, {str(tmp_path / 'ix')!r}); "
        f"e.load({str(tmp_path / 'ix')!r}).search('cats', 2); "
        "assert 'ray' not in sys.modules, 'ray was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- Ray --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_cluster():
    """A local 2-CPU Ray instance with a small object store, for this module's Ray tests."""
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(
            num_cpus=2,
            object_store_memory=200 * 1024**2,
            include_dashboard=False,
            log_to_driver=False,
        )
    yield ray
    if started:
        ray.shutdown()


def test_ray_build_and_actor_search_equal_the_single_collection(ray_cluster, tmp_path):
    from relevo.engine.ray_shards import RayRunner, load_on_ray

    eng = Engine(plugins=[FakePlugin()], load_entrypoints=False)
    docs = zipf_corpus(3, 50)
    stages = ["bm25", "faiss-flat@hashing"]
    runner = RayRunner()
    sharded = build_sharded(eng, docs, tmp_path / "ix", shards=2, stages=stages, runner=runner)
    man = sharded.manifest()
    assert man["build"]["backend"] == "ray"
    assert len(man["build"]["workers"]) >= 1
    single = eng.index(docs, stages=stages)
    queries = zipf_queries(3)
    for a, b in zip(
        single.search_batch(queries, 8, stages=["bm25"]),
        sharded.search_batch(queries, 8, stages=["bm25"]),
        strict=True,
    ):
        assert_same(a, b)
    on_ray = load_on_ray(tmp_path / "ix", eng, runner)
    for a, b in zip(sharded.search_batch(queries, 8), on_ray.search_batch(queries, 8), strict=True):
        assert_same(a, b)
        assert [h.text for h in a] == [h.text for h in b]
    for full, got in zip(
        single.search_batch(queries, 50, stages=["faiss-flat@hashing"]),
        on_ray.search_batch(queries, 8, stages=["faiss-flat@hashing"]),
        strict=True,
    ):
        assert_exact_topk(full, got, 8)


def test_cli_ray_build(ray_cluster, run, corpus_file, tmp_path):
    out = tmp_path / "ix"
    res = run(
        "index", "build", str(corpus_file), "--out", str(out), "--ray", "--shards", "2", "--json"
    )
    man = json.loads(res.output)
    assert man["build"]["backend"] == "ray" and man["count"] == 12
    res = run("search", str(out), "interest rates", "--json", "-k", "3")
    assert [h["id"] for h in json.loads(res.output)["hits"]][:1] == ["d11"]
