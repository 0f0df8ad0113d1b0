"""The host calls hook implementations by argument name, in load order.

Regressions: ``register`` was passed positionally to every argument (a hook that gains
an argument would break every plugin), and pluggy's ``tryfirst``/``trylast`` decided
who got a name, so a third-party ``trylast`` plugin could take a bundled name.
"""

from __future__ import annotations

import warnings

import click
import pytest
from click.testing import CliRunner

import relevo
from relevo import Engine
from relevo.engine.commands import CommandHelpers
from relevo.testing import HashingEmbedder


class Shadow(HashingEmbedder):
    name = "shadow"


def make_plugin(plugin_name: str, component_name: str, **marker):
    class Plugin:
        __name__ = plugin_name

        @relevo.hookimpl(**marker)
        def register_embedders(self, register):
            register(Shadow, component_name)

    return Plugin()


@pytest.mark.parametrize("marker", [{"trylast": True}, {"tryfirst": True}, {}])
def test_bundled_names_are_first_come_whatever_the_markers(marker):
    plugin = make_plugin("late", "minilm", **marker)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        engine = Engine(plugins=[plugin], load_entrypoints=False)
        reg, _ = engine.registry.get("embedder", "minilm")
    assert reg.plugin == "relevo.plugins.sentence_transformers"
    errors = engine.plugins(all=True)["errors"]
    assert [e["name"] for e in errors] == ["late"]
    assert "relevo.plugins.sentence_transformers" in errors[0]["error"]
    assert any("late" in str(w.message) for w in caught)


def test_explicit_plugins_keep_their_given_order():
    first = make_plugin("first", "dup")
    second = make_plugin("second", "dup", tryfirst=True)  # would run first under pluggy
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        engine = Engine(plugins=[first, second], load_entrypoints=False, bundled=False)
        assert engine.registry.get("embedder", "dup")[0].plugin == "first"
        engine = Engine(plugins=[second, first], load_entrypoints=False, bundled=False)
        assert engine.registry.get("embedder", "dup")[0].plugin == "second"


def test_arguments_are_passed_by_name_and_any_subset_is_accepted():
    seen: dict[str, object] = {}

    class Reordered:
        __name__ = "reordered"

        @relevo.hookimpl
        def register_commands(self, helpers, cli):  # spec order is (cli, helpers)
            seen["cli"], seen["helpers"] = cli, helpers

            @cli.command("hello-reordered")
            def hello():
                click.echo(f"engine has {len(helpers.engine().names('index'))} index formats")

    class OnlyCli:
        __name__ = "only-cli"

        @relevo.hookimpl
        def register_commands(self, cli):  # written before `helpers` existed
            seen["old"] = cli

    engine = Engine(plugins=[Reordered(), OnlyCli()], load_entrypoints=False)
    group = click.Group("relevo-test")
    helpers = CommandHelpers()
    engine.host.call_commands(group, helpers)
    assert engine.plugins()["errors"] == []
    assert seen == {"cli": group, "helpers": helpers, "old": group}
    res = CliRunner().invoke(group, ["hello-reordered"], obj={"engine": engine})
    assert res.exit_code == 0, res.output
    assert f"engine has {len(engine.names('index'))} index formats" in res.output


def test_helpers_group_is_shared_and_translates_errors():
    class Failing:
        __name__ = "failing"

        @relevo.hookimpl
        def register_commands(self, cli, helpers):
            group = helpers.group(cli, "train", "Train models.")

            @group.command("broken")
            def broken():
                raise relevo.ConfigError("bad option: use --foo 1")

    engine = Engine(plugins=[Failing()], load_entrypoints=False)
    group = click.Group("relevo-test")
    engine.host.call_commands(group, CommandHelpers())
    train = group.commands["train"]
    assert isinstance(train, click.Group) and {"reranker", "broken"} <= set(train.commands)
    res = CliRunner().invoke(group, ["train", "broken"], obj={"engine": engine})
    assert res.exit_code == 1
    assert "Error: bad option: use --foo 1" in res.output and "Traceback" not in res.output


def test_a_hookwrapper_on_a_registry_hook_is_reported_not_called():
    class Wrapper:
        __name__ = "wrapper"

        @relevo.hookimpl(wrapper=True)
        def register_embedders(self, register):
            register(Shadow)
            return (yield)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        engine = Engine(plugins=[Wrapper()], load_entrypoints=False)
        names = engine.names("embedder")
    assert "shadow" not in names
    errors = engine.plugins()["errors"]
    assert errors and errors[0]["name"] == "wrapper" and "wrapper" in errors[0]["error"]
