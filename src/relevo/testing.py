"""Deterministic fakes for testing relevo and relevo plugins. Tests only.

Nothing here is ever a default: the engine never falls back to a fake. Register them
explicitly, e.g. ``Engine(plugins=[relevo.testing.FakePlugin()], load_entrypoints=False)``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .engine.components import (
    Embedder,
    EmbedKind,
    ListwiseReranker,
    PointwiseReranker,
    QueryGenerator,
)
from .engine.hookspecs import hookimpl
from .engine.types import Document

_TOKEN = re.compile(r"\w+")


class HashingEmbedder(Embedder):
    """Bag-of-words feature hashing into ``dim`` signed buckets, L2-normalised.

    Texts sharing words get similar vectors, so retrieval behaves sensibly on toy
    corpora, and results are identical on every machine (no model, no randomness).
    """

    name: ClassVar[str] = "hashing"

    def __init__(self, dim: int = 64, *, query_prefix: str = "", document_prefix: str = "") -> None:
        self.dim = int(dim)
        self.normalized = True
        self.query_prefix = query_prefix
        self.document_prefix = document_prefix
        self.calls = 0

    def embed_batch(self, texts: Sequence[str], *, kind: EmbedKind) -> np.ndarray:
        self.calls += 1
        prefix = self.query_prefix if kind == "query" else self.document_prefix
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for tok in _TOKEN.findall((prefix + text).lower()):
                digest = hashlib.blake2b(tok.encode(), digest_size=8).digest()
                bucket = int.from_bytes(digest[:4], "little") % self.dim
                sign = 1.0 if digest[4] & 1 else -1.0
                out[row, bucket] += sign
            norm = np.linalg.norm(out[row])
            if norm > 0:
                out[row] /= norm
            else:
                out[row, 0] = 1.0
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "name": getattr(self, "instance_name", None) or self.name,
            "dim": self.dim,
            "query_prefix": self.query_prefix,
            "document_prefix": self.document_prefix,
        }


class WordOverlapReranker(PointwiseReranker):
    """Scores a document by the fraction of query words it contains."""

    name: ClassVar[str] = "word-overlap"

    def score(self, query: str, docs: Sequence[str]) -> list[float]:
        q = set(_TOKEN.findall(query.lower()))
        return [len(q & set(_TOKEN.findall(d.lower()))) / max(len(q), 1) for d in docs]


class ReverseListwiseReranker(ListwiseReranker):
    """Returns the window reversed: an obviously-wrong but valid permutation for tests."""

    name: ClassVar[str] = "reverse"

    def permute(self, query: str, docs: Sequence[str]) -> list[int]:
        return list(range(len(docs)))[::-1]


class FirstWordsQueryGenerator(QueryGenerator):
    """A stand-in query writer: ``words`` consecutive words of the document from a seeded offset.

    Deterministic for a seed, instant, and its queries retrieve their source lexically,
    which is what tests of the synthetic-query host need (tests only).
    """

    name: ClassVar[str] = "first-words"

    def __init__(self, words: int = 4, **_: Any) -> None:
        self.words = words
        self.calls = 0

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "words": self.words}

    def generate(self, docs: Sequence[str], seed: Sequence[int]) -> list[str]:
        self.calls += 1
        rng = np.random.default_rng([int(s) for s in seed])
        out = []
        for d in docs:
            words = d.split()
            start = int(rng.integers(0, max(1, len(words) - self.words + 1)))
            out.append(" ".join(words[start : start + self.words]))
        return out


class OracleReranker(PointwiseReranker):
    """Scores 1 for the document text ``answers[query]`` and 0 otherwise (``invert``: -1 and 0).

    A stand-in reranker that agrees with (or inverts) a dev set's known answers (tests only).
    """

    name: ClassVar[str] = "oracle"

    def __init__(self, answers: Mapping[str, str] | None = None, *, invert: bool = False) -> None:
        self.answers = dict(answers or {})
        self.invert = invert

    def score(self, query: str, docs: Sequence[str]) -> list[float]:
        target = self.answers.get(query)
        sign = -1.0 if self.invert else 1.0
        return [sign if d == target else 0.0 for d in docs]


class FakePlugin:
    """A plugin object registering the fakes above under their names."""

    __name__ = "relevo.testing"

    @hookimpl
    def register_embedders(self, register: Any) -> None:
        register(
            HashingEmbedder, "hashing", description="feature-hashing bag of words (tests only)"
        )

    @hookimpl
    def register_rerankers(self, register: Any) -> None:
        register(WordOverlapReranker)
        register(ReverseListwiseReranker)

    @hookimpl
    def register_query_generators(self, register: Any) -> None:
        register(FirstWordsQueryGenerator, description="seeded spans of the document (tests only)")


def tiny_corpus() -> list[Document]:
    """Twelve short documents on four topics, for quick end-to-end tests."""
    rows = [
        ("d1", "Cats", "Cats are small domesticated carnivorous mammals that purr."),
        ("d2", "Dogs", "Dogs are loyal domesticated mammals descended from wolves."),
        ("d3", "Kittens", "A kitten is a juvenile cat; kittens sleep and purr a lot."),
        ("d4", "Python", "Python is a programming language with dynamic typing."),
        ("d5", "Rust", "Rust is a systems programming language focused on memory safety."),
        ("d6", "Compilers", "A compiler translates a programming language into machine code."),
        ("d7", "Photosynthesis", "Plants convert sunlight, water and carbon dioxide into glucose."),
        ("d8", "Chlorophyll", "Chlorophyll is the green pigment that absorbs sunlight in plants."),
        ("d9", "Roots", "Plant roots absorb water and minerals from the soil."),
        ("d10", "Inflation", "Inflation is the rate at which prices for goods rise over time."),
        ("d11", "Interest rates", "Central banks raise interest rates to slow inflation."),
        ("d12", "Bonds", "Bond prices fall when interest rates rise."),
    ]
    return [Document(id=i, title=t, text=x, metadata={"topic": i}) for i, t, x in rows]


def tiny_train_queries() -> dict[str, tuple[str, list[str]]]:
    """Ten training queries over :func:`tiny_corpus`: ``{qid: (text, [positive doc ids])}``."""
    return {
        "q1": ("a kitten is a small cat that purrs", ["d3"]),
        "q2": ("cats are domesticated mammals", ["d1"]),
        "q3": ("dogs descended from wolves", ["d2"]),
        "q4": ("a programming language focused on memory safety", ["d5"]),
        "q5": ("python is a language with dynamic typing", ["d4"]),
        "q6": ("a compiler translates a language into machine code", ["d6"]),
        "q7": ("plants convert sunlight and water into glucose", ["d7"]),
        "q8": ("roots absorb water from the soil", ["d9"]),
        "q9": ("central banks raise interest rates", ["d11"]),
        "q10": ("bond prices fall when rates rise", ["d12"]),
    }


def write_beir_dataset(
    root: Path,
    docs: Sequence[Document],
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]],
    *,
    split: str = "test",
) -> Path:
    """Write a BEIR-layout folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv); returns ``root``."""
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    with open(root / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for d in docs:
            fh.write(json.dumps({"_id": d.id, "title": d.title, "text": d.text}) + "\n")
    with open(root / "queries.jsonl", "w", encoding="utf-8") as fh:
        for qid, text in queries.items():
            fh.write(json.dumps({"_id": qid, "text": text}) + "\n")
    with open(root / "qrels" / f"{split}.tsv", "w", encoding="utf-8") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for qid, judged in qrels.items():
            for doc_id, rel in judged.items():
                fh.write(f"{qid}\t{doc_id}\t{rel}\n")
    return root


def tiny_bert(path: Path, texts: Sequence[str], *, seed: int = 0) -> Path:
    """Save a random 2-layer, 32-wide BERT encoder with a WordPiece vocabulary of ``texts``.

    A real ``transformers`` model folder (no download): enough to exercise code paths that
    load, run or train encoders and cross-encoders. Needs torch and transformers.
    """
    import inspect

    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast  # type: ignore[attr-defined]  # lazy attribute of transformers 5

    words: set[str] = set()
    for text in texts:
        words.update(re.findall(r"\w+|[^\w\s]", text.lower()))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(words)]
    path.mkdir(parents=True)
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n", "utf-8")
    # transformers 5 takes ``vocab`` (path or dict); 4.x took ``vocab_file``
    params = inspect.signature(BertTokenizerFast.__init__).parameters
    key = "vocab" if "vocab" in params else "vocab_file"
    tokenizer = BertTokenizerFast(**{key: str(path / "vocab.txt")}, do_lower_case=True)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


#: A ChatML template (``<|im_start|>role ... <|im_end|>``), the format of SmolLM2 and Qwen.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def tiny_sentence_transformer(
    path: Path, texts: Sequence[str], *, max_seq_length: int = 48
) -> Path:
    """Save :func:`tiny_bert` wrapped as a sentence-transformers model (mean pooling) at ``path``.

    Needs torch, transformers and sentence-transformers; returns ``path``.
    """
    from sentence_transformers import SentenceTransformer

    try:  # sentence-transformers >= 6
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    except ImportError:  # pragma: no cover - older sentence-transformers
        from sentence_transformers.models import Pooling, Transformer  # type: ignore[no-redef]

    bert = tiny_bert(path.parent / f"{path.name}-bert", texts)
    encoder = Transformer(str(bert), max_seq_length=max_seq_length)
    dim = getattr(encoder, "get_embedding_dimension", None) or encoder.get_word_embedding_dimension
    model = SentenceTransformer(modules=[encoder, Pooling(dim(), "mean")], device="cpu")
    model.save(str(path))
    return path


def _tiny_llama_config(vocab_size: int, **tokens: Any) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        **tokens,
    )


def tiny_llama(
    vocab: int = 48,
    *,
    seed: int = 0,
    bos_token_id: int = 1,
    eos_token_id: int = 0,
    max_positions: int = 512,
) -> Any:
    """A random 2-layer, 32-wide ``LlamaForCausalLM`` in memory, in eval mode (no tokenizer).

    Its logits are noise but it runs every Hugging Face generation path (KV cache,
    ``generate``, beam search), which is what tests of decoding loops need. The pad
    token is the EOS token. Needs torch and transformers.

    Args:
        vocab: vocabulary size.
        seed: ``torch.manual_seed`` for the weights; the same seed gives the same model.
        bos_token_id: begin-of-sequence id of the config.
        eos_token_id: end-of-sequence (and pad) id of the config.
        max_positions: ``max_position_embeddings``.
    """
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    config = _tiny_llama_config(
        vocab,
        max_position_embeddings=max_positions,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=eos_token_id,
    )
    model = LlamaForCausalLM(config)
    model.eval()
    return model


def tiny_causal_lm(
    path: Path,
    texts: Sequence[str],
    *,
    vocab_size: int = 320,
    split_digits: bool = False,
    chat_template: str | None = CHATML_TEMPLATE,
    max_positions: int = 512,
    seed: int = 0,
) -> Path:
    """Save a random 2-layer Llama with a byte-level BPE tokenizer trained on ``texts``.

    A real ``transformers`` folder (no download) that ``AutoTokenizer`` and
    ``AutoModelForCausalLM`` load: enough to exercise code paths that prompt, score or
    generate with a causal LM. Special tokens follow SmolLM2: ``<|im_start|>`` (BOS),
    ``<|im_end|>`` (EOS and pad), ``<|endoftext|>`` (unknown). Needs torch,
    transformers and tokenizers.

    Args:
        path: folder to write (created if missing; existing files are overwritten).
        texts: the tokenizer's training lines; repeat a line to make its merges win.
        vocab_size: BPE vocabulary size, special tokens included.
        split_digits: split numbers into single digits, as SmolLM2 and Llama tokenizers
            do (``"10"`` is then two tokens).
        chat_template: the tokenizer's chat template; ``None`` saves a plain tokenizer
            (no ``apply_chat_template``).
        max_positions: ``max_position_embeddings`` of the model.
        seed: ``torch.manual_seed`` for the weights; the same seed gives the same model.

    Returns:
        ``path``.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.pre_tokenizer = (
        pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
        if split_digits
        else byte_level
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(list(texts), trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    config = _tiny_llama_config(
        len(tokenizer),
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    path.mkdir(parents=True, exist_ok=True)
    LlamaForCausalLM(config).save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


__all__ = [
    "tiny_train_queries",
    "CHATML_TEMPLATE",
    "FakePlugin",
    "FirstWordsQueryGenerator",
    "HashingEmbedder",
    "OracleReranker",
    "ReverseListwiseReranker",
    "WordOverlapReranker",
    "tiny_bert",
    "tiny_causal_lm",
    "tiny_corpus",
    "tiny_llama",
    "tiny_sentence_transformer",
    "write_beir_dataset",
]


@contextlib.contextmanager
def serve_in_thread(app: Any, *, timeout: float = 10.0) -> Iterator[str]:
    """Run an ASGI ``app`` with uvicorn on a free loopback port in a thread; yields its URL.

    The lifespan runs (start-up and the shutdown flush); leaving the block stops the
    server and fails if it did not shut down within ``timeout`` seconds.
    """
    import socket
    import threading
    import time

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()
    if thread.is_alive():
        raise RuntimeError("uvicorn did not shut down")
