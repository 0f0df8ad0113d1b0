"""`relevo search --filter`, `relevo index add` and `relevo index delete` on the tiny corpus."""

from __future__ import annotations

import json

import pytest


@pytest.fixture
def index_dir(run, corpus_file, tmp_path):
    out = tmp_path / "idx"
    run(
        "index",
        "build",
        str(corpus_file),
        "--out",
        str(out),
        "--index",
        "bm25",
        "--index",
        "faiss-flat",
        "--embedder",
        "hashing",
    )
    return out


def hits(run, index_dir, *args):
    res = run("search", str(index_dir), *args, "--json")
    return [h["id"] for h in json.loads(res.output)["hits"]]


def test_search_filters(run, index_dir):
    assert hits(run, index_dir, "cats purr", "--filter", "topic=d3") == ["d3"]
    got = hits(
        run, index_dir, "cats", "--filter-json", '{"topic": {"in": ["d1", "d4"]}}', "-k", "5"
    )
    assert set(got) == {"d1", "d4"}
    bad = run("search", str(index_dir), "cats", "--filter-json", '{"topic": {"like": 1}}', ok=False)
    assert bad.exit_code != 0 and "unknown operator" in bad.output
    bad = run("search", str(index_dir), "cats", "--filter", "topic", ok=False)
    assert bad.exit_code != 0 and "FIELD=VALUE" in bad.output


def test_index_add_and_delete(run, index_dir, tmp_path, engine):
    more = tmp_path / "more.jsonl"
    rows = [
        {
            "_id": "n1",
            "title": "Lions",
            "text": "Lions are big cats that roar.",
            "metadata": {"topic": "n"},
        },
        {"_id": "d1", "title": "Cats", "text": "Cats nap all day.", "metadata": {"topic": "d1"}},
    ]
    more.write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    res = run("index", "add", str(index_dir), str(more), "--json")
    assert json.loads(res.output) == {"added": 1, "updated": 1, "documents": 13}
    assert hits(run, index_dir, "lions roar", "-k", "1") == ["n1"]
    res = run("index", "delete", str(index_dir), "n1", "nope", "--json")
    assert json.loads(res.output) == {"deleted": 1, "documents": 12}
    assert "n1" not in hits(run, index_dir, "lions roar cats", "-k", "12")
    info = json.loads(run("index", "info", str(index_dir)).output)
    # the snapshot as built, plus the two journaled writes replayed on load
    assert info["count"] == 12 and info["journal"]["records"] == 2
    assert len(engine.load(index_dir)) == 12
