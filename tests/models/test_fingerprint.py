"""Weight fingerprints depend on the weights, never on where the model is stored.

Regression: fingerprints were empty (sha256 of nothing) for any model whose absolute
path had a ``.cache`` component (the Hugging Face hub cache, a virtualenv under
``~/.cache``), so two different models there were indistinguishable.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from pathlib import Path

import pytest

from relevo.models import weights_digest
from relevo.plugins.sentence_transformers import SentenceTransformerEmbedder

EMPTY = hashlib.sha256(b"").hexdigest()


def fake_model(folder: Path, weights: bytes) -> Path:
    """A model-shaped folder: config, tokenizer and weights files (never loaded here)."""
    (folder / "1_Pooling").mkdir(parents=True)
    (folder / "config.json").write_text('{"hidden_size": 8}', "utf-8")
    (folder / "tokenizer.json").write_text('{"model": {}}', "utf-8")
    (folder / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}', "utf-8")
    (folder / "model.safetensors").write_bytes(weights)
    return folder


def read_only(folder: Path) -> None:
    for p in [folder, *folder.rglob("*")]:
        mode = p.stat().st_mode
        p.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def test_same_model_under_a_cache_folder_and_elsewhere_fingerprints_the_same(tmp_path):
    plain = fake_model(tmp_path / "models" / "m", b"weights-A")
    cached = tmp_path / "home" / ".cache" / "huggingface" / "hub" / "m"
    shutil.copytree(plain, cached)
    digest = weights_digest(plain)
    assert digest != EMPTY
    assert weights_digest(cached) == digest
    # the components that record fingerprints in manifests agree too
    a = SentenceTransformerEmbedder(str(plain)).fingerprint()
    assert SentenceTransformerEmbedder(str(cached)).fingerprint() == a


def test_different_models_under_a_cache_folder_differ(tmp_path):
    root = tmp_path / ".cache" / "venv" / "site-packages"
    one = fake_model(root / "one", b"weights-A")
    two = fake_model(root / "two", b"weights-B")  # same size, other bytes
    assert weights_digest(one) != weights_digest(two)
    assert (
        SentenceTransformerEmbedder(str(one)).fingerprint()
        != SentenceTransformerEmbedder(str(two)).fingerprint()
    )


def test_only_paths_inside_the_model_folder_are_filtered(tmp_path):
    model = fake_model(tmp_path / "m", b"weights-A")
    before = weights_digest(model)
    # hub downloads leave metadata in <model>/.cache/: not weights, ignored
    (model / ".cache" / "huggingface").mkdir(parents=True)
    (model / ".cache" / "huggingface" / "download.lock").write_text("x", "utf-8")
    assert weights_digest(model) == before
    # a changed weight file is seen, whatever the folder's location
    (model / "model.safetensors").write_bytes(b"weights-Z")
    assert weights_digest(model) != before


def test_read_only_copy_fingerprints_the_same(tmp_path):
    model = fake_model(tmp_path / "m", b"weights-A")
    copy = tmp_path / "ro" / "m"
    shutil.copytree(model, copy)
    read_only(copy)
    try:
        assert weights_digest(copy) == weights_digest(model)
    finally:
        for p in [copy, *copy.rglob("*")]:
            p.chmod(p.stat().st_mode | stat.S_IWUSR)


def test_a_single_file_digest_is_its_sha256_and_is_remembered(tmp_path, monkeypatch):
    from relevo.models import fingerprint

    blob = tmp_path / "model.gguf"
    blob.write_bytes(os.urandom(1024) * 32)
    expected = hashlib.sha256(blob.read_bytes()).hexdigest()
    monkeypatch.setattr(fingerprint, "PERSIST_BYTES", 1)  # persist even this small file
    cache = tmp_path / "cache"
    assert weights_digest(blob, cache_root=cache) == expected
    stamps = list((cache / "models" / "stamps").iterdir())
    assert len(stamps) == 1 and stamps[0].read_text("ascii") == expected
    fingerprint._file_digest.cache_clear()
    monkeypatch.setattr(fingerprint, "_sha256_file", lambda path: pytest.fail("re-hashed"))
    assert weights_digest(blob, cache_root=cache) == expected  # read from the stamp


def test_missing_path_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        weights_digest(tmp_path / "nothing-here")


def test_real_minilm_copied_to_a_read_only_cache_folder_loads_and_matches(tmp_path, minilm):
    """A user's copy under ~/.cache, read-only: same fingerprint, same vectors."""
    copy = tmp_path / "home" / ".cache" / "relevo" / "models" / "minilm"
    shutil.copytree(minilm.path, copy)
    read_only(copy)
    try:
        other = SentenceTransformerEmbedder(str(copy), device="cpu")
        assert other.fingerprint() == minilm.fingerprint()
        texts = ["statins and breast cancer", "a cat sits on the mat"]
        assert (other.embed(texts) - minilm.embed(texts)).__abs__().max() < 1e-5
    finally:
        for p in [copy, *copy.rglob("*")]:
            p.chmod(p.stat().st_mode | stat.S_IWUSR)
