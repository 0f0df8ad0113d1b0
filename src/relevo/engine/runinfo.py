"""Run manifests: what produced a result, and what differs between two results.

Every ``relevo eval`` report carries a ``manifest`` and every server start logs one
(``GET /healthz`` shows it), in five sections:

- ``stack``: Python, the platform, and the versions of relevo and the libraries that
  shape results (numpy, scipy, torch, transformers, sentence-transformers, faiss, ...);
- ``models``: per dense stage the embedder's name and a digest of its fingerprint
  (weights and prompts), and the reranker's name and a digest of its description;
- ``index``: the stages and, for a saved collection, its live generation and a digest of
  its manifest (which holds every payload file's sha256);
- ``data``: the corpus checksum and digests of the queries and qrels scored;
- ``params``: the settings of the run (pipeline, split, limit, reranking...).

:func:`compare` says which sections differ between two reports and how the metrics
moved, so a changed nDCG can be traced to the stack, the models, the index or the data.
"""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Mapping
from typing import Any

#: Distributions whose versions can change a ranking.
STACK_PACKAGES = (
    "relevo",
    "numpy",
    "scipy",
    "torch",
    "transformers",
    "sentence-transformers",
    "tokenizers",
    "faiss-cpu",
    "faiss-gpu",
    "PyStemmer",
    "onnxruntime",
    "ir-measures",
)
SECTIONS = ("stack", "models", "index", "data", "params")
METRICS = ("ndcg@10", "mrr@10", "recall@100")


def digest(value: Any) -> str:
    """The first 16 hex digits of the sha256 of ``value``'s canonical JSON (or bytes)."""
    raw = (
        value
        if isinstance(value, bytes)
        else json.dumps(value, sort_keys=True, default=str).encode()
    )
    return hashlib.sha256(raw).hexdigest()[:16]


def stack() -> dict[str, Any]:
    """Python, platform and library versions (``None`` for what is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform()}
    for name in STACK_PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def collection_facts(collection: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(models, index)`` sections for a :class:`~relevo.Collection`."""
    models: dict[str, Any] = {}
    stages = []
    # A sharded collection's stages are shard 0's (in-process) or the manifest's records
    # (Ray-held shards): rows are summed over the shards that are here, else unknown.
    shards = getattr(collection, "local_shards", None)
    for name, stage in collection.stages.items():
        held = stage.index
        fmt = held if isinstance(held, str) else held.name
        if shards:
            rows: int | None = sum(shard.stages[name].index.rows for shard in shards)
        else:
            rows = None if isinstance(held, str) else held.rows
        entry: dict[str, Any] = {"name": name, "format": fmt, "rows": rows}
        if shards is not None:
            entry["shards"] = collection.n_shards
        stages.append(entry)
        if stage.embedder is not None:
            models[name] = {
                "embedder": getattr(stage.embedder, "instance_name", None) or stage.embedder.name,
                "fingerprint": digest(stage.embedder.fingerprint()),
                "dim": stage.embedder.dim,
            }
    index: dict[str, Any] = {
        "stages": stages,
        "documents": len(collection),
        "corpus_checksum": collection.corpus_checksum,
    }
    path = getattr(collection, "path", None)
    if path is not None:
        from .manifest import MANIFEST, live_directory

        index["generation"] = getattr(collection, "generation", None)
        try:
            index["manifest"] = digest((live_directory(path) / MANIFEST).read_bytes())
        except OSError:
            index["manifest"] = None
        index["pending_writes"] = bool(getattr(collection, "dirty", False))
    return models, index


def reranker_facts(reranker: Any) -> dict[str, Any]:
    name = getattr(reranker, "instance_name", None) or reranker.name
    return {"reranker": name, "description": digest(reranker.describe())}


def data_facts(dataset: Any, qids: list[str], corpus_checksum: str) -> dict[str, Any]:
    return {
        "dataset": dataset.name,
        "split": dataset.split,
        "corpus_checksum": corpus_checksum,
        "queries": len(qids),
        "queries_digest": digest([[q, dataset.queries[q]] for q in qids]),
        "qrels_digest": digest({q: dataset.qrels[q] for q in qids}),
    }


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted paths where two JSON values differ."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in old:
                out.append(f"{path} (added)")
            elif key not in new:
                out.append(f"{path} (removed)")
            else:
                out.extend(_diff(old[key], new[key], path))
        return out
    return [] if old == new else [f"{prefix}: {old!r} -> {new!r}"]


def compare(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """Which manifest sections differ between two eval reports, and the metric changes.

    Raises:
        ValueError: a report without a ``manifest`` (written before run manifests).
    """
    for label, rep in (("old", old), ("new", new)):
        if not isinstance(rep.get("manifest"), Mapping):
            raise ValueError(
                f"the {label} report has no 'manifest' (written by an older relevo?); "
                "re-run `relevo eval --json` to get one."
            )
    om, nm = old["manifest"], new["manifest"]
    sections = {s: _diff(om.get(s, {}), nm.get(s, {})) for s in SECTIONS}
    metrics = {}
    for m in METRICS:
        if m in old and m in new:
            metrics[m] = {"old": old[m], "new": new[m], "delta": new[m] - old[m]}
    changed = [s for s in SECTIONS if sections[s]]
    moved = any(abs(v["delta"]) > 1e-9 for v in metrics.values())
    if not moved:
        verdict = "same metrics" + (f" (although {', '.join(changed)} differ)" if changed else "")
    elif changed:
        verdict = "the metrics differ; what changed: " + ", ".join(changed)
    else:
        verdict = (
            "the metrics differ but the stack, models, index, data and parameters are the same: "
            "a nondeterministic component (threads, GPU kernels, approximate search)"
        )
    return {"verdict": verdict, "changed": changed, "differences": sections, "metrics": metrics}


__all__ = [
    "SECTIONS",
    "collection_facts",
    "compare",
    "data_facts",
    "digest",
    "reranker_facts",
    "stack",
]
