"""The write-ahead journal: commits append and fsync, loads replay, crashes lose nothing acknowledged."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from relevo import CorruptIndexError, Document, IndexBusyError
from relevo.engine import journal, writes
from relevo.engine.generations import current_generation


def docs_batch(start, n, word="zebra"):
    return [
        Document(id=f"j{i}", title=f"T{i}", text=f"{word} number {i} grazes", metadata={"i": i})
        for i in range(start, start + n)
    ]


def searched(col, q="zebra grazes cats", k=30):
    return [(h.id, round(h.score, 5)) for h in col.search(q, k)]


@pytest.fixture
def saved(engine, docs, tmp_path):
    col = engine.index(docs, stages=["bm25", "faiss-flat", "torch-flat"], embedder="hashing")
    path = engine.save(col, tmp_path / "idx")
    return engine, col, path


def test_commit_journals_and_load_replays(saved):
    engine, col, path = saved
    gen = current_generation(path)
    col.add(docs_batch(0, 5))
    col.delete(["d1", "j2"])
    col.update([Document(id="j3", text="zebra replaced text", metadata={"i": 33})])
    col.commit()
    assert current_generation(path) == gen  # no snapshot: the journal took the writes
    recs = journal.read(path / gen)
    assert [r["op"] for _, r in recs] == ["upsert", "delete", "upsert"]
    loaded = engine.load(path)
    assert len(loaded) == len(col)
    assert loaded.docstore.by_id("j3").metadata == {"i": 33}
    assert loaded.docstore.by_id("d1") is None and loaded.docstore.by_id("j2") is None
    for stage in ("bm25", "faiss-flat", "torch-flat"):  # journaled vectors: identical scores
        a = [(h.id, h.score) for h in col.search("zebra grazes", 10, stages=[stage])]
        b = [(h.id, h.score) for h in loaded.search("zebra grazes", 10, stages=[stage])]
        assert a == b
    assert not loaded.dirty and loaded.commit() == path  # nothing pending: no-op


def test_torn_tail_is_dropped_and_cut_before_the_next_append(saved):
    engine, col, path = saved
    col.add(docs_batch(0, 2))
    col.commit()
    jfile = path / current_generation(path) / journal.JOURNAL
    with open(jfile, "ab") as fh:  # a crash in the middle of the next write
        fh.write(b'{"n":2,"sum":"abc","rec":{"op":"del')
    loaded = engine.load(path)
    assert loaded.docstore.by_id("j1") is not None and len(loaded) == len(col)
    loaded.add(docs_batch(10, 1))
    loaded.commit()
    again = engine.load(path)
    assert again.docstore.by_id("j10") is not None
    assert [n for n, _ in journal.read(jfile.parent)] == [1, 2]


def test_a_damaged_line_before_the_last_is_refused(saved):
    engine, col, path = saved
    for i in range(3):
        col.add(docs_batch(i * 10, 1))
        col.commit()
    jfile = path / current_generation(path) / journal.JOURNAL
    lines = jfile.read_bytes().split(b"\n")
    lines[0] = lines[0].replace(b"zebra", b"zebru")  # checksum no longer matches
    jfile.write_bytes(b"\n".join(lines))
    with pytest.raises(CorruptIndexError, match="line 1 is damaged"):
        engine.load(path)


def test_a_writer_that_lost_the_directory_is_refused(saved):
    engine, col, path = saved
    other = engine.load(path)
    other.add(docs_batch(0, 1))
    other.snapshot()  # a new generation: col's journal target is gone
    col.add(docs_batch(5, 1))
    with pytest.raises(IndexBusyError, match="written by another writer"):
        col.commit()
    assert col.dirty  # not acknowledged, still pending
    assert engine.load(path).docstore.by_id("j5") is None


def test_a_large_journal_is_compacted_into_a_snapshot(saved, monkeypatch):
    engine, col, path = saved
    col.add(docs_batch(0, 1))
    col.commit()
    gen = current_generation(path)
    monkeypatch.setattr(writes, "SNAPSHOT_BYTES", 0)
    col.add(docs_batch(1, 1))
    col.commit()
    new = current_generation(path)
    assert new != gen and journal.journal_size(path / new) == 0
    assert engine.load(path).docstore.by_id("j1") is not None


def test_kill_9_loses_no_acknowledged_write(engine, docs, tmp_path):
    """A child commits one batch per line it prints; SIGKILL it mid-stream, then check."""
    col = engine.index(docs, stages=["bm25"])
    path = engine.save(col, tmp_path / "idx")
    script = textwrap.dedent(
        f"""
        import sys
        from relevo import Document, Engine
        col = Engine(load_entrypoints=False).load({str(path)!r})
        for b in range(10_000):
            col.add([Document(id=f"b{{b}}-{{i}}", text=f"word{{b}} x") for i in range(3)])
            col.commit()
            print(b, flush=True)
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, env=env, text=True
    )
    acked = []
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while len(acked) < 15 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        acked.append(int(line))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(acked) >= 15, "the child did not get going"
    loaded = engine.load(path)
    for b in acked:
        assert all(loaded.docstore.by_id(f"b{b}-{i}") is not None for i in range(3))
    # the batch in flight (if any) is whole or absent
    nxt = max(acked) + 1
    present = [loaded.docstore.by_id(f"b{nxt}-{i}") is not None for i in range(3)]
    assert all(present) or not any(present)
    assert len(loaded) == len(docs) + 3 * (len(acked) + all(present))
    assert np.array_equal(loaded.stages["bm25"].index.deleted_mask(), ~loaded.docstore.live_mask())
