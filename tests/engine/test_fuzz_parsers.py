"""Fuzzing relevo's parsers with hypothesis: every input is answered or refused with a RelevoError.

- corpus lines (text and bytes) -> :func:`read_corpus` returns documents or raises a
  :class:`CorpusError` naming the line;
- queries and ``k`` -> :meth:`Collection.search` returns hits or raises :class:`RequestError`;
- filters (any JSON value) -> :func:`parse_filter` gives a Filter / None or a
  :class:`RequestError`, and a search under a parsed filter returns only documents it matches;
- documents written from Python -> added, committed and read back, or a :class:`RequestError`;
- damaged collection and stage manifests -> :meth:`Engine.load` loads or raises a
  :class:`RelevoError`, and ``relevo search`` / ``relevo index info`` print an error, never
  a traceback.

Collections are built once per test, not per example. An ``@example`` under a "fixed in"
comment is an input that once escaped as another exception (or wedged later writes).
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import json
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from relevo import CorpusError, Document, Engine, RelevoError, RequestError
from relevo.engine.corpus import read_corpus
from relevo.engine.filters import OPERATORS, Filter, parse_filter, parse_filter_options
from relevo.engine.manifest import MANIFEST, live_directory
from relevo.testing import FakePlugin, tiny_corpus

FUZZ = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
DEEP = "[" * 100_000  # json.loads raises RecursionError
HUGE_INT = "9" * 5_000  # json.loads raises ValueError (int max str digits)


@pytest.fixture(scope="module")
def engine() -> Engine:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return Engine(plugins=[FakePlugin()], load_entrypoints=False)


# -- JSON values of every kind -------------------------------------------------------------

text = st.one_of(
    st.text(max_size=12),
    st.text(st.characters(codec="utf-8"), max_size=8),  # control characters, non-BMP
    st.sampled_from(["", " ", "\x00", "\ufeff", "\ud800", "a\udfffb", "\U0001f600", "\u2028"]),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([0, -1, 2**63, 10**40]),
    st.floats(allow_nan=True, allow_infinity=True),
    text,
)


def json_values(keys: st.SearchStrategy[str] = text, leaves: int = 10) -> st.SearchStrategy[Any]:
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)
        ),
        max_leaves=leaves,
    )


# -- corpus --------------------------------------------------------------------------------

LINE_NO = re.compile(r"corpus\.jsonl:(\d+):")


def dumps_line(obj: Any) -> bytes:
    """One JSON line; ``ensure_ascii`` escapes lone surrogates, NaN stays NaN."""
    return json.dumps(obj, allow_nan=True).encode("ascii")


documents_json = st.fixed_dictionaries(
    {},
    optional={
        "_id": st.one_of(text, scalars, st.text(min_size=1, max_size=6)),
        "id": scalars,
        "title": st.one_of(text, scalars),
        "text": st.one_of(
            text, scalars, st.integers(20_000, 40_000).map(lambda n: "word " * n)
        ),  # a huge line
        "metadata": st.one_of(st.dictionaries(text, json_values(), max_size=3), json_values()),
        "extra": json_values(),
    },
)
good_documents = st.fixed_dictionaries(
    {"_id": st.text(min_size=1, max_size=6)},
    optional={
        "title": text,
        "text": text,
        "metadata": st.dictionaries(text, json_values(), max_size=3),
    },
)
corpus_lines = st.one_of(
    good_documents.map(dumps_line),
    good_documents.map(dumps_line),
    good_documents.map(dumps_line),
    documents_json.map(dumps_line),
    documents_json.map(lambda o: json.dumps(o, ensure_ascii=False, allow_nan=True))
    .filter(lambda s: not re.search("[\ud800-\udfff]", s))
    .map(lambda s: s.encode("utf-8")),  # raw UTF-8 with raw NULs, BOMs and control characters
    json_values().map(dumps_line),  # valid JSON, not an object
    st.binary(max_size=30),  # anything, non-UTF-8 included
    st.text(max_size=30).map(lambda s: s.encode("utf-8")),  # invalid JSON
    st.sampled_from(
        [
            b"",
            b"   ",
            codecs.BOM_UTF8 + b'{"_id": "bom"}',
            b'{"_id": "x", "text": "\x00"}',
            b'{"_id": "x\\u0000y"}',
            b'{"_id": "s", "text": "\\ud800"}',
            b'{"_id": "s", "text": "\\udfff\\ud800"}',
            b'{"_id": "p", "text": "\\ud83d\\ude00"}',
            b"\xff\xfe{}",
            b'{"_id": "t"',
            DEEP.encode(),
            b'{"_id": ' + HUGE_INT.encode() + b"}",
        ]
    ),
)


@given(lines=st.lists(corpus_lines, min_size=1, max_size=6), bom=st.booleans())
@FUZZ
@example(lines=[DEEP.encode()], bom=False)  # fixed in corpus.iter_jsonl: RecursionError
@example(lines=[b'{"_id": "a"}', b'{"_id": ' + HUGE_INT.encode() + b"}"], bom=False)  # ValueError
def test_read_corpus(tmp_path, lines, bom):
    path = tmp_path / "corpus.jsonl"
    raw = b"\n".join(lines)
    path.write_bytes((codecs.BOM_UTF8 if bom else b"") + raw)
    physical = raw.count(b"\n") + 1
    try:
        docs, checksum = read_corpus(path)
    except CorpusError as exc:
        msg = str(exc)
        event("CorpusError")
        found = LINE_NO.search(msg)
        if found:
            assert 1 <= int(found.group(1)) <= physical, msg
        else:
            assert "contains no documents" in msg, msg
        return
    event("documents")
    assert docs and re.fullmatch(r"[0-9a-f]{64}", checksum)
    assert len({d.id for d in docs}) == len(docs)
    for d in docs:
        assert isinstance(d.id, str) and d.id and "\x00" not in d.id
        assert isinstance(d.text, str) and isinstance(d.title, str)
        assert isinstance(d.metadata, dict)
        json.dumps([d.id, d.title, d.text], ensure_ascii=False).encode("utf-8")  # no surrogates


# -- queries -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def collection(engine):
    """bm25 + faiss-flat over documents with metadata of every JSON type."""
    docs = []
    kinds = [2019, 2020, 2021.5, "2020", "en", "de", True, False, None, [1], {"a": 1}, -0.0]
    for i, d in enumerate(tiny_corpus()):
        meta = {"year": kinds[i % len(kinds)], "n": i, "lang": ["en", "de", "fr"][i % 3]}
        if i % 4:
            meta["odd"] = kinds[(i * 5) % len(kinds)]
        docs.append(Document(id=d.id, title=d.title, text=d.text, metadata=meta))
    return engine.index(docs, stages=["bm25", "faiss-flat"], embedder="hashing")


queries = st.one_of(
    st.text(max_size=40),
    st.text(st.characters(categories=["Cc", "Cf", "Zs", "Zl", "Zp"]), max_size=10),
    st.text(st.characters(min_codepoint=0x10000), max_size=10),  # non-BMP
    st.text(st.characters(categories=["Cs"]), min_size=1, max_size=4),  # lone surrogates
    st.sampled_from(
        ["", "   ", "\t\n", "\x00", "cats", "kitten purr", "x" * 10_001, "cat " * 2500]
    ),
    st.builds(
        lambda w, n: w * n, st.sampled_from(["cat ", "\x00", "\U0001f600"]), st.integers(1, 3000)
    ),
)
ks = st.one_of(
    st.integers(1, 50),
    st.integers(1, 50),
    st.integers(-3, 50),
    st.sampled_from([0, 1, 1000, 1001, 10**6, 2**63, -(2**63)]),
    st.booleans(),
    st.floats(),
    st.none(),
    st.text(max_size=3),
    st.sampled_from([np.int64(3), np.int32(0), np.float32(2.0)]),
)


@given(query=queries, k=ks, stages=st.sampled_from([None, ["bm25"], ["faiss-flat"]]))
@FUZZ
@example(query="cats", k=np.int64(3), stages=["faiss-flat"])  # fixed in Collection.search_batch
def test_search(collection, query, k, stages):
    try:
        hits = collection.search(query, k, stages=stages)
    except RequestError:
        event("RequestError")
        return
    event("hits")
    assert isinstance(k, (int, np.integer)) and not isinstance(k, bool) and k >= 1
    assert len(hits) <= min(k, len(collection))
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
    assert len({h.id for h in hits}) == len(hits)
    assert all(np.isfinite(h.score) for h in hits)


# -- filters -------------------------------------------------------------------------------

fields = st.one_of(st.sampled_from(["year", "n", "lang", "odd", "missing", ""]), text)
operands = st.one_of(scalars, st.lists(scalars, max_size=4), json_values(leaves=4))
conditions = st.one_of(
    operands,
    st.dictionaries(st.one_of(st.sampled_from(OPERATORS), text), operands, max_size=3),
)
finite = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(2015, 2025),
    st.floats(2019, 2022),
    st.sampled_from(["en", "de", "fr", "2020", "", -0.0, 0]),
)
valid_conditions = st.one_of(
    finite,
    st.dictionaries(
        st.sampled_from(OPERATORS),
        st.one_of(finite, st.lists(finite, max_size=4)),
        min_size=1,
        max_size=3,
    ),
)
filters = st.one_of(
    st.dictionaries(st.sampled_from(["year", "n", "lang", "odd", "missing"]), valid_conditions),
    st.dictionaries(st.sampled_from(["year", "n", "lang", "odd", "missing"]), valid_conditions),
    st.dictionaries(fields, conditions, max_size=4),  # shaped like a filter
    json_values(fields),  # anything
)


@given(spec=filters, query=st.sampled_from(["cats", "programming language", "plants rates"]))
@FUZZ
@example(spec={"year": {"gte": 2020}, "lang": {"in": ["en", "de"]}}, query="cats")
@example(spec={"odd": {"ne": None}}, query="cats")
def test_parse_filter_and_search(collection, spec, query):
    try:
        flt = parse_filter(spec)
    except RequestError:
        event("RequestError")
        return
    event("no filter" if flt is None else "a filter")
    assert flt is None or isinstance(flt, Filter)
    if flt is not None:
        json.loads(flt.key())
    for stages in (None, ["bm25"], ["faiss-flat"]):
        try:
            hits = collection.search(query, 12, stages=stages, filter=spec)
        except RelevoError:
            continue
        for h in hits:
            doc = collection.docstore.by_id(h.id)
            assert flt is None or flt.matches(doc), (h.id, doc.metadata, spec)
        if flt is not None:
            # every index filters before its top-k: as many hits as match (up to k)
            matching = sum(flt.matches(d) for d in collection.docstore)
            if stages == ["faiss-flat"]:
                assert len(hits) == min(12, matching)


@given(
    items=st.lists(st.one_of(st.text(max_size=20), st.sampled_from(["=", "a=", "=b"])), max_size=4)
)
@FUZZ
@example(items=[f"year={HUGE_INT}"])  # fixed in filters.parse_filter_options: ValueError
@example(items=[f"year={DEEP}"])  # RecursionError
def test_parse_filter_options(items):
    try:
        spec = parse_filter_options(items)
    except RequestError:
        return
    assert all(isinstance(f, str) and f for f in spec)
    with contextlib.suppress(RequestError):  # NaN, a value of another kind
        parse_filter(spec)


# -- documents written from Python -----------------------------------------------------------

field_values = st.one_of(text, scalars, st.just(b"bytes"))
python_metadata = st.one_of(
    st.dictionaries(text, json_values(), max_size=3),
    st.dictionaries(text, json_values(), max_size=3),
    st.dictionaries(text, json_values(), max_size=3),
    st.dictionaries(text, json_values(), max_size=3),
    st.just({"set": {1, 2}}),
    st.just({1: "int key"}),
    st.just({"big": 10**5000}),
    st.just(None),
    st.just([("a", 1)]),
)


@pytest.fixture
def on_disk(engine, tmp_path):
    col = engine.index(tiny_corpus()[:4], stages=["bm25", "faiss-flat"], embedder="hashing")
    return engine.load(engine.save(col, tmp_path / "idx"))


@given(
    doc_id=st.one_of(st.text(min_size=1, max_size=4), text, field_values),
    title=st.one_of(text, text, field_values),
    body=st.one_of(text, text, field_values),
    metadata=python_metadata,
)
@FUZZ
# Fixed in writes.check_documents: each was applied, then commit() raised (UnicodeEncodeError,
# TypeError) or snapshot() did (sqlite IntegrityError), and kept raising for every later write.
@example(doc_id="s", title="", body="a lone \ud800", metadata={})
@example(doc_id="m", title="", body="x", metadata={"set": {1, 2}})
@example(doc_id="t", title=None, body="x", metadata={})
def test_upsert_then_commit_and_reload(engine, on_disk, doc_id, title, body, metadata):
    before = len(on_disk)
    doc = Document(id=doc_id, title=title, text=body, metadata=metadata)  # type: ignore[arg-type]
    try:
        on_disk.upsert([doc])
    except RequestError:
        event("RequestError")
        assert len(on_disk) == before
        on_disk.commit()  # nothing pending
        return
    event("stored")
    on_disk.commit()  # the journal
    again = engine.load(on_disk.path)
    assert len(again) == len(on_disk)
    assert again.docstore.by_id(doc_id).text == body
    on_disk.snapshot()  # the docstore
    assert len(engine.load(on_disk.path)) == len(on_disk)


# -- manifests -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved(engine, tmp_path_factory):
    """A saved collection (bm25 + faiss-flat) and the folder holding its live manifest."""
    col = engine.index(tiny_corpus(), stages=["bm25", "faiss-flat"], embedder="hashing")
    path = engine.save(col, tmp_path_factory.mktemp("fuzz-manifest") / "idx")
    return path, live_directory(path)


COLLECTION_KEYS = ["format", "format_version", "count", "rows", "corpus_checksum", "stages"]
COLLECTION_KEYS += ["fusion", "files", "relevo_version"]
STAGE_KEYS = ["name", "index", "path", "embedder"]
EMBEDDER_KEYS = ["name", "dim", "options", "normalized", "fingerprint"]
FUSION_KEYS = ["method", "k", "depth", "weights"]
FILE_KEYS = ["sha256", "bytes"]
INDEX_KEYS = ["format", "format_version", "count", "dim", "params", "embedder", "metric"]
INDEX_KEYS += ["class", "corpus_checksum"]


def edits(places: dict[str, list[str]]) -> st.SearchStrategy[Any]:
    """Raw bytes, any JSON value, or a list of ``(place, key, value | DROP)`` edits."""
    edit = st.sampled_from(sorted(places)).flatmap(
        lambda place: st.tuples(
            st.just(place),
            st.one_of(st.sampled_from(places[place]), text),
            st.one_of(st.just(DROP), json_values(leaves=5)),
        )
    )
    return st.one_of(
        st.lists(edit, min_size=1, max_size=4),
        st.lists(edit, min_size=1, max_size=4),
        json_values(),
        st.sampled_from(RAW_MANIFESTS),
    )


DROP = "<drop>"
RAW_MANIFESTS = [DEEP.encode(), b'{"format_version": ' + HUGE_INT.encode() + b"}", b"\xff\xfe", b""]


def apply(original: dict[str, Any], plan: Any, where: dict[str, Any]) -> bytes:
    """The manifest ``plan`` makes of ``original``; ``where[place](manifest)`` picks a sub-object."""
    if isinstance(plan, bytes):
        return plan
    if not isinstance(plan, list) or not all(isinstance(e, tuple) for e in plan):
        return dumps_line(plan)
    man = json.loads(json.dumps(original))
    for place, key, value in plan:
        target = where[place](man)
        if not isinstance(target, dict):
            continue
        if value == DROP:
            target.pop(key, None)
        else:
            target[key] = value
    return dumps_line(man)


def _get(obj: Any, *keys: Any) -> Any:
    for k in keys:
        try:
            obj = obj[k]
        except (KeyError, IndexError, TypeError):
            return None
    return obj


COLLECTION_PLACES = {
    "top": lambda m: m,
    "stage0": lambda m: _get(m, "stages", 0),
    "stage1": lambda m: _get(m, "stages", 1),
    "embedder": lambda m: _get(m, "stages", 1, "embedder"),
    "fusion": lambda m: _get(m, "fusion"),
    "file": lambda m: _get(m, "files", "docstore.sqlite"),
    "files": lambda m: _get(m, "files"),
}
STAGE_PLACES = {
    "top": lambda m: m,
    "params": lambda m: _get(m, "params"),
    "embedder": lambda m: _get(m, "embedder"),
}


def load_or_refuse(engine: Engine, path: Path) -> RelevoError | None:
    try:
        engine.load(path)
    except RelevoError as exc:
        event(type(exc).__name__)
        return exc
    event("loaded")
    return None


def check_cli(engine: Engine, path: Path, refused: RelevoError | None) -> None:
    from relevo.engine.cli import cli

    runner = CliRunner()
    for args in (["search", str(path), "cats", "-k", "3"], ["index", "info", str(path)]):
        res = runner.invoke(cli, args, obj={"engine": engine})
        assert "Traceback" not in res.output, res.output
        assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
        if refused is not None and args[0] == "search":
            assert res.exit_code != 0 and "Error" in res.output, res.output


@given(
    plan=edits(
        {
            "top": COLLECTION_KEYS,
            "stage0": STAGE_KEYS,
            "stage1": STAGE_KEYS,
            "embedder": EMBEDDER_KEYS,
            "fusion": FUSION_KEYS,
            "file": FILE_KEYS,
            "files": ["docstore.sqlite", "../x", "/etc/passwd", "a\\b", "stages", "nope"],
        }
    ),
    cli=st.integers(0, 4),
)
@FUZZ
@example(plan=DEEP.encode(), cli=0)  # fixed in manifest.read_manifest: RecursionError
@example(plan=RAW_MANIFESTS[1], cli=0)  # ValueError (int max str digits)
# fixed in manifest.inside: Path.resolve() raised UnicodeEncodeError on a lone surrogate
@example(plan=[("stage0", "path", "\ud800")], cli=0)
@example(plan=[("files", "a\udfff", {"sha256": "0" * 64, "bytes": 1})], cli=0)
def test_damaged_collection_manifest(engine, saved, plan, cli):
    path, live = saved
    target = live / MANIFEST
    original = target.read_bytes()
    try:
        target.write_bytes(apply(json.loads(original), plan, COLLECTION_PLACES))
        refused = load_or_refuse(engine, path)
        if cli == 0:  # the CLI is slower: one example in five
            check_cli(engine, path, refused)
    finally:
        target.write_bytes(original)


@given(
    plan=edits(
        {"top": INDEX_KEYS, "params": ["k1", "b", "vocab", "n", "dim"], "embedder": EMBEDDER_KEYS}
    ),
    stage=st.integers(0, 1),
    cli=st.integers(0, 4),
)
@FUZZ
@example(plan=DEEP.encode(), stage=0, cli=0)
@example(plan=[("top", "count", True)], stage=1, cli=0)
def test_damaged_stage_manifest(engine, saved, plan, stage, cli):
    """A stage manifest, re-recorded in the collection manifest's checksums so it is parsed."""
    path, live = saved
    top = live / MANIFEST
    original = top.read_bytes()
    man = json.loads(original)
    rel = f"{man['stages'][stage]['path']}/{MANIFEST}"
    target = live / rel
    stage_original = target.read_bytes()
    try:
        payload = apply(json.loads(stage_original), plan, STAGE_PLACES)
        target.write_bytes(payload)
        man["files"][rel] = {"sha256": hashlib.sha256(payload).hexdigest(), "bytes": len(payload)}
        top.write_text(json.dumps(man), "utf-8")
        refused = load_or_refuse(engine, path)
        if cli == 0:
            check_cli(engine, path, refused)
    finally:
        target.write_bytes(stage_original)
        top.write_bytes(original)


def test_the_manifest_fuzzers_restore_the_collection(engine, saved):
    path, _ = saved
    assert len(engine.load(path)) == 12


def test_filter_json_on_the_command_line_is_an_error_not_a_traceback(engine, saved):
    """Fixed in cli.search_cmd: json.loads' RecursionError and ValueError escaped."""
    from relevo.engine.cli import cli

    path, _ = saved
    for bad in (DEEP, f'{{"year": {HUGE_INT}}}', "{nope"):
        res = CliRunner().invoke(
            cli, ["search", str(path), "cats", "--filter-json", bad], obj={"engine": engine}
        )
        assert res.exit_code == 2 and "--filter-json" in res.output, res.output
        assert res.exception is None or isinstance(res.exception, SystemExit)
    res = CliRunner().invoke(
        cli, ["search", str(path), "cats", "--filter", f"year={HUGE_INT}"], obj={"engine": engine}
    )
    assert res.exit_code == 0 and "no hits" in res.output, res.output
