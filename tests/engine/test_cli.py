"""CLI round trips on the tiny corpus: index build -> search -> eval, plugins JSON, errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def test_build_search_round_trip(run, corpus_file, tmp_path):
    out = tmp_path / "idx"
    res = run(
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
        "--json",
    )
    manifest = json.loads(res.output)
    assert manifest["count"] == 12 and [s["name"] for s in manifest["stages"]] == [
        "bm25",
        "faiss-flat",
    ]
    res = run("search", str(out), "kitten purr", "-k", "3", "--json")
    payload = json.loads(res.output)
    assert payload["query"] == "kitten purr"
    assert [set(h) for h in payload["hits"]] == [{"id", "score", "rank", "title", "text"}] * 3
    assert payload["hits"][0]["id"] == "d3" and payload["hits"][0]["rank"] == 1
    res = run("search", str(out), "kitten purr", "--stage", "bm25")
    assert "d3" in res.output.splitlines()[0]
    info = json.loads(run("index", "info", str(out)).output)
    assert info["stage_manifests"]["faiss-flat"]["embedder"]["name"] == "hashing"


def test_build_refuses_existing_dir_and_bad_lines(run, corpus_file, tmp_path):
    out = tmp_path / "idx"
    run("index", "build", str(corpus_file), "--out", str(out))
    res = run("index", "build", str(corpus_file), "--out", str(out), ok=False)
    assert res.exit_code != 0 and "--overwrite" in res.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"_id": "a", "text": "fine"}\n{"_id": "b", "text": \n', "utf-8")
    res = run("index", "build", str(bad), "--out", str(tmp_path / "idx2"), ok=False)
    assert res.exit_code == 1 and "bad.jsonl:2" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "idx2").exists()


def test_unknown_index_and_corrupt_index_errors(run, corpus_file, tmp_path):
    res = run(
        "index",
        "build",
        str(corpus_file),
        "--out",
        str(tmp_path / "x"),
        "--index",
        "annoy",
        ok=False,
    )
    assert "unknown index 'annoy'" in res.output and "faiss-hnsw" in res.output
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("[]")
    res = run("search", str(broken), "q", ok=False)
    assert res.exit_code == 1 and "JSON object" in res.output


def test_index_options_are_passed(run, corpus_file, tmp_path):
    out = tmp_path / "idx"
    run(
        "index",
        "build",
        str(corpus_file),
        "--out",
        str(out),
        "--index",
        "bm25",
        "--option",
        "bm25.k1=0.9",
    )
    info = json.loads(run("index", "info", str(out)).output)
    assert info["stage_manifests"]["bm25"]["params"]["k1"] == 0.9
    res = run(
        "index",
        "build",
        str(corpus_file),
        "--out",
        str(tmp_path / "y"),
        "--option",
        "k1=3",
        ok=False,
    )
    assert "STAGE.KEY=VALUE" in res.output


def test_eval_json_interface(run, tiny_dataset, tmp_path):
    run_file = tmp_path / "run.trec"
    res = run(
        "eval",
        str(tiny_dataset),
        "--pipeline",
        "hybrid",
        "--embedder",
        "hashing",
        "--json",
        "--run-out",
        str(run_file),
    )
    report = json.loads(res.output)
    for key in ("ndcg@10", "mrr@10", "recall@100", "queries", "seconds"):
        assert key in report
    assert report["queries"] == 4 and 0.5 < report["ndcg@10"] <= 1.0
    rows = [line.split() for line in run_file.read_text().splitlines()]
    assert all(len(r) == 6 and r[1] == "Q0" for r in rows)
    # q1 ("kitten purr") is first; its top document is d3, the only one with both words
    assert rows[0][:4] == ["q1", "Q0", "d3", "1"]
    q1 = [r for r in rows if r[0] == "q1"]
    assert [int(r[3]) for r in q1] == list(range(1, len(q1) + 1))
    assert [float(r[4]) for r in q1] == sorted((float(r[4]) for r in q1), reverse=True)
    assert {r[0] for r in rows} == {"q1", "q2", "q3", "q4"}
    again = json.loads(
        run(
            "eval", str(tiny_dataset), "--pipeline", "hybrid", "--embedder", "hashing", "--json"
        ).output
    )
    assert again["index_reused"] is True and again["ndcg@10"] == report["ndcg@10"]
    limited = json.loads(
        run("eval", str(tiny_dataset), "--pipeline", "bm25", "--limit", "2", "--json").output
    )
    assert limited["queries"] == 2


def test_eval_metrics_match_a_hand_computed_run(engine, tiny_dataset):
    """score_run agrees with a direct nDCG computation (missing queries count as zero)."""
    import math

    from relevo import Hit
    from relevo.engine.evaluate import score_run

    qrels = {"q1": {"d3": 2, "d1": 1}, "q2": {"d5": 1}}
    run = {"q1": [Hit("d1", 2.0, 1), Hit("x", 1.5, 2), Hit("d3", 1.0, 3)], "q2": []}
    # trec_eval's ndcg uses the relevance grade itself as the gain (not 2**rel - 1)
    dcg = 1 / math.log2(2) + 2 / math.log2(4)
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    metrics = score_run(run, qrels)
    assert metrics["ndcg@10"] == pytest.approx(dcg / idcg / 2)
    assert metrics["mrr@10"] == pytest.approx(0.5)
    assert metrics["recall@100"] == pytest.approx(0.5)


def test_eval_unknown_pipeline_and_split(run, tiny_dataset):
    res = run("eval", str(tiny_dataset), "--pipeline", "nonsense", ok=False)
    assert "unknown pipeline 'nonsense'" in res.output and "hybrid" in res.output
    res = run("eval", str(tiny_dataset), "--split", "dev", ok=False)
    assert "Available splits: test" in res.output


def test_plugins_json(run):
    listing = json.loads(run("plugins", "--all").output)
    names = {p["name"] for p in listing["plugins"]}
    assert {
        "relevo.plugins.bm25",
        "relevo.plugins.faiss",
        "relevo.plugins.sentence_transformers",
    } <= names
    assert listing["errors"] == []
    assert json.loads(run("plugins").output)["plugins"] == [
        p for p in listing["plugins"] if not p["bundled"]
    ]


def test_console_entry_point_runs():
    out = subprocess.run(
        [sys.executable, "-m", "relevo", "--help"], capture_output=True, text=True, check=True
    )
    for cmd in ("index", "search", "eval", "plugins", "demo"):
        assert cmd in out.stdout


def test_import_is_light():
    code = "import sys, relevo; relevo.Engine; print(sorted(m for m in ('torch','faiss','transformers','sentence_transformers','scipy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
