"""Corpus, queries and qrels readers: good input parses, bad input names file and line."""

from __future__ import annotations

import gzip
import json

import pytest

from relevo import CorpusError, DatasetError
from relevo.engine.corpus import (
    corpus_checksum,
    read_corpus,
    read_qrels,
    read_queries,
    read_trec_run,
)


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n", "utf-8")
    return path


def test_reads_gz_and_folder_and_checksum_matches(tmp_path, docs, corpus_file):
    gz = tmp_path / "folder" / "corpus.jsonl.gz"
    gz.parent.mkdir()
    gz.write_bytes(gzip.compress(corpus_file.read_bytes()))
    plain, c1 = read_corpus(corpus_file)
    packed, c2 = read_corpus(gz.parent)
    assert [d.id for d in plain] == [d.id for d in docs] == [d.id for d in packed]
    assert c1 == c2 == corpus_checksum(docs)
    assert plain[0].metadata == {"topic": "d1"}
    assert read_corpus(corpus_file, limit=3)[0][-1].id == "d3"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"_id": "x", "text": "ok"', "not valid JSON"),
        ('["a list"]', "expected a JSON object"),
        ('{"text": "no id"}', 'missing or empty "_id"'),
        ('{"_id": "x", "text": 5}', "must be strings"),
        ('{"_id": "d1", "text": "dup"}', "duplicate document id 'd1' (first seen on line 1)"),
    ],
)
def test_malformed_line_reports_its_number(tmp_path, line, message):
    path = write_lines(tmp_path / "c.jsonl", ['{"_id": "d1", "text": "fine"}', "", line])
    with pytest.raises(CorpusError) as info:
        read_corpus(path)
    assert "c.jsonl:3:" in str(info.value)
    assert message in str(info.value)


def test_missing_and_empty_corpus(tmp_path):
    with pytest.raises(CorpusError, match="does not exist"):
        read_corpus(tmp_path / "nope.jsonl")
    with pytest.raises(CorpusError, match="no corpus.jsonl"):
        read_corpus(tmp_path)
    with pytest.raises(CorpusError, match="contains no documents"):
        read_corpus(write_lines(tmp_path / "e.jsonl", [""]))


def test_queries_qrels_and_runs(tmp_path):
    q = write_lines(tmp_path / "queries.jsonl", [json.dumps({"_id": 1, "text": "hello"})])
    assert read_queries(q) == {"1": "hello"}
    qrels = write_lines(
        tmp_path / "test.tsv", ["query-id\tcorpus-id\tscore", "1\td1\t2", "1\td2\t0"]
    )
    assert read_qrels(qrels) == {"1": {"d1": 2, "d2": 0}}
    bad = write_lines(tmp_path / "bad.tsv", ["1\td1"])
    with pytest.raises(DatasetError, match="bad.tsv:1: expected 3"):
        read_qrels(bad)
    with pytest.raises(DatasetError, match="Available splits: bad, test"):
        read_qrels(tmp_path / "dev.tsv")
    run = write_lines(tmp_path / "run.trec", ["1 Q0 d2 2 1.5 x", "1 Q0 d1 1 2.5 x"])
    assert read_trec_run(run) == {"1": [("d1", 2.5), ("d2", 1.5)]}
