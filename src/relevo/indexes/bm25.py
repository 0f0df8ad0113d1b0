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

scipy and PyStemmer (the ``relevo[bm25]`` extra) are imported on first use.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
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
    import_scipy_sparse,
    keep_columns,
    load_array,
    product,
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
    ) -> None:
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
        super().__init__(
            k1=self.k1, b=self.b, method=method, epsilon=self.epsilon, tokenizer=tok.to_dict()
        )
        self.vocab: dict[str, int] = {}
        self._terms: list[str] = []
        # Doc-major raw counts (docs x terms) and lengths: the source of truth on add.
        self._tf_data = np.zeros(0, np.int32)
        self._tf_indices = np.zeros(0, np.int32)
        self._tf_indptr = np.zeros(1, np.int64)
        self._doc_lengths = np.zeros(0, np.int32)
        self._scores: Any = None  # term-major CSR (terms x docs) of float32 contributions
        self._avgdl = 0.0
        self._idf = np.zeros(0, np.float64)
        # Writes only mark the contributions stale; the next search (or save) rebuilds
        # them once, so a batch of adds and removals costs one rebuild, not one each.
        self._stale = False
        self._rebuild_lock = threading.Lock()

    @property
    def avgdl(self) -> float:
        """Average length (in tokens) of the live documents."""
        self._fresh()
        return self._avgdl

    @property
    def idf(self) -> np.ndarray:
        """Idf per vocabulary term over the live documents (0 for terms none of them has)."""
        self._fresh()
        return self._idf

    def _fresh(self) -> None:
        """Rebuild the contributions if writes happened since the last rebuild."""
        if self._stale:
            with self._rebuild_lock:
                if self._stale:
                    self._rebuild_scores()
                    self._stale = False

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
        token_lists = [_token_list(d, i, "document") for i, d in enumerate(docs)]
        if not token_lists:
            return
        self._add_token_lists(token_lists)
        self._deleted = np.concatenate([self._deleted, np.zeros(len(token_lists), dtype=bool)])

    def _add_token_lists(self, docs: list[list[str]]) -> None:
        sparse = import_scipy_sparse()
        vocab = self.vocab
        flat = list(chain.from_iterable(docs))
        # dict.fromkeys keeps first-appearance order, so term ids are deterministic.
        for term in dict.fromkeys(flat):
            if term not in vocab:
                vocab[term] = len(vocab)
                self._terms.append(term)
        n_terms = len(vocab)
        lengths = np.fromiter(map(len, docs), dtype=np.int64, count=len(docs))
        term_ids = np.fromiter(map(vocab.__getitem__, flat), dtype=np.int32, count=len(flat))
        rows = np.repeat(np.arange(len(docs), dtype=np.int32), lengths)
        block = sparse.csr_matrix(
            (np.ones(len(flat), np.int32), (rows, term_ids)), shape=(len(docs), n_terms)
        )
        block.sum_duplicates()  # also sorts indices within each row
        self._tf_data = np.concatenate([self._tf_data, block.data.astype(np.int32, copy=False)])
        self._tf_indices = np.concatenate(
            [self._tf_indices, block.indices.astype(np.int32, copy=False)]
        )
        self._tf_indptr = np.concatenate(
            [self._tf_indptr, block.indptr[1:].astype(np.int64) + self._tf_indptr[-1]]
        )
        self._doc_lengths = np.concatenate([self._doc_lengths, lengths.astype(np.int32)])
        self._stale = True

    def _idf_of(self, df: np.ndarray, n_docs: int) -> np.ndarray:
        df = df.astype(np.float64)
        if self.method == "lucene":
            return np.log1p((n_docs - df + 0.5) / (df + 0.5))
        if self.method == "atire":
            return np.log(n_docs / df)
        # okapi: rank_bm25.BM25Okapi._calc_idf, including its mean over the raw
        # (possibly negative) idfs of the whole vocabulary.
        idf = np.log(n_docs - df + 0.5) - np.log(df + 0.5)
        if idf.size:
            eps = self.epsilon * (idf.sum() / idf.size)
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
        per_posting = np.repeat(live, np.diff(self._tf_indptr))
        df = np.bincount(self._tf_indices[per_posting], minlength=n_terms)
        present = df > 0  # a fresh build's vocabulary: terms some live document has
        idf = np.zeros(n_terms, np.float64)
        if present.any():
            idf[present] = self._idf_of(df[present], n_live)
        total = float(self._doc_lengths[live].sum())
        return idf, n_live, (total / n_live if n_live else 0.0)

    def _rebuild_scores(self) -> None:
        n_docs = len(self._doc_lengths)
        n_terms = len(self._terms)
        tf = self._tf_data.astype(np.float64)
        self._idf, _, self._avgdl = self._live_stats()
        doc_of = np.repeat(np.arange(n_docs), np.diff(self._tf_indptr))
        if self._avgdl > 0:
            norm = self.k1 * (1.0 - self.b + self.b * self._doc_lengths / self._avgdl)
        else:  # only empty documents: no postings, nothing to normalise
            norm = np.full(n_docs, self.k1)
        contrib = self._idf[self._tf_indices] * (tf * (self.k1 + 1.0) / (tf + norm[doc_of]))
        doc_major = csr(
            contrib.astype(np.float32), self._tf_indices, self._tf_indptr, (n_docs, n_terms)
        )
        # csr -> csc is a C-level transpose; the CSC arrays of (docs x terms) are the
        # CSR arrays of (terms x docs), one row per term, documents sorted within it.
        csc = doc_major.tocsc()
        self._scores = csr(csc.data, csc.indices, csc.indptr, (n_terms, n_docs))
        logger.debug("bm25: %d documents, %d terms, %d postings", n_docs, n_terms, len(csc.data))

    def remove(self, positions: Sequence[int] | np.ndarray) -> int:
        """Remove rows and recompute idf and avgdl over the documents that remain."""
        newly = super().remove(positions)
        if newly:
            self._stale = True
        return newly

    @classmethod
    def load(cls, directory: Path, params: Mapping[str, Any]) -> BM25Index:
        index = super().load(directory, params)
        assert isinstance(index, BM25Index)  # noqa: S101 - cls.load_payload built it
        # The saved contributions already use the live statistics; restore the attributes.
        index._idf, _, index._avgdl = index._live_stats()
        return index

    def _count(self) -> int:
        return len(self._doc_lengths)

    # -- search ---------------------------------------------------------------------
    def _query_matrix(self, queries: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
        """CSR ``(indptr, term ids)`` of the queries; a repeated term is repeated here."""
        get = self.vocab.get
        ids = [[i for i in map(get, q) if i is not None] for q in queries]
        dtype = self._scores.indices.dtype
        indptr = np.zeros(len(ids) + 1, dtype)
        np.cumsum(np.fromiter(map(len, ids), dtype=np.int64, count=len(ids)), out=indptr[1:])
        cols = np.fromiter(chain.from_iterable(ids), dtype=dtype, count=int(indptr[-1]))
        return indptr, cols

    filters_natively: ClassVar[bool] = True

    def _search(
        self, queries: Sequence[str | Sequence[str]], k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        return self._search_tokens(self._tokens_of(queries), k)

    def _search_allowed(
        self, queries: Sequence[str | Sequence[str]], k: int, allowed: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        # Documents outside the filter are dropped from each query's matches before top-k.
        return self._search_tokens(self._tokens_of(queries), k, allowed)

    def _tokens_of(self, queries: Sequence[str | Sequence[str]]) -> list[list[str]]:
        # A query is a text, or a list of tokens already made by this index's tokenizer.
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
        return self.search([_token_list(q, i, "query") for i, q in enumerate(queries)], k)

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
        save_arrays(directory, arrays)
        return {
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

        tf_indptr = load_array(directory, "tf.indptr", np.int64, n_docs + 1)
        nnz = int(tf_indptr[-1])
        tf_data = load_array(directory, "tf.data", np.int32, nnz)
        tf_indices = load_array(directory, "tf.indices", np.int32, nnz)
        doc_lengths = load_array(directory, "doc_lengths", np.int32, n_docs)
        s_indptr = load_array(directory, "scores.indptr", (np.int32, np.int64), n_terms + 1)
        s_data = load_array(directory, "scores.data", np.float32, nnz)
        s_indices = load_array(directory, "scores.indices", s_indptr.dtype, nnz)
        # Search hands these arrays to C code without bounds checks: check them all.
        check_csr(directory, "tf", tf_indptr, tf_indices, n_terms)
        check_csr(directory, "scores", s_indptr, s_indices, n_docs)
        index.vocab = vocab
        index._terms = terms
        index._tf_data, index._tf_indices, index._tf_indptr = tf_data, tf_indices, tf_indptr
        index._doc_lengths = doc_lengths
        index._deleted = np.zeros(n_docs, dtype=bool)  # Index.load restores the tombstones
        total = float(doc_lengths.sum())
        index._avgdl = total / n_docs if n_docs else 0.0
        index._idf = index._idf_of(np.bincount(tf_indices, minlength=n_terms), n_docs)
        index._scores = csr(s_data, s_indices, s_indptr, (n_terms, n_docs))
        return index


__all__ = ["DEFAULT_TOKEN_PATTERN", "METHODS", "STOPWORDS_EN", "BM25Index", "Tokenizer", "tokenize"]
