"""Run manifests in eval reports, and `relevo eval --compare` naming what changed."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from relevo.engine.cli import cli
from relevo.engine.evaluate import evaluate
from relevo.engine.runinfo import SECTIONS, compare


def test_reports_carry_a_manifest(engine, tiny_dataset):
    rep = evaluate(engine, tiny_dataset, pipeline="faiss-flat", embedder="hashing")
    man = rep["manifest"]
    assert set(man) == set(SECTIONS)
    assert man["stack"]["relevo"] and man["stack"]["numpy"]
    assert [m["embedder"] for m in man["models"].values()] == ["hashing"]
    assert man["index"]["manifest"] and man["index"]["generation"].startswith("gen-")
    assert man["data"]["queries"] == rep["queries"]
    assert man["params"]["pipeline"] == "faiss-flat"
    json.dumps(rep)  # all JSON


def test_compare_names_the_section_that_changed(engine, tiny_dataset, tmp_path):
    a = evaluate(engine, tiny_dataset, pipeline="bm25")
    b = evaluate(engine, tiny_dataset, pipeline="bm25")
    same = compare(a, b)
    assert same["changed"] == [] and same["verdict"] == "same metrics"
    dense = evaluate(engine, tiny_dataset, pipeline="faiss-flat", embedder="hashing")
    diff = compare(a, dense)
    assert {"models", "params", "index"} <= set(diff["changed"]) and "data" not in diff["changed"]
    # the data: one judged query fewer
    fewer = evaluate(engine, tiny_dataset, pipeline="bm25", limit=1)
    assert "data" in compare(a, fewer)["changed"]
    # the stack: another numpy, same everything else
    other = json.loads(json.dumps(b))
    other["manifest"]["stack"]["numpy"] = "0.0.1"
    other["ndcg@10"] = b["ndcg@10"] - 0.01
    res = compare(b, other)
    assert res["changed"] == ["stack"] and "stack" in res["verdict"]
    assert res["metrics"]["ndcg@10"]["delta"] == pytest.approx(-0.01)
    assert any("numpy" in d for d in res["differences"]["stack"])
    # metrics moved with nothing changed: nondeterminism
    noisy = json.loads(json.dumps(b))
    noisy["ndcg@10"] += 0.02
    assert "nondeterministic" in compare(b, noisy)["verdict"]

    old, new = tmp_path / "old.json", tmp_path / "new.json"
    old.write_text(json.dumps(b))
    new.write_text(json.dumps(other))
    runner = CliRunner()
    res = runner.invoke(
        cli, ["eval", "--compare", str(old), str(new), "--json"], obj={"engine": engine}
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["changed"] == ["stack"]
    res = runner.invoke(cli, ["eval", "--compare", str(old), str(new)], obj={"engine": engine})
    assert "stack: numpy" in res.output and "ndcg@10" in res.output
    legacy = tmp_path / "legacy.json"
    legacy.write_text(json.dumps({"ndcg@10": 0.5}))
    res = runner.invoke(cli, ["eval", "--compare", str(legacy), str(new)], obj={"engine": engine})
    assert res.exit_code != 0 and "no 'manifest'" in res.output
    res = runner.invoke(cli, ["eval"], obj={"engine": engine})
    assert res.exit_code != 0 and "DATASET_DIR" in res.output
