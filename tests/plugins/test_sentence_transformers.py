"""The real packaged all-MiniLM-L6-v2 embeds offline, and the generic loader stays real."""

from __future__ import annotations

import numpy as np
import pytest

from relevo import ConfigError
from relevo.models import packaged_st_folder as packaged_model_path
from relevo.plugins.sentence_transformers import SentenceTransformerEmbedder


def test_packaged_model_resolves_without_network(minilm):
    path = packaged_model_path("sentence-transformers/all-MiniLM-L6-v2")
    assert path is not None and (path / "config.json").is_file()
    assert packaged_model_path("all-MiniLM-L6-v2") == path
    assert minilm.path == path


def test_real_embeddings_are_normalized_and_semantic(minilm):
    vecs = minilm.embed(
        ["A cat sits on the mat.", "A kitten is resting on a rug.", "Interest rates rose sharply."],
        kind="document",
    )
    assert vecs.shape == (3, 384) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    sims = vecs @ vecs.T
    assert sims[0, 1] > 0.5 > sims[0, 2]


def test_batched_sorted_embedding_equals_raw_encode(minilm):
    texts = [
        "short",
        "a much longer sentence about retrieval engines and plugins",
        "medium length text",
    ]
    ours = minilm.embed(texts, kind="document", batch_size=2)
    raw = minilm.model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    assert np.allclose(ours, raw, atol=1e-5)  # row order restored after length sorting


def test_query_prompt_changes_query_vectors_only(minilm):
    prompted = SentenceTransformerEmbedder("all-MiniLM-L6-v2", query_prompt="query: ", device="cpu")
    prompted._model = minilm.model  # share the loaded weights
    q_plain = minilm.embed(["heart disease"], kind="query")
    q_prompt = prompted.embed(["heart disease"], kind="query")
    d_prompt = prompted.embed(["heart disease"], kind="document")
    assert not np.allclose(q_plain, q_prompt)
    assert np.allclose(q_plain, d_prompt, atol=1e-6)
    assert prompted.fingerprint() != minilm.fingerprint()


def test_fingerprint_is_stable_and_weight_based(minilm):
    other = SentenceTransformerEmbedder("sentence-transformers/all-MiniLM-L6-v2")
    assert other.fingerprint() == minilm.fingerprint()


def test_missing_local_model_gives_clear_error(tmp_path):
    emb = SentenceTransformerEmbedder(str(tmp_path / "no-such-model-folder"), device="cpu")
    with pytest.raises((ConfigError, OSError)) as info:
        _ = emb.dim
    assert "no-such-model-folder" in str(info.value)


def test_bad_options_refused():
    with pytest.raises(ConfigError):
        SentenceTransformerEmbedder("", device="cpu")
    with pytest.raises(ConfigError):
        SentenceTransformerEmbedder("x", batch_size=0)
