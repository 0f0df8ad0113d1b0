"""BM25 over a term-major sparse matrix of precomputed score contributions.

Indexing computes, for every (term, document) pair that occurs, the term's whole BM25
contribution ``idf(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl))`` and stores
them as a CSR matrix with one row per term (the "eager" layout of bm25s). Scoring a
batch of queries is then one sparse product, ``query-term counts @ contributions``,
computed by scipy's C routine over a bounded chunk of queries. Its rows hold only the
documents that share a term with the query, and top-k selection (``np.partition``,
then an exact sort by score and position) runs on those, never on a dense row over
the whole corpus. No Python code runs per posting.

Three idf variants (Kamphuis et al., ECIR 2020):

- ``"lucene"``: ``ln(1 + (N - df + 0.5) / (df + 0.5))``, never negative;
- ``"okapi"``: ``ln((N - df + 0.5) / (df + 0.5))`` with negative values replaced by
  ``epsilon * mean idf over the vocabulary``, exactly ``rank_bm25.BM25Okapi``;
- ``"atire"``: ``ln(N / df)``.

The raw term frequencies and document lengths are kept too, so :meth:`BM25Index.add`
can be called again: idf and avgdl change with every addition, so the contribution
matrix is rebuilt from them.

Search runs a compiled kernel when numba is importable (``backend="auto"``, see
:mod:`relevo.indexes.bm25_kernels`: exact MaxScore, or term-at-a-time, chosen per
query), else the scipy product above; both return the same top k, scores and tie order.

Adding counts a chunk of documents at a time into preallocated doc-major arrays, and
the rebuild scatters the contributions straight into term-major order (a chunked
counting sort), so no temporary spans all the tokens or postings.

Global statistics (:class:`BM25Statistics`): an index over one shard of a corpus scores
its documents exactly as an index over the whole corpus once the shards' merged
:meth:`BM25Index.local_statistics` (or :func:`corpus_statistics` of the whole corpus)
are set with :meth:`BM25Index.set_global_statistics`. They stay fixed through adds
and removals until set again (``None`` goes back to the index's own live statistics),
and are saved with the index.

Loading memory-maps every payload array (``BM25Index.load(..., mmap=True)``, the
default) and hands back the pages its checks read, so a loaded index is resident only
where queries touch it.

scipy and PyStemmer (the ``relevo[bm25]`` extra) are imported on first use; numba (in
the same extra) is optional.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain, islice, repeat
from itertools import count as counter
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from ..engine.components import Index
from ..engine.deps import require
from ..engine.errors import ConfigError, CorruptIndexError, RequestError
from .csr import (
    CHUNK_CELLS,
    check_csr,
    csr,
    keep_columns,
    load_array,
    product,
    release_pages,
    save_arrays,
    select_topk,
)

logger = logging.getLogger(__name__)

DEFAULT_TOKEN_PATTERN = r"(?u)\b\w\w+\b"

#: English stopwords, identical to ``bm25s.stopwords.STOPWORDS_EN`` (bm25s's ``"en"``),
#: so that scores are comparable with bm25s and with Lucene's classic English analyzer.
STOPWORDS_EN: tuple[str, ...] = (
    "a",
    "an",
    "and",
    "are",
    "as",
    "at",
    "be",
    "but",
    "by",
    "for",
    "if",
    "in",
    "into",
    "is",
    "it",
    "no",
    "not",
    "of",
    "on",
    "or",
    "such",
    "that",
    "the",
    "their",
    "then",
    "there",
    "these",
    "they",
    "this",
    "to",
    "was",
    "will",
    "with",
)

METHODS = ("lucene", "okapi", "atire")

#: Query backends: ``"auto"`` is the compiled kernels where numba imports (per query,
#: MaxScore or term-at-a-time, whichever its posting counts say is cheaper), else
#: ``"scipy"``; ``"numba"`` always tries MaxScore; ``"numba-taat"`` always runs
#: term-at-a-time.
BACKENDS = ("auto", "numba", "numba-taat", "scipy")

#: Postings whose contributions are computed (in float64) per step of a rebuild.
_REBUILD_CHUNK = 1 << 20

#: Token lists whose element types are checked together.
_CHECK_CHUNK = 4096

#: Tokens (whole documents) counted per step of an add.
_ADD_CHUNK_TOKENS = 1 << 18

#: Provisional ids of terms new to an add are this plus a token position.
_PROVISIONAL = 1 << 48

_STOP_EN = frozenset(STOPWORDS_EN)


def _make_stemmer(name: str) -> Any:
    (Stemmer,) = require("Stemmer", extra="bm25", what="bm25")
    try:
        return Stemmer.Stemmer(name)
    except KeyError as exc:
        raise ConfigError(
            f"bm25: unknown stemmer {name!r}. Snowball stemmers available: "
            f"{', '.join(Stemmer.algorithms())}; or stemmer=None to disable stemming."
        ) from exc


@dataclass(frozen=True)
class Tokenizer:
    """Lowercase, split on a regex, drop English stopwords, Snowball-stem.

    Stopwords are matched on the lowercased word before stemming (as bm25s does).
    Stems are memoised per distinct word, so a corpus costs one stemmer call per
    vocabulary entry rather than per token.

    Args:
        lowercase: lowercase texts before splitting.
        token_pattern: regex whose matches are the tokens (``re.findall``).
        stopwords: drop the words in :data:`STOPWORDS_EN`.
        stemmer: a Snowball algorithm name for PyStemmer (``"english"``), or ``None``.
    """

    lowercase: bool = True
    token_pattern: str = DEFAULT_TOKEN_PATTERN
    stopwords: bool = True
    stemmer: str | None = "english"
    # word -> stem, or "" for a stopword; shared by every call on this instance.
    _memo: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)
    _state: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.lowercase, bool) or not isinstance(self.stopwords, bool):
            raise ConfigError(
                "bm25: tokenizer options lowercase and stopwords must be true or false"
            )
        try:
            regex = re.compile(self.token_pattern)
        except (re.error, TypeError) as exc:
            raise ConfigError(
                f"bm25: token_pattern {self.token_pattern!r} is not a valid regex: {exc}"
            ) from exc
        if regex.groups:
            raise ConfigError(
                f"bm25: token_pattern {self.token_pattern!r} has capture groups; "
                "use (?:...) so that re.findall returns whole matches"
            )
        if self.stemmer is not None and not isinstance(self.stemmer, str):
            raise ConfigError(
                f"bm25: stemmer must be a Snowball algorithm name or None, not {self.stemmer!r}"
            )
        self._state["findall"] = regex.findall

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable configuration; :meth:`from_dict` inverts it."""
        return {
            "lowercase": self.lowercase,
            "token_pattern": self.token_pattern,
            "stopwords": self.stopwords,
            "stemmer": self.stemmer,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Tokenizer:
        unknown = set(data) - {"lowercase", "token_pattern", "stopwords", "stemmer"}
        if unknown:
            raise ConfigError(f"bm25: unknown tokenizer options {sorted(unknown)}")
        return cls(**data)

    def _learn(self, words: Iterable[str]) -> None:
        """Add the stems of ``words`` not yet memoised."""
        memo = self._memo
        new = [w for w in set(words) if w not in memo]
        if not new:
            return
        stop = _STOP_EN if self.stopwords else frozenset()
        keep = [w for w in new if w not in stop]
        if self.stemmer is not None:
            stemmer = self._state.get("stemmer")
            if stemmer is None:
                stemmer = self._state["stemmer"] = _make_stemmer(self.stemmer)
            stems = stemmer.stemWords(keep)
        else:
            stems = keep
        memo.update(zip(keep, stems, strict=True))
        memo.update(dict.fromkeys(stop.intersection(new), ""))

    def tokenize_one(self, text: str) -> list[str]:
        """Tokenize one text."""
        words = self._state["findall"](text.lower() if self.lowercase else text)
        memo = self._memo
        try:
            # filter(None, ...) drops the "" that marks a stopword.
            return list(filter(None, map(memo.__getitem__, words)))
        except KeyError:
            self._learn(words)
            return list(filter(None, map(memo.__getitem__, words)))

    def __call__(self, texts: Iterable[str]) -> list[list[str]]:
        """Tokenize each text; returns one list of terms per text."""
        if isinstance(texts, str):
            raise RequestError(
                "Tokenizer expects a list of texts, got a single str; wrap it in a list"
            )
        return [self.tokenize_one(t) for t in texts]


def tokenize(texts: Iterable[str], tokenizer: Tokenizer | None = None) -> list[list[str]]:
    """Tokenize ``texts`` the way :class:`BM25Index` does (default :class:`Tokenizer` if None)."""
    return (tokenizer or Tokenizer())(texts)


def _token_list(tokens: Any, i: int, what: str) -> list[str]:
    if isinstance(tokens, (str, bytes)) or not isinstance(tokens, Sequence):
        raise RequestError(
            f"bm25: tokenized {what} #{i} must be a list of strings, got {type(tokens).__name__}"
        )
    out = list(tokens)
    # Checking the distinct types is a C-level pass; isinstance per token is not.
    if not all(issubclass(t, str) for t in set(map(type, out))):
        raise RequestError(f"bm25: tokenized {what} #{i} must contain only strings")
    return out


def _token_lists(items: Iterable[Any], what: str) -> list[Sequence[str]]:
    """``items`` checked to be lists of strings (as :func:`_token_list`), without copying each.

    The element types are checked over the concatenation of a chunk of lists at a time
    (one C-level pass); only a chunk that fails is checked list by list, for the error.
    """
    out = list(items)
    for i, tokens in enumerate(out):
        if type(tokens) is not list and type(tokens) is not tuple:
            _token_list(tokens, i, what)  # raises unless some other Sequence
    for lo in range(0, len(out), _CHECK_CHUNK):
        chunk = out[lo : lo + _CHECK_CHUNK]
        if not all(issubclass(t, str) for t in set(map(type, chain.from_iterable(chunk)))):
            for i, tokens in enumerate(chunk, lo):
                _token_list(tokens, i, what)
    return out


def _lookup(cols: np.ndarray, data: np.ndarray, want: np.ndarray) -> np.ndarray:
    """Values of a sparse row (``cols`` -> ``data``) at positions ``want``, 0 where absent."""
    order = np.argsort(cols, kind="stable")
    cols, data = cols[order], data[order]
    at = np.searchsorted(cols, want)
    found = (
        (at < len(cols)) & (cols[np.minimum(at, max(len(cols) - 1, 0))] == want)
        if len(cols)
        else np.zeros(len(want), bool)
    )
    out = np.zeros(len(want), np.float32)
    out[found] = data[at[found]]
    return out


@dataclass(frozen=True)
class BM25Statistics:
    """Corpus statistics BM25 scores with: document count, total length, document frequencies.

    Shards of one corpus each report :meth:`BM25Index.local_statistics`; their
    :meth:`merge` (or :func:`corpus_statistics` over the whole corpus) set on every shard
    with :meth:`BM25Index.set_global_statistics` makes each shard score its documents
    as one index over the whole corpus would.

    Attributes:
        n_docs: number of live documents.
        total_length: sum of the live documents' lengths, in tokens.
        doc_freq: term -> number of live documents containing it (terms with 0 omitted).
    """

    n_docs: int
    total_length: int
    doc_freq: Mapping[str, int] = field(hash=False)

    def __post_init__(self) -> None:
        for name in ("n_docs", "total_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ConfigError(
                    f"bm25 statistics: {name} must be a non-negative integer, got {value!r}"
                )
        df = dict(self.doc_freq)
        for term, count in df.items():
            if (
                not isinstance(term, str)
                or isinstance(count, bool)
                or not isinstance(count, (int, np.integer))
                or not 0 < count <= self.n_docs
            ):
                raise ConfigError(
                    f"bm25 statistics: doc_freq[{term!r}] = {count!r} must be an integer in "
                    f"1..n_docs ({self.n_docs}); build statistics with corpus_statistics() "
                    "or BM25Index.local_statistics()"
                )
        object.__setattr__(self, "n_docs", int(self.n_docs))
        object.__setattr__(self, "total_length", int(self.total_length))
        object.__setattr__(self, "doc_freq", {t: int(c) for t, c in df.items()})

    def merge(self, *others: BM25Statistics) -> BM25Statistics:
        """The statistics of the union of disjoint document sets (counts add up)."""
        df: Counter[str] = Counter(self.doc_freq)
        n, total = self.n_docs, self.total_length
        for other in others:
            if not isinstance(other, BM25Statistics):
                raise RequestError(
                    f"BM25Statistics.merge takes BM25Statistics, got {type(other).__name__}"
                )
            df.update(other.doc_freq)
            n += other.n_docs
            total += other.total_length
        return BM25Statistics(n, total, dict(df))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form; :meth:`from_dict` inverts it."""
        return {
            "n_docs": self.n_docs,
            "total_length": self.total_length,
            "doc_freq": dict(self.doc_freq),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BM25Statistics:
        if not isinstance(data, Mapping) or set(data) != {"n_docs", "total_length", "doc_freq"}:
            raise ConfigError(
                "bm25 statistics: expected a mapping with keys n_docs, total_length and "
                f"doc_freq, got {sorted(data) if isinstance(data, Mapping) else type(data).__name__}"
            )
        if not isinstance(data["doc_freq"], Mapping):
            raise ConfigError("bm25 statistics: doc_freq must be a mapping of term -> count")
        return cls(data["n_docs"], data["total_length"], data["doc_freq"])


def corpus_statistics(texts: Iterable[str], tokenizer: Tokenizer | None = None) -> BM25Statistics:
    """:class:`BM25Statistics` of ``texts`` in one streaming pass, building no index.

    Tokenize with the tokenizer of the indexes the statistics are for (default
    :class:`Tokenizer`); texts may be a generator. A text may also be a list of tokens.
    """
    tok = tokenizer or Tokenizer()
    df: Counter[str] = Counter()
    n = total = 0
    for i, text in enumerate(texts):
        tokens = tok.tokenize_one(text) if isinstance(text, str) else _token_list(text, i, "text")
        n += 1
        total += len(tokens)
        df.update(set(tokens))
    return BM25Statistics(n, total, dict(df))


class BM25Index(Index):
    """Lexical BM25 index over texts (``input = "text"``).

    Args:
        k1: term-frequency saturation (>= 0).
        b: length normalisation, 0..1.
        method: idf variant, ``"lucene"`` (default), ``"okapi"`` (rank_bm25's BM25Okapi)
            or ``"atire"``.
        epsilon: ``"okapi"`` only: negative idfs become ``epsilon * mean idf``.
        lowercase, token_pattern, stopwords, stemmer: the :class:`Tokenizer` options.
        tokenizer: a ready :class:`Tokenizer` (or its ``to_dict()``) instead of the
            four options above.
        backend: query kernel, one of :data:`BACKENDS`; all give identical results.

    Scores add up over query tokens, a token repeated in the query counting each time.
    Query tokens absent from the index are ignored; documents sharing no token with
    the query are not returned (their slots are padded with ``-inf`` / ``-1``).
    """

    name: ClassVar[str] = "bm25"
    input: ClassVar[Literal["text", "vectors"]] = "text"
    extra: ClassVar[str | None] = "bm25"
    format_version: ClassVar[int] = 1

    def __init__(
        self,
        *,
        k1: float = 1.2,
        b: float = 0.75,
        method: str = "lucene",
        epsilon: float = 0.25,
        lowercase: bool = True,
        token_pattern: str = DEFAULT_TOKEN_PATTERN,
        stopwords: bool = True,
        stemmer: str | None = "english",
        tokenizer: Tokenizer | Mapping[str, Any] | None = None,
        backend: str = "auto",
    ) -> None:
        if backend not in BACKENDS:
            raise ConfigError(
                f"bm25: unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}"
            )
        if backend.startswith("numba"):
            require("numba", extra="bm25", what=f"bm25 backend {backend!r}")
        if method not in METHODS:
            raise ConfigError(
                f"bm25: unknown method {method!r}; choose one of {', '.join(METHODS)}"
            )
        for opt, value in (("k1", k1), ("b", b), ("epsilon", epsilon)):
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not np.isfinite(value)
            ):
                raise ConfigError(f"bm25: {opt} must be a finite number, got {value!r}")
        if k1 < 0:
            raise ConfigError(f"bm25: k1 must be >= 0, got {k1}")
        if not 0 <= b <= 1:
            raise ConfigError(f"bm25: b must be between 0 and 1, got {b}")
        if tokenizer is None:
            tok = Tokenizer(
                lowercase=lowercase,
                token_pattern=token_pattern,
                stopwords=stopwords,
                stemmer=stemmer,
            )
        elif isinstance(tokenizer, Tokenizer):
            tok = tokenizer
        else:
            tok = Tokenizer.from_dict(tokenizer)
        self.tokenizer = tok
        self.k1 = float(k1)
        self.b = float(b)
        self.method = method
        self.epsilon = float(epsilon)
        self.backend = backend
        extra = {} if backend == "auto" else {"backend": backend}
        super().__init__(
            k1=self.k1,
            b=self.b,
            method=method,
            epsilon=self.epsilon,
            tokenizer=tok.to_dict(),
            **extra,
        )
        self.vocab: dict[str, int] = {}
        self._terms: list[str] = []
        # Doc-major raw counts (docs x terms) and lengths: the source of truth on add.
        self._tf_data = np.zeros(0, np.int32)
        self._tf_indices = np.zeros(0, np.int32)
        self._tf_indptr = np.zeros(1, np.int64)
        self._doc_lengths = np.zeros(0, np.int32)
        self._scores: Any = None  # term-major CSR (terms x docs) of float32 contributions
        # Largest / smallest contribution per term (MaxScore bounds), None until needed.
        self._bounds: tuple[np.ndarray, np.ndarray] | None = None
        self._dense: tuple[np.ndarray, np.ndarray] | None = None  # frequent terms' columns
        self._avgdl = 0.0
        self._idf: np.ndarray | None = np.zeros(0, np.float64)  # None: not computed yet
        self._global: BM25Statistics | None = None
        self._scratch = threading.local()
        # Writes only mark the contributions stale; the next search (or save) rebuilds
        # them once, so a batch of adds and removals costs one rebuild, not one each.
        self._stale = False
        self._rebuild_lock = threading.Lock()

    @property
    def avgdl(self) -> float:
        """Average length (in tokens) of the live documents (of the corpus, with global statistics)."""
        self._fresh()
        self._ensure_stats()
        return self._avgdl

    @property
    def idf(self) -> np.ndarray:
        """Idf per vocabulary term over the live documents (0 for terms none of them has)."""
        self._fresh()
        self._ensure_stats()
        assert self._idf is not None  # noqa: S101 - _ensure_stats set it
        return self._idf

    def _ensure_stats(self) -> None:
        if self._idf is None:  # a loaded index computes them on first use, not on load
            self._idf, _, self._avgdl = self._live_stats()

    def _fresh(self) -> None:
        """Rebuild the contributions if writes happened since the last rebuild."""
        if self._stale:
            with self._rebuild_lock:
                if self._stale:
                    self._rebuild_scores()
                    self._stale = False

    # -- statistics -----------------------------------------------------------------
    def local_statistics(self) -> BM25Statistics:
        """:class:`BM25Statistics` of this index's live documents (global ones set or not)."""
        live = self._live_rows()
        per_posting = np.repeat(live, np.diff(self._tf_indptr))
        df = np.bincount(self._tf_indices[per_posting], minlength=len(self._terms))
        terms = self._terms
        return BM25Statistics(
            int(live.sum()),
            int(self._doc_lengths[live].sum(dtype=np.int64)),
            {terms[i]: int(df[i]) for i in np.flatnonzero(df)},
        )

    @property
    def global_statistics(self) -> BM25Statistics | None:
        """The statistics set by :meth:`set_global_statistics`, or None (local ones are used)."""
        return self._global

    def set_global_statistics(self, stats: BM25Statistics | None) -> None:
        """Score with corpus-wide statistics instead of this index's own (None: back to local).

        idf then uses ``stats.doc_freq`` and ``stats.n_docs`` (okapi's ``epsilon * mean
        idf`` is over ``stats``' whole vocabulary) and avgdl is ``stats.total_length /
        stats.n_docs``. They stay fixed through later adds and removals until set again,
        and are saved with the index. A term some live document here has but
        ``stats.doc_freq`` lacks keeps its local document frequency.
        """
        if stats is not None and not isinstance(stats, BM25Statistics):
            raise RequestError(
                "bm25: set_global_statistics takes BM25Statistics (or None), got "
                f"{type(stats).__name__}; build them with corpus_statistics() or "
                "BM25Statistics.merge() of the shards' local_statistics()"
            )
        self._global = stats
        self._stale = True

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **self.options}

    # -- indexing -------------------------------------------------------------------
    def _add(self, items: Sequence[str]) -> None:
        self._add_token_lists(self.tokenizer(items))

    def add_tokenized(self, docs: Sequence[Sequence[str]]) -> None:
        """Append already-tokenized documents (lists of terms) as new rows.

        For callers that tokenized with :func:`tokenize` and this index's tokenizer
        (benchmarks feeding several systems the same tokens).
        """
        token_lists = _token_lists(docs, "document")
        if not token_lists:
            return
        self._add_token_lists(token_lists)
        self._deleted = np.concatenate([self._deleted, np.zeros(len(token_lists), dtype=bool)])

    def _add_token_lists(self, docs: Sequence[Sequence[str]]) -> None:
        # A chunk of documents at a time: the flat token list, its term ids and the
        # (document, term) keys exist for one chunk only, and the counts go straight
        # into doc-major arrays sized by the token count (an upper bound on postings;
        # pages past the postings are never touched, so they cost no memory).
        vocab = self.vocab
        terms = self._terms
        n_new = len(docs)
        lengths = np.fromiter(map(len, docs), dtype=np.int64, count=n_new)
        bound = int(lengths.sum())
        tf_data = np.empty(bound, np.int32)
        tf_indices = np.empty(bound, np.int32)
        doc_nnz = np.empty(n_new, np.int64)
        nnz = 0
        # Chunk boundaries: about _ADD_CHUNK_TOKENS tokens each, whole documents.
        ends = np.cumsum(lengths)
        cuts = np.searchsorted(ends, np.arange(_ADD_CHUNK_TOKENS, bound, _ADD_CHUNK_TOKENS))
        edges = np.unique(np.concatenate(([0], cuts + 1, [n_new])).clip(0, n_new)).tolist()
        for d_lo, d_hi in zip(edges[:-1], edges[1:], strict=True):
            flat = list(chain.from_iterable(docs[d_lo:d_hi]))
            # One pass: a new term is inserted with a provisional id above every real
            # one (its first token's position), then renumbered in insertion (first
            # appearance) order, so term ids are deterministic and contiguous.
            before = len(vocab)
            ids = np.fromiter(
                map(vocab.setdefault, flat, counter(_PROVISIONAL)), dtype=np.int64, count=len(flat)
            )
            del flat
            n_added = len(vocab) - before
            if n_added:
                new_terms = list(islice(reversed(vocab), n_added))
                new_terms.reverse()
                firsts = np.fromiter(map(vocab.__getitem__, new_terms), np.int64, n_added)
                vocab.update(zip(new_terms, range(before, before + n_added), strict=True))
                terms.extend(new_terms)
                fresh = ids >= _PROVISIONAL
                ids[fresh] = before + np.searchsorted(firsts, ids[fresh])
            n_terms = len(vocab)
            rows = np.repeat(np.arange(d_hi - d_lo, dtype=np.int64), lengths[d_lo:d_hi])
            rows *= n_terms
            rows += ids
            del ids
            # Sorted (document, term) keys and their counts: each document's terms in
            # increasing id order with their frequencies (what scipy's sum_duplicates gave).
            keys, counts = np.unique(rows, return_counts=True)
            del rows
            m = len(keys)
            local_doc, term = np.divmod(keys, n_terms)
            tf_indices[nnz : nnz + m] = term
            tf_data[nnz : nnz + m] = counts
            doc_nnz[d_lo:d_hi] = np.bincount(local_doc, minlength=d_hi - d_lo)
            nnz += m
        tf_data.resize(nnz, refcheck=False)
        tf_indices.resize(nnz, refcheck=False)
        indptr = np.cumsum(doc_nnz)
        indptr += self._tf_indptr[-1]
        if len(self._tf_data):
            self._tf_data = np.concatenate([self._tf_data, tf_data])
            self._tf_indices = np.concatenate([self._tf_indices, tf_indices])
        else:
            self._tf_data, self._tf_indices = tf_data, tf_indices
        self._tf_indptr = np.concatenate([self._tf_indptr, indptr])
        self._doc_lengths = np.concatenate([self._doc_lengths, lengths.astype(np.int32)])
        self._stale = True

    def _idf_of(
        self, df: np.ndarray, n_docs: int, vocabulary_df: np.ndarray | None = None
    ) -> np.ndarray:
        """Idf of document frequencies ``df``; okapi's mean is over ``vocabulary_df`` (default ``df``)."""
        df = df.astype(np.float64)
        if self.method == "lucene":
            return np.log1p((n_docs - df + 0.5) / (df + 0.5))
        if self.method == "atire":
            return np.log(n_docs / df)
        # okapi: rank_bm25.BM25Okapi._calc_idf, including its mean over the raw
        # (possibly negative) idfs of the whole vocabulary.
        idf = np.log(n_docs - df + 0.5) - np.log(df + 0.5)
        if vocabulary_df is None:
            vocab_idf = idf
        else:
            vdf = vocabulary_df.astype(np.float64)
            vocab_idf = np.log(n_docs - vdf + 0.5) - np.log(vdf + 0.5)
        if vocab_idf.size:
            eps = self.epsilon * (vocab_idf.sum() / vocab_idf.size)
            idf[idf < 0] = eps
        return idf

    def _live_rows(self) -> np.ndarray:
        """One bool per row, True for rows not removed (rows being added count as live)."""
        n_docs = len(self._doc_lengths)
        dead = self._tombstones
        live = np.ones(n_docs, dtype=bool)
        live[: len(dead)] = ~dead[:n_docs]
        return live

    def _live_stats(self) -> tuple[np.ndarray, int, float]:
        """(idf per term, live document count, average live length).

        Removed rows are left out of every statistic, so after any sequence of adds
        and removals the scores are those of a fresh build of the live documents.
        """
        n_terms = len(self._terms)
        live = self._live_rows()
        n_live = int(live.sum())
        if live.all():
            df = np.bincount(self._tf_indices, minlength=n_terms)
        else:
            per_posting = np.repeat(live, np.diff(self._tf_indptr))
            df = np.bincount(self._tf_indices[per_posting], minlength=n_terms)
        present = df > 0  # a fresh build's vocabulary: terms some live document has
        idf = np.zeros(n_terms, np.float64)
        stats = self._global
        if stats is not None:
            # Corpus-wide statistics: df and N of the whole corpus for every local term.
            get = stats.doc_freq.get
            gdf = np.fromiter((get(t, 0) for t in self._terms), np.int64, count=n_terms)
            gdf = np.where(gdf > 0, gdf, df)  # a term the statistics lack keeps its own df
            n = max(stats.n_docs, int(gdf.max(initial=0)))
            if present.any():
                vocab = np.fromiter(stats.doc_freq.values(), np.int64, count=len(stats.doc_freq))
                idf[present] = self._idf_of(gdf[present], n, vocab)
            avgdl = stats.total_length / stats.n_docs if stats.n_docs else 0.0
            return idf, n, avgdl
        if present.any():
            idf[present] = self._idf_of(df[present], n_live)
        total = float(self._doc_lengths[live].sum())
        return idf, n_live, (total / n_live if n_live else 0.0)

    def _rebuild_scores(self) -> None:
        n_docs = len(self._doc_lengths)
        n_terms = len(self._terms)
        self._idf, _, self._avgdl = self._live_stats()
        idf = self._idf
        if self._avgdl > 0:
            norm = self.k1 * (1.0 - self.b + self.b * self._doc_lengths / self._avgdl)
        else:  # only empty documents: no postings, nothing to normalise
            norm = np.full(n_docs, self.k1)
        # float64 arithmetic, then float32, a chunk of postings at a time, scattered
        # straight into term-major order (a counting sort: each term's next free slot;
        # chunks go in document order, so each term's documents stay sorted). No
        # temporary spans all the postings.
        indptr = np.asarray(self._tf_indptr)
        tf_indices = self._tf_indices
        nnz = int(indptr[-1])
        idx_dtype = np.int32 if max(nnz, n_docs, n_terms) < 2**31 else np.int64
        counts = np.bincount(tf_indices, minlength=n_terms)
        s_indptr = np.zeros(n_terms + 1, idx_dtype)
        np.cumsum(counts, out=s_indptr[1:])
        cursor = s_indptr[:-1].astype(np.int64)
        del counts
        s_data = np.empty(nnz, np.float32)
        s_indices = np.empty(nnz, idx_dtype)
        k1p1 = self.k1 + 1.0
        for lo in range(0, nnz, _REBUILD_CHUNK):
            hi = min(lo + _REBUILD_CHUNK, nnz)
            d_lo = int(np.searchsorted(indptr, lo, side="right")) - 1
            d_hi = int(np.searchsorted(indptr, hi, side="left"))
            starts = np.clip(indptr[d_lo : d_hi + 1], lo, hi) - lo
            doc_of = np.repeat(np.arange(d_lo, d_hi, dtype=np.int64), np.diff(starts))
            term = tf_indices[lo:hi]
            tf = self._tf_data[lo:hi].astype(np.float64)
            contrib = (idf[term] * (tf * k1p1 / (tf + norm[doc_of]))).astype(np.float32)
            del tf
            order = np.argsort(term, kind="stable")
            st = term[order]
            # rank of each posting among the chunk's postings of its term
            n = hi - lo
            if n:
                first = np.flatnonzero(np.concatenate(([True], st[1:] != st[:-1])))
                run_len = np.diff(np.append(first, n))
                run = np.arange(n, dtype=np.int64) - np.repeat(first, run_len)
                dest = cursor[st] + run
                s_indices[dest] = doc_of[order]
                s_data[dest] = contrib[order]
                cursor[st[first]] += run_len
        self._scores = csr(s_data, s_indices, s_indptr, (n_terms, n_docs))
        self._bounds = None
        self._dense = None
        logger.debug("bm25: %d documents, %d terms, %d postings", n_docs, n_terms, nnz)

    def remove(self, positions: Sequence[int] | np.ndarray) -> int:
        """Remove rows and recompute idf and avgdl over the documents that remain."""
        newly = super().remove(positions)
        if newly:
            self._stale = True
        return newly

    @classmethod
    def load(cls, directory: Path, params: Mapping[str, Any], *, mmap: bool = True) -> BM25Index:
        """Load an index saved by :meth:`save`.

        Args:
            mmap: memory-map the payload arrays (read-only; pages are read on demand,
                so resident memory grows only with what queries touch) instead of
                reading them into memory. Writes (add, remove) copy what they change.
        """
        index = super().load(directory, {**params, "_mmap": bool(mmap)})
        assert isinstance(index, BM25Index)  # noqa: S101 - cls.load_payload built it
        # The saved contributions already use the live statistics; idf and avgdl are
        # recomputed from the tf arrays on first use only (a pass over all postings).
        index._idf = None
        return index

    def _count(self) -> int:
        return len(self._doc_lengths)

    # -- search ---------------------------------------------------------------------
    def _query_matrix(self, queries: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
        """CSR ``(indptr, term ids)`` of the queries; a repeated term is repeated here."""
        # One C-level pass over all the tokens (-1 for a term not in the vocabulary).
        n = len(queries)
        lengths = np.fromiter(map(len, queries), dtype=np.int64, count=n)
        ids = np.fromiter(
            map(self.vocab.get, chain.from_iterable(queries), repeat(-1)),
            dtype=np.int64,
            count=int(lengths.sum()),
        )
        dtype = self._scores.indices.dtype
        indptr = np.zeros(n + 1, dtype)
        known = ids >= 0
        if not known.all():
            lengths = np.bincount(np.repeat(np.arange(n), lengths)[known], minlength=n)
            ids = ids[known]
        np.cumsum(lengths, out=indptr[1:])
        return indptr, ids.astype(dtype, copy=False)

    filters_natively: ClassVar[bool] = True

    def _search(
        self, queries: Sequence[str | Sequence[str]], k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        tokens = self._tokens_of(queries)
        n_dead = self._n_deleted
        if not n_dead:
            return self._search_tokens(tokens, k)
        # The host asks for k + (removed rows) to filter them afterwards; dropping them
        # here instead keeps the top-k small (what MaxScore prunes with).
        live_k = max(1, min(k, self._count()) - n_dead)
        s, p = self._search_tokens(tokens, live_k, ~self._tombstones)
        if live_k < k:
            s = np.pad(s, ((0, 0), (0, k - live_k)), constant_values=-np.inf)
            p = np.pad(p, ((0, 0), (0, k - live_k)), constant_values=-1)
        return s, p

    def _search_allowed(
        self, queries: Sequence[str | Sequence[str]], k: int, allowed: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        # Documents outside the filter are dropped from each query's matches before top-k.
        return self._search_tokens(self._tokens_of(queries), k, allowed)

    def _tokens_of(self, queries: Sequence[str | Sequence[str]]) -> list[list[str]]:
        # A query is a text, or a list of tokens already made by this index's tokenizer.
        if not any(isinstance(q, str) for q in queries):
            return _token_lists(queries, "query")  # type: ignore[return-value]
        return [
            self.tokenizer.tokenize_one(q) if isinstance(q, str) else _token_list(q, i, "query")
            for i, q in enumerate(queries)
        ]

    def score_positions(
        self, queries: Sequence[str | Sequence[str]], positions: Sequence[Sequence[int]]
    ) -> list[np.ndarray]:
        """BM25 scores of the given rows per query (0 for a row sharing no term with it)."""
        toks = [
            self.tokenizer.tokenize_one(q) if isinstance(q, str) else _token_list(q, i, "query")
            for i, q in enumerate(queries)
        ]
        self._fresh()
        if self._scores is None and self._count():
            self._rebuild_scores()
        out = []
        for tokens, rows in zip(toks, positions, strict=True):
            want = np.asarray(rows, dtype=np.int64)
            if self._scores is None or not len(want):
                out.append(np.zeros(len(want), np.float32))
                continue
            q_indptr, q_terms = self._query_matrix([tokens])
            indptr, cols, data = product(q_indptr, q_terms, self._scores)
            out.append(_lookup(cols[: indptr[1]], data[: indptr[1]], want))
        return out

    def search_tokenized(
        self, queries: Sequence[Sequence[str]], k: int = 10
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`search` for queries already tokenized (lists of terms), e.g. by :func:`tokenize`.

        Removed rows are filtered and results padded exactly as by :meth:`search`.
        """
        return self.search(_token_lists(queries, "query"), k)

    def _search_tokens(
        self, queries: list[list[str]], k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        self._fresh()
        nq = len(queries)
        n_docs = self._count()
        out_s = np.full((nq, k), -np.inf, np.float32)
        out_p = np.full((nq, k), -1, np.int64)
        if nq == 0 or n_docs == 0 or self._scores is None:
            return out_s, out_p
        q_indptr, q_terms = self._query_matrix(queries)
        kk = min(k, n_docs)
        kernels = self._kernels()
        if kernels is not None:
            self._search_compiled(kernels, q_indptr, q_terms, kk, allowed, out_s, out_p)
            return out_s, out_p
        # Bounds the product's output buffer (int32 + float32 per cell) to ~128 MB.
        chunk = max(1, CHUNK_CELLS // n_docs)
        for start in range(0, nq, chunk):
            stop = min(start + chunk, nq)
            indptr = q_indptr[start : stop + 1]
            terms = q_terms[indptr[0] : indptr[-1]]
            res = product(indptr - indptr[0], terms, self._scores)
            if allowed is not None:
                res = keep_columns(res, allowed)
            select_topk(res, kk, out_s[start:stop], out_p[start:stop])
        return out_s, out_p

    def _kernels(self) -> Any:
        """The compiled kernels for this index's backend, or None for the scipy path."""
        if self.backend == "scipy":
            return None
        from . import bm25_kernels

        if self.backend == "auto" and (
            os.environ.get("RELEVO_BM25_BACKEND") == "scipy" or not bm25_kernels.available()
        ):
            return None
        return bm25_kernels.load()

    def _term_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        if self._bounds is None:
            from .bm25_kernels import term_bounds

            self._bounds = term_bounds(self._scores.indptr, self._scores.data)
        return self._bounds

    def _dense_columns(self) -> tuple[np.ndarray, np.ndarray]:
        if self._dense is None:
            from .bm25_kernels import dense_columns

            sc = self._scores
            self._dense = dense_columns(sc.indptr, sc.indices, sc.data, sc.shape[1])
        return self._dense

    def _search_compiled(
        self,
        kernels: Any,
        q_indptr: np.ndarray,
        q_terms: np.ndarray,
        k: int,
        allowed: np.ndarray | None,
        out_s: np.ndarray,
        out_p: np.ndarray,
    ) -> None:
        from .bm25_kernels import STRATEGIES

        scores = self._scores
        n_docs = scores.shape[1]
        hi, lo = self._term_bounds()
        # Per-thread scratch for term-at-a-time: a dense accumulator, marks, touched list.
        scratch = getattr(self._scratch, "buffers", None)
        if scratch is None or len(scratch[0]) != n_docs:
            scratch = (
                np.zeros(n_docs, np.float32),
                np.zeros(n_docs, np.bool_),
                np.empty(n_docs, np.int64),
            )
            self._scratch.buffers = scratch
        strategy = STRATEGIES[{"numba": "maxscore", "numba-taat": "taat"}.get(self.backend, "auto")]
        use_allowed = allowed is not None
        mask = np.ascontiguousarray(allowed) if use_allowed else np.ones(1, np.bool_)
        kernels.search(
            np.ascontiguousarray(q_indptr, dtype=np.int64),
            np.ascontiguousarray(q_terms, dtype=np.int64),
            scores.indptr,
            scores.indices,
            scores.data,
            hi,
            lo,
            k,
            mask,
            use_allowed,
            strategy,
            *scratch,
            out_s,
            out_p,
            *self._dense_columns(),
        )

    # -- persistence ----------------------------------------------------------------
    def save_payload(self, directory: Path) -> dict[str, Any]:
        directory = Path(directory)
        (directory / "vocab.json").write_text(json.dumps(self._terms, ensure_ascii=False), "utf-8")
        self._fresh()
        if self._scores is None:
            self._rebuild_scores()
        arrays = {
            "scores.data": np.asarray(self._scores.data, np.float32),
            # indices and indptr share one integer type, as scipy's C routines need.
            "scores.indices": np.asarray(self._scores.indices),
            "scores.indptr": np.asarray(self._scores.indptr),
            "tf.data": self._tf_data,
            "tf.indices": self._tf_indices,
            "tf.indptr": self._tf_indptr,
            "doc_lengths": self._doc_lengths,
        }
        hi, lo = self._term_bounds()
        arrays["scores.max"], arrays["scores.min"] = hi, lo
        save_arrays(directory, arrays)
        extra: dict[str, Any] = {"term_bounds": True}
        if self._global is not None:
            (directory / "global_stats.json").write_text(
                json.dumps(self._global.to_dict(), ensure_ascii=False), "utf-8"
            )
            extra["global_statistics"] = "global_stats.json"
        return {
            **extra,
            "k1": self.k1,
            "b": self.b,
            "method": self.method,
            "epsilon": self.epsilon,
            "tokenizer": self.tokenizer.to_dict(),
            "vocab_size": len(self._terms),
            "avgdl": self.avgdl,
            "n_docs": self._count(),
            "nnz": int(len(self._tf_data)),
        }

    @classmethod
    def load_payload(cls, directory: Path, params: Mapping[str, Any]) -> BM25Index:
        directory = Path(directory)
        mmap = bool(params.get("_mmap", True))
        try:
            index = cls(
                k1=params["k1"],
                b=params["b"],
                method=params["method"],
                epsilon=params["epsilon"],
                tokenizer=params["tokenizer"],
            )
            n_docs = int(params["n_docs"])
            n_terms = int(params["vocab_size"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptIndexError(
                f"{directory}: bm25 build parameters are missing or invalid ({exc!r}); rebuild the index."
            ) from exc

        def bad(name: str, why: str) -> CorruptIndexError:
            return CorruptIndexError(f"{directory / name}: {why}; rebuild the index.")

        try:
            terms = json.loads((directory / "vocab.json").read_text("utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise bad("vocab.json", f"unreadable ({exc})") from exc
        if (
            not isinstance(terms, list)
            or len(terms) != n_terms
            or not all(isinstance(t, str) for t in terms)
        ):
            raise bad("vocab.json", f"expected a list of {n_terms} strings")
        vocab = {t: i for i, t in enumerate(terms)}
        if len(vocab) != len(terms):
            raise bad("vocab.json", "terms are not unique")

        tf_indptr = load_array(directory, "tf.indptr", np.int64, n_docs + 1, mmap=mmap)
        nnz = int(tf_indptr[-1])
        tf_data = load_array(directory, "tf.data", np.int32, nnz, mmap=mmap)
        tf_indices = load_array(directory, "tf.indices", np.int32, nnz, mmap=mmap)
        doc_lengths = load_array(directory, "doc_lengths", np.int32, n_docs, mmap=mmap)
        s_indptr = load_array(
            directory, "scores.indptr", (np.int32, np.int64), n_terms + 1, mmap=mmap
        )
        s_data = load_array(directory, "scores.data", np.float32, nnz, mmap=mmap)
        s_indices = load_array(directory, "scores.indices", s_indptr.dtype, nnz, mmap=mmap)
        # Search hands these arrays to C code without bounds checks: check them all.
        check_csr(directory, "tf", tf_indptr, tf_indices, n_terms)
        check_csr(directory, "scores", s_indptr, s_indices, n_docs)
        bounds = None
        if params.get("term_bounds"):
            hi = load_array(directory, "scores.max", np.float32, n_terms, mmap=False)
            lo = load_array(directory, "scores.min", np.float32, n_terms, mmap=False)
            bounds = (hi, lo)
        stats = None
        if params.get("global_statistics"):
            name = "global_stats.json"
            try:
                raw = json.loads((directory / name).read_text("utf-8"))
                stats = BM25Statistics.from_dict(raw)
            except (OSError, UnicodeDecodeError, json.JSONDecodeError, ConfigError) as exc:
                raise bad(name, f"unreadable or invalid ({exc})") from exc
        # The checks read every page once; hand them back so that a loaded index is
        # resident only where queries touch it.
        for arr in (tf_data, tf_indices, tf_indptr, doc_lengths, s_data, s_indices, s_indptr):
            release_pages(arr)
        index.vocab = vocab
        index._terms = terms
        index._tf_data, index._tf_indices, index._tf_indptr = tf_data, tf_indices, tf_indptr
        index._doc_lengths = doc_lengths
        index._deleted = np.zeros(n_docs, dtype=bool)  # Index.load restores the tombstones
        index._global = stats
        index._idf = None  # computed on first use (Index.load restores the tombstones first)
        index._scores = csr(s_data, s_indices, s_indptr, (n_terms, n_docs))
        index._bounds = bounds
        return index


__all__ = [
    "BACKENDS",
    "DEFAULT_TOKEN_PATTERN",
    "METHODS",
    "STOPWORDS_EN",
    "BM25Index",
    "BM25Statistics",
    "Tokenizer",
    "corpus_statistics",
    "tokenize",
]
