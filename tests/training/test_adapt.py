"""``relevo adapt``: a 2-step run on a tiny corpus produces models that load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from relevo import DatasetError, Engine
from relevo.engine.synthetic import QueryGenConfig, SyntheticQuery
from relevo.testing import FakePlugin, tiny_bert, tiny_corpus, tiny_sentence_transformer

torch = pytest.importorskip("torch")
pytest.importorskip("sentence_transformers")

from relevo.training.adapt import REPORT_FILE, AdaptConfig, adapt, split_dev  # noqa: E402

TEXTS = [d.content for d in tiny_corpus()]


@pytest.fixture(scope="module")
def hermetic() -> Engine:
    return Engine(plugins=[FakePlugin()], load_entrypoints=False)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("models")
    return tiny_sentence_transformer(root / "st", TEXTS), tiny_bert(root / "bert", TEXTS)


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.jsonl"
    path.write_text(
        "".join(
            json.dumps({"_id": d.id, "title": d.title, "text": d.text}) + "\n"
            for d in tiny_corpus()
        ),
        encoding="utf-8",
    )
    return path


def _config(corpus: Path, out: Path, models: tuple[Path, Path], **kw) -> AdaptConfig:
    st, bert = models
    opts = dict(
        embedder=f"sentence-transformers:{st}",
        reranker="word-overlap",
        generation=QueryGenConfig(
            corpus=corpus, out=out / "queries.jsonl", model="first-words", per_doc=2
        ),
        max_steps=2,
        train_batch_size=4,
        train_reranker=True,
        reranker_steps=2,
        reranker_model=str(bert),
        dev_size=4,
        depth=5,
        device="cpu",
    )
    opts.update(kw)
    return AdaptConfig(corpus=corpus, out=out, **opts)


def test_two_step_adapt_produces_models_that_load(hermetic, corpus, models, tmp_path):
    out = tmp_path / "adapted"
    report = adapt(_config(corpus, out, models), engine=hermetic)
    saved = json.loads((out / REPORT_FILE).read_text("utf-8"))
    assert saved["queries"]["train"] == report["queries"]["train"] > 0
    q = report["queries"]
    # held out: whole documents (4 queries); the dev set is the half of their queries that
    # copies least from the source; the teacher's is the same choice over every query
    assert q["held_out"] == 4 and q["dev"] == 2
    assert q["teacher_dev"] == (q["train"] + q["held_out"]) // 2
    assert len((out / "teacher-dev-queries.jsonl").read_text().splitlines()) == q["teacher_dev"]
    assert report["embedder"]["steps"] == 2 and report["reranker"]["steps"] == 2
    assert set(report["interpolate_auto"]) == {"teacher", "reranker"}
    assert report["interpolate_auto"]["teacher"]["dev_queries"] == q["teacher_dev"]
    assert report["interpolate_auto"]["reranker"]["dev_queries"] == q["dev"]
    for est in report["interpolate_auto"].values():
        assert 0.0 <= est["weight"] <= 1.0
    # the outputs load as the specs the report names
    emb = hermetic.embedder(report["outputs"]["embedder"])
    vec = emb.embed(["kittens purr"], kind="query")
    assert vec.shape == (1, emb.dim)
    ce = hermetic.reranker(report["outputs"]["reranker"])
    assert len(ce.score("kittens purr", TEXTS[:3])) == 3
    # dev queries are never trained on: whole source documents are held out
    dev = {json.loads(x)["source_id"] for x in (out / "dev-queries.jsonl").read_text().splitlines()}
    train = (out / "data" / "qrels" / "train.tsv").read_text().splitlines()[1:]
    assert dev and not dev & {row.split("\t")[1] for row in train}
    # a rerun reuses the finished models
    again = adapt(_config(corpus, out, models), engine=hermetic)
    assert again["embedder"]["reused"] and again["reranker"]["reused"]


def test_without_a_teacher_the_bi_encoder_trains_on_the_pairs(hermetic, corpus, models, tmp_path):
    out = tmp_path / "plain"
    report = adapt(
        _config(corpus, out, models, reranker=None, train_reranker=False), engine=hermetic
    )
    assert report["interpolate_auto"] == {} and "reranker" not in report["outputs"]
    recipe = json.loads((out / "embedder" / "relevo-embedder.json").read_text())["recipe"]
    assert recipe["loss"] == "mnrl"


def test_queries_for_another_corpus_are_refused(hermetic, corpus, models, tmp_path):
    q = tmp_path / "q.jsonl"
    q.write_text(json.dumps({"_id": "a", "text": "x y", "source_id": "elsewhere"}) + "\n")
    with pytest.raises(DatasetError, match="another corpus"):
        adapt(_config(corpus, tmp_path / "o", models, queries=q), engine=hermetic)


def test_split_dev_holds_out_whole_documents():
    qs = [SyntheticQuery(f"q{i}", "t", f"d{i // 2}") for i in range(20)]
    train, dev = split_dev(qs, 100, seed=1)
    assert len(dev) == 4  # a fifth at most
    assert not {q.source_id for q in dev} & {q.source_id for q in train}
    assert split_dev(qs, 0, seed=1) == (qs, [])


def test_adapt_command(hermetic, corpus, models, tmp_path):
    import click
    from click.testing import CliRunner

    from relevo.engine.commands import CommandHelpers, RelevoGroup
    from relevo.plugins import adapt as plugin

    @click.group(cls=RelevoGroup)
    def root() -> None:
        pass

    plugin.register_commands(root, CommandHelpers())
    out = tmp_path / "cli"
    args = ["adapt", str(corpus), "--out", str(out), "--model", "first-words", "--per-doc", "2"]
    args += ["--embedder", f"sentence-transformers:{models[0]}", "--reranker", "word-overlap"]
    args += ["--max-steps", "2", "--batch-size-train", "4", "--dev-queries", "4", "--device", "cpu"]
    result = CliRunner().invoke(root, args, obj={"engine": hermetic})
    assert result.exit_code == 0, result.output
    assert "training the bi-encoder 2/2" in result.output
    assert f"sentence-transformers:{out / 'embedder'}" in result.stdout
    assert "--interpolate auto for teacher" in result.stdout
    bad = CliRunner().invoke(root, [*args[:4], "--loss", "margin-mse"], obj={"engine": hermetic})
    assert bad.exit_code == 1 and "--reranker" in bad.output and "Traceback" not in bad.output
