"""Plugin host behaviour: inline plugins, entry points, failures isolated, strict mode."""

from __future__ import annotations

import inspect
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

import relevo
from relevo import Embedder, Engine, PluginError, RegistrationError, UnknownComponentError, hookimpl
from relevo.engine import hookspecs
from relevo.engine.commands import CommandHelpers
from relevo.testing import HashingEmbedder

GOOD_PLUGIN = """
import numpy as np
import relevo

class Ones(relevo.Embedder):
    name = "ones"
    dim = 3
    def embed_batch(self, texts, *, kind):
        return np.ones((len(texts), 3), dtype=np.float32)

@relevo.hookimpl
def register_embedders(register):
    register(Ones)
"""


class InlineEmbedderPlugin:
    __name__ = "inline-embedders"

    @hookimpl
    def register_embedders(self, register):
        register(HashingEmbedder, "hash32", options={"dim": 32}, description="32-d hashing")


def hermetic(*plugins, **kw) -> Engine:
    return Engine(plugins=list(plugins), load_entrypoints=False, **kw)


def test_inline_plugin_component_is_created_with_its_options():
    engine = hermetic(InlineEmbedderPlugin())
    emb = engine.embedder("hash32")
    assert isinstance(emb, HashingEmbedder)
    assert emb.dim == 32
    assert emb.embed(["a b"], kind="query").shape == (1, 32)
    info = engine.plugins()
    (entry,) = [p for p in info["plugins"] if p["name"] == "inline-embedders"]
    assert entry["components"] == {"embedder": ["hash32"]}
    assert entry["hooks"] == ["register_embedders"]


def test_bundled_plugins_hidden_unless_all():
    engine = hermetic()
    assert all(not p["bundled"] for p in engine.plugins()["plugins"])
    bundled = {p["name"]: p for p in engine.plugins(all=True)["plugins"]}
    assert "relevo.plugins.bm25" in bundled
    assert "bm25" in bundled["relevo.plugins.bm25"]["components"]["index"]
    assert "minilm" in bundled["relevo.plugins.sentence_transformers"]["components"]["embedder"]


def test_register_refuses_wrong_base_class():
    class Bad:
        __name__ = "bad"

        @hookimpl
        def register_embedders(self, register):
            register(dict, "nope")

    with pytest.warns(RuntimeWarning, match="bad"):
        engine = hermetic(Bad())
        names = engine.names("embedder")
    assert "nope" not in names
    (err,) = engine.plugins()["errors"]
    assert "does not inherit from relevo.Embedder" in err["error"]
    assert err["stage"] == "hook register_embedders"


def test_name_clash_names_both_plugins_and_keeps_first():
    class Thief:
        __name__ = "thief"

        @hookimpl
        def register_embedders(self, register):
            register(HashingEmbedder, "minilm")

    with pytest.warns(RuntimeWarning):
        engine = hermetic(Thief())
        reg, _ = engine.registry.get("embedder", "minilm")
    assert reg.plugin == "relevo.plugins.sentence_transformers"
    err = engine.plugins()["errors"][0]["error"]
    assert "relevo.plugins.sentence_transformers" in err and "thief" in err


def test_raising_hook_registers_nothing_and_others_keep_working():
    class HalfThenBoom:
        __name__ = "half"

        @hookimpl
        def register_embedders(self, register):
            register(HashingEmbedder, "half-registered")
            raise RuntimeError("boom")

    with pytest.warns(RuntimeWarning, match="boom"):
        engine = hermetic(HalfThenBoom(), InlineEmbedderPlugin())
        names = engine.names("embedder")
    assert "half-registered" not in names  # partial registrations are rolled back
    assert "hash32" in names


def test_strict_mode_raises_on_hook_error():
    class Boom:
        __name__ = "boom"

        @hookimpl
        def register_indexes(self, register):
            raise RuntimeError("kaput")

    engine = hermetic(Boom(), strict=True)
    with pytest.raises(PluginError, match="kaput"):
        _ = engine.registry


def test_unknown_component_lists_available():
    engine = hermetic()
    with pytest.raises(UnknownComponentError) as info:
        engine.create("index", "faiss-flatt")
    msg = str(info.value)
    assert "faiss-flatt" in msg and "faiss-flat" in msg and "bm25" in msg


def test_spec_suffix_goes_to_spec_option():
    engine = hermetic()
    emb = engine.create("embedder", "sentence-transformers:/some/local/model")
    assert emb.model_id == "/some/local/model"
    with pytest.raises(relevo.ConfigError, match="takes no ':' argument"):
        engine.create("index", "bm25:whatever")


def test_disable_bundled_plugin_by_short_name(monkeypatch):
    monkeypatch.setenv("RELEVO_DISABLE_PLUGINS", "faiss")
    engine = hermetic()
    assert "faiss-flat" not in engine.names("index")
    assert "bm25" in engine.names("index")


# -- entry points ---------------------------------------------------------------------------


def test_entry_point_plugin_is_listed_with_distribution(fake_site):
    fake_site("relevo-ones", "ones", "relevo_ones_plugin", GOOD_PLUGIN, version="2.5")
    engine = Engine()
    listing = engine.plugins()
    (p,) = [p for p in listing["plugins"] if p["name"] == "ones"]
    assert p["distribution"] == "relevo-ones" and p["version"] == "2.5"
    assert p["components"] == {"embedder": ["ones"]}
    vec = engine.embedder("ones").embed(["x"])
    assert np.array_equal(vec, np.ones((1, 3), np.float32))


def test_broken_import_is_reported_and_others_load(fake_site):
    fake_site("relevo-ones", "ones", "relevo_ones_plugin", GOOD_PLUGIN)
    fake_site(
        "relevo-broken",
        "broken",
        "relevo_broken_plugin",
        "import does_not_exist_anywhere\n",
        version="0.3",
    )
    with pytest.warns(RuntimeWarning, match="broken"):
        engine = Engine()
    assert "ones" in engine.names("embedder")
    (err,) = engine.plugins()["errors"]
    assert (
        err["name"] == "broken"
        and err["distribution"] == "relevo-broken"
        and err["version"] == "0.3"
    )
    assert err["stage"] == "import" and "does_not_exist_anywhere" in err["error"]


def test_misspelled_hook_is_reported(fake_site):
    source = GOOD_PLUGIN + "\n@relevo.hookimpl\ndef register_embedder(register):\n    pass\n"
    fake_site("relevo-typo", "typo", "relevo_typo_plugin", source)
    with pytest.warns(RuntimeWarning, match="typo"):
        engine = Engine()
    (err,) = engine.plugins()["errors"]
    assert "register_embedder" in err["error"] and "misspelled" in err["stage"]
    assert "ones" not in engine.names("embedder")  # the whole plugin is unregistered


def test_raising_entry_point_hook_is_isolated(fake_site):
    source = "import relevo\n@relevo.hookimpl\ndef register_rerankers(register):\n    raise ValueError('bad reranker config')\n"
    fake_site("relevo-raiser", "raiser", "relevo_raiser_plugin", source)
    with pytest.warns(RuntimeWarning):
        engine = Engine()
        assert "bm25" in engine.names("index")
    (err,) = engine.plugins()["errors"]
    assert err["name"] == "raiser" and "bad reranker config" in err["error"]


def test_strict_switch_from_env(fake_site, monkeypatch):
    fake_site("relevo-broken", "broken", "relevo_broken_plugin", "raise ImportError('nope')\n")
    monkeypatch.setenv("RELEVO_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="broken"):
        Engine()


def test_load_and_disable_selection(fake_site, monkeypatch):
    fake_site("relevo-ones", "ones", "relevo_ones_plugin", GOOD_PLUGIN)
    fake_site("relevo-broken", "broken", "relevo_broken_plugin", "raise ImportError('nope')\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Engine(load_plugins=["ones"]).plugins()["errors"] == []
        assert Engine(disable_plugins=["broken"]).plugins()["errors"] == []
        monkeypatch.setenv("RELEVO_LOAD_PLUGINS", "ones")
        engine = Engine()
    assert [p["name"] for p in engine.plugins()["plugins"]] == ["ones"]
    monkeypatch.setenv("RELEVO_LOAD_PLUGINS", "")
    assert Engine().plugins() == {"plugins": [], "errors": []}


def test_hello_plugin_example_through_fake_dist_info(fake_site):
    """The example distribution in examples/ registers a component through its entry point."""
    src = (
        Path(__file__).resolve().parents[2]
        / "examples"
        / "relevo-hello-plugin"
        / "src"
        / "relevo_hello"
        / "__init__.py"
    )
    fake_site(
        "relevo-hello-plugin", "hello", "relevo_hello", src.read_text("utf-8"), version="0.1.0"
    )
    engine = Engine(load_plugins=["hello"])
    listing = engine.plugins()
    (p,) = listing["plugins"]
    assert p["distribution"] == "relevo-hello-plugin"
    names = [n for kind in p["components"].values() for n in kind]
    assert names
    reranker = engine.create("reranker", "hello-length")
    scores = reranker.score("q", ["short", "a much longer document"])
    assert scores[1] > scores[0]


# -- the contract is documented and tested -------------------------------------------------


def test_every_hook_is_documented_and_typed():
    # every function pluggy knows as a spec (marked by @hookspec), not just the names we expect
    marker = f"{hookspecs.PROJECT_NAME}_spec"
    specs = {n: f for n, f in vars(hookspecs).items() if callable(f) and hasattr(f, marker)}
    assert set(specs) == {
        "register_embedders",
        "register_negative_miners",
        "register_rerankers",
        "register_decoders",
        "register_indexes",
        "register_query_generators",
        "register_commands",
    }
    problems = []
    for name, fn in sorted(specs.items()):
        doc = inspect.getdoc(fn)
        if not doc:
            problems.append(f"{name}: no docstring")
            continue
        sig = inspect.signature(fn)
        if not sig.parameters:
            problems.append(f"{name}: takes no arguments")
        for arg, param in sig.parameters.items():
            if param.annotation is inspect.Parameter.empty:
                problems.append(f"{name}: argument {arg!r} has no type annotation")
            # the argument's name as a word: "Register" or "registry" do not count for `register`
            if not re.search(rf"\b{re.escape(arg)}\b", doc):
                problems.append(f"{name}: docstring does not mention its argument {arg!r}")
        if sig.return_annotation not in (None, "None"):
            problems.append(f"{name}: must be annotated -> None")
    assert not problems, "\n".join(problems)


def test_every_hook_is_exercised_by_some_test():
    text = "".join(
        p.read_text("utf-8") for p in Path(__file__).resolve().parents[1].rglob("test_*.py")
    )
    for name in (n for n in dir(hookspecs) if n.startswith("register_")):
        assert f"def {name}(" in text, f"no test implements hook {name}"


def test_every_registry_hook_accepts_a_plugin():
    from relevo import ConstrainedDecoder, NegativeMiner, QueryGenerator
    from relevo.engine.mining import Selection
    from relevo.testing import tiny_corpus

    class Miner(NegativeMiner):
        name = "m"

        def select(self, query, rng):
            return Selection([(c.id, c.score) for c in query.candidates[:1]])

    class Decoder(ConstrainedDecoder):
        name = "d"

        def allowed_tokens(self, batch_id, prefix):
            return [1]

    class Writer(QueryGenerator):
        name = "w"

        def generate(self, docs, seed):
            return [d.split()[0] for d in docs]

    class All:
        __name__ = "all-kinds"

        @hookimpl
        def register_negative_miners(self, register):
            register(Miner)

        @hookimpl
        def register_decoders(self, register):
            register(Decoder)

        @hookimpl
        def register_query_generators(self, register):
            register(Writer)

    engine = hermetic(All())
    docs = tiny_corpus()
    col = engine.index(docs, stages=["bm25"])
    res = engine.miner("m").mine(
        {"q": "cats purr"}, {"q": ["d3"]}, {d.id: d for d in docs}, retriever=col, k=5
    )
    assert res.negatives() == {"q": ["d1"]}  # the best non-positive bm25 hit
    assert engine.create("decoder", "d").allowed_tokens(0, []) == [1]
    assert engine.query_generator("w").generate(["cats purr"], (0,)) == ["cats"]
    assert json.dumps(engine.plugins())  # JSON-serialisable


def test_abstract_component_is_refused():
    class Half(Embedder):
        name = "half"

    class P:
        __name__ = "p"

        @hookimpl
        def register_embedders(self, register):
            register(Half)

    with pytest.warns(RuntimeWarning, match="abstract"):
        engine = hermetic(P())
        assert "half" not in engine.names("embedder")


def test_bad_registration_raises_registration_error_naming_plugin_and_base():
    caught: list[Exception] = []

    class WrongKind:
        __name__ = "wrong-kind"

        @hookimpl
        def register_rerankers(self, register):
            try:
                register(HashingEmbedder, "not-a-reranker")  # an embedder offered as a reranker
            except Exception as exc:  # what register raised, kept for the assertions below
                caught.append(exc)

    engine = hermetic(WrongKind())
    assert "not-a-reranker" not in engine.names("reranker")
    (err,) = caught
    assert isinstance(err, RegistrationError)
    assert isinstance(err, TypeError)  # the Register protocol documents TypeError
    msg = str(err)
    assert "'wrong-kind'" in msg and "HashingEmbedder" in msg
    assert "relevo.PointwiseReranker" in msg and "relevo.ListwiseReranker" in msg


def test_register_commands_adds_subcommands_and_isolates_failures():
    import click
    from click.testing import CliRunner

    class Commands:
        __name__ = "cmds"

        @hookimpl
        def register_commands(self, cli):
            @cli.command("hello")
            @click.argument("who")
            def hello(who):
                click.echo(f"hello {who}")

    class BadCommands:
        __name__ = "bad-cmds"

        @hookimpl
        def register_commands(self, cli):
            raise RuntimeError("no commands today")

    group = click.Group("relevo")
    engine = hermetic(Commands(), BadCommands())
    with pytest.warns(RuntimeWarning, match="no commands today"):
        engine.host.call_commands(group, CommandHelpers())
    assert CliRunner().invoke(group, ["hello", "world"]).output == "hello world\n"
    (err,) = engine.plugins()["errors"]
    assert err["name"] == "bad-cmds" and err["stage"] == "hook register_commands"
