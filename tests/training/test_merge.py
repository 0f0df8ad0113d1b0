"""``relevo merge``: weight averaging of two tiny sentence-transformers models built here."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from relevo import ConfigError, Engine
from relevo.testing import FakePlugin, tiny_corpus, tiny_sentence_transformer

torch = pytest.importorskip("torch")
pytest.importorskip("sentence_transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

from relevo.training.merge import REPORT_FILE, merge_embedders  # noqa: E402

TEXTS = [d.content for d in tiny_corpus()]
WEIGHTS = "model.safetensors"


def load(folder: Path) -> dict:
    return safetensors_torch.load_file(str(folder / WEIGHTS))


def save(folder: Path, tensors: dict) -> None:
    safetensors_torch.save_file(tensors, str(folder / WEIGHTS), metadata={"format": "pt"})


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


@pytest.fixture(scope="module")
def tiny_st(tmp_path_factory) -> Path:
    """A tiny BERT wrapped as a sentence-transformers model with mean pooling."""
    return tiny_sentence_transformer(tmp_path_factory.mktemp("st") / "tiny-st", TEXTS)


@pytest.fixture(scope="module")
def other_st(tiny_st, tmp_path_factory) -> Path:
    """A copy of ``tiny_st`` with every float tensor shifted by seeded noise (a stand-in fine-tune)."""
    dest = tmp_path_factory.mktemp("other") / "other-st"
    shutil.copytree(tiny_st, dest)
    gen = torch.Generator().manual_seed(3)
    tensors = load(dest)
    for name, t in tensors.items():
        if t.is_floating_point():
            tensors[name] = t + 0.05 * torch.randn(t.shape, generator=gen, dtype=t.dtype)
    save(dest, tensors)
    return dest


@pytest.fixture(scope="module")
def hermetic() -> Engine:
    return Engine(plugins=[FakePlugin()], load_entrypoints=False)


def variant(src: Path, dest: Path, edit=None) -> Path:
    """A copy of ``src`` whose tensors ``edit(tensors)`` changes in place."""
    shutil.copytree(src, dest)
    if edit is not None:
        tensors = load(dest)
        edit(tensors)
        save(dest, tensors)
    return dest


def no_leftovers(out: Path) -> bool:
    """No ``out`` and no temporary sibling of it."""
    return not out.exists() and not list(out.parent.glob(f".{out.name}.*"))


def test_weighted_merge_is_the_weighted_average(tiny_st, other_st, tmp_path):
    out = tmp_path / "merged"
    result = merge_embedders([tiny_st, other_st], out, weights=[1, 3])
    a, b, merged = load(tiny_st), load(other_st), load(out)
    assert set(merged) == set(a) and result.tensors == len(merged)
    for name, t in merged.items():
        assert t.dtype == a[name].dtype and t.shape == a[name].shape
        torch.testing.assert_close(t, 0.25 * a[name] + 0.75 * b[name], rtol=1e-6, atol=1e-7)
    assert result.path == out and result.weights == [0.25, 0.75]
    assert result.sources == [tiny_st.absolute(), other_st.absolute()]
    # the first source's configs and tokenizer come along, its weights do not stay
    for name in ("modules.json", "config.json", "tokenizer.json", "1_Pooling/config.json"):
        assert (out / name).read_bytes() == (tiny_st / name).read_bytes()
    report = json.loads((out / REPORT_FILE).read_text())
    assert report["format"] == "relevo-merge" and report["format_version"] == 1
    assert report["weights"] == [0.25, 0.75] and report["tensors"] == len(merged)
    assert report["relevo_version"] and report == result.report
    for entry, src in zip(report["sources"], (tiny_st, other_st), strict=True):
        assert entry["path"] == str(src.absolute())
        digest = hashlib.sha256((src / WEIGHTS).read_bytes()).hexdigest()
        assert entry["weights_sha256"] == {WEIGHTS: digest}


def test_default_weights_are_equal(tiny_st, other_st, tmp_path):
    result = merge_embedders([tiny_st, other_st], tmp_path / "m")
    assert result.weights == [0.5, 0.5]
    a, b, merged = load(tiny_st), load(other_st), load(tmp_path / "m")
    for name, t in merged.items():
        torch.testing.assert_close(t, 0.5 * a[name] + 0.5 * b[name], rtol=1e-6, atol=1e-7)


def test_merging_a_model_with_itself_reproduces_it(tiny_st, hermetic, tmp_path):
    out = tmp_path / "self"
    merge_embedders([tiny_st, tiny_st], out)
    a, merged = load(tiny_st), load(out)
    assert all(torch.equal(merged[n], a[n]) for n in a)
    texts = TEXTS[:4]
    same = hermetic.embedder(f"sentence-transformers:{out}", device="cpu").embed(texts)
    orig = hermetic.embedder(f"sentence-transformers:{tiny_st}", device="cpu").embed(texts)
    np.testing.assert_allclose(same, orig, rtol=1e-5, atol=1e-6)


def test_merged_folder_loads_and_embeds(tiny_st, other_st, hermetic, tmp_path):
    out = tmp_path / "merged"
    merge_embedders([tiny_st, other_st], out, weights=[0.5, 0.5])
    texts = TEXTS[:5]
    vectors = hermetic.embedder(f"sentence-transformers:{out}", device="cpu").embed(texts)
    base = hermetic.embedder(f"sentence-transformers:{tiny_st}", device="cpu").embed(texts)
    assert vectors.shape == base.shape == (5, 32) and np.isfinite(vectors).all()
    assert not np.allclose(vectors, base)


def test_integer_buffers_are_copied_and_must_agree(tiny_st, other_st, tmp_path):
    def add_buffer(offset):
        def edit(tensors):
            tensors["embeddings.position_ids"] = torch.arange(8, dtype=torch.int64)[None] + offset

        return edit

    with_buf = variant(tiny_st, tmp_path / "buf", add_buffer(0))
    other_buf = variant(other_st, tmp_path / "obuf", add_buffer(0))
    merge_embedders([with_buf, other_buf], tmp_path / "m1")
    assert torch.equal(load(tmp_path / "m1")["embeddings.position_ids"], torch.arange(8)[None])
    # a buffer only some transformers versions save: taken from the first source, else dropped
    merge_embedders([with_buf, other_st], tmp_path / "m2")
    assert "embeddings.position_ids" in load(tmp_path / "m2")
    result = merge_embedders([other_st, with_buf], tmp_path / "m3")
    assert "embeddings.position_ids" not in load(tmp_path / "m3")
    assert result.report["dropped_buffers"] == ["model.safetensors:embeddings.position_ids"]
    shifted = variant(other_st, tmp_path / "shifted", add_buffer(1))
    with pytest.raises(ConfigError, match="'embeddings.position_ids'.*must be equal"):
        merge_embedders([with_buf, shifted], tmp_path / "m4")
    assert no_leftovers(tmp_path / "m4")


def first_float(tensors: dict) -> str:
    return sorted(n for n, t in tensors.items() if t.is_floating_point())[0]


def drop_tensor(tensors):
    del tensors[first_float(tensors)]


def reshape_tensor(tensors):
    name = first_float(tensors)
    tensors[name] = torch.cat([tensors[name], tensors[name]])


def half_tensor(tensors):
    name = first_float(tensors)
    tensors[name] = tensors[name].half()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (drop_tensor, r"tensor '{name}' of model.safetensors is in .* but not in"),
        (reshape_tensor, r"tensor '{name}' of model.safetensors has shape"),
        (half_tensor, r"tensor '{name}' of model.safetensors is F32 in .* but F16"),
    ],
)
def test_tensor_mismatches_are_refused_naming_the_tensor(tiny_st, tmp_path, edit, message):
    bad = variant(tiny_st, tmp_path / "bad", edit)
    name = first_float(load(tiny_st))
    with pytest.raises(ConfigError, match=message.format(name=name)):
        merge_embedders([tiny_st, bad], tmp_path / "out")
    assert no_leftovers(tmp_path / "out")


def without(src: Path, dest: Path, *names: str) -> Path:
    shutil.copytree(src, dest)
    for name in names:
        (dest / name).unlink()
    return dest


def test_bad_sources_are_refused(tiny_st, other_st, tmp_path):
    out = tmp_path / "out"
    (tmp_path / "file.txt").write_text("x")
    no_modules = without(tiny_st, tmp_path / "nomod", "modules.json")
    pickled = without(tiny_st, tmp_path / "pickled", WEIGHTS)
    (pickled / "pytorch_model.bin").write_bytes(b"not unpickled")
    other_modules = variant(tiny_st, tmp_path / "mods")
    modules = json.loads((other_modules / "modules.json").read_text())
    modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "Normalize"})
    (other_modules / "modules.json").write_text(json.dumps(modules))
    cases = [
        ([tiny_st], "at least two source models, got 1"),
        (
            [tiny_st, tmp_path / "missing"],
            "'.*missing' does not exist; give a sentence-transformers",
        ),
        ([tiny_st, tmp_path / "file.txt"], "'.*file.txt' is a file"),
        ([tiny_st, no_modules], "has no modules.json, so it is not a sentence-transformers"),
        ([pickled, tiny_st], "has no .safetensors weights .*pytorch_model.bin.*safe_serialization"),
        ([tiny_st, other_modules], "the modules.json of .* differ"),
    ]
    for sources, message in cases:
        with pytest.raises(ConfigError, match=message):
            merge_embedders(sources, out)
        assert no_leftovers(out), message


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ([1.0], "1 weights for 2 source models; give one weight per source"),
        ([1.0, 2.0, 3.0], "3 weights for 2 source models"),
        ([1.0, -0.5], "merge weight -0.5 is negative"),
        ([0, 0.0], "all merge weights are zero"),
        ([1.0, float("nan")], "not a finite number"),
    ],
)
def test_bad_weights_are_refused(tiny_st, other_st, tmp_path, weights, message):
    with pytest.raises(ConfigError, match=message):
        merge_embedders([tiny_st, other_st], tmp_path / "out", weights=weights)
    assert no_leftovers(tmp_path / "out")


def test_an_existing_out_is_kept_unless_overwrite(tiny_st, other_st, tmp_path):
    out = tmp_path / "out"
    merge_embedders([tiny_st, other_st], out, weights=[1, 0])
    before = snapshot(out)
    with pytest.raises(ConfigError, match="already exists; pass --overwrite"):
        merge_embedders([tiny_st, other_st], out)
    assert snapshot(out) == before
    # a failing merge with --overwrite leaves the old model in place
    bad = variant(tiny_st, tmp_path / "bad", drop_tensor)
    with pytest.raises(ConfigError, match="but not in"):
        merge_embedders([tiny_st, bad], out, overwrite=True)
    assert snapshot(out) == before
    result = merge_embedders([tiny_st, other_st], out, weights=[0, 1], overwrite=True)
    assert result.weights == [0.0, 1.0]
    assert all(torch.equal(t, load(other_st)[n]) for n, t in load(out).items())
    assert not list(tmp_path.glob(".out.*"))


def test_a_crash_while_writing_leaves_the_old_model(tiny_st, other_st, tmp_path, monkeypatch):
    out = tmp_path / "out"
    merge_embedders([tiny_st, other_st], out)
    before = snapshot(out)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors_torch, "save_file", disk_full)
    with pytest.raises(OSError, match="No space left"):
        merge_embedders([tiny_st, other_st], out, weights=[1, 2], overwrite=True)
    assert snapshot(out) == before and not list(tmp_path.glob(".out.*"))
    with pytest.raises(OSError, match="No space left"):
        merge_embedders([tiny_st, other_st], tmp_path / "fresh")
    assert no_leftovers(tmp_path / "fresh")


def test_out_must_not_be_a_source_or_a_foreign_folder(tiny_st, other_st, tmp_path):
    src = variant(tiny_st, tmp_path / "src")
    before = snapshot(src)
    with pytest.raises(ConfigError, match="is the source"):
        merge_embedders([src, other_st], src, overwrite=True)
    with pytest.raises(ConfigError, match="overlaps the source"):
        merge_embedders([src, other_st], src / "merged")
    with pytest.raises(ConfigError, match="overlaps the source"):
        merge_embedders([src, other_st], tmp_path, overwrite=True)
    assert snapshot(src) == before and not (src / "merged").exists()
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not a sentence-transformers model folder; --overwrite"):
        merge_embedders([src, other_st], foreign, overwrite=True)
    assert (foreign / "keep.txt").read_text() == "mine"
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        merge_embedders([src, other_st], tmp_path / "a-file", overwrite=True)


def cli_root(engine: Engine):
    """A fresh ``relevo``-like root group with the commands of the bundled plugins."""
    import click

    from relevo.engine.commands import CommandHelpers, RelevoGroup

    @click.group(cls=RelevoGroup)
    def root() -> None:
        pass

    engine.host.call_commands(root, CommandHelpers())
    return root


def test_merge_command(tiny_st, other_st, hermetic, tmp_path):
    root = cli_root(hermetic)
    assert "merge" in root.commands
    out = tmp_path / "cli-merged"
    args = ["merge", str(tiny_st), str(other_st), "--out", str(out)]
    result = CliRunner().invoke(
        root, [*args, "--weight", "3", "--weight", "1"], obj={"engine": hermetic}
    )
    assert result.exit_code == 0, result.output
    assert result.output.strip() == (
        f"merged 2 models (weights 0.75, 0.25) into {out}, use as --embedder sentence-transformers:{out}"
    )
    assert json.loads((out / REPORT_FILE).read_text())["weights"] == [0.75, 0.25]
    again = CliRunner().invoke(root, args, obj={"engine": hermetic})
    assert again.exit_code == 1 and "already exists; pass --overwrite" in again.output
    assert "Traceback" not in again.output
    assert CliRunner().invoke(root, [*args, "--overwrite"], obj={"engine": hermetic}).exit_code == 0
    one = CliRunner().invoke(root, ["merge", str(tiny_st), "--out", str(tmp_path / "x")])
    assert one.exit_code == 1 and "at least two source models" in one.output
    counts = CliRunner().invoke(root, [*args, "--overwrite", "--weight", "1"])
    assert counts.exit_code == 1 and "1 weights for 2 source models" in counts.output
    negative = CliRunner().invoke(root, [*args, "--overwrite", "--weight", "-1", "--weight", "1"])
    assert negative.exit_code == 2 and "--weight" in negative.output
    assert not (tmp_path / "x").exists()


def test_plugin_imports_no_torch():
    import subprocess
    import sys

    code = (
        "import sys, relevo.plugins.merge, relevo.training.merge; "
        "assert not {'torch', 'safetensors'} & set(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
