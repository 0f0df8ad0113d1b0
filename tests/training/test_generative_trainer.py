"""Generative-retrieval training (relevo train generative) on a tiny random Llama built here.

The examples must name documents exactly as the docid-trie index does, the loss must
see the identifier tokens only, resume must be bit-for-bit, the output must load as the
index's model, and a short run must teach the identifiers.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from relevo import ConfigError, DatasetError, Engine
from relevo.testing import (
    FakePlugin,
    tiny_causal_lm,
    tiny_corpus,
    tiny_train_queries,
    write_beir_dataset,
)

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from relevo.training import GENERATIVE_REPORT_FILE as REPORT_FILE  # noqa: E402
from relevo.training import GenerativeConfig, train_generative  # noqa: E402
from relevo.training import generative as trainer  # noqa: E402

TRAIN_QUERIES = tiny_train_queries()
HAS_PEFT = importlib.util.find_spec("peft") is not None


@pytest.fixture(autouse=True)
def one_thread():
    """A 32-wide model runs fastest on one thread (several fight each other on a busy CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def lm(tmp_path_factory) -> Path:
    texts = [f"{d.title} {d.text}" for d in tiny_corpus()] * 3 + ["Query: Title:"] * 3
    return tiny_causal_lm(tmp_path_factory.mktemp("lm") / "lm", texts, vocab_size=400)


@pytest.fixture(scope="module")
def train_set(tmp_path_factory) -> Path:
    queries = {qid: text for qid, (text, _) in TRAIN_QUERIES.items()}
    qrels = {qid: dict.fromkeys(pos, 1) for qid, (_, pos) in TRAIN_QUERIES.items()}
    root = tmp_path_factory.mktemp("data") / "tinyset"
    return write_beir_dataset(root, tiny_corpus(), queries, qrels, split="train")


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(plugins=[FakePlugin()], load_entrypoints=False)


def config(train_set: Path, lm: Path, out: Path, **kw) -> GenerativeConfig:
    opts = dict(
        base=str(lm),
        max_steps=2,
        batch_size=4,
        lr=1e-2,
        warmup_ratio=0.0,
        checkpoint_every=1,
        device="cpu",
        seed=7,
    )
    opts.update(kw)
    return GenerativeConfig(dataset=str(train_set), out=str(out), **opts)


def weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def build(engine: Engine, model: Path, **opts):
    options = {"docid-trie": {"model": str(model), "device": "cpu", "beams": 4, **opts}}
    return engine.index(tiny_corpus(), stages=["docid-trie"], index_options=options)


def test_two_steps_change_the_weights_and_the_folder_is_the_index_model(
    train_set, lm, engine, tmp_path
):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "model"
    steps = []
    result = train_generative(config(train_set, lm, out), on_step=steps.append)
    assert [s.step for s in steps] == [1, 2] and result.steps == 2
    before, after = weights(lm), weights(out)
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert not (out / "checkpoint").exists()
    report = json.loads((out / REPORT_FILE).read_text())
    assert report["examples"] == {"indexing": 12, "first-sentence": 12, "span": 12, "query": 10}
    assert report["docid"] == "title" and report["recipe"]["tuning"] == "full"
    assert report["dataset"]["corpus_checksum"] == report["corpus_checksum"]
    assert report["use"].startswith(f"--pipeline generative:{out}")
    assert len(report["loss_curve"]) == 1 and report["first_loss"] > 0

    model = AutoModelForCausalLM.from_pretrained(str(out))
    assert model.config.model_type == "llama"
    col = build(engine, out)
    hits = col.search("a kitten purrs", 3)
    ids = {d.id for d in tiny_corpus()}
    assert hits and all(h.id in ids for h in hits)


class Interrupted(Exception):
    pass


def test_resume_continues_bit_for_bit(train_set, lm, tmp_path):
    full = train_generative(config(train_set, lm, tmp_path / "full"))

    def crash_after_1(info):
        if info.step == 1:
            raise Interrupted

    out = tmp_path / "resumed"
    with pytest.raises(Interrupted):
        train_generative(config(train_set, lm, out), on_step=crash_after_1)
    state = json.loads((out / "checkpoint" / "trainer_state.json").read_text())
    assert state["step"] == 1 and state["kind"] == "generative"
    assert not (out / REPORT_FILE).exists()

    with pytest.raises(ConfigError, match="--resume"):  # refuses to silently start over
        train_generative(config(train_set, lm, out))
    with pytest.raises(ConfigError, match="lr"):  # settings must match the checkpoint
        train_generative(config(train_set, lm, out, lr=1e-3), resume=True)
    with pytest.raises(ConfigError, match="docid"):
        train_generative(config(train_set, lm, out, docid="prefix"), resume=True)

    steps = []
    resumed = train_generative(config(train_set, lm, out), resume=True, on_step=steps.append)
    assert [s.step for s in steps] == [2] and steps[0].start == 1
    assert resumed.report["resumed_from_step"] == 1
    assert resumed.losses == full.losses
    a, b = weights(tmp_path / "full"), weights(out)
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], rtol=0, atol=0) for k in a)


@pytest.mark.parametrize(
    "opts",
    [
        {},
        {"docid": "prefix", "max_words": 3},
        {"docid": "semantic", "branching": 3, "leaf": 4},
    ],
    ids=["title", "prefix", "semantic"],
)
def test_examples_carry_the_identifiers_the_index_assigns(train_set, lm, engine, tmp_path, opts):
    cfg = config(train_set, lm, tmp_path / "x", semantic_device="cpu", **opts)
    data = trainer.load_examples(cfg)
    index = build(engine, lm, **opts).stages["docid-trie"].index
    assert data.ids == index.ids
    assert cfg.index_options() == opts  # what the report tells the user to pass
    docs = tiny_corpus()
    by_kind: dict[str, list] = {}
    for ex in data.examples:
        assert ex.identifier == index.ids[ex.row]
        by_kind.setdefault(ex.kind, []).append(ex)
    assert sorted(by_kind) == sorted(trainer.KINDS)
    assert [e.row for e in by_kind["indexing"]] == list(range(len(docs)))
    assert all(e.text == docs[e.row].text for e in by_kind["indexing"])  # short texts: whole
    assert all(e.text == docs[e.row].text for e in by_kind["first-sentence"])  # one sentence
    rows = {d.id: i for i, d in enumerate(docs)}
    assert [(e.text, e.row) for e in by_kind["query"]] == [
        (text, rows[pos[0]]) for text, pos in TRAIN_QUERIES.values()
    ]
    # spans: 8-32 consecutive words of the text, drawn afresh per epoch, reproducibly
    i = next(j for j, e in enumerate(data.examples) if e.kind == "span")
    text = data.examples[i].text
    spans = [data.query(i, epoch, cfg.seed) for epoch in range(6)]
    assert all(s in text and min(8, len(text.split())) <= len(s.split()) <= 32 for s in spans)
    assert spans == [data.query(i, epoch, cfg.seed) for epoch in range(6)]


def test_pseudo_queries_of_long_documents():
    import numpy as np

    from relevo.training.generative import first_sentence, random_span

    text = "One two three. " + " ".join(f"w{i}" for i in range(100))
    assert first_sentence(text) == "One two three."
    assert len(first_sentence(" ".join(f"w{i}" for i in range(100))).split()) == 64
    rng = np.random.default_rng(0)
    lengths = {len(random_span(text.split(), rng).split()) for _ in range(200)}
    assert min(lengths) == 8 and max(lengths) == 32


def test_only_the_identifier_tokens_are_labelled(train_set, lm, engine, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from relevo.decoding import suffix_tokens
    from relevo.indexes.docids import ANCHOR, DEFAULT_PROMPT, identifier_tokens

    tok = AutoTokenizer.from_pretrained(str(lm))
    eos = tok.eos_token_id
    index = build(engine, lm).stages["docid-trie"].index
    for ident in index.ids + ["Lions #2", "3-1-27"]:  # the rule decoding uses, to the token
        assert identifier_tokens(tok, ident, eos) == [*suffix_tokens(tok, ANCHOR, " " + ident), eos]
    examples = [("a kitten purrs", "Kittens"), ("bond prices", "Bonds"), ("x", "Interest rates")]
    pairs = [trainer.encode_example(tok, DEFAULT_PROMPT, q, i, eos, 128) for q, i in examples]
    for (query, ident), (prompt, target) in zip(examples, pairs, strict=True):
        # the prompt as the index feeds it; the target is the trie's sequence for the document
        assert (
            prompt == tok(DEFAULT_PROMPT.format(query=query), add_special_tokens=False)["input_ids"]
        )
        assert target == index._tokens(ident) and target[-1] == eos
    batch = trainer.collate(torch, pairs, tok.pad_token_id)
    assert len({len(p) + len(t) for p, t in pairs}) > 1  # right padding really happens
    for row, (prompt, target) in enumerate(pairs):
        labels = batch["labels"][row].tolist()
        labelled = [j for j, v in enumerate(labels) if v != -100]
        assert labelled == list(range(len(prompt), len(prompt) + len(target)))
        assert [labels[j] for j in labelled] == target
        assert batch["attention_mask"][row].sum() == len(prompt) + len(target)
    model = AutoModelForCausalLM.from_pretrained(str(lm))
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        ours = trainer.target_loss(torch, model(**inputs).logits, batch["labels"])
        theirs = model(**inputs, labels=batch["labels"]).loss
    assert torch.allclose(ours, theirs, atol=1e-5)  # Hugging Face's shifted, masked loss
    # a long pseudo-query loses words; the identifier never does
    long_query = " ".join(["kittens purr"] * 60)
    prompt, target = trainer.encode_example(tok, DEFAULT_PROMPT, long_query, "Kittens", eos, 32)
    assert len(prompt) + len(target) <= 32 and target == index._tokens("Kittens")
    assert tok.decode(prompt).endswith(ANCHOR) and tok.decode(prompt).startswith("Query: kittens")


def test_a_short_run_teaches_the_identifiers(train_set, lm, engine, tmp_path):
    """The test that fails when training is broken: document text -> its identifier."""
    docs = tiny_corpus()

    def top1_correct(model: Path) -> int:
        col = build(engine, model)
        return sum(h[0].id == d.id for d in docs if (h := col.search(d.text, 1)))

    before = top1_correct(lm)
    out = tmp_path / "taught"
    # measured: 100-120 steps at lr 1e-2 reach 12/12 from 1/12 on four seeds (~3 s)
    result = train_generative(
        config(train_set, lm, out, max_steps=120, batch_size=8, checkpoint_every=0)
    )
    after = top1_correct(out)
    assert result.report["final_loss"] < result.report["first_loss"] / 4
    assert after >= before + 6, (before, after)


def test_output_folder_guards_and_bad_settings(train_set, lm, tmp_path):
    out = tmp_path / "done"
    train_generative(config(train_set, lm, out, max_steps=1))
    with pytest.raises(ConfigError, match="--overwrite"):
        train_generative(config(train_set, lm, out, max_steps=1))
    train_generative(config(train_set, lm, out, max_steps=1), overwrite=True)
    other = tmp_path / "not-a-model"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not a relevo generative training folder"):
        train_generative(config(train_set, lm, other), overwrite=True)
    assert (other / "notes.txt").read_text() == "keep me"
    with pytest.raises(ConfigError, match="nothing to resume"):
        train_generative(config(train_set, lm, tmp_path / "fresh"), resume=True)
    for kw, message in [
        ({"docid": "isbn"}, "docid must be one of title, prefix, semantic"),
        ({"prompt": "{query} ->"}, "end with"),
        ({"max_length": 8}, "max_length"),
        ({"batch_size": 0}, "batch_size"),
        ({"device": "gpu"}, "device"),
    ]:
        with pytest.raises(ConfigError, match=message):
            train_generative(config(train_set, lm, tmp_path / "bad", **kw))
    assert not (tmp_path / "bad").exists()
    with pytest.raises(DatasetError, match="cannot fill one batch"):
        train_generative(config(train_set, lm, tmp_path / "big", batch_size=1000))


def test_an_empty_corpus_or_missing_dataset_is_refused(lm, tmp_path):
    empty = write_beir_dataset(tmp_path / "empty", [], {}, {}, split="train")
    with pytest.raises(DatasetError, match="no documents"):
        train_generative(
            GenerativeConfig(dataset=str(empty), out=str(tmp_path / "o"), base=str(lm))
        )
    with pytest.raises(DatasetError, match="not a folder"):
        train_generative(
            GenerativeConfig(dataset=str(tmp_path / "nope"), out=str(tmp_path / "o"), base=str(lm))
        )


def test_a_corpus_without_queries_trains_on_documents_alone(lm, tmp_path):
    root = write_beir_dataset(tmp_path / "corpus-only", tiny_corpus(), {}, {}, split="test")
    data = trainer.load_examples(GenerativeConfig(dataset=str(root), out="", base=str(lm)))
    assert data.counts() == {"indexing": 12, "first-sentence": 12, "span": 12, "query": 0}


@pytest.mark.skipif(HAS_PEFT, reason="peft is installed")
def test_lora_without_peft_says_how_to_install_it(train_set, lm, tmp_path):
    from relevo.engine.errors import MissingDependencyError

    with pytest.raises(MissingDependencyError, match="peft"):
        train_generative(config(train_set, lm, tmp_path / "lora", lora=True))
    assert not (tmp_path / "lora").exists()


@pytest.mark.skipif(not HAS_PEFT, reason="needs peft")
def test_lora_adapters_are_merged_into_a_plain_model(train_set, lm, engine, tmp_path):
    out = tmp_path / "lora"
    result = train_generative(config(train_set, lm, out, lora=True, lora_rank=4))
    assert result.report["recipe"]["tuning"].startswith("lora")
    assert not (out / "adapter_config.json").exists()
    before, after = weights(lm), weights(out)
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert build(engine, out).search("cats", 2)


def test_train_generative_command(train_set, lm, tmp_path):
    import click

    from relevo.engine.commands import CommandHelpers, RelevoGroup
    from relevo.plugins import generative as plugin

    @click.group(cls=RelevoGroup)
    def root() -> None:
        pass

    plugin.register_commands(root, CommandHelpers())
    out = tmp_path / "cli-model"
    args = ["train", "generative", str(train_set), "--out", str(out), "--base", str(lm)]
    args += ["--max-steps", "2", "--batch-size", "4", "--device", "cpu", "--docid", "prefix"]
    result = CliRunner().invoke(root, args)
    assert result.exit_code == 0, result.output
    assert "trained 2 steps" in result.output
    assert f"docid-trie.model={out} --option docid-trie.docid=prefix" in result.output
    assert json.loads((out / REPORT_FILE).read_text())["docid"] == "prefix"
    # the index reads the trained docid option from the folder; an explicit one wins
    from relevo import Engine

    engine = Engine(load_entrypoints=False)
    assert build(engine, out).stages["docid-trie"].index.docid == "prefix"
    assert build(engine, out, docid="title").stages["docid-trie"].index.docid == "title"
    again = CliRunner().invoke(root, args)
    assert again.exit_code == 1 and "--overwrite" in again.output
    assert "Traceback" not in again.output
    bad = CliRunner().invoke(root, [*args, "--docid", "isbn"])
    assert bad.exit_code == 2


def test_module_imports_without_torch():
    import subprocess
    import sys

    code = (
        "import sys, relevo.training.generative, relevo.indexes.docids, relevo.plugins.generative; "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_an_index_takes_the_semantic_identifiers_the_model_learned(
    train_set, lm, engine, tmp_path, monkeypatch, caplog
):
    """Re-clustering elsewhere (other embeddings, other k-means) must not rename documents."""
    from relevo import Document
    from relevo.indexes import docids

    out = tmp_path / "sem"
    opts = {"docid": "semantic", "branching": 3, "leaf": 4}
    train_generative(config(train_set, lm, out, semantic_device="cpu", **opts))
    saved = json.loads((out / docids.ASSIGNMENT_DIR / "docids.json").read_text())
    corpus = json.loads((out / docids.ASSIGNMENT_DIR / "corpus.json").read_text())
    assert corpus["doc_ids"] == [d.id for d in tiny_corpus()] and len(saved) == len(tiny_corpus())

    # the index's own clustering now gives other identifiers (as another machine might)
    real = docids.DocidAssigner._cluster
    monkeypatch.setattr(
        docids.DocidAssigner, "_cluster", lambda self, vecs: real(self, vecs[::-1].copy())
    )
    index = build(engine, out).stages["docid-trie"].index
    assert index.ids == saved
    assert set(index.centroids) == set(
        docids.DocidAssigner.read_state(out / docids.ASSIGNMENT_DIR)[1]
    )
    # a document added later descends the restored centroid tree
    col = build(engine, out)
    col.add([Document("new", "Kittens purr and sleep", title="Kitten naps")])
    assert col.stages["docid-trie"].index.ids[-1] not in saved
    # other documents: clustered here, with a warning that names the mismatch
    other = engine.index(
        tiny_corpus()[:6],
        stages=["docid-trie"],
        index_options={"docid-trie": {"model": str(out), "device": "cpu", "beams": 4}},
    )
    assert len(other.stages["docid-trie"].index.ids) == 6
    assert "trained on other documents" in caplog.text
