"""Metadata filters: which documents a search may return.

A filter is a JSON object over document metadata, its fields ANDed:

- ``{"field": value}``: equality (a scalar);
- ``{"field": {"eq": v}}``, ``{"ne": v}``: equal / not equal;
- ``{"field": {"in": [v, ...]}}``, ``{"nin": [...]}``: one of / none of;
- ``{"field": {"gt": x, "gte": x, "lt": y, "lte": y}}``: a range (numbers or strings),
  several operators of one field ANDed.

A document whose metadata lacks the field never matches (``ne`` / ``nin`` included:
"not equal to a value it does not have" is not asserted). A value of another type than
the operand does not match either (``"2020"`` is not ``2020``; ``True`` is not ``1``).
The collection turns a filter into a row mask handed to every index, which applies it
before its top-k (see :meth:`relevo.engine.components.Index.search`), so ``k`` hits come
back from the matching documents whenever that many match.

On the command line ``--filter field=value`` (repeatable) builds equality terms; the
value is read as JSON when it parses as a scalar (``year=2020`` is a number,
``lang=en`` a string, ``flag=true`` a boolean).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import RequestError
from .types import Document

OPERATORS = ("eq", "ne", "in", "nin", "gt", "gte", "lt", "lte")
#: Values one ``in`` / ``nin`` list may hold, and fields one filter may name.
MAX_VALUES = 10_000
MAX_FIELDS = 64

Scalar = str | int | float | bool | None


def _kind(v: Any) -> str:
    # bool before int: True must not equal 1 here.
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if v is None:
        return "null"
    return "other"


def _check_scalar(field: str, op: str, v: Any) -> None:
    if _kind(v) == "other":
        raise RequestError(
            f"filter on {field!r}: {op} needs a string, number, boolean or null, got {type(v).__name__}."
        )
    if isinstance(v, float) and not math.isfinite(v):
        raise RequestError(f"filter on {field!r}: {op} needs a finite number, got {v!r}.")


def _same(a: Any, b: Any) -> bool:
    return _kind(a) == _kind(b) and a == b


@dataclass(frozen=True)
class Term:
    """One field's condition: ``op`` applied to ``value``."""

    field: str
    op: str
    value: Any

    def matches(self, metadata: Mapping[str, Any]) -> bool:
        if self.field not in metadata:
            return False
        have = metadata[self.field]
        op, want = self.op, self.value
        if op == "eq":
            return _same(have, want)
        if op == "ne":
            return not _same(have, want)
        if op == "in":
            return any(_same(have, w) for w in want)
        if op == "nin":
            return not any(_same(have, w) for w in want)
        if _kind(have) != _kind(want) or _kind(want) not in ("number", "string"):
            return False
        if op == "gt":
            return bool(have > want)
        if op == "gte":
            return bool(have >= want)
        if op == "lt":
            return bool(have < want)
        return bool(have <= want)  # lte


@dataclass(frozen=True)
class Filter:
    """A parsed filter: its terms, all of which must hold."""

    terms: tuple[Term, ...]

    def matches(self, doc: Document) -> bool:
        meta = doc.metadata
        return all(t.matches(meta) for t in self.terms)

    def mask(self, docs: Sequence[Document], live: np.ndarray | None = None) -> np.ndarray:
        """One bool per row of ``docs``: the filter holds (and the row is live, if given)."""
        test: Callable[[Document], bool] = self.matches
        out = np.fromiter((test(d) for d in docs), dtype=bool, count=len(docs))
        if live is not None:
            out &= live
        return out

    def key(self) -> str:
        """A canonical string of the filter (for caches and logs)."""
        return json.dumps(
            [[t.field, t.op, t.value] for t in self.terms], sort_keys=True, ensure_ascii=False
        )


def parse_filter(spec: Mapping[str, Any] | Filter | None) -> Filter | None:
    """Validate a JSON filter (see the module docstring); ``None`` / ``{}`` is no filter.

    Raises:
        RequestError: not an object, an unknown operator, an operand of the wrong type,
            too many fields or values.
    """
    if spec is None or isinstance(spec, Filter):
        return spec
    if not isinstance(spec, Mapping):
        raise RequestError(
            f"a filter is a JSON object of field conditions, got {type(spec).__name__}; "
            'e.g. {"year": {"gte": 2020}, "lang": "en"}.'
        )
    if len(spec) > MAX_FIELDS:
        raise RequestError(f"a filter may name at most {MAX_FIELDS} fields, got {len(spec)}.")
    terms: list[Term] = []
    for field, cond in spec.items():
        if not isinstance(field, str) or not field:
            raise RequestError(f"filter field names must be non-empty strings, got {field!r}.")
        if not isinstance(cond, Mapping):
            _check_scalar(field, "equality", cond)
            terms.append(Term(field, "eq", cond))
            continue
        if not cond:
            raise RequestError(
                f"filter on {field!r}: an empty condition; use one of {', '.join(OPERATORS)}."
            )
        for op, value in cond.items():
            if op not in OPERATORS:
                raise RequestError(
                    f"filter on {field!r}: unknown operator {op!r}; use one of {', '.join(OPERATORS)}."
                )
            if op in ("in", "nin"):
                if not isinstance(value, (list, tuple)):
                    raise RequestError(
                        f"filter on {field!r}: {op} needs a list of values, got {type(value).__name__}."
                    )
                if len(value) > MAX_VALUES:
                    raise RequestError(
                        f"filter on {field!r}: {op} lists {len(value)} values, more than the limit of {MAX_VALUES}."
                    )
                for v in value:
                    _check_scalar(field, op, v)
                terms.append(Term(field, op, tuple(value)))
            else:
                _check_scalar(field, op, value)
                if op in ("gt", "gte", "lt", "lte") and _kind(value) not in ("number", "string"):
                    raise RequestError(
                        f"filter on {field!r}: {op} compares numbers or strings, got {value!r}."
                    )
                terms.append(Term(field, op, value))
    return Filter(tuple(terms)) if terms else None


def parse_filter_options(items: Iterable[str]) -> dict[str, Any]:
    """``["year=2020", "lang=en"]`` (the CLI's ``--filter``) -> ``{"year": 2020, "lang": "en"}``.

    Raises:
        RequestError: an item without ``=`` or a field given twice.
    """
    out: dict[str, Any] = {}
    for item in items:
        field, sep, raw = item.partition("=")
        field = field.strip()
        if not sep or not field:
            raise RequestError(f"--filter takes FIELD=VALUE, got {item!r}.")
        if field in out:
            raise RequestError(
                f"--filter names {field!r} twice; a field has one value (use the JSON form with "
                '"in" for several).'
            )
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError):  # not JSON, a 5,000-digit number, deep nesting
            value = raw
        if _kind(value) == "other":  # a list or object: keep the text as given
            value = raw
        out[field] = value
    return out


__all__ = ["OPERATORS", "Filter", "Term", "parse_filter", "parse_filter_options"]
