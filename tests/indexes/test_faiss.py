"""FAISS index formats checked against a numpy brute-force search."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

faiss = pytest.importorskip("faiss")

from relevo.engine.errors import (  # noqa: E402 - after the importorskip
    ConfigError,
    CorruptIndexError,
    DimensionError,
    MissingDependencyError,
    RequestError,
)
from relevo.indexes.faiss_index import (  # noqa: E402
    FaissIndex,
    default_nlist,
    default_pq_m,
    faiss_has_gpu,
    pq_nbits_for,
    resolve_factory,
)

DIM = 64
N_DOCS = 2000
N_QUERIES = 60
K = 10

# The defaults the bundled plugin registers, by name (checked against the plugin below).
FORMATS: dict[str, dict[str, Any]] = {
    "faiss-flat": {"factory": "Flat"},
    "faiss-ivf": {"factory": "IVF{nlist},Flat"},
    "faiss-hnsw": {"factory": "HNSW32", "ef_construction": 80},
    "faiss-pq": {"factory": "IVF{nlist},PQ{m}"},
}


@pytest.fixture(scope="module", autouse=True)
def one_faiss_thread():
    # These inputs are tiny: with OpenMP threads on a busy 2-core machine, faiss spends
    # its time spin-waiting (10x slower), and results do not depend on the thread count.
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


@pytest.fixture(scope="module")
def data(embeddings) -> tuple[np.ndarray, np.ndarray]:
    x = embeddings(N_DOCS + N_QUERIES, DIM, seed=7)
    return x[:N_DOCS], x[N_DOCS:]


def make(name: str, **options) -> FaissIndex:
    index = FaissIndex(**{**FORMATS[name], **options})
    index.instance_name = name  # what the host stamps on instances
    return index


def save_load(index: FaissIndex, directory: Path) -> FaissIndex:
    directory.mkdir()
    params = index.save_payload(directory)
    params = json.loads(json.dumps(params))  # what the manifest stores
    return FaissIndex.load_payload(directory, params)


# -- exactness and recall -------------------------------------------------------------


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_flat_equals_brute_force(data, metric, brute_force, assert_exact):
    docs, queries = data
    index = make("faiss-flat", metric=metric)
    index.add(docs)
    scores, pos = index.search(queries, K)
    full, ref_scores, ref_pos = brute_force(docs, queries, K, metric)
    assert_exact(scores, pos, full, ref_scores, ref_pos, atol=1e-4 if metric == "l2" else 1e-5)
    assert index.describe()["resolved_factory"] == "Flat"


def test_ivf_with_every_cell_probed_is_exact(data, brute_force, assert_exact):
    docs, queries = data
    nlist = default_nlist(N_DOCS)
    index = make("faiss-ivf", nprobe=nlist)
    index.add(docs)
    assert index.describe()["resolved_factory"] == f"IVF{nlist},Flat"
    scores, pos = index.search(queries, K)
    assert_exact(scores, pos, *brute_force(docs, queries, K))


@pytest.mark.parametrize(
    ("name", "options", "threshold"),
    [
        # Random ids would score ~K / N_DOCS = 0.005; each threshold sits a few points
        # under what the format reaches on this data, so a regression shows.
        ("faiss-ivf", {}, 0.95),
        ("faiss-ivf", {"nprobe": 4}, 0.85),
        ("faiss-hnsw", {}, 0.95),
        ("faiss-hnsw", {"ef_search": 16}, 0.9),
        # IVF-PQ with 8 codes of 5 bits (40 bits for 64 floats): plain PQ gets ~0.4 here.
        ("faiss-pq", {}, 0.5),
    ],
)
def test_approximate_recall(data, name, options, threshold, brute_force, recall):
    docs, queries = data
    index = make(name, **options)
    index.add(docs)
    scores, pos = index.search(queries, K)
    full, _, ref_pos = brute_force(docs, queries, K)
    assert recall(pos, ref_pos) >= threshold
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first
    if name != "faiss-pq":  # PQ scores are approximations of the true ones
        np.testing.assert_allclose(np.take_along_axis(full, pos, 1), scores, atol=1e-5)


def test_pq_beats_plain_pq_and_is_compact(data, tmp_path, brute_force, recall):
    docs, queries = data
    _, _, ref_pos = brute_force(docs, queries, K)
    ivfpq = make("faiss-pq")
    ivfpq.add(docs)
    plain = FaissIndex(factory="PQ{m}")
    plain.add(docs)
    assert recall(ivfpq.search(queries, K)[1], ref_pos) > recall(
        plain.search(queries, K)[1], ref_pos
    )
    assert ivfpq.describe()["resolved_factory"] == f"IVF{default_nlist(N_DOCS)},PQ8x5"
    save_load(ivfpq, tmp_path / "pq")
    assert (tmp_path / "pq" / "index.faiss").stat().st_size < docs.nbytes / 4


# -- persistence ----------------------------------------------------------------------


@pytest.mark.parametrize("name", list(FORMATS))
def test_save_load_round_trip(data, tmp_path, name):
    docs, queries = data
    index = make(name, nprobe=8, ef_search=64)
    index.add(docs)
    before = index.search(queries, K)
    loaded = save_load(index, tmp_path / "ix")
    after = loaded.search(queries, K)
    np.testing.assert_array_equal(before[1], after[1])
    np.testing.assert_array_equal(before[0], after[0])
    assert loaded.count == N_DOCS
    desc = loaded.describe()
    assert desc["name"] == name
    assert (desc["nprobe"], desc["ef_search"], desc["dim"]) == (8, 64, DIM)
    assert desc["resolved_factory"] == index.describe()["resolved_factory"]
    # A loaded (memory-mapped) index still accepts new rows.
    loaded.add(docs[:5])
    assert loaded.count == N_DOCS + 5
    assert loaded.search(docs[:1], 1)[1][0, 0] in (0, N_DOCS)


def test_search_params_survive_load(data, tmp_path):
    docs, queries = data
    index = make("faiss-ivf", nprobe=1)
    index.add(docs)
    loaded = save_load(index, tmp_path / "ix")
    ivf = faiss.extract_index_ivf(loaded._index)
    assert ivf.nprobe == 1
    np.testing.assert_array_equal(index.search(queries, K)[1], loaded.search(queries, K)[1])


def test_empty_index_round_trip(tmp_path):
    index = make("faiss-ivf")
    scores, pos = index.search(np.zeros((2, DIM), np.float32), 3)
    assert (pos == -1).all() and np.isneginf(scores).all()
    loaded = save_load(index, tmp_path / "ix")
    assert loaded.count == 0


def test_removed_rows_are_not_returned(data):
    docs, queries = data
    index = make("faiss-flat")
    index.add(docs)
    _, ref_pos = index.search(queries, K)
    gone = np.unique(ref_pos[:, :3])
    assert index.remove(gone) == len(gone)
    scores, pos = index.search(queries, K)
    assert not np.isin(pos, gone).any()
    assert (pos >= 0).all() and pos.shape == (N_QUERIES, K)
    assert index.count == N_DOCS - len(gone)


def test_corrupt_payload_is_refused(data, tmp_path):
    docs, _ = data
    index = make("faiss-ivf")
    index.add(docs)
    directory = tmp_path / "ix"
    directory.mkdir()
    params = index.save_payload(directory)
    path = directory / "index.faiss"
    path.write_bytes(b"not a faiss index" * 100)
    with pytest.raises(CorruptIndexError, match="index.faiss") as err:
        FaissIndex.load_payload(directory, {**params, "file_bytes": path.stat().st_size})
    assert "ebuild" in str(err.value)
    # A truncated file is caught even where a memory-mapped read would accept it.
    good = tmp_path / "good"
    good.mkdir()
    params = index.save_payload(good)
    data_bytes = (good / "index.faiss").read_bytes()
    (good / "index.faiss").write_bytes(data_bytes[:-7])
    with pytest.raises(CorruptIndexError, match="truncated"):
        FaissIndex.load_payload(good, params)
    (good / "index.faiss").unlink()
    with pytest.raises(CorruptIndexError, match="missing"):
        FaissIndex.load_payload(good, params)


def test_manifest_disagreeing_with_payload_is_refused(data, tmp_path):
    docs, _ = data
    index = make("faiss-flat")
    index.add(docs)
    directory = tmp_path / "ix"
    directory.mkdir()
    params = index.save_payload(directory)
    with pytest.raises(CorruptIndexError, match="manifest says"):
        FaissIndex.load_payload(directory, {**params, "ntotal": N_DOCS + 1})
    with pytest.raises(CorruptIndexError, match="manifest says"):
        FaissIndex.load_payload(directory, {**params, "dim": DIM * 2})
    with pytest.raises(CorruptIndexError, match="metric"):
        FaissIndex.load_payload(directory, {**params, "metric": "l2"})


# -- validation and errors ------------------------------------------------------------


def test_dimension_mismatch(data):
    docs, _ = data
    index = make("faiss-flat")
    index.add(docs)
    with pytest.raises(DimensionError, match="64-d"):
        index.add(np.zeros((3, DIM + 1), np.float32))
    with pytest.raises(DimensionError):
        index.search(np.zeros((1, DIM - 1), np.float32), 5)
    with pytest.raises(DimensionError):
        FaissIndex(factory="Flat", dim=32).add(docs)


def test_too_few_vectors_to_train(embeddings):
    with pytest.raises(RequestError, match="needs at least 100 vectors"):
        FaissIndex(factory="IVF100,Flat").add(embeddings(20, DIM, 0))
    # PQ bits are lowered to fit small inputs, down to 1 bit (2 centroids) at most.
    with pytest.raises(RequestError, match="faiss-flat"):
        FaissIndex(factory="PQ{m}").add(embeddings(1, DIM, 0))


def test_small_inputs_still_build(embeddings):
    x = embeddings(60, DIM, 1)
    for factory in ("IVF{nlist},Flat", "IVF{nlist},PQ{m}", "PQ{m}"):
        index = FaissIndex(factory=factory)
        index.add(x)
        assert index.search(x[:3], 1)[1].shape == (3, 1)


def test_option_validation(embeddings):
    with pytest.raises(ConfigError, match="factory"):
        FaissIndex()
    with pytest.raises(ConfigError, match="metric"):
        FaissIndex(factory="Flat", metric="cosine")
    with pytest.raises(ConfigError, match="device"):
        FaissIndex(factory="Flat", device="tpu")
    with pytest.raises(ConfigError, match="nprobe"):
        FaissIndex(factory="Flat", nprobe=0)
    with pytest.raises(ConfigError, match="IDMap"):
        FaissIndex(factory="IDMap,Flat")
    with pytest.raises(ConfigError, match="placeholder"):
        FaissIndex(factory="IVF{cells},Flat").add(embeddings(100, DIM, 0))
    with pytest.raises(ConfigError, match="cannot build"):
        FaissIndex(factory="PQ7").add(embeddings(100, DIM, 0))


def test_factory_resolution():
    assert default_nlist(1) == 1
    assert default_nlist(2000) == 2000 // 39
    assert default_nlist(1_000_000) == 4000
    assert default_pq_m(384) == 48
    assert default_pq_m(768) == 96
    assert default_pq_m(100) == 10
    assert pq_nbits_for(100_000) == 8
    assert pq_nbits_for(5000) == 7
    assert resolve_factory("IVF{nlist},PQ{m}", 100_000, 384) == "IVF1265,PQ48"
    assert resolve_factory("IVF{nlist},PQ{m}", 5000, 384) == "IVF128,PQ48x7"
    assert resolve_factory("OPQ16,IVF{nlist},PQ16x4fs", 5000, 64) == "OPQ16,IVF128,PQ16x4fs"
    assert resolve_factory("IVF{nlist},Flat", 5000, 64, nlist=7) == "IVF7,Flat"


def test_cuda_without_gpu_is_a_clear_error(data):
    if faiss_has_gpu(faiss):
        pytest.skip("faiss sees a GPU here")
    index = FaissIndex(factory="Flat", device="cuda")
    with pytest.raises(ConfigError, match=r"device='cuda'.*relevo\[gpu\]"):
        index.add(data[0])


def test_auto_device_is_recorded(data):
    index = make("faiss-flat")
    index.add(data[0][:10])
    assert index.describe()["device_used"] == ("cuda:0" if faiss_has_gpu(faiss) else "cpu")


def test_missing_faiss_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(MissingDependencyError, match=r"relevo\[faiss\]"):
        FaissIndex(factory="Flat").add(np.zeros((2, 4), np.float32))


def test_plugin_registers_formats_without_importing_faiss():
    code = (
        "import sys, relevo.plugins.faiss as p, relevo.plugins.torch_flat as t\n"
        "regs = []\n"
        "def register(cls, name=None, *, options=None, description=None, pipelines=None):\n"
        "    regs.append((cls.__name__, name, options or {}, description, pipelines or {}))\n"
        "p.register_indexes(register)\n"
        "t.register_indexes(register)\n"
        "assert 'faiss' not in sys.modules and 'torch' not in sys.modules, sorted(sys.modules)\n"
        "import json; print(json.dumps(regs))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    regs = {
        name: (cls, opts, desc, pipes) for cls, name, opts, desc, pipes in json.loads(out.stdout)
    }
    assert set(regs) == {*FORMATS, "faiss", "torch-flat"}
    for name, options in FORMATS.items():
        assert regs[name][0] == "FaissIndex" and regs[name][1] == options and regs[name][2]
    assert regs["torch-flat"][0] == "TorchFlatIndex"
    # the named pipelines built on the exact flat index
    assert regs["faiss-flat"][3] == {"dense": "faiss-flat", "hybrid": "hybrid:bm25+faiss-flat"}
    assert all(not regs[n][3] for n in regs if n != "faiss-flat")


def test_engine_builds_saves_and_loads_every_dense_format(tmp_path):
    from relevo import Engine
    from relevo.testing import FakePlugin, tiny_corpus

    engine = Engine(plugins=[FakePlugin()], load_entrypoints=False, cache=tmp_path / "cache")
    stages = [*FORMATS, "torch-flat"]
    collection = engine.index(tiny_corpus(), stages=stages, embedder="hashing")
    query = "cats purr"
    before = {s: collection.search(query, 3, stages=[s]) for s in stages}
    assert before["faiss-flat"][0].id in {"d1", "d3"}
    engine.save(collection, tmp_path / "col")
    loaded = engine.load(tmp_path / "col")
    for stage in stages:
        assert loaded.stages[stage].index.describe()["name"] == stage
        after = loaded.search(query, 3, stages=[stage])
        assert [(h.id, h.score) for h in after] == [(h.id, h.score) for h in before[stage]]
    assert [h.id for h in before["torch-flat"]] == [h.id for h in before["faiss-flat"]]


def simulate_gpu(monkeypatch, resources, cloner_options, to_gpu) -> None:
    """CPU stand-ins for faiss-gpu: one visible GPU, ``to_gpu`` as index_cpu_to_gpu."""
    import relevo.indexes.faiss_index as module

    monkeypatch.setattr(module, "_gpu_resources", None)
    monkeypatch.setattr(faiss, "StandardGpuResources", resources, raising=False)
    monkeypatch.setattr(faiss, "GpuClonerOptions", cloner_options, raising=False)
    monkeypatch.setattr(faiss, "GpuParameterSpace", faiss.ParameterSpace, raising=False)
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    monkeypatch.setattr(faiss, "index_cpu_to_gpu", to_gpu, raising=False)
    monkeypatch.setattr(faiss, "index_gpu_to_cpu", faiss.clone_index, raising=False)


def test_gpu_code_path_with_a_simulated_gpu(data, tmp_path, monkeypatch):
    """Device selection, GPU cloning and copy-back, exercised with CPU stand-ins for faiss-gpu."""
    cloned: list[str] = []

    class FakeResources:
        pass

    class FakeClonerOptions:
        useFloat16 = False

    def to_gpu(res, device, index, options=None):
        assert isinstance(res, FakeResources) and device == 0
        kind = type(faiss.downcast_index(index)).__name__
        if "HNSW" in kind or kind == "IndexPQ":  # what faiss-gpu refuses
            raise RuntimeError("This index type is not implemented on GPU.")
        cloned.append(f"{kind}:{options.useFloat16}")
        return faiss.clone_index(index)

    simulate_gpu(monkeypatch, FakeResources, FakeClonerOptions, to_gpu)

    docs, queries = data
    nlist = default_nlist(N_DOCS)
    for name, device, expected in [
        ("faiss-flat", "cuda", "cuda:0"),
        ("faiss-ivf", "auto", "cuda:0"),
        ("faiss-pq", "auto", "cuda:0"),
        ("faiss-hnsw", "auto", "cpu"),
    ]:
        index = make(name, device=device, nprobe=nlist)
        index.add(docs)
        assert index.describe()["device_used"] == expected
        before = index.search(queries, K)
        loaded = save_load(index, tmp_path / name)
        assert loaded.describe()["device_used"] == expected
        np.testing.assert_array_equal(loaded.search(queries, K)[1], before[1])
    # Built and loaded indexes both go to the GPU; only IVF-PQ asks for fp16 lookup tables.
    assert sorted(set(cloned)) == [
        "IndexFlat:False",
        "IndexFlatIP:False",
        "IndexIVFFlat:False",
        "IndexIVFPQ:True",
    ]
    with pytest.raises(ConfigError, match="cannot run 'HNSW32' on a GPU"):
        make("faiss-hnsw", device="cuda").add(docs)


@pytest.mark.gpu
def test_gpu_flat_and_ivf_match_cpu(data, tmp_path, brute_force, assert_exact, recall):
    if not faiss_has_gpu(faiss):
        pytest.skip("needs faiss-gpu and a visible GPU")
    docs, queries = data
    full, ref_scores, ref_pos = brute_force(docs, queries, K)
    gpu = make("faiss-flat", device="cuda")
    gpu.add(docs)
    assert gpu.describe()["device_used"] == "cuda:0"
    scores, pos = gpu.search(queries, K)
    assert_exact(scores, pos, full, ref_scores, ref_pos, atol=1e-4)
    loaded = save_load(gpu, tmp_path / "flat")
    np.testing.assert_array_equal(loaded.search(queries, K)[1], pos)
    ivf = make("faiss-ivf", device="cuda", nprobe=default_nlist(N_DOCS))
    ivf.add(docs)
    assert recall(ivf.search(queries, K)[1], ref_pos) >= 0.99
    hnsw = make("faiss-hnsw", device="auto")  # no GPU HNSW in faiss: stays on the CPU
    hnsw.add(docs)
    assert hnsw.describe()["device_used"] == "cpu"


def test_gpu_float16_tempmem_and_forced_cpu(data, monkeypatch):
    """gpu_float16 / gpu_tempmem reach faiss' cloner and resources; RELEVO_DEVICE=cpu keeps
    an ``auto`` index on the CPU (CPU stand-ins for faiss-gpu, as above)."""
    seen: dict[str, object] = {}

    class FakeResources:
        def setTempMemory(self, n):  # noqa: N802 - faiss' name
            seen["tempmem"] = n

    class FakeClonerOptions:
        useFloat16 = False

    def to_gpu(res, device, index, options=None):
        seen["float16"] = options.useFloat16
        return faiss.clone_index(index)

    simulate_gpu(monkeypatch, FakeResources, FakeClonerOptions, to_gpu)
    docs, _ = data
    index = make("faiss-flat", gpu_float16=True, gpu_tempmem=256 << 20)
    index.add(docs)
    assert seen == {"tempmem": 256 << 20, "float16": True}
    assert index.describe()["device_used"] == "cuda:0"
    assert make("faiss-flat").options.get("gpu_float16") is None  # defaults stay out of manifests

    seen.clear()
    monkeypatch.setenv("RELEVO_DEVICE", "cpu")
    forced = make("faiss-flat", gpu_float16=True)
    forced.add(docs)
    assert forced.describe()["device_used"] == "cpu" and seen == {}

    for bad in ({"gpu_float16": "yes"}, {"gpu_tempmem": -1}, {"gpu_tempmem": 1.5}):
        with pytest.raises(ConfigError, match="gpu_"):
            make("faiss-flat", **bad)
