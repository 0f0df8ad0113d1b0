"""``relevo serve`` under load and under ``kill -9`` (issue 11).

    .venv/bin/python benchmarks/bench_server.py [--part load|crash|all]
        [--pipelines bm25 hybrid] [--clients 1 8 32] [--requests 3000] [--seconds 30]
        [--write-every 0.5] [--server-kills 100] [--snapshot-kills 50] [--build-kills 50]
        [--crash-writers 2] [--seed 0] [--omp-threads N] [--cache DIR] [--out DIR] [--name server]

Part ``load`` builds SciFact collections once (``bm25``, and ``hybrid`` = ``bm25`` +
``faiss-flat`` with ``--embedder``) in a cache folder (default
``<relevo cache>/bench-server``), copies one to a temporary folder per pipeline and
starts the real server on it (``relevo serve DIR --port P``, a subprocess). An asyncio
loop of ``httpx.AsyncClient`` workers (1, 8 and 32 at once) sends ``POST /v1/search``
with the SciFact test queries round-robin, at most ``--requests`` per level and for at
most ``--seconds``, while a writer task adds a new document and deletes it again
(``POST`` / ``DELETE /v1/documents``, one call every ``--write-every`` seconds). Before
the levels, the same queries go alternately through an in-process ``Collection.search``
(one thread, no writer) and one HTTP client, so both see the same background load: that
gives the HTTP overhead. Client and server share the machine's cores.

Part ``crash`` kills the server with SIGKILL at a random moment (0.05-1.5 s into a
stream of document writes from ``--crash-writers`` concurrent clients: batches of 1-5
new documents, updates and deletes of acknowledged ones) ``--server-kills`` times on the
first 300 SciFact documents; then a snapshot of that collection (whole collection as a new
generation, after a few journaled writes) ``--snapshot-kills`` times; and ``relevo index
build --overwrite`` on 2,000 documents ``--build-kills`` times, alternating two corpora with
different ids. Snapshots and builds are killed half at a random moment of a run, half
while they write their new generation. After each kill the directory is loaded
in-process and checked: every acknowledged write is there (exact text, found by BM25),
every acknowledged delete is gone, each unacknowledged batch is wholly applied or wholly
absent, the document count adds up, a build's index is wholly the old or the new corpus,
and no entry is left beyond ``CURRENT``, ``.lock``, the live generation and the previous
one; the next server start is the restart check.

Results go to ``benchmarks/results/server.{json,md,png}``; running one part keeps the
other part's results from the previous JSON (each part records its own command line,
settings and load average). Every trial's outcome is in the JSON.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import _common as common

DATASETS = common.datasets_dir()
DATASET = "scifact"
PIPELINES = {"bm25": ["bm25"], "hybrid": ["bm25", "faiss-flat"]}
#: Entries a collection directory may hold besides its live and previous generation.
OWN_FILES = {"CURRENT", ".lock"}
CRASH_DOCS = 300
#: The crash loop's own documents: past this many it deletes more than it adds.
TARGET_BENCH_DOCS = 300
BUILD_DOCS = 2000
HEALTH_TIMEOUT_S = 180.0
CRASH_LOOPS = {
    "server": "server killed during writes",
    "snapshot": "snapshot killed",
    "build": "`index build --overwrite` killed",
}
#: Search requests per pipeline before the timed levels (the first ones load caches).
WARMUP_REQUESTS = 20
#: Untimed pause before each call of the in-process / HTTP comparison.
PAIR_GAP_S = 0.01

_LIVE: dict[int, subprocess.Popen[bytes]] = {}


# -- helpers --------------------------------------------------------------------------------


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def command_line() -> str:
    exe = Path(sys.executable)
    with contextlib.suppress(ValueError):
        exe = exe.relative_to(common.REPO)
    script = Path(sys.argv[0]).resolve()
    with contextlib.suppress(ValueError):
        script = script.relative_to(common.REPO)
    return shlex.join([str(exe), str(script), *sys.argv[1:]])


def relevo_exe() -> str:
    exe = Path(sys.executable).with_name("relevo")
    return str(exe) if exe.exists() else (shutil.which("relevo") or "relevo")


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    """p50 / p99 / mean in milliseconds of ``values`` (seconds)."""
    import numpy as np

    if not values:
        return {"p50_ms": None, "p99_ms": None, "mean_ms": None}
    arr = np.asarray(values) * 1000.0
    return {
        "p50_ms": float(np.percentile(arr, 50)),
        "p99_ms": float(np.percentile(arr, 99)),
        "mean_ms": float(arr.mean()),
    }


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_queries() -> list[str]:
    qrels = common.read_qrels(DATASETS / DATASET, "test")
    return [text for _, text in common.read_queries(DATASETS / DATASET, only=qrels)]


def kill_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    """Signal the process group of ``proc`` (started in its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(_LIVE.values()):
        if proc.poll() is None:
            kill_group(proc)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)


def spawn(cmd: Sequence[str], log_path: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, TRANSFORMERS_VERBOSITY="error")
    with open(log_path, "wb") as fh:
        proc = subprocess.Popen(
            list(cmd), stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    _LIVE[proc.pid] = proc
    return proc


def reap(proc: subprocess.Popen[bytes]) -> int:
    """Wait for ``proc`` (SIGKILL after 30 s) and forget it; its return code."""
    try:
        rc = proc.wait(30)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        rc = proc.wait()
    _LIVE.pop(proc.pid, None)
    return rc


def tail(path: Path, chars: int = 1500) -> str:
    try:
        return path.read_text("utf-8", "replace")[-chars:]
    except OSError:
        return ""


class Server:
    """``relevo serve DIR`` as a subprocess; use as a context manager (killed on exit)."""

    def __init__(self, directory: Path, log_path: Path, log_level: str = "warning") -> None:
        self.directory = directory
        self.log_path = log_path
        self.log_level = log_level
        self.healthy_after: float | None = None
        self._spawn()

    def _spawn(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [relevo_exe(), "serve", str(self.directory), "--port", str(self.port)]
        self.cmd = [*cmd, "--log-level", self.log_level]
        self.proc = spawn(self.cmd, self.log_path)
        self.started = time.perf_counter()

    def wait_healthy(self, timeout: float = HEALTH_TIMEOUT_S) -> dict[str, Any]:
        """``GET /healthz``'s answer once the server gives one; raises if it exits or times out."""
        import httpx

        deadline = self.started + timeout
        retries = 3
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                if retries and "address already in use" in tail(self.log_path).lower():
                    retries -= 1  # another process took the free port first: take another
                    reap(self.proc)
                    self._spawn()
                    continue
                raise RuntimeError(
                    f"relevo serve exited with {self.proc.returncode}:\n{tail(self.log_path)}"
                )
            try:
                r = httpx.get(self.url + "/healthz", timeout=2.0)
                if r.status_code == 200:
                    self.healthy_after = time.perf_counter() - self.started
                    return dict(r.json())
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(
            f"relevo serve not healthy after {timeout:.0f} s:\n{tail(self.log_path)}"
        )

    def kill(self) -> int:
        kill_group(self.proc)
        return reap(self.proc)

    def stop(self) -> int:
        """SIGTERM (graceful: in-flight requests finish, writes are flushed)."""
        kill_group(self.proc, signal.SIGTERM)
        return reap(self.proc)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.kill()
        _LIVE.pop(self.proc.pid, None)


def strays(directory: Path) -> list[str]:
    """Entries of a collection directory other than the lock, CURRENT, live and previous generation."""
    from relevo.engine.generations import current_generation

    live = current_generation(directory)
    names = sorted(os.listdir(directory))
    gens = [n for n in names if n.startswith("gen-")]
    allowed = set(OWN_FILES)
    if live:
        allowed.add(live)
        older = [g for g in gens if g < live and (directory / g / "COMPLETE").is_file()]
        if older:
            allowed.add(max(older))
    return [n for n in names if n not in allowed]


# -- part load ------------------------------------------------------------------------------


def cached_collection(engine: Any, cache: Path, pipeline: str, embedder: str) -> tuple[Path, bool]:
    """The SciFact collection of ``pipeline`` under ``cache`` (built and saved the first time)."""
    path = cache / f"{DATASET}-{pipeline}"
    stages = PIPELINES[pipeline]
    want = sum(1 for _ in common.read_corpus(DATASETS / DATASET))
    if path.exists():
        try:
            col = engine.load(path)
            if len(col) == want and len(col.stages) == len(stages):
                return path, True
            log(f"{path}: {len(col)} documents, stages {list(col.stages)}; rebuilding")
        except Exception as exc:  # noqa: BLE001 - an unusable cache is rebuilt
            log(f"{path} does not load ({exc}); rebuilding")
    log(f"building {pipeline} ({stages}) on {DATASET}")
    col = engine.index(DATASETS / DATASET, stages=stages, embedder=embedder)
    engine.save(col, path, overwrite=path.exists())
    return path, False


def paired(engine: Any, path: Path, url: str, queries: Sequence[str], args: Any) -> dict[str, Any]:
    """In-process ``Collection.search`` and ``POST /v1/search`` in turn, query by query.

    Alternating puts both under the same background load (the machine is shared); no
    writer runs. Which goes first is drawn per query, after a short untimed pause: the
    OpenMP threads of one side spin for a while after it returns, and on two cores
    that slows whichever runs next. The collection is loaded from the same directory the server copied.
    """
    import httpx
    import numpy as np

    col = engine.load(path)
    rng = random.Random(args.seed)
    local: list[float] = []
    remote: list[float] = []
    with httpx.Client(base_url=url, timeout=60.0) as client:
        for q in queries[:WARMUP_REQUESTS]:
            col.search(q, 10)
            client.post("/v1/search", json={"query": q, "k": 10}).raise_for_status()
        start = time.perf_counter()
        same = 0
        for i in range(args.requests):
            if time.perf_counter() - start >= args.seconds:
                break
            q = queries[i % len(queries)]
            got: dict[str, Any] = {}
            for side in rng.sample(["local", "remote"], 2):
                time.sleep(PAIR_GAP_S)
                t0 = time.perf_counter()
                if side == "local":
                    got["local"] = [h.id for h in col.search(q, 10)]
                    local.append(time.perf_counter() - t0)
                else:
                    r = client.post("/v1/search", json={"query": q, "k": 10})
                    remote.append(time.perf_counter() - t0)
                    r.raise_for_status()
                    got["remote"] = [h["id"] for h in r.json()["hits"]]
            same += got["local"] == got["remote"]
    diff = (np.asarray(remote) - np.asarray(local)) * 1000.0
    inp, http = percentiles(local), percentiles(remote)
    return {
        "queries": len(local),
        "in_process": {**inp, "qps": len(local) / max(sum(local), 1e-9)},
        "http": {**http, "qps": len(remote) / max(sum(remote), 1e-9)},
        "same_ids": same,
        "overhead_p50_ms": float(np.median(diff)) if len(diff) else None,
        "ratio_p50": (http["p50_ms"] or 0.0) / inp["p50_ms"] if inp["p50_ms"] else None,
    }


def thread_info() -> dict[str, Any]:
    """Thread settings of this process (the server subprocess inherits the environment)."""
    import faiss
    import torch

    return {
        "torch_threads": torch.get_num_threads(),
        "faiss_omp_threads": faiss.omp_get_max_threads(),
        "env": common.thread_env("OMP_NUM_THREADS", "MKL_NUM_THREADS"),
    }


@dataclass
class WriterStats:
    adds: int = 0
    deletes: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    pending: list[str] = field(default_factory=list)
    serial: int = 0
    prefix: str = "bench-writer"


async def _write(client: Any, stats: WriterStats, texts: Sequence[str]) -> None:
    import httpx

    t0 = time.perf_counter()
    try:
        if stats.pending:
            doc_id = stats.pending[-1]
            r = await client.request("DELETE", "/v1/documents", json={"ids": [doc_id]})
            ok = r.status_code == 200 and r.json().get("deleted") == 1
            kind = "delete"
        else:
            stats.serial += 1
            doc_id = f"{stats.prefix}-{stats.serial}"
            doc = {
                "id": doc_id,
                "title": f"writer {stats.serial}",
                "text": texts[stats.serial % len(texts)],
            }
            r = await client.post("/v1/documents", json={"documents": [doc]})
            ok = r.status_code == 200 and r.json().get("added") == 1
            kind = "add"
        if not ok:
            stats.errors[f"{kind}: http {r.status_code} {r.text[:200]}"] += 1
            return
        stats.latencies.append(time.perf_counter() - t0)
        if kind == "add":
            stats.adds += 1
            stats.pending.append(doc_id)
        else:
            stats.deletes += 1
            stats.pending.pop()
    except (httpx.HTTPError, ValueError) as exc:  # ValueError: a body that is not JSON
        stats.errors[type(exc).__name__] += 1


async def writer_loop(
    client: Any, stop: asyncio.Event, every: float, stats: WriterStats, texts: Sequence[str]
) -> None:
    """One write every ``every`` seconds (add a document, then delete it) until ``stop``."""
    due = time.perf_counter()
    while not stop.is_set():
        await _write(client, stats, texts)
        due += every
        wait = due - time.perf_counter()
        if wait <= 0:
            due = time.perf_counter()  # behind schedule: go on, but never in a burst
            continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), wait)


async def search_level(
    url: str, queries: Sequence[str], clients: int, args: Any, texts: Sequence[str]
) -> dict[str, Any]:
    import httpx

    latencies: list[float] = []
    errors: Counter[str] = Counter()
    issued = 0
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    timeout = httpx.Timeout(60.0)
    stats = WriterStats(prefix=f"bench-writer-x{clients}")
    stop = asyncio.Event()
    async with (
        httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as client,
        httpx.AsyncClient(base_url=url, timeout=timeout) as wclient,
    ):
        for q in queries[:WARMUP_REQUESTS]:
            (await client.post("/v1/search", json={"query": q, "k": 10})).raise_for_status()
        writer = asyncio.create_task(writer_loop(wclient, stop, args.write_every, stats, texts))
        start = time.perf_counter()
        deadline = start + args.seconds

        async def worker() -> None:
            nonlocal issued
            while issued < args.requests and time.perf_counter() < deadline:
                q = queries[issued % len(queries)]
                issued += 1
                t0 = time.perf_counter()
                try:
                    r = await client.post("/v1/search", json={"query": q, "k": 10})
                    dt = time.perf_counter() - t0
                    hits = r.json()["hits"] if r.status_code == 200 else None
                except (httpx.HTTPError, ValueError, KeyError) as exc:
                    errors[type(exc).__name__] += 1
                    continue
                if hits is None:
                    errors[f"http {r.status_code}"] += 1
                elif len(hits) != 10:
                    errors["not 10 hits"] += 1
                else:
                    latencies.append(dt)

        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - start
        stop.set()
        await writer
        adds, deletes = stats.adds, stats.deletes
        for _ in range(5):  # leave the collection as it was
            if not stats.pending:
                break
            await _write(wclient, stats, texts)
    return {
        "clients": clients,
        "requests": issued,
        "completed": len(latencies),
        "wall_s": wall,
        "qps": len(latencies) / wall,
        **percentiles(latencies),
        "errors": sum(errors.values()),
        "error_kinds": dict(errors),
        "writes": adds + deletes,
        "write_adds": adds,
        "write_deletes": deletes,
        "left_undeleted": list(stats.pending),
        "write_errors": sum(stats.errors.values()),
        "write_error_kinds": dict(stats.errors),
        "write_latency": percentiles(stats.latencies),
    }


def part_load(args: Any, tmp: Path) -> dict[str, Any]:
    from relevo import Engine
    from relevo.engine.cache import cache_dir

    engine = Engine()
    cache = args.cache or cache_dir() / "bench-server"
    queries = test_queries()
    texts = [r["text"] for r in islice(common.read_corpus(DATASETS / DATASET), 200)]
    meta = {
        "command": command_line(),
        "load_average_start": common.load_average(),
        "cache": str(cache),
        "queries": len(queries),
        "k": 10,
    }
    rows, baseline, servers, reused = [], {}, {}, {}
    for pipe in args.pipelines:
        path, reused[pipe] = cached_collection(engine, cache, pipe, args.embedder)
        work = tmp / f"load-{pipe}"
        shutil.copytree(path, work)
        with Server(work, tmp / f"server-{pipe}.log") as server:
            health = server.wait_healthy()
            log(f"{pipe}: serving {health['documents']} documents on {server.url}")
            baseline[pipe] = paired(engine, path, server.url, queries, args)
            log(f"{pipe}: in-process vs HTTP, one client, no writer: {json.dumps(baseline[pipe])}")
            for n in args.clients:
                row = asyncio.run(search_level(server.url, queries, n, args, texts))
                row["pipeline"] = pipe
                rows.append(row)
                log(f"{pipe} x{n}: {json.dumps(row)}")
            import httpx

            end_docs = httpx.get(server.url + "/healthz", timeout=10).json()["documents"]
            servers[pipe] = {
                "command": shlex.join(server.cmd).replace(str(work), "DIR"),
                "start_s": server.healthy_after,
                "documents": health["documents"],
                "documents_after": end_docs,
                # uvicorn re-raises SIGTERM after its graceful shutdown: -15 is a clean stop
                "exit_code": server.stop(),
            }
        shutil.rmtree(work, ignore_errors=True)
    overhead = {}
    for pipe in args.pipelines:
        one = next((r for r in rows if r["pipeline"] == pipe and r["clients"] == 1), None)
        base = baseline[pipe]["in_process"]["p50_ms"]
        if one and one["p50_ms"] is not None and base:
            overhead[pipe] = {
                "http_p50_ms": one["p50_ms"],
                "in_process_p50_ms": base,
                "overhead_ms": one["p50_ms"] - base,
                "ratio": one["p50_ms"] / base,
                "paired_overhead_p50_ms": baseline[pipe]["overhead_p50_ms"],
                "paired_http_p50_ms": baseline[pipe]["http"]["p50_ms"],
            }
    meta["threads"] = thread_info()
    meta["load_average_end"] = common.load_average()
    meta["cache_reused"] = reused
    return {
        "meta": meta,
        "rows": rows,
        "paired": baseline,
        "servers": servers,
        "overhead": overhead,
    }


# -- part crash: the server -----------------------------------------------------------------


@dataclass
class Op:
    kind: str  # add | update | delete
    docs: dict[str, tuple[str, str]]  # id -> (title, text) written (empty for deletes)
    before: dict[str, tuple[str, str]]  # id -> (title, text) before the op (updates, deletes)
    state: str = "sent"  # sent | acked | failed
    answer: str | None = None  # a non-200 answer (a server error), or the exception's name


class Model:
    """What the bench documents must look like: acknowledged writes only."""

    def __init__(self, base: int, rng: random.Random) -> None:
        self.base = base
        self.rng = rng
        self.present: dict[str, tuple[str, str]] = {}
        self.deleted: set[str] = set()
        self.busy: set[str] = set()
        self.serial = 0
        self.words = ["cell", "protein", "cancer", "gene", "trial", "risk", "dose", "mouse"]

    def token(self) -> str:
        self.serial += 1
        return f"zq{self.serial:07d}"  # one BM25 term of its own, untouched by the stemmer

    def text(self) -> tuple[str, str, str]:
        tok = self.token()
        body = " ".join(self.rng.choices(self.words, k=12))
        return tok, f"bench {tok}", f"{body} {tok} {body}"

    def next_op(self) -> Op:
        free = [i for i in self.present if i not in self.busy]
        roll = self.rng.random()
        # More deletes once the collection has grown, so it stays about this size.
        p_delete = 0.2 if len(self.present) < TARGET_BENCH_DOCS else 0.5
        if free and roll < p_delete:
            ids = self.rng.sample(free, min(len(free), self.rng.randint(1, 5)))
            op = Op("delete", {}, {i: self.present[i] for i in ids})
        elif free and roll < p_delete + 0.2:
            ids = self.rng.sample(free, min(len(free), self.rng.randint(1, 3)))
            docs = {}
            for i in ids:
                _, title, text = self.text()
                docs[i] = (title, text)
            op = Op("update", docs, {i: self.present[i] for i in ids})
        else:
            docs = {}
            for _ in range(self.rng.randint(1, 5)):
                tok, title, text = self.text()
                docs[f"crash-{tok}"] = (title, text)
            op = Op("add", docs, {})
        self.busy.update(op.docs or op.before)
        return op

    def apply(self, op: Op) -> None:
        if op.kind == "delete":
            for i in op.before:
                self.present.pop(i, None)
                self.deleted.add(i)
        else:
            self.present.update(op.docs)


async def _send(client: Any, op: Op) -> None:
    import httpx

    try:
        if op.kind == "delete":
            r = await client.request("DELETE", "/v1/documents", json={"ids": list(op.before)})
            want = {"deleted": len(op.before)}
        else:
            docs = [{"id": i, "title": t, "text": x} for i, (t, x) in op.docs.items()]
            r = await client.post("/v1/documents", json={"documents": docs})
            key = "added" if op.kind == "add" else "updated"
            want = {key: len(docs)}
        body = r.json() if r.status_code == 200 else {}
        if all(body.get(k) == v for k, v in want.items()):
            op.state = "acked"
        else:
            op.state, op.answer = "failed", f"http {r.status_code}: {r.text[:300]}"
    except httpx.HTTPError as exc:
        op.state, op.answer = "failed", type(exc).__name__


async def write_until_killed(server: Server, model: Model, writers: int, delay: float) -> list[Op]:
    """Writers send ops until SIGKILL hits the server ``delay`` s after the first is sent."""
    import httpx

    ops: list[Op] = []
    killed = asyncio.Event()

    async def writer(client: Any) -> None:
        while not killed.is_set():
            op = model.next_op()
            ops.append(op)
            await _send(client, op)
            if op.state == "acked":
                model.apply(op)
            if not killed.is_set():
                model.busy.difference_update(op.docs or op.before)

    async with httpx.AsyncClient(base_url=server.url, timeout=httpx.Timeout(60.0)) as client:
        tasks = [asyncio.create_task(writer(client)) for _ in range(writers)]
        await asyncio.sleep(delay)
        kill_group(server.proc)
        killed.set()
        for op in ops:
            if op.state == "failed" and (op.answer or "").startswith("http"):
                op.answer = f"before the kill: {op.answer}"
        await asyncio.wait(tasks, timeout=30)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    reap(server.proc)
    return ops


def _found(col: Any, title: str, text: str, doc_id: str) -> bool:
    tok = title.split()[-1]
    return any(h.id == doc_id for h in col.search(tok, 5))


def check_server_trial(engine: Any, directory: Path, model: Model, ops: list[Op]) -> dict[str, Any]:
    """Load ``directory`` and compare it with the acknowledged writes; updates ``model``."""
    violations: Counter[str] = Counter()
    out: dict[str, Any] = {"left_by_kill": strays(directory)}
    t0 = time.perf_counter()
    try:
        col = engine.load(directory)
    except Exception as exc:  # noqa: BLE001 - a failed load is the finding
        return {"loaded": False, "load_error": f"{type(exc).__name__}: {exc}"}
    out["load_s"] = time.perf_counter() - t0
    store = col.docstore

    def state_of(doc_id: str) -> tuple[str, str] | None:
        d = store.by_id(doc_id)
        return None if d is None else (d.title, d.text)

    unacked: Counter[str] = Counter()
    for op in ops:
        if op.state == "acked":
            continue
        ids = op.docs or op.before
        if op.kind == "delete":
            outcomes = ["applied" if state_of(i) is None else "not applied" for i in ids]
            wrong = [i for i in ids if state_of(i) not in (None, op.before[i])]
        else:
            old = op.before
            outcomes = ["applied" if state_of(i) == op.docs[i] else "not applied" for i in ids]
            wrong = [i for i in ids if state_of(i) not in (op.docs[i], old.get(i))]
        if wrong:
            violations["unacknowledged_wrong_text"] += 1
        if len(set(outcomes)) > 1:
            violations["unacknowledged_half_batch"] += 1
        elif outcomes and outcomes[0] == "applied":
            unacked[f"{op.kind} applied"] += 1
            model.apply(op)
        else:
            unacked[f"{op.kind} absent"] += 1
    model.busy.clear()
    checked = 0
    for doc_id, want in model.present.items():
        got = state_of(doc_id)
        checked += 1
        if got is None:
            violations["acknowledged_missing"] += 1
        elif got != want:
            violations["acknowledged_wrong_text"] += 1
        elif not _found(col, *want, doc_id):
            violations["acknowledged_not_searchable"] += 1
    for doc_id in model.deleted:
        checked += 1
        if state_of(doc_id) is not None:
            violations["acknowledged_delete_present"] += 1
    for op in ops:  # an old text or a deleted document must not be found by its term
        for doc_id, (title, text) in op.before.items():
            if model.present.get(doc_id) != (title, text) and _found(col, title, text, doc_id):
                violations["stale_term_found"] += 1
    if len(col) != model.base + len(model.present):
        violations["count_mismatch"] += 1
    left = strays(directory)
    if left:
        violations["stray_entries"] += 1
    out.update(
        loaded=True,
        documents=len(col),
        acknowledged_checked=checked,
        unacknowledged=dict(unacked),
        violations=dict(violations),
        strays=left,
        listing=sorted(os.listdir(directory)),
    )
    return out


def small_collection(engine: Any, tmp: Path, rng: random.Random) -> tuple[Path, Model]:
    """The first ``CRASH_DOCS`` SciFact documents, BM25, saved in ``tmp``; and its write model."""
    directory = tmp / "crash-server"
    col = engine.index(DATASETS / DATASET, stages=["bm25"], limit=CRASH_DOCS)
    engine.save(col, directory)
    return directory, Model(len(col), rng)


def crash_server(
    args: Any, tmp: Path, engine: Any, rng: random.Random, directory: Path, model: Model
) -> dict[str, Any]:
    trials: list[dict[str, Any]] = []
    totals: Counter[str] = Counter()
    for trial in range(args.server_kills):
        delay = rng.uniform(0.05, 1.5)
        row: dict[str, Any] = {"trial": trial, "delay_s": round(delay, 3)}
        with Server(directory, tmp / "crash-server.log") as server:
            try:
                server.wait_healthy()
                row["start_s"] = round(time.perf_counter() - server.started, 3)
            except RuntimeError as exc:
                row.update(restart_failed=True, error=str(exc)[-2000:])
                totals["restart_failed"] += 1
            else:
                ops = asyncio.run(write_until_killed(server, model, args.crash_writers, delay))
        if row.get("restart_failed"):
            check = check_server_trial(engine, directory, model, [])
            row.update(check)
            for k, v in check.get("violations", {}).items():
                totals[f"violation: {k}"] += v
            trials.append(row)
            log(f"server trial {trial}: restart failed: {row['error'][-300:]}")
            if not check.get("loaded"):
                break
            continue
        row["ops"] = dict(Counter(f"{o.kind} {o.state}" for o in ops))
        row["in_flight_at_kill"] = sum(o.state != "acked" for o in ops)
        errors = [o.answer for o in ops if (o.answer or "").startswith("before the kill")]
        row["errors_before_kill"] = errors
        totals["errors_before_kill"] += len(errors)
        row.update(check_server_trial(engine, directory, model, ops))
        totals["kills"] += 1
        totals["acked_ops"] += sum(o.state == "acked" for o in ops)
        totals["acknowledged_checked"] += row.get("acknowledged_checked", 0)
        totals["left_by_kill"] += bool(row.get("left_by_kill"))
        if not row["loaded"]:
            totals["load_failed"] += 1
        for k, v in row.get("violations", {}).items():
            totals[f"violation: {k}"] += v
        for k, v in row.get("unacknowledged", {}).items():
            totals[f"unacknowledged {k}"] += v
        trials.append(row)
        shown = ("delay_s", "ops", "unacknowledged", "violations", "strays", "documents")
        log(f"server trial {trial}: {json.dumps({k: row.get(k) for k in shown})}")
        if not row["loaded"]:
            log(f"  load failed: {row['load_error']}")
            break
    final: dict[str, Any] = {}  # the last kill's restart: start, count, a graceful stop
    with Server(directory, tmp / "crash-server.log") as server:
        try:
            health = server.wait_healthy()
            final = {"started": True, "documents": health["documents"]}
            final["exit_code"] = server.stop()
        except RuntimeError as exc:
            final = {"started": False, "error": str(exc)[-2000:]}
            totals["restart_failed"] += 1
    if final.get("documents") not in (None, model.base + len(model.present)):
        totals["violation: count_mismatch"] += 1
    summary = {
        "kills": totals["kills"],
        "restart_failed": totals["restart_failed"],
        "load_failed": totals["load_failed"],
        "acknowledged_ops": totals["acked_ops"],
        "acknowledged_checked": totals["acknowledged_checked"],
        "errors_before_kill": totals["errors_before_kill"],
        "kills_leaving_strays": totals["left_by_kill"],
        "violations": sum(v for k, v in totals.items() if k.startswith("violation")),
        "documents_end": model.base + len(model.present),
        **{k: v for k, v in totals.items() if k.startswith(("violation:", "unacknowledged"))},
    }
    return {"summary": summary, "final_restart": final, "trials": trials}


# -- part crash: a snapshot of journaled writes ---------------------------------------------


def journal_writes(engine: Any, directory: Path, model: Model, n: int) -> int:
    """``n`` acknowledged write batches, in-process (each one ``commit()``-ed); documents now."""
    from relevo import Document

    col = engine.load(directory)
    for _ in range(n):
        op = model.next_op()
        docs = [Document(id=i, title=t, text=x) for i, (t, x) in op.docs.items()]
        if op.kind == "add":
            col.add(docs)
        elif op.kind == "update":
            col.update(docs)
        else:
            col.delete(list(op.before))
        col.commit()
        model.apply(op)
        model.busy.clear()
    return len(col)


def crash_snapshot(
    args: Any, tmp: Path, engine: Any, rng: random.Random, directory: Path, model: Model
) -> dict[str, Any]:
    """Kill a snapshot (the whole collection as a new generation) of a journaled collection."""
    log_path = tmp / "crash-snapshot.log"
    cmd = snapshot_command(directory)
    runs = []
    for _ in range(3):  # the first compacts what the server loop journaled
        journal_writes(engine, directory, model, 3)
        runs.append(timed_run(cmd, directory, log_path))
    timing = typical(runs[1:])
    log(f"uninterrupted snapshots: {json.dumps(runs)}")
    trials: list[dict[str, Any]] = []
    totals: Counter[str] = Counter()
    for trial in range(args.snapshot_kills):
        journal_writes(engine, directory, model, 3)
        mode = "anytime" if trial % 2 == 0 else "during-save"
        row: dict[str, Any] = {
            "trial": trial,
            **kill_run(cmd, directory, mode, timing, rng, log_path),
        }
        row.update(check_server_trial(engine, directory, model, []))
        new = row["generation_after"] != row["generation_before"]
        row["outcome"] = "new" if new else "old"
        if not row["killed"] and row["exit_code"] == 0 and not new:
            row.setdefault("violations", {})["finished_but_old"] = 1
        totals["kills" if row["killed"] else "finished_before_kill"] += 1
        totals["left_by_kill"] += bool(row["left_by_kill"])
        totals["acknowledged_checked"] += row.get("acknowledged_checked", 0)
        totals[f"outcome {row['outcome']}"] += 1
        totals["loaded" if row["loaded"] else "load_failed"] += 1
        totals["violations"] += sum(row.get("violations", {}).values())
        trials.append(row)
        shown = ("mode", "kill_at_s", "killed", "outcome", "violations", "strays", "documents")
        log(f"snapshot trial {trial}: {json.dumps({k: row.get(k) for k in shown})}")
        if not row["loaded"]:
            log(f"  load failed: {row['load_error']}")
            break
    summary = {
        "kills": totals["kills"],
        "finished_before_kill": totals["finished_before_kill"],
        "kills_leaving_strays": totals["left_by_kill"],
        "loaded": totals["loaded"],
        "load_failed": totals["load_failed"],
        "old": totals["outcome old"],
        "new": totals["outcome new"],
        "acknowledged_checked": totals["acknowledged_checked"],
        "violations": totals["violations"],
        "snapshot_seconds": timing[0],
        "kill_window_s": timing[1],
        "documents_end": model.base + len(model.present),
    }
    return {"summary": summary, "uninterrupted": runs, "trials": trials}


# -- part crash: index build ----------------------------------------------------------------


def write_corpus(rows: Sequence[dict[str, Any]], folder: Path) -> set[str]:
    folder.mkdir(parents=True)
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    return {str(r["_id"]) for r in rows}


def build_command(corpus: Path, out: Path) -> list[str]:
    return [relevo_exe(), "index", "build", str(corpus), "--out", str(out), "--overwrite"]


#: A snapshot of a collection with journaled writes (the whole collection as a new generation).
SNAPSHOT_CODE = """
import sys
from relevo import Engine
col = Engine().load(sys.argv[1])
(getattr(col, "snapshot", None) or (lambda: col.save(col.path, overwrite=True)))()
"""


def snapshot_command(directory: Path) -> list[str]:
    return [sys.executable, "-c", SNAPSHOT_CODE, str(directory)]


def _new_generation(directory: Path, above: str | None) -> bool:
    return any(n.startswith("gen-") and (above is None or n > above) for n in os.listdir(directory))


def timed_run(cmd: list[str], out: Path, log_path: Path) -> dict[str, float | None]:
    """One uninterrupted writer run: seconds in all, until its new generation folder
    appeared, and until ``CURRENT`` named it."""
    from relevo.engine.generations import current_generation

    before = current_generation(out) if out.exists() else None
    proc = spawn(cmd, log_path)
    start, appeared, swapped = time.perf_counter(), None, None
    while proc.poll() is None:
        if out.exists():
            now = time.perf_counter() - start
            if appeared is None and _new_generation(out, before):
                appeared = now
            if swapped is None and current_generation(out) != before:
                swapped = now
        time.sleep(0.001)
    if reap(proc) != 0:
        raise RuntimeError(f"{shlex.join(cmd[:3])} failed:\n{tail(log_path)}")
    return {"seconds": time.perf_counter() - start, "appeared": appeared, "swapped": swapped}


def typical(runs: Sequence[dict[str, float | None]]) -> tuple[float, float]:
    """The fastest run's seconds, and (a bit more than) how long it wrote its new generation."""
    run = min(runs, key=lambda r: r["seconds"] or 0.0)
    seconds, appeared, swapped = run["seconds"] or 0.0, run["appeared"], run["swapped"]
    if appeared is None or swapped is None:
        return seconds, 0.3 * seconds
    return seconds, 1.25 * max(0.005, swapped - appeared)


def kill_run(
    cmd: list[str],
    directory: Path,
    mode: str,
    timing: tuple[float, float],
    rng: random.Random,
    log_path: Path,
) -> dict[str, Any]:
    """Start ``cmd`` (a writer of ``directory``) and SIGKILL it.

    ``anytime``: after a random share of its typical duration; ``during-save``: a random
    moment after its new generation folder appeared (while the generation is written; the
    window is a quarter longer than it took uninterrupted, so some kills land after the swap).
    """
    from relevo.engine.generations import current_generation

    duration, save_window = timing
    before = current_generation(directory)
    proc = spawn(cmd, log_path)
    start = time.perf_counter()
    if mode == "anytime":
        time.sleep(rng.uniform(0.05, 1.0) * duration)
    else:
        while proc.poll() is None and time.perf_counter() - start < 3 * duration:
            if _new_generation(directory, before):
                break
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, save_window))
    kill_at = time.perf_counter() - start
    was_running = proc.poll() is None
    kill_group(proc)
    rc = reap(proc)
    return {
        "mode": mode,
        "kill_at_s": round(kill_at, 3),
        "killed": was_running and rc == -signal.SIGKILL,
        "exit_code": rc,
        "generation_before": before,
        "generation_after": current_generation(directory),
        "listing_before_load": sorted(os.listdir(directory)),
        "left_by_kill": strays(directory),
    }


def crash_build(args: Any, tmp: Path, engine: Any, rng: random.Random) -> dict[str, Any]:
    rows = list(islice(common.read_corpus(DATASETS / DATASET), BUILD_DOCS * 3 // 2))
    # Two corpora of the same size with different ids: the live one is told by its ids.
    corpora = {
        "a": (tmp / "corpus-a", write_corpus(rows[:BUILD_DOCS], tmp / "corpus-a")),
        "b": (tmp / "corpus-b", write_corpus(rows[-BUILD_DOCS:], tmp / "corpus-b")),
    }
    texts = {str(r["_id"]): r.get("text", "") for r in rows}
    directory = tmp / "crash-build"
    log_path = tmp / "crash-build.log"
    # The first run warms the OS caches; the typical duration is the faster of the next two.
    timed_run(build_command(corpora["a"][0], directory), directory, log_path)
    runs = [timed_run(build_command(corpora[c][0], directory), directory, log_path) for c in "ba"]
    timing = typical(runs)
    live = "a"
    log(f"uninterrupted builds: {json.dumps(runs)}")
    trials: list[dict[str, Any]] = []
    totals: Counter[str] = Counter()
    for trial in range(args.build_kills):
        target = "a" if live == "b" else "b"
        mode = "anytime" if trial % 2 == 0 else "during-save"
        row: dict[str, Any] = {"trial": trial, "old": live, "new": target}
        cmd = build_command(corpora[target][0], directory)
        row.update(kill_run(cmd, directory, mode, timing, rng, log_path))
        rc = row["exit_code"]
        totals["left_by_kill"] += bool(row["left_by_kill"])
        violations: list[str] = []
        try:
            col = engine.load(directory)
        except Exception as exc:  # noqa: BLE001 - a failed load is the finding
            row.update(loaded=False, load_error=f"{type(exc).__name__}: {exc}")
            totals["load_failed"] += 1
            trials.append(row)
            log(f"build trial {trial}: load failed: {row['load_error']}")
            break
        ids = {d.id for d in col.docstore}
        which = next((name for name, (_, want) in corpora.items() if ids == want), None)
        if which is None:
            violations.append("neither_corpus")
        else:
            for i in rng.sample(sorted(ids), 20):
                if col.docstore.by_id(i).text != texts[i]:
                    violations.append("wrong_text")
                    break
            if not col.search("cancer cells", 10):
                violations.append("search_empty")
        outcome = "old" if which == live else "new" if which == target else "neither"
        if not row["killed"] and rc == 0 and outcome != "new":
            violations.append("finished_but_old")
        if not row["killed"] and rc not in (0, -signal.SIGKILL):
            violations.append(f"build_failed_rc_{rc}")
        left = strays(directory)
        if left:
            violations.append("stray_entries")
        row.update(
            loaded=True,
            outcome=outcome,
            documents=len(col),
            strays=left,
            violations=violations,
        )
        totals["kills" if row["killed"] else "finished_before_kill"] += 1
        totals["loaded"] += 1
        totals[f"outcome {outcome}"] += 1
        totals["violations"] += len(violations)
        if which is not None:
            live = which
        trials.append(row)
        shown = ("mode", "kill_at_s", "killed", "outcome", "strays", "violations")
        log(f"build trial {trial}: {json.dumps({k: row[k] for k in shown})}")
    summary = {
        "kills": totals["kills"],
        "finished_before_kill": totals["finished_before_kill"],
        "kills_leaving_strays": totals["left_by_kill"],
        "loaded": totals["loaded"],
        "load_failed": totals["load_failed"],
        "old": totals["outcome old"],
        "new": totals["outcome new"],
        "neither": totals["outcome neither"],
        "violations": totals["violations"],
        "build_seconds": timing[0],
        "kill_window_s": timing[1],
        "documents": BUILD_DOCS,
    }
    return {"summary": summary, "uninterrupted": runs, "trials": trials}


def part_crash(args: Any, tmp: Path) -> dict[str, Any]:
    from relevo import Engine

    engine = Engine()
    rng = random.Random(args.seed)
    meta: dict[str, Any] = {"command": command_line(), "load_average_start": common.load_average()}
    out: dict[str, Any] = {"meta": meta}
    if args.server_kills or args.snapshot_kills:
        directory, model = small_collection(engine, tmp, rng)
    if args.server_kills:
        out["server"] = crash_server(args, tmp, engine, rng, directory, model)
        log(f"server crash loop: {json.dumps(out['server']['summary'])}")
    if args.snapshot_kills:
        out["snapshot"] = crash_snapshot(args, tmp, engine, rng, directory, model)
        log(f"snapshot crash loop: {json.dumps(out['snapshot']['summary'])}")
    if args.build_kills:
        out["build"] = crash_build(args, tmp, engine, rng)
        log(f"build crash loop: {json.dumps(out['build']['summary'])}")
    meta["load_average_end"] = common.load_average()
    return out


# -- report ---------------------------------------------------------------------------------


def _ms(v: float | None) -> str:
    return "—" if v is None else f"{v:.1f}"


def write_markdown(results: dict[str, Any], path: Path) -> None:
    lines = ["# relevo serve: load and crash tests", ""]
    load = results.get("load")
    if load:
        m = load["meta"]
        s = results["settings"]["load"]
        lines += [
            f"## Search under load (SciFact, {m['queries']} test queries, k=10)",
            "",
            f"`{m['command']}` — {results['machine']['machine']}, {results['machine']['cpus']} CPUs "
            f"shared by client and server; load average {m['load_average_start'][0]:.1f} at start, "
            f"{m['load_average_end'][0]:.1f} at end. Each level: at most {s['requests']} requests "
            f"or {s['seconds']} s; a writer adds or deletes one document every {s['write_every']} s.",
            "",
        ]
        headers = [
            "pipeline",
            "clients",
            "QPS",
            "p50 ms",
            "p99 ms",
            "requests",
            "errors",
            "writes",
            "write errors",
            "write p50 ms",
        ]
        table = [
            [
                r["pipeline"],
                r["clients"],
                f"{r['qps']:.0f}",
                _ms(r["p50_ms"]),
                _ms(r["p99_ms"]),
                r["completed"],
                r["errors"],
                r["writes"],
                r["write_errors"],
                _ms(r["write_latency"]["p50_ms"]),
            ]
            for r in load["rows"]
        ]
        for pipe, b in load["paired"].items():
            ip = b["in_process"]
            cells = [pipe, "in-process", f"{ip['qps']:.0f}", _ms(ip["p50_ms"]), _ms(ip["p99_ms"])]
            table.append([*cells, b["queries"], "—", "—", "—", "—"])
        lines += common.md_table(headers, table, right=range(1, 10))
        lines += [
            "",
            "*in-process*: `Collection.search` in the benchmark's process, one thread, no writer, "
            "alternating query by query (in random order, 10 ms apart) with a 1-client HTTP "
            "request (same queries, so both see the "
            "same background load; same top-10 ids for "
            + ", ".join(f"{b['same_ids']}/{b['queries']} {p}" for p, b in load["paired"].items())
            + " queries). QPS of that row is 1 / mean latency.",
            "",
            "HTTP overhead at 1 client (p50 ms): *with writer* is the 1-client row above minus "
            "the in-process p50; *paired* is the median per-query difference of the alternating run.",
            "",
        ]
        lines += common.md_table(
            [
                "pipeline",
                "HTTP p50",
                "in-process p50",
                "overhead",
                "ratio",
                "paired HTTP p50",
                "paired overhead",
            ],
            [
                [
                    p,
                    _ms(o["http_p50_ms"]),
                    _ms(o["in_process_p50_ms"]),
                    _ms(o["overhead_ms"]),
                    f"{o['ratio']:.2f}x",
                    _ms(o["paired_http_p50_ms"]),
                    _ms(o["paired_overhead_p50_ms"]),
                ]
                for p, o in load["overhead"].items()
            ],
            right=range(1, 7),
        )
        t = m["threads"]
        lines += [
            "",
            f"Threads: torch {t['torch_threads']}, faiss OpenMP {t['faiss_omp_threads']}, "
            f"environment {t['env']} (server and client alike).",
        ]
        lines.append("")
    crash = results.get("crash")
    if crash:
        m = crash["meta"]
        lines += [
            "## kill -9",
            "",
            f"`{m['command']}` — load average {m['load_average_start'][0]:.1f} at start, "
            f"{m['load_average_end'][0]:.1f} at end. Every trial is in server.json.",
            "",
        ]
        loops = [k for k in CRASH_LOOPS if k in crash]
        keys = common.unique(k for loop in loops for k in crash[loop]["summary"])

        def cell(loop: str, key: str) -> str:
            v = crash[loop]["summary"].get(key, "—")
            return f"{v:.2f}" if isinstance(v, float) else str(v)

        lines += common.md_table(
            ["count", *(CRASH_LOOPS[k] for k in loops)],
            [[k.replace("_", " "), *(cell(loop, k) for loop in loops)] for k in keys],
            right=range(1, len(loops) + 1),
        )
        lines += [
            "",
            "*old* / *new*: which index or generation is live after the kill; *kills leaving "
            "strays*: kills after which the directory held an unfinished generation, removed by "
            "the next load (*strays* after that load count as violations).",
            "",
        ]
    path.write_text("\n".join(lines), "utf-8")


def write_plot(results: dict[str, Any], path: Path) -> None:
    plt = common.pyplot()
    load, crash = results.get("load"), results.get("crash")
    panels = [p for p in ("load", "crash") if results.get(p)]
    fig, axes = plt.subplots(
        1, max(1, len(panels)), figsize=(6 * max(1, len(panels)), 4), squeeze=False
    )
    i = 0
    if load:
        ax = axes[0][i]
        i += 1
        for pipe in common.unique(r["pipeline"] for r in load["rows"]):
            rows = [r for r in load["rows"] if r["pipeline"] == pipe]
            xs = [r["clients"] for r in rows]
            line = ax.plot(xs, [r["p50_ms"] for r in rows], marker="o", label=f"{pipe} p50")[0]
            ax.plot(
                xs,
                [r["p99_ms"] for r in rows],
                marker="o",
                ls="--",
                color=line.get_color(),
                label=f"{pipe} p99",
            )
            inproc = load["paired"].get(pipe, {}).get("in_process", {}).get("p50_ms")
            if inproc:
                ax.axhline(inproc, ls=":", color=line.get_color(), label=f"{pipe} in-process p50")
        clients = sorted({r["clients"] for r in load["rows"]})
        ax.set_xscale("log", base=2)
        ax.set_xticks(clients, [str(c) for c in clients])
        ax.set_yscale("log")
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel("search latency (ms)")
        ax.set_title("relevo serve, SciFact, writer running")
        ax.legend(fontsize=8)
    if crash:
        ax = axes[0][i]
        labels, values = [], []
        for loop in (k for k in CRASH_LOOPS if k in crash):
            c = crash[loop]["summary"]
            failed = c.get("load_failed", 0) + c.get("restart_failed", 0)
            labels += [f"{loop}: kills", f"{loop}: violations", f"{loop}: load failures"]
            values += [c["kills"], c["violations"], failed]
        ax.barh(labels, values)
        for y, v in enumerate(values):
            ax.text(v, y, f" {v}", va="center")
        ax.invert_yaxis()
        ax.set_title("kill -9: counts")
    fig.tight_layout()
    common.save_figure(fig, path)


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--part", choices=["load", "crash", "all"], default="all")
    ap.add_argument("--pipelines", nargs="+", choices=list(PIPELINES), default=list(PIPELINES))
    ap.add_argument("--embedder", default="minilm", help="embedder of the hybrid pipeline")
    ap.add_argument("--clients", nargs="+", type=int, default=[1, 8, 32])
    ap.add_argument("--requests", type=int, default=3000, help="most search requests per level")
    ap.add_argument("--seconds", type=float, default=30.0, help="most seconds per level")
    ap.add_argument("--write-every", type=float, default=0.5, help="seconds between writes")
    ap.add_argument("--server-kills", type=int, default=100)
    ap.add_argument("--build-kills", type=int, default=50)
    ap.add_argument(
        "--snapshot-kills", type=int, default=50, help="kills of a snapshot of journaled writes"
    )
    ap.add_argument("--crash-writers", type=int, default=2, help="concurrent writing clients")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--omp-threads",
        type=int,
        help="set OMP_NUM_THREADS / MKL_NUM_THREADS for the server and in-process search "
        "(default: unset, the libraries' defaults)",
    )
    ap.add_argument(
        "--cache", type=Path, help="collection cache (default <relevo cache>/bench-server)"
    )
    common.add_out(ap)
    ap.add_argument("--name", default="server", help="basename of the result files")
    args = ap.parse_args()
    common.quiet_transformers()
    if args.omp_threads:  # before torch / faiss are imported; subprocesses inherit it
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(args.omp_threads)

    old = args.out / f"{args.name}.json"
    previous = json.loads(old.read_text("utf-8")) if old.exists() else {}
    results: dict[str, Any] = {k: previous[k] for k in ("load", "crash") if k in previous}
    results["settings"] = dict(previous.get("settings", {}))
    from relevo import __version__

    results["machine"] = common.machine_info()
    results["versions"] = {
        "relevo": __version__,
        **{
            d: common.dist_version(d) for d in ("httpx", "fastapi", "uvicorn", "faiss-cpu", "torch")
        },
    }
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    settings.update(
        dataset=DATASET, crash_docs=CRASH_DOCS, build_docs=BUILD_DOCS, server_log_level="warning"
    )
    tmp = Path(tempfile.mkdtemp(prefix="relevo-bench-server-"))
    try:
        if args.part in ("load", "all"):
            results["load"] = part_load(args, tmp)
            results["settings"]["load"] = settings
        if args.part in ("crash", "all"):
            results["crash"] = part_crash(args, tmp)
            results["settings"]["crash"] = settings
    finally:
        _kill_leftovers()
        shutil.rmtree(tmp, ignore_errors=True)
    md = common.write_results(
        args.out, args.name, results, markdown=write_markdown, plot=write_plot
    )
    print(md.read_text("utf-8"))


if __name__ == "__main__":
    main()
