"""``--overwrite`` replaces only a relevo collection; nothing else is ever deleted.

Regression: ``relevo index build ... --out DIR --overwrite`` deleted whatever DIR was
(the working directory, the dataset it had just read, a folder of unrelated files).
"""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from relevo import IndexFormatError
from relevo.engine.cli import cli
from relevo.engine.manifest import live_directory


@pytest.fixture
def build(engine):
    runner = CliRunner()

    def invoke(corpus, out, *extra):
        return runner.invoke(
            cli,
            ["index", "build", str(corpus), "--out", str(out), *extra],
            obj={"engine": engine},
            catch_exceptions=False,
        )

    return invoke


def snapshot(folder):
    return sorted(
        (str(p.relative_to(folder)), p.read_bytes() if p.is_file() else b"")
        for p in folder.rglob("*")
    )


def test_overwrite_refuses_the_working_directory(build, corpus_file, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("my notes", "utf-8")
    (work / "src").mkdir()
    (work / "src" / "app.py").write_text("print('hi')", "utf-8")
    before = snapshot(work)
    monkeypatch.chdir(work)
    res = build(corpus_file, ".", "--overwrite")
    assert res.exit_code != 0
    assert "is not a relevo collection" in res.output and "notes.txt" in res.output
    assert "Traceback" not in res.output
    assert snapshot(work) == before


def test_overwrite_refuses_the_dataset_it_reads(build, tiny_dataset):
    before = snapshot(tiny_dataset)
    res = build(tiny_dataset, tiny_dataset, "--overwrite")
    assert res.exit_code != 0 and "corpus.jsonl" in res.output
    assert snapshot(tiny_dataset) == before


def test_overwrite_refuses_a_folder_of_other_files_and_a_file(build, corpus_file, tmp_path):
    other = tmp_path / "photos"
    other.mkdir()
    (other / "a.jpg").write_bytes(b"\xff\xd8")
    res = build(corpus_file, other, "--overwrite")
    assert res.exit_code != 0 and (other / "a.jpg").read_bytes() == b"\xff\xd8"
    target = tmp_path / "file.txt"
    target.write_text("keep", "utf-8")
    res = build(corpus_file, target, "--overwrite")
    assert res.exit_code != 0 and "is a file" in res.output
    assert target.read_text("utf-8") == "keep"


def test_overwrite_replaces_a_collection_and_an_empty_folder_is_fine(build, corpus_file, tmp_path):
    out = tmp_path / "idx"
    assert build(corpus_file, out).exit_code == 0
    res = build(corpus_file, out)
    assert res.exit_code != 0 and "--overwrite" in res.output  # exists: asks for the flag
    assert build(corpus_file, out, "--overwrite", "--limit", "5").exit_code == 0
    assert '"count": 5' in (live_directory(out) / "manifest.json").read_text("utf-8")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert build(corpus_file, empty).exit_code == 0
    assert (live_directory(empty) / "manifest.json").is_file()
    # no temporary directories are left beside the outputs
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]


def test_engine_save_follows_the_same_rule(engine, docs, tmp_path):
    col = engine.index(docs, stages=["bm25"])
    other = tmp_path / "data"
    other.mkdir()
    (other / "keep.csv").write_text("1,2", "utf-8")
    with pytest.raises(IndexFormatError, match="not a relevo collection"):
        engine.save(col, other, overwrite=True)
    with pytest.raises(IndexFormatError, match="not a relevo collection"):
        col.save(other, overwrite=True)
    assert (other / "keep.csv").read_text("utf-8") == "1,2"
    path = engine.save(col, tmp_path / "idx")
    engine.save(engine.index(docs[:4], stages=["bm25"]), path, overwrite=True)
    assert len(engine.load(path)) == 4
