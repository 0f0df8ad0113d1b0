"""Component base classes: what a plugin subclasses and registers.

Each base class has one method a plugin must write; the host supplies validation,
batching and bookkeeping around it. Capabilities are class attributes, not probes.
Heavy stacks (torch, faiss, ...) are imported by subclasses on first use only.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from .errors import CorruptIndexError, DimensionError, PluginError, RequestError
from .mining import Candidate, MinedQuery, MiningQuery, MiningReport, MiningResult, Selection

if TYPE_CHECKING:  # pragma: no cover
    from .types import Document

log = logging.getLogger(__name__)

EmbedKind = Literal["query", "document"]


class Component(ABC):  # noqa: B024 - a shared root; each kind declares its abstract method
    """Shared bits of every component.

    Attributes:
        name: the name a plugin registers the component under (set by the host on
            instances it creates, so ``"minilm"`` and ``"sentence-transformers"`` can
            share a class).
        spec_option: option that receives the text after ``:`` in a name such as
            ``"sentence-transformers:BAAI/bge-small-en-v1.5"``; ``None`` refuses such names.
        extra: the ``relevo[extra]`` that installs this component's stack.
        component_options: options that name another component, ``{option: kind}``
            (e.g. ``{"teacher": "reranker"}``): the host turns a name given for such an
            option into an instance of that registered component.
    """

    name: ClassVar[str] = ""
    spec_option: ClassVar[str | None] = None
    extra: ClassVar[str | None] = None
    component_options: ClassVar[Mapping[str, str]] = {}
    #: Stamped by the host on instances it creates: the name asked for, the plugin that
    #: registered it, and the options the user passed (recorded in manifests).
    instance_name: str | None = None
    plugin_name: str | None = None
    instance_options: dict[str, Any] | None = None

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable facts about this instance (stored in manifests, printed by the CLI)."""
        return {"name": getattr(self, "instance_name", None) or self.name}


class Embedder(Component):
    """Turns texts into float32 vectors.

    Subclasses write :meth:`embed_batch`. Attributes ``dim``, ``normalized`` and
    ``max_length`` must be set once the model is loaded (``dim`` may be a property).
    """

    dim: int = 0
    normalized: bool = True
    max_length: int | None = None
    batch_size: ClassVar[int] = 32
    needs_gpu: ClassVar[bool] = False
    #: Domain-routing embedders (mixture of experts) set this: their :meth:`embed` takes
    #: ``domains=`` (one name or ``None`` per text) and documents are embedded with the
    #: value of their metadata field :attr:`domain_field` (see :func:`embed_documents`).
    routes_domains: ClassVar[bool] = False
    domain_field: str = "domain"

    @abstractmethod
    def embed_batch(self, texts: Sequence[str], *, kind: EmbedKind) -> np.ndarray:
        """Embed one batch; return a float32 array of shape ``(len(texts), dim)``."""

    def fingerprint(self) -> str:
        """A string that changes whenever the vectors would change (model weights, prompts).

        Used to key embedding caches; the default is the instance description.
        """
        import json

        return json.dumps(self.describe(), sort_keys=True)

    def embed(
        self,
        texts: Sequence[str],
        *,
        kind: EmbedKind = "query",
        batch_size: int | None = None,
        progress: Any = None,
    ) -> np.ndarray:
        """Embed ``texts`` in batches sorted by length, returning rows in input order.

        Args:
            texts: the strings to embed.
            kind: ``"query"`` or ``"document"``; selects the prompt/prefix.
            batch_size: overrides the class default.
            progress: optional callable ``advance(n)`` called after each batch.
        """
        if kind not in ("query", "document"):
            raise RequestError(f"kind must be 'query' or 'document', not {kind!r}")
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise RequestError(f"text #{i} is {type(t).__name__}, expected str")
        size = batch_size or self.batch_size
        if len(texts) <= size:  # one batch (a query, a small request): nothing to sort
            vecs = self._checked(self.embed_batch(texts, kind=kind), len(texts))
            if progress is not None:
                progress(len(texts))
            return vecs
        # Sorting by length keeps padding small inside a batch: the longest texts
        # go first so a memory problem shows up on the first batch, not the last.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out: np.ndarray | None = None
        for start in range(0, len(order), size):
            idx = order[start : start + size]
            vecs = self._checked(self.embed_batch([texts[i] for i in idx], kind=kind), len(idx))
            if out is None:
                out = np.empty((len(texts), vecs.shape[1]), dtype=np.float32)
            elif vecs.shape[1] != out.shape[1]:
                raise DimensionError(
                    f"embedder {self.name!r} returned {vecs.shape[1]}-d vectors after {out.shape[1]}-d ones"
                )
            out[idx] = vecs
            if progress is not None:
                progress(len(idx))
        assert out is not None  # noqa: S101 - texts is non-empty, so one batch ran
        return out

    def _checked(self, vecs: Any, n: int) -> np.ndarray:
        """One batch's output as float32 ``(n, dim)``, or a :class:`DimensionError`."""
        vecs = np.asarray(vecs, dtype=np.float32)
        if vecs.ndim != 2 or vecs.shape[0] != n:
            raise DimensionError(
                f"embedder {self.name!r} returned shape {vecs.shape} for a batch of {n} texts"
            )
        return vecs


def index_items(index: Index, docs: Sequence[Document]) -> list[Any]:
    """What a text index's :meth:`Index.add` takes for ``docs``: their content, or the
    documents themselves for an index that ``reads_documents``."""
    if index.reads_documents:
        return list(docs)
    return [d.content for d in docs]


def embed_documents(
    embedder: Embedder, docs: Sequence[Document], *, progress: Any = None
) -> np.ndarray:
    """Embed documents' content; a domain-routing embedder also gets each one's domain.

    The domain is the document's metadata field ``embedder.domain_field`` (``None`` when
    absent: the embedder's default domain, or its router, decides).
    """
    texts = [d.content for d in docs]
    if not embedder.routes_domains:
        return embedder.embed(texts, kind="document", progress=progress)
    field = embedder.domain_field
    domains = [d.metadata.get(field) if d.metadata else None for d in docs]
    bad = next((v for v in domains if v is not None and not isinstance(v, str)), None)
    if bad is not None:
        raise RequestError(
            f"document metadata {field!r} must be a domain name (a string), got {bad!r}."
        )
    return embedder.embed(texts, kind="document", progress=progress, domains=domains)  # type: ignore[call-arg]


class Index(Component):
    """An index format: rows ``0..count-1`` are positions, the collection maps them to ids.

    ``input`` says whether :meth:`add` takes texts (sparse / lexical indexes) or float32
    vectors (dense indexes). Subclasses write ``_add``, ``_search``, ``_count``,
    ``save_payload`` and ``load_payload``; the base class validates input, handles
    removal with a tombstone mask that search filters out (over-fetching to still
    return ``k`` hits), and persists that mask itself in :meth:`save` / :meth:`load`
    (``deleted.npy`` beside the payload), so a format never has to.
    """

    input: ClassVar[Literal["text", "vectors"]] = "vectors"
    #: A text index that needs more than ``title + " " + text`` (e.g. the title alone, to
    #: make document identifiers) sets this: the host then hands :meth:`add` the
    #: :class:`~relevo.Document` objects themselves (see :func:`index_items`).
    reads_documents: ClassVar[bool] = False
    format_version: ClassVar[int] = 1
    #: The tombstone file :meth:`save` writes beside the payload.
    TOMBSTONES: ClassVar[str] = "deleted.npy"

    def __init__(self, **options: Any) -> None:
        self.options: dict[str, Any] = dict(options)
        self.dim: int | None = options.get("dim")
        self._deleted = np.zeros(0, dtype=bool)

    @property
    def _deleted(self) -> np.ndarray:
        """Tombstone mask, one bool per row (assigning it recounts the removed rows)."""
        return self._tombstones

    @_deleted.setter
    def _deleted(self, mask: np.ndarray) -> None:
        self._tombstones = np.asarray(mask, dtype=bool)
        self._n_deleted = int(self._tombstones.sum())

    # -- what subclasses write ------------------------------------------------------
    @abstractmethod
    def _add(self, items: Any) -> None:
        """Append texts (list[str]) or vectors (float32 ``(n, dim)``) as new rows."""

    @abstractmethod
    def _search(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(scores, positions)``, each ``(len(queries), k)``, best first.

        Missing results are padded with score ``-inf`` and position ``-1``.
        """

    @abstractmethod
    def _count(self) -> int:
        """Number of rows added so far (removed rows included)."""

    @abstractmethod
    def save_payload(self, directory: Path) -> dict[str, Any]:
        """Write native payload files into ``directory`` (already created, temporary).

        Returns the build parameters to record in the manifest; they are handed back to
        :meth:`load_payload`. Never pickle.
        """

    @classmethod
    @abstractmethod
    def load_payload(cls, directory: Path, params: Mapping[str, Any]) -> Index:
        """Rebuild an index from ``save_payload``'s files and parameters."""

    # -- what the host supplies -----------------------------------------------------
    @property
    def count(self) -> int:
        """Rows that are searchable (added minus removed)."""
        return self._count() - self._n_deleted

    @property
    def rows(self) -> int:
        """Rows added so far, removed ones included (positions run ``0..rows-1``)."""
        return self._count()

    def stored_vectors(self, positions: Sequence[int] | np.ndarray) -> np.ndarray:
        """The exact float32 vectors stored at ``positions`` (dense formats that keep them).

        Compaction re-adds them instead of re-encoding the documents. Formats that store
        no vectors, or only lossy codes (PQ), refuse, and compaction re-encodes.

        Raises:
            NotImplementedError: this format cannot give its vectors back exactly.
        """
        raise NotImplementedError(f"{self.name} does not keep exact vectors")

    def deleted_mask(self) -> np.ndarray:
        """A copy of the tombstones: one bool per row, True where the row was removed."""
        return self._tombstones.copy()

    def score_positions(self, queries: Any, positions: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """This index's scores of given rows for each query (as :meth:`search` would give them).

        Formats that can score arbitrary rows (a positive the search did not retrieve,
        for hard-negative margins) override this; the default refuses.

        Raises:
            NotImplementedError: this format cannot score arbitrary rows.
        """
        raise NotImplementedError(f"{self.name} cannot score arbitrary rows")

    def save(self, directory: Path) -> dict[str, Any]:
        """Write the payload and the tombstones into ``directory``; returns the build parameters."""
        directory = Path(directory)
        params = self.save_payload(directory)
        np.save(directory / self.TOMBSTONES, self._tombstones, allow_pickle=False)
        return params

    @classmethod
    def load(cls, directory: Path, params: Mapping[str, Any]) -> Index:
        """Rebuild an index saved by :meth:`save`, tombstones included.

        Raises:
            CorruptIndexError: the tombstone file is missing, unreadable or does not
                hold one flag per row (payload errors are the format's own).
        """
        directory = Path(directory)
        index = cls.load_payload(directory, params)
        path = directory / cls.TOMBSTONES
        try:
            deleted = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise CorruptIndexError(
                f"{path} is missing or unreadable ({exc}); rebuild the index."
            ) from exc
        if deleted.dtype != np.bool_ or deleted.shape != (index.rows,):
            raise CorruptIndexError(
                f"{path} holds {deleted.dtype} {deleted.shape}, expected one flag per row "
                f"({index.rows}); rebuild the index."
            )
        index._deleted = deleted
        return index

    def add(self, items: Any) -> None:
        if self.input == "vectors":
            vecs = np.asarray(items)
            if vecs.ndim != 2:
                raise DimensionError(
                    f"{self.name}: expected a 2-d array of vectors, got shape {vecs.shape}"
                )
            if self.dim is not None and vecs.shape[1] != self.dim:
                raise DimensionError(
                    f"{self.name}: index holds {self.dim}-d vectors, got {vecs.shape[1]}-d ones. "
                    "Use the embedder the index was built with, or build a new index."
                )
            if not np.isfinite(vecs).all():
                raise DimensionError(f"{self.name}: vectors contain NaN or infinite values")
            self.dim = int(vecs.shape[1])
            items = np.ascontiguousarray(vecs, dtype=np.float32)
            n = len(items)
        else:
            from .types import Document

            items = list(items)
            for i, t in enumerate(items):
                if not (isinstance(t, str) or (self.reads_documents and isinstance(t, Document))):
                    raise RequestError(
                        f"{self.name}: item #{i} is {type(t).__name__}, expected str"
                    )
            n = len(items)
        if n == 0:
            return
        self._add(items)
        self._deleted = np.concatenate([self._deleted, np.zeros(n, dtype=bool)])

    def remove(self, positions: Sequence[int] | np.ndarray) -> int:
        """Mark rows as removed; returns how many were newly removed."""
        pos = np.asarray(positions, dtype=np.int64)
        if pos.size and (pos.min() < 0 or pos.max() >= self._count()):
            raise RequestError(f"{self.name}: positions out of range 0..{self._count() - 1}")
        pos = np.unique(pos)
        newly = int((~self._tombstones[pos]).sum())
        self._tombstones[pos] = True
        self._n_deleted += newly
        return newly

    def _search_allowed(
        self, queries: Any, k: int, allowed: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Like ``_search`` but only over rows where ``allowed`` is True (tombstones already out).

        Formats that can restrict a search natively (a mask before top-k, an id
        selector) override this and set ``filters_natively``; the others are searched
        deeper and filtered afterwards, which is exact but costs more when the filter
        keeps few rows.
        """
        raise NotImplementedError

    #: True where :meth:`_search_allowed` restricts the search inside the index.
    filters_natively: ClassVar[bool] = False

    def search(
        self, queries: Any, k: int = 10, *, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` rows for each query; see ``_search`` for the return contract.

        Args:
            queries: texts (``input == "text"``) or float32 vectors.
            k: results per query.
            allowed: optional bool mask over rows (``rows`` long); only rows where it
                is True can be returned, and ``k`` of them come back when that many
                match (the filter is applied before top-k, never after).
        """
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise RequestError(f"k must be a positive integer, got {k!r}")
        if self.input == "vectors":
            queries = np.asarray(queries, dtype=np.float32)
            if queries.ndim == 1:
                queries = queries[None, :]
            if queries.ndim != 2 or (self.dim is not None and queries.shape[1] != self.dim):
                raise DimensionError(
                    f"{self.name}: index holds {self.dim}-d vectors, got queries of shape {queries.shape}. "
                    "Encode queries with the embedder recorded in the index manifest."
                )
            queries = np.ascontiguousarray(queries)
            nq = queries.shape[0]
        else:
            if isinstance(queries, str):
                queries = [queries]
            queries = list(queries)
            nq = len(queries)
        total = self._count()
        if allowed is not None:
            allowed = np.asarray(allowed)
            if allowed.dtype != np.bool_ or allowed.shape != (total,):
                raise RequestError(
                    f"{self.name}: the allowed mask must be {total} bools (one per row), "
                    f"got {allowed.dtype} {allowed.shape}"
                )
            blocked = self._tombstones | ~allowed
            n_blocked = int(blocked.sum())
        else:
            blocked = self._tombstones
            n_blocked = self._n_deleted
        if total == 0 or nq == 0 or n_blocked == total:
            return np.full((nq, k), -np.inf, np.float32), np.full((nq, k), -1, np.int64)
        if allowed is not None and self.filters_natively:
            fetch = min(k, total - n_blocked)
            scores, pos = self._search_allowed(queries, fetch, ~blocked)
        else:
            fetch = min(k + n_blocked, total)
            scores, pos = self._search(queries, fetch)
        scores = np.asarray(scores, dtype=np.float32)
        pos = np.asarray(pos, dtype=np.int64)
        if n_blocked:
            keep = (pos >= 0) & ~blocked[np.clip(pos, 0, None)]
            out_s, out_p = np.full((nq, k), -np.inf, np.float32), np.full((nq, k), -1, np.int64)
            for i in range(nq):
                sel = np.flatnonzero(keep[i])[:k]
                out_s[i, : len(sel)] = scores[i, sel]
                out_p[i, : len(sel)] = pos[i, sel]
            return out_s, out_p
        if fetch < k:
            pad = k - fetch
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
            pos = np.pad(pos, ((0, 0), (0, pad)), constant_values=-1)
        return scores[:, :k], pos[:, :k]


class NegativeMiner(Component):
    """Finds hard negatives for (query, positives) pairs; subclasses write :meth:`select`.

    The host supplies :meth:`mine`: it searches the retriever (any relevo collection)
    ``batch_size`` queries at a time for ``depth`` candidates each, hands every query's
    candidates (positives removed, the best positive's score noted) to :meth:`select`,
    refuses a selection that contains a positive, and counts everything in the report.
    Memory stays at ``batch_size x depth`` candidates; no queries x corpus matrix.

    Attributes:
        depth: first-stage candidates retrieved per query.
        seed: seeds the per-query random generator handed to :meth:`select` (one
            generator per query id, so results do not depend on batching).
        batch_size: queries searched at once.
    """

    depth: int = 100
    seed: int = 0
    # Dense search is several times faster per query in large batches (BLAS); 1024
    # queries x depth candidates is still a few MB.
    batch_size: ClassVar[int] = 1024

    @abstractmethod
    def select(self, query: MiningQuery, rng: np.random.Generator) -> Selection:
        """Keep negatives among ``query.candidates`` (and say why others were dropped)."""

    def prepare(
        self,
        queries: Mapping[str, str],
        positives: Mapping[str, Sequence[str]],
        corpus: Mapping[str, Document],
        retriever: Any,
    ) -> None:
        """Called once before the first :meth:`select` (e.g. to index the corpus ids); default: nothing."""

    def options(self) -> dict[str, Any]:
        """The settings recorded in the report (default: the instance's public attributes)."""
        return {
            k: v
            for k, v in vars(self).items()
            if not k.startswith("_")
            and k not in ("instance_name", "plugin_name", "instance_options")
            and isinstance(v, (int, float, str, bool, type(None)))
        }

    def mine(
        self,
        queries: Mapping[str, str],
        positives: Mapping[str, Sequence[str]],
        corpus: Mapping[str, Document],
        *,
        retriever: Any,
        k: int | None = None,
        progress: Any = None,
    ) -> MiningResult:
        """Mine negatives for every query that has positives.

        Args:
            queries: query id -> text.
            positives: query id -> judged positive doc ids handed to the miner (never
                returned as negatives); queries without any are skipped.
            corpus: doc id -> :class:`Document` (texts for reports, random negatives).
            retriever: a :class:`~relevo.Collection` searched for candidates.
            k: candidates per query (default ``self.depth``).
            progress: ``advance(n)`` called as queries are done.

        Returns:
            a :class:`~relevo.engine.mining.MiningResult`, queries in input order.
        """
        import zlib

        depth = int(k or self.depth)
        if depth < 1:
            raise RequestError(f"{self.name}: the search depth must be >= 1, got {depth}.")
        qids = [q for q in queries if positives.get(q)]
        self.prepare(queries, positives, corpus, retriever)
        name = getattr(self, "instance_name", None) or self.name
        report = MiningReport(name, options=self.options())
        texts = _LazyTexts(corpus)
        out: list[MinedQuery] = []
        for start in range(0, len(qids), self.batch_size):
            batch = qids[start : start + self.batch_size]
            runs = retriever.search_batch([queries[q] for q in batch], depth, with_text=False)
            exact = _positive_scores(retriever, batch, queries, positives, runs, report)
            for qid, hits in zip(batch, runs, strict=True):
                pos = list(dict.fromkeys(positives[qid]))
                pos_set = set(pos)
                pos_scores = [h.score for h in hits if h.id in pos_set] + exact.get(qid, [])
                query = MiningQuery(
                    qid,
                    queries[qid],
                    pos,
                    max(pos_scores) if pos_scores else None,
                    [Candidate(h.id, float(h.score), h.rank) for h in hits if h.id not in pos_set],
                    float(hits[-1].score) if hits else None,
                    next((h.rank for h in hits if h.id in pos_set), None),
                )
                rng = np.random.default_rng([int(self.seed), zlib.crc32(qid.encode("utf-8"))])
                selection = self.select(query, rng)
                leaked = [d for d, _ in selection.kept if d in pos_set]
                if leaked:
                    raise PluginError(
                        f"miner {name!r} (plugin {self.plugin_name!r}) returned positives {leaked[:3]} of "
                        f"query {qid!r} as negatives; a miner must never do that."
                    )
                kept = list(dict(selection.kept).items())  # first occurrence wins
                selection.kept = kept
                report.add(query, selection, texts)
                out.append(MinedQuery(qid, pos, [d for d, _ in kept], [s for _, s in kept]))
            if progress is not None:
                progress(len(batch))
        return MiningResult(out, report)


def _positive_scores(
    retriever: Any,
    batch: Sequence[str],
    queries: Mapping[str, str],
    positives: Mapping[str, Sequence[str]],
    runs: Sequence[Sequence[Any]],
    report: MiningReport,
) -> dict[str, list[float]]:
    """First-stage scores of positives the search did not retrieve, where the retriever can score them."""
    missing = [
        (qid, [p for p in positives[qid] if p not in {h.id for h in hits}])
        for qid, hits in zip(batch, runs, strict=True)
    ]
    missing = [(q, ids) for q, ids in missing if ids]
    scorer = getattr(retriever, "score_documents", None)
    if not missing or scorer is None or report.extra.get("positive_scores") == "bound":
        return {}
    try:
        scored = scorer([queries[q] for q, _ in missing], [ids for _, ids in missing])
    except RequestError as exc:
        log.info("positive scores are bounds, not exact: %s", exc)
        report.extra["positive_scores"] = "bound"
        return {}
    report.extra["positive_scores"] = "exact"
    return {
        q: [s for s in vals if s is not None] for (q, _), vals in zip(missing, scored, strict=True)
    }


class _LazyTexts(Mapping[str, str]):
    """Document texts by id, read only for the few dropped candidates a report samples."""

    def __init__(self, corpus: Mapping[str, Document]) -> None:
        self._corpus = corpus

    def __getitem__(self, key: str) -> str:
        return self._corpus[key].content

    def get(self, key: str, default: Any = None) -> Any:
        doc = self._corpus.get(key)
        return doc.content if doc is not None else default

    def __iter__(self) -> Iterator[str]:
        return iter(self._corpus)

    def __len__(self) -> int:
        return len(self._corpus)


@dataclass
class Cost:
    """Work a reranker did: LLM calls, tokens in and out, wall seconds.

    LLM-backed components add to their ``cost`` as they work; the host measures
    seconds and reports the difference per call.
    """

    llm_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    seconds: float = 0.0

    def add(
        self,
        *,
        llm_calls: int = 0,
        input_tokens: int = 0,
        output_tokens: int = 0,
        seconds: float = 0.0,
    ) -> None:
        self.llm_calls += llm_calls
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        self.seconds += seconds

    def __add__(self, other: Cost) -> Cost:
        return Cost(
            self.llm_calls + other.llm_calls,
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.seconds + other.seconds,
        )

    def __sub__(self, other: Cost) -> Cost:
        return Cost(
            self.llm_calls - other.llm_calls,
            self.input_tokens - other.input_tokens,
            self.output_tokens - other.output_tokens,
            self.seconds - other.seconds,
        )

    def copy(self) -> Cost:
        return Cost(self.llm_calls, self.input_tokens, self.output_tokens, self.seconds)

    def to_dict(self) -> dict[str, Any]:
        return {
            "llm_calls": self.llm_calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "seconds": self.seconds,
        }


class Reranker(Component):
    """Shared base of the reranker kinds; ``cost`` accumulates LLM work."""

    def load(self) -> None:
        """Load weights now instead of on the first call (the host calls this before timing).

        The default does nothing; components that load lazily override it.
        """

    @property
    def cost(self) -> Cost:
        c = self.__dict__.get("_cost")
        if c is None:
            c = self.__dict__["_cost"] = Cost()
        return c


class PointwiseReranker(Reranker):
    """Scores each (query, document) pair independently; higher is more relevant."""

    batch_size: ClassVar[int] = 32

    @abstractmethod
    def score(self, query: str, docs: Sequence[str]) -> Sequence[float]:
        """Return one float per document, in input order."""


class ListwiseReranker(Reranker):
    """Orders a window of documents at once.

    ``permute`` returns a permutation of ``range(len(docs))`` (indices, never texts),
    best first. The host validates it and repairs missing / repeated indices.
    """

    window_size: ClassVar[int] = 20

    @abstractmethod
    def permute(self, query: str, docs: Sequence[str]) -> Sequence[int]:
        """Return indices of ``docs``, most relevant first."""


class PairwiseReranker(Reranker):
    """Compares two documents for a query (Pairwise Ranking Prompting).

    The host asks both orders and averages, cancelling position bias, and runs the
    all-pairs, sorting and sliding strategies around ``compare``.
    """

    @abstractmethod
    def compare(self, query: str, doc_a: str, doc_b: str) -> float:
        """Probability in [0, 1] that ``doc_a`` is more relevant than ``doc_b``."""


class ConstrainedDecoder(Component):
    """Restricts generation to a set of allowed token sequences.

    ``allowed_tokens(batch_id, prefix)`` returns the token ids that may follow
    ``prefix``; it has the signature of a Hugging Face ``prefix_allowed_tokens_fn``.
    """

    @abstractmethod
    def allowed_tokens(self, batch_id: int, prefix: Sequence[int]) -> list[int]:
        """Token ids allowed after ``prefix`` for sequence ``batch_id``."""


class QueryGenerator(Component):
    """Writes search queries for documents (synthetic training and dev queries).

    Subclasses write :meth:`generate`: one query per document text, sampled with a
    generator seeded by ``seed`` so a batch's queries depend only on the batch and the
    seed. ``examples`` are up to 8 ``(document, query)`` pairs of the target task
    (few-shot prompting, Promptagator); without them a generic prompt is used. The
    host (:func:`relevo.engine.synthetic.generate_queries`) batches documents, cleans
    the output, resumes interrupted runs and checks every query round trip.

    Attributes:
        batch_size: documents per :meth:`generate` call the host uses by default.
    """

    batch_size: ClassVar[int] = 16

    def load(self) -> None:  # noqa: B027 - optional hook
        """Load weights now (otherwise the first :meth:`generate` does)."""

    @abstractmethod
    def generate(self, docs: Sequence[str], seed: Sequence[int]) -> list[str]:
        """One raw query per text of ``docs`` (the host keeps its first line)."""

    def fingerprint(self) -> str:
        """Changes whenever the queries would change (weights, prompt, sampling)."""
        import json

        return json.dumps(self.describe(), sort_keys=True)


__all__ = [
    "Component",
    "ConstrainedDecoder",
    "EmbedKind",
    "Embedder",
    "Index",
    "Cost",
    "ListwiseReranker",
    "NegativeMiner",
    "PairwiseReranker",
    "PointwiseReranker",
    "QueryGenerator",
    "Reranker",
]
