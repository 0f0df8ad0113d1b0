"""The rooms of src/relevo import one way (AST over every module, function-level imports too).

plugins -> (training, models, indexes, decoding, server) -> engine core. No plugin imports
another plugin; no index format imports a plugin or the CLI; the model layer and the
engine core import no plugin, index format, decoder or training loop.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "relevo"

#: room -> rooms it may import (besides itself and the top-level ``relevo`` package).
ALLOWED: dict[str, set[str]] = {
    "engine": set(),
    "models": {"engine"},
    "indexes": {"engine", "models"},
    "decoding": {"engine"},
    "training": {"engine", "models", "indexes"},
    "server": {"engine"},
    "integrations": {"engine"},
    "plugins": {"engine", "models", "indexes", "decoding", "training", "server"},
}
#: Modules of the engine room no other room may import (the CLI is for the console script).
PRIVATE = {"relevo.engine.cli"}


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """Absolute names of every relevo module ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text("utf-8"))
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("relevo")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("relevo"):
                continue
            # `from ..plugins import bm25` imports the module relevo.plugins.bm25.
            for alias in node.names:
                found.append((node.lineno, f"{target}.{alias.name}"))
    return found


def room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ALLOWED else None


def violations() -> list[str]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        src_mod = module_name(path)
        src_room = room(src_mod)
        if src_room is None:  # relevo/__init__, __main__, testing: the public front
            continue
        for line, target in imports_of(path):
            dst_room = room(target)
            where = f"{path.relative_to(SRC.parent)}:{line} imports {target}"
            if dst_room is None:
                if target.split(".")[:2] == ["relevo", "testing"]:
                    out.append(f"{where} (relevo.testing is for tests only)")
                elif (
                    len(target.split(".")) == 2
                    and not (SRC / f"{target.split('.')[1]}.py").exists()
                ):
                    # `from .. import x`: a name of the package front, which imports the rooms
                    out.append(f"{where} (rooms do not import the package front relevo/__init__)")
                continue
            if any(target == p or target.startswith(p + ".") for p in PRIVATE) and src_mod not in (
                "relevo.engine.cli",
                "relevo.__main__",
            ):
                out.append(f"{where} (the CLI's names are private; use relevo.engine.commands)")
            if dst_room == src_room:
                parts = target.split(".")
                other = parts[2] if len(parts) > 2 else None
                if (
                    src_room == "plugins"
                    and other is not None
                    and (SRC / "plugins" / f"{other}.py").is_file()
                    and src_mod != f"relevo.plugins.{other}"
                ):
                    out.append(f"{where} (a plugin imports another plugin)")
                continue
            if dst_room not in ALLOWED[src_room]:
                out.append(f"{where} ({src_room}/ may not import {dst_room}/)")
    return out


def test_rooms_import_one_way():
    assert violations() == []


def test_the_checker_sees_each_kind_of_violation(tmp_path, monkeypatch):
    """The rule is only as good as its parser: plant violations and see them reported."""
    fake = tmp_path / "relevo"
    for room_name in ALLOWED:
        (fake / room_name).mkdir(parents=True)
        (fake / room_name / "__init__.py").write_text("", "utf-8")
    (fake / "__init__.py").write_text("", "utf-8")
    (fake / "plugins" / "a.py").write_text("from .b import X\n", "utf-8")
    (fake / "plugins" / "b.py").write_text("X = 1\n", "utf-8")
    (fake / "indexes" / "x.py").write_text(
        "def f():\n    from ..plugins.b import X\n    from relevo.engine.cli import main\n", "utf-8"
    )
    (fake / "engine" / "core.py").write_text(
        "from ..models import thing\nfrom .. import __version__\n", "utf-8"
    )
    monkeypatch.setattr(__import__(__name__), "SRC", fake, raising=False)
    globals()["SRC"] = fake
    try:
        found = "\n".join(violations())
    finally:
        globals()["SRC"] = Path(__file__).resolve().parents[1] / "src" / "relevo"
    assert "plugins/a.py:1 imports relevo.plugins.b.X (a plugin imports another plugin)" in found
    assert "indexes/x.py:2 imports relevo.plugins.b.X (indexes/ may not import plugins/)" in found
    assert "indexes/x.py:3 imports relevo.engine.cli.main (the CLI's names are private" in found
    assert "engine/core.py:1 imports relevo.models.thing (engine/ may not import models/)" in found
    assert (
        "engine/core.py:2 imports relevo.__version__ (rooms do not import the package front"
        in found
    )


@pytest.mark.parametrize(
    "plugin", sorted(p.stem for p in (SRC / "plugins").glob("*.py") if p.stem != "__init__")
)
def test_each_plugin_module_is_bundled(plugin):
    from relevo.engine.manager import DEFAULT_PLUGINS

    assert f"relevo.plugins.{plugin}" in DEFAULT_PLUGINS
