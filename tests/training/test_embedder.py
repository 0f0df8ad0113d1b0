"""Bi-encoder training on a tiny BERT built here (no downloads): steps, resume, reload, ADORE."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from relevo import ConfigError, Engine
from relevo.testing import (
    FakePlugin,
    WordOverlapReranker,
    tiny_corpus,
    tiny_sentence_transformer,
    tiny_train_queries,
    write_beir_dataset,
)

torch = pytest.importorskip("torch")
pytest.importorskip("sentence_transformers")

from relevo.training import EMBEDDER_REPORT_FILE as REPORT_FILE  # noqa: E402
from relevo.training import EmbedderConfig, train_embedder  # noqa: E402
from relevo.training import embedder as trainer  # noqa: E402

TRAIN_QUERIES = tiny_train_queries()
TEXTS = [d.content for d in tiny_corpus()]


@pytest.fixture(scope="module")
def tiny_st(tmp_path_factory) -> Path:
    """A tiny BERT wrapped as a sentence-transformers model with mean pooling."""
    return tiny_sentence_transformer(
        tmp_path_factory.mktemp("st") / "tiny-st", TEXTS + [q for q, _ in TRAIN_QUERIES.values()]
    )


@pytest.fixture(scope="module")
def train_set(tmp_path_factory) -> Path:
    queries = {qid: text for qid, (text, _) in TRAIN_QUERIES.items()}
    qrels = {qid: dict.fromkeys(pos, 1) for qid, (_, pos) in TRAIN_QUERIES.items()}
    root = tmp_path_factory.mktemp("data") / "tinyset"
    return write_beir_dataset(root, tiny_corpus(), queries, qrels, split="train")


@pytest.fixture(scope="module")
def hermetic() -> Engine:
    return Engine(plugins=[FakePlugin()], load_entrypoints=False)


def config(train_set: Path, tiny_st: Path, out: Path, **kw) -> EmbedderConfig:
    opts = dict(
        base=str(tiny_st),
        max_steps=2,
        batch_size=4,
        lr=5e-3,
        warmup_ratio=0.0,
        checkpoint_every=1,
        device="cpu",
        seed=7,
    )
    opts.update(kw)
    return EmbedderConfig(datasets=[str(train_set)], out=str(out), **opts)


def weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


class Interrupted(Exception):
    pass


def crash_at(step: int):
    def on_step(info):
        if info.step == step:
            raise Interrupted

    return on_step


def interrupted_and_resumed(
    cfg: EmbedderConfig, engine: Engine
) -> tuple[dict, trainer.EmbedderResult]:
    """Crash ``cfg``'s run after step 1; return the checkpoint's state and the resumed result."""
    with pytest.raises(Interrupted):
        train_embedder(cfg, engine=engine, on_step=crash_at(2))
    state = json.loads((Path(cfg.out) / "checkpoint" / "trainer_state.json").read_text())
    return state, train_embedder(cfg, resume=True, engine=engine)


def test_two_steps_change_weights_resume_and_reload_identically(
    train_set, tiny_st, hermetic, tmp_path
):
    full = train_embedder(config(train_set, tiny_st, tmp_path / "full"), engine=hermetic)
    base, trained = weights(tiny_st), weights(tmp_path / "full")
    assert base.keys() == trained.keys()
    assert any(not torch.equal(base[k], trained[k]) for k in base)  # the steps changed the weights
    assert len(full.losses) == 2 and all(np.isfinite(full.losses))

    out = tmp_path / "resumed"
    with pytest.raises(Interrupted):
        train_embedder(config(train_set, tiny_st, out), engine=hermetic, on_step=crash_at(2))
    state = json.loads((out / "checkpoint" / "trainer_state.json").read_text())
    assert state["step"] == 1 and state["kind"] == "embedder" and len(state["losses"]) == 1
    assert not (out / REPORT_FILE).exists()
    with pytest.raises(ConfigError, match="--resume"):  # refuses to silently start over
        train_embedder(config(train_set, tiny_st, out), engine=hermetic)
    with pytest.raises(ConfigError, match="lr"):  # settings must match the checkpoint
        train_embedder(config(train_set, tiny_st, out, lr=1e-3), resume=True, engine=hermetic)
    steps = []
    resumed = train_embedder(
        config(train_set, tiny_st, out), resume=True, engine=hermetic, on_step=steps.append
    )
    assert [(s.step, s.start, s.total) for s in steps] == [(2, 1, 2)]
    assert resumed.losses == full.losses
    assert resumed.report["resumed_from_step"] == 1
    a, b = weights(tmp_path / "full"), weights(out)
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit-for-bit the uninterrupted run
    assert not (out / "checkpoint").exists() and not list(tmp_path.glob(".resumed.tmp-*"))

    # the folder is a sentence-transformers model: it loads as an embedder and embeds as trained
    emb = hermetic.embedder(f"sentence-transformers:{out}", device="cpu")
    ours = emb.embed(TEXTS, kind="document")
    raw = resumed.model.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    assert np.allclose(ours, raw, atol=1e-5)
    # ... and its weights digest (a content digest of the folder) is what manifests record
    from relevo.plugins.sentence_transformers import SentenceTransformerEmbedder

    assert emb.fingerprint() != SentenceTransformerEmbedder(str(tiny_st)).fingerprint()
    assert emb.fingerprint() == SentenceTransformerEmbedder(str(out)).fingerprint()
    col = hermetic.index(tiny_corpus(), stages=["torch-flat"], embedder=emb)
    (stage,) = col.stages.values()
    assert stage.embedder_record["fingerprint"] == emb.fingerprint()

    report = json.loads((out / REPORT_FILE).read_text())
    assert report["format"] == "relevo-embedder" and report["base_model"] == str(tiny_st)
    recipe = report["recipe"]
    assert recipe["loss"] == "mnrl" and recipe["steps"] == 2 and recipe["batch_size"] == 4
    assert recipe["max_length"] == 48  # the base model's own
    assert recipe["miner"] == "static" and recipe["first_stage"] == ["bm25"]
    (ds,) = report["datasets"]
    assert ds["queries_used"] == len(TRAIN_QUERIES) and ds["negatives"] > 0
    assert report["training_examples"] == len(TRAIN_QUERIES)
    assert len(report["loss_curve"]) == 1 and report["training_seconds"] >= 0
    assert report["use"] == f"--embedder sentence-transformers:{out}"


def test_mnrl_loss_decreases_and_cached_variant_trains(train_set, tiny_st, hermetic, tmp_path):
    result = train_embedder(
        config(train_set, tiny_st, tmp_path / "m", max_steps=24, checkpoint_every=0),
        engine=hermetic,
    )
    assert np.mean(result.losses[-4:]) < np.mean(result.losses[:4]) - 0.1, result.losses
    cached = train_embedder(
        config(train_set, tiny_st, tmp_path / "c", loss="cached-mnrl", mini_batch_size=3),
        engine=hermetic,
    )
    assert cached.report["recipe"]["mini_batch_size"] == 3 and np.isfinite(cached.final_loss)
    assert any(
        not torch.equal(a, b)
        for a, b in zip(weights(tiny_st).values(), weights(tmp_path / "c").values(), strict=True)
    )


def test_margin_mse_distils_the_teacher_margins(train_set, tiny_st, hermetic, tmp_path):
    result = train_embedder(
        config(train_set, tiny_st, tmp_path / "mm", loss="margin-mse", teacher="word-overlap"),
        engine=hermetic,
    )
    assert result.report["recipe"]["teacher"] == "word-overlap"
    assert result.report["teacher"]["pairs"] > 0 and np.isfinite(result.final_loss)
    # the label is teacher(query, positive) - teacher(query, negative), per negative
    cfg = config(train_set, tiny_st, tmp_path / "x", loss="margin-mse", teacher="word-overlap")
    data = trainer._load_data(cfg, hermetic)
    batch, rows = trainer._supervised_batch(data, cfg, [0, 1, 2, 3], step=0)
    teacher = trainer._Teacher(WordOverlapReranker(), data)
    overlap = WordOverlapReranker()
    for (_, qid, pos, negs), margins in zip(rows, teacher.margins(rows), strict=True):
        q = TRAIN_QUERIES[qid][0]
        texts = data.texts[0]
        expected = [
            overlap.score(q, [texts[pos]])[0] - overlap.score(q, [texts[n]])[0] for n in negs
        ]
        assert margins == pytest.approx(expected)
    assert len(batch.columns) == 3  # query, positive, one negative


def test_a_bi_encoder_teacher_gets_a_calibrated_scale(train_set, tiny_st, hermetic, tmp_path):
    """MarginMSE against a teacher of cosines calibrates the factor from the margin spreads."""
    cfg = config(
        train_set, tiny_st, tmp_path / "bi", loss="margin-mse", teacher="bi-encoder:hashing"
    )
    result = train_embedder(cfg, engine=hermetic)
    recipe = result.report["recipe"]
    cal = recipe["scale_calibration"]
    assert cal["pairs"] > 0 and cal["teacher_sd"] > 0 and cal["student_sd"] > 0
    assert recipe["scale"] == pytest.approx(cal["teacher_sd"] / cal["student_sd"])
    assert result.report["teacher"]["pairs"] > 0 and np.isfinite(result.final_loss)

    # calibrate_scale measures the margins training sees: the teacher's are its batch labels
    engine_cfg = trainer.EmbedderConfig(**{**cfg.__dict__, "scale": "auto"})
    data = trainer._load_data(engine_cfg, hermetic)
    teacher = trainer._Teacher(hermetic.reranker("bi-encoder:hashing"), data)
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tiny_st), device="cpu")
    facts = trainer.calibrate_scale(model, data, engine_cfg, teacher, anchors=4)
    batch = trainer._make_batch(
        data, engine_cfg, trainer._epoch_order(data, engine_cfg, 0)[:4], 0, 0, teacher
    )
    labels = np.asarray(batch.labels).T.ravel()
    assert facts["pairs"] == labels.size
    assert facts["teacher_sd"] == pytest.approx(float(labels.std()))

    # a resumed run keeps the factor its first session calibrated (on the base model)
    resumed_cfg = config(
        train_set, tiny_st, tmp_path / "resumed", loss="margin-mse", teacher="bi-encoder:hashing"
    )
    state, resumed = interrupted_and_resumed(resumed_cfg, hermetic)
    assert state["scale_calibration"]["scale"] == pytest.approx(recipe["scale"])
    assert resumed.report["recipe"]["scale"] == recipe["scale"]
    assert resumed.losses == result.losses


def test_scale_defaults_explicit_values_and_errors(train_set, tiny_st, hermetic, tmp_path):
    cfg = config(train_set, tiny_st, tmp_path / "x", loss="margin-mse", teacher="word-overlap")
    assert cfg.resolved_scale(WordOverlapReranker()) == trainer.DEFAULT_SCALE  # logits
    assert cfg.resolved_scale(hermetic.reranker("bi-encoder:hashing")) == trainer.AUTO_SCALE
    explicit = config(train_set, tiny_st, tmp_path / "y", loss="margin-mse", scale=5.0)
    assert explicit.resolved_scale(hermetic.reranker("bi-encoder:hashing")) == 5.0
    assert config(train_set, tiny_st, tmp_path / "z").resolved_scale() == trainer.DEFAULT_SCALE
    fixed = train_embedder(
        config(
            train_set, tiny_st, tmp_path / "one", loss="margin-mse",
            teacher="bi-encoder:hashing", scale=1.0,
        ),
        engine=hermetic,
    )  # fmt: skip
    assert fixed.report["recipe"]["scale"] == 1.0
    assert "scale_calibration" not in fixed.report["recipe"]
    for bad in (0.0, -1.0, "half", True):
        with pytest.raises(ConfigError, match="scale"):
            config(train_set, tiny_st, tmp_path / "w", scale=bad).validate()
    with pytest.raises(ConfigError, match="auto"):  # calibration needs a teacher
        config(train_set, tiny_st, tmp_path / "w", scale="auto").validate()


def test_in_batch_distill_loss_is_the_kl_divergence_of_the_two_softmaxes():
    from relevo.training.losses import InBatchDistillLoss

    gen = torch.Generator().manual_seed(3)
    anchors, docs = torch.randn(3, 8, generator=gen), torch.randn(6, 8, generator=gen)
    teacher = torch.randn(3, 6, generator=gen)
    loss = InBatchDistillLoss(None, scale=20.0, teacher_scale=5.0)
    got = float(loss.loss_from_embeddings([anchors, docs[:3], docs[3:]], teacher))
    cos = (
        torch.nn.functional.normalize(anchors, dim=-1)
        @ torch.nn.functional.normalize(docs, dim=-1).T
    ).numpy()
    s = np.exp(20 * cos - (20 * cos).max(1, keepdims=True))
    s /= s.sum(1, keepdims=True)
    t = np.exp(5 * teacher.numpy() - (5 * teacher.numpy()).max(1, keepdims=True))
    t /= t.sum(1, keepdims=True)
    assert got == pytest.approx(float(np.mean(np.sum(t * np.log(t / s), axis=1))), rel=1e-4)
    # a teacher whose softmax is the student's own gives no loss
    same = float(loss.loss_from_embeddings([anchors, docs[:3], docs[3:]], torch.tensor(4 * cos)))
    assert same == pytest.approx(0.0, abs=1e-5) and got > 1e-3
    with pytest.raises(ValueError, match="teacher"):
        loss.loss_from_embeddings([anchors, docs], None)
    columns = [{"input_ids": torch.zeros(3, 4)} for _ in range(3)]  # 3 anchors x 6 documents
    with pytest.raises(ValueError, match="teacher scores shape"):
        loss(columns, torch.zeros(3, 5))
    with pytest.raises(ValueError, match="judged cells shape"):
        loss(columns, torch.zeros(3, 6), torch.zeros(2, 6))


def test_label_weight_mixes_the_judgements_into_the_target(train_set, tiny_st, hermetic, tmp_path):
    from relevo.training.losses import InBatchDistillLoss

    teacher = torch.tensor([[2.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 3.0]])
    judged = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    mixed = InBatchDistillLoss(None, scale=20.0, teacher_scale=1.0, label_weight=0.25)
    probs = torch.softmax(teacher, dim=1)
    want = 0.75 * probs + 0.25 * torch.tensor([[0.5, 0, 0.5, 0], [0, 1.0, 0, 0]])
    assert torch.allclose(mixed.target(teacher, judged), want)
    assert torch.allclose(mixed.target(teacher, judged).sum(1), torch.ones(2))
    with pytest.raises(ValueError, match="judged"):
        mixed.target(teacher, torch.zeros_like(judged))  # a row without a relevant document
    # the trainer marks, per anchor, the batch documents the split judges relevant to it
    cfg = config(
        train_set, tiny_st, tmp_path / "lw", loss="kl-div", teacher="bi-encoder:hashing",
        label_weight=0.5,
    )  # fmt: skip
    data = trainer._load_data(cfg, hermetic)
    first = data.examples[0]
    first.judged = [*first.relevant, *data.examples[1].positives]  # plant a shared judgement
    batch, rows = trainer._supervised_batch(data, cfg, [0, 1, 2, 3], step=0)
    refs = trainer._candidates(rows)
    for i, row in zip([0, 1, 2, 3], batch.judged, strict=True):
        mine = {(data.examples[i].dataset, r) for r in data.examples[i].relevant}
        assert row == [1.0 if ref in mine else 0.0 for ref in refs]
        assert row[i] == 1.0  # its own positive
    assert batch.judged[0][1] == 1.0  # example 1's positive is judged for example 0 too
    result = train_embedder(cfg, engine=hermetic)
    assert result.report["recipe"]["label_weight"] == 0.5 and np.isfinite(result.final_loss)
    assert "label_weight" not in trainer.EmbedderConfig(datasets=["x"], out="y").fingerprint()
    for bad, says in ((1.0, r"\[0, 1\)"), (-0.1, r"\[0, 1\)")):
        with pytest.raises(ConfigError, match=says):
            config(
                train_set, tiny_st, tmp_path / "w", loss="kl-div", teacher="x", label_weight=bad
            ).validate()
    with pytest.raises(ConfigError, match="--loss kl-div"):
        config(train_set, tiny_st, tmp_path / "w", label_weight=0.5).validate()


def test_kl_div_distils_the_teacher_over_every_batch_document(
    train_set, tiny_st, hermetic, tmp_path
):
    cfg = config(train_set, tiny_st, tmp_path / "kl", loss="kl-div", teacher="bi-encoder:hashing")
    result = train_embedder(cfg, engine=hermetic)
    recipe = result.report["recipe"]
    cal = recipe["scale_calibration"]
    assert recipe["loss"] == "kl-div" and "mask_judged" not in recipe
    assert cal["teacher_sd"] > 0 and cal["student_sd"] > 0
    assert cal["scale"] == pytest.approx(cal["teacher_sd"] / cal["student_sd"])
    assert recipe["teacher_scale"] == pytest.approx(trainer.DEFAULT_SCALE / cal["scale"])
    assert np.isfinite(result.final_loss)
    assert any(
        not torch.equal(a, b)
        for a, b in zip(weights(tiny_st).values(), weights(tmp_path / "kl").values(), strict=True)
    )
    # the labels: the teacher's score of every batch document, per query, in column order
    data = trainer._load_data(cfg, hermetic)
    teacher_model = hermetic.reranker("bi-encoder:hashing")
    teacher = trainer._Teacher(teacher_model, data)
    first = trainer._epoch_order(data, cfg, 0)[:4]  # the first batch, as calibration reads it
    batch = trainer._make_batch(data, cfg, first, 0, 0, teacher)
    docs = [t for col in batch.columns[1:] for t in col]
    assert np.asarray(batch.labels).shape == (4, len(docs)) and len(docs) == 8
    for query, row in zip(batch.columns[0], batch.labels, strict=True):
        assert row == pytest.approx(teacher_model.score(query, docs))
    # calibration measures the row-centred spreads of those same cells (4 anchors x 8)
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tiny_st), device="cpu")
    facts = trainer.calibrate_scale(
        model, data, cfg, trainer._Teacher(teacher_model, data), anchors=4
    )
    labels = np.asarray(batch.labels)
    assert facts["pairs"] == labels.size
    assert facts["teacher_sd"] == pytest.approx(
        float((labels - labels.mean(1, keepdims=True)).std())
    )

    # a resumed run keeps the calibrated temperature and reproduces the losses
    resumed_cfg = config(
        train_set, tiny_st, tmp_path / "resumed", loss="kl-div", teacher="bi-encoder:hashing"
    )
    state, resumed = interrupted_and_resumed(resumed_cfg, hermetic)
    assert state["scale_calibration"]["teacher_scale"] == pytest.approx(recipe["teacher_scale"])
    assert resumed.report["recipe"]["teacher_scale"] == recipe["teacher_scale"]
    assert resumed.losses == pytest.approx(result.losses)
    with pytest.raises(ConfigError, match="student's inverse temperature"):
        config(
            train_set, tiny_st, tmp_path / "w", loss="kl-div", teacher="x", scale="auto"
        ).validate()
    with pytest.raises(ConfigError, match="--loss kl-div distils a teacher"):
        config(train_set, tiny_st, tmp_path / "w", loss="kl-div").validate()


def test_queries_without_negatives_borrow_in_batch_negatives(
    train_set, tiny_st, hermetic, tmp_path
):
    cfg = config(train_set, tiny_st, tmp_path / "x")
    data = trainer._load_data(cfg, hermetic)
    data.examples[0].negatives = []
    own = set(data.examples[0].positives)
    batch, rows = trainer._supervised_batch(data, cfg, [0, 1, 2, 3], step=3)
    assert len(batch.columns) == 3 and all(len(c) == 4 for c in batch.columns)
    borrowed = rows[0][3]
    others = {n for r in rows[1:] for n in r[3]}
    assert borrowed and all(trainer._doc_ref(0, n)[1] in others for n in borrowed)
    assert not own & {trainer._doc_ref(0, n)[1] for n in borrowed}
    for ex in data.examples[:4]:  # nobody has negatives: (query, positive) columns only
        ex.negatives = []
    batch, _ = trainer._supervised_batch(data, cfg, [0, 1, 2, 3], step=3)
    assert len(batch.columns) == 2


def test_easy_to_hard_curriculum_orders_by_negative_scores(train_set, tiny_st, hermetic, tmp_path):
    cfg = config(train_set, tiny_st, tmp_path / "x", curriculum="easy-to-hard")
    data = trainer._load_data(cfg, hermetic)
    order = trainer._epoch_order(data, cfg, 0)
    keys = [data.examples[i].difficulty for i in order]
    assert keys == sorted(keys) and len(set(keys)) > 1
    assert order == trainer._epoch_order(data, cfg, 1)  # deterministic, every epoch
    shuffled = trainer._epoch_order(data, config(train_set, tiny_st, tmp_path / "y"), 0)
    assert sorted(shuffled) == sorted(order)


def test_unsupervised_crops_need_only_a_corpus(tiny_st, tmp_path):
    corpus_only = write_beir_dataset(
        tmp_path / "nolabels", tiny_corpus(), {"q": "x"}, {"q": {"d1": 1}}, split="test"
    )
    cfg = EmbedderConfig(
        datasets=[str(corpus_only)],
        out=str(tmp_path / "crops"),
        base=str(tiny_st),
        unsupervised="crops",
        max_steps=2,
        batch_size=4,
        lr=5e-3,
        device="cpu",
    )
    result = train_embedder(cfg)  # no qrels/train.tsv, no engine needed
    assert result.report["datasets"][0]["documents_used"] == 12
    assert result.report["recipe"]["unsupervised"] == "crops"
    data = trainer._load_data(cfg, None)
    a = trainer._crops_batch(data, cfg, [0, 1, 2, 3], epoch=0)
    b = trainer._crops_batch(data, cfg, [0, 1, 2, 3], epoch=0)
    assert a.columns == b.columns and len(a.columns) == 2  # seeded pairs, no negatives
    for i, (x, y) in enumerate(zip(*a.columns, strict=True)):
        assert x in data.examples[i].text and y in data.examples[i].text
    assert trainer._crops_batch(data, cfg, [0, 1, 2, 3], epoch=1).columns != a.columns


def test_adore_refreshes_negatives_with_the_updated_encoder(train_set, tiny_st, hermetic, tmp_path):
    from sentence_transformers import SentenceTransformer

    from relevo.engine.mining import mine_dataset

    opts = {"refresh_every": 1, "num_negatives": 3, "max_rank": 6}
    cfg = config(train_set, tiny_st, tmp_path / "adore", miner="adore", miner_options=opts)
    with pytest.raises(Interrupted):
        train_embedder(cfg, engine=hermetic, on_step=crash_at(2))
    ckpt = tmp_path / "adore" / "checkpoint"
    state = json.loads((ckpt / "trainer_state.json").read_text())
    (refresh,) = state["refreshes"]
    assert refresh["step"] == 1 and refresh["queries"] == len(TRAIN_QUERIES)
    assert refresh["queries_changed"] > 0  # one step moved the query encoder's neighbours

    # the swapped negatives are exactly what ADORE retrieves with the model after step 1
    spec = f"sentence-transformers:{tiny_st}"
    miner = hermetic.miner("adore", **opts)
    initial = mine_dataset(hermetic, train_set, miner, first_stage="dense", embedder=spec)
    model = SentenceTransformer(str(ckpt), device="cpu")
    refreshed = miner.refresh(
        lambda texts: model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    )
    assert [q.negative_ids for q in refreshed.queries] == state["negatives"]
    assert [q.negative_ids for q in initial.queries] != state["negatives"]

    resumed = train_embedder(cfg, resume=True, engine=hermetic)  # continues with those negatives
    assert [resumed.negatives[(0, q.query_id)] for q in refreshed.queries] == state["negatives"]
    assert [r["step"] for r in resumed.report["adore_refreshes"]] == [1]
    assert resumed.report["recipe"]["first_stage"] == ["dense"]
    assert resumed.report["recipe"]["dense_embedder"] == spec


def test_output_folder_guards(train_set, tiny_st, hermetic, tmp_path):
    other = tmp_path / "not-a-model"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not a relevo embedder training folder"):
        train_embedder(config(train_set, tiny_st, other), overwrite=True, engine=hermetic)
    assert (other / "notes.txt").read_text() == "keep me"
    reranker_run = tmp_path / "reranker"
    (reranker_run / "checkpoint").mkdir(parents=True)
    (reranker_run / "checkpoint" / "trainer_state.json").write_text('{"step": 3}')
    with pytest.raises(ConfigError, match="another kind of training"):
        train_embedder(
            config(train_set, tiny_st, reranker_run), resume=True, overwrite=True, engine=hermetic
        )
    with pytest.raises(ConfigError, match="nothing to resume"):
        train_embedder(config(train_set, tiny_st, tmp_path / "fresh"), resume=True)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"loss": "margin-mse"}, "--teacher"),
        ({"teacher": "word-overlap"}, "only used by --loss margin-mse"),
        ({"loss": "triplet"}, "loss must be"),
        ({"batch_size": 1}, "batch_size"),
        ({"unsupervised": "crops", "curriculum": "easy-to-hard"}, "curriculum"),
        ({"unsupervised": "crops", "miner": "adore"}, "mines no negatives"),
        ({"max_steps": 0}, "max_steps"),
        ({"base": "./no/such/model"}, "not a model folder"),
    ],
)
def test_bad_settings_are_refused_before_any_work(train_set, tiny_st, tmp_path, kw, message):
    with pytest.raises(ConfigError, match=message):
        train_embedder(config(train_set, tiny_st, tmp_path / "x", **kw))
    assert not (tmp_path / "x").exists()


def test_a_listwise_teacher_is_refused(train_set, tiny_st, hermetic, tmp_path):
    cfg = config(train_set, tiny_st, tmp_path / "x", loss="margin-mse", teacher="reverse")
    with pytest.raises(ConfigError, match="pointwise reranker"):
        train_embedder(cfg, engine=hermetic)


def test_train_embedder_command(train_set, tiny_st, hermetic, tmp_path):
    import click

    from relevo.engine.commands import CommandHelpers, RelevoGroup
    from relevo.plugins import sentence_transformers as plugin

    @click.group(cls=RelevoGroup)
    def root() -> None:
        pass

    plugin.register_commands(root, CommandHelpers())
    out = tmp_path / "cli-model"
    args = ["train", "embedder", str(train_set), "--out", str(out), "--base", str(tiny_st)]
    args += ["--max-steps", "2", "--batch-size", "4", "--device", "cpu"]
    result = CliRunner().invoke(root, args, obj={"engine": hermetic})
    assert result.exit_code == 0, result.output
    assert "training 2/2" in result.output and "trained 2 steps" in result.output
    assert f"sentence-transformers:{out}" in result.output
    assert json.loads((out / REPORT_FILE).read_text())["recipe"]["steps"] == 2
    again = CliRunner().invoke(root, args, obj={"engine": hermetic})
    assert again.exit_code == 1 and "--overwrite" in again.output
    assert "Traceback" not in again.output
    bad = CliRunner().invoke(root, [*args, "--loss", "margin-mse"], obj={"engine": hermetic})
    assert bad.exit_code == 1 and "--teacher" in bad.output
    kl = CliRunner().invoke(root, [*args, "--loss", "kl-div"], obj={"engine": hermetic})
    assert kl.exit_code == 1 and "--teacher" in kl.output and "Traceback" not in kl.output
    lw = CliRunner().invoke(root, [*args, "--label-weight", "0.5"], obj={"engine": hermetic})
    assert lw.exit_code == 1 and "--loss kl-div" in lw.output  # mnrl has no target to mix
    lw = CliRunner().invoke(root, [*args, "--label-weight", "1"], obj={"engine": hermetic})
    assert lw.exit_code == 2 and "--label-weight" in lw.output
    opt = CliRunner().invoke(root, [*args, "--miner-option", "oops"], obj={"engine": hermetic})
    assert opt.exit_code == 2 and "KEY=VALUE" in opt.output
    for value, says in (("zero", "neither a number"), ("-2", "> 0")):
        bad = CliRunner().invoke(root, [*args, "--scale", value], obj={"engine": hermetic})
        assert bad.exit_code == 2 and says in bad.output, bad.output
    auto = CliRunner().invoke(root, [*args, "--scale", "auto"], obj={"engine": hermetic})
    assert auto.exit_code == 1 and "--teacher" in auto.output  # auto needs margin-mse


def test_modules_import_without_torch():
    import subprocess
    import sys

    code = (
        "import sys, relevo.training, relevo.plugins.sentence_transformers; "
        "assert not {'torch', 'sentence_transformers'} & set(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_in_batch_documents_judged_for_the_anchor_are_masked(
    train_set, tiny_st, hermetic, tmp_path
):
    cfg = config(train_set, tiny_st, tmp_path / "x")
    data = trainer._load_data(cfg, hermetic)
    first = data.examples[0]
    data.examples[1].positives = list(data.examples[1].positives) + list(first.positives)
    data.examples[1].judged = list(data.examples[1].positives)
    batch, rows = trainer._supervised_batch(data, cfg, [0, 1, 2, 3], step=0)
    assert batch.mask is not None and batch.masked >= 1
    assert batch.mask[1][0]  # query 1 is judged for query 0's positive: not its negative
    assert not any(batch.mask[i][i] for i in range(4))  # never the own positive
    n = len(rows)
    for i, row in enumerate(batch.mask):  # every masked cell is a judged document of anchor i
        judged = {(data.examples[i].dataset, p) for p in data.examples[i].relevant}
        refs = [(d, p) for d, _, p, _ in rows] + [
            trainer._doc_ref(d, negs[0]) for d, _, _, negs in rows
        ]
        assert all((refs[c] in judged) == row[c] for c in range(2 * n) if c != i)
    off = config(train_set, tiny_st, tmp_path / "y", mask_judged=False)
    batch, _ = trainer._supervised_batch(data, off, [0, 1, 2, 3], step=0)
    assert batch.mask is None
    result = train_embedder(config(train_set, tiny_st, tmp_path / "m"), engine=hermetic)
    assert result.report["recipe"]["mask_judged"] is True
    assert isinstance(result.report["judged_masked"], int)


def test_max_positives_trains_on_the_best_graded_and_keeps_every_judged_out(
    tiny_st, hermetic, tmp_path
):
    queries = {qid: text for qid, (text, _) in TRAIN_QUERIES.items()}
    qrels = {qid: dict.fromkeys(pos, 1) for qid, (_, pos) in TRAIN_QUERIES.items()}
    qrels["q1"] = {"d1": 1, "d3": 2, "d2": 1, "d4": 2}  # two grade-2, two grade-1 documents
    root = write_beir_dataset(tmp_path / "graded", tiny_corpus(), queries, qrels, split="train")
    for limit, want in ((1, ["d3"]), (2, ["d3", "d4"]), (None, ["d1", "d2", "d3", "d4"])):
        cfg = config(root, tiny_st, tmp_path / f"m{limit}", max_positives=limit)
        data = trainer._load_data(cfg, hermetic)
        q1 = next(e for e in data.examples if e.key == "q1")
        got = q1.positives if limit else sorted(q1.positives)
        assert got == want  # the highest grades, ties by id; without a limit, all
        assert sorted(q1.relevant) == ["d1", "d2", "d3", "d4"]
        assert not set(q1.negatives) & {"d1", "d2", "d3", "d4"}
        i = data.examples.index(q1)
        others = [j for j in range(len(data.examples)) if j != i][:3]
        for step in range(4):  # no judged document of q1 is ever one of its negatives
            batch, rows = trainer._supervised_batch(data, cfg, [i, *others], step=step)
            assert rows[0][2] in want
            assert not {trainer._doc_ref(0, n)[1] for n in rows[0][3]} & set(q1.relevant)
    with pytest.raises(ConfigError, match="max_positives"):
        config(root, tiny_st, tmp_path / "bad", max_positives=0).validate()
