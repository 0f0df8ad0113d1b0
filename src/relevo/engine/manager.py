"""Plugin loading: bundled modules, explicit plugins and the ``relevo`` entry-point group.

One :class:`PluginHost` per Engine; nothing is loaded at import time. Entry points are
loaded one at a time: a plugin that fails to import, declares a hook that does not
exist (a misspelling) or raises inside a registry hook is recorded as a
:class:`PluginLoadFailure`, warned about once, and everything else keeps working. With
``strict=True`` the first such failure is raised instead.
"""

from __future__ import annotations

import importlib
import logging
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import pluggy

from . import hookspecs
from .errors import ConfigError, PluginError
from .registry import KINDS, Registration, Registry

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "relevo"

#: The bundled plugins, registered first and in this order, so their component names
#: are taken before any third-party plugin's. Each is blockable by its short name
#: (``RELEVO_DISABLE_PLUGINS=faiss``). Imported by name: the host never imports
#: plugin modules at import time.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "relevo.plugins.sentence_transformers",
    "relevo.plugins.moe",
    "relevo.plugins.onnx",
    "relevo.plugins.bm25",
    "relevo.plugins.splade",
    "relevo.plugins.faiss",
    "relevo.plugins.torch_flat",
    "relevo.plugins.promptreps",
    "relevo.plugins.cross_encoder",
    "relevo.plugins.bi_encoder",
    "relevo.plugins.llm",
    "relevo.plugins.decoders",
    "relevo.plugins.generative",
    "relevo.plugins.miners",
    "relevo.plugins.server",
    "relevo.plugins.merge",
    "relevo.plugins.adapt",
)
ENV_LOAD = "RELEVO_LOAD_PLUGINS"
ENV_DISABLE = "RELEVO_DISABLE_PLUGINS"
ENV_STRICT = "RELEVO_STRICT_PLUGINS"


@dataclass(frozen=True)
class PluginLoadFailure:
    """A plugin that could not be loaded or whose hook raised."""

    name: str
    dist: str | None
    version: str | None
    stage: str
    error: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.dist,
            "version": self.version,
            "stage": self.stage,
            "error": self.error,
        }


@dataclass(frozen=True)
class PluginInfo:
    """A registered plugin: its name, distribution, version, and place in the load order."""

    name: str
    dist: str | None
    version: str | None
    bundled: bool
    order: int = 0


def _own_version() -> str:
    from .version import __version__

    return __version__


def _split_env(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def _env_bool(name: str) -> bool | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={value!r} is not a boolean; use 1 or 0.")


class PluginHost:
    """Owns one pluggy PluginManager and the component registry built from it.

    Args:
        plugins: extra plugin objects (modules, classes or instances with hookimpls),
            registered after the bundled ones; handy for tests and embedding apps.
        load_entrypoints: load third-party plugins from the ``relevo`` entry-point group.
        bundled: load the bundled plugins (``relevo.plugins.DEFAULT_PLUGINS``).
        load_plugins: only these entry-point names (default: ``RELEVO_LOAD_PLUGINS``,
            comma-separated; unset means all).
        disable_plugins: never load these names, bundled ones included (default:
            ``RELEVO_DISABLE_PLUGINS``).
        strict: raise on the first plugin failure (default: ``RELEVO_STRICT_PLUGINS``).
    """

    def __init__(
        self,
        *,
        plugins: Sequence[Any] = (),
        load_entrypoints: bool = True,
        bundled: bool = True,
        load_plugins: Iterable[str] | None = None,
        disable_plugins: Iterable[str] | None = None,
        strict: bool | None = None,
    ) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.strict = bool(strict if strict is not None else _env_bool(ENV_STRICT))
        self.load_only = (
            list(load_plugins) if load_plugins is not None else _split_env(os.environ.get(ENV_LOAD))
        )
        disabled = (
            list(disable_plugins)
            if disable_plugins is not None
            else _split_env(os.environ.get(ENV_DISABLE))
        )
        self.disabled = set(disabled or ())
        self.failures: list[PluginLoadFailure] = []
        self.info: dict[str, PluginInfo] = {}
        self._registry: Registry | None = None

        if bundled:
            for modname in DEFAULT_PLUGINS:
                short = modname.rsplit(".", 1)[-1]
                if short in self.disabled or modname in self.disabled:
                    self.pm.set_blocked(modname)
                    continue
                try:
                    module = importlib.import_module(modname)
                except Exception as exc:  # a broken bundled plugin must not take the others down
                    self._fail(modname, "relevo", _own_version(), "import", exc)
                    continue
                self._register(module, modname, "relevo", _own_version(), bundled=True)
        for i, obj in enumerate(plugins):
            name = getattr(obj, "__name__", None) or f"{type(obj).__name__}-{i}"
            if name in self.disabled:
                continue
            self._register(obj, name, None, None, bundled=False)
        if load_entrypoints:
            self._load_entrypoints()

    # -- loading ----------------------------------------------------------------------
    def _fail(
        self, name: str, dist: str | None, version: str | None, stage: str, exc: BaseException
    ) -> None:
        failure = PluginLoadFailure(name, dist, version, stage, f"{type(exc).__name__}: {exc}")
        if self.strict:
            raise PluginError(
                f"plugin {name!r} ({dist or 'no distribution'} {version or ''}) failed at {stage}: {failure.error}"
            ) from exc
        self.failures.append(failure)
        where = f" from {dist} {version}" if dist else ""
        warnings.warn(
            f"relevo plugin {name!r}{where} failed at {stage} and was skipped: {failure.error}. "
            f"Set {ENV_DISABLE}={name} to silence this, or {ENV_STRICT}=1 to make it fatal.",
            RuntimeWarning,
            stacklevel=3,
        )

    def _register(
        self, obj: Any, name: str, dist: str | None, version: str | None, *, bundled: bool
    ) -> bool:
        try:
            self.pm.register(obj, name=name)
        except Exception as exc:  # pluggy validation: wrong hook arguments, duplicate name
            self._fail(name, dist, version, "register", exc)
            return False
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            self.pm.unregister(name=name)
            self._fail(name, dist, version, "validate (unknown hook name — misspelled?)", exc)
            return False
        self.info[name] = PluginInfo(name, dist, version, bundled, order=len(self.info))
        return True

    def _load_entrypoints(self) -> None:
        seen: set[str] = set()
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if ep.name in seen:
                continue  # the same distribution visible twice on sys.path
            seen.add(ep.name)
            dist = ep.dist.name if ep.dist is not None else None
            version = ep.dist.version if ep.dist is not None else None
            if ep.name in self.disabled or (
                self.load_only is not None and ep.name not in self.load_only
            ):
                log.debug("skipping plugin %s (disabled or not selected)", ep.name)
                continue
            if self.pm.has_plugin(ep.name):
                self._fail(
                    ep.name,
                    dist,
                    version,
                    "register",
                    PluginError(f"a plugin named {ep.name!r} is already registered"),
                )
                continue
            try:
                obj = ep.load()
            except BaseException as exc:  # import errors, SyntaxError, SystemExit from bad code
                if isinstance(exc, KeyboardInterrupt):
                    raise
                self._fail(ep.name, dist, version, "import", exc)
                continue
            self._register(obj, ep.name, dist, version, bundled=False)

    # -- registry ---------------------------------------------------------------------
    @property
    def registry(self) -> Registry:
        """The component registry, built on first use by calling every registry hook."""
        if self._registry is None:
            self._registry = self._build_registry()
        return self._registry

    def _ordered_impls(self, hook: str) -> list[Any]:
        """A hook's implementations in load order: bundled plugins, explicit ones, entry points.

        pluggy orders implementations by its ``tryfirst``/``trylast`` markers (and
        last-registered first); relevo's names are first-come, so the host ignores those
        markers and uses the order plugins were registered in.
        """
        caller = getattr(self.pm.hook, hook)
        unknown = len(self.info)
        return sorted(
            caller.get_hookimpls(),
            key=lambda impl: (
                self.info[impl.plugin_name].order if impl.plugin_name in self.info else unknown
            ),
        )

    def _fail_impl(self, impl: Any, hook: str, exc: BaseException) -> None:
        info = self.info.get(impl.plugin_name)
        dist, version = (info.dist, info.version) if info else (None, None)
        self._fail(impl.plugin_name, dist, version, f"hook {hook}", exc)

    def _call(self, impl: Any, hook: str, kwargs: dict[str, Any]) -> bool:
        """Call one implementation with the arguments it names; record a failure, return success."""
        try:
            if getattr(impl, "hookwrapper", False) or getattr(impl, "wrapper", False):
                raise PluginError(
                    f"{hook} is called once per plugin by the host; wrappers "
                    "(hookwrapper/wrapper=True) are not supported there"
                )
            impl.function(**{name: kwargs[name] for name in impl.argnames})
        except Exception as exc:
            self._fail_impl(impl, hook, exc)
            return False
        return True

    def _build_registry(self) -> Registry:
        registry = Registry()
        for kind in KINDS.values():
            # Load order, not pluggy's: bundled plugins first, so names are first-come and
            # a third-party plugin cannot silently shadow a bundled one.
            for impl in self._ordered_impls(kind.hook):
                sink: list[Registration] = []
                register = registry.make_register(kind.name, impl.plugin_name, sink)
                if self._call(impl, kind.hook, {"register": register}):
                    try:
                        registry.commit(sink)
                    except Exception as exc:
                        self._fail_impl(impl, kind.hook, exc)
        return registry

    def call_commands(self, cli: Any, helpers: Any) -> None:
        """Run every plugin's ``register_commands(cli, helpers)`` in load order, isolating failures.

        Implementations may accept any subset of the arguments (by name).
        """
        for impl in self._ordered_impls("register_commands"):
            self._call(impl, "register_commands", {"cli": cli, "helpers": helpers})

    def describe(self, *, include_bundled: bool = False) -> dict[str, Any]:
        """JSON-ready listing for ``relevo plugins``."""
        registry = self.registry
        plugins = []
        for name, info in self.info.items():
            if info.bundled and not include_bundled:
                continue
            obj = self.pm.get_plugin(name)
            hooks = sorted(h.name for h in (self.pm.get_hookcallers(obj) or []))
            plugins.append(
                {
                    "name": name,
                    "distribution": info.dist,
                    "version": info.version,
                    "bundled": info.bundled,
                    "hooks": hooks,
                    "components": registry.by_plugin(name),
                }
            )
        return {"plugins": plugins, "errors": [f.to_dict() for f in self.failures]}


__all__ = ["DEFAULT_PLUGINS", "ENTRY_POINT_GROUP", "PluginHost", "PluginInfo", "PluginLoadFailure"]
