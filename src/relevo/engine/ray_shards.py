"""Sharded building and searching on Ray (the ``relevo[ray]`` extra), imported on use only.

:class:`RayRunner` runs :func:`relevo.engine.shard_build.build_sharded`'s per-shard work as
Ray tasks: the first pass (each shard's BM25 statistics) and the second (index, embed,
save) run in parallel, one task per shard, each in a worker that recreates the caller's
engine from an :class:`~relevo.engine.shard_build.EngineSpec`. :func:`load_on_ray` loads a
sharded collection into Ray actors, one per shard, and searches them in parallel.

Without an address a local Ray instance is started (and stopped when the runner is
closed); ``address="auto"`` or ``"ray://host:10001"`` joins a running cluster. On a
cluster of several machines the output directory must be on a file system every worker
sees at the same path (the shards are written by the workers).

Nothing of Ray is imported until a runner or loader is used.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .collection import Collection
from .deps import require
from .errors import ConfigError, RelevoError
from .shard_build import EngineSpec
from .sharding import (
    LocalShard,
    ShardedCollection,
    _load_shard,
    check_shard,
    read_sharded,
)
from .types import Document

if TYPE_CHECKING:  # pragma: no cover
    from .engine import Engine

log = logging.getLogger(__name__)


def _ray() -> Any:
    (ray,) = require("ray", extra="ray", what="sharded builds on Ray (--ray)")
    return ray


def _pack(docs: Sequence[Document]) -> list[tuple[str, str, str, dict[str, Any]]]:
    # Documents' default metadata is a read-only mapping proxy, which does not pickle.
    return [(d.id, d.text, d.title, dict(d.metadata)) for d in docs]


def _unpack(rows: Sequence[Any]) -> list[Document]:
    return [
        r if isinstance(r, Document) else Document(id=r[0], text=r[1], title=r[2], metadata=r[3])
        for r in rows
    ]


def _unwrap(exc: BaseException) -> BaseException:
    """A relevo error raised inside a task, without Ray's wrapping (its message is the fix)."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, RelevoError) else exc


def _task(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` taking packed documents as its second argument (what a task receives)."""

    def run(engine: Any, rows: Any, *args: Any) -> Any:
        return fn(engine, _unpack(rows), *args)

    run.__name__ = run.__qualname__ = f"relevo_{fn.__name__}"
    return run


#: Seconds to wait for a TCP connection to a given cluster address before giving up
#: (Ray itself retries an unreachable head for minutes).
CONNECT_TIMEOUT_S = 10.0


def _check_reachable(address: str) -> None:
    """Refuse, within seconds, a ``host:port`` / ``ray://host:port`` nobody listens on."""
    import socket

    target = address.split("://", 1)[-1]
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(
            f"--ray-address {address!r}: expected HOST:PORT, ray://HOST:PORT or auto."
        )
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        raise ConfigError(
            f"cannot reach the Ray cluster at {address} ({exc}). Check the address "
            "(`ray status` on the head node shows it), or leave out --ray-address to start a "
            "local instance. Nothing was written."
        ) from exc


class RayRunner:
    """Runs per-shard work as Ray tasks (see the module docstring).

    Args:
        address: a Ray cluster to join (``"auto"``, ``"ray://host:port"``); ``None``
            starts a local instance unless one is running in this process already.
        num_cpus: CPUs of a local instance started here (default: all).
        object_store_memory: bytes of a local instance's object store (default: Ray's).
        cpus_per_task: CPUs each shard's task reserves (Ray sets its threads from it).
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        *,
        num_cpus: int | None = None,
        object_store_memory: int | None = None,
        cpus_per_task: float = 1,
    ) -> None:
        self.address = address
        self.num_cpus = num_cpus
        self.object_store_memory = object_store_memory
        self.cpus_per_task = cpus_per_task
        self._started = False
        self._remote: dict[str, Any] = {}

    def start(self) -> Any:
        """Connect to (or start) Ray once; returns the ``ray`` module."""
        ray = _ray()
        if not ray.is_initialized():
            kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if self.address is None:
                if self.num_cpus is not None:
                    kw["num_cpus"] = self.num_cpus
                if self.object_store_memory is not None:
                    kw["object_store_memory"] = self.object_store_memory
            if self.address not in (None, "auto", "local"):
                _check_reachable(self.address)
            try:
                ray.init(address=self.address, **kw)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = (
                    f"the Ray cluster at {self.address}" if self.address else "a local Ray instance"
                )
                raise RelevoError(
                    f"cannot connect to {where}: {exc}. Check the address (`ray status` on the head "
                    "node shows it), or leave out --ray-address to start a local instance."
                ) from exc
            self._started = True
            log.info("ray: %s", ray.cluster_resources())
        return ray

    def close(self) -> None:
        """Stop the local instance this runner started (a joined cluster keeps running)."""
        if self._started:
            _ray().shutdown()
            self._started = False

    def __enter__(self) -> RayRunner:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def spec(self, engine: Engine) -> EngineSpec:
        return EngineSpec.of(engine)

    def put(self, docs: Sequence[Document]) -> Any:
        return self.start().put(_pack(docs))

    def map(self, fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]]) -> list[Any]:
        ray = self.start()
        remote = self._remote.get(fn.__name__)
        if remote is None:
            remote = ray.remote(num_cpus=self.cpus_per_task, max_retries=0)(_task(fn))
            self._remote[fn.__name__] = remote
        refs = [remote.remote(*args) for args in calls]
        try:
            return list(ray.get(refs))
        except ray.exceptions.RayTaskError as exc:
            raise _unwrap(exc) from None

    def describe(self) -> dict[str, Any]:
        ray = self.start()
        return {
            "backend": self.name,
            "address": self.address or "local",
            "cluster_cpus": ray.cluster_resources().get("CPU"),
            "ray_version": ray.__version__,
        }


# -- searching on actors ----------------------------------------------------------------------
class ShardActor(LocalShard):
    """One shard loaded in a Ray actor; answers what :class:`LocalShard` answers, picklably."""

    def __init__(self, spec: EngineSpec, sdir: str, i: int, top: str) -> None:
        engine = spec.engine()
        col = _load_shard(
            Path(sdir),
            i,
            Path(top),
            lambda p: Collection.load(
                p, engine.registry, make_embedder=lambda n, o: engine.embedder(n, **o)
            ),
        )
        super().__init__(col)

    def names(self) -> list[str]:
        return list(self.collection.stages)


class ActorFanout:
    """:class:`~relevo.engine.sharding.LocalFanout` over shard actors, called in parallel."""

    def __init__(self, actors: Sequence[Any]) -> None:
        self.actors = list(actors)

    def _get(self, refs: list[Any]) -> list[Any]:
        ray = _ray()
        try:
            return list(ray.get(refs))
        except ray.exceptions.RayTaskError as exc:
            raise _unwrap(exc) from None

    def all(self, method: str, args: tuple[Any, ...]) -> list[Any]:
        return self._get([getattr(a, method).remote(*args) for a in self.actors])

    def each(self, method: str, per_shard: Sequence[tuple[Any, ...]]) -> list[Any]:
        return self._get(
            [
                getattr(a, method).remote(*args)
                for a, args in zip(self.actors, per_shard, strict=True)
            ]
        )


def load_on_ray(
    path: str | os.PathLike[str], engine: Engine, runner: RayRunner | None = None
) -> ShardedCollection:
    """Load a sharded collection into Ray actors (one per shard) and search them in parallel.

    The actors live as long as the Ray instance (``runner.close()`` ends a local one).
    """
    runner = runner or RayRunner()
    ray = runner.start()
    spec = EngineSpec.of(engine)
    top = Path(path)
    actor_cls = ray.remote(num_cpus=0)(ShardActor)

    def load(man: dict[str, Any], dirs: list[Path]) -> list[Any]:
        actors = [actor_cls.remote(spec, str(d), i, str(top)) for i, d in enumerate(dirs)]
        fan = ActorFanout(actors)
        for i, (d, count, names) in enumerate(
            zip(dirs, fan.all("count", ()), fan.all("names", ()), strict=True)
        ):
            check_shard(man, i, d, count, names)
        return actors

    man, actors, generation = read_sharded(top, load)
    return ShardedCollection(man, ActorFanout(actors), path=top, generation=generation)


__all__ = ["ActorFanout", "RayRunner", "ShardActor", "load_on_ray"]
