"""A collection: one docstore plus one or more first-stage indexes ("stages").

Several stages are fused at search time (reciprocal-rank fusion by default, or a
linear blend of normalised scores; see :class:`Fusion`). On disk a collection is a
directory of generations (see :mod:`relevo.engine.generations`)::

    DIR/CURRENT                      names the live generation, replaced atomically
    DIR/.lock                        the writer lock
    DIR/gen-NNNNNN/manifest.json     format "relevo-collection", stages, fusion, checksum,
                                     sha256 + size of every payload file ("files")
    DIR/gen-NNNNNN/docstore.sqlite   position -> id, title, text, metadata
    DIR/gen-NNNNNN/stages/<i>-<name>/  one index each: manifest.json + native payloads

A save writes a new generation and swaps ``CURRENT``; a load reads the one generation
``CURRENT`` names (retrying if a writer replaced it mid-read) and verifies every file's
checksum. The flat layout of older versions (``DIR/manifest.json``) still loads.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from . import journal
from .components import Embedder, Index
from .docstore import FILENAME as DOCSTORE_FILE
from .docstore import DocStore
from .errors import (
    ConfigError,
    CorruptIndexError,
    DimensionError,
    IndexFormatError,
    IndexMismatchError,
    IndexWriteError,
    RequestError,
)
from .filters import Filter, parse_filter
from .fusion import METHODS as FUSION_METHODS
from .fusion import linear, rrf
from .generations import (
    CURRENT,
    current_generation,
    own_entries,
    reading,
    remove_strays,
    write_generation,
)
from .manifest import (
    MANIFEST,
    file_digests,
    live_directory,
    read_manifest,
    validate_collection_manifest,
    validate_stage_manifest,
    verify_files,
    write_manifest,
)
from .types import Hit, Hits
from .writes import WritableCollection

if TYPE_CHECKING:  # pragma: no cover
    from .registry import Registry

log = logging.getLogger(__name__)

FORMAT = "relevo-collection"
FORMAT_VERSION = 1
MAX_K = 10_000
MAX_QUERY_CHARS = 100_000
#: Loads tried when a writer replaces the live generation while a reader reads it.
LOAD_ATTEMPTS = 5


@dataclass
class Stage:
    """One first-stage index of a collection, with the embedder its vectors came from."""

    name: str
    index: Index
    embedder: Embedder | None = None
    embedder_record: dict[str, Any] | None = None

    @property
    def dense(self) -> bool:
        return self.index.input == "vectors"


@dataclass
class Fusion:
    """How several stages are combined.

    Attributes:
        method: ``"rrf"`` (reciprocal-rank fusion, default) or ``"linear"`` (weighted sum
            of per-stage min-max-normalised scores).
        k: the RRF constant.
        depth: candidates taken from each stage before fusing.
        weights: per-stage weights (default 1.0 each).
    """

    method: str = "rrf"
    k: int = 60
    depth: int = 100
    weights: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in FUSION_METHODS:
            raise ConfigError(
                f"unknown fusion method {self.method!r}; choose {', '.join(FUSION_METHODS)}."
            )
        if self.depth < 1 or self.k < 0:
            raise ConfigError(f"fusion depth must be >= 1 and k >= 0 (got {self.depth}, {self.k}).")

    def fuse(
        self, rankings: Mapping[str, Sequence[tuple[str, float]]], limit: int
    ) -> list[tuple[str, float, dict[str, float]]]:
        weights = self.weights or None
        if self.method == "linear":
            return linear(rankings, weights=weights, limit=limit)
        return rrf(rankings, k=self.k, weights=weights, limit=limit)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "k": self.k, "depth": self.depth, "weights": self.weights}


def embedder_record(embedder: Embedder) -> dict[str, Any]:
    """What a manifest stores about the embedder, enough to recreate and to verify it."""
    options = dict(getattr(embedder, "instance_options", {}) or {})
    try:
        json.dumps(options)
    except TypeError as exc:
        raise ConfigError(
            f"embedder options must be JSON-serialisable to be recorded in a manifest: {exc}"
        ) from exc
    return {
        "name": getattr(embedder, "instance_name", None) or embedder.name,
        "options": options,
        "dim": int(embedder.dim),
        "normalized": bool(embedder.normalized),
        "fingerprint": embedder.fingerprint(),
        "describe": embedder.describe(),
    }


def check_replaceable(path: str | Path, *, overwrite: bool) -> None:
    """Refuse to write a collection over anything but an empty folder or (with ``overwrite``) a collection.

    ``overwrite`` replaces only a directory whose live ``manifest.json`` says it is a
    relevo collection (or one whose ``CURRENT`` pointer shows relevo wrote it), never a
    dataset, a working directory or a folder of other files. A folder holding only what
    an interrupted first write left (lock, ``gen-*`` folders of ours) counts as empty.

    Raises:
        IndexWriteError: ``path`` does not exist and cannot be created (a parent is a
            file or not writable).
        IndexFormatError: ``path`` is a file, a non-empty folder without ``overwrite``,
            or a folder that is not a relevo collection.
    """
    target = Path(path)
    if not target.exists():
        _check_creatable(target)
        return
    if not target.is_dir():
        raise IndexFormatError(
            f"{target} is a file, not an index directory; choose another output path (nothing was written)."
        )
    entries = sorted(p.name for p in target.iterdir())
    if not entries:
        return
    try:
        man = read_manifest(live_directory(target))
        # a sharded collection (relevo.engine.sharding.FORMAT) is a collection too
        is_collection = man.get("format") in (FORMAT, "relevo-sharded-collection")
    except IndexFormatError:
        is_collection = (target / CURRENT).is_file()
    if not is_collection:
        ours = own_entries(target)
        entries = [e for e in entries if e not in ours]
        if not entries:
            return  # leftovers of an interrupted first write, all ours
        shown = ", ".join(entries[:5]) + (
            f", ... ({len(entries)} entries)" if len(entries) > 5 else ""
        )
        raise IndexFormatError(
            f"{target} exists and is not a relevo collection (it holds {shown}); refusing to replace it. "
            "Choose another output directory (nothing was written or deleted)."
        )
    if not overwrite:
        raise IndexFormatError(
            f"{target} already exists (a relevo collection); pass overwrite=True (CLI: --overwrite) to replace it."
        )


def _check_creatable(target: Path) -> None:
    """Refuse, before any work, an output path whose nearest existing ancestor is no writable folder."""
    parent = target.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise IndexWriteError(
            f"cannot create the index directory {target}: {parent} is a file, not a folder. "
            "Choose another output path (nothing was written)."
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise IndexWriteError(
            f"cannot create the index directory {target}: {parent} is not writable (permission denied). "
            "Choose another output path or fix the folder's permissions (nothing was written)."
        )


def _check_queries(queries: Sequence[str], k: int) -> None:
    if isinstance(queries, str):
        raise RequestError("pass a list of queries (or use search() for one query).")
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise RequestError(f"k must be a positive integer, got {k!r}.")
    if k > MAX_K:
        raise RequestError(
            f"k={k} is larger than the limit of {MAX_K}; ask for fewer results or page through them."
        )
    for i, q in enumerate(queries):
        if not isinstance(q, str):
            raise RequestError(f"query #{i} is {type(q).__name__}, expected str.")
        if not q.strip():
            raise RequestError(f"query #{i} is empty; give some words to search for.")
        if len(q) > MAX_QUERY_CHARS:
            raise RequestError(
                f"query #{i} has {len(q)} characters, more than the limit of {MAX_QUERY_CHARS}."
            )


class Collection(WritableCollection):
    """Documents plus first-stage indexes; see the module docstring for the layout."""

    def __init__(
        self,
        docstore: DocStore,
        stages: Sequence[Stage],
        *,
        corpus_checksum: str,
        fusion: Fusion | None = None,
        path: Path | None = None,
    ) -> None:
        if not stages:
            raise ConfigError(
                "a collection needs at least one index stage (e.g. bm25 or faiss-flat)."
            )
        names = [s.name for s in stages]
        if len(set(names)) != len(names):
            raise ConfigError(f"stage names must be unique, got {names}.")
        self.docstore = docstore
        self.stages: dict[str, Stage] = {s.name: s for s in stages}
        self.corpus_checksum = corpus_checksum
        self.fusion = fusion or Fusion()
        self.path = path

    def __len__(self) -> int:
        return len(self.docstore)

    def __repr__(self) -> str:
        return f"Collection({len(self)} docs, stages={list(self.stages)})"

    def _routed_stages(self) -> list[Stage]:
        return [
            s for s in self.stages.values() if s.embedder is not None and s.embedder.routes_domains
        ]

    def _check_domain(self, domain: str) -> None:
        routed = self._routed_stages()
        if not routed:
            raise ConfigError(
                f"domain {domain!r}: no stage of this collection ({', '.join(self.stages)}) has a "
                "domain-routing embedder (moe:PATH)."
            )
        for stage in routed:
            known = list(getattr(stage.embedder, "domains", []) or [])
            if known and domain not in known:
                raise ConfigError(
                    f"domain {domain!r}: stage {stage.name!r} has experts for {', '.join(known)}."
                )

    def set_query_domain(self, domain: str) -> None:
        """Encode queries of domain-routing (MoE) stages with ``domain``'s expert by default.

        (One search can say otherwise with ``search_batch(..., domain=...)``.)

        Raises:
            ConfigError: no stage has a domain-routing embedder, or it has no such domain.
        """
        self._check_domain(domain)
        for stage in self._routed_stages():
            stage.embedder = stage.embedder.for_domain(domain)  # type: ignore[union-attr]

    # -- search -------------------------------------------------------------------------
    def _stage_rankings(
        self,
        stage: Stage,
        queries: Sequence[str],
        fetch: int,
        allowed: np.ndarray | None = None,
        domain: str | None = None,
    ) -> list[list[tuple[str, float]]]:
        scores, pos = self._stage_arrays(stage, queries, fetch, allowed, domain)
        ids = self.docstore.ids_view()
        out = []
        # .tolist() first: iterating numpy scalars costs ~10x more per hit
        for srow, prow in zip(scores.tolist(), pos.tolist(), strict=True):
            out.append([(ids[p], s) for s, p in zip(srow, prow, strict=True) if p >= 0])
        return out

    def _stage_arrays(
        self,
        stage: Stage,
        queries: Sequence[str],
        fetch: int,
        allowed: np.ndarray | None = None,
        domain: str | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """One stage's ``(scores, positions)`` arrays; position -1 pads a short row."""
        if stage.dense:
            if stage.embedder is None:
                raise ConfigError(f"stage {stage.name!r} is dense but has no embedder.")
            if domain is not None and stage.embedder.routes_domains:
                qv = stage.embedder.embed(  # type: ignore[call-arg]
                    queries, kind="query", domains=[domain] * len(queries)
                )
            else:
                qv = stage.embedder.embed(queries, kind="query")
            if stage.index.dim is not None and qv.shape[1] != stage.index.dim:
                raise IndexMismatchError(
                    f"stage {stage.name!r} holds {stage.index.dim}-d vectors but embedder "
                    f"{stage.embedder.name!r} produces {qv.shape[1]}-d ones. Load the index with the embedder "
                    "recorded in its manifest (`relevo index info DIR` shows it)."
                )
            scores, pos = stage.index.search(qv, fetch, allowed=allowed)
        else:
            scores, pos = stage.index.search(list(queries), fetch, allowed=allowed)
        return np.asarray(scores, dtype=np.float64), np.asarray(pos, dtype=np.int64)

    def search_batch(
        self,
        queries: Sequence[str],
        k: int = 10,
        *,
        stages: Sequence[str] | None = None,
        depth: int | None = None,
        with_text: bool = True,
        filter: Mapping[str, Any] | Filter | None = None,  # noqa: A002 - the API's word
        domain: str | None = None,
    ) -> list[Hits]:
        """Search many queries at once (batched encoding and index search).

        Args:
            queries: query strings.
            k: hits per query.
            stages: which stages to use (default all; more than one are fused as the
                collection's :class:`Fusion` says).
            depth: per-stage candidates fused (default ``max(k, fusion.depth)``).
            with_text: fill ``Hit.title`` / ``Hit.text`` from the docstore.
            filter: a metadata filter (see :mod:`relevo.engine.filters`), applied inside
                every stage before its top-k: no other document is ever returned.
            domain: the queries' domain, for stages whose embedder routes by domain (a
                mixture of experts: the domain's expert encodes them); other stages
                ignore it. ``None``: the stage's default domain, else its router.
        """
        _check_queries(queries, k)
        if domain is not None:
            self._check_domain(domain)
        k = int(k)  # a numpy integer passes the check; faiss' SWIG search takes Python ints only
        flt = parse_filter(filter)
        with self.lock.read():
            allowed = None
            if flt is not None:
                allowed = flt.mask(self.docstore.rows_view(), self.docstore.live_mask())
            return self._search_locked(queries, k, stages, depth, with_text, allowed, domain)

    def _search_locked(
        self,
        queries: Sequence[str],
        k: int,
        stages: Sequence[str] | None,
        depth: int | None,
        with_text: bool,
        allowed: np.ndarray | None,
        domain: str | None = None,
    ) -> list[Hits]:
        names = list(stages) if stages else list(self.stages)
        unknown = [n for n in names if n not in self.stages]
        if unknown:
            raise RequestError(
                f"unknown stage(s) {unknown}; this collection has {list(self.stages)}."
            )
        if not queries:
            return []
        if len(names) == 1:
            return self._single_stage_hits(
                self.stages[names[0]], queries, k, with_text, allowed, domain
            )
        fetch = max(k, depth or self.fusion.depth)
        per_stage = {
            n: self._stage_rankings(self.stages[n], queries, fetch, allowed, domain) for n in names
        }
        results: list[Hits] = []
        for qi in range(len(queries)):
            ranked = self.fusion.fuse({n: per_stage[n][qi] for n in names}, k)
            hits = []
            for rank, (doc_id, score, stage_ranks) in enumerate(ranked, 1):
                title = text = ""
                if with_text:
                    doc = self.docstore.by_id(doc_id)
                    if doc is not None:
                        title, text = doc.title, doc.text
                hits.append(
                    Hit(
                        id=doc_id,
                        score=score,
                        rank=rank,
                        title=title,
                        text=text,
                        stages=stage_ranks,
                    )
                )
            results.append(Hits.of(hits))
        return results

    def _single_stage_hits(
        self,
        stage: Stage,
        queries: Sequence[str],
        k: int,
        with_text: bool,
        allowed: np.ndarray | None,
        domain: str | None = None,
    ) -> list[Hits]:
        """Hits straight from one stage's arrays: rows by position, no id round trip,
        :class:`Hit` objects made only when a caller reads them."""
        scores, pos = self._stage_arrays(stage, queries, k, allowed, domain)
        rows = self.docstore.rows_view()
        if scores.shape[1] > k:
            scores, pos = scores[:, :k], pos[:, :k]
        return [Hits(scores, pos, i, rows, with_text) for i in range(scores.shape[0])]

    def score_documents(
        self, queries: Sequence[str], doc_ids: Sequence[Sequence[str]]
    ) -> list[list[float | None]]:
        """The first stage's score of given documents per query, as a search would rank them.

        Only single-stage collections can do this (a fused score depends on the other
        documents' ranks) and only formats that score arbitrary rows (bm25, splade,
        faiss, torch-flat). An unknown id scores ``None``.

        Raises:
            RequestError: a fused collection, or a format that cannot score rows.
        """
        _check_queries(queries, 1)
        if len(self.stages) != 1:
            raise RequestError(
                f"scoring given documents needs a single-stage collection; this one fuses {list(self.stages)}."
            )
        stage = next(iter(self.stages.values()))
        positions = [[self.docstore.position(d) for d in ids] for ids in doc_ids]
        known = [[p for p in row if p is not None] for row in positions]
        if stage.dense:
            assert stage.embedder is not None  # noqa: S101 - dense stages carry one
            encoded: Any = stage.embedder.embed(list(queries), kind="query")
        else:
            encoded = list(queries)
        try:
            scores = stage.index.score_positions(encoded, known)
        except NotImplementedError as exc:
            raise RequestError(
                f"stage {stage.name!r} cannot score given documents ({exc})."
            ) from exc
        out: list[list[float | None]] = []
        for row, vals in zip(positions, scores, strict=True):
            it = iter(float(v) for v in vals)
            out.append([None if p is None else next(it) for p in row])
        return out

    def search(self, query: str, k: int = 10, **kwargs: Any) -> Hits:
        """Search one query; see :meth:`search_batch` for the options."""
        if not isinstance(query, str):
            raise RequestError(f"query must be a string, got {type(query).__name__}.")
        return self.search_batch([query], k, **kwargs)[0]

    # -- persistence --------------------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "count": len(self.docstore),
            "rows": self.docstore.rows,
            "corpus_checksum": self.corpus_checksum,
            "stages": [
                {
                    "name": s.name,
                    "index": getattr(s.index, "instance_name", None) or s.index.name,
                    "path": f"stages/{i:02d}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', s.name)}",
                    "embedder": s.embedder_record,
                }
                for i, s in enumerate(self.stages.values())
            ],
            "fusion": self.fusion.to_dict(),
        }

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the collection directory atomically; returns its path.

        ``overwrite`` replaces an existing relevo collection only; anything else at
        ``path`` (a dataset, a folder of other files) is refused, see :func:`check_replaceable`.
        """
        check_replaceable(path, overwrite=overwrite)
        manifest = self.manifest()

        def recheck(target: Path) -> None:  # under the writer lock: another writer may have won
            check_replaceable(target, overwrite=overwrite)

        with write_generation(path, overwrite=overwrite, check=recheck) as tmp:
            self.docstore.save(tmp)
            for entry, stage in zip(manifest["stages"], self.stages.values(), strict=True):
                sdir = tmp / entry["path"]
                sdir.mkdir(parents=True)
                params = stage.index.save(sdir)
                write_manifest(
                    sdir,
                    {
                        "format": entry["index"],
                        "format_version": stage.index.format_version,
                        "class": f"{type(stage.index).__module__}.{type(stage.index).__qualname__}",
                        "count": stage.index.rows,
                        "dim": stage.index.dim,
                        "metric": stage.index.options.get(
                            "metric", "ip" if stage.dense else "bm25"
                        ),
                        "embedder": stage.embedder_record,
                        "corpus_checksum": self.corpus_checksum,
                        "params": params,
                    },
                )
            manifest["files"] = file_digests(
                tmp, [DOCSTORE_FILE, *(entry["path"] for entry in manifest["stages"])]
            )
            write_manifest(tmp, manifest)
        self.path = Path(path)
        self._saved_as(tmp.name)
        log.info("saved collection (%d docs, stages %s) to %s", len(self), list(self.stages), path)
        return Path(path)

    @classmethod
    def load(
        cls,
        path: str | Path,
        registry: Registry,
        *,
        embedders: Mapping[str, Embedder] | None = None,
        make_embedder: Any = None,
    ) -> Collection:
        """Load a collection directory, verifying every manifest and payload.

        Reads the one generation ``CURRENT`` names, holding it against removal by
        writers (:func:`~relevo.engine.generations.reading`); when that read still fails
        because a writer replaced and removed the generation before the hold was taken, it
        retries on the new one (up to :data:`LOAD_ATTEMPTS` times). Afterwards it removes what killed writers left, if
        no writer runs.

        Args:
            path: the collection directory.
            registry: resolves index formats and embedders by their recorded names.
            embedders: optional embedder instances to use, by recorded embedder name;
                one whose name, dimension or fingerprint differs from the manifest is refused.
            make_embedder: ``callable(name, options) -> Embedder`` used for the others.
        """
        path = Path(path)
        attempt = 0
        while True:
            attempt += 1
            generation: str | None = None
            resolved = False
            try:
                with reading(path) as (generation, gen_dir):
                    resolved = True
                    collection = cls._load_generation(
                        path, gen_dir, registry, embedders=embedders, make_embedder=make_embedder
                    )
                    # Writes acknowledged after this generation was written.
                    records = journal.read(gen_dir)
                    if records:
                        collection.replay(records, gen_dir / journal.JOURNAL)
                        log.info("%s: replayed %d journaled writes", path, len(records))
                    collection._saved_as(generation)
            except IndexFormatError as exc:
                moved = resolved and current_generation(path) != generation
                if moved and attempt < LOAD_ATTEMPTS:
                    log.info("%s was replaced while loading it (%s); loading it again", path, exc)
                    continue
                raise
            remove_strays(path)
            return collection

    @classmethod
    def _load_generation(
        cls,
        path: Path,
        gen_dir: Path,
        registry: Registry,
        *,
        embedders: Mapping[str, Embedder] | None,
        make_embedder: Any,
    ) -> Collection:
        """Load the generation folder ``gen_dir`` of the collection directory ``path``."""
        man = read_manifest(
            gen_dir,
            expected_format=FORMAT,
            required=("format", "format_version", "count", "stages"),
        )
        validate_collection_manifest(man, gen_dir / MANIFEST)
        if man["format_version"] > FORMAT_VERSION:
            raise CorruptIndexError(
                f"{path} was written by a newer relevo (collection format {man['format_version']}); upgrade relevo."
            )
        verify_files(gen_dir, man.get("files"), gen_dir / MANIFEST)
        docstore = DocStore.load(
            gen_dir,
            expected_count=int(man["count"]),
            expected_rows=int(man["rows"]) if "rows" in man else None,
        )
        live = docstore.live_mask()
        stages: list[Stage] = []
        for entry in man["stages"]:
            sdir = gen_dir / entry["path"]  # checked to lie inside gen_dir
            sman = read_manifest(sdir, required=("format", "format_version", "count", "params"))
            validate_stage_manifest(sman, sdir / MANIFEST)
            fmt = sman["format"]
            if fmt != entry["index"] or sman.get("embedder", entry.get("embedder")) != entry.get(
                "embedder"
            ):
                raise CorruptIndexError(
                    f"{sdir / MANIFEST}: its format or embedder record differs from stage "
                    f"{entry['name']!r} of {gen_dir / MANIFEST}; the manifests were edited or mixed "
                    "from two indexes. Rebuild the index with `relevo index build --overwrite`."
                )
            reg, _ = registry.get("index", fmt)
            index_cls = cast("type[Index]", reg.cls)
            if sman["format_version"] > index_cls.format_version:
                raise CorruptIndexError(
                    f"{sdir}: index format {fmt!r} version {sman['format_version']} is newer than this relevo "
                    f"supports ({index_cls.format_version}); upgrade relevo or the plugin {reg.plugin!r}."
                )
            try:
                index = index_cls.load(sdir, sman["params"])
            except (CorruptIndexError, IndexMismatchError):
                raise
            except Exception as exc:
                raise CorruptIndexError(
                    f"{sdir}: cannot load the {fmt!r} payload ({type(exc).__name__}: {exc}); rebuild the index."
                ) from exc
            index.instance_name = fmt
            index.plugin_name = reg.plugin
            if index.rows != sman["count"]:
                raise CorruptIndexError(
                    f"{sdir}: payload holds {index.rows} rows but the manifest says {sman['count']}; rebuild the index."
                )
            if sman["count"] != docstore.rows:
                raise CorruptIndexError(
                    f"{sdir}: index has {sman['count']} rows but the docstore has {docstore.rows}; rebuild the index."
                )
            if not np.array_equal(index.deleted_mask(), ~live):
                raise CorruptIndexError(
                    f"{sdir}: the index's removed rows differ from the docstore's deleted documents; "
                    "rebuild the index."
                )
            record = entry.get("embedder")
            embedder = None
            if index.input == "vectors":
                if not record:
                    raise CorruptIndexError(
                        f"{sdir}: a dense index without an embedder record; rebuild the index."
                    )
                embedder = _resolve_embedder(record, sman, embedders or {}, make_embedder, sdir)
            stages.append(Stage(entry["name"], index, embedder, record))
        fusion_cfg = man.get("fusion", {})
        fusion = Fusion(
            method=str(fusion_cfg.get("method", "rrf")),
            k=int(fusion_cfg.get("k", 60)),
            depth=int(fusion_cfg.get("depth", 100)),
            weights=dict(fusion_cfg.get("weights", {})),
        )
        return cls(
            docstore,
            stages,
            corpus_checksum=man.get("corpus_checksum", ""),
            fusion=fusion,
            path=path,
        )


def _resolve_embedder(
    record: Mapping[str, Any],
    sman: Mapping[str, Any],
    given: Mapping[str, Embedder],
    make: Any,
    sdir: Path,
) -> Embedder:
    name = record["name"]
    if sman.get("dim") is not None and int(record["dim"]) != int(sman["dim"]):
        raise CorruptIndexError(
            f"{sdir}: manifest dimension {sman['dim']} differs from embedder record {record['dim']}."
        )
    if given:
        if name not in given:
            raise IndexMismatchError(
                f"{sdir} was built with embedder {name!r} ({record['dim']}-d), but {sorted(given)} was requested. "
                f"Search it with --embedder {name}, or rebuild the index with the embedder you want."
            )
        emb = given[name]
    else:
        emb = make(name, dict(record.get("options", {})))
    if emb.dim and int(emb.dim) != int(record["dim"]):
        raise IndexMismatchError(
            f"{sdir} holds {record['dim']}-d vectors from {name!r}, but the embedder gives {emb.dim}-d vectors."
        )
    fp = record.get("fingerprint")
    if fp is not None and emb.fingerprint() != fp:
        raise IndexMismatchError(
            f"{sdir} was built with a different configuration of embedder {name!r} (other weights or prompts); "
            "queries would be encoded differently from the documents. Rebuild the index or use the original model."
        )
    return emb


def check_vectors(vectors: np.ndarray, embedder: Embedder, n: int) -> None:
    if vectors.shape[0] != n or (embedder.dim and vectors.shape[1] != embedder.dim):
        raise DimensionError(
            f"embedder {embedder.name!r} returned {vectors.shape}, expected ({n}, {embedder.dim})."
        )


__all__ = [
    "FORMAT",
    "MAX_K",
    "Collection",
    "Fusion",
    "Stage",
    "check_replaceable",
    "embedder_record",
]
