"""The mixture-of-experts embedder on a tiny BERT: conversion, enforced routing, router, disk."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from relevo import ConfigError, Document, Engine, RequestError
from relevo.testing import (
    FakePlugin,
    tiny_corpus,
    tiny_sentence_transformer,
    tiny_train_queries,
    write_beir_dataset,
)

torch = pytest.importorskip("torch")
pytest.importorskip("sentence_transformers")

from relevo.models import moe as M  # noqa: E402
from relevo.plugins.moe import MoEEmbedder  # noqa: E402
from relevo.training import EmbedderConfig, train_embedder  # noqa: E402
from relevo.training.cocitation import (  # noqa: E402
    cocited_groups,
    cocited_pairs,
    partners,
    random_pairs,
)
from relevo.training.embedder import MoESpec  # noqa: E402

QUERIES = tiny_train_queries()
TEXTS = [d.content for d in tiny_corpus()]
DOMAIN_A = ["q1", "q2", "q3", "q4", "q5", "q6"]  # animals, programming
DOMAIN_B = ["q7", "q8", "q9", "q10"]  # plants, economy


@pytest.fixture(scope="module")
def tiny_st(tmp_path_factory) -> Path:
    """A tiny BERT wrapped as a sentence-transformers model with mean pooling."""
    return tiny_sentence_transformer(
        tmp_path_factory.mktemp("st") / "tiny-st", TEXTS + [q for q, _ in QUERIES.values()]
    )


def dataset(root: Path, qids: list[str]) -> Path:
    queries = {q: QUERIES[q][0] for q in qids}
    qrels = {q: dict.fromkeys(QUERIES[q][1], 1) for q in qids}
    return write_beir_dataset(root, tiny_corpus(), queries, qrels, split="train")


@pytest.fixture(scope="module")
def domains(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("domains")
    return dataset(root / "alpha", DOMAIN_A), dataset(root / "beta", DOMAIN_B)


@pytest.fixture(scope="module")
def hermetic() -> Engine:
    return Engine(plugins=[FakePlugin()], load_entrypoints=False)


def load_st(path: Path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path), device="cpu")


def perturb(moe: M.MoEModel, expert: int, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in moe.expert_parameters(expert):
            p.add_(0.5 * torch.randn(p.shape, generator=g))


def test_a_converted_model_embeds_exactly_like_the_original(tiny_st):
    original = load_st(tiny_st).eval()
    want = original.encode(TEXTS, convert_to_numpy=True, normalize_embeddings=True)
    for layers in ("all", "last", [0]):
        moe = M.convert(load_st(tiny_st).eval(), ["a", "b", "c"], layers)
        for e in range(3):
            assert np.array_equal(moe.encode(TEXTS, e), want)
    with pytest.raises(ConfigError, match="layers 0..1"):
        M.convert(load_st(tiny_st), ["a", "b"], "7")
    with pytest.raises(ConfigError, match="unique"):
        M.convert(load_st(tiny_st), ["a", "a"])
    with pytest.raises(ConfigError, match="without a routing"):
        M.convert(load_st(tiny_st), ["a", "b"]).model.encode(["x"])


def test_a_domains_batch_updates_only_its_own_expert(tiny_st):
    moe = M.convert(load_st(tiny_st).train(), ["a", "b"], "all")
    feats = moe.model.preprocess(["cats purr", "dogs bark"])
    with moe.routing("b"):
        moe.model(feats)["sentence_embedding"].pow(2).sum().backward()
    assert all(p.grad is None or not p.grad.any() for p in moe.expert_parameters(0))
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in moe.expert_parameters(1))


def test_routing_by_tag_sends_each_text_to_its_expert_and_row_routing_agrees(tiny_st):
    moe = M.convert(load_st(tiny_st).eval(), ["a", "b"], "all")
    perturb(moe, 1)
    a, b = moe.encode(TEXTS, 0), moe.encode(TEXTS, 1)
    assert not np.allclose(a, b, atol=1e-3)  # the experts now differ
    tags = [0, 1] * (len(TEXTS) // 2)
    mixed = moe.encode(TEXTS, tags)
    for i, e in enumerate(tags):
        assert np.allclose(mixed[i], (a, b)[e][i], atol=1e-6)
    # per-row routing inside one forward pass gives the same vectors
    feats = moe.model.preprocess(TEXTS)
    with torch.no_grad(), moe.routing(torch.tensor(tags)):
        rows = moe.model(feats)["sentence_embedding"]
    rows = torch.nn.functional.normalize(rows, dim=-1).numpy()
    assert np.allclose(rows, mixed, atol=1e-5)


def test_the_router_decides_when_no_domain_is_given_and_save_load_round_trips(
    tiny_st, tmp_path, hermetic
):
    moe = M.convert(load_st(tiny_st).eval(), ["animals", "plants"], "last")
    perturb(moe, 1, seed=3)
    animals = ["cats purr", "a kitten is a small cat", "dogs descended from wolves"] * 4
    plants = ["plants absorb sunlight", "roots absorb water from the soil", "chlorophyll"] * 4
    report = moe.fit_router(animals + plants, [0] * 12 + [1] * 12)
    assert report["train_accuracy"] == 1.0
    assert list(moe.route(["a kitten and a cat", "plant roots and water"])) == [0, 1]
    moe.save(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / M.CONFIG_FILE).read_text())
    assert cfg["domains"] == ["animals", "plants"] and cfg["layers"] == [1]
    assert not list(tmp_path.glob("m/*.bin")) and not list(tmp_path.glob("m/*.pkl"))  # no pickle
    emb = hermetic.embedder(f"moe:{tmp_path / 'm'}", device="cpu")
    assert isinstance(emb, MoEEmbedder) and emb.domains == ["animals", "plants"]
    texts = ["a kitten and a cat", "plant roots and water"]
    routed = emb.embed(texts)  # no domain: the router picks expert 0, then 1
    assert np.allclose(routed[0], moe.encode(texts, 0)[0], atol=1e-6)
    assert np.allclose(routed[1], moe.encode(texts, 1)[1], atol=1e-6)
    assert emb.routed[("animals", "router")] == 1 and emb.routed[("plants", "router")] == 1
    tagged = emb.embed(texts, domains=["plants", None])  # a tag wins over the router
    assert np.allclose(tagged[0], moe.encode(texts, 1)[0], atol=1e-6)
    # save -> load: identical vectors, through every expert
    again = M.load(tmp_path / "m")
    for e in (0, 1):
        assert np.array_equal(again.encode(TEXTS, e), moe.encode(TEXTS, e))
    with pytest.raises(RequestError, match="experts for animals, plants"):
        emb.embed(texts, domains=["rocks", None])
    with pytest.raises(ConfigError, match="experts for animals, plants"):
        hermetic.embedder(f"moe:{tmp_path / 'm'}", domain="rocks")
    with pytest.raises(ConfigError, match="relevo train moe"):
        hermetic.embedder(f"moe:{tmp_path / 'nowhere'}")


def test_a_damaged_experts_file_is_refused(tiny_st, tmp_path):
    moe = M.convert(load_st(tiny_st), ["a", "b"], "all")
    moe.save(tmp_path / "m")
    (tmp_path / "m" / M.EXPERTS_FILE).write_bytes(b"not safetensors")
    from relevo import RelevoError

    with pytest.raises(RelevoError, match="damaged"):
        M.load(tmp_path / "m")


def moe_config(domains, tiny_st, out, **kw):
    opts = dict(
        base=str(tiny_st),
        max_steps=1,
        batch_size=4,
        lr=5e-3,
        warmup_ratio=0.0,
        checkpoint_every=0,
        device="cpu",
        seed=7,
        moe=MoESpec(domains=["alpha", "beta"], layers="all", router_documents=12),
    )
    opts.update(kw)
    return EmbedderConfig(datasets=[str(d) for d in domains], out=str(out), **opts)


def test_training_routes_each_batch_to_its_domain_and_resumes(domains, tiny_st, hermetic, tmp_path):
    result = train_embedder(moe_config(domains, tiny_st, tmp_path / "one"), engine=hermetic)
    trained = M.load(result.path)
    base = M.convert(load_st(tiny_st), ["alpha", "beta"], "all")
    same = [
        all(
            torch.equal(p, q)
            for p, q in zip(trained.expert_parameters(e), base.expert_parameters(e), strict=True)
        )
        for e in (0, 1)
    ]
    assert sorted(same) == [False, True]  # one step: one domain's expert moved, the other did not
    assert result.report["moe"]["examples_per_domain"] == {"alpha": 6, "beta": 4}
    assert result.report["router"]["train_accuracy"] is not None
    assert (result.path / M.ROUTER_FILE).is_file()
    # four steps, interrupted after two, resumed: the same weights as straight through
    full = train_embedder(
        moe_config(domains, tiny_st, tmp_path / "full", max_steps=4), engine=hermetic
    )

    class Stop(Exception):
        pass

    def stop(info):
        if info.step == 2:
            raise Stop

    cfg = moe_config(domains, tiny_st, tmp_path / "resumed", max_steps=4, checkpoint_every=2)
    with pytest.raises(Stop):
        train_embedder(cfg, engine=hermetic, on_step=stop)
    resumed = train_embedder(cfg, engine=hermetic, resume=True)
    assert resumed.report["resumed_from_step"] == 2
    a, b = M.load(full.path), M.load(resumed.path)
    for e in (0, 1):
        for p, q in zip(a.expert_parameters(e), b.expert_parameters(e), strict=True):
            assert torch.allclose(p, q, atol=1e-6)


def test_domain_count_must_match_datasets(domains, tiny_st, tmp_path):
    cfg = moe_config(domains, tiny_st, tmp_path / "x", moe=MoESpec(domains=["only"]))
    with pytest.raises(ConfigError, match="one domain per dataset"):
        cfg.validate()


def test_documents_are_encoded_by_their_metadata_domain(tiny_st, tmp_path, hermetic):
    moe = M.convert(load_st(tiny_st).eval(), ["a", "b"], "all")
    perturb(moe, 1)
    moe.save(tmp_path / "m")
    docs = [
        Document("x1", "cats purr", metadata={"domain": "a"}),
        Document("x2", "cats purr", metadata={"domain": "b"}),
        Document("x3", "cats purr"),
    ]
    emb = hermetic.embedder(f"moe:{tmp_path / 'm'}", domain="b", device="cpu")
    col = hermetic.index(docs, stages=["torch-flat"], embedder=emb)
    vecs = col.stages["torch-flat"].index.stored_vectors(np.arange(3))
    a, b = moe.encode(["cats purr"], 0)[0], moe.encode(["cats purr"], 1)[0]
    assert np.allclose(vecs[0], a, atol=1e-6)
    assert np.allclose(vecs[1], b, atol=1e-6) and np.allclose(vecs[2], b, atol=1e-6)
    # the query goes to the collection's domain (b): x2 and x3 tie at the top
    top = {h.id for h in col.search("cats purr", 2)}
    assert top == {"x2", "x3"}
    assert col.search("cats purr", 1, domain="a")[0].id == "x1"  # one search's domain
    assert {h.id for h in col.search("cats purr", 2)} == {"x2", "x3"}  # the default again
    col.set_query_domain("a")
    assert col.search("cats purr", 1)[0].id == "x1"
    with pytest.raises(ConfigError, match="experts for a, b"):
        col.search("cats purr", 1, domain="z")
    with pytest.raises(ConfigError, match="experts for a, b"):
        col.set_query_domain("z")
    bm25 = hermetic.index(docs, stages=["bm25"])
    with pytest.raises(ConfigError, match="domain-routing"):
        bm25.set_query_domain("a")


def test_cocitation_groups_from_claims_and_from_qrels(tmp_path):
    root = tmp_path / "ds"
    (root / "extras").mkdir(parents=True)
    (root / "extras" / "claims_train.csv").write_text(
        'id,claim,cited_doc_ids\n1,c1,[11 12]\n2,c2,"[12, 13]"\n3,c3,[14]\n', "utf-8"
    )
    groups = cocited_groups(root, "train")
    assert groups == [["11", "12"], ["12", "13"]]
    assert cocited_pairs(groups) == {("11", "12"), ("12", "13")}
    assert partners(groups)["12"] == ["11", "13"]
    assert cocited_groups(root, "train", known={"11", "13"}) == []
    neg = random_pairs(["11", "12", "13", "14"], 3, cocited_pairs(groups))
    assert len(neg) == 3 and not set(neg) & cocited_pairs(groups)
    other = write_beir_dataset(
        tmp_path / "q",
        tiny_corpus(),
        {"a": "x", "b": "y"},
        {"a": {"d1": 1, "d2": 1}, "b": {"d3": 1}},
        split="train",
    )
    assert cocited_groups(other, "train") == [["d1", "d2"]]


def test_train_moe_command_and_domain_options(domains, tiny_st, hermetic, tmp_path):
    import click

    from relevo.engine.cli import cli
    from relevo.engine.commands import CommandHelpers

    hermetic.host.call_commands(cli, CommandHelpers())
    out = tmp_path / "cli-moe"
    args = ["train", "moe", "--domain", f"alpha={domains[0]}", "--domain", f"beta={domains[1]}"]
    args += ["--out", str(out), "--base", str(tiny_st), "--max-steps", "2", "--batch-size", "4"]
    args += ["--device", "cpu", "--layers", "last"]
    runner = CliRunner()
    result = runner.invoke(cli, args, obj={"engine": hermetic})
    assert result.exit_code == 0, result.output
    assert "trained 2 steps" in result.output and f"moe:{out}" in result.output
    assert json.loads((out / M.CONFIG_FILE).read_text())["layers"] == [1]
    bad = runner.invoke(
        cli,
        ["train", "moe", "--domain", "alpha", "--out", str(tmp_path / "z")],
        obj={"engine": hermetic},
    )
    assert bad.exit_code != 0 and "NAME=DATASET" in bad.output and "Traceback" not in bad.output
    assert isinstance(cli, click.Group)
    # eval with the domain's expert, and --domain refused for an embedder without domains
    ev = runner.invoke(
        cli,
        [
            "eval",
            str(domains[1]),
            "--split",
            "train",
            "--pipeline",
            "dense",
            "--embedder",
            f"moe:{out}",
            "--domain",
            "beta",
            "--json",
        ],
        obj={"engine": hermetic},
    )
    assert ev.exit_code == 0, ev.output
    assert 0.0 <= json.loads(ev.stdout)["ndcg@10"] <= 1.0
    wrong = runner.invoke(
        cli,
        ["eval", str(domains[1]), "--split", "train", "--pipeline", "bm25", "--domain", "beta"],
        obj={"engine": hermetic},
    )
    assert wrong.exit_code != 0 and "moe:PATH" in wrong.output
