"""A token trie in flat numpy arrays: constrained decoding over 100k–1M document identifiers.

:class:`~relevo.decoding.trie.TokenTrie` keeps a dict and a Python-int bitmask per node;
that suits the few identifiers of a listwise permutation, not a corpus. A
:class:`CompactTrie` stores the same prefix tree as a handful of numpy arrays
(CSR-like, nodes numbered breadth-first), builds it with vectorised sorting, and
supports removing and adding identifiers without a rebuild.

**Identifiers and the end token.** An identifier is a non-empty sequence of token ids
(``0 <= id < 2**31``) naming one document *row* (an int64 ``>= 0``). Append an end token
to every identifier before building (for example the tokenizer's EOS id): identifiers
then form a prefix-free set, every identifier ends at a leaf, and a decoder knows that an identifier
is complete exactly when the end token has been emitted. Identifiers *without* an end
token are accepted too, including one that is a prefix of another (it ends at an inner
node, recorded in ``terminal_row``); :class:`~relevo.decoding.compact_decoder.CompactTrieDecoder`
then allows its EOS at that inner node.

**Layout** (one *layer*; node ``0`` is the root):

- ``child_ptr`` (int64, ``nodes + 1``): the children of node ``i`` are the nodes
  ``child_ptr[i] .. child_ptr[i + 1] - 1`` (:attr:`CompactTrie.child_start` /
  :attr:`CompactTrie.child_end`), sorted by token. Nodes are numbered breadth-first,
  so a child's offset *is* its node id: no ``child_nodes`` array is stored (it would
  be the identity);
- ``key`` (int64, ``nodes``): ``parent << 32 | token`` of each node (``-1`` for the
  root). Its low halves are the tokens (:attr:`CompactTrie.child_tokens`, an int32
  view, not a copy), its high halves the parents, and breadth-first numbering makes
  the whole array sorted, so advancing a beam of nodes by one token each is a single
  ``np.searchsorted`` (:meth:`CompactTrie.step`), whatever the fan-out;
- ``live`` (int32): live identifiers through (or ending at) each node;
- ``terminal_row`` (int64): the row of the live identifier ending at each node, ``-1``;
- ``row_keys`` / ``row_nodes`` (int64, one per identifier ever built into the layer):
  rows, sorted, and the node each one ends at (``-1`` once removed).

**Updates.** :meth:`CompactTrie.remove` decrements ``live`` along each removed
identifier's path (vectorised, level by level): a node with ``live == 0`` is never
allowed again, and no node ids change. Only the children of nodes that lost a child are
filtered by ``live`` (the filtered arrays are cached until the next update); every other
node's allowed tokens are a read-only slice of ``key``'s token view.
:meth:`CompactTrie.add` puts new identifiers in a *delta* layer consulted together with
the main one (the allowed tokens of a state are the union of both layers' live children,
cached per state until the next update, since shallow states such as the root are shared
by every beam). The delta has the same flat layout, rebuilt from its live identifiers on
every ``add``, rather than a dict ``TokenTrie``: one code path serves stepping, masks,
removal and saving, and a ``TokenTrie`` node carries a bitmask over every identifier
(quadratic memory) and cannot forget one. Rebuilding the delta costs O(d log d) for d
delta identifiers, so add in batches and call :meth:`CompactTrie.compact` (one trie from
every live identifier) when the delta has grown (a few percent of the main trie, or when
latency allows).

**Decoder states.** A decoder keeps *node handles* (int64) rather than prefixes:
:meth:`CompactTrie.root`, :meth:`CompactTrie.walk` and :meth:`CompactTrie.step` return
them, ``-1`` means "not in the trie". Without a delta a handle is simply the main
layer's node id; with one it packs both layers' node ids
(``(main + 1) + ((delta + 1) << 32) - 1``). ``remove`` keeps handles valid; ``add`` and
``compact`` renumber nodes, so they bump :attr:`CompactTrie.generation` and handles
from an older generation must be dropped.

**Files.** :meth:`CompactTrie.save` writes one ``.npy`` per array (``main_*.npy``, and
``delta_*.npy`` when a delta exists: the delta is saved as is, not compacted) plus
``trie.json`` (format ``"relevo-compact-trie"``, version 1, counts, and a sha256 and
size per file), into a temporary sibling folder renamed into place.
:meth:`CompactTrie.load` verifies checksums, dtypes and the tree's structure, and
raises :class:`~relevo.engine.errors.CorruptIndexError` on any mismatch.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..engine.errors import ConfigError, CorruptIndexError, MissingDependencyError
from ._compact_layer import (
    ARRAYS,
    CACHE_SIZE,
    CHUNK,
    EMPTY,
    FORMAT,
    FORMAT_VERSION,
    LOW,
    MANIFEST,
    MAX_TOKEN,
    Layer,
    check_tokens,
    padded,
    rows_array,
    shown,
)


# -- the public trie -----------------------------------------------------------------------------
class CompactTrie:
    """Document identifiers (token-id sequences) in flat numpy arrays, updatable.

    Build with :meth:`build`; see the module docstring for the layout, the end-token
    convention, the delta layer and node handles.

    Example::

        END = tokenizer.eos_token_id
        trie = CompactTrie.build([ids + [END] for ids in doc_ids], rows=range(len(doc_ids)))
        h = trie.walk(prefix)                 # a node handle, -1 if not in the trie
        trie.allowed_nodes(np.array([h]))     # [array of next tokens]
        trie.remove([17]); trie.add([[5, 9, END]], [10_000])
    """

    def __init__(self, main: Layer, delta: Layer | None = None) -> None:
        self._main = main
        self._delta = delta if delta is not None and delta.n_live else None
        # handle -> union of both layers' allowed tokens: shallow states (the root above
        # all) are shared by every beam and have large child sets; cleared on any update
        self._merged: dict[int, np.ndarray] = {}
        #: bumped by :meth:`add` and :meth:`compact`: node handles of an older value are stale
        self.generation = 0

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def build(
        cls, sequences: Sequence[Sequence[int]], rows: Sequence[int] | None = None
    ) -> CompactTrie:
        """A trie of ``sequences``; identifier ``i`` names ``rows[i]`` (default ``i``).

        Append an end token to each identifier (see the module docstring).

        Args:
            sequences: token-id sequences (lists, tuples, or a 2-d integer array).
            rows: the document row of each identifier (distinct int64 values >= 0).

        Raises:
            ConfigError: an empty identifier, a token outside ``[0, 2**31)``, two rows
                with the same identifier, or one row given twice.
        """
        mat, lengths = padded(sequences)
        return cls(Layer.build(mat, lengths, rows_array(rows, len(lengths))))

    @classmethod
    def from_padded(
        cls, tokens: np.ndarray, lengths: np.ndarray, rows: Sequence[int] | None = None
    ) -> CompactTrie:
        """A trie from a (k, L) integer matrix whose row ``i`` holds identifier ``i`` in its
        first ``lengths[i]`` columns (the rest is ignored): builds 1M identifiers without
        any per-identifier Python objects.

        Raises:
            ConfigError: as :meth:`build`, or ``lengths`` outside ``[1, L]``.
        """
        tokens = np.asarray(tokens)
        lengths = np.asarray(lengths, dtype=np.int64)
        if tokens.ndim != 2 or tokens.dtype.kind not in "iu" or lengths.shape != tokens.shape[:1]:
            raise ConfigError(
                f"from_padded needs a (k, L) integer matrix and k lengths, got {tokens.dtype} "
                f"{tokens.shape} and {lengths.shape}"
            )
        if len(lengths) and (int(lengths.min()) < 1 or int(lengths.max()) > tokens.shape[1]):
            raise ConfigError(f"lengths must be in [1, {tokens.shape[1]}] (the matrix width)")
        inside = np.arange(tokens.shape[1])[None, :] < lengths[:, None]
        check_tokens(tokens[inside])
        mat = np.where(inside, tokens, -1).astype(np.int32)
        return cls(Layer.build(mat, lengths, rows_array(rows, len(lengths))))

    # -- sizes ------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._main.n_live + (self._delta.n_live if self._delta else 0)

    def __repr__(self) -> str:
        delta = self._delta.n_live if self._delta else 0
        return (
            f"CompactTrie({len(self)} identifiers, {self._main.nodes} nodes, delta {delta}, "
            f"{self.nbytes / 2**20:.1f} MiB)"
        )

    @property
    def nodes(self) -> int:
        """Nodes of the main layer and the delta (removed identifiers' nodes included)."""
        return self._main.nodes + (self._delta.nodes if self._delta else 0)

    @property
    def delta_size(self) -> int:
        """Live identifiers in the delta layer (0 after :meth:`compact`)."""
        return self._delta.n_live if self._delta else 0

    @property
    def max_depth(self) -> int:
        """Length of the longest identifier in tokens (removed ones included until compact)."""
        return max(self._main.max_depth, self._delta.max_depth if self._delta else 0)

    @property
    def nbytes(self) -> int:
        """Bytes held by the arrays of both layers."""
        return self._main.nbytes + (self._delta.nbytes if self._delta else 0)

    @property
    def bytes_per_id(self) -> float:
        """:attr:`nbytes` per live identifier."""
        return self.nbytes / max(len(self), 1)

    # read-only views of the main layer's arrays (the delta has the same layout)
    @property
    def child_start(self) -> np.ndarray:
        """Per node, the first child's node id (= its offset in :attr:`child_tokens`)."""
        return self._main.child_ptr[:-1]

    @property
    def child_end(self) -> np.ndarray:
        """Per node, one past its last child's node id."""
        return self._main.child_ptr[1:]

    @property
    def child_tokens(self) -> np.ndarray:
        """Token into each node (``-1`` at the root); a child's offset is its node id."""
        return self._main.token

    @property
    def live(self) -> np.ndarray:
        """Live identifiers through each node of the main layer (read-only view)."""
        view = self._main.live.view()
        view.flags.writeable = False
        return view

    @property
    def terminal_row(self) -> np.ndarray:
        """Row of the live identifier ending at each main node, ``-1`` (read-only view)."""
        view = self._main.terminal_row.view()
        view.flags.writeable = False
        return view

    # -- handles ----------------------------------------------------------------------------------
    def _split(self, handles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h = np.asarray(handles, dtype=np.int64) + 1
        return (h & LOW) - 1, (h >> 32) - 1

    @staticmethod
    def _join(main: np.ndarray, delta: np.ndarray) -> np.ndarray:
        out: np.ndarray = (main + 1) + ((delta + 1) << 32) - 1
        return out

    def root(self) -> int:
        """The handle of the empty prefix."""
        return 0 if self._delta is None else 1 << 32

    def walk(self, prefix: Sequence[int]) -> int:
        """The handle reached by following ``prefix`` from the root through live nodes, or -1."""
        main = 0
        delta = 0 if self._delta is not None else -1
        for t in prefix:
            tok = int(t)
            if main >= 0:
                main = self._main.child(main, tok)
            if delta >= 0:
                delta = self._delta.child(delta, tok)  # type: ignore[union-attr]
            if main < 0 and delta < 0:
                return -1
        return (main + 1) + ((delta + 1) << 32) - 1

    def step(
        self, nodes: np.ndarray | Sequence[int], tokens: np.ndarray | Sequence[int]
    ) -> np.ndarray:
        """Advance each handle by its token: the child handles (``-1`` where not allowed).

        Args:
            nodes: handles (``-1`` stays ``-1``).
            tokens: one token per handle.
        """
        nodes = np.asarray(nodes, dtype=np.int64)
        tokens = np.asarray(tokens, dtype=np.int64)
        if nodes.shape != tokens.shape or nodes.ndim != 1:
            raise ConfigError(
                f"step needs one token per node handle, got shapes {nodes.shape} and {tokens.shape}"
            )
        if (tokens >> 31).any():  # outside [0, 2**31): no child has it
            tokens = np.where((tokens >> 31) != 0, MAX_TOKEN + 1, tokens)
        if self._delta is None:
            return self._main.children(nodes, tokens)
        main, delta = self._split(nodes)
        m = self._main.children(main, tokens)
        if int(delta.max(initial=-1)) < 0:  # no state is inside the delta
            return m
        d = self._delta.children(delta, tokens)
        return np.where((m < 0) & (d < 0), -1, self._join(m, d))

    def step_one(self, node: int, token: int) -> int:
        """:meth:`step` for one handle, without arrays (what a per-row decoder calls)."""
        if node < 0:
            return -1
        if self._delta is None:
            return self._main.child(node, int(token))
        main, delta = ((node + 1) & 0xFFFFFFFF) - 1, ((node + 1) >> 32) - 1
        m = self._main.child(main, int(token)) if main >= 0 else -1
        d = self._delta.child(delta, int(token)) if delta >= 0 else -1
        if m < 0 and d < 0:
            return -1
        return (m + 1) + ((d + 1) << 32) - 1

    def allowed_nodes(self, nodes: np.ndarray | Sequence[int]) -> list[np.ndarray]:
        """For each handle, the sorted int32 tokens of its live children.

        The arrays may be views into the trie: treat them as read-only.

        An invalid handle (``-1``) or a fully removed subtree gives an empty array.
        """
        handles = np.asarray(nodes, dtype=np.int64)
        if self._delta is None:
            return self._main.allowed_many(handles.tolist())
        main_part, delta_part = self._split(handles)
        out = self._main.allowed_many(main_part.tolist())
        if int(delta_part.max(initial=-1)) < 0:  # no state is inside the delta
            return out
        delta = delta_part.tolist()
        cache = self._merged
        for i, (h, b) in enumerate(
            zip(handles.tolist(), self._delta.allowed_many(delta), strict=True)
        ):
            if len(b):
                if not len(out[i]):
                    out[i] = b
                    continue
                merged = cache.get(h)
                if merged is None:
                    if len(cache) >= CACHE_SIZE:
                        cache.clear()
                    merged = cache[h] = np.union1d(out[i], b)
                    merged.flags.writeable = False
                out[i] = merged
        return out

    def allowed(self, prefixes: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """For each prefix, the sorted tokens that continue a live identifier (empty if none)."""
        return self.allowed_nodes(np.array([self.walk(p) for p in prefixes], dtype=np.int64))

    def row_at(self, node: int) -> int | None:
        """Row of the live identifier ending exactly at handle ``node``, or None."""
        if node < 0:
            return None
        main, delta = ((node + 1) & 0xFFFFFFFF) - 1, ((node + 1) >> 32) - 1
        if main >= 0 and self._main.terminal_row[main] >= 0:
            return int(self._main.terminal_row[main])
        if delta >= 0 and self._delta is not None and self._delta.terminal_row[delta] >= 0:
            return int(self._delta.terminal_row[delta])
        return None

    def mask(self, nodes: np.ndarray | Sequence[int], vocab_size: int, device: Any = None) -> Any:
        """A boolean ``(len(nodes), vocab_size)`` mask of the allowed next tokens.

        Args:
            nodes: handles.
            vocab_size: the model's vocabulary size (the logits' last dimension).
            device: ``None`` for a numpy array; a torch device (``"cuda"``, ``"cpu"``)
                for a ``torch.bool`` tensor built on that device (only the indices travel).

        Raises:
            ConfigError: an allowed token is ``>= vocab_size``.
            MissingDependencyError: ``device`` given but torch is not installed.
        """
        handles = np.asarray(nodes, dtype=np.int64).reshape(-1)
        # beams share states (all of them at the root): one row per distinct handle
        srt = np.sort(handles)
        shared = bool((srt[1:] == srt[:-1]).any())
        if shared:
            uniq, inverse = np.unique(handles, return_inverse=True)
        allowed = self.allowed_nodes(uniq if shared else handles)
        sizes = np.fromiter((len(a) for a in allowed), dtype=np.int64, count=len(allowed))
        cols = np.concatenate(allowed) if allowed else EMPTY
        if cols.size and int(cols.max()) >= vocab_size:
            raise ConfigError(
                f"the trie allows token {int(cols.max())}, but vocab_size is {vocab_size}; "
                "pass the model's vocabulary size (the logits' last dimension)"
            )
        rows = np.repeat(np.arange(len(allowed)), sizes)
        if device is None:
            out = np.zeros((len(allowed), vocab_size), dtype=bool)
            out[rows, cols] = True
            return out[inverse] if shared else out
        try:
            import torch
        except ImportError as exc:
            raise MissingDependencyError("torch", "torch", "CompactTrie.mask") from exc
        mask = torch.zeros((len(allowed), vocab_size), dtype=torch.bool, device=device)
        if cols.size:
            mask[
                torch.from_numpy(rows).to(device),
                torch.from_numpy(cols.astype(np.int64)).to(device),
            ] = True
        if shared:
            mask = mask[torch.from_numpy(inverse.reshape(-1)).to(device)]
        return mask

    # -- membership ------------------------------------------------------------------------------
    def rows_of(self, sequence: Sequence[int]) -> int | None:
        """Row of the live identifier spelled by ``sequence``, or None."""
        return self.row_at(self.walk(sequence))

    def __contains__(self, sequence: object) -> bool:
        if isinstance(sequence, np.ndarray):
            sequence = sequence.tolist()
        if not isinstance(sequence, Sequence) or isinstance(sequence, str):
            return False
        return self.rows_of(sequence) is not None

    def sequences(self) -> Iterator[tuple[tuple[int, ...], int]]:
        """Every live ``(identifier tokens, row)`` pair, by row."""
        parts = []
        for layer in (self._main, self._delta):
            if layer is not None:
                rows, nodes = layer.live_entries()
                parts.append((layer, rows, nodes))
        rows = np.concatenate([p[1] for p in parts])
        which = np.concatenate([np.full(len(p[1]), i) for i, p in enumerate(parts)])
        nodes = np.concatenate([p[2] for p in parts])
        order = np.argsort(rows, kind="stable")
        for lo in range(0, len(order), CHUNK):
            sel = order[lo : lo + CHUNK]
            mats: dict[int, tuple[np.ndarray, np.ndarray]] = {}
            where = {}
            for i, (layer, _, _) in enumerate(parts):
                pick = sel[which[sel] == i]
                mats[i] = layer.paths(nodes[pick])
                where.update({int(p): (i, j) for j, p in enumerate(pick.tolist())})
            for p in sel.tolist():
                i, j = where[p]
                mat, lengths = mats[i]
                yield tuple(mat[j, : lengths[j]].tolist()), int(rows[p])

    def _live_padded(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(matrix, lengths, rows)`` of every live identifier, layers concatenated."""
        mats, lens, rows = [], [], []
        for layer in (self._main, self._delta):
            if layer is None:
                continue
            r, nodes = layer.live_entries()
            m, ln = layer.paths(nodes)
            mats.append(m)
            lens.append(ln)
            rows.append(r)
        width = max(m.shape[1] for m in mats)
        mats = [np.pad(m, ((0, 0), (0, width - m.shape[1])), constant_values=-1) for m in mats]
        return np.concatenate(mats), np.concatenate(lens), np.concatenate(rows)

    # -- updates -----------------------------------------------------------------------------------
    def remove(self, rows: Sequence[int] | np.ndarray, *, missing_ok: bool = False) -> int:
        """Forget the identifiers of ``rows``: they are never allowed again. Handles stay valid.

        Args:
            rows: document rows (repeats are ignored).
            missing_ok: skip rows without a live identifier instead of refusing.

        Returns:
            The number of identifiers removed.

        Raises:
            ConfigError: a row has no live identifier (and ``missing_ok`` is false);
                nothing is removed then.
        """
        want = np.unique(np.asarray(rows, dtype=np.int64))
        in_main = self._main.lookup(want)
        in_delta = self._delta.lookup(want) if self._delta else np.full(len(want), -1)
        missing = want[(in_main < 0) & (in_delta < 0)]
        if missing.size and not missing_ok:
            examples = missing[:10].tolist()
            raise ConfigError(
                f"{missing.size} row(s) have no live identifier in the trie (e.g. {examples}); "
                "they were never added or are already removed (pass missing_ok=True to skip them)"
            )
        self._merged.clear()
        self._main.remove_at(in_main[in_main >= 0])
        if self._delta is not None:
            self._delta.remove_at(in_delta[in_delta >= 0])
        return int(np.count_nonzero(in_main >= 0) + np.count_nonzero(in_delta >= 0))

    def add(self, sequences: Sequence[Sequence[int]], rows: Sequence[int]) -> None:
        """Add identifiers (into the delta layer); bumps :attr:`generation`.

        Args:
            sequences: the new identifiers (with their end token, see the module docstring).
            rows: their document rows.

        Raises:
            ConfigError: as :meth:`build`, or an identifier or row that is already live
                (remove the old one first); nothing is added then.
        """
        mat, lengths = padded(sequences)
        new_rows = rows_array(rows, len(lengths))
        if not len(lengths):
            return
        taken = (self._main.lookup(new_rows) >= 0) | (
            self._delta.lookup(new_rows) >= 0 if self._delta else False
        )
        if bool(np.any(taken)):
            raise ConfigError(
                f"row {int(new_rows[np.argmax(taken)])} already has a live identifier; "
                "remove it first to give the row a new identifier"
            )
        ends = self._main.walk_many(mat, lengths)
        found = np.flatnonzero(ends >= 0)
        found = found[self._main.terminal_row[ends[found]] >= 0]
        if found.size:
            i = int(found[0])
            raise ConfigError(
                f"identifier {shown(mat[i, : lengths[i]])} is already in the trie (row "
                f"{int(self._main.terminal_row[ends[i]])}); identifiers must be distinct"
            )
        if self._delta is not None:
            old = self._delta
            r, nodes = old.live_entries()
            m, ln = old.paths(nodes)
            width = max(m.shape[1], mat.shape[1])
            mat = np.concatenate(
                [
                    np.pad(m, ((0, 0), (0, width - m.shape[1])), constant_values=-1),
                    np.pad(mat, ((0, 0), (0, width - mat.shape[1])), constant_values=-1),
                ]
            )
            lengths = np.concatenate([ln, lengths])
            new_rows = np.concatenate([r, new_rows])
        self._delta = Layer.build(mat, lengths, new_rows)
        self._merged.clear()
        self.generation += 1

    def compact(self) -> None:
        """Rebuild one main layer from every live identifier (drops the delta and removed
        identifiers' nodes); bumps :attr:`generation`."""
        mat, lengths, rows = self._live_padded()
        self._main = Layer.build(mat, lengths, rows)
        self._delta = None
        self._merged.clear()
        self.generation += 1

    # -- files -------------------------------------------------------------------------------------
    def save(self, folder: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the trie to ``folder`` atomically (``.npy`` arrays + ``trie.json``).

        The delta layer is saved as it is (no compaction); removed identifiers stay removed.

        Raises:
            IndexFormatError: ``folder`` exists and ``overwrite`` is false.
        """
        from ..engine.manifest import atomic_directory, relevo_version

        target = Path(folder)
        layers = {"main": self._main, "delta": self._delta}
        with atomic_directory(target, overwrite=overwrite) as tmp:
            tmp.chmod(0o755)  # mkdtemp makes it private
            files: dict[str, dict[str, Any]] = {}
            meta: dict[str, Any] = {}
            for prefix, layer in layers.items():
                if layer is None:
                    continue
                for name, arr in layer.arrays().items():
                    fname = f"{prefix}_{name}.npy"
                    np.save(tmp / fname, arr, allow_pickle=False)
                    files[fname] = {
                        "sha256": _sha256(tmp / fname),
                        "bytes": (tmp / fname).stat().st_size,
                    }
                meta[prefix] = {
                    "nodes": layer.nodes,
                    "identifiers": len(layer.row_keys),
                    "live": layer.n_live,
                    "max_depth": layer.max_depth,
                }
            manifest = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "relevo_version": relevo_version(),
                "live_identifiers": len(self),
                "layers": meta,
                "files": files,
            }
            (tmp / MANIFEST).write_text(
                json.dumps(manifest, indent=2, sort_keys=True) + "\n", "utf-8"
            )
        return target.absolute()

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> CompactTrie:
        """Read a trie written by :meth:`save`, verifying every file.

        Raises:
            CorruptIndexError: the folder is missing, a file is missing, damaged or of
                the wrong dtype, or the arrays do not form a valid trie.
        """
        root = Path(folder)
        path = root / MANIFEST
        redo = (
            "Rebuild the trie from its identifiers (CompactTrie.build(...).save(folder, "
            "overwrite=True))."
        )
        try:
            man = json.loads(path.read_text("utf-8"))
        except FileNotFoundError as exc:
            raise CorruptIndexError(
                f"{path} does not exist: {root} is not a saved CompactTrie or its save was "
                f"interrupted. {redo}"
            ) from exc
        except (OSError, ValueError, RecursionError) as exc:
            raise CorruptIndexError(f"{path} cannot be read as JSON ({exc}). {redo}") from exc
        if not isinstance(man, dict) or man.get("format") != FORMAT:
            found = man.get("format") if isinstance(man, dict) else type(man).__name__
            raise CorruptIndexError(
                f"{path} is not a {FORMAT!r} manifest (found {found!r}). {redo}"
            )
        if man.get("format_version") != FORMAT_VERSION:
            raise CorruptIndexError(
                f"{path} has format_version {man.get('format_version')!r}; this relevo reads "
                f"version {FORMAT_VERSION}. Rebuild the trie with this relevo."
            )
        layers_meta = man.get("layers")
        files = man.get("files")
        if (
            not isinstance(layers_meta, dict)
            or "main" not in layers_meta
            or not set(layers_meta) <= {"main", "delta"}
            or not all(isinstance(v, dict) for v in layers_meta.values())
            or not isinstance(files, dict)
        ):
            raise CorruptIndexError(f"{path}: 'layers' or 'files' is malformed. {redo}")
        layers: dict[str, Layer] = {}
        for prefix, expect in layers_meta.items():
            arrays: dict[str, np.ndarray] = {}
            for name in ARRAYS:
                fname = f"{prefix}_{name}.npy"
                arrays[name] = _load_array(root, fname, files.get(fname), redo)
            layers[prefix] = Layer.checked(arrays, expect, f"{root} ({prefix} layer)")
        trie = cls(layers["main"], layers.get("delta"))
        if len(trie) != man.get("live_identifiers"):
            raise CorruptIndexError(
                f"{path} records {man.get('live_identifiers')!r} live identifiers, the arrays "
                f"hold {len(trie)}. {redo}"
            )
        return trie


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _load_array(root: Path, fname: str, record: Any, redo: str) -> np.ndarray:
    path = root / fname
    if not isinstance(record, dict) or not isinstance(record.get("sha256"), str):
        raise CorruptIndexError(f"{root / MANIFEST} records no checksum for {fname}. {redo}")
    try:
        size = path.stat().st_size
        if size != record.get("bytes"):
            raise CorruptIndexError(
                f"{path} is {size} bytes, but {MANIFEST} recorded {record.get('bytes')!r}: the "
                f"file was truncated or replaced. {redo}"
            )
        if _sha256(path) != record["sha256"]:
            raise CorruptIndexError(
                f"{path}: contents differ from the sha256 recorded in {MANIFEST}; the file was "
                f"modified or damaged. {redo}"
            )
        arr = np.load(path, allow_pickle=False)
    except CorruptIndexError:
        raise
    except FileNotFoundError as exc:
        raise CorruptIndexError(
            f"{path} is missing: the trie folder is incomplete. {redo}"
        ) from exc
    except (OSError, ValueError, EOFError) as exc:
        raise CorruptIndexError(f"{path} is not a readable .npy array ({exc}). {redo}") from exc
    if not isinstance(arr, np.ndarray):
        raise CorruptIndexError(f"{path} does not hold one array. {redo}")
    return arr


__all__ = ["FORMAT", "FORMAT_VERSION", "CompactTrie"]
