"""Reading BEIR-layout corpora, queries and qrels, with errors that name file and line."""

from __future__ import annotations

import codecs
import gzip
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, cast

from .errors import CorpusError, DatasetError
from .types import Document

log = logging.getLogger(__name__)

# A JSON escape of a UTF-16 surrogate: only then can a parsed line hold a lone one.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")

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


def _open_bytes(path: Path) -> IO[bytes]:
    if path.suffix == ".gz":
        return cast("IO[bytes]", gzip.open(path, "rb"))  # GzipFile reads like IO[bytes]
    return open(path, "rb")


def _decode(path: Path, lineno: int, raw: bytes) -> str:
    """One line as text; a byte that is not UTF-8 is a CorpusError naming line and column."""
    if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorpusError(
            f"{path}:{lineno}: byte 0x{raw[exc.start]:02x} at column {exc.start + 1} is not UTF-8 "
            f"({exc.reason}); re-save the file as UTF-8."
        ) from exc


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, object]]]:
    """Yield ``(line_number, object)``; a malformed line is a CorpusError naming it.

    Lines are decoded one by one, so a byte that is not UTF-8 is reported with its line
    number; a lone UTF-16 surrogate escape (``"\\ud800"``), which no UTF-8 text can
    hold, is refused with its line number too.
    """
    try:
        with _open_bytes(path) as fh:
            for lineno, raw in enumerate(fh, 1):
                line = _decode(path, lineno, raw)
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise CorpusError(
                        f"{path}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno})."
                    ) from exc
                except (ValueError, RecursionError) as exc:  # json.loads' own limits
                    raise CorpusError(
                        f"{path}:{lineno}: not readable JSON: a number with thousands of digits "
                        f"or nesting too deep ({type(exc).__name__}); fix the line."
                    ) from exc
                if not isinstance(obj, dict):
                    raise CorpusError(
                        f"{path}:{lineno}: expected a JSON object, found {type(obj).__name__}."
                    )
                if _SURROGATE_ESCAPE.search(line):
                    try:
                        json.dumps(obj, ensure_ascii=False).encode("utf-8")
                    except UnicodeEncodeError as exc:
                        raise CorpusError(
                            f"{path}:{lineno}: holds a lone UTF-16 surrogate escape "
                            f"({exc.object[exc.start : exc.end]!r}), which is not text; "
                            "fix or drop that character."
                        ) from exc
                yield lineno, obj
    except (OSError, EOFError) as exc:
        raise CorpusError(f"{path}: cannot be read ({exc}).") from exc


def read_corpus(
    path: str | os.PathLike[str], *, limit: int | None = None
) -> tuple[list[Document], str]:
    """Read a BEIR corpus; return documents and a content checksum.

    Every line must be an object with a string ``_id`` (``id`` also accepted);
    ``text``, ``title`` and ``metadata`` are optional. A document with neither title nor
    text is a valid (empty) document: it is indexed, never matches lexically, and dense
    embedders see an empty string; one warning counts them. Duplicate ids and ids with
    NUL characters are refused. The checksum covers ids, titles and texts in order, so it
    keys caches and manifests.
    """
    p = resolve_corpus(path)
    docs: list[Document] = []
    seen: dict[str, int] = {}
    empty: list[str] = []
    h = hashlib.sha256()
    for lineno, obj in iter_jsonl(p):
        doc_id = obj.get("_id", obj.get("id"))
        if isinstance(doc_id, int) and not isinstance(doc_id, bool):
            doc_id = str(doc_id)
        if not isinstance(doc_id, str) or not doc_id:
            raise CorpusError(f'{p}:{lineno}: missing or empty "_id" (a string is required).')
        if "\x00" in doc_id:
            raise CorpusError(
                f'{p}:{lineno}: "_id" {doc_id!r} contains a NUL character, which ids may not hold; '
                "fix the id."
            )
        text = obj.get("text", "")
        title = obj.get("title", "") or ""
        if not isinstance(text, str) or not isinstance(title, str):
            raise CorpusError(
                f'{p}:{lineno}: "text" and "title" must be strings (document {doc_id!r}).'
            )
        if not text and not title:
            empty.append(doc_id)
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
    if empty:
        log.warning(
            "%s: %d document(s) have neither title nor text (e.g. %s); they are indexed but "
            "never match a lexical query",
            p,
            len(empty),
            ", ".join(repr(d) for d in empty[:3]),
        )
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
