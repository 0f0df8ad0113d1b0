"""Helpers shared by relevo's trainers: output folder, checkpoints, schedule, loss summary.

Both :mod:`relevo.training.cross_encoder` and :mod:`relevo.training.embedder` write
``OUT/checkpoint/`` the same way: the model (saved by a trainer-specific callable),
the optimizer state keyed by parameter name in ``optimizer.safetensors`` (plus the
torch and CUDA RNG states), and ``trainer_state.json`` with the step, the settings
fingerprint, the optimizer's param groups and the scheduler state: no pickle. The
checkpoint is replaced atomically (:func:`relevo.engine.manifest.atomic_directory`),
so a crash mid-save leaves the previous one.

Heavy imports (torch, safetensors) happen inside the functions.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..engine.errors import ConfigError

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.safetensors"


@dataclass(frozen=True)
class StepInfo:
    """Handed to the ``on_step`` callback after every optimizer step."""

    step: int
    total: int
    start: int
    loss: float
    lr: float
    seconds: float


# -- output folder ---------------------------------------------------------------------------
def checkpoint_path(out: Path) -> Path | None:
    """``OUT/checkpoint`` if it holds a trainer state, else the newest surviving old one."""
    ckpt = out / CHECKPOINT_DIR
    if (ckpt / STATE_FILE).is_file():
        return ckpt
    # a crash between the two renames of atomic_directory leaves only the previous one
    olds = sorted(out.glob(f".{CHECKPOINT_DIR}.old-*"), key=lambda p: p.stat().st_mtime)
    for old in reversed(olds):
        if (old / STATE_FILE).is_file():
            return old
    return None


def checkpoint_kind(ckpt: Path) -> str | None:
    """The ``kind`` recorded in a checkpoint's trainer state (None if absent or unreadable)."""
    try:
        return json.loads((ckpt / STATE_FILE).read_text("utf-8")).get("kind")
    except (OSError, ValueError):
        return None


def check_out(
    out: Path,
    *,
    resume: bool,
    overwrite: bool,
    report_file: str,
    model: str,
    folder: str = "relevo training folder",
    kind: str | None = None,
) -> Path | None:
    """Refuse folders we must not touch; return the checkpoint to resume from, if any.

    Args:
        out: the run's output folder.
        resume: continue from its checkpoint (one must exist).
        overwrite: replace a finished model (``report_file`` present) or a checkpoint.
        report_file: the file that marks a finished model of this trainer.
        model: what a finished model is called in messages (``reranker``, ``embedder``).
        folder: what a folder of this trainer is called in the last message.
        kind: when given, a checkpoint must record this ``kind`` (others are refused).
    """
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder.")
    ckpt = checkpoint_path(out) if out.is_dir() else None
    if kind is not None and ckpt is not None and checkpoint_kind(ckpt) != kind:
        raise ConfigError(
            f"{out} holds the checkpoint of another kind of training (not an {kind}); choose another --out."
        )
    if resume:
        if ckpt is None:
            raise ConfigError(
                f"nothing to resume: {out / CHECKPOINT_DIR} holds no checkpoint. Drop --resume to start."
            )
        return ckpt
    if not out.is_dir() or not any(out.iterdir()):
        return None
    if ckpt is not None:
        if not overwrite:
            raise ConfigError(
                f"{out} holds a checkpoint of an unfinished run; pass --resume to continue it or --overwrite to start over."
            )
        shutil.rmtree(ckpt)
        return None
    if (out / report_file).is_file():
        if not overwrite:
            raise ConfigError(
                f"{out} already holds a trained {model}; pass --overwrite to replace it."
            )
        return None
    raise ConfigError(f"{out} exists and is not a {folder}; choose another --out.")


def read_checkpoint_state(ckpt: Path | None, fingerprint: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's trainer state ({} without one), refused if made with other settings."""
    if ckpt is None:
        return {}
    prior = json.loads((ckpt / STATE_FILE).read_text("utf-8"))
    saved = prior.get("config", {})
    diff = sorted(k for k in set(saved) | set(fingerprint) if saved.get(k) != fingerprint.get(k))
    if diff:
        raise ConfigError(
            f"checkpoint {ckpt} was made with different settings ({', '.join(diff)}); "
            "resume with the same ones, or start over with --overwrite."
        )
    return prior


# -- checkpoints -----------------------------------------------------------------------------
def save_checkpoint(
    out: Path,
    state: dict[str, Any],
    *,
    optimizer: Any,
    scheduler: Any,
    names: Sequence[str],
    save_model: Callable[[Path], None],
) -> None:
    """Replace ``OUT/checkpoint`` atomically with the model, optimizer, scheduler and RNG states.

    Args:
        out: the run's output folder.
        state: the trainer's JSON state (step, losses, fingerprint...).
        optimizer / scheduler: the torch optimizer and LR scheduler.
        names: trainable parameter names in optimizer order; they key the optimizer state.
        save_model: writes the model (and tokenizer) into the folder it is given.
    """
    import torch
    from safetensors.torch import save_file

    from ..engine.manifest import atomic_directory

    out.mkdir(parents=True, exist_ok=True)
    # Replaced atomically: a crash mid-save leaves the previous checkpoint intact.
    with atomic_directory(out / CHECKPOINT_DIR, overwrite=True) as tmp:
        save_model(tmp)
        opt = optimizer.state_dict()
        tensors: dict[str, Any] = {}
        for idx, entry in opt["state"].items():
            for k, v in entry.items():
                tensors[f"{names[idx]}/{k}"] = v.detach().to("cpu").contiguous()
        tensors["rng/torch"] = torch.get_rng_state()
        if torch.cuda.is_available():
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                tensors[f"rng/cuda.{i}"] = s
        save_file(tensors, str(tmp / OPTIMIZER_FILE))
        payload = {
            **state,
            "param_names": list(names),
            "param_groups": opt["param_groups"],
            # plain numbers; lr_lambdas is [None, ...] for functions
            "scheduler": scheduler.state_dict(),
        }
        (tmp / STATE_FILE).write_text(json.dumps(payload, indent=1), "utf-8")
    for stale in out.glob(f".{CHECKPOINT_DIR}.old-*"):
        shutil.rmtree(stale, ignore_errors=True)


def load_optimizer_state(
    ckpt: Path,
    state: dict[str, Any],
    *,
    optimizer: Any,
    scheduler: Any,
    names: Sequence[str],
    device: str | None = None,
) -> None:
    """Restore what :func:`save_checkpoint` saved: optimizer, scheduler and RNG states.

    ``device``: move the optimizer tensors there before loading (None: leave them on CPU
    for ``optimizer.load_state_dict`` to place).
    """
    import torch
    from safetensors.torch import load_file

    names = list(names)
    if state.get("param_names") != names:
        raise ConfigError(
            f"checkpoint {ckpt} was saved for other model parameters; start over with --overwrite."
        )
    tensors = load_file(str(ckpt / OPTIMIZER_FILE))
    index = {n: i for i, n in enumerate(names)}
    opt_state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("rng/"):
            continue
        pname, _, field_name = key.rpartition("/")
        opt_state.setdefault(index[pname], {})[field_name] = (
            value if device is None else value.to(device)
        )
    optimizer.load_state_dict({"state": opt_state, "param_groups": state["param_groups"]})
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(tensors["rng/torch"])
    cuda = [tensors[k] for k in sorted(t for t in tensors if t.startswith("rng/cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


# -- optimisation ----------------------------------------------------------------------------
def lr_lambda(total: int, warmup: int) -> Callable[[int], float]:
    """Linear warm-up over ``warmup`` steps, then linear decay to zero at ``total``."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return f


def no_decay(name: str) -> bool:
    """Parameters AdamW does not decay: biases and layer norms."""
    return name.endswith(".bias") or "LayerNorm" in name or "layer_norm" in name


# -- reports ---------------------------------------------------------------------------------
def final_loss(losses: list[float]) -> float:
    """Mean of the last 20 losses: one step's loss is too noisy to report."""
    tail = losses[-min(20, len(losses)) :] if losses else []
    return float(np.mean(tail)) if tail else float("nan")


def loss_summary(losses: list[float]) -> dict[str, Any]:
    """``first_loss`` (mean of the first 20), ``final_loss`` and ``loss_curve`` (means of 10)."""
    return {
        "first_loss": float(np.mean(losses[: min(20, len(losses))])) if losses else None,
        "final_loss": final_loss(losses),
        "loss_curve": [
            round(float(np.mean(losses[i : i + 10])), 4) for i in range(0, len(losses), 10)
        ],
    }


__all__ = [
    "CHECKPOINT_DIR",
    "OPTIMIZER_FILE",
    "STATE_FILE",
    "StepInfo",
    "check_out",
    "checkpoint_kind",
    "checkpoint_path",
    "final_loss",
    "load_optimizer_state",
    "loss_summary",
    "lr_lambda",
    "no_decay",
    "read_checkpoint_state",
    "save_checkpoint",
]
