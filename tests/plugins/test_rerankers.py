"""The cross-encoder and nanoranker rerankers, and ``relevo train reranker``, with models built here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from relevo import ConfigError, Engine, Hit
from relevo.engine.commands import CommandHelpers, RelevoGroup
from relevo.engine.rerank import Reranking
from relevo.plugins import DEFAULT_PLUGINS
from relevo.plugins import cross_encoder as plugin
from relevo.testing import tiny_bert as build_tiny_bert
from relevo.testing import tiny_corpus, write_beir_dataset

QUERIES = {
    "q1": ("a kitten is a small cat that purrs", "d3"),
    "q2": ("a programming language focused on memory safety", "d5"),
    "q3": ("plants convert sunlight and water into glucose", "d7"),
    "q4": ("central banks raise interest rates", "d11"),
}


def make_tiny_bert(path: Path) -> Path:
    return build_tiny_bert(
        path, [d.content for d in tiny_corpus()] + [q for q, _ in QUERIES.values()]
    )


def make_dataset(root: Path) -> Path:
    queries = {qid: text for qid, (text, _) in QUERIES.items()}
    qrels = {qid: {doc: 1} for qid, (_, doc) in QUERIES.items()}
    return write_beir_dataset(root, tiny_corpus(), queries, qrels, split="train")


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    pytest.importorskip("transformers")
    return make_tiny_bert(tmp_path_factory.mktemp("bert") / "tiny-bert")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data") / "tinyset")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_bert, dataset) -> Path:
    from relevo.training import TrainConfig, train_cross_encoder

    out = tmp_path_factory.mktemp("models") / "tiny-ce"
    cfg = TrainConfig(
        datasets=[str(dataset)],
        out=str(out),
        base=str(tiny_bert),
        max_steps=2,
        batch_size=8,
        group_size=4,
        max_length=40,
        max_queries=None,
        depth=8,
        checkpoint_every=0,
        device="cpu",
    )
    train_cross_encoder(cfg, engine=Engine(load_entrypoints=False))
    return out


def test_plugin_module_imports_without_heavy_stacks():
    code = (
        "import sys, relevo.plugins.cross_encoder as m; "
        "bad = [x for x in ('torch', 'transformers', 'onnxruntime', 'nanoranker') if x in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_registered_names_come_from_the_bundled_plugin(engine):
    assert plugin.__name__ in DEFAULT_PLUGINS
    for name, cls in [
        ("cross-encoder", plugin.CrossEncoderReranker),
        ("nanoranker", plugin.NanorankerReranker),
    ]:
        reg, _ = engine.registry.get("reranker", name)
        assert reg.plugin == plugin.__name__ and reg.cls is cls
    bundled = {p["name"]: p for p in engine.plugins(all=True)["plugins"]}
    entry = bundled[plugin.__name__]
    assert entry["bundled"] is True
    assert sorted(entry["components"]["reranker"]) == ["cross-encoder", "nanoranker"]


def test_trained_folder_loads_as_cross_encoder_spec_and_scores_raw_logits(engine, trained):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    reranker = engine.create("reranker", "cross-encoder:" + str(trained), device="cpu")
    assert isinstance(reranker, plugin.CrossEncoderReranker)
    assert reranker.max_length == 40  # from relevo-reranker.json
    docs = [d.content for d in tiny_corpus()]
    scores = reranker.score("a kitten is a small cat", docs)
    assert len(scores) == len(docs) and all(isinstance(s, float) for s in scores)

    tok = AutoTokenizer.from_pretrained(trained)
    model = AutoModelForSequenceClassification.from_pretrained(trained).eval()
    with torch.inference_mode():
        batch = tok(
            ["a kitten is a small cat"] * len(docs),
            docs,
            truncation=True,
            max_length=40,
            padding=True,
            return_tensors="pt",
        )
        expected = model(**batch).logits[:, 0].tolist()
    # length-sorted batching restores input order
    assert scores == pytest.approx(expected, abs=1e-5)
    reranker.batch_size = 3
    assert reranker.score("a kitten is a small cat", docs[::-1]) == pytest.approx(
        scores[::-1], abs=1e-5
    )
    assert reranker.describe()["path"] == str(trained)


def test_pointwise_reranking_runs_through_the_host(engine, trained):
    reranker = engine.create(
        "reranker", "cross-encoder:" + str(trained), device="cpu", batch_size=4
    )
    hits = [
        Hit(id=d.id, score=0.0, rank=i, title=d.title, text=d.text)
        for i, d in enumerate(tiny_corpus(), 1)
    ]
    result = Reranking(reranker, strategy="pointwise")("kitten purr", hits)
    assert sorted(h.id for h in result.hits) == sorted(h.id for h in hits)
    assert [h.score for h in result.hits] == sorted((h.score for h in result.hits), reverse=True)
    assert result.cost.seconds > 0


def test_bare_name_resolves_under_the_cache_models_folder(trained, monkeypatch, tmp_path):
    monkeypatch.setenv("RELEVO_CACHE_DIR", str(tmp_path))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "my-ce").symlink_to(trained, target_is_directory=True)
    reranker = plugin.CrossEncoderReranker("my-ce")
    assert reranker.path == tmp_path / "models" / "my-ce" and reranker.training is not None


def test_cross_encoder_errors_are_clear(engine, tmp_path):
    with pytest.raises(ConfigError, match="needs a model"):
        engine.create("reranker", "cross-encoder")
    with pytest.raises(ConfigError, match="batch_size"):
        plugin.CrossEncoderReranker(str(tmp_path), batch_size=0)
    empty = tmp_path / "empty-model"
    empty.mkdir()
    with pytest.raises(ConfigError, match="cannot load cross-encoder"):
        plugin.CrossEncoderReranker(str(empty), device="cpu").score("q", ["d"])


def cli_root(engine: Engine) -> click.Group:
    @click.group(cls=RelevoGroup)
    def root() -> None:
        pass

    plugin.register_commands(root, CommandHelpers())
    return root


def test_train_reranker_command(engine, tiny_bert, dataset, tmp_path):
    root = cli_root(engine)
    out = tmp_path / "cli-model"
    args = [
        "train",
        "reranker",
        str(dataset),
        "--out",
        str(out),
        "--base",
        str(tiny_bert),
        "--max-steps",
        "2",
        "--batch-size",
        "8",
        "--max-length",
        "32",
        "--checkpoint-every",
        "1",
        "--device",
        "cpu",
    ]
    result = CliRunner().invoke(root, args, obj={"engine": engine})
    assert result.exit_code == 0, result.output
    # the per-step log lines (off a terminal) and the summary
    assert "training 2/2" in result.output and "trained 2 steps" in result.output
    assert json.loads((out / "relevo-reranker.json").read_text())["steps"] == 2

    again = CliRunner().invoke(root, args, obj={"engine": engine})
    assert (
        again.exit_code == 1 and "--overwrite" in again.output and "Traceback" not in again.output
    )
    bad = CliRunner().invoke(
        root, [*args, "--overwrite", "--batch-size", "6"], obj={"engine": engine}
    )
    assert bad.exit_code == 1 and "multiple of group_size" in bad.output
    missing = CliRunner().invoke(
        root,
        ["train", "reranker", "no-such-dataset", "--out", str(tmp_path / "m")],
        obj={"engine": engine},
    )
    assert missing.exit_code == 1 and "not found" in missing.output


def test_train_group_is_shared_with_other_plugins():
    @click.group()
    def root() -> None:
        pass

    @root.group("train")
    def train() -> None:
        pass

    @train.command("embedder")
    def embedder() -> None:
        pass

    plugin.register_commands(root, CommandHelpers())
    assert set(root.commands["train"].commands) == {"embedder", "reranker"}


def test_nanoranker_matches_the_package_and_ranks_sensibly(engine, monkeypatch):
    nr = pytest.importorskip("nanoranker")
    reranker = engine.create("reranker", "nanoranker")
    docs = [d.content for d in tiny_corpus()]
    reference = dict(nr.rank("Why do kittens purr?", docs, top_n=len(docs), normalize_scores=False))
    embedded: list[str] = []  # every text the reranker sends to the (slow) sentence encoder
    real_embed = nr.embed

    def counting_embed(text, *args, **kwargs):
        embedded.append(text)
        return real_embed(text, *args, **kwargs)

    monkeypatch.setattr(nr, "embed", counting_embed)
    scores = reranker.score("Why do kittens purr?", docs)
    assert len(scores) == len(docs)
    assert scores == pytest.approx([reference[d] for d in docs], abs=1e-5)
    assert embedded == ["Why do kittens purr?", *docs]  # the query once, each document once
    assert len(reranker._cache) == len(docs)
    embedded.clear()
    assert reranker.score("Why do kittens purr?", docs[::-1]) == pytest.approx(
        scores[::-1], abs=1e-6
    )
    assert embedded == ["Why do kittens purr?"]  # document embeddings came from the cache
    best = max(range(len(docs)), key=scores.__getitem__)
    assert tiny_corpus()[best].id in {"d1", "d3"}
    embedded.clear()
    assert reranker.score("anything", []) == []
    assert embedded == []  # nothing to score, nothing embedded
