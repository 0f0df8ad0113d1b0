"""`relevo serve`: the HTTP API against in-process results, its limits, auth and errors.

Every route is compared with the in-process call it wraps (search ids, embeddings
byte for byte); one test starts uvicorn on a loopback port and talks HTTP to it.
"""

from __future__ import annotations

import base64
import warnings

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from click.testing import CliRunner  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from relevo import (  # noqa: E402
    ConfigError,
    CorpusError,
    DimensionError,
    Engine,
    IndexFormatError,
    RelevoError,
    RequestError,
    UnknownComponentError,
)
from relevo.engine.errors import IndexBusyError, IndexWriteError  # noqa: E402
from relevo.engine.version import __version__  # noqa: E402
from relevo.server import Limits, check_bind, create_app, is_loopback, open_collection  # noqa: E402
from relevo.server.app import status_of  # noqa: E402
from relevo.testing import FakePlugin, HashingEmbedder, serve_in_thread, tiny_corpus  # noqa: E402

QUERIES = ["kitten purr", "programming language", "interest rates inflation", "plants sunlight"]
TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def engine() -> Engine:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return Engine(plugins=[FakePlugin()], load_entrypoints=False)


@pytest.fixture(scope="module")
def hybrid(engine):
    return engine.index(tiny_corpus(), stages=["bm25", "faiss-flat"], embedder="hashing")


@pytest.fixture(scope="module")
def client(engine, hybrid):
    app = create_app(hybrid, engine=engine, reranker="word-overlap")
    with TestClient(app) as c:
        yield c


@pytest.fixture
def saved(engine, tmp_path):
    """A collection on disk (writes need a path to commit to)."""
    col = engine.index(tiny_corpus(), stages=["bm25"])
    path = engine.save(col, tmp_path / "idx")
    return engine.load(path)


def error_of(response, status):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["message"]
    assert "Traceback" not in response.text
    return body["error"]


# -- search ----------------------------------------------------------------------------


@pytest.mark.parametrize("stages", [None, ["bm25"], ["faiss-flat"]])
def test_search_returns_the_in_process_hits(client, hybrid, stages):
    for q in QUERIES:
        res = client.post("/v1/search", json={"query": q, "k": 5, "stages": stages})
        assert res.status_code == 200, res.text
        hits = res.json()["hits"]
        expected = hybrid.search(q, 5, stages=stages)
        assert [h["id"] for h in hits] == [h.id for h in expected]
        assert [h["rank"] for h in hits] == list(range(1, len(expected) + 1))
        assert [h["score"] for h in hits] == pytest.approx([h.score for h in expected])
        assert set(hits[0]) == {"id", "score", "rank", "title", "text"}
        assert hits[0]["text"] == expected[0].text


@pytest.mark.parametrize(
    "flt",
    [{"topic": "d3"}, {"topic": {"in": ["d1", "d3", "d12"]}}],
    ids=["equality", "in"],
)
def test_search_filter_is_passed_through(client, hybrid, flt):
    """Needs Collection.search(filter=...), being written alongside."""
    res = client.post("/v1/search", json={"query": "kitten purr", "k": 5, "filter": flt})
    assert res.status_code == 200, res.text
    ids = [h["id"] for h in res.json()["hits"]]
    assert ids == [h.id for h in hybrid.search("kitten purr", 5, filter=flt)]
    allowed = {flt["topic"]} if isinstance(flt["topic"], str) else set(flt["topic"]["in"])
    assert ids and set(ids) <= allowed


def test_relevo_errors_are_4xx_json(client):
    err = error_of(client.post("/v1/search", json={"query": "x", "stages": ["nope"]}), 422)
    assert err["type"] == "RequestError" and "unknown stage" in err["message"]
    err = error_of(client.post("/v1/search", json={"query": "   "}), 422)
    assert "empty" in err["message"]
    err = error_of(client.post("/v1/search", json={"k": 3}), 422)
    assert err["type"] == "validation_error" and "query" in err["message"]
    error_of(
        client.post(
            "/v1/search", content=b"{not json", headers={"content-type": "application/json"}
        ),
        422,
    )
    error_of(client.post("/v1/search", json={"query": "x", "k": 0}), 422)
    form = {"content-type": "application/x-www-form-urlencoded"}  # curl -d without -H
    err = error_of(client.post("/v1/search", content=b'{"query": "x"}', headers=form), 422)
    assert "Content-Type: application/json" in err["message"]
    err = error_of(client.get("/v1/nothing-here"), 404)
    assert err["type"] == "http_error"


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (RequestError("x"), 422),
        (DimensionError("x"), 422),
        (CorpusError("x"), 422),
        (ConfigError("x"), 400),
        (UnknownComponentError("reranker", "x", ["a"]), 404),
        (IndexFormatError("x"), 409),
        (IndexBusyError("x"), 409),
        (IndexWriteError("x"), 409),
        (RelevoError("x"), 400),
    ],
)
def test_every_relevo_error_class_has_a_4xx(exc, status):
    assert status_of(exc) == status


def test_an_unexpected_error_is_a_500_without_traceback(engine, hybrid, monkeypatch):
    app = create_app(hybrid, engine=engine)
    monkeypatch.setattr(
        hybrid, "search", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("secret internals"))
    )
    with TestClient(app, raise_server_exceptions=False) as c:
        err = error_of(c.post("/v1/search", json={"query": "cats"}), 500)
    assert err["type"] == "internal_error" and "secret" not in err["message"]


# -- rerank ----------------------------------------------------------------------------


def test_rerank_has_the_hosted_api_shape(client):
    docs = ["Dogs descended from wolves.", {"text": "a kitten will purr"}, "a kitten is a cat"]
    res = client.post(
        "/v1/rerank",
        json={"query": "kitten purr", "documents": docs, "model": "rerank-english-v3.0"},
    )
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["model"] == "word-overlap"
    results = body["results"]
    assert sorted(r["index"] for r in results) == [0, 1, 2]
    assert [r["index"] for r in results][:1] == [1]
    scores = [r["relevance_score"] for r in results]
    assert scores == sorted(scores, reverse=True) and scores[0] == pytest.approx(1.0)
    assert all(set(r) == {"index", "relevance_score"} for r in results)

    res = client.post(
        "/v1/rerank",
        json={"query": "kitten purr", "documents": docs, "top_n": 2, "return_documents": True},
    )
    results = res.json()["results"]
    assert len(results) == 2
    assert results[0]["document"] == {"text": "a kitten will purr"}
    assert all(r["document"]["text"] for r in results)


def test_rerank_with_a_listwise_reranker_and_without_one(engine, hybrid, client):
    app = create_app(hybrid, engine=engine, reranker="reverse")
    with TestClient(app) as c:
        res = c.post("/v1/rerank", json={"query": "q", "documents": ["a", "b", "c"]})
    assert [r["index"] for r in res.json()["results"]] == [2, 1, 0]
    bare = create_app(hybrid, engine=engine)
    with TestClient(bare) as c:
        err = error_of(c.post("/v1/rerank", json={"query": "q", "documents": ["a"]}), 404)
    assert "--reranker" in err["message"]
    assert client.post("/v1/rerank", json={"query": "q", "documents": []}).json()["results"] == []


# -- embeddings ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prefixed():
    """Query and document vectors differ, so the kind used is visible."""
    return HashingEmbedder(32, query_prefix="query about ", document_prefix="passage ")


@pytest.fixture(scope="module")
def embed_client(engine, hybrid, prefixed):
    with TestClient(create_app(hybrid, engine=engine, embedder=prefixed)) as c:
        yield c


def decode(item):
    return np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4")


def test_embeddings_equal_in_process_vectors(embed_client, prefixed):
    texts = ["cats purr", "a programming language", "bond prices fall"]
    expected = prefixed.embed(texts, kind="document")
    res = embed_client.post("/v1/embeddings", json={"input": texts, "model": "any"})
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["object"] == "list" and body["model"] == "hashing"
    assert [d["index"] for d in body["data"]] == [0, 1, 2]
    assert all(d["object"] == "embedding" for d in body["data"])
    got = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
    np.testing.assert_array_equal(got, expected)
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 0

    res = embed_client.post(
        "/v1/embeddings", json={"input": texts, "model": "any", "encoding_format": "base64"}
    )
    got = np.stack([decode(d) for d in res.json()["data"]])
    np.testing.assert_array_equal(got, expected)
    # a single string is a batch of one
    one = embed_client.post("/v1/embeddings", json={"input": "cats purr", "model": "m"}).json()
    np.testing.assert_array_equal(np.float32(one["data"][0]["embedding"]), expected[0])


@pytest.mark.parametrize(
    "extra",
    [{"input_type": "query"}, {"input_type": "search_query"}, {"model": "hashing:query"}],
)
def test_embeddings_query_kind_on_request(embed_client, prefixed, extra):
    expected = prefixed.embed(["cats purr"], kind="query")
    body = {"input": ["cats purr"], "model": "hashing", "encoding_format": "base64", **extra}
    got = decode(embed_client.post("/v1/embeddings", json=body).json()["data"][0])
    np.testing.assert_array_equal(got, expected[0])
    assert not np.array_equal(got, prefixed.embed(["cats purr"], kind="document")[0])


def test_embeddings_refusals(embed_client, engine, saved):
    err = error_of(embed_client.post("/v1/embeddings", json={"input": [[1, 2, 3]]}), 422)
    assert "token arrays" in err["message"]
    err = error_of(embed_client.post("/v1/embeddings", json={"input": "x", "dimensions": 7}), 422)
    assert "32-d" in err["message"]
    error_of(embed_client.post("/v1/embeddings", json={"input": "x", "input_type": "poem"}), 422)
    with TestClient(create_app(saved, engine=engine)) as c:  # bm25 only: no embedder
        err = error_of(c.post("/v1/embeddings", json={"input": "x"}), 404)
    assert "--embedder" in err["message"]


def test_the_dense_stage_embedder_is_the_default(client, hybrid):
    emb = hybrid.stages["faiss-flat"].embedder
    res = client.post("/v1/embeddings", json={"input": ["cats"], "encoding_format": "base64"})
    np.testing.assert_array_equal(
        decode(res.json()["data"][0]), emb.embed(["cats"], kind="document")[0]
    )


def test_the_openai_client_works_against_the_server(live_server, hybrid):
    openai = pytest.importorskip("openai")
    url, _app = live_server
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    res = client.embeddings.create(input=["cats purr", "bonds"], model="hashing")
    got = np.array([d.embedding for d in res.data], dtype=np.float32)
    emb = hybrid.stages["faiss-flat"].embedder
    np.testing.assert_array_equal(got, emb.embed(["cats purr", "bonds"], kind="document"))


# -- auth, limits, schema ------------------------------------------------------------------


def test_bearer_token(engine, hybrid):
    with TestClient(create_app(hybrid, engine=engine, token=TOKEN)) as c:
        assert c.get("/healthz").status_code == 200  # open
        res = c.post("/v1/search", json={"query": "cats"})
        error_of(res, 401)
        assert res.headers["www-authenticate"] == "Bearer"
        bad = {"Authorization": "Bearer wrong"}
        error_of(c.post("/v1/search", json={"query": "cats"}, headers=bad), 401)
        error_of(c.get("/v1/plugins", headers={"Authorization": f"Basic {TOKEN}"}), 401)
        ok = {"Authorization": f"Bearer {TOKEN}"}
        assert c.post("/v1/search", json={"query": "cats"}, headers=ok).status_code == 200
        schema = c.get("/openapi.json").json()
        assert "HTTPBearer" in schema["components"]["securitySchemes"]
    with pytest.raises(ConfigError):
        create_app(hybrid, engine=engine, token="")


SMALL = Limits(
    max_body_bytes=4000,
    max_query_chars=30,
    max_k=5,
    max_rerank_documents=3,
    max_embedding_inputs=2,
    max_write_documents=2,
)
DOC = {"id": "n1", "text": "new"}


@pytest.mark.parametrize(
    ("limit", "status", "method", "path", "body"),
    [
        ("max_body_bytes", 413, "POST", "/v1/search", {"query": "x" * 5000}),
        ("max_query_chars", 413, "POST", "/v1/search", {"query": "cats " * 10}),
        ("max_k", 422, "POST", "/v1/search", {"query": "cats", "k": 6}),
        ("max_query_chars", 413, "POST", "/v1/rerank", {"query": "q" * 31, "documents": ["a"]}),
        ("max_rerank_documents", 413, "POST", "/v1/rerank", {"query": "q", "documents": ["a"] * 4}),
        ("max_embedding_inputs", 413, "POST", "/v1/embeddings", {"input": ["a", "b", "c"]}),
        ("max_write_documents", 413, "POST", "/v1/documents", {"documents": [DOC] * 3}),
        ("max_write_documents", 413, "DELETE", "/v1/documents", {"ids": ["a", "b", "c"]}),
    ],
)
def test_each_limit_is_a_4xx_naming_itself(engine, hybrid, limit, status, method, path, body):
    app = create_app(hybrid, engine=engine, reranker="word-overlap", limits=SMALL)
    with TestClient(app) as c:
        err = error_of(c.request(method, path, json=body), status)
    assert err["type"] == "limit_exceeded"
    assert err["limit"] == limit and err["value"] == getattr(SMALL, limit)
    assert limit in err["message"]
    # just under the limits passes
    with TestClient(app) as c:
        assert c.post("/v1/search", json={"query": "cats", "k": 5}).status_code == 200


def test_a_streamed_body_over_the_limit_is_refused(engine, hybrid):
    def chunks():
        yield b'{"query": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}'

    with TestClient(create_app(hybrid, engine=engine, limits=SMALL)) as c:
        res = c.post("/v1/search", content=chunks(), headers={"content-type": "application/json"})
        assert error_of(res, 413)["limit"] == "max_body_bytes"
        small = iter([b'{"query": ', b'"cats", "k": 3}'])
        res = c.post("/v1/search", content=small, headers={"content-type": "application/json"})
        assert res.status_code == 200, res.text


def test_limits_refuse_nonsense():
    with pytest.raises(ConfigError, match="max_k"):
        Limits(max_k=0)


def test_openapi_health_and_plugins(client, hybrid):
    schema = client.get("/openapi.json").json()
    for path in ("/v1/search", "/v1/rerank", "/v1/embeddings", "/v1/documents", "/healthz"):
        assert path in schema["paths"]
    assert "delete" in schema["paths"]["/v1/documents"]
    health = client.get("/healthz").json()
    assert health == {
        "status": "ok",
        "documents": len(hybrid),
        "stages": ["bm25", "faiss-flat"],
        "version": __version__,
        "reranker": "word-overlap",
        "embedder": "hashing",
    }
    plugins = client.get("/v1/plugins", params={"all": "true"}).json()
    assert "relevo.plugins.server" in {p["name"] for p in plugins["plugins"]}
    assert plugins["errors"] == []


# -- documents ---------------------------------------------------------------------------
# These need Collection.add / update / delete / commit, being written alongside.


def test_write_update_delete_are_durable(engine, saved):
    with TestClient(create_app(saved, engine=engine)) as c:
        new = {
            "id": "n1",
            "title": "Axolotl",
            "text": "axolotls regrow limbs",
            "metadata": {"k": 1},
        }
        res = c.post("/v1/documents", json={"documents": [new]})
        assert res.status_code == 200, res.text
        assert res.json() == {"added": 1, "updated": 0, "documents": 13}
        hits = c.post("/v1/search", json={"query": "axolotl limbs", "k": 1}).json()["hits"]
        assert hits[0]["id"] == "n1"
        changed = {"id": "d1", "text": "felines regrow nothing"}
        res = c.post("/v1/documents", json={"documents": [changed, {**new, "text": "axolotls"}]})
        assert res.json() == {"added": 0, "updated": 2, "documents": 13}
        res = c.request("DELETE", "/v1/documents", json={"ids": ["d2", "unknown"]})
        assert res.status_code == 200, res.text
        assert res.json() == {"deleted": 1, "documents": 12}
        assert c.get("/healthz").json()["documents"] == 12
    reloaded = engine.load(saved.path)  # acknowledged writes are on disk
    assert len(reloaded) == 12
    assert reloaded.docstore.by_id("d2") is None
    assert reloaded.docstore.by_id("d1").text == "felines regrow nothing"
    assert reloaded.docstore.by_id("n1").metadata == {"k": 1}


def test_write_refuses_duplicate_ids_without_writing(engine, saved):
    with TestClient(create_app(saved, engine=engine)) as c:
        err = error_of(c.post("/v1/documents", json={"documents": [DOC, DOC]}), 422)
        assert "twice" in err["message"]
        error_of(c.post("/v1/documents", json={"documents": [{"id": "", "text": "x"}]}), 422)
    assert len(saved) == 12


def test_shutdown_flushes(engine, saved, monkeypatch):
    calls = []
    monkeypatch.setattr(saved, "commit", lambda: calls.append(1), raising=False)
    with TestClient(create_app(saved, engine=engine)):
        assert calls == []
    assert calls == [1]


def test_create_starts_an_empty_collection_and_reopens_it(engine, tmp_path):
    path = tmp_path / "live"
    col = open_collection(
        engine, path, create=True, stages=["bm25", "faiss-flat"], embedder="hashing"
    )
    assert len(col) == 0 and list(col.stages) == ["bm25", "faiss-flat"]
    assert col.search("anything", 3) == []
    again = open_collection(engine, path, create=True, stages=["torch-flat"])
    assert list(again.stages) == ["bm25", "faiss-flat"]  # opened as it is
    with pytest.raises(ConfigError, match="--create"):
        open_collection(engine, tmp_path / "missing")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine", "utf-8")
    with pytest.raises(IndexFormatError, match="not a relevo collection"):
        open_collection(engine, other, create=True)


def test_an_empty_created_collection_takes_writes(engine, tmp_path):
    col = open_collection(engine, tmp_path / "live", create=True, stages=["bm25"])
    with TestClient(create_app(col, engine=engine)) as c:
        assert c.get("/healthz").json()["documents"] == 0
        res = c.post("/v1/documents", json={"documents": [{"id": "a", "text": "purring cats"}]})
        assert res.status_code == 200, res.text
        hits = c.post("/v1/search", json={"query": "cats"}).json()["hits"]
    assert [h["id"] for h in hits] == ["a"]


# -- CLI and a real server ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("localhost", True),
        ("::1", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.5", False),
        ("example.com", False),
    ],
)
def test_loopback_detection(host, loopback):
    assert is_loopback(host) is loopback
    if loopback:
        check_bind(host, allow_remote=False)
    else:
        with pytest.raises(ConfigError, match="--allow-remote"):
            check_bind(host, allow_remote=False)
        check_bind(host, allow_remote=True)


@pytest.fixture(scope="module")
def relevo_cli(engine):
    from relevo.engine.cli import cli
    from relevo.engine.commands import CommandHelpers

    if "serve" not in cli.commands:
        engine.host.call_commands(cli, CommandHelpers())
    return cli


def test_serve_refuses_a_remote_bind_without_the_flag(relevo_cli, engine, saved, monkeypatch):
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("must not start a server"))
    res = CliRunner().invoke(
        relevo_cli, ["serve", str(saved.path), "--host", "0.0.0.0"], obj={"engine": engine}
    )
    assert res.exit_code == 2
    assert "--allow-remote" in res.output and "0.0.0.0" in res.output


def test_serve_builds_the_app_it_runs(relevo_cli, engine, tmp_path, monkeypatch):
    import uvicorn

    ran = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: ran.update(app=app, **kw))
    path = tmp_path / "new"
    args = ["serve", str(path), "--create", "--stages", "bm25,faiss-flat", "--embedder", "hashing"]
    args += ["--port", "8123", "--token", TOKEN, "--reranker", "word-overlap", "--max-k", "7"]
    res = CliRunner().invoke(relevo_cli, args, obj={"engine": engine}, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert ran["host"] == "127.0.0.1" and ran["port"] == 8123
    state = ran["app"].state.relevo
    assert state.limits.max_k == 7 and state.token == TOKEN
    assert list(state.collection.stages) == ["bm25", "faiss-flat"] and len(state.collection) == 0
    assert len(engine.load(path)) == 0  # written to disk
    res = CliRunner().invoke(relevo_cli, ["serve", "--help"], obj={"engine": engine})
    assert res.exit_code == 0 and "--allow-remote" in res.output


def test_serve_without_a_collection_says_how_to_make_one(relevo_cli, engine, tmp_path):
    res = CliRunner().invoke(relevo_cli, ["serve", str(tmp_path / "nope")], obj={"engine": engine})
    assert res.exit_code == 1 and "--create" in res.output


@pytest.fixture(scope="module")
def live_server(engine, hybrid):
    """uvicorn on a free loopback port in a thread; shut down (lifespan included) at the end."""

    app = create_app(hybrid, engine=engine, reranker="word-overlap")
    with serve_in_thread(app) as url:
        yield url, app


def test_a_real_uvicorn_server_answers_over_http(live_server, hybrid):
    url, _app = live_server
    with httpx.Client(base_url=url, timeout=10) as http:
        res = http.post("/v1/search", json={"query": "kitten purr", "k": 3})
        assert res.status_code == 200
        assert [h["id"] for h in res.json()["hits"]] == [
            h.id for h in hybrid.search("kitten purr", 3)
        ]
        assert http.get("/healthz").json()["status"] == "ok"


def test_manifest_records_what_the_server_runs(engine, saved):
    with TestClient(create_app(saved, engine=engine, reranker="word-overlap", token=TOKEN)) as c:
        assert c.get("/v1/manifest").status_code == 401
        man = c.get("/v1/manifest", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert man["stack"]["relevo"] and man["models"]["reranker"]["reranker"] == "word-overlap"
    assert man["index"]["generation"].startswith("gen-") and man["index"]["manifest"]
    assert man["params"]["auth"] is True and man["params"]["limits"]["max_k"] >= 1
