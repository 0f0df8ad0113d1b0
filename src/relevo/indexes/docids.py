"""Document identifiers of the ``docid-trie`` index, shared with its trainer.

The bundled ``docid-trie`` index (generative retrieval) and ``relevo train generative``
must name every document the same way: the model is trained to generate exactly the
identifiers the index's trie allows. Both use :class:`DocidAssigner` and
:func:`identifier_tokens` from here.

Identifiers (``docid``):

- ``title``: the document's title (first ``max_words`` words; the text's first words
  when a document has none);
- ``prefix``: the first ``max_words`` words of the text;
- ``semantic``: DSI-style digit strings ``"3-1-27"`` from a hierarchical k-means of the
  documents' MiniLM embeddings (``branching`` clusters per level, at most ``leaf``
  documents per leaf); documents added later descend the stored centroid tree.

Two documents with the same identifier get ``" #2"``, ``" #3"``... appended, so every
identifier names one row. The model reads the prompt (``{query}`` filled in, ending with
:data:`ANCHOR`) and generates ``" " + identifier`` then its EOS.

Importing this module imports neither torch nor transformers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..engine.errors import ConfigError, CorruptIndexError
from ..engine.types import Document

DOCIDS = ("title", "prefix", "semantic")
#: the text the identifier follows in every prompt (its tokenisation boundary)
ANCHOR = "Title:"
DEFAULT_PROMPT = "Query: {query}\n" + ANCHOR
#: the folder of a ``relevo train generative`` model holding the semantic identifiers it
#: learned (the index restores them instead of clustering again)
ASSIGNMENT_DIR = "docids"


def words(text: str, n: int) -> str:
    """The first ``n`` whitespace-separated words of ``text``, joined by single spaces."""
    return " ".join(text.split()[:n])


class DocidAssigner:
    """Assigns identifiers to documents in the order they are added; remembers them.

    Args:
        docid: ``title``, ``prefix`` or ``semantic``.
        max_words: words per ``title`` / ``prefix`` identifier.
        branching / leaf: ``semantic`` identifiers' k-means shape.
        embedder: ``semantic`` identifiers' embedder (a sentence-transformers folder or
            ``minilm``).
        device: device of that embedder (``auto``, ``cpu``, ``cuda``...).
        seed: k-means seed.

    Attributes:
        ids: row -> identifier, for every document assigned so far.
        taken: identifier -> row.
        centroids: ``semantic``: centroids per inner node path (``""`` is the root).
        leaf_fill: ``semantic``: documents per leaf path so far.
    """

    def __init__(
        self,
        *,
        docid: str = "title",
        max_words: int = 12,
        branching: int = 10,
        leaf: int = 100,
        embedder: str = "minilm",
        device: str = "auto",
        seed: int = 0,
    ) -> None:
        self.docid, self.max_words = docid, max_words
        self.branching, self.leaf, self.embedder = branching, leaf, embedder
        self.device, self.seed = device, seed
        self.ids: list[str] = []
        self.taken: dict[str, int] = {}
        self.centroids: dict[str, np.ndarray] = {}
        self.leaf_fill: dict[str, int] = {}

    def assign(self, docs: Sequence[Document | str]) -> list[str]:
        """Identifiers of ``docs``, appended after the ones assigned before."""
        bases = (
            self._semantic_ids(docs)
            if self.docid == "semantic"
            else [self.base_id(d) for d in docs]
        )
        start = len(self.ids)
        new_ids: list[str] = []
        for base in bases:
            ident = self.unique(base)
            self.taken[ident] = start + len(new_ids)
            new_ids.append(ident)
        self.ids.extend(new_ids)
        return new_ids

    def restore(
        self,
        ids: Sequence[str],
        centroids: Mapping[str, np.ndarray],
        leaf_fill: Mapping[str, int],
    ) -> None:
        """Take over the state of a saved index (its identifiers and centroid tree)."""
        self.ids = [str(i) for i in ids]
        self.taken = {i: r for r, i in enumerate(self.ids)}
        self.centroids = dict(centroids)
        self.leaf_fill = {str(k): int(v) for k, v in leaf_fill.items()}

    def save_state(self, directory: Path) -> None:
        """Write the identifiers and the centroid tree (``docids.json``, ``semantic.json``,
        ``centroids.npy`` when there are centroids) into ``directory``."""
        directory = Path(directory)
        (directory / "docids.json").write_text(json.dumps(self.ids, ensure_ascii=False), "utf-8")
        paths = sorted(self.centroids)
        if paths:
            np.save(
                directory / "centroids.npy",
                np.concatenate([self.centroids[p] for p in paths]),
                allow_pickle=False,
            )
        semantic = {
            "paths": paths,
            "sizes": [int(len(self.centroids[p])) for p in paths],
            "leaf_fill": self.leaf_fill,
        }
        (directory / "semantic.json").write_text(json.dumps(semantic), "utf-8")

    @staticmethod
    def read_state(
        directory: Path, count: int | None = None
    ) -> tuple[list[str], dict[str, np.ndarray], dict[str, int]]:
        """``(ids, centroids, leaf_fill)`` written by :meth:`save_state`, for :meth:`restore`.

        Raises:
            CorruptIndexError: a file is missing or unreadable, or ``count`` identifiers
                were expected and another number is there.
        """
        directory = Path(directory)
        try:
            ids = json.loads((directory / "docids.json").read_text("utf-8"))
            semantic = json.loads((directory / "semantic.json").read_text("utf-8"))
            centroids: dict[str, np.ndarray] = {}
            if semantic.get("paths"):
                arr = np.load(directory / "centroids.npy", allow_pickle=False)
                start = 0
                for p, size in zip(semantic["paths"], semantic["sizes"], strict=True):
                    centroids[p] = arr[start : start + size]
                    start += size
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CorruptIndexError(
                f"{directory}: identifiers unreadable ({exc}); rebuild the index."
            ) from exc
        if not isinstance(ids, list) or (count is not None and len(ids) != count):
            raise CorruptIndexError(f"{directory}/docids.json does not hold {count} identifiers.")
        return [str(i) for i in ids], centroids, dict(semantic.get("leaf_fill", {}))

    # -- title / prefix ----------------------------------------------------------------------
    def base_id(self, doc: Document | str) -> str:
        """The identifier of ``doc`` before de-duplication (``title`` / ``prefix``)."""
        if isinstance(doc, Document):
            title, text = doc.title, doc.text
        else:
            title, text = "", doc
        source = title if self.docid == "title" and title.strip() else text
        base = words(re.sub(r"\s+", " ", source), self.max_words).strip()
        return base or "untitled"

    def unique(self, base: str) -> str:
        """``base``, or ``base #N`` with the first N >= 2 not taken yet."""
        ident, n = base, 1
        while ident in self.taken:
            n += 1
            ident = f"{base} #{n}"
        return ident

    # -- semantic ---------------------------------------------------------------------------
    def _semantic_ids(self, docs: Sequence[Document | str]) -> list[str]:
        vecs = self._embed([d.content if isinstance(d, Document) else d for d in docs])
        if not self.centroids and not self.ids:
            return self._cluster(vecs)
        return [self._descend(v) for v in vecs]

    def _embed(self, texts: list[str]) -> np.ndarray:
        from ..models import MINILM, locate, resolve_device
        from ..models.bi_encoders import load_sentence_transformer

        source = self.embedder
        if source in ("minilm", MINILM):
            found = locate(MINILM, required=True, what="docid-trie semantic identifiers")
            source = str(found)
        model = load_sentence_transformer(source, resolve_device(self.device), model_id=source)
        vecs = model.encode(texts, batch_size=32, convert_to_numpy=True, normalize_embeddings=True)
        return np.asarray(vecs, dtype=np.float32)

    def _cluster(self, vecs: np.ndarray) -> list[str]:
        """Hierarchical k-means (DSI): digit paths, at most ``leaf`` documents per leaf."""
        out: list[str] = [""] * len(vecs)
        rng = np.random.default_rng(self.seed)
        stack: list[tuple[str, np.ndarray]] = [("", np.arange(len(vecs)))]
        while stack:
            path, members = stack.pop()
            if len(members) <= self.leaf:
                for j, m in enumerate(members.tolist()):
                    out[m] = f"{path}-{j}" if path else str(j)
                self.leaf_fill[path] = len(members)
                continue
            k = min(self.branching, len(members))
            centroids, labels = kmeans(vecs[members], k, rng)
            self.centroids[path] = centroids
            for c in range(k):
                part = members[labels == c]
                child = f"{path}-{c}" if path else str(c)
                if len(part) == len(members):  # k-means could not split: cut in order
                    part = members
                    self.leaf_fill[path] = len(part)
                    for j, m in enumerate(part.tolist()):
                        out[m] = f"{path}-{j}" if path else str(j)
                    break
                if len(part):
                    stack.append((child, part))
        return out

    def _descend(self, vec: np.ndarray) -> str:
        path = ""
        while path in self.centroids:
            c = int(np.argmax(self.centroids[path] @ vec))
            path = f"{path}-{c}" if path else str(c)
        j = self.leaf_fill.get(path, 0)
        self.leaf_fill[path] = j + 1
        return f"{path}-{j}" if path else str(j)


def kmeans(
    x: np.ndarray, k: int, rng: np.random.Generator, iters: int = 20
) -> tuple[np.ndarray, np.ndarray]:
    """Spherical k-means (cosine), k-means++ seeding; returns centroids and labels."""
    n = len(x)
    first = int(rng.integers(n))
    centers = [x[first]]
    dist = 1.0 - x @ x[first]
    for _ in range(1, k):
        p = np.clip(dist, 0, None)
        p = p / p.sum() if p.sum() > 0 else np.full(n, 1.0 / n)
        c = int(rng.choice(n, p=p))
        centers.append(x[c])
        dist = np.minimum(dist, 1.0 - x @ x[c])
    cent = np.stack(centers)
    labels = np.zeros(n, dtype=np.int64)
    for _ in range(iters):
        labels = np.argmax(x @ cent.T, axis=1)
        for c in range(k):
            members = x[labels == c]
            if len(members):
                v = members.mean(0)
                cent[c] = v / max(float(np.linalg.norm(v)), 1e-12)
    return cent.astype(np.float32), labels


# -- tokens ------------------------------------------------------------------------------------
def eos_token_id(tokenizer: Any, model: str, who: str = "docid-trie") -> int:
    """The tokenizer's EOS id, which ends every identifier.

    Raises:
        ConfigError: the tokenizer has none.
    """
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ConfigError(f"{who}: the tokenizer of {model} has no EOS token.")
    return int(eos)


def identifier_tokens(tokenizer: Any, identifier: str, eos: int) -> list[int]:
    """The tokens the model generates for ``identifier``: ``" " + identifier``, then ``eos``.

    ``" " + identifier`` is tokenised as the tokenizer splits it right after
    :data:`ANCHOR` (where the model emits it), falling back to tokenising it alone when
    the anchor's own tokens change at the boundary: the rule of
    :func:`relevo.decoding.constraints.suffix_tokens`, which this room may not import
    (a test checks that the two agree).
    """

    def enc(s: str) -> list[int]:
        return list(tokenizer(s, add_special_tokens=False)["input_ids"]) if s else []

    text = " " + identifier
    ctx = enc(ANCHOR)
    full = enc(ANCHOR + text)
    body = full[len(ctx) :] if full[: len(ctx)] == ctx and len(full) > len(ctx) else enc(text)
    return [*body, eos]


__all__ = [
    "ANCHOR",
    "DEFAULT_PROMPT",
    "DOCIDS",
    "DocidAssigner",
    "eos_token_id",
    "identifier_tokens",
    "kmeans",
    "words",
]
