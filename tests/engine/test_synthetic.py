"""Synthetic queries: round-trip filtering, determinism, resuming, files never half-written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from relevo import ConfigError, DatasetError
from relevo.engine.synthetic import (
    QueryGenConfig,
    SyntheticQuery,
    clean_query,
    dropped_path,
    generate_queries,
    raw_path,
    read_examples,
    read_synthetic_queries,
    report_path,
    round_trip_filter,
)
from relevo.testing import FirstWordsQueryGenerator, tiny_corpus


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        for d in tiny_corpus():
            fh.write(json.dumps({"_id": d.id, "title": d.title, "text": d.text}) + "\n")
    return path


def test_round_trip_keeps_a_query_that_finds_its_source_and_drops_one_that_does_not(engine, corpus):
    good = SyntheticQuery("a", "systems programming language memory safety", "d5")
    bad = SyntheticQuery("b", "systems programming language memory safety", "d10")
    kept, dropped, facts = round_trip_filter(engine, corpus, [good, bad], pipeline="bm25", k=1)
    assert [q.id for q in kept] == ["a"]
    assert [q.id for q in dropped] == ["b"]
    assert good.round_trip_rank == 1 and bad.round_trip_rank is None
    assert facts["pipeline"] == "bm25" and facts["k"] == 1


def test_round_trip_depth_decides(engine, corpus):
    # d12 ("Bond prices fall when interest rates rise") is not BM25's first hit for this
    # query, but it is in the top 3.
    q = SyntheticQuery("a", "central banks interest rates", "d12")
    kept, _, _ = round_trip_filter(engine, corpus, [q], k=1)
    assert kept == []
    kept, _, _ = round_trip_filter(engine, corpus, [q], k=3)
    assert [x.id for x in kept] == ["a"] and 1 < (q.round_trip_rank or 0) <= 3


def _run(engine, corpus, out, **kw):
    gen = kw.pop("generator", None) or FirstWordsQueryGenerator()
    cfg = QueryGenConfig(corpus=corpus, out=out, model="first-words", batch_size=5, **kw)
    return generate_queries(cfg, engine=engine, generator=gen), gen


def test_generation_is_deterministic_with_a_seed(engine, corpus, tmp_path):
    a, _ = _run(engine, corpus, tmp_path / "a.jsonl", seed=3, per_doc=2, filter_pipeline=None)
    b, _ = _run(engine, corpus, tmp_path / "b.jsonl", seed=3, per_doc=2, filter_pipeline=None)
    c, _ = _run(engine, corpus, tmp_path / "c.jsonl", seed=4, per_doc=2, filter_pipeline=None)
    text = [q.text for q in read_synthetic_queries(tmp_path / "a.jsonl")]
    assert text == [q.text for q in read_synthetic_queries(tmp_path / "b.jsonl")]
    assert text != [q.text for q in read_synthetic_queries(tmp_path / "c.jsonl")]
    assert a["generated"] == 2 * len(tiny_corpus())


def test_report_counts_and_the_file_is_beir_queries(engine, corpus, tmp_path):
    out = tmp_path / "q.jsonl"
    report, _ = _run(engine, corpus, out, filter_k=1)
    rows = [json.loads(line) for line in out.read_text("utf-8").splitlines()]
    assert report["kept"] == len(rows) > 0
    assert (
        report["kept"]
        + report["dropped"]["round_trip"]
        + report["dropped"]["duplicate"]
        + (report["dropped"]["empty"])
        == report["generated"]
    )
    assert all({"_id", "text", "source_id", "round_trip_rank"} <= set(r) for r in rows)
    assert all(r["round_trip_rank"] == 1 for r in rows)  # k=1
    saved = json.loads(report_path(out).read_text("utf-8"))
    assert saved["kept"] == report["kept"] and saved["sample_kept"]
    # the round trip's drops are kept beside, with their sources and no rank
    lost = read_synthetic_queries(dropped_path(out))
    assert report["dropped_file"] == str(dropped_path(out))
    assert len(lost) == report["dropped"]["round_trip"] > 0
    assert all(q.round_trip_rank is None and q.source_id for q in lost)
    assert not {q.text for q in lost} & {r["text"] for r in rows}


def test_an_interrupted_run_resumes_and_matches_an_uninterrupted_one(engine, corpus, tmp_path):
    class Crashing(FirstWordsQueryGenerator):
        def generate(self, docs, seed):
            if self.calls == 1:
                raise KeyboardInterrupt
            return super().generate(docs, seed)

    out = tmp_path / "q.jsonl"
    with pytest.raises(KeyboardInterrupt):
        _run(engine, corpus, out, generator=Crashing())
    assert not out.exists()  # nothing final written
    assert len(raw_path(out).read_text("utf-8").splitlines()) == 2  # settings + batch 0
    gen = FirstWordsQueryGenerator()
    report, _ = _run(engine, corpus, out, generator=gen)
    assert gen.calls == 2  # 12 documents in batches of 5: only batches 1 and 2 ran
    assert report["documents_resumed"] == 5
    whole, _ = _run(engine, corpus, tmp_path / "whole.jsonl")
    assert out.read_text("utf-8") == (tmp_path / "whole.jsonl").read_text("utf-8")
    assert whole["kept"] == report["kept"]


def test_existing_output_is_not_replaced_without_overwrite(engine, corpus, tmp_path):
    out = tmp_path / "q.jsonl"
    out.write_text("mine\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="--overwrite"):
        _run(engine, corpus, out)
    assert out.read_text("utf-8") == "mine\n"


def test_a_rerun_that_reuses_every_batch_keeps_the_measured_speed(engine, corpus, tmp_path):
    out = tmp_path / "q.jsonl"
    first, _ = _run(engine, corpus, out)
    assert first["docs_per_second"] > 0 and "docs_per_second_earlier" not in first
    again, gen = _run(engine, corpus, out, overwrite=True)  # refilter only
    assert gen.calls == 0 and again["docs_per_second"] is None
    assert again["docs_per_second_earlier"] == first["docs_per_second"]
    other, _ = _run(engine, corpus, out, overwrite=True, seed=9)  # new settings: generated
    assert other["docs_per_second"] > 0 and "docs_per_second_earlier" not in other


def test_sample_and_short_documents(engine, tmp_path):
    path = tmp_path / "c.jsonl"
    rows = [{"_id": "empty", "text": ""}, {"_id": "short", "text": "two words"}]
    rows += [
        {"_id": f"é{i}", "text": f"document number {i} about topic {i} here"} for i in range(9)
    ]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", "utf-8")
    report, _ = _run(engine, path, tmp_path / "q.jsonl", sample=4, filter_pipeline=None)
    assert report["documents_too_short"] == 2 and report["documents_used"] == 4
    sources = {q.source_id for q in read_synthetic_queries(tmp_path / "q.jsonl")}
    assert len(sources) == 4 and all(s.startswith("é") for s in sources)


def test_bad_inputs_are_clear_errors(engine, corpus, tmp_path):
    with pytest.raises(ConfigError, match=".jsonl"):
        QueryGenConfig(corpus=corpus, out=tmp_path / "q.txt").validate()
    bad = tmp_path / "ex.jsonl"
    bad.write_text('{"query": "x"}\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="document"):
        read_examples(bad)
    bad.write_text(
        "".join(json.dumps({"query": "q", "document": "d"}) + "\n" for _ in range(9)), "utf-8"
    )
    with pytest.raises(ConfigError, match="at most 8"):
        read_examples(bad)
    plain = tmp_path / "plain.jsonl"
    plain.write_text('{"_id": "1", "text": "a query"}\n', encoding="utf-8")
    with pytest.raises(DatasetError, match="source_id"):
        read_synthetic_queries(plain)
    with pytest.raises(Exception, match="query_generator|query generator"):
        generate_queries(
            QueryGenConfig(corpus=corpus, out=tmp_path / "x.jsonl", model="no-such-generator"),
            engine=engine,
        )


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ('  "what is rust?"\nmore text', "what is rust?"),
        ("Query: cats that purr", "cats that purr"),
        ("search query:   dogs   and wolves ", "dogs and wolves"),
        ("", ""),
    ],
)
def test_clean_query(raw, clean):
    assert clean_query(raw) == clean


def _cli():
    import click

    from relevo.engine.commands import CommandHelpers, RelevoGroup
    from relevo.plugins import adapt as plugin

    @click.group(cls=RelevoGroup)
    def root() -> None:
        pass

    plugin.register_commands(root, CommandHelpers())
    return root


def test_generate_queries_command(engine, corpus, tmp_path):
    from click.testing import CliRunner

    out = tmp_path / "q.jsonl"
    args = ["generate-queries", str(corpus), "--out", str(out), "--model", "first-words"]
    result = CliRunner().invoke(_cli(), [*args, "--json"], obj={"engine": engine})
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["kept"] == len(read_synthetic_queries(out)) > 0
    again = CliRunner().invoke(_cli(), args, obj={"engine": engine})
    assert again.exit_code == 1 and "--overwrite" in again.output
    assert "Traceback" not in again.output
    plain = CliRunner().invoke(_cli(), [*args, "--overwrite"], obj={"engine": engine})
    assert plain.exit_code == 0 and "kept" in plain.output
