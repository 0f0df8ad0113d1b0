"""GPU verification run (issue 13): relevo's CUDA paths against its own CPU paths.

Run by ``benchmarks/gpu_check.sh`` on a machine with one GPU, CUDA torch, transformers
and sentence-transformers but no faiss (so the exact-search backend verified is
``torch-flat``). Measures, and writes to ``OUT/gpu-check.json`` (+ ``.md``):

- ``torch-flat`` at ``--docs`` (1M) x 384 synthetic clustered unit vectors: build
  seconds, batch QPS (``--queries`` queries in one call) and single-query QPS on the GPU
  (float16 storage + float32 rescoring, relevo's default there) and on the CPU (float32,
  all cores, a ``--cpu-queries`` subset), recall@10 of each against an exact float32
  search, and the bare ``torch.topk(Q @ X.T)`` on the GPU for reference;
- MiniLM (relevo's ``sentence-transformers`` embedder on the folder ``--model``)
  documents/s on the GPU in float16 and float32 vs the CPU, and how close the float16
  vectors are to the float32 ones;
- cross-encoder (relevo's ``cross-encoder`` reranker) pairs/s on the GPU (float16) vs
  the CPU. The model is MiniLM's encoder with a fresh one-logit head, which is how
  ``relevo train reranker`` starts; throughput depends on the architecture only.

Each part that cannot run here (no CUDA, no model folder) is recorded as skipped with the
reason, so the script also runs on a CPU machine (small ``--docs``) to check itself.

Usage::

    PYTHONPATH=src python benchmarks/gpu_check.py --model DIR --texts corpus.jsonl --out OUT
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from _common import clustered_unit_vectors

K = 10


def best_of(fn: Callable[[], Any], repeats: int = 3) -> float:
    """Best wall seconds of ``repeats`` calls (after the first, a warm-up)."""
    fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return min(out)


def cuda_sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    """``n`` unit vectors around 1,000 shared random centres (a corpus with structure)."""
    out = np.empty((n, dim), np.float32)
    step = 200_000
    for s in range(0, n, step):
        out[s : s + step] = clustered_unit_vectors(min(step, n - s), dim, seed=(seed, s))
    return out


def exact_topk(x: np.ndarray, q: np.ndarray, k: int, device: str) -> np.ndarray:
    """Exact float32 top-k positions (chunked over queries)."""
    import torch

    xt = torch.from_numpy(x).to(device)
    out = []
    for s in range(0, len(q), 1024):
        qt = torch.from_numpy(q[s : s + 1024]).to(device)
        out.append(torch.topk(qt @ xt.T, k, dim=1).indices.cpu().numpy())
    del xt
    return np.concatenate(out)


def recall(pos: np.ndarray, ref: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(pos, ref, strict=True)]))


def check_search(args: argparse.Namespace, has_cuda: bool) -> dict[str, Any]:
    import torch

    from relevo.indexes.torch_index import TorchFlatIndex

    dim = 384
    t0 = time.perf_counter()
    x = clustered(args.docs, dim, 1)
    q = clustered(args.queries, dim, 2)
    out: dict[str, Any] = {"docs": args.docs, "dim": dim, "queries": args.queries, "k": K}
    out["generate_s"] = time.perf_counter() - t0
    truth_device = "cuda" if has_cuda else "cpu"
    n_cpu = min(args.cpu_queries, args.queries)
    ref = exact_topk(x, q if has_cuda else q[:n_cpu], K, truth_device)
    out["cpu_threads"] = torch.get_num_threads()

    def measure(index: Any, queries: np.ndarray, single: int, sync: bool) -> dict[str, Any]:
        def batch() -> Any:
            r = index.search(queries, K)
            if sync:
                cuda_sync()
            return r

        t_batch = best_of(batch)
        singles = [queries[i : i + 1] for i in range(min(single, len(queries)))]

        def one_by_one() -> None:
            for s in singles:
                index.search(s, K)
            if sync:
                cuda_sync()

        t_single = best_of(one_by_one, 2)
        _, pos = index.search(queries, K)
        return {
            "batch_qps": len(queries) / t_batch,
            "single_qps": len(singles) / t_single,
            "recall_at_10": recall(pos, ref[: len(queries)]),
            "describe": {
                key: index.describe().get(key)
                for key in ("device_used", "dtype_used", "score_budget")
            },
        }

    # CPU path: float32, exact, on a query subset (a 1M-doc CPU search is ~100x slower).
    cpu = TorchFlatIndex(device="cpu")
    t0 = time.perf_counter()
    cpu.add(x)
    cpu.search(q[:1], K)
    out["cpu_build_s"] = time.perf_counter() - t0
    out["cpu"] = measure(cpu, q[:n_cpu], 50, False)
    out["cpu"]["queries"] = n_cpu
    del cpu
    if not has_cuda:
        out["gpu"] = {"skipped": "torch sees no CUDA GPU"}
        return out
    gpu = TorchFlatIndex()  # auto: CUDA, float16 storage, float32 rescoring
    t0 = time.perf_counter()
    gpu.add(x)
    gpu.search(q[:1], K)
    cuda_sync()
    out["gpu_build_s"] = time.perf_counter() - t0
    out["gpu"] = measure(gpu, q, 500, True)
    out["gpu"]["peak_gpu_bytes"] = int(torch.cuda.max_memory_allocated())
    out["gpu_over_cpu_batch"] = out["gpu"]["batch_qps"] / out["cpu"]["batch_qps"]
    out["gpu_over_cpu_single"] = out["gpu"]["single_qps"] / out["cpu"]["single_qps"]
    del gpu
    torch.cuda.empty_cache()
    # bare reference: the same fp16 matmul + topk without relevo (no fp32 rescoring)
    xt = torch.from_numpy(x).to("cuda", torch.float16)
    qt = torch.from_numpy(q).to("cuda", torch.float16)

    def bare() -> Any:
        res = [torch.topk(qt[s : s + 4096] @ xt.T, K, dim=1) for s in range(0, len(qt), 4096)]
        cuda_sync()
        return res

    t = best_of(bare)
    pos = np.concatenate([r.indices.cpu().numpy() for r in bare()])
    out["gpu_bare_fp16_topk"] = {"batch_qps": len(q) / t, "recall_at_10": recall(pos, ref)}
    xt = qt = None  # free the GPU copies
    torch.cuda.empty_cache()
    return out


def read_texts(path: Path, n: int) -> list[str]:
    texts = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            d = json.loads(line)
            texts.append(f"{d.get('title') or ''} {d.get('text') or ''}".strip())
            if len(texts) >= n:
                break
    return texts


def check_embedding(args: argparse.Namespace, has_cuda: bool) -> dict[str, Any]:
    from relevo.plugins.sentence_transformers import SentenceTransformerEmbedder

    texts = read_texts(args.texts, args.embed_docs)
    cpu_texts = texts[: args.cpu_embed_docs]
    out: dict[str, Any] = {
        "model": str(args.model),
        "mean_chars": float(np.mean([len(t) for t in texts])),
    }
    cpu = SentenceTransformerEmbedder(str(args.model), device="cpu", batch_size=32)
    t = best_of(lambda: cpu.embed(cpu_texts, kind="document"), 1)
    out["cpu"] = {"docs": len(cpu_texts), "docs_per_s": len(cpu_texts) / t, "batch_size": 32}
    ref = cpu.embed(cpu_texts, kind="document")
    if not has_cuda:
        out["gpu"] = {"skipped": "torch sees no CUDA GPU"}
        return out
    for dtype in ("float16", "float32"):
        emb = SentenceTransformerEmbedder(
            str(args.model), device="cuda", dtype=dtype, batch_size=128
        )

        def run(emb: Any = emb) -> Any:
            v = emb.embed(texts, kind="document")
            cuda_sync()
            return v

        t = best_of(run, 2)
        vecs = emb.embed(cpu_texts, kind="document")
        out[f"gpu_{dtype}"] = {
            "docs": len(texts),
            "docs_per_s": len(texts) / t,
            "batch_size": 128,
            "dtype_used": emb.dtype_used,
            "min_cosine_vs_cpu": float(np.min(np.sum(vecs * ref, axis=1))),
        }
    out["gpu_float16_over_cpu"] = out["gpu_float16"]["docs_per_s"] / out["cpu"]["docs_per_s"]
    return out


def check_cross_encoder(args: argparse.Namespace, has_cuda: bool) -> dict[str, Any]:
    import transformers

    from relevo.plugins.cross_encoder import CrossEncoderReranker

    texts = read_texts(args.texts, 100)
    queries = ["what causes the disease", "effect of the protein on cells", "treatment outcome"]
    with tempfile.TemporaryDirectory() as tmp:
        head = transformers.AutoModelForSequenceClassification.from_pretrained(
            str(args.model), num_labels=1
        )
        head.save_pretrained(tmp)
        transformers.AutoTokenizer.from_pretrained(str(args.model)).save_pretrained(tmp)
        out: dict[str, Any] = {"model": "MiniLM-L6 encoder + fresh 1-logit head", "max_length": 256}
        cpu = CrossEncoderReranker(tmp, device="cpu", max_length=256, batch_size=32)
        t = best_of(lambda: cpu.score(queries[0], texts), 1)
        out["cpu"] = {"pairs": len(texts), "pairs_per_s": len(texts) / t}
        ref = np.asarray(cpu.score(queries[0], texts))
        if not has_cuda:
            out["gpu"] = {"skipped": "torch sees no CUDA GPU"}
            return out
        gpu = CrossEncoderReranker(tmp, device="cuda", max_length=256, batch_size=128)

        def run() -> None:
            for qq in queries:
                gpu.score(qq, texts)
            cuda_sync()

        t = best_of(run, 2)
        got = np.asarray(gpu.score(queries[0], texts))
        out["gpu"] = {
            "pairs": len(texts) * len(queries),
            "pairs_per_s": len(texts) * len(queries) / t,
            "dtype_used": gpu.dtype_used,
            "max_abs_diff_vs_cpu": float(np.max(np.abs(got - ref))),
            "rank_agreement_top10": len(set(np.argsort(-got)[:10]) & set(np.argsort(-ref)[:10]))
            / 10,
        }
        out["gpu_over_cpu"] = out["gpu"]["pairs_per_s"] / out["cpu"]["pairs_per_s"]
    return out


def markdown(r: dict[str, Any]) -> str:
    lines = [
        "# GPU check: relevo's CUDA paths vs its CPU paths",
        "",
        f"{r['machine']['gpu'] or 'no GPU'}; torch {r['machine']['torch']} (CUDA "
        f"{r['machine']['cuda']}), {r['machine']['cpus']} CPUs; {r['seconds']:.0f} s in all.",
        "",
    ]
    s = r.get("search", {})
    if "cpu" in s:
        lines += [
            f"## torch-flat, {s['docs']:,} x {s['dim']} (clustered synthetic), top-{s['k']}",
            "",
            "| path | batch QPS | single QPS | recall@10 vs exact fp32 |",
            "|---|---:|---:|---:|",
        ]
        for key in ("gpu", "cpu", "gpu_bare_fp16_topk"):
            row = s.get(key)
            if not row or "skipped" in row:
                continue
            single = f"{row['single_qps']:,.0f}" if "single_qps" in row else ""
            lines.append(
                f"| {key} | {row['batch_qps']:,.0f} | {single} | {row['recall_at_10']:.4f} |"
            )
        lines.append("")
    for name, unit in (("embedding", "docs_per_s"), ("cross_encoder", "pairs_per_s")):
        part = r.get(name, {})
        rows = [(k, v) for k, v in part.items() if isinstance(v, dict) and unit in v]
        if rows:
            lines += [f"## {name}", "", f"| path | {unit.replace('_', ' ')} |", "|---|---:|"]
            lines += [f"| {k} | {v[unit]:,.1f} |" for k, v in rows]
            lines.append("")
    skipped = [f"{k}: {v}" for k, v in r.get("skipped", {}).items()]
    if skipped:
        lines += ["Skipped: " + "; ".join(skipped), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--cpu-queries", type=int, default=500)
    ap.add_argument("--model", type=Path, help="a sentence-transformers MiniLM folder")
    ap.add_argument("--texts", type=Path, help="a BEIR corpus.jsonl to embed / rerank")
    ap.add_argument("--embed-docs", type=int, default=2000)
    ap.add_argument("--cpu-embed-docs", type=int, default=200)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args(argv)
    import torch

    has_cuda = torch.cuda.is_available()
    t0 = time.perf_counter()
    result: dict[str, Any] = {
        "benchmark": "gpu-check",
        "machine": {
            "gpu": torch.cuda.get_device_name(0) if has_cuda else None,
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "skipped": {},
    }
    parts: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("search", lambda: check_search(args, has_cuda))
    ]
    if args.model and args.texts:
        parts += [
            ("embedding", lambda: check_embedding(args, has_cuda)),
            ("cross_encoder", lambda: check_cross_encoder(args, has_cuda)),
        ]
    else:
        result["skipped"]["embedding, cross_encoder"] = "no --model / --texts given"
    for name, fn in parts:
        print(f"gpu_check: {name} ...", file=sys.stderr, flush=True)
        t = time.perf_counter()
        try:
            result[name] = fn()
        except Exception as exc:  # noqa: BLE001 - one failed part must not lose the others
            result[name] = {"error": f"{type(exc).__name__}: {exc}"}
        result[name]["seconds"] = time.perf_counter() - t
        print(json.dumps(result[name], default=str)[:2000], file=sys.stderr, flush=True)
    result["seconds"] = time.perf_counter() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu-check.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (args.out / "gpu-check.md").write_text(markdown(result) + "\n")
    print(f"wrote {args.out / 'gpu-check.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
