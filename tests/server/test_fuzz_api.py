"""Fuzzing `relevo serve`: schemathesis against its OpenAPI schema, hypothesis on raw bodies.

The app serves a tiny collection on disk (bm25 + faiss-flat over the fake ``hashing``
embedder, the ``word-overlap`` reranker) behind a bearer token. Every generated request,
valid or not, must be answered: never a 5xx, every error a JSON ``{"error": {"message"}}``
body, no request running longer than :data:`HANG_S`, no route open without the token,
and every acknowledged write on disk.

schemathesis' ``pytest.from_fixture`` loader does not run under pytest 9 (it sets
``node._nodeid``), so each operation's strategy (``operation.as_strategy()``, positive
and negative modes) is driven by ``@given`` here. Two schemathesis checks are left out
on purpose: ``positive_data_acceptance`` (a schema-valid request may still be refused,
as documented: an empty query, ``dimensions`` other than the embedder's, a limit) and
``negative_data_rejection`` (unknown fields and query parameters are ignored so that
clients of the hosted APIs can send their extra options).

Schema-driven generation sends strict UTF-8 JSON only, so :func:`test_raw_json_bodies`
adds what JSON parsing lets through besides: NaN, infinities, lone surrogate escapes,
NULs, huge numbers. It found the two bugs the regression tests below pin.
"""

from __future__ import annotations

import json
import threading
import warnings
from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("fastapi")
schemathesis = pytest.importorskip("schemathesis")

from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    negative_data_rejection,
    positive_data_acceptance,
)

from relevo import Engine  # noqa: E402
from relevo.server import create_app  # noqa: E402
from relevo.testing import FakePlugin, tiny_corpus  # noqa: E402

TOKEN = "fuzz-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: A request still running after this long counts as a hang (the machine may be busy).
HANG_S = 5.0
OPERATIONS = [
    ("GET", "/healthz"),
    ("GET", "/v1/manifest"),
    ("POST", "/v1/search"),
    ("POST", "/v1/rerank"),
    ("POST", "/v1/embeddings"),
    ("POST", "/v1/documents"),
    ("DELETE", "/v1/documents"),
    ("GET", "/v1/plugins"),
]
OPEN = {("GET", "/healthz")}  # no token needed
EXCLUDED = [positive_data_acceptance, negative_data_rejection]
FUZZ = settings(
    max_examples=30,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def engine() -> Engine:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return Engine(plugins=[FakePlugin()], load_entrypoints=False)


@pytest.fixture(scope="module")
def served(engine, tmp_path_factory):
    """``(app, path)``: the app over a collection saved to a temporary directory."""
    col = engine.index(tiny_corpus(), stages=["bm25", "faiss-flat"], embedder="hashing")
    path = engine.save(col, tmp_path_factory.mktemp("fuzz-api") / "idx")
    app = create_app(path, engine=engine, reranker="word-overlap", token=TOKEN)
    return app, path


@pytest.fixture(scope="module")
def api(served):
    app, _ = served
    return schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.fixture(scope="module")
def client(served):
    app, _ = served
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def within(seconds: float, call: Callable[[], Any]) -> Any:
    """``call()`` in a thread; a call still running after ``seconds`` fails the test."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"the request was still running after {seconds:.0f} s (a hang)")
    if "error" in out:
        raise out["error"]
    return out["value"]


def check_answer(status: int, content_type: str, text: str) -> None:
    """Never a 5xx; an error is a JSON ``{"error": {"type", "message"}}`` without a traceback."""
    assert status < 500, f"{status}: {text[:500]}"
    if status >= 400:
        assert content_type.startswith("application/json"), content_type
        body = json.loads(text)
        assert set(body) == {"error"}, body
        assert isinstance(body["error"]["message"], str) and body["error"]["message"]
        assert isinstance(body["error"]["type"], str)
        assert "Traceback" not in text


def test_every_operation_is_fuzzed(api):
    ops = {(r.ok().method.upper(), r.ok().path) for r in api.get_all_operations()}
    assert ops == set(OPERATIONS)


def fuzz_operation(api, method: str, path: str, examples: int) -> None:
    operation = api[path][method]
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )
    # Mostly the right token; sometimes none, or whatever schemathesis made up.
    auths = st.sampled_from(["token", "token", "token", "none", "generated"])

    @given(case=cases, auth=auths)
    @settings(FUZZ, max_examples=examples)
    def run(case, auth):
        if auth == "none":
            case.headers = {
                k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"
            }
        headers = AUTH if auth == "token" else None
        response = within(HANG_S, lambda: case.call(headers=headers))
        event(f"{auth}: {response.status_code}")
        check_answer(
            response.status_code, response.headers.get("content-type", [""])[0], response.text
        )
        if auth != "token" and (method, path) not in OPEN:
            assert response.status_code >= 400, "a protected route answered without the token"
        case.validate_response(response, headers=headers, excluded_checks=EXCLUDED)

    run()


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_schemathesis(api, method, path):
    fuzz_operation(api, method, path, examples=30)


@pytest.mark.slow
@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_schemathesis_long(api, method, path):
    fuzz_operation(api, method, path, examples=300)


# -- raw JSON bodies: what JSON parsing lets through besides strict UTF-8 JSON ---------------

FIELDS = {
    "/v1/search": ["query", "k", "filter", "stages"],
    "/v1/rerank": ["query", "documents", "top_n", "return_documents", "model"],
    "/v1/embeddings": ["input", "model", "encoding_format", "dimensions", "input_type"],
    "/v1/documents": ["documents", "ids", "id", "text", "title", "metadata"],
}
hostile_text = st.one_of(
    st.text(max_size=20),
    st.sampled_from(
        ["", " ", "\x00", "\ud800", "a\udfffb", "\U0001f600", "cats", "d1", "x" * 3000]
    ),
)
hostile_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([0, -1, 10**30, 2**63]),
    st.floats(allow_nan=True, allow_infinity=True),
    hostile_text,
)


def hostile_json(fields: list[str]) -> st.SearchStrategy[Any]:
    keys = st.one_of(st.sampled_from(fields), hostile_text)
    return st.recursive(
        hostile_scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=5)
        ),
        max_leaves=12,
    )


def body_for(route: str) -> st.SearchStrategy[Any]:
    """Mostly an object holding the route's fields with hostile values, sometimes anything."""
    fields = FIELDS[route]
    value = hostile_json(fields)
    doc = st.fixed_dictionaries(
        {"id": hostile_text, "text": hostile_text},
        optional={
            "title": hostile_text,
            "metadata": st.dictionaries(hostile_text, value, max_size=3),
        },
    )
    shaped = st.fixed_dictionaries(
        {},
        optional={
            f: (st.lists(st.one_of(doc, value), max_size=3) if f == "documents" else value)
            for f in fields
        },
    )
    return st.one_of(shaped, shaped, value)


@pytest.mark.parametrize(
    ("method", "route"),
    [
        ("POST", "/v1/search"),
        ("POST", "/v1/rerank"),
        ("POST", "/v1/embeddings"),
        ("POST", "/v1/documents"),
        ("DELETE", "/v1/documents"),
    ],
)
def test_raw_json_bodies(client, served, engine, method, route):
    @given(body=body_for(route))
    @FUZZ
    def run(body):
        # ensure_ascii escapes lone surrogates as \udXXX; allow_nan writes NaN / Infinity
        raw = json.dumps(body, allow_nan=True).encode("ascii")
        headers = {**AUTH, "content-type": "application/json"}
        res = within(HANG_S, lambda: client.request(method, route, content=raw, headers=headers))
        check_answer(res.status_code, res.headers.get("content-type", ""), res.text)

    run()
    # every acknowledged write is on disk, and the next one still commits
    _, path = served
    documents = client.get("/healthz").json()["documents"]
    assert len(engine.load(path)) == documents
    res = client.post(
        "/v1/documents", json={"documents": [{"id": "after", "text": "x"}]}, headers=AUTH
    )
    assert res.status_code == 200, res.text


# -- regressions found by the fuzzers ----------------------------------------------------


def post_raw(client, route: str, raw: bytes):
    return client.post(route, content=raw, headers={**AUTH, "content-type": "application/json"})


@pytest.mark.parametrize(
    ("route", "raw"),
    [
        ("/v1/search", rb'{"query": "cats", "k": NaN}'),
        ("/v1/search", rb'{"query": "cats", "k": Infinity}'),
        ("/v1/search", rb'{"query": "cats", "stages": "\ud800"}'),
        ("/v1/search", rb'{"query": ["\ud800"]}'),
        ("/v1/rerank", rb'{"query": "q", "documents": [-Infinity]}'),
        ("/v1/documents", rb'{"documents": [{"id": "\ud800", "text": "x"}]}'),
    ],
)
def test_a_validation_error_echoing_nan_or_a_surrogate_is_a_422(client, route, raw):
    """The 422 handler echoed the input as it was; strict JSON rendering raised: a 500."""
    res = post_raw(client, route, raw)
    assert res.status_code == 422, res.text
    err = res.json()["error"]
    assert err["type"] == "validation_error" and err["message"]
    echoed = json.dumps(err["details"])
    assert any(s in echoed for s in ("nan", "inf", "\\\\ud800")), echoed


@pytest.mark.parametrize(
    "doc",
    [
        rb'{"id": "s1", "text": "a lone \ud800 surrogate"}',
        rb'{"id": "s2", "text": "x", "title": "\udfff"}',
        rb'{"id": "s3", "text": "x", "metadata": {"k\ud800": 1}}',
    ],
    ids=["text", "title", "metadata"],
)
def test_an_unstorable_document_is_refused_and_later_writes_commit(client, served, engine, doc):
    """It was applied, failed at commit (a 500) and stayed pending: every later write 500'd."""
    before = client.get("/healthz").json()["documents"]
    res = post_raw(client, "/v1/documents", b'{"documents": [' + doc + b"]}")
    assert res.status_code == 422, res.text
    assert "surrogate" in res.json()["error"]["message"]
    assert client.get("/healthz").json()["documents"] == before  # nothing applied
    ok = client.post("/v1/documents", json={"documents": [{"id": "ok", "text": "y"}]}, headers=AUTH)
    assert ok.status_code == 200, ok.text
    _, path = served
    assert len(engine.load(path)) == client.get("/healthz").json()["documents"]
