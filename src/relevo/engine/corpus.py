"""Reading BEIR-layout corpora, queries and qrels, with errors that name file and line."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from .errors import CorpusError, DatasetError
from .types import Document

CORPUS_NAMES = ("corpus.jsonl", "corpus.jsonl.gz")


def resolve_corpus(path: str | os.PathLike[str]) -> Path:
    """Accept a ``corpus.jsonl[.gz]`` file or a folder holding one."""
    p = Path(path)
    if p.is_dir():
        for name in CORPUS_NAMES:
            if (p / name).is_file():
                return p / name
        raise CorpusError(f"{p} holds no corpus.jsonl or corpus.jsonl.gz (BEIR layout expected).")
    if not p.is_file():
        raise CorpusError(f"corpus file {p} does not exist.")
    return p


def _open_text(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, object]]]:
    """Yield ``(line_number, object)``; a malformed line is a CorpusError naming it."""
    try:
        with _open_text(path) as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise CorpusError(
                        f"{path}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno})."
                    ) from exc
                if not isinstance(obj, dict):
                    raise CorpusError(
                        f"{path}:{lineno}: expected a JSON object, found {type(obj).__name__}."
                    )
                yield lineno, obj
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        if isinstance(exc, CorpusError):
            raise
        raise CorpusError(f"{path}: cannot be read ({exc}).") from exc


def read_corpus(
    path: str | os.PathLike[str], *, limit: int | None = None
) -> tuple[list[Document], str]:
    """Read a BEIR corpus; return documents and a content checksum.

    Every line must be an object with a string ``_id`` (``id`` also accepted) and a
    string ``text``; ``title`` and ``metadata`` are optional. Duplicate ids are refused.
    The checksum covers ids, titles and texts in order, so it keys caches and manifests.
    """
    p = resolve_corpus(path)
    docs: list[Document] = []
    seen: dict[str, int] = {}
    h = hashlib.sha256()
    for lineno, obj in iter_jsonl(p):
        doc_id = obj.get("_id", obj.get("id"))
        if isinstance(doc_id, int):
            doc_id = str(doc_id)
        if not isinstance(doc_id, str) or not doc_id:
            raise CorpusError(f'{p}:{lineno}: missing or empty "_id" (a string is required).')
        text = obj.get("text", "")
        title = obj.get("title", "") or ""
        if not isinstance(text, str) or not isinstance(title, str):
            raise CorpusError(
                f'{p}:{lineno}: "text" and "title" must be strings (document {doc_id!r}).'
            )
        if not text and not title:
            raise CorpusError(f"{p}:{lineno}: document {doc_id!r} has neither text nor title.")
        if doc_id in seen:
            raise CorpusError(
                f"{p}:{lineno}: duplicate document id {doc_id!r} (first seen on line {seen[doc_id]})."
            )
        seen[doc_id] = lineno
        meta = obj.get("metadata") or {}
        if not isinstance(meta, dict):
            raise CorpusError(f'{p}:{lineno}: "metadata" must be an object (document {doc_id!r}).')
        docs.append(Document(id=doc_id, text=text, title=title, metadata=meta))
        h.update(json.dumps([doc_id, title, text], ensure_ascii=False).encode("utf-8"))
        h.update(b"\n")
        if limit is not None and len(docs) >= limit:
            break
    if not docs:
        raise CorpusError(f"{p} contains no documents.")
    return docs, h.hexdigest()


def corpus_checksum(docs: list[Document]) -> str:
    """The same checksum :func:`read_corpus` computes, for documents built in Python."""
    h = hashlib.sha256()
    for d in docs:
        h.update(json.dumps([d.id, d.title, d.text], ensure_ascii=False).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def read_queries(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise DatasetError(f"queries file {path} does not exist (BEIR layout: queries.jsonl).")
    out: dict[str, str] = {}
    for lineno, obj in iter_jsonl(path):
        qid, text = obj.get("_id", obj.get("id")), obj.get("text")
        if not isinstance(qid, (str, int)) or not isinstance(text, str):
            raise DatasetError(f'{path}:{lineno}: a query needs string "_id" and "text".')
        out[str(qid)] = text
    return out


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """Read a BEIR qrels TSV (``query-id corpus-id score``, header optional)."""
    if not path.is_file():
        splits = sorted(q.stem for q in path.parent.glob("*.tsv")) if path.parent.is_dir() else []
        raise DatasetError(
            f"qrels file {path} does not exist. Available splits: {', '.join(splits) or 'none'}."
        )
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            parts = line.rstrip("\n").split("\t")
            if not line.strip():
                continue
            if lineno == 1 and parts[0] == "query-id":
                continue
            if len(parts) == 4:  # TREC qrels: qid 0 docid rel
                parts = [parts[0], parts[2], parts[3]]
            if len(parts) != 3:
                raise DatasetError(
                    f"{path}:{lineno}: expected 3 tab-separated columns, found {len(parts)}."
                )
            try:
                rel = int(float(parts[2]))
            except ValueError as exc:
                raise DatasetError(
                    f"{path}:{lineno}: relevance {parts[2]!r} is not a number."
                ) from exc
            qrels.setdefault(parts[0], {})[parts[1]] = rel
    return qrels


def read_trec_run(path: Path) -> dict[str, list[tuple[str, float]]]:
    """Read a TREC run file (``qid Q0 docid rank score tag``), ranked by score."""
    if not path.is_file():
        raise DatasetError(f"run file {path} does not exist.")
    run: dict[str, list[tuple[str, float]]] = {}
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 6:
                raise DatasetError(
                    f"{path}:{lineno}: a TREC run line has 6 columns, found {len(parts)}."
                )
            try:
                score = float(parts[4])
            except ValueError as exc:
                raise DatasetError(f"{path}:{lineno}: score {parts[4]!r} is not a number.") from exc
            run.setdefault(parts[0], []).append((parts[2], score))
    for hits in run.values():
        hits.sort(key=lambda x: -x[1])
    return run


__all__ = [
    "corpus_checksum",
    "read_corpus",
    "read_qrels",
    "read_queries",
    "read_trec_run",
    "resolve_corpus",
]
