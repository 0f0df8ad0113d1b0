"""Device and dtype options: RELEVO_DEVICE / --cpu and the encoders' dtype."""

from __future__ import annotations

import pytest

from relevo import ConfigError
from relevo.models.devices import auto_device_override, encoder_dtype, resolve_device


def test_relevo_device_env_decides_what_auto_means(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELEVO_DEVICE", "cpu")
    assert auto_device_override() == "cpu"
    assert resolve_device("auto") == "cpu"
    monkeypatch.setenv("RELEVO_DEVICE", "auto")
    assert auto_device_override() is None
    monkeypatch.setenv("RELEVO_DEVICE", "tpu")
    with pytest.raises(ConfigError, match="RELEVO_DEVICE='tpu'"):
        resolve_device("auto")
    monkeypatch.delenv("RELEVO_DEVICE")
    assert auto_device_override() is None


def test_encoder_dtype() -> None:
    assert encoder_dtype("cpu", "auto") == "float32"
    assert encoder_dtype("cuda", "auto") == "float16"
    assert encoder_dtype("cuda:1", "bfloat16") == "bfloat16"
    assert encoder_dtype("cpu", "float32") == "float32"
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        encoder_dtype("cpu", "float16")
    with pytest.raises(ConfigError, match="dtype must be"):
        encoder_dtype("cuda", "int8")


def test_forced_cpu_torch_flat(monkeypatch: pytest.MonkeyPatch) -> None:
    np = pytest.importorskip("numpy")
    pytest.importorskip("torch")
    from relevo.indexes.torch_index import TorchFlatIndex

    monkeypatch.setenv("RELEVO_DEVICE", "cpu")
    index = TorchFlatIndex()
    index.add(np.eye(4, dtype=np.float32))
    index.search(np.eye(4, dtype=np.float32)[:1], 1)
    assert index.describe()["device_used"] == "cpu"


def test_cross_encoder_dtype_option_is_checked() -> None:
    from relevo.plugins.cross_encoder import CrossEncoderReranker

    with pytest.raises(ConfigError, match="dtype must be"):
        CrossEncoderReranker("some/model", dtype="fp8")


def test_sentence_transformer_dtype_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from relevo.plugins.sentence_transformers import SentenceTransformerEmbedder

    with pytest.raises(ConfigError, match="dtype must be"):
        SentenceTransformerEmbedder("some/model", dtype="half")
    emb = SentenceTransformerEmbedder("some/model", device="cpu", dtype="float16")
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        emb.fingerprint()
    # float32 (and auto on the CPU) keep the cache key they always had
    a = SentenceTransformerEmbedder("some/model", device="cpu").fingerprint()
    b = SentenceTransformerEmbedder("some/model", device="cpu", dtype="float32").fingerprint()
    assert a == b


@pytest.mark.gpu
def test_minilm_float16_on_cuda_matches_float32() -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    np = pytest.importorskip("numpy")
    from relevo.plugins.sentence_transformers import SentenceTransformerEmbedder

    texts = ["a protein that binds DNA", "the price of tea in China", "BM25 is a ranking function"]
    half = SentenceTransformerEmbedder(device="cuda")
    full = SentenceTransformerEmbedder(device="cuda", dtype="float32")
    a, b = half.embed(texts, kind="document"), full.embed(texts, kind="document")
    assert half.dtype_used == "float16" and full.dtype_used == "float32"
    assert float(np.min(np.sum(a * b, axis=1))) > 0.999
    assert half.fingerprint() != full.fingerprint()


def test_cli_cpu_flag_sets_the_override(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from click.testing import CliRunner

    from relevo.engine.cli import cli

    monkeypatch.delenv("RELEVO_DEVICE", raising=False)
    result = CliRunner().invoke(cli, ["--cpu", "plugins"])
    assert result.exit_code == 0, result.output
    assert os.environ.get("RELEVO_DEVICE") == "cpu"
    monkeypatch.delenv("RELEVO_DEVICE")
