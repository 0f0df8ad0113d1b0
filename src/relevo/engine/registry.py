"""Component registry: which plugin registered which component under which name.

The host owns registration. ``register`` checks the base class, stamps the plugin,
and refuses a name another plugin already took, naming both plugins.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .components import (
    Component,
    ConstrainedDecoder,
    Embedder,
    Index,
    ListwiseReranker,
    NegativeMiner,
    PairwiseReranker,
    PointwiseReranker,
    QueryGenerator,
)
from .errors import ConfigError, RegistrationError, UnknownComponentError


@dataclass(frozen=True)
class Kind:
    """A component kind: its registry hook and accepted base classes."""

    name: str
    hook: str
    bases: tuple[type[Component], ...]

    @property
    def base_names(self) -> str:
        return " or ".join(f"relevo.{b.__name__}" for b in self.bases)


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("embedder", "register_embedders", (Embedder,)),
        Kind("negative_miner", "register_negative_miners", (NegativeMiner,)),
        Kind(
            "reranker",
            "register_rerankers",
            (PointwiseReranker, ListwiseReranker, PairwiseReranker),
        ),
        Kind("decoder", "register_decoders", (ConstrainedDecoder,)),
        Kind("index", "register_indexes", (Index,)),
        Kind("query_generator", "register_query_generators", (QueryGenerator,)),
    )
}


@dataclass(frozen=True)
class Registration:
    """One registered component."""

    kind: str
    name: str
    cls: type[Component]
    plugin: str
    options: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    #: Named pipelines this component provides: pipeline name -> spec (``hybrid:a+b``...).
    pipelines: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "class": f"{self.cls.__module__}.{self.cls.__qualname__}",
            "plugin": self.plugin,
            "description": self.description,
            "pipelines": dict(self.pipelines),
        }


class Registry:
    """Registered components by kind and name."""

    def __init__(self) -> None:
        self._items: dict[str, dict[str, Registration]] = {k: {} for k in KINDS}
        self._pipelines: dict[str, Registration] = {}

    def make_register(
        self, kind: str, plugin: str, sink: list[Registration]
    ) -> Callable[..., None]:
        """Build the ``register`` callable handed to one plugin's registry hook.

        Registrations are collected in ``sink`` and committed by :meth:`commit` only
        when the hook returned, so a hook that raises half-way registers nothing.
        """
        spec = KINDS[kind]

        def register(
            cls: type[Component],
            name: str | None = None,
            *,
            options: Mapping[str, Any] | None = None,
            description: str | None = None,
            pipelines: Mapping[str, str] | None = None,
        ) -> None:
            if not (inspect.isclass(cls) and issubclass(cls, spec.bases)):
                what = cls.__name__ if inspect.isclass(cls) else repr(cls)
                raise RegistrationError(
                    f"plugin {plugin!r}: {spec.hook} got {what}, which does not inherit from {spec.base_names}."
                )
            if inspect.isabstract(cls):
                missing = ", ".join(sorted(getattr(cls, "__abstractmethods__", ())))
                raise RegistrationError(
                    f"plugin {plugin!r}: {cls.__name__} is abstract (missing: {missing}); implement them before registering."
                )
            reg_name = name or cls.name
            if (
                not reg_name
                or not isinstance(reg_name, str)
                or ":" in reg_name
                or reg_name != reg_name.strip()
            ):
                raise RegistrationError(
                    f"plugin {plugin!r}: {cls.__name__} needs a non-empty name without ':' or surrounding spaces "
                    f"(got {reg_name!r}); pass name= or set the class attribute `name`."
                )
            for pending in sink:
                if pending.name == reg_name:
                    raise RegistrationError(
                        f"plugin {plugin!r} registered the {kind} {reg_name!r} twice."
                    )
            named = dict(pipelines or {})
            for pname, pspec in named.items():
                if not isinstance(pname, str) or not pname or ":" in pname or "+" in pname:
                    raise RegistrationError(
                        f"plugin {plugin!r}: pipeline name {pname!r} of {reg_name!r} must be a non-empty "
                        "name without ':' or '+'."
                    )
                if not isinstance(pspec, str) or not pspec.strip():
                    raise RegistrationError(
                        f"plugin {plugin!r}: pipeline {pname!r} needs a spec string such as 'hybrid:bm25+{reg_name}'."
                    )
            doc = (
                description
                if description is not None
                else (inspect.getdoc(cls) or "").split("\n")[0]
            )
            sink.append(Registration(kind, reg_name, cls, plugin, dict(options or {}), doc, named))

        return register

    def commit(self, regs: list[Registration]) -> None:
        """Add a plugin's registrations; a clash with another plugin's name raises, adding none."""
        pending: dict[str, str] = {}
        for reg in regs:
            existing = self._items[reg.kind].get(reg.name)
            if existing is not None:
                raise RegistrationError(
                    f"{reg.kind} name {reg.name!r} is registered by both plugin {existing.plugin!r} and "
                    f"plugin {reg.plugin!r}; the one from {existing.plugin!r} is kept. Disable one of them "
                    "(RELEVO_DISABLE_PLUGINS) or ask its author to rename the component."
                )
            for pname in reg.pipelines:
                owner = self._pipelines.get(pname)
                if owner is not None or pname in pending:
                    first = owner.plugin if owner is not None else reg.plugin
                    raise RegistrationError(
                        f"pipeline {pname!r} is declared by both plugin {first!r} and plugin {reg.plugin!r}; "
                        f"the one from {first!r} is kept. Disable one of them (RELEVO_DISABLE_PLUGINS)."
                    )
                pending[pname] = reg.name
        for reg in regs:
            self._items[reg.kind][reg.name] = reg
            for pname in reg.pipelines:
                self._pipelines[pname] = reg

    def pipelines(self) -> dict[str, str]:
        """Named pipelines the registered components declare: name -> spec."""
        return {name: reg.pipelines[name] for name, reg in sorted(self._pipelines.items())}

    def names(self, kind: str) -> list[str]:
        return sorted(self._items[kind])

    def by_plugin(self, plugin: str) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for kind, items in self._items.items():
            names = sorted(n for n, r in items.items() if r.plugin == plugin)
            if names:
                out[kind] = names
        return out

    def __iter__(self) -> Iterator[Registration]:
        for items in self._items.values():
            yield from items.values()

    def get(self, kind: str, name: str) -> tuple[Registration, str | None]:
        """Look up ``name`` (optionally ``"name:spec"``); returns the registration and the spec."""
        if kind not in KINDS:
            raise ConfigError(f"unknown component kind {kind!r}; kinds: {', '.join(KINDS)}")
        base, sep, spec_value = name.partition(":")
        reg = self._items[kind].get(name) or self._items[kind].get(base)
        if reg is None:
            raise UnknownComponentError(kind.replace("_", " "), name, self._items[kind])
        if reg.name == name:
            return reg, None
        if reg.cls.spec_option is None:
            raise ConfigError(f"{kind} {base!r} takes no ':' argument (got {name!r}).")
        return reg, spec_value if sep else None

    def create(self, kind: str, name: str, **options: Any) -> Component:
        """Instantiate a registered component with its default options overridden by ``options``."""
        reg, spec_value = self.get(kind, name)
        kwargs = {**reg.options, **options}
        if spec_value is not None and reg.cls.spec_option:
            kwargs[reg.cls.spec_option] = spec_value
        for option, other_kind in reg.cls.component_options.items():
            if isinstance(kwargs.get(option), str):  # a component name: make the component
                kwargs[option] = self.create(other_kind, kwargs[option])
        try:
            obj = reg.cls(**kwargs)
        except TypeError as exc:
            raise ConfigError(
                f"{kind} {name!r} (plugin {reg.plugin!r}) rejected its options {sorted(kwargs)}: {exc}"
            ) from exc
        obj.instance_name = name  # stamped for manifests and describe()
        obj.plugin_name = reg.plugin
        obj.instance_options = dict(options)  # user overrides, for manifests
        return obj


__all__ = ["KINDS", "Kind", "Registration", "Registry"]
