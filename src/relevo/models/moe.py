"""Mixture-of-experts bi-encoders: a transformer's feed-forward blocks become N experts.

The seed paper ("Contrastive Learning and Mixture of Experts Enables Precise Vector
Embeddings") turns a pretrained bi-encoder's MLPs into N copies and *enforces* the routing
by domain: each domain's texts go through its own expert, the attention and embeddings
stay shared. Here:

- :func:`convert` rewrites chosen layers of a sentence-transformers model in place: each
  layer's ``intermediate`` and ``output`` modules (the FFN, BERT-style) become a
  :class:`RoutedModule` holding N copies. Before training, every expert equals the original,
  so a converted model embeds exactly like the model it came from.
- Routing is one expert per forward (a whole batch of one domain) or one per row; a
  :class:`MoEModel` sets it for the duration of a call (:meth:`MoEModel.routing`).
- The router used when a text has no domain is a linear classifier over the mean of the
  text's input word embeddings (before any transformer layer, so routing costs a lookup,
  not a forward pass), fitted on the domains' texts (:meth:`MoEModel.fit_router`).

On disk an MoE model is an ordinary sentence-transformers folder holding expert 0 (it loads
and embeds as a dense model), plus ``moe.json`` (domains, expert layers, router facts),
``experts.safetensors`` (experts 1..N-1 of every routed layer) and
``router.safetensors``. No pickle anywhere.
"""

from __future__ import annotations

import contextlib
import copy
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..engine.errors import ConfigError, CorruptIndexError

FORMAT = "relevo-moe"
FORMAT_VERSION = 1
CONFIG_FILE = "moe.json"
EXPERTS_FILE = "experts.safetensors"
ROUTER_FILE = "router.safetensors"


def _torch() -> Any:
    import torch

    return torch


def _routed_class() -> type:
    torch = _torch()

    class _Routed(torch.nn.Module):  # type: ignore[name-defined]
        """N copies of one module; rows of the inputs go to the expert the routing names."""

        def __init__(self, original: Any, n: int, state: _RoutingState) -> None:
            super().__init__()
            self.experts = torch.nn.ModuleList([copy.deepcopy(original) for _ in range(n)])
            self._state = state  # shared by every routed module of one model (not a submodule)

        def forward(self, *args: Any, **kwargs: Any) -> Any:
            assign = self._state.assign
            if assign is None:
                raise ConfigError(
                    "a mixture-of-experts model was called without a routing; "
                    "embed through relevo's MoE embedder (moe:PATH) or MoEModel.routing()."
                )
            if isinstance(assign, int):
                return self.experts[assign](*args, **kwargs)
            # one expert per row: run each expert on its rows only
            first = args[0]
            out = None
            for e in torch.unique(assign).tolist():
                rows = (assign == e).nonzero(as_tuple=True)[0]
                part = self.experts[int(e)](*(a[rows] for a in args), **kwargs)
                if out is None:
                    out = first.new_empty((first.shape[0], *part.shape[1:]), dtype=part.dtype)
                out[rows] = part
            return out

    return _Routed


_ROUTED: type | None = None


def routed_class() -> type:
    """The ``torch.nn.Module`` class of routed FFN parts (built on first use: lazy torch)."""
    global _ROUTED
    if _ROUTED is None:
        _ROUTED = _routed_class()
    return _ROUTED


@dataclass
class _RoutingState:
    assign: Any = None  # None, an expert index, or a LongTensor (batch,) of indices


def transformer_of(st_model: Any) -> Any:
    """The Hugging Face model inside a sentence-transformers model."""
    first = st_model[0]
    hf = getattr(first, "auto_model", None) or getattr(first, "model", None)
    if hf is None:
        raise ConfigError(
            "the model's first module is not a transformer; MoE conversion needs a "
            "sentence-transformers model whose first module wraps a Hugging Face encoder."
        )
    return hf


def encoder_layers(hf: Any) -> list[Any]:
    """The transformer layers that have a BERT-style ``intermediate`` + ``output`` FFN."""
    torch = _torch()
    for module in hf.modules():
        if (
            isinstance(module, torch.nn.ModuleList)
            and len(module) > 0
            and all(hasattr(m, "intermediate") and hasattr(m, "output") for m in module)
        ):
            return list(module)
    raise ConfigError(
        f"{type(hf).__name__}: no encoder layers with a BERT-style feed-forward block "
        "(intermediate + output) found; MoE conversion supports BERT, MiniLM, MPNet, RoBERTa-like encoders."
    )


def parse_layers(spec: str | Sequence[int], n_layers: int) -> list[int]:
    """``all``, ``last``, ``"3,5"`` or a list of indices -> sorted layer indices."""
    if isinstance(spec, str):
        text = spec.strip().lower()
        if text == "all":
            return list(range(n_layers))
        if text == "last":
            return [n_layers - 1]
        try:
            picked = [int(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise ConfigError(
                f"--layers {spec!r}: give all, last, or comma-separated layer numbers (0..{n_layers - 1})."
            ) from None
    else:
        picked = [int(x) for x in spec]
    if not picked:
        raise ConfigError("--layers names no layer.")
    bad = [i for i in picked if not 0 <= i < n_layers]
    if bad:
        raise ConfigError(f"--layers {bad}: the model has layers 0..{n_layers - 1}.")
    return sorted(set(picked))


@dataclass
class MoEModel:
    """A sentence-transformers model whose chosen FFN blocks are routed experts.

    Attributes:
        model: the converted ``SentenceTransformer``.
        domains: expert names, in expert order.
        layers: indices of the routed layers.
        router: ``torch.nn.Linear(hidden, N)`` over mean input word embeddings, or ``None``.
        router_report: how the router was fitted (accuracy on held-out texts).
    """

    model: Any
    domains: list[str]
    layers: list[int]
    router: Any = None
    router_report: dict[str, Any] = field(default_factory=dict)
    base: str = ""
    _state: _RoutingState = field(default_factory=_RoutingState, repr=False)

    # -- routing ------------------------------------------------------------------------------
    def expert(self, domain: str) -> int:
        try:
            return self.domains.index(domain)
        except ValueError:
            raise ConfigError(
                f"unknown domain {domain!r}: this MoE model has experts for {', '.join(self.domains)}."
            ) from None

    @contextlib.contextmanager
    def routing(self, assign: int | str | Any) -> Iterator[None]:
        """Route every forward inside the block to ``assign`` (an expert, a domain or per-row)."""
        if isinstance(assign, str):
            assign = self.expert(assign)
        prior = self._state.assign
        self._state.assign = assign
        try:
            yield
        finally:
            self._state.assign = prior

    def routed_modules(self) -> list[Any]:
        layers = encoder_layers(transformer_of(self.model))
        return [m for i in self.layers for m in (layers[i].intermediate, layers[i].output)]

    def expert_parameters(self, expert: int) -> list[Any]:
        return [p for m in self.routed_modules() for p in m.experts[expert].parameters()]

    # -- router --------------------------------------------------------------------------------
    def _bag(self, texts: Sequence[str]) -> Any:
        """Mean input word embedding per text (attention-masked), detached."""
        torch = _torch()
        hf = transformer_of(self.model)
        table = hf.get_input_embeddings()
        device = table.weight.device
        out = []
        for start in range(0, len(texts), 256):
            prep = getattr(self.model, "preprocess", None) or self.model.tokenize
            feats = prep(list(texts[start : start + 256]))
            ids = feats["input_ids"].to(device)
            mask = feats["attention_mask"].to(device).unsqueeze(-1).float()
            with torch.no_grad():
                emb = table(ids)
                out.append((emb * mask).sum(1) / mask.sum(1).clamp(min=1.0))
        return torch.cat(out, 0)

    def route(self, texts: Sequence[str]) -> np.ndarray:
        """The router's expert per text (``int64``)."""
        if self.router is None:
            raise ConfigError(
                "this MoE model has no router: give a domain (--domain NAME, or a document "
                f"metadata field) — one of {', '.join(self.domains)}."
            )
        torch = _torch()
        if not texts:
            return np.zeros(0, dtype=np.int64)
        with torch.no_grad():
            logits = self.router(self._bag(texts))
        return logits.argmax(-1).cpu().numpy().astype(np.int64)

    def fit_router(
        self,
        texts: Sequence[str],
        labels: Sequence[int],
        *,
        holdout: float = 0.2,
        seed: int = 0,
        epochs: int = 300,
    ) -> dict[str, Any]:
        """Fit the linear router on labelled texts; accuracy measured on a held-out share."""
        torch = _torch()
        if len(texts) != len(labels) or not texts:
            raise ConfigError("fit_router needs one label per text and at least one text.")
        t0 = time.perf_counter()
        x = self._bag(texts)
        y = torch.tensor(list(labels), dtype=torch.long, device=x.device)
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(texts))
        n_test = int(round(len(texts) * holdout)) if len(texts) >= 10 else 0
        test, train = order[:n_test], order[n_test:]
        mean = x[train].mean(0, keepdim=True)
        std = x[train].std(0, keepdim=True).clamp(min=1e-6)
        torch.manual_seed(seed)
        linear = torch.nn.Linear(x.shape[1], len(self.domains)).to(x.device)
        opt = torch.optim.Adam(linear.parameters(), lr=0.05, weight_decay=1e-4)
        xt, yt = (x[train] - mean) / std, y[train]
        counts = torch.bincount(yt, minlength=len(self.domains)).float().clamp(min=1.0)
        weight = counts.sum() / (len(self.domains) * counts)  # domains of unequal size
        for _ in range(epochs):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(linear(xt), yt, weight=weight)
            loss.backward()
            opt.step()
        # Fold the standardisation into the linear layer: router(x) = W((x - m) / s) + b.
        with torch.no_grad():
            w = linear.weight / std
            b = linear.bias - (w * mean).sum(1)
            router = torch.nn.Linear(x.shape[1], len(self.domains)).to(x.device)
            router.weight.copy_(w)
            router.bias.copy_(b)
            train_acc = float((router(x[train]).argmax(-1) == y[train]).float().mean())
            test_acc = (
                float((router(x[test]).argmax(-1) == y[test]).float().mean()) if n_test else None
            )
        self.router = router
        per_domain = {d: int((y == i).sum()) for i, d in enumerate(self.domains)}
        self.router_report = {
            "kind": "linear over mean input word embeddings",
            "texts": per_domain,
            "train_accuracy": round(train_acc, 4),
            "heldout_accuracy": None if test_acc is None else round(test_acc, 4),
            "heldout_texts": int(n_test),
            "seconds": round(time.perf_counter() - t0, 2),
        }
        return self.router_report

    # -- embedding ------------------------------------------------------------------------------
    def encode(
        self,
        texts: Sequence[str],
        experts: Sequence[int] | int,
        *,
        normalize: bool = True,
        batch_size: int = 32,
        prompt: str | None = None,
    ) -> np.ndarray:
        """Embed ``texts``, each through its expert (one per text, or one for all)."""
        dim = self.dimension
        out = np.empty((len(texts), dim), dtype=np.float32)
        if not len(texts):
            return out
        per = np.full(len(texts), experts) if isinstance(experts, int) else np.asarray(experts)
        for e in np.unique(per).tolist():
            idx = np.nonzero(per == e)[0]
            with self.routing(int(e)):
                vecs = self.model.encode(
                    [texts[int(i)] for i in idx],
                    prompt=prompt,
                    batch_size=batch_size,
                    convert_to_numpy=True,
                    normalize_embeddings=normalize,
                    show_progress_bar=False,
                )
            out[idx] = np.asarray(vecs, dtype=np.float32)
        return out

    @property
    def dimension(self) -> int:
        getter = (
            getattr(self.model, "get_embedding_dimension", None)
            or self.model.get_sentence_embedding_dimension
        )
        return int(getter())

    # -- disk ------------------------------------------------------------------------------------
    def _collapsed(self) -> contextlib.AbstractContextManager[None]:
        """Expert 0 put back in place of every routed module (a plain dense model)."""

        @contextlib.contextmanager
        def swap() -> Iterator[None]:
            layers = encoder_layers(transformer_of(self.model))
            saved = {}
            for i in self.layers:
                saved[i] = (layers[i].intermediate, layers[i].output)
                layers[i].intermediate = saved[i][0].experts[0]
                layers[i].output = saved[i][1].experts[0]
            try:
                yield
            finally:
                for i, (inter, outp) in saved.items():
                    layers[i].intermediate, layers[i].output = inter, outp

        return swap()

    def expert_tensors(self) -> dict[str, Any]:
        """Experts 1..N-1 of every routed layer, keyed ``layer.I.PART.E.NAME``."""
        layers = encoder_layers(transformer_of(self.model))
        tensors = {}
        for i in self.layers:
            for part in ("intermediate", "output"):
                routed = getattr(layers[i], part)
                for e in range(1, len(self.domains)):
                    for name, t in routed.experts[e].state_dict().items():
                        tensors[f"layer.{i}.{part}.{e}.{name}"] = t.detach().cpu().contiguous()
        return tensors

    def save(self, folder: str | Path, *, extra: dict[str, Any] | None = None) -> None:
        """Write the model into ``folder`` (which the caller makes atomic)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        with self._collapsed():
            try:
                self.model.save(str(folder), create_model_card=False)
            except TypeError:  # very old sentence-transformers
                self.model.save(str(folder))
        save_file(self.expert_tensors(), str(folder / EXPERTS_FILE))
        if self.router is not None:
            save_file(
                {
                    "weight": self.router.weight.detach().cpu().contiguous(),
                    "bias": self.router.bias.detach().cpu().contiguous(),
                },
                str(folder / ROUTER_FILE),
            )
        config = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "domains": self.domains,
            "layers": self.layers,
            "base_model": self.base,
            "router": self.router_report if self.router is not None else None,
            **(extra or {}),
        }
        (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2), "utf-8")


def convert(
    st_model: Any, domains: Sequence[str], layers: str | Sequence[int] = "all", *, base: str = ""
) -> MoEModel:
    """Turn ``st_model``'s chosen FFN blocks into ``len(domains)`` experts (copies), in place."""
    names = [str(d) for d in domains]
    if len(names) < 1:
        raise ConfigError("an MoE model needs at least one domain.")
    if len(set(names)) != len(names):
        raise ConfigError(f"domain names must be unique, got {names}.")
    for n in names:
        if not n or any(c in n for c in "=:,/ "):
            raise ConfigError(
                f"domain name {n!r}: use letters, digits, '-' or '_' (no '=', ':', ',', '/', spaces)."
            )
    hf_layers = encoder_layers(transformer_of(st_model))
    picked = parse_layers(layers, len(hf_layers))
    moe = MoEModel(st_model, names, picked, base=base)
    cls = routed_class()
    for i in picked:
        layer = hf_layers[i]
        if isinstance(layer.intermediate, cls):
            raise ConfigError(f"layer {i} is already routed; convert a dense model.")
        layer.intermediate = cls(layer.intermediate, len(names), moe._state)
        layer.output = cls(layer.output, len(names), moe._state)
    return moe


def is_moe_folder(path: str | Path) -> bool:
    return (Path(path) / CONFIG_FILE).is_file()


def read_config(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / CONFIG_FILE
    try:
        config = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"{folder} is not an MoE model (no {CONFIG_FILE}); convert one with "
            "`relevo train moe` or relevo.models.moe.convert()."
        ) from None
    except (OSError, ValueError) as exc:
        raise CorruptIndexError(f"{path} is unreadable ({exc}); re-save the model.") from exc
    if config.get("format") != FORMAT or not isinstance(config.get("domains"), list):
        raise CorruptIndexError(f"{path} is not a relevo MoE config (format {FORMAT!r}).")
    if int(config.get("format_version", 0)) > FORMAT_VERSION:
        raise ConfigError(
            f"{path} was written by a newer relevo (format {config['format_version']}); upgrade relevo."
        )
    return config


def load(folder: str | Path, device: str = "cpu") -> MoEModel:
    """Load an MoE model written by :meth:`MoEModel.save`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .bi_encoders import load_sentence_transformer

    folder = Path(folder).expanduser()
    config = read_config(folder)
    st_model = load_sentence_transformer(str(folder), device, model_id=str(folder))
    moe = convert(st_model, config["domains"], config["layers"], base=config.get("base_model", ""))
    try:
        tensors = load_file(str(folder / EXPERTS_FILE), device=str(device))
    except (OSError, SafetensorError) as exc:
        raise CorruptIndexError(
            f"{folder / EXPERTS_FILE}: cannot read the experts ({exc}); the model folder is damaged — re-save it."
        ) from exc
    layers = encoder_layers(transformer_of(st_model))
    expected = set(moe.expert_tensors())
    if set(tensors) != expected:
        missing = sorted(expected - set(tensors))[:3]
        raise CorruptIndexError(
            f"{folder / EXPERTS_FILE} does not match {CONFIG_FILE} (missing e.g. {missing}); re-save the model."
        )
    torch = _torch()
    with torch.no_grad():
        for key, value in tensors.items():
            _, i, part, e, name = key.split(".", 4)
            target = getattr(layers[int(i)], part).experts[int(e)].state_dict()[name]
            if target.shape != value.shape:
                raise CorruptIndexError(
                    f"{key}: shape {tuple(value.shape)} != {tuple(target.shape)}."
                )
            target.copy_(value)
    if (folder / ROUTER_FILE).is_file():
        r = load_file(str(folder / ROUTER_FILE), device=str(device))
        router = torch.nn.Linear(r["weight"].shape[1], r["weight"].shape[0]).to(device)
        with torch.no_grad():
            router.weight.copy_(r["weight"])
            router.bias.copy_(r["bias"])
        moe.router = router
        moe.router_report = dict(config.get("router") or {})
    st_model.eval()
    return moe


__all__ = [
    "CONFIG_FILE",
    "EXPERTS_FILE",
    "ROUTER_FILE",
    "MoEModel",
    "convert",
    "is_moe_folder",
    "load",
    "parse_layers",
    "read_config",
]
