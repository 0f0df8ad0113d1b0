"""Merge sentence-transformers embedders by (weighted) averaging of their weights.

The cheap rival to a mixture of experts: fine-tune one embedder per task or dataset
from the same base, then average the weights into one model that serves them all at
the cost of one (Li et al., "Improving General Text Embedding Model: Tackling Task
Conflict and Data Imbalance through Model Merging", 2024). The CLI front end is
``relevo merge`` (bundled ``merge`` plugin).

Every source is a sentence-transformers folder (``modules.json``) whose module
folders hold ``*.safetensors`` files: ``model.safetensors`` at the root
(sentence-transformers >= 5, and the packaged all-MiniLM-L6-v2) or under
``0_Transformer/`` (older layouts), plus e.g. ``2_Dense/``. The sources must share
the module pipeline and every floating-point tensor's name, shape and dtype. Floats
are averaged in float32 (float64 tensors in float64) and cast back; integer and
boolean buffers are copied and must be equal wherever they are present (a buffer such
as ``embeddings.position_ids`` that only some transformers versions save is taken
from the first source, or left out if the first source lacks it).

The output is the first source's folder (configs, tokenizer, pooling / normalize
modules) with the averaged weights in the same places and ``relevo-merge.json``
(sources, their weight digests and the weights), written atomically: a failed merge
leaves no folder behind and an existing one untouched. Weights are read with
safetensors, one tensor at a time; pickled weights (``pytorch_model.bin``) are
refused, never unpickled. Importing this module imports neither torch nor
safetensors.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..engine.errors import ConfigError
from ..engine.manifest import atomic_directory, relevo_version
from ..models import MINILM, packaged_st_folder, require, weights_digest

log = logging.getLogger(__name__)

#: The record written beside the merged weights.
REPORT_FILE = "relevo-merge.json"
FORMAT = "relevo-merge"
FORMAT_VERSION = 1

#: Weight formats not carried over from the first source: stale copies of its weights.
_OTHER_WEIGHTS = (".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".onnx_data", ".gguf")
#: Folders not carried over: other exports of the first source's weights, tool metadata,
#: a training checkpoint.
_SKIPPED_DIRS = frozenset({".cache", ".git", "__pycache__", "checkpoint", "onnx", "openvino"})
#: Names of packaged models accepted as a source besides folders.
_ALIASES = {"minilm": MINILM}


@dataclass(frozen=True)
class MergeResult:
    """What :func:`merge_embedders` produced."""

    #: the merged folder; loads as ``sentence-transformers:PATH``
    path: Path
    #: the source folders, absolute, in the order given
    sources: list[Path]
    #: the weights used, normalised to sum 1, one per source
    weights: list[float]
    #: tensors written (averaged and copied)
    tensors: int
    seconds: float
    #: the contents of ``relevo-merge.json``
    report: dict[str, Any] = field(repr=False)


@dataclass
class _Source:
    spec: str
    path: Path
    #: weight files relative to the folder -> {tensor name: (dtype, shape)}
    files: dict[str, dict[str, tuple[str, tuple[int, ...]]]]


def merge_embedders(
    sources: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    weights: Sequence[float] | None = None,
    overwrite: bool = False,
) -> MergeResult:
    """Average the weights of sentence-transformers models into a new model folder.

    Args:
        sources: two or more sentence-transformers folders (or ``minilm``, the packaged
            all-MiniLM-L6-v2) with the same architecture, e.g. fine-tunes of one base.
        out: the folder to write; it loads as ``sentence-transformers:OUT``.
        weights: one non-negative weight per source (default: equal); normalised to
            sum 1.
        overwrite: replace ``out`` if it is an existing model folder (only once the new
            one is complete).

    Returns:
        a :class:`MergeResult`.

    Raises:
        ConfigError: fewer than two sources; a source that is not a sentence-transformers
            folder with safetensors weights; sources that differ in modules or in a
            tensor's name, shape or dtype (the first such tensor is named); bad weights;
            ``out`` exists (without ``overwrite``), is not a model folder, or is, holds
            or lies inside a source.
        MissingDependencyError: torch or safetensors is not installed.
    """
    t0 = time.perf_counter()
    if len(sources) < 2:
        raise ConfigError(
            f"merging needs at least two source models, got {len(sources)}; "
            "give two or more sentence-transformers folders."
        )
    norm = _normalise_weights(weights, len(sources))
    (_torch, _st) = require("torch", "safetensors.torch", extra="st", what="relevo merge")
    srcs = [_read_source(s) for s in sources]
    modules = _check_compatible(srcs)
    target = Path(out).expanduser().absolute()
    _check_out(target, srcs, overwrite=overwrite)
    with atomic_directory(target, overwrite=True) as tmp:
        tmp.chmod(0o755)  # mkdtemp makes it private; a model folder is meant to be shared
        _copy_configs(srcs[0], tmp)
        counts = _write_weights(srcs, norm, tmp)
        report = _report(srcs, norm, weights, modules, counts, time.perf_counter() - t0)
        (tmp / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n", "utf-8")
    log.info("merged %d models into %s (%d tensors)", len(srcs), target, counts["tensors"])
    return MergeResult(
        path=target,
        sources=[s.path for s in srcs],
        weights=norm,
        tensors=counts["tensors"],
        seconds=time.perf_counter() - t0,
        report=report,
    )


# -- checks -----------------------------------------------------------------------------------
def _normalise_weights(weights: Sequence[float] | None, n: int) -> list[float]:
    if weights is None:
        return [1.0 / n] * n
    values = list(weights)
    if len(values) != n:
        raise ConfigError(
            f"{len(values)} weights for {n} source models; give one weight per source "
            "(CLI: one --weight per SOURCE) or none for equal weights."
        )
    for w in values:
        if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w):
            raise ConfigError(f"merge weight {w!r} is not a finite number; give numbers >= 0.")
        if w < 0:
            raise ConfigError(f"merge weight {w} is negative; weights must be >= 0.")
    total = math.fsum(values)
    if total <= 0:
        raise ConfigError("all merge weights are zero; give at least one positive weight.")
    return [float(w) / total for w in values]


def _resolve(spec: str | os.PathLike[str]) -> Path:
    text = os.fspath(spec)
    path = Path(text).expanduser()
    if path.is_dir():
        return path.absolute()
    packaged = packaged_st_folder(_ALIASES.get(text, text)) if not path.exists() else None
    if packaged is not None:
        return packaged
    what = "is a file" if path.exists() else "does not exist"
    raise ConfigError(
        f"merge source {text!r} {what}; give a sentence-transformers model folder "
        "(e.g. one written by `relevo train embedder`) or minilm."
    )


def _read_source(spec: str | os.PathLike[str]) -> _Source:
    """Resolve a source and read the header (names, dtypes, shapes) of each weight file."""
    from safetensors import safe_open

    path = _resolve(spec)
    modules = _modules(path)
    files: dict[str, dict[str, tuple[str, tuple[int, ...]]]] = {}
    for entry in modules:
        folder = path / str(entry.get("path", ""))
        if not folder.resolve().is_relative_to(path.resolve()):
            raise ConfigError(
                f"{path / 'modules.json'} names the module folder {entry.get('path')!r} outside the model; "
                "re-save the model with sentence-transformers."
            )
        if folder.is_dir():
            for f in sorted(folder.glob("*.safetensors")):
                rel = f.relative_to(path).as_posix()
                try:
                    with safe_open(str(f), framework="pt") as handle:
                        files[rel] = {
                            name: (
                                handle.get_slice(name).get_dtype(),
                                tuple(handle.get_slice(name).get_shape()),
                            )
                            for name in handle.keys()  # noqa: SIM118 - a safe_open handle, not a dict
                        }
                except Exception as exc:  # SafetensorError, OSError: a corrupt or unreadable file
                    raise ConfigError(
                        f"cannot read {f} as safetensors ({exc}); re-save the model with sentence-transformers."
                    ) from exc
    if not files:
        pickled = sorted(p.name for p in path.rglob("*") if p.suffix in (".bin", ".pt", ".pth"))
        hint = (
            f" (it has {', '.join(pickled[:3])}, which relevo does not unpickle; re-save it with "
            "`SentenceTransformer(PATH).save(PATH, safe_serialization=True)`)"
            if pickled
            else ""
        )
        raise ConfigError(
            f"merge source {path} has no .safetensors weights in its module folders{hint}."
        )
    return _Source(spec=os.fspath(spec), path=path, files=files)


def _modules(path: Path) -> list[dict[str, Any]]:
    file = path / "modules.json"
    if not file.is_file():
        raise ConfigError(
            f"merge source {path} has no modules.json, so it is not a sentence-transformers model folder; "
            "give folders saved by sentence-transformers (e.g. by `relevo train embedder`)."
        )
    try:
        data = json.loads(file.read_text("utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise ConfigError(f"cannot read {file} ({exc}); re-save the model.") from exc
    if not isinstance(data, list) or not all(isinstance(e, dict) for e in data):
        raise ConfigError(f"{file} must hold a list of modules; re-save the model.")
    return data


def _pipeline(path: Path) -> list[dict[str, Any]]:
    """modules.json with each ``type`` cut to its class name.

    sentence-transformers moved its module classes between versions
    (``sentence_transformers.models.Transformer`` became
    ``sentence_transformers.base.modules.transformer.Transformer``); a base model and a
    fine-tune of it saved by a newer version still have the same pipeline.
    """
    return [{**e, "type": str(e.get("type", "")).rsplit(".", 1)[-1]} for e in _modules(path)]


def _is_float(dtype: str) -> bool:
    """Whether a safetensors dtype (``F32``, ``BF16``, ``F8_E4M3``, ``I64``, ``BOOL``) is a float."""
    return dtype.startswith(("F", "BF"))


def _check_compatible(srcs: list[_Source]) -> list[dict[str, Any]]:
    """Refuse sources that cannot be averaged; return the (normalised) module pipeline."""
    first = srcs[0]
    pipeline = _pipeline(first.path)
    for other in srcs[1:]:
        if _pipeline(other.path) != pipeline:
            raise ConfigError(
                f"the modules.json of {other.path} and {first.path} differ (other modules, paths or order); "
                "only models with the same architecture can be merged, e.g. fine-tunes of one base model."
            )
        if sorted(other.files) != sorted(first.files):
            raise ConfigError(
                f"{other.path} has weight files {sorted(other.files)}, {first.path} has {sorted(first.files)}; "
                "only models saved in the same layout can be merged (re-save both with one sentence-transformers version)."
            )
        for rel, tensors in first.files.items():
            theirs = other.files[rel]
            for name in sorted(set(tensors) | set(theirs)):
                mine, their = tensors.get(name), theirs.get(name)
                if mine is not None and their is not None:
                    if mine[1] != their[1]:
                        raise ConfigError(
                            f"tensor {name!r} of {rel} has shape {list(mine[1])} in {first.path} but "
                            f"{list(their[1])} in {other.path}; only models with the same architecture can be merged."
                        )
                    if mine[0] != their[0]:
                        raise ConfigError(
                            f"tensor {name!r} of {rel} is {mine[0]} in {first.path} but {their[0]} in "
                            f"{other.path}; save both models in one dtype before merging."
                        )
                else:
                    has, lacks = (first, other) if mine is not None else (other, first)
                    if not _is_float(has.files[rel][name][0]):
                        continue  # a buffer only some transformers versions save (position_ids)
                    raise ConfigError(
                        f"tensor {name!r} of {rel} is in {has.path} but not in {lacks.path}; "
                        "only models with the same architecture can be merged."
                    )
    return pipeline


def _related(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` are the same folder or one lies inside the other."""
    a, b = a.resolve(), b.resolve()
    return a == b or a.is_relative_to(b) or b.is_relative_to(a)


def _check_out(out: Path, srcs: list[_Source], *, overwrite: bool) -> None:
    for src in srcs:
        if _related(out, src.path):
            how = "is" if out.resolve() == src.path.resolve() else "overlaps"
            raise ConfigError(
                f"--out {out} {how} the source {src.path}; write the merged model to a new folder."
            )
    if not out.exists():
        return
    if not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder.")
    if not overwrite:
        raise ConfigError(
            f"--out {out} already exists; pass --overwrite (overwrite=True) to replace it, or choose another folder."
        )
    if any(out.iterdir()) and not (out / "modules.json").is_file():
        raise ConfigError(
            f"--out {out} exists and is not a sentence-transformers model folder; --overwrite only "
            "replaces a model folder. Choose another --out."
        )


# -- writing ----------------------------------------------------------------------------------
def _copy_configs(first: _Source, dest: Path) -> None:
    """Copy the first source's configs, tokenizer and module folders, but no weights or records."""
    for f in sorted(first.path.rglob("*")):
        rel = f.relative_to(first.path)
        if _SKIPPED_DIRS.intersection(rel.parts[:-1]) or not f.is_file():
            continue
        if rel.as_posix() in first.files or f.suffix in (".safetensors", *_OTHER_WEIGHTS):
            continue
        # its own training / merge record and model card describe the source, not the merge
        if len(rel.parts) == 1 and (
            f.name == "README.md" or (f.name.startswith("relevo-") and f.suffix == ".json")
        ):
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, dest / rel)  # follows links (hub caches link their files)


def _write_weights(srcs: list[_Source], weights: list[float], dest: Path) -> dict[str, Any]:
    """Average every weight file into ``dest``, one tensor at a time; return counts."""
    import contextlib

    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    averaged = copied = 0
    dropped: list[str] = []
    for rel in sorted(srcs[0].files):
        with contextlib.ExitStack() as stack:
            handles = [
                stack.enter_context(safe_open(str(s.path / rel), framework="pt")) for s in srcs
            ]
            metadata = handles[0].metadata()
            merged: dict[str, Any] = {}
            for name in handles[0].keys():  # noqa: SIM118 - a safe_open handle, not a dict
                dtype = srcs[0].files[rel][name][0]
                if not _is_float(dtype):
                    base = handles[0].get_tensor(name)
                    for s, h in zip(srcs[1:], handles[1:], strict=True):
                        if name in s.files[rel] and not torch.equal(h.get_tensor(name), base):
                            raise ConfigError(
                                f"{dtype} tensor {name!r} of {rel} differs between {srcs[0].path} and {s.path}; "
                                "integer buffers cannot be averaged, so they must be equal."
                            )
                    merged[name] = base
                    copied += 1
                    continue
                first = handles[0].get_tensor(name)
                work = torch.float64 if first.dtype == torch.float64 else torch.float32
                acc = torch.zeros(first.shape, dtype=work)
                for w, h in zip(weights, handles, strict=True):
                    if w:
                        acc.add_(h.get_tensor(name).to(work), alpha=w)
                merged[name] = acc.to(first.dtype)
                averaged += 1
            for s in srcs[1:]:
                dropped += [f"{rel}:{n}" for n in s.files[rel] if n not in srcs[0].files[rel]]
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        save_file(merged, str(dest / rel), metadata=metadata)
        (dest / rel).chmod(0o644)  # safetensors writes it private; a model folder is shared
    return {
        "tensors": averaged + copied,
        "averaged": averaged,
        "copied": copied,
        "dropped": sorted(set(dropped)),
    }


def _report(
    srcs: list[_Source],
    weights: list[float],
    given: Sequence[float] | None,
    modules: list[dict[str, Any]],
    counts: dict[str, Any],
    seconds: float,
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "relevo_version": relevo_version(),
        "method": "weighted-average",
        "sources": [
            {
                "source": s.spec,
                "path": str(s.path),
                "weight": w,
                "weights_sha256": {rel: weights_digest(s.path / rel) for rel in sorted(s.files)},
            }
            for s, w in zip(srcs, weights, strict=True)
        ],
        "weights": weights,
        "weights_given": list(given) if given is not None else None,
        "modules": [m["type"] for m in modules],
        "files": sorted(srcs[0].files),
        "tensors": counts["tensors"],
        "averaged_tensors": counts["averaged"],
        "copied_buffers": counts["copied"],
        # buffers of later sources the first lacks (e.g. position_ids of older transformers)
        "dropped_buffers": counts["dropped"],
        "configs_from": str(srcs[0].path),
        "seconds": round(seconds, 3),
    }


__all__ = ["FORMAT", "FORMAT_VERSION", "REPORT_FILE", "MergeResult", "merge_embedders"]
