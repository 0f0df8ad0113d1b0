"""What the ``bench_*.py`` scripts share: paths, BEIR files, timing, machine facts, result files.

The scripts run as ``python benchmarks/bench_X.py``, so this folder is on ``sys.path`` and
they ``import _common``. Nothing here imports relevo, numpy or matplotlib at import time.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
#: Where every script writes ``NAME.json``, ``NAME.md`` and ``NAME.png`` by default.
RESULTS = REPO / "benchmarks" / "results"
#: Each timed repeat loops a function for about this long and takes the mean per call.
MIN_REPEAT_S = 0.3


# -- datasets ---------------------------------------------------------------------------------


def datasets_dir() -> Path:
    """The BEIR datasets root: ``$RELEVO_DATASETS``, else ``../shared/datasets``."""
    env = os.environ.get("RELEVO_DATASETS")
    return Path(env) if env else REPO.parent / "shared" / "datasets"


def read_corpus(root: Path) -> Iterator[dict[str, Any]]:
    """The rows of ``root/corpus.jsonl.gz``, in file order."""
    with gzip.open(root / "corpus.jsonl.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            yield json.loads(line)


def read_qrels(root: Path, split: str = "test") -> dict[str, dict[str, int]]:
    """``root/qrels/<split>.tsv`` (with its header line) as ``{query id: {doc id: grade}}``."""
    qrels: dict[str, dict[str, int]] = {}
    with open(root / "qrels" / f"{split}.tsv", encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t")
        next(reader)  # header: query-id corpus-id score
        for qid, did, score in reader:
            qrels.setdefault(qid, {})[did] = int(score)
    return qrels


def read_queries(root: Path, only: Iterable[str] | None = None) -> list[tuple[str, str]]:
    """``(query id, text)`` from ``root/queries.jsonl`` in file order, optionally only ``only``."""
    keep = None if only is None else set(only)
    out = []
    with open(root / "queries.jsonl", encoding="utf-8") as fh:
        for line in fh:
            q = json.loads(line)
            if keep is None or str(q["_id"]) in keep:
                out.append((str(q["_id"]), q["text"]))
    return out


# -- timing -----------------------------------------------------------------------------------


def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """``fn(*args, **kwargs)`` and the wall-clock seconds it took."""
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def timed_cpu(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float, float]:
    """``fn(*args, **kwargs)``, and the wall-clock and CPU seconds (this process) it took."""
    start, start_cpu = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start, time.process_time() - start_cpu


def calls_for(fn: Callable[[], Any], min_time: float) -> tuple[int, Any]:
    """Calls of ``fn`` that last about ``min_time`` (one untimed call calibrates it)."""
    out, once = timed(fn)
    return max(1, int(min_time / max(once, 1e-9))), out


def interleaved_best(
    fns: dict[str, Callable[[], Any]], repeats: int, min_time: float = MIN_REPEAT_S
) -> dict[str, tuple[float, float, Any]]:
    """Best wall-clock and CPU seconds per call of each function, and its last output.

    Each repeat times every function in turn, so all systems see the same background
    load (the machine may be shared); a repeat loops a function for about ``min_time``
    and takes the mean, so a 5 ms batch is never timed once. CPU time (this process,
    all threads) is what a busy machine does not inflate: waiting for a core is not
    counted.
    """
    plan = {label: calls_for(fn, min_time) for label, fn in fns.items()}
    wall = dict.fromkeys(fns, float("inf"))
    cpu = dict.fromkeys(fns, float("inf"))
    outputs = {label: out for label, (_, out) in plan.items()}
    for _ in range(repeats):
        for label, fn in fns.items():
            calls = plan[label][0]
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(calls):
                outputs[label] = fn()
            wall[label] = min(wall[label], (time.perf_counter() - start) / calls)
            cpu[label] = min(cpu[label], (time.process_time() - start_cpu) / calls)
    return {label: (wall[label], cpu[label], outputs[label]) for label in fns}


# -- the machine ------------------------------------------------------------------------------


def python_version() -> str:
    return platform.python_version()


def machine_info() -> dict[str, Any]:
    """Architecture, processor, Python version and CPU count of this machine."""
    return {
        "machine": platform.machine(),
        "processor": platform.processor(),
        "python": python_version(),
        "cpus": os.cpu_count(),
    }


def machine_line() -> str:
    """``"x86_64, 16 CPUs"``."""
    return f"{platform.machine()}, {os.cpu_count()} CPUs"


def load_average() -> list[float]:
    """The 1-, 5- and 15-minute load averages, rounded: how busy a shared machine was."""
    return [round(x, 2) for x in os.getloadavg()]


def thread_env(*names: str) -> dict[str, str | None]:
    """The thread-count environment variables ``names`` as set (``None`` when unset)."""
    return {v: os.environ.get(v) for v in names}


def dist_version(name: str) -> str | None:
    """The installed version of distribution ``name``, or ``None``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


# -- synthetic vectors ------------------------------------------------------------------------


def clustered_unit_vectors(n: int, dim: int, seed: Any, centers: int = 1000) -> Any:
    """``n`` unit vectors around ``centers`` random unit centres (seeded; numpy array).

    A corpus with structure, so approximate indexes meet clusters rather than uniform
    noise. The centres depend only on ``dim`` (seed 0); ``seed`` (an int or tuple) picks
    the points, so corpus blocks and queries drawn with other seeds share the clusters.
    """
    import numpy as np

    c = np.random.default_rng(0).standard_normal((centers, dim)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    x = c[rng.integers(0, centers, n)]
    x += 0.35 * rng.standard_normal((n, dim), dtype=np.float32) / np.sqrt(dim)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


# -- command line -----------------------------------------------------------------------------


def parser(doc: str | None, *, summary_only: bool = False) -> argparse.ArgumentParser:
    """An argument parser described by the script's docstring (or its first line)."""
    if summary_only:
        return argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    return argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def add_out(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--out", type=Path, default=RESULTS)


def add_datasets(ap: argparse.ArgumentParser, default: Sequence[str]) -> None:
    ap.add_argument("--datasets", nargs="+", default=list(default))


def add_repeats(ap: argparse.ArgumentParser, default: int = 3) -> None:
    ap.add_argument("--repeats", type=int, default=default)


def quiet_transformers() -> None:
    """Keep transformers' warnings out of the benchmark's output."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


# -- result files -----------------------------------------------------------------------------


def md_table(
    headers: Sequence[str], rows: Iterable[Sequence[Any]], *, right: Iterable[int] = ()
) -> list[str]:
    """Markdown table lines; columns whose index is in ``right`` are right-aligned."""
    right = set(right)
    rule = ["---:" if i in right else "---" for i in range(len(headers))]
    return [_md_row(headers), "|" + "|".join(rule) + "|", *(_md_row(r) for r in rows)]


def _md_row(cells: Sequence[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> None:
    fig.savefig(path, dpi=120)
    pyplot().close(fig)


def write_results(
    out: Path,
    name: str,
    payload: Any,
    *,
    markdown: Callable[[Any, Path], None],
    plot: Callable[[Any, Path], None],
) -> Path:
    """Write ``out/NAME.json`` (``payload``), then ``NAME.md`` and ``NAME.png`` from it.

    ``markdown`` and ``plot`` get the payload and the path to write, so a report can be
    redrawn from a saved JSON file. Returns the markdown file's path.
    """
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n", "utf-8")
    markdown(payload, out / f"{name}.md")
    plot(payload, out / f"{name}.png")
    return out / f"{name}.md"


def unique(values: Iterable[Any]) -> list[Any]:
    """``values`` without repeats, in first-seen order."""
    return list(dict.fromkeys(values))


def relevo_bin() -> str:
    """The ``relevo`` script next to this interpreter (the venv's)."""
    return str(Path(sys.executable).with_name("relevo"))


def run_logged(cmd: list[str], log_path: Path) -> tuple[float, str]:
    """Run ``cmd`` (stderr to ``log_path``); its wall seconds and stdout. Raises on failure."""
    import shlex
    import subprocess

    print("$", shlex.join(cmd), file=sys.stderr, flush=True)
    start = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=log, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = log_path.read_text("utf-8", errors="replace")[-2000:]
        raise RuntimeError(f"{shlex.join(cmd)} failed (rc {proc.returncode}):\n{tail}")
    return wall, proc.stdout
