"""The plugin contract: every hook relevo calls, typed and documented here.

A plugin is any object (usually a module) with functions decorated by
``relevo.hookimpl`` whose names match the specs below. Registry hooks receive a
``register`` callable owned by the host: it checks the base class, stamps which plugin
registered the component, and refuses a name that another plugin already took.

How the host calls them. Each implementation is called on its own (a failure in one
plugin never hides the components of another), with its arguments passed **by name**:
an implementation may accept any subset of a spec's arguments, so hooks evolve by
adding arguments only and old plugins keep working. The order is the load order:
the bundled plugins (``relevo.engine.manager.DEFAULT_PLUGINS``), then plugins passed
to ``Engine(plugins=[...])`` in the order given, then entry points sorted by name.
pluggy's ``tryfirst`` / ``trylast`` markers do not change it. Component names (and
pipeline names) are first-come: a later plugin cannot silently replace an earlier
one's; the clash is reported naming both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import pluggy

PROJECT_NAME = "relevo"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

if TYPE_CHECKING:  # pragma: no cover
    import click

    from .commands import CommandHelpers
    from .components import Component


class Register(Protocol):
    """The callable handed to registry hooks.

    ``register(cls, name=None, *, options=None, description=None, pipelines=None)``:

    - ``cls``: a subclass of the hook's base class (checked: :class:`~relevo.RegistrationError`
      otherwise, which is also a ``TypeError``).
    - ``name``: the public name; defaults to ``cls.name``. ``"minilm"`` and
      ``"sentence-transformers"`` may share a class with different ``options``.
    - ``options``: default keyword arguments for the constructor; user options override.
    - ``description``: one line for ``relevo plugins``.
    - ``pipelines``: named pipelines this component provides, ``{name: spec}`` with a
      spec as ``relevo eval --pipeline`` takes it (``{"hybrid": "hybrid:bm25+faiss-flat"}``).
    """

    def __call__(
        self,
        cls: type[Component],
        name: str | None = None,
        *,
        options: dict[str, object] | None = None,
        description: str | None = None,
        pipelines: dict[str, str] | None = None,
    ) -> None: ...


@hookspec
def register_embedders(register: Register) -> None:
    """Register :class:`relevo.Embedder` subclasses.

    Called once per Engine, the first time a component registry is needed. An embedder
    turns texts into a float32 array ``(n, dim)`` via ``embed(texts, kind="query" |
    "document")`` and exposes ``dim``, ``normalized`` and ``max_length``. Constructors
    must be cheap: load weights lazily on the first ``embed``.

    Args:
        register: the host's :class:`Register` callable for this kind; call it once per
            component (``register(cls, name, options=..., description=...)``).
    """


@hookspec
def register_negative_miners(register: Register) -> None:
    """Register :class:`relevo.NegativeMiner` subclasses.

    A miner writes ``select(query, rng) -> Selection``: given one query's first-stage
    candidates (best first, positives removed, the positive's score noted) it keeps
    negatives and names the reason for each candidate it drops. The host supplies
    ``mine(queries, positives, corpus, *, retriever, k)``: it streams the retriever in
    query batches, refuses a selection holding a positive, and returns a
    :class:`~relevo.engine.mining.MiningResult` (negatives per query plus a report of
    what was dropped and why). See :mod:`relevo.engine.mining`.

    Args:
        register: the host's :class:`Register` callable for this kind; call it once per
            component (``register(cls, name, options=..., description=...)``).
    """


@hookspec
def register_rerankers(register: Register) -> None:
    """Register :class:`relevo.PointwiseReranker` or :class:`relevo.ListwiseReranker` subclasses.

    Pointwise rerankers return one score per document; listwise rerankers return a
    permutation of indices. The host runs the window / full-list / pairwise strategies
    around them and validates every permutation.

    Args:
        register: the host's :class:`Register` callable for this kind; call it once per
            component (``register(cls, name, options=..., description=...)``).
    """


@hookspec
def register_decoders(register: Register) -> None:
    """Register :class:`relevo.ConstrainedDecoder` subclasses.

    A decoder restricts generation to allowed token sequences (document ids,
    permutations); ``allowed_tokens(batch_id, prefix)`` doubles as a Hugging Face
    ``prefix_allowed_tokens_fn``.

    Args:
        register: the host's :class:`Register` callable for this kind; call it once per
            component (``register(cls, name, options=..., description=...)``).
    """


@hookspec
def register_indexes(register: Register) -> None:
    """Register :class:`relevo.Index` subclasses (index formats).

    An index format implements add / search / save / load over row positions; removal
    and input validation are supplied by the base class. ``cls.input`` says whether it
    indexes texts (lexical, learned sparse) or vectors (dense). The registered name is
    what ``relevo index build --index NAME`` accepts and what manifests record.

    Args:
        register: the host's :class:`Register` callable for this kind; call it once per
            component (``register(cls, name, options=..., description=...)``).
    """


@hookspec
def register_query_generators(register: Register) -> None:
    """Register :class:`relevo.QueryGenerator` subclasses.

    A query generator writes ``generate(docs, seed) -> queries``: one query per document
    text, deterministic for a seed. ``relevo generate-queries --model NAME``, ``relevo
    adapt`` and ``--interpolate auto`` use them; the host cleans, deduplicates and
    round-trip filters what they write (:mod:`relevo.engine.synthetic`).

    Args:
        register: the host's :class:`Register` callable for this kind; call it once per
            component (``register(cls, name, options=..., description=...)``).
    """


@hookspec
def register_commands(cli: click.Group, helpers: CommandHelpers) -> None:
    """Add subcommands to the ``relevo`` click group.

    Called once when the ``relevo`` console script starts, after plugins are loaded.

    Args:
        cli: the ``relevo`` group; add commands with ``@cli.command()`` or groups with
            ``helpers.group(cli, name, help)`` (shared between plugins, e.g. ``train``).
        helpers: a :class:`relevo.engine.commands.CommandHelpers`: the Engine of the
            running invocation (``helpers.engine()``), progress bars
            (``helpers.progress(total, description)``), dataset lookup by name
            (``helpers.find_dataset("scifact")``) and the error-translating group class.
            Use it instead of private names of :mod:`relevo.engine.cli`.

    Raise :class:`~relevo.RelevoError` (shown as a one-line message by groups made with
    ``helpers``) or ``click.ClickException`` for user errors.
    """


__all__ = [
    "PROJECT_NAME",
    "Register",
    "hookimpl",
    "hookspec",
    "register_commands",
    "register_decoders",
    "register_embedders",
    "register_indexes",
    "register_negative_miners",
    "register_query_generators",
    "register_rerankers",
]
