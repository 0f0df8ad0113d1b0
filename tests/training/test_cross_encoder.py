"""Cross-encoder training on a tiny BERT built here (no downloads): loss, checkpoints, resume."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

import relevo
from relevo import ConfigError, Engine
from relevo.testing import tiny_bert as build_tiny_bert
from relevo.testing import tiny_corpus, tiny_train_queries, write_beir_dataset

pytest.importorskip("torch")
pytest.importorskip("transformers")

from relevo.training import REPORT_FILE, TrainConfig, train_cross_encoder  # noqa: E402

TRAIN_QUERIES = tiny_train_queries()


def make_tiny_bert(path: Path) -> Path:
    """A 2-layer, 32-wide BERT encoder and a WordPiece vocabulary of the tiny corpus's words."""
    texts = [d.content for d in tiny_corpus()] + [q for q, _ in TRAIN_QUERIES.values()]
    return build_tiny_bert(path, texts)


def make_tiny_dataset(root: Path) -> Path:
    """BEIR layout over ``tiny_corpus()`` with a train split."""
    queries = {qid: text for qid, (text, _) in TRAIN_QUERIES.items()}
    qrels = {qid: dict.fromkeys(pos, 1) for qid, (_, pos) in TRAIN_QUERIES.items()}
    return write_beir_dataset(root, tiny_corpus(), queries, qrels, split="train")


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("bert") / "tiny-bert")


@pytest.fixture(scope="module")
def train_set(tmp_path_factory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("data") / "tinyset")


@pytest.fixture(scope="module")
def hermetic() -> Engine:
    return Engine(load_entrypoints=False)


def config(train_set: Path, tiny_bert: Path, out: Path, **kw) -> TrainConfig:
    opts = dict(
        base=str(tiny_bert),
        max_steps=6,
        batch_size=8,
        group_size=4,
        max_length=48,
        lr=2e-3,
        max_queries=None,
        depth=10,
        checkpoint_every=3,
        device="cpu",
        seed=7,
    )
    opts.update(kw)
    return TrainConfig(datasets=[str(train_set)], out=str(out), **opts)


def weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def test_loss_decreases_and_report_describes_the_run(train_set, tiny_bert, hermetic, tmp_path):
    out = tmp_path / "model"
    cfg = config(
        train_set, tiny_bert, out, max_steps=60, lr=5e-3, warmup_ratio=0.0, checkpoint_every=0
    )
    t0 = time.perf_counter()
    result = train_cross_encoder(cfg, engine=hermetic)
    wall = time.perf_counter() - t0
    first, last = sum(result.losses[:5]) / 5, sum(result.losses[-5:]) / 5
    assert len(result.losses) == 60
    assert last < first - 0.2, (first, last)
    report = json.loads((out / REPORT_FILE).read_text())
    assert report["steps"] == 60 and report["loss"] == "listwise" and report["max_length"] == 48
    assert report["base_model"] == str(tiny_bert)
    assert report["negatives"] == {
        "method": "bm25",
        "depth": 10,
        "miner": "static",
        "miner_options": {},
    }
    mining = report["datasets"][0]["mining"]
    assert mining["miner"] == "static" and mining["kept"] > 0
    assert report["datasets"][0]["queries_used"] == len(TRAIN_QUERIES)
    # 60 optimiser steps take real time, and no more than the call around them
    assert isinstance(report["training_seconds"], float)
    # (the report rounds to 0.1 s, so allow that much over the measured wall time)
    assert 0 < report["training_seconds"] <= wall + 0.051
    assert report["final_loss"] == pytest.approx(result.final_loss)
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert not (out / "checkpoint").exists()
    assert not list(tmp_path.glob(".model.tmp-*"))  # the temporary folder was renamed into place
    cfg = json.loads((out / "config.json").read_text())
    assert len(cfg["id2label"]) == 1  # one output logit


def test_bce_loss_trains_too(train_set, tiny_bert, hermetic, tmp_path):
    result = train_cross_encoder(
        config(
            train_set,
            tiny_bert,
            tmp_path / "bce",
            loss="bce",
            max_steps=30,
            lr=5e-3,
            checkpoint_every=0,
        ),
        engine=hermetic,
    )
    assert sum(result.losses[-5:]) < sum(result.losses[:5])
    assert result.report["loss"] == "bce"


class Interrupted(Exception):
    pass


def test_resume_continues_from_checkpoint_and_matches_uninterrupted_run(
    train_set, tiny_bert, hermetic, tmp_path
):
    full = train_cross_encoder(config(train_set, tiny_bert, tmp_path / "full"), engine=hermetic)

    def crash_at_5(info):
        if info.step == 5:
            raise Interrupted

    out = tmp_path / "resumed"
    with pytest.raises(Interrupted):
        train_cross_encoder(config(train_set, tiny_bert, out), engine=hermetic, on_step=crash_at_5)
    state = json.loads((out / "checkpoint" / "trainer_state.json").read_text())
    assert state["step"] == 3 and len(state["losses"]) == 3
    assert not (out / REPORT_FILE).exists()

    with pytest.raises(ConfigError, match="--resume"):  # refuses to silently start over
        train_cross_encoder(config(train_set, tiny_bert, out), engine=hermetic)
    with pytest.raises(ConfigError, match="lr"):  # settings must match the checkpoint
        train_cross_encoder(
            config(train_set, tiny_bert, out, lr=1e-3), resume=True, engine=hermetic
        )

    steps = []
    resumed = train_cross_encoder(
        config(train_set, tiny_bert, out), resume=True, engine=hermetic, on_step=steps.append
    )
    assert [s.step for s in steps] == [4, 5, 6] and steps[0].start == 3
    assert resumed.report["resumed_from_step"] == 3
    assert resumed.losses == full.losses
    a, b = weights(tmp_path / "full"), weights(out)
    assert a.keys() == b.keys()
    import torch

    assert all(torch.equal(a[k], b[k]) for k in a)


def test_keep_checkpoint_and_output_folder_guards(train_set, tiny_bert, hermetic, tmp_path):
    out = tmp_path / "kept"
    train_cross_encoder(
        config(train_set, tiny_bert, out, max_steps=2, keep_checkpoint=True), engine=hermetic
    )
    assert json.loads((out / "checkpoint" / "trainer_state.json").read_text())["step"] == 2
    with pytest.raises(ConfigError, match="--overwrite"):
        train_cross_encoder(config(train_set, tiny_bert, out, max_steps=2), engine=hermetic)
    train_cross_encoder(
        config(train_set, tiny_bert, out, max_steps=2), overwrite=True, engine=hermetic
    )
    assert not (out / "checkpoint").exists()

    other = tmp_path / "not-a-model"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not a relevo training folder"):
        train_cross_encoder(config(train_set, tiny_bert, other), overwrite=True, engine=hermetic)
    assert (other / "notes.txt").read_text() == "keep me"
    with pytest.raises(ConfigError, match="nothing to resume"):
        train_cross_encoder(
            config(train_set, tiny_bert, tmp_path / "fresh"), resume=True, engine=hermetic
        )


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"batch_size": 10}, "multiple of group_size"),
        ({"group_size": 1}, "group_size"),
        ({"negatives": "random"}, "negatives"),
        ({"loss": "hinge"}, "loss"),
        ({"max_steps": 0}, "max_steps"),
    ],
)
def test_bad_settings_are_refused_before_any_work(train_set, tiny_bert, tmp_path, kw, message):
    with pytest.raises(ConfigError, match=message):
        train_cross_encoder(config(train_set, tiny_bert, tmp_path / "x", **kw))
    assert not (tmp_path / "x").exists()


def test_training_module_imports_without_torch():
    import subprocess
    import sys

    code = "import sys, relevo.training; assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_negatives_come_from_the_registered_miner(train_set, tiny_bert, tmp_path):
    """The trainer asks the registry for its miner; a plugin's miner decides the negatives."""
    from relevo.engine.mining import Selection
    from relevo.training.cross_encoder import _load_dataset

    picked: list[str] = []

    class LastOnly(relevo.NegativeMiner):
        name = "last-only"

        def __init__(self, *, num_negatives=1, max_rank=10):
            self.depth = max_rank

        def select(self, query, rng):
            last = query.candidates[-1]
            picked.append(last.id)
            return Selection([(last.id, last.score)])

    class Plugin:
        __name__ = "last-only-plugin"

        @relevo.hookimpl
        def register_negative_miners(self, register):
            register(LastOnly)

    engine = Engine(plugins=[Plugin()], load_entrypoints=False)
    cfg = config(train_set, tiny_bert, tmp_path / "out", miner="last-only")
    queries, report = _load_dataset(Path(train_set), cfg, engine)
    assert picked and all(len(q.negatives) == 1 for q in queries)
    assert report["mining"]["miner"] == "last-only" and report["mining"]["kept"] == len(picked)
    with pytest.raises(relevo.UnknownComponentError, match="no-such-miner"):
        _load_dataset(
            Path(train_set),
            config(train_set, tiny_bert, tmp_path / "o2", miner="no-such-miner"),
            engine,
        )
