"""Co-citation: documents that one source cites together are similar (the MoE paper's signal).

Where the groups come from, per BEIR dataset and split:

- ``extras/claims_SPLIT.csv`` with a ``cited_doc_ids`` column (SciFact): the abstracts one
  claim cites. SciFact's BEIR ``test`` split is its ``validation`` claims file.
- otherwise ``qrels/SPLIT.tsv``: the documents judged relevant to one query. On NFCorpus a
  query *is* a NutritionFacts page and its qrels are the articles that page links.

:func:`cocited_groups` returns the groups (two documents or more); :func:`cocited_pairs`
the distinct pairs; :func:`random_pairs` as many pairs never co-cited, for the pair
classification the paper reports.
"""

from __future__ import annotations

import csv
import itertools
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ..engine.errors import DatasetError

#: BEIR split -> SciFact claims file split
_CLAIMS_SPLIT = {"test": "validation", "dev": "validation"}


def claims_file(root: Path, split: str) -> Path | None:
    extras = Path(root) / "extras"
    # BEIR's SciFact test split is the validation claims (claims_test.csv has no citations).
    for name in dict.fromkeys((_CLAIMS_SPLIT.get(split, split), split)):
        path = extras / f"claims_{name}.csv"
        if path.is_file():
            return path
    return None


def _qrels_groups(root: Path, split: str) -> list[list[str]]:
    path = Path(root) / "qrels" / f"{split}.tsv"
    if not path.is_file():
        raise DatasetError(
            f"{root}: no qrels/{split}.tsv and no extras/claims_{split}.csv to take co-citations from."
        )
    groups: dict[str, list[str]] = {}
    with path.open(encoding="utf-8", newline="") as f:
        for i, row in enumerate(csv.reader(f, delimiter="\t")):
            if i == 0 and row and row[0] == "query-id":
                continue
            if len(row) < 3:
                continue
            try:
                rel = float(row[2])
            except ValueError:
                raise DatasetError(
                    f"{path} line {i + 1}: relevance {row[2]!r} is not a number."
                ) from None
            if rel > 0:
                groups.setdefault(row[0], []).append(row[1])
    return [g for g in groups.values() if len(set(g)) >= 2]


def _claims_groups(path: Path) -> list[list[str]]:
    groups = []
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if "cited_doc_ids" not in (reader.fieldnames or []):
            raise DatasetError(f"{path}: no cited_doc_ids column.")
        for row in reader:
            ids = list(dict.fromkeys(re.findall(r"\d+", row["cited_doc_ids"] or "")))
            if len(ids) >= 2:
                groups.append(ids)
    return groups


def cocited_groups(
    root: str | Path, split: str, known: Iterable[str] | None = None
) -> list[list[str]]:
    """Groups of co-cited document ids (at least two of ``known``, when given, per group)."""
    root = Path(root)
    claims = claims_file(root, split)
    groups = _claims_groups(claims) if claims is not None else _qrels_groups(root, split)
    if known is not None:
        keep = set(known)
        groups = [[d for d in g if d in keep] for g in groups]
    return [list(dict.fromkeys(g)) for g in groups if len(set(g)) >= 2]


def cocited_pairs(groups: Sequence[Sequence[str]]) -> set[tuple[str, str]]:
    """Every unordered pair of documents that share a group (as ``(smaller, larger)``)."""
    pairs: set[tuple[str, str]] = set()
    for g in groups:
        for a, b in itertools.combinations(sorted(set(g)), 2):
            pairs.add((a, b))
    return pairs


def partners(groups: Sequence[Sequence[str]]) -> dict[str, list[str]]:
    """Per document, the documents it is co-cited with (sorted)."""
    out: dict[str, set[str]] = {}
    for g in groups:
        members = set(g)
        for d in members:
            out.setdefault(d, set()).update(members - {d})
    return {d: sorted(v) for d, v in sorted(out.items())}


def random_pairs(
    docs: Sequence[str], n: int, exclude: set[tuple[str, str]], *, seed: int = 0
) -> list[tuple[str, str]]:
    """``n`` distinct document pairs, none of them in ``exclude``."""
    if len(docs) < 2:
        return []
    rng = np.random.default_rng(seed)
    out: set[tuple[str, str]] = set()
    tries = 0
    while len(out) < n and tries < 50 * max(n, 1):
        tries += 1
        i, j = rng.choice(len(docs), 2, replace=False)
        a, b = sorted((docs[int(i)], docs[int(j)]))
        if (a, b) not in exclude:
            out.add((a, b))
    return sorted(out)


__all__ = ["claims_file", "cocited_groups", "cocited_pairs", "partners", "random_pairs"]
