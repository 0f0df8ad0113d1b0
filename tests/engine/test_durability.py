"""Crash-safe, verified collection directories (issue 11).

Regressions: a crash between the two renames of the old ``atomic_directory`` left no
index at DIR; killed writers left ``.DIR.tmp-*`` forever; two builds to one fresh
``--out`` both succeeded; a reader racing a writer got "corrupt, rebuild"; edited
payloads loaded; wrongly typed manifest fields, lone surrogates and OS errors ended in
tracebacks; an empty document refused the whole corpus.
"""

from __future__ import annotations

import fcntl
import gzip
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from relevo import (
    CorpusError,
    CorruptIndexError,
    Document,
    IndexBusyError,
    IndexFormatError,
    IndexWriteError,
)
from relevo.engine.cli import cli
from relevo.engine.collection import Collection
from relevo.engine.corpus import read_corpus
from relevo.engine.docstore import DocStore
from relevo.engine.generations import COMPLETE, CURRENT, LOCK, WRITER
from relevo.engine.manifest import file_digests, live_directory

# -- helpers ------------------------------------------------------------------------------


def manifest_of(path: Path) -> dict:
    return json.loads((live_directory(path) / "manifest.json").read_text("utf-8"))


def write_manifest_of(path: Path, man: dict) -> None:
    (live_directory(path) / "manifest.json").write_text(json.dumps(man), "utf-8")


def rehash(path: Path) -> None:
    """Re-record the payload checksums, as if the edit had been made before the save."""
    man = manifest_of(path)
    live = live_directory(path)
    man["files"] = file_digests(live, ["docstore.sqlite", *(s["path"] for s in man["stages"])])
    write_manifest_of(path, man)


def stage_dir(path: Path, i: int = 0) -> Path:
    return live_directory(path) / manifest_of(path)["stages"][i]["path"]


def ids(collection: Collection) -> list[str]:
    return [d.id for d in collection.docstore]


@pytest.fixture
def cli_run(engine):
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(cli, list(args), obj={"engine": engine}, catch_exceptions=False)

    return invoke


# -- 1. generations behind an atomically replaced pointer ---------------------------------


def test_layout_is_generations_behind_current(engine, docs, tmp_path):
    path = tmp_path / "idx"
    engine.save(engine.index(docs[:3], stages=["bm25"]), path)
    assert (path / CURRENT).read_text().strip() == "gen-000001"
    gen = live_directory(path)
    assert gen == path / "gen-000001"
    assert {p.name for p in gen.iterdir()} == {
        "manifest.json",
        "docstore.sqlite",
        "stages",
        WRITER,
        COMPLETE,
    }
    assert sorted(p.name for p in path.iterdir()) == [LOCK, CURRENT, "gen-000001"]
    for n in (5, 7):
        engine.save(engine.index(docs[:n], stages=["bm25"]), path, overwrite=True)
    # the live generation and the previous one (for readers still reading it)
    assert sorted(p.name for p in path.iterdir()) == [LOCK, CURRENT, "gen-000002", "gen-000003"]
    loaded = engine.load(path)
    assert len(loaded) == 7 and loaded.path == path  # Collection.path stays the user's DIR
    assert not [p for p in tmp_path.iterdir() if p.name != "idx"]  # nothing beside DIR


def test_flat_layout_still_loads_and_is_converted_on_overwrite(engine, docs, tmp_path):
    path = engine.save(engine.index(docs[:4], stages=["bm25"]), tmp_path / "new")
    flat = tmp_path / "flat"
    shutil.copytree(live_directory(path), flat)
    for marker in (WRITER, COMPLETE):
        (flat / marker).unlink()
    (flat / "notes.txt").write_text("mine", "utf-8")
    assert live_directory(flat) == flat
    assert ids(engine.load(flat)) == [d.id for d in docs[:4]]
    engine.save(engine.index(docs[:6], stages=["bm25"]), flat, overwrite=True)
    assert len(engine.load(flat)) == 6
    names = sorted(p.name for p in flat.iterdir())
    assert names == [LOCK, CURRENT, "gen-000001", "notes.txt"]  # the user's file is kept


CRASHER = textwrap.dedent(
    """
    import os, signal, sys
    from relevo import Engine
    from relevo.engine import generations
    from relevo.testing import FakePlugin, tiny_corpus

    point, out = sys.argv[1], sys.argv[2]
    engine = Engine(plugins=[FakePlugin()], load_entrypoints=False)
    col = engine.index(tiny_corpus(), stages=["bm25"])

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    if point == "payload":
        index = col.stages["bm25"].index
        real = index.save_payload
        index.save_payload = lambda d: (real(d), die())
    elif point == "before_swap":
        generations._point_current = die
    elif point == "after_swap":
        generations._prune = die
    engine.save(col, out, overwrite=True)
    """
)


@pytest.mark.parametrize(
    ("point", "survivor"), [("payload", 3), ("before_swap", 3), ("after_swap", 12)]
)
def test_a_writer_killed_anywhere_leaves_a_loadable_index(engine, docs, tmp_path, point, survivor):
    path = engine.save(engine.index(docs[:3], stages=["bm25"]), tmp_path / "idx")
    proc = subprocess.run(
        [sys.executable, "-c", CRASHER, point, str(path)], capture_output=True, timeout=120
    )
    assert proc.returncode == -9, proc.stderr.decode()
    loaded = engine.load(path)  # never "no index here", never "corrupt"
    assert len(loaded) == survivor
    # the killed writer's unfinished generation is gone once the lock is free
    expected = ["gen-000001"] if survivor == 3 else ["gen-000001", "gen-000002"]
    assert sorted(p.name for p in path.glob("gen-*")) == expected
    assert not list(path.glob(f"{CURRENT}.tmp-*"))
    engine.save(engine.index(docs[:5], stages=["bm25"]), path, overwrite=True)
    assert len(engine.load(path)) == 5


def test_a_failed_first_save_leaves_no_folder(engine, docs, tmp_path, monkeypatch):
    col = engine.index(docs, stages=["bm25"])

    def explode(directory):
        raise OSError("disk full")

    monkeypatch.setattr(col.stages["bm25"].index, "save_payload", explode)
    with pytest.raises(IndexWriteError, match="disk full") as info:
        col.save(tmp_path / "idx")
    assert isinstance(info.value, OSError)
    assert list(tmp_path.iterdir()) == []


# -- 2. strays of killed writers, removed safely -------------------------------------------


def test_strays_are_removed_only_when_provably_ours_and_unused(engine, docs, tmp_path):
    path = engine.save(engine.index(docs[:3], stages=["bm25"]), tmp_path / "idx")
    stray = path / "gen-000004"  # a killed writer's unfinished generation
    (stray / "stages").mkdir(parents=True)
    (stray / WRITER).write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
    (stray / "docstore.sqlite").write_bytes(b"half")
    (path / f"{CURRENT}.tmp-99999").write_text("gen-000004\n")
    foreign = path / "gen-000005"  # not ours: no marker, not empty
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("keep me", "utf-8")
    (path / "notes.txt").write_text("keep me too", "utf-8")

    # a writer holds the lock: the load must not touch what it may be writing
    fd = os.open(path / LOCK, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        assert len(engine.load(path)) == 3
        assert stray.is_dir() and (path / f"{CURRENT}.tmp-99999").exists()
    finally:
        os.close(fd)
    assert len(engine.load(path)) == 3
    assert not stray.exists() and not (path / f"{CURRENT}.tmp-99999").exists()
    assert (foreign / "thesis.tex").read_text("utf-8") == "keep me"
    assert (path / "notes.txt").read_text("utf-8") == "keep me too"
    # a later save still works (and numbers past the foreign folder)
    engine.save(engine.index(docs[:4], stages=["bm25"]), path, overwrite=True)
    assert live_directory(path).name == "gen-000006" and len(engine.load(path)) == 4


def test_a_folder_left_by_a_killed_first_build_counts_as_empty(engine, docs, tmp_path):
    path = tmp_path / "idx"
    (path / "gen-000001").mkdir(parents=True)
    (path / "gen-000001" / WRITER).write_text("{}")
    (path / LOCK).write_text("")
    engine.save(engine.index(docs[:3], stages=["bm25"]), path)  # no --overwrite needed
    assert len(engine.load(path)) == 3


# -- 3. one writer at a time ---------------------------------------------------------------


class BlockedSave:
    """Run ``collection.save(path)`` in a thread that stops inside the payload write."""

    def __init__(self, collection, path, **kwargs):
        self.entered, self.release = threading.Event(), threading.Event()
        index = next(iter(collection.stages.values())).index
        real = index.save_payload

        def slow(directory):
            self.entered.set()
            assert self.release.wait(30)
            return real(directory)

        index.save_payload = slow
        self.error: BaseException | None = None

        def run():
            try:
                collection.save(path, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                self.error = exc

        self.thread = threading.Thread(target=run)
        self.thread.start()
        assert self.entered.wait(30)

    def finish(self):
        self.release.set()
        self.thread.join(30)
        assert self.error is None, self.error


def test_a_second_writer_without_overwrite_is_refused(engine, docs, tmp_path, cli_run, corpus_file):
    path = tmp_path / "idx"
    first = BlockedSave(engine.index(docs[:3], stages=["bm25"]), path)
    try:
        with pytest.raises(IndexBusyError, match="being written by pid .*--overwrite"):
            engine.save(engine.index(docs[:5], stages=["bm25"]), path)
        res = cli_run("index", "build", str(corpus_file), "--out", str(path))
        assert res.exit_code == 1 and "being written" in res.output
        assert "Traceback" not in res.output
    finally:
        first.finish()
    with pytest.raises(IndexFormatError, match="already exists.*--overwrite"):
        engine.save(engine.index(docs[:5], stages=["bm25"]), path)
    assert len(engine.load(path)) == 3  # the first writer's index, untouched


def test_a_second_writer_with_overwrite_waits_its_turn(engine, docs, tmp_path):
    path = tmp_path / "idx"
    first = BlockedSave(engine.index(docs[:3], stages=["bm25"]), path)
    second = threading.Thread(
        target=engine.save,
        args=(engine.index(docs[:5], stages=["bm25"]), path),
        kwargs={"overwrite": True},
    )
    second.start()
    time.sleep(0.3)
    assert second.is_alive()  # waiting for the lock, not writing alongside
    first.finish()
    second.join(30)
    assert len(engine.load(path)) == 5


# -- 4. readers racing writers -------------------------------------------------------------


@pytest.mark.parametrize("slow_reader", [False, True])
def test_loads_racing_saves_see_old_or_new_never_corrupt(
    engine, docs, tmp_path, monkeypatch, slow_reader
):
    small = engine.index(docs[:4], stages=["bm25", "faiss-flat"], embedder="hashing")
    large = engine.index(docs[:9], stages=["bm25", "faiss-flat"], embedder="hashing")
    path = engine.save(small, tmp_path / "idx")
    if slow_reader:  # a load slower than two saves: its generation must not vanish under it
        import relevo.engine.collection as collection_module

        real = collection_module.verify_files

        def slow(*args, **kwargs):
            real(*args, **kwargs)
            time.sleep(0.03)

        monkeypatch.setattr(collection_module, "verify_files", slow)
    allowed = {tuple(d.id for d in docs[:4]), tuple(d.id for d in docs[:9])}
    done = threading.Event()
    failures: list[BaseException] = []

    def writer():
        try:
            for i in range(12):
                engine.save(large if i % 2 == 0 else small, path, overwrite=True)
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    loads = 0
    try:
        while not done.is_set() or loads < 3:
            col = engine.load(path)
            assert tuple(ids(col)) in allowed
            assert {s.index.rows for s in col.stages.values()} == {len(col)}
            loads += 1
    finally:
        thread.join(60)
    assert not failures, failures


def test_a_generation_being_read_is_not_removed_under_the_reader(engine, docs, tmp_path):
    from relevo.engine.generations import reading

    path = engine.save(engine.index(docs[:3], stages=["bm25"]), tmp_path / "idx")
    with reading(path) as (generation, folder):
        assert generation == "gen-000001"
        for n in (4, 5, 6):
            engine.save(engine.index(docs[:n], stages=["bm25"]), path, overwrite=True)
        assert (folder / "manifest.json").is_file()  # still whole for the slow reader
    assert len(engine.load(path)) == 6  # which, once done, lets the clean-up remove it
    assert sorted(p.name for p in path.glob("gen-*")) == ["gen-000003", "gen-000004"]


def test_a_read_that_fails_because_current_moved_is_retried(engine, docs, tmp_path, monkeypatch):
    path = engine.save(engine.index(docs[:3], stages=["bm25"]), tmp_path / "idx")
    newer = engine.index(docs[:6], stages=["bm25"])
    real = DocStore.load
    calls = []

    def racing(directory, **kwargs):
        calls.append(directory)
        if len(calls) == 1:  # a writer replaces the index, twice, mid-read
            engine.save(newer, path, overwrite=True)
            engine.save(newer, path, overwrite=True)
            raise CorruptIndexError(f"{directory}/docstore.sqlite vanished")
        return real(directory, **kwargs)

    monkeypatch.setattr(DocStore, "load", racing)
    assert len(engine.load(path)) == 6 and len(calls) == 2
    calls.clear()

    def broken(directory, **kwargs):  # a real corruption: CURRENT did not move
        calls.append(directory)
        raise CorruptIndexError("broken")

    monkeypatch.setattr(DocStore, "load", broken)
    with pytest.raises(CorruptIndexError, match="broken"):
        engine.load(path)
    assert len(calls) == 1


# -- 5. payload checksums ------------------------------------------------------------------


def test_manifest_records_every_payload_file(engine, docs, tmp_path):
    import hashlib

    path = engine.save(
        engine.index(docs, stages=["bm25", "faiss-flat"], embedder="hashing"), tmp_path / "idx"
    )
    files = manifest_of(path)["files"]
    live = live_directory(path)
    on_disk = {
        p.relative_to(live).as_posix()
        for p in live.rglob("*")
        if p.is_file() and p.name not in ("manifest.json", WRITER, COMPLETE)
    } | {p.relative_to(live).as_posix() for p in (live / "stages").rglob("manifest.json")}
    assert set(files) == on_disk and "docstore.sqlite" in files
    for rel, rec in files.items():
        data = (live / rel).read_bytes()
        assert rec == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("fmt", "name"),
    [("faiss-flat", "index.faiss"), ("torch-flat", "vectors.npy"), ("bm25", "scores.data.npy")],
)
def test_an_edited_payload_is_refused_naming_the_file(engine, docs, tmp_path, fmt, name):
    path = engine.save(engine.index(docs, stages=[fmt], embedder="hashing"), tmp_path / "idx")
    target = stage_dir(path) / name
    flip_byte(target, target.stat().st_size - 7)
    with pytest.raises(CorruptIndexError, match=rf"{name}: contents differ from the sha256"):
        engine.load(path)


def test_a_renamed_docstore_id_is_refused(engine, docs, tmp_path):
    path = engine.save(engine.index(docs, stages=["bm25"]), tmp_path / "idx")
    db = live_directory(path) / "docstore.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE docs SET id = 'dX' WHERE id = 'd1'")
    conn.close()
    with pytest.raises(CorruptIndexError, match="docstore.sqlite"):
        engine.load(path)


def test_old_manifest_without_checksums_loads_with_one_warning(engine, docs, tmp_path, caplog):
    path = engine.save(engine.index(docs, stages=["bm25"]), tmp_path / "idx")
    man = manifest_of(path)
    del man["files"]
    write_manifest_of(path, man)
    with caplog.at_level(logging.WARNING, logger="relevo.engine.manifest"):
        engine.load(path)
        engine.load(path)
    warnings = [r for r in caplog.records if "records no payload checksums" in r.getMessage()]
    assert len(warnings) == 1


def test_nan_in_a_dense_payload_is_refused_without_checksums(engine, docs, tmp_path):
    import faiss

    torch_path = engine.save(
        engine.index(docs, stages=["torch-flat"], embedder="hashing"), tmp_path / "t"
    )
    vec_file = stage_dir(torch_path) / "vectors.npy"
    vecs = np.load(vec_file)
    vecs[3, 5] = np.nan
    np.save(vec_file, vecs)
    faiss_path = engine.save(
        engine.index(docs, stages=["faiss-flat"], embedder="hashing"), tmp_path / "f"
    )
    idx_file = stage_dir(faiss_path) / "index.faiss"
    index = faiss.read_index(str(idx_file))
    faiss.rev_swig_ptr(index.get_xb(), index.ntotal * index.d)[7] = np.inf
    faiss.write_index(index, str(idx_file))
    for path, name in ((torch_path, "vectors.npy"), (faiss_path, "index.faiss")):
        with pytest.raises(CorruptIndexError, match="sha256"):
            engine.load(path)
        man = manifest_of(path)
        del man["files"]  # as an index from before checksums would be
        write_manifest_of(path, man)
        with pytest.raises(CorruptIndexError, match=rf"{name} holds NaN or infinite"):
            engine.load(path)


# -- 6. manifest types ---------------------------------------------------------------------


def _set(key, value):
    def edit(man):
        man[key] = value

    return edit


def _stage(key, value=None, *, drop=False):
    def edit(man):
        if drop:
            del man["stages"][0][key]
        else:
            man["stages"][0][key] = value

    return edit


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (_set("format_version", "1"), "'format_version'"),
        (_set("count", "abc"), "'count'"),
        (_set("count", True), "'count'"),
        (_set("stages", 5), "'stages'"),
        (_set("stages", []), "'stages'"),
        (_set("stages", ["bm25"]), "stages[0]"),
        (_stage("path", drop=True), "stages[0] lacks 'path'"),
        (_stage("path", 3), "stages[0].path"),
        (_stage("path", "../outside"), "stages[0].path '../outside' points outside"),
        (_stage("path", "/etc"), "stages[0].path '/etc' points outside"),
        (_stage("embedder", "x"), "stages[0].embedder"),
        (_stage("embedder", {"name": 3, "dim": 64}), "stages[0].embedder.name"),
        (_stage("embedder", {"name": "hashing", "dim": "64"}), "stages[0].embedder.dim"),
        (_stage("embedder", {"name": "hashing"}), "stages[0].embedder lacks 'dim'"),
        (_set("fusion", "x"), "'fusion'"),
        (_set("fusion", {"method": "borda"}), "fusion.method"),
        (_set("fusion", {"depth": 0}), "fusion.depth"),
        (_set("fusion", {"weights": {"a": "heavy"}}), "fusion.weights"),
        (_set("corpus_checksum", 5), "'corpus_checksum'"),
        (_set("files", "x"), "'files'"),
        (_set("files", {"docstore.sqlite": {"sha256": "x", "bytes": 1}}), ".sha256"),
        (_set("files", {"../../etc/passwd": {"sha256": "0" * 64, "bytes": 1}}), "points outside"),
    ],
)
def test_wrongly_typed_manifest_fields_name_field_and_file(engine, docs, tmp_path, edit, field):
    path = engine.save(
        engine.index(docs, stages=["faiss-flat"], embedder="hashing"), tmp_path / "i"
    )
    man = manifest_of(path)
    edit(man)
    write_manifest_of(path, man)
    with pytest.raises(CorruptIndexError) as info:
        engine.load(path)
    assert field in str(info.value) and "manifest.json" in str(info.value)


def test_a_stage_path_through_a_symlink_out_of_the_folder_is_refused(engine, docs, tmp_path):
    path = engine.save(engine.index(docs, stages=["bm25"]), tmp_path / "idx")
    outside = tmp_path / "elsewhere"
    shutil.copytree(stage_dir(path), outside)
    (live_directory(path) / "stages" / "link").symlink_to(outside)
    man = manifest_of(path)
    man["stages"][0]["path"] = "stages/link"
    write_manifest_of(path, man)
    with pytest.raises(CorruptIndexError, match="outside the index directory"):
        engine.load(path)


@pytest.mark.parametrize(
    ("key", "value", "field"),
    [
        ("count", "x", "'count'"),
        ("params", 5, "'params'"),
        ("format_version", None, "'format_version'"),
        ("dim", "64", "'dim'"),
        ("embedder", {"name": "hashing", "dim": "64"}, "'embedder'.dim"),
        ("format", "torch-flat", "differs from stage"),
        ("embedder", None, "differs from stage"),
    ],
)
def test_stage_manifest_fields_are_checked(engine, docs, tmp_path, key, value, field):
    path = engine.save(
        engine.index(docs, stages=["faiss-flat"], embedder="hashing"), tmp_path / "i"
    )
    smanifest = stage_dir(path) / "manifest.json"
    sman = json.loads(smanifest.read_text("utf-8"))
    sman[key] = value
    smanifest.write_text(json.dumps(sman), "utf-8")
    rehash(path)  # get past the checksum to the type check itself
    with pytest.raises(CorruptIndexError) as info:
        engine.load(path)
    assert field in str(info.value) and str(smanifest) in str(info.value)


def test_bad_docstore_metadata_is_a_corrupt_index(engine, docs, tmp_path):
    path = engine.save(engine.index(docs, stages=["bm25"]), tmp_path / "idx")
    with sqlite3.connect(live_directory(path) / "docstore.sqlite") as conn:
        conn.execute("UPDATE docs SET metadata = '{not json' WHERE id = 'd2'")
    conn.close()
    rehash(path)
    with pytest.raises(CorruptIndexError, match="metadata"):
        engine.load(path)


def test_index_info_refuses_a_stage_path_outside(engine, docs, tmp_path, cli_run):
    path = engine.save(engine.index(docs, stages=["bm25"]), tmp_path / "idx")
    info = json.loads(cli_run("index", "info", str(path)).output)
    assert info["generation"] == "gen-000001" and info["stage_manifests"]["bm25"]["count"] == 12
    man = manifest_of(path)
    man["stages"][0]["path"] = "../../.."
    write_manifest_of(path, man)
    res = cli_run("index", "info", str(path))
    assert res.exit_code == 1 and "points outside" in res.output and "Traceback" not in res.output


def test_a_damaged_current_pointer_is_a_corrupt_index(engine, docs, tmp_path):
    path = engine.save(engine.index(docs, stages=["bm25"]), tmp_path / "idx")
    (path / CURRENT).write_text("../../etc\n")
    with pytest.raises(CorruptIndexError, match="not the name of a generation"):
        engine.load(path)
    (path / CURRENT).write_text("gen-000042\n")
    with pytest.raises(CorruptIndexError, match="gen-000042"):
        engine.load(path)
    # --overwrite may replace it (relevo wrote it); without, it is refused
    with pytest.raises(IndexFormatError, match="--overwrite"):
        engine.save(engine.index(docs, stages=["bm25"]), path)
    engine.save(engine.index(docs[:2], stages=["bm25"]), path, overwrite=True)
    assert len(engine.load(path)) == 2


# -- 7. corpus defects and OS errors -------------------------------------------------------


def test_a_non_utf8_byte_is_reported_with_its_line(tmp_path):
    lines = [
        b'{"_id": "a", "text": "fine"}',
        b'{"_id": "b", "text": "ok"}',
        b'{"_id": "c", "text": "caf\xe9"}',
    ]
    plain = tmp_path / "c.jsonl"
    plain.write_bytes(b"\n".join(lines) + b"\n")
    packed = tmp_path / "c.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    for path in (plain, packed):
        with pytest.raises(
            CorpusError, match=rf"{path.name}:3: byte 0xe9 at column \d+ is not UTF-8"
        ):
            read_corpus(path)


def test_lone_surrogates_and_nul_ids_are_corpus_errors(tmp_path):
    good = '{"_id": "a", "text": "fine \\ud83d\\ude00"}'  # an escaped pair is a real character
    path = tmp_path / "c.jsonl"
    path.write_text(good + "\n", "utf-8")
    assert read_corpus(path)[0][0].text == "fine \U0001f600"
    for line, message in [
        ('{"_id": "b", "text": "broken \\ud800 here"}', "c.jsonl:2: holds a lone UTF-16 surrogate"),
        ('{"_id": "b", "title": "x", "metadata": {"k": "\\udfff"}}', "c.jsonl:2: holds a lone"),
        ('{"_id": "b\\u0000c", "text": "x"}', "c.jsonl:2: \"_id\" 'b\\\\x00c' contains a NUL"),
    ]:
        path.write_text(good + "\n" + line + "\n", "utf-8")
        with pytest.raises(CorpusError) as info:
            read_corpus(path)
        assert message.replace("\\\\", "\\") in str(info.value)


def test_out_under_a_file_is_a_clean_error(cli_run, corpus_file, tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("keep", "utf-8")
    res = cli_run("index", "build", str(corpus_file), "--out", str(blocker / "idx"))
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert str(blocker) in res.output and "is a file" in res.output
    assert blocker.read_text("utf-8") == "keep"


def test_os_error_creating_out_names_path_and_reason(cli_run, corpus_file, tmp_path, monkeypatch):
    out = tmp_path / "ro" / "idx"
    real_mkdir = Path.mkdir

    def denied(self, *args, **kwargs):
        if self == out:
            raise PermissionError(13, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", denied)
    res = cli_run("index", "build", str(corpus_file), "--out", str(out))
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert str(out) in res.output and "Permission denied" in res.output


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores permissions")
def test_a_read_only_parent_is_a_clean_error(cli_run, corpus_file, tmp_path):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        res = cli_run("index", "build", str(corpus_file), "--out", str(parent / "idx"))
    finally:
        parent.chmod(0o755)
    assert res.exit_code == 1 and "not writable" in res.output and str(parent) in res.output


# -- 8. empty documents are documents ------------------------------------------------------


def test_empty_documents_are_indexed_with_one_warning(engine, tmp_path, caplog):
    rows = [
        {"_id": "full", "title": "Cats", "text": "cats purr and sleep"},
        {"_id": "blank"},
        {"_id": "blank2", "title": "", "text": ""},
        {"_id": "other", "text": "dogs bark"},
    ]
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    with caplog.at_level(logging.WARNING, logger="relevo.engine.corpus"):
        docs, _ = read_corpus(path)
    assert [d.id for d in docs] == ["full", "blank", "blank2", "other"]
    warned = [r.getMessage() for r in caplog.records if "neither title nor text" in r.getMessage()]
    assert len(warned) == 1 and "2 document(s)" in warned[0]
    col = engine.index(path, stages=["bm25", "faiss-flat"], embedder="hashing")
    assert len(col) == 4
    for query in ("cats", "dogs bark", "sleep"):
        assert not {"blank", "blank2"} & {h.id for h in col.search(query, k=10, stages=["bm25"])}
    assert len(col.search("cats", k=10, stages=["faiss-flat"])) == 4  # dense sees ""
    loaded = engine.load(engine.save(col, tmp_path / "idx"))
    assert loaded.docstore.by_id("blank") == Document(id="blank", text="", title="")
    # still refused: what is malformed
    path.write_text('{"_id": "a"}\n{"title": "no id"}\nnot json\n', "utf-8")
    with pytest.raises(CorpusError, match='corpus.jsonl:2: missing or empty "_id"'):
        read_corpus(path)
