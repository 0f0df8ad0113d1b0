"""Bundled plugin: generative retrieval over a document-identifier trie (``docid-trie``).

A causal language model *generates* a document's identifier for a query, constrained at
every step to the identifiers in the collection (CorpusBrain, the Unified Generative
Retriever; GENRE's trie without its pickled dict). The identifier set is a
:class:`~relevo.decoding.compact_trie.CompactTrie`: flat arrays, saved as ``.npy``,
updated in place by the collection's add / delete.

Identifiers (``docid`` option: ``title``, ``prefix`` or ``semantic``) are assigned by
:mod:`relevo.indexes.docids`, shared with ``relevo train generative`` (also a command of
this plugin), so a trained model generates exactly the identifiers of the trie.
Two documents with the same identifier get ``" #2"``, ``" #3"``... appended, so every
identifier names one row. The model reads ``prompt`` (``{query}`` filled in) and
generates ``" " + identifier`` then its EOS; hits are the distinct identifiers of the
final beams, scored by sequence log-probability (``decoding=beam``), by Diverse Beam
Search groups (``decoding=diverse``), or by how often adaptive weighted rejection
sampling draws them (``decoding=awrs``, ``samples`` particles; score = log frequency).

Importing this module imports neither torch nor transformers.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from ..engine.components import Index
from ..engine.errors import ConfigError, CorruptIndexError
from ..engine.hookspecs import Register, hookimpl
from ..engine.types import Document
from ..indexes.docids import (
    ANCHOR,
    ASSIGNMENT_DIR,
    DEFAULT_PROMPT,
    DOCIDS,
    DocidAssigner,
    eos_token_id,
    identifier_tokens,
)

if TYPE_CHECKING:  # pragma: no cover
    import click

    from ..engine.commands import CommandHelpers

log = logging.getLogger(__name__)

DECODINGS = ("beam", "diverse", "awrs")
MAX_BEAMS = 100


_INDEX_DEFAULTS: dict[str, Any] = {
    "docid": "title",
    "max_words": 12,
    "prompt": DEFAULT_PROMPT,
    "branching": 10,
    "leaf": 100,
    "embedder": "minilm",
    "seed": 0,
}


def _as_int(value: Any) -> int:
    """An integer option as given (bad values reach the range checks below unchanged)."""
    return value  # type: ignore[no-any-return,unused-ignore]


def _trained_index_options(model: str) -> dict[str, Any]:
    """The docid-trie options a ``relevo train generative`` folder was trained for, if any."""
    import json
    from pathlib import Path

    report = Path(model).expanduser() / "relevo-generative.json"
    if not report.is_file():
        return {}
    try:
        found = json.loads(report.read_text("utf-8")).get("index_options") or {}
    except (OSError, ValueError):
        return {}
    return (
        {k: v for k, v in found.items() if k in _INDEX_DEFAULTS} if isinstance(found, dict) else {}
    )


def _trained_assignment(model: str, doc_ids: Sequence[str]) -> tuple[Any, ...] | None:
    """The semantic identifiers a trained model folder learned for exactly these documents.

    ``(ids, centroids, leaf_fill)`` for :meth:`DocidAssigner.restore` when ``model`` is a
    ``relevo train generative --docid semantic`` folder trained on a corpus with these
    document ids in this order; else None (the index clusters itself).
    """
    from pathlib import Path

    folder = Path(model).expanduser() / ASSIGNMENT_DIR
    if not (folder / "corpus.json").is_file():
        return None
    try:
        corpus = json.loads((folder / "corpus.json").read_text("utf-8"))
        state = DocidAssigner.read_state(folder, len(corpus["doc_ids"]))
    except (OSError, ValueError, KeyError, TypeError, CorruptIndexError) as exc:
        log.warning("%s: unreadable trained identifiers (%s); clustering again", folder, exc)
        return None
    if list(corpus["doc_ids"]) != list(doc_ids):
        log.warning(
            "%s: the model was trained on other documents (%d); its semantic identifiers "
            "are assigned again here, so they may differ from the ones it learned",
            model,
            len(corpus["doc_ids"]),
        )
        return None
    return state


class DocidTrieIndex(Index):
    """Generative retrieval: an LM generates identifiers under a prefix-trie constraint.

    Args:
        docid: ``title``, ``prefix`` or ``semantic`` (see the module doc). Unset options
            (``docid``, ``max_words``, ``prompt``, ``branching``, ``leaf``, ``embedder``,
            ``seed``) take the values in the model folder's ``relevo-generative.json``
            when it has one, else the defaults (title, 12, the default prompt, 10, 100,
            minilm, 0).
        model: causal LM that generates (``smollm2``, a Hugging Face id or folder, a
            ``relevo train generative`` output).
        max_words: words per ``title`` / ``prefix`` identifier.
        beams: beam width (at least the ``k`` asked for; at most 100).
        decoding: ``beam``, ``diverse`` (``groups``, ``diversity``) or ``awrs`` (``samples``).
        prompt: the prompt, with ``{query}``; it must end with ``"Title:"``.
        branching / leaf / embedder: ``semantic`` identifiers' k-means shape and embedder
            (a sentence-transformers folder or ``minilm``).
        device: ``auto``, ``cpu``, ``cuda``...
        seed: k-means and AWRS seed.
        query_batch: queries whose beam searches share one model call per step: faster
            where a step's fixed cost dominates (GPUs, narrow beams); measured on a 2-core
            CPU at 100 beams, where SmolLM2's forward is compute-bound, it gains nothing.
    """

    name: ClassVar[str] = "docid-trie"
    input: ClassVar[Literal["text", "vectors"]] = "text"
    reads_documents: ClassVar[bool] = True
    extra: ClassVar[str | None] = "llm"
    spec_option: ClassVar[str | None] = "model"  # docid-trie:PATH, generative:PATH

    def __init__(
        self,
        *,
        docid: str | None = None,
        model: str = "smollm2",
        max_words: int | None = None,
        beams: int = 10,
        decoding: str = "beam",
        groups: int = 2,
        diversity: float = 0.5,
        samples: int = 32,
        prompt: str | None = None,
        branching: int | None = None,
        leaf: int | None = None,
        embedder: str | None = None,
        device: str = "auto",
        seed: int | None = None,
        query_batch: int = 8,
        **options: Any,
    ) -> None:
        # Options left unset take the values the model was trained with (its
        # relevo-generative.json), so a model trained with --docid prefix searches prefix
        # identifiers without repeating the option; then the defaults.
        trained = _trained_index_options(model)
        picked = {
            "docid": docid, "max_words": max_words, "prompt": prompt, "branching": branching,
            "leaf": leaf, "embedder": embedder, "seed": seed,
        }  # fmt: skip
        for key, value in picked.items():
            if value is None:
                picked[key] = trained.get(key, _INDEX_DEFAULTS[key])
        docid, prompt, embedder = (
            str(picked["docid"]),
            str(picked["prompt"]),
            str(picked["embedder"]),
        )
        max_words, branching = _as_int(picked["max_words"]), _as_int(picked["branching"])
        leaf, seed = _as_int(picked["leaf"]), _as_int(picked["seed"])
        if docid not in DOCIDS:
            raise ConfigError(
                f"docid-trie: docid must be one of {', '.join(DOCIDS)}, not {docid!r}."
            )
        if decoding not in DECODINGS:
            raise ConfigError(
                f"docid-trie: decoding must be one of {', '.join(DECODINGS)}, not {decoding!r}."
            )
        if "{query}" not in prompt or not prompt.endswith(ANCHOR):
            raise ConfigError(
                f"docid-trie: prompt must contain {{query}} and end with {ANCHOR!r} (the identifier follows it)."
            )
        for label, value, low in (
            ("max_words", max_words, 1),
            ("beams", beams, 1),
            ("groups", groups, 1),
            ("samples", samples, 1),
            ("branching", branching, 2),
            ("leaf", leaf, 1),
            ("query_batch", query_batch, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(
                    f"docid-trie: {label} must be an integer >= {low}, got {value!r}."
                )
        super().__init__(
            docid=docid,
            model=model,
            max_words=max_words,
            beams=beams,
            decoding=decoding,
            groups=groups,
            diversity=diversity,
            samples=samples,
            prompt=prompt,
            branching=branching,
            leaf=leaf,
            embedder=embedder,
            device=device,
            seed=seed,
            query_batch=query_batch,
            **options,
        )
        self.query_batch = query_batch
        self.docid, self.model_name, self.max_words = docid, model, max_words
        self.beams, self.decoding, self.groups = beams, decoding, groups
        self.diversity, self.samples, self.prompt = float(diversity), samples, prompt
        self.branching, self.leaf, self.embedder_name = branching, leaf, embedder
        self.device, self.seed = device, seed
        self._docids = DocidAssigner(
            docid=docid,
            max_words=max_words,
            branching=branching,
            leaf=leaf,
            embedder=embedder,
            device=device,
            seed=seed,
        )
        self._trie: Any = None
        self._tok: Any = None
        self._lm: Any = None
        self._retokenised = False  # load_payload rebuilt the trie for another tokenizer

    @property
    def ids(self) -> list[str]:
        """Row -> identifier."""
        return self._docids.ids

    @property
    def centroids(self) -> dict[str, np.ndarray]:
        """``semantic`` identifiers: centroids per inner node path (``""`` is the root)."""
        return self._docids.centroids

    # -- model ---------------------------------------------------------------------------------
    def tokenizer(self) -> Any:
        if self._tok is None:
            self._tok, self._lm = self._load()
        return self._tok

    def lm(self) -> Any:
        if self._lm is None:
            self._tok, self._lm = self._load()
        return self._lm

    def _load(self) -> tuple[Any, Any]:
        from ..models.causal_lm import load_causal_lm

        return load_causal_lm(self.model_name, device=self.device)

    def _eos(self) -> int:
        return eos_token_id(self.tokenizer(), self.model_name)

    def _tokens(self, identifier: str) -> list[int]:
        return identifier_tokens(self.tokenizer(), identifier, self._eos())

    # -- the Index contract -------------------------------------------------------------------------
    def _add(self, items: Any) -> None:
        from ..decoding.compact_trie import CompactTrie

        start = len(self.ids)
        items = list(items)
        trained = None
        if not self.ids and self.docid == "semantic":
            doc_ids = [d.id if isinstance(d, Document) else "" for d in items]
            trained = _trained_assignment(self.model_name, doc_ids)
        if trained is not None:  # the identifiers the model learned, not a re-clustering
            self._docids.restore(*trained)
            new_ids = list(self.ids)
        else:
            new_ids = self._docids.assign(items)
        sequences = [self._tokens(i) for i in new_ids]
        rows = list(range(start, start + len(new_ids)))
        if self._trie is None:
            self._trie = CompactTrie.build(sequences, rows)
        else:
            self._trie.add(sequences, rows)
            if self._trie.delta_size > max(1000, len(self._trie) // 20):
                self._trie.compact()

    def remove(self, positions: Sequence[int] | np.ndarray) -> int:
        newly = super().remove(positions)
        if self._trie is not None and len(positions):
            self._trie.remove(np.unique(np.asarray(positions, dtype=np.int64)), missing_ok=True)
        return newly

    def _count(self) -> int:
        return len(self.ids)

    @property
    def trie(self) -> Any:
        return self._trie

    def _search(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        n = len(queries)
        scores = np.full((n, k), -np.inf, dtype=np.float32)
        pos = np.full((n, k), -1, dtype=np.int64)
        if self._trie is None or len(self._trie) == 0:
            return scores, pos
        texts = [str(q) for q in queries]
        for start in range(0, n, self.query_batch):
            chunk = self.generate_batch(texts[start : start + self.query_batch], k)
            for qi, found in enumerate(chunk, start):
                for j, (row, score) in enumerate(found[:k]):
                    pos[qi, j], scores[qi, j] = row, score
        return scores, pos

    def generate(self, query: str, k: int) -> list[tuple[int, float]]:
        """``(row, score)`` of up to ``k`` distinct identifiers generated for ``query``."""
        return self.generate_batch([query], k)[0]

    def generate_batch(self, queries: Sequence[str], k: int) -> list[list[tuple[int, float]]]:
        """:meth:`generate` for several queries; beam searches share one model call per step."""
        import torch

        from ..decoding.compact_decoder import CompactTrieDecoder
        from ..decoding.generate import awrs_generate, beam_search_batch

        tok, lm = self.tokenizer(), self.lm()
        decoder = CompactTrieDecoder(self._trie, eos_token_id=self._eos())
        device = next(lm.parameters()).device
        prompts = [
            tok(self.prompt.format(query=q), return_tensors="pt", add_special_tokens=False)[
                "input_ids"
            ].to(device)
            for q in queries
        ]
        width = min(MAX_BEAMS, max(self.beams, k))
        found: list[dict[int, float]] = []
        with torch.no_grad():
            if self.decoding == "awrs":
                for ids in prompts:
                    gen = torch.Generator().manual_seed(self.seed)
                    result = awrs_generate(
                        lm, ids, decoder, num_samples=max(self.samples, k), generator=gen
                    )
                    counts: dict[int, int] = {}
                    for seq in result.sequences:
                        row = self._trie.rows_of(list(seq))
                        if row is not None:
                            counts[row] = counts.get(row, 0) + 1
                    total = max(sum(counts.values()), 1)
                    found.append({r: math.log(c / total) for r, c in counts.items()})
            else:
                groups = self.groups if self.decoding == "diverse" else 1
                width = max(groups, width - width % groups)
                batches = beam_search_batch(
                    lm,
                    prompts,
                    [decoder] * len(prompts),
                    num_beams=width,
                    num_groups=groups,
                    diversity_penalty=self.diversity if groups > 1 else 0.0,
                    # ranked by sequence log-probability, as the hits are; plain beam
                    # search then stops once k identifiers beat every open beam (exact)
                    length_penalty=0.0,
                    top_k=k if groups == 1 else None,
                    pad_token_id=self._eos(),
                )
                for hyps in batches:
                    rows: dict[int, float] = {}
                    for h in hyps:
                        row = self._trie.rows_of(list(h.tokens)) if h.finished else None
                        if row is not None and (row not in rows or h.logprob > rows[row]):
                            rows[row] = float(h.logprob)
                    found.append(rows)
        return [sorted(f.items(), key=lambda rs: (-rs[1], rs[0]))[:k] for f in found]

    # -- disk ----------------------------------------------------------------------------------
    def save_payload(self, directory: Path) -> dict[str, Any]:
        from ..models.causal_lm import causal_lm_digest

        self._docids.save_state(directory)
        if self._trie is not None:
            self._trie.save(directory / "trie")
        return {
            "count": len(self.ids),
            "tokenizer": causal_lm_digest(self.model_name),
            "options": {k: v for k, v in self.options.items() if k != "dim"},
        }

    @classmethod
    def load_payload(cls, directory: Path, params: Mapping[str, Any]) -> DocidTrieIndex:
        from ..decoding.compact_trie import CompactTrie
        from ..models.causal_lm import causal_lm_digest

        index = cls(**dict(params.get("options", {})))
        ids, centroids, leaf_fill = DocidAssigner.read_state(
            directory, int(params.get("count", -1))
        )
        index._docids.restore(ids, centroids, leaf_fill)
        if (directory / "trie").is_dir():
            if params.get("tokenizer") == causal_lm_digest(index.model_name):
                index._trie = CompactTrie.load(directory / "trie")
            else:  # another model: the same identifiers, tokenised its way
                rows = list(range(len(index.ids)))
                index._trie = CompactTrie.build([index._tokens(i) for i in index.ids], rows)
                index._retokenised = True
        return index

    @classmethod
    def load(cls, directory: Path, params: Mapping[str, Any]) -> Index:
        index = super().load(directory, params)
        assert isinstance(index, DocidTrieIndex)  # noqa: S101 - cls is this class
        if index._retokenised and index._trie is not None:  # removed rows stay removed
            index._trie.remove(np.flatnonzero(index.deleted_mask()), missing_ok=True)
        return index


@hookimpl
def register_indexes(register: Register) -> None:
    register(
        DocidTrieIndex,
        "docid-trie",
        description="generative retrieval: an LM generates document identifiers under a prefix-trie constraint (docid-trie:MODEL)",
        pipelines={"generative": "docid-trie", "generative-hybrid": "hybrid:bm25+docid-trie"},
    )


# -- relevo train generative -------------------------------------------------------------------
def _generative_command(helpers: CommandHelpers) -> click.Command:
    import click

    from ..training.generative import GenerativeConfig

    defaults = GenerativeConfig(dataset="", out="")

    @click.command("generative")
    @click.argument("dataset")
    @helpers.training_options(defaults, model="generative model")
    @click.option(
        "--base",
        default=defaults.base,
        show_default=True,
        help="Causal LM to start from: smollm2 (packaged SmolLM2-135M-Instruct), a model folder, a .gguf file or a Hugging Face id.",
    )
    @click.option(
        "--docid",
        type=click.Choice(DOCIDS),
        default=defaults.docid,
        show_default=True,
        help="Identifiers to generate: the docid-trie index's docid option (give the index the same).",
    )
    @click.option(
        "--max-words",
        type=click.IntRange(min=1),
        default=defaults.max_words,
        show_default=True,
        help="Words per title / prefix identifier (docid-trie max_words).",
    )
    @click.option(
        "--batch-size",
        type=click.IntRange(min=1),
        default=defaults.batch_size,
        show_default=True,
        help="Examples per step.",
    )
    @click.option(
        "--max-length",
        type=click.IntRange(min=16),
        default=defaults.max_length,
        show_default=True,
        help="Tokens per example (prompt + identifier); long pseudo-queries are cut.",
    )
    @click.option(
        "--lora/--full",
        default=defaults.lora,
        show_default=True,
        help="Train LoRA adapters (needs peft; merged before saving) or every weight.",
    )
    @click.option(
        "--lora-rank",
        type=click.IntRange(min=1),
        default=defaults.lora_rank,
        show_default=True,
    )
    def generative(dataset: str, resume: bool, overwrite: bool, **opts: Any) -> None:
        """Train a causal LM to generate document identifiers (docid-trie).

        DATASET is a BEIR folder or a dataset name under shared/datasets (or
        RELEVO_DATASETS). Every document trains three pseudo-queries (its text, its first
        sentence, a random span) and every judged query of --split one example per
        positive, each followed by the document's identifier. The result is the
        docid-trie `model` option: `--pipeline generative:DIR` for title identifiers.
        """
        from ..training.generative import train_generative

        config = GenerativeConfig(dataset=str(helpers.find_dataset(dataset)), **opts)
        t0 = time.perf_counter()
        with helpers.training_progress() as on_step:
            result = train_generative(config, resume=resume, overwrite=overwrite, on_step=on_step)
        click.echo(
            f"trained {result.steps} steps ({result.report['training_examples']} examples, {config.docid} "
            f"identifiers) in {result.seconds:.0f}s training / {time.perf_counter() - t0:.0f}s total; "
            f"final loss {result.final_loss:.4f}. Model: {result.path} (use as {result.report['use']})"
        )

    return generative


@hookimpl
def register_commands(cli: click.Group, helpers: CommandHelpers) -> None:
    group = helpers.group(cli, "train", "Train models (rerankers, embedders) on BEIR datasets.")
    group.add_command(_generative_command(helpers))
