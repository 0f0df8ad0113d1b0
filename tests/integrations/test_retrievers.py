"""The LangChain and LlamaIndex retrievers return the ids of ``relevo search``.

In-process (a collection object or a directory), async, and by URL against a real
uvicorn server (token sent, refused without it), plus the errors a user meets.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import socket
import subprocess
import sys
import warnings

import pytest
from click.testing import CliRunner

from relevo import (
    ConfigError,
    Document,
    Engine,
    MissingDependencyError,
    RequestError,
    ServiceError,
)
from relevo.testing import FakePlugin, serve_in_thread, tiny_corpus

QUERIES = ["kitten purr", "programming language memory", "interest rates inflation"]
FILTER = {"n": {"gte": 4}}
TOKEN = "t"


def lc_module():
    pytest.importorskip("langchain_core")
    return importlib.import_module("relevo.integrations.langchain")


def li_module():
    pytest.importorskip("llama_index.core")
    return importlib.import_module("relevo.integrations.llamaindex")


@pytest.fixture(scope="module")
def engine() -> Engine:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return Engine(plugins=[FakePlugin()], load_entrypoints=False)


@pytest.fixture(scope="module")
def collection(engine):
    docs = [
        Document(id=d.id, title=d.title, text=d.text, metadata={"topic": d.id, "n": int(d.id[1:])})
        for d in tiny_corpus()
    ]
    return engine.index(docs, stages=["bm25", "faiss-flat"], embedder="hashing")


@pytest.fixture(scope="module")
def saved(engine, collection, tmp_path_factory):
    return engine.save(collection, tmp_path_factory.mktemp("idx") / "tiny")


def cli_ids(engine, directory, query, k, filter=None):
    """The ids ``relevo search DIR QUERY -k K --json`` prints."""
    from relevo.engine.cli import cli

    args = ["search", str(directory), query, "-k", str(k), "--json"]
    if filter is not None:
        args += ["--filter-json", json.dumps(filter)]
    res = CliRunner().invoke(cli, args, obj={"engine": engine})
    assert res.exit_code == 0, res.output
    return [h["id"] for h in json.loads(res.output)["hits"]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server_url(engine, collection):
    """``relevo serve`` with a token: uvicorn on a free loopback port in a thread."""
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    from relevo.server import create_app

    app = create_app(collection, engine=engine, token=TOKEN)
    with serve_in_thread(app) as url:
        yield url + "/"  # a trailing slash is fine


# -- in-process ----------------------------------------------------------------------


@pytest.mark.parametrize("query", QUERIES)
def test_langchain_returns_the_hits_of_collection_search(collection, query):
    retriever = lc_module().RelevoRetriever(collection=collection, k=4)
    docs = retriever.invoke(query)
    hits = collection.search(query, 4)
    assert [d.id for d in docs] == [h.id for h in hits]
    for d, h in zip(docs, hits, strict=True):
        assert d.metadata["id"] == h.id and d.metadata["rank"] == h.rank
        assert d.metadata["score"] == pytest.approx(h.score)
        assert d.metadata["title"] == h.title and d.metadata["topic"] == h.id  # docstore metadata
        assert d.page_content == f"{h.title}\n\n{h.text}"


def test_langchain_filter_and_stages(collection):
    retriever = lc_module().RelevoRetriever(
        collection=collection, k=3, filter=FILTER, stages=["bm25"]
    )
    docs = retriever.invoke("cats purr")
    expected = collection.search("cats purr", 3, filter=FILTER, stages=["bm25"])
    assert [d.id for d in docs] == [h.id for h in expected]
    assert all(d.metadata["n"] >= 4 for d in docs)


def test_a_directory_gives_the_ids_of_relevo_search(engine, saved):
    lc = lc_module().RelevoRetriever(collection=saved, engine=engine, k=5, filter=FILTER)
    li = li_module().RelevoRetriever(collection=str(saved), engine=engine, k=5, filter=FILTER)
    for query in QUERIES:
        expected = cli_ids(engine, saved, query, 5, FILTER)
        assert len(expected) == 5
        assert [d.id for d in lc.invoke(query)] == expected
        assert [n.node.node_id for n in li.retrieve(query)] == expected


@pytest.mark.parametrize("query", QUERIES)
def test_llamaindex_returns_the_hits_of_collection_search(collection, query):
    retriever = li_module().RelevoRetriever(collection=collection, k=4, filter=FILTER)
    nodes = retriever.retrieve(query)
    hits = collection.search(query, 4, filter=FILTER)
    assert [n.node.node_id for n in nodes] == [h.id for h in hits]
    assert [n.score for n in nodes] == pytest.approx([h.score for h in hits])
    first = nodes[0].node
    assert first.text == f"{hits[0].title}\n\n{hits[0].text}"
    assert first.metadata["rank"] == 1 and first.metadata["n"] >= 4


def test_the_async_variants_return_the_same(collection):
    lc = lc_module().RelevoRetriever(collection=collection, k=4)
    li = li_module().RelevoRetriever(collection=collection, k=4)

    async def both(query):
        return await asyncio.gather(lc.ainvoke(query), li.aretrieve(query))

    for query in QUERIES:
        docs, nodes = asyncio.run(both(query))
        expected = [h.id for h in collection.search(query, 4)]
        assert [d.id for d in docs] == expected
        assert [n.node.node_id for n in nodes] == expected


# -- by URL --------------------------------------------------------------------------


def test_by_url_the_ids_are_those_of_relevo_search(engine, saved, server_url):
    lc = lc_module().RelevoRetriever(url=server_url, token=TOKEN, k=5, filter=FILTER)
    li = li_module().RelevoRetriever(url=server_url, token=TOKEN, k=5, filter=FILTER)

    async def both(query):
        return await asyncio.gather(lc.ainvoke(query), li.aretrieve(query))

    for query in QUERIES:
        expected = cli_ids(engine, saved, query, 5, FILTER)
        docs = lc.invoke(query)
        assert [d.id for d in docs] == expected
        assert [d.metadata["rank"] for d in docs] == [1, 2, 3, 4, 5]
        assert [n.node.node_id for n in li.retrieve(query)] == expected
        adocs, anodes = asyncio.run(both(query))
        assert [d.id for d in adocs] == expected
        assert [n.node.node_id for n in anodes] == expected


def test_by_url_the_token_is_required(server_url):
    lc = lc_module().RelevoRetriever(url=server_url, k=2)
    with pytest.raises(RequestError, match=r"HTTP 401.*bearer token.*token="):
        lc.invoke("cats")
    with pytest.raises(RequestError, match="HTTP 401"):
        asyncio.run(lc.ainvoke("cats"))
    li = li_module().RelevoRetriever(url=server_url, token="wrong", k=2)
    with pytest.raises(RequestError, match="HTTP 401"):
        li.retrieve("cats")


def test_by_url_the_servers_message_comes_back(server_url):
    lc = lc_module().RelevoRetriever(url=server_url, token=TOKEN, stages=["nope"])
    with pytest.raises(RequestError, match=r"HTTP 4\d\d .*nope"):
        lc.invoke("cats")


def test_a_wrong_url_names_the_url():
    url = f"http://127.0.0.1:{free_port()}"
    lc = lc_module().RelevoRetriever(url=url, timeout=5)
    li = li_module().RelevoRetriever(url=url, timeout=5)
    with pytest.raises(ServiceError, match=rf"could not reach a relevo server at {url}/v1/search"):
        lc.invoke("cats")
    with pytest.raises(ServiceError, match=url):
        asyncio.run(li.aretrieve("cats"))


# -- errors and packaging ------------------------------------------------------------


def test_exactly_one_of_collection_and_url(collection):
    for make in (lc_module().RelevoRetriever, li_module().RelevoRetriever):
        with pytest.raises(ConfigError, match="exactly one of collection= .* or url="):
            make()
        with pytest.raises(ConfigError, match="exactly one"):
            make(collection=collection, url="http://127.0.0.1:1")
        with pytest.raises(ConfigError, match="http://"):
            make(url="127.0.0.1:8000")


def test_a_missing_framework_names_the_extra(monkeypatch):
    lc_module()
    monkeypatch.setitem(sys.modules, "langchain_core", None)
    monkeypatch.delitem(sys.modules, "relevo.integrations.langchain")
    with pytest.raises(MissingDependencyError, match=r"'langchain-core'.*relevo\[langchain\]"):
        importlib.import_module("relevo.integrations.langchain")


def test_importing_the_package_imports_no_framework():
    code = (
        "import sys, relevo.integrations; "
        "assert not {'langchain_core', 'llama_index'} & set(sys.modules), sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
